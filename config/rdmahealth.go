package config

import (
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/gpunode/gpunode/rdmahealth"
)

// RDMAHealth configures how RDMA ports are judged (the RDMAHealthy
// condition, gpunode_rdma_port_healthy) and the opt-in taint while the
// condition is False. The defaults and why a fabric engineer would pick
// them are in rdmahealth.DefaultOptions.
type RDMAHealth struct {
	// Window is how far back error, flap and pause counts are taken.
	Window time.Duration `yaml:"window"`
	// Quiet is how long a port must stay free of flaps, error bursts and
	// pause storms before the finding clears.
	Quiet time.Duration `yaml:"quiet"`
	// Flaps within Window (link_downed plus carrier_changes increases)
	// that make a port LinkFlapping; 0 switches the check off.
	Flaps uint64 `yaml:"flaps"`
	// ErrorBurst maps a port counter file name to the increase within
	// Window that is an ErrorBurst. Entries are merged with the defaults;
	// 0 switches a counter off.
	ErrorBurst map[string]uint64 `yaml:"errorBurst"`
	// PausePerSecond is the PFC pause frame rate (one priority, either
	// direction, averaged over Window) that is a PauseStorm; 0: off.
	PausePerSecond float64 `yaml:"pausePerSecond"`
	// CompareSiblings also flags a port slower than most ports of the
	// same driver, link layer and board model (board_id) on the node.
	CompareSiblings bool `yaml:"compareSiblings"`
	// Taint is put on the Node while RDMAHealthy is False (opt-in).
	Taint Taint `yaml:"taint"`
}

// DefaultRDMATaintKey is the RDMA health taint's default key.
const DefaultRDMATaintKey = "gpunode.dev/rdma-unhealthy"

func defaultRDMAHealth() RDMAHealth {
	o := rdmahealth.DefaultOptions()
	return RDMAHealth{Window: o.Window, Quiet: o.Quiet, Flaps: o.Flaps, ErrorBurst: o.ErrorBurst,
		PausePerSecond: o.PausePerSecond, CompareSiblings: o.CompareSiblings,
		Taint: Taint{Key: DefaultRDMATaintKey, Effect: "NoSchedule"}}
}

// Options are the evaluator's thresholds.
func (r RDMAHealth) Options() rdmahealth.Options {
	return rdmahealth.Options{Window: r.Window, Quiet: r.Quiet, Flaps: r.Flaps, ErrorBurst: r.ErrorBurst,
		PausePerSecond: r.PausePerSecond, CompareSiblings: r.CompareSiblings}
}

// counterName is a sysfs counter file name.
var counterName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

func (r RDMAHealth) validate(sampleInterval time.Duration, gpuTaintKey string) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("metrics.rdmaHealth.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	// A window needs two readings to see an increase.
	if r.Window < 2*sampleInterval || r.Window > 24*time.Hour {
		bad("window", "must be between twice metrics.sampleInterval (%s) and 24h, got %s", 2*sampleInterval, r.Window)
	}
	if r.Quiet < 0 || r.Quiet > 24*time.Hour {
		bad("quiet", "must be between 0s and 24h, got %s", r.Quiet)
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range r.ErrorBurst {
			if !yield(k) {
				return
			}
		}
	}) {
		if !counterName.MatchString(name) {
			bad("errorBurst", "%q is not a counter file name", name)
		}
	}
	if r.PausePerSecond < 0 {
		bad("pausePerSecond", "must not be negative, got %g", r.PausePerSecond)
	}
	if tt := r.Taint; len(tt.Key) > 317 || !taintKey.MatchString(tt.Key) {
		bad("taint.key", "must be a label key such as %s, got %q", DefaultRDMATaintKey, tt.Key)
	} else if tt.Key == gpuTaintKey {
		bad("taint.key", "must differ from metrics.health.taint.key (%q): each condition owns its taint", tt.Key)
	}
	if e := r.Taint.Effect; !slices.Contains([]string{"NoSchedule", "PreferNoSchedule", "NoExecute"}, e) {
		bad("taint.effect", "must be NoSchedule, PreferNoSchedule or NoExecute, got %q", e)
	}
	return errs
}
