package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestTuneCLI(t *testing.T) {
	profile := filepath.Join(t.TempDir(), "mine.yaml")
	os.WriteFile(profile, []byte("name: mine\nsysctl:\n  vm.swappiness: 7\n"), 0o644)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("name: bad\nsysctl:\n  vm.swappiness: lots\n"), 0o644)
	for _, tc := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"help", "tune"}, 0, "plan", ""},
		{[]string{"tune", "profiles"}, 0, "llm-d-reference", ""},
		{[]string{"tune", "profiles", "llm-inference"}, 0, "net.core.rmem_max: 134217728", ""},
		{[]string{"tune", "profiles", "nope"}, 2, "", "unknown profile"},
		// profiles honour -o json and --profile, and refuse --state-dir.
		{[]string{"tune", "profiles", "-o", "json"}, 0, `"name": "llm-inference",`, ""},
		{[]string{"tune", "profiles", "-o", "json", "none"}, 0, `"description": "Manages nothing`, ""},
		{[]string{"tune", "--profile", "llm-d-reference", "profiles"}, 0, "name: llm-d-reference", ""},
		{[]string{"tune", "--profile", profile, "profiles", "-o", "json"}, 0, `"vm.swappiness": "7"`, ""},
		{[]string{"tune", "--profile", profile, "profiles"}, 0, "vm.swappiness: 7", ""},
		{[]string{"tune", "--profile", "none", "profiles", "llm-inference"}, 2, "", "name the profile once"},
		{[]string{"tune", "--state-dir", "/tmp", "profiles"}, 2, "", "--state-dir has no meaning"},
		{[]string{"--simulate=dgx-h100-ib", "tune", "plan"}, 0, "275 set", ""},
		{[]string{"--simulate=dgx-h100-ib", "tune", "--profile", "llm-d-reference", "plan"}, 0, "moved to debugfs", ""},
		{[]string{"--simulate=h100-roce", "tune", "plan"}, 0, "left to irqbalance (irq.irqbalance: coexist)", ""},
		{[]string{"--simulate=cpu-only", "tune", "--profile", profile, "plan"}, 0, "vm.swappiness", ""},
		{[]string{"--simulate=cpu-only", "tune", "--profile", bad, "plan"}, 2, "", "sysctl.vm.swappiness"},
		{[]string{"--simulate=cpu-only", "tune", "--profile", "fast", "plan"}, 2, "", "unknown profile \"fast\""},
		{[]string{"--simulate=cpu-only", "tune", "verify"}, 1, "set", "does not match profile llm-inference (pending)"},
		{[]string{"--simulate=cpu-only", "tune", "-o", "xml", "plan"}, 2, "", "enum value"},
		{[]string{"--simulate=cpu-only", "tune"}, 2, "", "must select a subcommand"},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errOut.String(), tc.errOut) {
			t.Errorf("%v: exit %d (want %d)\nstdout: %s\nstderr: %s", tc.args, code, tc.code, out.String(), errOut.String())
		}
	}
}

// apply, verify, revert on one host root with its own state directory.
func TestTuneApplyVerifyRevert(t *testing.T) {
	root := t.TempDir()
	must := func(p, v string) {
		os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte(v), 0o644)
	}
	must("proc/sys/kernel/osrelease", "6.1.0-test\n")
	must("sys/devices/system/cpu/online", "0-3\n")
	must("proc/sys/vm/swappiness", "60\n")
	must("proc/sys/kernel/random/boot_id", "b1\n")
	profile := filepath.Join(t.TempDir(), "swap.yaml")
	os.WriteFile(profile, []byte("name: swap\nsysctl:\n  vm.swappiness: 7\n"), 0o644)
	state := t.TempDir()
	tune := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"--host-root", root, "tune", "--profile", profile, "--state-dir", state}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	swappiness := func() string {
		b, _ := os.ReadFile(filepath.Join(root, "proc/sys/vm/swappiness"))
		return strings.TrimSpace(string(b))
	}
	if code, _, errOut := tune("verify"); code != 1 || !strings.Contains(errOut, "does not match") {
		t.Errorf("verify before apply: %d %s", code, errOut)
	}
	if code, out, errOut := tune("apply"); code != 0 || swappiness() != "7" || !strings.Contains(out, "1 changed") {
		t.Fatalf("apply: %d %s %s", code, out, errOut)
	}
	if code, _, errOut := tune("verify"); code != 0 {
		t.Errorf("verify after apply: %d %s", code, errOut)
	}
	os.WriteFile(filepath.Join(root, "proc/sys/vm/swappiness"), []byte("30\n"), 0o644)
	code, out, _ := tune("-o", "json", "verify")
	var pl struct{ Steps []struct{ Drift bool } }
	if err := json.Unmarshal([]byte(out), &pl); code != 1 || err != nil || len(pl.Steps) != 1 || !pl.Steps[0].Drift {
		t.Errorf("verify after a change: %d %v %s", code, err, out)
	}
	// Repaired by apply, then changed by someone else again: revert keeps
	// their value (and says so) instead of writing the original over it.
	if code, _, errOut := tune("apply"); code != 0 || swappiness() != "7" {
		t.Fatalf("apply after a change: %d %s", code, errOut)
	}
	os.WriteFile(filepath.Join(root, "proc/sys/vm/swappiness"), []byte("30\n"), 0o644)
	if code, out, errOut := tune("revert"); code != 0 || swappiness() != "30" || !strings.Contains(out, "1 kept") || !strings.Contains(out, "changed by someone else") {
		t.Errorf("revert after someone else's change: %d %s %s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(state, "tuning-journal.json")); err == nil {
		t.Error("journal left after revert")
	}
	// Applied and untouched: revert restores the original.
	if code, _, errOut := tune("apply"); code != 0 || swappiness() != "7" {
		t.Fatalf("apply again: %d %s", code, errOut)
	}
	if code, out, errOut := tune("revert"); code != 0 || swappiness() != "30" || !strings.Contains(out, "1 restored") {
		t.Errorf("revert: %d %s %s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(state, "tuning-journal.json")); err == nil {
		t.Error("journal left after revert")
	}
}

// A simulated node's tree is new for every command, but its tuning state
// is not: the journal is kept in <state-dir>/simulated/<node> and
// replayed into the next tree, so apply, verify and revert work across
// separate runs (issue 14, item 11).
func TestSimulatedTuneAcrossRuns(t *testing.T) {
	state := t.TempDir()
	tune := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"--simulate=cpu-only", "tune", "--state-dir", state}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	if code, _, errOut := tune("verify"); code != 1 || !strings.Contains(errOut, "(pending)") {
		t.Fatalf("verify before apply: %d %s", code, errOut)
	}
	if code, out, errOut := tune("apply"); code != 0 || !strings.Contains(out, "11 changed") {
		t.Fatalf("apply: %d %s %s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(state, "simulated", "cpu-only", "tuning-journal.json")); err != nil {
		t.Errorf("no simulated journal in the state directory: %v", err)
	}
	if code, out, errOut := tune("verify"); code != 0 || !strings.Contains(errOut, "matches profile llm-inference") {
		t.Errorf("verify after apply, in a new run: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := tune("revert"); code != 0 || !strings.Contains(out, "11 restored") {
		t.Errorf("revert in a new run: %d %s %s", code, out, errOut)
	}
	if code, _, errOut := tune("verify"); code != 1 || !strings.Contains(errOut, "(pending)") {
		t.Errorf("verify after revert: %d %s", code, errOut)
	}
	if entries, _ := os.ReadDir(filepath.Join(state, "simulated", "cpu-only")); len(entries) != 1 || entries[0].Name() != "tuning.lock" {
		t.Errorf("state left after revert: %v", entries)
	}
}

// roce-lossless makes the simulated h100-roce-lossy node pass verify
// (its RoCE ports had neither PFC nor ECN), and revert makes it fail
// again: apply and revert act through the same seams discovery reads
// (sysfs ECN files, the DCB table for PFC), across separate runs.
func TestRoCELosslessMakesVerifyPass(t *testing.T) {
	state := t.TempDir()
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgFile, []byte("tuning:\n  stateDir: "+state+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"--simulate=h100-roce-lossy", "--config", cfgFile}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	if code, out, _ := agent("verify"); code != 1 || !strings.Contains(out, "roce-congestion") {
		t.Fatalf("verify before apply: %d\n%s", code, out)
	}
	code, out, errOut := agent("tune", "--profile", "roce-lossless", "plan")
	if code != 0 {
		t.Fatalf("plan: %d %s %s", code, out, errOut)
	}
	// Every change is in the plan first, with its current value.
	for _, want := range []string{"pfc enp24s0np0 none 3 set", "ecn enp24s0np0/roce_np/3 0 1 set", "ecn enp24s0np0/roce_rp/3 0 1 set", "ecn enp43s0np0/roce_np/3 1 1 ok"} {
		if !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool { return strings.Join(strings.Fields(l), " ") == want }) {
			t.Errorf("plan has no line %q:\n%s", want, out)
		}
	}
	if code, out, errOut := agent("tune", "--profile", "roce-lossless", "apply"); code != 0 || !strings.Contains(out, "26 changed") {
		t.Fatalf("apply: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := agent("verify"); code != 0 {
		t.Errorf("verify after apply: %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := agent("tune", "--profile", "roce-lossless", "verify"); code != 0 {
		t.Errorf("tune verify after apply: %d %s", code, errOut)
	}
	if code, out, errOut := agent("tune", "revert"); code != 0 || !strings.Contains(out, "26 restored") {
		t.Fatalf("revert: %d %s %s", code, out, errOut)
	}
	if code, out, _ := agent("verify"); code != 1 || !strings.Contains(out, "roce-congestion") {
		t.Errorf("verify after revert: %d\n%s", code, out)
	}
}
