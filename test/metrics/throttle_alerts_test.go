package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// A real Prometheus evaluates GPUThrottled on the degraded DGX, whose GPU 6
// goes into hardware thermal slowdown 10 s into the run
// (sim.DegradedThrottleFrom), and on the good one. With throttleAfter at
// 1 s the agent reports GPU 6 Degraded a round later: the alert fires for
// GPU 6 and that reason alone, the GPU stays healthy, and the good node's
// GPUs report the reasons with 0 and fire nothing.
func TestThrottleAlert(t *testing.T) {
	cfg := writeConfig(t, "metrics:\n  sampleInterval: 1s\n  health:\n    throttleAfter: 1s\n")
	bad := startAgent(t, "--simulate=dgx-h100-ib-degraded", "--config="+cfg)
	good := startAgent(t, "--simulate=dgx-h100-ib", "--config="+cfg)
	prom := startPrometheusWithNodes(t, chartRules(t), simTarget{"gpu-bad", bad.addr}, simTarget{"gpu-good", good.addr})
	prom.waitFor(t, `ALERTS{alertstate="firing",alertname="GPUThrottled"}`, 90*time.Second, func(v model.Vector) bool {
		for _, a := range v {
			if a.Metric["node"] != "gpu-bad" || a.Metric["gpu"] != "6" || a.Metric["reason"] != "hw_thermal_slowdown" {
				t.Errorf("GPUThrottled on %v", a.Metric)
			}
		}
		return len(v) == 1
	})
	if v := prom.query(t, `gpunode_gpu_degraded == 1`); len(v) != 1 || v[0].Metric["gpu"] != "6" {
		t.Errorf("degraded series %v", v)
	}
	if v := prom.query(t, `gpunode_gpu_degraded{node="gpu-good"}`); len(v) != 8*4 {
		t.Errorf("the good node has %d degraded series, want 8 GPUs x 4 reasons", len(v))
	}
	if v := prom.query(t, `gpunode_gpu_healthy{node="gpu-bad",gpu="6"}`); len(v) != 1 || v[0].Value != 1 {
		t.Errorf("GPU 6 healthy %v: a throttled GPU stays healthy", v)
	}
}
