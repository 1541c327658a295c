package hwcheck

import (
	"fmt"
	"strings"
)

const secNVML = "nvml-calls"

// NVMLCall is one NVML function gpu/nvml calls, the driver branch that
// introduced it, and how a run of the agent shows that the driver has it.
type NVMLCall struct {
	Symbol string
	// Branch is the driver branch that introduced the call ("R510").
	// "before R384" for the calls of NVML's early releases, which every
	// driver the agent can meet has.
	Branch string
	// Source says where Branch comes from.
	Source string
	// Use is what the agent reads with it.
	Use string
	// Alternative names the call the agent uses instead on drivers
	// without this one, "" if none (the value is then absent).
	Alternative string
	// Evidence tells from the agent's output whether the call answered
	// on this driver: yes, or no with why; unknown when the output
	// cannot tell (the GPU lacks the feature either way).
	Evidence func(in *Inspect, m Metrics) Availability
}

// Availability of a call on the driver the agent ran on.
type Availability string

const (
	Available    Availability = "available"
	NotAvailable Availability = "not available"
	// Unknown: the output cannot tell, or the agent had no reason to make
	// the call here (MIG calls on a GPU not in MIG mode).
	Unknown Availability = "cannot tell"
)

// Branch sources.
const (
	srcAgent  = "gpu/nvml's comments"
	srcDocs   = "NVIDIA's NVML API reference of the branch (docs.nvidia.com/deploy/archive/R520/nvml-api has GPM)"
	srcMIG    = "gpu/nvml's comments; NVIDIA's R470 API reference (docs.nvidia.com/deploy/archive/R470/nvml-api) lists them (MIG came with the A100)"
	srcLegacy = "not pinned down: older than every driver the agent supports"
)

func anyGPU(in *Inspect, f func(i int) bool) Availability {
	if len(in.GPUs) == 0 {
		return Unknown
	}
	for i := range in.GPUs {
		if f(i) {
			return Available
		}
	}
	return NotAvailable
}

func metric(name string, labels ...string) func(*Inspect, Metrics) Availability {
	return func(in *Inspect, m Metrics) Availability {
		if len(in.GPUs) == 0 || m == nil {
			return Unknown
		}
		if m.Has(name, labels...) {
			return Available
		}
		return NotAvailable
	}
}

func nvmlOK(in *Inspect, _ Metrics) Availability {
	switch st, _ := in.Source("nvml"); st {
	case "ok":
		return Available
	case "":
		return Unknown
	}
	return NotAvailable
}

func driverField(f func(in *Inspect) string) func(*Inspect, Metrics) Availability {
	return func(in *Inspect, _ Metrics) Availability {
		if in.GPUDriver == nil {
			return Unknown
		}
		if f(in) != "" {
			return Available
		}
		return NotAvailable
	}
}

// NVMLCalls lists every NVML function gpu/nvml calls (grep '"nvml' in
// gpu/nvml; TestNVMLCallsListEverySymbol keeps the two equal).
var NVMLCalls = []NVMLCall{
	{Symbol: "nvmlInit", Branch: "before R384", Source: srcLegacy, Use: "load the library (go-nvml binds nvmlInit_v2)", Evidence: nvmlOK},
	{Symbol: "nvmlShutdown", Branch: "before R384", Source: srcLegacy, Use: "release the library", Evidence: nvmlOK},
	{Symbol: "nvmlSystemGetDriverVersion", Branch: "before R384", Source: srcLegacy, Use: "driver version",
		Evidence: driverField(func(in *Inspect) string { return in.GPUDriver.DriverVersion })},
	{Symbol: "nvmlSystemGetNVMLVersion", Branch: "before R384", Source: srcLegacy, Use: "library version",
		Evidence: driverField(func(in *Inspect) string { return in.GPUDriver.LibraryVersion })},
	{Symbol: "nvmlSystemGetCudaDriverVersion", Branch: "before R384", Source: srcLegacy, Use: "CUDA version",
		Evidence: driverField(func(in *Inspect) string { return in.GPUDriver.CUDAVersion })},
	{Symbol: "nvmlDeviceGetCount", Branch: "before R384", Source: srcLegacy, Use: "GPU count (_v2)", Evidence: nvmlOK},
	{Symbol: "nvmlDeviceGetHandleByIndex", Branch: "before R384", Source: srcLegacy, Use: "GPU handles (_v2)", Evidence: nvmlOK},
	{Symbol: "nvmlDeviceGetName", Branch: "before R384", Source: srcLegacy, Use: "product",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].Product != "" })
		}},
	{Symbol: "nvmlDeviceGetUUID", Branch: "before R384", Source: srcLegacy, Use: "UUID",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].UUID != "" })
		}},
	{Symbol: "nvmlDeviceGetPciInfo", Branch: "before R384", Source: srcLegacy, Use: "PCI bus and device id (_v3)",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].PCIBusID != "" })
		}},
	{Symbol: "nvmlDeviceGetMinorNumber", Branch: "before R384", Source: srcLegacy, Use: "/dev/nvidiaN of a GPU", Evidence: nvmlOK},
	{Symbol: "nvmlDeviceGetSerial", Branch: "before R384", Source: srcLegacy, Use: "serial",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].Serial != "" })
		}},
	{Symbol: "nvmlDeviceGetVbiosVersion", Branch: "before R384", Source: srcLegacy, Use: "VBIOS version",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].VBIOSVersion != "" })
		}},
	{Symbol: "nvmlDeviceGetCudaComputeCapability", Branch: "before R384", Source: srcLegacy, Use: "compute capability",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].ComputeMajor > 0 })
		}},
	{Symbol: "nvmlDeviceGetArchitecture", Branch: "R450 (unconfirmed)", Source: "not pinned down (the agent treats it as optional)", Use: "architecture",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].Architecture != "" })
		}},
	{Symbol: "nvmlDeviceGetNumaNodeId", Branch: "unconfirmed", Source: "not pinned down (a recent addition: nvml.h of R580 has it, the agent treats it as optional)", Use: "NUMA node (else sysfs)",
		Alternative: "sysfs numa_node", Evidence: func(*Inspect, Metrics) Availability { return Unknown }},
	{Symbol: "nvmlDeviceGetMemoryInfo", Branch: "before R384", Source: srcLegacy, Use: "memory total; used where _v2 is absent",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].MemoryBytes > 0 })
		}},
	{Symbol: "nvmlDeviceGetMemoryInfo_v2", Branch: "R510", Source: srcAgent, Use: "memory used, free, reserved",
		Alternative: "nvmlDeviceGetMemoryInfo (used then includes reserved)", Evidence: metric("gpunode_gpu_memory_reserved_bytes")},
	{Symbol: "nvmlDeviceGetEnforcedPowerLimit", Branch: "before R384", Source: srcLegacy, Use: "power limit",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].PowerLimitWatts > 0 })
		}},
	{Symbol: "nvmlDeviceGetPerformanceState", Branch: "before R384", Source: srcLegacy, Use: "P-state beside the PCIe link",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { l := in.GPUs[i].PCIeLink; return l != nil && l.PerformanceState != "" })
		}},
	{Symbol: "nvmlDeviceGetCurrPcieLinkGeneration", Branch: "before R384", Source: srcLegacy, Use: "PCIe link", Evidence: pcieLink},
	{Symbol: "nvmlDeviceGetMaxPcieLinkGeneration", Branch: "before R384", Source: srcLegacy, Use: "PCIe link", Evidence: pcieLink},
	{Symbol: "nvmlDeviceGetCurrPcieLinkWidth", Branch: "before R384", Source: srcLegacy, Use: "PCIe link", Evidence: pcieLink},
	{Symbol: "nvmlDeviceGetMaxPcieLinkWidth", Branch: "before R384", Source: srcLegacy, Use: "PCIe link", Evidence: pcieLink},
	{Symbol: "nvmlDeviceGetEccMode", Branch: "before R384", Source: srcLegacy, Use: "ECC mode",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].ECC != nil })
		}},
	{Symbol: "nvmlDeviceGetTotalEccErrors", Branch: "before R384", Source: srcLegacy, Use: "ECC error counts", Evidence: metric("gpunode_gpu_ecc_errors_total")},
	{Symbol: "nvmlDeviceGetRemappedRows", Branch: "R460", Source: srcAgent, Use: "row remapping (Ampere and newer)",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].RemappedRows != nil })
		}},
	{Symbol: "nvmlDeviceGetGpuFabricInfo", Branch: "R525", Source: srcAgent, Use: "NVLink fabric state (NVSwitch systems)",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].Fabric != nil })
		}},
	{Symbol: "nvmlDeviceGetNvLinkState", Branch: "before R384", Source: srcLegacy, Use: "NVLink links up", Evidence: metric("gpunode_gpu_interconnect_link_up", "kind=nvlink")},
	{Symbol: "nvmlDeviceGetNvLinkVersion", Branch: "before R384", Source: srcLegacy, Use: "NVLink generation",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { ic := in.GPUs[i].Interconnect; return ic != nil && ic.Generation > 0 })
		}},
	{Symbol: "nvmlDeviceGetMigMode", Branch: "R470 or earlier", Source: srcMIG, Use: "MIG mode",
		Evidence: func(in *Inspect, _ Metrics) Availability {
			return anyGPU(in, func(i int) bool { return in.GPUs[i].MIG.Capable })
		}},
	{Symbol: "nvmlDeviceGetMaxMigDeviceCount", Branch: "R470 or earlier", Source: srcMIG, Use: "MIG devices", Evidence: migDevices("gpunode_gpu_mig_info")},
	{Symbol: "nvmlDeviceGetMigDeviceHandleByIndex", Branch: "R470 or earlier", Source: srcMIG, Use: "MIG devices", Evidence: migDevices("gpunode_gpu_mig_info")},
	{Symbol: "nvmlDeviceGetGpuInstanceId", Branch: "R470 or earlier", Source: srcMIG, Use: "MIG devices", Evidence: migDevices("gpunode_gpu_mig_info")},
	{Symbol: "nvmlDeviceGetComputeInstanceId", Branch: "R470 or earlier", Source: srcMIG, Use: "MIG devices", Evidence: migDevices("gpunode_gpu_mig_info")},
	{Symbol: "nvmlDeviceGetUtilizationRates", Branch: "before R384", Source: srcLegacy, Use: "utilization", Evidence: metric("gpunode_gpu_utilization_ratio")},
	{Symbol: "nvmlDeviceGetPowerUsage", Branch: "before R384", Source: srcLegacy, Use: "power", Evidence: metric("gpunode_gpu_power_watts")},
	{Symbol: "nvmlDeviceGetTotalEnergyConsumption", Branch: "R390", Source: srcAgent, Use: "energy counter (Volta and newer)", Evidence: metric("gpunode_gpu_energy_joules_total")},
	{Symbol: "nvmlDeviceGetTemperature", Branch: "before R384", Source: srcLegacy, Use: "GPU temperature where TemperatureV is absent", Evidence: metric("gpunode_gpu_temperature_celsius", "sensor=gpu")},
	{Symbol: "nvmlDeviceGetTemperatureV", Branch: "R555", Source: srcAgent, Use: "GPU temperature", Alternative: "nvmlDeviceGetTemperature",
		Evidence: metric("gpunode_gpu_temperature_celsius", "sensor=gpu")},
	{Symbol: "nvmlDeviceGetClockInfo", Branch: "before R384", Source: srcLegacy, Use: "clocks", Evidence: metric("gpunode_gpu_clock_hertz")},
	{Symbol: "nvmlDeviceGetCurrentClocksEventReasons", Branch: "R535", Source: srcAgent, Use: "clock event reasons",
		Alternative: "nvmlDeviceGetCurrentClocksThrottleReasons", Evidence: metric("gpunode_gpu_clocks_event_reasons")},
	{Symbol: "nvmlDeviceGetCurrentClocksThrottleReasons", Branch: "before R384", Source: srcLegacy, Use: "clock event reasons before R535", Evidence: metric("gpunode_gpu_clocks_event_reasons")},
	{Symbol: "nvmlDeviceGetSupportedClocksEventReasons", Branch: "R535", Source: srcAgent, Use: "which reasons to export",
		Alternative: "nvmlDeviceGetSupportedClocksThrottleReasons", Evidence: metric("gpunode_gpu_clocks_event_reasons")},
	{Symbol: "nvmlDeviceGetSupportedClocksThrottleReasons", Branch: "before R384", Source: srcLegacy, Use: "which reasons to export before R535", Evidence: metric("gpunode_gpu_clocks_event_reasons")},
	{Symbol: "nvmlDeviceGetPcieReplayCounter", Branch: "before R384", Source: srcLegacy, Use: "PCIe replays", Evidence: metric("gpunode_gpu_pcie_replay_errors_total")},
	{Symbol: "nvmlDeviceGetPcieThroughput", Branch: "before R384", Source: srcLegacy, Use: "PCIe rate where the byte counters are missing or 32-bit", Evidence: pcieThroughput},
	{Symbol: "nvmlDeviceGetFieldValues", Branch: "R384", Source: srcAgent, Use: "memory temperature, PCIe and NVLink byte and error counters (field ids newer than the call: see its rows' evidence)",
		Evidence: func(in *Inspect, m Metrics) Availability {
			if len(in.GPUs) == 0 || m == nil {
				return Unknown
			}
			for _, n := range []string{"gpunode_gpu_pcie_transmit_bytes_total", "gpunode_gpu_interconnect_transmit_bytes_total", "gpunode_gpu_interconnect_errors_total"} {
				if m.Has(n) {
					return Available
				}
			}
			if m.Has("gpunode_gpu_temperature_celsius", "sensor=memory") {
				return Available
			}
			return NotAvailable
		}},
	{Symbol: "nvmlDeviceGetSupportedEventTypes", Branch: "before R384", Source: srcLegacy, Use: "XID watching", Evidence: xidWatch},
	{Symbol: "nvmlEventSetCreate", Branch: "before R384", Source: srcLegacy, Use: "XID watching", Evidence: xidWatch},
	{Symbol: "nvmlDeviceRegisterEvents", Branch: "before R384", Source: srcLegacy, Use: "XID watching", Evidence: xidWatch},
	{Symbol: "nvmlEventSetWait", Branch: "before R384", Source: srcLegacy, Use: "XID watching (_v2)", Evidence: xidWatch},
	{Symbol: "nvmlEventSetFree", Branch: "before R384", Source: srcLegacy, Use: "XID watching", Evidence: xidWatch},
	{Symbol: "nvmlGpmQueryDeviceSupport", Branch: "R520", Source: srcAgent + "; " + srcDocs, Use: "GPM (Hopper and newer)", Evidence: gpm},
	{Symbol: "nvmlGpmSampleAlloc", Branch: "R520", Source: srcAgent + "; " + srcDocs, Use: "GPM", Evidence: gpm},
	{Symbol: "nvmlGpmSampleFree", Branch: "R520", Source: srcAgent + "; " + srcDocs, Use: "GPM", Evidence: gpm},
	{Symbol: "nvmlGpmSampleGet", Branch: "R520", Source: srcAgent + "; " + srcDocs, Use: "GPM", Evidence: gpm},
	{Symbol: "nvmlGpmMigSampleGet", Branch: "R520", Source: srcAgent + "; " + srcDocs, Use: "GPM of MIG instances", Evidence: migDevices("gpunode_gpu_mig_sm_active_ratio")},
	{Symbol: "nvmlGpmMetricsGet", Branch: "R520", Source: srcAgent + "; " + srcDocs, Use: "GPM", Evidence: gpm},
	{Symbol: "nvmlDeviceGetComputeRunningProcesses", Branch: "before R384", Source: srcLegacy + " (go-nvml calls its _v3, R510, where present)",
		Use: "processes on each GPU and their memory", Evidence: metric("gpunode_gpu_processes")},
	{Symbol: "nvmlDeviceGetGraphicsRunningProcesses", Branch: "before R384", Source: srcLegacy + " (go-nvml calls its _v3, R510, where present)",
		Use: "graphics processes", Evidence: metric("gpunode_gpu_processes")},
	{Symbol: "nvmlDeviceGetMPSComputeRunningProcesses", Branch: "unconfirmed", Source: "not pinned down (the agent looks it up before calling it)",
		Use: "MPS clients", Evidence: func(*Inspect, Metrics) Availability { return Unknown }},
	{Symbol: "nvmlDeviceGetProcessUtilization", Branch: "before R384", Source: srcLegacy + " (Maxwell and newer)",
		Use: "per-process SM and memory utilization", Alternative: "none (pods' shares are absent)",
		Evidence: func(*Inspect, Metrics) Availability { return Unknown }},
}

// migDevices: the MIG device calls are made only on a GPU in MIG mode.
func migDevices(series string) func(*Inspect, Metrics) Availability {
	return func(in *Inspect, m Metrics) Availability {
		if anyGPU(in, func(i int) bool { return in.GPUs[i].MIG.Enabled }) != Available {
			return Unknown
		}
		return metric(series)(in, m)
	}
}

// pcieThroughput is called only where the PCIe byte counters are missing
// or 32-bit.
func pcieThroughput(in *Inspect, m Metrics) Availability {
	if m != nil && m.Has("gpunode_gpu_pcie_transmit_bytes_total") {
		return Unknown
	}
	return metric("gpunode_gpu_pcie_transmit_bytes_per_second")(in, m)
}

func pcieLink(in *Inspect, _ Metrics) Availability {
	return anyGPU(in, func(i int) bool { return in.GPUs[i].PCIeLink != nil })
}

func xidWatch(in *Inspect, m Metrics) Availability {
	if len(in.GPUs) == 0 || m == nil {
		return Unknown
	}
	if v, ok := m.Value("gpunode_gpu_xid_watch_up"); ok && v == 1 {
		return Available
	}
	return NotAvailable
}

func gpm(in *Inspect, m Metrics) Availability {
	return metric("gpunode_gpu_sm_active_ratio")(in, m)
}

// NVMLCallRows records, for each call, whether the agent's output shows it
// answered on this driver. They never fail the run: a call a GPU lacks
// is absent by design, and the readings rows catch a missing value the
// vendor tool has.
func NVMLCallRows(in *Inspect, m Metrics) []Row {
	rows := make([]Row, 0, len(NVMLCalls))
	for _, c := range NVMLCalls {
		note := "since " + c.Branch + "; " + c.Use
		if c.Alternative != "" {
			note += "; else " + c.Alternative
		}
		rows = append(rows, Row{Section: secNVML, Fact: c.Symbol, Agent: string(c.Evidence(in, m)), Vendor: "-", Verdict: Recorded, Note: note})
	}
	return rows
}

// NVMLCallsMarkdown is the table of docs/hardware.md (TestNVMLCallsDoc).
func NVMLCallsMarkdown() string {
	var b strings.Builder
	b.WriteString("| NVML call | driver branch | source | what the agent reads with it | on older drivers |\n|---|---|---|---|---|\n")
	for _, c := range NVMLCalls {
		alt := "value absent"
		if c.Alternative != "" {
			alt = c.Alternative
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", c.Symbol, c.Branch, c.Source, c.Use, alt)
	}
	return b.String()
}

const secSources = "sources"

// SourceRows records the state of each of the agent's sources: discovery
// from inspect (with its message, which names what failed), sampling from
// the last scrape's gpunode_source_state. A failed sampling source
// (nvml-sample) is where a driver that lacks a call the agent expects
// shows; the full messages are in the agent's log.
func SourceRows(in *Inspect, m Metrics) []Row {
	var rows []Row
	for _, s := range in.Sources {
		rows = append(rows, Row{Section: secSources, Fact: s.Name, Agent: s.State, Vendor: "-", Verdict: Recorded, Note: s.Message})
	}
	fam, ok := m["gpunode_source_state"]
	if !ok {
		return rows
	}
	seen := map[string]bool{}
	for _, s := range in.Sources {
		seen[s.Name] = true
	}
	for _, met := range fam.GetMetric() {
		name := labelValue(met, "source")
		if seen[name] || metricValue(met) != 1 {
			continue
		}
		rows = append(rows, Row{Section: secSources, Fact: name, Agent: labelValue(met, "state"), Vendor: "-", Verdict: Recorded, Note: "sampling (last scrape)"})
	}
	return rows
}
