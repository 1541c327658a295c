// Package gpu is the vendor-neutral model of the GPUs on a node and the
// Backend interface that vendor libraries (NVML, AMD SMI) and sysfs readers
// implement.
package gpu

import (
	"bufio"
	"bytes"
	"context"
	"path"
	"strings"
)

// Vendor of a GPU.
type Vendor string

const (
	NVIDIA Vendor = "nvidia"
	AMD    Vendor = "amd"
)

// Backend discovers the GPUs of one vendor. Inventory returns an error for
// which errors.Is(err, source.ErrAbsent) holds when the vendor's library or
// driver is not on this host: a CPU-only node is a normal node.
//
// Inventory may return devices together with an error when some devices
// answered and others did not; the answering ones are kept.
type Backend interface {
	// Name identifies the backend in source status ("nvml", "amdsmi", "amdgpu").
	Name() string
	Inventory(ctx context.Context) (Inventory, error)
	// Close releases the library. The backend is not used afterwards.
	Close() error
}

// Inventory is what a backend knows about the node's GPUs: identity and
// capabilities that change rarely (not live samples).
type Inventory struct {
	Backend       string `json:"backend"`
	DriverVersion string `json:"driver_version,omitempty"`
	// CUDAVersion is the highest CUDA version the driver supports ("12.4").
	CUDAVersion string `json:"cuda_version,omitempty"`
	// LibraryVersion is the management library's own version (NVML, AMD SMI).
	LibraryVersion string `json:"library_version,omitempty"`
	// ROCmVersion is the ROCm release on AMD nodes ("6.4.1").
	ROCmVersion string `json:"rocm_version,omitempty"`
	// Library is the management library file the backend loaded; nil for
	// a backend with no file (sysfs, a simulated node).
	Library *Library `json:"library,omitempty"`
	Devices []Device `json:"devices"`
	// NotVisible are the indices of GPUs the driver counts but this
	// process may not open (NVML answers NO_PERMISSION: the container's
	// device cgroup or /dev/nvidiaN permissions leave them out). They are
	// not in Devices, not sampled and not judged: other workloads' GPUs,
	// not failed ones.
	NotVisible []int `json:"not_visible,omitempty"`
}

// Library is where a backend's management library was found.
type Library struct {
	// Path is the file loaded, symlinks resolved, as this process sees it
	// (under the host root when it came from the host).
	Path string `json:"path"`
	// Found says how: "configured" (a libraryPath setting), "driverRoot"
	// (under gpu.nvml.driverRoot), "runtime" (by name: the library the
	// container runtime injected, or the loader's search path),
	// "well-known" (a known driver location under the host root).
	Found string `json:"found"`
}

// Ways a library is found (Library.Found).
const (
	FoundConfigured = "configured"
	FoundDriverRoot = "driverRoot"
	FoundRuntime    = "runtime"
	FoundWellKnown  = "well-known"
)

// Device is one physical GPU.
type Device struct {
	Index  int    `json:"index"`
	Vendor Vendor `json:"vendor"`
	UUID   string `json:"uuid"`
	// Product is the name the driver reports ("NVIDIA H100 80GB HBM3").
	Product string `json:"product"`
	// Architecture in lower case: "ampere", "hopper", "blackwell", "cdna3".
	Architecture string `json:"architecture,omitempty"`
	ComputeMajor int    `json:"compute_major,omitempty"`
	ComputeMinor int    `json:"compute_minor,omitempty"`
	MemoryBytes  uint64 `json:"memory_bytes"`
	// PCIBusID in sysfs form: 4-digit domain, lower case ("0000:1b:00.0").
	PCIBusID string `json:"pci_bus_id"`
	// PCIDeviceID is the 16-bit PCI device id ("0x2330").
	PCIDeviceID string `json:"pci_device_id,omitempty"`
	// NUMANode is -1 when unknown.
	NUMANode        int           `json:"numa_node"`
	MIG             MIG           `json:"mig"`
	Interconnect    *Interconnect `json:"interconnect,omitempty"`
	PowerLimitWatts float64       `json:"power_limit_watts,omitempty"`
	PCIeLink        *PCIeLink     `json:"pcie_link,omitempty"`
	// ECC is the memory ECC mode; nil when the GPU has no ECC memory or
	// the library cannot tell.
	ECC *ECCMode `json:"ecc,omitempty"`
	// RemappedRows is the row remapping state (Ampere and newer); nil
	// where the GPU does not remap rows.
	RemappedRows *RemappedRows `json:"remapped_rows,omitempty"`
	// Fabric is the NVLink fabric (NVSwitch) registration state; nil where
	// the GPU reports none (no NVSwitch, or a driver without the call).
	Fabric       *Fabric  `json:"fabric,omitempty"`
	Serial       string   `json:"serial,omitempty"`
	VBIOSVersion string   `json:"vbios_version,omitempty"`
	Errors       []string `json:"errors,omitempty"`

	// ComputeUnits is the number of compute units (AMD); 0 if unknown.
	ComputeUnits int `json:"compute_units,omitempty"`
	// Partition is the compute and memory partitioning of GPUs that have
	// it (AMD MI300: SPX/CPX, NPS1/NPS4); nil when the GPU cannot say.
	Partition *Partition `json:"partition,omitempty"`
}

// MIG is the Multi-Instance GPU state. Current and Pending differ until the
// GPU is reset after a mode change.
type MIG struct {
	Capable bool `json:"capable"`
	Enabled bool `json:"enabled"`
	Pending bool `json:"pending"`
}

// Interconnect describes the GPU-to-GPU links (NVLink, XGMI).
type Interconnect struct {
	// Kind is "nvlink" or "xgmi".
	Kind string `json:"kind"`
	// Links is the number of links the GPU has.
	Links int `json:"links"`
	// Active is the number of links that are up.
	Active int `json:"active"`
	// Generation is the link generation (NVLink 4 on H100, 5 on B200); 0 if unknown.
	Generation int `json:"generation,omitempty"`
}

// Partition is how an AMD GPU is partitioned: Compute is the current
// compute partition mode ("SPX", "DPX", "QPX", "CPX"), Memory the memory
// mode ("NPS1", "NPS4"); the Available lists are the modes it supports.
type Partition struct {
	Compute          string   `json:"compute,omitempty"`
	Memory           string   `json:"memory,omitempty"`
	AvailableCompute []string `json:"available_compute,omitempty"`
	AvailableMemory  []string `json:"available_memory,omitempty"`
}

// PCIeLink is the GPU's PCIe link as the device reports it. MaxGen and
// MaxWidth are the most the GPU and its slot together can train to.
type PCIeLink struct {
	CurrentGen   int `json:"current_gen"`
	MaxGen       int `json:"max_gen"`
	CurrentWidth int `json:"current_width"`
	MaxWidth     int `json:"max_width"`
	// PerformanceState is the GPU's performance state when the link was
	// read ("P0" the highest, "P8" idle on NVIDIA), empty when unknown.
	// GPUs lower the link generation in lower performance states, so
	// CurrentGen below MaxGen shows a link that trained low only at P0.
	PerformanceState string `json:"performance_state,omitempty"`
}

// ECCMode is the GPU memory's ECC setting. Current and Pending differ
// until the GPU is reset after a mode change.
type ECCMode struct {
	Enabled bool `json:"enabled"`
	Pending bool `json:"pending"`
}

// Fabric states, as NVML's nvmlGpuFabricState_t names them.
const (
	FabricNotStarted = "not-started"
	FabricInProgress = "in-progress"
	FabricCompleted  = "completed"
)

// Fabric is a GPU's registration with the NVLink fabric: the fabric
// manager programs the NVSwitches, then each GPU's state becomes
// completed, with Status the outcome ("success" or the error).
type Fabric struct {
	State  string `json:"state"`
	Status string `json:"status,omitempty"`
	// Clique names the multi-node NVLink domain partition the GPU belongs
	// to (GB200/GB300 NVL): "<cluster UUID>.<clique id>", the format of GPU
	// Feature Discovery's nvidia.com/gpu.clique. Empty until registration
	// completed successfully, and where the cluster UUID is all zeros
	// (single-node NVSwitch systems such as HGX H100 report that).
	Clique string `json:"clique,omitempty"`
}

// NormalizePCIBusID turns NVML's "00000000:1B:00.0" (or any case and domain
// width) into sysfs form "0000:1b:00.0"; a VMD domain stays "10000:e1:00.0". Input that does not look like a
// bus id is returned lower-cased and trimmed.
func NormalizePCIBusID(id string) string {
	id = strings.ToLower(strings.TrimSpace(strings.TrimRight(id, "\x00")))
	dom, rest, ok := strings.Cut(id, ":")
	if !ok || strings.Count(rest, ":") != 1 {
		return id
	}
	// NVML pads the domain to 8 digits, sysfs to 4; VMD domains (10000 and
	// up) keep all their digits in both.
	dom = strings.TrimLeft(dom, "0")
	for len(dom) < 4 {
		dom = "0" + dom
	}
	return dom + ":" + rest
}

// MappedLibrary finds in /proc/<pid>/maps the file mapped for the library
// soname ("libnvidia-ml.so.1" matches /usr/lib64/libnvidia-ml.so.550.54.15
// and /usr/lib64/libnvidia-ml.so.1): the first whose name starts with the
// soname's stem; "" when none is mapped.
func MappedLibrary(maps []byte, soname string) string {
	stem, _, _ := strings.Cut(soname, ".so")
	stem += ".so"
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// address perms offset dev inode pathname (the path may hold spaces)
		fields := strings.SplitN(sc.Text(), " ", 6)
		if len(fields) < 6 {
			continue
		}
		p := strings.TrimSpace(fields[5])
		if !strings.HasPrefix(p, "/") {
			continue
		}
		if b := path.Base(p); b == stem || strings.HasPrefix(b, stem+".") {
			return p
		}
	}
	return ""
}
