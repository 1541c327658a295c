package verify

import (
	"testing"

	"github.com/gpunode/gpunode/internal/cpuset"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/topology"
)

// pciDevs gives the node a GPU and a NIC under one switch, with the PCIe
// registers and IOMMU domain types set by f.
func pciDevs(f func(gpu, nic *topology.PCIDevice)) func(s *snapshot.Snapshot) {
	return func(s *snapshot.Snapshot) {
		gpu := topology.PCIDevice{Address: "0000:18:00.0", Kind: topology.KindGPU,
			PCIe: &topology.PCIeConfig{MaxReadRequest: 512, MaxPayload: 256}}
		nic := topology.PCIDevice{Address: "0000:19:00.0", Kind: topology.KindNIC,
			PCIe: &topology.PCIeConfig{MaxReadRequest: 4096, MaxPayload: 256}}
		vf := topology.PCIDevice{Address: "0000:19:00.2", Kind: topology.KindNIC, VirtualFunction: true, IOMMUGroupType: "DMA"}
		mgmt := topology.PCIDevice{Address: "0000:00:1f.6", Kind: topology.KindNIC, PCIe: &topology.PCIeConfig{MaxReadRequest: 128, MaxPayload: 128}}
		f(&gpu, &nic)
		s.PCIDevices = []topology.PCIDevice{gpu, nic, vf, mgmt}
		s.RDMADevices[0].PCIAddress = nic.Address
	}
}

func TestIOMMUPassthrough(t *testing.T) {
	run(t, iommuPassthrough(), []cas{
		{name: "no devices", want: "node=skip"},
		{name: "no IOMMU", change: pciDevs(func(g, n *topology.PCIDevice) {}), want: "node=pass"},
		{name: "passthrough", change: pciDevs(func(g, n *topology.PCIDevice) { g.IOMMUGroupType, n.IOMMUGroupType = "identity", "identity" }), want: "node=pass"},
		{name: "translated GPU", change: pciDevs(func(g, n *topology.PCIDevice) { g.IOMMUGroupType, n.IOMMUGroupType = "DMA-FQ", "identity" }), want: "node=warn"},
		{name: "translated NIC", change: pciDevs(func(g, n *topology.PCIDevice) { n.IOMMUGroupType = "DMA" }), want: "node=warn"},
	})
}

func TestIsolcpusManagedIRQ(t *testing.T) {
	iso := func(flags ...string) func(s *snapshot.Snapshot) {
		return func(s *snapshot.Snapshot) {
			s.Host.IsolatedCPUs, _ = cpuset.Parse("2-3")
			s.Host.IsolatedCPUFlags = flags
		}
	}
	run(t, isolcpusManagedIRQ(), []cas{
		{name: "none", want: "node=skip"},
		{name: "domain only", change: iso("domain"), want: "node=warn"},
		{name: "no flags", change: iso(), want: "node=warn"},
		{name: "managed_irq", change: iso("domain", "managed_irq"), want: "node=pass"},
	})
}

func TestPCIeMaxReadRequest(t *testing.T) {
	run(t, pcieMaxReadRequest(), []cas{
		{name: "no devices", want: "node=skip"},
		{name: "4096", change: pciDevs(func(g, n *topology.PCIDevice) {}), want: "0000:19:00.0=pass"},
		{name: "512", change: pciDevs(func(g, n *topology.PCIDevice) { n.PCIe.MaxReadRequest = 512 }), want: "0000:19:00.0=warn"},
		{name: "unreadable", change: pciDevs(func(g, n *topology.PCIDevice) { n.PCIe = nil }), want: "node=skip"},
	})
}

func TestPCIeACSRedirect(t *testing.T) {
	yes := true
	run(t, pcieACSRedirect(), []cas{
		{name: "no devices", want: "node=skip"},
		{name: "no redirect", change: pciDevs(func(g, n *topology.PCIDevice) {}), want: "0000:18:00.0=pass 0000:19:00.0=pass"},
		{name: "redirecting switch port", change: pciDevs(func(g, n *topology.PCIDevice) {
			n.PCIe.RedirectingBridges, n.PCIe.ATSEnabled = []string{"0000:17:01.0"}, &yes
		}), want: "0000:18:00.0=pass 0000:19:00.0=warn"},
		{name: "unreadable", change: pciDevs(func(g, n *topology.PCIDevice) { g.PCIe, n.PCIe = nil, nil }), want: "node=skip"},
	})
}

func TestHugepagesReserved(t *testing.T) {
	huge := func(h ...topology.HugePages) func(s *snapshot.Snapshot) {
		return func(s *snapshot.Snapshot) { s.Host.HugePages = h }
	}
	per := func(n0, n1 uint64) []topology.NodePages {
		return []topology.NodePages{{Node: 0, Pages: n0}, {Node: 1, Pages: n1}}
	}
	const g1, m2 = 1 << 20, 2048
	run(t, hugepagesReserved(), []cas{
		{name: "none", want: "node=skip"},
		{name: "all allocated", change: huge(topology.HugePages{SizeKB: m2, Requested: 1024, Allocated: 1024, AllocatedPerNode: per(512, 512)}),
			want: "hugepages-2048kB=pass"},
		{name: "more than asked (raised at runtime)", change: huge(topology.HugePages{SizeKB: m2, Requested: 16, Allocated: 32}),
			want: "hugepages-2048kB=pass"},
		{name: "zero asked", change: huge(topology.HugePages{SizeKB: m2}), want: "hugepages-2048kB=pass"},
		{name: "short", change: huge(topology.HugePages{SizeKB: g1, Requested: 8, Allocated: 6, AllocatedPerNode: per(4, 2)}),
			want: "hugepages-1048576kB=warn"},
		{name: "short on one node", change: huge(
			topology.HugePages{SizeKB: m2, Requested: 1024, Allocated: 1024},
			topology.HugePages{SizeKB: g1, Requested: 8, RequestedPerNode: per(4, 4), Allocated: 8, AllocatedPerNode: per(6, 2)}),
			want: "hugepages-2048kB=pass hugepages-1048576kB=warn"},
		{name: "per node met", change: huge(topology.HugePages{SizeKB: g1, Requested: 8, RequestedPerNode: per(4, 4), Allocated: 8, AllocatedPerNode: per(4, 4)}),
			want: "hugepages-1048576kB=pass"},
		{name: "ignored parameters", change: func(s *snapshot.Snapshot) {
			huge(topology.HugePages{SizeKB: m2, Requested: 16, Allocated: 16})(s)
			s.Host.HugePagesIgnored = []string{"hugepages=8: a second count for one size; the kernel keeps the first"}
		}, want: "node=warn hugepages-2048kB=pass"},
		{name: "only ignored", change: func(s *snapshot.Snapshot) { s.Host.HugePagesIgnored = []string{"hugepages=x: bad"} }, want: "node=warn"},
		{name: "no pool", change: huge(topology.HugePages{SizeKB: 16 << 20, Requested: 1, NoPool: true}), want: "hugepages-16777216kB=warn"},
	})
}

func TestHugepagesReservedSays(t *testing.T) {
	s := good()
	s.Host.HugePages = []topology.HugePages{{SizeKB: 1 << 20, Requested: 8, RequestedPerNode: []topology.NodePages{{Node: 0, Pages: 4}, {Node: 1, Pages: 4}},
		Allocated: 6, AllocatedPerNode: []topology.NodePages{{Node: 0, Pages: 4}, {Node: 1, Pages: 2}}}}
	r := hugepagesReserved().Evaluate(s, Options{})
	if len(r) != 1 || r[0].Observed != "6 allocated (node0 4, node1 2)" || r[0].Expected != "8 pages of 1G (node0 4, node1 4)" {
		t.Errorf("results = %+v", r)
	}
	for kb, want := range map[uint64]string{2048: "2M", 1 << 20: "1G", 16 << 20: "16G", 64: "64K", 512 << 10: "512M"} {
		if got := hugeSize(kb); got != want {
			t.Errorf("hugeSize(%d) = %q; want %q", kb, got, want)
		}
	}
}
