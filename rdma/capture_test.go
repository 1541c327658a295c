package rdma

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// capture writes a captured sysfs tree (testdata/*-infiniband.txt: one file
// a line, its host path and its content as a Go string literal) into the
// fixture.
func (f *fixture) capture(name string) {
	f.t.Helper()
	file, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		f.t.Fatal(err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, quoted, ok := strings.Cut(line, " ")
		content, err := strconv.Unquote(quoted)
		if !ok || err != nil {
			f.t.Fatalf("%s: bad line %q", name, line)
		}
		f.file(p, content)
	}
	if err := sc.Err(); err != nil {
		f.t.Fatal(err)
	}
}

// Hosts captured by procfs lack node_type, sys_image_guid, lid, sm_lid, the
// GID tables and the device links. Each device is still read in full from
// what is there, without an error; the LIDs are unknown, not 0.
func TestDiscoverCapturedWithoutOptionalFiles(t *testing.T) {
	f := newFixture(t)
	f.capture("procfs-infiniband.txt")
	devs, err := Discover(context.Background(), f.fs())
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	ib := func(n int, state, phys, rate string, gbps float64) Port {
		return Port{Number: n, State: state, PhysState: phys, LinkLayer: "InfiniBand", Transport: InfiniBand, Rate: rate, RateGbps: gbps}
	}
	want := []Device{
		{Name: "hfi1_0", FirmwareVersion: "1.27.0", BoardID: "HPE 100Gb 1-port OP101 QSFP28 x16 PCIe Gen3 with Intel Omni-Path Adapter",
			NUMANode: -1, Ports: []Port{ib(1, "ACTIVE", "LinkUp", "100 Gb/sec (4X EDR)", 100)}},
		{Name: "mlx4_0", FirmwareVersion: "2.31.5050", HCAType: "MT4099", BoardID: "SM_1141000001000", NUMANode: -1,
			Ports: []Port{ib(1, "ACTIVE", "LinkUp", "40 Gb/sec (4X QDR)", 40), ib(2, "ACTIVE", "LinkUp", "40 Gb/sec (4X QDR)", 40)}},
		{Name: "mlx5_0", NodeGUID: "0a7f:bc12:45ef:d23b", FirmwareVersion: "14.28.2006", HCAType: "MT4118", BoardID: "SM_2001000001034",
			NUMANode: -1, Ports: []Port{ib(1, "ACTIVE", "ACTIVE", "25 Gb/sec (1X EDR)", 25)}},
	}
	if !reflect.DeepEqual(devs, want) {
		t.Errorf("Discover:\n got %+v\nwant %+v", devs, want)
	}
}

// The same captures' counters: every file is a counter, hw_counters too.
func TestReadCountersCaptured(t *testing.T) {
	f := newFixture(t)
	f.capture("procfs-infiniband.txt")
	got, err := ReadCounters(context.Background(), f.fs())
	if err != nil {
		t.Fatalf("ReadCounters: %v", err)
	}
	if len(got) != 4 {
		t.Fatalf("%d ports, want 4: %+v", len(got), got)
	}
	mlx5 := got[3]
	// Every counter the capture has but port_rcv_discards, which its
	// kernel lacks, and every hw_counter but lifespan (a cache time).
	if mlx5.Device != "mlx5_0" || len(mlx5.Counters) != len(CounterNames)-1 || len(mlx5.HWCounters) != 24 || mlx5.Errors != nil ||
		mlx5.PhysState != "ACTIVE" || mlx5.RateGbps != 25 || mlx5.Netdev != "" {
		t.Errorf("mlx5_0: %+v", mlx5)
	}
	for _, c := range []struct {
		p    PortCounters
		name string
		want uint64
	}{{mlx5, "port_xmit_data", 2880761508848}, {mlx5, "roce_slow_restart_cnps", 131}, {got[0], "port_rcv_data", 345091702026},
		{mlx5, "req_cqe_error", 3481}, {mlx5, "resp_cqe_flush_error", 4708}, {mlx5, "rx_read_requests", 175528982},
		{mlx5, "rx_write_requests", 742114}, {mlx5, "out_of_buffer", 0}, {mlx5, "roce_slow_restart_trans", 0}} {
		if v, ok := find(c.p, c.name); !ok || v != c.want {
			t.Errorf("%s port %d %s = %d (%v), want %d", c.p.Device, c.p.Port, c.name, v, ok, c.want)
		}
	}
}

func find(p PortCounters, name string) (uint64, bool) {
	for _, c := range slices.Concat(p.Counters, p.HWCounters, p.ExtCounters) {
		if c.Name == name {
			return c.Value, true
		}
	}
	return 0, false
}

// An iWARP device (i40iw) as node_exporter captured it: every PMA counter
// reads "N/A (no PMA)". That is one problem on its port, named so, and the
// source error; the port's state and the other device's counters are read.
func TestReadCountersNoPMA(t *testing.T) {
	f := newFixture(t)
	f.capture("node_exporter-infiniband.txt")
	got, err := ReadCounters(context.Background(), f.fs())
	if len(got) != 3 {
		t.Fatalf("%d ports, want 3: %+v", len(got), got)
	}
	iw := got[0]
	wantErr := `counters: 17 files read "N/A (no PMA)": the device has no performance management agent (an iWARP device), so it has none of these counters`
	if iw.Device != "i40iw0" || iw.State != "ACTIVE" || len(iw.Counters) != 0 || !reflect.DeepEqual(iw.Errors, []string{wantErr}) {
		t.Errorf("i40iw0: %+v", iw)
	}
	if err == nil || !strings.Contains(err.Error(), "i40iw0 port 1: "+wantErr) {
		t.Errorf("err = %v, want the port's problem", err)
	}
	for _, p := range got[1:] {
		if p.Device != "mlx4_0" || p.Errors != nil || len(p.Counters) == 0 || strings.Contains(err.Error(), "mlx4_0") {
			t.Errorf("mlx4_0 port %d: %+v", p.Port, p)
		}
	}
	if v, _ := find(got[1], "port_xmit_wait"); v != 4294967295 {
		t.Errorf("mlx4_0 port 1 port_xmit_wait = %d", v)
	}
	// ConnectX-3's 64-bit counters, beside the saturated 32-bit ones.
	if len(got[1].ExtCounters) != len(ExtCounterNames) {
		t.Errorf("mlx4_0 port 1 counters_ext: %+v", got[1].ExtCounters)
	}
	for name, want := range map[string]uint64{"port_xmit_data_64": 3733440, "port_rcv_data_64": 4631917, "port_unicast_xmit_packets": 61239} {
		if v, ok := find(got[1], name); !ok || v != want {
			t.Errorf("mlx4_0 port 1 %s = %d (%v), want %d", name, v, ok, want)
		}
	}
	// The same host discovered: nothing is missing that a device needs.
	devs, err := Discover(context.Background(), f.fs())
	if err != nil || len(devs) != 2 || devs[0].Ports[0].Rate != "10 Gb/sec (4X)" {
		t.Errorf("Discover: %+v, %v", devs, err)
	}
}

// Each optional file missing loses only its own fact: no error, the rest
// of the device as it was.
func TestDiscoverOptionalFilesMissing(t *testing.T) {
	const dev = "/sys/class/infiniband/mlx5_0"
	for _, tc := range []struct {
		file string
		lost func(d *Device) // clears the fact the file gave in the full reading
	}{
		{"node_type", func(d *Device) { d.NodeType = "" }},
		{"node_guid", func(d *Device) { d.NodeGUID = "" }},
		{"sys_image_guid", func(d *Device) { d.SysImageGUID = "" }},
		{"ports/1/lid", func(d *Device) { d.Ports[0].LID = nil }},
		{"ports/1/sm_lid", func(d *Device) { d.Ports[0].SMLID = nil }},
		{"ports/1/gids", func(d *Device) { d.Ports[0].GIDs = nil }},
		{"ports/1/gid_attrs", func(d *Device) { d.Ports[0].GIDs[0].Type = "" }},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.maxGIDs = 4
			want := f.ibHCA()
			f.remove(dev + "/" + tc.file)
			tc.lost(&want)
			devs, err := Discover(context.Background(), f.fs())
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			if !reflect.DeepEqual(devs, []Device{want}) {
				t.Errorf("got  %+v\nwant %+v", devs[0], want)
			}
		})
	}
}

// Every attribute of the captured hosts is accepted by its parser.
func TestParsersAcceptCaptures(t *testing.T) {
	files, err := filepath.Glob("testdata/*-infiniband.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("captures: %v %v", files, err)
	}
	for _, file := range files {
		f := newFixture(t)
		f.capture(filepath.Base(file))
		err := filepath.WalkDir(f.real(classDir), func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := strings.TrimSpace(string(b))
			var perr error
			switch name, dir := filepath.Base(p), filepath.Base(filepath.Dir(p)); {
			case dir == "counters" || dir == "hw_counters" || dir == "counters_ext":
				if s != noPMA { // not a counter: the reader reports it on the port
					_, perr = parseCounter(s)
				}
			case name == "rate":
				_, perr = parseRate(s)
			case name == "state" || name == "phys_state" || name == "node_type":
				_, _, perr = parseState(s)
			case name == "node_guid" || name == "sys_image_guid":
				perr = parseGUID(s)
			case name == "lid" || name == "sm_lid":
				_, perr = parseLID(s)
			case name == "link_layer":
				_, perr = transportOf(s, "")
			}
			if perr != nil {
				t.Errorf("%s: %s: %v", file, p, perr)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
