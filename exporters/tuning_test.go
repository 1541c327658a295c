package exporters

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gpunode/gpunode/tuning"
)

func TestTuningCollector(t *testing.T) {
	var s *tuning.Status
	c := NewTuningCollector(func() *tuning.Status { return s })
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Fatalf("before the first run: %d series", n)
	}
	s = &tuning.Status{
		Mode: tuning.ModeEnforce, Profile: "llm-inference", State: tuning.StateDrifted,
		DriftTotal: 3, LastApply: time.Unix(1700000000, 0),
		Plan: &tuning.Plan{Steps: []tuning.Step{
			{ID: tuning.ID{Kind: tuning.KindSysctl, Key: "vm.swappiness"}, Action: tuning.ActionOK},
			{ID: tuning.ID{Kind: tuning.KindSysctl, Key: "net.core.rmem_max"}, Action: tuning.ActionSet, Drift: true},
			{ID: tuning.ID{Kind: tuning.KindIRQ, Key: "152"}, Action: tuning.ActionConflict},
			{ID: tuning.ID{Kind: tuning.KindSysctl, Key: "kernel.sched_migration_cost_ns"}, Action: tuning.ActionUnsupported},
			{ID: tuning.ID{Kind: tuning.KindIRQ, Key: "153"}, Action: tuning.ActionSkip},
			// No longer managed, changed by someone else: not tuning's.
			{ID: tuning.ID{Kind: tuning.KindSysctl, Key: "vm.dirty_ratio"}, Action: tuning.ActionKept},
		}},
	}
	want := `
# HELP gpunode_tuning_drift_total Settings found changed by someone else after tuning set them, since the agent started.
# TYPE gpunode_tuning_drift_total counter
gpunode_tuning_drift_total 3
# HELP gpunode_tuning_info Host tuning: the profile, mode (enforce, audit, revert, off) and state (compliant, pending, drifted, conflict, error, unknown, off, reverted); always 1.
# TYPE gpunode_tuning_info gauge
gpunode_tuning_info{mode="enforce",profile="llm-inference",state="drifted"} 1
# HELP gpunode_tuning_last_apply_timestamp_seconds Unix time when tuning last changed a setting; absent until it has.
# TYPE gpunode_tuning_last_apply_timestamp_seconds gauge
gpunode_tuning_last_apply_timestamp_seconds 1.7e+09
# HELP gpunode_tuning_setting_compliant 1 if the managed setting has the value the profile wants, 0 if not (to set, drifted, conflicting or failing). Unsupported and skipped settings are left out.
# TYPE gpunode_tuning_setting_compliant gauge
gpunode_tuning_setting_compliant{key="152",kind="irq"} 0
gpunode_tuning_setting_compliant{key="net.core.rmem_max",kind="sysctl"} 0
gpunode_tuning_setting_compliant{key="vm.swappiness",kind="sysctl"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %+v", err, problems)
	}
	// Tuning off: only the info series and the counter.
	s = &tuning.Status{Mode: tuning.ModeOff, State: tuning.StateOff}
	if n := testutil.CollectAndCount(c); n != 2 {
		t.Errorf("off: %d series, want 2", n)
	}
}
