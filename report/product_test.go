package report_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/report"
	"github.com/gpunode/gpunode/snapshot"
)

// A GPU whose driver names no product (an empty product_name, a device id
// in none of our tables) reads as such, by its PCI device id, in the
// summary and as "-" in the GPU table, never as an empty cell.
func TestUnknownProduct(t *testing.T) {
	s := &snapshot.Snapshot{GPUs: []snapshot.GPU{{Device: gpu.Device{Vendor: gpu.AMD, PCIBusID: "0000:09:00.0", PCIDeviceID: "0x687f", NUMANode: -1}}}}
	var b bytes.Buffer
	if err := report.Text(&b, s, labels.Set{}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "GPUs: 1x GPU of unknown product (PCI device 0x687f)") {
		t.Errorf("summary:\n%s", out)
	}
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Contains(line, "0000:09:00.0") {
			if f := strings.Fields(line); len(f) < 3 || f[1] != "-" || f[2] != "0000:09:00.0" {
				t.Errorf("GPU row %q", line)
			}
		}
	}
}

// GPUs the agent may not open are named once in the summary, apart from
// the GPUs it reads.
func TestGPUsNotVisible(t *testing.T) {
	s := &snapshot.Snapshot{
		GPUDriver: &snapshot.GPUDriver{Backend: "nvml", DriverVersion: "550.54.15", CUDAVersion: "12.4", GPUsNotVisible: []int{3, 6}},
		GPUs:      []snapshot.GPU{{Device: gpu.Device{Vendor: gpu.NVIDIA, Product: "NVIDIA H100 80GB HBM3", PCIBusID: "0000:1b:00.0", NUMANode: -1}}},
	}
	var b bytes.Buffer
	if err := report.Text(&b, s, labels.Set{}); err != nil {
		t.Fatal(err)
	}
	if want := "GPUs: 1x NVIDIA H100 80GB HBM3 (nvml, driver 550.54.15, CUDA 12.4); 2 not visible to the agent (index 3, 6:"; !strings.Contains(b.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, b.String())
	}
	s.GPUs = nil
	b.Reset()
	if err := report.Text(&b, s, labels.Set{}); err != nil {
		t.Fatal(err)
	}
	if want := "GPUs: 2 not visible to the agent"; !strings.Contains(b.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, b.String())
	}
}
