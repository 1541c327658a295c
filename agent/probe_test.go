package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/testsupport"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/snapshot"
)

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// On this machine (no RDMA in the kernel) the probe loop keeps running,
// serves, and reports every round as unavailable with the reason: the
// RDMAReady condition is False and rdma.verified false.
func TestProbeLoopWithoutRDMA(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	os.WriteFile(token, []byte("0123456789abcdef0123\n"), 0o600)
	cfg := config.DefaultProbe()
	cfg.Enabled, cfg.TokenFile, cfg.ListenAddress, cfg.Interval = true, token, "127.0.0.1:0", 2*time.Second
	l := newProbeLoop(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if l.Condition() != nil || l.Round() != nil || !l.Labels().Pending {
		t.Fatal("verdict before the first round")
	}
	fsys, err := hostfs.New("/")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.run(ctx, "node-a", fsys, nil, func() *snapshot.Snapshot { return nil }); close(done) }()
	select {
	case <-l.changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no round within 10s")
	}
	c := l.Condition()
	if c.Type != nodestatus.RDMAReady || c.Status != nodestatus.False || c.Reason != "ProbesUnavailable" || !strings.Contains(c.Message, "unavailable") {
		t.Errorf("condition %+v", c)
	}
	if lb := l.Labels(); lb == nil || lb.Verified {
		t.Errorf("labels %+v", lb)
	}
	select {
	case <-done:
		t.Fatal("the probe loop stopped on its own")
	default:
	}
	cancel()
	<-done

	// Without a token: unavailable, and nothing served.
	cfg.TokenFile = filepath.Join(t.TempDir(), "missing")
	l = newProbeLoop(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.run(context.Background(), "node-a", fsys, nil, func() *snapshot.Snapshot { return nil })
	if c := l.Condition(); c == nil || c.Reason != "ProbesUnavailable" || !strings.Contains(c.Message, "probe token") {
		t.Errorf("no token: %+v", c)
	}

	// Off: nothing at all.
	cfg.Enabled = false
	l = newProbeLoop(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.run(context.Background(), "node-a", fsys, nil, func() *snapshot.Snapshot { return nil })
	if l.Condition() != nil || l.Labels() != nil {
		t.Error("condition or labels while off")
	}
}

func TestPeersOf(t *testing.T) {
	pod := func(node, ip string, phase string) kubeapi.Pod {
		return kubeapi.Pod{Spec: kubeapi.PodSpec{NodeName: node}, Status: kubeapi.PodStatus{Phase: phase, PodIP: ip}}
	}
	gone := pod("n4", "10.0.0.4", kubeapi.PodRunning)
	now := kubeapi.NewTime(time.Now())
	gone.DeletionTimestamp = &now
	peers := peersOf([]kubeapi.Pod{
		pod("n1", "10.0.0.1", kubeapi.PodRunning), pod("n2", "", kubeapi.PodRunning),
		pod("n3", "10.0.0.3", "Pending"), gone, pod("n5", "fd00::5", kubeapi.PodRunning),
	}, "9836")
	if len(peers) != 2 || peers[0].Address != "10.0.0.1:9836" || peers[1].Address != "[fd00::5]:9836" || peers[1].Node != "n5" {
		t.Errorf("peers %+v", peers)
	}
}

// The daemon with probes switched on, on a node whose kernel has no RDMA
// (this machine, under a simulated RoCE node's tree): it keeps serving,
// exports the round, and labels the node unverified, without the llm-d
// RDMA gate that discovery alone would open.
func TestRunWithProbesUnavailable(t *testing.T) {
	env := testsupport.SimEnv(t, "h100-roce")
	token := filepath.Join(t.TempDir(), "token")
	os.WriteFile(token, []byte("0123456789abcdef0123\n"), 0o600)
	cfg := config.Default()
	cfg.NodeName = ""
	cfg.Metrics.ListenAddress = "127.0.0.1:0"
	probeAddr := freeAddr(t)
	cfg.Probe.Enabled, cfg.Probe.TokenFile, cfg.Probe.ListenAddress, cfg.Probe.Interval = true, token, probeAddr, 2*time.Second
	logs := &syncBuffer{}
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil)), Level: new(slog.LevelVar),
			Env:       env,
			Listening: func(a string) { addr <- a },
		})
	}()
	base := "http://" + <-addr
	waitFor(t, "a probe round", func() bool {
		_, m := get(t, base+"/metrics")
		return strings.Contains(m, "gpunode_rdma_probe_last_run_timestamp_seconds ")
	})
	waitFor(t, "the labels", func() bool { return strings.Contains(logs.String(), "key=gpunode.dev/rdma.verified value=false") })
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	// Peers with a wrong token are counted in /metrics and logged in
	// one sampled line, not a line each.
	wrong := &probe.Client{Token: []byte("wrong-token-0123456789"), Limiter: probe.NewLimiter(), StepTimeout: 2 * time.Second}
	for i := 0; i < 20; i++ {
		if _, err := wrong.Run(ctx, probeAddr, probe.DefaultRequest(probe.KindTCPLat)); !probe.IsUnauthorized(err) {
			t.Fatalf("wrong token: %v", err)
		}
	}
	waitFor(t, "the refusals in /metrics", func() bool {
		_, m := get(t, base+"/metrics")
		return strings.Contains(m, `gpunode_rdma_probe_refused_total{reason="unauthorized"} 20`+"\n") &&
			strings.Contains(m, `gpunode_rdma_probe_refused_total{reason="bad_request"} 0`)
	})
	if n := strings.Count(logs.String(), "refused unauthenticated probe connections"); n != 1 {
		t.Errorf("%d log lines for 20 refusals, want 1", n)
	}
	l := logs.String()
	// The gate never opened: not before the first round either.
	if !strings.Contains(l, "RDMA probes unavailable") || strings.Contains(l, "key=hardware.llm-d.ai/rdma") {
		t.Errorf("log:\n%s", l)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// probe.kinds is validated against config's list: it must be the probe
// package's RDMA kinds, or a kind the scheduler runs would be refused at
// load (or one it cannot run accepted).
func TestProbeKindsAgree(t *testing.T) {
	if !slices.Equal(config.ProbeKinds, probe.RDMAKinds) {
		t.Errorf("config.ProbeKinds %v, probe.RDMAKinds %v", config.ProbeKinds, probe.RDMAKinds)
	}
	for _, k := range config.Default().Probe.Kinds {
		if err := probe.DefaultRequest(k).Validate(); err != nil {
			t.Errorf("default kind %s: %v", k, err)
		}
	}
}

// Each round registers a little of each GPU's memory on its nearest NIC,
// with the CUDA driver library found beside NVML's (here the fake one,
// on a machine without RDMA: the GPU side runs, the NIC is missing), and
// the gpudirect-rdma label follows the outcome. Simulated nodes and
// probe.gpuMemoryBytes 0 never touch GPU memory.
func TestProbeLoopRegistersGPUMemory(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", filepath.Join(dir, "libcuda.so.1"), "../rdma/verbs/testdata/fake_cuda.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	calls := filepath.Join(t.TempDir(), "calls")
	t.Setenv("GN_FAKE_CUDA_LOG", calls)
	s := &snapshot.Snapshot{
		GPUDriver: &snapshot.GPUDriver{Backend: "nvml", Library: &gpu.Library{Path: filepath.Join(dir, "libnvidia-ml.so.570.86.15"), Found: gpu.FoundWellKnown}},
		GPUs:      []snapshot.GPU{{Device: gpu.Device{Index: 0, Vendor: gpu.NVIDIA, PCIBusID: "0000:17:00.0"}}},
	}
	cfg := config.DefaultProbe()
	cfg.Enabled = true
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	l := newProbeLoop(cfg, quiet)
	l.registerGPUs(s)
	l.record(probe.Round{Unavailable: "RDMA probes unavailable: test"})
	regs := l.GPUMemoryRegistrations()
	if len(regs) != 1 || regs[0].Registered || regs[0].Error != "GPU memory allocated (65536 bytes; dma-buf exported) but no RDMA device near it has an ACTIVE port" {
		t.Fatalf("registrations %+v", regs)
	}
	if g := l.Labels().GPUDirect; g == nil || *g {
		t.Errorf("gpudirect verdict %v, want false", g)
	}
	if b, _ := os.ReadFile(calls); strings.Count(string(b), "cuMemFree") != 1 {
		t.Errorf("the GPU memory was not freed:\n%s", b)
	}
	// The round's GPU memory probes take the same GPUs, bounded alike.
	if p := l.gpuPairs(s); len(p) != 1 || p[0].GPU.PCIBusID != "0000:17:00.0" || p[0].GPU.MaxBytes != cfg.GPUMemoryBytes || p[0].Device != "" || p[0].NoDevice == "" {
		t.Errorf("GPU pairs %+v", p)
	}

	s.Simulated = "dgx-h100-ib"
	sim := newProbeLoop(cfg, quiet)
	sim.registerGPUs(s)
	sim.record(probe.Round{})
	if sim.GPUMemoryRegistrations() != nil || sim.Labels().GPUDirect != nil || sim.gpuPairs(s) != nil {
		t.Error("GPU memory registered or probed on a simulated node")
	}
	s.Simulated, cfg.GPUMemoryBytes = "", 0
	never := newProbeLoop(cfg, quiet)
	never.registerGPUs(s)
	if never.GPUMemoryRegistrations() != nil || never.gpuPairs(s) != nil {
		t.Error("GPU memory registered or probed with probe.gpuMemoryBytes 0")
	}
}
