package probe

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/gpunode/gpunode/rdma/verbs"
)

// Client runs probes against other agents' servers.
type Client struct {
	Token   []byte
	Devices Devices
	// Device restricts this end to one device; empty picks the port whose
	// address the control connection leaves from.
	Device      string
	Limiter     *Limiter
	StepTimeout time.Duration
}

func (c *Client) step() time.Duration {
	return stepTimeout(c.StepTimeout)
}

// Run probes the agent at addr ("host:port") with req, from the port
// whose address the control connection leaves from (or c.Device).
func (c *Client) Run(ctx context.Context, addr string, req Request) (Result, error) {
	req.Rail = nil
	return c.run(ctx, addr, req, nil)
}

// RunRail probes the agent at addr with req on rail: from the rail's port
// to the peer's port on the same rail under rule. The result and the
// errors name the rail.
func (c *Client) RunRail(ctx context.Context, addr string, rail Rail, rule RailRule, req Request) (Result, error) {
	if !isRDMA(req.Kind) {
		return Result{}, fmt.Errorf("kind %s has no rails", req.Kind)
	}
	if !rail.Usable {
		why := "is " + rail.State
		if rail.State == "ACTIVE" {
			why = "has no usable address"
		}
		return Result{}, fmt.Errorf("%s: this node's port %s", rail.Name(), why)
	}
	req.Rail = rule.request(rail)
	res, err := c.run(ctx, addr, req, &rail.Port)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", rail.Name(), err)
	}
	return res, nil
}

// run is Run from local, when set, else from the port the control
// connection picks.
func (c *Client) run(ctx context.Context, addr string, req Request, local *Port) (Result, error) {
	if req.QPs == 1 {
		// One queue pair is what every version runs: say nothing of it.
		req.QPs = 0
	}
	if err := req.Validate(); err != nil {
		return Result{}, err
	}
	if req.Memory == verbs.MemoryGPU && req.GPU == nil {
		return Result{}, errNoGPU
	}
	if !c.Limiter.TryAcquire() {
		return Result{}, ErrBusy
	}
	defer c.Limiter.Release()
	step := c.step()
	d := net.Dialer{Timeout: step}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Result{}, fmt.Errorf("connect to probe server: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(time.Now().Add(step))

	req, acc, err := c.handshake(conn, addr, req)
	if err != nil {
		if IsVersion(err) && req.version() >= versionGPU {
			return Result{}, fmt.Errorf("%w (the peer's agent predates protocol version %d: GPU memory probes; upgrade it, or probe host memory)", err, versionGPU)
		}
		if IsVersion(err) && req.version() >= versionKinds {
			return Result{}, fmt.Errorf("%w (the peer's agent predates protocol version %d: read_bw, write_lat, several queue pairs and bidirectional bandwidth; upgrade it, or leave those off)", err, versionKinds)
		}
		if IsVersion(err) && req.version() >= versionRails {
			return Result{}, fmt.Errorf("%w (the peer's agent predates protocol version %d: per-rail probes, service level and traffic class; upgrade it, or leave those off)", err, versionRails)
		}
		return Result{}, err
	}
	res := Result{Kind: req.Kind, Peer: addr, Size: req.Size, Iterations: req.Iterations, Depth: req.Depth, QPs: req.QPs,
		Bidirectional: req.Bidirectional}
	if !isRDMA(req.Kind) {
		return c.runTCP(conn, addr, req, res)
	}
	if req.Rail != nil {
		if acc.Port == nil {
			return Result{}, fmt.Errorf("%s: accept without the peer's port on the rail", addr)
		}
		res.Rail, res.PeerPort = new(req.Rail.Index), acc.Port
	}
	return c.runRDMA(ctx, conn, addr, req, acc, local, res)
}

// handshake answers the server's challenge with the request, signed, and
// checks that the accept proves the server holds the token too. It
// returns the request as sent (with its nonce and MAC).
func (c *Client) handshake(conn net.Conn, addr string, req Request) (Request, accept, error) {
	var h hello
	if err := expect(conn, typeHello, &h); err != nil {
		return req, accept{}, fmt.Errorf("%s: %w", addr, err)
	}
	if len(h.Nonce) != nonceSize {
		return req, accept{}, fmt.Errorf("%s: server nonce of %d bytes, want %d", addr, len(h.Nonce), nonceSize)
	}
	var err error
	if req.Nonce, err = newNonce(); err != nil {
		return req, accept{}, err
	}
	req.MAC = requestMAC(c.Token, h.Nonce, req)
	if err := writeFrameV(conn, req.version(), typeRequest, req); err != nil {
		return req, accept{}, fmt.Errorf("%s: send request: %w", addr, err)
	}
	var acc accept
	if err := expect(conn, typeAccept, &acc); err != nil {
		return req, accept{}, fmt.Errorf("%s: %w", addr, err)
	}
	if !hmac.Equal(acc.MAC, acceptMAC(c.Token, h.Nonce, req.Nonce)) {
		return req, accept{}, fmt.Errorf("%s: the server does not hold the probe token", addr)
	}
	return req, acc, nil
}

// runTCP measures a TCP kind on the control connection itself.
func (c *Client) runTCP(conn net.Conn, addr string, req Request, res Result) (Result, error) {
	conn.SetDeadline(time.Now().Add(req.Timeout + c.step()))
	var err error
	cpu := onThread(func() { err = tcpMeasure(conn, req, &res) })
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", addr, err)
	}
	res.finish(cpu)
	return res, nil
}

// runRDMA sets up this end's queue pair toward the server's endpoint,
// runs the measurement and exchanges the outcomes.
func (c *Client) runRDMA(ctx context.Context, conn net.Conn, addr string, req Request, acc accept, local *Port, res Result) (Result, error) {
	if acc.Endpoint == nil {
		return Result{}, fmt.Errorf("%s: accept without an RDMA endpoint", addr)
	}
	remotes := append([]verbs.Endpoint{*acc.Endpoint}, acc.MoreEndpoints...)
	var port Port
	if local != nil {
		port = *local
	} else {
		var err error
		if port, err = localPort(ctx, c.Devices, c.Device, conn); err != nil {
			return Result{}, err
		}
	}
	res.Local = port
	cfg := qpConfig(port, req)
	if err := checkPeers(remotes, cfg, numQPs(req)); err != nil {
		return Result{}, fmt.Errorf("%s: %w", addr, err)
	}
	if req.Memory == verbs.MemoryGPU {
		cfgs, release, err := gpuBuffers(req.GPU, cfg)
		if err != nil {
			return Result{}, err
		}
		defer release() // after the QPs, deferred below, are closed
		cfg = cfgs[0]
	}
	qps, closeQPs, err := openQPs(port, cfg, numQPs(req))
	if err != nil {
		return Result{}, err
	}
	defer closeQPs()
	if cfg.GPU != nil {
		res.Memory, res.GPU = verbs.MemoryGPU, gpuResult(*req.GPU, qps[0], cfg.GPU)
	}
	if err := connectQPs(qps, remotes, req); err != nil {
		return Result{}, err
	}
	eps := qps.endpoints()
	if err := writeFrame(conn, typeEndpoint, endpointMsg{Endpoint: eps[0], MoreEndpoints: eps[1:]}); err != nil {
		return Result{}, fmt.Errorf("%s: send endpoint: %w", addr, err)
	}
	var r ready
	if err := expect(conn, typeReady, &r); err != nil {
		return Result{}, fmt.Errorf("%s: %w", addr, err)
	}

	conn.SetDeadline(time.Now().Add(req.Timeout + c.step()))
	res, err = c.measure(ctx, conn, addr, qps, remotes, req, res)
	if err == nil {
		res.noteQP(qps[0])
	}
	return res, err
}

// measure is the client's part once both QPs are ready: the measurement
// and the outcomes.
func (c *Client) measure(ctx context.Context, conn net.Conn, addr string, qp initiator, remotes []verbs.Endpoint, req Request, res Result) (Result, error) {
	m := measureWatched(ctx, conn, qp, remotes, req, &res)
	conn.SetDeadline(time.Now().Add(c.step()))
	return conclude(conn, addr, res, m)
}

// measured is the client end's view of a measurement.
type measured struct {
	cpu time.Duration
	err error // the loop's
	// ack delivers the server's ack, or why none came; early says it came
	// while the loop ran: the server failed first, or went away.
	ack   <-chan serverEnd
	early bool
}

type serverEnd struct {
	ack ack
	err error
}

// measureWatched runs the RDMA loop into res. A reader waits for the
// server's ack meanwhile: the server sends it before done only when its
// own loop failed, and closes the connection when it dies, so anything
// read while the loop runs cancels the loop instead of letting it run to
// its timeout.
func measureWatched(ctx context.Context, conn net.Conn, qp initiator, remotes []verbs.Endpoint, req Request, res *Result) measured {
	timeout := timeoutFor(ctx, req)
	var measuring, early atomic.Bool
	measuring.Store(true)
	acks := make(chan serverEnd, 1)
	go func() {
		var e serverEnd
		e.err = expect(conn, typeAck, &e.ack)
		if measuring.Load() {
			early.Store(true)
			qp.Cancel()
		}
		acks <- e
	}()
	var m measured
	if isBandwidth(req.Kind) {
		var bw verbs.BW
		bw, m.cpu, m.err = bandwidth(qp, remotes, req, timeout)
		res.Messages, res.Bytes, res.Elapsed = bw.Messages, bw.Bytes, bw.Elapsed
	} else {
		var half []time.Duration
		half, m.cpu, m.err = ping(qp, remotes[0], req, timeout)
		if m.err == nil {
			res.fillLatency(half)
		}
	}
	measuring.Store(false)
	m.ack, m.early = acks, early.Load()
	return m
}

// conclude sends this end's outcome (done, with the measurement's error)
// and takes the server's (its ack).
func conclude(conn net.Conn, addr string, res Result, m measured) (Result, error) {
	dn := done{Messages: res.Messages, Bytes: res.Bytes, Elapsed: res.Elapsed}
	if m.err != nil {
		dn.Error = m.err.Error()
	}
	if m.early {
		e := <-m.ack
		if e.err != nil {
			return Result{}, fmt.Errorf("%s: the peer went away mid-probe (%v); measurement: %v", addr, e.err, m.err)
		}
		// For the server's log; it waits for done.
		_ = writeFrame(conn, typeDone, dn)
		if e.ack.Error == "" {
			return Result{}, fmt.Errorf("%s: the peer acknowledged before the measurement ended; measurement: %v", addr, m.err)
		}
		return Result{}, fmt.Errorf("%s: the peer's end failed first: %w", addr, &RemoteError{Code: CodeFailed, Message: e.ack.Error})
	}
	werr := writeFrame(conn, typeDone, dn)
	// The reader ends with the ack or by the connection's deadline.
	e := <-m.ack
	if m.err != nil {
		return Result{}, m.err
	}
	if werr != nil {
		return Result{}, fmt.Errorf("%s: send done: %w", addr, werr)
	}
	if e.err != nil {
		return Result{}, fmt.Errorf("%s: %w", addr, e.err)
	}
	if e.ack.Error != "" {
		return Result{}, &RemoteError{Code: CodeFailed, Message: e.ack.Error}
	}
	res.PeerCPUSeconds = e.ack.CPU.Seconds()
	if res.Bidirectional {
		if e.ack.Result == nil {
			return Result{}, fmt.Errorf("%s: the peer's ack lacks its direction of the bidirectional probe", addr)
		}
		res.ReverseBytes, res.ReverseElapsed = e.ack.Result.Bytes, e.ack.Result.Elapsed
	}
	// The server's port, for the line rate of the slower end; a server
	// from before the port frame closes instead (the rate stays unknown).
	var pi portInfo
	if err := expect(conn, typePort, &pi); err == nil {
		res.PeerDataRateGbps = pi.DataRateGbps
	}
	res.finish(m.cpu)
	return res, nil
}

// IsUnauthorized reports whether err is a server's refusal of the token.
func IsUnauthorized(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Code == CodeUnauthorized
}

// IsVersion reports whether err is a server's refusal of the protocol
// version.
func IsVersion(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Code == CodeVersion
}

// IsNoGPU reports whether err is a server's answer that no GPU of its
// node answers GPU memory probes on the port asked for (CodeNoGPU).
func IsNoGPU(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Code == CodeNoGPU
}

// IsBusy reports whether err says a probe was already running.
func IsBusy(err error) bool {
	var re *RemoteError
	return errors.Is(err, ErrBusy) || (errors.As(err, &re) && re.Code == CodeBusy)
}
