package exporters

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/verify"
)

// verifyCollector exports the latest node verification.
type verifyCollector struct {
	report   func() *verify.Report
	status   *prometheus.Desc
	verified *prometheus.Desc
}

// NewVerifyCollector exports report(), the daemon's latest verification;
// nothing before the first.
func NewVerifyCollector(report func() *verify.Report) prometheus.Collector {
	return &verifyCollector{
		report: report,
		status: prometheus.NewDesc("gpunode_check_status",
			"Node verification, per check and subject: 1 pass, 0 finding (severity critical: the check failed; severity warning: a warning). Skipped checks (not applicable, or facts unknown) are left out.",
			[]string{"check", "subject", "severity"}, nil),
		verified: prometheus.NewDesc("gpunode_node_verified",
			"1 when node verification found no failed check (the gpunode.dev/verified label and the GPUNodeVerified condition), 0 otherwise.",
			nil, nil),
	}
}

func (c *verifyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.status
	ch <- c.verified
}

func (c *verifyCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.report()
	if r == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.verified, prometheus.GaugeValue, boolValue(r.Verified))
	for _, res := range r.Results {
		if res.Status == verify.Skip {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.status, prometheus.GaugeValue, boolValue(res.Status == verify.Pass), res.Check, res.Subject, string(res.Severity))
	}
}
