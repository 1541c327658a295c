package exporters

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/telemetry"
)

// kernelFamilies are the kernel log's series. XIDs of known GPUs are not
// among them: they are gpunode_gpu_xid_errors_total, one series with the
// GPU library's.
type kernelFamilies struct {
	events, records, lost *prometheus.Desc
}

func newKernelFamilies() kernelFamilies {
	return kernelFamilies{
		events: prometheus.NewDesc("gpunode_kernel_log_events_total",
			"Device faults the kernel log reported since the agent started (on its first start since boot, those logged before it ran too), "+
				"by kind (sxid, fell_off_bus, mlx5_health, aer, amdgpu_ras, and xid for a bus id that is no GPU the agent knows), "+
				"PCI device, code (SXid, mlx5 syndrome, Xid; 0 if none) and severity (aer, sxid and amdgpu_ras: corrected, nonfatal, fatal).",
			[]string{"kind", "device", "code", "severity"}, nil),
		records: prometheus.NewDesc("gpunode_kernel_log_records_total",
			"Kernel log records the agent read since it started (a restart goes on after the last record it read before, within one boot).", nil, nil),
		lost: prometheus.NewDesc("gpunode_kernel_log_records_lost_total",
			"Kernel log records overwritten in the kernel's buffer before the agent read them: faults in them are missed.", nil, nil),
	}
}

func (k kernelFamilies) collect(emit func(prometheus.Metric), f *telemetry.Frame) {
	if f.KernelLog != nil {
		emit(prometheus.MustNewConstMetric(k.records, prometheus.CounterValue, float64(f.KernelLog.Records)))
		emit(prometheus.MustNewConstMetric(k.lost, prometheus.CounterValue, float64(f.KernelLog.Lost)))
	}
	for _, e := range f.Kernel {
		emit(prometheus.MustNewConstMetric(k.events, prometheus.CounterValue, float64(e.Count),
			string(e.Kind), e.Device, strconv.FormatUint(e.Code, 10), e.Severity))
	}
}
