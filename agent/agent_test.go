package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"golang.org/x/crypto/bcrypt"

	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/testsupport"
	"github.com/gpunode/gpunode/sim"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/exporters"
)

// syncBuffer is a log sink safe for concurrent writers and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestRunSimulatedNode(t *testing.T) {
	env := testsupport.SimEnv(t, "dgx-h100-ib")
	cfg := config.Default()
	cfg.NodeName = ""
	cfg.Metrics.ListenAddress = "127.0.0.1:0"
	logs := &syncBuffer{}
	level := new(slog.LevelVar)

	var mu sync.Mutex
	var notes []string
	notified := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range notes {
			if n == s {
				return true
			}
		}
		return false
	}
	addr := make(chan string, 1)
	reloads := make(chan struct{})
	next := make(chan func() (config.Config, error), 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level})), Level: level,
			Env:            env,
			Build:          exporters.BuildInfo{Version: "test", Revision: "abc", GoVersion: "go"},
			ReloadRequests: reloads,
			Reload:         func() (config.Config, error) { return (<-next)() },
			Notify: func(s string) error {
				mu.Lock()
				notes = append(notes, s)
				mu.Unlock()
				return nil
			},
			Watchdog:  40 * time.Millisecond,
			Listening: func(a string) { addr <- a },
		})
	}()
	base := "http://" + <-addr
	waitFor(t, "READY=1", func() bool { return notified("READY=1") })
	waitFor(t, "WATCHDOG=1", func() bool { return notified("WATCHDOG=1") })

	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, body := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d %s", code, body)
	}
	_, metrics := get(t, base+"/metrics")
	for _, want := range []string{
		`gpunode_source_up{source="nvml"} 1`, `gpunode_source_up{source="rdma"} 1`,
		`gpunode_source_state{source="topology",state="ok"} 1`, `gpunode_simulated{node="dgx-h100-ib"} 1`,
		`gpunode_build_info{goversion="go",revision="abc",version="test"} 1`, "go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, want := range []string{"SIMULATED node", "standalone mode", `key=gpunode.dev/gpu.count value=8`, "GPUs: 8x NVIDIA H100 80GB HBM3"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	// A good reload applies the level and timing at once.
	good := cfg
	good.Log.Level = "debug"
	good.Discovery.Interval = 2 * time.Minute
	next <- func() (config.Config, error) { return good, nil }
	reloads <- struct{}{}
	waitFor(t, "reload", func() bool { return strings.Contains(logs.String(), "configuration reloaded") })
	if level.Level() != slog.LevelDebug {
		t.Error("log level not applied on reload")
	}
	// A broken file is rejected and the running configuration kept.
	next <- func() (config.Config, error) { return config.Config{}, errors.New("line 2: unknown key") }
	reloads <- struct{}{}
	waitFor(t, "rejected reload", func() bool {
		return strings.Contains(logs.String(), "config reload failed; keeping the running configuration")
	})
	// A change that needs a restart is reported, not half-applied.
	moved := good
	moved.Metrics.ListenAddress = "127.0.0.1:1"
	next <- func() (config.Config, error) { return moved, nil }
	reloads <- struct{}{}
	waitFor(t, "restart warning", func() bool { return strings.Contains(logs.String(), "keys=[metrics]") })
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Error("server moved or stopped after a restart-only change")
	}
	if !notified("RELOADING=1") {
		t.Error("no RELOADING=1 sent")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
	if !notified("STOPPING=1") {
		t.Error("no STOPPING=1 sent")
	}
	if _, err := http.Get(base + "/readyz"); err == nil {
		t.Error("metrics server still answering after shutdown")
	}
}

func TestRunPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	env := testsupport.SimEnv(t, "cpu-only")
	cfg := config.Default()
	cfg.Metrics.ListenAddress = l.Addr().String()
	err = Run(context.Background(), Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Env: env})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Run with a taken port: %v", err)
	}
}

// With a web config that requires basic auth, /healthz and /readyz on the
// metrics port answer 401 (the kubelet's probes have no credentials); on
// metrics.healthListenAddress they answer without authentication, and
// nothing else is served there (issue 14, item 4).
func TestHealthEndpointsWithoutAuth(t *testing.T) {
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	web := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(web, []byte("basic_auth_users:\n  prom: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	healthAddr := free.Addr().String()
	free.Close()
	cfg := config.Default()
	cfg.NodeName = ""
	cfg.Metrics.ListenAddress = "127.0.0.1:0"
	cfg.Metrics.WebConfigFile = web
	cfg.Metrics.HealthListenAddress = healthAddr
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), Env: testsupport.SimEnv(t, "cpu-only"),
			Listening: func(a string) { addr <- a }})
	}()
	metricsBase := "http://" + <-addr
	waitFor(t, "ready on the health address", func() bool {
		resp, err := http.Get("http://" + healthAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	for url, want := range map[string]int{
		"http://" + healthAddr + "/healthz": 200,
		"http://" + healthAddr + "/metrics": 404,
		metricsBase + "/healthz":            401,
		metricsBase + "/metrics":            401,
	} {
		if code, body := get(t, url); code != want {
			t.Errorf("%s = %d %s, want %d", url, code, body, want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// simNVML builds the simulated DGX H100 in a fresh directory (os.MkdirTemp,
// not t.TempDir: the daemon's sockets under it need a short path) and
// returns its host tree and its whole-machine NVML fake.
func simNVML(t *testing.T) (hostfs.FS, gonvml.Interface) {
	t.Helper()
	dir, err := os.MkdirTemp("", "gpunode-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	node, err := sim.Build("dgx-h100-ib", dir)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := hostfs.New(node.Root)
	if err != nil {
		t.Fatal(err)
	}
	lib, err := nvmlfake.New(*node.NVIDIA)
	if err != nil {
		t.Fatal(err)
	}
	return fsys, lib
}
