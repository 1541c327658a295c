package amdgpu_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/amdgpu"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/sim"
)

// tmpfs builds a tree in milliseconds, a disk-backed /tmp in seconds.
func shmDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/dev/shm", "gpunode-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func mi300x(t *testing.T) (sim.Node, hostfs.FS) {
	t.Helper()
	n, err := sim.Build("mi300x-roce", shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := hostfs.New(n.Root)
	if err != nil {
		t.Fatal(err)
	}
	return n, fsys
}

func TestInventoryMI300X(t *testing.T) {
	_, fsys := mi300x(t)
	inv, err := amdgpu.New(fsys).Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if inv.Backend != "amdgpu" || inv.DriverVersion != "6.10.5" || inv.ROCmVersion != "6.4.1-120" || len(inv.Devices) != 8 {
		t.Fatalf("%+v", inv)
	}
	for i, d := range inv.Devices {
		if d.Index != i || d.Vendor != gpu.AMD || d.Product != "AMD Instinct MI300X" || d.Architecture != "cdna3" ||
			d.PCIDeviceID != "0x74a1" || d.MemoryBytes != 206141652992 || d.ComputeUnits != 304 || len(d.UUID) != 16 ||
			d.NUMANode != i/4 || d.PowerLimitWatts != 750 || len(d.Errors) != 0 {
			t.Errorf("gpu %d: %+v", i, d)
		}
		if ic := d.Interconnect; ic == nil || *ic != (gpu.Interconnect{Kind: "xgmi", Links: 7, Active: 7}) {
			t.Errorf("gpu %d interconnect: %+v", i, ic)
		}
		if p := d.Partition; p == nil || p.Compute != "SPX" || p.Memory != "NPS1" || len(p.AvailableCompute) != 4 {
			t.Errorf("gpu %d partition: %+v", i, p)
		}
		if l := d.PCIeLink; l == nil || *l != (gpu.PCIeLink{CurrentGen: 5, MaxGen: 5, CurrentWidth: 16, MaxWidth: 16}) {
			t.Errorf("gpu %d PCIe: %+v", i, l)
		}
	}
	if inv.Devices[0].PCIBusID != "0000:15:00.0" || inv.Devices[7].PCIBusID != "0000:e5:00.0" {
		t.Errorf("bus ids %s .. %s", inv.Devices[0].PCIBusID, inv.Devices[7].PCIBusID)
	}
}

func TestSampleMI300X(t *testing.T) {
	n, fsys := mi300x(t)
	start := time.Now()
	tr, err := sim.NewTraffic(n, start)
	if err != nil {
		t.Fatal(err)
	}
	b := amdgpu.New(fsys)
	ctx := context.Background()
	first, err := b.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 8 {
		t.Fatalf("%d samples", len(first))
	}
	s := first[0]
	if !s.Up || s.Product != "AMD Instinct MI300X" || s.PCIBusID != "0000:15:00.0" || s.DeviceNode != "dri/renderD128" ||
		s.Utilization == nil || *s.Utilization <= 0 || *s.MemoryTotalBytes != 206141652992 ||
		*s.MemoryUsedBytes+*s.MemoryFreeBytes != *s.MemoryTotalBytes || s.PowerWatts == nil || *s.PowerLimitWatts != 750 ||
		s.EnergyMillijoules == nil || len(s.ECC) != 2 || s.PCIe == nil || *s.PCIe.ReplayErrors != 0 || *s.PCIe.LinkGeneration != 5 {
		t.Fatalf("%+v", s)
	}
	if len(s.Temperatures) != 2 || s.Temperatures[0].Sensor != gpu.SensorGPU || s.Temperatures[1].Sensor != gpu.SensorMemory {
		t.Errorf("temperatures %+v", s.Temperatures)
	}
	if len(s.Clocks) != 2 || s.Clocks[0] != (gpu.Clock{Clock: gpu.ClockGraphics, Hertz: 1420e6}) || s.Clocks[1].Hertz != 1300e6 {
		t.Errorf("clocks %+v", s.Clocks)
	}
	ic := s.Interconnect
	if ic == nil || ic.Kind != gpu.XGMI || len(ic.Links) != 7 || ic.ActiveLinks() != 7 {
		t.Fatalf("interconnect %+v", ic)
	}

	// Ten simulated seconds later the counters moved at the node's rates.
	if err := tr.Advance(start.Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	second, err := b.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rate, ok := tr.XGMIRate("card1", 0)
	if !ok {
		t.Fatal("no XGMI rate for card1 link 0")
	}
	got := float64(*second[0].Interconnect.Links[0].ReceiveBytes-*ic.Links[0].ReceiveBytes) / 10
	if d := got/rate - 1; d < -0.001 || d > 0.001 {
		t.Errorf("XGMI read rate %.0f B/s, want %.0f", got, rate)
	}
	watts := float64(*second[0].EnergyMillijoules-*s.EnergyMillijoules) / 1000 / 10
	if d := watts - *s.PowerWatts; d < -1 || d > 1 {
		t.Errorf("energy grew at %.1f W, power reads %.1f W", watts, *s.PowerWatts)
	}
}

// The backend with no driver or no cards is absent, with the reason.
func TestAbsent(t *testing.T) {
	empty := t.TempDir()
	fsys, _ := hostfs.New(empty)
	_, err := amdgpu.New(fsys).Inventory(context.Background())
	if !errors.Is(err, source.ErrAbsent) || !strings.Contains(err.Error(), "not loaded") {
		t.Errorf("no module: %v", err)
	}
	if s, err := amdgpu.New(fsys).Sample(context.Background()); !errors.Is(err, source.ErrAbsent) || s != nil {
		t.Errorf("sample without module: %v %v", s, err)
	}
	os.MkdirAll(filepath.Join(empty, "sys/module/amdgpu"), 0o755)
	os.MkdirAll(filepath.Join(empty, "sys/class/drm"), 0o755)
	if _, err := amdgpu.New(fsys).Inventory(context.Background()); !errors.Is(err, source.ErrAbsent) || !strings.Contains(err.Error(), "no amdgpu cards") {
		t.Errorf("no cards: %v", err)
	}

	// A CPU-only node has neither.
	n, err := sim.Build("cpu-only", shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	cpu, _ := hostfs.New(n.Root)
	if _, err := amdgpu.New(cpu).Inventory(context.Background()); !errors.Is(err, source.ErrAbsent) {
		t.Errorf("cpu-only: %v", err)
	}
}

// Broken attributes are named on the GPU's errors; the GPU's other
// readings and the other GPUs stay. A GPU that leaves is reported lost.
func TestBrokenAndGone(t *testing.T) {
	n, fsys := mi300x(t)
	dev, err := fsys.Resolve("/sys/class/drm/card2/device")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(n.Root, dev, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("gpu_busy_percent", "lots\n")
	write("pp_dpm_sclk", "0: 500Mhz\n")
	write("gpu_metrics", "\x68\x01\x01\x05garbage") // a 1.5 table cut short
	write("ras/umc_err_count", "ue: ?\n")
	b := amdgpu.New(fsys)
	samples, err := b.Sample(context.Background())
	if err == nil {
		t.Fatal("no error for a broken GPU")
	}
	s := samples[1]
	if !s.Up || s.Utilization != nil || s.MemoryUsedBytes == nil || s.Interconnect != nil || len(s.Errors) != 4 {
		t.Errorf("broken GPU: %+v", s)
	}
	for _, want := range []string{"gpu_busy_percent", "pp_dpm_sclk", "gpu_metrics 1.5: 11 bytes, want 360", "ras/umc_err_count"} {
		if !strings.Contains(strings.Join(s.Errors, "\n"), want) {
			t.Errorf("errors %q lack %s", s.Errors, want)
		}
	}
	if !samples[0].Up || len(samples[0].Errors) != 0 || samples[0].Interconnect == nil {
		t.Errorf("a healthy GPU suffers: %+v", samples[0])
	}
	if _, err := b.Inventory(context.Background()); err != nil {
		t.Errorf("inventory reads none of the broken files: %v", err)
	}

	// card2 falls off the bus.
	if err := os.Remove(filepath.Join(n.Root, "sys/class/drm/card2")); err != nil {
		t.Fatal(err)
	}
	samples, _ = b.Sample(context.Background())
	if len(samples) != 8 {
		t.Fatalf("%d samples after a GPU left", len(samples))
	}
	gone := samples[1]
	if gone.Up || !gone.Lost || gone.PCIBusID != s.PCIBusID || gone.UUID != s.UUID {
		t.Errorf("gone GPU: %+v", gone)
	}
}

// The simulated MI300X node in every partition mode: however many KFD
// nodes a GPU is split into, it has 304 compute units and 7 XGMI links,
// its partitions' amdgpu_xcp cards are not GPUs of their own, and the
// sampler reports the seven peer links of gpu_metrics.
func TestPartitionModes(t *testing.T) {
	for _, m := range [][2]string{{"SPX", "NPS1"}, {"DPX", "NPS1"}, {"QPX", "NPS1"}, {"QPX", "NPS4"}, {"CPX", "NPS1"}, {"CPX", "NPS4"}} {
		t.Run(m[0]+"-"+m[1], func(t *testing.T) {
			n, err := sim.Build("mi300x-roce", shmDir(t), sim.WithAMDPartition(m[0], m[1]))
			if err != nil {
				t.Fatal(err)
			}
			fsys, err := hostfs.New(n.Root)
			if err != nil {
				t.Fatal(err)
			}
			b := amdgpu.New(fsys)
			inv, err := b.Inventory(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(inv.Devices) != 8 {
				t.Fatalf("%d GPUs", len(inv.Devices))
			}
			for i, d := range inv.Devices {
				if d.ComputeUnits != 304 || d.Partition == nil || d.Partition.Compute != m[0] || d.Partition.Memory != m[1] {
					t.Errorf("gpu %d: %d compute units, partition %+v", i, d.ComputeUnits, d.Partition)
				}
				if ic := d.Interconnect; ic == nil || *ic != (gpu.Interconnect{Kind: gpu.XGMI, Links: 7, Active: 7}) {
					t.Errorf("gpu %d interconnect %+v", i, ic)
				}
			}
			samples, err := b.Sample(context.Background())
			if err != nil || len(samples) != 8 {
				t.Fatalf("%d samples: %v", len(samples), err)
			}
			for i, s := range samples {
				if ic := s.Interconnect; ic == nil || len(ic.Links) != 7 || ic.ActiveLinks() != 7 {
					t.Errorf("gpu %d sampled interconnect %+v", i, ic)
				}
			}
		})
	}
}

// A gpu_metrics revision we cannot decode (1.9, the kernel's list of
// self-describing attributes, here with two) costs only what gpu_metrics
// alone has on an MI300X (XGMI counters, energy): the rest is read from
// the plain sysfs attributes, the GPUs carry no errors, and the source is
// degraded, naming the revision. Before, every GPU carried the decoding
// error and the source reported an error.
func TestUnknownMetricsRevisionFallsBack(t *testing.T) {
	n, fsys := mi300x(t)
	v19 := []byte{0x18, 0x00, 1, 9, 2, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	for i := 1; i <= 8; i++ {
		dev, err := fsys.Resolve(fmt.Sprintf("/sys/class/drm/card%d/device", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.Root, dev, "gpu_metrics"), v19, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	samples, err := amdgpu.New(fsys).Sample(context.Background())
	st := source.StatusOf(source.AMDGPU+"-sample", err, 0)
	if st.State != source.Degraded || !strings.Contains(st.Message, "gpu_metrics 1.9 on 0000:15:00.0, ") ||
		!strings.Contains(st.Message, "gpu_busy_percent") || strings.Count(st.Message, "gpu_metrics 1.9") != 1 {
		t.Fatalf("status %+v", st)
	}
	if len(samples) != 8 {
		t.Fatalf("%d samples", len(samples))
	}
	for _, s := range samples {
		if !s.Up || len(s.Errors) != 0 || s.Utilization == nil || s.MemoryUsedBytes == nil || s.PowerWatts == nil ||
			len(s.Temperatures) != 2 || len(s.Clocks) != 2 || s.PCIe == nil || s.PCIe.ReplayErrors == nil || len(s.ECC) != 2 {
			t.Errorf("gpu %d: %+v", s.Index, s)
		}
		if s.Interconnect != nil {
			t.Errorf("gpu %d: XGMI counters without gpu_metrics: %+v", s.Index, s.Interconnect)
		}
	}
}

// On a node whose AMD SMI library is of a version we cannot read, the
// sysfs backend serves, and its samples say so: degraded, with the reason.
func TestInsteadOfAMDSMI(t *testing.T) {
	_, fsys := mi300x(t)
	why := "AMD SMI not usable: /opt/rocm/lib/libamd_smi.so: AMD SMI 27.0.0 is not a version whose structs we know"
	samples, err := amdgpu.New(fsys, amdgpu.WithInsteadOf(why)).Sample(context.Background())
	st := source.StatusOf(source.AMDGPU+"-sample", err, 0)
	if len(samples) != 8 || st.State != source.Degraded || !strings.Contains(st.Message, "amdgpu sysfs read instead of AMD SMI: "+why) {
		t.Fatalf("%d samples, %+v", len(samples), st)
	}
	if _, err := amdgpu.New(fsys).Sample(context.Background()); err != nil {
		t.Errorf("without AMD SMI: %v", err)
	}
}

// The MI355X node reports gpu_metrics 1.8: its readings come through, and
// each XGMI link's own state (1.7 on) decides whether it is up, here with
// link 2 of the first GPU reported down while the link width says the
// links are trained.
func TestSampleMI355X(t *testing.T) {
	n, err := sim.Build("mi355x-roce", shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := hostfs.New(n.Root)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := fsys.Resolve("/sys/class/drm/card1/device")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(n.Root, dev, "gpu_metrics")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	offsets, size, _ := amdgpu.Layout(1, 8)
	if raw[3] != 8 || len(raw) != size {
		t.Fatalf("gpu_metrics 1.%d, %d bytes", raw[3], len(raw))
	}
	raw[offsets["xgmi_link_status"]+2*2] = 0 // link 2 down
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	samples, err := amdgpu.New(fsys).Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := samples[0]
	if !s.Up || s.Product != "AMD Instinct MI355X" || *s.MemoryTotalBytes != 288<<30 || *s.PowerLimitWatts != 1400 ||
		s.EnergyMillijoules == nil || s.PCIe == nil || *s.PCIe.LinkGeneration != 5 || len(s.Clocks) != 2 || s.Clocks[0].Hertz != 2400e6 {
		t.Fatalf("%+v", s)
	}
	ic := s.Interconnect
	if ic == nil || len(ic.Links) != 7 || ic.ActiveLinks() != 6 || ic.Links[2].Up || !ic.Links[3].Up {
		t.Fatalf("interconnect %+v", ic)
	}
	if ic := samples[1].Interconnect; ic == nil || ic.ActiveLinks() != 7 {
		t.Errorf("gpu 1 interconnect %+v", ic)
	}
}
