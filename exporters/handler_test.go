package exporters_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gpunode/gpunode/exporters"
	"github.com/gpunode/gpunode/snapshot"
)

func scrapeHandler(t *testing.T, h http.Handler, accept, encoding string) (*http.Response, []byte) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if encoding != "" {
		req.Header.Set("Accept-Encoding", encoding)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	resp := w.Result()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	return resp, body
}

// gunzipOneMember decodes a body that must be a single gzip member: what
// curl and zlib-based clients read.
func gunzipOneMember(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	if rest, _ := io.ReadAll(zr); len(rest) != 0 {
		t.Fatal("data after the first gzip member")
	}
	return out
}

// The handler serves the live registry and the cached telemetry as one
// body in every format, compressed as a single gzip member that decodes
// to exactly the plain body, with OpenMetrics' "# EOF" once, at the end.
func TestHandlerFormatsAndCompression(t *testing.T) {
	n := newSimNode(t, "h100-roce")
	snap := func() *snapshot.Snapshot { return n.snap }
	reg, err := exporters.NewRegistry(exporters.NewAgentCollector(snap, exporters.BuildInfo{Version: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	part, err := exporters.NewTelemetryPart(n.sampler.Latest, snap, exporters.TelemetryOptions{DCGMCompat: true})
	if err != nil {
		t.Fatal(err)
	}
	h, err := exporters.NewHandler(reg, exporters.Health{Live: func() error { return nil }, Ready: func() error { return nil }},
		"test", slog.New(slog.DiscardHandler), part)
	if err != nil {
		t.Fatal(err)
	}
	const om = "application/openmetrics-text;version=1.0.0"
	for _, tc := range []struct {
		accept, wantType string
	}{
		{"", "text/plain; version=0.0.4"},
		{"text/plain;version=0.0.4", "text/plain; version=0.0.4"},
		{om, "application/openmetrics-text; version=1.0.0"},
		{"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", "text/plain; version=0.0.4"},
	} {
		resp, plain := scrapeHandler(t, h, tc.accept, "")
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.wantType) || resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("Accept %q: Content-Type %q, Content-Encoding %q", tc.accept, ct, resp.Header.Get("Content-Encoding"))
		}
		zresp, zbody := scrapeHandler(t, h, tc.accept, "deflate, gzip;q=0.9, br")
		if zresp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("Accept %q: not gzipped", tc.accept)
		}
		// The go_* and process_* series move between two scrapes; compare
		// everything else.
		stable := func(b []byte) string {
			var keep []string
			for _, l := range strings.Split(string(b), "\n") {
				if !strings.Contains(l, "go_") && !strings.Contains(l, "process_") {
					keep = append(keep, l)
				}
			}
			return strings.Join(keep, "\n")
		}
		if unz := gunzipOneMember(t, zbody); stable(unz) != stable(plain) || len(zbody) > len(plain)/5 {
			t.Errorf("Accept %q: gzip body (%d B) decodes to %d B that differ from the plain %d B", tc.accept, len(zbody), len(unz), len(plain))
		}
		s := string(plain)
		for _, want := range []string{"gpunode_build_info", "gpunode_gpu_power_watts", "gpunode_rdma_port_cnp_sent_total", "DCGM_FI_DEV_GPU_UTIL", "go_goroutines"} {
			if !strings.Contains(s, want) {
				t.Errorf("Accept %q: no %s", tc.accept, want)
			}
		}
		if tc.accept == om {
			if strings.Count(s, "# EOF") != 1 || !strings.HasSuffix(s, "# EOF\n") {
				t.Errorf("OpenMetrics body does not end with a single # EOF")
			}
			continue
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		if _, err := p.TextToMetricFamilies(strings.NewReader(s)); err != nil {
			t.Errorf("Accept %q: the body does not parse: %v", tc.accept, err)
		}
	}
	if resp, _ := scrapeHandler(t, h, "", "gzip;q=0"); resp.Header.Get("Content-Encoding") != "" {
		t.Error("gzip sent although q=0")
	}
	// A new frame is served at once.
	before := string(func() []byte { _, b := scrapeHandler(t, h, "", ""); return b }())
	n.clock.Advance(10 * time.Second)
	n.sampler.Round(t.Context())
	if _, after := scrapeHandler(t, h, "", ""); string(after) == before {
		t.Error("the cached part did not change with the frame")
	}
}
