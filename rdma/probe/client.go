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

// Run probes the agent at addr ("host:port") with req.
func (c *Client) Run(ctx context.Context, addr string, req Request) (Result, error) {
	if err := req.Validate(); err != nil {
		return Result{}, err
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
		return Result{}, err
	}
	res := Result{Kind: req.Kind, Peer: addr, Size: req.Size, Iterations: req.Iterations, Depth: req.Depth}
	if !isRDMA(req.Kind) {
		return c.runTCP(conn, addr, req, res)
	}
	return c.runRDMA(ctx, conn, addr, req, acc, res)
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
	if err := writeFrame(conn, typeRequest, req); err != nil {
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
	cpu := cpuSeconds()
	err := tcpMeasure(conn, req, &res)
	cpu = cpuSeconds() - cpu
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", addr, err)
	}
	res.finish(cpu)
	return res, nil
}

// runRDMA sets up this end's queue pair toward the server's endpoint,
// runs the measurement and exchanges the outcomes.
func (c *Client) runRDMA(ctx context.Context, conn net.Conn, addr string, req Request, acc accept, res Result) (Result, error) {
	if acc.Endpoint == nil {
		return Result{}, fmt.Errorf("%s: accept without an RDMA endpoint", addr)
	}
	remote := *acc.Endpoint
	port, err := localPort(ctx, c.Devices, c.Device, conn)
	if err != nil {
		return Result{}, err
	}
	res.Local = port
	cfg := qpConfig(port, req)
	if err := checkPeerBuffer(remote, cfg); err != nil {
		return Result{}, fmt.Errorf("%s: %w", addr, err)
	}
	qp, closeQP, err := openQP(port, cfg)
	if err != nil {
		return Result{}, err
	}
	defer closeQP()
	if err := connectQP(qp, remote, req); err != nil {
		return Result{}, err
	}
	if err := writeFrame(conn, typeEndpoint, endpointMsg{Endpoint: qp.Local()}); err != nil {
		return Result{}, fmt.Errorf("%s: send endpoint: %w", addr, err)
	}
	var r ready
	if err := expect(conn, typeReady, &r); err != nil {
		return Result{}, fmt.Errorf("%s: %w", addr, err)
	}

	conn.SetDeadline(time.Now().Add(req.Timeout + c.step()))
	cpu, peerErr, mErr := measureWatched(ctx, conn, qp, remote, req, &res)
	res.noteQP(qp)
	if peerErr != nil {
		return Result{}, fmt.Errorf("%s: the peer went away mid-probe (%v); measurement: %v", addr, peerErr, mErr)
	}
	conn.SetDeadline(time.Now().Add(c.step()))
	return conclude(conn, addr, res, cpu, mErr)
}

// measureWatched runs the RDMA loop into res and returns the CPU time it
// took. A server that dies closes the connection: a watcher cancels the
// loop instead of letting it run to its timeout. The server sends nothing
// until done, so any read result means the measurement is over for it;
// that is peerErr, and the loop's own error is err.
func measureWatched(ctx context.Context, conn net.Conn, qp *verbs.QP, remote verbs.Endpoint, req Request, res *Result) (cpu float64, peerErr, err error) {
	timeout := timeoutFor(ctx, req)
	var measuring atomic.Bool
	measuring.Store(true)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		var b [1]byte
		_, rerr := conn.Read(b[:])
		if measuring.Load() {
			if rerr == nil {
				rerr = errors.New("unexpected data")
			}
			peerErr = rerr
			qp.Cancel()
		}
	}()
	cpu = cpuSeconds()
	if req.Kind == KindWriteBW {
		var bw verbs.BW
		bw, err = writeBW(qp, remote, req, timeout)
		res.Messages, res.Bytes, res.Elapsed = bw.Messages, bw.Bytes, bw.Elapsed
	} else {
		var half []time.Duration
		half, err = ping(qp, req, timeout)
		if err == nil {
			res.fillLatency(half)
		}
	}
	cpu = cpuSeconds() - cpu
	measuring.Store(false)
	// Unblock the reader; it must not consume the ack.
	conn.SetReadDeadline(time.Now())
	<-readerDone
	return cpu, peerErr, err
}

// conclude sends this end's outcome (done, with mErr, the measurement's
// error) and reads the server's (ack).
func conclude(conn net.Conn, addr string, res Result, cpu float64, mErr error) (Result, error) {
	dn := done{Messages: res.Messages, Bytes: res.Bytes, Elapsed: res.Elapsed}
	if mErr != nil {
		dn.Error = mErr.Error()
	}
	if err := writeFrame(conn, typeDone, dn); err != nil && mErr == nil {
		return Result{}, fmt.Errorf("%s: send done: %w", addr, err)
	}
	if mErr != nil {
		return Result{}, mErr
	}
	var a ack
	if err := expect(conn, typeAck, &a); err != nil {
		return Result{}, fmt.Errorf("%s: %w", addr, err)
	}
	if a.Error != "" {
		return Result{}, &RemoteError{Code: CodeFailed, Message: a.Error}
	}
	// The server's port, for the line rate of the slower end; a server
	// from before the port frame closes instead (the rate stays unknown).
	var pi portInfo
	if err := expect(conn, typePort, &pi); err == nil {
		res.PeerDataRateGbps = pi.DataRateGbps
	}
	res.finish(cpu)
	return res, nil
}

// IsUnauthorized reports whether err is a server's refusal of the token.
func IsUnauthorized(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Code == CodeUnauthorized
}

// IsBusy reports whether err says a probe was already running.
func IsBusy(err error) bool {
	var re *RemoteError
	return errors.Is(err, ErrBusy) || (errors.As(err, &re) && re.Code == CodeBusy)
}
