package verify

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/rdma/verbs"
	"github.com/gpunode/gpunode/snapshot"
)

// good is a small healthy node: two H100 SXM GPUs, each with a ConnectX-7
// under its PCIe switch (one InfiniBand, one RoCE), and what makes them
// pass every check.
func good() *snapshot.Snapshot {
	g := func(i int, nic string) snapshot.GPU {
		return snapshot.GPU{
			Device: gpu.Device{
				Index: i, Vendor: gpu.NVIDIA, Product: "NVIDIA H100 80GB HBM3", Architecture: "hopper", NUMANode: i,
				PCIeLink:     &gpu.PCIeLink{CurrentGen: 5, MaxGen: 5, CurrentWidth: 16, MaxWidth: 16, PerformanceState: "P0"},
				Interconnect: &gpu.Interconnect{Kind: "nvlink", Links: 18, Active: 18, Generation: 4},
				ECC:          &gpu.ECCMode{Enabled: true, Pending: true},
				RemappedRows: &gpu.RemappedRows{Correctable: 1},
				Fabric:       &gpu.Fabric{State: gpu.FabricCompleted, Status: "success"},
			},
			RDMASamePCIeRoot: []string{nic},
			Affinity: []snapshot.Affinity{
				{RDMADevice: nic, Relation: "PIX", SameNUMA: true, Active: true},
			},
		}
	}
	ib := rdma.Device{Name: "mlx5_0", Driver: "mlx5_core", HCAType: "MT4129", Ports: []rdma.Port{{
		Number: 1, State: "ACTIVE", PhysState: "LinkUp", Transport: rdma.InfiniBand, RateGbps: 400, Rate: "400 Gb/sec (4X NDR)",
		LID: new(uint32(0x11)), SMLID: new(uint32(1)), Netdev: "ibp1s0", NetdevMTU: 4092,
	}}}
	roce := rdma.Device{Name: "mlx5_1", Driver: "mlx5_core", HCAType: "MT4129", Ports: []rdma.Port{{
		Number: 1, State: "ACTIVE", PhysState: "LinkUp", Transport: rdma.RoCE, RateGbps: 400, Rate: "400 Gb/sec (4X NDR)",
		Netdev: "enp2s0np0", NetdevMTU: 9000, ActiveMTU: 4096,
		RoCE: &rdma.RoCEConfig{DefaultMode: rdma.RoCEv2, ModeSource: rdma.ModeConfigfs,
			ECN: &rdma.ECN{NotificationPoint: []int{3}, ReactionPoint: []int{3}}, PFC: &rdma.PFC{Enabled: []int{3}}},
	}}}
	return &snapshot.Snapshot{
		Host:        snapshot.Host{Modules: []string{"ib_core", "ib_uverbs", "mlx5_core", "mlx5_ib", "rdma_cm", "rdma_ucm"}},
		GPUs:        []snapshot.GPU{g(0, "mlx5_0"), g(1, "mlx5_1")},
		RDMADevices: []rdma.Device{ib, roce},
		GPUDirect:   snapshot.GPUDirect{Possible: true, Methods: []string{"nvidia_peermem"}, Reason: "nvidia_peermem is loaded"},
	}
}

// cas is one fixture: a change to the good node and the statuses the
// check must report, "subject=status" in order.
type cas struct {
	name   string
	opts   Options
	change func(s *snapshot.Snapshot)
	want   string
}

func run(t *testing.T, c Check, cases []cas) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			if tc.change != nil {
				tc.change(s)
			}
			var got []string
			for _, r := range c.Evaluate(s, tc.opts) {
				got = append(got, r.Subject+"="+string(r.Status))
				if r.Severity != c.Severity || r.Check != c.Name || r.Observed == "" {
					t.Errorf("result %+v: check, severity or observed value missing", r)
				}
				if (r.Status == Fail || r.Status == Warn) != (r.Remedy != "") {
					t.Errorf("result %+v: a remedy belongs to warnings and failures only", r)
				}
				if r.Status == Fail && c.Severity != Critical || r.Status == Warn && c.Severity != Warning {
					t.Errorf("result %+v: status does not match the check's severity", r)
				}
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Errorf("got  %s\nwant %s", g, tc.want)
			}
		})
	}
}

func noGPU(s *snapshot.Snapshot)  { s.GPUs = nil }
func noRDMA(s *snapshot.Snapshot) { s.RDMADevices = nil }

func TestGPUCount(t *testing.T) {
	run(t, gpuCount(), []cas{
		{"configured count met", Options{ExpectedGPUCount: 2}, nil, "node=pass"},
		{"configured count missed", Options{ExpectedGPUCount: 8}, nil, "node=fail"},
		{"from the product: an HGX board has 8", Options{}, nil, "node=fail"},
		{"from the product, all there", Options{}, func(s *snapshot.Snapshot) {
			for i := 2; i < 8; i++ {
				s.GPUs = append(s.GPUs, s.GPUs[0])
			}
		}, "node=pass"},
		{"PCIe product has no standard count", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].Product = "NVIDIA H100 PCIe" }, "node=skip"},
		{"no GPUs, none expected", Options{}, noGPU, "node=skip"},
		{"no GPUs, some expected", Options{ExpectedGPUCount: 8}, noGPU, "node=fail"},
		{"GPUs on PCI that no backend read: count unknown", Options{ExpectedGPUCount: 8}, noBackend, "node=skip"},
		{"GPUs the agent may not open are on the node", Options{ExpectedGPUCount: 4}, func(s *snapshot.Snapshot) {
			s.GPUDriver = &snapshot.GPUDriver{Backend: "nvml", GPUsNotVisible: []int{2, 3}}
		}, "node=pass"},
		{"none the agent may open, none expected", Options{}, func(s *snapshot.Snapshot) {
			s.GPUs, s.GPUDriver = nil, &snapshot.GPUDriver{Backend: "nvml", GPUsNotVisible: []int{0}}
		}, "node=skip"},
	})
}

func TestGPUPCIeLink(t *testing.T) {
	run(t, gpuPCIeLink(), []cas{
		{"at maximum", Options{}, nil, "gpu0=pass gpu1=pass"},
		{"Gen4 x8", Options{}, func(s *snapshot.Snapshot) { s.GPUs[1].PCIeLink.CurrentGen, s.GPUs[1].PCIeLink.CurrentWidth = 4, 8 }, "gpu0=pass gpu1=fail"},
		{"width only", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].PCIeLink.CurrentWidth = 8 }, "gpu0=fail gpu1=pass"},
		// An idle GPU (P8) runs its link at Gen1: not a link that trained low.
		{"idle at Gen1", Options{}, idleGen1, "gpu0=pass gpu1=pass"},
		{"idle, and the width is low", Options{}, func(s *snapshot.Snapshot) { idleGen1(s); s.GPUs[1].PCIeLink.CurrentWidth = 8 }, "gpu0=pass gpu1=fail"},
		{"performance state unknown", Options{}, func(s *snapshot.Snapshot) {
			s.GPUs[0].PCIeLink.PerformanceState, s.GPUs[0].PCIeLink.CurrentGen = "", 4
			s.GPUs[1].PCIeLink.PerformanceState = ""
		}, "gpu0=pass gpu1=pass"},
		{"Gen4 at P0", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].PCIeLink.CurrentGen = 4 }, "gpu0=fail gpu1=pass"},
		{"not reported", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].PCIeLink = nil; s.GPUs[1].PCIeLink = &gpu.PCIeLink{} }, "gpu0=skip gpu1=skip"},
		{"no GPUs", Options{}, noGPU, "node=skip"},
	})
}

// idleGen1 idles both GPUs: P8, the link at Gen1.
func idleGen1(s *snapshot.Snapshot) {
	for i := range s.GPUs {
		s.GPUs[i].PCIeLink.CurrentGen, s.GPUs[i].PCIeLink.PerformanceState = 1, "P8"
	}
}

func TestGPUPCIeGeneration(t *testing.T) {
	run(t, gpuPCIeGeneration(), []cas{
		{"at maximum", Options{}, nil, "gpu0=pass gpu1=pass"},
		{"idle at Gen1: cannot be told", Options{}, idleGen1, "gpu0=warn gpu1=warn"},
		{"idle at its maximum", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].PCIeLink.PerformanceState = "P8" }, "gpu0=pass gpu1=pass"},
		{"performance state unknown", Options{}, func(s *snapshot.Snapshot) {
			s.GPUs[0].PCIeLink.PerformanceState, s.GPUs[0].PCIeLink.CurrentGen = "", 4
		}, "gpu0=warn gpu1=pass"},
		{"low at P0: gpu-pcie-link's", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].PCIeLink.CurrentGen = 4 }, "gpu0=skip gpu1=pass"},
		{"not reported", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].PCIeLink = nil }, "gpu0=skip gpu1=pass"},
		{"no GPUs", Options{}, noGPU, "node=skip"},
	})
}

func TestNVLink(t *testing.T) {
	run(t, nvlinkActive(), []cas{
		{"all active", Options{}, nil, "gpu0=pass gpu1=pass"},
		{"one down", Options{}, func(s *snapshot.Snapshot) { s.GPUs[1].Interconnect.Active = 17 }, "gpu0=pass gpu1=fail"},
		{"wrong generation", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].Interconnect.Generation = 3 }, "gpu0=fail gpu1=pass"},
		{"generation unknown", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].Interconnect.Generation = 0 }, "gpu0=pass gpu1=pass"},
		{"PCIe GPU without links", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].Interconnect = nil }, "gpu0=skip gpu1=pass"},
		{"XGMI has no NVLink generation", Options{}, func(s *snapshot.Snapshot) {
			s.GPUs[0].Architecture, s.GPUs[0].Interconnect = "cdna3", &gpu.Interconnect{Kind: "xgmi", Links: 7, Active: 6}
		}, "gpu0=fail gpu1=pass"},
		{"no GPUs", Options{}, noGPU, "node=skip"},
	})
}

func TestNVSwitchFabric(t *testing.T) {
	run(t, nvswitchFabric(), []cas{
		{"completed", Options{}, nil, "gpu0=pass gpu1=pass"},
		{"fabric manager not running", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].Fabric = &gpu.Fabric{State: gpu.FabricNotStarted} }, "gpu0=fail gpu1=pass"},
		{"completed with an error", Options{}, func(s *snapshot.Snapshot) {
			s.GPUs[1].Fabric = &gpu.Fabric{State: gpu.FabricCompleted, Status: "ERROR_INSUFFICIENT_RESOURCES"}
		}, "gpu0=pass gpu1=fail"},
		{"no fabric", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].Fabric = nil }, "gpu0=skip gpu1=pass"},
		{"no GPUs", Options{}, noGPU, "node=skip"},
	})
}

func TestNVLinkClique(t *testing.T) {
	const c = "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.32766"
	inDomain := func(cliques ...string) func(s *snapshot.Snapshot) {
		return func(s *snapshot.Snapshot) {
			for i, q := range cliques {
				s.GPUs[i].Fabric = &gpu.Fabric{State: gpu.FabricCompleted, Status: "success", Clique: q}
			}
		}
	}
	run(t, nvlinkClique(), []cas{
		{"HGX: no domain", Options{}, nil, "node=skip"},
		{"one clique", Options{}, inDomain(c, c), "node=pass"},
		{"split", Options{}, inDomain(c, "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.5"), "node=warn"},
		{"one GPU still registering", Options{}, func(s *snapshot.Snapshot) {
			inDomain(c, c)(s)
			s.GPUs[1].Fabric = &gpu.Fabric{State: gpu.FabricInProgress}
		}, "node=warn"},
		{"no GPUs", Options{}, noGPU, "node=skip"},
	})
}

func TestGPUECC(t *testing.T) {
	run(t, gpuECC(), []cas{
		{"on", Options{}, nil, "gpu0=pass gpu1=pass"},
		{"off", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].ECC = &gpu.ECCMode{} }, "gpu0=warn gpu1=pass"},
		{"off after reset", Options{}, func(s *snapshot.Snapshot) { s.GPUs[1].ECC.Pending = false }, "gpu0=pass gpu1=warn"},
		{"no ECC memory", Options{}, func(s *snapshot.Snapshot) { s.GPUs[1].ECC = nil }, "gpu0=pass gpu1=skip"},
		{"no GPUs", Options{}, noGPU, "node=skip"},
	})
}

func TestGPURowRemap(t *testing.T) {
	run(t, gpuRowRemap(), []cas{
		{"remapped rows are fine", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].RemappedRows.Uncorrectable = 3 }, "gpu0=pass gpu1=pass"},
		{"pending", Options{}, func(s *snapshot.Snapshot) { s.GPUs[0].RemappedRows.Pending = true }, "gpu0=fail gpu1=pass"},
		{"failed", Options{}, func(s *snapshot.Snapshot) { s.GPUs[1].RemappedRows.Failed = true }, "gpu0=pass gpu1=fail"},
		{"pre-Ampere", Options{}, func(s *snapshot.Snapshot) { s.GPUs[1].RemappedRows = nil }, "gpu0=pass gpu1=skip"},
		{"no GPUs", Options{}, noGPU, "node=skip"},
	})
}

func TestGPUNICAffinity(t *testing.T) {
	run(t, gpuNICAffinity(), []cas{
		{"own HCA", Options{}, nil, "gpu0=pass gpu1=pass"},
		{"own HCA down, far one up", Options{}, func(s *snapshot.Snapshot) {
			s.GPUs[0].Affinity = []snapshot.Affinity{{RDMADevice: "mlx5_0", Relation: "PIX", SameNUMA: true}, {RDMADevice: "mlx5_1", Relation: "SYS", Active: true}}
		}, "gpu0=fail gpu1=pass"},
		{"same NUMA node is enough", Options{}, func(s *snapshot.Snapshot) {
			s.GPUs[1].Affinity = []snapshot.Affinity{{RDMADevice: "mlx5_1", Relation: "NODE", SameNUMA: true, Active: true}}
		}, "gpu0=pass gpu1=pass"},
		{"nothing active", Options{}, func(s *snapshot.Snapshot) { s.GPUs[1].Affinity[0].Active = false }, "gpu0=pass gpu1=fail"},
		{"no RDMA", Options{}, noRDMA, "node=skip"},
		{"no GPUs", Options{}, noGPU, "node=skip"},
	})
}

func TestRDMAModules(t *testing.T) {
	run(t, rdmaModules(), []cas{
		{"loaded", Options{}, nil, "node=pass"},
		{"rdma_ucm missing", Options{}, func(s *snapshot.Snapshot) { s.Host.Modules = []string{"ib_uverbs", "mlx5_ib"} }, "node=fail"},
		{"vendor driver missing", Options{}, func(s *snapshot.Snapshot) { s.Host.Modules = []string{"ib_uverbs", "rdma_ucm"} }, "node=fail"},
		{"soft-RoCE needs rdma_rxe", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices[0].Driver = "rdma_rxe" }, "node=fail"},
		{"module list unknown", Options{}, func(s *snapshot.Snapshot) { s.Host.Modules = nil }, "node=skip"},
		{"no RDMA", Options{}, noRDMA, "node=skip"},
	})
}

func TestIBPortSM(t *testing.T) {
	run(t, ibPortSM(), []cas{
		{"LID from the SM", Options{}, nil, "mlx5_0/1=pass"},
		{"no subnet manager", Options{}, func(s *snapshot.Snapshot) {
			p := &s.RDMADevices[0].Ports[0]
			p.State, p.LID, p.SMLID = "INIT", new(uint32(0)), new(uint32(0))
		}, "mlx5_0/1=fail"},
		{"active without SM LID", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices[0].Ports[0].SMLID = new(uint32(0)) }, "mlx5_0/1=fail"},
		// A LID the driver does not show is unknown, not "no subnet manager".
		{"LID unknown", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices[0].Ports[0].LID = nil }, "mlx5_0/1=skip"},
		{"SM LID unknown", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices[0].Ports[0].SMLID = nil }, "mlx5_0/1=skip"},
		{"down, LIDs unknown", Options{}, func(s *snapshot.Snapshot) {
			p := &s.RDMADevices[0].Ports[0]
			p.State, p.LID, p.SMLID = "DOWN", nil, nil
		}, "mlx5_0/1=fail"},
		{"port down", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices[0].Ports[0].State = "DOWN" }, "mlx5_0/1=fail"},
		{"no InfiniBand", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices = s.RDMADevices[1:] }, "node=skip"},
	})
}

func TestRoCEMode(t *testing.T) {
	run(t, roceMode(), []cas{
		{"v2", Options{}, nil, "mlx5_1/1=pass"},
		{"v1", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices[1].Ports[0].RoCE.DefaultMode = rdma.RoCEv1 }, "mlx5_1/1=fail"},
		{"unknown", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices[1].Ports[0].RoCE.DefaultMode = "" }, "mlx5_1/1=skip"},
		{"no RoCE", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices = s.RDMADevices[:1] }, "node=skip"},
	})
}

func TestRoCECongestion(t *testing.T) {
	roce := func(f func(c *rdma.RoCEConfig)) func(s *snapshot.Snapshot) {
		return func(s *snapshot.Snapshot) { f(s.RDMADevices[1].Ports[0].RoCE) }
	}
	run(t, roceLossless(), []cas{
		{"PFC and ECN", Options{}, nil, "mlx5_1/1=pass"},
		{"PFC only", Options{}, roce(func(c *rdma.RoCEConfig) { c.ECN = &rdma.ECN{} }), "mlx5_1/1=pass"},
		{"ECN only", Options{}, roce(func(c *rdma.RoCEConfig) { c.PFC = &rdma.PFC{} }), "mlx5_1/1=pass"},
		{"ECN half configured", Options{}, roce(func(c *rdma.RoCEConfig) {
			c.PFC, c.ECN = &rdma.PFC{}, &rdma.ECN{NotificationPoint: []int{3}, ReactionPoint: []int{5}}
		}), "mlx5_1/1=fail"},
		{"neither", Options{}, roce(func(c *rdma.RoCEConfig) { c.PFC, c.ECN = &rdma.PFC{}, &rdma.ECN{} }), "mlx5_1/1=fail"},
		{"no ECN attributes, no PFC", Options{}, roce(func(c *rdma.RoCEConfig) { c.PFC, c.ECN = &rdma.PFC{}, nil }), "mlx5_1/1=fail"},
		{"unknown", Options{}, roce(func(c *rdma.RoCEConfig) { c.PFC, c.ECN = nil, nil }), "mlx5_1/1=skip"},
		{"no RoCE", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices = s.RDMADevices[:1] }, "node=skip"},
	})
}

func TestRDMAMTU(t *testing.T) {
	run(t, rdmaMTU(), []cas{
		{"jumbo RoCE, IB MTU unknown", Options{}, nil, "mlx5_0/1=skip mlx5_1/1=pass"},
		{"RoCE at 1500", Options{}, func(s *snapshot.Snapshot) {
			p := &s.RDMADevices[1].Ports[0]
			p.NetdevMTU, p.ActiveMTU = 1500, 1024
		}, "mlx5_0/1=skip mlx5_1/1=warn"},
		{"IPoIB datagram matches", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices[0].Ports[0].ActiveMTU = 4096 }, "mlx5_0/1=pass mlx5_1/1=pass"},
		{"IPoIB connected mode", Options{}, func(s *snapshot.Snapshot) {
			p := &s.RDMADevices[0].Ports[0]
			p.ActiveMTU, p.NetdevMTU = 4096, 65520
		}, "mlx5_0/1=pass mlx5_1/1=pass"},
		{"IPoIB below the IB MTU", Options{}, func(s *snapshot.Snapshot) {
			p := &s.RDMADevices[0].Ports[0]
			p.ActiveMTU, p.NetdevMTU = 4096, 2044
		}, "mlx5_0/1=warn mlx5_1/1=pass"},
		{"frontend port", Options{}, func(s *snapshot.Snapshot) { s.GPUs[1].RDMASamePCIeRoot = nil }, "mlx5_0/1=skip mlx5_1/1=skip"},
		{"no GPUs: every port counts", Options{}, func(s *snapshot.Snapshot) { s.GPUs = nil; s.RDMADevices[1].Ports[0].ActiveMTU = 2048 }, "mlx5_0/1=skip mlx5_1/1=warn"},
		{"no netdev", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices[1].Ports[0].Netdev = "" }, "mlx5_0/1=skip mlx5_1/1=skip"},
		{"no RDMA", Options{}, noRDMA, "node=skip"},
	})
}

func TestRDMAPortRate(t *testing.T) {
	run(t, rdmaPortRate(), []cas{
		{"equal", Options{}, nil, "mlx5_0/1=pass mlx5_1/1=pass"},
		{"another transport is another group", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices[1].Ports[0].RateGbps = 200 }, "mlx5_0/1=pass mlx5_1/1=pass"},
		{"one degraded", Options{}, func(s *snapshot.Snapshot) {
			s.RDMADevices[1].Ports[0].Transport = rdma.InfiniBand
			s.RDMADevices[1].Ports[0].RateGbps = 200
		}, "mlx5_0/1=pass mlx5_1/1=fail"},
		{"another model is another group", Options{}, func(s *snapshot.Snapshot) {
			s.RDMADevices[1].Ports[0].Transport, s.RDMADevices[1].HCAType = rdma.InfiniBand, "MT4125"
			s.RDMADevices[1].Ports[0].RateGbps = 200
		}, "mlx5_0/1=pass mlx5_1/1=pass"},
		{"down port", Options{}, func(s *snapshot.Snapshot) { s.RDMADevices[0].Ports[0].State = "DOWN" }, "mlx5_0/1=skip mlx5_1/1=pass"},
		{"no RDMA", Options{}, noRDMA, "node=skip"},
	})
}

func TestGPUDirectRDMA(t *testing.T) {
	run(t, gpuDirectRDMA(), []cas{
		{"possible", Options{}, nil, "node=pass"},
		{"no peer memory", Options{}, func(s *snapshot.Snapshot) { s.GPUDirect = snapshot.GPUDirect{Reason: "load nvidia_peermem"} }, "node=fail"},
		{"AMD not judged", Options{}, func(s *snapshot.Snapshot) {
			s.GPUDirect = snapshot.GPUDirect{Reason: "x"}
			s.GPUs[0].Vendor = gpu.AMD
		}, "node=skip"},
		{"no RDMA", Options{}, noRDMA, "node=skip"},
		{"no GPUs", Options{}, noGPU, "node=skip"},
	})
}

// registrations are both GPUs' attempts: gpu0 registered on its NIC,
// gpu1 as given.
func registrations(gpu1 probe.GPURegistration) Options {
	p := probe.Port{Device: "mlx5_0", Port: 1, GIDIndex: -1}
	ok := probe.GPURegistration{GPU: probe.GPUTarget{Index: 0}, Port: &p, Registered: true,
		Result: &probe.GPUResult{Index: 0, Path: verbs.PathDMABuf}}
	gpu1.GPU.Index = 1
	return Options{GPUMemoryRegistrations: []probe.GPURegistration{ok, gpu1}}
}

func TestGPUDirectRDMAWorks(t *testing.T) {
	p := probe.Port{Device: "mlx5_1", Port: 1, GIDIndex: 3}
	run(t, gpuDirectRDMAWorks(), []cas{
		{"registered", registrations(probe.GPURegistration{Port: &p, Registered: true, Result: &probe.GPUResult{Path: verbs.PathPeerMem, DMABuf: "ibv_reg_dmabuf_mr: operation not supported"}}), nil, "gpu0=pass gpu1=pass"},
		// The modules alone do not pass it: the registration failed.
		{"refused", registrations(probe.GPURegistration{Port: &p, Error: "mlx5_1: ibv_reg_mr (GPU memory): bad address"}), nil, "gpu0=pass gpu1=fail"},
		{"no CUDA", registrations(probe.GPURegistration{Error: "CUDA driver library not available: libcuda.so.1: cannot open shared object file"}), nil, "gpu0=pass gpu1=fail"},
		{"AMD", registrations(probe.GPURegistration{Error: "not available", NotAvailable: true}), nil, "gpu0=pass gpu1=skip"},
		{"not tried", Options{}, nil, "node=skip"},
		{"no RDMA", registrations(probe.GPURegistration{}), noRDMA, "node=skip"},
		{"no GPUs", registrations(probe.GPURegistration{}), noGPU, "node=skip"},
	})
	obs := gpuDirectRDMAWorks().Evaluate(good(), registrations(probe.GPURegistration{Port: &p, Registered: true, Result: &probe.GPUResult{Path: verbs.PathPeerMem, DMABuf: "ibv_reg_dmabuf_mr: operation not supported"}}))
	if got := obs[1].Observed; got != "registered on mlx5_1/1 (peermem); ibv_reg_dmabuf_mr: operation not supported" {
		t.Errorf("observed %q", got)
	}
}

// Each GPU is paired with its nearest device that has an ACTIVE port,
// and libcuda is looked for beside the NVML library that was loaded (the
// HSA runtime beside AMD SMI).
func TestGPUPairs(t *testing.T) {
	s := good()
	s.GPUs[0].Affinity = []snapshot.Affinity{{RDMADevice: "mlx5_2", Relation: "PIX"}, {RDMADevice: "mlx5_0", Relation: "NODE", Active: true}}
	s.GPUs[1].Affinity = []snapshot.Affinity{{RDMADevice: "mlx5_1", Relation: "PIX"}}
	s.GPUs[1].PCIBusID = "0000:3d:00.0"
	s.GPUDriver = &snapshot.GPUDriver{Library: &gpu.Library{Path: "/host/usr/lib64/libnvidia-ml.so.570.86.15", Found: gpu.FoundWellKnown}}
	got := GPUPairs(s)
	if len(got) != 2 || got[0].Device != "mlx5_0" || got[1].Device != "" || got[1].NoDevice == "" ||
		got[1].GPU.PCIBusID != "0000:3d:00.0" || got[1].GPU.Index != 1 || got[0].GPU.Vendor != gpu.NVIDIA ||
		got[0].GPU.Library != "/host/usr/lib64/libcuda.so.1" {
		t.Errorf("pairs %+v", got)
	}
	s.GPUDriver.Library.Found = gpu.FoundRuntime
	if l := GPUPairs(s)[0].GPU.Library; l != "libcuda.so.1" {
		t.Errorf("with the runtime's NVML, libcuda by name: %q", l)
	}

	// AMD: the HSA runtime beside AMD SMI (ROCm's lib directory), else
	// by name.
	s.GPUs[0].Vendor = gpu.AMD
	s.GPUDriver = &snapshot.GPUDriver{Backend: source.AMDSMI, Library: &gpu.Library{Path: "/host/opt/rocm-6.4.1/lib/libamd_smi.so", Found: gpu.FoundWellKnown}}
	if l := GPUPairs(s)[0].GPU.Library; l != "/host/opt/rocm-6.4.1/lib/libhsa-runtime64.so.1" {
		t.Errorf("AMD: %q", l)
	}
	s.GPUDriver.Library.Found = gpu.FoundRuntime
	if l := GPUPairs(s)[0].GPU.Library; l != "libhsa-runtime64.so.1" {
		t.Errorf("with the runtime's AMD SMI, the HSA runtime by name: %q", l)
	}
}

func TestPriorities(t *testing.T) {
	for _, c := range []struct {
		in   []int
		want string
	}{{nil, "none"}, {[]int{3}, "3"}, {[]int{0, 1, 2, 3, 4, 5, 6, 7}, "0-7"}, {[]int{1, 3, 4, 5, 7}, "1,3-5,7"}} {
		if got := priorities(c.in); got != c.want {
			t.Errorf("priorities(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Every check is listed once, documented, and has a table test above.
func TestChecksListed(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Checks() {
		if seen[c.Name] || c.Summary == "" || c.Remedy == "" || c.run == nil || (c.Severity != Critical && c.Severity != Warning) {
			t.Errorf("check %+v: duplicate or incomplete", c.Name)
		}
		seen[c.Name] = true
	}
	r := Run(good(), Options{ExpectedGPUCount: 2})
	if !r.Verified || r.Counts.Fail+r.Counts.Warn != 0 {
		t.Errorf("the good fixture does not verify: %+v", r.Counts)
	}
	if n := r.Counts.Pass + r.Counts.Skip; n != len(r.Results) {
		t.Errorf("counts %+v for %d results", r.Counts, len(r.Results))
	}
	bad := good()
	bad.GPUs[0].RemappedRows.Pending = true
	bad.GPUs[1].ECC.Enabled = false
	r = Run(bad, Options{ExpectedGPUCount: 2})
	if r.Verified || r.Counts.Fail != 1 || r.Counts.Warn != 1 || len(r.Failed()) != 1 || r.Failed()[0].Subject != "gpu0" {
		t.Errorf("a pending remap must fail and ECC off warn: %+v %s", r.Counts, fmt.Sprint(r.Failed()))
	}
}

func TestDiscoverySources(t *testing.T) {
	ok := func(s *snapshot.Snapshot) {
		s.Sources = []source.Status{{Name: "nvml", State: source.OK}, {Name: "rdma", State: source.Absent}}
	}
	run(t, discoverySources(), []cas{
		{"all ran", Options{}, ok, "node=pass"},
		{"one failed", Options{}, func(s *snapshot.Snapshot) {
			ok(s)
			s.Sources[0] = source.Status{Name: "nvml", State: source.Error, Message: "nvmlInit: ERROR_UNKNOWN"}
		}, "node=fail"},
		{"none ran", Options{}, nil, "node=skip"},
	})
}

// noBackend is the node as the agent sees it when its container lacks
// NVML: GPUs on PCI, none inventoried, the nvml source an error (as
// snapshot.Build makes it).
func noBackend(s *snapshot.Snapshot) {
	const fix = "mount the driver library"
	s.GPUs, s.GPUDirect = nil, snapshot.GPUDirect{Reason: "unknown: 2 NVIDIA GPUs on PCI not inventoried: nvml failed"}
	s.GPUsWithoutBackend = []snapshot.GPUsWithoutBackend{{Vendor: gpu.NVIDIA, Driver: "nvidia",
		PCIAddresses: []string{"0000:1b:00.0", "0000:43:00.0"}, Backends: []string{"nvml"}, Fix: fix}}
	s.Sources = []source.Status{
		{Name: "nvml", State: source.Error, Message: "2 NVIDIA GPUs on PCI (bound to nvidia) but NVML is not available: libnvidia-ml.so.1 not found; " + fix},
		{Name: "rdma", State: source.OK},
	}
}

// GPUs on PCI that no backend can read fail the discovery check with the
// fix as its remedy, and the GPU checks say why they cannot judge rather
// than "no GPUs".
func TestGPUsWithoutBackend(t *testing.T) {
	run(t, discoverySources(), []cas{
		{"NVML missing", Options{}, noBackend, "node=fail"},
	})
	s := good()
	noBackend(s)
	r := Run(s, Options{ExpectedGPUCount: 2})
	if r.Verified {
		t.Fatal("a node whose GPUs no backend reads verified")
	}
	for _, res := range r.Results {
		switch {
		case res.Check == "discovery":
			if res.Status != Fail || res.Remedy != "mount the driver library" ||
				res.Observed != "nvml: 2 NVIDIA GPUs on PCI (bound to nvidia) but NVML is not available: libnvidia-ml.so.1 not found" {
				t.Errorf("discovery: %+v", res)
			}
		case strings.HasPrefix(res.Check, "gpu") || res.Check == "nvlink" || res.Check == "nvswitch-fabric":
			if res.Status != Skip || res.Observed != "2 NVIDIA GPUs on PCI not inventoried: nvml failed" {
				t.Errorf("%s: %+v", res.Check, res)
			}
		}
	}
	// Another source failing beside it keeps the generic remedy too.
	s.Sources[1] = source.Status{Name: "rdma", State: source.Error, Message: "read rate: EIO"}
	f := discoverySources().Evaluate(s, Options{})[0]
	if !strings.HasPrefix(f.Remedy, "mount the driver library; other sources: a source failed") ||
		!strings.HasSuffix(f.Observed, "; rdma: read rate: EIO") {
		t.Errorf("discovery with rdma failing too: %+v", f)
	}
}

// TestBaseboardGPUs: the GPU count each product ships in. "NVIDIA GB200"
// (nvidia-smi's name on a GB200 NVL compute tray) contains "B200" and
// "NVIDIA GH200 480GB" contains "H200", yet neither is an eight-GPU board.
func TestBaseboardGPUs(t *testing.T) {
	for product, want := range map[string]int{
		"NVIDIA H100 80GB HBM3": 8,
		"NVIDIA B200":           8,
		"NVIDIA H200":           8,
		"AMD Instinct MI300X":   8,
		"NVIDIA GB200":          4,
		"NVIDIA GB300":          4,
		"NVIDIA GH200 480GB":    0,
		"NVIDIA H100 PCIe":      0,
		"NVIDIA H100 NVL":       0,
		"NVIDIA L40S":           0,
	} {
		got, ok := baseboardGPUs(product)
		if got != want || ok != (want > 0) {
			t.Errorf("baseboardGPUs(%q) = %d %v, want %d", product, got, ok, want)
		}
	}
}
