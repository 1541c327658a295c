package tuning

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// Process and unit states of irqbalance.
const (
	StateRunning    = "running"
	StateNotRunning = "not-running"
	StateUnknown    = "unknown"
	UnitNotFound    = "not-found"
	// UnitMasked is the state of a stopped unit that is masked.
	UnitMasked = "masked"
)

// IRQBalance is what the agent knows about irqbalance: from a scan of the
// host's processes and, where systemd is reachable, its unit. A state that
// cannot be observed is "unknown", never guessed.
type IRQBalance struct {
	// Process is running, not-running or unknown.
	Process       string `json:"process"`
	PIDs          []int  `json:"pids,omitempty"`
	ProcessDetail string `json:"process_detail,omitempty"`
	// Unit is the ActiveState of irqbalance.service (active, inactive,
	// failed, ...), not-found, or unknown.
	Unit       string `json:"unit"`
	UnitDetail string `json:"unit_detail,omitempty"`
}

// State sums up: running if the process runs or the unit is (becoming)
// active; not-running if either source knows it does not; else unknown.
// The process scan outranks the unit: it sees irqbalance started by hand.
func (b IRQBalance) State() string {
	switch {
	case b.Process == StateRunning || unitActive(b.Unit):
		return StateRunning
	case b.Process == StateNotRunning:
		return StateNotRunning
	case b.Unit != "" && b.Unit != StateUnknown:
		return StateNotRunning
	}
	return StateUnknown
}

func unitActive(state string) bool {
	return state == "active" || state == "activating" || state == "reloading"
}

func (b IRQBalance) String() string {
	s := "process " + b.Process
	if len(b.PIDs) > 0 {
		s += fmt.Sprintf(" (pid %s)", joinInts(b.PIDs))
	}
	if b.ProcessDetail != "" {
		s += " (" + b.ProcessDetail + ")"
	}
	s += ", unit " + IRQBalanceUnit + " " + b.Unit
	if b.UnitDetail != "" {
		s += " (" + b.UnitDetail + ")"
	}
	return s
}

func joinInts(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

// irqbalance observes irqbalance's process and unit.
func (t *Tuner) irqbalance(ctx context.Context) IRQBalance {
	b := scanProcesses(t.FS, "irqbalance")
	b.Unit, b.UnitDetail = StateUnknown, "no systemd connection configured"
	if t.Systemd == nil {
		return b
	}
	m, err := t.Systemd(ctx)
	if err != nil {
		b.UnitDetail = "systemd not reachable: " + err.Error()
		return b
	}
	defer m.Close()
	st, err := m.UnitState(ctx, IRQBalanceUnit)
	if err != nil {
		b.UnitDetail = err.Error()
		return b
	}
	b.Unit, b.UnitDetail = st, ""
	return b
}

// scanProcesses looks for a process by name under the host's /proc: its
// comm (truncated by the kernel to 15 bytes) or the base name of argv[0].
func scanProcesses(fsys hostfs.FS, name string) IRQBalance {
	b := IRQBalance{Process: StateUnknown}
	// Every procfs has PID 1; without it this is not the host's /proc.
	if !fsys.IsDir("/proc/1") {
		b.ProcessDetail = "no /proc/1 under the host root, so its processes cannot be seen"
		return b
	}
	names, err := fsys.Names("/proc")
	if err != nil {
		b.ProcessDetail = fmt.Sprintf("list /proc: %v", unwrapPath(err))
		return b
	}
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid <= 0 || strconv.Itoa(pid) != n {
			continue
		}
		if processIs(fsys, pid, name) {
			b.PIDs = append(b.PIDs, pid)
		}
	}
	slices.Sort(b.PIDs)
	b.Process = StateNotRunning
	if len(b.PIDs) > 0 {
		b.Process = StateRunning
	}
	return b
}

// processIs matches one process by comm or argv[0]. Processes exit while
// we look: a missing file just means "not this one".
func processIs(fsys hostfs.FS, pid int, name string) bool {
	dir := "/proc/" + strconv.Itoa(pid)
	if comm, err := fsys.ReadString(dir + "/comm"); err == nil && comm == truncate15(name) {
		return true
	}
	raw, err := fsys.ReadFile(dir + "/cmdline")
	return err == nil && argv0Is(raw, name)
}

func argv0Is(cmdline []byte, name string) bool {
	argv0, _, _ := strings.Cut(string(cmdline), "\x00")
	argv0, _, _ = strings.Cut(argv0, " ") // processes that rewrite their argv
	return path.Base(argv0) == name
}

func truncate15(s string) string {
	if len(s) > 15 {
		return s[:15]
	}
	return s
}
