package agent

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/internal/testsupport"
	"github.com/gpunode/gpunode/labels"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/exporters"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/tuning"
)

type eventLog struct {
	mu     sync.Mutex
	events []nodestatus.Event
}

func (e *eventLog) add(ev nodestatus.Event) {
	e.mu.Lock()
	e.events = append(e.events, ev)
	e.mu.Unlock()
}

func (e *eventLog) find(reason string) (nodestatus.Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.events {
		if ev.Reason == reason {
			return ev, true
		}
	}
	return nodestatus.Event{}, false
}

func (e *eventLog) count(reason string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.events {
		if ev.Reason == reason {
			n++
		}
	}
	return n
}

// runTuningDaemon runs the daemon on a simulated node with the given
// tuning configuration; it returns the metrics URL.
func runTuningDaemon(t *testing.T, env *discovery.Env, tc config.Tuning, events *eventLog, logs *syncBuffer, reload chan func() (config.Config, error), reloads chan struct{}) string {
	t.Helper()
	cfg := config.Default()
	cfg.NodeName = ""
	cfg.Metrics.ListenAddress = "127.0.0.1:0"
	cfg.Tuning = tc
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil)),
			Env:            env,
			Build:          exporters.BuildInfo{Version: "test"},
			ReloadRequests: reloads,
			Reload:         func() (config.Config, error) { return (<-reload)() },
			Events:         events.add,
			Listening:      func(a string) { addr <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + <-addr + "/metrics"
}

func readHost(t *testing.T, env *discovery.Env, path string) string {
	t.Helper()
	s, err := env.FS.ReadString(path)
	if err != nil {
		t.Fatal(err)
	}
	return tuning.NormalizeValue(s)
}

// In enforce mode the daemon applies the profile, repairs drift, restores
// what a new profile drops, and reports each as an event and in metrics.
func TestTuningEnforce(t *testing.T) {
	env := testsupport.SimEnv(t, "dgx-h100-ib")
	events, logs := &eventLog{}, &syncBuffer{}
	reload, reloads := make(chan func() (config.Config, error), 1), make(chan struct{})
	tc := config.DefaultTuning()
	tc.Mode, tc.Interval = tuning.ModeEnforce, 100*time.Millisecond
	metrics := runTuningDaemon(t, env, tc, events, logs, reload, reloads)

	waitFor(t, "TuningApplied", func() bool { _, ok := events.find("TuningApplied"); return ok })
	if ev, _ := events.find("TuningApplied"); ev.Type != nodestatus.Normal || !strings.Contains(ev.Message, "profile llm-inference: 275 settings applied") {
		t.Errorf("event %+v", ev)
	}
	if readHost(t, env, "/proc/sys/vm/swappiness") != "1" {
		t.Error("profile not applied")
	}
	waitFor(t, "compliant", func() bool {
		_, body := get(t, metrics)
		return strings.Contains(body, `gpunode_tuning_info{mode="enforce",profile="llm-inference",state="compliant"} 1`)
	})
	_, body := get(t, metrics)
	for _, w := range []string{
		`gpunode_tuning_setting_compliant{key="vm.swappiness",kind="sysctl"} 1`,
		`gpunode_tuning_setting_compliant{key="0000:dc:00.0/mlx5_comp31",kind="irq"} 1`,
		"gpunode_tuning_drift_total 0", "gpunode_tuning_last_apply_timestamp_seconds ",
	} {
		if !strings.Contains(body, w) {
			t.Errorf("metrics lack %q", w)
		}
	}
	if strings.Contains(body, `key="transparent_hugepage.enabled"`) == false {
		t.Error("an ok setting is missing from the compliance metrics")
	}

	// Someone changes a value: repaired, reported once.
	os.WriteFile(env.FS.Path("/proc/sys/vm/swappiness"), []byte("60\n"), 0o644)
	waitFor(t, "TuningDriftRepaired", func() bool { _, ok := events.find("TuningDriftRepaired"); return ok })
	if ev, _ := events.find("TuningDriftRepaired"); ev.Type != nodestatus.Warning || !strings.Contains(ev.Message, "sysctl vm.swappiness is 60, want 1") {
		t.Errorf("event %+v", ev)
	}
	waitFor(t, "repair", func() bool { return readHost(t, env, "/proc/sys/vm/swappiness") == "1" })
	waitFor(t, "drift metric", func() bool { _, b := get(t, metrics); return strings.Contains(b, "gpunode_tuning_drift_total 1") })
	time.Sleep(300 * time.Millisecond)
	if n := events.count("TuningDriftRepaired"); n != 1 {
		t.Errorf("%d drift events for one change", n)
	}

	// Profile none: every original comes back.
	cfg := config.Default()
	cfg.Tuning = tc
	cfg.Tuning.Profile = "none"
	reload <- func() (config.Config, error) { return cfg, nil }
	reloads <- struct{}{}
	waitFor(t, "TuningReverted", func() bool { _, ok := events.find("TuningReverted"); return ok })
	if readHost(t, env, "/proc/sys/vm/swappiness") != "60" || readHost(t, env, "/proc/irq/431/smp_affinity_list") != "0-223" {
		t.Error("profile none did not restore the originals")
	}
	// The labels follow the event: the daemon recomputes them when the
	// tuning loop signals the change, so wait rather than race it.
	labelsLogged := func() bool {
		l := logs.String()
		return strings.Contains(l, "key=gpunode.dev/tuning.state value=compliant") && strings.Contains(l, "key=gpunode.dev/tuning.profile value=none")
	}
	for deadline := time.Now().Add(10 * time.Second); !labelsLogged(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("labels not logged:\n%s", logs.String())
		}
	}
}

// Audit mode writes nothing and reports the host as pending.
func TestTuningAudit(t *testing.T) {
	env := testsupport.SimEnv(t, "h100-roce")
	events, logs := &eventLog{}, &syncBuffer{}
	tc := config.DefaultTuning()
	tc.Interval = 100 * time.Millisecond
	metrics := runTuningDaemon(t, env, tc, events, logs, nil, nil)
	waitFor(t, "audit state", func() bool {
		_, body := get(t, metrics)
		return strings.Contains(body, `gpunode_tuning_info{mode="audit",profile="llm-inference",state="pending"} 1`)
	})
	// irqbalance runs on this node without its socket: the profile
	// coexists, so the IRQs are left to it (skipped, no metric), not a
	// conflict; the sysctls are pending.
	_, body := get(t, metrics)
	if !strings.Contains(body, `gpunode_tuning_setting_compliant{key="vm.swappiness",kind="sysctl"} 0`) ||
		strings.Contains(body, `kind="irq"`) {
		t.Errorf("compliance metrics:\n%s", body)
	}
	if readHost(t, env, "/proc/sys/vm/swappiness") != "60" {
		t.Error("audit mode changed a setting")
	}
	if _, err := os.Stat(env.FS.Path("/var/lib/gpunode/" + tuning.JournalFile)); err == nil {
		t.Error("audit mode wrote a journal")
	}
	events.mu.Lock()
	defer events.mu.Unlock()
	if len(events.events) != 0 {
		t.Errorf("events in audit mode without drift: %+v", events.events)
	}
}

// A setting the kernel keeps refusing is reported once, not every interval,
// and the node's tuning state says error.
func TestTuningFailureReportedOnce(t *testing.T) {
	env := testsupport.SimEnv(t, "cpu-only")
	path := env.FS.Path("/proc/sys/vm/swappiness")
	os.Remove(path)
	if err := os.Symlink("/dev/null", path); err != nil { // takes writes, keeps nothing
		t.Fatal(err)
	}
	events, logs := &eventLog{}, &syncBuffer{}
	tc := config.DefaultTuning()
	tc.Mode, tc.Interval = tuning.ModeEnforce, 50*time.Millisecond
	metrics := runTuningDaemon(t, env, tc, events, logs, nil, nil)
	waitFor(t, "error state", func() bool {
		_, body := get(t, metrics)
		return strings.Contains(body, `state="error"`)
	})
	time.Sleep(400 * time.Millisecond) // several more intervals
	if n := events.count("TuningFailed"); n != 1 {
		t.Errorf("%d TuningFailed events, want 1", n)
	}
	if ev, _ := events.find("TuningFailed"); !strings.Contains(ev.Message, "vm.swappiness") || !strings.Contains(ev.Message, "the kernel kept") {
		t.Errorf("event %+v", ev)
	}
}

func TestTuningLabels(t *testing.T) {
	for _, tc := range []struct {
		status tuning.Status
		want   labels.Tuning
	}{
		{tuning.Status{Mode: tuning.ModeEnforce, Profile: "llm-inference", State: tuning.StateCompliant}, labels.Tuning{Profile: "llm-inference", State: "compliant"}},
		{tuning.Status{Mode: tuning.ModeOff, Profile: "llm-inference"}, labels.Tuning{State: "off"}},
		{tuning.Status{Mode: tuning.ModeAudit, Profile: "llm-inference"}, labels.Tuning{Profile: "llm-inference"}},
		{tuning.Status{Mode: tuning.ModeRevert, State: tuning.StateReverted}, labels.Tuning{State: "reverted"}},
	} {
		if got := tuningLabels(tc.status); got != tc.want {
			t.Errorf("%+v: %+v, want %+v", tc.status, got, tc.want)
		}
	}
}

// Revert mode (uninstall, rollback): a daemon started in it after an
// enforcing one restores every original the journal holds, keeps a value
// someone else changed since, reports reverted (metric and label) and
// never applies the profile again, however often it runs.
func TestTuningRevertMode(t *testing.T) {
	env := testsupport.SimEnv(t, "dgx-h100-ib")
	t.Run("enforce", func(t *testing.T) {
		events := &eventLog{}
		tc := config.DefaultTuning()
		tc.Mode, tc.Interval = tuning.ModeEnforce, 100*time.Millisecond
		runTuningDaemon(t, env, tc, events, &syncBuffer{}, nil, nil)
		waitFor(t, "TuningApplied", func() bool { _, ok := events.find("TuningApplied"); return ok })
	})
	if readHost(t, env, "/proc/sys/vm/swappiness") != "1" || readHost(t, env, "/proc/irq/431/smp_affinity_list") == "0-223" {
		t.Fatal("profile not applied")
	}
	// Someone else changes a setting tuning wrote: revert leaves it.
	os.WriteFile(env.FS.Path("/proc/sys/net/core/rmem_max"), []byte("999999\n"), 0o644)

	events, logs := &eventLog{}, &syncBuffer{}
	tc := config.DefaultTuning()
	tc.Mode, tc.Interval = tuning.ModeRevert, 50*time.Millisecond
	metrics := runTuningDaemon(t, env, tc, events, logs, nil, nil)
	waitFor(t, "reverted", func() bool {
		_, body := get(t, metrics)
		return strings.Contains(body, `gpunode_tuning_info{mode="revert",profile="",state="reverted"} 1`)
	})
	if readHost(t, env, "/proc/sys/vm/swappiness") != "60" || readHost(t, env, "/proc/irq/431/smp_affinity_list") != "0-223" {
		t.Error("revert mode did not restore the originals")
	}
	if v := readHost(t, env, "/proc/sys/net/core/rmem_max"); v != "999999" {
		t.Errorf("a value someone else set after tuning was overwritten: %s", v)
	}
	if ev, ok := events.find("TuningReverted"); !ok || ev.Type != nodestatus.Normal {
		t.Errorf("no TuningReverted event: %+v", events.events)
	}
	if _, ok := events.find("TuningRestoreSkipped"); !ok {
		t.Errorf("the kept value is not reported: %+v", events.events)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "key=gpunode.dev/tuning.state value=reverted"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("tuning.state=reverted not logged:\n%s", logs.String())
		}
	}
	// Idle from now on: a host value differing from the profile stays.
	os.WriteFile(env.FS.Path("/proc/sys/vm/swappiness"), []byte("30\n"), 0o644)
	time.Sleep(300 * time.Millisecond) // several intervals
	if v := readHost(t, env, "/proc/sys/vm/swappiness"); v != "30" {
		t.Errorf("revert mode applied a setting: swappiness %s", v)
	}
	if _, ok := events.find("TuningApplied"); ok {
		t.Error("revert mode applied the profile")
	}
	if _, body := get(t, metrics); !strings.Contains(body, `state="reverted"`) {
		t.Errorf("state after idling:\n%s", body)
	}
	if _, err := os.Stat(env.FS.Path("/var/lib/gpunode/" + tuning.JournalFile)); err == nil {
		if b, _ := os.ReadFile(env.FS.Path("/var/lib/gpunode/" + tuning.JournalFile)); strings.Contains(string(b), `"key"`) {
			t.Errorf("journal still holds entries:\n%s", b)
		}
	}
}
