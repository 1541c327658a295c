package topology

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/internal/cpuset"
	"github.com/gpunode/gpunode/internal/hostfs"
)

func mustSet(t *testing.T, s string) cpuset.Set {
	t.Helper()
	c, err := cpuset.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sameJSON compares through JSON, which is what users of a Topology see.
func sameJSON(t *testing.T, got, want any) {
	t.Helper()
	g, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	w, err := json.MarshalIndent(want, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if string(g) != string(w) {
		t.Errorf("got\n%s\nwant\n%s", g, w)
	}
}

func TestDiscoverDGX(t *testing.T) {
	top, err := Discover(t.Context(), dgxTree(t).fs())
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	link := func(speed string, gen, width int, maxSpeed string, maxGen, maxWidth int) *PCIeLink {
		return &PCIeLink{CurrentSpeed: speed, CurrentGen: gen, CurrentWidth: width, MaxSpeed: maxSpeed, MaxGen: maxGen, MaxWidth: maxWidth}
	}
	gen5 := link("32.0 GT/s PCIe", 5, 16, "32.0 GT/s PCIe", 5, 16)
	want := Topology{
		Hostname:         "dgx-h100-01",
		Kernel:           "6.1.0-28-amd64",
		OnlineCPUs:       mustSet(t, "0-7"),
		IsolatedCPUs:     mustSet(t, "2-3,6"),
		IsolatedCPUFlags: []string{"domain", "managed_irq"},
		NohzFullCPUs:     mustSet(t, "2-3,6"),
		NUMANodes: []NUMANode{
			{ID: 0, CPUs: mustSet(t, "0-3"), MemoryBytes: 8 << 30, Distances: []int{10, 21}},
			{ID: 1, CPUs: mustSet(t, "4-7"), MemoryBytes: 8 << 30, Distances: []int{21, 10}},
		},
		PCIDevices: []PCIDevice{
			{Address: addrEth, Kind: KindNIC, Class: "0x020000", Vendor: "0x8086", Device: "0x15fa", NUMANode: -1,
				Path: []string{"pci0000:00", addrEth}},
			{Address: addrGPU0, Kind: KindGPU, Class: "0x030200", Vendor: "0x10de", Device: "0x2330", Driver: "nvidia",
				NUMANode: 0, LocalCPUs: mustSet(t, "0-3"), Link: gen5,
				Path: []string{"pci0000:15", "0000:15:01.0", "0000:16:00.0", "0000:17:00.0", addrGPU0}},
			{Address: addrNIC0, Kind: KindNIC, Class: "0x020700", Vendor: "0x15b3", Device: "0x1021", Driver: "mlx5_core",
				NUMANode: 0, LocalCPUs: mustSet(t, "0-3"), Link: gen5,
				Path: []string{"pci0000:15", "0000:15:01.0", "0000:16:00.0", "0000:17:01.0", addrNIC0}},
			{Address: addrVF, Kind: KindNIC, Class: "0x020700", Vendor: "0x15b3", Device: "0x101e", Driver: "mlx5_core",
				NUMANode: 0, LocalCPUs: mustSet(t, "0-3"), Link: link("Unknown", 0, 0, "Unknown", 0, 0),
				Path:            []string{"pci0000:15", "0000:15:01.0", "0000:16:00.0", "0000:17:01.0", addrVF},
				VirtualFunction: true},
			{Address: addrNVSw, Kind: KindNVSwitch, Class: "0x068000", Vendor: "0x10de", Device: "0x22a3",
				NUMANode: 0, LocalCPUs: mustSet(t, "0-3"), Link: link("16.0 GT/s PCIe", 4, 2, "16.0 GT/s PCIe", 4, 2),
				Path: []string{"pci0000:15", "0000:15:01.0", "0000:16:00.0", "0000:17:02.0", "0000:1a:00.0", "0000:1b:00.0", addrNVSw}},
			{Address: addrGPU1, Kind: KindGPU, Class: "0x030000", Vendor: "0x1002", Device: "0x740f", Driver: "amdgpu",
				NUMANode: 1, LocalCPUs: mustSet(t, "4-7"), Link: link("8 GT/s", 3, 8, "16 GT/s", 4, 16),
				Path: []string{"pci0000:9a", "0000:9a:01.0", addrGPU1}},
		},
		Modules:            []string{"mlx5_core", "mlx5_ib", "nvidia", "nvidia_peermem"},
		NVIDIAKernelModule: &NVIDIAKernelModule{Version: "550.54.15", Open: true},
		IRQs: []IRQ{
			{Number: 100, PCIAddress: addrNIC0, Name: "mlx5_async0@pci:0000:19:00.0", Affinity: mustSet(t, "0-3")},
			{Number: 101, PCIAddress: addrNIC0, Name: "mlx5_comp0@pci:0000:19:00.0", Affinity: mustSet(t, "1")},
			{Number: 150, PCIAddress: addrGPU0, Name: "nvidia", Affinity: mustSet(t, "4-7")},
		},
	}
	sameJSON(t, top, want)

	if !top.HasModule("nvidia_peermem") || !top.HasModule("nvidia-peermem") || top.HasModule("nvidia_uvm") || top.HasModule("") {
		t.Errorf("HasModule is wrong for %q", top.Modules)
	}
	byAddr := func(a string) PCIDevice {
		i := slices.IndexFunc(top.PCIDevices, func(d PCIDevice) bool { return d.Address == a })
		if i < 0 {
			t.Fatalf("no device %s", a)
		}
		return top.PCIDevices[i]
	}
	for _, tc := range []struct{ a, b, want string }{
		{addrGPU0, addrNIC0, RelPIX},
		{addrGPU0, addrNVSw, RelPXB},
		{addrGPU0, addrGPU1, RelSys},
		{addrEth, addrGPU0, RelSys}, // numa_node unknown
	} {
		if got := Relation(byAddr(tc.a), byAddr(tc.b)); got != tc.want {
			t.Errorf("Relation(%s, %s) = %s; want %s", tc.a, tc.b, got, tc.want)
		}
	}
}

// Missing optional files are not errors.
func TestDiscoverOptionalFilesMissing(t *testing.T) {
	tr := dgxTree(t)
	tr.remove("/proc/sys/kernel/hostname")
	tr.remove("/proc/driver")
	tr.remove("/proc/modules") // kernels without module support
	dir := "/sys/devices/" + sw0 + "/0000:17:00.0/" + addrGPU0
	for _, f := range []string{"local_cpulist", "numa_node", "driver", "msi_irqs", "current_link_speed", "max_link_speed", "current_link_width", "max_link_width"} {
		tr.remove(dir + "/" + f)
	}
	top, err := Discover(t.Context(), tr.fs())
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if top.Hostname != "" || top.NVIDIAKernelModule != nil || len(top.Modules) != 0 {
		t.Errorf("hostname %q, nvidia %+v, modules %q; want none", top.Hostname, top.NVIDIAKernelModule, top.Modules)
	}
	gpu := top.PCIDevices[slices.IndexFunc(top.PCIDevices, func(d PCIDevice) bool { return d.Address == addrGPU0 })]
	if gpu.Link != nil || gpu.Driver != "" || gpu.NUMANode != -1 || !gpu.LocalCPUs.IsEmpty() || len(gpu.Errors) != 0 {
		t.Errorf("bare GPU = %+v", gpu)
	}
	if slices.ContainsFunc(top.IRQs, func(q IRQ) bool { return q.PCIAddress == addrGPU0 }) {
		t.Errorf("IRQs of a device without msi_irqs: %+v", top.IRQs)
	}
}

func TestDiscoverWithoutNUMA(t *testing.T) {
	tr := dgxTree(t)
	tr.remove("/sys/devices/system/node")
	top, err := Discover(t.Context(), tr.fs())
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	sameJSON(t, top.NUMANodes, []NUMANode{{ID: 0, CPUs: mustSet(t, "0-7"), MemoryBytes: 16 << 30}})
}

func TestDiscoverNodesWithoutOnlineList(t *testing.T) {
	tr := dgxTree(t)
	tr.remove("/sys/devices/system/node/online")
	top, err := Discover(t.Context(), tr.fs())
	if err == nil || !strings.Contains(err.Error(), "/sys/devices/system/node/online") {
		t.Errorf("Discover error = %v; want one about the node online list", err)
	}
	if len(top.NUMANodes) != 2 || top.NUMANodes[1].ID != 1 || top.NUMANodes[1].CPUs.String() != "4-7" {
		t.Errorf("nodes from the node directories = %+v", top.NUMANodes)
	}
}

// Every kind of garbage gives a reported error naming the file, never a
// panic, and hides nothing else.
func TestDiscoverGarbage(t *testing.T) {
	gpu0 := "/sys/devices/" + sw0 + "/0000:17:00.0/" + addrGPU0
	nic0 := "/sys/devices/" + sw0 + "/0000:17:01.0/" + addrNIC0
	huge := strings.Repeat("nvidia 1 0 - Live 0x0\n", (9<<20)/22)
	for _, tc := range []struct {
		name    string
		mutate  func(*tree)
		want    string // a piece of the error, naming the file
		devErr  string // the device whose Errors must hold it, if any
		isError error  // errors.Is target, if any
		lost    int    // PCI devices hidden by the breakage
		check   func(*testing.T, Topology)
	}{
		{name: "osrelease not UTF-8", mutate: func(tr *tree) { tr.file("/proc/sys/kernel/osrelease", "\xff\xfe6.1") },
			want: "/proc/sys/kernel/osrelease: content is not UTF-8",
			check: func(t *testing.T, top Topology) {
				if top.Kernel != "" {
					t.Errorf("kernel = %q", top.Kernel)
				}
			}},
		{name: "osrelease missing", mutate: func(tr *tree) { tr.remove("/proc/sys/kernel/osrelease") },
			want: "/proc/sys/kernel/osrelease", isError: os.ErrNotExist},
		{name: "osrelease empty", mutate: func(tr *tree) { tr.file("/proc/sys/kernel/osrelease", "\n") },
			want: "/proc/sys/kernel/osrelease: empty"},
		{name: "hostname with NUL", mutate: func(tr *tree) { tr.file("/proc/sys/kernel/hostname", "dgx\x00") },
			want: "/proc/sys/kernel/hostname: content holds NUL"},
		{name: "online CPUs garbage", mutate: func(tr *tree) { tr.file("/sys/devices/system/cpu/online", "0-") },
			want: "/sys/devices/system/cpu/online: cpulist"},
		{name: "online CPUs empty", mutate: func(tr *tree) { tr.file("/sys/devices/system/cpu/online", "") },
			want: "no online CPUs"},
		{name: "cmdline garbage", mutate: func(tr *tree) { tr.file("/proc/cmdline", "isolcpus=2-x nohz_full=3\n") },
			want: "/proc/cmdline: isolcpus=2-x",
			check: func(t *testing.T, top Topology) {
				if top.NohzFullCPUs.String() != "3" {
					t.Errorf("nohz_full = %q", top.NohzFullCPUs)
				}
			}},
		{name: "cmdline with NUL", mutate: func(tr *tree) { tr.file("/proc/cmdline", "quiet\x00isolcpus=1") },
			want: "/proc/cmdline: content holds NUL"},
		{name: "modules over 8 MiB", mutate: func(tr *tree) { tr.file("/proc/modules", huge) },
			want: "/proc/modules: file too large", isError: hostfs.ErrTooLarge},
		{name: "modules garbage", mutate: func(tr *tree) { tr.file("/proc/modules", "nvidia 1 0 - Live 0x0\n\x01\x02garbage\n") },
			want: "/proc/modules: 1 malformed module lines",
			check: func(t *testing.T, top Topology) {
				if !top.HasModule("nvidia") {
					t.Errorf("modules = %q", top.Modules)
				}
			}},
		{name: "nvidia version truncated", mutate: func(tr *tree) { tr.file("/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX Open Ker") },
			want: "/proc/driver/nvidia/version: NVRM line"},
		{name: "node meminfo truncated", mutate: func(tr *tree) { tr.file("/sys/devices/system/node/node1/meminfo", "Node 1 MemTot") },
			want: "/sys/devices/system/node/node1/meminfo: meminfo has no MemTotal",
			check: func(t *testing.T, top Topology) {
				if len(top.NUMANodes) != 2 || top.NUMANodes[1].CPUs.String() != "4-7" || top.NUMANodes[0].MemoryBytes != 8<<30 {
					t.Errorf("nodes = %+v", top.NUMANodes)
				}
			}},
		{name: "node meminfo of another node", mutate: func(tr *tree) {
			tr.file("/sys/devices/system/node/node1/meminfo", "Node 0 MemTotal: 1 kB\n")
		}, want: "/sys/devices/system/node/node1/meminfo: MemTotal line is for node 0"},
		{name: "node distance garbage", mutate: func(tr *tree) { tr.file("/sys/devices/system/node/node0/distance", "10 twenty") },
			want: "/sys/devices/system/node/node0/distance: distance list"},
		{name: "node cpulist missing", mutate: func(tr *tree) { tr.remove("/sys/devices/system/node/node0/cpulist") },
			want: "/sys/devices/system/node/node0/cpulist", isError: os.ErrNotExist},
		{name: "no NUMA and no meminfo", mutate: func(tr *tree) { tr.remove("/sys/devices/system/node"); tr.remove("/proc/meminfo") },
			want: "/proc/meminfo",
			check: func(t *testing.T, top Topology) {
				if len(top.NUMANodes) != 1 || top.NUMANodes[0].CPUs.String() != "0-7" {
					t.Errorf("nodes = %+v", top.NUMANodes)
				}
			}},
		{name: "device numa_node with NUL", mutate: func(tr *tree) { tr.file(gpu0+"/numa_node", "0\x00") },
			want: pciDevicesDir + "/" + addrGPU0 + "/numa_node: content holds NUL", devErr: addrGPU0},
		{name: "device numa_node garbage", mutate: func(tr *tree) { tr.file(gpu0+"/numa_node", "zero") },
			want: pciDevicesDir + "/" + addrGPU0 + "/numa_node", devErr: addrGPU0},
		{name: "link speed garbage", mutate: func(tr *tree) { tr.file(nic0+"/current_link_speed", "fast") },
			want: pciDevicesDir + "/" + addrNIC0 + "/current_link_speed: link speed \"fast\"", devErr: addrNIC0,
			check: func(t *testing.T, top Topology) {
				nic := top.PCIDevices[slices.IndexFunc(top.PCIDevices, func(d PCIDevice) bool { return d.Address == addrNIC0 })]
				if nic.Link == nil || nic.Link.MaxGen != 5 || nic.Link.CurrentSpeed != "fast" {
					t.Errorf("link = %+v", nic.Link)
				}
			}},
		{name: "link width garbage", mutate: func(tr *tree) { tr.file(nic0+"/max_link_width", "x16") },
			want: addrNIC0 + "/max_link_width: link width", devErr: addrNIC0},
		{name: "local_cpulist garbage", mutate: func(tr *tree) { tr.file(nic0+"/local_cpulist", "ff,ffffffff") },
			want: addrNIC0 + "/local_cpulist: cpulist", devErr: addrNIC0},
		{name: "device id garbage", mutate: func(tr *tree) { tr.file(gpu0+"/device", "0x2330x") },
			want: addrGPU0 + "/device", devErr: addrGPU0},
		{name: "class garbage hides only that device", mutate: func(tr *tree) { tr.file(gpu0+"/class", "0xZZ") },
			want: addrGPU0 + "/class", lost: 1,
			check: func(t *testing.T, top Topology) {
				if slices.ContainsFunc(top.PCIDevices, func(d PCIDevice) bool { return d.Address == addrGPU0 }) {
					t.Error("device with an unreadable class reported")
				}
			}},
		{name: "vendor missing", mutate: func(tr *tree) { tr.remove(gpu0 + "/vendor") },
			want: addrGPU0 + "/vendor", isError: os.ErrNotExist, lost: 1},
		{name: "bad device name", mutate: func(tr *tree) { tr.dir(pciDevicesDir + "/garbage") },
			want: pciDevicesDir + "/garbage: not a PCI address"},
		{name: "dangling device link", mutate: func(tr *tree) {
			tr.link("../../../devices/pci0000:00/0000:00:09.0", pciDevicesDir+"/0000:00:09.0")
		}, want: pciDevicesDir + "/0000:00:09.0/class", isError: os.ErrNotExist},
		{name: "device outside a host bridge", mutate: func(tr *tree) {
			tr.remove(pciDevicesDir + "/" + addrGPU0)
			tr.link("../../../devices/platform/"+addrGPU0, pciDevicesDir+"/"+addrGPU0)
			tr.file("/sys/devices/platform/"+addrGPU0+"/class", "0x030200")
			tr.file("/sys/devices/platform/"+addrGPU0+"/vendor", "0x10de")
			tr.file("/sys/devices/platform/"+addrGPU0+"/device", "0x2330")
		}, want: addrGPU0 + ": PCI device path", devErr: addrGPU0},
		{name: "physfn not a link", mutate: func(tr *tree) { tr.file(gpu0+"/physfn", "x") },
			want: "readlink " + pciDevicesDir + "/" + addrGPU0 + "/physfn", devErr: addrGPU0},
		{name: "msi_irqs entry garbage", mutate: func(tr *tree) { tr.file(gpu0+"/msi_irqs/x1", "msix") },
			want: addrGPU0 + "/msi_irqs/x1: not an IRQ number", devErr: addrGPU0,
			check: func(t *testing.T, top Topology) {
				if !slices.ContainsFunc(top.IRQs, func(q IRQ) bool { return q.Number == 150 }) {
					t.Error("the good IRQ of the device is gone")
				}
			}},
		{name: "irq affinity missing", mutate: func(tr *tree) { tr.remove("/proc/irq/101") },
			want: "/proc/irq/101/smp_affinity_list", devErr: addrNIC0, isError: os.ErrNotExist,
			check: func(t *testing.T, top Topology) {
				if len(top.IRQs) != 3 || top.IRQs[1].Number != 101 || top.IRQs[1].Name == "" || top.IRQs[0].Affinity.String() != "0-3" {
					t.Errorf("IRQs = %+v", top.IRQs)
				}
			}},
		{name: "irq affinity garbage", mutate: func(tr *tree) { tr.file("/proc/irq/150/smp_affinity_list", "\xff") },
			want: "/proc/irq/150/smp_affinity_list", devErr: addrGPU0},
		{name: "interrupts truncated", mutate: func(tr *tree) { tr.file("/proc/interrupts", dgxInterrupts[:15]) },
			want: "/proc/interrupts: header",
			check: func(t *testing.T, top Topology) {
				// Names are lost; the IRQs and their affinity are not.
				if len(top.IRQs) != 3 || top.IRQs[0].Name != "" || top.IRQs[0].Affinity.String() != "0-3" {
					t.Errorf("IRQs = %+v", top.IRQs)
				}
			}},
		{name: "interrupts missing", mutate: func(tr *tree) { tr.remove("/proc/interrupts") },
			want: "read /proc/interrupts", isError: os.ErrNotExist},
		{name: "interrupts with a bad line", mutate: func(tr *tree) {
			tr.file("/proc/interrupts", strings.Replace(dgxInterrupts, " 101:", "\xff101:", 1))
		}, want: "/proc/interrupts: 1 malformed lines, first: line 4",
			check: func(t *testing.T, top Topology) {
				if top.IRQs[0].Name == "" || top.IRQs[1].Name != "" || top.IRQs[2].Name != "nvidia" {
					t.Errorf("IRQs = %+v", top.IRQs)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr := dgxTree(t)
			tc.mutate(tr)
			top, err := Discover(t.Context(), tr.fs())
			if err == nil {
				t.Fatal("Discover: want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\ndoes not mention %q", err, tc.want)
			}
			if tc.isError != nil && !errors.Is(err, tc.isError) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.isError)
			}
			if len(top.Errors) == 0 || strings.Join(top.Errors, "\n") != err.Error() {
				t.Errorf("Topology.Errors %q do not match the error %q", top.Errors, err)
			}
			if tc.devErr != "" {
				i := slices.IndexFunc(top.PCIDevices, func(d PCIDevice) bool { return d.Address == tc.devErr })
				if i < 0 {
					t.Fatalf("device %s not reported", tc.devErr)
				}
				if !slices.ContainsFunc(top.PCIDevices[i].Errors, func(e string) bool { return strings.Contains(e, tc.want) }) {
					t.Errorf("device %s errors %q do not mention %q", tc.devErr, top.PCIDevices[i].Errors, tc.want)
				}
			}
			// Whatever broke, the rest is still there.
			if len(top.PCIDevices) != 6-tc.lost {
				t.Errorf("%d PCI devices; want %d", len(top.PCIDevices), 6-tc.lost)
			}
			if top.OnlineCPUs.IsEmpty() && !strings.Contains(tc.name, "online CPUs") {
				t.Error("online CPUs lost")
			}
			if tc.check != nil {
				tc.check(t, top)
			}
		})
	}
}

func TestDiscoverCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	top, err := Discover(ctx, dgxTree(t).fs())
	if !errors.Is(err, context.Canceled) || len(top.PCIDevices) != 0 {
		t.Errorf("Discover after cancel = %d devices, %v", len(top.PCIDevices), err)
	}
}

func TestDiscoverEmptyRoot(t *testing.T) {
	top, err := Discover(t.Context(), newTree(t).fs())
	if err == nil {
		t.Fatal("Discover of an empty root: want errors")
	}
	for _, p := range []string{"/proc/sys/kernel/osrelease", "/sys/devices/system/cpu/online", "/proc/cmdline", "/proc/meminfo"} {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %s", err, p)
		}
	}
	if len(top.NUMANodes) != 1 || len(top.PCIDevices) != 0 || top.NVIDIAKernelModule != nil {
		t.Errorf("Topology = %+v", top)
	}
}

// TestDiscoverHost runs against this machine's real root. It assumes no
// particular hardware: only what every Linux host has.
func TestDiscoverHost(t *testing.T) {
	fsys, err := hostfs.New("/")
	if err != nil {
		t.Fatal(err)
	}
	top, err := Discover(t.Context(), fsys)
	if err != nil {
		t.Errorf("Discover(/): %v", err)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	if top.Kernel == "" || top.Kernel != unix.ByteSliceToString(uts.Release[:]) {
		t.Errorf("kernel %q; uname says %q", top.Kernel, unix.ByteSliceToString(uts.Release[:]))
	}
	if top.OnlineCPUs.Len() < runtime.NumCPU() {
		t.Errorf("%d online CPUs (%s); this process may run on %d", top.OnlineCPUs.Len(), top.OnlineCPUs, runtime.NumCPU())
	}
	if len(top.NUMANodes) == 0 {
		t.Fatal("no NUMA node")
	}
	var nodeCPUs cpuset.Set
	for _, n := range top.NUMANodes {
		nodeCPUs = nodeCPUs.Union(n.CPUs)
	}
	if nodeCPUs.Intersect(top.OnlineCPUs).IsEmpty() {
		t.Errorf("NUMA nodes %+v hold none of the online CPUs %s", top.NUMANodes, top.OnlineCPUs)
	}
	if !slices.IsSortedFunc(top.PCIDevices, func(a, b PCIDevice) int { return strings.Compare(a.Address, b.Address) }) {
		t.Error("PCI devices not sorted")
	}
	for _, d := range top.PCIDevices {
		if !isBDF(d.Address) || len(d.Path) < 2 || d.Path[len(d.Path)-1] != d.Address || d.Kind == "" {
			t.Errorf("device %+v", d)
		}
	}
	for i, q := range top.IRQs {
		if i > 0 && top.IRQs[i-1].Number > q.Number {
			t.Error("IRQs not sorted")
		}
		if !slices.ContainsFunc(top.PCIDevices, func(d PCIDevice) bool { return d.Address == q.PCIAddress }) {
			t.Errorf("IRQ %d of unknown device %s", q.Number, q.PCIAddress)
		}
		if q.Affinity.IsEmpty() {
			t.Errorf("IRQ %d has no affinity", q.Number)
		}
	}
	b, _ := json.MarshalIndent(top, "", "  ")
	t.Logf("this host:\n%s", b)
}
