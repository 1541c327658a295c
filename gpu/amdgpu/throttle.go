package amdgpu

import (
	"slices"
	"strings"

	"github.com/gpunode/gpunode/gpu"
)

// Why the SMU holds an AMD GPU's clocks down, as clock event reasons
// (gpu.ClockEventReason; health.ThrottleReasons says which degrade a GPU).
// Two sources in gpu_metrics, by revision:
//
//   - 1.6 and later (MI300 series on newer kernels and ROCm's driver, MI325X,
//     MI350 series): accumulated throttler residencies, which
//     smu_v13_0_6_ppt.c copies from the firmware's metrics table
//     (ProchotResidencyAcc, PptResidencyAcc, SocketThmResidencyAcc,
//     VrThmResidencyAcc, HbmThmResidencyAcc) beside AccumulationCounter,
//     the firmware's tick count. amdsmi.h documents them as violations:
//     the percentage of a window a throttler held is its residency's rise
//     over the counter's. A throttler holds now when its residency rose
//     since the last round. (1.4 and 1.5's throttle_status is written as
//     0 by smu_v13_0_6: "Throttle status is not reported through metrics
//     now", so it is not read.)
//   - 1.3 (MI200, Aldebaran): indep_throttle_status, the ASIC-independent
//     SMU_THROTTLER_*_BIT bits of amdgpu_smu.h that aldebaran_ppt.c maps
//     the firmware's own into; a bit is set while its throttler holds.
//     1.1 and 1.2's throttle_status is ASIC-specific and not read.
//
// Reasons (the residencies' names; the 1.3 bits grouped the same way):
//
//	ppt             package power tracking: the power cap (bits 0-7, PPT0-3,
//	                SPL, FPPT, SPPT, SPPT_APU); normal under load
//	prochot         PROCHOT asserted by the platform (bits 46, 47)
//	socket_thermal  the package's temperature limits (bits 32 GPU, 33 core,
//	                35 edge, 36 hotspot, 37 SoC, 42-43 liquid)
//	vr_thermal      a voltage regulator's (bits 38-41 VR GFX, SoC, MEM0-1;
//	                44-45 VRHOT0-1)
//	hbm_thermal     the HBM's (bit 34, TEMP_MEM)
//
// The current limits (bits 16-23: TDC, EDC, APCC) govern clocks under load
// as the power cap does and are not reported.

// residencyFields are the 1.6+ residency members by reason.
var residencyFields = []struct{ reason, field string }{
	{"hbm_thermal", "hbm_thm_residency_acc"},
	{"ppt", "ppt_residency_acc"},
	{"prochot", "prochot_residency_acc"},
	{"socket_thermal", "socket_thm_residency_acc"},
	{"vr_thermal", "vr_thm_residency_acc"},
}

// indepThrottleBits are the 1.3 bits of each reason, sorted by reason.
var indepThrottleBits = []struct {
	reason string
	bits   []uint
}{
	{"hbm_thermal", []uint{34}},
	{"ppt", []uint{0, 1, 2, 3, 4, 5, 6, 7}},
	{"prochot", []uint{46, 47}},
	{"socket_thermal", []uint{32, 33, 35, 36, 37, 42, 43}},
	{"vr_thermal", []uint{38, 39, 40, 41, 44, 45}},
}

// ThrottleReasons turns a table into clock event reasons, sorted by name:
// from the 1.3 bits at once; from the residencies once a previous reading
// (last, per reason, which it updates) tells whether they rose. Nil when
// the table has neither, or on the first reading of residencies.
func ThrottleReasons(m Metrics, last map[string]uint64) []gpu.ClockEventReason {
	var out []gpu.ClockEventReason
	switch {
	case m.IndepThrottleStatus != nil:
		for _, r := range indepThrottleBits {
			active := false
			for _, b := range r.bits {
				active = active || *m.IndepThrottleStatus&(1<<b) != 0
			}
			out = append(out, gpu.ClockEventReason{Reason: r.reason, Active: active})
		}
	case m.ThrottleResidency != nil:
		for _, f := range residencyFields {
			cur, ok := m.ThrottleResidency[f.reason]
			if !ok {
				continue
			}
			if prev, seen := last[f.reason]; seen {
				// 32-bit firmware counters: a rise across a wrap still rises.
				out = append(out, gpu.ClockEventReason{Reason: f.reason, Active: uint32(cur-prev) != 0})
			}
			last[f.reason] = cur
		}
	}
	slices.SortFunc(out, func(a, b gpu.ClockEventReason) int { return strings.Compare(a.Reason, b.Reason) })
	return out
}
