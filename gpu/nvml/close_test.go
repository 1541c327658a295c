package nvml_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/internal/testsupport"
)

// A call hung in the driver holds the library; Close gives up after its
// timeout, names what it abandoned and leaves NVML initialised rather than
// hanging the daemon's stop, and other callers are not held up by it.
func TestCloseBoundedWhenACallHangs(t *testing.T) {
	lib := build(t, dgx(nvmlfake.H100))
	b := nvml.New(lib, nvml.WithCloseTimeout(200*time.Millisecond))
	inventory(t, b)
	nvmlfake.SetDelay(lib, 1, "nvmlDeviceGetPowerUsage", 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	samples, _ := b.Sample(ctx)
	cancel()
	if len(samples) != 8 || samples[1].Up {
		t.Fatalf("GPU 1 of %d samples should be down while its read hangs", len(samples))
	}

	start := time.Now()
	err := b.Close()
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %s with a hung call", took)
	}
	if err == nil || !strings.Contains(err.Error(), "sampleGPU (in NVML for") || !strings.Contains(err.Error(), "1 call: ") {
		t.Errorf("Close: %v", err)
	}
	if n := nvmlfake.Calls(lib, "nvmlShutdown"); n != 0 {
		t.Errorf("nvmlShutdown called %d times under a call in flight", n)
	}
	start = time.Now()
	inventory(t, b) // still initialised; not queued behind the abandoned Close
	if took := time.Since(start); took > time.Second {
		t.Errorf("Inventory after an abandoned Close took %s", took)
	}

	nvmlfake.SetDelay(lib, 1, "nvmlDeviceGetPowerUsage", 0)
	testsupport.Eventually(t, "Close once the hung call returned", b.Close)
	if n := nvmlfake.Calls(lib, "nvmlShutdown"); n != 1 {
		t.Errorf("nvmlShutdown called %d times, want 1", n)
	}
}
