// Package testsupport holds what many packages' tests share: a clock the
// test moves, and discovery on a simulated node. Only tests import it.
package testsupport

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/snapshot"
)

// Clock is a clock the test moves; safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock set to t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// SimEnv opens the simulated node name with the default configuration
// and closes it when the test ends.
func SimEnv(t testing.TB, name string) *discovery.Env {
	t.Helper()
	return OpenEnv(t, config.Default(), name)
}

// OpenEnv opens the environment cfg and simulate describe and closes it
// when the test ends.
func OpenEnv(t testing.TB, cfg config.Config, simulate string) *discovery.Env {
	t.Helper()
	env, err := discovery.Open(cfg, simulate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Error(err)
		}
	})
	return env
}

// SourceTimeout is the per-source timeout of test discoveries: long
// enough for a loaded CI machine.
const SourceTimeout = 10 * time.Second

// DiscoverSim runs discovery once on the simulated node name.
func DiscoverSim(t testing.TB, name string) *snapshot.Snapshot {
	t.Helper()
	return discovery.New(SimEnv(t, name), SourceTimeout).Discover(context.Background())
}

// Untimed clears a snapshot's run-dependent timings (when it was taken,
// how long each source ran) so its output compares byte for byte.
func Untimed(s *snapshot.Snapshot, takenAt time.Time) *snapshot.Snapshot {
	s.TakenAt = takenAt
	for i := range s.Sources {
		s.Sources[i].Duration, s.Sources[i].DurationSeconds = 0, 0
	}
	return s
}

// Eventually polls cond until it returns nil and fails the test with
// cond's last error after 20 s: long enough for a loaded CI machine.
func Eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Untar unpacks the gzip-compressed tar archive (a captured host tree, see
// gpu/amdgpu/testdata/captures) under dir: directories, regular files
// (writable, whatever mode they were captured with, so tests can change
// them) and symlinks as written. Entries that would land outside dir fail
// the test.
func Untar(t testing.TB, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", archive, err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", archive, err)
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			t.Fatalf("%s: entry %q leaves the tree", archive, h.Name)
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, 0o644)
			}
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		default:
			t.Fatalf("%s: entry %q of type %c", archive, h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
