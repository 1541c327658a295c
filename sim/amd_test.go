package sim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/gpu/amdgpu"
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
		if h.read(dev+"/vendor") != "0x1002" || h.read(dev+"/device") != "0x74a1" {
			h.t.Errorf("card%d: not an MI300X", i+1)
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
		if err != nil || m.Content != 5 || m.XGMIReadKB == nil {
			h.t.Errorf("card%d gpu_metrics: %+v %v", i+1, m, err)
		}
		nic := h.resolve(fmt.Sprintf("/sys/class/infiniband/mlx5_%d/device", i))
		if filepath.Dir(filepath.Dir(nic)) != filepath.Dir(filepath.Dir(dev)) {
			h.t.Errorf("rail %d: GPU %s and NIC %s are not on one switch", i, dev, nic)
		}
		if p := h.read(fmt.Sprintf("/sys/class/kfd/kfd/topology/nodes/%d/properties", 2+i)); !strings.Contains(p, "simd_count 1216\n") {
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

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
