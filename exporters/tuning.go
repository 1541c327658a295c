package exporters

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/tuning"
)

// tuningCollector exports the state of host tuning from the daemon's last
// verification. Like every collector here it only reads memory.
type tuningCollector struct {
	status func() *tuning.Status

	info, compliant, driftTotal, lastApply *prometheus.Desc
}

// NewTuningCollector exports the tuning status; status returns nil before
// the first run.
func NewTuningCollector(status func() *tuning.Status) prometheus.Collector {
	return &tuningCollector{
		status: status,
		info: prometheus.NewDesc("gpunode_tuning_info",
			"Host tuning: the profile, mode (enforce, audit, revert, off) and state (compliant, pending, drifted, conflict, error, unknown, off, reverted); always 1.",
			[]string{"profile", "mode", "state"}, nil),
		compliant: prometheus.NewDesc("gpunode_tuning_setting_compliant",
			"1 if the managed setting has the value the profile wants, 0 if not (to set, drifted, conflicting or failing). Unsupported and skipped settings are left out.",
			[]string{"kind", "key"}, nil),
		driftTotal: prometheus.NewDesc("gpunode_tuning_drift_total",
			"Settings found changed by someone else after tuning set them, since the agent started.", nil, nil),
		lastApply: prometheus.NewDesc("gpunode_tuning_last_apply_timestamp_seconds",
			"Unix time when tuning last changed a setting; absent until it has.", nil, nil),
	}
}

func (c *tuningCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.info, c.compliant, c.driftTotal, c.lastApply} {
		ch <- d
	}
}

func (c *tuningCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.status()
	if s == nil || s.Mode == "" {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, s.Profile, s.Mode, s.State)
	ch <- prometheus.MustNewConstMetric(c.driftTotal, prometheus.CounterValue, float64(s.DriftTotal))
	if !s.LastApply.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.lastApply, prometheus.GaugeValue, float64(s.LastApply.UnixNano())/1e9)
	}
	if s.Plan == nil {
		return
	}
	for _, st := range s.Plan.Steps {
		switch st.Action {
		case tuning.ActionUnsupported, tuning.ActionSkip, tuning.ActionKept:
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.compliant, prometheus.GaugeValue, boolValue(st.Action == tuning.ActionOK), st.Kind, st.Key)
	}
}
