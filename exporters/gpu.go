package exporters

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/podresources"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/telemetry"
)

// Labels of every per-GPU series; the identity details are on gpunode_gpu_info.
var gpuLabels = []string{"gpu", "uuid", "pci_bus_id", "model"}

// podLabels are added to the per-GPU series of a GPU held by a pod.
var podLabels = []string{"namespace", "pod", "container"}

// family is one metric with its two shapes: without and with pod labels.
type family struct {
	typ        prometheus.ValueType
	plain, pod *prometheus.Desc
}

func newFamily(name, help string, typ prometheus.ValueType, identity []string, extra ...string) family {
	labels := append(append([]string{}, identity...), extra...)
	return family{
		typ:   typ,
		plain: prometheus.NewDesc(name, help, labels, nil),
		pod:   prometheus.NewDesc(name, help, append(append([]string{}, labels...), podLabels...), nil),
	}
}

// target is one GPU's label values: identity, then the owner if any.
type target struct {
	id    []string
	owner []string // namespace, pod, container; nil when free
}

// metric makes a sample of f for t with the extra label values.
func (f family) metric(t target, v float64, extra ...string) prometheus.Metric {
	lvs := make([]string, 0, len(t.id)+len(extra)+len(t.owner))
	lvs = append(append(lvs, t.id...), extra...)
	if t.owner == nil {
		return prometheus.MustNewConstMetric(f.plain, f.typ, v, lvs...)
	}
	return prometheus.MustNewConstMetric(f.pod, f.typ, v, append(lvs, t.owner...)...)
}

type gpuFamilies struct {
	info, up, healthy, problem, allocation                     family
	util, memUtil, memUsed, memFree, memTotal                  family
	power, powerLimit, energy, temp, clock, clockReason        family
	pcieTx, pcieRx, pcieReplay, pcieGen, pcieWidth             family
	pcieTxRate, pcieRxRate                                     family
	linkTx, linkRx, linkUp, linksActive, linkErrors            family
	ecc, xid, remapped, remapPending, remapFailed              family
	xidWatch, degraded                                         family
	graphicsActive, smActive, smOccupancy, tensorActive, dramA family
	memReserved, processes                                     family
	mig                                                        migFamilies
}

// migFamilies are the per-instance series of a GPU in MIG mode; they carry
// the GPU's labels plus gpu_instance and compute_instance: a GPU instance
// split into compute instances is several MIG devices.
type migFamilies struct {
	info, allocation, memUsed, memFree, memTotal                    family
	graphicsActive, smActive, smOccupancy, tensorActive, dramActive family
}

func newMIGFamilies() migFamilies {
	m := func(name, help string, extra ...string) family {
		return newFamily("gpunode_gpu_mig_"+name, help, prometheus.GaugeValue, gpuLabels, append([]string{"gpu_instance", "compute_instance"}, extra...)...)
	}
	return migFamilies{
		info:           m("info", "MIG device identity; always 1.", "profile", "mig_uuid"),
		allocation:     migAllocationFamily(nil),
		memUsed:        m("memory_used_bytes", "MIG instance memory in use."),
		memFree:        m("memory_free_bytes", "MIG instance memory free."),
		memTotal:       m("memory_total_bytes", "MIG instance memory size."),
		graphicsActive: m("graphics_active_ratio", "Fraction of time the instance's graphics or compute engine was active over the last sample period (GPM)."),
		smActive:       m("sm_active_ratio", "Fraction of the instance's SMs busy over the last sample period (GPM)."),
		smOccupancy:    m("sm_occupancy_ratio", "Resident warps as a fraction of the maximum on the instance's SMs over the last sample period (GPM)."),
		tensorActive:   m("tensor_active_ratio", "Fraction of time any tensor pipe of the instance was active over the last sample period (GPM)."),
		dramActive:     m("dram_active_ratio", "Fraction of the instance's peak DRAM bandwidth used over the last sample period (GPM)."),
	}
}

func newGPUFamilies() gpuFamilies {
	g := func(name, help string, typ prometheus.ValueType, extra ...string) family {
		return newFamily("gpunode_gpu_"+name, help, typ, gpuLabels, extra...)
	}
	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue
	return gpuFamilies{
		info: newFamily("gpunode_gpu_info", "GPU identity; always 1.", gauge, gpuLabels,
			"architecture", "compute_capability", "driver_version", "cuda_version", "vbios_version", "numa_node", "device", "mig_mode"),
		up:         g("up", "1 if the GPU answered the last sampling round, 0 if it did not (lost, hung or failing).", gauge),
		healthy:    g("healthy", "1 if the GPU is healthy, 0 if a critical XID, uncorrectable PCIe AER error, uncorrectable ECC error, row remap, NVLink failure or loss from the bus was seen; absent while unknown.", gauge),
		problem:    g("health_problem", "1 for each reason the GPU is unhealthy.", gauge, "reason"),
		degraded:   g("degraded", "1 if the clock reason has held the GPU's clocks down longer than metrics.health.throttleAfter (hardware, power-brake or thermal slowdown: the GPU works, slowly), 0 if not; for each such reason the GPU reports.", gauge, "reason"),
		allocation: allocationFamily(nil),
		util:       g("utilization_ratio", "Fraction of the last sample period during which a kernel ran on the GPU.", gauge),
		memUtil:    g("memory_utilization_ratio", "Fraction of the last sample period during which device memory was read or written.", gauge),
		memUsed:    g("memory_used_bytes", "Device memory in use.", gauge),
		memFree:    g("memory_free_bytes", "Device memory free.", gauge),
		memTotal:   g("memory_total_bytes", "Device memory size.", gauge),
		power:      g("power_watts", "Power draw.", gauge),
		powerLimit: g("power_limit_watts", "Enforced power limit.", gauge),
		energy:     g("energy_joules_total", "Energy consumed since the driver loaded.", counter),
		temp:       g("temperature_celsius", "Temperature by sensor (gpu, memory).", gauge, "sensor"),
		clock:      g("clock_hertz", "Current clock frequency by domain (graphics, sm, memory, video).", gauge, "clock"),
		clockReason: g("clocks_event_reasons", "1 if the reason currently holds clocks below their maximum (throttling; gpu_idle is normal at rest), 0 if not.",
			gauge, "reason"),
		pcieTx:      g("pcie_transmit_bytes_total", "Bytes the GPU sent over PCIe.", counter),
		pcieRx:      g("pcie_receive_bytes_total", "Bytes the GPU received over PCIe.", counter),
		pcieReplay:  g("pcie_replay_errors_total", "PCIe link-level replays (retransmissions after errors).", counter),
		pcieTxRate:  g("pcie_transmit_bytes_per_second", "PCIe send rate over the device's last 20 ms window, where the GPU has no usable byte counter.", gauge),
		pcieRxRate:  g("pcie_receive_bytes_per_second", "PCIe receive rate over the device's last 20 ms window, where the GPU has no usable byte counter.", gauge),
		pcieGen:     g("pcie_link_generation", "Current PCIe link generation.", gauge),
		pcieWidth:   g("pcie_link_width", "Current PCIe link width (lanes).", gauge),
		linkTx:      g("interconnect_transmit_bytes_total", "Data bytes sent over a GPU interconnect link (NVLink, XGMI).", counter, "link", "kind"),
		linkRx:      g("interconnect_receive_bytes_total", "Data bytes received over a GPU interconnect link (NVLink, XGMI).", counter, "link", "kind"),
		linkUp:      g("interconnect_link_up", "1 if the interconnect link is up.", gauge, "link", "kind"),
		linksActive: g("interconnect_links_active", "Interconnect links that are up.", gauge, "kind"),
		linkErrors:  g("interconnect_errors_total", "Interconnect errors over all links by type (crc_flit, crc_data, replay, recovery, ecc_data before Blackwell; symbol, effective, receive, recovery, recovery_failed, ... on NVLink 5).", counter, "kind", "type"),
		ecc:         g("ecc_errors_total", "Device memory ECC errors by type (corrected, uncorrected) and scope (volatile: since the driver loaded; aggregate: lifetime).", counter, "type", "scope"),
		xid: g("xid_errors_total", "XID errors the driver reported since the agent started (on its first start since boot, those in the kernel log from before too), by XID; "+
			"one XID in both the GPU library's events and the kernel log counts once.", counter, "xid"),
		xidWatch:       g("xid_watch_up", "1 if the GPU's XID events are watched, 0 if they could not be registered (its XIDs are missed; retried every 30 s).", gauge),
		remapped:       g("remapped_rows", "Memory rows remapped, by the kind of error that caused it (correctable, uncorrectable).", gauge, "state"),
		remapPending:   g("row_remap_pending", "1 if a row remapping waits for a GPU reset.", gauge),
		remapFailed:    g("row_remap_failed", "1 if a row remapping failed.", gauge),
		graphicsActive: g("graphics_active_ratio", "Fraction of time the graphics or compute engine was active over the last sample period (GPM).", gauge),
		smActive:       g("sm_active_ratio", "Fraction of SMs busy over the last sample period (GPM).", gauge),
		smOccupancy:    g("sm_occupancy_ratio", "Resident warps as a fraction of the maximum over the last sample period (GPM).", gauge),
		tensorActive:   g("tensor_active_ratio", "Fraction of time any tensor pipe was active over the last sample period (GPM).", gauge),
		memReserved:    g("memory_reserved_bytes", "Device memory the driver and firmware reserve, not counted as used (NVIDIA: driver R510 and newer).", gauge),
		dramA:          g("dram_active_ratio", "Fraction of peak DRAM bandwidth used over the last sample period (GPM).", gauge),
		processes:      g("processes", "Processes using the GPU and its MIG devices (compute, MPS clients, graphics), as the driver lists them.", gauge),
		mig:            newMIGFamilies(),
	}
}

// allocationFamily is gpunode_gpu_allocation_info with the configured pod
// labels' names (podlabels) after the container.
func allocationFamily(podLabels []string) family {
	return newFamily("gpunode_gpu_allocation_info", "1 for each container the kubelet has allocated the GPU to; label_* are the pod's labels configured in metrics.podLabels.",
		prometheus.GaugeValue, []string{"gpu", "uuid"}, append([]string{"resource", "namespace", "pod", "container"}, podLabels...)...)
}

func migAllocationFamily(podLabels []string) family {
	return newFamily("gpunode_gpu_mig_allocation_info", "1 for each container the kubelet has allocated the MIG device to; label_* are the pod's labels configured in metrics.podLabels.",
		prometheus.GaugeValue, []string{"gpu", "uuid", "gpu_instance", "compute_instance"}, append([]string{"resource", "namespace", "pod", "container"}, podLabels...)...)
}

// owner returns the container a GPU is attributed to: the first of its
// holders (all of them are on gpunode_gpu_allocation_info).
func owner(f *telemetry.Frame, s gpu.Sample) []podresources.Allocation {
	if f.Pods == nil {
		return nil
	}
	if o := f.Pods[s.UUID]; len(o) > 0 && s.UUID != "" {
		return o
	}
	if s.PCIBusID != "" {
		return f.Pods[s.PCIBusID]
	}
	return nil
}

func gpuTarget(f *telemetry.Frame, s gpu.Sample) target {
	t := target{id: []string{strconv.Itoa(s.Index), s.UUID, s.PCIBusID, s.Product}}
	if o := owner(f, s); len(o) > 0 {
		t.owner = []string{o[0].Namespace, o[0].Pod, o[0].Container}
	}
	return t
}

func (g *gpuFamilies) collect(emit func(prometheus.Metric), f *telemetry.Frame, snap *snapshot.Snapshot) {
	byUUID := map[string]*snapshot.GPU{}
	var driver *snapshot.GPUDriver
	if snap != nil {
		driver = snap.GPUDriver
		for i := range snap.GPUs {
			byUUID[snap.GPUs[i].UUID] = &snap.GPUs[i]
		}
	}
	targets := make(map[int]target, len(f.GPUs))
	for i, s := range f.GPUs {
		t := gpuTarget(f, s)
		targets[s.Index] = t
		emit(g.info.metric(t, 1, g.infoValues(s, byUUID[s.UUID], driver)...))
		emit(g.up.metric(t, boolValue(s.Up)))
		if i < len(f.Health) && f.Health[i].Known {
			h := f.Health[i]
			emit(g.healthy.metric(t, boolValue(h.Healthy)))
			for _, p := range h.Problems {
				emit(g.problem.metric(t, 1, p.Reason))
			}
			for _, th := range h.Throttles {
				emit(g.degraded.metric(t, boolValue(th.Degraded), th.Reason))
			}
		}
		for _, o := range owner(f, s) {
			lvs := []string{strconv.Itoa(s.Index), s.UUID, o.Resource, o.Namespace, o.Pod, o.Container}
			emit(prometheus.MustNewConstMetric(g.allocation.plain, prometheus.GaugeValue, 1, append(lvs, f.PodLabels.Values(o.Namespace, o.Pod)...)...))
		}
		if s.Up {
			g.values(emit, t, s)
			g.migValues(emit, f, s)
			if n, ok := processCount(s); ok {
				emit(g.processes.metric(t, float64(n)))
			}
		}
	}
	for _, x := range f.XIDs {
		t, ok := targets[x.GPU]
		if !ok {
			t = target{id: []string{strconv.Itoa(x.GPU), x.UUID, "", ""}}
		}
		emit(g.xid.metric(t, float64(x.Count), strconv.FormatUint(x.XID, 10)))
	}
	for _, w := range f.EventWatch {
		t, ok := targets[w.GPU]
		if !ok {
			t = target{id: []string{strconv.Itoa(w.GPU), w.UUID, "", ""}}
		}
		emit(g.xidWatch.metric(t, boolValue(w.Watched)))
	}
}

// migTarget labels a MIG instance: the GPU's identity, then its own
// holder if a pod has it.
func migTarget(f *telemetry.Frame, s gpu.Sample, inst gpu.MIGInstance) target {
	t := target{id: []string{strconv.Itoa(s.Index), s.UUID, s.PCIBusID, s.Product}}
	if o := f.Pods[inst.UUID]; len(o) > 0 {
		t.owner = []string{o[0].Namespace, o[0].Pod, o[0].Container}
	}
	return t
}

// migValues emits the per-instance series of a GPU in MIG mode.
func (g *gpuFamilies) migValues(emit func(prometheus.Metric), f *telemetry.Frame, s gpu.Sample) {
	m := g.mig
	for _, inst := range s.MIG {
		t := migTarget(f, s, inst)
		gi, ci := strconv.Itoa(inst.GPUInstanceID), strconv.Itoa(inst.ComputeInstanceID)
		emit(m.info.metric(t, 1, gi, ci, inst.Profile, inst.UUID))
		for _, o := range f.Pods[inst.UUID] {
			lvs := []string{strconv.Itoa(s.Index), s.UUID, gi, ci, o.Resource, o.Namespace, o.Pod, o.Container}
			emit(prometheus.MustNewConstMetric(m.allocation.plain, prometheus.GaugeValue, 1, append(lvs, f.PodLabels.Values(o.Namespace, o.Pod)...)...))
		}
		for _, v := range []struct {
			fam family
			p   *uint64
		}{{m.memUsed, inst.MemoryUsedBytes}, {m.memFree, inst.MemoryFreeBytes}, {m.memTotal, inst.MemoryTotalBytes}} {
			if v.p != nil {
				emit(v.fam.metric(t, float64(*v.p), gi, ci))
			}
		}
		if p := inst.Profiling; p != nil {
			for _, v := range []struct {
				fam family
				p   *float64
			}{{m.graphicsActive, p.GraphicsActive}, {m.smActive, p.SMActive}, {m.smOccupancy, p.SMOccupancy},
				{m.tensorActive, p.TensorActive}, {m.dramActive, p.DRAMActive}} {
				if v.p != nil {
					emit(v.fam.metric(t, *v.p, gi, ci))
				}
			}
		}
	}
}

func (g *gpuFamilies) infoValues(s gpu.Sample, d *snapshot.GPU, drv *snapshot.GPUDriver) []string {
	arch, cc, vbios, numa, mig := "", "", "", "", ""
	if d != nil {
		arch, vbios, numa = d.Architecture, d.VBIOSVersion, strconv.Itoa(d.NUMANode)
		if d.ComputeMajor > 0 {
			cc = strconv.Itoa(d.ComputeMajor) + "." + strconv.Itoa(d.ComputeMinor)
		}
		if d.MIG.Capable {
			mig = "disabled"
			if d.MIG.Enabled {
				mig = "enabled"
			}
		}
	}
	driver, cuda := "", ""
	if drv != nil {
		driver, cuda = drv.DriverVersion, drv.CUDAVersion
	}
	return []string{arch, cc, driver, cuda, vbios, numa, s.DeviceNode, mig}
}

// values emits the readings of a GPU that answered; each is present only
// when the device gave it.
func (g *gpuFamilies) values(emit func(prometheus.Metric), t target, s gpu.Sample) {
	opt := func(fam family, p *float64, extra ...string) {
		if p != nil {
			emit(fam.metric(t, *p, extra...))
		}
	}
	optU := func(fam family, p *uint64, scale float64, extra ...string) {
		if p != nil {
			emit(fam.metric(t, float64(*p)*scale, extra...))
		}
	}
	opt(g.util, s.Utilization)
	opt(g.memUtil, s.MemoryUtilization)
	optU(g.memUsed, s.MemoryUsedBytes, 1)
	optU(g.memFree, s.MemoryFreeBytes, 1)
	optU(g.memReserved, s.MemoryReservedBytes, 1)
	optU(g.memTotal, s.MemoryTotalBytes, 1)
	opt(g.power, s.PowerWatts)
	opt(g.powerLimit, s.PowerLimitWatts)
	optU(g.energy, s.EnergyMillijoules, 1e-3)
	for _, x := range s.Temperatures {
		emit(g.temp.metric(t, x.Celsius, x.Sensor))
	}
	for _, c := range s.Clocks {
		emit(g.clock.metric(t, c.Hertz, c.Clock))
	}
	for _, r := range s.ClockEventReasons {
		emit(g.clockReason.metric(t, boolValue(r.Active), r.Reason))
	}
	if p := s.PCIe; p != nil {
		optU(g.pcieTx, p.TransmitBytes, 1)
		optU(g.pcieRx, p.ReceiveBytes, 1)
		optU(g.pcieReplay, p.ReplayErrors, 1)
		opt(g.pcieTxRate, p.TransmitBytesPerSecond)
		opt(g.pcieRxRate, p.ReceiveBytesPerSecond)
		if p.LinkGeneration != nil {
			emit(g.pcieGen.metric(t, float64(*p.LinkGeneration)))
		}
		if p.LinkWidth != nil {
			emit(g.pcieWidth.metric(t, float64(*p.LinkWidth)))
		}
	}
	if ic := s.Interconnect; ic != nil {
		for _, l := range ic.Links {
			n := strconv.Itoa(l.Number)
			emit(g.linkUp.metric(t, boolValue(l.Up), n, ic.Kind))
			optU(g.linkTx, l.TransmitBytes, 1, n, ic.Kind)
			optU(g.linkRx, l.ReceiveBytes, 1, n, ic.Kind)
		}
		emit(g.linksActive.metric(t, float64(ic.ActiveLinks()), ic.Kind))
		for _, e := range ic.Errors {
			emit(g.linkErrors.metric(t, float64(e.Count), ic.Kind, e.Type))
		}
	}
	for _, e := range s.ECC {
		emit(g.ecc.metric(t, float64(e.Count), e.Type, e.Scope))
	}
	if r := s.RemappedRows; r != nil {
		emit(g.remapped.metric(t, float64(r.Correctable), "correctable"))
		emit(g.remapped.metric(t, float64(r.Uncorrectable), "uncorrectable"))
		emit(g.remapPending.metric(t, boolValue(r.Pending)))
		emit(g.remapFailed.metric(t, boolValue(r.Failed)))
	}
	if p := s.Profiling; p != nil {
		opt(g.graphicsActive, p.GraphicsActive)
		opt(g.smActive, p.SMActive)
		opt(g.smOccupancy, p.SMOccupancy)
		opt(g.tensorActive, p.TensorActive)
		opt(g.dramA, p.DRAMActive)
	}
}
