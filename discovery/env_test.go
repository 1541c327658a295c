package discovery

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/config"
)

func TestStaleSimTreesSwept(t *testing.T) {
	base := t.TempDir()
	t.Setenv("TMPDIR", base)
	// A PID far above pid_max cannot be alive.
	stale := filepath.Join(base, simPrefix+"2147483647-dgx-h100-ib-123")
	live := filepath.Join(base, fmt.Sprintf("%s%d-cpu-only-456", simPrefix, os.Getpid()))
	other := filepath.Join(base, "unrelated")
	for _, d := range []string{stale, live, other} {
		if err := os.MkdirAll(filepath.Join(d, "sys"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env, err := Open(config.Default(), "cpu-only")
	if err != nil {
		t.Fatal(err)
	}
	root := env.FS.Root()
	if !strings.HasPrefix(filepath.Base(root), fmt.Sprintf("%s%d-cpu-only-", simPrefix, os.Getpid())) {
		t.Errorf("tree name %s", root)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Error("a dead agent's tree was not removed")
	}
	for _, d := range []string{live, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed: %v", d, err)
		}
	}
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Error("Close left the tree behind")
	}
}
