package exporters

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Part is a section of /metrics that changes only when its version does
// (the telemetry between two sampling rounds): it is gathered, checked,
// encoded and compressed once per version and format, then served as
// bytes. A scrape of a DGX then costs the encoding and compression of the
// few Go, process and agent series, not of the thousand-odd GPU and RDMA
// series.
//
// Compressed, a part is a run of deflate blocks ended by a sync flush (an
// empty stored block, so it ends on a byte boundary) and compressed from a
// fresh state (so it refers to nothing before it). Such runs can follow
// one another inside one deflate stream (RFC 1951), which is how pigz
// joins its chunks: a response is one ordinary gzip member made of the
// live section's run, the parts' cached runs and a final block, with the
// CRC-32 and size of the whole.
type Part struct {
	reg     *prometheus.Registry
	version func() any

	mu       sync.Mutex
	at       any
	rendered map[expfmt.Format]*rendered
}

// rendered is a part in one format.
type rendered struct {
	plain    []byte
	deflated []byte // sync-flushed deflate blocks of plain
}

// Cached makes a Part of collector c, whose output changes only when
// version (a comparable value) does.
func Cached(c prometheus.Collector, version func() any) (*Part, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("register collector: %w", err)
	}
	return &Part{reg: reg, version: version, rendered: map[expfmt.Format]*rendered{}}, nil
}

// render returns the part encoded in format, plain and deflated.
func (p *Part) render(format expfmt.Format) (*rendered, error) {
	v := p.version()
	p.mu.Lock()
	defer p.mu.Unlock()
	if v != p.at {
		clear(p.rendered)
		p.at = v
	}
	if r, ok := p.rendered[format]; ok {
		return r, nil
	}
	mfs, err := p.reg.Gather()
	if err != nil {
		return nil, err // not cached: the next scrape tries again
	}
	var plain, deflated bytes.Buffer
	if err := encodeFamilies(&plain, format, mfs); err != nil {
		return nil, err
	}
	fw, err := flate.NewWriter(&deflated, flate.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := fw.Write(plain.Bytes()); err != nil {
		return nil, err
	}
	if err := fw.Flush(); err != nil {
		return nil, err
	}
	r := &rendered{plain: plain.Bytes(), deflated: deflated.Bytes()}
	p.rendered[format] = r
	return r, nil
}

// offered are the formats /metrics serves, most preferred first.
var offered = []expfmt.Format{expfmt.FmtOpenMetrics_1_0_0, expfmt.FmtOpenMetrics_0_0_1, expfmt.FmtText}

// maxScrapesInFlight bounds concurrent /metrics requests. Each holds its
// response (about 200 KB plain on a DGX) until the client has read it, so
// clients that send requests and never read would otherwise hold memory
// without bound. Prometheus scrapes a target one request at a time; an HA
// pair and a person with curl fit. More get 503 at once, as promhttp's
// MaxRequestsInFlight answers.
const maxScrapesInFlight = 8

// scrapeWriteTimeout bounds how long a client may take to read a /metrics
// response, so that a slow reader gives its slot back.
const scrapeWriteTimeout = 10 * time.Second

// metricsHandler serves the live registry followed by the cached parts.
type metricsHandler struct {
	inflight chan struct{} // a token per request being served
	reg      *prometheus.Registry
	parts    []*Part
	logger   *slog.Logger
	bufs     sync.Pool // *bytes.Buffer: responses are about the same size each time
	flaters  sync.Pool // *flate.Writer
}

func (h *metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case h.inflight <- struct{}{}:
		defer func() { <-h.inflight }()
	default:
		http.Error(w, fmt.Sprintf("more than %d scrapes in flight; try again", maxScrapesInFlight), http.StatusServiceUnavailable)
		return
	}
	// Not every writer supports deadlines (httptest's recorder does not).
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(scrapeWriteTimeout))
	format := expfmt.NegotiateAccept(r.Header, offered...)
	gz := acceptsGzip(r.Header.Get("Accept-Encoding"))
	mfs, err := h.reg.Gather()
	if err != nil {
		// Like promhttp's ContinueOnError: serve what was gathered.
		h.logger.Error("gathering metrics", "err", err)
	}
	live, _ := h.bufs.Get().(*bytes.Buffer)
	body, _ := h.bufs.Get().(*bytes.Buffer)
	if live == nil {
		live = new(bytes.Buffer)
	}
	if body == nil {
		body = new(bytes.Buffer)
	}
	live.Reset()
	body.Reset()
	defer h.bufs.Put(live)
	defer h.bufs.Put(body)
	if err := encodeFamilies(live, format, mfs); err != nil {
		h.logger.Error("encoding metrics", "err", err)
		http.Error(w, "encoding metrics failed", http.StatusInternalServerError)
		return
	}
	var parts []*rendered
	for _, p := range h.parts {
		rp, err := p.render(format)
		if err != nil {
			h.logger.Error("gathering metrics", "err", err)
			continue
		}
		parts = append(parts, rp)
	}
	var tail []byte
	if format.FormatType() == expfmt.TypeOpenMetrics {
		tail = []byte("# EOF\n")
	}
	if gz {
		err = h.gzipped(body, live.Bytes(), parts, tail)
	} else {
		body.Write(live.Bytes())
		for _, rp := range parts {
			body.Write(rp.plain)
		}
		body.Write(tail)
	}
	if err != nil {
		h.logger.Error("compressing metrics", "err", err)
		http.Error(w, "compressing metrics failed", http.StatusInternalServerError)
		return
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

// gzipHeader is a gzip member header: deflate, no flags, no time, no OS hint
// (RFC 1952 section 2.3).
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

// gzipped writes one gzip member holding live, the parts and tail: live
// and tail are compressed now, the parts' deflate runs are copied.
func (h *metricsHandler) gzipped(out *bytes.Buffer, live []byte, parts []*rendered, tail []byte) error {
	fw, _ := h.flaters.Get().(*flate.Writer)
	if fw == nil {
		var err error
		if fw, err = flate.NewWriter(io.Discard, flate.BestSpeed); err != nil {
			return err
		}
	}
	defer h.flaters.Put(fw)
	out.Write(gzipHeader)
	crc := crc32.ChecksumIEEE(live)
	size := len(live)
	fw.Reset(out)
	if _, err := fw.Write(live); err != nil {
		return err
	}
	if err := fw.Flush(); err != nil { // byte-aligned, not final
		return err
	}
	for _, rp := range parts {
		out.Write(rp.deflated)
		crc = crc32.Update(crc, crc32.IEEETable, rp.plain)
		size += len(rp.plain)
	}
	fw.Reset(out) // a fresh run: nothing refers back into the parts
	if _, err := fw.Write(tail); err != nil {
		return err
	}
	if err := fw.Close(); err != nil { // the final block
		return err
	}
	crc = crc32.Update(crc, crc32.IEEETable, tail)
	size += len(tail)
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], crc)
	binary.LittleEndian.PutUint32(trailer[4:], uint32(size))
	out.Write(trailer[:])
	return nil
}

// encodeFamilies writes families in format, without OpenMetrics' final
// "# EOF", which the handler adds once at the very end.
func encodeFamilies(w *bytes.Buffer, format expfmt.Format, mfs []*dto.MetricFamily) error {
	enc := expfmt.NewEncoder(w, format)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return nil
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
