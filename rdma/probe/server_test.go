package probe

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpunode/gpunode/rdma"
)

var testToken = []byte("test-token-0123456789")

// startServer runs a real server on loopback TCP. RDMA kinds reach the
// verbs layer, which on this machine reports why it cannot run.
func startServer(t *testing.T, lim *Limiter) string {
	t.Helper()
	return serve(t, &Server{Limiter: lim, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// serve runs s, with the test token, no devices and a 2s step timeout
// where s leaves them unset, until the test ends.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if s.Token == nil {
		s.Token = testToken
	}
	if s.Devices == nil {
		s.Devices = func(context.Context) ([]rdma.Device, error) { return nil, nil }
	}
	if s.StepTimeout == 0 {
		s.StepTimeout = 2 * time.Second
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func client(token []byte) *Client {
	return &Client{Token: token, Limiter: NewLimiter(), StepTimeout: 2 * time.Second,
		Devices: func(context.Context) ([]rdma.Device, error) { return nil, nil }}
}

func TestTCPProbesThroughServer(t *testing.T) {
	addr := startServer(t, NewLimiter())
	c := client(testToken)
	bw := Request{Kind: KindTCPBW, Size: 65536, Iterations: 200, Depth: 1, Timeout: 20 * time.Second}
	res, err := c.Run(context.Background(), addr, bw)
	if err != nil {
		t.Fatal(err)
	}
	// Both ends' threads read and write: each has CPU time, the server's
	// from its ack.
	if res.Bytes != 200*65536 || res.BytesPerSecond <= 0 || res.Elapsed <= 0 || res.CPUSeconds <= 0 || res.PeerCPUSeconds <= 0 ||
		res.CPUSecondsPerGB != (res.CPUSeconds+res.PeerCPUSeconds)/(float64(res.Bytes)/1e9) {
		t.Errorf("tcp_bw result %+v", res)
	}
	lat := Request{Kind: KindTCPLat, Size: 2, Iterations: 200, Depth: 1, Timeout: 20 * time.Second}
	res, err = c.Run(context.Background(), addr, lat)
	if err != nil {
		t.Fatal(err)
	}
	l := res.Latency
	if l == nil || l.Samples != 200 || l.Min <= 0 || l.Min > l.P50 || l.P50 > l.P99 || l.P99 > l.P999 || l.P999 > l.Max {
		t.Errorf("tcp_lat latency %+v", l)
	}
	// The server is free again after each probe.
	if _, err := c.Run(context.Background(), addr, lat); err != nil {
		t.Errorf("second probe: %v", err)
	}
}

func TestServerRefuses(t *testing.T) {
	lim := NewLimiter()
	addr := startServer(t, lim)
	lat := Request{Kind: KindTCPLat, Size: 2, Iterations: 10, Depth: 1, Timeout: 5 * time.Second}

	_, err := client([]byte("wrong-token-0123456789")).Run(context.Background(), addr, lat)
	if !IsUnauthorized(err) {
		t.Errorf("wrong token: %v", err)
	}

	if !lim.TryAcquire() {
		t.Fatal("limiter taken")
	}
	_, err = client(testToken).Run(context.Background(), addr, lat)
	if !IsBusy(err) {
		t.Errorf("busy server: %v", err)
	}
	lim.Release()

	// RDMA on a host without it: the server says why.
	_, err = client(testToken).Run(context.Background(), addr, DefaultRequest(KindWriteBW))
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeUnavailable {
		t.Errorf("RDMA on this host: %v", err)
	} else {
		t.Logf("RDMA probe refused as expected: %v", err)
	}

	// A client that is busy itself does not connect.
	c := client(testToken)
	c.Limiter.TryAcquire()
	if _, err := c.Run(context.Background(), addr, lat); !errors.Is(err, ErrBusy) {
		t.Errorf("busy client: %v", err)
	}
}

// Raw connections: garbage, another version, a silent client.
func TestServerRawPeers(t *testing.T) {
	addr := startServer(t, NewLimiter())
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		var h hello
		if err := expect(c, typeHello, &h); err != nil || len(h.Nonce) != nonceSize {
			t.Fatalf("hello: %+v %v", h, err)
		}
		return c
	}
	c := dial()
	c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	var re *RemoteError
	// A peer that has not authenticated gets the code only, never the
	// parser's words.
	if err := expect(c, typeAck, &ack{}); !errors.As(err, &re) || re.Code != CodeBadRequest || re.Message != "" {
		t.Errorf("garbage: %v", err)
	}
	c.Close()

	c = dial()
	c.Write(append(header("GNP", 9, typeRequest, 2), "{}"...))
	if err := expect(c, typeAck, &ack{}); !errors.As(err, &re) || re.Code != CodeVersion || re.Message != "" {
		t.Errorf("version: %v", err)
	}
	c.Close()

	c = dial()
	writeFrame(c, typeRequest, map[string]any{"kind": KindTCPBW, "surprise": 1})
	if err := expect(c, typeAck, &ack{}); !errors.As(err, &re) || re.Code != CodeBadRequest || re.Message != "" {
		t.Errorf("unknown field: %v", err)
	}
	c.Close()

	c = dial()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	// Silent: the server gives up after its step timeout and closes.
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("server sent data to a silent client")
	}
	if d := time.Since(start); d < time.Second || d > 4*time.Second {
		t.Errorf("silent client dropped after %s, want about the 2s step timeout", d)
	}
	c.Close()
}

func TestBadRequestAfterAuth(t *testing.T) {
	addr := startServer(t, NewLimiter())
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var h hello
	if err := expect(c, typeHello, &h); err != nil {
		t.Fatal(err)
	}
	req := Request{Kind: KindTCPBW, Size: 0, Iterations: 1, Depth: 1, Timeout: time.Second, Nonce: make([]byte, 32)}
	req.MAC = requestMAC(testToken, h.Nonce, req)
	writeFrame(c, typeRequest, req)
	var re *RemoteError
	if err := expect(c, typeAccept, &accept{}); !errors.As(err, &re) || re.Code != CodeBadRequest || !strings.Contains(re.Message, "size 0") {
		t.Errorf("bad request: %v", err)
	}
}

// countingHandler counts WARN records and keeps their messages.
type countingHandler struct {
	mu    sync.Mutex
	warns []string
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return nil
	}
	line := r.Message
	r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	h.mu.Lock()
	h.warns = append(h.warns, line)
	h.mu.Unlock()
	return nil
}

func (h *countingHandler) lines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.warns...)
}

// A flood of wrong-token connections is counted, each one, and logged in
// a few sampled lines that carry the count, not a line each.
func TestUnauthenticatedFloodSampled(t *testing.T) {
	const n = 400
	h := &countingHandler{}
	refused := &Refusals{}
	addr := serve(t, &Server{Limiter: NewLimiter(), Logger: slog.New(h), Refused: refused, RefusalLogInterval: time.Minute})
	wrong := client([]byte("wrong-token-0123456789"))
	lat := Request{Kind: KindTCPLat, Size: 2, Iterations: 10, Depth: 1, Timeout: 5 * time.Second}
	for i := 0; i < n; i++ {
		if _, err := wrong.Run(context.Background(), addr, lat); !IsUnauthorized(err) {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	// The server logs its connection after answering: wait for the count.
	deadline := time.Now().Add(5 * time.Second)
	for refused.Counts()[CodeUnauthorized] < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := refused.Counts(); got[CodeUnauthorized] != n || got[CodeBadRequest] != 0 || got[CodeVersion] != 0 {
		t.Errorf("refusals %v, want %d unauthorized", got, n)
	}
	lines := h.lines()
	if len(lines) > 2 {
		t.Errorf("%d WARN lines for %d refusals, want at most 2 in one interval:\n%s", len(lines), n, strings.Join(lines, "\n"))
	}
	if len(lines) == 0 || !strings.Contains(lines[0], "wrong probe token") {
		t.Errorf("no line says why: %q", lines)
	}
}

// The held count is written when the interval ends, so the log adds up to
// the counter.
func TestRefusalLogInterval(t *testing.T) {
	h := &countingHandler{}
	l := newRefusalLog(slog.New(h), 200*time.Millisecond)
	for i := 0; i < 5; i++ {
		l.refused(CodeUnauthorized, "10.0.0.9:1234", errors.New("wrong probe token"))
	}
	l.refused(CodeBadRequest, "10.0.0.9:1235", errors.New("read frame header: EOF"))
	if got := h.lines(); len(got) != 1 || !strings.Contains(got[0], "count=1 ") {
		t.Fatalf("first refusal: %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(h.lines()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := h.lines()
	if len(got) != 2 || !strings.Contains(got[1], "count=5 bad_request=1 unauthorized=4") || !strings.Contains(got[1], "last_err=read frame header: EOF") {
		t.Fatalf("after the interval: %q", got)
	}
	l.stop()
	if got := h.lines(); len(got) != 2 {
		t.Errorf("stop with nothing held wrote %q", got[2:])
	}
}

// Without RDMA the server still answers the TCP kinds, and tells an
// authenticated client that asks for RDMA that this node has none.
func TestServerWithoutRDMA(t *testing.T) {
	if Available() == nil {
		t.Skip("this machine has RDMA")
	}
	addr := startServer(t, NewLimiter())
	c := client(testToken)
	for _, k := range []string{KindTCPBW, KindTCPLat} {
		req := DefaultRequest(k)
		req.Iterations = 100
		if _, err := c.Run(context.Background(), addr, req); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	// Back to back: the refusal frees the probe slot before the client
	// reads it, so the next request is never answered "busy".
	for i := 0; i < 50; i++ {
		for _, k := range []string{KindWriteBW, KindSendLat} {
			_, err := c.Run(context.Background(), addr, DefaultRequest(k))
			var re *RemoteError
			if !errors.As(err, &re) || re.Code != CodeUnavailable || !strings.Contains(re.Message, "this node has no RDMA") {
				t.Fatalf("request %d, %s: %v", i, k, err)
			}
		}
	}
}
