package nvml

import (
	"errors"
	"fmt"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
)

// gpmState holds a GPU's two GPM samples. GPM (GPU Performance Monitoring,
// Hopper and newer) reports engine activity between two samples, which is
// what DCGM's profiling fields give without DCGM: each round takes a new
// sample and asks for the metrics since the previous one.
type gpmState struct {
	checked   bool // support was asked and answered
	supported bool
	primed    bool // prev holds a sample
	failures  int  // samples failed in a row
	prev, cur gonvml.GpmSample
	metrics   *gonvml.GpmMetricsGetType // reused: it is 20 KB
}

// gpmMetrics are asked in this order.
var gpmMetrics = []struct {
	id   gonvml.GpmMetricId
	into func(*gpu.Profiling) **float64
}{
	{gonvml.GPM_METRIC_GRAPHICS_UTIL, func(p *gpu.Profiling) **float64 { return &p.GraphicsActive }},
	{gonvml.GPM_METRIC_SM_UTIL, func(p *gpu.Profiling) **float64 { return &p.SMActive }},
	{gonvml.GPM_METRIC_SM_OCCUPANCY, func(p *gpu.Profiling) **float64 { return &p.SMOccupancy }},
	{gonvml.GPM_METRIC_ANY_TENSOR_UTIL, func(p *gpu.Profiling) **float64 { return &p.TensorActive }},
	{gonvml.GPM_METRIC_DRAM_BW_UTIL, func(p *gpu.Profiling) **float64 { return &p.DRAMActive }},
}

// profiling reads GPM activity where the driver and GPU have it; the first
// round only primes the previous sample.
func (r *sampleReader) profiling() {
	g := &r.st.gpm
	if !g.checked {
		if !r.gpmStart() {
			return
		}
	}
	if !g.supported {
		return
	}
	if r.lost {
		return
	}
	if ret := r.h.GpmSampleGet(g.cur); !r.ok("nvmlGpmSampleGet", ret) {
		r.gpmFailed(g, ret)
		return
	}
	g.failures = 0
	r.s.Profiling = r.gpmMetrics(g)
}

// gpmMaxFailures is how many rounds in a row GPM sampling may fail before
// it is given up: a vGPU guest reports GPM support but fails every sample.
const gpmMaxFailures = 3

// gpmFailed counts a failed sample; at gpmMaxFailures it frees the
// samples, stops asking until NVML is initialised again and says so once.
func (r *sampleReader) gpmFailed(g *gpmState, ret gonvml.Return) {
	if r.lost || (r.st.migMode && ret == gonvml.ERROR_NOT_SUPPORTED) {
		return // a GPU in MIG mode is sampled per GPU instance (mig)
	}
	g.failures++
	if g.failures < gpmMaxFailures {
		return
	}
	r.s.Errors = append(r.s.Errors, fmt.Sprintf("nvmlGpmSampleGet failed %d rounds in a row (%v) although the GPU reports GPM support; "+
		"profiling metrics are off for this GPU until NVML is initialised again", g.failures, ret))
	if err := g.free(); err != nil {
		r.s.Errors = append(r.s.Errors, err.Error())
	}
	*g = gpmState{checked: true} // supported false: not asked again
}

// gpmMetrics turns the sample just taken into g.cur and the one before
// into metrics; nil on the first round or when nothing could be read.
func (r *sampleReader) gpmMetrics(g *gpmState) *gpu.Profiling {
	g.prev, g.cur = g.cur, g.prev // prev is now the sample just taken
	if !g.primed {
		g.primed = true
		return nil
	}
	m := g.metrics
	*m = gonvml.GpmMetricsGetType{NumMetrics: uint32(len(gpmMetrics)), Sample1: g.cur, Sample2: g.prev}
	for i, gm := range gpmMetrics {
		m.Metrics[i].MetricId = uint32(gm.id)
	}
	if _, ok := read(r, "nvmlGpmMetricsGet", func() (struct{}, gonvml.Return) { return struct{}{}, r.b.lib.GpmMetricsGet(m) }); !ok {
		return nil
	}
	var p gpu.Profiling
	have := false
	for i, gm := range gpmMetrics {
		got := m.Metrics[i]
		switch ret := gonvml.Return(got.NvmlReturn); ret {
		case gonvml.SUCCESS:
		case gonvml.ERROR_NOT_SUPPORTED:
			continue
		default:
			r.s.Errors = append(r.s.Errors, fmt.Sprintf("nvmlGpmMetricsGet(metric %d): %v", gm.id, ret))
			continue
		}
		// GPM reports percentages.
		*gm.into(&p) = ptr(min(max(got.Value/100, 0), 1))
		have = true
	}
	if !have {
		return nil
	}
	return &p
}

// gpmStart decides whether the GPU has GPM and allocates its samples. It
// reports false when the question could not be answered this round.
func (r *sampleReader) gpmStart() bool {
	g := &r.st.gpm
	for _, sym := range gpmSymbols {
		if !r.b.has(sym) {
			g.checked = true
			return true
		}
	}
	if r.lost {
		return false
	}
	sup, ret := r.h.GpmQueryDeviceSupport()
	if ret != gonvml.SUCCESS {
		r.ok("nvmlGpmQueryDeviceSupport", ret)
		// NOT_SUPPORTED is an answer; other failures are asked again.
		g.checked = ret == gonvml.ERROR_NOT_SUPPORTED
		return g.checked
	}
	r.answered++
	g.checked = true
	if sup.IsSupportedDevice == 0 {
		return true
	}
	for _, s := range []*gonvml.GpmSample{&g.prev, &g.cur} {
		sample, ret := r.b.lib.GpmSampleAlloc()
		if ret != gonvml.SUCCESS {
			r.s.Errors = append(r.s.Errors, fmt.Sprintf("nvmlGpmSampleAlloc: %v", ret))
			if err := g.free(); err != nil {
				r.s.Errors = append(r.s.Errors, err.Error())
			}
			g.checked = false // try again next round
			return false
		}
		*s = sample
	}
	g.supported, g.metrics = true, &gonvml.GpmMetricsGetType{}
	return true
}

// free releases the samples; it is called with the library still initialised.
func (g *gpmState) free() error {
	var errs []error
	for _, s := range []*gonvml.GpmSample{&g.prev, &g.cur} {
		if *s == nil {
			continue
		}
		if ret := (*s).Free(); ret != gonvml.SUCCESS {
			errs = append(errs, fmt.Errorf("nvmlGpmSampleFree: %w", ret))
		}
		*s = nil
	}
	*g = gpmState{}
	return errors.Join(errs...)
}

func (st *gpuState) freeGPM() error {
	errs := []error{st.gpm.free()}
	for gi, g := range st.migGPM {
		errs = append(errs, g.free())
		delete(st.migGPM, gi)
	}
	return errors.Join(errs...)
}
