package agent

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
)

// NVML calls hung in the driver (the event watcher building its set, a
// sampling read) do not hold up the daemon's stop: Run and closing the GPU
// backends return within their bounds and log what they abandoned.
func TestStopBoundedWithHungNVMLCalls(t *testing.T) {
	fsys, lib := simNVML(t)
	const hang = 20 * time.Second
	nvmlfake.SetDelay(lib, 3, "nvmlDeviceGetSupportedEventTypes", hang)
	env := &discovery.Env{FS: fsys, Backends: []gpu.Backend{nvml.New(lib)}, Simulated: "dgx-h100-ib"}
	cfg := config.Default()
	cfg.NodeName = ""
	cfg.Discovery.Interval = time.Hour
	cfg.Metrics.ListenAddress = "127.0.0.1:0"
	cfg.Metrics.SampleInterval = 100 * time.Millisecond
	cfg.Metrics.PodResourcesSocket = ""
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil)), Env: env})
	}()
	waitFor(t, "the event watcher hung on GPU 3", func() bool {
		return nvmlfake.Calls(lib, "nvmlDeviceGetSupportedEventTypes") >= 4
	})
	nvmlfake.SetDelay(lib, 5, "nvmlDeviceGetPowerUsage", hang)
	calls := nvmlfake.Calls(lib, "nvmlDeviceGetPowerUsage")
	waitFor(t, "a sampling read hung on GPU 5", func() bool { return nvmlfake.Calls(lib, "nvmlDeviceGetPowerUsage") >= calls+8 })

	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	err := env.Close()
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("stop took %s with NVML calls hung for %s", took, hang)
	}
	if err == nil || !strings.Contains(err.Error(), "NVML not shut down") || !strings.Contains(err.Error(), "waitEvent") {
		t.Errorf("closing the backends: %v", err)
	}
	if !strings.Contains(logs.String(), "GPU event watchers did not stop") {
		t.Errorf("logs:\n%s", logs.String())
	}
}
