package hwcheck

import (
	"net"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/rdma"
)

// ibv_devinfo -v of a ConnectX-7 NDR port (the lines the harness reads, in
// rdma-core's layout: tabs, "value (code)"); test/hwcheck runs the real
// tool against soft-RoCE.
const ibvDevinfoV = "hca_id:\tmlx5_0\n" +
	"\ttransport:\t\t\tInfiniBand (0)\n" +
	"\tfw_ver:\t\t\t\t28.39.1002\n" +
	"\tnode_guid:\t\t\tb8e9:2403:0001:0000\n" +
	"\tsys_image_guid:\t\t\tb8e9:2403:0001:0000\n" +
	"\tvendor_id:\t\t\t0x02c9\n" +
	"\tboard_id:\t\t\tMT_0000000838\n" +
	"\tphys_port_cnt:\t\t\t1\n" +
	"\tmax_mr_size:\t\t\t0xffffffffffffffff\n" +
	"\t\tport:\t1\n" +
	"\t\t\tstate:\t\t\tPORT_ACTIVE (4)\n" +
	"\t\t\tmax_mtu:\t\t4096 (5)\n" +
	"\t\t\tactive_mtu:\t\t4096 (5)\n" +
	"\t\t\tsm_lid:\t\t\t1\n" +
	"\t\t\tport_lid:\t\t17\n" +
	"\t\t\tlink_layer:\t\tInfiniBand\n" +
	"\t\t\tmax_msg_sz:\t\t0x40000000\n" +
	"\t\t\tactive_width:\t\t4X (2)\n" +
	"\t\t\tactive_speed:\t\t100.0 Gbps (128)\n" +
	"\t\t\tphys_state:\t\tLINK_UP (5)\n" +
	"\t\t\tGID[  0]:\t\tfe80:0000:0000:0000:b8e9:2403:0001:0000\n"

func agentIB() []rdma.Device {
	return []rdma.Device{{Name: "mlx5_0", FirmwareVersion: "28.39.1002", NodeGUID: "b8e9:2403:0001:0000", SysImageGUID: "b8e9:2403:0001:0000",
		BoardID: "MT_0000000838", Ports: []rdma.Port{{Number: 1, State: "ACTIVE", PhysState: "LinkUp", LinkLayer: "InfiniBand",
			RateGbps: 400, Rate: "400 Gb/sec (4X NDR)", ActiveMTU: 4096, Netdev: "ibp24s0",
			GIDs: []rdma.GID{{Index: 0, GID: "fe80:0000:0000:0000:b8e9:2403:0001:0000"}}}}}}
}

func TestParseIBVDevinfo(t *testing.T) {
	devs, err := ParseIBVDevinfo(strings.NewReader(ibvDevinfoV))
	if err != nil {
		t.Fatal(err)
	}
	want := IBVDevice{Name: "mlx5_0", FWVersion: "28.39.1002", NodeGUID: "b8e9:2403:0001:0000", SysImageGUID: "b8e9:2403:0001:0000", BoardID: "MT_0000000838",
		Ports: []IBVPort{{Number: 1, State: "PORT_ACTIVE", PhysState: "LINK_UP", ActiveMTU: 4096, LinkLayer: "InfiniBand", Width: "4X", Speed: "100.0 Gbps",
			GIDs: []IBVGID{{Index: 0, GID: net.ParseIP("fe80::b8e9:2403:1:0")}}}}}
	if len(devs) != 1 || devs[0].Name != want.Name || devs[0].FWVersion != want.FWVersion || devs[0].BoardID != want.BoardID ||
		len(devs[0].Ports) != 1 || !reflect.DeepEqual(devs[0].Ports[0], want.Ports[0]) {
		t.Errorf("got %+v", devs)
	}
	if _, err := ParseIBVDevinfo(strings.NewReader("hca_id:\tx\n\t\tport:\tone\n")); err == nil {
		t.Error("a port number that is not one parsed")
	}
}

func TestCompareRDMA(t *testing.T) {
	ibv, err := ParseIBVDevinfo(strings.NewReader(ibvDevinfoV))
	if err != nil {
		t.Fatal(err)
	}
	links, err := ParseRDMALink(strings.NewReader("link mlx5_0/1 subnet_prefix fe80:0000:0000:0000 lid 17 sm_lid 1 lmc 0 state ACTIVE physical_state LINK_UP netdev ibp24s0 \n"))
	if err != nil || len(links) != 1 || links[0] != (RDMALink{Device: "mlx5_0", Port: 1, State: "ACTIVE", PhysState: "LINK_UP", Netdev: "ibp24s0"}) {
		t.Fatalf("rdma link: %+v %v", links, err)
	}
	rows := CompareRDMA(agentIB(), ibv, links)
	if d := differing(rows); len(d) > 0 {
		t.Fatalf("agreeing sides differ:\n%s", strings.Join(d, "\n"))
	}
	if r, ok := find(rows, "rate (Gb/s)"); !ok || r.Agent != "400" || r.Vendor != "400" {
		t.Errorf("rate row %+v", r)
	}

	for _, w := range []struct {
		fact string
		edit func(d *rdma.Device)
	}{
		{"state", func(d *rdma.Device) { d.Ports[0].State = "DOWN" }},
		{"rate (Gb/s)", func(d *rdma.Device) { d.Ports[0].RateGbps = 200 }},
		{"firmware version", func(d *rdma.Device) { d.FirmwareVersion = "28.39.1000" }},
		{"netdev (rdma link)", func(d *rdma.Device) { d.Ports[0].Netdev = "" }},
		{"physical state", func(d *rdma.Device) { d.Ports[0].PhysState = "Polling" }},
	} {
		agent := agentIB()
		w.edit(&agent[0])
		d := differing(CompareRDMA(agent, ibv, links))
		if len(d) == 0 || !strings.Contains(d[0], " "+w.fact+":") {
			t.Errorf("agent wrong about %s: %q", w.fact, d)
		}
	}
	// A device only the agent has, one only ibv_devinfo has.
	agent := agentIB()
	agent[0].Name = "mlx5_1"
	if d := differing(CompareRDMA(agent, ibv, nil)); len(d) != 2 {
		t.Errorf("renamed device: %q", d)
	}
	// ibv_devinfo absent (nil): only rdma link is compared.
	if rows := CompareRDMA(agentIB(), nil, links); len(rows) != 3 {
		t.Errorf("without ibv_devinfo: %+v", rows)
	}
}

func TestCompareAMD(t *testing.T) {
	// amd-smi static --json in both shapes: a list (ROCm 6.x) and the
	// object with gpu_data (newer amd-smi).
	one := `{"gpu": 0, "asic": {"market_name": "AMD Instinct MI300X", "device_id": "0x74a1"}, "bus": {"bdf": "0000:0c:00.0"}, "vram": {"type": "HBM3", "size": {"value": 196592, "unit": "MB"}}}`
	for _, doc := range []string{"[" + one + "]", `{"gpu_data": [` + one + `]}`} {
		static, err := ParseAMDSMIStatic(strings.NewReader(doc))
		if err != nil || len(static) != 1 {
			t.Fatalf("%s: %+v %v", doc, static, err)
		}
		in := &Inspect{}
		in.GPUs = append(in.GPUs, gpuDevice("amd", "AMD Instinct MI300X", "0000:0c:00.0", "0x74a1", 196592<<20))
		if d := differing(CompareAMD(in, static)); len(d) > 0 {
			t.Errorf("agreeing sides differ: %q", d)
		}
		in.GPUs[0].MemoryBytes = 192 << 30 // 196608 MiB: 16 MiB more
		if d := differing(CompareAMD(in, static)); len(d) != 1 || !strings.Contains(d[0], "memory total") {
			t.Errorf("memory off by 16 MiB: %q", d)
		}
	}
	if _, err := ParseAMDSMIStatic(strings.NewReader("amd-smi: not found")); err == nil {
		t.Error("text parsed as amd-smi JSON")
	}
}

func gpuDevice(vendor, product, bus, devID string, mem uint64) gpu.Device {
	return gpu.Device{Vendor: gpu.Vendor(vendor), Product: product, PCIBusID: bus, PCIDeviceID: devID, MemoryBytes: mem}
}

// soft-RoCE has no fw_ver in sysfs (the agent reports none) and
// ibv_devinfo prints the kernel's 0 as 0.0.0: the same fact.
func TestCompareRDMASoftRoCEFirmware(t *testing.T) {
	agent := agentIB()
	agent[0].FirmwareVersion = ""
	ibv, err := ParseIBVDevinfo(strings.NewReader(strings.Replace(ibvDevinfoV, "28.39.1002", "0.0.0", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if d := differing(CompareRDMA(agent, ibv, nil)); len(d) > 0 {
		t.Errorf("%q", d)
	}
	ibv[0].FWVersion = "1.0.0"
	if d := differing(CompareRDMA(agent, ibv, nil)); len(d) != 1 {
		t.Errorf("a real version the agent misses: %q", d)
	}
}

// The real tools on soft-RoCE (captured by test/hwcheck in its VM: Linux
// 6.1, rdma-core 44, iproute2 6.1) against the agent's inspect there.
func TestCompareRDMARecordedSoftRoCE(t *testing.T) {
	read := func(name string) *os.File {
		f, err := os.Open("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	in, err := ParseInspect(read("inspect-softroce.json"))
	if err != nil {
		t.Fatal(err)
	}
	ibv, err := ParseIBVDevinfo(read("ibv_devinfo-v-softroce.txt"))
	if err != nil {
		t.Fatal(err)
	}
	links, err := ParseRDMALink(read("rdma-link-softroce.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ibv) != 1 || len(ibv[0].Ports) != 1 || ibv[0].Ports[0].Width != "1X" || ibv[0].Ports[0].Speed != "2.5 Gbps" || len(links) != 1 {
		t.Fatalf("ibv_devinfo %+v, rdma link %+v", ibv, links)
	}
	rows := CompareRDMA(in.RDMADevices, ibv, links)
	if d := differing(rows); len(d) > 0 {
		t.Errorf("%q", d)
	}
	// 12 facts, and the three GIDs with their count.
	if len(rows) != 16 {
		t.Errorf("%d rows: %+v", len(rows), rows)
	}
}

// TestCompareRDMAGIDs: the GID table of the recorded soft-RoCE port against
// an agent that lost the IPv4 GID and read GID 0 as RoCE v1.
func TestCompareRDMAGIDs(t *testing.T) {
	f, err := os.Open("testdata/ibv_devinfo-v-softroce.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ibv, err := ParseIBVDevinfo(f)
	if err != nil {
		t.Fatal(err)
	}
	vendor := ibv[0].Ports[0].GIDs
	if len(vendor) != 3 || vendor[1].GID.String() != "10.0.2.15" || vendor[2].Type != "RoCE v2" {
		t.Fatalf("GIDs %+v", vendor)
	}
	agent := []rdma.GID{
		{Index: 0, GID: "fe80:0000:0000:0000:5054:00ff:fe12:3456", Type: "IB/RoCE v1"},
		{Index: 2, GID: "fec0:0000:0000:0000:5054:00ff:fe12:3456", Type: "RoCE v2"},
	}
	got := map[string]Verdict{}
	for _, r := range gidRows("rxe0/1", agent, vendor) {
		got[r.Fact] = r.Verdict
	}
	want := map[string]Verdict{"GIDs": Differ, "GID[0]": Differ, "GID[1]": Differ, "GID[2]": Agree}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("verdicts %v, want %v", got, want)
	}
	if _, err := ParseIBVDevinfo(strings.NewReader("hca_id:\tx\n\t\tport:\t1\n\t\t\tGID[  0]:\t\tnot-a-gid\n")); err == nil {
		t.Error("a GID that is no address parsed")
	}
}
