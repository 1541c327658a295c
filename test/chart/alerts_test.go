package chart

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// alertNames are the alerts the chart ships; each has firing and quiet
// series in testdata/alerts_test.yaml.
var alertNames = []string{
	"GPUUnhealthy", "GPUNotResponding", "GPUXIDError", "GPUXIDNotWatched", "GPUTooHot",
	"GPUThrottled", "GPUPCIeErrors", "KernelReportedXID", "KernelReportedDeviceFault",
	"RDMAPortDown", "RDMALinkFlapping", "RDMAPortErrors", "RoCEPauseStorm",
	"RDMAProbeLatencyHigh", "RDMAProbeBandwidthLow", "RDMAProbeFailing",
	"TuningDrift", "TuningNotCompliant",
	"GPUNodeAgentDown", "GPUNodeSourceFailing", "GPUNodeVerificationFailed",
	"GPUAllocatedIdle",
}

// The rendered rules pass promtool check rules, and promtool test rules
// proves each alert fires on the series meant to fire it and stays quiet
// on the others.
func TestAlertRules(t *testing.T) {
	dir := t.TempDir()
	spec := renderedRules(t, dir, false)
	if out, err := promtool(t, dir, "check", "rules", "gpunode-agent.rules.yaml"); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	var names []string
	for _, g := range spec["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			if a, ok := r.(map[string]any)["alert"].(string); ok { // not a recording rule
				names = append(names, a)
			}
		}
	}
	if !slices.Equal(names, alertNames) {
		t.Errorf("alerts %v, tested %v", names, alertNames)
	}
	test, err := filepath.Abs("testdata/alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Every alert is tested both firing and quiet.
	for _, name := range alertNames {
		if !strings.Contains(readFile(t, test), "alertname: "+name+"\n") || !strings.Contains(readFile(t, test), "alertname: "+name+", exp_alerts: []}") {
			t.Errorf("%s is not tested both firing and quiet in %s", name, test)
		}
	}
	copyFile(t, "testdata/annotations_test.yaml", filepath.Join(dir, "annotations_test.yaml"))
	if out, err := promtool(t, dir, "test", "rules", "annotations_test.yaml"); err != nil {
		t.Fatalf("promtool test rules (annotations): %v\n%s", err, out)
	}
	// The behaviour, with annotations stripped (promtool compares them all).
	renderedRules(t, dir, true)
	copyFile(t, test, filepath.Join(dir, "alerts_test.yaml"))
	if out, err := promtool(t, dir, "test", "rules", "alerts_test.yaml"); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// Thresholds, durations, extra labels and the agent's job come from values.
func TestAlertRulesFromValues(t *testing.T) {
	spec := renderedRules(t, t.TempDir(), false,
		"--set-json", "prometheusRule.thresholds.rdmaLatencySeconds=0.00002",
		"--set-json", "prometheusRule.thresholds.rdmaBandwidthBytesPerSecond=25e9",
		"--set", "prometheusRule.for.rdma=3m",
		"--set", "prometheusRule.additionalLabels.team=ml-infra",
		"--set", "podMonitor.enabled=true")
	rules := map[string]map[string]any{}
	for _, g := range spec["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			if a, ok := r.(map[string]any)["alert"].(string); ok {
				rules[a] = r.(map[string]any)
			}
		}
	}
	for alert, want := range map[string]string{
		"RDMAProbeLatencyHigh":  `gpunode_rdma_probe_latency_seconds{kind="send_lat", quantile="0.5"} > 2e-05`,
		"RDMAProbeBandwidthLow": `gpunode_rdma_probe_bandwidth_bytes_per_second{kind="write_bw"} < 2.5e+10`,
		"GPUNodeAgentDown":      `up{job="gpunode/gpunode-gpunode-agent"} == 0`,
	} {
		if got := rules[alert]["expr"]; got != want {
			t.Errorf("%s: expr %q, want %q", alert, got, want)
		}
	}
	if rules["RDMAProbeBandwidthLow"]["for"] != "3m" {
		t.Errorf("for: %v", rules["RDMAProbeBandwidthLow"]["for"])
	}
	for name, r := range rules {
		if r["labels"].(map[string]any)["team"] != "ml-infra" {
			t.Errorf("%s: labels %v", name, r["labels"])
		}
	}
}
