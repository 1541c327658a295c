// Package exporters turns snapshots and samples into Prometheus metrics and
// serves them, with the health endpoints, over HTTP.
package exporters

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/snapshot"
)

// BuildInfo identifies the running binary.
type BuildInfo struct {
	Version   string
	Revision  string
	GoVersion string
}

// agentCollector exports the agent's own state from the latest snapshot.
// It reads a pointer and never touches a device, so a scrape cannot block
// on hardware.
type agentCollector struct {
	snap  func() *snapshot.Snapshot
	build BuildInfo
	// more report sources beside discovery's (the sampler's), same metrics.
	more []func() []source.Status

	buildInfo, sourceUp, sourceState, sourceDuration, snapshotTime, simulated *prometheus.Desc
}

// NewAgentCollector exports build info, per-source status and timing, and
// the age of the snapshot. snap returns nil until the first discovery.
// more adds the statuses of other sources (the sampler's) to the same
// metrics; their names must differ from discovery's.
func NewAgentCollector(snap func() *snapshot.Snapshot, build BuildInfo, more ...func() []source.Status) prometheus.Collector {
	return &agentCollector{
		snap:  snap,
		build: build,
		more:  more,
		buildInfo: prometheus.NewDesc("gpunode_build_info",
			"Build of the running gpunode-agent; always 1.", []string{"version", "revision", "goversion"}, nil),
		sourceUp: prometheus.NewDesc("gpunode_source_up",
			"1 if the source's last run (discovery or sampling) succeeded or found its hardware absent, 0 if it failed.", []string{"source"}, nil),
		sourceState: prometheus.NewDesc("gpunode_source_state",
			"1 for the state (ok, absent, degraded, error) of the source's last run (discovery or sampling), 0 for the others; degraded: read, but some readings through a fallback (a format or library version it cannot decode).", []string{"source", "state"}, nil),
		sourceDuration: prometheus.NewDesc("gpunode_source_duration_seconds",
			"Duration of the source's last run (discovery or sampling).", []string{"source"}, nil),
		snapshotTime: prometheus.NewDesc("gpunode_snapshot_timestamp_seconds",
			"Unix time of the last completed discovery.", nil, nil),
		simulated: prometheus.NewDesc("gpunode_simulated",
			"1 when the agent runs on a simulated node (--simulate), labelled with its name.", []string{"node"}, nil),
	}
}

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.buildInfo, c.sourceUp, c.sourceState, c.sourceDuration, c.snapshotTime, c.simulated} {
		ch <- d
	}
}

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.buildInfo, prometheus.GaugeValue, 1, c.build.Version, c.build.Revision, c.build.GoVersion)
	var sources []source.Status
	for _, more := range c.more {
		sources = append(sources, more()...)
	}
	if s := c.snap(); s != nil {
		ch <- prometheus.MustNewConstMetric(c.snapshotTime, prometheus.GaugeValue, float64(s.TakenAt.UnixNano())/1e9)
		if s.Simulated != "" {
			ch <- prometheus.MustNewConstMetric(c.simulated, prometheus.GaugeValue, 1, s.Simulated)
		}
		sources = append(append(make([]source.Status, 0, len(s.Sources)+len(sources)), s.Sources...), sources...)
	}
	for _, st := range sources {
		ch <- prometheus.MustNewConstMetric(c.sourceUp, prometheus.GaugeValue, boolValue(st.State != source.Error), st.Name)
		for _, state := range source.States() {
			ch <- prometheus.MustNewConstMetric(c.sourceState, prometheus.GaugeValue, boolValue(st.State == state), st.Name, string(state))
		}
		ch <- prometheus.MustNewConstMetric(c.sourceDuration, prometheus.GaugeValue, st.Duration.Seconds(), st.Name)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
