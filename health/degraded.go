package health

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/nodestatus"
)

// A GPU whose clocks a hardware or thermal limit holds down for longer than
// a configured time is Degraded: it still works, slowly, so it stays
// healthy (no taint, GPUHealthy stays True) while the condition's message
// and gpunode_gpu_degraded say why it is slow.

// DefaultThrottleAfter is how long a degrading reason must hold before the
// GPU is Degraded: long enough that a power-brake pulse or a short thermal
// excursion under a load step does not flap the condition, short against
// an inference job that runs at half speed meanwhile.
const DefaultThrottleAfter = 5 * time.Minute

// ReasonDegraded is GPUHealthy's reason while every GPU is healthy but one
// or more are Degraded; the status stays True.
const ReasonDegraded = "GPUsDegraded"

// ThrottleReasons are the clock event reasons (gpu.ClockEventReason.Reason)
// that degrade a GPU when held, sorted. The others are normal operation:
// sw_power_cap is the power limit governing clocks under load, gpu_idle,
// sync_boost and the clock settings are policy, board_limit and
// reliability (Blackwell) are the board's own operating envelope.
//
// NVIDIA (nvml.h's nvmlClocksEventReasons):
//
//	hw_slowdown              HW slowdown (clocks cut by a factor of 2 or
//	                         more): high temperature, or an external power
//	                         brake (e.g. by the system power supply)
//	hw_thermal_slowdown      HW slowdown because the GPU is too hot
//	hw_power_brake_slowdown  HW slowdown: the system's power brake (an
//	                         external signal from the PSU or chassis)
//	sw_thermal_slowdown      the driver lowers clocks because the GPU or
//	                         memory is above its maximum operating
//	                         temperature: a cooling fault, never a load
//	                         policy on a properly cooled server
//
// AMD (the amdgpu SMU's throttler residencies in gpu_metrics 1.6 and later,
// MI300 and newer; amdsmi.h calls them violations; see gpu/amdgpu):
//
//	prochot         PROCHOT asserted: the platform forces a slowdown
//	socket_thermal  the socket (package) thermal limit
//	vr_thermal      a voltage regulator's thermal limit
//	hbm_thermal     the HBM thermal limit
//
// ppt (package power tracking, the power cap) is AMD's sw_power_cap and
// does not count.
var ThrottleReasons = []string{"hbm_thermal", "hw_power_brake_slowdown", "hw_slowdown", "hw_thermal_slowdown",
	"prochot", "socket_thermal", "sw_thermal_slowdown", "vr_thermal"}

// Throttle is one degrading reason a GPU reports and whether it degrades
// the GPU now.
type Throttle struct {
	Reason string `json:"reason"`
	// Since is when the reason began to hold, as the sampler saw it; zero
	// while it does not hold.
	Since time.Time `json:"since,omitzero"`
	// Degraded is true once it held for the configured time.
	Degraded bool `json:"degraded"`
}

// ActiveThrottles returns the degrading reasons the sample reports, each
// with whether it holds now, in ThrottleReasons order; nil when the GPU did
// not answer or cannot say.
func ActiveThrottles(s gpu.Sample) (reported []string, active map[string]bool) {
	if !s.Up {
		return nil, nil
	}
	active = map[string]bool{}
	for _, r := range s.ClockEventReasons {
		if slices.Contains(ThrottleReasons, r.Reason) {
			reported = append(reported, r.Reason)
			active[r.Reason] = r.Active
		}
	}
	slices.Sort(reported)
	return reported, active
}

// Throttles judges the degrading reasons a GPU reports: since holds when
// each active reason began (the sampler's history), after how long it
// degrades the GPU. The result is in ThrottleReasons order.
func Throttles(reported []string, since map[string]time.Time, now time.Time, after time.Duration) []Throttle {
	if len(reported) == 0 {
		return nil
	}
	out := make([]Throttle, 0, len(reported))
	for _, r := range reported {
		t := Throttle{Reason: r}
		if s, ok := since[r]; ok {
			t.Since, t.Degraded = s, now.Sub(s) >= after
		}
		out = append(out, t)
	}
	return out
}

// DegradedReasons lists the reasons a GPU is Degraded now.
func (g GPU) DegradedReasons() []string {
	var out []string
	for _, t := range g.Throttles {
		if t.Degraded {
			out = append(out, t.Reason)
		}
	}
	return out
}

// WithDegraded adds the Degraded GPUs to GPUHealthy: the message names
// each with its reasons and when they began (not for how long, so the
// condition changes only when a reason begins or ends); a True condition
// takes ReasonDegraded. The status never changes: a hot GPU still works.
func WithDegraded(c nodestatus.Condition, gpus []GPU) nodestatus.Condition {
	var notes []string
	for _, g := range gpus {
		var rs []string
		for _, t := range g.Throttles {
			if t.Degraded {
				rs = append(rs, fmt.Sprintf("%s since %s", t.Reason, t.Since.UTC().Format(time.RFC3339)))
			}
		}
		if len(rs) > 0 {
			notes = append(notes, fmt.Sprintf("GPU %d (%s): %s", g.Index, g.UUID, strings.Join(rs, ", ")))
		}
	}
	if len(notes) == 0 {
		return c
	}
	if c.Status == nodestatus.True {
		c.Reason = ReasonDegraded
	}
	c.Message += fmt.Sprintf(". %d degraded (clocks held down, still working): %s", len(notes), strings.Join(notes, ". "))
	return c
}
