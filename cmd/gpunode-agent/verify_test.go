package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/sim"
)

func TestVerifyCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--simulate=dgx-h100-ib", "verify"}, 0, "Node verification: VERIFIED"},
		{[]string{"--simulate=dgx-h100-ib-degraded", "verify"}, 1, "fail    Gen4 x8"},
		{[]string{"--simulate=h100-roce-lossy", "verify", "-o", "json"}, 1, `"check": "roce-congestion"`},
		{[]string{"--simulate=dgx-h100-ib", "verify", "--expected-gpus=4"}, 1, "gpu-count  node     fail    8         4 (verify.expectedGPUCount)"},
		// Failures and warnings by default, every row with -v.
		{[]string{"--simulate=dgx-h100-ib", "verify"}, 0, "No failures or warnings; 77 passed and 16 skipped not listed (-v lists every check)."},
		{[]string{"--simulate=dgx-h100-ib", "verify", "-v"}, 0, "nvlink                gpu5      pass    18/18 active, NVLink 4"},
		{[]string{"--simulate=dgx-h100-ib", "verify", "--expected-gpus=-1"}, 2, ""},
		{[]string{"--simulate=dgx-h100-ib", "verify", "-o", "yaml"}, 2, ""},
	} {
		var out, errOut bytes.Buffer
		code := run(c.args, &out, &errOut)
		if code != c.code || !strings.Contains(out.String(), c.want) {
			t.Errorf("%v: exit %d (want %d), output lacks %q:\n%s%s", c.args, code, c.code, c.want, out.String(), errOut.String())
		}
	}
}

// The command prints what the golden reports hold, and --config's verify
// section reaches the checks.
func TestVerifyGoldenAndConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--simulate=h100-roce-lossy", "verify", "-o", "json"}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want, err := os.ReadFile("../../verify/testdata/h100-roce-lossy.verify.json")
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Errorf("verify -o json differs from the golden report:\n%s", out.String())
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("verify:\n  expectedGPUCount: 16\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"--simulate=dgx-b200-ib", "--config=" + cfg, "verify", "-o", "json"}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d with 16 GPUs expected: %s", code, errOut.String())
	}
	var r struct {
		Results []struct{ Check, Status, Expected string }
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	for _, res := range r.Results {
		if res.Check == "gpu-count" && (res.Status != "fail" || !strings.HasPrefix(res.Expected, "16")) {
			t.Errorf("gpu-count %+v", res)
		}
	}
	if err := os.WriteFile(cfg, []byte("verify:\n  expectedGPUs: 8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"--simulate=dgx-b200-ib", "--config=" + cfg, "verify"}, &out, &errOut); code != 2 {
		t.Errorf("unknown key: exit %d", code)
	}
}

// --host-root on a simulated tree: the real DCB reader asks this
// machine's kernel, which has none of the tree's interfaces (PFC stays
// unknown, no source fails); ECN comes from the tree and is off. NVML is
// switched off: this machine's library (or its absence) is not the
// tree's, and GPUs on PCI without NVML fail discovery (see below).
func TestVerifyHostRoot(t *testing.T) {
	dir := t.TempDir()
	if _, err := sim.Build("h100-roce-lossy", dir); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("gpu:\n  nvml:\n    enabled: false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run([]string{"--host-root=" + dir, "--config=" + cfg, "verify", "--verbose"}, &out, &errOut)
	for _, w := range []string{"discovery             node      pass", "roce-congestion       mlx5_0/1  fail    PFC unknown, ECN none", "roce-congestion       mlx5_9/1  pass    PFC unknown, ECN 0-7"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q", w)
		}
	}
	if code != 1 {
		t.Errorf("exit %d:\n%s%s", code, out.String(), errOut.String())
	}
}

// Issue 14: a DGX host tree whose GPUs are bound to nvidia, with only
// libnvidia-ml.so.1 missing (a DaemonSet without the NVIDIA container
// runtime), is not verified, and the remedy says how to give the agent
// NVML; likewise the simulated node that is that host.
func TestVerifyWithoutNVML(t *testing.T) {
	dir := t.TempDir()
	if _, err := sim.Build("dgx-h100-ib", dir); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	lib := filepath.Join(t.TempDir(), "libnvidia-ml.so.1") // not there, even on a machine with NVML
	if err := os.WriteFile(cfg, []byte("gpu:\n  nvml:\n    libraryPath: "+lib+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--host-root=" + dir, "--config=" + cfg, "verify", "--verbose"},
		{"--simulate=dgx-h100-ib-no-nvml", "verify", "--verbose"},
	} {
		var out, errOut bytes.Buffer
		code := run(args, &out, &errOut)
		for _, w := range []string{
			"Node verification: NOT VERIFIED (1 failed,",
			"discovery             node      fail    nvml: 8 NVIDIA GPUs on PCI (bound to nvidia) but NVML is not available: NVIDIA driver library libnvidia-ml.so.1 not found",
			"gpu-count             node      skip    8 NVIDIA GPUs on PCI not inventoried: nvml failed",
			"fail discovery (node): mount the driver library and devices into the agent: run it with the NVIDIA container runtime",
		} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: output lacks %q", args, w)
			}
		}
		if code != 1 {
			t.Errorf("%v: exit %d:\n%s%s", args, code, out.String(), errOut.String())
		}
	}
}
