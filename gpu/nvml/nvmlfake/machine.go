// Package nvmlfake builds whole-machine NVML fakes for tests and simulated
// nodes: go-nvml's server mocks (mock/dgxh100, dgxh200, dgxb200, dgxa100)
// with every function the agent calls filled in, deterministic identities,
// PCI bus ids that match the simulated host tree, live readings that move
// with a clock (utilization, power, counters that grow), XID events on a
// schedule, and faults injected while in use.
package nvmlfake

import "time"

// Model is a GPU model the fake can build.
type Model string

const (
	A100 Model = "a100" // A100-SXM4-40GB, NVLink 3 (12 links), PCIe Gen4
	H100 Model = "h100" // H100 SXM5 80GB, NVLink 4 (18 links), PCIe Gen5
	H200 Model = "h200" // H200 SXM 141GB, NVLink 4 (18 links), PCIe Gen5
	B200 Model = "b200" // B200 SXM 180GB, NVLink 5 (18 links), PCIe Gen5
)

// Machine describes the NVIDIA side of a node.
type Machine struct {
	Model Model
	// Seed makes UUIDs and serial numbers deterministic and distinct per machine.
	Seed string
	// DriverVersion ("550.54.15") and CUDAVersion (NVML's form: 12040 = 12.4).
	// Zero values take the model's defaults.
	DriverVersion string
	CUDAVersion   int
	// GPUs in NVML index order.
	GPUs []GPU
	// Clock drives the live readings; nil is time.Now. Readings are
	// functions of the time since New, so a fixed clock gives fixed values.
	Clock func() time.Time
	// XIDs are raised when the clock passes their time.
	XIDs []XIDEvent
	// PeriodicXID raises one XID at a fixed interval, GPU after GPU.
	PeriodicXID PeriodicXID
	// FabricCluster and FabricClique are the multi-node NVLink domain's
	// cluster UUID and clique id that GPUs with a completed fabric report
	// (GB200/GB300 NVL trays). The zero UUID is what single-node NVSwitch
	// baseboards (HGX H100/H200/B200) report.
	FabricCluster [16]byte
	FabricClique  uint32
}

// GPU is one device of the machine. Faults are off in the zero value.
type GPU struct {
	// PCIBusID in sysfs form ("0000:1b:00.0"); NVML reports it as "00000000:1B:00.0".
	PCIBusID string
	// NUMANode is what nvmlDeviceGetNumaNodeId reports; negative means the
	// platform has no NUMA information (the call answers NOT_SUPPORTED).
	NUMANode int
	// NVLinkDown lists link numbers reported inactive.
	NVLinkDown []int
	// PCIeGen and PCIeWidth, when non-zero, are the trained (current) link,
	// below the model's maximum on a degraded GPU.
	PCIeGen   int
	PCIeWidth int
	// ECCOff turns ECC off (current and pending), as nvidia-smi -e 0 and
	// a reset leave it.
	ECCOff bool
	// FabricNotStarted leaves the GPU's NVLink fabric registration not
	// started, as when nvidia-fabricmanager is not running; only models
	// on NVSwitch baseboards report a fabric at all.
	FabricNotStarted bool
	// FabricClique, when set, is the clique id this GPU reports instead
	// of the machine's: a tray whose GPUs the fabric manager put into
	// different partitions.
	FabricClique *uint32
	// MIGEnabled turns MIG mode on (current and pending).
	MIGEnabled bool
	// MIG lists the GPU instances of a MIG-enabled GPU by profile
	// ("3g.40gb", "1g.10gb", ...), each with one compute instance.
	MIG []string
	// PCIeCounterBits, when non-zero, is the width the PCIe byte counters
	// (fields 197 and 198) wrap at although NVML reports them as unsigned
	// long long (nvml.h: "Value can be wrapped"); the driver's own PCIe byte
	// counters are 32 bits (NV2080_CTRL_BUS_GET_PEX_UTIL_COUNTERS_PARAMS).
	PCIeCounterBits int
	// VGPU makes the GPU a vGPU guest's: nvmlGpmQueryDeviceSupport says
	// GPM is supported, but every GPM sample answers NOT_SUPPORTED (NVML's
	// answer for what a vGPU guest may not read).
	VGPU bool
	// MIGComputeInstances splits GPU instances (in MIG order) into that
	// many compute instances, each its own MIG device; 0 or missing is one.
	MIGComputeInstances []int
	// Processes run on the GPU: compute, graphics, or MPS clients (whose
	// MPS server is then one of the compute processes, as under MPS).
	Processes []Process
	// Throttled holds clocks down for a while: a cooling or power fault
	// that begins and ends while the agent runs.
	Throttled []Throttle
}

// Throttle is a span of time, measured from New on the machine's clock,
// during which a GPU reports Reasons (nvmlClocksEventReason bits, e.g.
// gonvml.ClocksThrottleReasonHwThermalSlowdown) as holding its clocks down,
// on top of those its load sets. To zero means until the end.
type Throttle struct {
	From, To time.Duration
	Reasons  uint64
}

// Process kinds: NVML lists them by three functions.
const (
	ProcessCompute  = "compute"  // nvmlDeviceGetComputeRunningProcesses
	ProcessGraphics = "graphics" // nvmlDeviceGetGraphicsRunningProcesses
	ProcessMPS      = "mps"      // nvmlDeviceGetMPSComputeRunningProcesses
)

// Process is one process on a fake GPU.
type Process struct {
	PID uint32
	// Kind is ProcessCompute (the zero value), ProcessGraphics or ProcessMPS.
	Kind        string
	MemoryBytes uint64
	// MIGDevice, on a GPU in MIG mode, is the index of the MIG device
	// (in MIG order) the process runs on.
	MIGDevice int
	// SMShare is the process's part of the GPU's load: its SM
	// utilization is SMShare times the GPU's, its memory utilization
	// likewise. The shares of a GPU's processes add up to 1 at most.
	SMShare float64
}
