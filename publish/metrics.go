package publish

import "github.com/prometheus/client_golang/prometheus"

// metrics are the publisher's own Prometheus metrics.
type metrics struct {
	requests      *prometheus.CounterVec
	inSync        prometheus.Gauge
	lastSync      prometheus.Gauge
	retryDelay    prometheus.Gauge
	conflicts     *prometheus.GaugeVec
	eventsDropped prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpunode_publish_requests_total",
			Help: "Requests to the Kubernetes API server by the publisher, by request (get, apply, apply_status, taints, event) and result (ok, conflict, error).",
		}, []string{"request", "result"}),
		inSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gpunode_publish_in_sync",
			Help: "1 when the last pass left the Node with exactly the labels, taints and conditions the agent wants (conflicting keys aside).",
		}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gpunode_publish_last_sync_timestamp_seconds",
			Help: "When a pass last completed without error.",
		}),
		retryDelay: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gpunode_publish_retry_delay_seconds",
			Help: "Delay before the next attempt after a failed pass; 0 when the last pass succeeded.",
		}),
		conflicts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gpunode_label_conflict",
			Help: "1 for each shared label key another field manager owns with a different value; the agent leaves it alone.",
		}, []string{"key"}),
		eventsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gpunode_publish_events_dropped_total",
			Help: "Events dropped: the queue was full while the API server was unreachable, or the API server rejected them.",
		}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.inSync, m.lastSync, m.retryDelay, m.conflicts, m.eventsDropped}
}

func (m *metrics) count(request string, err error) {
	m.requests.WithLabelValues(request, resultOf(err)).Inc()
}
