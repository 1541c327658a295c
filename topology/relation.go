package topology

// Relations between two PCI devices, named as nvidia-smi topo -m names them.
const (
	RelSelf = "X"    // the same device
	RelPIX  = "PIX"  // through at most one PCIe switch
	RelPXB  = "PXB"  // through several PCIe switches, not the host bridge
	RelPHB  = "PHB"  // through the host bridge (root complex) both hang off
	RelNode = "NODE" // across host bridges within one NUMA node
	RelSys  = "SYS"  // across NUMA nodes, or unknown
)

// Relation says how traffic between two devices travels, from their Paths
// (host bridge, root port, switch ports..., device) and NUMA nodes. With k
// the number of leading Path elements both share:
//
//   - "X": a and b are the same device (same non-empty Address).
//   - "PIX": same root port (k >= 2) and each device is at most two levels
//     below the deepest shared element: that element is a switch upstream
//     port (or the root port) and each device sits behind at most one of
//     its downstream ports, so only one switch is crossed. Two functions of
//     one device (a dual-port NIC) share their parent and are PIX too.
//   - "PXB": same root port, but a device is deeper than that: its path
//     goes up through a further switch before the shared one.
//   - "PHB": same host bridge (Path[0]) but different root ports (k == 1),
//     or integrated devices directly on the root bus: traffic crosses the
//     root complex.
//   - "NODE": different host bridges (or a Path unknown) on the same known
//     NUMA node.
//   - "SYS": different or unknown (-1) NUMA nodes.
//
// On a DGX H100 a GPU and its NIC behind one PCIe switch are PIX; GPUs
// under different root ports of one root complex are PHB.
func Relation(a, b PCIDevice) string {
	if a.Address != "" && a.Address == b.Address {
		return RelSelf
	}
	if len(a.Path) > 0 && len(b.Path) > 0 && a.Path[0] == b.Path[0] {
		k := 1
		for k < len(a.Path) && k < len(b.Path) && a.Path[k] == b.Path[k] {
			k++
		}
		switch {
		case k == 1:
			return RelPHB
		case len(a.Path)-k <= 2 && len(b.Path)-k <= 2:
			return RelPIX
		default:
			return RelPXB
		}
	}
	if a.NUMANode >= 0 && a.NUMANode == b.NUMANode {
		return RelNode
	}
	return RelSys
}
