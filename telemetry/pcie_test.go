package telemetry

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/health"
)

func pcieDev(f *Frame, addr string) *PCIeDevice {
	for i := range f.PCIe {
		if f.PCIe[i].Address == addr {
			return &f.PCIe[i]
		}
	}
	return nil
}

// The degraded DGX's AER counters and links, read every round: GPU 2's
// link (Gen4 x8) is downtrained; mlx5_1's fatal AER count from before the
// agent started is its baseline, not a new fault. Counts that grow while
// the agent runs make the GPU (or every GPU below a bridge) unhealthy; a
// NIC link that narrows at run time is found, and found again fixed.
func TestPCIeHealth(t *testing.T) {
	n := newNode(t, "dgx-h100-ib-degraded")
	s := New(n.options())
	ctx := context.Background()
	s.Round(ctx)
	f := s.Latest()
	if st := status(f, SourcePCIe); st.State != "ok" || st.Message != "" {
		t.Fatalf("source %+v", st)
	}
	g0, g1, g2 := f.GPUs[0], f.GPUs[1], f.GPUs[2]
	if d := pcieDev(f, g2.PCIBusID); d == nil || !d.Downtrained || d.Role != "gpu" {
		t.Errorf("GPU 2 %+v", d)
	}
	if d := pcieDev(f, g0.PCIBusID); d == nil || d.Downtrained || d.AER == nil || d.AER.Fatal != 0 {
		t.Errorf("GPU 0 %+v", d)
	}
	const hca = "0000:40:00.0"
	nic := pcieDev(f, hca)
	if nic == nil || nic.Role != "nic" || nic.AER.Fatal != 1 || nic.FatalIncrease != 0 {
		t.Fatalf("mlx5_1 %+v", nic)
	}
	var up *PCIeDevice
	for i := range f.PCIe {
		if d := &f.PCIe[i]; d.Role == "upstream" && len(d.Below) > 0 && strings.Contains(strings.Join(d.Below, " "), g1.PCIBusID) {
			up = d
		}
	}
	if up == nil {
		t.Fatalf("no upstream port above GPU 1 in %+v", f.PCIe)
	}
	for i, h := range f.Health {
		if !h.Healthy {
			t.Errorf("GPU %d unhealthy before any new AER error: %+v", i, h)
		}
	}

	root := n.Root
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(root+path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("/sys/bus/pci/devices/"+g0.PCIBusID+"/aer_dev_fatal", "MalfTLP 2\nTOTAL_ERR_FATAL 2\n")
	write("/sys/bus/pci/devices/"+up.Address+"/aer_dev_nonfatal", "CmpltTO 1\nTOTAL_ERR_NONFATAL 1\n")
	write("/sys/bus/pci/devices/"+hca+"/current_link_width", "8\n")
	s.Round(ctx)
	f = s.Latest()
	if h := f.Health[0]; h.Healthy || h.Problems[0].Reason != health.ReasonPCIeError || !strings.Contains(h.Problems[0].Message, "2 fatal, 0 non-fatal on the GPU") {
		t.Errorf("GPU 0 %+v", h)
	}
	if h := f.Health[1]; h.Healthy || !strings.Contains(h.Problems[0].Message, "0 fatal, 1 non-fatal on its upstream port "+up.Address) {
		t.Errorf("GPU 1 %+v", h)
	}
	if d := pcieDev(f, hca); !d.Downtrained {
		t.Errorf("mlx5_1 at x8: %+v", d)
	}
	write("/sys/bus/pci/devices/"+hca+"/current_link_width", "16\n")
	s.Round(ctx)
	if d := pcieDev(s.Latest(), hca); d.Downtrained {
		t.Errorf("mlx5_1 back at x16: %+v", d)
	}
}
