package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/hwcheck"
)

// build compiles the agent and the harness once per test run.
func build(t *testing.T) (agent, harness string) {
	t.Helper()
	dir := t.TempDir()
	agent, harness = filepath.Join(dir, "gpunode-agent"), filepath.Join(dir, "gpunode-hwcheck")
	for bin, pkg := range map[string]string{agent: "../gpunode-agent", harness: "."} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	return agent, harness
}

// runHarness runs the harness with PATH set to path only (the vendor
// tools it may find) and returns its exit status and report.
func runHarness(t *testing.T, harness, agent, path string, args ...string) (int, hwcheck.Report, string) {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command(harness, append([]string{"--agent=" + agent, "--out=" + out}, args...)...)
	cmd.Env = []string{"PATH=" + path, "HOME=" + t.TempDir()}
	stdout, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
		if code == 2 {
			t.Fatalf("harness could not run: %s\n%s", ee.Stderr, stdout)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep hwcheck.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"report.txt", "inspect.json", "metrics-last.prom", "agent.log"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("--out lacks %s: %v", f, err)
		}
	}
	return code, rep, string(stdout)
}

func row(rep hwcheck.Report, section, fact string) (hwcheck.Row, bool) {
	for _, r := range rep.Rows {
		if r.Section == section && r.Fact == fact {
			return r, true
		}
	}
	return hwcheck.Row{}, false
}

// The harness on this machine (no GPU, no vendor tools) runs the real
// agent binary, finds every tool absent and passes; with an nvidia-smi
// that reports a GPU the agent does not see (the recorded A100 log), it
// fails on that disagreement.
func TestHarnessOnThisMachine(t *testing.T) {
	agent, harness := build(t)

	empty := t.TempDir()
	code, rep, table := runHarness(t, harness, agent, empty)
	if code != 0 {
		t.Fatalf("exit %d without vendor tools:\n%s", code, table)
	}
	for _, want := range []struct{ section, fact string }{{"nvidia", "nvidia-smi"}, {"rdma", "ibv_devinfo"}, {"rdma", "rdma link"}, {"amd", "amd-smi"}} {
		if r, ok := row(rep, want.section, want.fact); !ok || r.Verdict != hwcheck.NotPresent {
			t.Errorf("%s %s: %+v (present %v)", want.section, want.fact, r, ok)
		}
	}
	if r, ok := row(rep, "cost", "RssAnon (heap and stacks)"); !ok || r.Verdict != hwcheck.Recorded || !strings.HasSuffix(r.Agent, "MiB") {
		t.Errorf("agent cost: %+v", r)
	}
	if !strings.Contains(table, "PASS:") {
		t.Errorf("table:\n%s", table)
	}

	// nvidia-smi that answers -q -x with the recorded A100 log and fails
	// everything else (as on a driver without nvlink or dmon support).
	tools := t.TempDir()
	xml, err := filepath.Abs("../../hwcheck/testdata/nvidia-smi-a100-sxm4-v12.xml")
	if err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nif [ \"$1\" = -q ] && [ \"$2\" = -x ]; then exec /bin/cat " + xml + "; fi\nexit 1\n"
	if err := os.WriteFile(filepath.Join(tools, "nvidia-smi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	code, rep, table = runHarness(t, harness, agent, tools, "--python=/nonexistent/python3")
	if code != 1 {
		t.Fatalf("exit %d with a GPU only nvidia-smi sees:\n%s", code, table)
	}
	if r, ok := row(rep, "nvidia", "GPU count"); !ok || r.Agent != "0" || r.Vendor != "1" || r.Verdict != hwcheck.Differ {
		t.Errorf("GPU count row %+v", r)
	}
	if r, ok := row(rep, "nvidia", "GPU"); !ok || r.Agent != "(missing)" || r.Device != "GPU-513536b6-7d19-9063-b049-1e69664bb298" {
		t.Errorf("missing GPU row %+v", r)
	}
	if r, ok := row(rep, "nvidia-load", "load"); !ok || !strings.Contains(r.Note, "load not started") {
		t.Errorf("load row %+v", r)
	}
	if !strings.Contains(table, "FAIL:") {
		t.Errorf("table:\n%s", table)
	}
}
