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
// The configured pod labels (podlabels) follow the container; they add
// no series of their own, but a pod relabelled while it runs starts new
// ones.
type podFamilies struct {
	processes, memUsed, smUtil, memUtil, energy *prometheus.Desc
	dropped                                     *prometheus.Desc
}

var podUsageLabels = []string{"gpu", "uuid", "gpu_instance", "compute_instance", "namespace", "pod", "container"}

// newPodFamilies makes the families with the names of the configured
// pod labels.
func newPodFamilies(podLabels []string) podFamilies {
	labels := append(append([]string{}, podUsageLabels...), podLabels...)
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("gpunode_gpu_pod_"+name, help, labels, nil)
	}
	return podFamilies{
		processes: d("processes", "Processes of the container on the GPU or MIG device (gpu_instance and compute_instance empty on a whole GPU); pod=\"\" counts processes of no known pod."),
		memUsed:   d("memory_used_bytes", "Device memory the container's processes hold."),
		smUtil:    d("sm_utilization_ratio", "The container's processes' share of the GPU's time on the SMs over the last sampling round (NVML process samples; absent on MIG devices)."),
		memUtil:   d("memory_utilization_ratio", "The container's processes' share of the GPU's time reading or writing device memory over the last sampling round."),
		energy: d("energy_joules_total", "GPU energy attributed to the container since the agent started: each round's energy times the container's SM share; "+
			"pod=\"\" holds the rest (idle time, processes of no known pod). See the README for the method."),
		dropped: prometheus.NewDesc("gpunode_gpu_pod_label_values_dropped_total",
			"Pods whose value of a configured pod label was left empty on the GPU series because the label had metrics.podLabels.maxValuesPerLabel other values on the node; each pod counted once per label.",
			[]string{"label"}, nil),
	}
}

func (p *podFamilies) collect(emit func(prometheus.Metric), f *telemetry.Frame) {
	for _, u := range f.PodUsage {
		gi, ci := "", ""
		if u.GPUInstance >= 0 {
			gi, ci = strconv.Itoa(u.GPUInstance), strconv.Itoa(u.ComputeInstance)
		}
		lvs := append([]string{strconv.Itoa(u.GPU), u.UUID, gi, ci, u.Namespace, u.Pod, u.Container}, f.PodLabels.Values(u.Namespace, u.Pod)...)
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
	if v := f.PodLabels; v != nil {
		for i, l := range v.Labels {
			emit(prometheus.MustNewConstMetric(p.dropped, prometheus.CounterValue, float64(v.Dropped[i]), l.Name))
		}
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
