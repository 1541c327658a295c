package tuning

import (
	"strings"
	"testing"
)

// Revert restores a setting only while it still holds what tuning wrote:
// a value someone changed since (a hand edit, a sysctl.d reload, TuneD) is
// theirs, kept and reported, and its entry leaves the journal.
func TestRevertKeepsValuesChangedBySomeoneElse(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t, "cpu-only")
	origDirty := f.read(t, "/proc/sys/vm/dirty_background_ratio")
	p := mustProfile(t, "name: t\nsysctl:\n  vm.swappiness: 1\n  vm.dirty_background_ratio: 5\n")
	if res, err := f.tuner.Apply(ctx, p, f.m); err != nil || len(res.Failed()) > 0 {
		t.Fatalf("apply: %v %+v", err, res.Failed())
	}
	f.write(t, "/proc/sys/vm/swappiness", "30\n") // a hand edit after apply
	res, err := f.tuner.Revert(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.read(t, "/proc/sys/vm/swappiness"); got != "30" {
		t.Errorf("swappiness %s after revert, want the hand-set 30 kept", got)
	}
	if got := f.read(t, "/proc/sys/vm/dirty_background_ratio"); got != origDirty {
		t.Errorf("dirty_background_ratio %s, want the original %s", got, origDirty)
	}
	var kept []Change
	for _, c := range res.Changes {
		if c.Outcome == OutcomeKept {
			kept = append(kept, c)
		}
	}
	if len(kept) != 1 || kept[0].Key != "vm.swappiness" || !strings.Contains(kept[0].Error, "changed by someone else") {
		t.Errorf("kept changes %+v", kept)
	}
	if len(res.Failed()) > 0 || !res.OK() {
		t.Errorf("revert failed: %+v", res.Failed())
	}
	if len(res.Journal.Entries) != 0 {
		t.Errorf("journal after revert: %+v", res.Journal.Entries)
	}
	// The plan before the revert says so too.
	f2 := newFixture(t, "cpu-only")
	f2.tuner.Apply(ctx, p, f2.m)
	f2.write(t, "/proc/sys/vm/swappiness", "30\n")
	pl, _, err := f2.tuner.Plan(ctx, Profile{Name: "none"}, f2.m)
	if err != nil {
		t.Fatal(err)
	}
	if s := stepOf(t, pl, ID{KindSysctl, "vm.swappiness"}); s.Action != ActionKept {
		t.Errorf("plan: %+v", s)
	}
	if (Plan{Steps: []Step{{Action: ActionKept}}}).Compliant() != true {
		t.Error("a kept setting counts against compliance")
	}
}
