package metrics

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// A real Prometheus evaluates the chart's RDMA port health alerts on the
// degraded DGX, whose ports change while it runs (20 s in: mlx5_3's link
// drops for 10 s and retrains, mlx5_4 takes a symbol error burst), and on
// the good one. RDMAPortDown and RDMALinkFlapping fire for mlx5_3,
// RDMAPortErrors for mlx5_4 (an error burst) and for mlx5_6 (its cable
// came up on 2 of 4 lanes before the agent started: RateDegraded against
// its siblings, for good), nothing else and nothing on the good node; with
// a short window and quiet time every runtime alert resolves and every
// port but mlx5_6 is healthy again. The node is InfiniBand: RoCEPauseStorm
// stays quiet (telemetry's TestRDMAHealthPauseStorm storms a RoCE port).
func TestRDMAPortHealthAlerts(t *testing.T) {
	cfg := writeConfig(t, "metrics:\n  sampleInterval: 1s\n  rdmaHealth:\n    window: 3s\n    quiet: 10s\n")
	bad := startAgent(t, "--simulate=dgx-h100-ib-degraded", "--config="+cfg)
	good := startAgent(t, "--simulate=dgx-h100-ib", "--config="+cfg)
	prom := startPrometheusWithNodes(t, chartRules(t), simTarget{"gpu-bad", bad.addr}, simTarget{"gpu-good", good.addr})
	const firing = `ALERTS{alertstate="firing",alertname=~"RDMAPort.*|RDMALink.*|RoCE.*"}`
	want := []string{"RDMALinkFlapping/mlx5_3", "RDMAPortDown/mlx5_3", "RDMAPortErrors/mlx5_4", "RDMAPortErrors/mlx5_6"}
	seen := map[string]bool{}
	check := func(v model.Vector) {
		for _, a := range v {
			name := fmt.Sprintf("%s/%s", a.Metric["alertname"], a.Metric["device"])
			if a.Metric["node"] != "gpu-bad" || !slices.Contains(want, name) {
				t.Errorf("unexpected alert %v", a.Metric)
			}
			seen[name] = true
		}
	}
	prom.waitFor(t, firing, 90*time.Second, func(v model.Vector) bool {
		check(v)
		return len(seen) == len(want)
	})
	if got := slices.Sorted(maps.Keys(seen)); !slices.Equal(got, want) {
		t.Fatalf("alerts seen %v, want %v", got, want)
	}
	if v := prom.query(t, `gpunode_rdma_port_health_problem{node="gpu-bad",device="mlx5_4"}`); len(v) != 1 || v[0].Metric["reason"] != "ErrorBurst" {
		t.Errorf("mlx5_4's problems %v", v)
	}
	// Recovery: the ports are quiet after 30 s; the burst leaves the 3 s
	// window and is held 10 s more.
	onlyRate := func(v model.Vector) bool {
		return len(v) == 1 && v[0].Metric["device"] == "mlx5_6"
	}
	prom.waitFor(t, firing, 90*time.Second, func(v model.Vector) bool {
		check(v)
		return onlyRate(v)
	})
	prom.waitFor(t, `gpunode_rdma_port_healthy == 0`, 10*time.Second, onlyRate)
	if v := prom.query(t, `gpunode_rdma_port_health_problem{node="gpu-bad",device="mlx5_6"}`); len(v) != 1 || v[0].Metric["reason"] != "RateDegraded" {
		t.Errorf("mlx5_6's problems %v", v)
	}
	if v := prom.query(t, `count(gpunode_rdma_port_healthy == 1)`); len(v) != 1 || v[0].Value != 15 {
		t.Errorf("healthy ports after recovery: %v", v)
	}
}
