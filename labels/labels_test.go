package labels

import (
	"flag"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/snapshot"
)

var update = flag.Bool("update", false, "rewrite the README label table and golden files")

// Kubernetes' label value rule (k8s.io/apimachinery validation).
var validValue = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)

func all() Options {
	return Options{Domain: "d.io", Sets: map[SetName]bool{GPUNode: true, LLMD: true, NVIDIA: true, AMD: true}}
}

func only(sets ...SetName) Options {
	o := Options{Domain: "d.io", Sets: map[SetName]bool{}}
	for _, s := range sets {
		o.Sets[s] = true
	}
	return o
}

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

// Product names as NVML and AMD SMI report them, and what GFD, llm-d and
// the AMD labeller make of them.
func TestProductFormats(t *testing.T) {
	for _, tc := range []struct{ product, model, gfd string }{
		{"NVIDIA H100 80GB HBM3", "H100", "NVIDIA-H100-80GB-HBM3"},
		{"NVIDIA H200", "H200", "NVIDIA-H200"},
		{"NVIDIA H100 NVL", "H100", "NVIDIA-H100-NVL"},
		{"NVIDIA B200", "B200", "NVIDIA-B200"},
		{"NVIDIA A100-SXM4-80GB", "A100", "NVIDIA-A100-SXM4-80GB"},
		{"NVIDIA GH200 480GB", "GH200", "NVIDIA-GH200-480GB"},
		{"NVIDIA L40S", "L40S", "NVIDIA-L40S"},
		{"Tesla T4", "T4", "Tesla-T4"},
		{"Tesla V100-SXM2-16GB", "V100", "Tesla-V100-SXM2-16GB"},
		{"NVIDIA RTX A6000", "A6000", "NVIDIA-RTX-A6000"},
		{"NVIDIA RTX 6000 Ada Generation", "RTX-6000-Ada-Generation", "NVIDIA-RTX-6000-Ada-Generation"},
		{"NVIDIA GeForce RTX 4090 (TM)", "GeForce-RTX-4090-(TM)", "NVIDIA-GeForce-RTX-4090-TM"},
		{"AMD Instinct MI300X", "MI300X", "AMD-Instinct-MI300X"},
		{"AMD Instinct MI325X", "MI325X", "AMD-Instinct-MI325X"},
		{"AMD Instinct MI350X", "MI350X", "AMD-Instinct-MI350X"},
		{"  NVIDIA   H100  ", "H100", "NVIDIA-H100"},
		{"", "", ""},
	} {
		if got := Model(tc.product); got != tc.model {
			t.Errorf("Model(%q) = %q, want %q", tc.product, got, tc.model)
		}
		if got := GFDProduct(tc.product); got != tc.gfd {
			t.Errorf("GFDProduct(%q) = %q, want %q", tc.product, got, tc.gfd)
		}
	}
}

func TestGFDFamily(t *testing.T) {
	for _, tc := range []struct {
		major, minor int
		want         string
	}{{7, 0, "volta"}, {7, 5, "turing"}, {8, 0, "ampere"}, {8, 6, "ampere"}, {8, 9, "ada-lovelace"},
		{9, 0, "hopper"}, {10, 0, "blackwell"}, {12, 0, "blackwell"}, {13, 0, "rubin"}, {11, 0, "undefined"}} {
		if got := GFDFamily(tc.major, tc.minor); got != tc.want {
			t.Errorf("GFDFamily(%d, %d) = %q, want %q", tc.major, tc.minor, got, tc.want)
		}
	}
}

func nvidiaSnap(gpuState, rdmaState source.State) *snapshot.Snapshot {
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
			{Name: "mlx5_0", VerbsDevicePresent: true, Ports: []rdma.Port{{State: "ACTIVE", Transport: rdma.InfiniBand, RateGbps: 400}}},
			{Name: "mlx5_1", Ports: []rdma.Port{{State: "ACTIVE", Transport: rdma.RoCE, RateGbps: 200}, {State: "DOWN", Transport: rdma.RoCE, RateGbps: 100}}},
		},
		GPUDirect: snapshot.GPUDirect{Possible: true},
		Sources: []source.Status{
			{Name: "nvml", State: gpuState}, {Name: "rdma", State: rdmaState}, {Name: "topology", State: source.OK},
		},
	}
}

func amdSnap() *snapshot.Snapshot {
	dev := func(i int, product, id string, mem uint64) snapshot.GPU {
		return snapshot.GPU{Device: gpu.Device{Index: i, Vendor: gpu.AMD, Product: product, Architecture: "cdna3",
			PCIDeviceID: id, MemoryBytes: mem, Interconnect: &gpu.Interconnect{Kind: "xgmi", Links: 7, Active: 7},
			ComputeUnits: 304, Partition: &gpu.Partition{Compute: "SPX", Memory: "NPS1"}}}
	}
	return &snapshot.Snapshot{
		GPUDriver: &snapshot.GPUDriver{Backend: "amdsmi", DriverVersion: "6.10.5", ROCmVersion: "6.4.1"},
		GPUs:      []snapshot.GPU{dev(0, "AMD Instinct MI300X", "0x74a1", 192<<30), dev(1, "AMD Instinct MI300X", "0x74a1", 192<<30)},
		RDMADevices: []rdma.Device{{Name: "rocep1", VerbsDevicePresent: true,
			Ports: []rdma.Port{{State: "ACTIVE", Transport: rdma.RoCE, RateGbps: 400}}}},
		Sources: []source.Status{{Name: "amdsmi", State: source.OK}, {Name: "rdma", State: source.OK}, {Name: "topology", State: source.OK}},
	}
}

func lines(s Set) string { return strings.Join(s.Lines(), "\n") }

func check(t *testing.T, got Set, want ...string) {
	t.Helper()
	if g, w := lines(got), strings.Join(want, "\n"); g != w {
		t.Errorf("got\n%s\nwant\n%s", g, w)
	}
}

func TestGPUNodeSet(t *testing.T) {
	got := For(nvidiaSnap(source.OK, source.OK), Options{Domain: "example.com", Sets: map[SetName]bool{GPUNode: true}})
	check(t, got,
		"example.com/gpu.compute=9.0", "example.com/gpu.count=2", "example.com/gpu.cuda=12.4", "example.com/gpu.driver=550.54.15",
		"example.com/gpu.family=hopper", "example.com/gpu.memory=81920", "example.com/gpu.mig-capable=true",
		"example.com/gpu.nvlink.active-links=16", "example.com/gpu.nvlink.generation=4", "example.com/gpu.present=true",
		"example.com/gpu.product=NVIDIA-H100-80GB-HBM3", "example.com/gpu.vendor=nvidia", "example.com/gpudirect-rdma=true",
		"example.com/numa.nodes=0", "example.com/rdma.devices=2", "example.com/rdma.link-layer=mixed", "example.com/rdma.present=true",
		"example.com/rdma.rate-gbps=200", "example.com/topology.gpu-nic-aligned=true")
}

// An MI300X node: family cdna3, memory in MiB, the XGMI links; no CUDA,
// compute capability or NVLink keys.
func TestGPUNodeSetAMD(t *testing.T) {
	got := For(amdSnap(), Options{Domain: "example.com", Sets: map[SetName]bool{GPUNode: true}})
	check(t, got,
		"example.com/gpu.count=2", "example.com/gpu.driver=6.10.5", "example.com/gpu.family=cdna3",
		"example.com/gpu.memory=196608", "example.com/gpu.mig-capable=false", "example.com/gpu.partition=spx_nps1", "example.com/gpu.present=true",
		"example.com/gpu.product=AMD-Instinct-MI300X", "example.com/gpu.vendor=amd", "example.com/gpu.xgmi.active-links=7",
		"example.com/gpudirect-rdma=false", "example.com/numa.nodes=0", "example.com/rdma.devices=1",
		"example.com/rdma.link-layer=roce", "example.com/rdma.present=true", "example.com/rdma.rate-gbps=400",
		"example.com/topology.gpu-nic-aligned=false")

	// The partition modes, when the GPU reports both.
	s0 := amdSnap()
	s0.GPUs[0].Partition = &gpu.Partition{Compute: "CPX", Memory: "NPS4"}
	if got := lines2(For(s0, Options{Domain: "example.com", Sets: map[SetName]bool{GPUNode: true}})); !slices.Contains(got, "example.com/gpu.partition=cpx_nps4") {
		t.Errorf("partition: %v", got)
	}

	// One GPU with a link down: the weakest GPU decides.
	s := amdSnap()
	s.GPUs[1].Interconnect.Active = 6
	if got := For(s, Options{Domain: "example.com", Sets: map[SetName]bool{GPUNode: true}}); !slices.Contains(lines2(got), "example.com/gpu.xgmi.active-links=6") {
		t.Errorf("one link down: %v", got)
	}
}

func lines2(s Set) []string { return strings.Split(lines(s), "\n") }

func TestLLMDSetNVIDIA(t *testing.T) {
	check(t, For(nvidiaSnap(source.OK, source.OK), only(LLMD)),
		"hardware.llm-d.ai/gpu-type=h100", "hardware.llm-d.ai/rdma=enabled", "llm-d.ai/gpu-node=true",
		"node.llm-d.ai/nvlink-generation=4", "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3")

	// No NVLink up on some GPU: no generation. No verbs device: no rdma.
	s := nvidiaSnap(source.OK, source.OK)
	s.GPUs[1].Interconnect.Active = 0
	s.RDMADevices[0].VerbsDevicePresent = false
	check(t, For(s, only(LLMD)), "hardware.llm-d.ai/gpu-type=h100", "llm-d.ai/gpu-node=true", "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3")
}

func TestLLMDSetAMD(t *testing.T) {
	check(t, For(amdSnap(), only(LLMD)),
		"amd.com/gpu.product=MI300X", "hardware.llm-d.ai/gpu-type=mi300x", "hardware.llm-d.ai/rdma=enabled",
		"llm-d.ai/gpu-node=true", "node.llm-d.ai/rocm-version=6.4")
}

func TestNVIDIASet(t *testing.T) {
	check(t, For(nvidiaSnap(source.OK, source.OK), only(NVIDIA)),
		"nvidia.com/cuda.driver-version.full=550.54.15", "nvidia.com/cuda.driver-version.major=550",
		"nvidia.com/cuda.driver-version.minor=54", "nvidia.com/cuda.driver-version.revision=15",
		"nvidia.com/cuda.runtime-version.full=12.4", "nvidia.com/cuda.runtime-version.major=12", "nvidia.com/cuda.runtime-version.minor=4",
		"nvidia.com/gpu.compute.major=9", "nvidia.com/gpu.compute.minor=0", "nvidia.com/gpu.count=2", "nvidia.com/gpu.family=hopper",
		"nvidia.com/gpu.machine=unknown", "nvidia.com/gpu.memory=81920", "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3", "nvidia.com/mig.capable=true")

	// The DMI product name, in GFD's format (parentheses dropped, spaces as -).
	m := nvidiaSnap(source.OK, source.OK)
	m.Host.Machine = "ProLiant XD685 (Gen11)"
	if got := For(m, only(NVIDIA))["nvidia.com/gpu.machine"]; got != "ProLiant-XD685-Gen11" {
		t.Errorf("gpu.machine = %q", got)
	}

	// A two-part driver version has no revision; a garbled one no version labels.
	s := nvidiaSnap(source.OK, source.OK)
	s.GPUDriver.DriverVersion, s.GPUDriver.CUDAVersion = "535.86", "garbage"
	got := For(s, only(NVIDIA))
	if got["nvidia.com/cuda.driver-version.major"] != "535" || got["nvidia.com/cuda.driver-version.minor"] != "86" {
		t.Errorf("two-part driver: %v", got)
	}
	for _, k := range []string{"nvidia.com/cuda.driver-version.revision", "nvidia.com/cuda.runtime-version.full"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s written from %q", k, got[k])
		}
	}
	s.GPUDriver.DriverVersion = "1.2.3.4"
	if _, ok := For(s, only(NVIDIA))["nvidia.com/cuda.driver-version.full"]; ok {
		t.Error("four-part driver version labelled; GFD rejects it")
	}
	// An AMD node gets no nvidia.com labels.
	if got := For(amdSnap(), only(NVIDIA)); len(got) != 0 {
		t.Errorf("nvidia set on an AMD node: %v", got)
	}
}

func TestAMDSet(t *testing.T) {
	check(t, For(amdSnap(), only(AMD)),
		"amd.com/gpu.cu-count=304", "amd.com/gpu.device-id=74a1", "amd.com/gpu.driver-version=6.10.5", "amd.com/gpu.family=AI",
		"amd.com/gpu.product-name=AMD_Instinct_MI300X", "amd.com/gpu.vram=192G")

	// Compute units, when known.
	cu := amdSnap()
	cu.GPUs[0].ComputeUnits, cu.GPUs[1].ComputeUnits = 304, 304
	if got := lines2(For(cu, only(AMD))); !slices.Contains(got, "amd.com/gpu.cu-count=304") {
		t.Errorf("cu-count: %v", got)
	}
	cu.GPUs[1].ComputeUnits = 228
	if got := lines2(For(cu, only(AMD))); !slices.Contains(got, "amd.com/gpu.cu-count.228=1") || !slices.Contains(got, "amd.com/gpu.cu-count.304=1") {
		t.Errorf("cu-count differing: %v", got)
	}

	// GPUs that disagree get counter keys, as the AMD labeller writes them.
	s := amdSnap()
	s.GPUs[1].Product, s.GPUs[1].PCIDeviceID, s.GPUs[1].MemoryBytes = "AMD Instinct MI325X (OAM)", "0x74a5", 256<<30
	check(t, For(s, only(AMD)),
		"amd.com/gpu.cu-count=304", "amd.com/gpu.device-id.74a1=1", "amd.com/gpu.device-id.74a5=1", "amd.com/gpu.driver-version=6.10.5",
		"amd.com/gpu.family=AI", "amd.com/gpu.product-name.AMD_Instinct_MI300X=1", "amd.com/gpu.product-name.AMD_Instinct_MI325X_OAM=1",
		"amd.com/gpu.vram.192G=1", "amd.com/gpu.vram.256G=1")

	if got := For(nvidiaSnap(source.OK, source.OK), only(AMD)); len(got) != 0 {
		t.Errorf("amd set on an NVIDIA node: %v", got)
	}
}

func TestSetsSwitch(t *testing.T) {
	s := nvidiaSnap(source.OK, source.OK)
	if got := For(s, Options{Domain: "d.io"}); len(got) != 0 {
		t.Errorf("no sets on, yet labels: %v", got)
	}
	got := For(s, Options{Domain: "d.io", Sets: DefaultSets()})
	for k := range got {
		if strings.HasPrefix(k, "nvidia.com/") && k != "nvidia.com/gpu.product" {
			t.Errorf("default sets write GFD key %s", k)
		}
	}
	if got["llm-d.ai/gpu-node"] != "true" || got["d.io/gpu.count"] != "2" {
		t.Errorf("default sets lack gpunode or llm-d: %v", got)
	}
}

func TestLeavesOutFailedSources(t *testing.T) {
	got := For(nvidiaSnap(source.Error, source.OK), all())
	for k := range got {
		if d := Lookup(k, "d.io"); slices.Contains(d.Sources, SourceGPU) {
			t.Errorf("label %s depends on the failed GPU source", k)
		}
	}
	got = For(nvidiaSnap(source.OK, source.Error), all())
	for k := range got {
		if d := Lookup(k, "d.io"); slices.Contains(d.Sources, SourceRDMA) {
			t.Errorf("label %s depends on the failed RDMA source", k)
		}
	}
	if got["d.io/gpu.count"] != "2" {
		t.Errorf("GPU labels lost with RDMA failing: %v", got)
	}
}

func TestHold(t *testing.T) {
	o := all()
	good := For(nvidiaSnap(source.OK, source.OK), o)
	bad := nvidiaSnap(source.Error, source.OK)
	held := Hold(For(bad, o), good, Failed(bad), o)
	if !held.Equal(good) {
		t.Errorf("GPU source failing: labels not held\n%s\nwant\n%s", lines(held), lines(good))
	}
	// An absent source removes its labels.
	absent := nvidiaSnap(source.Absent, source.OK)
	absent.GPUs, absent.GPUDriver = nil, nil
	now := Hold(For(absent, o), good, Failed(absent), o)
	if now["d.io/gpu.present"] != "false" || now["d.io/gpu.product"] != "" || now["nvidia.com/gpu.product"] != "" {
		t.Errorf("GPU source absent: %s", lines(now))
	}
	// A set switched off is not held, nor are foreign or other-domain keys.
	prev := Set{"nvidia.com/gpu.count": "2", "other.io/x": "y", "old.io/gpu.count": "8"}
	if got := Hold(Set{}, prev, []Source{SourceGPU}, only(GPUNode)); len(got) != 0 {
		t.Errorf("held %v", got)
	}
}

func TestSourceStates(t *testing.T) {
	s := &snapshot.Snapshot{Sources: []source.Status{{Name: "nvml", State: source.Absent}, {Name: "amdgpu", State: source.Error}}}
	if got := Failed(s); !slices.Equal(got, []Source{SourceGPU}) {
		t.Errorf("a failing AMD backend beside an absent NVML: failed = %v", got)
	}
	s.Sources[1].State = source.Absent
	if got := Failed(s); len(got) != 0 {
		t.Errorf("all absent: failed = %v", got)
	}
	// No GPU backend ran at all (switched off): no GPU labels, none held.
	s = &snapshot.Snapshot{Sources: []source.Status{{Name: "rdma", State: source.Absent}, {Name: "topology", State: source.OK}}}
	got := For(s, all())
	check(t, got, "d.io/numa.nodes=0", "d.io/rdma.devices=0", "d.io/rdma.present=false")
	if len(Failed(s)) != 0 {
		t.Errorf("failed = %v", Failed(s))
	}
}

func TestAlignment(t *testing.T) {
	s := nvidiaSnap(source.OK, source.OK)
	s.GPUs[1].Affinity[0].SameNUMA = false
	if v := For(s, all())["d.io/topology.gpu-nic-aligned"]; v != "false" {
		t.Errorf("a GPU without a local RDMA port: aligned=%q", v)
	}
}

func TestAbsent(t *testing.T) {
	s := &snapshot.Snapshot{Sources: []source.Status{
		{Name: "nvml", State: source.Absent}, {Name: "rdma", State: source.Absent}, {Name: "topology", State: source.OK},
	}}
	check(t, For(s, all()), "d.io/gpu.count=0", "d.io/gpu.present=false", "d.io/numa.nodes=0", "d.io/rdma.devices=0", "d.io/rdma.present=false")
}

// Every key written on every snapshot the tests know has a Def, a valid
// value, and a key Kubernetes accepts; every Def is written by some snapshot.
func TestEveryKeyDocumented(t *testing.T) {
	written := map[*Def]bool{}
	mixed := amdSnap()
	mixed.GPUs[1].Product, mixed.GPUs[1].PCIDeviceID, mixed.GPUs[1].MemoryBytes, mixed.GPUs[1].Architecture = "AMD Instinct MI325X", "0x74a5", 256<<30, "cdna4-x"
	mixed.GPUs[0].Architecture = "cdna3"
	mixed.GPUs[1].ComputeUnits = 228
	mixed.GPUs = append(mixed.GPUs, mixed.GPUs[0])
	mixed.GPUs[2].Architecture = "cdna4"
	nvl := nvidiaSnap(source.OK, source.OK) // a multi-node NVLink tray
	for i := range nvl.GPUs {
		nvl.GPUs[i].Fabric = &gpu.Fabric{State: gpu.FabricCompleted, Status: "success", Clique: "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.32766"}
	}
	for _, s := range []*snapshot.Snapshot{nvidiaSnap(source.OK, source.OK), amdSnap(), mixed, nvl} {
		verified := false
		for k, v := range Compute(Inputs{Snapshot: s, Tuning: &Tuning{Profile: "llm-inference", State: "compliant"}, Verified: &verified, RDMAProbe: &RDMAProbe{Verified: true}}, all()) {
			d := Lookup(k, "d.io")
			if d == nil {
				t.Errorf("label %s has no Def", k)
				continue
			}
			written[d] = true
			if !validValue.MatchString(v) || len(v) > 63 {
				t.Errorf("%s=%q: invalid value", k, v)
			}
			if !validKey(k) {
				t.Errorf("%s: invalid key", k)
			}
		}
	}
	for _, d := range Defs {
		if !written[d] {
			t.Errorf("Def %s is never written by the test snapshots", d.Key)
		}
		if !validValue.MatchString(d.Example) {
			t.Errorf("Def %s: example %q is not a valid value", d.Key, d.Example)
		}
	}
}

// validKey follows k8s.io/apimachinery's qualified name rule.
func validKey(k string) bool {
	prefix, name, ok := strings.Cut(k, "/")
	if !ok {
		name, prefix = prefix, ""
	}
	dns := regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	return (prefix == "" || len(prefix) <= 253 && dns.MatchString(prefix)) && len(name) <= 63 && validValue.MatchString(name) && name != ""
}

func TestLookupAndShared(t *testing.T) {
	for key, shared := range map[string]bool{
		"d.io/gpu.count": false, "llm-d.ai/gpu-node": false, "nvidia.com/gpu.product": true,
		"amd.com/gpu.vram.192G": true, "amd.com/gpu.vram": true,
	} {
		if !Owned(key, "d.io") || SharedKey(key, "d.io") != shared {
			t.Errorf("%s: owned=%v shared=%v", key, Owned(key, "d.io"), SharedKey(key, "d.io"))
		}
	}
	for _, key := range []string{"other.io/gpu.count", "nvidia.com/gpu.replicas", "amd.com/gpu.vram.", "amd.com/gpu.family.AI", "kubernetes.io/hostname", "d.io/gpu"} {
		if Owned(key, "d.io") {
			t.Errorf("%s is not ours", key)
		}
	}
}

// The README's label table is the output of Table; go test -update rewrites it.
func TestREADMETable(t *testing.T) {
	const path = "../README.md"
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ReplaceTable(string(doc), Table("gpunode.dev"))
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if want != string(doc) {
		t.Errorf("README.md's label table differs from the code; run go test ./labels -update and review the diff")
	}
}

// The verified label is the daemon's: written when it hands a verdict in,
// absent otherwise (inspect), and not held when sources fail.
func TestVerifiedLabel(t *testing.T) {
	s := nvidiaSnap(source.OK, source.OK)
	if v, ok := Compute(Inputs{Snapshot: s, Verified: new(true)}, all())["d.io/verified"]; !ok || v != "true" {
		t.Errorf("verified = %q, %v", v, ok)
	}
	if _, ok := For(s, all())["d.io/verified"]; ok {
		t.Error("verified written without a verdict")
	}
	failing := nvidiaSnap(source.Error, source.OK)
	next := Hold(Compute(Inputs{Snapshot: failing, Verified: new(false)}, all()), Set{"d.io/verified": "true"}, Failed(failing), all())
	if next["d.io/verified"] != "false" {
		t.Errorf("verified held at %q while a source fails", next["d.io/verified"])
	}
}

// TestClique labels a GB200 tray's multi-node NVLink clique under both
// keys when every GPU registered into the same clique, and gives the
// reason when not.
func TestClique(t *testing.T) {
	const c = "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.32766"
	tray := func(fabrics ...*gpu.Fabric) *snapshot.Snapshot {
		s := nvidiaSnap(source.OK, source.OK)
		s.GPUs = s.GPUs[:0]
		for i, f := range fabrics {
			s.GPUs = append(s.GPUs, snapshot.GPU{Device: gpu.Device{Index: i, Vendor: gpu.NVIDIA, Product: "NVIDIA GB200", Fabric: f}})
		}
		return s
	}
	done := func(clique string) *gpu.Fabric {
		return &gpu.Fabric{State: gpu.FabricCompleted, Status: "success", Clique: clique}
	}
	both := Options{Domain: "example.com", Sets: map[SetName]bool{GPUNode: true, NVIDIA: true}}
	got := For(tray(done(c), done(c), done(c), done(c)), both)
	if got["example.com/gpu.clique"] != c || got["nvidia.com/gpu.clique"] != c {
		t.Errorf("agreeing tray: %v", got)
	}
	for _, tc := range []struct {
		name    string
		fabrics []*gpu.Fabric
		reason  string
	}{
		{"in progress", []*gpu.Fabric{done(c), {State: gpu.FabricInProgress}}, "GPU 1 fabric registration in-progress"},
		{"not started", []*gpu.Fabric{{State: gpu.FabricNotStarted}, done(c)}, "GPU 0 fabric registration not-started"},
		{"failed", []*gpu.Fabric{done(c), {State: gpu.FabricCompleted, Status: "ERROR_INSUFFICIENT_RESOURCES"}}, "GPU 1 fabric registration failed: ERROR_INSUFFICIENT_RESOURCES"},
		{"HGX", []*gpu.Fabric{done(""), done("")}, "GPU 0 is in no multi-node NVLink domain (zero cluster UUID)"},
		{"no fabric", []*gpu.Fabric{nil}, "GPU 0 reports no NVLink fabric"},
		{"split", []*gpu.Fabric{done(c), done("9f2b0c41-7e15-4a3d-8b6e-0123456789ab.5")},
			"GPUs are in different cliques: 9f2b0c41-7e15-4a3d-8b6e-0123456789ab.32766, 9f2b0c41-7e15-4a3d-8b6e-0123456789ab.5"},
	} {
		s := tray(tc.fabrics...)
		got := For(s, both)
		for _, k := range []string{"example.com/gpu.clique", "nvidia.com/gpu.clique"} {
			if v, ok := got[k]; ok {
				t.Errorf("%s: %s=%s", tc.name, k, v)
			}
		}
		if clique, reason := Clique(s.GPUs); clique != "" || reason != tc.reason {
			t.Errorf("%s: Clique = %q, %q; want reason %q", tc.name, clique, reason, tc.reason)
		}
	}
}
