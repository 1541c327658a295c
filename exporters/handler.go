package exporters

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Part is a section of /metrics that changes only when its version does
// (the telemetry between two sampling rounds): it is gathered, checked and
// encoded once per version and format, then served as bytes. With gzip it
// is kept as its own gzip member; a response is the live section's member
// followed by the cached ones, which RFC 1952 allows (a gzip stream is a
// series of members) and every Go, Python (urllib3) and zlib-based client
// reads as one body. A scrape of a DGX then costs the encoding of the
// few Go, process and agent series, not of the thousand-odd GPU and RDMA
// series.
type Part struct {
	reg     *prometheus.Registry
	version func() any

	mu       sync.Mutex
	at       any
	rendered map[renderKey][]byte
}

type renderKey struct {
	format expfmt.Format
	gzip   bool
}

// Cached makes a Part of collector c, whose output changes only when
// version (a comparable value) does.
func Cached(c prometheus.Collector, version func() any) (*Part, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("register collector: %w", err)
	}
	return &Part{reg: reg, version: version, rendered: map[renderKey][]byte{}}, nil
}

// bytes returns the part encoded in format, gzipped or not.
func (p *Part) bytes(format expfmt.Format, gz bool) ([]byte, error) {
	v := p.version()
	p.mu.Lock()
	defer p.mu.Unlock()
	if v != p.at {
		clear(p.rendered)
		p.at = v
	}
	k := renderKey{format, gz}
	if b, ok := p.rendered[k]; ok {
		return b, nil
	}
	mfs, err := p.reg.Gather()
	if err != nil {
		return nil, err // not cached: the next scrape tries again
	}
	var buf bytes.Buffer
	if err := encodeFamilies(&buf, format, gz, mfs, gzip.DefaultCompression); err != nil {
		return nil, err
	}
	p.rendered[k] = buf.Bytes()
	return p.rendered[k], nil
}

// offered are the formats /metrics serves, most preferred first.
var offered = []expfmt.Format{expfmt.FmtOpenMetrics_1_0_0, expfmt.FmtOpenMetrics_0_0_1, expfmt.FmtText}

// metricsHandler serves the live registry followed by the cached parts.
type metricsHandler struct {
	reg    *prometheus.Registry
	parts  []*Part
	logger *slog.Logger
	bufs   sync.Pool // *bytes.Buffer: responses are about the same size each time
}

func (h *metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	format := expfmt.NegotiateAccept(r.Header, offered...)
	gz := acceptsGzip(r.Header.Get("Accept-Encoding"))
	mfs, err := h.reg.Gather()
	if err != nil {
		// Like promhttp's ContinueOnError: serve what was gathered.
		h.logger.Error("gathering metrics", "err", err)
	}
	body, _ := h.bufs.Get().(*bytes.Buffer)
	if body == nil {
		body = new(bytes.Buffer)
	}
	body.Reset()
	defer h.bufs.Put(body)
	if err := encodeFamilies(body, format, gz, mfs, gzip.BestSpeed); err != nil {
		h.logger.Error("encoding metrics", "err", err)
		http.Error(w, "encoding metrics failed", http.StatusInternalServerError)
		return
	}
	for _, p := range h.parts {
		b, err := p.bytes(format, gz)
		if err != nil {
			h.logger.Error("gathering metrics", "err", err)
			continue
		}
		body.Write(b)
	}
	if format.FormatType() == expfmt.TypeOpenMetrics {
		var eof bytes.Buffer
		expfmt.FinalizeOpenMetrics(&eof)
		if err := writeMaybeGzip(body, eof.Bytes(), gz, gzip.BestSpeed); err != nil {
			h.logger.Error("encoding metrics", "err", err)
		}
	}
	w.Header().Set("Content-Type", string(format))
	if gz {
		w.Header().Set("Content-Encoding", "gzip")
	}
	w.Header().Set("Vary", "Accept-Encoding")
	if _, err := w.Write(body.Bytes()); err != nil {
		h.logger.Debug("writing metrics response", "err", err)
	}
}

// encodeFamilies writes families in format (without OpenMetrics' final
// "# EOF", which the handler adds once), as one gzip member when gz.
func encodeFamilies(w *bytes.Buffer, format expfmt.Format, gz bool, mfs []*dto.MetricFamily, level int) error {
	var plain bytes.Buffer
	enc := expfmt.NewEncoder(&plain, format)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return writeMaybeGzip(w, plain.Bytes(), gz, level)
}

var gzipPools sync.Map // compression level -> *sync.Pool of *gzip.Writer

func writeMaybeGzip(w *bytes.Buffer, b []byte, gz bool, level int) error {
	if !gz {
		w.Write(b)
		return nil
	}
	pool, _ := gzipPools.LoadOrStore(level, &sync.Pool{})
	zw, _ := pool.(*sync.Pool).Get().(*gzip.Writer)
	if zw == nil {
		var err error
		if zw, err = gzip.NewWriterLevel(io.Discard, level); err != nil {
			return err
		}
	}
	defer pool.(*sync.Pool).Put(zw)
	zw.Reset(w)
	if _, err := zw.Write(b); err != nil {
		return err
	}
	return zw.Close()
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") {
			q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}
