package tuning

import (
	"os"
	"strings"
	"testing"
)

// The scheduler granularity keys moved to debugfs in 5.13 and were removed
// with EEVDF in 6.6: the note must say which, by the kernel it is on.
func TestSchedGranularityHints(t *testing.T) {
	p := mustProfile(t, "name: t\nsysctl:\n  kernel.sched_min_granularity_ns: 10000000\n  kernel.sched_wakeup_granularity_ns: 15000000\n  kernel.sched_migration_cost_ns: 5000000\n")
	for _, tc := range []struct {
		kernel string
		key    string
		want   string
		not    string
	}{
		{"6.8.0-49-generic", "kernel.sched_min_granularity_ns", "removed", "moved to debugfs"},
		{"6.8.0-49-generic", "kernel.sched_wakeup_granularity_ns", "removed", "moved to debugfs"},
		{"6.8.0-49-generic", "kernel.sched_migration_cost_ns", "moved to debugfs", "removed"},
		{"5.15.0", "kernel.sched_min_granularity_ns", "moved to debugfs", "removed"},
		{"5.15.0", "kernel.sched_wakeup_granularity_ns", "moved to debugfs", "removed"},
	} {
		h := host()
		h.Kernel = tc.kernel
		for key := range p.Sysctl {
			h.Current[ID{KindSysctl, key}] = Current{Unsupported: true}
		}
		s := stepOf(t, MakePlan(p, h, nil), ID{KindSysctl, tc.key})
		if s.Action != ActionUnsupported || !strings.Contains(s.Note, tc.want) || strings.Contains(s.Note, tc.not) {
			t.Errorf("kernel %s, %s: %s %q; want unsupported saying %q, not %q", tc.kernel, tc.key, s.Action, s.Note, tc.want, tc.not)
		}
	}
}

// kernel.numa_balancing 2 (memory tiering) exists from Linux 5.18; older
// kernels answer EINVAL. On a node with one memory tier it is not "off".
func TestNUMABalancingTiering(t *testing.T) {
	p := mustProfile(t, "name: t\nnuma:\n  balancing: 2\n")
	id := ID{KindNUMA, NUMABalancingKey}

	h := host()
	h.Kernel = "5.15.0-100-generic"
	h.Current[id] = Current{Value: "1"}
	s := stepOf(t, MakePlan(p, h, nil), id)
	if s.Action != ActionUnsupported || !strings.Contains(s.Note, "5.18") {
		t.Errorf("kernel 5.15: %s %q; want unsupported naming 5.18", s.Action, s.Note)
	}

	h = host()
	h.Kernel = "6.8.0"
	h.Current[id] = Current{Value: "1"}
	h.MemoryTiers = 1
	s = stepOf(t, MakePlan(p, h, nil), id)
	if s.Action != ActionSet || !strings.Contains(s.Note, "not off") {
		t.Errorf("kernel 6.8, one memory tier: %s %q; want set with a note that 2 is not off", s.Action, s.Note)
	}

	h.MemoryTiers = 2
	s = stepOf(t, MakePlan(p, h, nil), id)
	if s.Action != ActionSet || strings.Contains(s.Note, "not off") {
		t.Errorf("kernel 6.8, two memory tiers: %s %q; want set without the DRAM-only note", s.Action, s.Note)
	}

	// 0 and 1 need no note on any kernel.
	p0 := mustProfile(t, "name: t\nnuma:\n  balancing: 0\n")
	h = host()
	h.Kernel = "5.4.0"
	h.Current[id] = Current{Value: "1"}
	if s := stepOf(t, MakePlan(p0, h, nil), id); s.Action != ActionSet || s.Note != "" {
		t.Errorf("balancing 0 on 5.4: %s %q", s.Action, s.Note)
	}
}

// Memory tiers are read from sysfs.
func TestReadMemoryTiers(t *testing.T) {
	f := newFixture(t, "cpu-only")
	for _, d := range []string{"memory_tier4", "memory_tier22"} {
		f.mkdir(t, "/sys/devices/virtual/memory_tiering/"+d)
	}
	p := mustProfile(t, "name: t\nnuma:\n  balancing: 2\n")
	h, err := f.tuner.Read(t.Context(), p, f.m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.MemoryTiers != 2 {
		t.Errorf("memory tiers %d, want 2", h.MemoryTiers)
	}
}

func stepOf(t *testing.T, pl Plan, id ID) Step {
	t.Helper()
	for _, s := range pl.Steps {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("no step for %s in %+v", id, pl.Steps)
	return Step{}
}

func (f *fixture) mkdir(t testing.TB, hostPath string) {
	t.Helper()
	if err := os.MkdirAll(f.fs.Path(hostPath), 0o755); err != nil {
		t.Fatal(err)
	}
}
