package verify

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/topology"
)

// Advice: settings of the kernel command line and the firmware that only
// a reboot or firmware setup changes. They are read (from /proc/cmdline
// and the PCI configuration space in sysfs), reported with the remedy, and
// never written: tuning does not touch a boot loader or setpci.

// minMaxReadRequest is the PCIe Max_Read_Request_Size NVIDIA's ConnectX
// performance tuning asks for: RDMA reads and sends are read from host
// memory in requests of at most this size.
const minMaxReadRequest = 4096

// dmaDevices are the GPUs and physical NICs, in snapshot order.
func dmaDevices(s *snapshot.Snapshot) []topology.PCIDevice {
	var out []topology.PCIDevice
	for _, d := range s.PCIDevices {
		if (d.Kind == topology.KindGPU || d.Kind == topology.KindNIC) && !d.VirtualFunction {
			out = append(out, d)
		}
	}
	return out
}

// rdmaPeers are the GPUs and the NICs with an RDMA device: the devices
// GPUDirect RDMA moves data between (a management NIC's PCIe settings
// matter to no one).
func rdmaPeers(s *snapshot.Snapshot) []topology.PCIDevice {
	rdmaPCI := map[string]bool{}
	for _, d := range s.RDMADevices {
		if d.PCIAddress != "" {
			rdmaPCI[d.PCIAddress] = true
		}
	}
	var out []topology.PCIDevice
	for _, d := range dmaDevices(s) {
		if d.Kind == topology.KindGPU || rdmaPCI[d.Address] {
			out = append(out, d)
		}
	}
	return out
}

func iommuPassthrough() Check {
	return Check{
		Name: "iommu-passthrough", Severity: Warning,
		Summary: "GPU and NIC DMA is not translated by the IOMMU (iommu_group/type identity, or no IOMMU): translation adds an IOTLB lookup to every GPUDirect RDMA transfer",
		Remedy:  "boot with iommu=pt (with intel_iommu=on or amd_iommu=on where the IOMMU is wanted for VMs) on the kernel command line, then reboot; a kernel command line is advice, never changed by the agent",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			devs := dmaDevices(s)
			if len(devs) == 0 {
				return []finding{skip(Node, "no GPUs or NICs")}
			}
			var translated, pt []string
			for _, d := range devs {
				switch d.IOMMUGroupType {
				case "", "identity":
					pt = append(pt, d.Address)
				default:
					translated = append(translated, d.Address+" ("+d.IOMMUGroupType+")")
				}
			}
			if len(translated) == 0 {
				return []finding{pass(Node, fmt.Sprintf("%d GPUs and NICs without IOMMU translation", len(pt)), "identity (passthrough) or no IOMMU")}
			}
			return []finding{bad(Node, "translated DMA: "+strings.Join(translated, ", "), "identity (passthrough) or no IOMMU")}
		},
	}
}

func isolcpusManagedIRQ() Check {
	return Check{
		Name: "isolcpus-irqs", Severity: Warning,
		Summary: "CPUs isolated with isolcpus= are also kept free of managed interrupts (the managed_irq flag): otherwise the kernel spreads NVMe and NIC queue interrupts it manages over them",
		Remedy:  "add managed_irq to isolcpus= on the kernel command line (isolcpus=managed_irq,domain,<cpus>) and reboot; the agent never edits the command line",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			iso := s.Host.IsolatedCPUs
			if iso.IsEmpty() {
				return []finding{skip(Node, "no isolcpus=")}
			}
			flags := s.Host.IsolatedCPUFlags
			f := bad(Node, fmt.Sprintf("isolcpus=%s, flags %s", iso, orNone(flags)), "managed_irq")
			f.ok = slices.Contains(flags, "managed_irq")
			return []finding{f}
		},
	}
}

func pcieMaxReadRequest() Check {
	return Check{
		Name: "pcie-max-read-req", Severity: Warning,
		Summary: fmt.Sprintf("RDMA NICs read host memory in PCIe requests of %d bytes (Max_Read_Request_Size in Device Control): smaller requests cut RDMA throughput", minMaxReadRequest),
		Remedy:  fmt.Sprintf("set the NIC's PCIe Max Read Request to %d in firmware setup, or at every boot with setpci (CAP_EXP+8.w, bits 14:12 = 5); the agent reads it and never writes it", minMaxReadRequest),
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			var out []finding
			unread := 0
			for _, d := range rdmaPeers(s) {
				if d.Kind != topology.KindNIC {
					continue
				}
				if d.PCIe == nil {
					unread++
					continue
				}
				f := bad(d.Address, fmt.Sprintf("max read request %d, max payload %d", d.PCIe.MaxReadRequest, d.PCIe.MaxPayload), fmt.Sprintf("max read request %d", minMaxReadRequest))
				f.ok = d.PCIe.MaxReadRequest >= minMaxReadRequest
				out = append(out, f)
			}
			if len(out) == 0 {
				if unread > 0 {
					return []finding{skip(Node, fmt.Sprintf("%d RDMA NICs without a readable PCIe configuration space (the agent reads it as root)", unread))}
				}
				return []finding{skip(Node, "no RDMA NICs")}
			}
			return out
		},
	}
}

func pcieACSRedirect() Check {
	return Check{
		Name: "pcie-acs-redirect", Severity: Warning,
		Summary: "no PCIe switch port above a GPU or RDMA NIC redirects peer-to-peer requests upstream (ACS P2P Request Redirect): with it, GPUDirect RDMA between a GPU and a NIC under one switch goes through the root complex",
		Remedy:  "disable ACS P2P redirect on the switch ports in firmware setup (or at every boot with setpci ECAP_ACS+6.w=0) unless VMs need the isolation; with ACS kept, enable ATS on the NIC so translated requests may still go peer to peer. The agent never writes it",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			var out []finding
			for _, d := range rdmaPeers(s) {
				if d.PCIe == nil {
					continue
				}
				ats := "ATS absent"
				if d.PCIe.ATSEnabled != nil {
					ats = map[bool]string{true: "ATS enabled", false: "ATS disabled"}[*d.PCIe.ATSEnabled]
				}
				f := bad(d.Address, fmt.Sprintf("redirecting switch ports: %s; %s", orNone(d.PCIe.RedirectingBridges), ats), "none")
				f.ok = len(d.PCIe.RedirectingBridges) == 0
				out = append(out, f)
			}
			if len(out) == 0 {
				return []finding{skip(Node, "no GPU or RDMA NIC with a readable PCIe configuration space")}
			}
			return out
		},
	}
}

func hugepagesReserved() Check {
	return Check{
		Name: "hugepages-reserved", Severity: Warning,
		Summary: "the huge pages reserved on the kernel command line (hugepages=, per size and per node) were all allocated at boot: the kernel allocates what it can and logs the shortfall only to dmesg",
		Remedy:  "a node's memory was short or fragmented at boot (or nr_hugepages was lowered since): lower the count, or give per-node counts that fit each node's free memory (hugepagesz=1G hugepages=0:<n>,1:<n>), keep 1G reservations on the command line rather than at runtime, check dmesg for the HugeTLB allocation message, and reboot; the agent never edits the command line",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			if len(s.Host.HugePages) == 0 && len(s.Host.HugePagesIgnored) == 0 {
				return []finding{skip(Node, "no hugepages= on the kernel command line")}
			}
			var out []finding
			if len(s.Host.HugePagesIgnored) > 0 {
				f := bad(Node, "the kernel ignores: "+strings.Join(s.Host.HugePagesIgnored, "; "), "every hugepages=, hugepagesz= and default_hugepagesz= taken")
				f.remedy = "fix or remove the parameters the kernel ignores (each size once with hugepagesz=<size> followed by its one hugepages=<n> or hugepages=<node>:<n>,...; default_hugepagesz= once) and reboot; the agent never edits the command line"
				out = append(out, f)
			}
			for _, h := range s.Host.HugePages {
				subject := fmt.Sprintf("hugepages-%dkB", h.SizeKB)
				want := fmt.Sprintf("%d pages of %s", h.Requested, hugeSize(h.SizeKB))
				if len(h.RequestedPerNode) > 0 {
					want += " (" + nodePages(h.RequestedPerNode) + ")"
				}
				if h.NoPool {
					f := bad(subject, "the kernel has no pool of this size", want)
					f.remedy = "the kernel rejected hugepagesz= (a size this CPU does not have: 1G pages need the pdpe1gb CPU flag on x86, and dmesg says \"unsupported page size\"): name a size the CPU has and reboot; the agent never edits the command line"
					out = append(out, f)
					continue
				}
				got := fmt.Sprintf("%d allocated", h.Allocated)
				if len(h.AllocatedPerNode) > 0 {
					got += " (" + nodePages(h.AllocatedPerNode) + ")"
				}
				f := bad(subject, got, want)
				f.ok = h.Allocated >= h.Requested
				if len(h.RequestedPerNode) > 0 && len(h.AllocatedPerNode) > 0 {
					// The node format is a promise per node: pages a node
					// lacks are not made up by another.
					have := map[int]uint64{}
					for _, n := range h.AllocatedPerNode {
						have[n.Node] = n.Pages
					}
					for _, n := range h.RequestedPerNode {
						f.ok = f.ok && have[n.Node] >= n.Pages
					}
				}
				out = append(out, f)
			}
			return out
		},
	}
}

// hugeSize names a huge page size the way hugepagesz= does ("2M", "1G").
func hugeSize(kb uint64) string {
	switch {
	case kb >= 1<<20 && kb%(1<<20) == 0:
		return fmt.Sprintf("%dG", kb>>20)
	case kb >= 1<<10 && kb%(1<<10) == 0:
		return fmt.Sprintf("%dM", kb>>10)
	}
	return fmt.Sprintf("%dK", kb)
}

func nodePages(ns []topology.NodePages) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = fmt.Sprintf("node%d %d", n.Node, n.Pages)
	}
	return strings.Join(parts, ", ")
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}
