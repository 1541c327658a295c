package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gpunode/gpunode/rdma/verbs"
)

// fakeLoop stands in for a verbs loop (a *verbs.QP's WriteBW, Ping or
// Pong) as the C loops behave: it polls until its work is done, it fails,
// it is cancelled or its timeout passes. Polling burns no CPU here unless
// burn is set, which spins as the real loops do.
type fakeLoop struct {
	// failAfter > 0: the loop fails this long after it starts, as a
	// failed completion ends a real one.
	failAfter time.Duration
	// doneAfter > 0: the loop succeeds this long after it starts.
	doneAfter time.Duration
	burn      bool
	cancelled atomic.Bool
}

var errRetryExceeded = errors.New("completion failed: transport retry counter exceeded (peer gone?) (status 12)")

func (f *fakeLoop) run(what string, timeout time.Duration) error {
	start := time.Now()
	for {
		since := time.Since(start)
		switch {
		case f.failAfter > 0 && since >= f.failAfter:
			return fmt.Errorf("%s: %w", what, errRetryExceeded)
		case f.doneAfter > 0 && since >= f.doneAfter:
			return nil
		case f.cancelled.Load():
			return fmt.Errorf("%s: %w", what, syscall.ECANCELED)
		case since > timeout:
			return fmt.Errorf("%s: timed out", what)
		}
		if !f.burn {
			time.Sleep(time.Millisecond)
		}
	}
}

func (f *fakeLoop) Pong(size, iters int, timeout time.Duration) error {
	return f.run("SEND/RECV", timeout)
}

func (f *fakeLoop) Ping(size, iters int, timeout time.Duration) ([]time.Duration, error) {
	if err := f.run("SEND/RECV", timeout); err != nil {
		return nil, err
	}
	half := make([]time.Duration, iters)
	for i := range half {
		half[i] = 5 * time.Microsecond
	}
	return half, nil
}

func (f *fakeLoop) WriteBW(remote verbs.Endpoint, size int, iters uint64, duration, timeout time.Duration) (verbs.BW, error) {
	if err := f.run("RDMA WRITE", timeout); err != nil {
		return verbs.BW{}, err
	}
	return verbs.BW{Bytes: uint64(size) * iters, Messages: iters, Elapsed: f.doneAfter}, nil
}

func (f *fakeLoop) Bandwidth(op verbs.Op, remotes []verbs.Endpoint, size int, iters uint64, duration, timeout time.Duration) (verbs.BW, error) {
	if err := f.run(op.String(), timeout); err != nil {
		return verbs.BW{}, err
	}
	n := iters * uint64(len(remotes))
	return verbs.BW{Bytes: uint64(size) * n, Messages: n, Elapsed: f.doneAfter}, nil
}

func (f *fakeLoop) WritePing(remote verbs.Endpoint, size, iters int, timeout time.Duration) ([]time.Duration, error) {
	return f.Ping(size, iters, timeout)
}

func (f *fakeLoop) WritePong(remote verbs.Endpoint, size, iters int, timeout time.Duration) error {
	return f.run("RDMA WRITE", timeout)
}

func (f *fakeLoop) Cancel() { f.cancelled.Store(true) }

// ends is one measurement between a client and a server end over a real
// TCP connection, each with its fake loop, from the point where both QPs
// are ready: what each end returned and how long it took.
type ends struct {
	res              Result
	clientErr        error
	serverErr        error
	clientT, serverT time.Duration
	released         bool
}

func measureBetween(t *testing.T, req Request, client, server *fakeLoop) ends {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cconn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cconn.Close()
	sconn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.Close()
	const step = 2 * time.Second
	var e ends
	var released atomic.Bool
	served := make(chan struct{})
	go func() {
		defer close(served)
		s := &Server{StepTimeout: step, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		start := time.Now()
		sconn.SetDeadline(start.Add(req.Timeout + step))
		e.serverErr = s.measure(sconn, server, make([]verbs.Endpoint, numQPs(req)), req, portInfo{DataRateGbps: 200}, func() {}, func() { released.Store(true) }, s.Logger)
		e.serverT = time.Since(start)
	}()
	c := &Client{StepTimeout: step}
	start := time.Now()
	cconn.SetDeadline(start.Add(req.Timeout + step))
	e.res, e.clientErr = c.measure(context.Background(), cconn, "peer:9836", client, make([]verbs.Endpoint, numQPs(req)), req, Result{Kind: req.Kind, Size: req.Size, Bidirectional: req.Bidirectional})
	e.clientT = time.Since(start)
	<-served
	e.released = released.Load()
	return e
}

func latRequest() Request {
	r := DefaultRequest(KindSendLat)
	r.Timeout = 20 * time.Second
	return r
}

// A client whose pings fail sends done with the error and returns; the
// server's pong loop, left without pings, must stop then, not poll until
// the request's timeout while the node's probe slot stays taken.
func TestClientFailureEndsServerLoop(t *testing.T) {
	client, server := &fakeLoop{failAfter: 50 * time.Millisecond}, &fakeLoop{}
	e := measureBetween(t, latRequest(), client, server)
	if e.clientErr == nil || !strings.Contains(e.clientErr.Error(), "transport retry counter exceeded") {
		t.Errorf("client: %v", e.clientErr)
	}
	if !server.cancelled.Load() || e.serverT > 3*time.Second {
		t.Errorf("the server's loop ran %s after the client failed (cancelled %v); the timeout is %s", e.serverT, server.cancelled.Load(), latRequest().Timeout)
	}
	if e.serverErr == nil || !strings.Contains(e.serverErr.Error(), "probe failed: client:") || !e.released {
		t.Errorf("server: %v, slot released %v", e.serverErr, e.released)
	}
}

// The other way round: the server's loop fails (its replies are not
// acknowledged) while the client waits for replies; the server says so at
// once and the client stops.
func TestServerFailureEndsClientLoop(t *testing.T) {
	client, server := &fakeLoop{}, &fakeLoop{failAfter: 50 * time.Millisecond}
	e := measureBetween(t, latRequest(), client, server)
	if !client.cancelled.Load() || e.clientT > 3*time.Second {
		t.Errorf("the client's loop ran %s after the server failed (cancelled %v)", e.clientT, client.cancelled.Load())
	}
	var re *RemoteError
	if !errors.As(e.clientErr, &re) || re.Code != CodeFailed || !strings.Contains(re.Message, "transport retry counter exceeded") {
		t.Errorf("client: %v", e.clientErr)
	}
	// The server got the client's done after its early ack.
	if e.serverErr == nil || !strings.Contains(e.serverErr.Error(), "probe failed: client:") || !strings.Contains(e.serverErr.Error(), "canceled") || e.serverT > 3*time.Second {
		t.Errorf("server after %s: %v", e.serverT, e.serverErr)
	}
}

// Both loops succeed: each end's probe thread CPU is counted, the
// server's arriving in its ack.
func TestMeasurementCPUBothEnds(t *testing.T) {
	client, server := &fakeLoop{doneAfter: 100 * time.Millisecond, burn: true}, &fakeLoop{doneAfter: 300 * time.Millisecond, burn: true}
	e := measureBetween(t, latRequest(), client, server)
	if e.clientErr != nil || e.serverErr != nil {
		t.Fatalf("client: %v; server: %v", e.clientErr, e.serverErr)
	}
	// A spinning thread gets a tenth of a core at least, on two loaded
	// ones under the race detector.
	if e.res.CPUSeconds < 0.01 || e.res.PeerCPUSeconds < 0.03 || e.res.Latency == nil {
		t.Errorf("latency: CPU this end %.3fs (spun 0.1s), server %.3fs (spun 0.3s); %+v", e.res.CPUSeconds, e.res.PeerCPUSeconds, e.res)
	}

	// RDMA WRITE: the server runs no loop, so only the writer counts.
	bw := DefaultRequest(KindWriteBW)
	bw.Timeout = 20 * time.Second
	e = measureBetween(t, bw, &fakeLoop{doneAfter: 200 * time.Millisecond, burn: true}, &fakeLoop{})
	if e.clientErr != nil || e.serverErr != nil {
		t.Fatalf("client: %v; server: %v", e.clientErr, e.serverErr)
	}
	gb := float64(e.res.Bytes) / 1e9
	if e.res.PeerCPUSeconds != 0 || e.res.CPUSeconds < 0.02 || e.res.CPUSecondsPerGB != e.res.CPUSeconds/gb {
		t.Errorf("write: %+v", e.res)
	}
}

// The figure is the probe thread's, not the process's: other work in the
// agent (here a goroutine spinning beside an idle loop) is not counted.
func TestMeasurementCPUIsTheProbeThreads(t *testing.T) {
	// On a loaded machine (CI's two cores beside a VM test) the spinning
	// goroutine may get little CPU in a short window: the window grows
	// until it has burned enough to tell the two apart.
	for window := 400 * time.Millisecond; ; window *= 4 {
		stop := make(chan struct{})
		burned := make(chan time.Duration)
		go func() {
			burned <- onThread(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
				}
			})
		}()
		bw := DefaultRequest(KindWriteBW)
		bw.Timeout = 20 * time.Second
		e := measureBetween(t, bw, &fakeLoop{doneAfter: window}, &fakeLoop{})
		close(stop)
		other := <-burned
		if e.clientErr != nil {
			t.Fatal(e.clientErr)
		}
		if other < 100*time.Millisecond {
			if window < 6*time.Second {
				continue
			}
			t.Fatalf("the other goroutine burned only %s in %s: the machine is too loaded to tell", other, window)
		}
		if e.res.CPUSeconds > 0.05 {
			t.Errorf("a sleeping loop counted %.3f CPU s while another goroutine burned %s", e.res.CPUSeconds, other)
		}
		return
	}
}

// Bidirectional bandwidth (perftest -b): the server runs its loop toward
// the client at the same time and its ack carries that direction, which
// the client adds to its own, rate to rate, as perftest sums both sides.
// Without -b, READ leaves the server passive like WRITE (its fake loop,
// never told to finish, would run to the timeout if it were started).
func TestBidirectionalBothDirections(t *testing.T) {
	req := DefaultRequest(KindWriteBW)
	req.Timeout, req.Bidirectional, req.Iterations = 20*time.Second, true, 1000
	e := measureBetween(t, req, &fakeLoop{doneAfter: 100 * time.Millisecond}, &fakeLoop{doneAfter: 200 * time.Millisecond})
	if e.clientErr != nil || e.serverErr != nil {
		t.Fatalf("client: %v; server: %v", e.clientErr, e.serverErr)
	}
	b := float64(req.Size * req.Iterations)
	if want := b/0.1 + b/0.2; !e.res.Bidirectional || e.res.ReverseBytes != uint64(b) || e.res.ReverseElapsed != 200*time.Millisecond ||
		math.Abs(e.res.BytesPerSecond-want) > 1 {
		t.Errorf("bidirectional: %.0f B/s, want %.0f; %+v", e.res.BytesPerSecond, want, e.res)
	}

	read := DefaultRequest(KindReadBW)
	read.Timeout, read.QPs = 5*time.Second, 2
	server := &fakeLoop{}
	e = measureBetween(t, read, &fakeLoop{doneAfter: 100 * time.Millisecond}, server)
	if e.clientErr != nil || e.serverErr != nil || e.serverT > 3*time.Second {
		t.Fatalf("read: client: %v; server after %s: %v", e.clientErr, e.serverT, e.serverErr)
	}
	if e.res.Bytes != uint64(2*read.Size*read.Iterations) || e.res.ReverseBytes != 0 {
		t.Errorf("read over two QPs: %+v", e.res)
	}
}
