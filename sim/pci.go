package sim

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/gpunode/gpunode/internal/cpuset"
)

// pciID is what identifies a kind of PCI function: its config-space ids,
// the driver that binds it and its PCIe link.
type pciID struct {
	class, vendor, device string
	subVendor, subDevice  string
	revision              string
	driver                string // "" when unbound
	gen, width            int    // PCIe link; trained at its maximum
	// curGen, curWidth, when set, are a link trained below its maximum.
	curGen, curWidth int
}

// pciDev is a host bridge, a PCI bridge or a PCI device in the tree.
type pciDev struct {
	bdf    string // "0000:18:00.0"; "" for a host bridge
	dir    string // host path of its sysfs directory
	numa   int
	parent *pciDev
	driver string
	// Bridges: the bus range behind them. A host bridge's secondary bus is
	// its root bus.
	bridge, hostBridge     bool
	secondary, subordinate int
	// Interrupts: action names per MSI/MSI-X vector, in vector order.
	msix    bool
	vectors []string
}

// linkSpeed is the kernel's text for a PCIe generation.
func linkSpeed(gen int) string {
	switch gen {
	case 1:
		return "2.5 GT/s PCIe"
	case 2:
		return "5.0 GT/s PCIe"
	case 3:
		return "8.0 GT/s PCIe"
	case 4:
		return "16.0 GT/s PCIe"
	case 5:
		return "32.0 GT/s PCIe"
	case 6:
		return "64.0 GT/s PCIe"
	}
	return "Unknown"
}

// hostBridge adds the root of a PCI hierarchy, /sys/devices/pci0000:BB.
func (b *builder) hostBridge(bus, numa int) *pciDev {
	d := &pciDev{
		dir:  fmt.Sprintf("/sys/devices/pci0000:%02x", bus),
		numa: numa, bridge: true, hostBridge: true,
		secondary: bus, subordinate: bus,
	}
	b.takeBus(bus, d.dir)
	b.t.dir(d.dir)
	b.pci = append(b.pci, d)
	return d
}

// bridge adds a PCI-to-PCI bridge (root port or switch port) in slot of the
// parent's secondary bus, with bus secondary behind it.
func (b *builder) bridge(parent *pciDev, slot, secondary int, id pciID) *pciDev {
	d := b.function(parent, slot, 0, id)
	d.bridge, d.secondary, d.subordinate = true, secondary, secondary
	if secondary <= parent.secondary {
		b.t.fail(fmt.Errorf("bridge %s: secondary bus %#x not above its own bus %#x", d.bdf, secondary, parent.secondary))
	}
	b.takeBus(secondary, d.bdf)
	return d
}

// endpoint adds function fn of the device at slot 0 of parent's secondary
// bus, the place of every device behind a PCIe port.
func (b *builder) endpoint(parent *pciDev, fn int, id pciID) *pciDev {
	return b.function(parent, 0, fn, id)
}

// function writes a PCI function's directory, its /sys/bus/pci link and
// its driver binding.
func (b *builder) function(parent *pciDev, slot, fn int, id pciID) *pciDev {
	if !parent.bridge {
		b.t.fail(fmt.Errorf("%s is not a bridge", parent.dir))
	}
	bdf := fmt.Sprintf("0000:%02x:%02x.%d", parent.secondary, slot, fn)
	d := &pciDev{bdf: bdf, dir: parent.dir + "/" + bdf, numa: parent.numa, parent: parent, driver: id.driver}
	b.pci = append(b.pci, d)
	t := b.t
	for _, a := range [][2]string{
		{"class", id.class},
		{"vendor", id.vendor},
		{"device", id.device},
		{"subsystem_vendor", id.subVendor},
		{"subsystem_device", id.subDevice},
		{"revision", id.revision},
		{"numa_node", itoa(d.numa)},
		{"local_cpulist", b.nodeCPUs(d.numa).String()},
		{"local_cpus", b.nodeCPUs(d.numa).Mask(b.words)},
		{"current_link_speed", linkSpeed(cmp.Or(id.curGen, id.gen))},
		{"current_link_width", itoa(cmp.Or(id.curWidth, id.width))},
		{"max_link_speed", linkSpeed(id.gen)},
		{"max_link_width", itoa(id.width)},
		{"enable", "1"},
	} {
		t.attr(d.dir+"/"+a[0], a[1])
	}
	t.link("/sys/bus/pci/devices/"+bdf, d.dir)
	if id.driver != "" {
		drv := "/sys/bus/pci/drivers/" + id.driver
		t.link(d.dir+"/driver", drv)
		t.link(drv+"/"+bdf, d.dir)
	}
	return d
}

// nodeCPUs are the CPUs local to a NUMA node; all online CPUs for -1.
func (b *builder) nodeCPUs(numa int) cpuset.Set {
	if numa < 0 || numa >= len(b.nodes) {
		return b.online
	}
	return b.nodes[numa]
}

func (b *builder) takeBus(bus int, by string) {
	if old, ok := b.buses[bus]; ok {
		b.t.fail(fmt.Errorf("bus %#x used by both %s and %s", bus, old, by))
		return
	}
	b.buses[bus] = by
}

// irqs gives the device MSI-X (or MSI) vectors with these action names.
func (d *pciDev) irqs(msix bool, names ...string) {
	d.msix = msix
	d.vectors = append(d.vectors, names...)
}

// pcieSwitch is a PCIe switch behind root port 01.0 of its own host bridge,
// the way the CPU's PCIe stacks of a DGX each feed one switch.
type pcieSwitch struct {
	b  *builder
	up *pciDev // the switch's upstream port
}

// newSwitch adds host bridge pci0000:<root>, its root port <root>:01.0
// (bus root+1) and the switch's upstream port (internal bus root+2).
func (b *builder) newSwitch(root, numa int) pcieSwitch {
	hb := b.hostBridge(root, numa)
	rp := b.rootPortAt(hb, 0x01, root+1)
	return pcieSwitch{b: b, up: b.bridge(rp, 0x00, root+2, switchPortID())}
}

// port adds the downstream port whose secondary bus is bus. Its slot on the
// internal bus follows from the bus number; bus numbers left unused between
// ports are the firmware's hot-plug padding.
func (s pcieSwitch) port(bus int) *pciDev {
	return s.b.bridge(s.up, bus-s.up.secondary-1, bus, switchPortID())
}

// rootPort adds host bridge pci0000:<root> with one root port at slot whose
// secondary bus is bus: a device directly on a CPU's PCIe lanes.
func (b *builder) rootPort(root, slot, bus, numa int) *pciDev {
	return b.rootPortAt(b.hostBridge(root, numa), slot, bus)
}

// finishBuses works out each bridge's subordinate bus (the highest bus
// behind it) and writes the bridges' bus number files.
func (b *builder) finishBuses() {
	for _, d := range b.pci {
		if !d.bridge {
			continue
		}
		for p := d.parent; p != nil; p = p.parent {
			p.subordinate = max(p.subordinate, d.secondary)
		}
	}
	// Bridges that share a parent must own disjoint bus ranges; host
	// bridges (parent nil) share the whole bus space.
	byParent := make(map[*pciDev][]*pciDev)
	var parents []*pciDev
	for _, d := range b.pci {
		if d.bridge {
			if _, ok := byParent[d.parent]; !ok {
				parents = append(parents, d.parent)
			}
			byParent[d.parent] = append(byParent[d.parent], d)
		}
	}
	for _, p := range parents {
		kids := slices.SortedFunc(slices.Values(byParent[p]), func(x, y *pciDev) int { return cmp.Compare(x.secondary, y.secondary) })
		for i := 1; i < len(kids); i++ {
			if kids[i].secondary <= kids[i-1].subordinate {
				b.t.fail(fmt.Errorf("bridges %s and %s have overlapping bus ranges", kids[i-1].dir, kids[i].dir))
			}
		}
	}
	for _, d := range b.pci {
		if d.bridge && !d.hostBridge {
			// sysfs prints bus numbers in decimal.
			b.t.attr(d.dir+"/secondary_bus_number", itoa(d.secondary))
			b.t.attr(d.dir+"/subordinate_bus_number", itoa(d.subordinate))
		}
	}
}
