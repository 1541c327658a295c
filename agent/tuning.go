package agent

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/tuning"
)

// tuningRunTimeout bounds one verification or apply, lock wait included.
const tuningRunTimeout = 30 * time.Second

// tuningLoop applies or audits the configured profile on its own
// schedule, off the discovery loop: a slow systemd or a held journal lock
// must not stall discovery or the watchdog.
type tuningLoop struct {
	// newTuner returns the tuner for a state directory (it can change on reload).
	newTuner func(stateDir string) *tuning.Tuner
	tuner    *tuning.Tuner
	log      *slog.Logger
	emit     func(nodestatus.Event)
	// snap returns the latest snapshot (its topology places interrupts).
	snap func() *snapshot.Snapshot
	// unmovable outlives the tuners: interrupts the kernel refused to
	// move are not tried again every interval.
	unmovable tuning.UnmovableIRQs
	// latency holds the CPU latency limit (cpu.maxLatencyUs) for as long
	// as the daemon runs; released when run returns.
	latency tuning.CPULatency

	// changed is poked (never blocking) when the labels change, so the
	// daemon republishes them without waiting for the next discovery.
	changed chan struct{}

	mu     sync.Mutex
	status tuning.Status
	labels *labels.Tuning // nil before the first run
	// drifted, failed and warnings remember what was already reported, so
	// an unchanged drift (audit mode), failure or plan warning is not
	// reported again every interval.
	drifted, failed, warnings string
	// counted holds the drift counted last time (kind, key, value), so a
	// drift that lasts (a repair the kernel refuses, audit mode) counts once.
	counted map[string]bool
	// retry backs off an apply whose only work is what failed last time.
	retry retryState

	// liftTaint hands a readiness taint key to the publisher, which then
	// removes that taint from the Node (nil: standalone).
	liftTaint func(key string)
	// lifted are the readiness taint keys lifted in this process; kept is
	// the last reason given for keeping the taint (reported once each).
	lifted map[string]bool
	kept   string
}

// retryState is the back-off of a failing apply.
type retryState struct {
	key    string // the failed steps (pendingKey form); "" when none
	failed int
	delay  time.Duration
	next   time.Time
}

// maxRetryDelay bounds the back-off of a failing apply.
const maxRetryDelay = 10 * time.Minute

func newTuningLoop(newTuner func(stateDir string) *tuning.Tuner, log *slog.Logger, emit func(nodestatus.Event), snap func() *snapshot.Snapshot) *tuningLoop {
	return &tuningLoop{newTuner: newTuner, log: log.With("component", "tuning"), emit: emit, snap: snap, changed: make(chan struct{}, 1)}
}

// Status returns a copy of the current status (nil-safe for metrics).
func (l *tuningLoop) Status() *tuning.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.status
	return &s
}

// run loops until ctx is done; configs delivers the tuning configuration
// at start and on every reload.
func (l *tuningLoop) run(ctx context.Context, configs <-chan config.Config) {
	var cfg config.Config
	select {
	case cfg = <-configs:
	case <-ctx.Done():
		return
	}
	defer func() {
		if err := l.latency.Release(); err != nil {
			l.log.Warn("release the CPU latency limit", "error", err)
		}
	}()
	ticker := time.NewTicker(cfg.Tuning.Interval)
	defer ticker.Stop()
	l.log.Info("tuning", "mode", cfg.Tuning.Mode, "profile", cfg.Tuning.Profile, "interval", cfg.Tuning.Interval)
	l.once(ctx, cfg)
	for {
		select {
		case <-ctx.Done():
			return
		case next := <-configs:
			if next.Tuning.Mode != cfg.Tuning.Mode || next.Tuning.Profile != cfg.Tuning.Profile {
				l.log.Info("tuning configuration changed", "mode", next.Tuning.Mode, "profile", next.Tuning.Profile)
			}
			cfg = next
			ticker.Reset(cfg.Tuning.Interval)
			l.once(ctx, cfg)
		case <-ticker.C:
			l.once(ctx, cfg)
		}
	}
}

// sendLatest puts v in a one-slot channel, replacing a value the
// receiver has not taken yet.
func sendLatest[T any](ch chan T, v T) {
	for {
		select {
		case ch <- v:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// once verifies the host and, in enforce mode, applies the profile first.
func (l *tuningLoop) once(ctx context.Context, cfg config.Config) {
	tc := cfg.Tuning
	l.tuner = l.newTuner(tc.StateDir)
	l.tuner.Unmovable = &l.unmovable
	l.tuner.Latency = &l.latency
	if tc.Mode == tuning.ModeOff {
		l.setStatus(func(s *tuning.Status) {
			*s = tuning.Status{Mode: tuning.ModeOff, DriftTotal: s.DriftTotal, LastApply: s.LastApply}
		})
		l.readiness(tc, tuning.StateOff, "")
		return
	}
	if tc.Mode == tuning.ModeRevert {
		l.revert(ctx)
		l.readiness(tc, tuning.StateReverted, "")
		return
	}
	p, err := tc.ResolveProfile()
	if err != nil { // validated at load; a profile file can still vanish
		l.fail(tc.Mode, tc.Profile, fmt.Errorf("profile: %w", err))
		l.readiness(tc, tuning.StateError, err.Error())
		return
	}
	s := l.snap()
	if s == nil {
		return
	}
	m := s.TuningMachine()
	ctx, cancel := context.WithTimeout(ctx, tuningRunTimeout)
	defer cancel()

	failed := 0
	var drifted []tuning.Step
	if tc.Mode == tuning.ModeEnforce {
		if n, hold := l.holdApply(ctx, p, m); hold {
			failed = n
		} else {
			res, err := l.tuner.Apply(ctx, p, m)
			if err != nil {
				l.fail(tc.Mode, p.Name, fmt.Errorf("apply: %w", err))
				l.readiness(tc, tuning.StateError, err.Error())
				return
			}
			drifted = res.Plan.Drifted()
			failed = len(res.Failed())
			l.report(p.Name, res)
			l.backOff(res, tc.Interval)
		}
	}
	pl, _, err := l.tuner.Plan(ctx, p, m)
	if err != nil {
		l.fail(tc.Mode, p.Name, fmt.Errorf("verify: %w", err))
		l.readiness(tc, tuning.StateError, err.Error())
		return
	}
	if tc.Mode == tuning.ModeAudit || drifted == nil {
		drifted = pl.Drifted()
	}
	if tc.Mode == tuning.ModeAudit {
		l.reportAuditDrift(p.Name, drifted)
	}
	newDrift := l.countDrift(drifted)
	state := tuning.Summarize(pl, failed)
	if prev := l.Status(); prev.State != state || prev.Profile != p.Name {
		attrs := []any{"state", state, "profile", p.Name, "mode", tc.Mode, "settings", pl.Summary()}
		if why := pl.FirstProblem(); why != "" {
			attrs = append(attrs, "first_problem", why)
		}
		l.log.Info("tuning state", attrs...)
	}
	l.setStatus(func(st *tuning.Status) {
		st.Mode, st.Profile, st.State, st.Plan, st.Error = tc.Mode, p.Name, state, &pl, ""
		st.DriftTotal += uint64(newDrift)
	})
	why := pl.FirstProblem()
	if failed > 0 && l.failed != "" {
		why = strings.SplitN(l.failed, "\n", 2)[0]
	}
	l.readiness(tc, state, why)
	if w := strings.Join(pl.Warnings, "\n"); w != l.warnings {
		l.warnings = w
		for _, w := range pl.Warnings {
			l.log.Warn("tuning plan warning", "warning", w)
		}
	}
}

// readiness lifts the opt-in readiness taint once tuning is applied and
// verified (enforce mode, state compliant), or says once per reason why it
// stays. The agent never puts the taint back: one lifted stays lifted
// (its key stays managed, so the publisher keeps it off the Node).
func (l *tuningLoop) readiness(tc config.Tuning, state, why string) {
	rt := tc.ReadinessTaint
	if !rt.Enabled || l.lifted[rt.Key] {
		return
	}
	if tc.Mode == tuning.ModeEnforce && state == tuning.StateCompliant {
		if l.lifted == nil {
			l.lifted = map[string]bool{}
		}
		l.lifted[rt.Key], l.kept = true, ""
		l.log.Info("tuning applied and verified: readiness taint lifted", "key", rt.Key)
		if l.liftTaint != nil {
			l.liftTaint(rt.Key)
		}
		return
	}
	var reason string
	switch {
	case tc.Mode != tuning.ModeEnforce:
		reason = fmt.Sprintf("tuning.mode is %s: the taint is lifted only in enforce mode, once the profile is applied and verified", tc.Mode)
	case why != "":
		reason = fmt.Sprintf("tuning state %s: %s", state, why)
	default:
		reason = fmt.Sprintf("tuning state %s, not compliant yet", state)
	}
	if reason == l.kept {
		return
	}
	l.kept = reason
	l.log.Warn("readiness taint kept", "key", rt.Key, "reason", reason)
	l.event(nodestatus.Warning, "TuningTaintKept", fmt.Sprintf("taint %s stays on the Node: %s", rt.Key, reason))
}

// revert restores every original the journal holds (what tuning.Revert
// does: a value someone else changed since is kept and reported). It runs
// every interval, so a restore that failed is tried again and a restart
// finds the journal empty and reports reverted; nothing is ever applied.
// The state is reverted once the journal is empty, else error.
func (l *tuningLoop) revert(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, tuningRunTimeout)
	defer cancel()
	res, err := l.tuner.Revert(ctx)
	if err != nil {
		l.fail(tuning.ModeRevert, "", fmt.Errorf("revert: %w", err))
		return
	}
	l.report("none", res)
	state, why := tuning.StateReverted, ""
	if res.Journal != nil && len(res.Journal.Entries) > 0 {
		left := len(res.Journal.Entries)
		state = tuning.StateError
		why = fmt.Sprintf("%d settings could not be restored and stay in the journal (tried again every interval)", left)
	}
	if prev := l.Status(); prev.State != state || prev.Mode != tuning.ModeRevert {
		if state == tuning.StateReverted {
			l.log.Info("tuning state", "state", state, "mode", tuning.ModeRevert, "detail", "every original in the journal is restored; revert mode applies nothing")
		} else {
			l.log.Warn("tuning state", "state", state, "mode", tuning.ModeRevert, "detail", why)
		}
	}
	l.setStatus(func(st *tuning.Status) {
		*st = tuning.Status{Mode: tuning.ModeRevert, State: state, Error: why, DriftTotal: st.DriftTotal, LastApply: st.LastApply}
	})
}

// countDrift returns how many of the drifted settings were not drifted,
// with the same value, at the last count: a drift that outlasts an
// interval is counted once.
func (l *tuningLoop) countDrift(drifted []tuning.Step) int {
	now := map[string]bool{}
	n := 0
	for _, s := range drifted {
		k := s.Kind + " " + s.Key + "=" + s.Current
		now[k] = true
		if !l.counted[k] {
			n++
		}
	}
	l.counted = now
	return n
}

// pendingKey names the steps an apply would write.
func pendingKey(steps []tuning.Step) string {
	var parts []string
	for _, s := range steps {
		parts = append(parts, s.Kind+" "+s.Key+": "+s.Current+" -> "+s.Want)
	}
	slices.Sort(parts)
	return strings.Join(parts, "\n")
}

// backOff remembers the failures of an apply: while the next one would
// only write them again, it waits (interval, doubling up to
// maxRetryDelay) instead of writing every interval.
func (l *tuningLoop) backOff(res tuning.Result, interval time.Duration) {
	var failed []tuning.Step
	for _, c := range res.Failed() {
		failed = append(failed, c.Step)
	}
	key := pendingKey(failed)
	switch {
	case key == "":
		l.retry = retryState{}
		return
	case key == l.retry.key:
		l.retry.delay = min(2*l.retry.delay, maxRetryDelay)
	default:
		l.retry = retryState{key: key, delay: interval}
	}
	l.retry.failed = len(failed)
	l.retry.next = time.Now().Add(l.retry.delay)
}

// holdApply says whether to skip this interval's apply: within the
// back-off, when what it would write is exactly what failed last time.
// Anything else to do (a new drift) applies at once. n is the number of
// failures still standing.
func (l *tuningLoop) holdApply(ctx context.Context, p tuning.Profile, m tuning.Machine) (n int, hold bool) {
	if l.retry.key == "" || !time.Now().Before(l.retry.next) {
		return 0, false
	}
	pl, _, err := l.tuner.Plan(ctx, p, m)
	if err != nil {
		return 0, false
	}
	var pending []tuning.Step
	for _, s := range pl.Steps {
		if s.Action == tuning.ActionSet || s.Action == tuning.ActionRestore {
			pending = append(pending, s)
		}
	}
	if pendingKey(pending) != l.retry.key {
		return 0, false
	}
	return l.retry.failed, true
}

func (l *tuningLoop) fail(mode, profile string, err error) {
	l.log.Error("tuning failed", "err", err)
	l.event(nodestatus.Warning, "TuningFailed", err.Error())
	l.setStatus(func(s *tuning.Status) {
		s.Mode, s.Profile, s.State, s.Error = mode, profile, tuning.StateError, err.Error()
	})
}

// report turns an apply into log lines and events: drift repaired,
// settings applied, settings restored, failures.
func (l *tuningLoop) report(profile string, r tuning.Result) {
	var applied, restored, failed, kept, unsupported []string
	var repaired []tuning.Step
	changed := false
	for _, c := range r.Changes {
		if c.Outcome == tuning.OutcomeChanged || c.Outcome == tuning.OutcomeRestored || c.Outcome == tuning.OutcomeAccepted {
			changed = true
			if c.Drift {
				repaired = append(repaired, c.Step)
			}
		}
		desc := fmt.Sprintf("%s %s: %s -> %s", c.Kind, c.Key, orDash(c.Current), c.Want)
		switch {
		case c.Outcome == tuning.OutcomeUnsupported && c.Action == tuning.ActionRestore:
			// Gone (a removed device's interrupt, an irqbalance that
			// exited with its bans): nothing to put back.
			l.log.Info("tuning setting gone, journal entry dropped", "kind", c.Kind, "key", c.Key)
		case c.Outcome == tuning.OutcomeUnsupported:
			// The kernel lacks the setting or keeps it (a managed
			// interrupt): nothing to repair. The plan says unsupported
			// from now on, so this is reported once.
			unsupported = append(unsupported, desc+" ("+c.Error+")")
			l.log.Info("tuning setting unsupported", "kind", c.Kind, "key", c.Key, "want", c.Want, "reason", c.Error)
		case c.Outcome == tuning.OutcomeFailed:
			failed = append(failed, desc+" ("+c.Error+")")
			l.log.Warn("tuning change failed", "kind", c.Kind, "key", c.Key, "want", c.Want, "outcome", c.Outcome, "err", c.Error)
		case c.Outcome == tuning.OutcomeAccepted:
			applied = append(applied, desc+" ("+c.Error+")")
			l.log.Warn("tuning setting applied; the kernel holds another value", "kind", c.Kind, "key", c.Key, "want", c.Want, "detail", c.Error)
		case c.Outcome == tuning.OutcomeKept:
			kept = append(kept, desc)
			l.log.Warn("tuning setting not restored: changed by someone else", "kind", c.Kind, "key", c.Key, "value", c.Current, "original", c.Want)
		case c.Drift:
			l.log.Warn("tuning drift repaired", "kind", c.Kind, "key", c.Key, "was", c.Current, "set", c.Want)
		case c.Outcome == tuning.OutcomeRestored:
			restored = append(restored, desc)
			l.log.Info("tuning setting restored", "kind", c.Kind, "key", c.Key, "from", c.Current, "to", c.Want)
		default:
			applied = append(applied, desc)
			l.log.Info("tuning setting applied", "kind", c.Kind, "key", c.Key, "from", c.Current, "to", c.Want)
		}
	}
	// Only a repair that took is reported as one; a failed one is a
	// failure (reported once below).
	if d := repaired; len(d) > 0 {
		l.event(nodestatus.Warning, "TuningDriftRepaired", fmt.Sprintf("profile %s: %d settings changed by someone else were set back: %s", profile, len(d), describeSteps(d)))
	}
	if len(applied) > 0 {
		l.event(nodestatus.Normal, "TuningApplied", fmt.Sprintf("profile %s: %d settings applied: %s", profile, len(applied), shortList(applied)))
	}
	if changed {
		l.setStatus(func(s *tuning.Status) { s.LastApply = time.Now() })
	}
	if len(restored) > 0 {
		l.event(nodestatus.Normal, "TuningReverted", fmt.Sprintf("profile %s: %d settings no longer managed were restored: %s", profile, len(restored), shortList(restored)))
	}
	if len(kept) > 0 {
		l.event(nodestatus.Warning, "TuningRestoreSkipped", fmt.Sprintf("profile %s: %d settings no longer managed were changed by someone else since tuning set them and are left as they are: %s", profile, len(kept), shortList(kept)))
	}
	if len(unsupported) > 0 {
		l.event(nodestatus.Normal, "TuningUnsupported", fmt.Sprintf("profile %s: %d settings the kernel does not let be changed: %s", profile, len(unsupported), shortList(unsupported)))
	}
	// The same failure every interval (a setting the kernel refuses) is
	// reported when it first happens, not each time.
	key := strings.Join(failed, "\n")
	if len(failed) > 0 && key != l.failed {
		l.event(nodestatus.Warning, "TuningFailed", fmt.Sprintf("profile %s: %d settings could not be applied: %s", profile, len(failed), shortList(failed)))
	}
	l.failed = key
}

// reportAuditDrift reports drift found in audit mode once per change of
// the drifted set.
func (l *tuningLoop) reportAuditDrift(profile string, drifted []tuning.Step) {
	key := describeSteps(drifted)
	if key == l.drifted {
		return
	}
	l.drifted = key
	if len(drifted) == 0 {
		return
	}
	l.log.Warn("tuning drift (audit mode: not repaired)", "settings", key)
	l.event(nodestatus.Warning, "TuningDrift", fmt.Sprintf("profile %s: %d settings changed by someone else (audit mode, not repaired): %s", profile, len(drifted), key))
}

func describeSteps(steps []tuning.Step) string {
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = fmt.Sprintf("%s %s is %s, want %s", s.Kind, s.Key, orDash(s.Current), s.Want)
	}
	return shortList(parts)
}

// shortList keeps event messages readable when hundreds of IRQs change.
func shortList(items []string) string {
	const max = 8
	if len(items) <= max {
		return strings.Join(items, "; ")
	}
	return strings.Join(items[:max], "; ") + fmt.Sprintf("; and %d more", len(items)-max)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (l *tuningLoop) event(typ nodestatus.EventType, reason, msg string) {
	e := nodestatus.Event{Type: typ, Reason: reason, Message: msg}
	if l.emit != nil {
		l.emit(e)
		return
	}
	l.log.Info("event (standalone: not published)", "type", e.Type, "reason", e.Reason, "message", e.Message)
}

// setStatus updates the status and tells the daemon when the tuning
// labels change (the daemon logs or publishes them with the others).
func (l *tuningLoop) setStatus(f func(*tuning.Status)) {
	l.mu.Lock()
	f(&l.status)
	next := tuningLabels(l.status)
	same := l.labels != nil && *l.labels == next
	l.labels = &next
	l.mu.Unlock()
	if !same {
		select {
		case l.changed <- struct{}{}:
		default: // a refresh is already pending
		}
	}
}

// Labels returns what the tuning labels say; nil before the first run.
func (l *tuningLoop) Labels() *labels.Tuning {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.labels == nil {
		return nil
	}
	t := *l.labels
	return &t
}

// tuningLabels is what the tuning labels say of a status: with mode off
// or revert only the state, with an error before any plan (no state) only the
// profile.
func tuningLabels(s tuning.Status) labels.Tuning {
	if s.Mode == tuning.ModeOff {
		return labels.Tuning{State: tuning.StateOff}
	}
	if s.Mode == tuning.ModeRevert { // no profile is managed
		return labels.Tuning{State: s.State}
	}
	return labels.Tuning{Profile: s.Profile, State: s.State}
}
