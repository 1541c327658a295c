package snapshot

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/topology"
)

// GPUsWithoutBackend are GPUs the PCI bus shows bound to their vendor's
// kernel driver while every GPU backend of that vendor that ran was
// absent: the node has GPUs the agent cannot see, typically because its
// container lacks the driver's library (a DaemonSet started without the
// NVIDIA container runtime). Build turns those backends' sources into
// errors, so the node is never taken for one without GPUs.
type GPUsWithoutBackend struct {
	Vendor gpu.Vendor `json:"vendor"`
	// Driver is the kernel driver the GPUs are bound to ("nvidia", "amdgpu").
	Driver string `json:"driver"`
	// PCIAddresses of the GPUs, sorted.
	PCIAddresses []string `json:"pci_addresses"`
	// Backends are the vendor's GPU backend sources that ran and were
	// absent ("nvml"); they are reported as errors.
	Backends []string `json:"backends"`
	// Fix says what gives the agent a working backend.
	Fix string `json:"fix"`
}

// Summary says it in a few words: "8 NVIDIA GPUs on PCI not inventoried: nvml failed".
func (g GPUsWithoutBackend) Summary() string {
	return fmt.Sprintf("%s not inventoried: %s failed", gpusOnPCI(len(g.PCIAddresses), vendorName(g.Vendor)), strings.Join(g.Backends, ", "))
}

// GPUsNotInventoried summarises GPUsWithoutBackend in one line; "" when
// every GPU bound to its driver on PCI had a backend that ran.
func (s *Snapshot) GPUsNotInventoried() string {
	var parts []string
	for _, g := range s.GPUsWithoutBackend {
		parts = append(parts, g.Summary())
	}
	return strings.Join(parts, "; ")
}

// gpuVendor is what cross-checking one vendor's GPUs against the PCI bus
// needs: its PCI id, the kernel driver its GPUs are bound to when usable,
// the backends that inventory them, and what the agent then lacks and
// how to give it.
type gpuVendor struct {
	vendor   gpu.Vendor
	pci      string
	driver   string
	backends []string
	lacking  string
	fix      string
}

// gpuVendors lists the vendors discovery has backends for.
var gpuVendors = []gpuVendor{
	{
		vendor: gpu.NVIDIA, pci: topology.PCIVendorNVIDIA, driver: "nvidia", backends: []string{source.NVML},
		lacking: "NVML is not available",
		fix:     "mount the driver library and devices into the agent: run it with the NVIDIA container runtime (chart: runtimeClassName), or set gpu.nvml.driverRoot to the host path of the driver's root (/run/nvidia/driver with the GPU operator's driver container, /home/kubernetes/bin/nvidia on GKE) mounted under the host root, or gpu.nvml.libraryPath to the library itself",
	},
	{
		vendor: gpu.AMD, pci: topology.PCIVendorAMD, driver: "amdgpu", backends: []string{source.AMDSMI, source.AMDGPU},
		lacking: "neither AMD SMI nor amdgpu sysfs can read them",
		fix:     "give the agent the host's /sys (class/drm and module/amdgpu under its host root) or ROCm's libamd_smi.so (the host's /opt/rocm under its host root, or gpu.amd.libraryPath)",
	},
}

func vendorName(v gpu.Vendor) string {
	if v == gpu.AMD {
		return "AMD"
	}
	return strings.ToUpper(string(v))
}

func gpusOnPCI(n int, vendor string) string {
	if n == 1 {
		return "1 " + vendor + " GPU on PCI"
	}
	return fmt.Sprintf("%d %s GPUs on PCI", n, vendor)
}

// gpusWithoutBackend cross-checks the GPU backends' sources against the
// PCI bus: for each vendor with GPUs bound to its driver, if the vendor's
// backends that ran were all absent, it rewrites their statuses in
// sources to errors naming the GPUs, the cause and the fix, and returns
// what it found. A vendor whose backends did not run at all (switched off
// in the configuration) is left alone: that is a choice, not a fault.
// GPUs bound to another driver (vfio-pci for a VM, nouveau) or to none
// are not the agent's to read.
func gpusWithoutBackend(pci []topology.PCIDevice, sources []source.Status) []GPUsWithoutBackend {
	var out []GPUsWithoutBackend
	for _, v := range gpuVendors {
		var addrs []string
		for _, d := range pci {
			if d.Kind == topology.KindGPU && d.Vendor == v.pci && d.Driver == v.driver {
				addrs = append(addrs, d.Address)
			}
		}
		var ran []int
		for i, st := range sources {
			if slices.Contains(v.backends, st.Name) {
				ran = append(ran, i)
			}
		}
		if len(addrs) == 0 || len(ran) == 0 || slices.ContainsFunc(ran, func(i int) bool { return sources[i].State != source.Absent }) {
			continue
		}
		slices.Sort(addrs)
		found := GPUsWithoutBackend{Vendor: v.vendor, Driver: v.driver, PCIAddresses: addrs, Fix: v.fix}
		for _, i := range ran {
			st := &sources[i]
			st.State = source.Error
			st.Message = fmt.Sprintf("%s (bound to %s) but %s: %s; %s", gpusOnPCI(len(addrs), vendorName(v.vendor)), v.driver, v.lacking, st.Message, v.fix)
			found.Backends = append(found.Backends, st.Name)
		}
		out = append(out, found)
	}
	return out
}
