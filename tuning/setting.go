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
	KindTHP     = "thp"     // transparent_hugepage.enabled
	KindIRQ     = "irq"     // key: the IRQ number
	KindService = "service" // key: the systemd unit (irqbalance.service)
)

// Fixed keys.
const (
	NUMABalancingKey = "kernel.numa_balancing"
	THPKey           = "transparent_hugepage.enabled"
	IRQBalanceUnit   = "irqbalance.service"
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
	case KindService:
		return 0
	case KindSysctl:
		return 1
	case KindNUMA:
		return 2
	case KindTHP:
		return 3
	case KindIRQ:
		return 4
	}
	return 5
}

// compareIDs orders by kind, then key; IRQ keys numerically.
func compareIDs(a, b ID) int {
	if c := cmp.Compare(kindOrder(a.Kind), kindOrder(b.Kind)); c != 0 {
		return c
	}
	if a.Kind == KindIRQ {
		x, errX := strconv.Atoi(a.Key)
		y, errY := strconv.Atoi(b.Key)
		if errX == nil && errY == nil {
			return cmp.Compare(x, y)
		}
	}
	return strings.Compare(a.Key, b.Key)
}

// hostPath is the file a setting lives in, or "" for services.
func (id ID) hostPath() (string, error) {
	switch id.Kind {
	case KindSysctl, KindNUMA:
		return SysctlPath(id.Key)
	case KindTHP:
		return THPPath, nil
	case KindIRQ:
		n, err := strconv.Atoi(id.Key)
		if err != nil || n < 0 || strconv.Itoa(n) != id.Key {
			return "", fmt.Errorf("irq %q: not an IRQ number", id.Key)
		}
		return fmt.Sprintf("/proc/irq/%d/smp_affinity_list", n), nil
	case KindService:
		return "", nil
	}
	return "", fmt.Errorf("unknown setting kind %q", id.Kind)
}

// isNet reports whether a setting is per network namespace.
func (id ID) isNet() bool { return id.namespace() == NSNet }

// namespace is the kind of namespace a sysctl belongs to (NSNet, NSIPC,
// NSUTS), or "" for a global one.
func (id ID) namespace() string {
	if id.Kind != KindSysctl {
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
