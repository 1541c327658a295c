package metrics

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// A real Prometheus scrapes the agent on the simulated MI300X node: the
// AMD GPUs come through the amdgpu sysfs backend with the same series as
// NVIDIA ones, XGMI links carry kind="xgmi", and the energy and XGMI
// counters the simulated gpu_metrics tables advance behave under rate().
func TestPrometheusScrapesMI300X(t *testing.T) {
	cfg := writeConfig(t, "metrics:\n  sampleInterval: 1s\n")
	a := startAgent(t, "--simulate=mi300x-roce", "--config="+cfg)
	prom := startPrometheus(t, a.addr)
	prom.waitFor(t, `count_over_time(gpunode_gpu_energy_joules_total{gpu="0"}[1m])`, 60*time.Second, func(v model.Vector) bool {
		return len(v) == 1 && v[0].Value >= 16
	})
	for expr, want := range map[string]float64{
		`count(gpunode_gpu_info{architecture="cdna3",model="AMD Instinct MI300X"})`: 8,
		`count(gpunode_gpu_up == 1)`:                                 8,
		`sum(gpunode_gpu_interconnect_links_active{kind="xgmi"})`:    8 * 7,
		`count(gpunode_gpu_interconnect_links_active{kind!="xgmi"})`: 0,
		`count(gpunode_gpu_memory_total_bytes == 206141652992)`:      8,
		`gpunode_source_up{source="amdgpu-sample"}`:                  1,
		`gpunode_source_up{source="amdgpu"}`:                         1,
		`count(gpunode_rdma_port_info{link_layer="Ethernet"})`:       8,
	} {
		v := prom.query(t, expr)
		got := 0.0
		if len(v) == 1 {
			got = float64(v[0].Value)
		}
		if got != want {
			t.Errorf("%s = %v, want %v", expr, v, want)
		}
	}

	energyRateIsPower(t, prom, 8)

	// Every peer link reads 24 GB/s and writes 22 GB/s in the simulation.
	for metric, perLink := range map[string]float64{
		"gpunode_gpu_interconnect_receive_bytes_total":  24e9,
		"gpunode_gpu_interconnect_transmit_bytes_total": 22e9,
	} {
		v := prom.query(t, fmt.Sprintf(`rate(%s{kind="xgmi"}[%s])`, metric, window))
		if len(v) != 8*7 {
			t.Fatalf("%d links in rate(%s)", len(v), metric)
		}
		for _, s := range v {
			if d := float64(s.Value)/perLink - 1; d < -0.08 || d > 0.08 {
				t.Errorf("%s gpu %s link %s: %.4g B/s, the traffic is %.4g", metric, s.Metric["gpu"], s.Metric["link"], float64(s.Value), perLink)
			}
		}
	}
	if got := single(t, prom.query(t, `sum(resets(gpunode_gpu_interconnect_receive_bytes_total[1m]))`), "resets"); got != 0 {
		t.Errorf("XGMI counters reset %v times", got)
	}
}
