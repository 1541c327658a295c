package agent

import (
	"slices"

	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/verify"
)

// verifyNode runs node verification on a new snapshot, keeps the report
// for the metrics, the label and the condition, and reports every check
// that changed state as an event (published, or logged standalone).
func (d *daemon) verifyNode(s *snapshot.Snapshot) {
	r := verify.Run(s, verify.Options{ExpectedGPUCount: d.cfg.Verify.ExpectedGPUCount, GPUMemoryRegistrations: d.probes.GPUMemoryRegistrations()})
	prev := d.verification.Swap(&r)
	if prev == nil || prev.Verified != r.Verified {
		d.log.Info("node verification", "verified", r.Verified, "failed", r.Counts.Fail, "warnings", r.Counts.Warn, "passed", r.Counts.Pass, "skipped", r.Counts.Skip)
	}
	for _, e := range verify.Events(prev, r) {
		if d.emit != nil {
			d.emit(e)
			continue
		}
		d.log.Info("event (standalone: not published)", "type", e.Type, "reason", e.Reason, "message", e.Message)
	}
}

// verified is node verification's verdict; nil before the first
// verification.
func (d *daemon) verified() *bool {
	r := d.verification.Load()
	if r == nil {
		return nil
	}
	return &r.Verified
}

// verifiedCondition is the GPUNodeVerified condition, if verification ran.
func (d *daemon) verifiedCondition() []nodestatus.Condition {
	r := d.verification.Load()
	if r == nil {
		return nil
	}
	return []nodestatus.Condition{verify.Condition(*r)}
}

// logConditions logs, standalone, the conditions that changed since the
// last call.
func (d *daemon) logConditions(conds []nodestatus.Condition) {
	for _, c := range conds {
		if slices.Contains(d.conditions, c) {
			continue
		}
		d.log.Info("condition", "type", c.Type, "status", c.Status, "reason", c.Reason, "message", c.Message)
	}
	d.conditions = conds
}
