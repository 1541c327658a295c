package probe

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// The TCP baseline moves the same messages over a TCP connection on the
// same path (the peer's address; on loopback the port's own IP address),
// so bandwidth, latency and CPU per GB compare with RDMA's.

// tcpMeasure is the client side: for tcp_bw it streams
// Iterations x Size bytes and waits for the server's ack (the time runs
// until the ack, so every byte was received); for tcp_lat it runs
// Iterations ping-pongs of Size bytes.
func tcpMeasure(conn net.Conn, req Request, res *Result) error {
	buf := make([]byte, req.Size)
	switch req.Kind {
	case KindTCPBW:
		start := time.Now()
		for i := 0; i < req.Iterations; i++ {
			if _, err := conn.Write(buf); err != nil {
				return fmt.Errorf("TCP write: %w", err)
			}
		}
		var a ack
		if err := expect(conn, typeAck, &a); err != nil {
			return fmt.Errorf("TCP: %w", err)
		}
		res.Elapsed = time.Since(start)
		if a.Error != "" {
			return &RemoteError{Code: CodeFailed, Message: a.Error}
		}
		res.Messages, res.Bytes = uint64(req.Iterations), uint64(req.Iterations)*uint64(req.Size)
		res.PeerCPUSeconds = a.CPU.Seconds()
	case KindTCPLat:
		half := make([]time.Duration, req.Iterations)
		for i := range half {
			t := time.Now()
			if _, err := conn.Write(buf); err != nil {
				return fmt.Errorf("TCP write: %w", err)
			}
			if _, err := io.ReadFull(conn, buf); err != nil {
				return fmt.Errorf("TCP read: %w", err)
			}
			half[i] = time.Since(t) / 2
		}
		var a ack
		if err := expect(conn, typeAck, &a); err != nil {
			return fmt.Errorf("TCP: %w", err)
		}
		if a.Error != "" {
			return &RemoteError{Code: CodeFailed, Message: a.Error}
		}
		res.fillLatency(half)
		res.PeerCPUSeconds = a.CPU.Seconds()
	default:
		return fmt.Errorf("not a TCP kind: %q", req.Kind)
	}
	return nil
}

// tcpAnswer is the server side of tcpMeasure; the caller sends the ack.
func tcpAnswer(conn net.Conn, req Request) error {
	buf := make([]byte, req.Size)
	switch req.Kind {
	case KindTCPBW:
		total := int64(req.Iterations) * int64(req.Size)
		if _, err := io.CopyN(io.Discard, conn, total); err != nil {
			return fmt.Errorf("TCP read: %w", err)
		}
		return nil
	case KindTCPLat:
		for i := 0; i < req.Iterations; i++ {
			if _, err := io.ReadFull(conn, buf); err != nil {
				return fmt.Errorf("TCP read: %w", err)
			}
			if _, err := conn.Write(buf); err != nil {
				return fmt.Errorf("TCP write: %w", err)
			}
		}
		return nil
	}
	return fmt.Errorf("not a TCP kind: %q", req.Kind)
}

// tcpLoopback runs the TCP baseline between two sockets of this process
// on the port's IP address.
func tcpLoopback(ctx context.Context, lim *Limiter, p Port, req Request) (Result, error) {
	if err := req.Validate(); err != nil {
		return Result{}, err
	}
	if !lim.TryAcquire() {
		return Result{}, ErrBusy
	}
	defer lim.Release()
	host := p.IP
	if host == "" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return Result{}, fmt.Errorf("TCP baseline: %w", err)
	}
	defer ln.Close()
	deadline := time.Now().Add(timeoutFor(ctx, req))
	served := make(chan error, 1)
	var serverCPU time.Duration // this process's, so counted in CPUSeconds
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		serverCPU = onThread(func() { err = tcpAnswer(c, req) })
		if err != nil {
			served <- err
			return
		}
		served <- writeFrame(c, typeAck, ack{})
	}()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		ln.Close()
		<-served
		return Result{}, fmt.Errorf("TCP baseline: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	res := Result{Kind: req.Kind, Local: p, Peer: PeerLoopback, Size: req.Size, Iterations: req.Iterations, Depth: req.Depth}
	cpu := onThread(func() { err = tcpMeasure(conn, req, &res) })
	conn.Close()
	if serr := <-served; err == nil && serr != nil {
		err = fmt.Errorf("TCP baseline server: %w", serr)
	}
	if err != nil {
		return Result{}, err
	}
	res.finish(cpu + serverCPU)
	return res, nil
}
