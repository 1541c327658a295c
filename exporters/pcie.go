package exporters

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/telemetry"
)

// pcieFamilies are the PCIe AER counters and link state of the GPUs, NICs
// and the bridges above them.
type pcieFamilies struct {
	aer, downtrained *prometheus.Desc
}

func newPCIeFamilies() pcieFamilies {
	l := []string{"device", "role"}
	return pcieFamilies{
		aer: prometheus.NewDesc("gpunode_pcie_aer_errors_total",
			"PCIe AER errors the device reported since boot (sysfs aer_dev_correctable, aer_dev_nonfatal, aer_dev_fatal), "+
				"by severity (correctable, nonfatal, fatal); role is gpu, nic, or upstream for a switch or root port above one.",
			append(l, "severity"), nil),
		downtrained: prometheus.NewDesc("gpunode_pcie_link_downtrained",
			"1 while the device's PCIe link runs narrower than its maximum width (a NIC: or slower than its maximum speed; "+
				"GPUs slow their links when idle, so their speed is not judged).", l, nil),
	}
}

func (p pcieFamilies) collect(emit func(prometheus.Metric), f *telemetry.Frame) {
	for _, d := range f.PCIe {
		if a := d.AER; a != nil {
			for _, v := range []struct {
				sev string
				n   uint64
			}{{"correctable", a.Correctable}, {"nonfatal", a.NonFatal}, {"fatal", a.Fatal}} {
				emit(prometheus.MustNewConstMetric(p.aer, prometheus.CounterValue, float64(v.n), d.Address, d.Role, v.sev))
			}
		}
		if d.Link != nil {
			emit(prometheus.MustNewConstMetric(p.downtrained, prometheus.GaugeValue, boolValue(d.Downtrained), d.Address, d.Role))
		}
	}
}
