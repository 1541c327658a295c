package rdma

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
)

// fixture builds a host tree in the shapes of docs/host-files.md. Paths
// are host paths ("/sys/..."); links are written relative, as sysfs does.
type fixture struct {
	t    *testing.T
	root string
	// maxGIDs caps GID tables (0: no cap) where their real size only costs
	// time: creating files is slow on some test machines.
	maxGIDs int
}

func newFixture(t *testing.T) *fixture { return &fixture{t: t, root: t.TempDir()} }

func (f *fixture) real(p string) string { return filepath.Join(f.root, p) }

func (f *fixture) file(p, content string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Dir(f.real(p)), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(f.real(p), []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// files writes attributes into dir, each with the kernel's trailing newline.
func (f *fixture) files(dir string, attrs map[string]string) {
	f.t.Helper()
	for name, v := range attrs {
		f.file(path.Join(dir, name), v+"\n")
	}
}

func (f *fixture) link(p, target string) {
	f.t.Helper()
	rel, err := filepath.Rel(path.Dir(p), target)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(f.real(p)), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(rel, f.real(p)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) remove(p string) {
	f.t.Helper()
	if err := os.RemoveAll(f.real(p)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) fs() hostfs.FS {
	f.t.Helper()
	fsys, err := hostfs.New(f.root)
	if err != nil {
		f.t.Fatal(err)
	}
	return fsys
}

// pciFunc creates a PCI function behind a root port on NUMA node numa,
// bound to driver, and returns its directory.
func (f *fixture) pciFunc(bdf, driver string, numa int) string {
	dir := "/sys/devices/pci0000:00/0000:00:02.0/" + bdf
	f.files(dir, map[string]string{"numa_node": fmt.Sprint(numa), "vendor": "0x15b3", "class": "0x020700"})
	f.files("/sys/bus/pci/drivers/"+driver, map[string]string{"new_id": ""})
	f.link(dir+"/driver", "/sys/bus/pci/drivers/"+driver)
	f.link("/sys/bus/pci/devices/"+bdf, dir)
	return dir
}

// rdmaDevice creates /sys/class/infiniband/<name> below PCI function pci,
// or under /sys/devices/virtual when pci is "", and returns its directory.
func (f *fixture) rdmaDevice(name, pci string, attrs map[string]string) string {
	dir := "/sys/devices/virtual/infiniband/" + name
	if pci != "" {
		dir = pci + "/infiniband/" + name
		f.link(dir+"/device", pci)
	}
	f.files(dir, attrs)
	f.link("/sys/class/infiniband/"+name, dir)
	return dir
}

func (f *fixture) port(dev string, n int, attrs map[string]string) string {
	dir := fmt.Sprintf("%s/ports/%d", dev, n)
	f.files(dir, attrs)
	f.files(dir+"/counters", map[string]string{"port_xmit_data": "123456"})
	return dir
}

type gidEntry struct{ gid, typ, ndev string }

const zeroGID = "0000:0000:0000:0000:0000:0000:0000:0000"

// gidTable writes a GID table of size entries, all zeros but the given
// ones. Unpopulated entries have no type or ndev file here; on a host the
// files exist and reading them fails with ENODATA (see TestGIDAttrUnset).
func (f *fixture) gidTable(port string, size int, entries map[int]gidEntry) {
	if f.maxGIDs > 0 {
		size = min(size, f.maxGIDs)
	}
	for i := range size {
		e, ok := entries[i]
		if !ok {
			e.gid = zeroGID
		}
		f.file(fmt.Sprintf("%s/gids/%d", port, i), e.gid+"\n")
		if e.typ != "" {
			f.file(fmt.Sprintf("%s/gid_attrs/types/%d", port, i), e.typ+"\n")
		}
		if e.ndev != "" {
			f.file(fmt.Sprintf("%s/gid_attrs/ndevs/%d", port, i), e.ndev+"\n")
		}
	}
}

// netdev creates /sys/class/net/<name> below PCI function pci, or under
// /sys/devices/virtual/net when pci is "".
func (f *fixture) netdev(name, pci string, mtu, devPort int) {
	dir := "/sys/devices/virtual/net/" + name
	if pci != "" {
		dir = pci + "/net/" + name
		f.link(dir+"/device", pci)
	}
	f.files(dir, map[string]string{"mtu": fmt.Sprint(mtu), "dev_port": fmt.Sprint(devPort), "operstate": "up"})
	f.link("/sys/class/net/"+name, dir)
}

// verbs creates uverbs<n> for ibdev below its parent, and its /dev node
// when devNode is set.
func (f *fixture) verbs(n int, ibdev, parent string, devNode bool) {
	dir := fmt.Sprintf("%s/infiniband_verbs/uverbs%d", parent, n)
	f.files(dir, map[string]string{"ibdev": ibdev, "abi_version": "1"})
	f.link(fmt.Sprintf("/sys/class/infiniband_verbs/uverbs%d", n), dir)
	f.files("/sys/class/infiniband_verbs", map[string]string{"abi_version": "6"})
	if devNode {
		f.file(fmt.Sprintf("/dev/infiniband/uverbs%d", n), "")
	}
}

// ibHCA adds mlx5_0, an InfiniBand HCA with one ACTIVE NDR port, its IPoIB
// interface and its verbs device, and returns what Discover must report.
func (f *fixture) ibHCA() Device {
	const name, bdf, n = "mlx5_0", "0000:17:00.0", 0
	pci := f.pciFunc(bdf, "mlx5_core", 0)
	dev := f.rdmaDevice(name, pci, map[string]string{
		"node_type": "1: CA", "node_guid": "b83f:d203:00a4:5ef0", "sys_image_guid": "b83f:d203:00a4:5ef0",
		"fw_ver": "28.39.1002", "hca_type": "MT4129", "board_id": "MT_0000000838",
	})
	port := f.port(dev, 1, map[string]string{
		"state": "4: ACTIVE", "phys_state": "5: LinkUp", "link_layer": "InfiniBand",
		"rate": "400 Gb/sec (4X NDR)", "lid": "0x1a", "sm_lid": "0x1",
	})
	f.gidTable(port, 128, map[int]gidEntry{0: {gid: "fe80:0000:0000:0000:b83f:d203:00a4:5ef0", typ: "IB/RoCE v1"}})
	f.netdev("ibp23s0", pci, 4092, 0)
	f.verbs(n, name, pci, true)
	return Device{
		Name: name, Driver: "mlx5_core", NodeType: "CA",
		NodeGUID: "b83f:d203:00a4:5ef0", SysImageGUID: "b83f:d203:00a4:5ef0",
		FirmwareVersion: "28.39.1002", HCAType: "MT4129", BoardID: "MT_0000000838",
		PCIAddress: bdf, NUMANode: 0, Verbs: fmt.Sprintf("uverbs%d", n), VerbsDevicePresent: true,
		Ports: []Port{{
			Number: 1, State: "ACTIVE", PhysState: "LinkUp", LinkLayer: "InfiniBand", Transport: InfiniBand,
			RateGbps: 400, Rate: "400 Gb/sec (4X NDR)", LID: new(uint32(0x1a)), SMLID: new(uint32(1)),
			Netdev: "ibp23s0", NetdevMTU: 4092, // ActiveMTU unknown on InfiniBand
			GIDs: []GID{{Index: 0, GID: "fe80:0000:0000:0000:b83f:d203:00a4:5ef0", Type: "IB/RoCE v1"}},
		}},
	}
}

// roceNIC adds an mlx5 RoCE function whose port is ACTIVE on netdev
// (MTU 9000), with v1 and v2 GIDs for its IPv6 link-local and IPv4
// address and a global IPv6 address after a hole left by removed ones.
func (f *fixture) roceNIC(name, bdf, netdev string, n int) Device {
	pci := f.pciFunc(bdf, "mlx5_core", 1)
	dev := f.rdmaDevice(name, pci, map[string]string{
		"node_type": "1: CA", "node_guid": "a088:c203:0012:3456", "sys_image_guid": "a088:c203:0012:3456",
		"fw_ver": "28.39.1002", "hca_type": "MT4129", "board_id": "MT_0000000838",
	})
	port := f.port(dev, 1, map[string]string{
		"state": "4: ACTIVE", "phys_state": "5: LinkUp", "link_layer": "Ethernet",
		"rate": "200 Gb/sec (4X HDR)", "lid": "0x0", "sm_lid": "0x0",
	})
	const ll, v4, v6 = "fe80:0000:0000:0000:a288:c2ff:fe12:3456", "0000:0000:0000:0000:0000:ffff:0a00:0005", "fd00:0000:0000:0001:0000:0000:0000:0005"
	f.gidTable(port, 255, map[int]gidEntry{
		0: {ll, "IB/RoCE v1", netdev}, 1: {ll, "RoCE v2", netdev},
		2: {v4, "IB/RoCE v1", netdev}, 3: {v4, "RoCE v2", netdev},
		10: {v6, "IB/RoCE v1", netdev}, 11: {v6, "RoCE v2", netdev},
	})
	f.netdev(netdev, pci, 9000, 0)
	f.verbs(n, name, pci, true)
	// mlx5's ECN switches: DCQCN on priority 3 only; rdma_cm's configfs
	// directory created by cma_roce_mode.
	for prio := range 8 {
		on := map[bool]string{true: "1\n", false: "0\n"}[prio == 3]
		f.file(fmt.Sprintf("/sys/class/net/%s/ecn/roce_np/enable/%d", netdev, prio), on)
		f.file(fmt.Sprintf("/sys/class/net/%s/ecn/roce_rp/enable/%d", netdev, prio), on)
	}
	f.file(fmt.Sprintf("/sys/kernel/config/rdma_cm/%s/ports/1/default_roce_mode", name), "RoCE v2\n")
	return Device{
		Name: name, Driver: "mlx5_core", NodeType: "CA",
		NodeGUID: "a088:c203:0012:3456", SysImageGUID: "a088:c203:0012:3456",
		FirmwareVersion: "28.39.1002", HCAType: "MT4129", BoardID: "MT_0000000838",
		PCIAddress: bdf, NUMANode: 1, Verbs: fmt.Sprintf("uverbs%d", n), VerbsDevicePresent: true,
		Ports: []Port{{
			Number: 1, State: "ACTIVE", PhysState: "LinkUp", LinkLayer: "Ethernet", Transport: RoCE, LID: new(uint32(0)), SMLID: new(uint32(0)),
			RateGbps: 200, Rate: "200 Gb/sec (4X HDR)", ActiveMTU: 4096, Netdev: netdev, NetdevMTU: 9000,
			GIDs: []GID{
				{0, ll, "IB/RoCE v1", netdev}, {1, ll, "RoCE v2", netdev},
				{2, v4, "IB/RoCE v1", netdev}, {3, v4, "RoCE v2", netdev},
				{10, v6, "IB/RoCE v1", netdev}, {11, v6, "RoCE v2", netdev},
			},
			RoCE: &RoCEConfig{DefaultMode: RoCEv2, ModeSource: ModeConfigfs,
				ECN: &ECN{NotificationPoint: []int{3}, ReactionPoint: []int{3}}},
		}},
	}
}

func TestDiscover(t *testing.T) {
	f := newFixture(t)
	want := []Device{f.ibHCA(), f.roceNIC("mlx5_1", "0000:ca:00.0", "ens1np0", 1)}

	// A RoCE port whose link is down, with a verbs device but no /dev node.
	pci := f.pciFunc("0000:ca:00.1", "mlx5_core", 1)
	dev := f.rdmaDevice("mlx5_2", pci, map[string]string{
		"node_type": "1: CA", "node_guid": "a088:c203:0012:3457", "sys_image_guid": "a088:c203:0012:3456", "fw_ver": "28.39.1002",
	})
	port := f.port(dev, 1, map[string]string{
		"state": "1: DOWN", "phys_state": "3: Disabled", "link_layer": "Ethernet",
		"rate": "40 Gb/sec (4X QDR)", "lid": "0x0", "sm_lid": "0x0",
	})
	const ll2 = "fe80:0000:0000:0000:a288:c2ff:fe12:3457"
	f.gidTable(port, 255, map[int]gidEntry{0: {ll2, "IB/RoCE v1", "ens1f1np1"}, 1: {ll2, "RoCE v2", "ens1f1np1"}})
	f.netdev("ens1f1np1", pci, 1500, 0)
	f.verbs(2, "mlx5_2", pci, false)
	f.file("/sys/kernel/config/rdma_cm/mlx5_2/ports/1/default_roce_mode", "IB/RoCE v1\n")
	want = append(want, Device{
		Name: "mlx5_2", Driver: "mlx5_core", NodeType: "CA", NodeGUID: "a088:c203:0012:3457", SysImageGUID: "a088:c203:0012:3456",
		FirmwareVersion: "28.39.1002", PCIAddress: "0000:ca:00.1", NUMANode: 1, Verbs: "uverbs2",
		Ports: []Port{{
			Number: 1, State: "DOWN", PhysState: "Disabled", LinkLayer: "Ethernet", Transport: RoCE, LID: new(uint32(0)), SMLID: new(uint32(0)),
			RateGbps: 40, Rate: "40 Gb/sec (4X QDR)", ActiveMTU: 1024, Netdev: "ens1f1np1", NetdevMTU: 1500,
			GIDs: []GID{{0, ll2, "IB/RoCE v1", "ens1f1np1"}, {1, ll2, "RoCE v2", "ens1f1np1"}},
			RoCE: &RoCEConfig{DefaultMode: RoCEv1, ModeSource: ModeConfigfs},
		}},
	})

	// A dual-port mlx4 HCA: one PCI function, two IPoIB interfaces told
	// apart by dev_port; no board_id, NUMA unknown, ports listed "1", "2".
	pci = f.pciFunc("0000:03:00.0", "mlx4_core", -1)
	dev = f.rdmaDevice("mlx4_0", pci, map[string]string{
		"node_type": "1: CA", "node_guid": "0002:c903:00f1:2a40", "sys_image_guid": "0002:c903:00f1:2a43",
		"fw_ver": "2.42.5000", "hca_type": "MT4099",
	})
	for n := 1; n <= 2; n++ {
		port := f.port(dev, n, map[string]string{
			"state": "4: ACTIVE", "phys_state": "5: LinkUp", "link_layer": "InfiniBand",
			"rate": "56 Gb/sec (4X FDR)", "lid": fmt.Sprintf("0x%x", n+2), "sm_lid": "0x1",
		})
		f.gidTable(port, 128, map[int]gidEntry{0: {fmt.Sprintf("fe80:0000:0000:0000:0002:c903:00f1:2a4%d", n), "IB/RoCE v1", ""}})
	}
	f.netdev("ib1", pci, 65520, 1)
	f.netdev("ib0", pci, 2044, 0)
	ibPort := func(n int, netdev string, mtu int) Port {
		return Port{
			Number: n, State: "ACTIVE", PhysState: "LinkUp", LinkLayer: "InfiniBand", Transport: InfiniBand,
			RateGbps: 56, Rate: "56 Gb/sec (4X FDR)", LID: new(uint32(n + 2)), SMLID: new(uint32(1)), Netdev: netdev, NetdevMTU: mtu,
			GIDs: []GID{{0, fmt.Sprintf("fe80:0000:0000:0000:0002:c903:00f1:2a4%d", n), "IB/RoCE v1", ""}},
		}
	}
	want = append([]Device{{
		Name: "mlx4_0", Driver: "mlx4_core", NodeType: "CA", NodeGUID: "0002:c903:00f1:2a40", SysImageGUID: "0002:c903:00f1:2a43",
		FirmwareVersion: "2.42.5000", HCAType: "MT4099", PCIAddress: "0000:03:00.0", NUMANode: -1,
		Ports: []Port{ibPort(1, "ib0", 2044), ibPort(2, "ib1", 65520)},
	}}, want...)

	// Soft-RoCE on a plain NIC: a virtual device with a parent file, empty
	// fw_ver, SDR rate, and the NUMA node of the NIC.
	nic := f.pciFunc("0000:65:00.0", "igb", 1)
	f.netdev("eno1", nic, 1500, 0)
	dev = f.rdmaDevice("rxe0", "", map[string]string{
		"node_type": "1: CA", "node_guid": "5254:00ff:fe12:3456", "sys_image_guid": "5254:00ff:fe12:3456", "fw_ver": "", "parent": "eno1",
	})
	port = f.port(dev, 1, map[string]string{
		"state": "4: ACTIVE", "phys_state": "5: LinkUp", "link_layer": "Ethernet",
		"rate": "2.5 Gb/sec (1X SDR)", "lid": "0x0", "sm_lid": "0x0",
	})
	const rxeLL = "fe80:0000:0000:0000:5054:00ff:fe12:3456"
	f.gidTable(port, 32, map[int]gidEntry{0: {rxeLL, "IB/RoCE v1", "eno1"}, 1: {rxeLL, "RoCE v2", "eno1"}})
	f.verbs(3, "rxe0", dev, true)
	rxePort := Port{
		Number: 1, State: "ACTIVE", PhysState: "LinkUp", LinkLayer: "Ethernet", Transport: RoCE, LID: new(uint32(0)), SMLID: new(uint32(0)),
		RateGbps: 2.5, Rate: "2.5 Gb/sec (1X SDR)", ActiveMTU: 1024, Netdev: "eno1", NetdevMTU: 1500,
		GIDs: []GID{{0, rxeLL, "IB/RoCE v1", "eno1"}, {1, rxeLL, "RoCE v2", "eno1"}},
		RoCE: &RoCEConfig{DefaultMode: RoCEv2, ModeSource: ModeKernelDefault},
	}
	want = append(want, Device{
		Name: "rxe0", Driver: "rdma_rxe", NodeType: "CA", NodeGUID: "5254:00ff:fe12:3456", SysImageGUID: "5254:00ff:fe12:3456",
		NUMANode: 1, Verbs: "uverbs3", VerbsDevicePresent: true, Ports: []Port{rxePort},
	})

	// Soft-RoCE on a veth with no GIDs yet: the netdev comes from parent,
	// and a virtual netdev has no NUMA node.
	f.netdev("veth0", "", 9000, 0)
	dev = f.rdmaDevice("rxe1", "", map[string]string{
		"node_type": "1: CA", "node_guid": "5254:00ff:fe12:3457", "sys_image_guid": "5254:00ff:fe12:3457", "fw_ver": "", "parent": "veth0",
	})
	port = f.port(dev, 1, map[string]string{
		"state": "1: DOWN", "phys_state": "3: Disabled", "link_layer": "Ethernet",
		"rate": "2.5 Gb/sec (1X SDR)", "lid": "0x0", "sm_lid": "0x0",
	})
	f.gidTable(port, 32, nil)
	want = append(want, Device{
		Name: "rxe1", Driver: "rdma_rxe", NodeType: "CA", NodeGUID: "5254:00ff:fe12:3457", SysImageGUID: "5254:00ff:fe12:3457",
		NUMANode: -1, Ports: []Port{{
			Number: 1, State: "DOWN", PhysState: "Disabled", LinkLayer: "Ethernet", Transport: RoCE, LID: new(uint32(0)), SMLID: new(uint32(0)),
			RateGbps: 2.5, Rate: "2.5 Gb/sec (1X SDR)", ActiveMTU: 4096, Netdev: "veth0", NetdevMTU: 9000,
			RoCE: &RoCEConfig{},
		}},
	})

	got, err := Discover(context.Background(), f.fs())
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		for i := range max(len(got), len(want)) {
			var g, w Device
			if i < len(got) {
				g = got[i]
			}
			if i < len(want) {
				w = want[i]
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("device %d:\n got %+v\nwant %+v", i, g, w)
			}
		}
	}
}

func TestDiscoverAbsent(t *testing.T) {
	f := newFixture(t)
	f.netdev("eth0", f.pciFunc("0000:01:00.0", "ixgbe", 0), 1500, 0)
	devs, err := Discover(context.Background(), f.fs())
	if devs != nil || !errors.Is(err, source.ErrAbsent) || !strings.Contains(err.Error(), "/sys/class/infiniband does not exist") {
		t.Errorf("no class directory: %v, %v; want absent", devs, err)
	}
	if err := os.MkdirAll(f.real("/sys/class/infiniband"), 0o755); err != nil {
		t.Fatal(err)
	}
	devs, err = Discover(context.Background(), f.fs())
	if devs != nil || !errors.Is(err, source.ErrAbsent) || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty class directory: %v, %v; want absent", devs, err)
	}
}

func TestDiscoverCancelled(t *testing.T) {
	f := newFixture(t)
	f.ibHCA()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	devs, err := Discover(ctx, f.fs())
	if len(devs) != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %d devices, %v", len(devs), err)
	}
}

// TestDiscoverGarbage breaks one device in each way a host can and checks
// that the problem is reported on it while the healthy device beside it is
// reported in full.
func TestDiscoverGarbage(t *testing.T) {
	const bad = "/sys/class/infiniband/mlx5_1"
	for _, tc := range []struct {
		name   string
		damage func(f *fixture)
		want   string // in the broken device's errors and the returned error
		// still reports what the broken device must still show.
		still func(d Device) bool
	}{
		{"empty state", func(f *fixture) { f.file(bad+"/ports/1/state", "") },
			bad + "/ports/1/state", func(d Device) bool { return d.Ports[0].State == "" && d.Ports[0].RateGbps == 200 }},
		{"truncated state", func(f *fixture) { f.file(bad+"/ports/1/state", "4:") },
			bad + "/ports/1/state", func(d Device) bool { return d.Ports[0].PhysState == "LinkUp" && len(d.Ports[0].GIDs) == 6 }},
		{"garbage state", func(f *fixture) { f.file(bad+"/ports/1/state", "x: ACTIVE\n") },
			`"x: ACTIVE"`, func(d Device) bool { return d.Ports[0].Netdev == "ens1np0" }},
		{"non-UTF-8 rate", func(f *fixture) { f.file(bad+"/ports/1/rate", "\xff\xfe Gb/sec (4X NDR)\n") },
			bad + "/ports/1/rate: content is not UTF-8", func(d Device) bool { return d.Ports[0].Rate == "" && d.Ports[0].Active() }},
		{"unparsable rate", func(f *fixture) { f.file(bad+"/ports/1/rate", "abc Gb/sec (4X NDR)\n") },
			bad + "/ports/1/rate", func(d Device) bool { return d.Ports[0].RateGbps == 0 && d.Ports[0].ActiveMTU == 4096 }},
		{"NUL bytes", func(f *fixture) { f.file(bad+"/node_guid", "a088\x00c203:0012:3456\n") },
			bad + "/node_guid: content holds NUL bytes", func(d Device) bool { return d.NodeGUID == "" && d.SysImageGUID != "" && d.Ports[0].Active() }},
		{"9 MiB file", func(f *fixture) { f.file(bad+"/hca_type", strings.Repeat("MT4129", 9<<20/6)) },
			bad + "/hca_type: file too large", func(d Device) bool { return d.HCAType == "" && d.BoardID != "" && d.Ports[0].Active() }},
		{"long attribute", func(f *fixture) { f.file(bad+"/board_id", strings.Repeat("x", 5000)) },
			bad + "/board_id: 5000 bytes", func(d Device) bool { return d.BoardID == "" && d.HCAType != "" }},
		{"control characters", func(f *fixture) { f.file(bad+"/fw_ver", "28.39\x1b[2J\n") },
			bad + "/fw_ver: content holds control characters", func(d Device) bool { return d.FirmwareVersion == "" }},
		{"huge LID", func(f *fixture) { f.file(bad+"/ports/1/lid", "0x1ffffffff\n") },
			bad + "/ports/1/lid", func(d Device) bool {
				return d.Ports[0].LID == nil && *d.Ports[0].SMLID == 0 && d.Ports[0].State == "ACTIVE"
			}},
		{"garbage GID", func(f *fixture) { f.file(bad+"/ports/1/gids/2", "0000:0000:zzzz\n") },
			bad + "/ports/1/gids/2", func(d Device) bool { return len(d.Ports[0].GIDs) == 5 }},
		{"garbage ndev", func(f *fixture) { f.file(bad+"/ports/1/gid_attrs/ndevs/0", "../../../etc\n") },
			bad + "/ports/1/gid_attrs/ndevs/0", func(d Device) bool { return d.Ports[0].GIDs[0].Netdev == "" && d.Ports[0].Netdev == "ens1np0" }},
		{"garbage netdev MTU", func(f *fixture) { f.file("/sys/class/net/ens1np0/mtu", "9000 bytes\n") },
			"/sys/class/net/ens1np0/mtu", func(d Device) bool { return d.Ports[0].NetdevMTU == 0 && d.Ports[0].ActiveMTU == 0 }},
		{"garbage NUMA node", func(f *fixture) { f.file(bad+"/device/numa_node", "-7\n") },
			"/sys/devices/pci0000:00/0000:00:02.0/0000:ca:00.0/numa_node", func(d Device) bool { return d.NUMANode == -1 && d.PCIAddress == "0000:ca:00.0" }},
		{"missing ports dir", func(f *fixture) { f.remove(bad + "/ports") },
			"list " + bad + "/ports", func(d Device) bool { return d.Ports == nil && d.NodeGUID != "" }},
		{"missing state", func(f *fixture) { f.remove(bad + "/ports/1/state") },
			bad + "/ports/1/state", func(d Device) bool { return d.Ports[0].State == "" && d.Ports[0].LinkLayer == "Ethernet" }},
		{"dangling device symlink", func(f *fixture) {
			f.remove(bad + "/device")
			f.link(bad+"/device", "/sys/devices/pci0000:00/0000:00:02.0/0000:cb:00.0")
		}, "resolve " + bad + "/device", func(d Device) bool { return d.PCIAddress == "" && d.NodeGUID != "" && d.Ports[0].Active() }},
		{"dangling class symlink", func(f *fixture) { f.remove("/sys/devices/pci0000:00/0000:00:02.0/0000:ca:00.0/infiniband") },
			"resolve " + bad, func(d Device) bool { return d.Name == "mlx5_1" && d.NUMANode == -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.maxGIDs = 16
			healthy := f.ibHCA()
			f.roceNIC("mlx5_1", "0000:ca:00.0", "ens1np0", 1)
			tc.damage(f)
			devs, err := Discover(context.Background(), f.fs())
			if err == nil || !strings.Contains(err.Error(), "mlx5_1") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming mlx5_1 and %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "mlx5_0") {
				t.Errorf("error blames the healthy device: %v", err)
			}
			if len(devs) != 2 {
				t.Fatalf("got %d devices, want 2", len(devs))
			}
			if !reflect.DeepEqual(devs[0], healthy) {
				t.Errorf("healthy device:\n got %+v\nwant %+v", devs[0], healthy)
			}
			broken := devs[1]
			problems := broken.Errors
			for _, p := range broken.Ports {
				problems = append(problems, p.Errors...)
			}
			if !strings.Contains(strings.Join(problems, "\n"), tc.want) {
				t.Errorf("device errors %q lack %q", problems, tc.want)
			}
			if !tc.still(broken) {
				t.Errorf("broken device lost what it could still read: %+v", broken)
			}
		})
	}
}

// An SR-IOV virtual function's PCI function links to its physical
// function (physfn); the PF has none.
func TestDiscoverVirtualFunction(t *testing.T) {
	f := newFixture(t)
	f.ibHCA() // the PF, mlx5_0 on 0000:17:00.0
	vf := f.pciFunc("0000:17:00.2", "mlx5_core", 0)
	f.link(vf+"/physfn", "/sys/devices/pci0000:00/0000:00:02.0/0000:17:00.0")
	dev := f.rdmaDevice("mlx5_4", vf, map[string]string{"node_type": "1: CA"})
	f.port(dev, 1, map[string]string{"state": "4: ACTIVE", "phys_state": "5: LinkUp", "link_layer": "InfiniBand", "rate": "400 Gb/sec (4X NDR)"})
	devs, err := Discover(context.Background(), f.fs())
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0].Name != "mlx5_0" || devs[0].VirtualFunction || devs[1].Name != "mlx5_4" || !devs[1].VirtualFunction {
		t.Errorf("devices %+v: want mlx5_0 a PF, mlx5_4 a VF", devs)
	}
}

// Soft-RoCE on virtio-net: the netdev's device is the virtio device
// (virtio0), which has no numa_node; its parent, the PCI function, has.
// Measured in the QEMU VM: /sys/class/net/eth0/device -> ../../../virtio0.
func TestDiscoverRxeOnVirtio(t *testing.T) {
	f := newFixture(t)
	pci := f.pciFunc("0000:81:00.0", "virtio-pci", 1)
	virtio := pci + "/virtio0"
	f.files(virtio, map[string]string{"vendor": "0x1af4", "device": "0x0001"})
	dir := virtio + "/net/eth0"
	f.files(dir, map[string]string{"mtu": "1500", "dev_port": "0", "operstate": "up"})
	f.link(dir+"/device", virtio)
	f.link("/sys/class/net/eth0", dir)
	dev := f.rdmaDevice("rxe0", "", map[string]string{"node_type": "1: CA", "fw_ver": "", "parent": "eth0"})
	f.port(dev, 1, map[string]string{"state": "4: ACTIVE", "phys_state": "5: LinkUp", "link_layer": "Ethernet", "rate": "2.5 Gb/sec (1X SDR)"})
	devs, err := Discover(context.Background(), f.fs())
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].NUMANode != 1 {
		t.Errorf("rxe0 on virtio-net behind a PCI function on node 1: %+v", devs)
	}
}
