package report_test

import (
	"slices"
	"testing"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/report"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/topology"
)

// A GB200 tray's summary names its NVLink clique (or why there is none)
// and its IMEX channels and daemon; an HGX node says neither.
func TestNVLinkDomainSummary(t *testing.T) {
	const c = "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.32766"
	tray := func(second *gpu.Fabric) *snapshot.Snapshot {
		g := func(i int, f *gpu.Fabric) snapshot.GPU {
			return snapshot.GPU{Device: gpu.Device{Index: i, Vendor: gpu.NVIDIA, Product: "NVIDIA GB200", NUMANode: -1, Fabric: f}}
		}
		return &snapshot.Snapshot{
			GPUs: []snapshot.GPU{g(0, &gpu.Fabric{State: gpu.FabricCompleted, Status: "success", Clique: c}), g(1, second)},
			Host: snapshot.Host{IMEX: &topology.IMEX{ChannelMajor: 234, Channels: []int{0}, Config: true, DomainNodes: 18, Daemon: true}},
		}
	}
	for _, tc := range []struct {
		name string
		s    *snapshot.Snapshot
		want []string
	}{
		{"one clique", tray(&gpu.Fabric{State: gpu.FabricCompleted, Status: "success", Clique: c}),
			[]string{"NVLink clique: " + c, "IMEX: channels 0, nvidia-imex running, 18 nodes in nodes_config.cfg"}},
		{"registering", tray(&gpu.Fabric{State: gpu.FabricInProgress}),
			[]string{"NVLink clique: none (GPU 1 fabric registration in-progress)", "IMEX: channels 0, nvidia-imex running, 18 nodes in nodes_config.cfg"}},
	} {
		got := report.Summary(tc.s)
		for _, w := range tc.want {
			if !slices.Contains(got, w) {
				t.Errorf("%s: summary lacks %q:\n%q", tc.name, w, got)
			}
		}
	}

	// Channels not created yet, daemon not seen.
	s := tray(nil)
	s.Host.IMEX = &topology.IMEX{ChannelMajor: 234}
	if got := report.Summary(s); !slices.Contains(got, "IMEX: no channel created (driver has nvidia-caps-imex-channels), nvidia-imex not seen") {
		t.Errorf("bare IMEX: %q", got)
	}
	// HGX: completed fabric, zero cluster UUID, no IMEX.
	s = tray(nil)
	s.GPUs[0].Fabric.Clique, s.Host.IMEX = "", nil
	for _, line := range report.Summary(s) {
		if len(line) >= 6 && (line[:6] == "NVLink" || line[:5] == "IMEX:") {
			t.Errorf("HGX summary has %q", line)
		}
	}
}
