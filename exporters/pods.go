package exporters

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/telemetry"
)

// podFamilies are the per-container series of each GPU or MIG device
// (telemetry.PodUsage). Their label sets are bounded by the device
// plugin's allocations: one series per container holding the device, one
// per pod found running on it without a single holding container, and
// the row with no pod.
type podFamilies struct {
	processes, memUsed, smUtil, memUtil, energy *prometheus.Desc
}

var podUsageLabels = []string{"gpu", "uuid", "gpu_instance", "compute_instance", "namespace", "pod", "container"}

func newPodFamilies() podFamilies {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("gpunode_gpu_pod_"+name, help, podUsageLabels, nil)
	}
	return podFamilies{
		processes: d("processes", "Processes of the container on the GPU or MIG device (gpu_instance and compute_instance empty on a whole GPU); pod=\"\" counts processes of no known pod."),
		memUsed:   d("memory_used_bytes", "Device memory the container's processes hold."),
		smUtil:    d("sm_utilization_ratio", "The container's processes' share of the GPU's time on the SMs over the last sampling round (NVML process samples; absent on MIG devices)."),
		memUtil:   d("memory_utilization_ratio", "The container's processes' share of the GPU's time reading or writing device memory over the last sampling round."),
		energy: d("energy_joules_total", "GPU energy attributed to the container since the agent started: each round's energy times the container's SM share; "+
			"pod=\"\" holds the rest (idle time, processes of no known pod). See the README for the method."),
	}
}

func (p *podFamilies) collect(emit func(prometheus.Metric), f *telemetry.Frame) {
	for _, u := range f.PodUsage {
		gi, ci := "", ""
		if u.GPUInstance >= 0 {
			gi, ci = strconv.Itoa(u.GPUInstance), strconv.Itoa(u.ComputeInstance)
		}
		lvs := []string{strconv.Itoa(u.GPU), u.UUID, gi, ci, u.Namespace, u.Pod, u.Container}
		gauge := func(d *prometheus.Desc, v float64) {
			emit(prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lvs...))
		}
		gauge(p.processes, float64(u.Processes))
		if u.MemoryUsedBytes != nil {
			gauge(p.memUsed, float64(*u.MemoryUsedBytes))
		}
		if u.SMUtilization != nil {
			gauge(p.smUtil, *u.SMUtilization)
		}
		if u.MemoryUtilization != nil {
			gauge(p.memUtil, *u.MemoryUtilization)
		}
		emit(prometheus.MustNewConstMetric(p.energy, prometheus.CounterValue, u.EnergyJoules, lvs...))
	}
}

// processCount is the number of processes on a GPU and its MIG devices;
// ok is false when the backend does not list them.
func processCount(s gpu.Sample) (n int, ok bool) {
	if s.Processes != nil {
		return len(s.Processes), true
	}
	for _, inst := range s.MIG {
		if inst.Processes != nil {
			n, ok = n+len(inst.Processes), true
		}
	}
	return n, ok
}
