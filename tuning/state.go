package tuning

import "time"

// Modes of the daemon.
const (
	// ModeEnforce applies the profile at start and repairs drift.
	ModeEnforce = "enforce"
	// ModeAudit only reports: nothing is written.
	ModeAudit = "audit"
	// ModeOff leaves tuning alone entirely.
	ModeOff = "off"
	// ModeRevert restores every original the journal holds, then only
	// reports (for uninstall and rollback): nothing is applied.
	ModeRevert = "revert"
)

// States summarize a host against its profile (the tuning.state label).
const (
	StateCompliant = "compliant" // every managed setting as wanted
	StatePending   = "pending"   // differs, never applied (audit mode)
	StateDrifted   = "drifted"   // applied, then changed by someone else
	StateConflict  = "conflict"  // irqbalance owns the interrupts
	StateError     = "error"     // a setting could not be read or written
	StateOff       = "off"
	StateReverted  = "reverted" // revert mode: the journal is empty, every original restored (or kept as someone else set it)
	// StateUnknown (irqbalance.go) is also a host state: net.* settings
	// differ but cannot be judged, since whether the agent is in the
	// host's network namespace is unproven (the host's /proc/1 is
	// unreadable); nothing else is wrong.
)

// Summarize returns the state of a verified plan; failed lists changes
// that did not succeed in the last run.
func Summarize(pl Plan, failed int) string {
	var conflict, drift, pending, unknown bool
	for _, s := range pl.Steps {
		switch s.Action {
		case ActionRefused:
			if pl.nsState(s.ID) != NetNSUnknown {
				return StateError // in another namespace: a deployment error
			}
			unknown = true
		case ActionError:
			return StateError
		case ActionConflict:
			conflict = true
		case ActionSet, ActionRestore:
			if s.Drift {
				drift = true
			} else {
				pending = true
			}
		}
	}
	switch {
	case failed > 0:
		return StateError
	case conflict:
		return StateConflict
	case drift:
		return StateDrifted
	case pending:
		return StatePending
	case unknown:
		return StateUnknown
	}
	return StateCompliant
}

// Status is the daemon's tuning state, for metrics and labels.
type Status struct {
	Mode    string `json:"mode"`
	Profile string `json:"profile,omitempty"`
	// State is one of the State* constants; empty before the first run.
	State string `json:"state,omitempty"`
	// Plan is the last verification.
	Plan *Plan `json:"plan,omitempty"`
	// DriftTotal counts settings found drifted since the agent started.
	DriftTotal uint64 `json:"drift_total"`
	// LastApply is when an apply last changed a setting (zero: never).
	LastApply time.Time `json:"last_apply,omitzero"`
	// Error is why the last run failed as a whole (profile, journal).
	Error string `json:"error,omitempty"`
}
