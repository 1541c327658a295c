package config

import (
	"strings"
	"testing"
	"time"
)

func TestRDMAHealth(t *testing.T) {
	d := Default().Metrics.RDMAHealth
	if d.Window != 5*time.Minute || d.Quiet != 15*time.Minute || d.Flaps != 1 || d.ErrorBurst["symbol_error"] != 10 ||
		!d.CompareSiblings || d.Taint.Enabled || d.Taint.Key != DefaultRDMATaintKey || d.Taint.Effect != "NoSchedule" {
		t.Errorf("defaults: %+v", d)
	}
	c, err := Parse([]byte("metrics:\n  sampleInterval: 1s\n  rdmaHealth:\n    window: 3s\n    quiet: 0s\n    errorBurst:\n      symbol_error: 0\n      port_rcv_discards: 5\n" +
		"    taint:\n      enabled: true\n      effect: NoExecute\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Metrics.RDMAHealth
	// The counters given are merged with the defaults.
	if r.Window != 3*time.Second || r.ErrorBurst["symbol_error"] != 0 || r.ErrorBurst["port_rcv_discards"] != 5 ||
		r.ErrorBurst["link_error_recovery"] != 5 || !r.Taint.Enabled || r.Taint.Key != DefaultRDMATaintKey || r.Taint.Effect != "NoExecute" {
		t.Errorf("parsed: %+v", r)
	}
	if o := r.Options(); o.Window != r.Window || o.ErrorBurst["port_rcv_discards"] != 5 || !o.CompareSiblings {
		t.Errorf("options: %+v", o)
	}
	if Default().Metrics.RDMAHealth.ErrorBurst["port_rcv_discards"] != 100 {
		t.Error("parsing changed the defaults of later configs")
	}
	for _, tc := range []struct{ in, want string }{
		{"metrics:\n  rdmaHealth:\n    window: 5s", "metrics.rdmaHealth.window: must be between twice metrics.sampleInterval (20s)"},
		{"metrics:\n  rdmaHealth:\n    quiet: -1s", "metrics.rdmaHealth.quiet"},
		{"metrics:\n  rdmaHealth:\n    errorBurst:\n      'bad name': 1", `metrics.rdmaHealth.errorBurst: "bad name"`},
		{"metrics:\n  rdmaHealth:\n    pausePerSecond: -1", "metrics.rdmaHealth.pausePerSecond"},
		{"metrics:\n  rdmaHealth:\n    taint:\n      effect: Evict", "metrics.rdmaHealth.taint.effect"},
		{"metrics:\n  rdmaHealth:\n    taint:\n      key: gpunode.dev/gpu-unhealthy", "must differ from metrics.health.taint.key"},
		{"metrics:\n  rdmaHealth:\n    flap: 2", `unknown key "flap" in metrics.rdmaHealth`},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) error = %v, want it to contain %q", tc.in, err, tc.want)
		}
	}
	// The taint is reloadable, the thresholds are not.
	a := Default()
	b := Default()
	b.Metrics.RDMAHealth.Taint.Enabled = true
	if keys := RestartNeeded(a, b); len(keys) != 0 {
		t.Errorf("taint change needs a restart: %v", keys)
	}
	b.Metrics.RDMAHealth.Flaps = 3
	if keys := RestartNeeded(a, b); strings.Join(keys, ",") != "metrics" {
		t.Errorf("threshold change: %v", keys)
	}
}
