package topology

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/internal/cpuset"
	"github.com/gpunode/gpunode/internal/hostfs"
)

const (
	nodeDir       = "/sys/devices/system/node"
	pciDevicesDir = "/sys/bus/pci/devices"
)

// Discover reads the host's topology under fsys. It returns everything it
// could read; what it could not is joined in the error and listed, one
// message per problem, in Topology.Errors. A broken PCI device or file
// never hides the others.
func Discover(ctx context.Context, fsys hostfs.FS) (Topology, error) {
	d := &discovery{fsys: fsys}
	var t Topology
	// Order matters: the NUMA fallback needs the online CPUs.
	steps := []func(*Topology){d.kernel, d.cpus, d.cmdline, d.numa, d.hugepages, d.modules, d.nvidia, d.imex, d.machine}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			d.fail(err)
			break
		}
		step(&t)
	}
	if ctx.Err() == nil {
		d.pci(ctx, &t)
	}
	for _, err := range d.errs {
		t.Errors = append(t.Errors, err.Error())
	}
	return t, errors.Join(d.errs...)
}

// discovery holds the state of one Discover call.
type discovery struct {
	fsys hostfs.FS
	errs []error
	// interrupts maps IRQ numbers to action names; read once, on first use.
	interrupts     map[int]string
	interruptsRead bool
	// cmdlineText is /proc/cmdline, for the steps after the one that reads it.
	cmdlineText string
}

func (d *discovery) fail(err error) { d.errs = append(d.errs, err) }

// readText reads a text attribute. The error names the host path and
// keeps the cause, so errors.Is(err, fs.ErrNotExist) tells absent files.
func readText(fsys hostfs.FS, path string) (string, error) {
	s, err := fsys.ReadString(path)
	if err != nil {
		return "", pathErr("read", path, err)
	}
	return s, nil
}

// pathErr says op failed on the host path. hostfs's errors may carry the
// path under the host root; the host path is what a reader wants.
func pathErr(op, path string, err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		err = pe.Err
	}
	return fmt.Errorf("%s %s: %w", op, path, err)
}

// required reads a file that every Linux host has.
func (d *discovery) required(path string) (string, bool) {
	s, err := readText(d.fsys, path)
	if err != nil {
		d.fail(err)
		return "", false
	}
	return s, true
}

// optional reads a file whose absence is normal.
func (d *discovery) optional(path string) (string, bool) {
	s, err := readText(d.fsys, path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			d.fail(err)
		}
		return "", false
	}
	return s, true
}

func (d *discovery) kernel(t *Topology) {
	const path = "/proc/sys/kernel/osrelease"
	if s, ok := d.required(path); ok {
		if s == "" {
			d.fail(fmt.Errorf("%s: empty", path))
		}
		t.Kernel = s
	}
	if s, ok := d.optional("/proc/sys/kernel/hostname"); ok {
		t.Hostname = s
	}
}

func (d *discovery) cpus(t *Topology) {
	const path = "/sys/devices/system/cpu/online"
	s, ok := d.required(path)
	if !ok {
		return
	}
	cpus, err := cpuset.Parse(s)
	switch {
	case err != nil:
		d.fail(fmt.Errorf("%s: %w", path, err))
	case cpus.IsEmpty():
		d.fail(fmt.Errorf("%s: no online CPUs", path))
	default:
		t.OnlineCPUs = cpus
	}
}

func (d *discovery) cmdline(t *Topology) {
	const path = "/proc/cmdline"
	s, ok := d.required(path)
	if !ok {
		return
	}
	d.cmdlineText = s
	c, err := parseCmdline(s)
	if err != nil {
		d.fail(fmt.Errorf("%s: %w", path, err))
	}
	t.IsolatedCPUs, t.IsolatedCPUFlags, t.NohzFullCPUs = c.Isolated, c.IsolatedFlags, c.NohzFull
}

// hugepages compares the command line's huge page reservations with the
// pools the kernel allocated (after numa: the per-node counts need the
// nodes).
func (d *discovery) hugepages(t *Topology) {
	// What the kernel ignores on its command line is the operator's to
	// fix (verify advises), not a failure to read the host.
	c, err := parseHugeCmdline(d.cmdlineText)
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			t.HugePagesIgnored = append(t.HugePagesIgnored, e.Error())
		}
	} else if err != nil {
		t.HugePagesIgnored = append(t.HugePagesIgnored, err.Error())
	}
	if len(c.Requests) == 0 {
		return
	}
	defaultKB := c.DefaultKB
	if defaultKB == 0 && slices.ContainsFunc(c.Requests, func(r hugeRequest) bool { return r.SizeKB == 0 }) {
		const path = "/proc/meminfo"
		s, ok := d.required(path)
		if !ok {
			return
		}
		kb, ok, err := parseHugepagesize(s)
		switch {
		case err != nil:
			d.fail(fmt.Errorf("%s: %w", path, err))
		case !ok:
			t.HugePagesIgnored = append(t.HugePagesIgnored, "hugepages= of the default size: the kernel has no hugetlb support (no Hugepagesize in "+path+")")
		}
		defaultKB = kb
	}
	seen := map[uint64]bool{}
	for _, r := range c.Requests {
		kb := cmp.Or(r.SizeKB, defaultKB)
		if kb == 0 || seen[kb] {
			continue // no default size known (reported), or counted once already
		}
		seen[kb] = true
		t.HugePages = append(t.HugePages, d.hugePool(t, kb, r))
	}
	slices.SortFunc(t.HugePages, func(a, b HugePages) int { return cmp.Compare(a.SizeKB, b.SizeKB) })
}

// hugePool reads the kernel's pool of kb pages, in all and per node.
func (d *discovery) hugePool(t *Topology, kb uint64, r hugeRequest) HugePages {
	h := HugePages{SizeKB: kb, Requested: r.Pages, RequestedPerNode: r.PerNode}
	sub := fmt.Sprintf("hugepages/hugepages-%dkB/nr_hugepages", kb)
	s, ok := d.optional("/sys/kernel/mm/" + sub)
	if !ok {
		h.NoPool = true
		return h
	}
	n, err := parseCount(s)
	if err != nil {
		d.fail(fmt.Errorf("/sys/kernel/mm/%s: %w", sub, err))
		return h
	}
	h.Allocated = n
	for _, node := range t.NUMANodes {
		path := fmt.Sprintf("%s/node%d/%s", nodeDir, node.ID, sub)
		s, ok := d.optional(path) // absent on a kernel without NUMA
		if !ok {
			continue
		}
		n, err := parseCount(s)
		if err != nil {
			d.fail(fmt.Errorf("%s: %w", path, err))
			continue
		}
		h.AllocatedPerNode = append(h.AllocatedPerNode, NodePages{Node: node.ID, Pages: n})
	}
	return h
}

func (d *discovery) modules(t *Topology) {
	const path = "/proc/modules"
	s, err := readText(d.fsys, path)
	if err != nil {
		// A kernel built without module support (CONFIG_MODULES=n, common
		// in VMs) has no /proc/modules: nothing is loaded.
		if !errors.Is(err, fs.ErrNotExist) {
			d.fail(err)
		}
		return
	}
	names, err := parseModules(s)
	if err != nil {
		d.fail(fmt.Errorf("%s: %w", path, err))
	}
	t.Modules = names
}

// HasModule reports whether the kernel module name is loaded. Module names
// in /proc/modules use underscores, so "nvidia-peermem" finds
// "nvidia_peermem" as modprobe would.
func (t Topology) HasModule(name string) bool {
	_, ok := slices.BinarySearch(t.Modules, strings.ReplaceAll(name, "-", "_"))
	return ok
}

func (d *discovery) nvidia(t *Topology) {
	const path = "/proc/driver/nvidia/version"
	s, ok := d.optional(path)
	if !ok {
		return // no NVIDIA driver loaded
	}
	m, err := parseNVIDIAVersion(s)
	if err != nil {
		d.fail(fmt.Errorf("%s: %w", path, err))
		return
	}
	t.NVIDIAKernelModule = &m
}

func (d *discovery) numa(t *Topology) {
	entries, err := d.fsys.Names(nodeDir)
	if errors.Is(err, fs.ErrNotExist) {
		d.numaFallback(t)
		return
	}
	if err != nil {
		d.fail(pathErr("list", nodeDir, err))
		return
	}
	var ids []int
	if s, ok := d.required(nodeDir + "/online"); ok {
		set, err := cpuset.Parse(s) // node lists use the cpulist format
		if err != nil {
			d.fail(fmt.Errorf("%s/online: %w", nodeDir, err))
		}
		ids = set.CPUs()
	}
	if len(ids) == 0 {
		// Without a usable online list, take the nodeN directories.
		for _, e := range entries {
			if n, ok := strings.CutPrefix(e, "node"); ok && isDecimal(n) && len(n) < 6 {
				id, _ := strconv.Atoi(n)
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
	}
	for _, id := range ids {
		t.NUMANodes = append(t.NUMANodes, d.numaNode(id))
	}
}

// numaFallback describes a kernel without NUMA support (no
// /sys/devices/system/node): one node 0 with every CPU and all memory.
func (d *discovery) numaFallback(t *Topology) {
	n := NUMANode{ID: 0, CPUs: t.OnlineCPUs}
	const path = "/proc/meminfo"
	if s, ok := d.required(path); ok {
		if _, mem, err := parseMemTotal(s); err != nil {
			d.fail(fmt.Errorf("%s: %w", path, err))
		} else {
			n.MemoryBytes = mem
		}
	}
	t.NUMANodes = []NUMANode{n}
}

func (d *discovery) numaNode(id int) NUMANode {
	n := NUMANode{ID: id}
	dir := fmt.Sprintf("%s/node%d", nodeDir, id)
	if s, ok := d.required(dir + "/cpulist"); ok {
		cpus, err := cpuset.Parse(s)
		if err != nil {
			d.fail(fmt.Errorf("%s/cpulist: %w", dir, err))
		}
		n.CPUs = cpus
	}
	if s, ok := d.required(dir + "/meminfo"); ok {
		node, mem, err := parseMemTotal(s)
		switch {
		case err != nil:
			d.fail(fmt.Errorf("%s/meminfo: %w", dir, err))
		case node != id:
			d.fail(fmt.Errorf("%s/meminfo: MemTotal line is for node %d", dir, node))
		default:
			n.MemoryBytes = mem
		}
	}
	if s, ok := d.required(dir + "/distance"); ok {
		dist, err := parseDistances(s)
		if err != nil {
			d.fail(fmt.Errorf("%s/distance: %w", dir, err))
		}
		n.Distances = dist
	}
	return n
}

// pci scans /sys/bus/pci/devices for the devices that matter, with their
// interrupts.
func (d *discovery) pci(ctx context.Context, t *Topology) {
	names, err := d.fsys.Names(pciDevicesDir)
	if err != nil {
		// No PCI bus at all (some containers and platforms) is not an error.
		if !errors.Is(err, fs.ErrNotExist) {
			d.fail(pathErr("list", pciDevicesDir, err))
		}
		return
	}
	for _, addr := range names {
		if err := ctx.Err(); err != nil {
			d.fail(err)
			break
		}
		dev, irqs, keep, errs := d.pciDevice(addr)
		if !keep {
			d.errs = append(d.errs, errs...)
			continue
		}
		for _, irq := range irqs {
			if err := d.irq(&irq); err != nil {
				errs = append(errs, err)
			}
			t.IRQs = append(t.IRQs, irq)
		}
		for _, err := range errs {
			dev.Errors = append(dev.Errors, err.Error())
		}
		d.errs = append(d.errs, errs...)
		t.PCIDevices = append(t.PCIDevices, dev)
	}
	slices.SortFunc(t.PCIDevices, func(a, b PCIDevice) int { return strings.Compare(a.Address, b.Address) })
	slices.SortFunc(t.IRQs, func(a, b IRQ) int {
		return cmp.Or(cmp.Compare(a.Number, b.Number), strings.Compare(a.PCIAddress, b.PCIAddress))
	})
}

// pciDevice reads one device. keep is false for devices we do not care
// about and for those whose class or vendor cannot be read (the errors then
// say why); a kept device is reported with the errors of the attributes
// that failed.
func (d *discovery) pciDevice(addr string) (dev PCIDevice, irqs []IRQ, keep bool, errs []error) {
	base := pciDevicesDir + "/" + addr
	if !isBDF(addr) {
		return dev, nil, false, []error{fmt.Errorf("%s: not a PCI address", base)}
	}
	class, err := readHexAttr(d.fsys, base+"/class", parseClass)
	if err != nil {
		return dev, nil, false, []error{err}
	}
	vendor, err := readHexAttr(d.fsys, base+"/vendor", parseID)
	if err != nil {
		return dev, nil, false, []error{err}
	}
	kind, ok := classify(class, vendor)
	if !ok {
		return dev, nil, false, nil
	}
	dev = PCIDevice{
		Address:  addr,
		Kind:     kind,
		Class:    fmt.Sprintf("0x%06x", class),
		Vendor:   fmt.Sprintf("0x%04x", vendor),
		NUMANode: -1,
	}
	fail := func(err error) { errs = append(errs, err) }

	if id, err := readHexAttr(d.fsys, base+"/device", parseID); err != nil {
		fail(err)
	} else {
		dev.Device = fmt.Sprintf("0x%04x", id)
	}
	if drv, err := d.fsys.LinkBase(base + "/driver"); err == nil {
		dev.Driver = drv
	} else if !errors.Is(err, fs.ErrNotExist) { // absent: no driver bound
		fail(pathErr("readlink", base+"/driver", err))
	}
	// numa_node is absent on kernels without NUMA support.
	if s, err := readText(d.fsys, base+"/numa_node"); err == nil {
		if dev.NUMANode, err = parseNUMANode(s); err != nil {
			fail(fmt.Errorf("%s/numa_node: %w", base, err))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		fail(err)
	}
	// local_cpulist appeared in Linux 2.6.29; older kernels lack it.
	if s, err := readText(d.fsys, base+"/local_cpulist"); err == nil {
		if dev.LocalCPUs, err = cpuset.Parse(s); err != nil {
			fail(fmt.Errorf("%s/local_cpulist: %w", base, err))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		fail(err)
	}
	dev.Link = d.pcieLink(base, fail)
	if resolved, err := d.fsys.Resolve(base); err != nil {
		fail(pathErr("resolve", base, err))
	} else if dev.Path, err = parsePCIPath(resolved, addr); err != nil {
		fail(fmt.Errorf("%s: %w", base, err))
	}
	dev.PCIe = d.pcieConfig(dev, fail)
	if dev.IOMMUGroupType, err = readIOMMUGroupType(d.fsys, addr); err != nil {
		fail(err)
	}
	// Only SR-IOV virtual functions have a physfn link.
	if _, err := d.fsys.Readlink(base + "/physfn"); err == nil {
		dev.VirtualFunction = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		fail(pathErr("readlink", base+"/physfn", err))
	}
	// msi_irqs is absent for devices without MSI/MSI-X enabled (no driver,
	// or legacy INTx).
	names, err := d.fsys.Names(base + "/msi_irqs")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		fail(pathErr("list", base+"/msi_irqs", err))
	}
	for _, name := range names {
		if !isDecimal(name) || len(name) > 9 {
			fail(fmt.Errorf("%s/msi_irqs/%s: not an IRQ number", base, truncate(name, 40)))
			continue
		}
		n, _ := strconv.Atoi(name)
		irqs = append(irqs, IRQ{Number: n, PCIAddress: addr})
	}
	return dev, irqs, true, errs
}

// parseNUMANode reads a device's numa_node: a node number, or -1 when the
// platform (ACPI _PXM) does not say.
func parseNUMANode(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < -1 || n > 1<<16 {
		return -1, fmt.Errorf("%q: want a node number or -1", truncate(s, 40))
	}
	return n, nil
}

func readHexAttr(fsys hostfs.FS, path string, parse func(string) (uint32, error)) (uint32, error) {
	s, err := readText(fsys, path)
	if err != nil {
		return 0, err
	}
	v, err := parse(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// pcieLink reads the link attributes, which only PCIe devices have: nil
// when none is there.
func (d *discovery) pcieLink(base string, fail func(error)) *PCIeLink {
	var l PCIeLink
	found := false
	read := func(name string, parse func(string) (int, error)) (string, int) {
		s, err := readText(d.fsys, base+"/"+name)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				fail(err)
			}
			return "", 0
		}
		found = true
		v, err := parse(s)
		if err != nil {
			fail(fmt.Errorf("%s/%s: %w", base, name, err))
		}
		return s, v
	}
	l.CurrentSpeed, l.CurrentGen = read("current_link_speed", parseLinkSpeed)
	l.MaxSpeed, l.MaxGen = read("max_link_speed", parseLinkSpeed)
	_, l.CurrentWidth = read("current_link_width", parseLinkWidth)
	_, l.MaxWidth = read("max_link_width", parseLinkWidth)
	if !found {
		return nil
	}
	return &l
}

// irq fills in the action name and affinity of one interrupt.
func (d *discovery) irq(irq *IRQ) error {
	var errs []error
	if !d.interruptsRead {
		d.interruptsRead = true
		names, err := d.readInterrupts()
		if err != nil {
			// Reported once, not per device.
			d.fail(err)
		}
		d.interrupts = names
	}
	// An IRQ that is allocated but not requested has no line in
	// /proc/interrupts, hence no name: that is not an error.
	irq.Name = d.interrupts[irq.Number]
	path := fmt.Sprintf("/proc/irq/%d/smp_affinity_list", irq.Number)
	if s, err := readText(d.fsys, path); err != nil {
		errs = append(errs, err)
	} else if irq.Affinity, err = cpuset.Parse(s); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	}
	return errors.Join(errs...)
}

// readInterrupts streams /proc/interrupts into parseInterrupts; see there
// why it is not read whole.
func (d *discovery) readInterrupts() (map[int]string, error) {
	const path = "/proc/interrupts"
	f, err := d.fsys.Open(path)
	if err != nil {
		return nil, pathErr("read", path, err)
	}
	defer f.Close()
	names, err := parseInterrupts(f)
	if err != nil {
		return names, fmt.Errorf("%s: %w", path, err)
	}
	return names, nil
}
