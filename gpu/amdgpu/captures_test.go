package amdgpu_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/gpunode/gpunode/gpu/amdgpu"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/testsupport"
)

// Tests on sysfs captured from real machines by other projects; where they
// come from and under which licence is in testdata/captures/README.md.

// capture unpacks a captured tree into a fresh host root and loads the
// amdgpu module there (a capture of one class directory lacks
// /sys/module).
func capture(t *testing.T, archive string) (root string, fsys hostfs.FS) {
	t.Helper()
	root = shmDir(t)
	testsupport.Untar(t, filepath.Join("testdata", "captures", archive), root)
	if err := os.MkdirAll(filepath.Join(root, "sys/module/amdgpu"), 0o755); err != nil {
		t.Fatal(err)
	}
	fsys, err := hostfs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return root, fsys
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The kernel writes nothing to unique_id when the id is 0 (amdgpu_pm.c
// amdgpu_get_unique_id; APUs and SR-IOV virtual functions have none): an
// empty optional attribute is absent, not a failure of the source. Derived
// from the kernel source; the capture itself has an id.
func TestCaptureEmptyUniqueID(t *testing.T) {
	root, fsys := capture(t, "drm-vega10.tar.gz")
	write(t, filepath.Join(root, "sys/class/drm/card0/device/unique_id"), "")
	b := amdgpu.New(fsys)
	inv, err := b.Inventory(context.Background())
	if err != nil || len(inv.Devices) != 1 || inv.Devices[0].UUID != "" || len(inv.Devices[0].Errors) != 0 {
		t.Fatalf("inventory %+v: %v", inv, err)
	}
	if s, err := b.Sample(context.Background()); err != nil || len(s) != 1 || !s[0].Up || s[0].UUID != "" {
		t.Errorf("sample %+v: %v", s, err)
	}
}
