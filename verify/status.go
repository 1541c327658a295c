package verify

import (
	"fmt"
	"strings"

	"github.com/gpunode/gpunode/nodestatus"
)

// maxMessage keeps condition messages to a readable line.
const maxMessage = 1024

// Condition is the GPUNodeVerified Node condition for a report: True when
// no check failed, False naming every failed check with what it saw.
func Condition(r Report) nodestatus.Condition {
	if r.Verified {
		msg := fmt.Sprintf("%d checks passed, %d warnings, %d not applicable", r.Counts.Pass, r.Counts.Warn, r.Counts.Skip)
		return nodestatus.Condition{Type: nodestatus.Verified, Status: nodestatus.True, Reason: "ChecksPassed", Message: msg}
	}
	var parts []string
	for _, res := range r.Failed() {
		parts = append(parts, fmt.Sprintf("%s %s: %s (expected %s)", res.Check, res.Subject, res.Observed, res.Expected))
	}
	msg := fmt.Sprintf("%d failed: %s", len(parts), strings.Join(parts, "; "))
	if len(msg) > maxMessage {
		msg = msg[:maxMessage-3] + "..."
	}
	return nodestatus.Condition{Type: nodestatus.Verified, Status: nodestatus.False, Reason: "ChecksFailed", Message: msg}
}

// Events are the Kubernetes events for what changed from prev to next:
// a Warning for each check and subject that newly fails or warns, a
// Normal one for each that stopped failing or warning. On the first
// report (prev nil) only findings are reported, not every pass.
func Events(prev *Report, next Report) []nodestatus.Event {
	was := map[[2]string]Status{}
	if prev != nil {
		for _, res := range prev.Results {
			was[[2]string{res.Check, res.Subject}] = res.Status
		}
	}
	finding := func(s Status) bool { return s == Fail || s == Warn }
	var out []nodestatus.Event
	for _, res := range next.Results {
		old, seen := was[[2]string{res.Check, res.Subject}]
		switch {
		case finding(res.Status) && (!seen || old != res.Status):
			reason := "CheckFailed"
			if res.Status == Warn {
				reason = "CheckWarning"
			}
			out = append(out, nodestatus.Event{Type: nodestatus.Warning, Reason: reason,
				Message: fmt.Sprintf("%s %s %s: %s (expected %s). %s", res.Check, res.Subject, res.Status, res.Observed, res.Expected, res.Remedy)})
		case !finding(res.Status) && seen && finding(old):
			out = append(out, nodestatus.Event{Type: nodestatus.Normal, Reason: "CheckPassed",
				Message: fmt.Sprintf("%s %s is %s now (was %s): %s", res.Check, res.Subject, res.Status, old, res.Observed)})
		}
	}
	// A subject that is gone (a GPU fell off the bus) takes its finding
	// with it; the checks that see the loss report it themselves.
	return out
}
