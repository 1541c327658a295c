package tuning

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/sim"
	"github.com/gpunode/gpunode/topology"
)

// fixture is a simulated node's host tree with a tuner on it.
type fixture struct {
	root  string
	fs    hostfs.FS
	tuner *Tuner
	m     Machine
}

func newFixture(t testing.TB, node string) *fixture {
	t.Helper()
	root := tmpfsDir(t)
	if _, err := sim.Build(node, root); err != nil {
		t.Fatal(err)
	}
	return fixtureAt(t, root)
}

// tmpfsDir is a temporary directory on /dev/shm when there is one: a
// simulated DGX is thousands of files, slow to write on a disk-backed /tmp.
func tmpfsDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "gpunode-tuning-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func fixtureAt(t testing.TB, root string) *fixture {
	t.Helper()
	fsys, err := hostfs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	topo, err := topology.Discover(context.Background(), fsys)
	if err != nil {
		t.Fatalf("topology of the fixture: %v", err)
	}
	return &fixture{root: root, fs: fsys, m: MachineFrom(topo, nil), tuner: &Tuner{
		FS:    fsys,
		Store: Store{Dir: filepath.Join(root, "var/lib/gpunode")},
		NetNS: func() NetNS { return NetNS{State: NetNSHost} },
	}}
}

// files reads every regular file of the tree except the state directory.
func (f *fixture) files(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(f.root, p)
		if d.IsDir() && rel == "var" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out["/"+rel] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (f *fixture) write(t testing.TB, hostPath, v string) {
	t.Helper()
	if err := os.WriteFile(f.fs.Path(hostPath), []byte(v), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) read(t testing.TB, hostPath string) string {
	t.Helper()
	s, err := f.fs.ReadString(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	return NormalizeValue(s)
}

func mustProfile(t testing.TB, yaml string) Profile {
	t.Helper()
	p, err := ParseProfile([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func builtin(t testing.TB, name string) Profile {
	t.Helper()
	p, err := Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// managedPaths maps every file a plan sets to the wanted value.
func managedPaths(t testing.TB, pl Plan) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range pl.Steps {
		if s.Action != ActionSet {
			continue
		}
		p, err := settingPath(s.ID, s.IRQ)
		if err != nil {
			t.Fatal(err)
		}
		out[p] = s.Want
	}
	return out
}

// compareTrees checks that only the expected files changed, to the
// expected values; the rest must be byte for byte the same.
func compareTrees(t *testing.T, before, after map[string]string, changed map[string]string) {
	t.Helper()
	for p, b := range before {
		a, ok := after[p]
		if !ok {
			t.Errorf("%s disappeared", p)
			continue
		}
		want, managed := changed[p]
		switch {
		case managed && isChoiceFile(p):
			if got, err := ParseBracketed(a); err != nil || got != want {
				t.Errorf("%s = %q, want %q selected", p, a, want)
			}
		case managed:
			if got := NormalizeValue(a); got != want {
				t.Errorf("%s = %q, want %q", p, got, want)
			}
		case a != b:
			t.Errorf("%s is not managed but changed: %q -> %q", p, b, a)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s was created", p)
		}
	}
}

// sameValues checks that every managed file reads as it did (the kernel
// prints values its own way, so they are compared normalized) and that
// every other file is byte for byte the same.
func sameValues(t *testing.T, what string, before, after map[string]string, managed map[string]string) {
	t.Helper()
	for p, b := range before {
		a := after[p]
		if _, ok := managed[p]; ok {
			if NormalizeValue(a) != NormalizeValue(b) {
				t.Errorf("%s: %s = %q, originally %q", what, p, a, b)
			}
		} else if a != b {
			t.Errorf("%s: unmanaged %s changed: %q -> %q", what, p, b, a)
		}
	}
	if len(after) != len(before) {
		t.Errorf("%s: %d files, originally %d", what, len(after), len(before))
	}
}

func TestApplyVerifyRevertEveryFile(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ node, profile string }{
		{"dgx-h100-ib", "llm-inference"},
		{"dgx-b200-ib", "llm-d-reference"},
		{"cpu-only", "llm-inference"},
	} {
		t.Run(tc.node+"/"+tc.profile, func(t *testing.T) {
			f := newFixture(t, tc.node)
			p := builtin(t, tc.profile)
			before := f.files(t)

			pl, _, err := f.tuner.Plan(ctx, p, f.m)
			if err != nil {
				t.Fatal(err)
			}
			if pl.Compliant() {
				t.Fatal("a stock node complies with the profile already")
			}
			want := managedPaths(t, pl)
			if got := f.files(t); !maps.Equal(got, before) {
				t.Fatal("plan changed files")
			}

			res, err := f.tuner.Apply(ctx, p, f.m)
			if err != nil {
				t.Fatal(err)
			}
			if !res.OK() {
				t.Fatalf("apply not OK: %+v", res.Failed())
			}
			if len(res.Changes) != len(want) {
				t.Errorf("%d changes for %d settings to set", len(res.Changes), len(want))
			}
			compareTrees(t, before, f.files(t), want)
			if _, err := os.Stat(filepath.Join(f.root, "etc/sysctl.conf")); !errors.Is(err, fs.ErrNotExist) {
				t.Error("apply created /etc/sysctl.conf")
			}

			// Verified compliant; a second apply changes nothing.
			pl, j, err := f.tuner.Plan(ctx, p, f.m)
			if err != nil || !pl.Compliant() {
				t.Fatalf("not compliant after apply (%v): %s", err, pl.Summary())
			}
			if len(j.Entries) != len(want) {
				t.Errorf("journal holds %d entries for %d changed settings", len(j.Entries), len(want))
			}
			for _, e := range j.Entries {
				p, _ := settingPath(e.ID(), e.IRQ)
				if NormalizeValue(before[p]) != e.Original && e.Kind != KindTHP {
					t.Errorf("journal original of %s = %q, the file held %q", e.ID(), e.Original, before[p])
				}
			}
			again, err := f.tuner.Apply(ctx, p, f.m)
			if err != nil || len(again.Changes) != 0 {
				t.Fatalf("second apply: %v, %d changes", err, len(again.Changes))
			}

			rev, err := f.tuner.Revert(ctx)
			if err != nil || !rev.OK() {
				t.Fatalf("revert: %v %+v", err, rev.Failed())
			}
			sameValues(t, "after revert", before, f.files(t), want)
			if _, err := os.Stat(filepath.Join(f.tuner.Store.Dir, JournalFile)); !errors.Is(err, fs.ErrNotExist) {
				t.Error("revert left the journal")
			}
			if rev2, err := f.tuner.Revert(ctx); err != nil || len(rev2.Changes) != 0 {
				t.Errorf("second revert: %v, %d changes", err, len(rev2.Changes))
			}
		})
	}
}

// Applying twice, or a changed profile, never replaces an original with a
// tuned value; settings a new profile drops are restored.
func TestOriginalsSurviveProfileChanges(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "cpu-only")
	swap := func(v int) Profile {
		return mustProfile(t, fmt.Sprintf("name: s%d\nsysctl:\n  vm.swappiness: %d\n  vm.dirty_ratio: 30\n", v, v))
	}
	for _, v := range []int{5, 10, 10} {
		if res, err := f.tuner.Apply(ctx, swap(v), f.m); err != nil || !res.OK() {
			t.Fatalf("apply %d: %v", v, err)
		}
		if got := f.read(t, "/proc/sys/vm/swappiness"); got != strconv.Itoa(v) {
			t.Fatalf("swappiness %s, want %d", got, v)
		}
	}
	j, _, _ := f.tuner.Store.Load(f.root, readBootID(f.fs))
	if e, _ := j.entry(ID{KindSysctl, "vm.swappiness"}); e.Original != "60" || e.Wrote != "10" {
		t.Errorf("journal entry %+v, want original 60, wrote 10", e)
	}
	if j.Profile != "s10" {
		t.Errorf("journal profile %q", j.Profile)
	}

	// A profile without vm.dirty_ratio restores it and keeps swappiness.
	res, err := f.tuner.Apply(ctx, mustProfile(t, "name: only-swap\nsysctl:\n  vm.swappiness: 10\n"), f.m)
	if err != nil || !res.OK() {
		t.Fatal(err)
	}
	if len(res.Changes) != 1 || res.Changes[0].Key != "vm.dirty_ratio" || res.Changes[0].Outcome != OutcomeRestored {
		t.Errorf("changes %+v, want vm.dirty_ratio restored", res.Changes)
	}
	if got := f.read(t, "/proc/sys/vm/dirty_ratio"); got != "20" {
		t.Errorf("dirty_ratio %s, want the original 20", got)
	}
	// Profile none restores the rest, like revert.
	if _, err := f.tuner.Apply(ctx, builtin(t, "none"), f.m); err != nil {
		t.Fatal(err)
	}
	if got := f.read(t, "/proc/sys/vm/swappiness"); got != "60" {
		t.Errorf("swappiness %s after profile none, want 60", got)
	}
	if _, err := os.Stat(filepath.Join(f.tuner.Store.Dir, JournalFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Error("journal left after profile none restored everything")
	}
}

func TestDriftDetectedAndRepaired(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "dgx-h100-ib")
	p := builtin(t, "llm-inference")
	if _, err := f.tuner.Apply(ctx, p, f.m); err != nil {
		t.Fatal(err)
	}
	pl0, _, _ := f.tuner.Plan(ctx, p, f.m)
	last := pl0.Steps[len(pl0.Steps)-1]
	if last.Kind != KindIRQ {
		t.Fatalf("last step %v", last.ID)
	}
	irqPath, _ := settingPath(last.ID, last.IRQ)
	tuned := f.read(t, irqPath)
	f.write(t, "/proc/sys/vm/swappiness", "60\n")
	f.write(t, irqPath, "0-223\n")

	pl, _, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	var drifted []string
	for _, s := range pl.Drifted() {
		drifted = append(drifted, s.ID.String())
	}
	if want := []string{"sysctl vm.swappiness", last.ID.String()}; !slices.Equal(drifted, want) {
		t.Fatalf("drifted %v, want %v", drifted, want)
	}
	if pl.Compliant() || Summarize(pl, 0) != StateDrifted {
		t.Errorf("state %s", Summarize(pl, 0))
	}
	res, err := f.tuner.Apply(ctx, p, f.m)
	if err != nil || len(res.Changes) != 2 || !res.Changes[0].Drift {
		t.Fatalf("repair: %v %+v", err, res.Changes)
	}
	if f.read(t, "/proc/sys/vm/swappiness") != "1" || f.read(t, irqPath) != tuned {
		t.Error("drift not repaired")
	}
	// The original survives the repair: revert restores 60, not the drifted value.
	if _, err := f.tuner.Revert(ctx); err != nil {
		t.Fatal(err)
	}
	if f.read(t, "/proc/sys/vm/swappiness") != "60" || f.read(t, irqPath) != "0-223" {
		t.Error("revert after repair did not restore the originals")
	}
}

// A value changed by someone else to something other than what we wrote
// (the profile changed) is a plain set, not drift.
func TestProfileEditIsNotDrift(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "cpu-only")
	f.tuner.Apply(ctx, mustProfile(t, "name: a\nsysctl:\n  vm.swappiness: 5\n"), f.m)
	pl, _, _ := f.tuner.Plan(ctx, mustProfile(t, "name: a\nsysctl:\n  vm.swappiness: 7\n"), f.m)
	if len(pl.Steps) != 1 || pl.Steps[0].Action != ActionSet || pl.Steps[0].Drift {
		t.Errorf("steps %+v", pl.Steps)
	}
}

func TestUnsupportedAndRefused(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "dgx-h100-ib")
	pl, _, err := f.tuner.Plan(ctx, builtin(t, "llm-d-reference"), f.m)
	if err != nil {
		t.Fatal(err)
	}
	unsupported := 0
	for _, s := range pl.Steps {
		if strings.HasPrefix(s.Key, "kernel.sched_") {
			unsupported++
			if s.Action != ActionUnsupported || !strings.Contains(s.Note, "6.8.0-49-generic") || !strings.Contains(s.Note, "debugfs") && !strings.Contains(s.Note, "EEVDF") {
				t.Errorf("%s: %s %q", s.Key, s.Action, s.Note)
			}
		}
	}
	if unsupported != 3 {
		t.Errorf("%d scheduler keys reported unsupported, want 3", unsupported)
	}
	res, err := f.tuner.Apply(ctx, builtin(t, "llm-d-reference"), f.m)
	if err != nil || !res.OK() {
		t.Fatalf("unsupported keys stopped the rest: %v %+v", err, res.Failed())
	}
	if f.read(t, "/proc/sys/kernel/numa_balancing") != "2" || f.read(t, "/proc/sys/vm/swappiness") != "1" {
		t.Error("the supported settings were not applied")
	}
	if _, err := os.Stat(f.fs.Path("/proc/sys/kernel/sched_migration_cost_ns")); err == nil {
		t.Error("apply created a file for an unsupported key")
	}

	// Outside the host's network namespace net.* is refused, the rest applied.
	g := newFixture(t, "cpu-only")
	g.tuner.NetNS = func() NetNS { return NetNS{State: NetNSOther, Detail: "agent in net:[1], host PID 1 in net:[2]"} }
	res, err = g.tuner.Apply(ctx, builtin(t, "llm-inference"), g.m)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() {
		t.Error("apply with refused settings reports OK")
	}
	for _, s := range res.Plan.Steps {
		if s.ID.isNet() != (s.Action == ActionRefused) {
			t.Errorf("%s: %s", s.ID, s.Action)
		}
		if s.Action == ActionRefused && !strings.Contains(s.Note, "hostNetwork") {
			t.Errorf("refusal does not say to use hostNetwork: %q", s.Note)
		}
	}
	if g.read(t, "/proc/sys/net/core/rmem_max") != "212992" || g.read(t, "/proc/sys/vm/swappiness") != "1" {
		t.Error("refused net.* written or vm.* not applied")
	}
}

func TestCongestionControlAvailability(t *testing.T) {
	f := newFixture(t, "cpu-only")
	f.write(t, "/proc/sys/net/ipv4/tcp_available_congestion_control", "reno cubic\n")
	p := mustProfile(t, "name: c\nsysctl:\n  net.ipv4.tcp_congestion_control: bbr\n")
	plan := func() Step {
		pl, _, err := f.tuner.Plan(context.Background(), p, f.m)
		if err != nil || len(pl.Steps) != 1 {
			t.Fatal(err)
		}
		return pl.Steps[0]
	}
	// /lib/modules unreadable: try the write (the kernel may load it).
	if s := plan(); s.Action != ActionSet || !strings.Contains(s.Note, "tries to load tcp_bbr") {
		t.Errorf("unknown modules: %+v", s)
	}
	dir := "/lib/modules/6.8.0-49-generic/"
	os.MkdirAll(f.fs.Path(dir), 0o755)
	f.write(t, dir+"modules.dep", "kernel/net/ipv4/tcp_htcp.ko:\nkernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko\n")
	f.write(t, dir+"modules.builtin", "kernel/net/ipv4/tcp_cubic.ko\n")
	if s := plan(); s.Action != ActionUnsupported || !strings.Contains(s.Note, "congestion control bbr is not available in kernel 6.8.0-49-generic") {
		t.Errorf("no bbr module: %+v", s)
	}
	f.write(t, dir+"modules.dep", "kernel/net/ipv4/tcp_bbr.ko.zst:\n")
	if s := plan(); s.Action != ActionSet || !strings.Contains(s.Note, "loads the tcp_bbr module") {
		t.Errorf("bbr module present: %+v", s)
	}
}

// A setting that fails does not stop the others, and leaves no journal
// entry when its value provably did not change.
func TestFailingWriteIsIsolated(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "cpu-only")
	// A directory where a sysctl file should be: the write fails (EISDIR).
	path := f.fs.Path("/proc/sys/vm/dirty_ratio")
	os.Remove(path)
	os.Mkdir(path, 0o755)
	res, err := f.tuner.Apply(ctx, builtin(t, "llm-inference"), f.m)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() {
		t.Error("apply with an unreadable setting reports OK")
	}
	for _, s := range res.Plan.Steps {
		if s.Key == "vm.dirty_ratio" && s.Action != ActionError {
			t.Errorf("vm.dirty_ratio planned %s", s.Action)
		}
	}
	if f.read(t, "/proc/sys/vm/swappiness") != "1" {
		t.Error("the other settings were not applied")
	}
	j, _, _ := f.tuner.Store.Load(f.root, readBootID(f.fs))
	if j.has(ID{KindSysctl, "vm.dirty_ratio"}) {
		t.Error("journal holds an entry for a setting never changed")
	}

	// A write the kernel ignores (as /dev/null does) fails its read-back,
	// and the journal entry is dropped again.
	g := newFixture(t, "cpu-only")
	ro := g.fs.Path("/proc/sys/vm/swappiness")
	os.Remove(ro)
	if err := os.Symlink("/dev/null", ro); err != nil {
		t.Fatal(err)
	}
	p := mustProfile(t, "name: x\nsysctl:\n  vm.swappiness: 1\n  vm.dirty_ratio: 15\n")
	res, err = g.tuner.Apply(ctx, p, g.m)
	if err != nil {
		t.Fatal(err)
	}
	failed := res.Failed()
	if len(failed) != 1 || failed[0].Key != "vm.swappiness" || !strings.Contains(failed[0].Error, "the kernel kept") {
		t.Fatalf("failed: %+v", failed)
	}
	if g.read(t, "/proc/sys/vm/dirty_ratio") != "15" {
		t.Error("the other setting was not applied")
	}
	j, _, _ = g.tuner.Store.Load(g.root, readBootID(g.fs))
	if j.has(ID{KindSysctl, "vm.swappiness"}) || !j.has(ID{KindSysctl, "vm.dirty_ratio"}) {
		t.Errorf("journal entries %+v", j.Entries)
	}
}

// crashEnv names the stage and count at which the helper process dies.
const crashEnv = "GPUNODE_TUNING_CRASH"

// TestCrashHelper is the process that crashes; it does nothing in a
// normal run.
func TestCrashHelper(t *testing.T) {
	spec := os.Getenv(crashEnv)
	if spec == "" {
		return
	}
	stage, rest, _ := strings.Cut(spec, ":")
	n, root, _ := strings.Cut(rest, ":")
	after, _ := strconv.Atoi(n)
	f := fixtureAt(t, root)
	seen := 0
	f.tuner.crashPoint = func(s string) {
		if s == stage {
			if seen++; seen == after {
				os.Exit(42) // no deferred cleanup, as after a kill
			}
		}
	}
	profile := cmp.Or(os.Getenv(crashProfileEnv), "llm-inference")
	p := func() Profile {
		if strings.HasPrefix(profile, "name:") { // a profile's YAML
			return mustProfile(t, profile)
		}
		return builtin(t, profile)
	}()
	f.tuner.Apply(context.Background(), p, f.m)
	t.Fatal("did not crash")
}

// crashProfileEnv names the profile the helper applies (llm-inference),
// or holds its YAML.
const crashProfileEnv = "GPUNODE_TUNING_CRASH_PROFILE"

func crashAt(t *testing.T, root, stage string, n int) {
	t.Helper()
	crashApplying(t, root, "llm-inference", stage, n)
}

func crashApplying(t *testing.T, root, profile, stage string, n int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d:%s", crashEnv, stage, n, root), crashProfileEnv+"="+profile)
	out, err := cmd.CombinedOutput()
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 42 {
		t.Fatalf("helper did not crash: %v\n%s", err, out)
	}
}

// A crash after the journal is written and before or between the writes
// loses nothing: the journal holds every original, and revert (or a new
// apply, then revert) restores exactly the values before.
func TestCrashLosesNothing(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		stage string
		n     int
		next  string // what runs after the crash
	}{
		{"journal", 1, "revert"},
		{"journal", 1, "apply"},
		{"write", 5, "revert"},
		{"write", 5, "apply"},
		{"write", 40, "apply"},
	} {
		t.Run(fmt.Sprintf("%s-%d-then-%s", tc.stage, tc.n, tc.next), func(t *testing.T) {
			f := newFixture(t, "dgx-h100-ib")
			p := builtin(t, "llm-inference")
			pl, _, err := f.tuner.Plan(ctx, p, f.m)
			if err != nil {
				t.Fatal(err)
			}
			managed := managedPaths(t, pl)
			before := f.files(t)
			crashAt(t, f.root, tc.stage, tc.n)

			j, _, err := f.tuner.Store.Load(f.root, readBootID(f.fs))
			if err != nil {
				t.Fatal(err)
			}
			if len(j.Entries) != len(managed) {
				t.Fatalf("journal after the crash holds %d entries, want all %d", len(j.Entries), len(managed))
			}
			changed := 0
			now := f.files(t)
			for p := range managed {
				if NormalizeValue(now[p]) != NormalizeValue(before[p]) {
					changed++
				}
			}
			if want := map[string]int{"journal": 0, "write": tc.n}[tc.stage]; changed != want {
				t.Errorf("%d settings changed before the crash, want %d", changed, want)
			}
			if tc.next == "apply" {
				res, err := f.tuner.Apply(ctx, p, f.m)
				if err != nil || !res.OK() {
					t.Fatalf("apply after crash: %v", err)
				}
				compareTrees(t, before, f.files(t), managed)
			}
			if _, err := f.tuner.Revert(ctx); err != nil {
				t.Fatal(err)
			}
			sameValues(t, "after the crash and revert", before, f.files(t), managed)
		})
	}
}

// A process killed inside Save leaves its temporary file; the next apply
// or revert (holding the lock) removes it, and nothing else.
func TestStaleTempFilesSwept(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "cpu-only")
	os.MkdirAll(f.tuner.Store.Dir, 0o755)
	stale := filepath.Join(f.tuner.Store.Dir, ".tuning-journal-123456")
	other := filepath.Join(f.tuner.Store.Dir, "notes.txt")
	os.WriteFile(stale, []byte(`{"version": 1`), 0o600)
	os.WriteFile(other, []byte("mine"), 0o600)
	if _, _, err := f.tuner.Plan(ctx, builtin(t, "llm-inference"), f.m); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err != nil {
		t.Error("plan, which writes nothing, removed a file")
	}
	if _, err := f.tuner.Apply(ctx, builtin(t, "llm-inference"), f.m); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("stale temporary journal left after apply")
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another file removed: %v", err)
	}
	os.WriteFile(stale, nil, 0o600)
	if _, err := f.tuner.Revert(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("stale temporary journal left after revert")
	}
}

// A crash while profile none restores the originals leaves the restored
// settings at their originals and the rest as tuning set them. A plan of
// the earlier profile then sets the restored ones again: tuning changed
// them, nobody else, so none is drifted. Finishing the restore leaves
// every original.
func TestCrashDuringRestoreIsNotDrift(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "cpu-only")
	p := builtin(t, "llm-inference")
	before := f.files(t)
	pl, _, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	managed := managedPaths(t, pl)
	if res, err := f.tuner.Apply(ctx, p, f.m); err != nil || !res.OK() {
		t.Fatalf("apply: %v", err)
	}
	crashApplying(t, f.root, "none", "write", 3)

	pl, _, err = f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	set := 0
	for _, s := range pl.Steps {
		if s.Drift {
			t.Errorf("%s called drifted after a crash during profile none: %s", s.ID, s.Note)
		}
		if s.Action == ActionSet {
			set++
		}
	}
	if set != 3 {
		t.Errorf("%d settings to set again, want the 3 restored before the crash:\n%+v", set, pl.Steps)
	}
	if res, err := f.tuner.Apply(ctx, builtin(t, "none"), f.m); err != nil || !res.OK() {
		t.Fatalf("apply none after the crash: %v", err)
	}
	sameValues(t, "after the crash and profile none", before, f.files(t), managed)
}

func TestDamagedJournalIsKept(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "cpu-only")
	os.MkdirAll(f.tuner.Store.Dir, 0o755)
	jpath := filepath.Join(f.tuner.Store.Dir, JournalFile)
	garbage := []byte(`{"version": 1, "host_root": "` + f.root + `", "entries": [{"kind": "sysctl", "key": "vm.swappiness", "original": "60"`)
	os.WriteFile(jpath, garbage, 0o600)
	before := f.files(t)
	for _, run := range []func() error{
		func() error { _, err := f.tuner.Apply(ctx, builtin(t, "llm-inference"), f.m); return err },
		func() error { _, err := f.tuner.Revert(ctx); return err },
		func() error { _, _, err := f.tuner.Plan(ctx, builtin(t, "llm-inference"), f.m); return err },
	} {
		if err := run(); err == nil || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "left as it is") {
			t.Errorf("damaged journal: %v", err)
		}
	}
	if b, _ := os.ReadFile(jpath); string(b) != string(garbage) {
		t.Error("damaged journal was rewritten")
	}
	if !maps.Equal(before, f.files(t)) {
		t.Error("settings changed despite a damaged journal")
	}
}

func TestJournalOfAnotherRootOrBoot(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "cpu-only")
	p := builtin(t, "llm-inference")
	if _, err := f.tuner.Apply(ctx, p, f.m); err != nil {
		t.Fatal(err)
	}
	// The same state directory for another host root is refused.
	g := newFixture(t, "cpu-only")
	g.tuner.Store = f.tuner.Store
	if _, err := g.tuner.Apply(ctx, p, g.m); err == nil || !strings.Contains(err.Error(), "belongs to host root "+f.root) {
		t.Errorf("journal of another root: %v", err)
	}
	// After a reboot the journal is set aside: the kernel reset the values.
	f.write(t, "/proc/sys/kernel/random/boot_id", "00000000-0000-4000-8000-000000000001\n")
	f.write(t, "/proc/sys/vm/swappiness", "30\n") // the new boot's value
	pl, j, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Entries) != 0 || len(pl.Warnings) == 0 || !strings.Contains(pl.Warnings[len(pl.Warnings)-1], "earlier boot") {
		t.Errorf("journal of an earlier boot: %d entries, warnings %q", len(j.Entries), pl.Warnings)
	}
	if _, err := os.Stat(filepath.Join(f.tuner.Store.Dir, previousBootFile)); err == nil {
		t.Error("plan moved the journal")
	}
	if _, err := f.tuner.Apply(ctx, p, f.m); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.tuner.Store.Dir, previousBootFile)); err != nil {
		t.Errorf("earlier boot's journal not kept aside: %v", err)
	}
	f.tuner.Revert(ctx)
	if got := f.read(t, "/proc/sys/vm/swappiness"); got != "30" {
		t.Errorf("revert restored %s, want this boot's original 30", got)
	}
}

func TestParseJournalRejects(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{``, "EOF"},
		{`{"version": 2, "host_root": "/"}`, "version 2"},
		{`{"version": 1}`, "no host_root"},
		{`{"version": 1, "host_root": "/", "extra": 1}`, "unknown field"},
		{`{"version": 1, "host_root": "/"} {}`, "data after"},
		{`{"version": 1, "host_root": "/", "entries": [{"kind": "file", "key": "x"}]}`, "unknown setting kind"},
		{`{"version": 1, "host_root": "/", "entries": [{"kind": "sysctl", "key": "../x"}]}`, "relative component"},
		{`{"version": 1, "host_root": "/", "entries": [{"kind": "irq", "key": "01"}]}`, "want <PCI address>/<queue> or an IRQ number"},
		{`{"version": 1, "host_root": "/", "entries": [{"kind": "irq", "key": "0000:18:00.0/q\n"}]}`, "want <PCI address>/<queue>"},
		{`{"version": 1, "host_root": "/", "entries": [{"kind": "irq", "key": "0000:18:00.0/q", "irq": -1}]}`, "irq -1"},
		{`{"version": 1, "host_root": "/", "entries": [{"kind": "service", "key": "sshd.service"}]}`, "only irqbalance.service"},
		{`{"version": 1, "host_root": "/", "entries": [{"kind": "irqbalance", "key": "cpus"}]}`, "only banned-irqs"},
		{`{"version": 1, "host_root": "/", "entries": [{"kind": "irq", "key": "5"}, {"kind": "irq", "key": "5"}]}`, "twice"},
	} {
		if _, err := ParseJournal([]byte(tc.json)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseJournal(%s): %v, want %q", tc.json, err, tc.want)
		}
	}
}

func FuzzParseJournal(f *testing.F) {
	f.Add([]byte(`{"version": 1, "host_root": "/", "boot_id": "x", "profile": "p", "entries": [{"kind": "irq", "key": "12", "original": "0-3", "wrote": "2", "recorded_at": "2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version": 1, "host_root": "/", "entries": [{"kind": "irq", "key": "0000:18:00.0/mlx5_comp3", "irq": 155, "original": "0-3", "wrote": "2"}]}`))
	f.Add([]byte(`{"version": 1, "host_root": "/", "entries": [{"kind": "sysctl", "key": "net/ipv4/conf/eth0.1/x", "original": "1", "wrote": "0"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		j, err := ParseJournal(b)
		if err != nil {
			return
		}
		for _, e := range j.Entries {
			p, err := settingPath(e.ID(), max(e.IRQ, 1))
			if err != nil {
				t.Fatalf("entry %v accepted: %v", e.ID(), err)
			}
			if e.Kind != KindService && e.Kind != KindIRQBalance && (!strings.HasPrefix(p, "/proc/") && !strings.HasPrefix(p, "/sys/")) || strings.Contains(p, "..") {
				t.Fatalf("entry %v maps outside /proc and /sys: %s", e.ID(), p)
			}
		}
	})
}
