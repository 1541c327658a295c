package nvmlfake

import (
	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// gpmSample is a fake GPM sample: the GPU's cumulative activity when it
// was taken, from which GpmMetricsGet computes the mean between two.
type gpmSample struct {
	*mock.GpmSample
	f     *machine
	dev   *device
	mig   *migDevice // set for a sample of one GPU instance
	t     float64    // seconds since the machine was built
	freed bool
}

var _ gonvml.GpmSample = (*gpmSample)(nil)

// gpmShares turn the load curve into engine activity: how much of the
// load keeps SMs busy, resident warps, tensor pipes and DRAM.
var gpmShares = map[gonvml.GpmMetricId]float64{
	gonvml.GPM_METRIC_GRAPHICS_UTIL:   1.0,
	gonvml.GPM_METRIC_SM_UTIL:         0.92,
	gonvml.GPM_METRIC_SM_OCCUPANCY:    0.45,
	gonvml.GPM_METRIC_ANY_TENSOR_UTIL: 0.6,
	gonvml.GPM_METRIC_DRAM_BW_UTIL:    0.55,
}

func (f *machine) GpmSampleAlloc() (gonvml.GpmSample, gonvml.Return) {
	if ret := f.enter("nvmlGpmSampleAlloc", nil); ret != gonvml.SUCCESS {
		return nil, ret
	}
	return &gpmSample{GpmSample: &mock.GpmSample{}, f: f}, gonvml.SUCCESS
}

func (s *gpmSample) Free() gonvml.Return {
	if ret := s.f.enter("nvmlGpmSampleFree", nil); ret != gonvml.SUCCESS {
		return ret
	}
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if s.freed {
		return gonvml.ERROR_INVALID_ARGUMENT
	}
	s.freed = true
	return gonvml.SUCCESS
}

func (s *gpmSample) Get(d gonvml.Device) gonvml.Return {
	fd, ok := d.(*device)
	if !ok {
		return gonvml.ERROR_INVALID_ARGUMENT
	}
	return fd.GpmSampleGet(s)
}

func (d *device) GpmQueryDeviceSupport() (gonvml.GpmSupport, gonvml.Return) {
	return answer(d.f, "nvmlGpmQueryDeviceSupport", d, func() gonvml.GpmSupport {
		s := gonvml.GpmSupport{Version: gonvml.GPM_SUPPORT_VERSION}
		if d.f.spec.gpm {
			s.IsSupportedDevice = 1
		}
		return s
	})
}

func (d *device) GpmSampleGet(sample gonvml.GpmSample) gonvml.Return {
	if ret := d.f.enter("nvmlGpmSampleGet", d); ret != gonvml.SUCCESS {
		return ret
	}
	s, ok := sample.(*gpmSample)
	if !ok || s.f != d.f {
		return gonvml.ERROR_INVALID_ARGUMENT
	}
	if !d.f.spec.gpm || d.migEnabled() || d.spec.VGPU { // a MIG GPU is sampled per instance
		return gonvml.ERROR_NOT_SUPPORTED
	}
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	if s.freed {
		return gonvml.ERROR_INVALID_ARGUMENT
	}
	s.dev, s.mig, s.t = d, nil, d.f.now()
	return gonvml.SUCCESS
}

// gpmMinSeconds is how far apart two GPM samples must be: nvml.h says the
// interval between two nvmlGpmSampleGet (or nvmlGpmMigSampleGet) calls
// "should be greater than 100ms due to the internal sample refresh rate".
// Closer samples hold the same counters and give no metrics; the fake
// refuses them outright so that a caller doing it fails loudly.
const gpmMinSeconds = 0.1

// GpmMetricsGet computes each asked metric as the mean activity between
// Sample1 and Sample2, in percent, as NVML does.
func (f *machine) GpmMetricsGet(m *gonvml.GpmMetricsGetType) gonvml.Return {
	if ret := f.enter("nvmlGpmMetricsGet", nil); ret != gonvml.SUCCESS {
		return ret
	}
	s1, ok1 := m.Sample1.(*gpmSample)
	s2, ok2 := m.Sample2.(*gpmSample)
	if !ok1 || !ok2 || s1.dev == nil || s1.dev != s2.dev || s1.mig != s2.mig || s2.t < s1.t || int(m.NumMetrics) > len(m.Metrics) {
		return gonvml.ERROR_INVALID_ARGUMENT
	}
	if s2.t-s1.t <= gpmMinSeconds {
		return gonvml.ERROR_INVALID_ARGUMENT
	}
	integral := s1.dev.loadIntegral
	if s1.mig != nil {
		integral = s1.mig.loadIntegral
	}
	mean := (integral(s2.t) - integral(s1.t)) / (s2.t - s1.t)
	for i := range int(m.NumMetrics) {
		share, ok := gpmShares[gonvml.GpmMetricId(m.Metrics[i].MetricId)]
		if !ok {
			m.Metrics[i].NvmlReturn = uint32(gonvml.ERROR_NOT_SUPPORTED)
			continue
		}
		m.Metrics[i].NvmlReturn = uint32(gonvml.SUCCESS)
		m.Metrics[i].Value = 100 * share * mean
	}
	return gonvml.SUCCESS
}
