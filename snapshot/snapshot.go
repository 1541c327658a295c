// Package snapshot holds one immutable view of the node, assembled from
// every discovery source with each source's status, plus the facts derived
// from combining them (which RDMA devices sit near which GPU, whether
// GPUDirect RDMA is possible). Labels, metrics, tuning plans and reports are
// pure functions of a Snapshot.
package snapshot

import (
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/cpuset"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/topology"
	"github.com/gpunode/gpunode/tuning"
)

// Snapshot is the node at one moment. Treat it as read-only: it is shared
// between goroutines through an atomic pointer.
type Snapshot struct {
	TakenAt time.Time `json:"taken_at"`
	// Simulated names the simulated node, empty on real hardware.
	Simulated string `json:"simulated,omitempty"`
	Host      Host   `json:"host"`
	// GPUDriver describes the GPU management library and driver.
	GPUDriver   *GPUDriver           `json:"gpu_driver,omitempty"`
	GPUs        []GPU                `json:"gpus"`
	RDMADevices []rdma.Device        `json:"rdma_devices"`
	NUMANodes   []topology.NUMANode  `json:"numa_nodes"`
	PCIDevices  []topology.PCIDevice `json:"pci_devices"`
	IRQs        []topology.IRQ       `json:"irqs,omitempty"`
	Settings    []tuning.Setting     `json:"settings"`
	GPUDirect   GPUDirect            `json:"gpudirect_rdma"`
	Sources     []source.Status      `json:"sources"`

	// GPUsWithoutBackend are GPUs on the PCI bus, bound to their driver,
	// that no GPU backend could read; their backends' sources are errors.
	GPUsWithoutBackend []GPUsWithoutBackend `json:"gpus_without_backend,omitempty"`
}

// Host is the kernel and CPU side of the node.
type Host struct {
	Hostname     string     `json:"hostname,omitempty"`
	Kernel       string     `json:"kernel"`
	OnlineCPUs   cpuset.Set `json:"online_cpus"`
	IsolatedCPUs cpuset.Set `json:"isolated_cpus"`
	// IsolatedCPUFlags are the isolcpus= flags in effect ("domain",
	// "managed_irq", ...).
	IsolatedCPUFlags []string   `json:"isolated_cpu_flags,omitempty"`
	NohzFullCPUs     cpuset.Set `json:"nohz_full_cpus"`
	// HugePages are the kernel command line's huge page reservations and
	// what the kernel allocated; none when nothing is reserved.
	HugePages []topology.HugePages `json:"huge_pages,omitempty"`
	// HugePagesIgnored are huge page parameters the kernel ignores.
	HugePagesIgnored   []string                     `json:"huge_pages_ignored,omitempty"`
	Modules            []string                     `json:"modules"`
	NVIDIAKernelModule *topology.NVIDIAKernelModule `json:"nvidia_kernel_module,omitempty"`
	// IMEX is the node's NVIDIA IMEX channels and daemon (multi-node
	// NVLink); nil where there are none.
	IMEX *topology.IMEX `json:"imex,omitempty"`
	// Machine is the DMI product name; empty when unknown.
	Machine string `json:"machine,omitempty"`
}

// GPUDriver is the GPU backend's library and driver identity.
type GPUDriver struct {
	Backend        string `json:"backend"`
	DriverVersion  string `json:"driver_version,omitempty"`
	CUDAVersion    string `json:"cuda_version,omitempty"`
	LibraryVersion string `json:"library_version,omitempty"`
	ROCmVersion    string `json:"rocm_version,omitempty"`
	// Library is the management library file the backend loaded and how
	// it was found; nil for sysfs and simulated nodes.
	Library *gpu.Library `json:"library,omitempty"`
	// GPUsNotVisible are the indices of GPUs the driver counts but the
	// agent may not open (gpu.Inventory.NotVisible); they are not in GPUs.
	GPUsNotVisible []int `json:"gpus_not_visible,omitempty"`
}

// GPU is a discovered GPU with the facts derived from its place in the node.
type GPU struct {
	gpu.Device
	// PCIePath is the GPU's chain of PCI devices from the host bridge.
	PCIePath []string `json:"pcie_path,omitempty"`
	// RDMASameNUMA names the RDMA devices on the GPU's NUMA node.
	RDMASameNUMA []string `json:"rdma_same_numa"`
	// RDMASamePCIeRoot names the RDMA devices under the GPU's PCIe root
	// complex (relation PIX, PXB or PHB).
	RDMASamePCIeRoot []string `json:"rdma_same_pcie_root"`
	// Affinity relates the GPU to every RDMA device, nearest first.
	Affinity []Affinity `json:"affinity"`
}

// Affinity is how close an RDMA device is to a GPU.
type Affinity struct {
	RDMADevice string `json:"rdma_device"`
	// Relation as nvidia-smi topo prints it: PIX, PXB, PHB, NODE or SYS.
	Relation string `json:"relation"`
	SameNUMA bool   `json:"same_numa"`
	// Active is true when the device has at least one ACTIVE port.
	Active bool `json:"active"`
}

// GPUDirect says whether a NIC can DMA straight into GPU memory.
type GPUDirect struct {
	Possible bool `json:"possible"`
	// Methods lists what makes it possible: "nvidia_peermem", "dma-buf".
	Methods []string `json:"methods,omitempty"`
	// Reason explains the verdict in one line.
	Reason string `json:"reason"`
}

// Source returns the status of a named source and whether it ran.
func (s *Snapshot) Source(name string) (source.Status, bool) {
	for _, st := range s.Sources {
		if st.Name == name {
			return st, true
		}
	}
	return source.Status{}, false
}

// HasModule reports whether a kernel module is loaded.
func (h Host) HasModule(name string) bool {
	for _, m := range h.Modules {
		if m == name {
			return true
		}
	}
	return false
}

// TuningMachine is what tuning needs from the snapshot. A failed topology
// source with no CPUs or NUMA nodes to go on is an error the IRQ policies
// report instead of guessing.
func (s *Snapshot) TuningMachine() tuning.Machine {
	m := tuning.Machine{
		Kernel: s.Host.Kernel, OnlineCPUs: s.Host.OnlineCPUs, IsolatedCPUs: s.Host.IsolatedCPUs,
		NohzFullCPUs: s.Host.NohzFullCPUs, NUMANodes: s.NUMANodes, PCIDevices: s.PCIDevices, IRQs: s.IRQs,
	}
	if st, ok := s.Source(source.Topology); !ok || st.State == source.Error && (s.Host.OnlineCPUs.IsEmpty() || len(s.NUMANodes) == 0) {
		m.TopologyError = "topology source: " + st.Message
	}
	return m
}
