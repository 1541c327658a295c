package amdgpu

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The layout table must agree with what a C compiler makes of the same
// structs (testdata/layout.c): member offsets and the struct size.
func TestLayoutMatchesC(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatalf("gcc is needed to check the gpu_metrics layouts: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "layout")
	if out, err := exec.Command(gcc, "-Wall", "-Werror", "-o", bin, "testdata/layout.c").CombinedOutput(); err != nil {
		t.Fatalf("compile layout.c: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		rev, member := f[0], f[1]
		want, _ := strconv.Atoi(f[2])
		// "1.6-early" names the first of a revision's layouts.
		num, early := strings.CutSuffix(rev, "-early")
		maj, minor, _ := strings.Cut(num, ".")
		fm, _ := strconv.Atoi(maj)
		cm, _ := strconv.Atoi(minor)
		offsets, size, ok := Layout(uint8(fm), uint8(cm))
		if !ok {
			t.Fatalf("revision %s has no layout", rev)
		}
		if early {
			all, sizes := Layouts(uint8(fm), uint8(cm))
			offsets, size = all[0], sizes[0]
		}
		got, ok := offsets[member], true
		if member == "sizeof" {
			got = size
		} else if _, ok = offsets[member]; !ok {
			t.Errorf("%s: no member %s", rev, member)
			continue
		}
		if got != want {
			t.Errorf("%s %s: Go says %d, C says %d", rev, member, got, want)
		}
		checked++
	}
	if checked < 150 {
		t.Fatalf("only %d members checked", checked)
	}
}

// table builds a gpu_metrics table of a revision with every member all
// ones (unreported) except those set.
func table(t testing.TB, format, content uint8, set map[string][]uint64) []byte {
	offsets, size, ok := Layout(format, content)
	if !ok {
		t.Fatalf("no layout %d.%d", format, content)
	}
	ls := layouts[[2]uint8{format, content}]
	l := ls[len(ls)-1]
	b := bytes.Repeat([]byte{0xff}, size)
	binary.LittleEndian.PutUint16(b, uint16(size))
	b[2], b[3] = format, content
	for name, vals := range set {
		f, ok := l.offsets[name]
		if !ok {
			t.Fatalf("%d.%d has no %s", format, content, name)
		}
		for i, v := range vals {
			off := offsets[name] + i*f.size
			switch f.size {
			case 2:
				binary.LittleEndian.PutUint16(b[off:], uint16(v))
			case 4:
				binary.LittleEndian.PutUint32(b[off:], uint32(v))
			case 8:
				binary.LittleEndian.PutUint64(b[off:], v)
			}
		}
	}
	return b
}

// Every MI300-class revision reads the same values: 1.4 and 1.5 (MI300X
// on Linux 6.7 to 6.8 and 6.9 on), 1.6 to 1.8 (MI300X, MI325X, MI350X and
// MI355X on newer kernels and ROCm's driver), built from the kernel's
// layouts as layout.c declares them.
func TestParseMetricsMI300(t *testing.T) {
	for _, content := range []uint8{4, 5, 6, 7, 8} {
		b := table(t, 1, content, map[string][]uint64{
			"temperature_hotspot":   {61},
			"temperature_mem":       {53},
			"curr_socket_power":     {612},
			"average_gfx_activity":  {87},
			"average_umc_activity":  {140}, // over 100: not a reading
			"energy_accumulator":    {65536 * 3600},
			"pcie_link_width":       {16},
			"pcie_link_speed":       {320},
			"xgmi_link_width":       {16},
			"xgmi_link_speed":       {32},
			"pcie_replay_count_acc": {7},
			"xgmi_read_data_acc":    {1, 2, 3, 4, 5, 6, 7, 0},
			"xgmi_write_data_acc":   {10, 20, 30, 40, 50, 60, 70, 0},
			"current_gfxclk":        {1420, 1400},
			"current_uclk":          {1300},
		})
		m, err := ParseMetrics(b)
		if err != nil {
			t.Fatalf("1.%d: %v", content, err)
		}
		if *m.TempHotspotC != 61 || *m.TempMemC != 53 || m.TempEdgeC != nil || *m.SocketPowerW != 612 ||
			*m.GFXActivity != 0.87 || m.UMCActivity != nil || *m.EnergyMillijoules != 3600_000 ||
			*m.PCIeLinkWidth != 16 || *m.PCIeLinkSpeed != 320 || *m.XGMILinkWidth != 16 || *m.XGMILinkSpeed != 32 ||
			*m.PCIeReplays != 7 || m.XGMIReadKB[6] != 7 || m.XGMIWriteKB[1] != 20 || len(m.XGMIReadKB) != 8 ||
			*m.GFXClockMHz != 1420 || *m.MemClockMHz != 1300 {
			t.Errorf("1.%d: %+v", content, m)
		}
	}
}

func TestParseMetricsMI200(t *testing.T) {
	b := table(t, 1, 3, map[string][]uint64{
		"temperature_edge":     {40},
		"temperature_hotspot":  {50},
		"temperature_mem":      {0}, // no sensor
		"average_socket_power": {300},
		"average_gfx_activity": {100},
		"energy_accumulator":   {65536},
		"current_gfxclk":       {1700},
	})
	m, err := ParseMetrics(b)
	if err != nil {
		t.Fatal(err)
	}
	if *m.TempEdgeC != 40 || *m.TempHotspotC != 50 || m.TempMemC != nil || *m.SocketPowerW != 300 ||
		*m.GFXActivity != 1 || *m.EnergyMillijoules != 1000 || *m.GFXClockMHz != 1700 || m.MemClockMHz != nil ||
		m.XGMIReadKB != nil || m.PCIeReplays != nil {
		t.Errorf("%+v", m)
	}
}

func TestParseMetricsRejects(t *testing.T) {
	good := table(t, 1, 5, nil)
	wrongSize := append([]byte(nil), good...)
	binary.LittleEndian.PutUint16(wrongSize, 100)
	for name, tc := range map[string]struct {
		b           []byte
		unsupported bool
		want        string
	}{
		"empty":         {nil, false, "shorter than its header"},
		"header only":   {good[:3], false, "shorter than its header"},
		"truncated":     {good[:200], false, "200 bytes, want 360"},
		"size differs":  {wrongSize, false, "header says 100 bytes"},
		"v1.6 odd size": {[]byte{0x50, 0x01, 1, 6, 0, 0}, false, "header says 336 bytes, the layouts have 384 or 1664"},
		// 1.9 is a count and a list of self-describing attributes.
		"v1.9":       {[]byte{0x10, 0x00, 1, 9, 2, 0, 0, 0}, true, "gpu_metrics 1.9"},
		"v1.0":       {[]byte{0x50, 0x00, 1, 0}, true, "gpu_metrics 1.0"},
		"v2.1 (APU)": {[]byte{0x50, 0x00, 2, 1}, true, "gpu_metrics 2.1"},
		"v3.0":       {[]byte{0x50, 0x00, 3, 0}, true, "gpu_metrics 3.0"},
		"text":       {[]byte("hello world\n"), true, ""},
	} {
		_, err := ParseMetrics(tc.b)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if errors.Is(err, ErrUnsupported) != tc.unsupported || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The first form of 1.6 (1.5 plus residencies) is told from the current
// one by its size, and still reads right.
func TestParseMetricsV16Early(t *testing.T) {
	offsets, sizes := Layouts(1, 6)
	if len(sizes) != 2 || sizes[0] != 384 || sizes[1] != 1664 {
		t.Fatalf("1.6 sizes %v", sizes)
	}
	b := bytes.Repeat([]byte{0xff}, sizes[0])
	binary.LittleEndian.PutUint16(b, uint16(sizes[0]))
	b[2], b[3] = 1, 6
	binary.LittleEndian.PutUint16(b[offsets[0]["curr_socket_power"]:], 700)
	binary.LittleEndian.PutUint16(b[offsets[0]["average_gfx_activity"]:], 42)
	binary.LittleEndian.PutUint64(b[offsets[0]["pcie_replay_count_acc"]:], 3)
	m, err := ParseMetrics(b)
	if err != nil {
		t.Fatal(err)
	}
	if *m.SocketPowerW != 700 || *m.GFXActivity != 0.42 || *m.PCIeReplays != 3 || m.XGMILinkUp != nil {
		t.Errorf("%+v", m)
	}
}

// 1.7 and later report each XGMI link's state.
func TestParseMetricsLinkStatus(t *testing.T) {
	for _, content := range []uint8{7, 8} {
		b := table(t, 1, content, map[string][]uint64{"xgmi_link_status": {1, 1, 0, 1, 1, 1, 1}})
		m, err := ParseMetrics(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.XGMILinkUp) != 8 || !*m.XGMILinkUp[0] || *m.XGMILinkUp[2] || m.XGMILinkUp[7] != nil {
			t.Errorf("1.%d: %v", content, m.XGMILinkUp)
		}
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add(table(f, 1, 3, map[string][]uint64{"average_gfx_activity": {50}}))
	f.Add(table(f, 1, 4, map[string][]uint64{"xgmi_read_data_acc": {1, 2}}))
	f.Add(table(f, 1, 5, nil))
	f.Add(table(f, 1, 8, map[string][]uint64{"xgmi_link_status": {1, 0}}))
	f.Add([]byte{0x68, 0x01, 1, 5})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMetrics(b)
		if err != nil {
			return
		}
		for _, r := range []*float64{m.GFXActivity, m.UMCActivity} {
			if r != nil && (*r < 0 || *r > 1) {
				t.Fatalf("ratio %v", *r)
			}
		}
		if _, sizes := Layouts(m.Format, m.Content); len(b) < slices.Min(sizes) {
			t.Fatalf("accepted %d bytes for layouts of %v bytes", len(b), sizes)
		}
	})
}
