package nvml_test

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/internal/testsupport"
)

// TestProcesses: two inference processes time-slice GPU 0, an MPS server
// and two clients share GPU 1, a graphics process holds GPU 2, and GPU 3
// in MIG mode runs one process per instance.
func TestProcesses(t *testing.T) {
	c := testsupport.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	m := dgx(nvmlfake.H100)
	m.Clock = c.Now
	m.GPUs[0].Processes = []nvmlfake.Process{{PID: 2001, MemoryBytes: 30 << 30, SMShare: 0.6}, {PID: 1001, MemoryBytes: 10 << 30, SMShare: 0.2}}
	m.GPUs[1].Processes = []nvmlfake.Process{{PID: 3000, MemoryBytes: 1 << 30},
		{PID: 3001, Kind: nvmlfake.ProcessMPS, MemoryBytes: 20 << 30, SMShare: 0.5},
		{PID: 3002, Kind: nvmlfake.ProcessMPS, MemoryBytes: 20 << 30, SMShare: 0.5}}
	m.GPUs[2].Processes = []nvmlfake.Process{{PID: 4000, Kind: nvmlfake.ProcessGraphics, MemoryBytes: 1 << 30, SMShare: 0.1}}
	m.GPUs[3].MIGEnabled = true
	m.GPUs[3].MIG = []string{"3g.40gb", "1g.10gb"}
	m.GPUs[3].Processes = []nvmlfake.Process{{PID: 5000, MemoryBytes: 30 << 30, MIGDevice: 0}, {PID: 5001, MemoryBytes: 5 << 30, MIGDevice: 1}}
	lib := build(t, m)
	b := nvml.New(lib, nvml.WithClock(c.Now))
	defer b.Close()

	sample(t, b)
	c.Advance(5 * time.Second) // GPM needs time between samples
	s := sample(t, b)
	g0 := s[0]
	if len(g0.Processes) != 2 || g0.Processes[0].PID != 1001 || g0.Processes[1].PID != 2001 {
		t.Fatalf("GPU 0 processes %+v, want pids 1001, 2001", g0.Processes)
	}
	p := g0.Processes[1]
	if p.Kind != gpu.ProcessCompute || p.MemoryUsedBytes == nil || *p.MemoryUsedBytes != 30<<30 {
		t.Errorf("pid 2001: %+v", p)
	}
	// The process's SM share of the GPU's utilization (100a percent).
	if p.SMUtilization == nil || g0.Utilization == nil || math.Abs(*p.SMUtilization-0.6**g0.Utilization) > 0.011 {
		t.Errorf("pid 2001 SM %v of GPU %v, want 0.6 of it", p.SMUtilization, g0.Utilization)
	}
	// Nothing newer than the last sample: the processes have no reading
	// and that is no error (GPM, sampled too soon, complains alone).
	again, _ := b.Sample(context.Background())
	if u := again[0].Processes[1].SMUtilization; u != nil || slices.ContainsFunc(again[0].Errors, func(e string) bool {
		return strings.Contains(e, "Process")
	}) {
		t.Errorf("second round at the same time: SM %v, errors %v", u, again[0].Errors)
	}
	c.Advance(time.Second)
	if u := sample(t, b)[0].Processes[1].SMUtilization; u == nil {
		t.Error("no SM utilization after the clock moved")
	}

	kinds := map[uint32]string{}
	for _, p := range s[1].Processes {
		kinds[p.PID] = p.Kind
	}
	if len(kinds) != 3 || kinds[3000] != gpu.ProcessCompute || kinds[3001] != gpu.ProcessMPS || kinds[3002] != gpu.ProcessMPS {
		t.Errorf("MPS GPU processes %v", kinds)
	}
	if ps := s[2].Processes; len(ps) != 1 || ps[0].Kind != gpu.ProcessGraphics {
		t.Errorf("graphics GPU processes %+v", ps)
	}
	g3 := s[3]
	if g3.Processes != nil || len(g3.MIG) != 2 {
		t.Fatalf("MIG GPU: processes %+v on the GPU, %d instances", g3.Processes, len(g3.MIG))
	}
	for i, want := range []uint32{5000, 5001} {
		ps := g3.MIG[i].Processes
		if len(ps) != 1 || ps[0].PID != want || ps[0].SMUtilization != nil {
			t.Errorf("MIG instance %d processes %+v, want pid %d without samples", i, ps, want)
		}
	}
	if s[4].Processes == nil || len(s[4].Processes) != 0 {
		t.Errorf("idle GPU processes %#v, want an empty list", s[4].Processes)
	}
}

func TestProcessesGatedOnOldDrivers(t *testing.T) {
	m := dgx(nvmlfake.H100)
	m.GPUs[0].Processes = []nvmlfake.Process{{PID: 10, SMShare: 1}, {PID: 11, Kind: nvmlfake.ProcessMPS}}
	lib := build(t, m)
	nvmlfake.HideSymbol(lib, "nvmlDeviceGetMPSComputeRunningProcesses")
	nvmlfake.HideSymbol(lib, "nvmlDeviceGetProcessUtilization")
	b := nvml.New(lib)
	defer b.Close()
	ps := sample(t, b)[0].Processes
	if len(ps) != 1 || ps[0].PID != 10 || ps[0].SMUtilization != nil {
		t.Errorf("processes %+v, want pid 10 alone, without samples", ps)
	}
}

func TestFakeRejectsImpossibleProcesses(t *testing.T) {
	for _, ps := range [][]nvmlfake.Process{
		{{PID: 1, SMShare: 0.7}, {PID: 2, SMShare: 0.7}},
		{{PID: 1}, {PID: 1}},
		{{PID: 1, Kind: "vulkan"}},
	} {
		m := dgx(nvmlfake.H100)
		m.GPUs[0].Processes = ps
		if _, err := nvmlfake.New(m); err == nil {
			t.Errorf("processes %+v accepted", ps)
		}
	}
}

// Without the privilege NVML asks for a MIG GPU's whole process list, the
// GPU has no process list and no sampling error.
func TestProcessesWithoutPermission(t *testing.T) {
	m := dgx(nvmlfake.H100)
	m.GPUs[0].Processes = []nvmlfake.Process{{PID: 10}}
	lib := build(t, m)
	nvmlfake.SetReturn(lib, 0, "nvmlDeviceGetComputeRunningProcesses", gonvml.ERROR_NO_PERMISSION)
	b := nvml.New(lib)
	defer b.Close()
	s, _ := b.Sample(context.Background())
	if s[0].Processes != nil || slices.ContainsFunc(s[0].Errors, func(e string) bool { return strings.Contains(e, "Processes") }) {
		t.Errorf("processes %+v, errors %v", s[0].Processes, s[0].Errors)
	}
	if len(s[1].Processes) != 0 || s[1].Processes == nil {
		t.Errorf("GPU 1 processes %#v", s[1].Processes)
	}
}
