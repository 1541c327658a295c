package nvmlfake

import (
	"encoding/binary"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// manualClock is a clock tests move by hand.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *manualClock { return &manualClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func clocked(model Model) (Machine, *manualClock) {
	m := twoGPUs(model)
	c := newClock()
	m.Clock = c.Now
	return m, c
}

// result holds a call's results so that val(h.GetX()).must(t, "x") reads well.
type result[T any] struct {
	v   T
	ret gonvml.Return
}

func val[T any](v T, ret gonvml.Return) result[T] { return result[T]{v, ret} }

func (a result[T]) must(t *testing.T, what string) T {
	t.Helper()
	if a.ret != gonvml.SUCCESS {
		t.Fatalf("%s: %v", what, a.ret)
	}
	return a.v
}

func mustOK(t *testing.T, what string, ret gonvml.Return) {
	t.Helper()
	if ret != gonvml.SUCCESS {
		t.Fatalf("%s: %v", what, ret)
	}
}

func field(t *testing.T, h gonvml.Device, id, scope uint32) uint64 {
	t.Helper()
	fv := []gonvml.FieldValue{{FieldId: id, ScopeId: scope}}
	if ret := h.GetFieldValues(fv); ret != gonvml.SUCCESS || fv[0].NvmlReturn != uint32(gonvml.SUCCESS) {
		t.Fatalf("field %d scope %d: %v / %v", id, scope, ret, gonvml.Return(fv[0].NvmlReturn))
	}
	if fv[0].ValueType == uint32(gonvml.VALUE_TYPE_UNSIGNED_INT) {
		return uint64(binary.NativeEndian.Uint32(fv[0].Value[:]))
	}
	return binary.NativeEndian.Uint64(fv[0].Value[:])
}

// Gauges stay in their physical ranges and move; counters only grow, and
// the energy counter is the integral of the power gauge.
func TestLiveReadingsFollowTheClock(t *testing.T) {
	m, clock := clocked(H100)
	lib := mustNew(t, m)
	h := handle(t, lib, 0)

	type reading struct {
		util, memUtil   uint32
		used, free      uint64
		mw              uint32
		energy          uint64
		temp, memTemp   uint64
		sm, mem         uint32
		pcieTx, pcieRx  uint64
		linkTx, linkRx  uint64
		replay, ecc     uint64
		reasons         uint64
		gpuIdle, capped bool
	}
	read := func() reading {
		u := val(h.GetUtilizationRates()).must(t, "utilization")
		mem := val(h.GetMemoryInfo()).must(t, "memory")
		var r reading
		r.util, r.memUtil, r.used, r.free = u.Gpu, u.Memory, mem.Used, mem.Free
		if mem.Used+mem.Free != mem.Total || mem.Total != 80<<30 || mem.Used%(1<<20) != 0 {
			t.Errorf("memory %+v", mem)
		}
		r.mw = val(h.GetPowerUsage()).must(t, "power")
		r.energy = val(h.GetTotalEnergyConsumption()).must(t, "energy")
		r.temp = uint64(val(h.GetTemperature(gonvml.TEMPERATURE_GPU)).must(t, "temperature"))
		r.memTemp = field(t, h, gonvml.FI_DEV_MEMORY_TEMP, 0)
		r.sm = val(h.GetClockInfo(gonvml.CLOCK_SM)).must(t, "sm clock")
		r.mem = val(h.GetClockInfo(gonvml.CLOCK_MEM)).must(t, "mem clock")
		r.pcieTx = field(t, h, gonvml.FI_DEV_PCIE_COUNT_TX_BYTES, 0)
		r.pcieRx = field(t, h, gonvml.FI_DEV_PCIE_COUNT_RX_BYTES, 0)
		r.linkTx = field(t, h, gonvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX, 7)
		r.linkRx = field(t, h, gonvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX, 7)
		r.replay = uint64(val(h.GetPcieReplayCounter()).must(t, "replay"))
		r.ecc = val(h.GetTotalEccErrors(gonvml.MEMORY_ERROR_TYPE_CORRECTED, gonvml.VOLATILE_ECC)).must(t, "ecc")
		r.reasons = val(h.GetCurrentClocksEventReasons()).must(t, "clock reasons")
		return r
	}

	prev := read()
	utils := map[uint32]bool{}
	var sawIdle, sawCap bool
	step := 7 * time.Second
	for range 200 { // 1400 s: more than four load periods
		powerBefore := float64(prev.mw) / 1000
		clock.Advance(step)
		r := read()
		if r.util < 10 || r.util > 90 || r.memUtil > 70 || r.temp < 30 || r.temp > 72 || r.memTemp != r.temp+6 {
			t.Fatalf("gauges out of range: %+v", r)
		}
		if r.mw < 84_000 || r.mw > 630_000 {
			t.Fatalf("power %d mW outside idle..90%% of 700 W", r.mw)
		}
		if r.mem != 2619 || (r.sm != 1980 && r.sm != 345) {
			t.Fatalf("clocks SM %d MHz, memory %d MHz", r.sm, r.mem)
		}
		for name, pair := range map[string][2]uint64{"energy": {prev.energy, r.energy}, "pcie tx": {prev.pcieTx, r.pcieTx},
			"pcie rx": {prev.pcieRx, r.pcieRx}, "nvlink tx": {prev.linkTx, r.linkTx}, "nvlink rx": {prev.linkRx, r.linkRx},
			"replay": {prev.replay, r.replay}, "ecc": {prev.ecc, r.ecc}} {
			if pair[1] < pair[0] {
				t.Fatalf("%s went down: %d -> %d", name, pair[0], pair[1])
			}
		}
		// Energy over the step is the mean power over it, which lies
		// between the power at either end (the curve is monotone over 7 s
		// except near its turns, hence the slack).
		watts := float64(r.energy-prev.energy) / 1000 / step.Seconds()
		lo, hi := min(powerBefore, float64(r.mw)/1000), max(powerBefore, float64(r.mw)/1000)
		if watts < lo-3 || watts > hi+3 {
			t.Fatalf("energy rate %.1f W outside the power readings %.1f..%.1f W", watts, lo, hi)
		}
		if r.linkTx == prev.linkTx || r.pcieTx == prev.pcieTx {
			t.Fatalf("traffic counters did not move in %s", step)
		}
		sawIdle = sawIdle || r.reasons&gonvml.ClocksEventReasonGpuIdle != 0
		sawCap = sawCap || r.reasons&gonvml.ClocksEventReasonSwPowerCap != 0
		utils[r.util] = true
		prev = r
	}
	if len(utils) < 50 || !sawIdle || !sawCap {
		t.Errorf("utilization took %d values, idle seen %v, power cap seen %v: the load does not move enough", len(utils), sawIdle, sawCap)
	}
}

func TestTwoGPUsRunOutOfStep(t *testing.T) {
	m, _ := clocked(H200)
	lib := mustNew(t, m)
	u0 := val(handle(t, lib, 0).GetUtilizationRates()).must(t, "u0")
	u1 := val(handle(t, lib, 1).GetUtilizationRates()).must(t, "u1")
	if u0 == u1 {
		t.Errorf("both GPUs at %+v", u0)
	}
}

func TestGPMMeansBetweenSamples(t *testing.T) {
	m, clock := clocked(H100)
	lib := mustNew(t, m)
	h := handle(t, lib, 1)
	if s := val(h.GpmQueryDeviceSupport()).must(t, "support"); s.IsSupportedDevice != 1 {
		t.Fatalf("H100 without GPM: %+v", s)
	}
	s1 := val(lib.GpmSampleAlloc()).must(t, "alloc")
	s2 := val(lib.GpmSampleAlloc()).must(t, "alloc")
	mustOK(t, "get", h.GpmSampleGet(s1))
	u1 := val(h.GetUtilizationRates()).must(t, "util").Gpu
	clock.Advance(time.Second)
	mustOK(t, "get", s2.Get(h))
	mg := &gonvml.GpmMetricsGetType{NumMetrics: 3, Sample1: s1, Sample2: s2}
	mg.Metrics[0].MetricId = uint32(gonvml.GPM_METRIC_GRAPHICS_UTIL)
	mg.Metrics[1].MetricId = uint32(gonvml.GPM_METRIC_SM_UTIL)
	mg.Metrics[2].MetricId = uint32(gonvml.GPM_METRIC_FP64_UTIL)
	mustOK(t, "metrics", lib.GpmMetricsGet(mg))
	gr, sm := mg.Metrics[0].Value, mg.Metrics[1].Value
	if math.Abs(gr-float64(u1)) > 1.5 || math.Abs(sm-0.92*gr) > 1e-9 {
		t.Errorf("graphics %.2f%% (utilization %d%%), SM %.2f%%", gr, u1, sm)
	}
	if gonvml.Return(mg.Metrics[2].NvmlReturn) != gonvml.ERROR_NOT_SUPPORTED {
		t.Errorf("FP64 metric: %v", gonvml.Return(mg.Metrics[2].NvmlReturn))
	}
	// Samples from two GPUs do not make a metric.
	mustOK(t, "get", handle(t, lib, 0).GpmSampleGet(s2))
	if ret := lib.GpmMetricsGet(mg); ret != gonvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("mixed samples: %v", ret)
	}
	for _, s := range []gonvml.GpmSample{s1, s2} {
		mustOK(t, "free", s.Free())
	}
	if ret := s1.Free(); ret != gonvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("double free: %v", ret)
	}
	a100 := mustNew(t, twoGPUs(A100))
	if s := val(handle(t, a100, 0).GpmQueryDeviceSupport()).must(t, "support"); s.IsSupportedDevice != 0 {
		t.Errorf("A100 claims GPM: %+v", s)
	}
}

func TestEvents(t *testing.T) {
	m, clock := clocked(B200)
	m.XIDs = []XIDEvent{{At: time.Hour, GPU: 1, XID: 48}}
	m.PeriodicXID = PeriodicXID{Every: 10 * time.Minute, XID: 31}
	lib := mustNew(t, m)
	set := val(lib.EventSetCreate()).must(t, "create")
	for i := range 2 {
		h := handle(t, lib, i)
		types := val(h.GetSupportedEventTypes()).must(t, "types")
		mustOK(t, "register", h.RegisterEvents(types&gonvml.EventTypeXidCriticalError, set))
	}
	wait := func() (gonvml.EventData, gonvml.Return) { return set.Wait(50) }
	if _, ret := wait(); ret != gonvml.ERROR_TIMEOUT {
		t.Fatalf("wait on a quiet machine: %v", ret)
	}
	RaiseXID(lib, 0, 13)
	ev := val(wait()).must(t, "wait")
	if ev.Device != handle(t, lib, 0) || ev.EventData != 13 || ev.EventType != gonvml.EventTypeXidCriticalError {
		t.Errorf("event %+v", ev)
	}
	// Twenty-five minutes: two periodic XIDs, on GPU 0 then GPU 1.
	clock.Advance(25 * time.Minute)
	for i := range 2 {
		ev := val(wait()).must(t, "periodic")
		if ev.Device != handle(t, lib, i) || ev.EventData != 31 {
			t.Errorf("periodic event %d: %+v", i, ev)
		}
	}
	if _, ret := wait(); ret != gonvml.ERROR_TIMEOUT {
		t.Errorf("a third periodic event after 25 minutes: %v", ret)
	}
	// The scheduled XID arrives once the clock passes its time, even while
	// a wait is already in progress.
	got := make(chan gonvml.EventData, 1)
	go func() {
		for {
			ev, ret := set.Wait(2000)
			if ret == gonvml.SUCCESS && ev.EventData == 48 {
				got <- ev
				return
			}
		}
	}()
	time.Sleep(30 * time.Millisecond)
	clock.Advance(35 * time.Minute)
	select {
	case ev := <-got:
		if ev.Device != handle(t, lib, 1) {
			t.Errorf("scheduled XID on %v", ev.Device)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("scheduled XID never arrived")
	}
	// A GPU falling off the bus raises XID 79.
	SetLost(lib, 1)
	for {
		ev := val(wait()).must(t, "lost")
		if ev.EventData == XIDFallenOffBus {
			break
		}
	}
	mustOK(t, "free", set.Free())
	if _, ret := set.Wait(0); ret != gonvml.ERROR_UNINITIALIZED {
		t.Errorf("wait on a freed set: %v", ret)
	}
}

// A registration that fails with UNKNOWN leaves its set undefined (nvml.h):
// it delivers nothing and fails until freed; so does FailEventSets. A new
// set works.
func TestBrokenEventSets(t *testing.T) {
	lib := mustNew(t, twoGPUs(H100))
	set := val(lib.EventSetCreate()).must(t, "create")
	mustOK(t, "register 0", handle(t, lib, 0).RegisterEvents(gonvml.EventTypeXidCriticalError, set))
	SetReturn(lib, 1, "nvmlDeviceRegisterEvents", gonvml.ERROR_UNKNOWN)
	if ret := handle(t, lib, 1).RegisterEvents(gonvml.EventTypeXidCriticalError, set); ret != gonvml.ERROR_UNKNOWN {
		t.Fatalf("register 1: %v", ret)
	}
	RaiseXID(lib, 0, 13)
	if _, ret := set.Wait(50); ret != gonvml.ERROR_UNKNOWN {
		t.Errorf("wait on a set left undefined: %v", ret)
	}
	SetReturn(lib, 1, "nvmlDeviceRegisterEvents", gonvml.SUCCESS)
	if ret := handle(t, lib, 1).RegisterEvents(gonvml.EventTypeXidCriticalError, set); ret != gonvml.ERROR_UNKNOWN {
		t.Errorf("register on a set left undefined: %v", ret)
	}
	mustOK(t, "free", set.Free())

	set = val(lib.EventSetCreate()).must(t, "create again")
	for i := range 2 {
		mustOK(t, "register", handle(t, lib, i).RegisterEvents(gonvml.EventTypeXidCriticalError, set))
	}
	RaiseXID(lib, 1, 31)
	if ev := val(set.Wait(50)).must(t, "wait on the new set"); ev.EventData != 31 {
		t.Errorf("event %+v", ev)
	}
	FailEventSets(lib)
	RaiseXID(lib, 1, 31)
	if _, ret := set.Wait(50); ret != gonvml.ERROR_UNKNOWN {
		t.Errorf("wait after FailEventSets: %v", ret)
	}
	mustOK(t, "free the failed set", set.Free())
	set = val(lib.EventSetCreate()).must(t, "create after the fault")
	mustOK(t, "register after the fault", handle(t, lib, 0).RegisterEvents(gonvml.EventTypeXidCriticalError, set))
	if _, ret := set.Wait(10); ret != gonvml.ERROR_TIMEOUT {
		t.Errorf("wait on a set made after the fault: %v", ret)
	}
}

func TestInjectedFaults(t *testing.T) {
	m, clock := clocked(H100)
	lib := mustNew(t, m)
	h := handle(t, lib, 0)

	SetFieldReturn(lib, 0, gonvml.FI_DEV_PCIE_COUNT_TX_BYTES, gonvml.ERROR_NOT_SUPPORTED)
	fv := []gonvml.FieldValue{{FieldId: gonvml.FI_DEV_PCIE_COUNT_TX_BYTES}, {FieldId: gonvml.FI_DEV_PCIE_COUNT_RX_BYTES}, {FieldId: 9999}}
	mustOK(t, "fields", h.GetFieldValues(fv))
	if gonvml.Return(fv[0].NvmlReturn) != gonvml.ERROR_NOT_SUPPORTED || gonvml.Return(fv[1].NvmlReturn) != gonvml.SUCCESS ||
		gonvml.Return(fv[2].NvmlReturn) != gonvml.ERROR_NOT_SUPPORTED {
		t.Errorf("field returns %d %d %d", fv[0].NvmlReturn, fv[1].NvmlReturn, fv[2].NvmlReturn)
	}

	before := field(t, h, gonvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX, 4)
	SetNVLinkDown(lib, 0, 4, true)
	clock.Advance(time.Minute)
	if st, _ := h.GetNvLinkState(4); st != gonvml.FEATURE_DISABLED {
		t.Errorf("link 4 state %v after SetNVLinkDown", st)
	}
	if after := field(t, h, gonvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX, 4); after != before {
		t.Errorf("a down link's counter moved: %d -> %d", before, after)
	}
	if field(t, h, gonvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX, 5) == 0 {
		t.Error("link 5 has no traffic")
	}

	AddECCErrors(lib, 0, 3, 2)
	if v := val(h.GetTotalEccErrors(gonvml.MEMORY_ERROR_TYPE_UNCORRECTED, gonvml.AGGREGATE_ECC)).must(t, "ecc"); v != 2 {
		t.Errorf("uncorrected = %d, want 2", v)
	}
	SetRowRemap(lib, 0, 1, true, false)
	if c, u, p, f, ret := h.GetRemappedRows(); ret != gonvml.SUCCESS || c != 0 || u != 1 || !p || f {
		t.Errorf("remapped rows %d %d %v %v %v", c, u, p, f, ret)
	}

	SetDelay(lib, 0, "nvmlDeviceGetPowerUsage", 100*time.Millisecond)
	start := time.Now()
	val(h.GetPowerUsage()).must(t, "power")
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("delayed call took %s", d)
	}
	// The delay holds no lock: GPU 1 answers meanwhile.
	done := make(chan struct{})
	go func() { h.GetPowerUsage(); close(done) }()
	time.Sleep(10 * time.Millisecond)
	start = time.Now()
	val(handle(t, lib, 1).GetPowerUsage()).must(t, "power 1")
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("GPU 1 waited %s for GPU 0's hung call", d)
	}
	<-done
	SetDelay(lib, 0, "nvmlDeviceGetPowerUsage", 0)

	SetReturn(lib, 0, "nvmlDeviceGetUtilizationRates", gonvml.ERROR_TIMEOUT)
	if _, ret := h.GetUtilizationRates(); ret != gonvml.ERROR_TIMEOUT {
		t.Errorf("utilization with a timeout fault: %v", ret)
	}
	if n := Calls(lib, "nvmlDeviceGetUtilizationRates"); n != 1 {
		t.Errorf("%d utilization calls counted, want 1", n)
	}
}

// go-nvml's generated mocks keep every call's arguments forever; the fake
// answers without them, so a simulated agent's memory stays flat however
// long it runs. The test makes a million calls, with arguments, and
// checks the heap did not grow by more than a few hundred KiB (recording
// them would take over 30 MB).
func TestCallsDoNotAccumulate(t *testing.T) {
	lib := mustNew(t, twoGPUs(H100))
	h := handle(t, lib, 0)
	fv := make([]gonvml.FieldValue, 8)
	round := func() {
		for link := range 18 {
			h.GetNvLinkState(link)
		}
		h.GetClockInfo(gonvml.CLOCK_SM)
		h.GetTotalEccErrors(gonvml.MEMORY_ERROR_TYPE_CORRECTED, gonvml.VOLATILE_ECC)
		h.GetFieldValues(fv)
		lib.DeviceGetHandleByIndex(1)
		lib.Extensions().LookupSymbol("nvmlDeviceGetFieldValues")
	}
	round()
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	const rounds = 1_000_000 / 23
	for range rounds {
		round()
	}
	grown := int64(heap()) - int64(before)
	runtime.KeepAlive(lib) // what it holds is what is measured
	if grown > 512<<10 {
		t.Errorf("heap grew by %d KiB over a million calls", grown>>10)
	}
}

func TestResetRestartsCounters(t *testing.T) {
	m, clock := clocked(H100)
	lib := mustNew(t, m)
	h := handle(t, lib, 0)
	clock.Advance(time.Hour)
	before := val(h.GetTotalEnergyConsumption()).must(t, "energy")
	AddECCErrors(lib, 0, 0, 2)
	ResetGPU(lib, 0)
	if e := val(h.GetTotalEnergyConsumption()).must(t, "energy"); e != 0 {
		t.Errorf("energy right after a reset = %d", e)
	}
	clock.Advance(10 * time.Second)
	e := val(h.GetTotalEnergyConsumption()).must(t, "energy")
	if e == 0 || e > before || e > 10*700_000 {
		t.Errorf("energy 10 s after a reset = %d mJ", e)
	}
	if tx := field(t, h, gonvml.FI_DEV_PCIE_COUNT_TX_BYTES, 0); tx > 10*8e9 {
		t.Errorf("PCIe bytes after a reset = %d", tx)
	}
	agg := val(h.GetTotalEccErrors(gonvml.MEMORY_ERROR_TYPE_CORRECTED, gonvml.AGGREGATE_ECC)).must(t, "ecc")
	vol := val(h.GetTotalEccErrors(gonvml.MEMORY_ERROR_TYPE_CORRECTED, gonvml.VOLATILE_ECC)).must(t, "ecc")
	if vol != 0 || agg == 0 {
		t.Errorf("after a reset: volatile %d, aggregate %d", vol, agg)
	}
	// Uncorrectable errors from before the reset stay in the aggregate
	// count only; new ones count in both.
	AddECCErrors(lib, 0, 0, 1)
	uagg := val(h.GetTotalEccErrors(gonvml.MEMORY_ERROR_TYPE_UNCORRECTED, gonvml.AGGREGATE_ECC)).must(t, "ecc")
	uvol := val(h.GetTotalEccErrors(gonvml.MEMORY_ERROR_TYPE_UNCORRECTED, gonvml.VOLATILE_ECC)).must(t, "ecc")
	if uvol != 1 || uagg != 3 {
		t.Errorf("uncorrected after a reset and one more error: volatile %d, aggregate %d; want 1 and 3", uvol, uagg)
	}
	if other := val(handle(t, lib, 1).GetTotalEnergyConsumption()).must(t, "energy"); other < before/2 {
		t.Errorf("GPU 1 was reset too: %d", other)
	}
}
