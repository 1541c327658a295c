package exporters_test

import (
	"testing"
	"time"

	"github.com/gpunode/gpunode/exporters"
	"github.com/gpunode/gpunode/sim"
	"github.com/gpunode/gpunode/telemetry"
)

// A port with an error burst exports healthy 0 and the reason; the others
// healthy 1 and no problem.
func TestRDMAPortHealth(t *testing.T) {
	n := newSimNodeWith(t, "dgx-h100-ib", nil, func(o *telemetry.Options) {
		tr, err := sim.NewTraffic(sim.Node{Root: o.FS.Root(), Runtime: []sim.PortFault{{Device: "mlx5_2", Port: 1,
			Kind: sim.FaultErrorBurst, For: time.Hour, Counter: "symbol_error", PerSecond: 1e9}}}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		o.Traffic = tr
	})
	s := parse(t, n.gather(t, exporters.TelemetryOptions{}))
	if got := find(s, "gpunode_rdma_port_healthy", nil); len(got) != 8 {
		t.Fatalf("%d healthy series, want 8", len(got))
	}
	for _, h := range find(s, "gpunode_rdma_port_healthy", nil) {
		if want := h.Metric["device"] != "mlx5_2"; (h.Value == 1) != want {
			t.Errorf("%v = %v", h.Metric, h.Value)
		}
	}
	if p := find(s, "gpunode_rdma_port_health_problem", nil); len(p) != 1 || p[0].Metric["device"] != "mlx5_2" ||
		p[0].Metric["reason"] != "ErrorBurst" || p[0].Value != 1 {
		t.Errorf("problems %v", p)
	}
}
