package rdma

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
)

func TestParseCounter(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"1234567890", 1234567890, true},
		{"18446744073709551615", 1<<64 - 1, true},
		{"18446744073709551616", 0, false}, // overflow
		{"", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"0x10", 0, false},
		{"1e6", 0, false},
		{"12 34", 0, false},
		{"N/A", 0, false},
		{"N/A (no PMA)", 0, false}, // the reader reports it on the port (TestReadCountersNoPMA)
		{"१२", 0, false},           // non-ASCII digits
	} {
		got, err := parseCounter(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseCounter(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseCounter(f *testing.F) {
	for _, s := range []string{"0", "42", "18446744073709551615", "18446744073709551616", "-3", " 7", "7\n", "０", "N/A (no PMA)", "4294967295"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseCounter(s)
		if err != nil {
			return
		}
		if strings.Trim(s, "0123456789") != "" || s == "" {
			t.Fatalf("parseCounter(%q) accepted non-digits: %d", s, v)
		}
		if back := strings.TrimLeft(s, "0"); back != "" && back != uintString(v) {
			t.Fatalf("parseCounter(%q) = %d", s, v)
		}
	})
}

func uintString(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b []byte
	for v > 0 {
		b = append([]byte{byte('0' + v%10)}, b...)
		v /= 10
	}
	return string(b)
}

// counterPort writes a port with the given counters and hw_counters.
func (f *fixture) counterPort(dev string, port, state string, counters, hw map[string]string) {
	dir := "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/infiniband/" + dev
	if _, err := os.Lstat(f.real("/sys/class/infiniband/" + dev)); err != nil {
		f.link("/sys/class/infiniband/"+dev, dir)
	}
	pdir := dir + "/ports/" + port
	f.files(pdir, map[string]string{"state": state})
	f.files(pdir+"/counters", counters)
	if hw != nil {
		f.files(pdir+"/hw_counters", hw)
	}
}

func TestReadCounters(t *testing.T) {
	f := newFixture(t)
	f.counterPort("mlx5_10", "1", "4: ACTIVE", map[string]string{"port_xmit_data": "100", "port_rcv_data": "200",
		"symbol_error": "0", "link_downed": "3", "not_a_counter_we_read": "9"},
		map[string]string{"np_cnp_sent": "7", "rp_cnp_handled": "8", "lifespan": "10"})
	f.counterPort("mlx5_2", "1", "1: DOWN", map[string]string{"port_xmit_data": "5", "port_rcv_errors": "N/A",
		"port_xmit_packets": "18446744073709551616"}, nil)
	f.counterPort("mlx5_2", "2", "4: ACTIVE", map[string]string{"port_rcv_packets": "1"}, nil)
	f.file("/sys/class/infiniband/mlx5_2/ports/2/counters/port_xmit_wait", strings.Repeat("9", 80)+"\n")
	fsys, err := hostfs.New(f.root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadCounters(context.Background(), fsys)
	want := []PortCounters{
		{Device: "mlx5_2", Port: 1, State: "DOWN", Counters: []Counter{{"port_xmit_data", 5}},
			Errors: []string{`counters/port_rcv_errors: counter "N/A" is not an unsigned decimal`,
				`counters/port_xmit_packets: counter "18446744073709551616" does not fit in 64 bits`}},
		{Device: "mlx5_2", Port: 2, State: "ACTIVE", Counters: []Counter{{"port_rcv_packets", 1}},
			Errors: []string{"counters/port_xmit_wait: more than 63 bytes: not a counter"}},
		{Device: "mlx5_10", Port: 1, State: "ACTIVE",
			Counters:   []Counter{{"link_downed", 3}, {"port_rcv_data", 200}, {"port_xmit_data", 100}, {"symbol_error", 0}},
			HWCounters: []Counter{{"np_cnp_sent", 7}, {"rp_cnp_handled", 8}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadCounters:\n got %+v\nwant %+v", got, want)
	}
	for _, s := range []string{"mlx5_2 port 1: counters/port_rcv_errors", "mlx5_2 port 2: counters/port_xmit_wait"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("err %v lacks %q", err, s)
		}
	}
	if !got[2].Active() || got[0].Active() {
		t.Error("Active")
	}
}

func TestReadCountersAbsentAndBroken(t *testing.T) {
	f := newFixture(t)
	fsys, _ := hostfs.New(f.root)
	if _, err := ReadCounters(context.Background(), fsys); !errors.Is(err, source.ErrAbsent) {
		t.Errorf("no class dir: %v", err)
	}
	f.file("/sys/class/infiniband/.keep", "")
	os.Remove(f.real("/sys/class/infiniband/.keep"))
	if _, err := ReadCounters(context.Background(), fsys); !errors.Is(err, source.ErrAbsent) {
		t.Errorf("empty class dir: %v", err)
	}
	// A dangling device link and a port named "x" do not hide the good port.
	f.link("/sys/class/infiniband/rxe0", "/sys/devices/virtual/infiniband/rxe0")
	f.counterPort("mlx5_0", "1", "4: ACTIVE", map[string]string{"port_rcv_data": "1"}, nil)
	f.file("/sys/class/infiniband/mlx5_0/ports/x/state", "4: ACTIVE\n")
	got, err := ReadCounters(context.Background(), fsys)
	if len(got) != 1 || got[0].Device != "mlx5_0" || len(got[0].Counters) != 1 {
		t.Errorf("got %+v", got)
	}
	if err == nil || !strings.Contains(err.Error(), "rxe0: list ports") || !strings.Contains(err.Error(), `mlx5_0: port "x"`) {
		t.Errorf("err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ReadCounters(ctx, fsys); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// Whatever a counter file holds, reading it gives its counter or one
// problem naming it, never both; a file that reads "N/A (no PMA)" gives a
// problem that says so.
func FuzzReadCounterFile(f *testing.F) {
	for _, s := range []string{"0\n", "345091702026\n", "N/A (no PMA)\n", "N/A (no PMA)", "", "\n", "-1\n", "0x10\n",
		strings.Repeat("9", 63), strings.Repeat("9", 64), "12\x00\n", "\xff\xfe\n", "4294967295"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(dir+"/port_xmit_data", content, 0o644); err != nil {
			t.Fatal(err)
		}
		var buf [64]byte
		var problems []string
		got := readCounterFiles(dir, []string{"port_xmit_data", "port_rcv_data"}, buf[:], &problems)
		if len(got)+len(problems) != 1 {
			t.Fatalf("%q: counters %v, problems %q", content, got, problems)
		}
		if len(problems) == 1 && strings.TrimRight(string(content), "\n ") == noPMA && !strings.Contains(problems[0], "no performance management agent") {
			t.Fatalf("%q: %q", content, problems)
		}
	})
}

// A port's facts at run time: physical state and rate, and on Ethernet the
// netdev (from GID 0's ndev, else rxe's parent, else the parent function's
// net directory) and its carrier_changes. InfiniBand ports have no netdev
// here even with an IPoIB interface: its carrier follows the port.
func TestReadCountersPortFacts(t *testing.T) {
	f := newFixture(t)
	f.ibHCA() // mlx5_0, with IPoIB interface ibp23s0
	f.roceCounterPort("mlx5_1", "ens1np0", "7")
	// rxe0 on eth0: no GID table yet, the parent attribute names the netdev.
	rxe := f.rdmaDevice("rxe0", "", map[string]string{"parent": "eth0"})
	f.port(rxe, 1, map[string]string{"state": "4: ACTIVE", "phys_state": "5: LinkUp", "link_layer": "Ethernet", "rate": "2.5 Gb/sec (1X SDR)"})
	f.netdev("eth0", "", 1500, 0)
	f.file("/sys/class/net/eth0/carrier_changes", "1\n")
	// A RoCE function whose GID 0 has no ndev: the parent's one netdev.
	pci := f.pciFunc("0000:ca:00.0", "mlx5_core", 1)
	dev := f.rdmaDevice("mlx5_9", pci, nil)
	f.port(dev, 1, map[string]string{"state": "1: DOWN", "phys_state": "3: Disabled", "link_layer": "Ethernet", "rate": "garbage"})
	f.netdev("ens9np0", pci, 9000, 0)
	f.file("/sys/class/net/ens9np0/carrier_changes", "x\n")

	got, err := ReadCounters(context.Background(), f.fs())
	type facts struct {
		dev, phys, netdev string
		rate              float64
		carrier           any
	}
	var gotFacts []facts
	for _, p := range got {
		var c any
		if p.CarrierChanges != nil {
			c = *p.CarrierChanges
		}
		gotFacts = append(gotFacts, facts{p.Device, p.PhysState, p.Netdev, p.RateGbps, c})
	}
	want := []facts{
		{"mlx5_0", "LinkUp", "", 400, nil},
		{"mlx5_1", "LinkUp", "ens1np0", 400, uint64(7)},
		{"mlx5_9", "Disabled", "ens9np0", 0, nil},
		{"rxe0", "LinkUp", "eth0", 2.5, uint64(1)},
	}
	if !reflect.DeepEqual(gotFacts, want) {
		t.Errorf("facts:\n got %+v\nwant %+v", gotFacts, want)
	}
	wantErrs := []string{`parse rate: rate "garbage" is not "<number> Gb/sec (<width>X <speed>)"`,
		`ens9np0/carrier_changes: counter "x" is not an unsigned decimal`}
	if !reflect.DeepEqual(got[2].Errors, wantErrs) {
		t.Errorf("mlx5_9 errors %q, want %q", got[2].Errors, wantErrs)
	}
	if err == nil || !strings.Contains(err.Error(), "mlx5_9 port 1: parse rate") {
		t.Errorf("err = %v", err)
	}
}
