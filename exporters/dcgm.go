package exporters

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/telemetry"
)

// dcgmLabels are dcgm-exporter's labels for a GPU; its series of a MIG
// instance add GPU_I_PROFILE and GPU_I_ID.
var dcgmLabels = []string{"gpu", "UUID", "device", "modelName", "Hostname", "pci_bus_id"}

var dcgmMIGLabels = []string{"GPU_I_PROFILE", "GPU_I_ID"}

// dcgmFamilies are dcgm-exporter's names and units for what gpunode
// measures (--metrics.dcgm-compat), so dashboards and alerts written for
// dcgm-exporter work unchanged. dcgm-exporter types its running totals as
// counters without the _total suffix; exposed as counters they would be
// renamed (…_total) in the OpenMetrics format Prometheus asks for, so they
// are untyped here, which keeps every name exactly as dashboards query it.
type dcgmFamilies struct {
	util, memCopyUtil, fbUsed, fbFree, power, energy, gpuTemp, memTemp family
	smClock, memClock, replay, nvlinkBW, xid, throttle                 family
	grActive, smActive, smOccupancy, tensorActive, dramActive          family
	fbReserved                                                         family
	// The same names for MIG instances, with GPU_I_PROFILE and GPU_I_ID.
	migFBUsed, migFBFree, migGR, migSM, migOccupancy, migTensor, migDRAM family
}

func newDCGMFamilies() dcgmFamilies {
	d := func(name, help string, typ prometheus.ValueType) family {
		return newFamily("DCGM_FI_"+name, help, typ, dcgmLabels)
	}
	mig := func(name, help string) family {
		return newFamily("DCGM_FI_"+name, help, prometheus.GaugeValue, dcgmLabels, dcgmMIGLabels...)
	}
	gauge, untyped := prometheus.GaugeValue, prometheus.UntypedValue
	help := map[string]string{
		"DEV_FB_USED": "Framebuffer memory used (in MiB).", "DEV_FB_FREE": "Framebuffer memory free (in MiB).",
		"DEV_FB_RESERVED":       "Framebuffer memory reserved (in MiB).",
		"PROF_GR_ENGINE_ACTIVE": "Ratio of time the graphics engine is active.", "PROF_SM_ACTIVE": "The ratio of cycles an SM has at least 1 warp assigned.",
		"PROF_SM_OCCUPANCY": "The ratio of number of warps resident on an SM.", "PROF_PIPE_TENSOR_ACTIVE": "Ratio of cycles the tensor (HMMA) pipe is active.",
		"PROF_DRAM_ACTIVE": "Ratio of cycles the device memory interface is active sending or receiving data.",
	}
	return dcgmFamilies{
		migFBUsed:    mig("DEV_FB_USED", help["DEV_FB_USED"]),
		migFBFree:    mig("DEV_FB_FREE", help["DEV_FB_FREE"]),
		migGR:        mig("PROF_GR_ENGINE_ACTIVE", help["PROF_GR_ENGINE_ACTIVE"]),
		migSM:        mig("PROF_SM_ACTIVE", help["PROF_SM_ACTIVE"]),
		migOccupancy: mig("PROF_SM_OCCUPANCY", help["PROF_SM_OCCUPANCY"]),
		migTensor:    mig("PROF_PIPE_TENSOR_ACTIVE", help["PROF_PIPE_TENSOR_ACTIVE"]),
		migDRAM:      mig("PROF_DRAM_ACTIVE", help["PROF_DRAM_ACTIVE"]),
		util:         d("DEV_GPU_UTIL", "GPU utilization (in %).", gauge),
		memCopyUtil:  d("DEV_MEM_COPY_UTIL", "Memory utilization (in %).", gauge),
		fbUsed:       d("DEV_FB_USED", help["DEV_FB_USED"], gauge),
		fbFree:       d("DEV_FB_FREE", help["DEV_FB_FREE"], gauge),
		fbReserved:   d("DEV_FB_RESERVED", help["DEV_FB_RESERVED"], gauge),
		power:        d("DEV_POWER_USAGE", "Power draw (in W).", gauge),
		energy:       d("DEV_TOTAL_ENERGY_CONSUMPTION", "Total energy consumption since boot (in mJ); a counter.", untyped),
		gpuTemp:      d("DEV_GPU_TEMP", "GPU temperature (in C).", gauge),
		memTemp:      d("DEV_MEMORY_TEMP", "Memory temperature (in C).", gauge),
		smClock:      d("DEV_SM_CLOCK", "SM clock frequency (in MHz).", gauge),
		memClock:     d("DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", gauge),
		replay:       d("DEV_PCIE_REPLAY_COUNTER", "Total number of PCIe retries; a counter.", untyped),
		nvlinkBW:     d("DEV_NVLINK_BANDWIDTH_TOTAL", "Total NVLink bandwidth for all links, transmit and receive (in MB/s, over the last sample period).", gauge),
		xid:          d("DEV_XID_ERRORS", "Value of the last XID error encountered (0 if none).", gauge),
		throttle:     d("DEV_CLOCK_THROTTLE_REASONS", "Current clock throttle reasons (bitmask of DCGM_CLOCKS_THROTTLE_REASON_*).", gauge),
		grActive:     d("PROF_GR_ENGINE_ACTIVE", help["PROF_GR_ENGINE_ACTIVE"], gauge),
		smActive:     d("PROF_SM_ACTIVE", help["PROF_SM_ACTIVE"], gauge),
		smOccupancy:  d("PROF_SM_OCCUPANCY", help["PROF_SM_OCCUPANCY"], gauge),
		tensorActive: d("PROF_PIPE_TENSOR_ACTIVE", help["PROF_PIPE_TENSOR_ACTIVE"], gauge),
		dramActive:   d("PROF_DRAM_ACTIVE", help["PROF_DRAM_ACTIVE"], gauge),
	}
}

// dcgmThrottleBits are DCGM's bits for the reasons, which are NVML's.
var dcgmThrottleBits = map[string]uint64{
	"gpu_idle": 0x1, "applications_clocks_setting": 0x2, "sw_power_cap": 0x4, "hw_slowdown": 0x8,
	"sync_boost": 0x10, "sw_thermal_slowdown": 0x20, "hw_thermal_slowdown": 0x40,
	"hw_power_brake_slowdown": 0x80, "display_clock_setting": 0x100, "board_limit": 0x200, "reliability": 0x400,
}

// nvmlBusID writes a sysfs bus id the way dcgm-exporter labels it:
// NVML's 8-digit domain, upper case ("00000000:1B:00.0").
func nvmlBusID(sysfs string) string {
	dom, rest, ok := strings.Cut(sysfs, ":")
	if !ok {
		return strings.ToUpper(sysfs)
	}
	if n, err := strconv.ParseUint(dom, 16, 32); err == nil {
		dom = fmt.Sprintf("%08X", n)
	}
	return dom + ":" + strings.ToUpper(rest)
}

func (d *dcgmFamilies) collect(emit func(prometheus.Metric), f *telemetry.Frame, host string) {
	lastXID := map[int]uint64{}
	lastAt := map[int]int64{}
	for _, x := range f.XIDs {
		if at := x.Last.UnixNano(); at >= lastAt[x.GPU] {
			lastXID[x.GPU], lastAt[x.GPU] = x.XID, at
		}
	}
	for i, s := range f.GPUs {
		if !s.Up {
			continue // dcgm-exporter exports nothing for a GPU it cannot read
		}
		t := target{id: []string{strconv.Itoa(s.Index), s.UUID, s.DeviceNode, s.Product, host, nvmlBusID(s.PCIBusID)}}
		if o := owner(f, s); len(o) > 0 {
			t.owner = []string{o[0].Namespace, o[0].Pod, o[0].Container}
		}
		opt := func(fam family, p *float64, scale float64) {
			if p != nil {
				emit(fam.metric(t, *p*scale))
			}
		}
		opt(d.util, s.Utilization, 100)
		opt(d.memCopyUtil, s.MemoryUtilization, 100)
		if s.MemoryUsedBytes != nil {
			emit(d.fbUsed.metric(t, float64(*s.MemoryUsedBytes>>20)))
		}
		if s.MemoryFreeBytes != nil {
			emit(d.fbFree.metric(t, float64(*s.MemoryFreeBytes>>20)))
		}
		// DCGM reads all three from nvmlDeviceGetMemoryInfo_v2 and has no
		// reserved figure without it (DcgmCacheManager: NOT_SUPPORTED
		// before R510), so neither does this.
		if s.MemoryReservedBytes != nil {
			emit(d.fbReserved.metric(t, float64(*s.MemoryReservedBytes>>20)))
		}
		opt(d.power, s.PowerWatts, 1)
		if s.EnergyMillijoules != nil {
			emit(d.energy.metric(t, float64(*s.EnergyMillijoules)))
		}
		for _, x := range s.Temperatures {
			switch x.Sensor {
			case gpu.SensorGPU:
				emit(d.gpuTemp.metric(t, x.Celsius))
			case gpu.SensorMemory:
				emit(d.memTemp.metric(t, x.Celsius))
			}
		}
		for _, c := range s.Clocks {
			switch c.Clock {
			case gpu.ClockSM:
				emit(d.smClock.metric(t, c.Hertz/1e6))
			case gpu.ClockMemory:
				emit(d.memClock.metric(t, c.Hertz/1e6))
			}
		}
		if s.ClockEventReasons != nil {
			// Only NVML's reasons have DCGM bits: an AMD GPU's
			// (gpu/amdgpu/throttle.go) would read as an unthrottled 0.
			var mask uint64
			nvml := false
			for _, r := range s.ClockEventReasons {
				bit, ok := dcgmThrottleBits[r.Reason]
				nvml = nvml || ok
				if r.Active {
					mask |= bit
				}
			}
			if nvml {
				emit(d.throttle.metric(t, float64(mask)))
			}
		}
		if s.PCIe != nil && s.PCIe.ReplayErrors != nil {
			emit(d.replay.metric(t, float64(*s.PCIe.ReplayErrors)))
		}
		if i < len(f.InterconnectRates) && f.InterconnectRates[i] != nil && s.Interconnect != nil && s.Interconnect.Kind == gpu.NVLink {
			emit(d.nvlinkBW.metric(t, *f.InterconnectRates[i]/1e6))
		}
		emit(d.xid.metric(t, float64(lastXID[s.Index])))
		if p := s.Profiling; p != nil {
			opt(d.grActive, p.GraphicsActive, 1)
			opt(d.smActive, p.SMActive, 1)
			opt(d.smOccupancy, p.SMOccupancy, 1)
			opt(d.tensorActive, p.TensorActive, 1)
			opt(d.dramActive, p.DRAMActive, 1)
		}
		d.migInstances(emit, f, s, t.id)
	}
}

// migInstances emits the series dcgm-exporter has per MIG instance. Its
// labels name the GPU instance only, so a GPU instance split into compute
// instances (which share its memory and GPM activity) is emitted once, with
// the holder of its first compute instance.
func (d *dcgmFamilies) migInstances(emit func(prometheus.Metric), f *telemetry.Frame, s gpu.Sample, id []string) {
	done := map[int]bool{}
	for _, inst := range s.MIG {
		if done[inst.GPUInstanceID] {
			continue
		}
		done[inst.GPUInstanceID] = true
		t := target{id: id}
		if o := f.Pods[inst.UUID]; len(o) > 0 {
			t.owner = []string{o[0].Namespace, o[0].Pod, o[0].Container}
		}
		gi := strconv.Itoa(inst.GPUInstanceID)
		if inst.MemoryUsedBytes != nil {
			emit(d.migFBUsed.metric(t, float64(*inst.MemoryUsedBytes>>20), inst.Profile, gi))
		}
		if inst.MemoryFreeBytes != nil {
			emit(d.migFBFree.metric(t, float64(*inst.MemoryFreeBytes>>20), inst.Profile, gi))
		}
		if p := inst.Profiling; p != nil {
			for _, v := range []struct {
				fam family
				p   *float64
			}{{d.migGR, p.GraphicsActive}, {d.migSM, p.SMActive}, {d.migOccupancy, p.SMOccupancy},
				{d.migTensor, p.TensorActive}, {d.migDRAM, p.DRAMActive}} {
				if v.p != nil {
					emit(v.fam.metric(t, *v.p, inst.Profile, gi))
				}
			}
		}
	}
}
