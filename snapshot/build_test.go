package snapshot

import (
	"slices"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
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

// A GPU backend that is absent while the PCI bus shows GPUs bound to its
// vendor's driver is an error naming the GPUs, the cause and the fix:
// such a node must never pass for one without GPUs.
func TestBuildGPUsWithoutBackend(t *testing.T) {
	gpuDev := func(addr, vendor, class, driver string) topology.PCIDevice {
		return topology.PCIDevice{Address: addr, Kind: topology.KindGPU, Vendor: vendor, Class: class, Driver: driver, NUMANode: -1}
	}
	nvidia := func(addr, driver string) topology.PCIDevice {
		return gpuDev(addr, topology.PCIVendorNVIDIA, "0x030200", driver)
	}
	amd := func(addr, driver string) topology.PCIDevice {
		return gpuDev(addr, topology.PCIVendorAMD, "0x120000", driver) // MI300X: processing accelerator
	}
	nvswitch := topology.PCIDevice{Address: "0000:07:00.0", Kind: topology.KindNVSwitch, Vendor: topology.PCIVendorNVIDIA, Driver: "nvidia-nvswitch"}
	absent := func(name, why string) source.Status {
		return source.Status{Name: name, State: source.Absent, Message: why}
	}
	ok := func(name string) source.Status { return source.Status{Name: name, State: source.OK} }
	for _, tc := range []struct {
		name    string
		pci     []topology.PCIDevice
		sources []source.Status
		// want: source -> state, and words its message must hold
		want     map[string][]string
		vendors  []gpu.Vendor
		notFound string // what the per-GPU checks and GPUDirect say instead of "no GPUs"
	}{
		{
			name: "NVIDIA without NVML",
			pci:  []topology.PCIDevice{nvidia("0000:1b:00.0", "nvidia"), nvidia("0000:43:00.0", "nvidia"), nvswitch},
			sources: []source.Status{absent(source.NVML, "NVIDIA driver library libnvidia-ml.so.1 not found"),
				absent(source.AMDGPU, "amdgpu kernel driver is not loaded"), ok(source.Topology)},
			want: map[string][]string{
				source.NVML: {"error", "2 NVIDIA GPUs on PCI (bound to nvidia) but NVML is not available: NVIDIA driver library libnvidia-ml.so.1 not found; ",
					"NVIDIA container runtime", "gpu.nvml.libraryPath"},
				source.AMDGPU: {"absent", "amdgpu kernel driver is not loaded"},
			},
			vendors:  []gpu.Vendor{gpu.NVIDIA},
			notFound: "2 NVIDIA GPUs on PCI not inventoried: nvml failed",
		},
		{
			name: "AMD with neither AMD SMI nor amdgpu sysfs",
			pci:  []topology.PCIDevice{amd("0000:05:00.0", "amdgpu")},
			sources: []source.Status{absent(source.NVML, "NVIDIA management library not available"),
				absent(source.AMDGPU, "no /sys/class/drm"), ok(source.Topology)},
			want: map[string][]string{
				source.AMDGPU: {"error", "1 AMD GPU on PCI (bound to amdgpu) but neither AMD SMI nor amdgpu sysfs can read them: no /sys/class/drm; ",
					"/sys", "gpu.amd.libraryPath"},
				source.NVML: {"absent", "NVIDIA management library not available"},
			},
			vendors:  []gpu.Vendor{gpu.AMD},
			notFound: "1 AMD GPU on PCI not inventoried: amdgpu failed",
		},
		{
			name:    "AMD SMI absent too",
			pci:     []topology.PCIDevice{amd("0000:05:00.0", "amdgpu"), amd("0000:15:00.0", "amdgpu")},
			sources: []source.Status{absent(source.AMDSMI, "AMD SMI is closed"), absent(source.AMDGPU, "no /sys/class/drm")},
			want: map[string][]string{
				source.AMDSMI: {"error", "2 AMD GPUs on PCI", "AMD SMI is closed"},
				source.AMDGPU: {"error", "2 AMD GPUs on PCI", "no /sys/class/drm"},
			},
			vendors:  []gpu.Vendor{gpu.AMD},
			notFound: "2 AMD GPUs on PCI not inventoried: amdgpu, amdsmi failed",
		},
		{
			name:    "one AMD backend works",
			pci:     []topology.PCIDevice{amd("0000:05:00.0", "amdgpu")},
			sources: []source.Status{absent(source.AMDSMI, "AMD SMI is closed"), ok(source.AMDGPU)},
			want:    map[string][]string{source.AMDSMI: {"absent"}, source.AMDGPU: {"ok"}},
		},
		{
			name:    "NVML works",
			pci:     []topology.PCIDevice{nvidia("0000:1b:00.0", "nvidia")},
			sources: []source.Status{ok(source.NVML)},
			want:    map[string][]string{source.NVML: {"ok"}},
		},
		{
			name:    "NVML switched off",
			pci:     []topology.PCIDevice{nvidia("0000:1b:00.0", "nvidia")},
			sources: []source.Status{absent(source.AMDGPU, "amdgpu kernel driver is not loaded")},
			want:    map[string][]string{source.AMDGPU: {"absent"}},
		},
		{
			name: "GPUs bound to another driver or none",
			pci: []topology.PCIDevice{nvidia("0000:1b:00.0", "vfio-pci"), nvidia("0000:43:00.0", "nouveau"), nvidia("0000:52:00.0", ""),
				amd("0000:05:00.0", "vfio-pci"), nvswitch},
			sources: []source.Status{absent(source.NVML, "NVIDIA driver library libnvidia-ml.so.1 not found"), absent(source.AMDGPU, "no amdgpu cards under /sys/class/drm")},
			want:    map[string][]string{source.NVML: {"absent"}, source.AMDGPU: {"absent"}},
		},
		{
			name:    "CPU-only",
			sources: []source.Status{absent(source.NVML, "NVIDIA management library not available")},
			want:    map[string][]string{source.NVML: {"absent"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Inputs{Topology: topology.Topology{Kernel: "6.8.0", PCIDevices: tc.pci}, Sources: tc.sources}
			before := slices.Clone(in.Sources)
			s := Build(in)
			if !slices.Equal(in.Sources, before) {
				t.Errorf("Build changed its input statuses: %+v", in.Sources)
			}
			for name, want := range tc.want {
				st, ran := s.Source(name)
				if !ran || string(st.State) != want[0] {
					t.Errorf("%s = %+v, want %s", name, st, want[0])
				}
				for _, w := range want[1:] {
					if !strings.Contains(st.Message, w) {
						t.Errorf("%s message lacks %q: %s", name, w, st.Message)
					}
				}
			}
			var vendors []gpu.Vendor
			for _, g := range s.GPUsWithoutBackend {
				vendors = append(vendors, g.Vendor)
				if len(g.PCIAddresses) == 0 || len(g.Backends) == 0 || g.Fix == "" {
					t.Errorf("incomplete: %+v", g)
				}
				for _, b := range g.Backends {
					if st, _ := s.Source(b); st.State != source.Error || !strings.HasSuffix(st.Message, "; "+g.Fix) {
						t.Errorf("backend %s = %+v, want an error ending with the fix", b, st)
					}
				}
			}
			if !slices.Equal(vendors, tc.vendors) {
				t.Errorf("GPUs without backend of %v, want %v: %+v", vendors, tc.vendors, s.GPUsWithoutBackend)
			}
			if got := s.GPUsNotInventoried(); got != tc.notFound {
				t.Errorf("GPUsNotInventoried() = %q, want %q", got, tc.notFound)
			}
			if tc.notFound != "" && s.GPUDirect.Reason != "unknown: "+tc.notFound {
				t.Errorf("GPUDirect = %+v", s.GPUDirect)
			}
		})
	}
}
