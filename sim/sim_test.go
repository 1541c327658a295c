package sim

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/internal/cpuset"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/rdma"
)

func TestNames(t *testing.T) {
	names := Names()
	want := []string{"cpu-only", "dgx-b200-ib", "dgx-h100-ib", "dgx-h100-ib-degraded", "dgx-h100-ib-no-nvml", "gb200-nvl", "h100-roce", "h100-roce-lossy", "mi300x-roce", "mi355x-roce"}
	if !slices.Equal(names, want) {
		t.Fatalf("Names() = %v, want %v", names, want)
	}
	if !slices.IsSorted(names) {
		t.Fatalf("Names() not sorted: %v", names)
	}
}

func TestBuildRejects(t *testing.T) {
	_, err := Build("dgx-a100", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), `"dgx-a100"`) || !strings.Contains(err.Error(), strings.Join(Names(), ", ")) {
		t.Errorf("unknown node: err = %v, want the name and the known names", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Build("cpu-only", dir); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("non-empty dir: err = %v", err)
	}
	if _, err := Build("cpu-only", filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: err = %v, want not-exist", err)
	}
}

// expect is what each node must look like.
type expect struct {
	cpus, numaNodes int
	model           nvmlfake.Model // "" for no NVIDIA
	gpuDevice       string
	gpus            int // NVIDIA GPUs; 8 when zero
	openModule      bool
	peermem         bool
	nvswitches      int
	rdma            map[string]string // device -> link layer
	rate            map[string]string // device -> rate
	netMTU          map[string]int    // netdev -> MTU
	railPairs       bool              // GPU i and mlx5_i share a PCIe switch
	amdGPUs         int               // AMD cards (amd_test.go checks them)
	amdDevice       string            // their PCI device id
	amdMetrics      uint8             // their gpu_metrics content revision (1.x)
	amdCUs          int               // their compute units
	nvmlMissing     bool              // the NVIDIA GPUs and driver without the library
}

func expectations() map[string]expect {
	ib8 := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for i := range 8 {
			m[fmt.Sprintf("mlx5_%d", i)] = "InfiniBand"
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	eth10 := map[string]string{}
	for i := range 10 {
		eth10[fmt.Sprintf("mlx5_%d", i)] = "Ethernet"
	}
	exp := map[string]expect{
		"cpu-only": {cpus: 64, numaNodes: 2, netMTU: map[string]int{"enp24s0f0": 1500, "enp24s0f1": 1500}},
		"dgx-h100-ib": {
			cpus: 224, numaNodes: 2, model: nvmlfake.H100, gpuDevice: "0x2330", peermem: true, nvswitches: 4,
			rdma:      ib8(nil),
			rate:      map[string]string{"mlx5_0": "400 Gb/sec (4X NDR)", "mlx5_7": "400 Gb/sec (4X NDR)"},
			netMTU:    map[string]int{"ibp24s0": 4092, "ibp220s0": 4092, "enp43s0f0": 1500},
			railPairs: true,
		},
		"dgx-b200-ib": {
			cpus: 224, numaNodes: 2, model: nvmlfake.B200, gpuDevice: "0x2901", openModule: true, nvswitches: 2,
			rdma:      ib8(map[string]string{"mlx5_8": "Ethernet", "mlx5_9": "Ethernet"}),
			rate:      map[string]string{"mlx5_0": "400 Gb/sec (4X NDR)", "mlx5_8": "200 Gb/sec (4X HDR)", "mlx5_9": "200 Gb/sec (4X HDR)"},
			netMTU:    map[string]int{"ibp24s0": 4092, "enp49s0np0": 9000, "enp177s0np0": 9000},
			railPairs: true,
		},
		"gb200-nvl": {
			cpus: 144, numaNodes: 2, model: nvmlfake.GB200, gpuDevice: "0x2941", gpus: 4, openModule: true,
			rdma: map[string]string{"mlx5_0": "InfiniBand", "mlx5_1": "InfiniBand", "mlx5_2": "Ethernet",
				"mlx5_3": "InfiniBand", "mlx5_4": "InfiniBand", "mlx5_5": "Ethernet"},
			rate:   map[string]string{"mlx5_0": "400 Gb/sec (4X NDR)", "mlx5_2": "200 Gb/sec (4X HDR)", "mlx5_4": "400 Gb/sec (4X NDR)"},
			netMTU: map[string]int{"ibp3s0": 4092, "ibp21s0": 4092, "enp7s0np0": 9000, "enp23s0np0": 9000},
		},
		"h100-roce": {
			cpus: 192, numaNodes: 2, model: nvmlfake.H100, gpuDevice: "0x2330", openModule: true, peermem: true, nvswitches: 4,
			rdma:      eth10,
			rate:      map[string]string{"mlx5_0": "400 Gb/sec (4X NDR)", "mlx5_8": "200 Gb/sec (4X HDR)"},
			netMTU:    map[string]int{"enp24s0np0": 9000, "enp220s0np0": 9000, "enp43s0np0": 1500, "enp49s0np0": 1500},
			railPairs: true,
		},
		"mi300x-roce": {
			cpus: 384, numaNodes: 2,
			rdma:    eth8(),
			rate:    map[string]string{"mlx5_0": "400 Gb/sec (4X NDR)", "mlx5_7": "400 Gb/sec (4X NDR)"},
			netMTU:  map[string]int{"enp19s0np0": 9000, "enp227s0np0": 9000},
			amdGPUs: 8, amdDevice: "0x74a1", amdMetrics: 5, amdCUs: 304,
		},
		"mi355x-roce": {
			cpus: 384, numaNodes: 2,
			rdma:    eth8(),
			rate:    map[string]string{"mlx5_0": "400 Gb/sec (4X NDR)", "mlx5_7": "400 Gb/sec (4X NDR)"},
			netMTU:  map[string]int{"enp19s0np0": 9000, "enp227s0np0": 9000},
			amdGPUs: 8, amdDevice: "0x75a3", amdMetrics: 8, amdCUs: 256,
		},
	}
	// The degraded variants are their good nodes plus the planted faults
	// (TestPlantedFaults).
	degraded := exp["dgx-h100-ib"]
	degraded.rate = map[string]string{"mlx5_0": "400 Gb/sec (4X NDR)", "mlx5_6": "200 Gb/sec (2X NDR)", "mlx5_7": "400 Gb/sec (4X NDR)"}
	exp["dgx-h100-ib-degraded"] = degraded
	exp["h100-roce-lossy"] = exp["h100-roce"]
	noNVML := exp["dgx-h100-ib"]
	noNVML.nvmlMissing = true
	noNVML.railPairs = false // checkRails reads the NVML description, which this node lacks
	exp["dgx-h100-ib-no-nvml"] = noNVML
	return exp
}

// TestNodes builds every node twice, requires identical trees, and checks
// the first against the host-file contract and the node's description.
func TestNodes(t *testing.T) {
	exp := expectations()
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e, ok := exp[name]
			if !ok {
				t.Fatalf("no expectations for %s", name)
			}
			node, err := Build(name, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			again, err := Build(name, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if a, b := snapshot(t, node.Root), snapshot(t, again.Root); !slices.Equal(a, b) {
				t.Errorf("two builds differ: %s", firstDiff(a, b))
			}
			if node.Name != name || node.Description == "" {
				t.Errorf("node = %q %q", node.Name, node.Description)
			}
			h := newHost(t, node.Root)
			h.checkLinks()
			h.checkCPUs(e)
			h.checkPCI()
			h.checkInterrupts()
			h.checkNVIDIA(node, e)
			h.checkRDMA(e)
			h.checkNet(e)
			h.checkKernel(e)
			if e.railPairs {
				h.checkRails(node)
			}
			h.checkAMD(e)
		})
	}
}

// snapshot lists every path under root with its type and content or link
// target, in walk (lexical) order.
func snapshot(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, root)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, rel+" -> "+target)
		case d.IsDir():
			out = append(out, rel+"/")
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out = append(out, rel+" = "+string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("%.200q vs %.200q", a[i], b[i])
		}
	}
	return fmt.Sprintf("%d vs %d entries", len(a), len(b))
}

// host wraps the built tree with the reads the checks need.
type host struct {
	t      *testing.T
	fs     hostfs.FS
	online cpuset.Set
	nodes  []cpuset.Set
}

func newHost(t *testing.T, root string) *host {
	f, err := hostfs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return &host{t: t, fs: f}
}

func (h *host) read(p string) string {
	h.t.Helper()
	s, err := h.fs.ReadString(p)
	if err != nil {
		h.t.Errorf("%v", err)
	}
	return s
}

func (h *host) names(p string) []string {
	h.t.Helper()
	n, err := h.fs.Names(p)
	if err != nil {
		h.t.Errorf("%v", err)
	}
	return n
}

func (h *host) cpus(p string) cpuset.Set {
	h.t.Helper()
	s, err := cpuset.Parse(h.read(p))
	if err != nil {
		h.t.Errorf("%s: %v", p, err)
	}
	return s
}

func (h *host) mask(p string) cpuset.Set {
	h.t.Helper()
	s, err := cpuset.ParseMask(h.read(p))
	if err != nil {
		h.t.Errorf("%s: %v", p, err)
	}
	return s
}

func (h *host) resolve(p string) string {
	h.t.Helper()
	r, err := h.fs.Resolve(p)
	if err != nil {
		h.t.Errorf("resolve %s: %v", p, err)
	}
	return r
}

// checkLinks: every symlink is relative, never climbs above the root, and
// resolves to something that exists.
func (h *host) checkLinks() {
	root := h.fs.Root()
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		n++
		hostPath := strings.TrimPrefix(p, root)
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if filepath.IsAbs(target) {
			h.t.Errorf("%s -> %s: absolute", hostPath, target)
		}
		depth := strings.Count(filepath.Dir(hostPath), "/")
		if filepath.Dir(hostPath) == "/" {
			depth = 0
		}
		for _, part := range strings.Split(target, "/") {
			if part == ".." {
				depth--
			} else {
				depth++
			}
			if depth < 0 {
				h.t.Errorf("%s -> %s climbs above the root", hostPath, target)
				break
			}
		}
		r, err := h.fs.Resolve(hostPath)
		if err != nil || !h.fs.Exists(r) {
			h.t.Errorf("%s -> %s does not resolve: %q %v", hostPath, target, r, err)
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if n == 0 {
		h.t.Error("no symlinks at all")
	}
}

func (h *host) checkCPUs(e expect) {
	meminfoFirst := regexp.MustCompile(`^Node (\d+) MemTotal: +(\d+) kB$`)
	h.online = h.cpus("/sys/devices/system/cpu/online")
	if h.online.Len() != e.cpus {
		h.t.Errorf("online CPUs = %d, want %d", h.online.Len(), e.cpus)
	}
	for _, f := range []string{"possible", "present"} {
		if s := h.cpus("/sys/devices/system/cpu/" + f); !s.Equal(h.online) {
			h.t.Errorf("cpu/%s = %s, online %s", f, s, h.online)
		}
	}
	nodes := h.cpus("/sys/devices/system/node/online")
	if nodes.Len() != e.numaNodes {
		h.t.Fatalf("NUMA nodes %s, want %d", nodes, e.numaNodes)
	}
	var union cpuset.Set
	var total uint64
	for _, n := range nodes.CPUs() {
		dir := fmt.Sprintf("/sys/devices/system/node/node%d", n)
		cpus := h.cpus(dir + "/cpulist")
		if !h.mask(dir + "/cpumap").Equal(cpus) {
			h.t.Errorf("node%d cpumap differs from cpulist", n)
		}
		if !union.Intersect(cpus).IsEmpty() {
			h.t.Errorf("node%d CPUs %s overlap another node", n, cpus)
		}
		union = union.Union(cpus)
		h.nodes = append(h.nodes, cpus)
		first, _, _ := strings.Cut(h.read(dir+"/meminfo"), "\n")
		m := meminfoFirst.FindStringSubmatch(first)
		if m == nil || m[1] != strconv.Itoa(n) {
			h.t.Errorf("node%d meminfo first line %q", n, first)
		} else {
			kb, _ := strconv.ParseUint(m[2], 10, 64)
			total += kb
		}
		dist := strings.Fields(h.read(dir + "/distance"))
		if len(dist) != nodes.Len() || dist[n] != "10" {
			h.t.Errorf("node%d distance %v", n, dist)
		}
	}
	if !union.Equal(h.online) {
		h.t.Errorf("NUMA CPUs %s, online %s", union, h.online)
	}
	if first, _, _ := strings.Cut(h.read("/proc/meminfo"), "\n"); first != fmt.Sprintf("MemTotal:       %d kB", total) {
		h.t.Errorf("/proc/meminfo starts %q, nodes total %d kB", first, total)
	}
}

// checkPCI walks /sys/bus/pci/devices: every link leads to a device whose
// resolved path is a chain of bridges with consistent bus numbers, with
// the attributes of the contract and a driver link that resolves.
func (h *host) checkPCI() {
	secondaries := map[string]string{}
	for _, bdf := range h.names("/sys/bus/pci/devices") {
		dev := h.resolve("/sys/bus/pci/devices/" + bdf)
		if !h.fs.IsDir(dev) || filepath.Base(dev) != bdf {
			h.t.Errorf("%s resolves to %s", bdf, dev)
			continue
		}
		for _, f := range []string{"class", "vendor", "device", "subsystem_vendor", "subsystem_device", "numa_node", "local_cpulist", "local_cpus", "current_link_speed", "current_link_width", "max_link_speed", "max_link_width"} {
			if !h.fs.Exists(dev + "/" + f) {
				h.t.Errorf("%s has no %s", bdf, f)
			}
		}
		numa, err := h.fs.ReadInt(dev + "/numa_node")
		if err != nil || numa < 0 || int(numa) >= len(h.nodes) {
			h.t.Errorf("%s numa_node %d %v", bdf, numa, err)
		} else {
			local := h.cpus(dev + "/local_cpulist")
			if !local.Equal(h.nodes[numa]) || !h.mask(dev+"/local_cpus").Equal(local) {
				h.t.Errorf("%s local CPUs %s on node %d (%s)", bdf, local, numa, h.nodes[numa])
			}
		}
		if s := h.read(dev + "/current_link_speed"); !strings.HasSuffix(s, " GT/s PCIe") {
			h.t.Errorf("%s link speed %q", bdf, s)
		}
		if drv, err := h.fs.LinkBase(dev + "/driver"); err != nil {
			h.t.Errorf("%s: driver: %v", bdf, err)
		} else {
			if r := h.resolve(dev + "/driver"); r != "/sys/bus/pci/drivers/"+drv {
				h.t.Errorf("%s driver resolves to %s", bdf, r)
			}
			if r := h.resolve("/sys/bus/pci/drivers/" + drv + "/" + bdf); r != dev {
				h.t.Errorf("driver %s lists %s as %s", drv, bdf, r)
			}
		}
		class := h.read(dev + "/class")
		if strings.HasPrefix(class, "0x0604") {
			sec := h.read(dev + "/secondary_bus_number")
			if other, ok := secondaries[sec]; ok {
				h.t.Errorf("bus %s behind both %s and %s", sec, other, bdf)
			}
			secondaries[sec] = bdf
		}
		// The chain: pci0000:BB, then functions each on the secondary bus
		// of the one before.
		parts := strings.Split(strings.TrimPrefix(dev, "/sys/devices/"), "/")
		if !strings.HasPrefix(parts[0], "pci0000:") || len(parts) < 2 {
			h.t.Errorf("%s: path %s", bdf, dev)
			continue
		}
		bus, _ := strconv.ParseInt(strings.TrimPrefix(parts[0], "pci0000:"), 16, 32)
		for i, fn := range parts[1:] {
			fnBus, err := strconv.ParseInt(fn[5:7], 16, 32)
			if err != nil || fnBus != bus {
				h.t.Errorf("%s: %s sits on bus %#x, its parent's is %#x", bdf, fn, fnBus, bus)
				break
			}
			if i == len(parts)-2 {
				break
			}
			bridge := "/sys/devices/" + strings.Join(parts[:i+2], "/")
			if c := h.read(bridge + "/class"); !strings.HasPrefix(c, "0x0604") {
				h.t.Errorf("%s: %s on the path has class %s", bdf, fn, c)
			}
			sec, _ := strconv.ParseInt(h.read(bridge+"/secondary_bus_number"), 10, 32)
			sub, _ := strconv.ParseInt(h.read(bridge+"/subordinate_bus_number"), 10, 32)
			next, _ := strconv.ParseInt(parts[i+2][5:7], 16, 32)
			if next != sec || next > sub {
				h.t.Errorf("%s: %s has buses %d-%d, child on %d", bdf, fn, sec, sub, next)
			}
			bus = sec
		}
	}
}

// checkInterrupts: one count per online CPU on every numbered line, and
// every device interrupt has /proc/irq/N and a msi_irqs entry (and back).
func (h *host) checkInterrupts() {
	chipBDF := regexp.MustCompile(`^IR-PCI-MSI(X?)-([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])$`)
	lines := strings.Split(strings.TrimRight(h.read("/proc/interrupts"), "\n"), "\n")
	header := strings.Fields(lines[0])
	var want []string
	for _, c := range h.online.CPUs() {
		want = append(want, fmt.Sprintf("CPU%d", c))
	}
	if !slices.Equal(header, want) {
		h.t.Errorf("header has %d columns for %d online CPUs", len(header), h.online.Len())
	}
	ncpu := h.online.Len()
	fromInterrupts := map[string]bool{} // "bdf/N"
	numbered := 0
	for _, line := range lines[1:] {
		label, rest, ok := strings.Cut(line, ":")
		if !ok {
			h.t.Errorf("line without colon: %.60q", line)
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(label))
		if err != nil {
			continue // NMI, LOC, ERR, ...
		}
		numbered++
		f := strings.Fields(rest)
		if len(f) < ncpu+3 {
			h.t.Errorf("IRQ %d: %d fields", n, len(f))
			continue
		}
		for _, c := range f[:ncpu] {
			if _, err := strconv.ParseUint(c, 10, 64); err != nil {
				h.t.Errorf("IRQ %d: count %q", n, c)
			}
		}
		if _, err := strconv.ParseUint(f[ncpu], 10, 64); err == nil {
			h.t.Errorf("IRQ %d: more counts than CPUs", n)
		}
		dir := fmt.Sprintf("/proc/irq/%d", n)
		aff := h.cpus(dir + "/smp_affinity_list")
		eff := h.cpus(dir + "/effective_affinity_list")
		if !aff.Equal(h.online) || !h.mask(dir+"/smp_affinity").Equal(aff) {
			h.t.Errorf("IRQ %d affinity %s", n, aff)
		}
		if eff.Len() != 1 || !eff.Difference(aff).IsEmpty() || !h.mask(dir+"/effective_affinity").Equal(eff) {
			h.t.Errorf("IRQ %d effective affinity %s", n, eff)
		}
		if _, err := h.fs.ReadInt(dir + "/node"); err != nil {
			h.t.Errorf("IRQ %d node: %v", n, err)
		}
		m := chipBDF.FindStringSubmatch(f[ncpu])
		if m == nil {
			continue
		}
		kind := "msi"
		if m[1] == "X" {
			kind = "msix"
		}
		if got := h.read(fmt.Sprintf("/sys/bus/pci/devices/%s/msi_irqs/%d", m[2], n)); got != kind {
			h.t.Errorf("IRQ %d of %s: msi_irqs says %q, want %q", n, m[2], got, kind)
		}
		fromInterrupts[fmt.Sprintf("%s/%d", m[2], n)] = true
	}
	if numbered < 10 {
		h.t.Errorf("only %d numbered interrupt lines", numbered)
	}
	for _, bdf := range h.names("/sys/bus/pci/devices") {
		irqs, err := h.fs.Names("/sys/bus/pci/devices/" + bdf + "/msi_irqs")
		if err != nil {
			continue
		}
		for _, n := range irqs {
			if !fromInterrupts[bdf+"/"+n] {
				h.t.Errorf("%s msi_irqs/%s is not in /proc/interrupts", bdf, n)
			}
		}
	}
}

func (h *host) pciClass(bdf string) (class, vendor string, numa int64) {
	dev := "/sys/bus/pci/devices/" + bdf
	numa, err := h.fs.ReadInt(dev + "/numa_node")
	if err != nil {
		h.t.Errorf("%s: %v", bdf, err)
	}
	return h.read(dev + "/class"), h.read(dev + "/vendor"), numa
}

func (h *host) checkNVIDIA(node Node, e expect) {
	if node.NVMLMissing != e.nvmlMissing {
		h.t.Errorf("NVMLMissing = %v", node.NVMLMissing)
	}
	if e.nvmlMissing {
		h.checkNVMLMissing(node)
		return
	}
	if e.model == "" {
		if node.NVIDIA != nil {
			h.t.Errorf("NVIDIA = %+v on a node without GPUs", node.NVIDIA)
		}
		for _, p := range []string{"/proc/driver/nvidia", "/sys/module/nvidia", "/dev/nvidiactl"} {
			if h.fs.Exists(p) {
				h.t.Errorf("%s exists on a node without NVIDIA", p)
			}
		}
		return
	}
	m := node.NVIDIA
	if m == nil {
		h.t.Fatal("NVIDIA is nil")
	}
	if m.Model != e.model || m.Seed != node.Name || len(m.GPUs) != cmp.Or(e.gpus, 8) {
		h.t.Errorf("machine %s seed %q with %d GPUs", m.Model, m.Seed, len(m.GPUs))
	}
	version := h.read("/proc/driver/nvidia/version")
	if !strings.Contains(version, "  "+m.DriverVersion+"  ") || h.read("/sys/module/nvidia/version") != m.DriverVersion {
		h.t.Errorf("driver %q vs version file %q", m.DriverVersion, version)
	}
	if open := strings.Contains(version, "Open Kernel Module"); open != e.openModule {
		h.t.Errorf("open kernel module = %v, want %v", open, e.openModule)
	}
	if m.CUDAVersion == 0 {
		h.t.Error("CUDA version not set")
	}
	want := map[string]bool{}
	for _, g := range m.GPUs {
		class, vendor, numa := h.pciClass(g.PCIBusID)
		if !strings.HasPrefix(class, "0x0302") || vendor != "0x10de" || numa != int64(g.NUMANode) {
			h.t.Errorf("GPU %s: class %s vendor %s NUMA %d, machine says NUMA %d", g.PCIBusID, class, vendor, numa, g.NUMANode)
		}
		if d := h.read("/sys/bus/pci/devices/" + g.PCIBusID + "/device"); d != e.gpuDevice {
			h.t.Errorf("GPU %s device %s, want %s", g.PCIBusID, d, e.gpuDevice)
		}
		want[g.PCIBusID] = true
	}
	switches := 0
	for _, bdf := range h.names("/sys/bus/pci/devices") {
		class, vendor, _ := h.pciClass(bdf)
		if vendor == "0x10de" && strings.HasPrefix(class, "0x0302") && !want[bdf] {
			h.t.Errorf("GPU %s in the tree is not in the machine", bdf)
		}
		if vendor == "0x10de" && strings.HasPrefix(class, "0x0680") {
			switches++
		}
	}
	if switches != e.nvswitches {
		h.t.Errorf("%d NVSwitches, want %d", switches, e.nvswitches)
	}
}

// checkNVMLMissing: everything of the NVIDIA driver is there but the
// library, and nothing describes GPUs for the NVML fake.
func (h *host) checkNVMLMissing(node Node) {
	if node.NVIDIA != nil {
		h.t.Errorf("NVIDIA = %+v on a node without NVML", node.NVIDIA)
	}
	for _, p := range []string{"/proc/driver/nvidia/version", "/sys/module/nvidia", "/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia7"} {
		if !h.fs.Exists(p) {
			h.t.Errorf("%s missing", p)
		}
	}
	gpus := 0
	for _, bdf := range h.names("/sys/bus/pci/devices") {
		class, vendor, _ := h.pciClass(bdf)
		if vendor != "0x10de" || !strings.HasPrefix(class, "0x0302") {
			continue
		}
		gpus++
		if drv, err := h.fs.LinkBase("/sys/bus/pci/devices/" + bdf + "/driver"); err != nil || drv != "nvidia" {
			h.t.Errorf("GPU %s bound to %q, %v", bdf, drv, err)
		}
	}
	if gpus != 8 {
		h.t.Errorf("%d NVIDIA GPUs on PCI, want 8", gpus)
	}
	err := filepath.WalkDir(h.fs.Root(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), "libnvidia-ml") {
			h.t.Errorf("%s exists", p)
		}
		return err
	})
	if err != nil {
		h.t.Error(err)
	}
}

// checkRDMA: devices, their PCI parents, ports, GID tables, counters and
// verbs devices as the contract has them.
func (h *host) checkRDMA(e expect) {
	devs, err := h.fs.Names("/sys/class/infiniband")
	if len(e.rdma) == 0 {
		if err == nil || h.fs.Exists("/dev/infiniband") || h.fs.Exists("/sys/class/infiniband_verbs") {
			h.t.Errorf("RDMA files on a node without RDMA: %v", devs)
		}
		return
	}
	var wantDevs []string
	for d := range e.rdma {
		wantDevs = append(wantDevs, d)
	}
	slices.Sort(wantDevs)
	if !slices.Equal(devs, wantDevs) {
		h.t.Fatalf("RDMA devices %v, want %v", devs, wantDevs)
	}
	guidForm := regexp.MustCompile(`^[0-9a-f]{4}(:[0-9a-f]{4}){3}$`)
	guids := map[string]string{}
	lids := map[string]string{}
	for _, dev := range devs {
		dir := "/sys/class/infiniband/" + dev
		if t, _ := h.fs.Readlink(dir + "/device"); !strings.HasPrefix(t, "../../../0000:") {
			h.t.Errorf("%s device link %q", dev, t)
		}
		pci := h.resolve(dir + "/device")
		if h.read(pci+"/vendor") != "0x15b3" || h.resolve(dir) != pci+"/infiniband/"+dev {
			h.t.Errorf("%s: parent %s", dev, pci)
		}
		if h.read(dir+"/node_type") != "1: CA" {
			h.t.Errorf("%s node_type", dev)
		}
		guid := h.read(dir + "/node_guid")
		if other, ok := guids[guid]; ok || !guidForm.MatchString(guid) {
			h.t.Errorf("%s node_guid %q (also %s)", dev, guid, other)
		}
		guids[guid] = dev
		port := dir + "/ports/1"
		layer := h.read(port + "/link_layer")
		if layer != e.rdma[dev] || h.read(port+"/state") != "4: ACTIVE" || h.read(port+"/phys_state") != "5: LinkUp" {
			h.t.Errorf("%s port: %s", dev, layer)
		}
		if r, ok := e.rate[dev]; ok && h.read(port+"/rate") != r {
			h.t.Errorf("%s rate %q, want %q", dev, h.read(port+"/rate"), r)
		}
		netdevs := h.names(pci + "/net")
		if len(netdevs) != 1 {
			h.t.Fatalf("%s: netdevs %v", dev, netdevs)
		}
		gids := h.names(port + "/gids")
		if len(gids) != gidTableSize {
			h.t.Errorf("%s: %d GIDs", dev, len(gids))
		}
		var populated []string
		for i := range gidTableSize {
			g := h.read(fmt.Sprintf("%s/gids/%d", port, i))
			typ := fmt.Sprintf("%s/gid_attrs/types/%d", port, i)
			ndev := fmt.Sprintf("%s/gid_attrs/ndevs/%d", port, i)
			if g == "0000:0000:0000:0000:0000:0000:0000:0000" {
				if h.fs.Exists(typ) || h.fs.Exists(ndev) {
					h.t.Errorf("%s: empty GID %d has attributes", dev, i)
				}
				continue
			}
			entry := g + " " + h.read(typ)
			if layer == "Ethernet" {
				if nd := h.read(ndev); nd != netdevs[0] {
					h.t.Errorf("%s GID %d ndev %q, netdev %s", dev, i, nd, netdevs[0])
				}
			} else if h.fs.Exists(ndev) {
				h.t.Errorf("%s: InfiniBand GID %d has a netdev", dev, i)
			}
			populated = append(populated, entry)
		}
		lid, smLID := h.read(port+"/lid"), h.read(port+"/sm_lid")
		if layer == "InfiniBand" {
			want := "fe80:0000:0000:0000:" + guid + " IB/RoCE v1"
			if len(populated) != 1 || populated[0] != want {
				h.t.Errorf("%s GIDs %q, want [%q]", dev, populated, want)
			}
			if other, ok := lids[lid]; ok || lid == "0x0" || smLID != "0x1" {
				h.t.Errorf("%s lid %s (also %s) sm_lid %s", dev, lid, other, smLID)
			}
			lids[lid] = dev
		} else {
			if len(populated) != 4 || !strings.HasPrefix(populated[0], "fe80:") || !strings.HasSuffix(populated[1], " RoCE v2") ||
				!strings.HasPrefix(populated[2], "0000:0000:0000:0000:0000:ffff:") || !strings.HasSuffix(populated[3], " RoCE v2") {
				h.t.Errorf("%s RoCE GIDs %q", dev, populated)
			}
			if lid != "0x0" || smLID != "0x0" {
				h.t.Errorf("%s RoCE lid %s sm_lid %s", dev, lid, smLID)
			}
		}
		seen := map[string]string{}
		for _, sub := range []string{"counters", "hw_counters"} {
			for _, c := range h.names(port + "/" + sub) {
				v := h.read(port + "/" + sub + "/" + c)
				n, err := strconv.ParseUint(v, 10, 64)
				if c == "lifespan" {
					if v != "10" {
						h.t.Errorf("%s lifespan %q", dev, v)
					}
					continue
				}
				if err != nil || n == 0 || seen[v] != "" {
					h.t.Errorf("%s %s/%s = %q (same as %s)", dev, sub, c, v, seen[v])
				}
				seen[v] = c
			}
		}
		if c, hw := h.names(port+"/counters"), h.names(port+"/hw_counters"); !slices.Equal(c, wantCounters()) || !slices.Equal(hw, wantHWCounters()) {
			h.t.Errorf("%s counters %v, hw_counters %v", dev, c, hw)
		}
	}
	verbs := h.names("/sys/class/infiniband_verbs")
	var ibdevs []string
	for _, v := range verbs {
		if v == "abi_version" {
			continue
		}
		ibdev := h.read("/sys/class/infiniband_verbs/" + v + "/ibdev")
		// Registration order makes uverbsN the verbs device of mlx5_N here.
		if strings.TrimPrefix(v, "uverbs") != strings.TrimPrefix(ibdev, "mlx5_") {
			h.t.Errorf("%s is the verbs device of %s", v, ibdev)
		}
		ibdevs = append(ibdevs, ibdev)
		if !h.fs.Exists("/dev/infiniband/" + v) {
			h.t.Errorf("no /dev/infiniband/%s", v)
		}
	}
	slices.Sort(ibdevs)
	if !slices.Equal(ibdevs, devs) || h.read("/sys/class/infiniband_verbs/abi_version") != "6" || !h.fs.Exists("/dev/infiniband/rdma_cm") {
		h.t.Errorf("verbs devices for %v, want one per RDMA device %v", ibdevs, devs)
	}
}

func (h *host) checkNet(e expect) {
	ifs := h.names("/sys/class/net")
	if !slices.Contains(ifs, "lo") || h.resolve("/sys/class/net/lo") != "/sys/devices/virtual/net/lo" {
		h.t.Errorf("no lo in %v", ifs)
	}
	for _, name := range ifs {
		dir := h.resolve("/sys/class/net/" + name)
		for _, f := range []string{"mtu", "address", "operstate"} {
			if !h.fs.Exists(dir + "/" + f) {
				h.t.Errorf("%s has no %s", name, f)
			}
		}
		if name == "lo" {
			continue
		}
		if pci := h.resolve(dir + "/device"); dir != pci+"/net/"+name {
			h.t.Errorf("%s: device %s", name, pci)
		}
	}
	for name, mtu := range e.netMTU {
		if got, err := h.fs.ReadInt("/sys/class/net/" + name + "/mtu"); err != nil || got != int64(mtu) {
			h.t.Errorf("%s MTU %d %v, want %d", name, got, err, mtu)
		}
	}
}

func (h *host) checkKernel(e expect) {
	if got := h.read("/proc/sys/kernel/osrelease"); got != "6.8.0-49-generic" {
		h.t.Errorf("osrelease %q", got)
	}
	mods := map[string]bool{}
	for _, line := range strings.Split(h.read("/proc/modules"), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[4] != "Live" || !strings.HasPrefix(f[5], "0xffffffff") {
			h.t.Errorf("module line %q", line)
			continue
		}
		mods[f[0]] = true
		if f[3] != "-" {
			for _, u := range strings.Split(strings.TrimSuffix(f[3], ","), ",") {
				if !mods[u] {
					h.t.Errorf("%s used by %s, which is not listed before it", f[0], u)
				}
			}
		}
	}
	if mods["nvidia_peermem"] != e.peermem || mods["nvidia"] != (e.model != "") || mods["mlx5_ib"] != (len(e.rdma) > 0) {
		h.t.Errorf("modules: peermem %v nvidia %v mlx5_ib %v", mods["nvidia_peermem"], mods["nvidia"], mods["mlx5_ib"])
	}
	for p, want := range map[string]string{
		"/proc/sys/net/core/rmem_max":                 "212992",
		"/proc/sys/net/ipv4/tcp_rmem":                 "4096\t131072\t6291456",
		"/proc/sys/net/ipv4/tcp_congestion_control":   "cubic",
		"/proc/sys/vm/swappiness":                     "60",
		"/proc/sys/kernel/numa_balancing":             "1",
		"/sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never",
	} {
		if got := h.read(p); got != want {
			h.t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if h.fs.Exists("/proc/sys/kernel/sched_migration_cost_ns") {
		h.t.Error("sched_migration_cost_ns exists on a 6.8 kernel")
	}
}

// checkRails: GPU i and mlx5_i sit under the same PCIe switch (their paths
// share everything above the downstream ports), and no two rails share one.
func (h *host) checkRails(node Node) {
	switches := map[string]int{}
	for i, g := range node.NVIDIA.GPUs {
		gpu := h.resolve("/sys/bus/pci/devices/" + g.PCIBusID)
		nic := h.resolve(fmt.Sprintf("/sys/class/infiniband/mlx5_%d/device", i))
		up := filepath.Dir(filepath.Dir(gpu))
		if filepath.Dir(filepath.Dir(nic)) != up || filepath.Dir(gpu) == filepath.Dir(nic) {
			h.t.Errorf("rail %d: GPU %s and NIC %s are not on one switch", i, gpu, nic)
		}
		if h.read(filepath.Dir(gpu)+"/vendor") != h.read(up+"/vendor") {
			h.t.Errorf("rail %d: downstream and upstream ports differ", i)
		}
		if other, ok := switches[up]; ok {
			h.t.Errorf("rails %d and %d share switch %s", other, i, up)
		}
		switches[up] = i
	}
}

func wantCounters() []string {
	return sortedCopy("port_xmit_data", "port_rcv_data", "port_xmit_packets", "port_rcv_packets",
		"port_rcv_errors", "port_xmit_discards", "symbol_error", "link_downed",
		"port_rcv_remote_physical_errors", "port_xmit_constraint_errors", "port_rcv_constraint_errors",
		"local_link_integrity_errors", "excessive_buffer_overrun_errors", "VL15_dropped", "port_xmit_wait",
		"unicast_xmit_packets", "unicast_rcv_packets", "multicast_xmit_packets", "multicast_rcv_packets")
}

// wantHWCounters is every mlx5 hw_counter the reader reads, and lifespan.
func wantHWCounters() []string {
	return sortedCopy(append(slices.Clone(rdma.HWCounterNames), "lifespan")...)
}

func sortedCopy(s ...string) []string {
	slices.Sort(s)
	return s
}
