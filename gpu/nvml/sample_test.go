package nvml_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/testsupport"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/internal/source"
)

// clocked is a DGX of model on a clock the test moves.
func clocked(t *testing.T, model nvmlfake.Model) (gonvml.Interface, *testsupport.Clock) {
	t.Helper()
	c := testsupport.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	m := dgx(model)
	m.Clock = c.Now
	return build(t, m), c
}

func sample(t *testing.T, b *nvml.Backend) []gpu.Sample {
	t.Helper()
	s, err := b.Sample(context.Background())
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	return s
}

func temp(s gpu.Sample, sensor string) float64 {
	for _, x := range s.Temperatures {
		if x.Sensor == sensor {
			return x.Celsius
		}
	}
	return math.NaN()
}

func clockHz(s gpu.Sample, name string) float64 {
	for _, c := range s.Clocks {
		if c.Clock == name {
			return c.Hertz
		}
	}
	return math.NaN()
}

func TestSampleH100(t *testing.T) {
	lib, clk := clocked(t, nvmlfake.H100)
	b := nvml.New(lib)
	defer b.Close()
	first := sample(t, b)
	if len(first) != 8 {
		t.Fatalf("%d samples, want 8", len(first))
	}
	inv := inventory(t, b)
	for i, s := range first {
		d := inv.Devices[i]
		if s.Index != i || s.UUID != d.UUID || s.PCIBusID != d.PCIBusID || s.Product != d.Product ||
			s.DeviceNode != "nvidia"+string(rune('0'+i)) || !s.Up || s.Lost || len(s.Errors) != 0 {
			t.Errorf("sample %d identity/state: %+v", i, s)
		}
		if s.Profiling != nil {
			t.Errorf("sample %d: GPM metrics on the first round, before there are two samples", i)
		}
	}

	clk.Advance(5 * time.Second)
	second := sample(t, b)
	s := second[0]
	ratio := func(p *float64) bool { return p != nil && *p >= 0 && *p <= 1 }
	if !ratio(s.Utilization) || !ratio(s.MemoryUtilization) || *s.Utilization < 0.1 {
		t.Errorf("utilization %v / %v", s.Utilization, s.MemoryUtilization)
	}
	if s.MemoryTotalBytes == nil || *s.MemoryTotalBytes != 80<<30 || s.MemoryReservedBytes == nil ||
		*s.MemoryUsedBytes+*s.MemoryFreeBytes+*s.MemoryReservedBytes != 80<<30 {
		t.Errorf("memory %v %v %v %v", s.MemoryTotalBytes, s.MemoryUsedBytes, s.MemoryFreeBytes, s.MemoryReservedBytes)
	}
	if s.PowerWatts == nil || *s.PowerWatts < 84 || *s.PowerWatts > 700 || *s.PowerLimitWatts != 700 {
		t.Errorf("power %v W of %v W", s.PowerWatts, s.PowerLimitWatts)
	}
	if s.EnergyMillijoules == nil || *s.EnergyMillijoules <= *first[0].EnergyMillijoules {
		t.Errorf("energy did not grow: %v -> %v", first[0].EnergyMillijoules, s.EnergyMillijoules)
	}
	if g, m := temp(s, gpu.SensorGPU), temp(s, gpu.SensorMemory); g < 30 || m != g+6 {
		t.Errorf("temperatures gpu %v memory %v", g, m)
	}
	if len(s.Clocks) != 4 || clockHz(s, gpu.ClockMemory) != 2619e6 {
		t.Errorf("clocks %+v", s.Clocks)
	}
	if len(s.ClockEventReasons) != 9 || !slices.IsSortedFunc(s.ClockEventReasons, func(a, b gpu.ClockEventReason) int {
		return strings.Compare(a.Reason, b.Reason)
	}) {
		t.Errorf("clock event reasons %+v", s.ClockEventReasons)
	}
	p := s.PCIe
	if p == nil || p.TransmitBytes == nil || p.ReceiveBytes == nil || p.ReplayErrors == nil || p.ReplayCounterBits != 32 ||
		*p.LinkGeneration != 5 || *p.LinkWidth != 16 || *p.TransmitBytes <= *first[0].PCIe.TransmitBytes {
		t.Errorf("PCIe %+v", p)
	}
	ic := s.Interconnect
	if ic == nil || ic.Kind != gpu.NVLink || len(ic.Links) != 18 || ic.ActiveLinks() != 18 {
		t.Fatalf("interconnect %+v", ic)
	}
	for i, l := range ic.Links {
		prev := first[0].Interconnect.Links[i]
		if l.Number != i || l.TransmitBytes == nil || l.ReceiveBytes == nil || *l.TransmitBytes <= *prev.TransmitBytes ||
			*l.TransmitBytes%1024 != 0 {
			t.Errorf("link %+v after %+v", l, prev)
		}
	}
	var types []string
	for _, e := range ic.Errors {
		types = append(types, e.Type)
	}
	if !slices.Equal(types, []string{"crc_data", "crc_flit", "ecc_data", "recovery", "replay"}) {
		t.Errorf("interconnect error types %v", types)
	}
	if len(s.ECC) != 4 || s.ECC[0] != (gpu.ECCCount{Type: "corrected", Scope: "aggregate", Count: s.ECC[0].Count}) ||
		s.ECC[3].Type != "uncorrected" || s.ECC[3].Scope != "volatile" || s.ECC[3].Count != 0 {
		t.Errorf("ECC %+v", s.ECC)
	}
	if s.RemappedRows == nil || *s.RemappedRows != (gpu.RemappedRows{}) {
		t.Errorf("remapped rows %+v", s.RemappedRows)
	}
	prof := s.Profiling
	if prof == nil || !ratio(prof.GraphicsActive) || !ratio(prof.SMActive) || !ratio(prof.SMOccupancy) ||
		!ratio(prof.TensorActive) || !ratio(prof.DRAMActive) {
		t.Fatalf("profiling %+v", prof)
	}
	// GPM is the mean over the 5 s between the rounds; utilization is now.
	if math.Abs(*prof.GraphicsActive-*s.Utilization) > 0.05 || math.Abs(*prof.SMActive-0.92**prof.GraphicsActive) > 1e-9 {
		t.Errorf("graphics %v SM %v utilization %v", *prof.GraphicsActive, *prof.SMActive, *s.Utilization)
	}
}

// Power integrates to energy: the energy counter's rate over a round is
// the mean of the power readings around it.
func TestEnergyIsThePowerIntegral(t *testing.T) {
	lib, clk := clocked(t, nvmlfake.B200)
	b := nvml.New(lib)
	defer b.Close()
	prev := sample(t, b)
	for range 20 {
		clk.Advance(3 * time.Second)
		cur := sample(t, b)
		for i := range cur {
			watts := float64(*cur[i].EnergyMillijoules-*prev[i].EnergyMillijoules) / 1000 / 3
			mean := (*cur[i].PowerWatts + *prev[i].PowerWatts) / 2
			if math.Abs(watts-mean) > 2 {
				t.Fatalf("gpu %d: energy rate %.1f W, power readings average %.1f W", i, watts, mean)
			}
		}
		prev = cur
	}
}

func TestNotSupportedIsAbsentNotAnError(t *testing.T) {
	lib, clk := clocked(t, nvmlfake.H100)
	for _, sym := range []string{"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetRemappedRows",
		"nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetPcieReplayCounter", "nvmlGpmQueryDeviceSupport",
		"nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetUtilizationRates"} {
		nvmlfake.SetReturn(lib, 2, sym, gonvml.ERROR_NOT_SUPPORTED)
	}
	nvmlfake.SetFieldReturn(lib, 2, gonvml.FI_DEV_PCIE_COUNT_TX_BYTES, gonvml.ERROR_NOT_SUPPORTED)
	nvmlfake.SetFieldReturn(lib, 2, gonvml.FI_DEV_MEMORY_TEMP, gonvml.ERROR_NOT_SUPPORTED)
	nvmlfake.SetFieldReturn(lib, 2, gonvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX, gonvml.ERROR_INVALID_ARGUMENT) // an older driver
	b := nvml.New(lib)
	defer b.Close()
	sample(t, b)
	clk.Advance(time.Second) // GPM samples must be over 100 ms apart
	s := sample(t, b)[2]
	if !s.Up || len(s.Errors) != 0 {
		t.Fatalf("GPU 2: up %v errors %v", s.Up, s.Errors)
	}
	if s.EnergyMillijoules != nil || s.RemappedRows != nil || s.ECC != nil || s.PCIe.ReplayErrors != nil ||
		s.Profiling != nil || s.ClockEventReasons != nil || s.Utilization != nil || s.PCIe.TransmitBytes != nil ||
		s.PCIe.ReceiveBytes == nil || !math.IsNaN(temp(s, gpu.SensorMemory)) || s.Interconnect.Links[0].ReceiveBytes != nil ||
		s.Interconnect.Links[0].TransmitBytes == nil {
		t.Errorf("not-supported fields present: %+v", s)
	}
	// Not asked again once the GPU said it has no GPM.
	calls := nvmlfake.Calls(lib, "nvmlGpmQueryDeviceSupport")
	clk.Advance(time.Second)
	sample(t, b)
	if n := nvmlfake.Calls(lib, "nvmlGpmQueryDeviceSupport"); n != calls {
		t.Errorf("GPM support asked %d more times", n-calls)
	}
}

// An older driver without the newer entry points: nothing missing is
// called (the fake panics if it is), the rest is read, and clock event
// reasons come from the older throttle-reasons call.
// nvmlDeviceGetMemoryInfo counts the memory the driver reserves as used
// (nvml.h, nvmlMemory_t.used: "Sum of Reserved and Allocated"); the
// sampler reads nvmlDeviceGetMemoryInfo_v2, which reports it apart, as
// nvidia-smi and DCGM do, and falls back to v1 on drivers before R510.
func TestMemoryUsedExcludesReserved(t *testing.T) {
	lib, _ := clocked(t, nvmlfake.H100)
	b := nvml.New(lib)
	defer b.Close()
	s := sample(t, b)[0]
	h, _ := lib.DeviceGetHandleByIndex(0)
	v1, _ := h.GetMemoryInfo()
	if s.MemoryReservedBytes == nil || *s.MemoryReservedBytes == 0 || s.MemoryUsedBytes == nil ||
		*s.MemoryUsedBytes != v1.Used-*s.MemoryReservedBytes || *s.MemoryFreeBytes != v1.Free {
		t.Errorf("used %v free %v reserved %v; v1 says used %d free %d", s.MemoryUsedBytes, s.MemoryFreeBytes, s.MemoryReservedBytes, v1.Used, v1.Free)
	}

	old, _ := clocked(t, nvmlfake.H100)
	nvmlfake.HideSymbol(old, "nvmlDeviceGetMemoryInfo_v2")
	b = nvml.New(old)
	defer b.Close()
	s = sample(t, b)[0]
	if s.MemoryReservedBytes != nil || s.MemoryUsedBytes == nil || *s.MemoryUsedBytes+*s.MemoryFreeBytes != *s.MemoryTotalBytes || len(s.Errors) != 0 {
		t.Errorf("without v2: used %v free %v reserved %v, errors %v", s.MemoryUsedBytes, s.MemoryFreeBytes, s.MemoryReservedBytes, s.Errors)
	}
}

func TestOlderDriverSymbolsGated(t *testing.T) {
	lib, _ := clocked(t, nvmlfake.H100)
	for _, sym := range []string{"nvmlDeviceGetFieldValues", "nvmlDeviceGetTotalEnergyConsumption",
		"nvmlDeviceGetRemappedRows", "nvmlDeviceGetCurrentClocksEventReasons", "nvmlGpmSampleAlloc",
		"nvmlDeviceGetPcieReplayCounter", "nvmlDeviceGetMinorNumber"} {
		nvmlfake.HideSymbol(lib, sym)
	}
	b := nvml.New(lib)
	defer b.Close()
	sample(t, b)
	s := sample(t, b)[0]
	if !s.Up || len(s.Errors) != 0 || s.Utilization == nil || s.PowerWatts == nil || len(s.ClockEventReasons) != 9 {
		t.Fatalf("sample %+v", s)
	}
	if s.EnergyMillijoules != nil || s.RemappedRows != nil || s.Profiling != nil || s.PCIe.TransmitBytes != nil ||
		s.Interconnect.Links[0].TransmitBytes != nil || s.DeviceNode != "" {
		t.Errorf("fields from hidden symbols: %+v", s)
	}
	if nvmlfake.Calls(lib, "nvmlDeviceGetCurrentClocksThrottleReasons") == 0 {
		t.Error("the throttle-reasons fallback was not used")
	}
	if nvmlfake.Calls(lib, "nvmlGpmQueryDeviceSupport") != 0 {
		t.Error("GPM used although part of its API is missing")
	}
}

func TestA100HasNoGPM(t *testing.T) {
	lib, clk := clocked(t, nvmlfake.A100)
	b := nvml.New(lib)
	defer b.Close()
	sample(t, b)
	clk.Advance(time.Second)
	for _, s := range sample(t, b) {
		if s.Profiling != nil || len(s.Errors) != 0 || s.Interconnect.ActiveLinks() != 12 {
			t.Errorf("A100 %d: %+v", s.Index, s)
		}
	}
	if nvmlfake.Calls(lib, "nvmlGpmSampleAlloc") != 0 {
		t.Error("GPM samples allocated for a GPU without GPM")
	}
}

// A GPU that falls off the bus mid-run is reported down under the name it
// had; the other seven carry on.
func TestLostGPUOnlyItsOwnSamplesGoDown(t *testing.T) {
	lib, clk := clocked(t, nvmlfake.H100)
	b := nvml.New(lib)
	defer b.Close()
	before := sample(t, b)
	nvmlfake.SetLost(lib, 3)
	clk.Advance(time.Second)
	after, err := b.Sample(context.Background())
	if err == nil || !strings.Contains(err.Error(), "gpu 3: nvmlDeviceGetHandleByIndex: ") || errors.Is(err, source.ErrAbsent) {
		t.Fatalf("err = %v", err)
	}
	for i, s := range after {
		if i == 3 {
			if s.Up || !s.Lost || s.UUID != before[3].UUID || s.PCIBusID != before[3].PCIBusID || s.Utilization != nil {
				t.Errorf("lost GPU: %+v", s)
			}
			continue
		}
		if !s.Up || s.Lost || s.Utilization == nil || len(s.Errors) != 0 {
			t.Errorf("GPU %d: %+v", i, s)
		}
	}
}

// A GPU lost during its own read stops being asked at once.
func TestGPULostDuringRead(t *testing.T) {
	lib, _ := clocked(t, nvmlfake.H200)
	b := nvml.New(lib)
	defer b.Close()
	sample(t, b)
	nvmlfake.SetReturn(lib, 5, "nvmlDeviceGetPowerUsage", gonvml.ERROR_GPU_IS_LOST)
	calls := nvmlfake.Calls(lib, "nvmlDeviceGetTemperatureV")
	s, _ := b.Sample(context.Background())
	if s[5].Up || !s[5].Lost || len(s[5].Errors) != 1 || !strings.HasPrefix(s[5].Errors[0], "nvmlDeviceGetPowerUsage: ") {
		t.Errorf("GPU 5: %+v", s[5])
	}
	// Seven GPUs read their temperature; the lost one stopped before it.
	if n := nvmlfake.Calls(lib, "nvmlDeviceGetTemperatureV") - calls; n != 7 {
		t.Errorf("temperature read %d times, want 7", n)
	}
}

// A GPU whose calls hang is reported timed out when the round's deadline
// passes, is not read again while the hung call is outstanding, and comes
// back once it answers; the other GPUs are read normally throughout.
func TestHungGPUTimesOutAlone(t *testing.T) {
	lib, _ := clocked(t, nvmlfake.H100)
	b := nvml.New(lib)
	defer b.Close()
	sample(t, b)
	nvmlfake.SetDelay(lib, 6, "nvmlDeviceGetClockInfo", 400*time.Millisecond)
	round := func() ([]gpu.Sample, time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		s, _ := b.Sample(ctx)
		return s, time.Since(start)
	}
	s, took := round()
	if took > time.Second {
		t.Errorf("a round with a hung GPU took %s", took)
	}
	if s[6].Up || !strings.HasPrefix(s[6].Errors[0], "timed out") || s[6].UUID == "" {
		t.Errorf("hung GPU: %+v", s[6])
	}
	for i, x := range s {
		if i != 6 && !x.Up {
			t.Errorf("GPU %d down beside the hung one: %v", i, x.Errors)
		}
	}
	s, _ = round()
	if s[6].Up || !strings.Contains(s[6].Errors[0], "previous read has not returned") {
		t.Errorf("hung GPU, second round: %+v", s[6])
	}
	nvmlfake.SetDelay(lib, 6, "nvmlDeviceGetClockInfo", 0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, _ = round()
		if s[6].Up || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !s[6].Up {
		t.Errorf("GPU 6 never came back: %v", s[6].Errors)
	}
}

func TestCallErrorsKeepTheGPUUp(t *testing.T) {
	lib, _ := clocked(t, nvmlfake.H100)
	nvmlfake.SetReturn(lib, 1, "nvmlDeviceGetUtilizationRates", gonvml.ERROR_TIMEOUT)
	nvmlfake.SetFieldReturn(lib, 1, gonvml.FI_DEV_PCIE_COUNT_RX_BYTES, gonvml.ERROR_UNKNOWN)
	b := nvml.New(lib)
	defer b.Close()
	s, err := b.Sample(context.Background())
	if err == nil || !strings.Contains(err.Error(), "gpu 1: nvmlDeviceGetUtilizationRates: ") {
		t.Fatalf("err = %v", err)
	}
	g := s[1]
	if !g.Up || g.Utilization != nil || g.PowerWatts == nil || len(g.Errors) != 2 || g.PCIe.ReceiveBytes != nil || g.PCIe.TransmitBytes == nil {
		t.Errorf("GPU 1: %+v", g)
	}
}

func TestSampleWithoutLibrary(t *testing.T) {
	b := nvml.New(nil)
	if s, err := b.Sample(context.Background()); !errors.Is(err, source.ErrAbsent) || s != nil {
		t.Errorf("Sample without NVML = %v, %v", s, err)
	}
	if err := b.WatchEvents(context.Background(), func(gpu.Event) {}); !errors.Is(err, source.ErrAbsent) {
		t.Errorf("WatchEvents without NVML = %v", err)
	}
}

// Close frees the GPM samples and the event set before shutting NVML
// down, and a later Sample starts over.
func TestCloseAndSampleAgain(t *testing.T) {
	lib, clk := clocked(t, nvmlfake.H100)
	b := nvml.New(lib)
	ctx, cancel := context.WithCancel(context.Background())
	watching := make(chan error)
	go func() { watching <- b.WatchEvents(ctx, func(gpu.Event) {}) }()
	sample(t, b)
	for nvmlfake.Calls(lib, "nvmlDeviceRegisterEvents") < 8 {
		time.Sleep(10 * time.Millisecond)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := nvmlfake.Calls(lib, "nvmlGpmSampleFree"), nvmlfake.Calls(lib, "nvmlGpmSampleAlloc"); got != want || got != 16 {
		t.Errorf("%d GPM samples freed of %d allocated", got, want)
	}
	if nvmlfake.Calls(lib, "nvmlEventSetFree") != 1 {
		t.Error("event set not freed")
	}
	cancel()
	if err := <-watching; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchEvents = %v", err)
	}
	clk.Advance(time.Second)
	sample(t, b)
	clk.Advance(time.Second)
	if s := sample(t, b); s[0].Profiling == nil {
		t.Error("no GPM after re-Init")
	}
	b.Close()
}

func TestWatchEvents(t *testing.T) {
	lib, clk := clocked(t, nvmlfake.H100)
	b := nvml.New(lib)
	defer b.Close()
	inv := inventory(t, b)
	events := make(chan gpu.Event, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.WatchEvents(ctx, func(e gpu.Event) { events <- e })
	for nvmlfake.Calls(lib, "nvmlDeviceRegisterEvents") < 8 {
		time.Sleep(10 * time.Millisecond)
	}
	next := func() gpu.Event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
		return gpu.Event{}
	}
	nvmlfake.RaiseXID(lib, 4, 94)
	if e := next(); e.Kind != gpu.XID || e.Code != 94 || e.GPU != 4 || e.UUID != inv.Devices[4].UUID || e.Time.IsZero() {
		t.Errorf("event %+v", e)
	}
	nvmlfake.SetLost(lib, 7)
	if e := next(); e.Code != nvmlfake.XIDFallenOffBus || e.GPU != 7 {
		t.Errorf("event %+v", e)
	}
	// Events keep coming after a failed wait: the set is rebuilt.
	clk.Advance(time.Second)
	nvmlfake.RaiseXID(lib, 0, 48)
	if e := next(); e.Code != 48 || e.GPU != 0 {
		t.Errorf("event %+v", e)
	}
}

// A GPU in MIG mode reports each MIG device (GPU instance, compute
// instance, UUID, profile, memory) and each instance's GPM activity; the
// whole-GPU utilization is not supported in MIG mode and is absent.
func TestMIGInstances(t *testing.T) {
	c := testsupport.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	m := dgx(nvmlfake.H100)
	m.Clock = c.Now
	m.GPUs[3].MIGEnabled = true
	m.GPUs[3].MIG = []string{"3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"}
	lib := build(t, m)
	b := nvml.New(lib, nvml.WithClock(c.Now))
	defer b.Close()
	sample(t, b)
	c.Advance(5 * time.Second)
	s := sample(t, b)[3]
	if !s.Up || len(s.Errors) != 0 || s.Utilization != nil || s.PowerWatts == nil {
		t.Fatalf("MIG GPU: up %v, errors %v, utilization %v", s.Up, s.Errors, s.Utilization)
	}
	if len(s.MIG) != 4 {
		t.Fatalf("%d MIG instances, want 4: %+v", len(s.MIG), s.MIG)
	}
	wantMem := []uint64{40, 20, 10, 10}
	uuids := map[string]bool{}
	for i, inst := range s.MIG {
		if inst.GPUInstanceID != i+1 || inst.Profile != m.GPUs[3].MIG[i] || !strings.HasPrefix(inst.UUID, "MIG-") ||
			*inst.MemoryTotalBytes != wantMem[i]<<30 || *inst.MemoryUsedBytes+*inst.MemoryFreeBytes != wantMem[i]<<30 {
			t.Errorf("instance %d: %+v", i, inst)
		}
		if p := inst.Profiling; p == nil || p.GraphicsActive == nil || *p.GraphicsActive <= 0 || *p.GraphicsActive > 1 {
			t.Errorf("instance %d profiling %+v", i, inst.Profiling)
		}
		uuids[inst.UUID] = true
	}
	if len(uuids) != 4 {
		t.Error("MIG UUIDs repeat")
	}
	c.Advance(time.Second)
	for i, g := range sample(t, b) {
		if i != 3 && (g.MIG != nil || g.Utilization == nil) {
			t.Errorf("GPU %d: MIG %v, utilization %v", i, g.MIG, g.Utilization)
		}
	}
	// MIG mode off: the instances and their GPM samples go.
	h, _ := lib.DeviceGetHandleByIndex(3)
	h.SetMigMode(gonvml.DEVICE_MIG_DISABLE)
	c.Advance(time.Second)
	if s := sample(t, b)[3]; s.MIG != nil || s.Utilization == nil {
		t.Errorf("after MIG off: %+v", s)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if a, f := nvmlfake.Calls(lib, "nvmlGpmSampleAlloc"), nvmlfake.Calls(lib, "nvmlGpmSampleFree"); a != f {
		t.Errorf("%d GPM samples allocated, %d freed", a, f)
	}
	m.GPUs[3].MIG = []string{"7g.80gb", "1g.10gb"}
	if _, err := nvmlfake.New(m); err == nil || !strings.Contains(err.Error(), "need 8 slices") {
		t.Errorf("an impossible MIG layout: %v", err)
	}
}

// A GPU instance split into compute instances is one MIG device per
// compute instance, but GPM samples the GPU instance: it is sampled once a
// round (NVML wants samples over 100 ms apart, which the fake enforces)
// and every compute instance of it reports that activity.
func TestMIGComputeInstancesShareGPM(t *testing.T) {
	c := testsupport.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	m := dgx(nvmlfake.H100)
	m.Clock = c.Now
	m.GPUs[3].MIGEnabled = true
	m.GPUs[3].MIG = []string{"3g.40gb", "1g.10gb"}
	m.GPUs[3].MIGComputeInstances = []int{3}
	lib := build(t, m)
	b := nvml.New(lib, nvml.WithClock(c.Now))
	defer b.Close()
	sample(t, b)
	c.Advance(5 * time.Second)
	s := sample(t, b)[3]
	if len(s.Errors) != 0 || len(s.MIG) != 4 {
		t.Fatalf("errors %v, %d MIG devices: %+v", s.Errors, len(s.MIG), s.MIG)
	}
	type key struct{ gi, ci int }
	want := []key{{1, 0}, {1, 1}, {1, 2}, {2, 0}}
	for i, inst := range s.MIG {
		if (key{inst.GPUInstanceID, inst.ComputeInstanceID}) != want[i] {
			t.Errorf("device %d is GPU instance %d compute instance %d", i, inst.GPUInstanceID, inst.ComputeInstanceID)
		}
		if p := inst.Profiling; p == nil || p.SMActive == nil {
			t.Errorf("device %d has no GPM activity", i)
		}
	}
	if s.MIG[0].Profile != "1c.3g.40gb" || s.MIG[3].Profile != "1g.10gb" {
		t.Errorf("profiles %q %q", s.MIG[0].Profile, s.MIG[3].Profile)
	}
	if *s.MIG[0].Profiling.SMActive != *s.MIG[2].Profiling.SMActive {
		t.Error("compute instances of one GPU instance report different GPU instance activity")
	}
	if n := nvmlfake.Calls(lib, "nvmlGpmMigSampleGet"); n != 4 {
		t.Errorf("%d GPM samples of 2 GPU instances in 2 rounds, want 4", n)
	}
	m.GPUs[3].MIGComputeInstances = []int{2}
	if _, err := nvmlfake.New(m); err == nil {
		t.Error("3 slices split into 2 compute instances")
	}
}
