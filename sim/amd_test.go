package sim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/gpu/amdgpu"
	"github.com/gpunode/gpunode/internal/hostfs"
)

func eth8() map[string]string {
	m := map[string]string{}
	for i := range 8 {
		m[fmt.Sprintf("mlx5_%d", i)] = "Ethernet"
	}
	return m
}

// checkAMD: the amdgpu cards are where the driver puts them, each with its
// render node, hwmon, a gpu_metrics table the parser accepts and a KFD
// node; card i+1 shares a PCIe switch with mlx5_i.
func (h *host) checkAMD(e expect) {
	cards := 0
	drm, _ := h.fs.Names("/sys/class/drm") // absent on nodes without AMD GPUs
	for _, n := range drm {
		if strings.HasPrefix(n, "card") {
			cards++
		}
	}
	if cards != e.amdGPUs {
		h.t.Errorf("%d DRM cards, want %d", cards, e.amdGPUs)
	}
	for i := range e.amdGPUs {
		dev := h.resolve(fmt.Sprintf("/sys/class/drm/card%d/device", i+1))
		if h.read(dev+"/vendor") != "0x1002" || h.read(dev+"/device") != e.amdDevice {
			h.t.Errorf("card%d: not device %s", i+1, e.amdDevice)
		}
		if drv, err := h.fs.LinkBase(dev + "/driver"); err != nil || drv != "amdgpu" {
			h.t.Errorf("card%d driver %q %v", i+1, drv, err)
		}
		if !h.fs.Exists(fmt.Sprintf("/dev/dri/renderD%d", 128+i)) || !h.fs.Exists(dev+"/hwmon") {
			h.t.Errorf("card%d: render node or hwmon missing", i+1)
		}
		raw, err := h.fs.ReadFile(dev + "/gpu_metrics")
		if err != nil {
			h.t.Fatal(err)
		}
		m, err := amdgpu.ParseMetrics(raw)
		if err != nil || m.Content != e.amdMetrics || m.XGMIReadKB == nil {
			h.t.Errorf("card%d gpu_metrics: %+v %v", i+1, m, err)
		}
		nic := h.resolve(fmt.Sprintf("/sys/class/infiniband/mlx5_%d/device", i))
		if filepath.Dir(filepath.Dir(nic)) != filepath.Dir(filepath.Dir(dev)) {
			h.t.Errorf("rail %d: GPU %s and NIC %s are not on one switch", i, dev, nic)
		}
		if p := h.read(fmt.Sprintf("/sys/class/kfd/kfd/topology/nodes/%d/properties", 2+i)); !strings.Contains(p, fmt.Sprintf("simd_count %d\n", 4*e.amdCUs)) {
			h.t.Errorf("KFD node %d: %q", 2+i, p)
		}
	}
}

// The gpu_metrics tables move: energy at the card's power, the XGMI data
// counters of the seven peer links at the configured rates; the unused
// eighth link stays still and nothing goes back.
func TestGPUMetricsTraffic(t *testing.T) {
	n, err := Build("mi300x-roce", shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tr, err := NewTraffic(n, start)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(n.Root, "sys/class/drm/card3/device/gpu_metrics")
	read := func() amdgpu.Metrics {
		t.Helper()
		m, err := amdgpu.ParseMetrics(mustRead(t, path))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	before := read()
	if err := tr.Advance(start.Add(100 * time.Second)); err != nil {
		t.Fatal(err)
	}
	after := read()
	rate, ok := tr.XGMIRate("card3", 2)
	if !ok {
		t.Fatal("no rate for card3 link 2")
	}
	if got := float64(after.XGMIReadKB[2]-before.XGMIReadKB[2]) * 1024 / 100; got/rate < 0.999 || got/rate > 1.001 {
		t.Errorf("link 2 read %.0f B/s, want %.0f", got, rate)
	}
	if after.XGMIReadKB[7] != before.XGMIReadKB[7] {
		t.Error("the unused link moved")
	}
	if w := float64(*after.EnergyMillijoules-*before.EnergyMillijoules) / 1000 / 100; w < *before.SocketPowerW-1 || w > *before.SocketPowerW+1 {
		t.Errorf("energy at %.1f W, power %v W", w, *before.SocketPowerW)
	}
	// Going back in time changes nothing.
	if err := tr.Advance(start.Add(50 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if read().XGMIReadKB[2] != after.XGMIReadKB[2] {
		t.Error("counters went back")
	}
}

// A throttler ThrottleAMD starts rises with the SMU's tick counter while
// it holds and stops when it ends; the other residencies stay still; a
// table without residencies (1.5, mi300x-roce) refuses it.
func TestThrottleAMD(t *testing.T) {
	n, err := Build("mi355x-roce", shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tr, err := NewTraffic(n, start)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.ThrottleAMD("card2", "vr_thm_residency_acc", start.Add(10*time.Second), start.Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	read := func(at time.Duration) amdgpu.Metrics {
		t.Helper()
		if err := tr.Advance(start.Add(at)); err != nil {
			t.Fatal(err)
		}
		m, err := amdgpu.ParseMetrics(mustRead(t, filepath.Join(n.Root, "sys/class/drm/card2/device/gpu_metrics")))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m0, m20, m40 := read(5*time.Second), read(20*time.Second), read(40*time.Second)
	if d := *m40.AccumulationCounter - *m0.AccumulationCounter; d != 35*smuTicksPerSecond {
		t.Errorf("accumulation counter rose %d in 35 s", d)
	}
	if m0.ThrottleResidency["vr_thermal"] != 0 || m20.ThrottleResidency["vr_thermal"] != 10*smuTicksPerSecond ||
		m40.ThrottleResidency["vr_thermal"] != 20*smuTicksPerSecond {
		t.Errorf("VR residency %d, %d, %d", m0.ThrottleResidency["vr_thermal"], m20.ThrottleResidency["vr_thermal"], m40.ThrottleResidency["vr_thermal"])
	}
	if m40.ThrottleResidency["ppt"] != 0 || m40.ThrottleResidency["hbm_thermal"] != 0 {
		t.Errorf("other residencies moved: %v", m40.ThrottleResidency)
	}
	if err := tr.ThrottleAMD("card2", "gfx_activity_acc", start, time.Time{}); err == nil {
		t.Error("a counter that is no residency was accepted")
	}
	old, err := Build("mi300x-roce", shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	tr, err = NewTraffic(old, start)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.ThrottleAMD("card2", "vr_thm_residency_acc", start, time.Time{}); err == nil {
		t.Error("gpu_metrics 1.5 took a residency")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every partition mode the kernel allows on an MI300X: one KFD node per
// compute partition with its share of the 1216 SIMDs, the partition number
// ORed into location_id, XGMI io_links to the sibling partitions and to
// every partition of the seven peers, and an amdgpu_xcp card per partition
// after the first. The sysfs attributes name the modes.
func TestAMDPartitionModes(t *testing.T) {
	for _, m := range []struct {
		compute, memory string
		parts           int
	}{
		{"SPX", "NPS1", 1}, {"DPX", "NPS1", 2}, {"QPX", "NPS1", 4}, {"QPX", "NPS4", 4}, {"CPX", "NPS1", 8}, {"CPX", "NPS4", 8},
	} {
		t.Run(m.compute+"-"+m.memory, func(t *testing.T) {
			n, err := Build("mi300x-roce", shmDir(t), WithAMDPartition(m.compute, m.memory))
			if err != nil {
				t.Fatal(err)
			}
			fsys, err := hostfs.New(n.Root)
			if err != nil {
				t.Fatal(err)
			}
			h := &host{t: t, fs: fsys}
			dev := h.resolve("/sys/class/drm/card3/device")
			if c, mem := h.read(dev+"/current_compute_partition"), h.read(dev+"/current_memory_partition"); c != m.compute || mem != m.memory {
				t.Errorf("card3 partition %s %s", c, mem)
			}
			nodes, err := fsys.Names(kfdTopology)
			if err != nil || len(nodes) != 2+8*m.parts {
				t.Fatalf("%d KFD nodes, want %d: %v", len(nodes), 2+8*m.parts, err)
			}
			// GPU 2 (card3, bus 0x45), its last partition.
			p := m.parts - 1
			id := 2 + 2*m.parts + p
			props := h.read(fmt.Sprintf("%s/%d/properties", kfdTopology, id))
			for _, want := range []string{
				fmt.Sprintf("simd_count %d\n", 1216/m.parts), fmt.Sprintf("num_xcc %d\n", 8/m.parts),
				fmt.Sprintf("location_id %d\n", 0x4500|p), fmt.Sprintf("io_links_count %d\n", 8*m.parts),
			} {
				if !strings.Contains(props+"\n", want) {
					t.Errorf("KFD node %d lacks %q:\n%s", id, want, props)
				}
			}
			links, _ := fsys.Names(fmt.Sprintf("%s/%d/io_links", kfdTopology, id))
			xgmi := 0
			for _, l := range links {
				if strings.HasPrefix(h.read(fmt.Sprintf("%s/%d/io_links/%s/properties", kfdTopology, id, l)), "type 11\n") {
					xgmi++
				}
			}
			if xgmi != 8*m.parts-1 {
				t.Errorf("KFD node %d: %d XGMI io_links, want %d", id, xgmi, 8*m.parts-1)
			}
			cards := 0
			drm, _ := fsys.Names("/sys/class/drm")
			for _, c := range drm {
				if strings.HasPrefix(c, "card") {
					cards++
				}
			}
			if cards != 8*m.parts {
				t.Errorf("%d DRM cards, want %d", cards, 8*m.parts)
			}
			if m.parts > 1 {
				last := h.resolve(fmt.Sprintf("/sys/class/drm/card%d/device", 8*m.parts))
				if !strings.HasPrefix(last, "/sys/devices/platform/amdgpu_xcp.") || fsys.Exists(last+"/vendor") {
					t.Errorf("card%d is %s", 8*m.parts, last)
				}
			}
		})
	}
	for _, bad := range [][2]string{{"SPX", "NPS4"}, {"DPX", "NPS4"}, {"TPX", "NPS1"}, {"CPX", "NPS2"}, {"", ""}} {
		if _, err := Build("mi300x-roce", t.TempDir(), WithAMDPartition(bad[0], bad[1])); err == nil || !strings.Contains(err.Error(), "CPX with NPS4") {
			t.Errorf("%s with %s: %v", bad[0], bad[1], err)
		}
	}
}
