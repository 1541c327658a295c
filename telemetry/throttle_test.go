package telemetry

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/amdgpu"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/health"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/sim"
)

// A GPU throttled at run time (a fan fails: hardware thermal slowdown) is
// Degraded once the reason held ThrottleAfter, stays healthy, and
// recovers as soon as the reason clears; the power cap, which the fake
// sets under load, never counts. GPUHealthy follows: True throughout,
// reason GPUsDegraded while GPU 6 is, and each change is handed over.
func TestThrottledGPUDegradesAndRecovers(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	o := n.options()
	o.ThrottleAfter = 2 * time.Second
	var mu sync.Mutex
	var conds []nodestatus.Condition
	o.OnCondition = func(c nodestatus.Condition) {
		mu.Lock()
		defer mu.Unlock()
		conds = append(conds, c)
	}
	s := New(o)
	ctx := context.Background()
	round := func() *Frame {
		n.clock.Advance(time.Second)
		s.Round(ctx)
		return s.Latest()
	}
	degraded := func(f *Frame) map[int][]string {
		out := map[int][]string{}
		for _, h := range f.Health {
			if !h.Healthy {
				t.Errorf("GPU %d unhealthy: %+v", h.Index, h)
			}
			if r := h.DegradedReasons(); r != nil {
				out[h.Index] = r
			}
		}
		return out
	}

	f := round()
	if len(f.Health[6].Throttles) != 4 || f.Health[6].Throttles[0].Reason != "hw_power_brake_slowdown" {
		t.Fatalf("GPU 6 reports %+v, want the four degrading NVIDIA reasons", f.Health[6].Throttles)
	}
	nvmlfake.SetClockEventReasons(n.lib, 6, gonvml.ClocksThrottleReasonHwThermalSlowdown|gonvml.ClocksEventReasonSwPowerCap)
	f = round()
	began := f.Time
	if d := degraded(f); len(d) != 0 {
		t.Errorf("degraded at once: %v", d)
	}
	if th := f.Health[6].Throttles; !slices.ContainsFunc(th, func(x health.Throttle) bool { return x.Reason == "hw_thermal_slowdown" && x.Since.Equal(began) }) {
		t.Errorf("GPU 6's slowdown did not begin at %s: %+v", began, th)
	}
	time.Sleep(2100 * time.Millisecond)
	f = round()
	if d := degraded(f); !slices.Equal(d[6], []string{"hw_thermal_slowdown"}) || len(d) != 1 {
		t.Errorf("after 2 s: degraded %v, want GPU 6 hw_thermal_slowdown", d)
	}
	if c := f.Condition; c.Status != nodestatus.True || c.Reason != health.ReasonDegraded ||
		!strings.Contains(c.Message, "GPU 6 ("+f.GPUs[6].UUID+"): hw_thermal_slowdown since "+began.UTC().Format(time.RFC3339)) {
		t.Errorf("condition %+v", c)
	}
	nvmlfake.SetClockEventReasons(n.lib, 6, 0)
	f = round()
	if d := degraded(f); len(d) != 0 {
		t.Errorf("after the slowdown cleared: degraded %v", d)
	}
	if c := f.Condition; c.Status != nodestatus.True || c.Reason != health.ReasonHealthy {
		t.Errorf("condition after recovery %+v", c)
	}
	mu.Lock()
	defer mu.Unlock()
	var reasons []string
	for _, c := range conds {
		reasons = append(reasons, c.Reason)
	}
	if want := []string{health.ReasonHealthy, health.ReasonDegraded, health.ReasonHealthy}; !slices.Equal(reasons, want) {
		t.Errorf("conditions handed over %v, want %v", reasons, want)
	}
}

// A GPU that misses a round keeps its slowdown's start: one silent round
// neither clears nor restarts it.
func TestThrottleHistorySurvivesASilentRound(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	o := n.options()
	o.ThrottleAfter = time.Hour
	s := New(o)
	nvmlfake.SetClockEventReasons(n.lib, 2, gonvml.ClocksThrottleReasonHwSlowdown)
	s.Round(context.Background())
	began := s.Latest().Time
	nvmlfake.SetReturn(n.lib, 2, "nvmlDeviceGetUUID", gonvml.ERROR_UNKNOWN)
	nvmlfake.SetReturn(n.lib, 2, "nvmlDeviceGetPowerUsage", gonvml.ERROR_GPU_IS_LOST)
	s.Round(context.Background())
	if s.Latest().GPUs[2].Up {
		t.Fatal("GPU 2 still answers")
	}
	nvmlfake.SetReturn(n.lib, 2, "nvmlDeviceGetUUID", gonvml.SUCCESS)
	nvmlfake.SetReturn(n.lib, 2, "nvmlDeviceGetPowerUsage", gonvml.SUCCESS)
	s.Round(context.Background())
	f := s.Latest()
	if th := f.Health[2].Throttles; !slices.ContainsFunc(th, func(x health.Throttle) bool { return x.Reason == "hw_slowdown" && x.Since.Equal(began) }) {
		t.Errorf("GPU 2's slowdown restarted: %+v, began %s", th, began)
	}
}

// The same on a simulated MI355X node read through amdgpu sysfs: card6's
// HBM thermal throttler holds (its gpu_metrics residency rises with the
// SMU's tick counter), so GPU 5 is Degraded after ThrottleAfter and
// recovers once the residency stops rising; the power cap's residency is
// reported and never counts.
func TestThrottledAMDGPU(t *testing.T) {
	n := newNode(t, "mi355x-roce")
	start := time.Now()
	tr, err := sim.NewTraffic(n.Node, start)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.ThrottleAMD("card6", "hbm_thm_residency_acc", start, time.Time{}); err != nil {
		t.Fatal(err)
	}
	o := n.options()
	o.Backends, o.Traffic, o.ThrottleAfter = []gpu.Backend{amdgpu.New(n.fs)}, tr, time.Second
	s := New(o)
	round := func() *Frame {
		time.Sleep(20 * time.Millisecond)
		if err := tr.Advance(time.Now()); err != nil {
			t.Fatal(err)
		}
		s.Round(context.Background())
		return s.Latest()
	}
	state := func(f *Frame) (active, degraded []string) {
		for i, h := range f.Health {
			if !h.Healthy {
				t.Errorf("GPU %d unhealthy: %+v", i, h)
			}
			for _, th := range h.Throttles {
				if !th.Since.IsZero() {
					active = append(active, fmt.Sprintf("%d/%s", h.Index, th.Reason))
				}
				if th.Degraded {
					degraded = append(degraded, fmt.Sprintf("%d/%s", h.Index, th.Reason))
				}
			}
		}
		return active, degraded
	}
	if f := round(); len(f.Health) != 8 || f.Health[5].Throttles != nil {
		t.Fatalf("first round: %d GPUs, GPU 5 throttles %+v (nothing to compare the residencies with yet)", len(f.Health), f.Health[5].Throttles)
	}
	f := round()
	if a, d := state(f); !slices.Equal(a, []string{"5/hbm_thermal"}) || d != nil {
		t.Errorf("second round: active %v, degraded %v", a, d)
	}
	if got := f.GPUs[5].ClockEventReasons; len(got) != 5 || got[0] != (gpu.ClockEventReason{Reason: "hbm_thermal", Active: true}) {
		t.Errorf("GPU 5 reasons %+v", got)
	}
	time.Sleep(time.Second)
	f = round()
	if _, d := state(f); !slices.Equal(d, []string{"5/hbm_thermal"}) {
		t.Errorf("after 1 s: degraded %v", d)
	}
	if f.Condition.Reason != health.ReasonDegraded || !strings.Contains(f.Condition.Message, "GPU 5 (") {
		t.Errorf("condition %+v", f.Condition)
	}
	// The HBM cools down: the residency stops rising.
	if err := tr.ThrottleAMD("card6", "hbm_thm_residency_acc", start, time.Now()); err != nil {
		t.Fatal(err)
	}
	round() // the rise up to the stop
	f = round()
	if a, d := state(f); a != nil || d != nil {
		t.Errorf("after the throttler let go: active %v, degraded %v", a, d)
	}
	if f.Condition.Reason != health.ReasonHealthy {
		t.Errorf("condition after recovery %+v", f.Condition)
	}
}
