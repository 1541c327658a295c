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
