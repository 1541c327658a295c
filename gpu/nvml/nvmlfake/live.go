package nvmlfake

import (
	"encoding/binary"
	"math"
	"strconv"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// The live readings are functions of the machine's clock, so a test with a
// fixed clock reads exact values and a simulated node reads values that
// move. Each GPU runs a load curve
//
//	a(t) = 0.5 + 0.4 sin(2πt/period + phase)   (between 0.1 and 0.9)
//
// from which utilization, memory, power, temperature and clocks follow;
// the counters (energy, PCIe and NVLink bytes) grow by a rate proportional
// to a(t), so they are the exact integrals of what the gauges show:
// rate(energy) over an interval equals the mean power over it.
const (
	loadPeriod = 300 * time.Second
	loadMean   = 0.5
	loadSwing  = 0.4
)

var omega = 2 * math.Pi / loadPeriod.Seconds()

// load is a(t) for this GPU at t seconds.
func (d *device) load(t float64) float64 { return loadMean + loadSwing*math.Sin(omega*t+d.phase) }

// loadIntegral is the integral of a over [0, t].
func (d *device) loadIntegral(t float64) float64 {
	return loadMean*t + loadSwing/omega*(math.Cos(d.phase)-math.Cos(omega*t+d.phase))
}

// Scales of the quantities that follow the load.
const (
	idlePowerShare = 0.12   // of the power limit, drawn at zero load
	pcieTxBps      = 8e9    // PCIe bytes/s at full load, GPU to host
	pcieRxBps      = 12e9   // host to GPU
	baseTempC      = 32.0   // at zero load
	tempRiseC      = 40.0   // at full load
	memTempOffsetC = 6.0    // HBM runs warmer than the die sensor
	idleSMMHz      = 345    // clocks parked when idle
	uptimeSeconds  = 864000 // counters start where ten days of service left them
)

// offset is a per-GPU starting point for a counter, from its identity.
func (d *device) offset(kind string, span uint64) uint64 {
	h := digest(kind, d.UUID, d.index)
	return binary.BigEndian.Uint64(h[:8]) % span
}

// GetUtilizationRates is NOT_SUPPORTED on a GPU in MIG mode, as on real
// ones: its activity is per instance (GPM).
func (d *device) GetUtilizationRates() (gonvml.Utilization, gonvml.Return) {
	if d.migEnabled() {
		if ret := d.f.enter("nvmlDeviceGetUtilizationRates", d); ret != gonvml.SUCCESS {
			return gonvml.Utilization{}, ret
		}
		return gonvml.Utilization{}, gonvml.ERROR_NOT_SUPPORTED
	}
	return answer(d.f, "nvmlDeviceGetUtilizationRates", d, func() gonvml.Utilization {
		a := d.load(d.f.now())
		return gonvml.Utilization{Gpu: uint32(math.Round(100 * a)), Memory: uint32(math.Round(70 * a))}
	})
}

// fbReservedBytes is the memory the driver and firmware set aside on every
// GPU: several hundred MiB, the order nvidia-smi -q shows as "Reserved"
// (the exact figure varies by GPU and driver).
const fbReservedBytes = 512 << 20

// memory is the GPU's memory now as nvmlDeviceGetMemoryInfo_v2 reports it.
func (d *device) memory() gonvml.Memory_v2 {
	total := d.MemoryInfo.Total
	used := uint64(float64(total)*(0.15+0.7*d.load(d.f.now()))) &^ (1<<20 - 1) // whole MiB
	return gonvml.Memory_v2{Version: 2, Total: total, Reserved: fbReservedBytes, Used: used - fbReservedBytes, Free: total - used}
}

// GetMemoryInfo is the v1 call, whose used memory includes the reserved
// memory (nvml.h, nvmlMemory_t: "Sum of Reserved and Allocated device
// memory").
func (d *device) GetMemoryInfo() (gonvml.Memory, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetMemoryInfo", d, func() gonvml.Memory {
		m := d.memory()
		return gonvml.Memory{Total: m.Total, Used: m.Used + m.Reserved, Free: m.Free}
	})
}

// GetMemoryInfo_v2 reports the reserved memory apart from the allocated
// (nvmlMemory_v2_t: used is "Allocated device memory").
func (d *device) GetMemoryInfo_v2() (gonvml.Memory_v2, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetMemoryInfo_v2", d, d.memory)
}

// powerWatts is the draw at load a.
func (d *device) powerWatts(a float64) float64 {
	limit := float64(d.f.spec.powerMW) / 1000
	idle := idlePowerShare * limit
	return idle + (0.9*limit-idle)*a
}

func (d *device) GetPowerUsage() (uint32, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetPowerUsage", d, func() uint32 {
		return uint32(math.Round(1000 * d.powerWatts(d.load(d.f.now()))))
	})
}

// energyMillijoules is the integral of powerWatts, plus the energy of the
// days since the driver loaded.
func (d *device) energyMillijoules(t float64) uint64 {
	limit := float64(d.f.spec.powerMW) / 1000
	idle := idlePowerShare * limit
	joules := idle*(t+uptimeSeconds) + (0.9*limit-idle)*(d.loadIntegral(t)+loadMean*uptimeSeconds)
	return uint64(1000 * joules)
}

func (d *device) GetTotalEnergyConsumption() (uint64, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetTotalEnergyConsumption", d, func() uint64 {
		return d.sinceReset(d.energyMillijoules, d.f.now())
	})
}

// sinceReset is a counter's reading at t when the driver counts it from
// the GPU's last reset (ResetGPU): the driver's counters restart at zero.
func (d *device) sinceReset(counter func(t float64) uint64, t float64) uint64 {
	d.f.mu.Lock()
	at, reset := d.resetAt, d.reset
	d.f.mu.Unlock()
	if !reset {
		return counter(t)
	}
	return counter(t) - counter(at)
}

func (d *device) tempC(t float64) uint32 {
	return uint32(math.Round(baseTempC + tempRiseC*d.load(t)))
}

func (d *device) GetTemperature(sensor gonvml.TemperatureSensors) (uint32, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetTemperature", d); ret != gonvml.SUCCESS {
		return 0, ret
	}
	if sensor != gonvml.TEMPERATURE_GPU {
		return 0, gonvml.ERROR_INVALID_ARGUMENT
	}
	return d.tempC(d.f.now()), gonvml.SUCCESS
}

// busy is whether the GPU runs at its boost clocks rather than idling.
func (d *device) busy(t float64) bool { return d.load(t) >= 0.15 }

// pstate is P0, where data-center GPUs with persistence mode stay even
// while their clocks idle, unless SetIdle dropped the GPU to P8, as one
// without persistence mode (or a PCIe card) drops when nothing runs.
func (d *device) pstate() gonvml.Pstates {
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	if d.idle {
		return gonvml.PSTATE_8
	}
	return gonvml.PSTATE_0
}

func (d *device) GetPerformanceState() (gonvml.Pstates, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetPerformanceState", d, d.pstate)
}

func (d *device) GetClockInfo(c gonvml.ClockType) (uint32, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetClockInfo", d); ret != gonvml.SUCCESS {
		return 0, ret
	}
	spec, busy := d.f.spec, d.busy(d.f.now())
	switch c {
	case gonvml.CLOCK_GRAPHICS, gonvml.CLOCK_SM:
		if !busy {
			return idleSMMHz, gonvml.SUCCESS
		}
		if d.activeClockReasons()&hwSlowdowns != 0 {
			// nvml.h: a hardware slowdown cuts the clocks by a factor of 2 or more.
			return uint32(spec.smMHz / 2), gonvml.SUCCESS
		}
		return uint32(spec.smMHz), gonvml.SUCCESS
	case gonvml.CLOCK_MEM:
		return uint32(spec.memMHz), gonvml.SUCCESS
	case gonvml.CLOCK_VIDEO:
		if !busy {
			return 765, gonvml.SUCCESS
		}
		return 1755, gonvml.SUCCESS
	}
	return 0, gonvml.ERROR_INVALID_ARGUMENT
}

// clockReasons: idle below 15 % load, the software power cap near the
// limit, the GPU's Throttled spans and SetClockEventReasons; only reasons
// the GPU supports are ever set.
func (d *device) clockReasons() uint64 {
	return d.activeClockReasons() & d.supportedClockReasons()
}

// hwSlowdowns are the reasons that halve the clocks.
const hwSlowdowns = gonvml.ClocksThrottleReasonHwSlowdown | gonvml.ClocksThrottleReasonHwThermalSlowdown |
	gonvml.ClocksThrottleReasonHwPowerBrakeSlowdown

func (d *device) activeClockReasons() uint64 {
	t := d.f.now()
	var r uint64
	if !d.busy(t) {
		r |= gonvml.ClocksEventReasonGpuIdle
	}
	if d.powerWatts(d.load(t)) > 0.8*float64(d.f.spec.powerMW)/1000 {
		r |= gonvml.ClocksEventReasonSwPowerCap
	}
	at := time.Duration(t * float64(time.Second))
	for _, th := range d.spec.Throttled {
		if at >= th.From && (th.To == 0 || at < th.To) {
			r |= th.Reasons
		}
	}
	d.f.mu.Lock()
	r |= d.forcedClockReasons
	d.f.mu.Unlock()
	return r
}

func (d *device) GetCurrentClocksEventReasons() (uint64, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetCurrentClocksEventReasons", d, d.clockReasons)
}

func (d *device) GetCurrentClocksThrottleReasons() (uint64, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetCurrentClocksThrottleReasons", d, d.clockReasons)
}

// slow is a counter that grows by one every period seconds from a
// per-GPU start: replays, corrected ECC errors.
func (d *device) slow(kind string, start uint64, period float64) func(t float64) uint64 {
	return func(t float64) uint64 { return d.offset(kind, start) + uint64(math.Max(t, 0)/period) }
}

func (d *device) GetPcieReplayCounter() (int, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetPcieReplayCounter", d, func() int {
		return int(d.sinceReset(d.slow("replay", 40, 900), d.f.now()))
	})
}

// pcieBytes is the PCIe counter at t for a full-load rate.
func (d *device) pcieBytes(kind string, bps, t float64) uint64 {
	return d.offset(kind, 1<<40) + uint64(bps*(d.loadIntegral(t)+loadMean*uptimeSeconds))
}

// nvlinkKiB is a link's data counter at t in KiB, frozen while it is down.
func (d *device) nvlinkKiB(kind string, link int, t float64) uint64 {
	d.f.mu.Lock()
	since, down := d.down[link]
	d.f.mu.Unlock()
	if down {
		t = min(t, since.Sub(d.f.start).Seconds())
	}
	// Links share the load unevenly: 90 to 110 % of the model's rate.
	share := 0.9 + float64(d.offset(kind+"-share-"+strconv.Itoa(link), 1000))/5000
	bytes := share * d.f.spec.linkBps * (d.loadIntegral(t) + loadMean*uptimeSeconds)
	return d.offset(kind+"-"+strconv.Itoa(link), 1<<30) + uint64(bytes/1024)
}

// GetFieldValues answers the fields the agent asks for; any other field is
// NOT_SUPPORTED, as on a driver that lacks it.
func (d *device) GetFieldValues(values []gonvml.FieldValue) gonvml.Return {
	if ret := d.f.enter("nvmlDeviceGetFieldValues", d); ret != gonvml.SUCCESS {
		return ret
	}
	now := d.f.clock()
	t := now.Sub(d.f.start).Seconds()
	for i := range values {
		v := &values[i]
		v.Timestamp, v.LatencyUsec = now.UnixMicro(), 0
		d.f.mu.Lock()
		ret, faulty := d.fieldRets[v.FieldId]
		d.f.mu.Unlock()
		if faulty {
			v.NvmlReturn = uint32(ret)
			continue
		}
		v.NvmlReturn = uint32(gonvml.SUCCESS)
		v.ValueType = uint32(gonvml.VALUE_TYPE_UNSIGNED_LONG_LONG)
		var x uint64
		link := int(v.ScopeId)
		switch v.FieldId {
		case gonvml.FI_DEV_MEMORY_TEMP:
			v.ValueType = uint32(gonvml.VALUE_TYPE_UNSIGNED_INT)
			binary.NativeEndian.PutUint32(v.Value[:], d.tempC(t)+memTempOffsetC)
			continue
		case gonvml.FI_DEV_PCIE_COUNT_TX_BYTES:
			x = d.pcieWrap(d.sinceReset(func(t float64) uint64 { return d.pcieBytes("pcie-tx", pcieTxBps, t) }, t))
		case gonvml.FI_DEV_PCIE_COUNT_RX_BYTES:
			x = d.pcieWrap(d.sinceReset(func(t float64) uint64 { return d.pcieBytes("pcie-rx", pcieRxBps, t) }, t))
		case gonvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX, gonvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX:
			if link >= d.f.spec.links {
				v.NvmlReturn = uint32(gonvml.ERROR_INVALID_ARGUMENT)
				continue
			}
			kind := "nvlink-tx"
			if v.FieldId == gonvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX {
				kind = "nvlink-rx"
			}
			x = d.sinceReset(func(t float64) uint64 { return d.nvlinkKiB(kind, link, t) }, t)
		case gonvml.FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL, gonvml.FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL,
			gonvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL, gonvml.FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL,
			gonvml.FI_DEV_NVLINK_ECC_DATA_ERROR_COUNT_TOTAL:
			var ret gonvml.Return
			if x, ret = d.legacyNVLinkErrors(v.FieldId, link, t); ret != gonvml.SUCCESS {
				v.NvmlReturn, v.ValueType = uint32(ret), 0
				continue
			}
		default:
			if c, ok := nvlink5Counters[v.FieldId]; ok {
				var ret gonvml.Return
				if x, ret = d.nvlink5Errors(c, v.ScopeId, t); ret != gonvml.SUCCESS {
					v.NvmlReturn, v.ValueType = uint32(ret), 0
					continue
				}
				break
			}
			v.NvmlReturn = uint32(gonvml.ERROR_NOT_SUPPORTED)
			v.ValueType = 0
			continue
		}
		binary.NativeEndian.PutUint64(v.Value[:], x)
	}
	return gonvml.SUCCESS
}

func (d *device) GetTotalEccErrors(et gonvml.MemoryErrorType, ct gonvml.EccCounterType) (uint64, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetTotalEccErrors", d); ret != gonvml.SUCCESS {
		return 0, ret
	}
	if ct != gonvml.VOLATILE_ECC && ct != gonvml.AGGREGATE_ECC {
		return 0, gonvml.ERROR_INVALID_ARGUMENT
	}
	d.f.mu.Lock()
	corrected, uncorrected := d.eccCorrected, d.eccUncorrected
	if ct == gonvml.VOLATILE_ECC {
		// nvml.h: volatile counts are reset each time the driver loads
		// (and by a GPU reset); aggregate counts persist across both.
		corrected -= d.eccCorrectedAtReset
		uncorrected -= d.eccUncorrectedAtReset
	}
	d.f.mu.Unlock()
	organic := d.slow("ecc-corrected", 5, 1800)
	switch et {
	case gonvml.MEMORY_ERROR_TYPE_CORRECTED:
		if ct == gonvml.AGGREGATE_ECC {
			return organic(d.f.now()) + d.offset("ecc-corrected-life", 200) + corrected, gonvml.SUCCESS
		}
		return d.sinceReset(organic, d.f.now()) + corrected, gonvml.SUCCESS
	case gonvml.MEMORY_ERROR_TYPE_UNCORRECTED:
		return uncorrected, gonvml.SUCCESS
	}
	return 0, gonvml.ERROR_INVALID_ARGUMENT
}

func (d *device) GetRemappedRows() (int, int, bool, bool, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetRemappedRows", d); ret != gonvml.SUCCESS {
		return 0, 0, false, false, ret
	}
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	return d.index % 3, int(d.remapUncorrectable), d.remapPending, d.remapFailed, gonvml.SUCCESS
}
