package publish

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/labels"
)

func TestBackoff(t *testing.T) {
	b := newBackoff(100*time.Millisecond, time.Second)
	for _, tc := range []struct {
		r    float64
		want time.Duration
	}{
		{0, 50 * time.Millisecond}, {0.999999, 200 * time.Millisecond}, {0, 200 * time.Millisecond},
		{0, 400 * time.Millisecond}, {0, 500 * time.Millisecond}, {0, 500 * time.Millisecond},
	} {
		b.rand = func() float64 { return tc.r }
		if got := b.next(); got.Round(time.Millisecond) != tc.want {
			t.Errorf("attempt %d (rand %v): %v, want %v", b.n, tc.r, got, tc.want)
		}
	}
	for range 100 { // no overflow however long the outage
		if d := b.next(); d < 500*time.Millisecond || d > time.Second {
			t.Fatalf("delay %v after %d attempts", d, b.n)
		}
	}
	b.reset()
	b.rand = func() float64 { return 0 }
	if d := b.next(); d != 50*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
}

func TestConflictKeys(t *testing.T) {
	err := fmt.Errorf("apply: %w", &kubeapi.StatusError{Code: 409, Reason: "Conflict", Causes: []kubeapi.StatusCause{
		{Type: "FieldManagerConflict", Message: `conflict with "nfd-master" using v1`, Field: ".metadata.labels.nvidia.com/gpu.product"},
		{Type: "FieldManagerConflict", Message: `conflict with "kubectl-label"`, Field: ".metadata.labels.gpunode.dev/gpu.count"},
		{Type: "FieldManagerConflict", Message: "garbled", Field: ".metadata.labels.a.io/b"},
		{Type: "FieldManagerConflict", Message: `conflict with "x"`, Field: ".spec.taints"},
		{Type: "FieldValueInvalid", Field: ".metadata.labels.c.io/d"},
	}})
	keys, managers := conflictKeys(err)
	if strings.Join(keys, " ") != "nvidia.com/gpu.product gpunode.dev/gpu.count a.io/b" || strings.Join(managers, " ") != "nfd-master kubectl-label unknown" {
		t.Errorf("keys %q managers %q", keys, managers)
	}
	for _, e := range []error{
		errors.New("plain"),
		&kubeapi.StatusError{Code: 409, Reason: "Conflict", Message: "uid mismatch"},
		&kubeapi.StatusError{Code: 404, Reason: "NotFound", Causes: []kubeapi.StatusCause{{Type: "FieldManagerConflict", Field: ".metadata.labels.a.io/b"}}},
	} {
		if k, _ := conflictKeys(e); len(k) != 0 {
			t.Errorf("%v: keys %v", e, k)
		}
	}
}

func TestNFDFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gpunode")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	l := labels.Set{"gpunode.dev/gpu.count": "8", "llm-d.ai/gpu-node": "true"}
	if wrote, err := WriteNFDFile(path, l, 0, now); err != nil || !wrote {
		t.Fatalf("first write: %v %v", wrote, err)
	}
	b, _ := os.ReadFile(path)
	if want := nfdHeader + "gpunode.dev/gpu.count=8\nllm-d.ai/gpu-node=true\n"; string(b) != want {
		t.Errorf("file:\n%s", b)
	}
	st1, _ := os.Stat(path)
	if wrote, err := WriteNFDFile(path, l, 0, now.Add(time.Hour)); err != nil || wrote {
		t.Errorf("unchanged labels rewrote the file: %v %v", wrote, err)
	}
	l["gpunode.dev/gpu.count"] = "4"
	if wrote, err := WriteNFDFile(path, l, 0, now); err != nil || !wrote {
		t.Fatalf("change: %v %v", wrote, err)
	}
	st2, _ := os.Stat(path)
	if os.SameFile(st1, st2) {
		t.Error("file rewritten in place, not replaced atomically")
	}
	if st2.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st2.Mode())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}

	// With a TTL: the expiry directive NFD honours, refreshed at half-life.
	if wrote, err := WriteNFDFile(path, l, time.Hour, now); err != nil || !wrote {
		t.Fatalf("ttl: %v %v", wrote, err)
	}
	b, _ = os.ReadFile(path)
	if want := nfdHeader + "# +expiry-time=2026-01-02T04:04:05Z\ngpunode.dev/gpu.count=4\nllm-d.ai/gpu-node=true\n"; string(b) != want {
		t.Errorf("file with expiry:\n%s", b)
	}
	if wrote, _ := WriteNFDFile(path, l, time.Hour, now.Add(29*time.Minute)); wrote {
		t.Error("rewritten with more than half the TTL left")
	}
	if wrote, _ := WriteNFDFile(path, l, time.Hour, now.Add(31*time.Minute)); !wrote {
		t.Error("not refreshed with less than half the TTL left")
	}
	if wrote, _ := WriteNFDFile(path, l, 0, now); !wrote {
		t.Error("expiry not dropped when the TTL is switched off")
	}

	if _, err := WriteNFDFile(filepath.Join(dir, "missing", "gpunode"), l, 0, now); err == nil {
		t.Error("no error for a missing directory")
	}
	// Remove deletes only our file.
	foreign := filepath.Join(dir, "gfd")
	os.WriteFile(foreign, []byte("nvidia.com/gpu.count=8\n"), 0o644)
	if err := RemoveNFDFile(foreign); err == nil {
		t.Error("removed a file gpunode did not write")
	}
	if err := RemoveNFDFile(path); err != nil {
		t.Fatal(err)
	}
	if err := RemoveNFDFile(path); err != nil {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzSplitNFDFile(f *testing.F) {
	f.Add([]byte(nfdHeader + "# +expiry-time=2026-01-02T04:04:05Z\na.io/b=c\n"))
	f.Add([]byte("# +expiry-time=garbage\n\x00\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// Splitting removes every directive: a second split finds none and
		// changes nothing.
		body, _ := splitNFDFile(b)
		again, expiry := splitNFDFile(body)
		if !bytes.Equal(again, body) || !expiry.IsZero() {
			t.Fatalf("split(%q) = %q, split again = %q, %v", b, body, again, expiry)
		}
	})
}

func nopLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func gauge(g prometheus.Gauge) float64 { return testutil.ToFloat64(g) }
