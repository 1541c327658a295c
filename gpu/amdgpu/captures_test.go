package amdgpu_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/amdgpu"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
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

// procfs's Vega 10 desktop: card0/device is a directory, not the kernel's
// symlink, so the bus id comes from the uevent's PCI_SLOT_NAME; the board
// has no product name or serial number, and 0x687f is in no table of ours,
// so the GPU has no product name rather than one made up from its id. The
// Intel card1 beside it is not ours.
func TestCaptureVega10(t *testing.T) {
	_, fsys := capture(t, "drm-vega10.tar.gz")
	b := amdgpu.New(fsys)
	inv, err := b.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Devices) != 1 {
		t.Fatalf("%d GPUs: %+v", len(inv.Devices), inv.Devices)
	}
	d := inv.Devices[0]
	want := gpu.Device{Index: 0, Vendor: gpu.AMD, PCIBusID: "0000:09:00.0", PCIDeviceID: "0x687f", UUID: "0123456789abcdef",
		NUMANode: -1, MemoryBytes: 8573157376, VBIOSVersion: "115-D050PIL-100"}
	if l := d.PCIeLink; l == nil || *l != (gpu.PCIeLink{CurrentGen: 3, CurrentWidth: 16, MaxGen: 3, MaxWidth: 16}) {
		t.Errorf("PCIe link %+v", l)
	}
	d.PCIeLink = nil
	if fmt.Sprintf("%+v", d) != fmt.Sprintf("%+v", want) {
		t.Errorf("got  %+v\nwant %+v", d, want)
	}
	samples, err := b.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := samples[0]
	if len(samples) != 1 || !s.Up || s.PCIBusID != "0000:09:00.0" || s.Product != "" || s.UUID != "0123456789abcdef" ||
		s.Utilization == nil || *s.Utilization != 0.04 || len(s.Clocks) != 2 || s.Clocks[0].Hertz != 852e6 || len(s.Errors) != 0 {
		t.Errorf("sample %+v", s)
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

// A card whose device directory is not named by its PCI address and whose
// uevent does not say it either is refused with the reason; it is never
// reported under the name "device".
func TestCaptureNoPCIAddress(t *testing.T) {
	root, fsys := capture(t, "drm-vega10.tar.gz")
	uevent := filepath.Join(root, "sys/class/drm/card0/device/uevent")
	raw, err := os.ReadFile(uevent)
	if err != nil {
		t.Fatal(err)
	}
	write(t, uevent, regexp.MustCompile(`(?m)^PCI_SLOT_NAME=.*\n`).ReplaceAllString(string(raw), ""))
	inv, err := amdgpu.New(fsys).Inventory(context.Background())
	if err == nil || errors.Is(err, source.ErrAbsent) || !strings.Contains(err.Error(), "card0 refused") ||
		!strings.Contains(err.Error(), "PCI_SLOT_NAME") {
		t.Errorf("error %v", err)
	}
	for _, d := range inv.Devices {
		t.Errorf("refused card reported: %+v", d)
	}
}
