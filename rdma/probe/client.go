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
	if c.StepTimeout > 0 {
		return c.StepTimeout
	}
	return DefaultStepTimeout
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

	var h hello
	if err := expect(conn, typeHello, &h); err != nil {
		return Result{}, fmt.Errorf("%s: %w", addr, err)
	}
	if len(h.Nonce) != nonceSize {
		return Result{}, fmt.Errorf("%s: server nonce of %d bytes, want %d", addr, len(h.Nonce), nonceSize)
	}
	if req.Nonce, err = newNonce(); err != nil {
		return Result{}, err
	}
	req.MAC = requestMAC(c.Token, h.Nonce, req)
	if err := writeFrame(conn, typeRequest, req); err != nil {
		return Result{}, fmt.Errorf("%s: send request: %w", addr, err)
	}
	var acc accept
	if err := expect(conn, typeAccept, &acc); err != nil {
		return Result{}, fmt.Errorf("%s: %w", addr, err)
	}
	if !hmac.Equal(acc.MAC, acceptMAC(c.Token, h.Nonce, req.Nonce)) {
		return Result{}, fmt.Errorf("%s: the server does not hold the probe token", addr)
	}
	res := Result{Kind: req.Kind, Peer: addr, Size: req.Size, Iterations: req.Iterations, Depth: req.Depth}

	if !isRDMA(req.Kind) {
		conn.SetDeadline(time.Now().Add(req.Timeout + step))
		cpu := cpuSeconds()
		err := tcpMeasure(conn, req, &res)
		cpu = cpuSeconds() - cpu
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", addr, err)
		}
		res.finish(cpu)
		return res, nil
	}

	if acc.Endpoint == nil {
		return Result{}, fmt.Errorf("%s: accept without an RDMA endpoint", addr)
	}
	remote := *acc.Endpoint
	devs, err := c.Devices(ctx)
	if err != nil {
		return Result{}, err
	}
	var ip net.IP
	if la, ok := conn.LocalAddr().(*net.TCPAddr); ok {
		ip = la.IP
	}
	port, err := PortFor(devs, ip, c.Device)
	if err != nil {
		return Result{}, err
	}
	res.Local = port
	cfg := qpConfig(port, req)
	if remote.Len < uint64(cfg.BufferSize) {
		return Result{}, fmt.Errorf("%s: peer buffer of %d bytes is smaller than the request needs", addr, remote.Len)
	}
	dev, err := verbs.OpenDevice(port.Device)
	if err != nil {
		return Result{}, err
	}
	defer dev.Close()
	qp, err := dev.NewQP(cfg)
	if err != nil {
		return Result{}, err
	}
	defer qp.Close()
	if err := qp.Connect(remote); err != nil {
		return Result{}, err
	}
	if req.Kind == KindSendLat {
		if err := qp.PostRecv(req.Size); err != nil {
			return Result{}, err
		}
	}
	if err := writeFrame(conn, typeEndpoint, endpointMsg{Endpoint: qp.Local()}); err != nil {
		return Result{}, fmt.Errorf("%s: send endpoint: %w", addr, err)
	}
	var r ready
	if err := expect(conn, typeReady, &r); err != nil {
		return Result{}, fmt.Errorf("%s: %w", addr, err)
	}

	// A server that dies closes the connection: a watcher cancels the
	// loop instead of letting it run to its timeout. The server sends
	// nothing until done, so any read result means the measurement is
	// over for it.
	conn.SetDeadline(time.Now().Add(req.Timeout + step))
	timeout := timeoutFor(ctx, req)
	var measuring atomic.Bool
	measuring.Store(true)
	var peerErr error
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		var b [1]byte
		_, err := conn.Read(b[:])
		if measuring.Load() {
			if err == nil {
				err = errors.New("unexpected data")
			}
			peerErr = err
			qp.Cancel()
		}
	}()
	cpu := cpuSeconds()
	var mErr error
	if req.Kind == KindWriteBW {
		var bw verbs.BW
		bw, mErr = writeBW(qp, remote, req, timeout)
		res.Messages, res.Bytes, res.Elapsed = bw.Messages, bw.Bytes, bw.Elapsed
	} else {
		var half []time.Duration
		half, mErr = ping(qp, req, timeout)
		if mErr == nil {
			res.fillLatency(half)
		}
	}
	cpu = cpuSeconds() - cpu
	measuring.Store(false)
	// Unblock the reader; it must not consume the ack.
	conn.SetReadDeadline(time.Now())
	<-readerDone
	if peerErr != nil {
		return Result{}, fmt.Errorf("%s: the peer went away mid-probe (%v); measurement: %v", addr, peerErr, mErr)
	}
	conn.SetDeadline(time.Now().Add(step))
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
