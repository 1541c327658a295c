package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"slices"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func tlsConfig(pool *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// Metrics is one scrape of the apiserver's /metrics.
type Metrics map[string]*dto.MetricFamily

// Scrape reads the apiserver's own /metrics as admin.
func (c *Cluster) Scrape(ctx context.Context) (Metrics, error) {
	body, err := c.Admin.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("scrape apiserver /metrics: %w", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytesReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse apiserver /metrics: %w", err)
	}
	return fams, nil
}

// Match selects series by label values; an empty value matches any.
type Match map[string]string

func (m Match) matches(labels []*dto.LabelPair) bool {
	for name, want := range m {
		got := ""
		for _, l := range labels {
			if l.GetName() == name {
				got = l.GetValue()
			}
		}
		if got != want {
			return false
		}
	}
	return true
}

// Requests sums apiserver_request_total over the series that match, e.g.
// Match{"verb": "APPLY", "resource": "nodes"}. Server-side apply counts as
// verb APPLY, other patches as PATCH.
func (m Metrics) Requests(match Match) float64 {
	total := 0.0
	if f := m["apiserver_request_total"]; f != nil {
		for _, s := range f.GetMetric() {
			if match.matches(s.GetLabel()) {
				total += s.GetCounter().GetValue()
			}
		}
	}
	return total
}

// Writes counts the mutating requests (APPLY, PATCH, UPDATE, POST, DELETE)
// on a resource and subresource.
func (m Metrics) Writes(resource, subresource string) float64 {
	n := 0.0
	for _, verb := range []string{"APPLY", "PATCH", "UPDATE", "POST", "DELETE"} {
		n += m.Requests(Match{"verb": verb, "resource": resource, "subresource": subresource})
	}
	return n
}

// Latency returns the q-quantile of apiserver_request_duration_seconds over
// the matching series, interpolated within histogram buckets as
// Prometheus' histogram_quantile does, and the number of observations.
// Subtract an earlier scrape with Since to look at a window.
func (m Metrics) Latency(q float64, match Match) (seconds float64, count uint64) {
	f := m["apiserver_request_duration_seconds"]
	if f == nil {
		return math.NaN(), 0
	}
	buckets := map[float64]uint64{}
	for _, s := range f.GetMetric() {
		if !match.matches(s.GetLabel()) {
			continue
		}
		h := s.GetHistogram()
		count += h.GetSampleCount()
		for _, b := range h.GetBucket() {
			buckets[b.GetUpperBound()] += b.GetCumulativeCount()
		}
	}
	return quantile(q, buckets, count), count
}

// Since returns m minus an earlier scrape for the counters and histograms
// the benchmarks read (series absent earlier count from zero).
func (m Metrics) Since(earlier Metrics) Metrics {
	out := Metrics{}
	for name, f := range m {
		e := earlier[name]
		nf := &dto.MetricFamily{Name: f.Name, Type: f.Type}
		for _, s := range f.GetMetric() {
			var prev *dto.Metric
			if e != nil {
				for _, es := range e.GetMetric() {
					if sameLabels(es.GetLabel(), s.GetLabel()) {
						prev = es
					}
				}
			}
			nf.Metric = append(nf.Metric, subtract(s, prev))
		}
		out[name] = nf
	}
	return out
}

func sameLabels(a, b []*dto.LabelPair) bool {
	return slices.EqualFunc(a, b, func(x, y *dto.LabelPair) bool { return x.GetName() == y.GetName() && x.GetValue() == y.GetValue() })
}

func subtract(s, prev *dto.Metric) *dto.Metric {
	out := &dto.Metric{Label: s.Label}
	switch {
	case s.Counter != nil:
		v := s.GetCounter().GetValue() - prev.GetCounter().GetValue()
		out.Counter = &dto.Counter{Value: &v}
	case s.Histogram != nil:
		h := &dto.Histogram{}
		n := s.GetHistogram().GetSampleCount() - prev.GetHistogram().GetSampleCount()
		h.SampleCount = &n
		for i, b := range s.GetHistogram().GetBucket() {
			c := b.GetCumulativeCount()
			if pb := prev.GetHistogram().GetBucket(); i < len(pb) {
				c -= pb[i].GetCumulativeCount()
			}
			h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: b.UpperBound, CumulativeCount: &c})
		}
		out.Histogram = h
	default:
		return s
	}
	return out
}

func quantile(q float64, buckets map[float64]uint64, count uint64) float64 {
	if count == 0 {
		return math.NaN()
	}
	bounds := make([]float64, 0, len(buckets))
	for b := range buckets {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	rank := q * float64(count)
	lower, below := 0.0, 0.0
	for _, ub := range bounds {
		c := float64(buckets[ub])
		if c >= rank {
			if math.IsInf(ub, 1) {
				return lower // as Prometheus: the highest finite bound
			}
			return lower + (ub-lower)*(rank-below)/(c-below)
		}
		lower, below = ub, c
	}
	return lower
}

// FormatSeconds prints a latency for reports.
func FormatSeconds(s float64) string { return strconv.FormatFloat(s*1000, 'f', 1, 64) + " ms" }

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
