package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/verify"
)

// probeLoop runs the RDMA probes beside discovery: a server other agents
// probe and a scheduler of rounds. Its results reach the labels
// (rdma.verified, the llm-d rdma gate), the RDMAReady condition and the
// metrics. Probe settings apply at start; a reload does not restart it.
type probeLoop struct {
	cfg     config.Probe
	log     *slog.Logger
	changed chan struct{}

	// refused counts the server's refusals of unauthenticated peers.
	refused probe.Refusals

	mu      sync.Mutex
	round   *probe.Round
	verdict *probe.Verdict
	// gpus are the last round's registrations of each GPU's memory on
	// its nearest NIC; nil before, or when none were tried.
	gpus []probe.GPURegistration
}

func newProbeLoop(cfg config.Probe, log *slog.Logger) *probeLoop {
	return &probeLoop{cfg: cfg, log: log.With("component", "probe"), changed: make(chan struct{}, 1)}
}

// Round is the last round (nil before the first and while off).
func (l *probeLoop) Round() *probe.Round {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.round
}

// Refused is the probe server's refusals of unauthenticated peers by
// reason; nil while probes are off.
func (l *probeLoop) Refused() map[string]uint64 {
	if !l.cfg.Enabled {
		return nil
	}
	return l.refused.Counts()
}

// Labels is what the labels need; nil while probes are off, pending
// before the first round.
func (l *probeLoop) Labels() *labels.RDMAProbe {
	if !l.cfg.Enabled {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.verdict == nil {
		return &labels.RDMAProbe{Pending: true}
	}
	return &labels.RDMAProbe{Verified: l.verdict.Verified, GPUDirect: gpuDirectVerdict(l.gpus)}
}

// gpuDirectVerdict is true when every GPU this agent can probe had its
// memory registered on its nearest NIC; nil when none was tried.
func gpuDirectVerdict(regs []probe.GPURegistration) *bool {
	tried, ok := false, true
	for _, r := range regs {
		if r.NotAvailable {
			continue
		}
		tried = true
		ok = ok && r.Registered
	}
	if !tried {
		return nil
	}
	return &ok
}

// GPUMemoryRegistrations are the last round's registrations of GPU
// memory, for verify's gpudirect-rdma-works; nil while probes are off or
// before any was tried.
func (l *probeLoop) GPUMemoryRegistrations() []probe.GPURegistration {
	if !l.cfg.Enabled {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gpus
}

// gpuFor is the GPU that answers a peer's GPU memory probe on port:
// the one nearest it, never a simulated node's.
func (l *probeLoop) gpuFor(s *snapshot.Snapshot, port probe.Port) (*probe.GPUTarget, error) {
	if s == nil || s.Simulated != "" {
		return nil, errors.New("no GPU inventory yet (or a simulated node's)")
	}
	return probe.GPUForPort(verify.GPUPairs(s), port, l.cfg.GPUMemoryBytes)
}

// gpuPairs are the GPUs whose memory this agent probes, each with its
// nearest RDMA device and at most probe.gpuMemoryBytes of its memory per
// probe; none when that is 0, and never a simulated node's, whose GPUs
// are not this machine's.
func (l *probeLoop) gpuPairs(s *snapshot.Snapshot) []probe.GPUPair {
	if s == nil || s.Simulated != "" || l.cfg.GPUMemoryBytes == 0 || len(s.GPUs) == 0 {
		return nil
	}
	pairs := verify.GPUPairs(s)
	for i := range pairs {
		pairs[i].GPU.MaxBytes = l.cfg.GPUMemoryBytes
	}
	return pairs
}

// registerGPUs registers a little of each GPU's memory on its nearest
// NIC, once per round: what the gpudirect-rdma label and check follow.
func (l *probeLoop) registerGPUs(s *snapshot.Snapshot) {
	pairs := l.gpuPairs(s)
	if pairs == nil {
		return
	}
	regs := probe.RegisterGPUs(pairs, s.RDMADevices, l.cfg.GPUMemoryBytes)
	for _, r := range regs {
		if !r.Registered {
			l.log.Warn("GPU memory not registered on the GPU's nearest NIC", "gpu", r.GPU.Index, "pci_bus_id", r.GPU.PCIBusID, "err", r.Error)
		}
	}
	l.mu.Lock()
	l.gpus = regs
	l.mu.Unlock()
}

// Condition is RDMAReady; nil while probes are off or before the first
// round.
func (l *probeLoop) Condition() *nodestatus.Condition {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.verdict == nil {
		return nil
	}
	c := nodestatus.Condition{Type: nodestatus.RDMAReady, Status: nodestatus.False, Reason: l.verdict.Reason, Message: l.verdict.Message}
	if l.verdict.Verified {
		c.Status = nodestatus.True
	}
	return &c
}

func (l *probeLoop) record(r probe.Round) {
	v := r.Verdict(probe.Thresholds{
		MinBandwidthBytesPerSecond: l.cfg.Thresholds.MinBandwidthBytesPerSecond,
		MinLineRateFraction:        l.cfg.Thresholds.MinLineRateFraction,
		MaxLatencyP50:              l.cfg.Thresholds.MaxLatencyP50,
	}, probe.Thresholds{
		MinBandwidthBytesPerSecond: l.cfg.LoopbackThresholds.MinBandwidthBytesPerSecond,
		MaxLatencyP50:              l.cfg.LoopbackThresholds.MaxLatencyP50,
	})
	l.mu.Lock()
	l.round, l.verdict = &r, &v
	l.mu.Unlock()
	l.log.Info("RDMA probe round", "verified", v.Verified, "reason", v.Reason, "message", v.Message, "results", len(r.Results), "failures", len(r.Failures))
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// run serves and schedules until ctx ends. Nothing here stops the
// daemon: without RDMA or a token the rounds say why probes are
// unavailable, and the server is simply not started.
func (l *probeLoop) run(ctx context.Context, nodeName string, fsys hostfs.FS, kube *kubeapi.Client, snap func() *snapshot.Snapshot) {
	if !l.cfg.Enabled {
		return
	}
	lim := probe.NewLimiter()
	devices := rdma.NewReader(fsys).Discover // one reader: a hung HCA is not read again on top of itself
	token, err := probe.ReadToken(l.cfg.TokenFile)
	if err != nil {
		l.log.Error("RDMA probes unavailable", "err", err)
		l.record(probe.Round{Unavailable: "RDMA probes unavailable: " + err.Error()})
		return
	}
	if err := probe.Available(); err != nil {
		l.log.Warn("RDMA probes unavailable on this node", "err", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if ln, err := net.Listen("tcp", l.cfg.ListenAddress); err != nil {
		l.log.Error("cannot serve RDMA probes", "address", l.cfg.ListenAddress, "err", err)
	} else {
		l.log.Info("serving RDMA probes", "address", ln.Addr().String())
		s := &probe.Server{Token: token, Devices: devices, Limiter: lim, Logger: l.log, Refused: &l.refused,
			GPU: func(port probe.Port) (*probe.GPUTarget, error) { return l.gpuFor(snap(), port) }}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Serve(ctx, ln); err != nil {
				l.log.Error("RDMA probe server stopped", "err", err)
			}
		}()
	}
	sched := &probe.Scheduler{
		Self: nodeName, Interval: l.cfg.Interval, Loopback: l.cfg.Loopback, RandomPeers: l.cfg.RandomPeers,
		TCPBaseline: l.cfg.TCPBaseline, ServiceLevel: l.cfg.ServiceLevel, TrafficClass: l.cfg.TrafficClass, Kinds: l.cfg.Kinds,
		Client:  &probe.Client{Token: token, Devices: devices, Limiter: lim},
		Timeout: l.cfg.Timeout, Logger: l.log,
		// The round's GPU memory probes (GPUDirect RDMA) on each GPU's
		// nearest NIC, from the inventory at the round's start.
		GPUs: func() []probe.GPUPair { return l.gpuPairs(snap()) },
		OnRound: func(r probe.Round) {
			l.registerGPUs(snap())
			l.record(r)
		},
		Rand: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
	if r := l.cfg.Rails; r.Match != config.RailsNone {
		sched.Rails = &probe.RailRule{Match: r.Match, IPv4Prefix: r.IPv4PrefixLength, IPv6Prefix: r.IPv6PrefixLength}
	}
	if kube != nil && l.cfg.Namespace != "" && nodeName != "" {
		_, port, _ := net.SplitHostPort(l.cfg.ListenAddress) // validated
		sched.Peers = func(ctx context.Context) ([]probe.Peer, error) {
			return listPeers(ctx, kube, l.cfg.Namespace, l.cfg.PeerSelector, port)
		}
	} else {
		l.log.Info("RDMA probes: loopback only (no Kubernetes client, node name or namespace)")
	}
	sched.Run(ctx)
}

// listPeers finds the agent's own pods (in its namespace only) that run
// and have an address: one peer per node.
func listPeers(ctx context.Context, kube *kubeapi.Client, namespace, selector, port string) ([]probe.Peer, error) {
	pods, err := kube.ListPods(ctx, namespace, selector)
	if err != nil {
		return nil, fmt.Errorf("list pods in %s (%s): %w", namespace, selector, err)
	}
	return peersOf(pods, port), nil
}

func peersOf(pods []kubeapi.Pod, port string) []probe.Peer {
	var out []probe.Peer
	for _, p := range pods {
		if p.Status.Phase != kubeapi.PodRunning || p.Status.PodIP == "" || p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
			continue
		}
		out = append(out, probe.Peer{Node: p.Spec.NodeName, Address: net.JoinHostPort(p.Status.PodIP, port)})
	}
	return out
}
