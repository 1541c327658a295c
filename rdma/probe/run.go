package probe

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/rdma/verbs"
)

// Result is one probe's outcome.
type Result struct {
	Kind string `json:"kind"`
	// Local is this end's port; empty for the TCP kinds' loopback.
	Local Port `json:"local"`
	// Peer is "loopback" or the peer's address.
	Peer string `json:"peer"`
	// Rail is the rail probed (Client.RunRail), PeerPort the peer's port
	// on it, as its server named it.
	Rail       *int  `json:"rail,omitempty"`
	PeerPort   *Port `json:"peer_port,omitempty"`
	Size       int   `json:"size"`
	Iterations int   `json:"iterations"`
	Depth      int   `json:"depth"`
	// QPs is the queue pairs the bandwidth kinds ran over at once (set
	// when more than one); Iterations counts per QP, as perftest -q.
	QPs int `json:"qps,omitempty"`
	// Bidirectional: both ends ran the loop toward each other at once
	// (perftest -b). Messages, Bytes and Elapsed are this end's
	// direction, ReverseBytes and ReverseElapsed the other's;
	// BytesPerSecond sums both directions' rates, as perftest reports.
	Bidirectional  bool          `json:"bidirectional,omitempty"`
	ReverseBytes   uint64        `json:"reverse_bytes,omitempty"`
	ReverseElapsed time.Duration `json:"reverse_elapsed_ns,omitempty"`
	Messages       uint64        `json:"messages"`
	Bytes          uint64        `json:"bytes"`
	// Elapsed is the measured time: first post to last completion.
	Elapsed        time.Duration `json:"elapsed_ns"`
	BytesPerSecond float64       `json:"bytes_per_second,omitempty"`
	// PeerDataRateGbps is the peer port's data rate, as its server
	// reported it (0: unknown, or loopback).
	PeerDataRateGbps float64 `json:"peer_data_rate_gbps,omitempty"`
	// LineRateFraction is BytesPerSecond over the data rate of the slower
	// of the two ports (RDMA WRITE or READ to a peer, with a known rate;
	// bidirectional: over twice it, a full-duplex link's). Loopback
	// has none: its traffic turns around inside the adapter (mlx5,
	// InfiniBand HCAs) or the kernel (soft-RoCE) and never meets the link.
	LineRateFraction float64        `json:"line_rate_fraction,omitempty"`
	Latency          *verbs.Latency `json:"latency,omitempty"`
	// RelaxedOrdering: this end's buffer was registered with relaxed
	// ordering (verbs.QP.RelaxedOrdering).
	RelaxedOrdering bool `json:"relaxed_ordering,omitempty"`
	// Placement is where this end's buffer and polling thread ran, against
	// the HCA's NUMA node (RDMA kinds).
	Placement *verbs.Placement `json:"placement,omitempty"`
	// CPUSeconds is the CPU time (user+system, CLOCK_THREAD_CPUTIME_ID)
	// of this agent's probe threads during the measurement: the thread
	// that runs the loop, locked to it (both ends' threads for
	// loopback). The RDMA loops busy-poll, so an RDMA thread is busy for
	// the whole run; kernel network work outside the thread (softirq on
	// other CPUs) is not counted. PeerCPUSeconds is the server's probe
	// thread, as its ack reports it: none for RDMA WRITE, whose target
	// runs no loop. CPUSecondsPerGB divides both ends' sum by the
	// gigabytes (1e9) moved, for the bandwidth kinds.
	CPUSeconds      float64 `json:"cpu_seconds"`
	PeerCPUSeconds  float64 `json:"peer_cpu_seconds,omitempty"`
	CPUSecondsPerGB float64 `json:"cpu_seconds_per_gb,omitempty"`

	// Memory is verbs.MemoryGPU when the buffers were GPU memory (GPU
	// says which GPU and how it was registered); empty for host memory.
	Memory string     `json:"memory,omitempty"`
	GPU    *GPUResult `json:"gpu,omitempty"`
}

// isRDMA reports whether the kind uses verbs.
func isRDMA(kind string) bool {
	return kind == KindWriteBW || kind == KindSendLat || kind == KindReadBW || kind == KindWriteLat
}

// isBandwidth reports whether the kind measures bandwidth.
func isBandwidth(kind string) bool {
	return kind == KindWriteBW || kind == KindTCPBW || kind == KindReadBW
}

// IsBandwidth reports whether kind measures bandwidth (else latency).
func IsBandwidth(kind string) bool { return isBandwidth(kind) }

// IsRDMA reports whether kind runs over verbs (else TCP).
func IsRDMA(kind string) bool { return isRDMA(kind) }

// RDMAKinds are the RDMA kinds, perftest's tests: ib_write_bw, ib_send_lat,
// ib_read_bw, ib_write_lat.
var RDMAKinds = []string{KindWriteBW, KindSendLat, KindReadBW, KindWriteLat}

// DefaultRequest is perftest's defaults for the kind: 64 KiB x 5000 writes
// or reads at depth 128 for bandwidth, 2 bytes x 1000 round trips for
// latency.
func DefaultRequest(kind string) Request {
	r := Request{Kind: kind, Timeout: time.Minute}
	if isBandwidth(kind) {
		r.Size, r.Iterations, r.Depth = 65536, 5000, 128
	} else {
		r.Size, r.Iterations, r.Depth = 2, 1000, 1
	}
	return r
}

// qpConfig sizes an end's queue pair and buffer for the request: the
// message for WRITE, a send and a receive half for SEND/RECV.
func qpConfig(p Port, req Request) verbs.QPConfig {
	c := verbs.QPConfig{Port: p.Port, GIDIndex: p.GIDIndex, BufferSize: req.Size, Depth: req.Depth, PSN: randomPSN(), NUMANode: p.NUMANode,
		ServiceLevel: uint8(req.ServiceLevel), TrafficClass: uint8(req.TrafficClass)} // validated
	if req.Kind == KindReadBW {
		c.Reads = true
	}
	if req.Kind == KindSendLat || req.Kind == KindWriteLat {
		c.BufferSize = 2 * req.Size
		// Sends are signaled every 16th; the queue holds the rest.
		c.Depth = max(req.Depth, 64)
	}
	return c
}

func randomPSN() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return binary.BigEndian.Uint32(b[:]) & 0xffffff
}

// onThread runs f locked to its OS thread and returns the CPU time that
// thread spent in it (CLOCK_THREAD_CPUTIME_ID): the probe's own cost,
// without the rest of the process (GC, collectors, the HTTP server),
// which the process's rusage would add.
func onThread(f func()) time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := threadCPU()
	f()
	return threadCPU() - start
}

// threadCPU is the calling thread's CPU time so far (0 if the clock
// fails, which Linux does not for its own thread).
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// finish fills in the derived figures from this end's CPU time
// (PeerCPUSeconds is set before).
func (r *Result) finish(cpu time.Duration) {
	r.CPUSeconds = cpu.Seconds()
	if !isBandwidth(r.Kind) || r.Elapsed <= 0 {
		return
	}
	r.BytesPerSecond = float64(r.Bytes) / r.Elapsed.Seconds()
	if r.Bidirectional && r.ReverseElapsed > 0 {
		r.BytesPerSecond += float64(r.ReverseBytes) / r.ReverseElapsed.Seconds()
	}
	if total := r.Bytes + r.ReverseBytes; total > 0 {
		r.CPUSecondsPerGB = (r.CPUSeconds + r.PeerCPUSeconds) / (float64(total) / 1e9)
	}
	if !isRDMA(r.Kind) || r.Peer == PeerLoopback {
		return
	}
	if gbps := r.LineRateGbps(); gbps > 0 {
		links := 1.0
		if r.Bidirectional {
			links = 2
		}
		r.LineRateFraction = r.BytesPerSecond / (links * gbps * 1e9 / 8)
	}
}

// LineRateGbps is the data rate LineRateFraction divides by: the slower
// end's (this end's while the peer's is unknown; 0 while this end's is).
func (r Result) LineRateGbps() float64 {
	if r.PeerDataRateGbps > 0 && r.PeerDataRateGbps < r.Local.DataRateGbps {
		return r.PeerDataRateGbps
	}
	return r.Local.DataRateGbps
}

// noteQP records how qp's buffer was registered and placed.
func (r *Result) noteQP(qp *verbs.QP) {
	p := qp.Placement()
	r.Placement = &p
	r.RelaxedOrdering = qp.RelaxedOrdering()
}

// timeoutFor bounds a measurement by the request and the context.
func timeoutFor(ctx context.Context, req Request) time.Duration {
	t := req.Timeout
	if dl, ok := ctx.Deadline(); ok {
		t = min(t, time.Until(dl))
	}
	return max(t, time.Millisecond)
}

// bwLoop runs the bandwidth loops: WriteBW one QP's RDMA WRITE, Bandwidth
// any over several.
type bwLoop interface {
	WriteBW(remote verbs.Endpoint, size int, iters uint64, duration, timeout time.Duration) (verbs.BW, error)
	Bandwidth(op verbs.Op, remotes []verbs.Endpoint, size int, iters uint64, duration, timeout time.Duration) (verbs.BW, error)
}

// initiator is the client end of an RDMA measurement, a qpSet: an
// interface so that the protocol around the loops is tested without RDMA.
type initiator interface {
	bwLoop
	Ping(size, iters int, timeout time.Duration) ([]time.Duration, error)
	WritePing(remote verbs.Endpoint, size, iters int, timeout time.Duration) ([]time.Duration, error)
	Cancel()
}

// responder is the server end of a latency or bidirectional measurement,
// a qpSet.
type responder interface {
	bwLoop
	Pong(size, iters int, timeout time.Duration) error
	WritePong(remote verbs.Endpoint, size, iters int, timeout time.Duration) error
	Cancel()
}

// qpSet is one end's queue pairs: one, or Request.QPs for the bandwidth
// kinds (perftest -q), driven by one loop. The latency loops use the
// first.
type qpSet []*verbs.QP

func (s qpSet) WriteBW(remote verbs.Endpoint, size int, iters uint64, duration, timeout time.Duration) (verbs.BW, error) {
	return s[0].WriteBW(remote, size, iters, duration, timeout)
}

func (s qpSet) Bandwidth(op verbs.Op, remotes []verbs.Endpoint, size int, iters uint64, duration, timeout time.Duration) (verbs.BW, error) {
	return verbs.Bandwidth(s, op, remotes, size, iters, duration, timeout)
}

func (s qpSet) Ping(size, iters int, timeout time.Duration) ([]time.Duration, error) {
	return s[0].Ping(size, iters, timeout)
}

func (s qpSet) Pong(size, iters int, timeout time.Duration) error {
	return s[0].Pong(size, iters, timeout)
}

func (s qpSet) WritePing(remote verbs.Endpoint, size, iters int, timeout time.Duration) ([]time.Duration, error) {
	return s[0].WritePing(remote, size, iters, timeout)
}

func (s qpSet) WritePong(remote verbs.Endpoint, size, iters int, timeout time.Duration) error {
	return s[0].WritePong(remote, size, iters, timeout)
}

// Cancel stops the loop running on the set.
func (s qpSet) Cancel() {
	for _, q := range s {
		q.Cancel()
	}
}

// endpoints are the set's endpoints, for the peer.
func (s qpSet) endpoints() []verbs.Endpoint {
	out := make([]verbs.Endpoint, len(s))
	for i, q := range s {
		out[i] = q.Local()
	}
	return out
}

// numQPs is the queue pairs a request runs over.
func numQPs(req Request) int { return max(req.QPs, 1) }

// newQPs makes n queue pairs of cfg on dev; close closes them.
func newQPs(dev *verbs.Device, cfg verbs.QPConfig, n int) (qpSet, error) {
	s := make(qpSet, 0, n)
	for range n {
		cfg.PSN = randomPSN()
		q, err := dev.NewQP(cfg)
		if err != nil {
			s.close()
			return nil, err
		}
		s = append(s, q)
	}
	return s, nil
}

func (s qpSet) close() {
	for _, q := range s {
		q.Close()
	}
}

// watch cancels c when ctx ends before stop is called, so a loop does not
// outlive the probe's caller.
func watch(ctx context.Context, c interface{ Cancel() }) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-ctx.Done():
			c.Cancel()
		case <-done:
		}
	}()
	return func() { close(done); <-exited }
}

// PeerDevice is the peer's device on the rail probed ("" when no rail
// was named).
func (r Result) PeerDevice() string {
	if r.PeerPort == nil {
		return ""
	}
	return r.PeerPort.Device
}

// PeerLoopback is Result.Peer of a loopback probe.
const PeerLoopback = "loopback"

// Loopback measures between two sets of queue pairs on one port of this
// node. It holds the limiter for its duration. On mlx5 and InfiniBand
// HCAs the traffic turns around inside the adapter, so this checks the
// HCA, its driver and the host side (PCIe, memory), not the cable or the
// switch: peer probes do that.
func Loopback(ctx context.Context, lim *Limiter, p Port, req Request) (Result, error) {
	if !isRDMA(req.Kind) {
		return tcpLoopback(ctx, lim, p, req)
	}
	if err := req.Validate(); err != nil {
		return Result{}, err
	}
	if req.Memory == verbs.MemoryGPU && req.GPU == nil {
		return Result{}, errNoGPU
	}
	if !lim.TryAcquire() {
		return Result{}, ErrBusy
	}
	defer lim.Release()
	dev, err := verbs.OpenDevice(p.Device)
	if err != nil {
		return Result{}, err
	}
	defer dev.Close()
	n := numQPs(req)
	ca, cb := qpConfig(p, req), qpConfig(p, req)
	if req.Memory == verbs.MemoryGPU {
		cfgs, release, err := gpuBuffers(req.GPU, ca, cb)
		if err != nil {
			return Result{}, err
		}
		defer release() // after the QPs, deferred below, are closed
		ca, cb = cfgs[0], cfgs[1]
	}
	a, err := newQPs(dev, ca, n)
	if err != nil {
		return Result{}, err
	}
	defer a.close()
	b, err := newQPs(dev, cb, n)
	if err != nil {
		return Result{}, err
	}
	defer b.close()
	for i := range n {
		if err := connectQP(a[i], b[i].Local(), req); err != nil {
			return Result{}, err
		}
		if err := connectQP(b[i], a[i].Local(), req); err != nil {
			return Result{}, err
		}
	}
	res := Result{Kind: req.Kind, Local: p, Peer: PeerLoopback, Size: req.Size, Iterations: req.Iterations, Depth: req.Depth}
	if n > 1 {
		res.QPs = n
	}
	if ca.GPU != nil {
		res.Memory, res.GPU = verbs.MemoryGPU, gpuResult(*req.GPU, a[0], ca.GPU)
	}
	timeout := timeoutFor(ctx, req)
	stopA, stopB := watch(ctx, a), watch(ctx, b)
	defer stopA()
	defer stopB()
	// b answers a on its own thread: the latency kinds' responder, or the
	// reverse direction of a bidirectional run; a passive target
	// otherwise, so the first thread is all the CPU.
	type answered struct {
		bw  verbs.BW
		cpu time.Duration
		err error
	}
	answers := make(chan answered, 1)
	answering := !isBandwidth(req.Kind) || req.Bidirectional
	if answering {
		go func() {
			var r answered
			if isBandwidth(req.Kind) {
				r.bw, r.cpu, r.err = bandwidth(b, a.endpoints(), req, timeout)
			} else {
				r.cpu, r.err = pong(b, a[0].Local(), req, timeout)
			}
			answers <- r
		}()
	}
	var (
		bw   verbs.BW
		half []time.Duration
		cpu  time.Duration
	)
	if isBandwidth(req.Kind) {
		bw, cpu, err = bandwidth(a, b.endpoints(), req, timeout)
	} else {
		half, cpu, err = ping(a, b[0].Local(), req, timeout)
	}
	var rerr error
	if answering {
		if err != nil {
			b.Cancel()
		}
		r := <-answers // b's loop must end before b is closed
		cpu += r.cpu
		rerr = r.err
		res.Bidirectional = req.Bidirectional
		res.ReverseBytes, res.ReverseElapsed = r.bw.Bytes, r.bw.Elapsed
	}
	if err != nil {
		return Result{}, err
	}
	if rerr != nil {
		return Result{}, fmt.Errorf("responder: %w", rerr)
	}
	if isBandwidth(req.Kind) {
		res.Messages, res.Bytes, res.Elapsed = bw.Messages, bw.Bytes, bw.Elapsed
	} else {
		res.fillLatency(half)
	}
	res.noteQP(a[0])
	res.finish(cpu)
	return res, nil
}

// fillLatency sets the latency summary from half round trips.
func (r *Result) fillLatency(half []time.Duration) {
	l := verbs.Summarize(half)
	r.Latency = &l
	r.Messages = uint64(len(half))
	r.Bytes = uint64(len(half)) * uint64(r.Size) * 2
	for _, h := range half {
		r.Elapsed += 2 * h
	}
}

// bandwidth, ping and pong run a loop on a locked thread and return the
// CPU time it took. bandwidth keeps one QP's RDMA WRITE on its own loop
// (gn_write_bw), the figure perftest's ib_write_bw is compared with.
func bandwidth(qp bwLoop, remotes []verbs.Endpoint, req Request, timeout time.Duration) (bw verbs.BW, cpu time.Duration, err error) {
	cpu = onThread(func() {
		if req.Kind == KindWriteBW && len(remotes) == 1 {
			bw, err = qp.WriteBW(remotes[0], req.Size, uint64(req.Iterations), req.Duration, timeout)
			return
		}
		op := verbs.OpWrite
		if req.Kind == KindReadBW {
			op = verbs.OpRead
		}
		bw, err = qp.Bandwidth(op, remotes, req.Size, uint64(req.Iterations), req.Duration, timeout)
	})
	return bw, cpu, err
}

func ping(qp initiator, remote verbs.Endpoint, req Request, timeout time.Duration) (half []time.Duration, cpu time.Duration, err error) {
	cpu = onThread(func() {
		if req.Kind == KindWriteLat {
			half, err = qp.WritePing(remote, req.Size, req.Iterations, timeout)
			return
		}
		half, err = qp.Ping(req.Size, req.Iterations, timeout)
	})
	return half, cpu, err
}

func pong(qp responder, remote verbs.Endpoint, req Request, timeout time.Duration) (cpu time.Duration, err error) {
	cpu = onThread(func() {
		if req.Kind == KindWriteLat {
			err = qp.WritePong(remote, req.Size, req.Iterations, timeout)
			return
		}
		err = qp.Pong(req.Size, req.Iterations, timeout)
	})
	return cpu, err
}

// ErrBusy: another probe is running on this node.
var ErrBusy = errors.New("another probe is running on this node")

// Limiter lets one probe run at a time on a node: the server, the
// loopback probes and outgoing peer probes share one.
type Limiter struct{ ch chan struct{} }

// NewLimiter returns a free limiter.
func NewLimiter() *Limiter { return &Limiter{ch: make(chan struct{}, 1)} }

// TryAcquire takes the limiter if it is free.
func (l *Limiter) TryAcquire() bool {
	select {
	case l.ch <- struct{}{}:
		return true
	default:
		return false
	}
}

// Release frees it.
func (l *Limiter) Release() { <-l.ch }

// Available says why RDMA probes cannot run on this node (nil when they
// can): no libibverbs, no kernel support, or no device.
func Available() error {
	names, err := verbs.Devices()
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return verbs.ErrNoDevices
	}
	return nil
}
