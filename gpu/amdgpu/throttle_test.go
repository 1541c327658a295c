package amdgpu

import (
	"reflect"
	"testing"

	"github.com/gpunode/gpunode/gpu"
)

func reasons(active ...string) []gpu.ClockEventReason {
	out := []gpu.ClockEventReason{{Reason: "hbm_thermal"}, {Reason: "ppt"}, {Reason: "prochot"}, {Reason: "socket_thermal"}, {Reason: "vr_thermal"}}
	for i := range out {
		for _, a := range active {
			if out[i].Reason == a {
				out[i].Active = true
			}
		}
	}
	return out
}

// 1.6 to 1.8: a throttler holds when its residency rose since the last
// reading (across a 32-bit wrap too); the first reading says nothing; a
// residency not reported (all ones) is left out.
func TestThrottleReasonsFromResidencies(t *testing.T) {
	for _, content := range []uint8{6, 7, 8} {
		last := map[string]uint64{}
		read := func(set map[string][]uint64) []gpu.ClockEventReason {
			t.Helper()
			m, err := ParseMetrics(table(t, 1, content, set))
			if err != nil {
				t.Fatalf("1.%d: %v", content, err)
			}
			return ThrottleReasons(m, last)
		}
		res := func(counter, ppt, hbm, socket, vr, prochot uint64) map[string][]uint64 {
			return map[string][]uint64{"accumulation_counter": {counter}, "ppt_residency_acc": {ppt}, "hbm_thm_residency_acc": {hbm},
				"socket_thm_residency_acc": {socket}, "vr_thm_residency_acc": {vr}, "prochot_residency_acc": {prochot}}
		}
		if got := read(res(1000, 500, 0, 0, 0, 0)); got != nil {
			t.Errorf("1.%d first reading: %v", content, got)
		}
		if got := read(res(2000, 900, 0, 0, 0, 0)); !reflect.DeepEqual(got, reasons("ppt")) {
			t.Errorf("1.%d power capped: %v", content, got)
		}
		if got := read(res(3000, 900, 1000, 0, 0, 0)); !reflect.DeepEqual(got, reasons("hbm_thermal")) {
			t.Errorf("1.%d HBM too hot: %v", content, got)
		}
		if got := read(res(4000, 900, 1000, 0xfffffff0, 0, 0)); !reflect.DeepEqual(got, reasons("socket_thermal")) {
			t.Errorf("1.%d socket: %v", content, got)
		}
		if got := read(res(5000, 900, 1000, 0x10, 0, 0)); !reflect.DeepEqual(got, reasons("socket_thermal")) {
			t.Errorf("1.%d socket across the wrap: %v", content, got)
		}
		if got := read(res(6000, 900, 1000, 0x10, 0, 0)); !reflect.DeepEqual(got, reasons()) {
			t.Errorf("1.%d cleared: %v", content, got)
		}
		set := res(7000, 900, 1000, 0x10, 0, 0)
		delete(set, "vr_thm_residency_acc")
		if got := read(set); len(got) != 4 {
			t.Errorf("1.%d without VR residency: %v", content, got)
		}
	}
}

// 1.3 (MI200): indep_throttle_status's SMU_THROTTLER bits, grouped; the
// current limits (TDC, EDC) are not reported; 1.4 and 1.5 (whose
// throttle_status smu_v13_0_6 writes as 0) and 1.1 report nothing.
func TestThrottleReasonsFromIndepStatus(t *testing.T) {
	for bits, want := range map[uint64][]gpu.ClockEventReason{
		0:                 reasons(),
		1 << 0:            reasons("ppt"),
		1 << 16:           reasons(), // TDC_GFX
		1 << 34:           reasons("hbm_thermal"),
		1<<36 | 1<<40:     reasons("socket_thermal", "vr_thermal"),
		1 << 47:           reasons("prochot"),
		1<<45 | 1<<6 | 1:  reasons("ppt", "vr_thermal"),
		1<<42 | 1<<34 | 0: reasons("hbm_thermal", "socket_thermal"),
	} {
		m, err := ParseMetrics(table(t, 1, 3, map[string][]uint64{"indep_throttle_status": {bits}}))
		if err != nil {
			t.Fatal(err)
		}
		if got := ThrottleReasons(m, map[string]uint64{}); !reflect.DeepEqual(got, want) {
			t.Errorf("%#x: %v, want %v", bits, got, want)
		}
	}
	for _, content := range []uint8{1, 3, 4, 5} {
		m, err := ParseMetrics(table(t, 1, content, map[string][]uint64{"throttle_status": {0xffff}}))
		if err != nil {
			t.Fatal(err)
		}
		if got := ThrottleReasons(m, map[string]uint64{}); got != nil {
			t.Errorf("1.%d: %v", content, got)
		}
	}
}
