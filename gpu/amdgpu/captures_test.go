package amdgpu_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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

// kfdCapture is a captured KFD topology of eight partitioned GPUs.
type kfdCapture struct {
	archive  string
	deviceID string
	buses    []string // the GPUs' PCI addresses, from their KFD location_id
	cus      []int    // compute units of each GPU over all its partitions
}

var kfdCaptures = []kfdCapture{{
	// MI300X in CPX: 38 compute units in each of 8 partitions. The last
	// GPU shows 7 of its 8 partitions, as published.
	archive: "kfd-mi300x-cpx.tar.gz", deviceID: "0x74a1",
	buses: []string{"0000:05:00.0", "0000:27:00.0", "0000:47:00.0", "0000:65:00.0",
		"0000:85:00.0", "0000:a7:00.0", "0000:c7:00.0", "0000:e5:00.0"},
	cus: []int{304, 304, 304, 304, 304, 304, 304, 266},
}, {
	// MI308X in CPX: 20 compute units in each of 4 partitions, the GPUs in
	// two PCI domains.
	archive: "kfd-mi308x-cpx.tar.gz", deviceID: "0x74a2",
	buses: []string{"0000:0a:00.0", "0000:80:00.0", "0000:a4:00.0", "0000:c8:00.0",
		"0001:0b:00.0", "0001:81:00.0", "0001:a5:00.0", "0001:c9:00.0"},
	cus: []int{80, 80, 80, 80, 80, 80, 80, 80},
}}

// addCards gives a KFD capture the amdgpu DRM cards it lacks: one PCI
// function per GPU at the address its partition 0 gives.
func addCards(t *testing.T, root, deviceID string, buses []string) {
	t.Helper()
	for i, bus := range buses {
		dom, _, _ := strings.Cut(bus, ":")
		dev := fmt.Sprintf("/sys/devices/pci%s:00/%s", dom, bus)
		write(t, filepath.Join(root, dev, "vendor"), "0x1002\n")
		write(t, filepath.Join(root, dev, "device"), deviceID+"\n")
		for _, l := range [][2]string{
			{dev + "/driver", "/sys/bus/pci/drivers/amdgpu"},
			{fmt.Sprintf("/sys/class/drm/card%d", i+1), dev + fmt.Sprintf("/drm/card%d", i+1)},
			{dev + fmt.Sprintf("/drm/card%d/device", i+1), dev},
		} {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(root, l[0])), 0o755); err != nil {
				t.Fatal(err)
			}
			// An absolute target is a host path: hostfs resolves it under the root.
			if err := os.Symlink(l[1], filepath.Join(root, l[0])); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(filepath.Join(root, dev, fmt.Sprintf("drm/card%d", i+1)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// Partitioned GPUs on captured KFD topologies: each GPU's compute units
// are summed over its partitions (whose location_id the kernel ORs the
// partition number into, so only partition 0 matches the card's bus id),
// and its XGMI links are the seven other GPUs, not the io_links to its own
// sibling partitions and to every partition of every peer.
func TestCaptureKFDPartitions(t *testing.T) {
	for _, c := range kfdCaptures {
		t.Run(c.archive, func(t *testing.T) {
			root, fsys := capture(t, c.archive)
			addCards(t, root, c.deviceID, c.buses)
			checkKFD(t, fsys, c)
		})
	}
}

// One kernel release (in amd-staging-drm-next, 2024) wrote the partition
// number into bits 28-31 of location_id instead of the function bits. No
// capture of that shape is published: this test derives it from the
// MI300X capture by moving each node's partition number there.
func TestCaptureKFDPartitionHighBits(t *testing.T) {
	c := kfdCaptures[0]
	root, fsys := capture(t, c.archive)
	addCards(t, root, c.deviceID, c.buses)
	nodes, err := filepath.Glob(filepath.Join(root, "sys/class/kfd/kfd/topology/nodes/*/properties"))
	if err != nil {
		t.Fatal(err)
	}
	loc := regexp.MustCompile(`(?m)^location_id (\d+)$`)
	moved := 0
	for _, p := range nodes {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out := loc.ReplaceAllStringFunc(string(raw), func(m string) string {
			v, _ := strconv.ParseUint(strings.TrimPrefix(m, "location_id "), 10, 64)
			if v&7 != 0 {
				moved++
			}
			return fmt.Sprintf("location_id %d", v&^7|(v&7)<<28)
		})
		write(t, p, out)
	}
	if moved != 55 {
		t.Fatalf("moved the partition of %d nodes, want 55", moved)
	}
	checkKFD(t, fsys, c)
}

func checkKFD(t *testing.T, fsys hostfs.FS, c kfdCapture) {
	t.Helper()
	inv, err := amdgpu.New(fsys).Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Devices) != len(c.buses) {
		t.Fatalf("%d GPUs, want %d", len(inv.Devices), len(c.buses))
	}
	for i, d := range inv.Devices {
		if d.PCIBusID != c.buses[i] || d.ComputeUnits != c.cus[i] {
			t.Errorf("gpu %d: %s with %d compute units, want %s with %d", i, d.PCIBusID, d.ComputeUnits, c.buses[i], c.cus[i])
		}
		if ic := d.Interconnect; ic == nil || *ic != (gpu.Interconnect{Kind: gpu.XGMI, Links: 7, Active: 7}) {
			t.Errorf("gpu %d (%s) interconnect %+v, want 7 XGMI links", i, d.PCIBusID, ic)
		}
	}
}
