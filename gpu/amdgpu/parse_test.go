package amdgpu

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// Every text parser against good values and garbage.
func TestParsers(t *testing.T) {
	type tc struct {
		in   string
		want any // nil: must fail
	}
	run := func(name string, parse func(string) (any, error), cases []tc) {
		for _, c := range cases {
			got, err := parse(c.in)
			switch {
			case c.want == nil && err == nil:
				t.Errorf("%s(%q) = %v, want an error", name, c.in, got)
			case c.want != nil && err != nil:
				t.Errorf("%s(%q): %v", name, c.in, err)
			case c.want != nil && got != c.want:
				t.Errorf("%s(%q) = %v, want %v", name, c.in, got, c.want)
			}
		}
	}
	wrap := func(f any) func(string) (any, error) {
		switch f := f.(type) {
		case func(string) (float64, error):
			return func(s string) (any, error) { return f(s) }
		case func(string) (uint64, error):
			return func(s string) (any, error) { return f(s) }
		case func(string) (string, error):
			return func(s string) (any, error) { return f(s) }
		case func(string) (int, error):
			return func(s string) (any, error) { return f(s) }
		}
		panic("parser type")
	}
	garbage := []tc{{"", nil}, {"abc", nil}, {"\x00\x01", nil}, {strings.Repeat("9", 100), nil}}
	run("parsePercent", wrap(parsePercent), append([]tc{{"0", 0.0}, {"57", 0.57}, {"100", 1.0}, {"101", nil}, {"-1", nil}, {"5.5", nil}}, garbage...))
	run("parseUint", wrap(parseUint), append([]tc{{"206141652992", uint64(206141652992)}, {"0", uint64(0)}, {"-5", nil}, {"1e9", nil}}, garbage...))
	run("parseMilliCelsius", wrap(parseMilliCelsius), append([]tc{{"48000", 48.0}, {"-5000", -5.0}, {"48.5", nil}}, garbage...))
	run("parseDPM", wrap(parseDPM), append([]tc{
		{"0: 500Mhz\n1: 1420Mhz *\n2: 2100Mhz", 1420e6},
		{"S: 19Mhz *\n0: 500Mhz", 19e6},
		{"0: 500MHz *", 500e6},
		{"0: 500Mhz\n1: 1420Mhz", nil},     // nothing current
		{"0: 500Mhz *\n1: 1420Mhz *", nil}, // two current
		{"0: fastMhz *", nil},              // not a number
		{"OD_SCLK:\n0: 500Mhz *", nil},     // overdrive table, not DPM levels
		{"0: 99999999999Mhz *", nil},       // out of range
	}, garbage...))
	run("parseUniqueID", wrap(parseUniqueID), ([]tc{{"fa48d93f54521ccc", "fa48d93f54521ccc"}, {"ABC", "abc"}, {"0x12", nil}, {"12345678901234567", nil}, {"", nil}, {"xyz", nil}, {"\x00", nil}}))
	run("parseDeviceID", wrap(parseDeviceID), append([]tc{{"0x74a1", "0x74a1"}, {"0x74A5", "0x74a5"}, {"74a1", nil}, {"0x74a", nil}, {"0x74ag", nil}}, garbage...))
	run("parseNUMA", wrap(parseNUMA), append([]tc{{"0", 0}, {"-1", -1}, {"7", 7}, {"-2", nil}, {"1.0", nil}}, garbage...))
	run("parsePartition", wrap(parsePartition), append([]tc{{"SPX", "SPX"}, {"cpx", "CPX"}, {"NPS4", "NPS4"}, {"NPS3", nil}, {"XPX", nil}}, garbage...))
	run("parseVersion", wrap(parseVersion), ([]tc{{"6.10.5", "6.10.5"}, {"6.4.1-120", "6.4.1-120"}, {"6.4 beta", nil}, {"abc", nil}, {"", nil}, {"\x00\x01", nil}}))
	run("parseLinkGen", wrap(parseLinkGen), append([]tc{{"32.0 GT/s PCIe", 5}, {"16 GT/s", 4}, {"Unknown", nil}, {"32.0 Gb/s", nil}, {"7.0 GT/s", nil}}, garbage...))
	run("parseLinkWidth", wrap(parseLinkWidth), append([]tc{{"16", 16}, {"0", 0}, {"33", nil}}, garbage...))

	for _, c := range []struct {
		in     string
		ue, ce uint64
		ok     bool
	}{
		{"ue: 0\nce: 12", 0, 12, true},
		{"ce: 3\nue: 1", 1, 3, true},
		{"ue: 0", 0, 0, false},
		{"ue: x\nce: 1", 0, 0, false},
		{"ue: 1\nce: 2\nde: 3", 0, 0, false},
		{"", 0, 0, false},
		{"garbage", 0, 0, false},
	} {
		ue, ce, err := parseRASCount(c.in)
		if (err == nil) != c.ok || ue != c.ue || ce != c.ce {
			t.Errorf("parseRASCount(%q) = %d, %d, %v", c.in, ue, ce, err)
		}
	}
	if l, err := parsePartitionList("SPX, DPX, QPX, CPX"); err != nil || strings.Join(l, ",") != "SPX,DPX,QPX,CPX" {
		t.Errorf("parsePartitionList: %v %v", l, err)
	}
	if _, err := parsePartitionList("SPX,,CPX"); err == nil {
		t.Error("parsePartitionList accepted an empty mode")
	}
	if p, err := parseKFDProperties("simd_count 1216\nsimd_per_cu 4\n"); err != nil || p["simd_count"] != 1216 {
		t.Errorf("parseKFDProperties: %v %v", p, err)
	}
	for _, bad := range []string{"simd_count", "simd_count -1", "simd_count 1.5", "a b c"} {
		if _, err := parseKFDProperties(bad); err == nil {
			t.Errorf("parseKFDProperties(%q) accepted", bad)
		}
	}
	run("parsePCIAddr", func(s string) (any, error) {
		a, err := parsePCIAddr(s)
		return a.String(), err
	}, append([]tc{
		{"0000:05:00.0", "0000:05:00.0"}, {"0001:c9:1f.7", "0001:c9:1f.7"}, {"0000:E5:00.0", "0000:e5:00.0"},
		{"10000:e0:00.0", "10000:e0:00.0"}, // a VMD domain
		{"device", nil}, {"0000:05:00", nil}, {"05:00.0", nil}, {"0000:05:20.0", nil}, {"0000:05:00.8", nil},
		{"0000:5:00.0", nil}, {"0000:05:00.0.1", nil}, {"0000:+5:00.0", nil}, {"000g:05:00.0", nil}, {"123456789:05:00.0", nil},
	}, garbage...))
	run("parseSlotName", func(s string) (any, error) {
		a, err := parseSlotName(s)
		return a.String(), err
	}, append([]tc{
		// procfs's captured Vega 10 uevent
		{"DRIVER=amdgpu\nPCI_CLASS=30000\nPCI_ID=1002:687F\nPCI_SUBSYS_ID=1043:04C4\nPCI_SLOT_NAME=0000:09:00.0\n" +
			"MODALIAS=pci:v00001002d0000687Fsv00001043sd000004C4bc03sc00i00", "0000:09:00.0"},
		{"DRIVER=amdgpu\nPCI_CLASS=30000", nil}, {"PCI_SLOT_NAME=", nil}, {"PCI_SLOT_NAME=device", nil},
		{"MODALIAS=platform:amdgpu_xcp", nil},
	}, garbage...))

	for name, want := range map[string]bool{"card0": true, "card12": true, "card0-DP-1": false, "renderD128": false, "card": false, "card-1": false, "card99999999": false} {
		if _, ok := cardIndex(name); ok != want {
			t.Errorf("cardIndex(%q) = %v", name, ok)
		}
	}
}

func FuzzParseDPM(f *testing.F) {
	for _, s := range []string{"0: 500Mhz\n1: 1420Mhz *\n", "S: 19Mhz *", "", "*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if hz, err := parseDPM(s); err == nil && (hz < 0 || hz > 1<<32*1e6) {
			t.Fatalf("parseDPM(%q) = %v", s, hz)
		}
	})
}

func FuzzParsePCIAddr(f *testing.F) {
	for _, s := range []string{"0000:05:00.0", "10000:e0:1f.7", "device", "", "0:0:0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parsePCIAddr(s)
		if err != nil {
			return
		}
		// What parses formats back to the same address, and is one.
		if b, err := parsePCIAddr(a.String()); err != nil || b != a || a.id() > 0xffff {
			t.Fatalf("parsePCIAddr(%q) = %v, reparsed %v %v", s, a, b, err)
		}
	})
}

// kfdGPUs on hand-made topologies: what the captures do not show.
func TestKFDGPUs(t *testing.T) {
	addr := func(s string) pciAddr {
		a, err := parsePCIAddr(s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a, b := addr("0000:05:00.0"), addr("0000:27:00.0")
	for _, c := range []struct {
		name  string
		nodes []kfdGPUNode
		cards []pciAddr
		want  map[string]kfdNode
	}{{
		name: "SPX: one node per GPU",
		nodes: []kfdGPUNode{
			{id: 2, location: a.id(), cus: 304, xgmiTo: []int{3}},
			{id: 3, location: b.id(), cus: 304, xgmiTo: []int{2}},
		},
		cards: []pciAddr{a, b},
		want:  map[string]kfdNode{a.String(): {304, 1}, b.String(): {304, 1}},
	}, {
		name: "DPX: partitions in the function bits, links to siblings left out",
		nodes: []kfdGPUNode{
			{id: 2, location: a.id(), cus: 152, xgmiTo: []int{3, 4, 5}},
			{id: 3, location: a.id() | 1, cus: 152, xgmiTo: []int{2, 4, 5}},
			{id: 4, location: b.id(), cus: 152, xgmiTo: []int{5, 2, 3}},
			{id: 5, location: b.id() | 1, cus: 152, xgmiTo: []int{4, 2, 3}},
		},
		cards: []pciAddr{a, b},
		want:  map[string]kfdNode{a.String(): {304, 1}, b.String(): {304, 1}},
	}, {
		name: "a peer that is no card here counts once, however many partitions it has",
		nodes: []kfdGPUNode{
			{id: 2, location: a.id(), cus: 152, xgmiTo: []int{3, 4, 5}},
			{id: 3, location: a.id() | 1, cus: 152, xgmiTo: []int{2, 4, 5}},
			{id: 4, location: b.id(), cus: 152, xgmiTo: []int{5, 2, 3}},
			{id: 5, location: b.id() | 1, cus: 152, xgmiTo: []int{4, 2, 3}},
		},
		cards: []pciAddr{a},
		want:  map[string]kfdNode{a.String(): {304, 1}},
	}, {
		name: "links to nodes that are not there, and a node of another domain",
		nodes: []kfdGPUNode{
			{id: 2, location: a.id(), cus: 304, xgmiTo: []int{9, 2}},
			{id: 3, domain: 1, location: a.id(), cus: 304, xgmiTo: []int{2}},
		},
		cards: []pciAddr{a},
		want:  map[string]kfdNode{a.String(): {304, 0}},
	}, {
		name:  "no KFD node for a card",
		nodes: []kfdGPUNode{{id: 2, location: b.id(), cus: 304}},
		cards: []pciAddr{a},
		want:  map[string]kfdNode{},
	}} {
		got := kfdGPUs(c.nodes, c.cards)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// The parsers on every file of the captured trees they read
// (testdata/captures): real kernels' output must parse.
func TestParseCaptured(t *testing.T) {
	parsers := map[string]func(string) error{
		"properties":          func(s string) error { _, err := parseKFDProperties(s); return err },
		"uevent":              func(s string) error { _, err := parseSlotName(s); return err },
		"device":              func(s string) error { _, err := parseDeviceID(s); return err },
		"unique_id":           func(s string) error { _, err := parseUniqueID(s); return err },
		"numa_node":           func(s string) error { _, err := parseNUMA(s); return err },
		"pp_dpm_sclk":         func(s string) error { _, err := parseDPM(s); return err },
		"pp_dpm_mclk":         func(s string) error { _, err := parseDPM(s); return err },
		"gpu_busy_percent":    func(s string) error { _, err := parsePercent(s); return err },
		"mem_info_vram_total": func(s string) error { _, err := parseUint(s); return err },
		"mem_info_vram_used":  func(s string) error { _, err := parseUint(s); return err },
		"pcie_replay_count":   func(s string) error { _, err := parseUint(s); return err },
		"current_link_speed":  func(s string) error { _, err := parseLinkGen(s); return err },
		"max_link_speed":      func(s string) error { _, err := parseLinkGen(s); return err },
		"current_link_width":  func(s string) error { _, err := parseLinkWidth(s); return err },
		"max_link_width":      func(s string) error { _, err := parseLinkWidth(s); return err },
	}
	for _, archive := range []string{"kfd-mi300x-cpx.tar.gz", "kfd-mi308x-cpx.tar.gz", "drm-vega10.tar.gz"} {
		f, err := os.Open(filepath.Join("testdata", "captures", archive))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		parsed := 0
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			parse, ok := parsers[path.Base(h.Name)]
			if !ok || h.Typeflag != tar.TypeReg || strings.Contains(h.Name, "/card1/") { // card1 is Intel's
				continue
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := parse(strings.TrimSpace(string(b))); err != nil {
				t.Errorf("%s %s: %v", archive, h.Name, err)
			}
			parsed++
		}
		if parsed == 0 {
			t.Errorf("%s: nothing parsed", archive)
		}
	}
}
