package tuning

import (
	"os"
	"path"
	"strings"
	"testing"
)

// emulateDirtyPairs makes a fixture tree behave as the kernel does for
// the dirty writeback limits (mm/page-writeback.c, dirty_ratio_handler and
// dirty_bytes_handler; Documentation/admin-guide/sysctl/vm.rst: "Only one
// of them may be specified at a time ... the other appears as 0 when
// read"): writing one member of a pair zeroes the other.
func emulateDirtyPairs(f *fixture) {
	f.tuner.afterWrite = func(hostPath, v string) {
		partner := map[string]string{
			"dirty_ratio": "dirty_bytes", "dirty_bytes": "dirty_ratio",
			"dirty_background_ratio": "dirty_background_bytes", "dirty_background_bytes": "dirty_background_ratio",
		}[path.Base(hostPath)]
		if partner != "" && path.Dir(hostPath) == "/proc/sys/vm" {
			os.WriteFile(f.fs.Path("/proc/sys/vm/"+partner), []byte("0\n"), 0o644)
		}
	}
}

// A host that limits dirty memory in bytes keeps its limit across apply
// and revert: the ratio tuning writes zeroes dirty_bytes, so the pair is
// one setting, both are journaled and revert writes back the one that was
// in use, never ratio 0 (which with bytes 0 throttles every writer).
func TestDirtyBytesHostRevertsToBytes(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t, "cpu-only")
	emulateDirtyPairs(f)
	f.write(t, "/proc/sys/vm/dirty_bytes", "268435456\n")
	f.write(t, "/proc/sys/vm/dirty_ratio", "0\n")
	f.write(t, "/proc/sys/vm/dirty_background_bytes", "0\n")
	f.write(t, "/proc/sys/vm/dirty_background_ratio", "10\n")
	p := mustProfile(t, "name: t\nsysctl:\n  vm.dirty_ratio: 15\n  vm.dirty_background_ratio: 5\n")

	pl, _, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	if s := stepOf(t, pl, ID{KindSysctl, "vm.dirty_ratio"}); s.Action != ActionSet || !strings.Contains(s.Note, "vm.dirty_bytes") {
		t.Errorf("plan does not say dirty_bytes is zeroed: %+v", s)
	}
	res, err := f.tuner.Apply(ctx, p, f.m)
	if err != nil || !res.OK() {
		t.Fatalf("apply: %v %+v", err, res.Failed())
	}
	if got := f.read(t, "/proc/sys/vm/dirty_bytes"); got != "0" {
		t.Fatalf("emulation: dirty_bytes %s after writing the ratio", got)
	}
	if e, ok := res.Journal.entry(ID{KindSysctl, "vm.dirty_bytes"}); !ok || e.Original != "268435456" {
		t.Errorf("dirty_bytes not journaled with its original: %+v", res.Journal.Entries)
	}
	// Verified again: the zeroed partner is part of the setting, not a
	// setting to restore.
	pl, _, _ = f.tuner.Plan(ctx, p, f.m)
	if !pl.Compliant() {
		t.Errorf("after apply: %+v", pl.Steps)
	}

	res, err = f.tuner.Revert(ctx)
	if err != nil || !res.OK() {
		t.Fatalf("revert: %v %+v", err, res.Failed())
	}
	for file, want := range map[string]string{"dirty_bytes": "268435456", "dirty_ratio": "0", "dirty_background_ratio": "10", "dirty_background_bytes": "0"} {
		if got := f.read(t, "/proc/sys/vm/"+file); got != want {
			t.Errorf("after revert %s = %s, want %s", file, got, want)
		}
	}
	if len(res.Journal.Entries) != 0 {
		t.Errorf("journal after revert: %+v", res.Journal.Entries)
	}
}

// Revert of a pair someone changed since (a byte limit set by hand after
// apply) keeps their limit: writing either original would zero it.
func TestDirtyPairChangedBySomeoneElseIsKept(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t, "cpu-only")
	emulateDirtyPairs(f)
	f.write(t, "/proc/sys/vm/dirty_bytes", "0\n")
	f.write(t, "/proc/sys/vm/dirty_ratio", "20\n")
	if _, err := f.tuner.Apply(ctx, mustProfile(t, "name: t\nsysctl:\n  vm.dirty_ratio: 15\n"), f.m); err != nil {
		t.Fatal(err)
	}
	f.write(t, "/proc/sys/vm/dirty_bytes", "536870912\n")
	f.write(t, "/proc/sys/vm/dirty_ratio", "0\n")
	res, err := f.tuner.Revert(ctx)
	if err != nil || !res.OK() {
		t.Fatalf("revert: %v %+v", err, res.Failed())
	}
	if got := f.read(t, "/proc/sys/vm/dirty_bytes"); got != "536870912" {
		t.Errorf("dirty_bytes %s, want the hand-set 536870912 kept", got)
	}
	if len(res.Journal.Entries) != 0 {
		t.Errorf("journal after revert: %+v", res.Journal.Entries)
	}
}

// A journal of an older agent holds only dirty_ratio with original 0 (the
// host used dirty_bytes, which was not journaled): writing 0 back would
// leave both at 0, so it is not written.
func TestDirtyRatioZeroWithoutPartnerIsNotWritten(t *testing.T) {
	h := host()
	h.Current[ID{KindSysctl, "vm.dirty_ratio"}] = Current{Value: "15"}
	h.Current[ID{KindSysctl, "vm.dirty_bytes"}] = Current{Value: "0"}
	j := &Journal{Entries: []Entry{{Kind: KindSysctl, Key: "vm.dirty_ratio", Original: "0", Wrote: "15"}}}
	s := stepOf(t, MakePlan(Profile{Name: "none"}, h, j), ID{KindSysctl, "vm.dirty_ratio"})
	if s.Action != ActionKept || !strings.Contains(s.Note, "vm.dirty_bytes") {
		t.Errorf("%+v", s)
	}
}

func TestProfileSettingBothOfAPairIsRejected(t *testing.T) {
	_, err := ParseProfile([]byte("name: t\nsysctl:\n  vm.dirty_ratio: 15\n  vm.dirty_bytes: 268435456\n"))
	if err == nil || !strings.Contains(err.Error(), "only one of") {
		t.Errorf("err %v", err)
	}
}
