package agent

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/internal/testsupport"
	"github.com/gpunode/gpunode/tuning"
)

// A drift whose repair the kernel does not take (the value reads back as
// before) is not "set back" every interval: no TuningDriftRepaired, one
// TuningFailed, counted once in the drift metric, and the repair backs
// off instead of being written every interval.
func TestTuningFailedRepairNotReportedEachInterval(t *testing.T) {
	env := testsupport.SimEnv(t, "cpu-only")
	events, logs := &eventLog{}, &syncBuffer{}
	tc := config.DefaultTuning()
	tc.Mode, tc.Interval = tuning.ModeEnforce, 25*time.Millisecond
	metrics := runTuningDaemon(t, env, tc, events, logs, nil, nil)
	waitFor(t, "TuningApplied", func() bool { _, ok := events.find("TuningApplied"); return ok })
	waitFor(t, "compliant", func() bool { _, b := get(t, metrics); return strings.Contains(b, `state="compliant"`) })

	// Someone changes it, in a way no write repairs (writes are taken and
	// dropped, the value reads as empty).
	path := env.FS.Path("/proc/sys/vm/swappiness")
	os.Remove(path)
	if err := os.Symlink("/dev/null", path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "error state", func() bool { _, b := get(t, metrics); return strings.Contains(b, `state="error"`) })
	time.Sleep(800 * time.Millisecond) // about 30 intervals
	if n := events.count("TuningDriftRepaired"); n != 0 {
		ev, _ := events.find("TuningDriftRepaired")
		t.Errorf("%d TuningDriftRepaired events for a repair that failed: %+v", n, ev)
	}
	if n := events.count("TuningFailed"); n != 1 {
		t.Errorf("%d TuningFailed events, want 1", n)
	}
	if _, b := get(t, metrics); !strings.Contains(b, "gpunode_tuning_drift_total 1\n") {
		t.Errorf("drift counted more than once:\n%s", grepLines(b, "gpunode_tuning_drift_total"))
	}
	// Back-off: attempts at 0, 1, 3, 7, 15, 31 intervals (and a few more
	// for timing) instead of one every interval.
	if n := strings.Count(logs.String(), "tuning change failed"); n > 8 {
		t.Errorf("the failing repair was written %d times in about 30 intervals", n)
	}
	// A state that still says error, and the repair still happens once the
	// value can be written again.
	os.Remove(path)
	os.WriteFile(path, []byte("60\n"), 0o644)
	waitFor(t, "repaired after the back-off", func() bool { return readHost(t, env, "/proc/sys/vm/swappiness") == "1" })
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
