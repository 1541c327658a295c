package labels

import (
	"regexp"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/agent/snapshot"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/rdma"
)

// Kubernetes' label value rule (k8s.io/apimachinery validation).
var validValue = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)

func TestValue(t *testing.T) {
	for in, want := range map[string]string{
		"NVIDIA H100 80GB HBM3":        "NVIDIA-H100-80GB-HBM3",
		"AMD Instinct MI300X":          "AMD-Instinct-MI300X",
		"  spaced  ":                   "spaced",
		"a/b:c":                        "a-b-c",
		"-x-":                          "x",
		"ünïcode":                      "n-code",
		"":                             "",
		"...":                          "",
		strings.Repeat("a", 70):        strings.Repeat("a", 63),
		strings.Repeat("a", 62) + "-b": strings.Repeat("a", 62),
	} {
		if got := Value(in); got != want {
			t.Errorf("Value(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzValue(f *testing.F) {
	for _, s := range []string{"NVIDIA H100 80GB HBM3", "", "-", "\xff", strings.Repeat("x.", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := Value(s)
		if len(v) > 63 || !validValue.MatchString(v) {
			t.Fatalf("Value(%q) = %q is not a valid label value", s, v)
		}
	})
}

func snap(gpuState, rdmaState source.State) *snapshot.Snapshot {
	link := func(active int) *gpu.Interconnect {
		return &gpu.Interconnect{Kind: "nvlink", Links: 18, Active: active, Generation: 4}
	}
	dev := func(i, numa, active int) snapshot.GPU {
		return snapshot.GPU{
			Device: gpu.Device{Index: i, Vendor: gpu.NVIDIA, Product: "NVIDIA H100 80GB HBM3", Architecture: "hopper",
				ComputeMajor: 9, MemoryBytes: 80 << 30, NUMANode: numa, Interconnect: link(active), MIG: gpu.MIG{Capable: true}},
			Affinity: []snapshot.Affinity{{RDMADevice: "mlx5_0", SameNUMA: numa == 0, Active: true}},
		}
	}
	return &snapshot.Snapshot{
		GPUDriver: &snapshot.GPUDriver{Backend: "nvml", DriverVersion: "550.54.15", CUDAVersion: "12.4"},
		GPUs:      []snapshot.GPU{dev(0, 0, 18), dev(1, 0, 16)},
		RDMADevices: []rdma.Device{
			{Name: "mlx5_0", Ports: []rdma.Port{{State: "ACTIVE", Transport: rdma.InfiniBand, RateGbps: 400}}},
			{Name: "mlx5_1", Ports: []rdma.Port{{State: "ACTIVE", Transport: rdma.RoCE, RateGbps: 200}, {State: "DOWN", Transport: rdma.RoCE, RateGbps: 100}}},
		},
		GPUDirect: snapshot.GPUDirect{Possible: true},
		Sources: []source.Status{
			{Name: "nvml", State: gpuState}, {Name: "rdma", State: rdmaState}, {Name: "topology", State: source.OK},
		},
	}
}

func TestFor(t *testing.T) {
	got := For(snap(source.OK, source.OK), Options{Domain: "example.com"})
	want := Set{
		"example.com/gpu.present": "true", "example.com/gpu.count": "2", "example.com/gpu.vendor": "nvidia",
		"example.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "example.com/gpu.family": "hopper",
		"example.com/gpu.memory": "81920", "example.com/gpu.compute": "9.0", "example.com/gpu.mig-capable": "true",
		"example.com/gpu.driver": "550.54.15", "example.com/gpu.cuda": "12.4",
		"example.com/gpu.nvlink.active-links": "16", "example.com/gpu.nvlink.generation": "4",
		"example.com/rdma.present": "true", "example.com/rdma.devices": "2", "example.com/rdma.link-layer": "mixed",
		"example.com/rdma.rate-gbps": "200", "example.com/numa.nodes": "0",
		"example.com/topology.gpu-nic-aligned": "true", "example.com/gpudirect-rdma": "true",
	}
	if strings.Join(got.Lines(), "\n") != strings.Join(want.Lines(), "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got.Lines(), "\n"), strings.Join(want.Lines(), "\n"))
	}
}

func TestForLeavesOutFailedSources(t *testing.T) {
	got := For(snap(source.Error, source.OK), Options{Domain: "d.io"})
	for k := range got {
		if strings.HasPrefix(k, "d.io/gpu.") {
			t.Errorf("GPU label %s from a failed source", k)
		}
	}
	got = For(snap(source.OK, source.Error), Options{Domain: "d.io"})
	for k := range got {
		if strings.HasPrefix(k, "d.io/rdma.") || k == "d.io/topology.gpu-nic-aligned" {
			t.Errorf("RDMA label %s from a failed source", k)
		}
	}
}

func TestForAlignment(t *testing.T) {
	s := snap(source.OK, source.OK)
	s.GPUs[1].Affinity[0].SameNUMA = false
	if v := For(s, Options{Domain: "d"})["d/topology.gpu-nic-aligned"]; v != "false" {
		t.Errorf("a GPU without a local RDMA port: aligned=%q", v)
	}
}

func TestForAbsent(t *testing.T) {
	s := &snapshot.Snapshot{Sources: []source.Status{
		{Name: "nvml", State: source.Absent}, {Name: "rdma", State: source.Absent}, {Name: "topology", State: source.OK},
	}}
	got := strings.Join(For(s, Options{Domain: "d"}).Lines(), " ")
	if got != "d/gpu.count=0 d/gpu.present=false d/numa.nodes=0 d/rdma.devices=0 d/rdma.present=false" {
		t.Errorf("CPU-only labels: %s", got)
	}
}
