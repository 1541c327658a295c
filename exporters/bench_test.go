package exporters_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gpunode/gpunode/exporters"
	"github.com/gpunode/gpunode/snapshot"
)

// BenchmarkHandler is one scrape of a simulated DGX H100's /metrics through
// the real handler, as Prometheus asks for it (OpenMetrics, gzip), in
// process: what a scrape costs the agent without the network.
func BenchmarkHandler(b *testing.B) {
	for _, tc := range []struct {
		name, accept, encoding string
	}{
		{"openmetrics-gzip", "application/openmetrics-text;version=1.0.0", "gzip"},
		{"text-plain", "text/plain;version=0.0.4", ""},
	} {
		b.Run(tc.name, func(b *testing.B) {
			n := newSimNode(b, "dgx-h100-ib")
			snap := func() *snapshot.Snapshot { return n.snap }
			reg, err := exporters.NewRegistry(exporters.NewAgentCollector(snap, exporters.BuildInfo{}))
			if err != nil {
				b.Fatal(err)
			}
			part, err := exporters.NewTelemetryPart(n.sampler.Latest, snap, exporters.TelemetryOptions{})
			if err != nil {
				b.Fatal(err)
			}
			h, err := exporters.NewHandler(reg, exporters.Health{Live: func() error { return nil }, Ready: func() error { return nil }}, "bench", slog.New(slog.DiscardHandler), part)
			if err != nil {
				b.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			req.Header.Set("Accept", tc.accept)
			if tc.encoding != "" {
				req.Header.Set("Accept-Encoding", tc.encoding)
			}
			var size int
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatal(w.Code)
				}
				size = w.Body.Len()
				io.Copy(io.Discard, w.Body)
			}
			b.ReportMetric(float64(size), "B/response")
		})
	}
}
