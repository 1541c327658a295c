package amdsmi

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/amdgpu"
	"github.com/gpunode/gpunode/internal/hostfs"
)

// With AMD SMI the throttle reasons come from the GPU's gpu_metrics table
// under the host root, as with amdgpu sysfs: GPU 0's HBM thermal residency
// rises between two rounds, so it holds; GPU 1 has no table and no
// reasons.
func TestThrottleReasonsBesideAMDSMI(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "sys/bus/pci/devices/0000:15:00.0")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	offsets, size, ok := amdgpu.Layout(1, 8)
	if !ok {
		t.Fatal("no 1.8 layout")
	}
	write := func(hbm uint32) {
		b := bytes.Repeat([]byte{0xff}, size)
		binary.LittleEndian.PutUint16(b, uint16(size))
		b[2], b[3] = 1, 8
		for _, f := range []string{"accumulation_counter", "ppt_residency_acc", "prochot_residency_acc", "socket_thm_residency_acc", "vr_thm_residency_acc"} {
			binary.LittleEndian.PutUint32(b[offsets[f]:], 0)
		}
		binary.LittleEndian.PutUint32(b[offsets["hbm_thm_residency_acc"]:], hbm)
		if err := os.WriteFile(filepath.Join(dir, "gpu_metrics"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fsys, err := hostfs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(fakeLib(t), WithHostFS(fsys))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	write(100)
	first, err := b.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	write(600)
	second, err := b.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if first[0].ClockEventReasons != nil || second[1].ClockEventReasons != nil {
		t.Errorf("reasons on the first round or without a table: %v, %v", first[0].ClockEventReasons, second[1].ClockEventReasons)
	}
	want := []gpu.ClockEventReason{{Reason: "hbm_thermal", Active: true}, {Reason: "ppt"}, {Reason: "prochot"}, {Reason: "socket_thermal"}, {Reason: "vr_thermal"}}
	if got := second[0].ClockEventReasons; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[4] != want[4] {
		t.Errorf("GPU 0 reasons %v, want %v", got, want)
	}
}
