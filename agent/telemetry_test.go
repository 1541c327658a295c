package agent

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/discovery"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
)

// The daemon samples in the background: a critical XID raised by the
// driver reaches /metrics and the GPUHealthy condition at once, and in
// standalone mode the condition is logged with the taint it implies.
func TestGPUHealthInTheDaemon(t *testing.T) {
	fsys, lib := simNVML(t)
	cfg := config.Default()
	cfg.NodeName = ""
	cfg.Metrics.ListenAddress = "127.0.0.1:0"
	cfg.Metrics.SampleInterval = 100 * time.Millisecond
	cfg.Metrics.PodResourcesSocket = ""
	cfg.Metrics.Health.Taint.Enabled = true
	logs := &syncBuffer{}
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil)), Env: &discovery.Env{FS: fsys, Backends: []gpu.Backend{nvml.New(lib)}}, Listening: func(a string) { addr <- a }})
	}()
	base := "http://" + <-addr
	waitFor(t, "a healthy condition", func() bool {
		return strings.Contains(logs.String(), `msg="node condition" type=GPUHealthy status=True reason=AllGPUsHealthy message="8 GPUs healthy" taint=none`)
	})
	waitFor(t, "XID registration", func() bool { return nvmlfake.Calls(lib, "nvmlDeviceRegisterEvents") >= 8 })
	nvmlfake.RaiseXID(lib, 2, 79)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	waitFor(t, "an unhealthy condition", func() bool {
		return regexp.MustCompile(`level=WARN msg="node condition" type=GPUHealthy status=False reason=XIDCritical message="1 of 8 GPUs unhealthy: GPU 2 \(GPU-[0-9a-f-]+\): XID 79 at [^"]+" taint="gpunode.dev/gpu-unhealthy=XIDCritical:NoSchedule"`).MatchString(logs.String())
	})
	_, metrics := get(t, base+"/metrics")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`gpunode_gpu_healthy\{gpu="2",[^}]*\} 0`),
		regexp.MustCompile(`gpunode_gpu_health_problem\{gpu="2",[^}]*reason="XIDCritical"[^}]*\} 1`),
		regexp.MustCompile(`gpunode_gpu_xid_errors_total\{gpu="2",[^}]*xid="79"\} 1`),
		regexp.MustCompile(`gpunode_source_up\{source="nvml-sample"\} 1`),
		regexp.MustCompile(`gpunode_gpu_power_watts\{gpu="7",`),
	} {
		if !want.MatchString(metrics) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}
