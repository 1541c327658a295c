package tuning

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// cpufreqTree adds intel_pstate cpufreq attributes to cpus of a fixture,
// as Documentation/admin-guide/pm/intel_pstate.rst (GPL-2.0) describes
// them for HWP in active mode: governors performance and powersave,
// preferences default performance balance_performance balance_power
// power; and the PM QoS device holding "no limit" (2000000000) as the
// kernel reads it out.
func cpufreqTree(t *testing.T, f *fixture, cpus int) {
	t.Helper()
	for cpu := range cpus {
		dir := fmt.Sprintf("/sys/devices/system/cpu/cpu%d/cpufreq/", cpu)
		for name, v := range map[string]string{
			"scaling_driver":                           "intel_pstate\n",
			"scaling_available_governors":              "performance powersave\n",
			"scaling_governor":                         "powersave\n",
			"energy_performance_available_preferences": "default performance balance_performance balance_power power \n",
			"energy_performance_preference":            "balance_performance\n",
		} {
			mkfile(t, f, dir+name, v)
		}
	}
	mkfile(t, f, cpuidlePath+"/current_driver", "intel_idle\n")
	mkfile(t, f, cpuLatencyPath, string(binary.NativeEndian.AppendUint32(nil, maxLatencyLimit)))
}

func mkfile(t *testing.T, f *fixture, hostPath, v string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(f.fs.Path(hostPath)), 0o755); err != nil {
		t.Fatal(err)
	}
	f.write(t, hostPath, v)
}

const cpuPowerProfile = "name: p\ncpu:\n  cpus: 0-1\n  governor: performance\n  energyPerformancePreference: performance\n  maxLatencyUs: 0\n"

// The cpu section: governor and preference on the CPUs listed only, the
// latency limit held while the Tuner's CPULatency is; drift repaired;
// revert leaves every file as it was and releases the limit.
func TestCPUPowerApplyDriftRevert(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "cpu-only")
	cpufreqTree(t, f, 4)
	f.tuner.Latency = &CPULatency{}
	p := mustProfile(t, cpuPowerProfile)
	before := f.files(t)

	pl, _, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, s := range pl.Steps {
		if s.Action != ActionSet {
			t.Errorf("%s: %s (%s)", s.ID, s.Action, s.Note)
		}
		keys = append(keys, s.ID.String()+"="+s.Current)
	}
	want := "cpufreq cpu0/scaling_governor=powersave cpufreq cpu0/energy_performance_preference=balance_performance " +
		"cpufreq cpu1/scaling_governor=powersave cpufreq cpu1/energy_performance_preference=balance_performance pm-qos cpu_dma_latency=none"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("steps\n%s\nwant\n%s", got, want)
	}

	res, err := f.tuner.Apply(ctx, p, f.m)
	if err != nil || !res.OK() || len(res.Changes) != 5 {
		t.Fatalf("apply: %v %+v", err, res.Changes)
	}
	after := f.files(t)
	changed := map[string]string{
		"/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor":              "performance",
		"/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor":              "performance",
		"/sys/devices/system/cpu/cpu0/cpufreq/energy_performance_preference": "performance",
		"/sys/devices/system/cpu/cpu1/cpufreq/energy_performance_preference": "performance",
		cpuLatencyPath: string(make([]byte, 4)),
	}
	compareTrees(t, before, after, changed)
	if v, ok := f.tuner.Latency.held(); !ok || v != 0 {
		t.Errorf("latency held %d %v", v, ok)
	}
	if pl, _, _ := f.tuner.Plan(ctx, p, f.m); !pl.Compliant() {
		t.Errorf("not compliant after apply: %s", pl.Summary())
	}

	// Someone sets powersave again on cpu1: drift, repaired.
	f.write(t, "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor", "powersave\n")
	pl, _, _ = f.tuner.Plan(ctx, p, f.m)
	if d := pl.Drifted(); len(d) != 1 || d[0].Key != "cpu1/scaling_governor" {
		t.Fatalf("drifted %+v", d)
	}
	if res, err := f.tuner.Apply(ctx, p, f.m); err != nil || len(res.Changes) != 1 {
		t.Fatalf("repair: %v %+v", err, res.Changes)
	}

	// The daemon restarted: a new CPULatency holds nothing. Held again,
	// and not called drift (nobody else can close our file).
	f.tuner.Latency.Release()
	f.tuner.Latency = &CPULatency{}
	pl, _, _ = f.tuner.Plan(ctx, p, f.m)
	if len(pl.Drifted()) != 0 || pl.Compliant() {
		t.Errorf("after a restart: drifted %+v, compliant %v", pl.Drifted(), pl.Compliant())
	}
	if res, err := f.tuner.Apply(ctx, p, f.m); err != nil || len(res.Changes) != 1 || res.Changes[0].Kind != KindPMQoS {
		t.Fatalf("hold again: %v %+v", err, res.Changes)
	}

	rev, err := f.tuner.Revert(ctx)
	if err != nil || !rev.OK() || len(rev.Changes) != 5 {
		t.Fatalf("revert: %v %+v", err, rev.Changes)
	}
	if _, ok := f.tuner.Latency.held(); ok {
		t.Error("revert left the latency limit held")
	}
	// The fixture's device file keeps the last bytes written (the kernel
	// drops the request on close); every other file is byte for byte back.
	got := f.files(t)
	delete(got, cpuLatencyPath)
	delete(before, cpuLatencyPath)
	delete(changed, cpuLatencyPath)
	sameValues(t, "after revert", before, got, changed)
}

// Revert restores the governor before the preference: intel_pstate
// answers EBUSY to a preference other than performance while the
// performance governor is set.
func TestCPUPowerRevertOrder(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "cpu-only")
	cpufreqTree(t, f, 1)
	p := mustProfile(t, "name: p\ncpu:\n  cpus: \"0\"\n  governor: performance\n  energyPerformancePreference: performance\n")
	if res, err := f.tuner.Apply(ctx, p, f.m); err != nil || !res.OK() {
		t.Fatal(err, res.Failed())
	}
	gov := "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
	f.tuner.writeErr = func(path string) error {
		if strings.HasSuffix(path, "/energy_performance_preference") && f.read(t, gov) == "performance" {
			return syscall.EBUSY
		}
		return nil
	}
	rev, err := f.tuner.Revert(ctx)
	if err != nil || !rev.OK() {
		t.Fatalf("revert: %v %+v", err, rev.Failed())
	}
	if f.read(t, gov) != "powersave" || f.read(t, "/sys/devices/system/cpu/cpu0/cpufreq/energy_performance_preference") != "balance_performance" {
		t.Error("not reverted")
	}
}

// Hosts without cpufreq, without the governor asked for, without a
// preference, or without cpuidle say unsupported; a one-shot command
// skips the latency limit, which only the daemon can hold.
func TestCPUPowerUnsupported(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, f *fixture)
		want  map[string]Action
	}{
		{"no cpufreq, no cpuidle", func(t *testing.T, f *fixture) {}, map[string]Action{
			"cpu0/scaling_governor": ActionUnsupported, "cpu0/energy_performance_preference": ActionUnsupported, CPULatencyKey: ActionUnsupported,
		}},
		{"acpi-cpufreq", func(t *testing.T, f *fixture) {
			cpufreqTree(t, f, 1)
			dir := "/sys/devices/system/cpu/cpu0/cpufreq/"
			f.write(t, dir+"scaling_driver", "acpi-cpufreq\n")
			f.write(t, dir+"scaling_available_governors", "conservative ondemand userspace powersave schedutil\n")
			os.Remove(f.fs.Path(dir + "energy_performance_preference"))
			os.Remove(f.fs.Path(dir + "energy_performance_available_preferences"))
		}, map[string]Action{
			"cpu0/scaling_governor": ActionUnsupported, "cpu0/energy_performance_preference": ActionUnsupported, CPULatencyKey: ActionSkip,
		}},
		{"garbage", func(t *testing.T, f *fixture) {
			cpufreqTree(t, f, 1)
			f.write(t, "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "")
		}, map[string]Action{
			"cpu0/scaling_governor": ActionSet, "cpu0/energy_performance_preference": ActionSet, CPULatencyKey: ActionSkip,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "cpu-only")
			tc.setup(t, f)
			p := mustProfile(t, "name: p\ncpu:\n  cpus: \"0\"\n  governor: performance\n  energyPerformancePreference: performance\n  maxLatencyUs: 10\n")
			pl, _, err := f.tuner.Plan(ctx, p, f.m)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]Action{}
			for _, s := range pl.Steps {
				got[s.Key] = s.Action
				if s.Note == "" && s.Action != ActionSet {
					t.Errorf("%s: %s without a note", s.ID, s.Action)
				}
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("%v, want %v", got, tc.want)
			}
		})
	}
}

func TestCPUPowerProfileRejects(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"name: x\ncpu:\n  governor: performance\n", "cpu.cpus: empty"},
		{"name: x\ncpu:\n  cpus: 0-3\n", "no governor or energyPerformancePreference"},
		{"name: x\ncpu:\n  cpus: 3-1\n  governor: performance\n", "cpu.cpus"},
		{"name: x\ncpu:\n  cpus: \"0\"\n  governor: Perf ormance\n", "not a governor name"},
		{"name: x\ncpu:\n  cpus: \"0\"\n  energyPerformancePreference: \"256\"\n", "0-255"},
		{"name: x\ncpu:\n  cpus: \"0\"\n  energyPerformancePreference: \"007\"\n", "0-255"},
		{"name: x\ncpu:\n  maxLatencyUs: -1\n", "cpu.maxLatencyUs: -1"},
		{"name: x\ncpu:\n  maxLatencyUs: 2000000000\n", "cpu.maxLatencyUs"},
		{"name: x\ncpu:\n  governer: performance\n", "unknown key \"governer\" in cpu"},
	} {
		_, err := ParseProfile([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseProfile(%q): %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}

// Killed between any two cpufreq writes, nothing is lost: revert brings
// back every file, and an apply then completes.
func TestCPUPowerCrashBetweenWrites(t *testing.T) {
	ctx := context.Background()
	for n := 1; n <= 3; n++ {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			f := newFixture(t, "cpu-only")
			cpufreqTree(t, f, 2)
			before := f.files(t)
			crashApplying(t, f.root, cpuPowerProfile, "write", n)
			j, _, err := f.tuner.Store.Load(f.root, readBootID(f.fs))
			if err != nil || len(j.Entries) != 4 {
				t.Fatalf("journal after the crash: %v %+v", err, j)
			}
			if rev, err := f.tuner.Revert(ctx); err != nil || !rev.OK() {
				t.Fatalf("revert: %v %+v", err, rev.Failed())
			}
			managed := map[string]string{}
			for _, e := range j.Entries {
				p, _ := e.ID().hostPath()
				managed[p] = e.Wrote
			}
			sameValues(t, "after the crash and revert", before, f.files(t), managed)
			if res, err := f.tuner.Apply(ctx, mustProfile(t, cpuPowerProfile), f.m); err != nil || !res.OK() || len(res.Changes) != 4 {
				t.Fatalf("apply after: %v %+v", err, res.Changes)
			}
		})
	}
}
