package nvmlfake

import (
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// A Throttled span holds its reasons from From to To on the machine's
// clock and halves the busy SM clock while a hardware slowdown holds;
// SetClockEventReasons adds reasons at run time; unsupported ones never
// show.
func TestThrottled(t *testing.T) {
	m, clock := clocked(H100)
	m.GPUs[1].Throttled = []Throttle{{From: time.Minute, To: 3 * time.Minute, Reasons: gonvml.ClocksThrottleReasonHwThermalSlowdown}}
	lib := mustNew(t, m)
	var now time.Duration // since New
	set := func(at time.Duration) { clock.Advance(at - now); now = at }
	h0, h1 := handle(t, lib, 0), handle(t, lib, 1)
	thermal := uint64(gonvml.ClocksThrottleReasonHwThermalSlowdown)
	reasons := func(h gonvml.Device) uint64 { return val(h.GetCurrentClocksEventReasons()).must(t, "reasons") }
	for _, step := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {59 * time.Second, false}, {time.Minute, true}, {2 * time.Minute, true}, {3 * time.Minute, false}} {
		set(step.at)
		if got := reasons(h1)&thermal != 0; got != step.want {
			t.Errorf("GPU 1 at %s: thermal slowdown %v, want %v", step.at, got, step.want)
		}
		if reasons(h0)&thermal != 0 {
			t.Errorf("GPU 0 at %s: thermal slowdown", step.at)
		}
	}
	// Find a busy moment inside the span: the SM clock is halved there.
	halved := false
	for at := time.Minute; at < 3*time.Minute; at += 5 * time.Second {
		set(at)
		if sm := val(h1.GetClockInfo(gonvml.CLOCK_SM)).must(t, "sm"); sm == 1980/2 {
			halved = true
		} else if sm == 1980 {
			t.Fatalf("SM clock at its maximum during a thermal slowdown at %s", at)
		}
	}
	if !halved {
		t.Error("the SM clock was never halved while throttled")
	}

	SetClockEventReasons(lib, 0, gonvml.ClocksThrottleReasonHwPowerBrakeSlowdown)
	if reasons(h0)&gonvml.ClocksThrottleReasonHwPowerBrakeSlowdown == 0 {
		t.Error("SetClockEventReasons: power brake not reported")
	}
	SetSupportedClockEventReasons(lib, 0, gonvml.ClocksEventReasonGpuIdle)
	if reasons(h0)&gonvml.ClocksThrottleReasonHwPowerBrakeSlowdown != 0 {
		t.Error("an unsupported reason is reported")
	}
	SetSupportedClockEventReasons(lib, 0, gonvml.ClocksEventReasonAll)
	SetClockEventReasons(lib, 0, 0)
	if reasons(h0)&gonvml.ClocksThrottleReasonHwPowerBrakeSlowdown != 0 {
		t.Error("SetClockEventReasons(0) did not clear")
	}
}
