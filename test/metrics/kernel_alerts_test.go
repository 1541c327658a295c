package metrics

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// A real Prometheus evaluates the chart's rules on the degraded DGX and
// the good one. The degraded node's kernel log (from before its agent
// started) holds an Xid 79 on GPU 3 and, on mlx5_1 (0000:40:00.0), an mlx5
// health syndrome and a fatal AER error: GPUPCIeErrors and
// KernelReportedDeviceFault fire for the NIC, GPUXIDError for the GPU (the
// Xid is GPU 3's, so not KernelReportedXID), and none of them on the good
// node.
func TestKernelLogAlerts(t *testing.T) {
	cfg := writeConfig(t, "metrics:\n  sampleInterval: 1s\n")
	bad := startAgent(t, "--simulate=dgx-h100-ib-degraded", "--config="+cfg)
	good := startAgent(t, "--simulate=dgx-h100-ib", "--config="+cfg)
	prom := startPrometheusWithNodes(t, chartRules(t), simTarget{"gpu-bad", bad.addr}, simTarget{"gpu-good", good.addr})
	want := []string{"GPUPCIeErrors/0000:40:00.0", "GPUXIDError/", "KernelReportedDeviceFault/0000:40:00.0"}
	var got []string
	prom.waitFor(t, `ALERTS{alertstate="firing",alertname=~"GPUPCIeErrors|GPUXIDError|KernelReported.*"}`, 60*time.Second, func(v model.Vector) bool {
		got = got[:0]
		for _, a := range v {
			if a.Metric["node"] != "gpu-bad" {
				t.Errorf("alert on the good node: %v", a.Metric)
			}
			got = append(got, string(a.Metric["alertname"])+"/"+string(a.Metric["device"]))
		}
		slices.Sort(got)
		return slices.Equal(got, want)
	})
	if v := prom.query(t, `gpunode_gpu_xid_errors_total{node="gpu-bad"}`); len(v) != 1 || v[0].Metric["gpu"] != "3" || v[0].Metric["xid"] != "79" || v[0].Value != 1 {
		t.Errorf("XIDs %v", v)
	}
	if v := prom.query(t, `gpunode_kernel_log_events_total`); len(v) != 2 {
		t.Errorf("kernel log events %v", v)
	}
}
