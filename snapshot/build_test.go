package snapshot

import (
	"slices"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/topology"
)

func TestKernelVersion(t *testing.T) {
	for in, want := range map[string][2]int{
		"6.8.0-49-generic": {6, 8}, "5.12": {5, 12}, "4.18.0-553.el8_10.x86_64": {4, 18}, "6.18.44-fc-v595": {6, 18}, "6.1rc1": {6, 1},
	} {
		major, minor, ok := KernelVersion(in)
		if !ok || major != want[0] || minor != want[1] {
			t.Errorf("KernelVersion(%q) = %d.%d %v", in, major, minor, ok)
		}
	}
	for _, in := range []string{"", "6", "x.y", "-1.2", "6.", ".8", "99999999999999999999.1"} {
		if _, _, ok := KernelVersion(in); ok {
			t.Errorf("KernelVersion(%q) accepted", in)
		}
	}
}

func FuzzKernelVersion(f *testing.F) {
	for _, s := range []string{"6.8.0-49-generic", "5.12", "", "1.2.3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if major, minor, ok := KernelVersion(s); ok && (major < 0 || minor < 0) {
			t.Fatalf("negative version from %q", s)
		}
	})
}

// node is a two-NUMA-node machine: GPU 0 and mlx5_0 under one switch on
// node 0, GPU 1 on node 1, and a soft-RoCE device whose NUMA node comes
// from its netdev.
func node() Inputs {
	pci := func(addr string, numa int, path ...string) topology.PCIDevice {
		return topology.PCIDevice{Address: addr, NUMANode: numa, Path: append(path, addr)}
	}
	port := func(state string) []rdma.Port {
		return []rdma.Port{{Number: 1, State: state, Transport: rdma.RoCE}}
	}
	return Inputs{
		Topology: topology.Topology{
			Kernel:  "6.8.0-49-generic",
			Modules: []string{"mlx5_ib", "nvidia"},
			PCIDevices: []topology.PCIDevice{
				pci("0000:1b:00.0", 0, "pci0000:15", "0000:15:01.0", "0000:16:00.0", "0000:17:03.0"),
				pci("0000:18:00.0", 0, "pci0000:15", "0000:15:01.0", "0000:16:00.0", "0000:17:00.0"),
				pci("0000:9d:00.0", 1, "pci0000:97", "0000:97:01.0"),
			},
		},
		GPU: &gpu.Inventory{Backend: "nvml", Devices: []gpu.Device{
			{Index: 0, PCIBusID: "0000:1b:00.0", NUMANode: -1},
			{Index: 1, PCIBusID: "0000:9d:00.0", NUMANode: 3}, // NVML's own node number
		}},
		RDMA: []rdma.Device{
			{Name: "mlx5_0", PCIAddress: "0000:18:00.0", NUMANode: 0, VerbsDevicePresent: true, Ports: port("ACTIVE")},
			{Name: "rxe0", NUMANode: 1, Ports: port("DOWN")},
		},
	}
}

func TestBuildPlacesGPUs(t *testing.T) {
	s := Build(node())
	g0, g1 := s.GPUs[0], s.GPUs[1]
	if g0.NUMANode != 0 || g1.NUMANode != 1 {
		t.Errorf("NUMA nodes = %d, %d; want sysfs's 0, 1", g0.NUMANode, g1.NUMANode)
	}
	if len(g0.PCIePath) != 5 {
		t.Errorf("GPU 0 PCIe path = %v", g0.PCIePath)
	}
	want0 := []Affinity{
		{RDMADevice: "mlx5_0", Relation: "PIX", SameNUMA: true, Active: true},
		{RDMADevice: "rxe0", Relation: "SYS"},
	}
	if !slices.Equal(g0.Affinity, want0) {
		t.Errorf("GPU 0 affinity = %+v, want %+v", g0.Affinity, want0)
	}
	want1 := []Affinity{
		{RDMADevice: "rxe0", Relation: "NODE", SameNUMA: true},
		{RDMADevice: "mlx5_0", Relation: "SYS", Active: true},
	}
	if !slices.Equal(g1.Affinity, want1) {
		t.Errorf("GPU 1 affinity = %+v, want %+v", g1.Affinity, want1)
	}
	if !slices.Equal(g0.RDMASameNUMA, []string{"mlx5_0"}) || !slices.Equal(g0.RDMASamePCIeRoot, []string{"mlx5_0"}) {
		t.Errorf("GPU 0 same NUMA %v, same root %v", g0.RDMASameNUMA, g0.RDMASamePCIeRoot)
	}
	if !slices.Equal(g1.RDMASameNUMA, []string{"rxe0"}) || len(g1.RDMASamePCIeRoot) != 0 {
		t.Errorf("GPU 1 same NUMA %v, same root %v", g1.RDMASameNUMA, g1.RDMASamePCIeRoot)
	}
}

func TestBuildDoesNotModifyInputs(t *testing.T) {
	in := node()
	Build(in)
	if in.GPU.Devices[0].NUMANode != -1 || in.GPU.Devices[1].NUMANode != 3 {
		t.Fatal("Build changed its inputs")
	}
}

func TestGPUDirect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mod     func(*Inputs)
		ok      bool
		methods []string
		reason  string
	}{
		{"no peer memory", func(*Inputs) {}, false, nil, "load nvidia_peermem"},
		{"peermem", func(in *Inputs) { in.Topology.Modules = append(in.Topology.Modules, "nvidia_peermem") }, true, []string{"nvidia_peermem"}, "nvidia_peermem is loaded"},
		{"legacy nv_peer_mem", func(in *Inputs) { in.Topology.Modules = append(in.Topology.Modules, "nv_peer_mem") }, true, []string{"nv_peer_mem"}, ""},
		{"open module, new kernel", func(in *Inputs) {
			in.Topology.NVIDIAKernelModule = &topology.NVIDIAKernelModule{Version: "570.1", Open: true}
		}, true, []string{"dma-buf"}, "Linux 6.8 supports dma-buf"},
		{"open module, kernel 5.11", func(in *Inputs) {
			in.Topology.Kernel = "5.11.0"
			in.Topology.NVIDIAKernelModule = &topology.NVIDIAKernelModule{Open: true}
		}, false, nil, ""},
		{"proprietary module", func(in *Inputs) {
			in.Topology.NVIDIAKernelModule = &topology.NVIDIAKernelModule{Open: false}
		}, false, nil, ""},
		{"no verbs device", func(in *Inputs) {
			in.Topology.Modules = append(in.Topology.Modules, "nvidia_peermem")
			in.RDMA[0].VerbsDevicePresent = false
		}, false, nil, "no RDMA device with a verbs interface"},
		{"no GPUs", func(in *Inputs) { in.GPU = nil }, false, nil, "no GPUs"},
	} {
		in := node()
		tc.mod(&in)
		g := Build(in).GPUDirect
		if g.Possible != tc.ok || !slices.Equal(g.Methods, tc.methods) || !strings.Contains(g.Reason, tc.reason) || g.Reason == "" {
			t.Errorf("%s: got %+v", tc.name, g)
		}
	}
}
