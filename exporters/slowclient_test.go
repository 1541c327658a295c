package exporters_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/gpunode/gpunode/exporters"
	"github.com/gpunode/gpunode/snapshot"
)

// Clients that send GET /metrics and never read the answer (issue 14: 500
// of them took the agent from 50 to 184 MB) hold only a bounded number of
// responses; a scrape during the attack is answered at once (200, or 503
// while the slots are taken), and every slot comes back when they go.
func TestSlowClientsHoldBoundedMemory(t *testing.T) {
	n := newSimNode(t, "dgx-h100-ib")
	snap := func() *snapshot.Snapshot { return n.snap }
	reg, err := exporters.NewRegistry(exporters.NewAgentCollector(snap, exporters.BuildInfo{}))
	if err != nil {
		t.Fatal(err)
	}
	part, err := exporters.NewTelemetryPart(n.sampler.Latest, snap, exporters.TelemetryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	h, err := exporters.NewHandler(reg, exporters.Health{Live: func() error { return nil }, Ready: func() error { return nil }}, "test", quiet, part)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := exporters.Listen("127.0.0.1:0", "", h, quiet)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	addr := srv.Addr().String()

	// HeapSys is what the heap took from the OS, which the Go runtime
	// gives back only slowly: it keeps the peak of the attack, which is
	// what pushed the agent over its memory limit.
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapSys
	}
	scrape := func() int {
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatalf("scrape during the attack: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := scrape(); code != http.StatusOK {
		t.Fatalf("scrape before the attack: %d", code)
	}
	base := heap()

	// Each response is about 200 KB uncompressed and takes as much again
	// to build; with a tiny receive window the server's writes may also
	// block until the write deadline.
	const attackers = 100
	// The receive buffer is set before connecting, so the window the
	// client advertises stays small.
	dialer := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
		return errors.Join(err, serr)
	}}
	var conns []net.Conn
	for range attackers {
		c, err := dialer.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns { // all at once, as an attacker sends them
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n")
	}
	time.Sleep(2 * time.Second) // every request reaches a handler
	grown := int64(heap()) - int64(base)
	if code := scrape(); code != http.StatusOK && code != http.StatusServiceUnavailable {
		t.Errorf("scrape during the attack: %d", code)
	}
	t.Logf("heap grew by %d KiB", grown>>10)
	// 100 responses built at once take 40 MB and more; 8 slots, under 4 MB.
	if grown > 10<<20 {
		t.Errorf("heap grew by %d MiB under %d clients that do not read", grown>>20, attackers)
	}
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(15 * time.Second)
	for scrape() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("scrapes still refused after the slow clients went")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
