package snapshot

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/topology"
	"github.com/gpunode/gpunode/tuning"
)

// Inputs are the raw results of one discovery run. Results of a source that
// failed may be partial or empty; its status says so.
type Inputs struct {
	TakenAt   time.Time
	Simulated string
	Topology  topology.Topology
	// GPU is nil when no GPU backend produced an inventory.
	GPU      *gpu.Inventory
	RDMA     []rdma.Device
	Settings []tuning.Setting
	Sources  []source.Status
}

// Build assembles a Snapshot and derives the cross-source facts. One of
// them changes a source's status: a GPU backend that was absent on a node
// whose PCI bus shows GPUs bound to that vendor's driver is an error (see
// GPUsWithoutBackend). It does not modify its inputs.
func Build(in Inputs) *Snapshot {
	t := in.Topology
	s := &Snapshot{
		TakenAt:   in.TakenAt,
		Simulated: in.Simulated,
		Host: Host{
			Hostname:           t.Hostname,
			Kernel:             t.Kernel,
			OnlineCPUs:         t.OnlineCPUs,
			IsolatedCPUs:       t.IsolatedCPUs,
			IsolatedCPUFlags:   slices.Clone(t.IsolatedCPUFlags),
			NohzFullCPUs:       t.NohzFullCPUs,
			HugePages:          slices.Clone(t.HugePages),
			HugePagesIgnored:   slices.Clone(t.HugePagesIgnored),
			Modules:            slices.Clone(t.Modules),
			NVIDIAKernelModule: t.NVIDIAKernelModule,
			IMEX:               t.IMEX,
			Machine:            t.Machine,
		},
		RDMADevices: slices.Clone(in.RDMA),
		NUMANodes:   slices.Clone(t.NUMANodes),
		PCIDevices:  slices.Clone(t.PCIDevices),
		IRQs:        slices.Clone(t.IRQs),
		Settings:    slices.Clone(in.Settings),
		Sources:     slices.Clone(in.Sources),
	}
	slices.SortFunc(s.Sources, func(a, b source.Status) int { return cmp.Compare(a.Name, b.Name) })
	s.GPUsWithoutBackend = gpusWithoutBackend(t.PCIDevices, s.Sources)
	pci := make(map[string]topology.PCIDevice, len(t.PCIDevices))
	for _, d := range t.PCIDevices {
		pci[d.Address] = d
	}
	if in.GPU != nil {
		s.GPUDriver = &GPUDriver{
			Backend:        in.GPU.Backend,
			DriverVersion:  in.GPU.DriverVersion,
			CUDAVersion:    in.GPU.CUDAVersion,
			LibraryVersion: in.GPU.LibraryVersion,
			ROCmVersion:    in.GPU.ROCmVersion,
			Library:        in.GPU.Library,
			GPUsNotVisible: in.GPU.NotVisible,
		}
		for _, d := range in.GPU.Devices {
			s.GPUs = append(s.GPUs, placeGPU(d, pci, s.RDMADevices))
		}
	}
	s.GPUDirect = gpuDirect(s)
	return s
}

// relationRank orders relations from nearest to farthest.
var relationRank = map[string]int{"PIX": 0, "PXB": 1, "PHB": 2, "NODE": 3, "SYS": 4}

// placeGPU fills in where the GPU sits relative to the RDMA devices. The
// PCI device's numa_node in sysfs decides the GPU's NUMA node: NVML's NUMA
// query answers only on platforms where GPU memory is its own NUMA node
// (GH200), where it names that node rather than the CPUs near the GPU.
func placeGPU(d gpu.Device, pci map[string]topology.PCIDevice, nics []rdma.Device) GPU {
	g := GPU{Device: d, RDMASameNUMA: []string{}, RDMASamePCIeRoot: []string{}, Affinity: []Affinity{}}
	g.Errors = slices.Clone(d.Errors)
	self, known := pci[d.PCIBusID]
	if known {
		g.PCIePath = self.Path
		if self.NUMANode >= 0 {
			g.NUMANode = self.NUMANode
		}
	}
	for _, n := range nics {
		a := Affinity{RDMADevice: n.Name, SameNUMA: g.NUMANode >= 0 && g.NUMANode == n.NUMANode}
		for _, p := range n.Ports {
			a.Active = a.Active || p.Active()
		}
		other, ok := pci[n.PCIAddress]
		switch {
		case known && ok:
			a.Relation = topology.Relation(self, other)
		case a.SameNUMA: // a virtual device (soft-RoCE) has no PCIe path
			a.Relation = "NODE"
		default:
			a.Relation = "SYS"
		}
		if a.SameNUMA {
			g.RDMASameNUMA = append(g.RDMASameNUMA, n.Name)
		}
		if relationRank[a.Relation] <= relationRank["PHB"] {
			g.RDMASamePCIeRoot = append(g.RDMASamePCIeRoot, n.Name)
		}
		g.Affinity = append(g.Affinity, a)
	}
	slices.SortStableFunc(g.Affinity, func(a, b Affinity) int {
		return cmp.Or(cmp.Compare(relationRank[a.Relation], relationRank[b.Relation]), cmp.Compare(a.RDMADevice, b.RDMADevice))
	})
	return g
}

// gpuDirect decides whether GPUDirect RDMA is possible: a GPU, an RDMA
// device user space can open, and a way for the NIC to reach GPU memory —
// the nvidia_peermem module (nv_peer_mem before it), or dma-buf, which
// needs the open NVIDIA kernel modules and Linux 5.12 or newer.
func gpuDirect(s *Snapshot) GPUDirect {
	if len(s.GPUs) == 0 {
		if why := s.GPUsNotInventoried(); why != "" {
			return GPUDirect{Reason: "unknown: " + why}
		}
		return GPUDirect{Reason: "no GPUs"}
	}
	verbs := false
	for _, d := range s.RDMADevices {
		verbs = verbs || d.VerbsDevicePresent
	}
	if !verbs {
		return GPUDirect{Reason: "no RDMA device with a verbs interface (/dev/infiniband/uverbs*)"}
	}
	var methods, why []string
	for _, m := range []string{"nvidia_peermem", "nv_peer_mem"} {
		if s.Host.HasModule(m) {
			methods = append(methods, m)
			why = append(why, m+" is loaded")
		}
	}
	if km := s.Host.NVIDIAKernelModule; km != nil && km.Open {
		if major, minor, ok := KernelVersion(s.Host.Kernel); ok && (major > 5 || major == 5 && minor >= 12) {
			methods = append(methods, "dma-buf")
			why = append(why, fmt.Sprintf("open NVIDIA kernel module on Linux %d.%d supports dma-buf", major, minor))
		}
	}
	// amdgpu exports VRAM as dma-buf, which RDMA drivers register since
	// Linux 5.12 (ROCm's peer-direct path).
	if s.Host.HasModule("amdgpu") && slices.ContainsFunc(s.GPUs, func(g GPU) bool { return g.Vendor == gpu.AMD }) {
		if major, minor, ok := KernelVersion(s.Host.Kernel); ok && (major > 5 || major == 5 && minor >= 12) {
			methods = append(methods, "dma-buf")
			why = append(why, fmt.Sprintf("amdgpu on Linux %d.%d supports dma-buf", major, minor))
		}
	}
	if len(methods) == 0 {
		return GPUDirect{Reason: "neither nvidia_peermem nor dma-buf (open NVIDIA kernel module, Linux 5.12+) is available: load nvidia_peermem"}
	}
	return GPUDirect{Possible: true, Methods: methods, Reason: strings.Join(why, "; ")}
}

// KernelVersion parses the major and minor numbers of a kernel release
// string such as "6.8.0-49-generic".
func KernelVersion(release string) (major, minor int, ok bool) {
	a, rest, found := strings.Cut(release, ".")
	if !found {
		return 0, 0, false
	}
	b := rest
	if i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		b = rest[:i]
	}
	major, err1 := strconv.Atoi(a)
	minor, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || major < 0 || minor < 0 {
		return 0, 0, false
	}
	return major, minor, true
}
