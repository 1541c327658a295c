package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/gpunode/gpunode/rdma/verbs"
)

// Peer is another node's agent.
type Peer struct {
	Node string
	// Address is host:port of its probe server.
	Address string
}

// PeersFor picks whom self probes in a round: its successor in the ring of
// nodes ordered by name, plus up to random others, so a round of the
// whole cluster costs O(N) probes, not O(N^2). self itself and duplicate
// nodes are ignored; the result is ordered successor first.
func PeersFor(self string, peers []Peer, random int, rnd *rand.Rand) []Peer {
	byNode := map[string]Peer{}
	for _, p := range peers {
		if p.Node != "" && p.Node != self {
			if _, dup := byNode[p.Node]; !dup {
				byNode[p.Node] = p
			}
		}
	}
	if len(byNode) == 0 {
		return nil
	}
	nodes := make([]string, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	// The successor: the first name after self, wrapping around.
	i, _ := slices.BinarySearch(nodes, self)
	succ := nodes[i%len(nodes)]
	out := []Peer{byNode[succ]}
	rest := slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == succ })
	rnd.Shuffle(len(rest), func(a, b int) { rest[a], rest[b] = rest[b], rest[a] })
	for _, n := range rest[:min(random, len(rest))] {
		out = append(out, byNode[n])
	}
	return out
}

// Jitter spreads d by up to +-20%, so nodes started together do not
// probe each other in lockstep.
func Jitter(d time.Duration, rnd *rand.Rand) time.Duration {
	return d + time.Duration((rnd.Float64()*0.4-0.2)*float64(d))
}

// Thresholds decide whether a result passes; zero fields are not checked.
// Peer probes and loopback probes have their own (Round.Verdict). The
// bandwidth ones judge write_bw and read_bw (a bidirectional run by its
// sum, its line-rate fraction of both directions), the latency one
// send_lat and write_lat.
type Thresholds struct {
	MinBandwidthBytesPerSecond float64
	// MinLineRateFraction applies to peer probes only: loopback traffic
	// never meets the link.
	MinLineRateFraction float64
	MaxLatencyP50       time.Duration
}

// Check returns why r fails the thresholds, nil when it passes.
func (t Thresholds) Check(r Result) error {
	where := r.Local.Name() + " to " + r.Peer
	if r.Rail != nil {
		where = fmt.Sprintf("rail %d: %s to %s %s", *r.Rail, r.Local.Name(), r.Peer, r.PeerDevice())
	}
	if r.Peer == PeerLoopback {
		where = r.Local.Name() + " HCA loopback"
	}
	if r.GPU != nil {
		where += gpuWhere(&r.GPU.Index)
	}
	switch r.Kind {
	case KindWriteBW, KindReadBW:
		if t.MinBandwidthBytesPerSecond > 0 && r.BytesPerSecond < t.MinBandwidthBytesPerSecond {
			return fmt.Errorf("%s: bandwidth %.3g B/s below %.3g", where, r.BytesPerSecond, t.MinBandwidthBytesPerSecond)
		}
		if t.MinLineRateFraction > 0 && r.Peer != PeerLoopback && r.LineRateFraction < t.MinLineRateFraction {
			return fmt.Errorf("%s: %.1f%% of line rate, below %.1f%%", where, 100*r.LineRateFraction, 100*t.MinLineRateFraction)
		}
	case KindSendLat, KindWriteLat:
		if t.MaxLatencyP50 > 0 && r.Latency != nil && r.Latency.P50 > t.MaxLatencyP50 {
			return fmt.Errorf("%s: p50 latency %s above %s", where, r.Latency.P50, t.MaxLatencyP50)
		}
	}
	return nil
}

// Failure is one probe of a round that did not produce a result.
type Failure struct {
	Kind string
	// Port is "device/port" for loopback and for a rail to a peer; Peer
	// the peer's node.
	Port, Peer string
	// Rail is the rail of a per-rail peer probe.
	Rail *int
	// GPU is the index of the GPU whose memory held this end's buffers;
	// nil for host memory.
	GPU *int
	Err string
}

// where names what failed: "node-b rail 1 (mlx5_1/1)", "node-b" or
// "mlx5_0/1 HCA loopback", and "from GPU 3's memory" after it for a GPU
// memory probe.
func (f Failure) where() string {
	var w string
	switch {
	case f.Peer != "" && f.Rail != nil:
		w = fmt.Sprintf("%s rail %d (%s)", f.Peer, *f.Rail, f.Port)
	case f.Peer != "":
		w = f.Peer
	default:
		w = f.Port + " HCA loopback"
	}
	return w + gpuWhere(f.GPU)
}

// gpuWhere is " from GPU N's memory", or "" for host memory.
func gpuWhere(gpu *int) string {
	if gpu == nil {
		return ""
	}
	return fmt.Sprintf(" from GPU %d's memory", *gpu)
}

// Round is one round's outcome.
type Round struct {
	At       time.Time
	Results  []Result
	Failures []Failure
	// Unavailable says why no probe could run (no RDMA, no token).
	Unavailable string
}

// Verdict is what a round means for the node: Verified when at least one
// probe ran and every probe succeeded within the thresholds.
type Verdict struct {
	Verified bool
	// Reason is a CamelCase word for the Node condition.
	Reason  string
	Message string
}

// rdmaFailures are the failures that decide the verdict: every one but
// the TCP baseline's.
func (r Round) rdmaFailures() []Failure {
	var out []Failure
	for _, f := range r.Failures {
		if f.Kind != KindTCPBW && f.Kind != KindTCPLat {
			out = append(out, f)
		}
	}
	return out
}

// Verdict judges a round: peer probes by peer, since they cross the
// links and the fabric; loopback probes by loopback, since they check the
// HCA, its driver and the host side only (on mlx5 and InfiniBand their
// traffic turns around inside the adapter). A link or fabric problem is
// reported before an HCA's.
func (r Round) Verdict(peer, loopback Thresholds) Verdict {
	switch {
	case r.Unavailable != "":
		return Verdict{Reason: "ProbesUnavailable", Message: r.Unavailable}
	case len(r.rdmaFailures()) > 0:
		failed := r.rdmaFailures()
		f, reason := failed[0], "LoopbackFailed"
		if i := slices.IndexFunc(failed, func(f Failure) bool { return f.Peer != "" }); i >= 0 {
			f, reason = failed[i], "ProbeFailed"
		}
		return Verdict{Reason: reason, Message: fmt.Sprintf("%d of %d probes failed; %s %s: %s", len(failed), len(r.Failures)+len(r.Results), f.where(), f.Kind, f.Err)}
	case len(r.Results) == 0:
		return Verdict{Reason: "NoProbe", Message: "no port or peer to probe"}
	}
	var peerBelow, loopBelow []string
	peers := 0
	for _, res := range r.Results {
		if res.Peer == PeerLoopback {
			if err := loopback.Check(res); err != nil {
				loopBelow = append(loopBelow, err.Error())
			}
			continue
		}
		peers++
		if err := peer.Check(res); err != nil {
			peerBelow = append(peerBelow, err.Error())
		}
	}
	switch {
	case len(peerBelow) > 0:
		return Verdict{Reason: "BelowThreshold", Message: strings.Join(append(peerBelow, loopBelow...), "; ")}
	case len(loopBelow) > 0:
		return Verdict{Reason: "LoopbackBelowThreshold", Message: strings.Join(loopBelow, "; ")}
	case peers == 0:
		return Verdict{Verified: true, Reason: "LoopbackPassed", Message: fmt.Sprintf("%d HCA loopback probes passed; no peer probe ran, so links and the fabric are not verified", len(r.Results))}
	}
	return Verdict{Verified: true, Reason: "ProbesPassed", Message: fmt.Sprintf("%d probes passed (%d HCA loopback, %d to peers)", len(r.Results), len(r.Results)-peers, peers)}
}

// Scheduler runs rounds of probes on a jittered interval: loopback on
// every usable port, then the peers PeersFor picks. It never runs because
// of a scrape; only its own timer starts a round.
type Scheduler struct {
	Self        string
	Interval    time.Duration
	Loopback    bool
	RandomPeers int
	// TCPBaseline also measures TCP to each peer over the same path, so
	// users see what RDMA buys them; its results never decide the verdict.
	TCPBaseline bool
	// Rails, when set, probes each peer on every rail of this node (see
	// RailRule); nil probes one port per peer, the one whose address the
	// control connection leaves from.
	Rails *RailRule
	// Peers lists the other agents (nil: loopback only).
	Peers   func(ctx context.Context) ([]Peer, error)
	Client  *Client
	Timeout time.Duration
	// Kinds are the RDMA kinds each round runs (nil: write_bw and
	// send_lat), each with perftest's defaults.
	Kinds []string
	// ServiceLevel and TrafficClass set the RDMA probes' class.
	ServiceLevel, TrafficClass int
	// GPUs, when set, lists each GPU with its nearest RDMA device (and the
	// bound on the memory a probe takes from it): every round then also
	// runs the RDMA kinds with this end's buffers in that GPU's memory
	// (GPUDirect RDMA, the path NCCL and NIXL move GPU memory over),
	// loopback on that device and to each peer on that device's rail,
	// where the peer answers from the GPU nearest its port. Without rails
	// no GPU memory probe goes to peers: the control connection, not the
	// GPU, would pick the port.
	GPUs   func() []GPUPair
	Logger *slog.Logger
	// OnRound receives every round's outcome.
	OnRound func(Round)
	Rand    *rand.Rand
}

// Run runs rounds until ctx ends; the first one starts after a jittered
// quarter of the interval, at most about 15s, so the node's condition is
// known soon after start and a restarted DaemonSet still spreads out.
func (s *Scheduler) Run(ctx context.Context) {
	wait := Jitter(min(s.Interval/4, 15*time.Second), s.Rand)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		s.OnRound(s.Round(ctx))
		wait = Jitter(s.Interval, s.Rand)
	}
}

// requests are the probes of a round: perftest's default bandwidth and
// latency measurements (Kinds), and for peers the TCP baseline when
// asked.
func (s *Scheduler) requests(peer bool) []Request {
	kinds := slices.Clone(s.Kinds)
	if kinds == nil {
		kinds = []string{KindWriteBW, KindSendLat}
	}
	if peer && s.TCPBaseline {
		kinds = append(kinds, KindTCPBW, KindTCPLat)
	}
	var out []Request
	for _, k := range kinds {
		r := DefaultRequest(k)
		r.Timeout = s.Timeout
		if isRDMA(k) {
			r.ServiceLevel, r.TrafficClass = s.ServiceLevel, s.TrafficClass
		}
		out = append(out, r)
	}
	return out
}

// gpuRequests are the RDMA kinds of a round with this end's buffers in
// g's memory.
func (s *Scheduler) gpuRequests(g GPUTarget) []Request {
	var out []Request
	for _, req := range s.requests(false) {
		if isRDMA(req.Kind) {
			req.Memory, req.GPU = verbs.MemoryGPU, &g
			out = append(out, req)
		}
	}
	return out
}

// Round runs one round now.
func (s *Scheduler) Round(ctx context.Context) Round {
	r := Round{At: time.Now()}
	if err := Available(); err != nil {
		r.Unavailable = "RDMA probes unavailable: " + err.Error()
		return r
	}
	var gpus []GPUPair
	if s.GPUs != nil {
		gpus = s.GPUs()
	}
	if s.Loopback {
		devs, err := s.Client.Devices(ctx)
		if err != nil {
			r.Failures = append(r.Failures, Failure{Kind: "discovery", Err: err.Error()})
		}
		ports := Ports(devs)
		for _, p := range ports {
			for _, req := range s.requests(false) {
				res, err := Loopback(ctx, s.Client.Limiter, p, req)
				r.add(res, err, Failure{Kind: req.Kind, Port: p.Name()})
			}
		}
		for _, g := range gpus {
			s.gpuLoopback(ctx, &r, g, ports)
		}
	}
	if s.Peers != nil {
		all, err := s.Peers(ctx)
		if err != nil {
			s.logger().Warn("cannot list probe peers", "err", err)
		}
		var rails []Rail
		if s.Rails != nil {
			devs, err := s.Client.Devices(ctx)
			if err != nil {
				r.Failures = append(r.Failures, Failure{Kind: "discovery", Err: err.Error()})
			}
			rails = Rails(devs, *s.Rails)
		}
		for _, p := range PeersFor(s.Self, all, s.RandomPeers, s.Rand) {
			s.peerRound(ctx, &r, p, rails)
			for _, g := range gpus {
				s.gpuPeer(ctx, &r, p, g, rails)
			}
		}
	}
	for _, f := range r.Failures {
		s.logger().Warn("probe failed", "kind", f.Kind, "where", f.where(), "err", f.Err)
	}
	return r
}

// peerRound probes peer p: the RDMA kinds on each rail in turn when rails
// are on (a rail whose port here is down fails: its cable or switch port
// is what the probe is for), else on one port; the TCP baseline once, on
// the control connection.
func (s *Scheduler) peerRound(ctx context.Context, r *Round, p Peer, rails []Rail) {
	for _, req := range s.requests(true) {
		if s.Rails == nil || !isRDMA(req.Kind) {
			res, err := s.runPeer(ctx, func() (Result, error) { return s.Client.Run(ctx, p.Address, req) })
			res.Peer = p.Node
			r.add(res, err, Failure{Kind: req.Kind, Peer: p.Node})
			continue
		}
		if len(rails) == 0 {
			r.add(Result{}, ErrNoPort, Failure{Kind: req.Kind, Peer: p.Node})
		}
		for _, rail := range rails {
			res, err := s.runPeer(ctx, func() (Result, error) { return s.Client.RunRail(ctx, p.Address, rail, *s.Rails, req) })
			res.Peer = p.Node
			r.add(res, err, Failure{Kind: req.Kind, Peer: p.Node, Port: rail.Port.Name(), Rail: new(rail.Index)})
		}
	}
}

// gpuLoopback runs the round's RDMA kinds on the first usable port of
// g's nearest device with this end's buffers in g's memory. A GPU
// without a device, or whose device has no usable port, is not probed
// here: the registration attempt (gpudirect-rdma-works) reports it, and
// the port's host memory probes would fail first.
func (s *Scheduler) gpuLoopback(ctx context.Context, r *Round, g GPUPair, ports []Port) {
	i := slices.IndexFunc(ports, func(p Port) bool { return p.Device == g.Device })
	if i < 0 {
		return
	}
	for _, req := range s.gpuRequests(g.GPU) {
		res, err := Loopback(ctx, s.Client.Limiter, ports[i], req)
		if errors.Is(err, ErrGPUNotAvailable) {
			s.logger().Debug("no GPU memory probe", "gpu", g.GPU.Index, "err", err)
			return
		}
		r.add(res, err, Failure{Kind: req.Kind, Port: ports[i].Name(), GPU: new(g.GPU.Index)})
	}
}

// gpuPeer probes peer p on g's device's rail with this end's buffers in
// g's memory and the peer's in the memory of the GPU nearest its port.
// A peer with no such GPU, or whose agent predates GPU memory probes, is
// skipped, not failed: that is its inventory or its version, not a
// fault. A rail down here already failed the host memory kinds.
func (s *Scheduler) gpuPeer(ctx context.Context, r *Round, p Peer, g GPUPair, rails []Rail) {
	i := slices.IndexFunc(rails, func(rl Rail) bool { return rl.Port.Device == g.Device })
	if s.Rails == nil || i < 0 || !rails[i].Usable {
		return
	}
	rail := rails[i]
	for _, req := range s.gpuRequests(g.GPU) {
		res, err := s.runPeer(ctx, func() (Result, error) { return s.Client.RunRail(ctx, p.Address, rail, *s.Rails, req) })
		if IsNoGPU(err) || IsVersion(err) || errors.Is(err, ErrGPUNotAvailable) {
			s.logger().Debug("no GPU memory probe to peer", "peer", p.Node, "gpu", g.GPU.Index, "rail", rail.Index, "err", err)
			return
		}
		res.Peer = p.Node
		r.add(res, err, Failure{Kind: req.Kind, Peer: p.Node, Port: rail.Port.Name(), Rail: new(rail.Index), GPU: new(g.GPU.Index)})
	}
}

// logger is Logger, or one that drops everything when unset.
func (s *Scheduler) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// runPeer retries once when the peer (or this node) is busy with another
// probe: rounds of different nodes overlap by design.
func (s *Scheduler) runPeer(ctx context.Context, run func() (Result, error)) (Result, error) {
	res, err := run()
	if IsBusy(err) {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(Jitter(5*time.Second, s.Rand)):
		}
		res, err = run()
	}
	return res, err
}

func (r *Round) add(res Result, err error, f Failure) {
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return
		}
		f.Err = err.Error()
		r.Failures = append(r.Failures, f)
		return
	}
	r.Results = append(r.Results, res)
}
