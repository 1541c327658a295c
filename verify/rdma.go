package verify

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/rdma/verbs"
	"github.com/gpunode/gpunode/snapshot"
)

func portSubject(d rdma.Device, p rdma.Port) string { return fmt.Sprintf("%s/%d", d.Name, p.Number) }

// lid formats a LID or SM LID as the kernel does ("0x1a"), "unknown" when
// it could not be read.
func lid(v *uint32) string {
	if v == nil {
		return "unknown"
	}
	return fmt.Sprintf("%#x", *v)
}

// eachPort is a check's findings for a per-port fact: one per port of the
// transport, in device and port order, or the node skipped with none
// when it has no such port.
func eachPort(s *snapshot.Snapshot, t rdma.Transport, none string, check func(d rdma.Device, p rdma.Port) finding) []finding {
	var out []finding
	for _, d := range s.RDMADevices {
		for _, p := range d.Ports {
			if p.Transport == t {
				out = append(out, check(d, p))
			}
		}
	}
	if len(out) == 0 {
		return []finding{skip(Node, none)}
	}
	return out
}

// verbsModule is the kernel module that registers RDMA devices of a NIC driver.
var verbsModule = map[string]string{
	"mlx5_core": "mlx5_ib", "mlx4_core": "mlx4_ib", "bnxt_en": "bnxt_re", "ice": "irdma",
	"i40e": "irdma", "qede": "qedr", "efa": "efa", "rdma_rxe": "rdma_rxe", "siw": "siw",
}

func rdmaModules() Check {
	return Check{
		Name: "rdma-modules", Severity: Critical,
		Summary: "the RDMA kernel modules are loaded: ib_uverbs and rdma_ucm (user-space verbs and RDMA CM) and each NIC's verbs driver (mlx5_ib, ...)",
		Remedy:  "load the missing modules (`modprobe <module>`) and persist them in /etc/modules-load.d/; NCCL and UCX need them to open the devices",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			if len(s.RDMADevices) == 0 {
				return []finding{skip(Node, "no RDMA devices")}
			}
			if len(s.Host.Modules) == 0 {
				return []finding{skip(Node, "loaded modules unknown")}
			}
			want := []string{"ib_uverbs", "rdma_ucm"}
			for _, d := range s.RDMADevices {
				if m, ok := verbsModule[d.Driver]; ok && !slices.Contains(want, m) {
					want = append(want, m)
				}
			}
			var missing []string
			for _, m := range want {
				if !s.Host.HasModule(m) {
					missing = append(missing, m)
				}
			}
			expected := strings.Join(want, ", ") + " loaded"
			if len(missing) > 0 {
				return []finding{bad(Node, "missing: "+strings.Join(missing, ", "), expected)}
			}
			return []finding{pass(Node, expected, expected)}
		},
	}
}

func ibPortSM() Check {
	return Check{
		Name: "ib-port-sm", Severity: Critical,
		Summary: "every InfiniBand port is ACTIVE with a LID from a subnet manager (non-zero LID and SM LID)",
		Remedy:  "the port has no subnet manager or no link: check the cable and `ibstat`, and that opensm (or UFM) runs on the fabric",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			return eachPort(s, rdma.InfiniBand, "no InfiniBand ports", func(d rdma.Device, p rdma.Port) finding {
				observed := fmt.Sprintf("%s (%s), LID %s, SM LID %s", p.State, p.PhysState, lid(p.LID), lid(p.SMLID))
				if p.Active() && (p.LID == nil || p.SMLID == nil) {
					// Unknown is not 0: the port may well have a subnet manager.
					return skip(portSubject(d, p), observed+" (the driver has no lid or sm_lid file)")
				}
				f := bad(portSubject(d, p), observed, "ACTIVE, LID and SM LID non-zero")
				f.ok = p.Active() && *p.LID != 0 && *p.SMLID != 0
				return f
			})
		},
	}
}

func roceMode() Check {
	return Check{
		Name: "roce-mode", Severity: Critical,
		Summary: "RDMA CM's default RoCE mode is RoCE v2 (routable, UDP-encapsulated) on every RoCE port",
		Remedy:  "set RoCE v2 as the default: `cma_roce_mode -d <device> -p <port> -m 2` (it writes /sys/kernel/config/rdma_cm); RoCE v1 does not cross IP routers",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			return eachPort(s, rdma.RoCE, "no RoCE ports", func(d rdma.Device, p rdma.Port) finding {
				if p.RoCE == nil || p.RoCE.DefaultMode == "" {
					return skip(portSubject(d, p), "default RoCE mode unknown")
				}
				f := bad(portSubject(d, p), fmt.Sprintf("%s (%s)", p.RoCE.DefaultMode, p.RoCE.ModeSource), rdma.RoCEv2)
				f.ok = p.RoCE.DefaultMode == rdma.RoCEv2
				return f
			})
		},
	}
}

// priorities formats a priority list compactly: "3", "0-7", "3,5", "none".
func priorities(p []int) string {
	if len(p) == 0 {
		return "none"
	}
	var parts []string
	for i := 0; i < len(p); {
		j := i
		for j+1 < len(p) && p[j+1] == p[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", p[i], p[j]))
		} else {
			parts = append(parts, strconv.Itoa(p[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// both are the priorities present in a and b (each sorted).
func both(a, b []int) []int {
	var out []int
	for _, v := range a {
		if slices.Contains(b, v) {
			out = append(out, v)
		}
	}
	return out
}

func roceLossless() Check {
	return Check{
		Name: "roce-congestion", Severity: Critical,
		Summary: "every RoCE port has PFC or ECN (DCQCN: notification and reaction point) enabled on at least one priority",
		Remedy:  "RoCE without PFC or ECN drops packets under load and retransmits: enable PFC on the RDMA priority (`dcb pfc set dev <if> prio-pfc 3:on` or `mlnx_qos -i <if> --pfc 0,0,0,1,0,0,0,0`) and/or ECN (`echo 1 > /sys/class/net/<if>/ecn/roce_np/enable/3` and roce_rp), matching the switches",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			return eachPort(s, rdma.RoCE, "no RoCE ports", func(d rdma.Device, p rdma.Port) finding {
				if p.RoCE == nil || p.RoCE.PFC == nil && p.RoCE.ECN == nil {
					return skip(portSubject(d, p), "PFC and ECN state unknown (no DCB, no ECN attributes)")
				}
				var obs []string
				ok := false
				if pfc := p.RoCE.PFC; pfc != nil {
					obs = append(obs, "PFC "+priorities(pfc.Enabled))
					ok = len(pfc.Enabled) > 0
				} else {
					obs = append(obs, "PFC unknown")
				}
				if e := p.RoCE.ECN; e != nil {
					on := both(e.NotificationPoint, e.ReactionPoint)
					obs = append(obs, "ECN "+priorities(on))
					ok = ok || len(on) > 0
				} else {
					obs = append(obs, "ECN unknown")
				}
				f := bad(portSubject(d, p), strings.Join(obs, ", "), "PFC or ECN on a priority")
				f.ok = ok
				return f
			})
		},
	}
}

// fabricDevices are the RDMA devices under a GPU's PCIe root: the ports
// GPU traffic uses. Without GPUs every device counts.
func fabricDevices(s *snapshot.Snapshot) func(name string) bool {
	if len(s.GPUs) == 0 {
		return func(string) bool { return true }
	}
	near := map[string]bool{}
	for _, g := range s.GPUs {
		for _, n := range g.RDMASamePCIeRoot {
			near[n] = true
		}
	}
	return func(name string) bool { return near[name] }
}

// maxRDMAMTU is the largest RDMA path MTU.
const maxRDMAMTU = 4096

func rdmaMTU() Check {
	return Check{
		Name: "rdma-mtu", Severity: Warning,
		Summary: "on ports next to a GPU, the netdev MTU is consistent with the RDMA active MTU: RoCE netdevs allow the 4096-byte RDMA MTU, IPoIB netdevs match the InfiniBand MTU",
		Remedy:  "raise the netdev MTU (RoCE: 4200 or more, 9000 typical, on the switches too); a smaller MTU cuts RDMA messages into more packets",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			fabric := fabricDevices(s)
			var out []finding
			for _, d := range s.RDMADevices {
				for _, p := range d.Ports {
					sub := portSubject(d, p)
					switch {
					case !fabric(d.Name):
						out = append(out, skip(sub, "not next to a GPU (frontend or storage port)"))
					case p.Netdev == "" || p.NetdevMTU == 0:
						out = append(out, skip(sub, "no netdev MTU"))
					case p.Transport == rdma.RoCE:
						f := bad(sub, fmt.Sprintf("netdev MTU %d, RDMA MTU %d", p.NetdevMTU, p.ActiveMTU), fmt.Sprintf("RDMA MTU %d", maxRDMAMTU))
						f.ok = p.ActiveMTU >= maxRDMAMTU
						out = append(out, f)
					case p.Transport == rdma.InfiniBand && p.ActiveMTU == 0:
						out = append(out, skip(sub, fmt.Sprintf("netdev MTU %d, InfiniBand active MTU unknown (needs a verbs query)", p.NetdevMTU)))
					case p.Transport == rdma.InfiniBand:
						// IPoIB datagram mode carries MTU-4 (its header);
						// connected mode goes up to 65520.
						f := bad(sub, fmt.Sprintf("netdev MTU %d, RDMA MTU %d", p.NetdevMTU, p.ActiveMTU), fmt.Sprintf("netdev MTU %d (datagram) or above %d (connected)", p.ActiveMTU-4, p.ActiveMTU))
						f.ok = p.NetdevMTU == p.ActiveMTU-4 || p.NetdevMTU > p.ActiveMTU
						f.remedy = "the IPoIB MTU does not match the InfiniBand MTU: set the partition MTU on the subnet manager, or the interface's MTU to the IB MTU minus 4"
						out = append(out, f)
					default:
						out = append(out, skip(sub, "not RoCE or InfiniBand"))
					}
				}
			}
			if len(out) == 0 {
				return []finding{skip(Node, "no RDMA ports")}
			}
			return out
		},
	}
}

func rdmaPortRate() Check {
	return Check{
		Name: "rdma-port-rate", Severity: Critical,
		Summary: "every ACTIVE port runs at the rate of the fastest ACTIVE port of the same adapter model and transport (one degraded port is a finding)",
		Remedy:  "the link trained below its peers (fewer lanes or a lower speed): check the cable and transceiver, `ibstat`/`ethtool`, and the switch port; replace what keeps failing",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			type group struct {
				transport rdma.Transport
				model     string
			}
			model := func(d rdma.Device) string { return cmp.Or(d.HCAType, d.BoardID, d.Driver) }
			best := map[group]float64{}
			for _, d := range s.RDMADevices {
				for _, p := range d.Ports {
					if p.Active() {
						g := group{p.Transport, model(d)}
						best[g] = max(best[g], p.RateGbps)
					}
				}
			}
			var out []finding
			for _, d := range s.RDMADevices {
				for _, p := range d.Ports {
					if !p.Active() {
						out = append(out, skip(portSubject(d, p), "port not ACTIVE"))
						continue
					}
					g := group{p.Transport, model(d)}
					f := bad(portSubject(d, p), cmp.Or(p.Rate, "unknown"), fmt.Sprintf("%s Gb/s (fastest %s %s port)", strconv.FormatFloat(best[g], 'f', -1, 64), g.model, g.transport))
					f.ok = p.RateGbps >= best[g]
					out = append(out, f)
				}
			}
			if len(out) == 0 {
				return []finding{skip(Node, "no RDMA ports")}
			}
			return out
		},
	}
}

func gpuDirectRDMA() Check {
	return Check{
		Name: "gpudirect-rdma", Severity: Critical,
		Summary: "GPUDirect RDMA is possible: NICs can DMA into GPU memory (nvidia_peermem, or dma-buf with the open NVIDIA kernel module on Linux 5.12+)",
		Remedy:  "load nvidia_peermem (`modprobe nvidia_peermem`), or run the open NVIDIA kernel modules on Linux 5.12+ for dma-buf; without it GPU traffic bounces through host memory",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			switch {
			case len(s.GPUs) == 0:
				return noGPUs(s)
			case len(s.RDMADevices) == 0:
				return []finding{skip(Node, "no RDMA devices")}
			case s.GPUDirect.Possible:
				return []finding{pass(Node, s.GPUDirect.Reason, "a peer-memory path")}
			case s.GPUs[0].Vendor != gpu.NVIDIA:
				return []finding{skip(Node, "judged for NVIDIA GPUs only")}
			}
			return []finding{bad(Node, s.GPUDirect.Reason, "a peer-memory path")}
		},
	}
}

// GPUPairs pairs each GPU with its nearest RDMA device that has an
// ACTIVE port (the affinity is sorted nearest first), for the GPU memory
// registration attempts gpudirect-rdma-works judges. The CUDA driver
// library is looked for beside the NVML library the snapshot loaded, and
// ROCm's HSA runtime beside AMD SMI's (both live in ROCm's lib
// directory); else each by name.
func GPUPairs(s *snapshot.Snapshot) []probe.GPUPair {
	cuda, hsa := verbs.CUDALibrary, verbs.HSALibrary
	if d := s.GPUDriver; d != nil && d.Library != nil && d.Library.Found != gpu.FoundRuntime && d.Library.Path != "" {
		dir := filepath.Dir(d.Library.Path)
		if d.Backend == source.AMDSMI {
			hsa = filepath.Join(dir, verbs.HSALibrary)
		} else {
			cuda = filepath.Join(dir, verbs.CUDALibrary)
		}
	}
	out := make([]probe.GPUPair, 0, len(s.GPUs))
	for _, g := range s.GPUs {
		lib := cuda
		if g.Vendor == gpu.AMD {
			lib = hsa
		}
		p := probe.GPUPair{GPU: probe.GPUTarget{Index: g.Index, PCIBusID: g.PCIBusID, Vendor: g.Vendor, Library: lib}}
		for _, a := range g.Affinity {
			if a.Active {
				p.Device = a.RDMADevice
				break
			}
		}
		if p.Device == "" {
			p.NoDevice = "no RDMA device near it has an ACTIVE port"
		}
		out = append(out, p)
	}
	return out
}

func gpuDirectRDMAWorks() Check {
	return Check{
		Name: "gpudirect-rdma-works", Severity: Critical,
		Summary: "GPUDirect RDMA works: a little of each GPU's memory is registered on its nearest NIC (dma-buf, else nvidia_peermem or amdgpu's peer-memory client), as NCCL, RCCL and NIXL register it; tried with RDMA probes enabled and by `verify` on a host; AMD GPUs without ROCm's HSA runtime are skipped",
		Remedy:  "see the observed error: load nvidia_peermem or run the open NVIDIA kernel modules (dma-buf), give the agent the CUDA driver library (libcuda.so.1) beside NVML or ROCm's libhsa-runtime64.so.1 beside AMD SMI, and raise its locked-memory limit",
		run: func(s *snapshot.Snapshot, o Options) []finding {
			switch {
			case len(s.GPUs) == 0:
				return noGPUs(s)
			case len(s.RDMADevices) == 0:
				why := "no RDMA devices"
				if rs := o.GPUMemoryRegistrations; len(rs) > 0 && rs[0].Error != "" {
					// The GPU side ran: say how it went.
					why += fmt.Sprintf(" (gpu%d: %s)", rs[0].GPU.Index, rs[0].Error)
				}
				return []finding{skip(Node, why)}
			case o.GPUMemoryRegistrations == nil:
				return []finding{skip(Node, "not tried: GPU memory is registered with RDMA probes enabled (probe.enabled) and by `gpunode-agent verify` on a host")}
			}
			const want = "GPU memory registered on the nearest NIC"
			var out []finding
			for _, r := range o.GPUMemoryRegistrations {
				subject := fmt.Sprintf("gpu%d", r.GPU.Index)
				switch {
				case r.Registered && r.Port != nil && r.Result != nil:
					obs := fmt.Sprintf("registered on %s (%s)", r.Port.Name(), r.Result.Path)
					if r.Result.DMABuf != "" {
						obs += "; " + r.Result.DMABuf
					}
					out = append(out, pass(subject, obs, want))
				case r.NotAvailable:
					out = append(out, skip(subject, r.Error))
				default:
					out = append(out, bad(subject, r.Error, want))
				}
			}
			return out
		},
	}
}
