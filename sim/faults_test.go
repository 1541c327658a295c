package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/rdma"
)

func read(t *testing.T, fsys hostfs.FS, p string) string {
	t.Helper()
	s, err := fsys.ReadString(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The faults are where discovery reads them, in the tree and in the NVML
// description alike, and nowhere else.
func TestPlantedFaults(t *testing.T) {
	build := func(name string) (Node, hostfs.FS) {
		n, err := Build(name, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		fsys, err := hostfs.New(n.Root)
		if err != nil {
			t.Fatal(err)
		}
		return n, fsys
	}
	n, fsys := build("dgx-h100-ib-degraded")
	for i, g := range n.NVIDIA.GPUs {
		speed := read(t, fsys, "/sys/bus/pci/devices/"+g.PCIBusID+"/current_link_speed")
		width := read(t, fsys, "/sys/bus/pci/devices/"+g.PCIBusID+"/current_link_width")
		degraded := i == 2
		if degraded != (speed == "16.0 GT/s PCIe" && width == "8" && g.PCIeGen == 4 && g.PCIeWidth == 8) ||
			!degraded && (speed != "32.0 GT/s PCIe" || width != "16" || g.PCIeGen != 0) {
			t.Errorf("GPU %d: sysfs %s x%s, NVML Gen%d x%d", i, speed, width, g.PCIeGen, g.PCIeWidth)
		}
		if want := map[int][]int{5: {7}}[i]; !slices.Equal(g.NVLinkDown, want) {
			t.Errorf("GPU %d: NVLinks down %v, want %v", i, g.NVLinkDown, want)
		}
		if throttled := len(g.Throttled) > 0; throttled != (i == 6) ||
			throttled && (g.Throttled[0].From != DegradedThrottleFrom || g.Throttled[0].Reasons != gonvml.ClocksThrottleReasonHwThermalSlowdown) {
			t.Errorf("GPU %d: throttled %+v", i, g.Throttled)
		}
	}
	for i := range 8 {
		want := map[bool]string{true: "200 Gb/sec (2X NDR)", false: "400 Gb/sec (4X NDR)"}[i == 6]
		if got := read(t, fsys, fmt.Sprintf("/sys/class/infiniband/mlx5_%d/ports/1/rate", i)); got != want {
			t.Errorf("mlx5_%d rate %q", i, got)
		}
	}

	// h100-roce: ECN on every priority of every port (mlx5's default),
	// PFC on priority 3 of the GPU-side ports; lossy: neither on those.
	for _, name := range []string{"h100-roce", "h100-roce-lossy"} {
		n, fsys := build(name)
		lossy := name == "h100-roce-lossy"
		for ifname, backend := range map[string]bool{"enp24s0np0": true, "enp220s0np0": true, "enp43s0np0": false} {
			wantECN, wantPFC := "1", uint8(0)
			if backend {
				wantPFC = 1 << 3
				if lossy {
					wantECN, wantPFC = "0", 0
				}
			}
			for _, side := range []string{"roce_np", "roce_rp"} {
				for prio := range 8 {
					if got := read(t, fsys, fmt.Sprintf("/sys/class/net/%s/ecn/%s/enable/%d", ifname, side, prio)); got != wantECN {
						t.Errorf("%s %s: ECN %s/%d = %s, want %s", name, ifname, side, prio, got, wantECN)
					}
				}
			}
			if got, err := n.PFC.PFCEnabled(context.Background(), ifname); err != nil || got != wantPFC {
				t.Errorf("%s %s: PFC %08b, %v; want %08b", name, ifname, got, err, wantPFC)
			}
		}
		if _, err := n.PFC.PFCEnabled(context.Background(), "lo"); !errors.Is(err, rdma.ErrNoDCB) {
			t.Errorf("%s: lo has DCB: %v", name, err)
		}
		// Writable like DCB on a host: what is set is what is read next;
		// an interface without DCB stays without it.
		if err := n.PFC.SetPFC(context.Background(), "enp24s0np0", 0b00011000); err != nil {
			t.Errorf("%s: set PFC: %v", name, err)
		}
		if got, err := n.PFC.PFCEnabled(context.Background(), "enp24s0np0"); err != nil || got != 0b00011000 {
			t.Errorf("%s: PFC after set %08b, %v", name, got, err)
		}
		if err := n.PFC.SetPFC(context.Background(), "lo", 8); !errors.Is(err, rdma.ErrNoDCB) {
			t.Errorf("%s: set PFC on lo: %v", name, err)
		}
	}
}
