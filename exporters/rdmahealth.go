package exporters

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/telemetry"
)

// rdmaHealthFamilies are the RDMA ports' health verdicts (rdmahealth).
type rdmaHealthFamilies struct {
	healthy, problem family
}

func newRDMAHealthFamilies() rdmaHealthFamilies {
	return rdmaHealthFamilies{
		healthy: newFamily("gpunode_rdma_port_healthy",
			"1 if the RDMA port is healthy, 0 if it went down after being ACTIVE, flaps, runs below its own or its siblings' rate, "+
				"or had an error burst or PFC pause storm within the quiet time (gpunode_rdma_port_health_problem and the Node's "+
				"RDMAHealthy condition name the reason); absent for a port not ACTIVE since the agent started.",
			prometheus.GaugeValue, rdmaLabels),
		problem: newFamily("gpunode_rdma_port_health_problem",
			"1 for each reason the RDMA port is unhealthy: PortDown, LinkFlapping, ErrorBurst, RateDegraded or PauseStorm.",
			prometheus.GaugeValue, rdmaLabels, "reason"),
	}
}

func (r *rdmaHealthFamilies) collect(emit func(prometheus.Metric), f *telemetry.Frame) {
	for _, p := range f.RDMAHealth {
		if !p.Judged {
			continue
		}
		t := target{id: []string{p.Device, strconv.Itoa(p.Port)}}
		emit(r.healthy.metric(t, boolValue(p.Healthy)))
		seen := map[string]bool{}
		for _, pr := range p.Problems {
			if !seen[pr.Reason] {
				seen[pr.Reason] = true
				emit(r.problem.metric(t, 1, pr.Reason))
			}
		}
	}
}
