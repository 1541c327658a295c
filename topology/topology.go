// Package topology discovers the host facts the agent reasons about: CPUs,
// NUMA nodes, the PCI devices that matter for GPU inference (GPUs, NICs,
// NVSwitches) with their place in the PCIe tree, the kernel, loaded modules,
// CPUs isolated on the kernel command line and the interrupts of our devices.
package topology

import "github.com/gpunode/gpunode/internal/cpuset"

// Topology is the host as discovered under one root.
type Topology struct {
	Hostname string `json:"hostname,omitempty"`
	// Kernel is the release string ("6.1.0-28-amd64").
	Kernel string `json:"kernel"`
	// OnlineCPUs are the CPUs the kernel runs on.
	OnlineCPUs cpuset.Set `json:"online_cpus"`
	// IsolatedCPUs (isolcpus=) and NohzFullCPUs (nohz_full=) from the
	// kernel command line; tuning never places interrupts on them.
	IsolatedCPUs cpuset.Set `json:"isolated_cpus"`
	// IsolatedCPUFlags are the isolcpus= flags in effect, sorted ("domain",
	// "managed_irq", "nohz"); "domain" alone when isolcpus= names none.
	IsolatedCPUFlags []string   `json:"isolated_cpu_flags,omitempty"`
	NohzFullCPUs     cpuset.Set `json:"nohz_full_cpus"`
	NUMANodes        []NUMANode `json:"numa_nodes"`
	// HugePages are the huge page sizes the kernel command line reserves,
	// with what the kernel allocated, by size.
	HugePages []HugePages `json:"huge_pages,omitempty"`
	// HugePagesIgnored are the command line's huge page parameters the
	// kernel ignores (garbage, a size or count given twice), with why.
	HugePagesIgnored []string    `json:"huge_pages_ignored,omitempty"`
	PCIDevices       []PCIDevice `json:"pci_devices"`
	// Modules are the loaded kernel modules, sorted by name.
	Modules []string `json:"modules"`
	// NVIDIAKernelModule describes /proc/driver/nvidia/version, if present.
	NVIDIAKernelModule *NVIDIAKernelModule `json:"nvidia_kernel_module,omitempty"`
	// IMEX is the node's NVIDIA IMEX channels and daemon; nil where there
	// are none.
	IMEX *IMEX `json:"imex,omitempty"`
	// Machine is the DMI product name (/sys/class/dmi/id/product_name);
	// empty where the platform has no DMI or does not say.
	Machine string `json:"machine,omitempty"`
	// IRQs are the interrupts that belong to the PCI devices above.
	IRQs []IRQ `json:"irqs,omitempty"`
	// Errors lists what could not be read; everything else is still reported.
	Errors []string `json:"errors,omitempty"`
}

// NUMANode is one NUMA node.
type NUMANode struct {
	ID          int        `json:"id"`
	CPUs        cpuset.Set `json:"cpus"`
	MemoryBytes uint64     `json:"memory_bytes"`
	// Distances to every node, in node order, as /sys reports them.
	Distances []int `json:"distances,omitempty"`
}

// PCIKind is what a PCI device is to us.
type PCIKind string

const (
	KindGPU      PCIKind = "gpu"
	KindNIC      PCIKind = "nic"      // Ethernet or InfiniBand controller
	KindNVSwitch PCIKind = "nvswitch" // NVIDIA bridge-class devices
)

// The GPU vendors' PCI ids, as PCIDevice.Vendor spells them.
const (
	PCIVendorNVIDIA = "0x10de"
	PCIVendorAMD    = "0x1002"
)

// PCIDevice is a device under /sys/bus/pci/devices that matters to us.
type PCIDevice struct {
	Address string  `json:"address"` // "0000:1b:00.0"
	Kind    PCIKind `json:"kind"`
	Class   string  `json:"class"`  // "0x030200"
	Vendor  string  `json:"vendor"` // "0x10de"
	Device  string  `json:"device"` // "0x2330"
	Driver  string  `json:"driver,omitempty"`
	// NUMANode is -1 when the platform does not say.
	NUMANode  int        `json:"numa_node"`
	LocalCPUs cpuset.Set `json:"local_cpus"`
	Link      *PCIeLink  `json:"link,omitempty"`
	// Path is the chain of devices from the host bridge down to this one:
	// ["pci0000:15", "0000:15:01.0", "0000:16:00.0", "0000:17:00.0", "0000:18:00.0"].
	// Two devices share a PCIe root when Path[0] is equal and a switch
	// when they share a bridge below the root port.
	Path []string `json:"path"`
	// VirtualFunction is true for SR-IOV VFs (they have a "physfn" link).
	VirtualFunction bool `json:"virtual_function,omitempty"`
	// IOMMUGroupType is how the IOMMU handles the device's DMA
	// (iommu_group/type): "identity" (passthrough), "DMA" or "DMA-FQ"
	// (translated); "" without an IOMMU group.
	IOMMUGroupType string `json:"iommu_group_type,omitempty"`
	// PCIe holds registers of the configuration space (root reads all of
	// it); nil where it cannot be read.
	PCIe *PCIeConfig `json:"pcie_config,omitempty"`
	// Errors lists what could not be read for this device; the rest of the
	// device is still reported.
	Errors []string `json:"errors,omitempty"`
}

// PCIeLink is the trained and the maximum link of a PCIe device.
type PCIeLink struct {
	CurrentSpeed string `json:"current_speed,omitempty"` // "32.0 GT/s PCIe"
	CurrentGen   int    `json:"current_gen,omitempty"`
	CurrentWidth int    `json:"current_width,omitempty"`
	MaxSpeed     string `json:"max_speed,omitempty"`
	MaxGen       int    `json:"max_gen,omitempty"`
	MaxWidth     int    `json:"max_width,omitempty"`
}

// NVIDIAKernelModule is the loaded NVIDIA kernel driver.
type NVIDIAKernelModule struct {
	Version string `json:"version"`
	// Open is true for the open GPU kernel modules, which support dma-buf
	// for GPUDirect RDMA without nvidia_peermem.
	Open bool `json:"open"`
}

// IRQ is one interrupt line from /proc/interrupts that belongs to a device
// we care about.
type IRQ struct {
	Number int `json:"number"`
	// PCIAddress of the device that raises it ("" if only known by name).
	PCIAddress string `json:"pci_address,omitempty"`
	// Name is the action name(s) from /proc/interrupts ("mlx5_comp3@pci:0000:18:00.0").
	Name string `json:"name"`
	// Affinity is /proc/irq/N/smp_affinity_list.
	Affinity cpuset.Set `json:"affinity"`
}
