package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/testsupport"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/rdma/probe"
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
	go func() { l.run(ctx, "node-a", fsys, nil); close(done) }()
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
	l.run(context.Background(), "node-a", fsys, nil)
	if c := l.Condition(); c == nil || c.Reason != "ProbesUnavailable" || !strings.Contains(c.Message, "probe token") {
		t.Errorf("no token: %+v", c)
	}

	// Off: nothing at all.
	cfg.Enabled = false
	l = newProbeLoop(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.run(context.Background(), "node-a", fsys, nil)
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
