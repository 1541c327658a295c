package nvml

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
)

// Functions the sampler gates with LookupSymbol: each is newer than some
// driver still in service (energy r390, field values r384, row remapping
// r460, clock event reasons r535, GPM r520).
const (
	symFieldValues       = "nvmlDeviceGetFieldValues"
	symEnergy            = "nvmlDeviceGetTotalEnergyConsumption"
	symRemappedRows      = "nvmlDeviceGetRemappedRows"
	symClockEventReasons = "nvmlDeviceGetCurrentClocksEventReasons"
	symThrottleReasons   = "nvmlDeviceGetCurrentClocksThrottleReasons"
	// The supported reasons: r535's name, then the older one.
	symSupportedClockEvents = "nvmlDeviceGetSupportedClocksEventReasons"
	symSupportedThrottle    = "nvmlDeviceGetSupportedClocksThrottleReasons"
	symReplayCounter        = "nvmlDeviceGetPcieReplayCounter"
	symMinorNumber          = "nvmlDeviceGetMinorNumber"
	symTemperature          = "nvmlDeviceGetTemperature"
	symTemperatureV         = "nvmlDeviceGetTemperatureV" // r555 (NVML 12.5)
	symPCIeThroughput       = "nvmlDeviceGetPcieThroughput"
)

// gpmSymbols must all be present before GPM is used.
var gpmSymbols = []string{"nvmlGpmQueryDeviceSupport", "nvmlGpmSampleAlloc", "nvmlGpmSampleFree",
	"nvmlGpmSampleGet", "nvmlGpmMetricsGet"}

// gpuState is what the sampler keeps per GPU index between rounds.
type gpuState struct {
	// busy holds a token while a read of this GPU is in flight: a GPU
	// whose calls hang is reported as timed out and not read again until
	// its last read returns, so hung calls never pile up.
	busy chan struct{}

	// idMu guards identity: a timed-out read may still be writing it
	// while the caller reports the GPU down under its name.
	idMu     sync.Mutex
	identity gpu.Sample // Index, UUID, PCIBusID, Product, DeviceNode

	// Written only by the goroutine holding busy.
	known bool                      // identity has been read once
	links []int                     // NVLink numbers the GPU has; nil until enumerated
	arch  gonvml.DeviceArchitecture // read with the links; picks the NVLink error fields
	// clockReasons is the supported clock event reason mask, once known.
	clockReasons      uint64
	clockReasonsKnown bool
	gpm               gpmState
	migGPM            migGPM
	// pcieWide is set once a PCIe byte counter read 2^32 or more: the
	// counters are wider than the driver's 32-bit ones (fields).
	pcieWide bool
	// migMode is whether the last round found the GPU in MIG mode.
	migMode bool
	// procSeen is the newest process utilization sample's timestamp.
	procSeen uint64
	// generation is the NVML Init the cached state belongs to.
	generation uint64
	// notVisible is set while this process may not open the GPU (its
	// handle answers NO_PERMISSION): it is left out of the samples.
	notVisible atomic.Bool
}

// Sample reads every GPU NVML counts, plus any GPU that answered before and
// no longer does. Each GPU is read on its own goroutine; one whose read has
// not returned when ctx is done is reported down ("timed out") while the
// others are reported normally.
func (b *Backend) Sample(ctx context.Context) ([]gpu.Sample, error) {
	release, err := b.acquire()
	if err != nil {
		return nil, err
	}
	n, ret := b.lib.DeviceGetCount()
	release()
	if ret != gonvml.SUCCESS {
		return nil, fmt.Errorf("nvmlDeviceGetCount: %w", ret)
	}

	b.sampleMu.Lock()
	if b.gpus == nil {
		b.gpus = map[int]*gpuState{}
	}
	for i := range n {
		if b.gpus[i] == nil {
			b.gpus[i] = &gpuState{busy: make(chan struct{}, 1), identity: gpu.Sample{Index: i}}
		}
	}
	indices := make([]int, 0, len(b.gpus))
	for i := range b.gpus {
		indices = append(indices, i)
	}
	states := make([]*gpuState, 0, len(b.gpus))
	slices.Sort(indices)
	for _, i := range indices {
		states = append(states, b.gpus[i])
	}
	b.sampleMu.Unlock()

	reads := make([]gpu.DeviceRead, len(states))
	for k, st := range states {
		reads[k] = gpu.DeviceRead{Busy: st.busy,
			Read: func() gpu.Sample { return b.sampleGPU(st) },
			Down: func(why string) gpu.Sample { return st.down(b.now(), why) }}
	}
	out := gpu.SampleEach(ctx, reads)
	visible := out[:0]
	for k, s := range out {
		if !states[k].notVisible.Load() {
			visible = append(visible, s)
		}
	}
	return visible, joinSampleErrors(visible)
}

func joinSampleErrors(samples []gpu.Sample) error {
	var errs []error
	for _, s := range samples {
		for _, e := range s.Errors {
			errs = append(errs, fmt.Errorf("gpu %d: %s", s.Index, e))
		}
	}
	return errors.Join(errs...)
}

// down is a sample of a GPU that did not answer, named as it was last seen.
// It reads only the identity, which the reading goroutine writes before it
// starts and never while another read is pending (see Sample).
func (st *gpuState) down(now time.Time, why string) gpu.Sample {
	st.idMu.Lock()
	s := st.identity
	st.idMu.Unlock()
	s.Time, s.Up, s.Errors = now, false, []string{why}
	return s
}

// sampleReader collects one GPU's readings and the calls that failed.
type sampleReader struct {
	b  *Backend
	h  gonvml.Device
	st *gpuState
	s  gpu.Sample
	// answered counts calls that got an answer (a value or NOT_SUPPORTED).
	answered int
	lost     bool
}

// ok reports whether ret carries a value; like deviceReader.ok it records
// every failure except NOT_SUPPORTED and notes a lost GPU.
func (r *sampleReader) ok(fn string, ret gonvml.Return) bool {
	switch ret {
	case gonvml.SUCCESS:
		r.answered++
		return true
	case gonvml.ERROR_NOT_SUPPORTED:
		r.answered++
		return false
	case gonvml.ERROR_GPU_IS_LOST:
		r.lost = true
	}
	r.s.Errors = append(r.s.Errors, fmt.Sprintf("%s: %v", fn, ret))
	return false
}

// read calls f unless the GPU is already lost and reports whether it answered.
func read[T any](r *sampleReader, fn string, f func() (T, gonvml.Return)) (T, bool) {
	var v T
	if r.lost {
		return v, false
	}
	v, ret := f()
	return v, r.ok(fn, ret)
}

// sampleGPU reads one GPU. It runs holding st.busy.
func (b *Backend) sampleGPU(st *gpuState) gpu.Sample {
	release, err := b.acquire()
	if err != nil {
		return st.down(b.now(), err.Error())
	}
	defer release()
	r := &sampleReader{b: b, st: st}
	if st.generation != b.generation {
		// A new Init: GPM samples of the old one are gone with it.
		st.gpm, st.migGPM = gpmState{}, nil
		st.generation = b.generation
	}
	h, ret := b.lib.DeviceGetHandleByIndex(st.identity.Index)
	// A GPU this process may not open is another workload's, not down:
	// Sample leaves it out (Inventory reports it as not visible).
	st.notVisible.Store(ret == gonvml.ERROR_NO_PERMISSION)
	if ret != gonvml.SUCCESS {
		s := st.down(b.now(), fmt.Sprintf("nvmlDeviceGetHandleByIndex: %v", ret))
		s.Lost = ret == gonvml.ERROR_GPU_IS_LOST
		return s
	}
	r.h = h
	if !st.known {
		r.identify()
		if r.lost {
			s := st.down(b.now(), r.s.Errors[0])
			s.Lost = true
			return s
		}
	}
	st.idMu.Lock()
	r.s = st.identity
	st.idMu.Unlock()
	r.s.Time = b.now()
	// nvlinkStates learns which links exist, which fields needs; mig
	// finds the instances processes places processes on.
	for _, f := range []func(){r.utilization, r.memory, r.power, r.thermal, r.clocks, r.clockEvents,
		r.nvlinkStates, r.fields, r.pcie, r.ecc, r.remapped, r.profiling, r.mig, r.processes} {
		if r.lost {
			break
		}
		f()
	}
	r.s.Up = !r.lost && r.answered > 0
	r.s.Lost = r.lost
	if !r.s.Up {
		// A GPU that answers nothing exports nothing but its identity.
		s := st.down(r.s.Time, "")
		s.Lost, s.Errors = r.lost, r.s.Errors
		return s
	}
	return r.s
}

// identify reads the identity once per GPU; it does not change while the
// agent runs (a GPU swap means a reboot).
func (r *sampleReader) identify() {
	r.st.idMu.Lock()
	id := r.st.identity
	defer func() {
		r.st.identity = id
		r.st.idMu.Unlock()
	}()
	var errs []string
	note := func(fn string, ret gonvml.Return) bool {
		if ret == gonvml.ERROR_GPU_IS_LOST {
			r.lost = true
		}
		if ret != gonvml.SUCCESS && ret != gonvml.ERROR_NOT_SUPPORTED {
			errs = append(errs, fmt.Sprintf("%s: %v", fn, ret))
		}
		return ret == gonvml.SUCCESS
	}
	uuid, ret := r.h.GetUUID()
	if !note("nvmlDeviceGetUUID", ret) {
		r.s.Errors = append(r.s.Errors, errs...)
		return // without a UUID the GPU cannot be named: try again next round
	}
	id.UUID = uuid
	if name, ret := r.h.GetName(); note("nvmlDeviceGetName", ret) {
		id.Product = name
	}
	if info, ret := r.h.GetPciInfo(); note("nvmlDeviceGetPciInfo", ret) {
		if bus := cString(info.BusId[:]); bus != "" {
			id.PCIBusID = gpu.NormalizePCIBusID(bus)
		}
	}
	if r.b.has(symMinorNumber) {
		if minor, ret := r.h.GetMinorNumber(); note(symMinorNumber, ret) && minor >= 0 {
			id.DeviceNode = fmt.Sprintf("nvidia%d", minor)
		}
	}
	r.st.known = !r.lost
	r.s.Errors = append(r.s.Errors, errs...)
}

func (r *sampleReader) utilization() {
	if u, ok := read(r, "nvmlDeviceGetUtilizationRates", r.h.GetUtilizationRates); ok {
		r.s.Utilization = ptr(percent(u.Gpu))
		r.s.MemoryUtilization = ptr(percent(u.Memory))
	}
}

// percent turns NVML's 0-100 into a ratio, clamping nonsense.
func percent(v uint32) float64 { return float64(min(v, 100)) / 100 }

// symMemoryInfoV2 arrived with driver R510; DCGM reads it from there on.
const symMemoryInfoV2 = "nvmlDeviceGetMemoryInfo_v2"

// memory reads the v2 call where the driver has it: the v1 call counts the
// memory the driver reserves as used (nvml.h, nvmlMemory_t.used: "Sum of
// Reserved and Allocated"), so a GPU with nothing running would read
// hundreds of MiB used; v2 reports reserved apart, as nvidia-smi and DCGM
// show it.
func (r *sampleReader) memory() {
	if r.b.has(symMemoryInfoV2) && !r.lost {
		m, ret := r.h.GetMemoryInfo_v2()
		switch ret {
		case gonvml.SUCCESS:
			r.answered++
			r.s.MemoryTotalBytes, r.s.MemoryUsedBytes, r.s.MemoryFreeBytes = ptr(m.Total), ptr(m.Used), ptr(m.Free)
			r.s.MemoryReservedBytes = ptr(m.Reserved)
			return
		case gonvml.ERROR_GPU_IS_LOST:
			r.ok(symMemoryInfoV2, ret)
			return
		}
		// Anything else (a struct version the driver refuses, a GPU
		// without the v2 answer): the v1 call below.
	}
	if m, ok := read(r, "nvmlDeviceGetMemoryInfo", r.h.GetMemoryInfo); ok {
		r.s.MemoryTotalBytes, r.s.MemoryUsedBytes, r.s.MemoryFreeBytes = ptr(m.Total), ptr(m.Used), ptr(m.Free)
	}
}

func (r *sampleReader) power() {
	if mw, ok := read(r, "nvmlDeviceGetPowerUsage", r.h.GetPowerUsage); ok {
		r.s.PowerWatts = ptr(float64(mw) / 1000)
	}
	if mw, ok := read(r, "nvmlDeviceGetEnforcedPowerLimit", r.h.GetEnforcedPowerLimit); ok {
		r.s.PowerLimitWatts = ptr(float64(mw) / 1000)
	}
	if r.b.has(symEnergy) {
		if mj, ok := read(r, symEnergy, r.h.GetTotalEnergyConsumption); ok {
			r.s.EnergyMillijoules = ptr(mj)
		}
	}
}

// thermal reads the GPU sensor with nvmlDeviceGetTemperatureV where the
// driver has it: nvmlDeviceGetTemperature is deprecated (nvml.h) and, like
// any symbol, may be gone from a newer library.
func (r *sampleReader) thermal() {
	var (
		c  float64
		ok bool
	)
	switch {
	case r.b.has(symTemperatureV):
		var v gonvml.Temperature
		v, ok = read(r, symTemperatureV, func() (gonvml.Temperature, gonvml.Return) { return temperatureV1(r.h) })
		c = float64(v.Temperature)
	case r.b.has(symTemperature):
		var v uint32
		v, ok = read(r, symTemperature, func() (uint32, gonvml.Return) { return r.h.GetTemperature(gonvml.TEMPERATURE_GPU) })
		c = float64(v)
	}
	if ok {
		r.s.Temperatures = append(r.s.Temperatures, gpu.Temperature{Sensor: gpu.SensorGPU, Celsius: c})
	}
	// The memory sensor comes with the field values (fields).
}

// temperatureV1 calls nvmlDeviceGetTemperatureV for the GPU sensor (the
// version 1 struct's zero sensor type). go-nvml returns a handler bound to
// its own device type, which a fake cannot build; a device that has
// TemperatureV1 (nvmlfake's) answers it directly.
func temperatureV1(h gonvml.Device) (gonvml.Temperature, gonvml.Return) {
	if d, ok := h.(interface {
		TemperatureV1() (gonvml.Temperature, gonvml.Return)
	}); ok {
		return d.TemperatureV1()
	}
	return h.GetTemperatureV().V1()
}

// clockTypes are read in this order, which is also the output order.
var clockTypes = []struct {
	name string
	t    gonvml.ClockType
}{
	{gpu.ClockGraphics, gonvml.CLOCK_GRAPHICS},
	{gpu.ClockMemory, gonvml.CLOCK_MEM},
	{gpu.ClockSM, gonvml.CLOCK_SM},
	{gpu.ClockVideo, gonvml.CLOCK_VIDEO},
}

func (r *sampleReader) clocks() {
	for _, c := range clockTypes {
		f := func() (uint32, gonvml.Return) { return r.h.GetClockInfo(c.t) }
		if mhz, ok := read(r, "nvmlDeviceGetClockInfo("+c.name+")", f); ok {
			r.s.Clocks = append(r.s.Clocks, gpu.Clock{Clock: c.name, Hertz: float64(mhz) * 1e6})
		}
	}
}

// clockEventReasons are NVML's nvmlClocksEventReason bits, sorted by name.
var clockEventReasons = []struct {
	name string
	bit  uint64
}{
	{"applications_clocks_setting", gonvml.ClocksEventReasonApplicationsClocksSetting},
	{"board_limit", gonvml.ClocksEventReasonBoardLimit},
	{"display_clock_setting", gonvml.ClocksEventReasonDisplayClockSetting},
	{"gpu_idle", gonvml.ClocksEventReasonGpuIdle},
	{"hw_power_brake_slowdown", gonvml.ClocksThrottleReasonHwPowerBrakeSlowdown},
	{"hw_slowdown", gonvml.ClocksThrottleReasonHwSlowdown},
	{"hw_thermal_slowdown", gonvml.ClocksThrottleReasonHwThermalSlowdown},
	{"reliability", gonvml.ClocksEventReasonReliability},
	{"sw_power_cap", gonvml.ClocksEventReasonSwPowerCap},
	{"sw_thermal_slowdown", gonvml.ClocksEventReasonSwThermalSlowdown},
	{"sync_boost", gonvml.ClocksEventReasonSyncBoost},
}

// clockEvents uses the r535 name of the call where the driver has it and
// the older "throttle reasons" one (same bits) otherwise. Only the reasons
// the GPU supports are reported: an unsupported one is never set, and
// reporting it as inactive would claim it was checked.
func (r *sampleReader) clockEvents() {
	var (
		mask uint64
		ok   bool
	)
	switch {
	case r.b.has(symClockEventReasons):
		mask, ok = read(r, symClockEventReasons, r.h.GetCurrentClocksEventReasons)
	case r.b.has(symThrottleReasons):
		mask, ok = read(r, symThrottleReasons, r.h.GetCurrentClocksThrottleReasons)
	}
	if !ok {
		return
	}
	supported := r.supportedClockReasons()
	r.s.ClockEventReasons = []gpu.ClockEventReason{}
	for _, c := range clockEventReasons {
		if supported&c.bit != 0 {
			r.s.ClockEventReasons = append(r.s.ClockEventReasons, gpu.ClockEventReason{Reason: c.name, Active: mask&c.bit != 0})
		}
	}
}

// supportedClockReasons asks the GPU once which reasons it supports; all
// bits where it cannot say (an older driver, NOT_SUPPORTED), and again
// next round after another failure.
func (r *sampleReader) supportedClockReasons() uint64 {
	st := r.st
	if st.clockReasonsKnown {
		return st.clockReasons
	}
	st.clockReasons = ^uint64(0)
	var (
		mask uint64
		ret  = gonvml.ERROR_NOT_SUPPORTED
	)
	switch {
	case r.b.has(symSupportedClockEvents):
		mask, ret = r.h.GetSupportedClocksEventReasons()
	case r.b.has(symSupportedThrottle):
		mask, ret = r.h.GetSupportedClocksThrottleReasons()
	}
	switch ret {
	case gonvml.SUCCESS:
		st.clockReasons, st.clockReasonsKnown = mask, true
	case gonvml.ERROR_NOT_SUPPORTED:
		st.clockReasonsKnown = true
	default:
		r.ok(symSupportedClockEvents, ret)
	}
	return st.clockReasons
}

func (r *sampleReader) pcie() {
	p := r.s.PCIe
	if p == nil {
		p = &gpu.PCIeSample{}
	}
	answered := p.TransmitBytes != nil || p.ReceiveBytes != nil
	if r.b.has(symReplayCounter) {
		if v, ok := read(r, symReplayCounter, r.h.GetPcieReplayCounter); ok && v >= 0 {
			// The C API's unsigned int arrives as a Go int.
			p.ReplayErrors, p.ReplayCounterBits, answered = ptr(uint64(uint32(v))), 32, true
		}
	}
	r.pcieThroughput(p, &answered)
	if v, ok := read(r, "nvmlDeviceGetCurrPcieLinkGeneration", r.h.GetCurrPcieLinkGeneration); ok {
		p.LinkGeneration, answered = ptr(v), true
	}
	if v, ok := read(r, "nvmlDeviceGetCurrPcieLinkWidth", r.h.GetCurrPcieLinkWidth); ok {
		p.LinkWidth, answered = ptr(v), true
	}
	if answered {
		r.s.PCIe = p
	}
}

// pcieThroughput reads the PCIe rate (KB/s, taken as KiB/s, over NVML's
// 20 ms window) for each direction without a usable byte counter (see
// pcieCountersUsable).
func (r *sampleReader) pcieThroughput(p *gpu.PCIeSample, answered *bool) {
	if !r.b.has(symPCIeThroughput) {
		return
	}
	for _, d := range []struct {
		counter gonvml.PcieUtilCounter
		bytes   *uint64
		rate    **float64
	}{{gonvml.PCIE_UTIL_TX_BYTES, p.TransmitBytes, &p.TransmitBytesPerSecond},
		{gonvml.PCIE_UTIL_RX_BYTES, p.ReceiveBytes, &p.ReceiveBytesPerSecond}} {
		if d.bytes != nil {
			continue
		}
		f := func() (uint32, gonvml.Return) { return r.h.GetPcieThroughput(d.counter) }
		if kb, ok := read(r, symPCIeThroughput, f); ok {
			*d.rate, *answered = ptr(float64(kb)*1024), true
		}
	}
}

// nvlinkStates reads the state of each link the GPU has; the first round
// asks every possible link number to learn which exist (see
// deviceReader.nvlink). Traffic and error counters come from fields.
func (r *sampleReader) nvlinkStates() {
	if r.st.links == nil {
		links := []int{}
		for link := 0; link < gonvml.NVLINK_MAX_LINKS && !r.lost; link++ {
			_, ret := r.h.GetNvLinkState(link)
			switch ret {
			case gonvml.SUCCESS:
				links = append(links, link)
			case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_INVALID_ARGUMENT:
			default:
				// NO_PERMISSION, UNKNOWN, a lost GPU: whether the link
				// exists is not known, so nothing is cached; ask again
				// next round.
				r.ok(fmt.Sprintf("nvmlDeviceGetNvLinkState(link %d)", link), ret)
				return
			}
		}
		r.st.links = links
		r.st.arch = gonvml.DEVICE_ARCH_UNKNOWN
		if len(links) > 0 && r.b.has(symArchitecture) {
			if a, ok := read(r, symArchitecture, r.h.GetArchitecture); ok {
				r.st.arch = a
			}
		}
	}
	if len(r.st.links) == 0 {
		return
	}
	ic := r.s.Interconnect
	if ic == nil {
		ic = &gpu.InterconnectSample{Kind: gpu.NVLink}
		r.s.Interconnect = ic
	}
	byNumber := map[int]int{}
	for i, l := range ic.Links {
		byNumber[l.Number] = i
	}
	for _, link := range r.st.links {
		state := func() (gonvml.EnableState, gonvml.Return) { return r.h.GetNvLinkState(link) }
		st, ok := read(r, fmt.Sprintf("nvmlDeviceGetNvLinkState(link %d)", link), state)
		i, seen := byNumber[link]
		if !seen {
			ic.Links = append(ic.Links, gpu.Link{Number: link})
			i = len(ic.Links) - 1
		}
		ic.Links[i].Up = ok && st == gonvml.FEATURE_ENABLED
	}
	slices.SortFunc(ic.Links, func(a, b gpu.Link) int { return a.Number - b.Number })
}

// eccCounters are read in this order, the output order.
var eccCounters = []struct {
	typ, scope string
	et         gonvml.MemoryErrorType
	ct         gonvml.EccCounterType
}{
	{gpu.ECCCorrected, gpu.ECCAggregate, gonvml.MEMORY_ERROR_TYPE_CORRECTED, gonvml.AGGREGATE_ECC},
	{gpu.ECCCorrected, gpu.ECCVolatile, gonvml.MEMORY_ERROR_TYPE_CORRECTED, gonvml.VOLATILE_ECC},
	{gpu.ECCUncorrected, gpu.ECCAggregate, gonvml.MEMORY_ERROR_TYPE_UNCORRECTED, gonvml.AGGREGATE_ECC},
	{gpu.ECCUncorrected, gpu.ECCVolatile, gonvml.MEMORY_ERROR_TYPE_UNCORRECTED, gonvml.VOLATILE_ECC},
}

// ecc reads the memory error counters; a GPU with ECC off answers
// NOT_SUPPORTED and has none.
func (r *sampleReader) ecc() {
	for _, c := range eccCounters {
		f := func() (uint64, gonvml.Return) { return r.h.GetTotalEccErrors(c.et, c.ct) }
		if v, ok := read(r, fmt.Sprintf("nvmlDeviceGetTotalEccErrors(%s, %s)", c.typ, c.scope), f); ok {
			r.s.ECC = append(r.s.ECC, gpu.ECCCount{Type: c.typ, Scope: c.scope, Count: v})
		}
	}
}

func (r *sampleReader) remapped() {
	if !r.b.has(symRemappedRows) {
		return
	}
	if v, ok := read(r, symRemappedRows, remappedRows(r.h)); ok {
		r.s.RemappedRows = v
	}
}

func ptr[T any](v T) *T { return &v }
