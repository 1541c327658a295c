package tuning

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
)

// Kinds of managed settings; with the key they name one setting in plans,
// the journal and metrics ({kind,key}).
const (
	KindSysctl  = "sysctl"
	KindNUMA    = "numa"    // kernel.numa_balancing
	KindTHP     = "thp"     // transparent_hugepage.enabled and .defrag
	KindIRQ     = "irq"     // key: device and queue, "0000:18:00.0/mlx5_comp3" (see irqKey)
	KindService = "service" // key: the systemd unit (irqbalance.service)
	// KindIRQBalance is what tuning tells a running irqbalance; key
	// BannedIRQsKey: the IRQs it must not move.
	KindIRQBalance = "irqbalance"
)

// Fixed keys.
const (
	NUMABalancingKey = "kernel.numa_balancing"
	THPKey           = "transparent_hugepage.enabled"
	THPDefragKey     = "transparent_hugepage.defrag"
	IRQBalanceUnit   = "irqbalance.service"
	BannedIRQsKey    = "banned-irqs"
)

// ID names one setting.
type ID struct {
	Kind string `json:"kind"`
	Key  string `json:"key"`
}

func (id ID) String() string { return id.Kind + " " + id.Key }

// kindOrder is the order steps are listed and applied in: irqbalance is
// stopped before interrupts are moved.
func kindOrder(kind string) int {
	switch kind {
	case KindService, KindIRQBalance:
		return 0
	case KindSysctl:
		return 1
	case KindNUMA:
		return 2
	case KindTHP:
		return 3
	case KindIRQ:
		return 4
	case KindRoCEMode:
		return 5
	case KindPFC:
		return 6
	case KindTrust:
		return 7
	case KindECN:
		return 8
	case KindCPUFreq:
		return 9
	case KindPMQoS:
		return 10
	case KindNIC:
		return 11
	}
	return 12
}

// compareIDs orders by kind, then key; IRQ keys numerically.
func compareIDs(a, b ID) int {
	if c := cmp.Compare(kindOrder(a.Kind), kindOrder(b.Kind)); c != 0 {
		return c
	}
	if a.Kind == KindIRQ {
		// The device (a fixed-width hex PCI address) as text, the queue
		// with its numbers as numbers; numeric keys of older journals
		// as numbers.
		if x, ok := legacyIRQKey(a.Key); ok {
			if y, ok := legacyIRQKey(b.Key); ok {
				return cmp.Compare(x, y)
			}
		}
		da, qa, _ := strings.Cut(a.Key, "/")
		db, qb, _ := strings.Cut(b.Key, "/")
		return cmp.Or(strings.Compare(da, db), naturalCompare(qa, qb))
	}
	if a.Kind == KindCPUFreq {
		return compareCPUFreq(a.Key, b.Key)
	}
	return strings.Compare(a.Key, b.Key)
}

// naturalCompare orders strings with their digit runs compared as
// numbers, so mlx5_comp2 comes before mlx5_comp10 (and IRQ 99 before 100).
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			x, y := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := cmp.Or(cmp.Compare(len(x), len(y)), strings.Compare(x, y)); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func digitRun(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

// hostPath is the file a setting lives in, or "" for services.
func (id ID) hostPath() (string, error) {
	switch id.Kind {
	case KindSysctl, KindNUMA:
		return SysctlPath(id.Key)
	case KindTHP:
		return thpPath(id.Key)
	case KindIRQ:
		n, ok := legacyIRQKey(id.Key)
		if !ok {
			return "", fmt.Errorf("irq %s: the file is found through the interrupt's number", id.Key)
		}
		return irqAffinityPath(n), nil
	case KindCPUFreq:
		return cpufreqPath(id.Key)
	case KindPMQoS:
		if id.Key != CPULatencyKey {
			return "", fmt.Errorf("pm-qos %q: want %s", id.Key, CPULatencyKey)
		}
		return "", nil // held, not written to a file
	case KindNIC:
		_, _, err := parseNICKey(id.Key)
		return "", err // set through ethtool, not a file
	case KindService, KindIRQBalance:
		return "", nil
	case KindRoCEMode, KindPFC, KindECN, KindTrust:
		return roceHostPath(id)
	}
	return "", fmt.Errorf("unknown setting kind %q", id.Kind)
}

// settingPath is the file of a setting; irq is the number an interrupt
// has now, which its key (device and queue) does not say.
func settingPath(id ID, irq int) (string, error) {
	if id.Kind != KindIRQ {
		return id.hostPath()
	}
	if n, ok := legacyIRQKey(id.Key); ok {
		return irqAffinityPath(n), nil
	}
	if irq <= 0 { // virq 0 is never a device's interrupt
		return "", fmt.Errorf("irq %s: not found on this host", id.Key)
	}
	return irqAffinityPath(irq), nil
}

func irqAffinityPath(n int) string { return fmt.Sprintf("/proc/irq/%d/smp_affinity_list", n) }

// legacyIRQKey reads the key of journals written before interrupts were
// keyed by device and queue: the IRQ number.
func legacyIRQKey(key string) (int, bool) {
	n, err := strconv.Atoi(key)
	return n, err == nil && n >= 0 && strconv.Itoa(n) == key
}

// check validates an ID read from a journal.
func (id ID) check() error {
	if id.Kind != KindIRQ {
		_, err := id.hostPath()
		return err
	}
	if _, ok := legacyIRQKey(id.Key); ok {
		return nil
	}
	dev, queue, ok := strings.Cut(id.Key, "/")
	if !ok || dev == "" || queue == "" || len(id.Key) > 256 || strings.ContainsFunc(id.Key, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("irq %q: want <PCI address>/<queue> or an IRQ number", id.Key)
	}
	return nil
}

// isNet reports whether a setting is per network namespace.
func (id ID) isNet() bool { return id.namespace() == NSNet }

// namespace is the kind of namespace a sysctl belongs to (NSNet, NSIPC,
// NSUTS), or "" for a global one.
func (id ID) namespace() string {
	switch id.Kind {
	case KindPFC, KindECN, KindTrust, KindNIC:
		// A netdev's: DCB netlink and ethtool reach only the agent's namespace.
		return NSNet
	case KindSysctl:
	default:
		return ""
	}
	p, err := SysctlPath(id.Key)
	if err != nil {
		return ""
	}
	p = strings.TrimPrefix(p, "/proc/sys/")
	switch {
	case strings.HasPrefix(p, "net/"):
		return NSNet
	case strings.HasPrefix(p, "fs/mqueue/"),
		strings.HasPrefix(p, "kernel/shm"), strings.HasPrefix(p, "kernel/msg"),
		p == "kernel/sem", p == "kernel/sem_next_id", p == "kernel/auto_msgmni":
		return NSIPC
	case p == "kernel/hostname", p == "kernel/domainname":
		return NSUTS
	}
	return ""
}
