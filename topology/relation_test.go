package topology

import (
	"strings"
	"testing"
)

// dev builds a device from its resolved sysfs path, as Discover would.
func dev(t *testing.T, numa int, resolved string) PCIDevice {
	t.Helper()
	addr := resolved[strings.LastIndexByte(resolved, '/')+1:]
	path, err := parsePCIPath(resolved, addr)
	if err != nil {
		t.Fatal(err)
	}
	return PCIDevice{Address: addr, NUMANode: numa, Path: path}
}

func TestRelation(t *testing.T) {
	// A DGX H100-like tree: host bridge pci0000:15 has root port 15:01.0 with
	// a PCIe switch (upstream 16:00.0, downstream 17:00.0, 17:01.0, 17:02.0);
	// a second switch hangs off 17:02.0. Root port 15:02.0 has a GPU
	// directly. Host bridge pci0000:26 is on the same NUMA node; pci0000:9a
	// is on node 1.
	const sw = "/sys/devices/pci0000:15/0000:15:01.0/0000:16:00.0"
	var (
		gpu0    = dev(t, 0, sw+"/0000:17:00.0/0000:18:00.0")
		nic0    = dev(t, 0, sw+"/0000:17:01.0/0000:19:00.0")
		nic0p1  = dev(t, 0, sw+"/0000:17:01.0/0000:19:00.1") // second port of the same NIC
		deepGPU = dev(t, 0, sw+"/0000:17:02.0/0000:1a:00.0/0000:1b:00.0/0000:1c:00.0")
		deepNIC = dev(t, 0, sw+"/0000:17:02.0/0000:1a:00.0/0000:1b:01.0/0000:1d:00.0")
		rpGPU   = dev(t, 0, "/sys/devices/pci0000:15/0000:15:02.0/0000:20:00.0")
		rpNIC   = dev(t, 0, "/sys/devices/pci0000:15/0000:15:03.0/0000:21:00.0")
		rpNICf1 = dev(t, 0, "/sys/devices/pci0000:15/0000:15:03.0/0000:21:00.1")
		onBus   = dev(t, 0, "/sys/devices/pci0000:15/0000:15:00.3") // integrated on the root bus
		node0   = dev(t, 0, "/sys/devices/pci0000:26/0000:26:01.0/0000:27:00.0/0000:28:00.0/0000:29:00.0")
		node1   = dev(t, 1, "/sys/devices/pci0000:9a/0000:9a:01.0/0000:9b:00.0/0000:9c:00.0/0000:9d:00.0")
	)
	unknownA, unknownB := node0, node1
	unknownA.NUMANode, unknownB.NUMANode = -1, -1
	noPath := PCIDevice{Address: "0000:30:00.0", NUMANode: 0}

	for _, tc := range []struct {
		name string
		a, b PCIDevice
		want string
	}{
		{"same device", gpu0, gpu0, RelSelf},
		{"GPU and NIC under one switch", gpu0, nic0, RelPIX},
		{"two ports of one NIC behind a switch", nic0, nic0p1, RelPIX},
		{"two functions on a root port", rpNIC, rpNICf1, RelPIX},
		{"GPU and NIC under a second-level switch", deepGPU, deepNIC, RelPIX},
		{"through two switches", gpu0, deepGPU, RelPXB},
		{"through two switches, other side", deepNIC, nic0, RelPXB},
		{"different root ports", gpu0, rpGPU, RelPHB},
		{"root ports without switches", rpGPU, rpNIC, RelPHB},
		{"integrated device on the root bus", onBus, gpu0, RelPHB},
		{"other host bridge, same node", gpu0, node0, RelNode},
		{"other node", gpu0, node1, RelSys},
		{"unknown nodes", unknownA, unknownB, RelSys},
		{"one unknown node", gpu0, unknownA, RelSys},
		{"unknown path, same node", gpu0, noPath, RelNode},
		{"unknown path and node", PCIDevice{NUMANode: -1}, PCIDevice{NUMANode: -1}, RelSys},
	} {
		if got := Relation(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: Relation(%s, %s) = %s; want %s", tc.name, tc.a.Address, tc.b.Address, got, tc.want)
		}
		if got := Relation(tc.b, tc.a); got != tc.want {
			t.Errorf("%s: Relation(%s, %s) = %s; want %s (symmetric)", tc.name, tc.b.Address, tc.a.Address, got, tc.want)
		}
	}
}
