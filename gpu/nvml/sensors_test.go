package nvml_test

import (
	"context"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/internal/testsupport"
)

func reasons(s gpu.Sample) []string {
	var out []string
	for _, r := range s.ClockEventReasons {
		out = append(out, r.Reason)
	}
	return out
}

// Clock event reasons are those the GPU supports: Blackwell adds
// BoardLimit (0x200) and Reliability (0x400); a GPU without a reason does
// not report it as inactive.
func TestClockEventReasonsSupported(t *testing.T) {
	lib, _ := clocked(t, nvmlfake.B200)
	b := nvml.New(lib)
	defer b.Close()
	nvmlfake.SetSupportedClockEventReasons(lib, 1, gonvml.ClocksEventReasonGpuIdle|gonvml.ClocksEventReasonSwPowerCap)
	all := sample(t, b)
	want := []string{"applications_clocks_setting", "board_limit", "display_clock_setting", "gpu_idle", "hw_power_brake_slowdown",
		"hw_slowdown", "hw_thermal_slowdown", "reliability", "sw_power_cap", "sw_thermal_slowdown", "sync_boost"}
	if got := reasons(all[0]); len(got) != len(want) || got[1] != "board_limit" || got[7] != "reliability" {
		t.Errorf("B200 reasons %v, want %v", got, want)
	}
	if got := reasons(all[1]); len(got) != 2 || got[0] != "gpu_idle" || got[1] != "sw_power_cap" {
		t.Errorf("GPU supporting idle and power cap only: %v", got)
	}
	h100, _ := clocked(t, nvmlfake.H100)
	hb := nvml.New(h100)
	defer hb.Close()
	if got := reasons(sample(t, hb)[0]); len(got) != 9 {
		t.Errorf("H100 reasons %v", got)
	}
	// A driver that cannot say which are supported: all of them.
	nvmlfake.SetReturn(lib, 2, "nvmlDeviceGetSupportedClocksEventReasons", gonvml.ERROR_NOT_SUPPORTED)
	b2 := nvml.New(lib)
	defer b2.Close()
	if got := reasons(sample(t, b2)[2]); len(got) != len(want) {
		t.Errorf("supported set unknown: %v", got)
	}
}

// The GPU temperature comes from nvmlDeviceGetTemperatureV where the
// library has it; a library without the deprecated
// nvmlDeviceGetTemperature is not asked for it (the fake panics if it is),
// and an older one without the V call uses the deprecated call.
func TestTemperatureV(t *testing.T) {
	lib, _ := clocked(t, nvmlfake.H100)
	nvmlfake.HideSymbol(lib, "nvmlDeviceGetTemperature")
	b := nvml.New(lib)
	defer b.Close()
	s := sample(t, b)[0]
	if c := temp(s, gpu.SensorGPU); c < 30 || c > 80 || nvmlfake.Calls(lib, "nvmlDeviceGetTemperatureV") == 0 {
		t.Errorf("GPU temperature %v from %d V calls", c, nvmlfake.Calls(lib, "nvmlDeviceGetTemperatureV"))
	}

	old, _ := clocked(t, nvmlfake.H100)
	nvmlfake.HideSymbol(old, "nvmlDeviceGetTemperatureV")
	ob := nvml.New(old)
	defer ob.Close()
	if c := temp(sample(t, ob)[0], gpu.SensorGPU); c != temp(s, gpu.SensorGPU) {
		t.Errorf("deprecated call read %v, V call %v", c, temp(s, gpu.SensorGPU))
	}
}

// A vGPU guest reports GPM support but fails every sample: GPM is given up
// after a few rounds, said once, and not asked again.
func TestVGPUGuestGivesUpGPM(t *testing.T) {
	c := testsupport.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	m := dgx(nvmlfake.H100)
	m.Clock = c.Now
	m.GPUs[2].VGPU = true
	lib := build(t, m)
	b := nvml.New(lib)
	defer b.Close()
	var reported int
	for range 10 {
		all, _ := b.Sample(context.Background())
		c.Advance(time.Second)
		if s := all[2]; !s.Up || s.Profiling != nil {
			t.Fatalf("vGPU GPU: up %v profiling %+v", s.Up, s.Profiling)
		}
		for _, e := range all[2].Errors {
			if strings.Contains(e, "nvmlGpmSampleGet failed 3 rounds in a row") {
				reported++
			}
		}
		if all[0].Profiling == nil && c.Now().Sub(time.Date(2026, 3, 1, 12, 0, 1, 0, time.UTC)) > 0 {
			t.Fatal("GPU 0 lost its GPM")
		}
	}
	// 8 GPUs sampled 10 times: 7 sample every round, the vGPU one 3 times.
	if n := nvmlfake.Calls(lib, "nvmlGpmSampleGet"); n != 7*10+3 || reported != 1 {
		t.Errorf("%d GPM samples, failure reported %d times", n, reported)
	}
	if a, f := nvmlfake.Calls(lib, "nvmlGpmSampleAlloc"), nvmlfake.Calls(lib, "nvmlGpmSampleFree"); a-f != 14 {
		t.Errorf("%d GPM samples allocated, %d freed: the vGPU's are not freed", a, f)
	}
}
