package topology

import (
	"slices"
	"strings"
	"testing"
)

func TestParseMemTotal(t *testing.T) {
	for _, tc := range []struct {
		in    string
		node  int
		bytes uint64
	}{
		{"Node 0 MemTotal:       1056499896 kB\nNode 0 MemFree:  5 kB\n", 0, 1056499896 * 1024},
		{"Node 12 MemTotal: 4 kB", 12, 4096},
		{"MemTotal:       16315220 kB\nMemFree:         1234 kB\n", -1, 16315220 * 1024},
		{"MemFree: 1 kB\nMemTotal: 0 kB\n", -1, 0},
		{"Node 1 MemFree: 1 kB\nNode 1 MemTotal: 2 kB\n", 1, 2048},
	} {
		node, b, err := parseMemTotal(tc.in)
		if err != nil || node != tc.node || b != tc.bytes {
			t.Errorf("parseMemTotal(%q) = %d, %d, %v; want %d, %d", tc.in, node, b, err, tc.node, tc.bytes)
		}
	}
	for _, in := range []string{
		"", "\n\n", "MemFree: 1 kB", "Node 0 MemTot", "Node", "Node x MemTotal: 1 kB", "Node -1 MemTotal: 1 kB",
		"MemTotal:", "MemTotal: 12", "MemTotal: 12 MB", "MemTotal: -1 kB", "MemTotal: 1.5 kB",
		"MemTotal: 18446744073709551615 kB", "MemTotal: 1 kB extra", "\xff\xfeMemTotal",
	} {
		if node, b, err := parseMemTotal(in); err == nil {
			t.Errorf("parseMemTotal(%q) = %d, %d; want an error", in, node, b)
		}
	}
}

func TestParseDistances(t *testing.T) {
	if got, err := parseDistances("10 21 21 21\n"); err != nil || !slices.Equal(got, []int{10, 21, 21, 21}) {
		t.Errorf("parseDistances = %v, %v", got, err)
	}
	if got, err := parseDistances("10"); err != nil || !slices.Equal(got, []int{10}) {
		t.Errorf("parseDistances single = %v, %v", got, err)
	}
	for _, in := range []string{"", " \n", "10 x", "10 -1", "10 256", "10,21", "1e2"} {
		if got, err := parseDistances(in); err == nil {
			t.Errorf("parseDistances(%q) = %v; want an error", in, got)
		}
	}
}

func TestParseModules(t *testing.T) {
	in := `nvidia_peermem 16384 0 - Live 0xffffffffc0b5f000 (POE)
nvidia_uvm 4956160 4 - Live 0x0000000000000000 (POE)
nvidia 54140928 96 nvidia_peermem,nvidia_uvm, Live 0xffffffffc1000000 (POE)
mlx5_core 2097152 1 mlx5_ib, Live 0xffffffffc0a00000
ib_core 462848 8 nvidia_peermem,mlx5_ib, Live 0xffffffffc0900000

`
	got, err := parseModules(in)
	want := []string{"ib_core", "mlx5_core", "nvidia", "nvidia_peermem", "nvidia_uvm"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("parseModules = %v, %v; want %v", got, err, want)
	}
	if got, err := parseModules(""); err != nil || len(got) != 0 {
		t.Errorf("parseModules(empty) = %v, %v", got, err)
	}
	// Garbage lines are reported, good lines kept.
	for _, bad := range []string{
		"garbage", "nvidia-peermem 16384 0 - Live 0x0", "nvidia x 0 - Live 0x0", "nvidia\x00 1 0", "nvidïa 1 0",
		strings.Repeat("a", 65) + " 1 0 - Live 0x0",
	} {
		got, err := parseModules("ib_core 462848 8 - Live 0x0\n" + bad + "\nzz 1 0 - Live 0x0\n")
		if err == nil || !slices.Equal(got, []string{"ib_core", "zz"}) {
			t.Errorf("parseModules with %q = %v, %v; want ib_core, zz and an error", bad, got, err)
		}
	}
	// Duplicates (never from the kernel) collapse.
	if got, _ := parseModules("a 1 0\na 1 0\n"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("duplicates: %v", got)
	}
}

func TestParseNVIDIAVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want NVIDIAKernelModule
	}{
		{"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  (dvs-builder@U16-I3-B03-4-3)  Tue Mar  5 22:15:33 UTC 2024\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n",
			NVIDIAKernelModule{Version: "550.54.15", Open: true}},
		{"NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024\nGCC version:  gcc version 11.4.0\n",
			NVIDIAKernelModule{Version: "535.183.01"}},
		{"NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  570.86.15  Release Build  (dvs-builder@U16-T02-35-3)  Thu Jan 23 ...",
			NVIDIAKernelModule{Version: "570.86.15", Open: true}},
		{"NVRM version: NVIDIA UNIX x86_64 Kernel Module  390.157  Wed Oct 12 09:19:07 UTC 2022",
			NVIDIAKernelModule{Version: "390.157"}},
		// The GCC line comes first in no real file, but must not be mistaken for the driver.
		{"GCC version:  gcc version 12.2.0\nNVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  x",
			NVIDIAKernelModule{Version: "550.54.15"}},
	} {
		got, err := parseNVIDIAVersion(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseNVIDIAVersion(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{
		"", "GCC version:  gcc version 12.2.0", "NVRM version: NVIDIA UNIX x86_64 Kernel Module", "NVRM version:",
		"NVRM version: 550", "NVRM version: 550.", "NVRM version: .54", "NVRM versio", "\x00\x01",
	} {
		if got, err := parseNVIDIAVersion(in); err == nil {
			t.Errorf("parseNVIDIAVersion(%q) = %+v; want an error", in, got)
		}
	}
}

func TestParseLinkSpeed(t *testing.T) {
	for in, gen := range map[string]int{
		"2.5 GT/s PCIe": 1, "2.5 GT/s": 1, "5.0 GT/s PCIe": 2, "5 GT/s": 2, "8.0 GT/s PCIe": 3, "8 GT/s": 3,
		"8.0 GT/s": 3, "16.0 GT/s PCIe": 4, "16 GT/s": 4, "32.0 GT/s PCIe\n": 5, "64.0 GT/s PCIe": 6,
		"128.0 GT/s PCIe": 7, "Unknown": 0, "Unknown speed": 0, "": 0,
	} {
		if got, err := parseLinkSpeed(in); err != nil || got != gen {
			t.Errorf("parseLinkSpeed(%q) = %d, %v; want %d", in, got, err, gen)
		}
	}
	for _, in := range []string{"32.0", "32.0 GB/s", "33 MHz PCI", "7 GT/s", "GT/s", "32.0GT/s PCIe", "32.0 GT/s PCIe extra", "\xff GT/s", "-8 GT/s"} {
		if got, err := parseLinkSpeed(in); err == nil {
			t.Errorf("parseLinkSpeed(%q) = %d; want an error", in, got)
		}
	}
}

func TestParseLinkWidth(t *testing.T) {
	for in, w := range map[string]int{"16": 16, "16\n": 16, "0": 0, "1": 1, "32": 32} {
		if got, err := parseLinkWidth(in); err != nil || got != w {
			t.Errorf("parseLinkWidth(%q) = %d, %v; want %d", in, got, err, w)
		}
	}
	for _, in := range []string{"", "x16", "-1", "33", "16 lanes", "0x10", "99999999999999999999"} {
		if got, err := parseLinkWidth(in); err == nil {
			t.Errorf("parseLinkWidth(%q) = %d; want an error", in, got)
		}
	}
}

func TestParseClassAndID(t *testing.T) {
	for in, want := range map[string]uint32{"0x030200": 0x030200, "0x020700\n": 0x020700, "0x68000": 0x068000, "0xFFFF00": 0xffff00} {
		if got, err := parseClass(in); err != nil || got != want {
			t.Errorf("parseClass(%q) = %#x, %v; want %#x", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0x", "030200", "0x1030200", "0xZZ", "0x-1", "0x+30200", "0x 030200", "\x00"} {
		if got, err := parseClass(in); err == nil {
			t.Errorf("parseClass(%q) = %#x; want an error", in, got)
		}
	}
	for in, want := range map[string]uint32{"0x10de": 0x10de, "0x1002\n": 0x1002, "0x15b3": 0x15b3} {
		if got, err := parseID(in); err != nil || got != want {
			t.Errorf("parseID(%q) = %#x, %v; want %#x", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10de", "0x10de0", "0xgggg", "nvidia"} {
		if got, err := parseID(in); err == nil {
			t.Errorf("parseID(%q) = %#x; want an error", in, got)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		class, vendor uint32
		kind          PCIKind
		ok            bool
	}{
		{0x030200, vendorNVIDIA, KindGPU, true}, // H100: 3D controller
		{0x030000, vendorNVIDIA, KindGPU, true}, // workstation GPU: VGA
		{0x030000, vendorAMD, KindGPU, true},
		{0x030000, 0x8086, "", false},        // integrated Intel graphics
		{0x038000, vendorAMD, KindGPU, true}, // MI200-era Instinct: display, other
		{0x120000, vendorAMD, KindGPU, true}, // MI300X: processing accelerator
		{0x120000, vendorNVIDIA, "", false},  // only AMD files GPUs there
		{0x038000, 0x8086, "", false},
		{0x020000, 0x8086, KindNIC, true},
		{0x020700, 0x15b3, KindNIC, true}, // ConnectX in InfiniBand mode
		{0x028000, 0x8086, "", false},     // Wi-Fi
		{0x068000, vendorNVIDIA, KindNVSwitch, true},
		{0x068000, 0x8086, "", false},
		{0x060400, vendorNVIDIA, "", false}, // a PCI bridge
		{0x010802, 0x144d, "", false},       // NVMe
	} {
		kind, ok := classify(tc.class, tc.vendor)
		if kind != tc.kind || ok != tc.ok {
			t.Errorf("classify(%#06x, %#04x) = %q, %v; want %q, %v", tc.class, tc.vendor, kind, ok, tc.kind, tc.ok)
		}
	}
}

func TestParseNUMANode(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "1\n": 1, "-1": -1, "7": 7} {
		if got, err := parseNUMANode(in); err != nil || got != want {
			t.Errorf("parseNUMANode(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-2", "x", "1.0", "99999999", "0x1"} {
		if got, err := parseNUMANode(in); err == nil || got != -1 {
			t.Errorf("parseNUMANode(%q) = %d, %v; want -1 and an error", in, got, err)
		}
	}
}

func TestParsePCIPath(t *testing.T) {
	for _, tc := range []struct {
		resolved, addr string
		want           []string
	}{
		{"/sys/devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:00.0/0000:18:00.0", "0000:18:00.0",
			[]string{"pci0000:15", "0000:15:01.0", "0000:16:00.0", "0000:17:00.0", "0000:18:00.0"}},
		{"/sys/devices/pci0000:00/0000:00:03.0", "0000:00:03.0", []string{"pci0000:00", "0000:00:03.0"}},
		// Hyper-V: the host bridge hangs off VMBus.
		{"/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A03:00/device:07/VMBUS:01/47505500-0001-0000-3130-444531303244/pci0001:00/0001:00:00.0", "0001:00:00.0",
			[]string{"pci0001:00", "0001:00:00.0"}},
		// Intel VMD: a second host bridge below the VMD endpoint.
		{"/sys/devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0/10000:e1:00.0", "10000:e1:00.0",
			[]string{"pci0000:00", "0000:00:0e.0", "pci10000:e0", "10000:e0:06.0", "10000:e1:00.0"}},
	} {
		got, err := parsePCIPath(tc.resolved, tc.addr)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parsePCIPath(%q) = %q, %v; want %q", tc.resolved, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ resolved, addr string }{
		{"", "0000:18:00.0"},
		{"/sys/bus/pci/devices/0000:18:00.0", "0000:18:00.0"},         // not resolved
		{"/sys/devices/platform/foo/0000:18:00.0", "0000:18:00.0"},    // no host bridge
		{"/sys/devices/pci0000:15/0000:15:01.0", "0000:18:00.0"},      // wrong device
		{"/sys/devices/pci0000:15", "pci0000:15"},                     // the bridge itself
		{"/sys/devices/pci0000:15/usb1/0000:18:00.0", "0000:18:00.0"}, // not PCI below the bridge
		{"/sys/devices/pci0000:15/0000:15:01.0/0000:18:00.0/", "0000:18:00.0"},
		{"/sys/devices/pciXXXX:15/0000:18:00.0", "0000:18:00.0"},
		{"/sys/devices/pci0000:15/0000:18:00.8", "0000:18:00.8"}, // function > 7
	} {
		if got, err := parsePCIPath(tc.resolved, tc.addr); err == nil {
			t.Errorf("parsePCIPath(%q, %q) = %q; want an error", tc.resolved, tc.addr, got)
		}
	}
}

func TestIsBDF(t *testing.T) {
	for _, s := range []string{"0000:18:00.0", "0000:ff:1f.7", "10000:e1:00.0", "0001:00:00.0"} {
		if !isBDF(s) {
			t.Errorf("isBDF(%q) = false", s)
		}
	}
	for _, s := range []string{"", "18:00.0", "0000:18:00", "0000:18:00.8", "000:18:00.0", "0000:1:00.0", "0000:18:0.0", "0000:18:00.0x", "zzzz:18:00.0", "0000-18-00.0"} {
		if isBDF(s) {
			t.Errorf("isBDF(%q) = true", s)
		}
	}
}

func TestTruncateKeepsUTF8(t *testing.T) {
	if got := truncate("ab€cd", 3); got != "ab..." {
		t.Errorf("truncate = %q", got)
	}
	if got := truncate("short", 10); got != "short" {
		t.Errorf("truncate = %q", got)
	}
}
