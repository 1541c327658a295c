package topology

import (
	"slices"
	"strings"
	"testing"
)

// Fuzz targets for every parser. Their seeds run in plain `go test`; run
// one for real with `go test -fuzz=FuzzParseInterrupts ./topology`.

func FuzzParseCmdline(f *testing.F) {
	for _, s := range []string{
		"BOOT_IMAGE=/vmlinuz isolcpus=managed_irq,domain,2-7 nohz_full=2-7",
		"isolcpus=managed_irq,domain,2-5,8", `a="b c" isolcpus="3" -- nohz_full=1`, "isolcpus=dom@in,2",
		"nohz_full=7-3", "isolcpus=\xff", `"`, "isolcpus=0-15:2/4", "isolcpus=,,,", "=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCmdline(s)
		if err == nil && !c.Isolated.IsEmpty() && len(c.IsolatedFlags) == 0 {
			t.Errorf("parseCmdline(%q): isolated CPUs without flags", s)
		}
		if !slices.IsSorted(c.IsolatedFlags) {
			t.Errorf("parseCmdline(%q): flags not sorted: %q", s, c.IsolatedFlags)
		}
	})
}

func FuzzParseMemTotal(f *testing.F) {
	for _, s := range []string{"Node 0 MemTotal:       1056499896 kB\n", "MemTotal: 1 kB", "Node x", "MemTotal: 99999999999999999 kB", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		node, b, err := parseMemTotal(s)
		if err == nil && (b%1024 != 0 || node < -1) {
			t.Errorf("parseMemTotal(%q) = %d, %d", s, node, b)
		}
	})
}

func FuzzParseDistances(f *testing.F) {
	for _, s := range []string{"10 21", "10", "", "10 x", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDistances(s)
		if err == nil && len(d) != len(strings.Fields(s)) {
			t.Errorf("parseDistances(%q) = %v", s, d)
		}
	})
}

func FuzzParseModules(f *testing.F) {
	for _, s := range []string{"nvidia_peermem 16384 0 - Live 0xffffffffc0b5f000 (POE)\nib_core 1 0 - Live 0x0\n", "x", "\n\n", "a b c", "a-b 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		names, _ := parseModules(s)
		if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
			t.Errorf("parseModules(%q) = %q: not sorted and unique", s, names)
		}
		for _, n := range names {
			if !isModuleName(n) {
				t.Errorf("parseModules(%q) returned %q", s, n)
			}
		}
	})
}

func FuzzParseNVIDIAVersion(f *testing.F) {
	for _, s := range []string{
		"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  (x)  Tue Mar  5 2024\nGCC version:  gcc version 12.2.0\n",
		"NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12", "NVRM version:", "", "NVRM version: 1.",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseNVIDIAVersion(s)
		if err == nil && (!isDottedVersion(m.Version) || !strings.Contains(s, m.Version)) {
			t.Errorf("parseNVIDIAVersion(%q) = %+v", s, m)
		}
	})
}

func FuzzParseLinkSpeed(f *testing.F) {
	for _, s := range []string{"32.0 GT/s PCIe", "8 GT/s", "8.0 GT/s", "2.5 GT/s", "Unknown", "", "x GT/s", "GT/s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		gen, err := parseLinkSpeed(s)
		if gen < 0 || gen > 7 || (err != nil && gen != 0) {
			t.Errorf("parseLinkSpeed(%q) = %d, %v", s, gen, err)
		}
		w, err := parseLinkWidth(s)
		if w < 0 || w > 32 || (err != nil && w != 0) {
			t.Errorf("parseLinkWidth(%q) = %d, %v", s, w, err)
		}
	})
}

func FuzzParseClass(f *testing.F) {
	for _, s := range []string{"0x030200", "0x10de", "0x", "0xZZ", "030200", "0x1234567"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if c, err := parseClass(s); err == nil && c > 0xffffff {
			t.Errorf("parseClass(%q) = %#x", s, c)
		}
		if id, err := parseID(s); err == nil && id > 0xffff {
			t.Errorf("parseID(%q) = %#x", s, id)
		}
		if n, err := parseNUMANode(s); n < -1 || (err != nil && n != -1) {
			t.Errorf("parseNUMANode(%q) = %d, %v", s, n, err)
		}
	})
}

func FuzzParsePCIPath(f *testing.F) {
	f.Add("/sys/devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:18:00.0", "0000:18:00.0")
	f.Add("/sys/devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0/10000:e1:00.0", "10000:e1:00.0")
	f.Add("/sys/devices/platform/x", "x")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, resolved, addr string) {
		p, err := parsePCIPath(resolved, addr)
		if err != nil {
			return
		}
		if len(p) < 2 || !isHostBridge(p[0]) || p[len(p)-1] != addr || !strings.HasSuffix(resolved, strings.Join(p, "/")) {
			t.Errorf("parsePCIPath(%q, %q) = %q", resolved, addr, p)
		}
	})
}

func FuzzParseInterrupts(f *testing.F) {
	for _, s := range []string{interruptsX86, interruptsARM, interruptsOld, "", "CPU0\n", "CPU0\n 1:\n", "CPU0\n1: 2 3-edge -edge Level\n", "CPU0\n\x00:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		names, _ := parseInterrupts(strings.NewReader(s))
		for n, a := range names {
			if n < 0 || strings.ContainsAny(a, "\n\x00") || strings.TrimSpace(a) != a {
				t.Errorf("parseInterrupts(%q): %d = %q", s, n, a)
			}
		}
	})
}

// FuzzRelation checks Relation is symmetric and total on arbitrary paths.
func FuzzRelation(f *testing.F) {
	f.Add("pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:00.0/0000:18:00.0", 0, "pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:01.0/0000:19:00.0", 0)
	f.Add("pci0000:15/0000:15:01.0/0000:18:00.0", -1, "pci0000:9a/0000:9a:01.0/0000:9b:00.0", 1)
	f.Add("", 0, "", 0)
	f.Fuzz(func(t *testing.T, pa string, na int, pb string, nb int) {
		split := func(p string) []string {
			if p == "" {
				return nil
			}
			return strings.Split(p, "/")
		}
		a := PCIDevice{Path: split(pa), NUMANode: na}
		b := PCIDevice{Path: split(pb), NUMANode: nb}
		if len(a.Path) > 0 {
			a.Address = a.Path[len(a.Path)-1]
		}
		if len(b.Path) > 0 {
			b.Address = b.Path[len(b.Path)-1]
		}
		r := Relation(a, b)
		if r != Relation(b, a) {
			t.Errorf("Relation not symmetric for %q, %q", pa, pb)
		}
		if !slices.Contains([]string{RelSelf, RelPIX, RelPXB, RelPHB, RelNode, RelSys}, r) {
			t.Errorf("Relation(%q, %q) = %q", pa, pb, r)
		}
	})
}

func FuzzParseHugeCmdline(f *testing.F) {
	for _, s := range []string{
		"hugepagesz=1G hugepages=0:4,1:4 hugepagesz=2M hugepages=1024", "default_hugepagesz=1G hugepages=8",
		"hugepages=4 hugepages=8", "hugepages=0:1,0:2", "hugepagesz=3M", "hugepagesz=\xff", `hugepages="1`, "hugepages=:,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, _ := parseHugeCmdline(s)
		sizes := map[uint64]bool{}
		for _, r := range c.Requests {
			if sizes[r.SizeKB] {
				t.Errorf("parseHugeCmdline(%q): size %d counted twice", s, r.SizeKB)
			}
			sizes[r.SizeKB] = true
			if r.SizeKB != 0 && (r.SizeKB&(r.SizeKB-1) != 0 || r.SizeKB < 8) {
				t.Errorf("parseHugeCmdline(%q): size %d kB", s, r.SizeKB)
			}
			var sum uint64
			for i, p := range r.PerNode {
				sum += p.Pages
				if p.Node < 0 || p.Node >= maxNodes || i > 0 && r.PerNode[i-1].Node >= p.Node {
					t.Errorf("parseHugeCmdline(%q): nodes %v", s, r.PerNode)
				}
			}
			if len(r.PerNode) > 0 && sum != r.Pages {
				t.Errorf("parseHugeCmdline(%q): %d pages, nodes sum to %d", s, r.Pages, sum)
			}
		}
	})
}
