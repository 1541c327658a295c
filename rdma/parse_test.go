package rdma

import (
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestParseState(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string
		num  int
		ok   bool
	}{
		{"4: ACTIVE", "ACTIVE", 4, true},
		{"1: DOWN", "DOWN", 1, true},
		{"5: ACTIVE_DEFER", "ACTIVE_DEFER", 5, true},
		{"5: LinkUp", "LinkUp", 5, true},
		{"7: Phy Test", "Phy Test", 7, true},
		{"1: CA", "CA", 1, true},
		{"6: usNIC UDP", "usNIC UDP", 6, true},
		{"0: <unknown>", "<unknown>", 0, true},
		{"255: X", "X", 255, true},
		{"", "", 0, false},
		{"4:", "", 0, false},
		{"4: ", "", 0, false},
		{"4:ACTIVE", "", 0, false},
		{"x: ACTIVE", "", 0, false},
		{": ACTIVE", "", 0, false},
		{"-1: ACTIVE", "", 0, false},
		{"+4: ACTIVE", "", 0, false},
		{"256: ACTIVE", "", 0, false},
		{"99999999999999999999: ACTIVE", "", 0, false},
		{"4:  ACTIVE", "", 0, false},
		{"4: ACT\tIVE", "", 0, false},
		{"4: ACTIVE\n", "", 0, false},
		{"4: \xff\xfe", "", 0, false},
		{"4: AC\x00TIVE", "", 0, false},
		{"ACTIVE", "", 0, false},
	} {
		name, num, err := parseState(tc.in)
		if (err == nil) != tc.ok || name != tc.name || num != tc.num {
			t.Errorf("parseState(%q) = %q, %d, %v; want %q, %d, ok=%v", tc.in, name, num, err, tc.name, tc.num, tc.ok)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"400 Gb/sec (4X NDR)", 400, true},
		{"200 Gb/sec (2X NDR)", 200, true},
		{"2.5 Gb/sec (1X SDR)", 2.5, true},
		{"56 Gb/sec (4X FDR)", 56, true},
		{"10 Gb/sec (1X QDR)", 10, true},
		{"2400 Gb/sec (12X XDR)", 2400, true},
		{"0 Gb/sec (1X SDR)", 0, true},
		{"", 0, false},
		{"400 Gb/sec", 0, false},
		{"400 Gb/sec ()", 0, false},
		{"400 Gb/sec (4X NDR", 0, false},
		{"abc Gb/sec (4X NDR)", 0, false},
		{"-1 Gb/sec (4X NDR)", 0, false},
		{"+1 Gb/sec (4X NDR)", 0, false},
		{"1e3 Gb/sec (4X NDR)", 0, false},
		{"NaN Gb/sec (4X NDR)", 0, false},
		{"Inf Gb/sec (4X NDR)", 0, false},
		{"2. Gb/sec (1X SDR)", 0, false},
		{".5 Gb/sec (1X SDR)", 0, false},
		{"2.5.5 Gb/sec (1X SDR)", 0, false},
		{" Gb/sec (4X NDR)", 0, false},
		{"400 Mb/sec (4X NDR)", 0, false},
		{"100001 Gb/sec (4X NDR)", 0, false},
		{"99999999999999999999999999 Gb/sec (4X NDR)", 0, false},
		{"1" + strings.Repeat("0", 400) + " Gb/sec (4X NDR)", 0, false},
		{"400 Gb/sec (4X \xff)", 0, false},
		{"4\x0000 Gb/sec (4X NDR)", 0, false},
	} {
		got, err := parseRate(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseRate(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseLID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"0x1a", 0x1a, true},
		{"0x0", 0, true},
		{"0xFFFF", 0xffff, true},
		{"0xffffffff", math.MaxUint32, true},
		{"", 0, false},
		{"0x", 0, false},
		{"1a", 0, false},
		{"26", 0, false},
		{"0x1g", 0, false},
		{"0x-1", 0, false},
		{"-0x1", 0, false},
		{"0x100000000", 0, false},
		{"0x1_0", 0, false},
		{"0x1a\xff", 0, false},
	} {
		got, err := parseLID(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseLID(%q) = %#x, %v; want %#x, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseGIDAndGUID(t *testing.T) {
	for _, tc := range []struct {
		in       string
		zero, ok bool
	}{
		{"fe80:0000:0000:0000:b83f:d203:00a4:5ef0", false, true},
		{"0000:0000:0000:0000:0000:ffff:0a00:0005", false, true},
		{"FE80:0000:0000:0000:B83F:D203:00A4:5EF0", false, true},
		{"0000:0000:0000:0000:0000:0000:0000:0000", true, true},
		{"", false, false},
		{"fe80::1", false, false},
		{"fe80:0000:0000:0000:b83f:d203:00a4:5ef", false, false},
		{"fe80:0000:0000:0000:b83f:d203:00a4:5ef0:", false, false},
		{"fe80-0000:0000:0000:b83f:d203:00a4:5ef0", false, false},
		{"fe80:0000:0000:0000:b83f:d203:00a4:5eg0", false, false},
		{"fe80:0000:0000:0000:b83f:d203:00a4:5e\xff", false, false},
		{"0000:0000:0000:0000:0000:0000:0000:000\x00", false, false},
	} {
		zero, err := parseGID(tc.in)
		if (err == nil) != tc.ok || zero != tc.zero {
			t.Errorf("parseGID(%q) = %v, %v; want zero=%v ok=%v", tc.in, zero, err, tc.zero, tc.ok)
		}
	}
	for in, ok := range map[string]bool{
		"b83f:d203:00a4:5ef0":      true,
		"0000:0000:0000:0000":      true,
		"":                         false,
		"b83f:d203:00a4":           false,
		"b83fd20300a45ef0":         false,
		"b83f:d203:00a4:5ef0:0000": false,
		"b83f:d203:00a4:5ef\xff":   false,
		"xyzw:d203:00a4:5ef0":      false,
	} {
		if err := parseGUID(in); (err == nil) != ok {
			t.Errorf("parseGUID(%q) = %v, want ok=%v", in, err, ok)
		}
	}
}

func TestParseInt(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi int
		want   int
		ok     bool
	}{
		{"1", -1, maxNUMANode, 1, true},
		{"-1", -1, maxNUMANode, -1, true},
		{"-2", -1, maxNUMANode, 0, false},
		{"9000", 0, maxIndex, 9000, true},
		{"", 0, maxIndex, 0, false},
		{"9000 ", 0, maxIndex, 0, false},
		{"0x10", 0, maxIndex, 0, false},
		{"1.5", 0, maxIndex, 0, false},
		{"2147483648", 0, maxIndex, 0, false},
		{"99999999999999999999999", 0, maxIndex, 0, false},
		{"65536", 0, maxDevPort, 0, false},
		{"\xff", 0, maxIndex, 0, false},
	} {
		got, err := parseInt(tc.in, tc.lo, tc.hi)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseInt(%q, %d, %d) = %d, %v; want %d, ok=%v", tc.in, tc.lo, tc.hi, got, err, tc.want, tc.ok)
		}
	}
}

func TestActiveMTU(t *testing.T) {
	for _, tc := range []struct{ netdev, want int }{
		{9000, 4096},
		{4192, 4096}, // exactly 4096 after the 96 header bytes
		{4191, 2048},
		{4200, 4096},
		{1500, 1024},
		{1120, 1024},
		{1119, 512},
		{352, 256},
		{351, 0},
		{0, 0},
		{-5, 0},
		{math.MaxInt, 4096},
		{math.MinInt, 0},
	} {
		if got := activeMTU(tc.netdev); got != tc.want {
			t.Errorf("activeMTU(%d) = %d, want %d", tc.netdev, got, tc.want)
		}
	}
}

func TestIsBDF(t *testing.T) {
	for in, ok := range map[string]bool{
		"0000:17:00.0":  true,
		"0000:ca:00.1":  true,
		"10000:e1:00.7": true,
		"0000:17:00.8":  false,
		"0000:17:00":    false,
		"17:00.0":       false,
		"000:17:00.0":   false,
		"0000:17:0.0":   false,
		"0000:1g:00.0":  false,
		"HISI00A2:00":   false,
		"virtual":       false,
		"":              false,
	} {
		if got := isBDF(in); got != ok {
			t.Errorf("isBDF(%q) = %v, want %v", in, got, ok)
		}
	}
}

func TestValidNetdevName(t *testing.T) {
	for in, ok := range map[string]bool{
		"eth0":             true,
		"ens1f0np0":        true,
		"ib0.8001":         true,
		"bond0":            true,
		"abcdefghijklmno":  true,
		"abcdefghijklmnop": false,
		"":                 false,
		".":                false,
		"..":               false,
		"../../etc":        false,
		"eth0:1":           false,
		"eth 0":            false,
		"eth0\n":           false,
		"eth\x00":          false,
		"eth\xff":          false,
	} {
		if got := validNetdevName(in); got != ok {
			t.Errorf("validNetdevName(%q) = %v, want %v", in, got, ok)
		}
	}
}

func TestTransportOf(t *testing.T) {
	for _, tc := range []struct {
		linkLayer, nodeType string
		want                Transport
		ok                  bool
	}{
		{"InfiniBand", "CA", InfiniBand, true},
		{"Ethernet", "CA", RoCE, true},
		{"Ethernet", "RNIC", IWARP, true},
		{"Unknown", "CA", "", false},
		{"", "CA", "", false},
		{"infiniband", "CA", "", false},
	} {
		got, err := transportOf(tc.linkLayer, tc.nodeType)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("transportOf(%q, %q) = %q, %v; want %q, ok=%v", tc.linkLayer, tc.nodeType, got, err, tc.want, tc.ok)
		}
	}
}

func TestGIDAttrUnset(t *testing.T) {
	for _, tc := range []struct {
		err   error
		unset bool
	}{
		{&fs.PathError{Op: "read", Path: "types/3", Err: syscall.ENODATA}, true},
		{&fs.PathError{Op: "read", Path: "ndevs/0", Err: syscall.EINVAL}, true},
		{&fs.PathError{Op: "open", Path: "types/0", Err: syscall.ENOENT}, true},
		{fmt.Errorf("wrapped: %w", syscall.ENODATA), true},
		{&fs.PathError{Op: "read", Path: "types/0", Err: syscall.EIO}, false},
		{&fs.PathError{Op: "open", Path: "types/0", Err: syscall.EACCES}, false},
	} {
		if got := gidAttrUnset(tc.err); got != tc.unset {
			t.Errorf("gidAttrUnset(%v) = %v, want %v", tc.err, got, tc.unset)
		}
	}
}

func FuzzParseState(f *testing.F) {
	for _, s := range []string{"4: ACTIVE", "7: Phy Test", "1: CA", "", "4:", "x: ACTIVE", "4: \xff", "255: X"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, num, err := parseState(s)
		if err != nil {
			if name != "" || num != 0 {
				t.Fatalf("parseState(%q) failed but returned %q, %d", s, name, num)
			}
			return
		}
		if name == "" || !printable(name) || num < 0 || num > 255 {
			t.Fatalf("parseState(%q) = %q, %d", s, name, num)
		}
		// What the kernel would print for the result parses back the same.
		if n2, num2, err := parseState(fmt.Sprintf("%d: %s", num, name)); err != nil || n2 != name || num2 != num {
			t.Fatalf("round trip of %q: %q, %d, %v", s, n2, num2, err)
		}
	})
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"400 Gb/sec (4X NDR)", "2.5 Gb/sec (1X SDR)", "", "400 Gb/sec", "abc Gb/sec (4X NDR)", "-1 Gb/sec (4X NDR)", "1e400 Gb/sec (x)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseRate(s)
		if err != nil {
			if v != 0 {
				t.Fatalf("parseRate(%q) failed but returned %v", s, v)
			}
			return
		}
		if math.IsNaN(v) || v < 0 || v > maxRateGbps || !strings.Contains(s, " Gb/sec (") {
			t.Fatalf("parseRate(%q) = %v", s, v)
		}
	})
}

func FuzzParseLID(f *testing.F) {
	for _, s := range []string{"0x1a", "0x0", "0xffffffff", "", "0x", "1a", "0x100000000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseLID(s)
		if err != nil {
			if v != 0 {
				t.Fatalf("parseLID(%q) failed but returned %#x", s, v)
			}
			return
		}
		if v2, err := parseLID(fmt.Sprintf("0x%x", v)); err != nil || v2 != v {
			t.Fatalf("round trip of %q: %#x, %v", s, v2, err)
		}
	})
}

func FuzzParseGID(f *testing.F) {
	for _, s := range []string{"fe80:0000:0000:0000:b83f:d203:00a4:5ef0", "0000:0000:0000:0000:0000:0000:0000:0000", "", "fe80::1", "b83f:d203:00a4:5ef0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		zero, err := parseGID(s)
		if err != nil {
			if zero {
				t.Fatalf("parseGID(%q) failed but reported zero", s)
			}
		} else if len(s) != 39 || zero != (strings.Trim(s, "0:") == "") {
			t.Fatalf("parseGID(%q) = zero %v", s, zero)
		}
		if err := parseGUID(s); err == nil && len(s) != 19 {
			t.Fatalf("parseGUID(%q) accepted %d bytes", s, len(s))
		}
	})
}

func FuzzParseInt(f *testing.F) {
	for _, s := range []string{"0", "-1", "9000", "", "0x10", "99999999999999999999", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseInt(s, -1, maxNUMANode)
		if err != nil {
			return
		}
		if n < -1 || n > maxNUMANode || strings.Trim(s, "+-0123456789") != "" {
			t.Fatalf("parseInt(%q) = %d", s, n)
		}
	})
}

func FuzzActiveMTU(f *testing.F) {
	for _, n := range []int{9000, 1500, 4192, 4191, 351, 0, -1, math.MaxInt, math.MinInt} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, n int) {
		m := activeMTU(n)
		switch m {
		case 0:
			if n >= 256+roceHeaderBytes {
				t.Fatalf("activeMTU(%d) = 0, but 256 fits", n)
			}
		case 256, 512, 1024, 2048, 4096:
			if n < m+roceHeaderBytes || m < 4096 && n >= 2*m+roceHeaderBytes {
				t.Fatalf("activeMTU(%d) = %d, not the largest that fits", n, m)
			}
		default:
			t.Fatalf("activeMTU(%d) = %d, not an IB MTU", n, m)
		}
	})
}

func FuzzNames(f *testing.F) {
	for _, s := range []string{"eth0", "0000:17:00.0", "..", "eth0:1", "", "abcdefghijklmnop", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if validNetdevName(s) && (strings.ContainsAny(s, "/: \n\t") || len(s) > 15 || s == ".." || s == "") {
			t.Fatalf("validNetdevName(%q) accepted", s)
		}
		if isBDF(s) && (len(s) < 12 || strings.Count(s, ":") != 2 || !strings.Contains(s, ".")) {
			t.Fatalf("isBDF(%q) accepted", s)
		}
		if tr, err := transportOf(s, "CA"); (err == nil) != (tr != "") {
			t.Fatalf("transportOf(%q) = %q, %v", s, tr, err)
		}
	})
}

func TestCompareNames(t *testing.T) {
	names := []string{"mlx5_10", "rxe0", "mlx5_2", "mlx5_1", "irdma1", "mlx5_bond_0", "mlx5_9", "x"}
	slices.SortFunc(names, compareNames)
	want := []string{"irdma1", "mlx5_1", "mlx5_2", "mlx5_9", "mlx5_10", "mlx5_bond_0", "rxe0", "x"}
	if !slices.Equal(names, want) {
		t.Fatalf("got %v, want %v", names, want)
	}
}

func TestDataRateGbps(t *testing.T) {
	for _, c := range []struct {
		linkLayer, rate string
		gbps, want      float64
	}{
		{"InfiniBand", "10 Gb/sec (4X SDR)", 10, 8},
		{"InfiniBand", "20 Gb/sec (4X DDR)", 20, 16},
		{"InfiniBand", "40 Gb/sec (4X QDR)", 40, 32},
		{"InfiniBand", "40 Gb/sec (4X FDR10)", 40, 40},
		{"InfiniBand", "56 Gb/sec (4X FDR)", 56, 56.25 * 64 / 66},
		{"InfiniBand", "100 Gb/sec (4X EDR)", 100, 100},
		{"InfiniBand", "200 Gb/sec (4X HDR)", 200, 200},
		{"InfiniBand", "400 Gb/sec (4X NDR)", 400, 400},
		{"InfiniBand", "2.5 Gb/sec (1X SDR)", 2.5, 2},
		// RoCE: the Ethernet speed under an InfiniBand speed name.
		{"Ethernet", "40 Gb/sec (4X QDR)", 40, 40},
		{"Ethernet", "2.5 Gb/sec (1X SDR)", 2.5, 2.5},
		{"InfiniBand", "", 0, 0},
	} {
		p := Port{LinkLayer: c.linkLayer, Rate: c.rate, RateGbps: c.gbps}
		if got := p.DataRateGbps(); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s %q: %v, want %v", c.linkLayer, c.rate, got, c.want)
		}
	}
}

// Every phys_state the kernel prints maps back to its number.
func TestPhysStateID(t *testing.T) {
	for s, want := range map[string]int{"1: Sleep": 1, "2: Polling": 2, "3: Disabled": 3, "4: PortConfigurationTraining": 4,
		"5: LinkUp": 5, "6: LinkErrorRecovery": 6, "7: Phy Test": 7} {
		name, n, err := parseState(s)
		if err != nil || n != want {
			t.Fatalf("%q: %v", s, err)
		}
		if id, ok := PhysStateID(name); !ok || id != want {
			t.Errorf("PhysStateID(%q) = %d, %v; want %d", name, id, ok, want)
		}
	}
	for _, name := range []string{"", "ACTIVE", "linkup", "<unknown>"} {
		if id, ok := PhysStateID(name); ok {
			t.Errorf("PhysStateID(%q) = %d", name, id)
		}
	}
}
