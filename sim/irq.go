package sim

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/internal/cpuset"
)

// irqPrec is the width of the IRQ number column. The kernel uses 3 digits
// plus one per power of ten of nr_irqs above 1000; servers with many CPUs
// and IO-APICs have a few thousand.
const irqPrec = 4

// firstDynamicIRQ is where MSI interrupts start: after the GSIs of all
// IO-APICs (one per PCIe stack on these servers).
const firstDynamicIRQ = 120

// irqLine is one numbered line of /proc/interrupts.
type irqLine struct {
	n      int
	chip   string
	hwirq  int
	typ    string // "edge", "fasteoi"
	action string
	numa   int
	cpu    int    // the CPU it is delivered to (effective affinity)
	count  uint64 // interrupts so far, all on cpu
}

// loadRank is the order in which drivers bind at boot, which is the order
// in which their interrupts get numbers.
func loadRank(driver string) int {
	return slices.Index([]string{"pcieport", "nvme", "i40e", "mlx5_core", "nvidia-nvswitch", "nvidia", "amdgpu"}, driver)
}

// interrupts numbers every device vector and writes /proc/interrupts,
// /proc/irq/<N>/ and the devices' msi_irqs/.
func (b *builder) interrupts() {
	lines := []irqLine{
		{n: 0, chip: "IR-IO-APIC", hwirq: 2, typ: "edge", action: "timer", count: 44},
		{n: 8, chip: "IR-IO-APIC", hwirq: 8, typ: "edge", action: "rtc0"},
		{n: 9, chip: "IR-IO-APIC", hwirq: 9, typ: "fasteoi", action: "acpi"},
		{n: 16, chip: "IR-IO-APIC", hwirq: 16, typ: "fasteoi", action: "i801_smbus", count: 3},
	}
	n := firstDynamicIRQ
	// One remapping unit per PCIe stack, each with its fault interrupt.
	for _, d := range b.pci {
		if d.hostBridge {
			lines = append(lines, irqLine{n: n, chip: "DMAR-MSI", hwirq: n - firstDynamicIRQ, typ: "edge", action: fmt.Sprintf("dmar%d", n-firstDynamicIRQ), numa: d.numa})
			n++
		}
	}
	var devs []*pciDev
	for _, d := range b.pci {
		if len(d.vectors) > 0 {
			if loadRank(d.driver) < 0 {
				b.t.fail(fmt.Errorf("%s: no interrupt order for driver %q", d.bdf, d.driver))
			}
			devs = append(devs, d)
		}
	}
	slices.SortStableFunc(devs, func(x, y *pciDev) int {
		return cmp.Or(cmp.Compare(loadRank(x.driver), loadRank(y.driver)), cmp.Compare(x.bdf, y.bdf))
	})
	for _, d := range devs {
		// Port services (PME, AER) fire only on power and error events.
		busy := d.driver != "pcieport"
		chip, kind := "IR-PCI-MSI-"+d.bdf, "msi"
		if d.msix {
			chip, kind = "IR-PCI-MSIX-"+d.bdf, "msix"
		}
		for i, action := range d.vectors {
			l := irqLine{n: n, chip: chip, hwirq: i, typ: "edge", action: action, numa: d.numa, cpu: b.nextEffectiveCPU(d.numa)}
			if busy {
				l.count = 1 + b.hash(fmt.Sprint("irq/", n))%5_000_000
			}
			lines = append(lines, l)
			b.t.attr(fmt.Sprintf("%s/msi_irqs/%d", d.dir, n), kind)
			n++
		}
	}

	all := b.online.Mask(b.words)
	b.t.attr("/proc/irq/default_smp_affinity", all)
	for _, l := range lines {
		dir := fmt.Sprintf("/proc/irq/%d", l.n)
		b.t.attr(dir+"/smp_affinity", all)
		b.t.attr(dir+"/smp_affinity_list", b.online.String())
		eff := cpuset.Of(l.cpu)
		b.t.attr(dir+"/effective_affinity", eff.Mask(b.words))
		b.t.attr(dir+"/effective_affinity_list", eff.String())
		b.t.attr(dir+"/node", itoa(max(l.numa, 0)))
	}
	b.t.file("/proc/interrupts", b.interruptsFile(lines))
}

// nextEffectiveCPU hands out CPUs of a node in turn, as the x86 vector
// allocator does when it picks the least loaded CPU of the device's node.
func (b *builder) nextEffectiveCPU(numa int) int {
	if numa < 0 || numa >= len(b.nodes) {
		numa = 0
	}
	cpus := b.nodes[numa].CPUs()
	c := cpus[b.effective[numa]%len(cpus)]
	b.effective[numa]++
	return c
}

// interruptsFile formats /proc/interrupts the way kernel/irq/proc.c and
// arch/x86 do: a header of online CPUs, one line per IRQ with a count per
// CPU, chip, hardware irq, flow and actions, then the per-CPU architecture
// counters. ERR and MIS have a single total, not one count per CPU.
func (b *builder) interruptsFile(lines []irqLine) string {
	cpus := b.online.CPUs()
	const cell = 11 // "%10u "
	zero := []byte(fmt.Sprintf("%10d ", 0))
	sb := make([]byte, 0, (len(lines)+20)*(len(cpus)*cell+80)+len(cpus)*cell)
	sb = append(sb, strings.Repeat(" ", irqPrec+8)...)
	for _, c := range cpus {
		sb = append(sb, fmt.Sprintf("CPU%-8d", c)...)
	}
	sb = append(sb, '\n')
	for _, l := range lines {
		sb = pad(sb, strconv.Itoa(l.n), irqPrec)
		sb = append(sb, ": "...)
		for _, c := range cpus {
			if c != l.cpu {
				sb = append(sb, zero...)
				continue
			}
			sb = pad(sb, strconv.FormatUint(l.count, 10), 10)
			sb = append(sb, ' ')
		}
		sb = append(sb, ' ')
		sb = pad(sb, l.chip, 8)
		sb = append(sb, ' ')
		sb = pad(sb, strconv.Itoa(l.hwirq), irqPrec)
		sb = append(sb, fmt.Sprintf("-%-8s  %s\n", l.typ, l.action)...)
	}
	for i, s := range [][2]string{
		{"NMI", "Non-maskable interrupts"},
		{"LOC", "Local timer interrupts"},
		{"SPU", "Spurious interrupts"},
		{"PMI", "Performance monitoring interrupts"},
		{"IWI", "IRQ work interrupts"},
		{"RTR", "APIC ICR read retries"},
		{"RES", "Rescheduling interrupts"},
		{"CAL", "Function call interrupts"},
		{"TLB", "TLB shootdowns"},
		{"TRM", "Thermal event interrupts"},
		{"THR", "Threshold APIC interrupts"},
		{"DFR", "Deferred Error APIC interrupts"},
		{"MCE", "Machine check exceptions"},
		{"MCP", "Machine check polls"},
		{"ERR", ""},
		{"MIS", ""},
		{"PIN", "Posted-interrupt notification event"},
		{"NPI", "Nested posted-interrupt event"},
		{"PIW", "Posted-interrupt wakeup event"},
	} {
		sb = pad(sb, s[0], irqPrec)
		sb = append(sb, ": "...)
		if s[1] == "" {
			sb = pad(sb, "0", 10)
			sb = append(sb, '\n')
			continue
		}
		for _, c := range cpus {
			var v int
			switch s[0] {
			case "LOC", "RES", "CAL", "NMI", "PMI", "TLB", "IWI":
				// Busy counters differ per CPU; the rest stay zero on a
				// healthy machine.
				v = (c*7919+i*104729)%900_000 + 1000
			case "MCP":
				v = 120
			}
			sb = pad(sb, strconv.Itoa(v), 10)
			sb = append(sb, ' ')
		}
		sb = append(sb, "  "+s[1]+"\n"...)
	}
	return string(sb)
}

// pad appends s right-aligned in width columns.
func pad(buf []byte, s string, width int) []byte {
	for i := len(s); i < width; i++ {
		buf = append(buf, ' ')
	}
	return append(buf, s...)
}
