package tuning

import (
	"context"
	"os"
	"testing"
)

// THP defrag is a multiple-choice attribute like enabled: planned, applied
// (the tree reads as the kernel prints it after the write), drift
// repaired, and reverted to the exact bytes before.
func TestTHPDefragApplyDriftRevert(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "cpu-only")
	before := f.files(t)[THPDefragPath]
	if before != "always defer defer+madvise [madvise] never\n" {
		t.Fatalf("fixture defrag %q", before)
	}
	p := mustProfile(t, "name: d\nnuma:\n  transparentHugepageDefrag: defer+madvise\n")
	pl, _, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Steps) != 1 || pl.Steps[0].ID != (ID{KindTHP, THPDefragKey}) || pl.Steps[0].Current != "madvise" || pl.Steps[0].Action != ActionSet {
		t.Fatalf("plan %+v", pl.Steps)
	}
	res, err := f.tuner.Apply(ctx, p, f.m)
	if err != nil || !res.OK() || len(res.Changes) != 1 || res.Changes[0].Outcome != OutcomeChanged {
		t.Fatalf("apply: %v %+v", err, res.Changes)
	}
	if got := f.files(t)[THPDefragPath]; got != "always defer [defer+madvise] madvise never\n" {
		t.Errorf("after apply the file reads %q", got)
	}
	if pl, _, _ := f.tuner.Plan(ctx, p, f.m); !pl.Compliant() {
		t.Errorf("not compliant after apply: %+v", pl.Steps)
	}

	// Someone sets always: drift, set back.
	f.write(t, THPDefragPath, "[always] defer defer+madvise madvise never\n")
	pl, _, _ = f.tuner.Plan(ctx, p, f.m)
	if len(pl.Drifted()) != 1 || pl.Steps[0].Current != "always" {
		t.Fatalf("drift not seen: %+v", pl.Steps)
	}
	if res, err := f.tuner.Apply(ctx, p, f.m); err != nil || !res.OK() {
		t.Fatalf("repair: %v %+v", err, res.Failed())
	}
	if v, _ := ParseBracketed(f.read(t, THPDefragPath)); v != "defer+madvise" {
		t.Errorf("after repair %q", v)
	}

	rev, err := f.tuner.Revert(ctx)
	if err != nil || !rev.OK() {
		t.Fatalf("revert: %v %+v", err, rev.Failed())
	}
	if got := f.files(t)[THPDefragPath]; got != before {
		t.Errorf("after revert %q, want %q", got, before)
	}
}

// A kernel without the defrag file (CONFIG_TRANSPARENT_HUGEPAGE off) is
// unsupported, not an error; garbage in the file is an error naming it.
func TestTHPDefragUnsupportedAndGarbage(t *testing.T) {
	ctx := context.Background()
	p := mustProfile(t, "name: d\nnuma:\n  transparentHugepageDefrag: defer\n")
	for _, tc := range []struct {
		content string // "" removes the file
		want    Action
	}{
		{"", ActionUnsupported},
		{"always defer\n", ActionError},
		{"[always] [defer]\n", ActionError},
		{"\n", ActionError},
		{"always [defer] never\n", ActionOK},
	} {
		f := newFixture(t, "cpu-only")
		if tc.content == "" {
			removeHostFile(t, f, THPDefragPath)
		} else {
			f.write(t, THPDefragPath, tc.content)
		}
		pl, _, err := f.tuner.Plan(ctx, p, f.m)
		if err != nil {
			t.Fatal(err)
		}
		if len(pl.Steps) != 1 || pl.Steps[0].Action != tc.want {
			t.Errorf("%q: %+v, want %s", tc.content, pl.Steps, tc.want)
		}
	}
}

func removeHostFile(t *testing.T, f *fixture, hostPath string) {
	t.Helper()
	if err := os.Remove(f.fs.Path(hostPath)); err != nil {
		t.Fatal(err)
	}
}
