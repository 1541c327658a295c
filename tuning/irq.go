package tuning

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/gpunode/gpunode/internal/cpuset"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/topology"
)

// irqTarget is where one interrupt should go.
type irqTarget struct {
	irq  int
	key  string // device and queue
	want cpuset.Set
	note string
	// err is set when no CPU is left for the device.
	err string
}

// irqTargets applies the profile's IRQ policies to the devices: each
// selected device's interrupts are spread over the CPUs of its NUMA node
// (minus excluded and isolated CPUs, CPUs pods own and isolated cgroup
// partitions), one interrupt per CPU where there are enough (see spread).
func irqTargets(p Profile, h Host, j *Journal) (targets []irqTarget, warnings []string) {
	exclude, _ := cpuset.Parse(p.IRQ.ExcludeCPUs) // validated with the profile
	exclude = exclude.Union(h.IsolatedCPUs).Union(h.NohzFullCPUs).Union(h.PodCPUs).Union(h.PartitionCPUs)
	warnings = append(warnings, h.CPUWarnings...)
	groups := map[string][]int{} // allowed cpulist -> indexes into targets
	allowedOf := map[string]cpuset.Set{}
	var order []string
	seen := map[int]bool{}
	for i, pol := range p.IRQ.Policies {
		devs, unmatched := selectDevices(pol, h.Devices)
		for _, name := range unmatched {
			warnings = append(warnings, fmt.Sprintf("irq.policies[%d] (%s): device %q matches no %s", i, pol.Policy, name, policyKind(pol.Policy)))
		}
		// The default selection (RDMA and fast NICs, all GPUs) finding
		// nothing is a host without such devices, which has nothing for
		// the policy to do; drivers or devices named in the profile and
		// not found are a finding.
		if len(devs) == 0 && (len(pol.Drivers) > 0 || len(pol.Devices) > 0) {
			warnings = append(warnings, fmt.Sprintf("irq.policies[%d] (%s): no device selected", i, pol.Policy))
		}
		for _, d := range devs {
			base, where := deviceCPUs(d, h)
			allowed := base
			if !h.OnlineCPUs.IsEmpty() {
				allowed = allowed.Intersect(h.OnlineCPUs)
			}
			allowed = allowed.Difference(exclude)
			k := allowed.String()
			irqs := slices.Clone(d.IRQs)
			slices.SortStableFunc(irqs, func(a, b DeviceIRQ) int { return naturalCompare(a.Key, b.Key) })
			for _, irq := range irqs {
				if seen[irq.Number] { // shared between devices: first policy wins
					continue
				}
				seen[irq.Number] = true
				t := irqTarget{irq: irq.Number, key: irq.Key, note: irqNote(d, irq, where)}
				if allowed.IsEmpty() {
					t.err = fmt.Sprintf("no CPU left on %s (CPUs %s) after excluding %s", where, base, exclude)
				} else {
					if _, ok := groups[k]; !ok {
						order = append(order, k)
						allowedOf[k] = allowed
					}
					groups[k] = append(groups[k], len(targets))
				}
				targets = append(targets, t)
			}
		}
	}
	for _, k := range order {
		spread(targets, groups[k], allowedOf[k], h, j)
	}
	return targets, warnings
}

// spread places the interrupts idx of targets on the CPUs allowed, at
// most ceil(interrupts/CPUs) per CPU, and stably: an interrupt keeps the
// CPU tuning last gave it (the journal), else the single allowed CPU it
// is on now, while that CPU has room; the rest go, in device and queue
// order, to the least loaded CPUs in turn. So one new interrupt moves no
// other, and a CPU going offline moves only the interrupts it had, where
// placing by position would re-pin most interrupts of every later device.
// On a host never tuned this is plain round robin.
func spread(targets []irqTarget, idx []int, allowed cpuset.Set, h Host, j *Journal) {
	cpus := allowed.CPUs()
	limit := (len(idx) + len(cpus) - 1) / len(cpus)
	load := map[int]int{}
	placed := make([]bool, len(idx))
	keep := func(pick func(t irqTarget) string) {
		for i, ti := range idx {
			if placed[i] {
				continue
			}
			set, err := cpuset.Parse(pick(targets[ti]))
			if err != nil || set.Len() != 1 {
				continue
			}
			if c := set.CPUs()[0]; allowed.Contains(c) && load[c] < limit {
				targets[ti].want, placed[i] = set, true
				load[c]++
			}
		}
	}
	keep(func(t irqTarget) string {
		e, _ := j.entry(ID{KindIRQ, t.key})
		return e.Wrote
	})
	keep(func(t irqTarget) string { return h.Current[ID{KindIRQ, t.key}].Value })
	next := 0
	for i, ti := range idx {
		if placed[i] {
			continue
		}
		best := -1
		for n := range cpus {
			c := (next + n) % len(cpus)
			if best < 0 || load[cpus[c]] < load[cpus[best]] {
				best = c
			}
		}
		targets[ti].want = cpuset.Of(cpus[best])
		load[cpus[best]]++
		next = best + 1
	}
}

func policyKind(policy string) string {
	if policy == PolicyGPULocal {
		return "GPU"
	}
	return "NIC"
}

// selectDevices returns the devices a policy selects, sorted by PCI
// address, and the names in pol.Devices that matched none.
func selectDevices(pol IRQPolicy, all []Device) (selected []Device, unmatched []string) {
	kind := topology.KindNIC
	if pol.Policy == PolicyGPULocal {
		kind = topology.KindGPU
	}
	explicit := len(pol.Drivers) > 0 || len(pol.Devices) > 0
	minSpeed := pol.MinSpeedMbps
	if minSpeed == 0 {
		minSpeed = DefaultMinSpeedMbps
	}
	matched := map[string]bool{}
	for _, d := range all {
		if d.Kind != kind {
			continue
		}
		names := append([]string{d.PCIAddress}, d.RDMA...)
		for _, n := range d.Netdevs {
			names = append(names, n.Name)
		}
		var take bool
		switch {
		case explicit:
			// A driver selects physical functions only: mlx5_core also
			// drives the VFs, whose interrupts are their owners'. A VF
			// named in devices is taken.
			take = slices.Contains(pol.Drivers, d.Driver) && !d.VirtualFunction
			for _, n := range names {
				if slices.Contains(pol.Devices, n) {
					take, matched[n] = true, true
				}
			}
		case d.VirtualFunction:
			// VFs serve pods and VMs, whose owners place their interrupts.
		case kind == topology.KindGPU:
			take = true
		default:
			take = len(d.RDMA) > 0 || slices.ContainsFunc(d.Netdevs, func(n Netdev) bool { return n.SpeedMbps >= minSpeed })
		}
		if take {
			selected = append(selected, d)
		}
	}
	for _, n := range pol.Devices {
		if !matched[n] {
			unmatched = append(unmatched, n)
		}
	}
	slices.SortFunc(selected, func(a, b Device) int { return strings.Compare(a.PCIAddress, b.PCIAddress) })
	return selected, unmatched
}

// deviceCPUs are the CPUs of the device's NUMA node; the device's
// local_cpulist when the platform gives no node; all online CPUs failing both.
func deviceCPUs(d Device, h Host) (cpuset.Set, string) {
	if cpus, ok := h.NodeCPUs[d.NUMANode]; ok && d.NUMANode >= 0 && !cpus.IsEmpty() {
		return cpus, "node " + strconv.Itoa(d.NUMANode)
	}
	if !d.LocalCPUs.IsEmpty() {
		return d.LocalCPUs, "the device's local CPUs"
	}
	return h.OnlineCPUs, "all online CPUs (no NUMA node known)"
}

// irqNote says which interrupt it is now (the key names device and queue).
func irqNote(d Device, irq DeviceIRQ, where string) string {
	return fmt.Sprintf("IRQ %d, %s, %s", irq.Number, deviceLabel(d), where)
}

// deviceLabel names a device the way people know it: netdev or RDMA name.
func deviceLabel(d Device) string {
	var names []string
	names = append(names, d.RDMA...)
	for _, n := range d.Netdevs {
		names = append(names, n.Name)
	}
	if len(names) == 0 {
		return string(d.Kind)
	}
	return strings.Join(names, "/")
}

// irqAffinityReadOnly reports whether the kernel made
// /proc/irq/N/smp_affinity read-only. Since Linux 6.12 register_irq_proc()
// creates it 0444 for interrupts whose affinity user space cannot set
// (irq_can_set_affinity_usr() false: managed interrupts, chips without
// affinity), and write_irq_affinity() refuses them with EPERM (it answered
// EIO before; kernel commit eb29369fa543, "genirq/proc: Change the return
// value for set affinity permission error"). The mode is the only way to
// tell that EPERM from a lack of privilege: root passes the mode check on
// open and sees the kernel's answer on write.
func irqAffinityReadOnly(fsys hostfs.FS, irq int) bool {
	fi, err := os.Stat(fsys.Path(fmt.Sprintf("/proc/irq/%d/smp_affinity", irq)))
	return err == nil && fi.Mode().Perm()&0o222 == 0
}

// unmovableReason explains a refused affinity write when it says the
// kernel manages the interrupt, or returns "". EIO is the answer before
// Linux 6.12; EPERM on a read-only smp_affinity the answer since.
func unmovableReason(fsys hostfs.FS, irq int, err error) string {
	switch {
	case errors.Is(err, syscall.EIO):
		return "the kernel manages this interrupt's affinity (the write was refused with EIO)"
	case errors.Is(err, syscall.EPERM) && irqAffinityReadOnly(fsys, irq):
		return "the kernel manages this interrupt's affinity (the write was refused with EPERM; smp_affinity is read-only)"
	}
	return ""
}

// UnmovableIRQs remembers the interrupts whose affinity the kernel refused
// to change, so that a daemon does not plan, journal (with its fsyncs) and
// attempt the same refused write every interval. Kernels before 6.12 give
// no sign of a managed interrupt but the refusal itself. An interrupt is
// known by its setting and number: a driver reload that hands the number
// to another queue, or the queue another number, forgets it. The zero
// value is ready to use; a nil one remembers nothing.
type UnmovableIRQs struct {
	mu sync.Mutex
	m  map[unmovableKey]string
}

type unmovableKey struct {
	id  ID
	irq int
}

func (u *UnmovableIRQs) add(id ID, irq int, reason string) {
	if u == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[unmovableKey]string{}
	}
	u.m[unmovableKey{id, irq}] = reason
}

func (u *UnmovableIRQs) reason(id ID, irq int) string {
	if u == nil {
		return ""
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.m[unmovableKey{id, irq}]
}

// setIRQKeys names a device's interrupts (sorted by number) by device and
// queue: "<PCI address>/<action name>", the name the driver gave
// request_irq() as /proc/interrupts shows it, less the "@pci:<address>"
// that mlx5 appends. A driver reload in the same boot may hand the
// numbers to other devices or queues; the names stay with the queue. An
// interrupt without a name, or whose name the device uses twice, is
// named by its vector's place among the device's interrupts
// ("vector3"): MSI-X vectors are allocated in table order.
func setIRQKeys(pci string, irqs []DeviceIRQ) {
	names := make([]string, len(irqs))
	count := map[string]int{}
	for i, irq := range irqs {
		n := strings.TrimSpace(irq.Name)
		n = strings.TrimSuffix(n, "@pci:"+pci)
		n = strings.TrimSuffix(n, "@"+pci)
		if strings.ContainsFunc(n, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			n = ""
		}
		names[i] = n
		count[n]++
	}
	for i := range irqs {
		q := names[i]
		if q == "" || count[q] > 1 {
			q = "vector" + strconv.Itoa(i)
		}
		irqs[i].Key = pci + "/" + q
	}
}
