package verify

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/snapshot"
)

func gpuSubject(g snapshot.GPU) string { return fmt.Sprintf("gpu%d", g.Index) }

// noGPUs is the one finding of a per-GPU check on a node without GPUs in
// its inventory: none at all, or GPUs on PCI that no backend could read
// (the discovery check fails then; this one says why it cannot judge).
func noGPUs(s *snapshot.Snapshot) []finding {
	if why := s.GPUsNotInventoried(); why != "" {
		return []finding{skip(Node, why)}
	}
	return []finding{skip(Node, "no GPUs")}
}

// eachGPU is a check's findings for a per-GPU fact: one per GPU, or the
// node skipped when it has none.
func eachGPU(s *snapshot.Snapshot, check func(snapshot.GPU) finding) []finding {
	if len(s.GPUs) == 0 {
		return noGPUs(s)
	}
	out := make([]finding, 0, len(s.GPUs))
	for _, g := range s.GPUs {
		out = append(out, check(g))
	}
	return out
}

// baseboardGPUs is the GPU count of the baseboard a product only ships
// on: HGX/DGX SXM boards and AMD's OAM platforms carry eight, a GB200 or
// GB300 NVL compute tray four (two Grace superchips of two GPUs). PCIe and
// NVL cards go in any number, so they have no expected count, and neither
// has GH200, whose servers carry one to four superchips.
func baseboardGPUs(product string) (int, bool) {
	p := strings.ToUpper(product)
	if strings.Contains(p, "PCIE") || strings.Contains(p, " NVL") || strings.Contains(p, "GH200") {
		return 0, false
	}
	// Before the B200/B300 match, which "GB200" and "GB300" contain.
	if strings.Contains(p, "GB200") || strings.Contains(p, "GB300") {
		return 4, true
	}
	for _, m := range []string{"SXM", "HBM3", "H200", "B200", "B300", "MI300X", "MI325X", "MI350X", "MI355X"} {
		if strings.Contains(p, m) {
			return 8, true
		}
	}
	return 0, false
}

func gpuCount() Check {
	return Check{
		Name: "gpu-count", Severity: Critical,
		Summary: "the node has the expected number of GPUs (`verify.expectedGPUCount`, or 8 for HGX/DGX and OAM products, 4 for GB200/GB300 NVL trays)",
		Remedy:  "a GPU is missing from the bus or the driver: check `dmesg` for Xid 79 / fallen off the bus, reseat or replace the GPU; set verify.expectedGPUCount if the count is intended",
		run: func(s *snapshot.Snapshot, o Options) []finding {
			n := len(s.GPUs)
			// GPUs on PCI that no backend read: the count is unknown, not
			// 0 (the discovery check fails).
			if unread := s.GPUsNotInventoried(); n == 0 && unread != "" {
				return []finding{skip(Node, unread)}
			}
			// GPUs the driver counts but the agent may not open are on
			// the node: counted, and said.
			observed := fmt.Sprint(n)
			if d := s.GPUDriver; d != nil && len(d.GPUsNotVisible) > 0 {
				n += len(d.GPUsNotVisible)
				observed = fmt.Sprintf("%d (%d not visible to the agent)", n, len(d.GPUsNotVisible))
			}
			want, why := o.ExpectedGPUCount, "verify.expectedGPUCount"
			if want == 0 {
				if len(s.GPUs) == 0 { // no product to take the count from
					if n > 0 {
						return []finding{skip(Node, observed+" GPUs, none readable, and no expected count")}
					}
					return []finding{skip(Node, "no GPUs and no expected count")}
				}
				c, ok := baseboardGPUs(s.GPUs[0].Product)
				if !ok {
					return []finding{skip(Node, fmt.Sprintf("%d GPUs; %s has no standard count (set verify.expectedGPUCount)", n, s.GPUs[0].Product))}
				}
				want, why = c, s.GPUs[0].Product+" baseboard"
			}
			f := bad(Node, observed, fmt.Sprintf("%d (%s)", want, why))
			f.ok = n == want
			return []finding{f}
		},
	}
}

// fullSpeed is the performance state in which a GPU runs its PCIe link at
// the most it trained to: NVIDIA's driver lowers the link generation in
// lower states (NVIDIA/open-gpu-kernel-modules#731: P8 Gen1, P5 Gen2), so
// an idle GPU's generation says nothing about its link.
const fullSpeed = "P0"

func linkText(gen, width int) string { return fmt.Sprintf("Gen%d x%d", gen, width) }

// pcieGenJudged reports whether a GPU's current PCIe generation shows what
// its link trained to: at its maximum, or read at full speed.
func pcieGenJudged(l *gpu.PCIeLink) bool {
	return l.CurrentGen >= l.MaxGen || l.PerformanceState == fullSpeed
}

func gpuPCIeLink() Check {
	return Check{
		Name: "gpu-pcie-link", Severity: Critical,
		Summary: "every GPU's PCIe link trained at its maximum width, and at its maximum generation when read at full speed (P0); " +
			"GPUs lower the generation in lower performance states, which `gpu-pcie-generation` reports",
		Remedy: "the link trained below its maximum: reseat the GPU or riser, check BIOS PCIe settings and the slot",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			return eachGPU(s, func(g snapshot.GPU) finding {
				l := g.PCIeLink
				if l == nil || l.MaxGen == 0 || l.MaxWidth == 0 {
					return skip(gpuSubject(g), "PCIe link not reported")
				}
				observed, expected := linkText(l.CurrentGen, l.CurrentWidth), linkText(l.MaxGen, l.MaxWidth)
				if l.PerformanceState != "" {
					observed += " in " + l.PerformanceState
				}
				genOK := l.CurrentGen >= l.MaxGen
				if !pcieGenJudged(l) {
					// The width does not drop with the performance state;
					// the generation is left to gpu-pcie-generation.
					observed += " (generation not judged below " + fullSpeed + ")"
					genOK = true
				}
				f := bad(gpuSubject(g), observed, expected)
				f.ok = genOK && l.CurrentWidth >= l.MaxWidth
				return f
			})
		},
	}
}

func gpuPCIeGeneration() Check {
	return Check{
		Name: "gpu-pcie-generation", Severity: Warning,
		Summary: "every GPU's PCIe generation was seen at its maximum; a GPU read below full speed (P0) runs its link slower, so its link cannot be judged",
		Remedy: "GPUs lower the PCIe generation when idle: run `gpunode-agent verify` (or `nvidia-smi -q -d PCI,PERFORMANCE`) while the GPU is busy; " +
			"if it stays below its maximum at P0, gpu-pcie-link fails",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			return eachGPU(s, func(g snapshot.GPU) finding {
				l := g.PCIeLink
				switch {
				case l == nil || l.MaxGen == 0:
					return skip(gpuSubject(g), "PCIe link not reported")
				case pcieGenJudged(l) && l.CurrentGen < l.MaxGen:
					return skip(gpuSubject(g), fmt.Sprintf("Gen%d at %s: judged by gpu-pcie-link", l.CurrentGen, fullSpeed))
				}
				observed := fmt.Sprintf("Gen%d", l.CurrentGen)
				switch {
				case l.PerformanceState != "":
					observed += " in " + l.PerformanceState
				case l.CurrentGen < l.MaxGen:
					observed += " (performance state unknown)"
				}
				f := bad(gpuSubject(g), observed, fmt.Sprintf("Gen%d", l.MaxGen))
				f.ok = l.CurrentGen >= l.MaxGen
				return f
			})
		},
	}
}

// nvlinkGeneration is the NVLink generation an architecture has.
var nvlinkGeneration = map[string]int{"ampere": 3, "hopper": 4, "blackwell": 5}

func nvlinkActive() Check {
	return Check{
		Name: "nvlink", Severity: Critical,
		Summary: "every NVLink (XGMI) link of every GPU is active, at the architecture's NVLink generation",
		Remedy:  "a GPU-to-GPU link is down: check `nvidia-smi nvlink -s`, the fabric manager log and Xid 74 (AMD: `amd-smi xgmi`); a reset of the GPUs (or the node) retrains links, a link that stays down needs service",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			return eachGPU(s, func(g snapshot.GPU) finding {
				ic := g.Interconnect
				if ic == nil || ic.Links == 0 {
					return skip(gpuSubject(g), "no GPU-to-GPU links")
				}
				observed := fmt.Sprintf("%d/%d active", ic.Active, ic.Links)
				expected := fmt.Sprintf("%d/%d active", ic.Links, ic.Links)
				if ic.Kind != gpu.NVLink { // say which fabric an AMD row is about
					observed, expected = ic.Kind+" "+observed, ic.Kind+" "+expected
				}
				ok := ic.Active == ic.Links
				if want, known := nvlinkGeneration[g.Architecture]; known && ic.Kind == "nvlink" {
					expected += fmt.Sprintf(", NVLink %d", want)
					if ic.Generation > 0 {
						observed += fmt.Sprintf(", NVLink %d", ic.Generation)
						ok = ok && ic.Generation == want
					}
				}
				f := bad(gpuSubject(g), observed, expected)
				f.ok = ok
				return f
			})
		},
	}
}

func nvswitchFabric() Check {
	return Check{
		Name: "nvswitch-fabric", Severity: Critical,
		Summary: "on NVSwitch systems, every GPU's NVLink fabric registration completed successfully",
		Remedy:  "start nvidia-fabricmanager (same version as the driver) and check its log; GPUs without a fabric cannot use NVLink and CUDA reports them not ready",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			return eachGPU(s, func(g snapshot.GPU) finding {
				fb := g.Fabric
				if fb == nil {
					return skip(gpuSubject(g), "no NVLink fabric reported")
				}
				observed := fb.State
				if fb.Status != "" {
					observed += ", " + fb.Status
				}
				f := bad(gpuSubject(g), observed, gpu.FabricCompleted+", success")
				f.ok = fb.State == gpu.FabricCompleted && fb.Status == "success"
				return f
			})
		},
	}
}

// nvlinkClique judges the multi-node NVLink domain (GB200/GB300 NVL) as
// a whole: the GPUs of one node must share a clique, or the clique labels
// are withheld and a job spanning the node's GPUs cannot use the domain.
// Nodes where no GPU is in a domain (HGX, PCIe) skip.
func nvlinkClique() Check {
	return Check{
		Name: "nvlink-clique", Severity: Warning,
		Summary: "on multi-node NVLink systems (GB200/GB300 NVL), every GPU registered into the same clique (cluster UUID and clique id)",
		Remedy:  "check the NVLink partition the fabric manager (NMX on the switch trays) assigned this tray's GPUs and its log; the clique labels stay off until the GPUs agree",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			if len(s.GPUs) == 0 {
				return noGPUs(s)
			}
			if !slices.ContainsFunc(s.GPUs, func(g snapshot.GPU) bool { return g.Fabric != nil && g.Fabric.Clique != "" }) {
				return []finding{skip(Node, "no GPU is in a multi-node NVLink domain")}
			}
			const want = "every GPU in one clique"
			if c, reason := labels.Clique(s.GPUs); c == "" {
				return []finding{bad(Node, reason, want)}
			} else {
				return []finding{pass(Node, c, want)}
			}
		},
	}
}

func gpuECC() Check {
	return Check{
		Name: "gpu-ecc", Severity: Warning,
		Summary: "ECC is enabled on GPUs with ECC memory, now and after the next reset",
		Remedy:  "enable ECC with `nvidia-smi -i <gpu> -e 1` and reset the GPU; without it memory errors corrupt results silently",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			return eachGPU(s, func(g snapshot.GPU) finding {
				e := g.ECC
				if e == nil {
					return skip(gpuSubject(g), "no ECC mode reported")
				}
				f := bad(gpuSubject(g), fmt.Sprintf("current %s, pending %s", onOff(e.Enabled), onOff(e.Pending)), "current on, pending on")
				f.ok = e.Enabled && e.Pending
				return f
			})
		},
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func gpuRowRemap() Check {
	return Check{
		Name: "gpu-row-remap", Severity: Critical,
		Summary: "no GPU has a memory row remap pending (waiting for a reset) or failed",
		Remedy:  "drain the node, stop what holds the GPU open (this agent too: README, Resetting a GPU) and reset it (`nvidia-smi -r`) to apply the pending remap",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			return eachGPU(s, func(g snapshot.GPU) finding {
				rr := g.RemappedRows
				if rr == nil {
					return skip(gpuSubject(g), "no row remapping reported")
				}
				observed := fmt.Sprintf("%d correctable, %d uncorrectable", rr.Correctable, rr.Uncorrectable)
				switch {
				case rr.Failed:
					f := bad(gpuSubject(g), observed+", remap failed", "no pending or failed remap")
					f.remedy = "a row remap failed: the GPU's memory is exhausted of spare rows; drain the node and have the GPU serviced"
					return f
				case rr.Pending:
					return bad(gpuSubject(g), observed+", remap pending", "no pending or failed remap")
				default:
					return pass(gpuSubject(g), observed, "no pending or failed remap")
				}
			})
		},
	}
}

// near is how close an RDMA device must be to count as the GPU's own:
// under the same PCIe root complex, or at least on its NUMA node.
func near(a snapshot.Affinity) bool {
	switch a.Relation {
	case "PIX", "PXB", "PHB":
		return true
	}
	return a.SameNUMA
}

func gpuNICAffinity() Check {
	return Check{
		Name: "gpu-nic-affinity", Severity: Critical,
		Summary: "every GPU has an RDMA device with an ACTIVE port on its PCIe switch or NUMA node",
		Remedy:  "GPU traffic to the network crosses the CPU interconnect: cable or enable the HCA next to this GPU, or move the HCA to a slot on the GPU's socket",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			if len(s.GPUs) == 0 {
				return noGPUs(s)
			}
			if len(s.RDMADevices) == 0 {
				return []finding{skip(Node, "no RDMA devices")}
			}
			var out []finding
			for _, g := range s.GPUs {
				expected := "an ACTIVE RDMA device on its PCIe switch or NUMA node"
				var nearest *snapshot.Affinity
				for i, a := range g.Affinity { // nearest first
					if a.Active {
						if nearest == nil {
							nearest = &g.Affinity[i]
						}
						if near(a) {
							nearest = &g.Affinity[i]
							break
						}
					}
				}
				switch {
				case nearest == nil:
					out = append(out, bad(gpuSubject(g), "no RDMA device has an ACTIVE port", expected))
				default:
					f := bad(gpuSubject(g), fmt.Sprintf("%s (%s)", nearest.RDMADevice, nearest.Relation), expected)
					f.ok = near(*nearest)
					out = append(out, f)
				}
			}
			return out
		},
	}
}
