package tuning

import (
	"os"
	"strings"
	"testing"
)

// When the kernel holds something other than what was written (huge pages
// partly allocated, a value rounded), that is its answer to the write:
// recorded, reported once, and not drift on every later verification. A
// real change by someone else afterwards is drift again.
func TestKernelAnswerIsNotDrift(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t, "cpu-only")
	f.write(t, "/proc/sys/vm/nr_hugepages", "0\n")
	// The kernel finds memory for 900 of the 1024 huge pages asked for.
	f.tuner.afterWrite = func(hostPath, v string) {
		if hostPath == "/proc/sys/vm/nr_hugepages" && v == "1024" {
			os.WriteFile(f.fs.Path(hostPath), []byte("900\n"), 0o644)
		}
	}
	p := mustProfile(t, "name: t\nsysctl:\n  vm.nr_hugepages: 1024\n")
	res, err := f.tuner.Apply(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 1 || res.Changes[0].Outcome != OutcomeAccepted || !strings.Contains(res.Changes[0].Error, `"900"`) {
		t.Fatalf("changes %+v", res.Changes)
	}
	if e, _ := res.Journal.entry(ID{KindSysctl, "vm.nr_hugepages"}); e.Accepted != "900" || e.Original != "0" {
		t.Errorf("journal entry %+v", e)
	}
	for range 3 {
		pl, _, err := f.tuner.Plan(ctx, p, f.m)
		if err != nil {
			t.Fatal(err)
		}
		s := stepOf(t, pl, ID{KindSysctl, "vm.nr_hugepages"})
		if s.Drift || s.Action != ActionOK || !strings.Contains(s.Note, "900") {
			t.Fatalf("verification after the kernel's answer: %+v", s)
		}
		// Enforce applies again: nothing to write.
		if res, _ := f.tuner.Apply(ctx, p, f.m); len(res.Changes) != 0 {
			t.Fatalf("re-applied: %+v", res.Changes)
		}
	}
	// Someone frees the huge pages: drift, repaired again.
	f.write(t, "/proc/sys/vm/nr_hugepages", "0\n")
	pl, _, _ := f.tuner.Plan(ctx, p, f.m)
	if s := stepOf(t, pl, ID{KindSysctl, "vm.nr_hugepages"}); !s.Drift || s.Action != ActionSet {
		t.Errorf("after someone changed it: %+v", s)
	}
	// Revert restores the original from the kernel's answer too.
	f.write(t, "/proc/sys/vm/nr_hugepages", "900\n")
	if res, err := f.tuner.Revert(ctx); err != nil || !res.OK() || f.read(t, "/proc/sys/vm/nr_hugepages") != "0" {
		t.Errorf("revert: %v %+v, now %s", err, res.Changes, f.read(t, "/proc/sys/vm/nr_hugepages"))
	}
}
