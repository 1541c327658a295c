package nvml

import (
	"fmt"
	"strings"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
)

// Functions that read MIG devices (r470 and newer); all must be present.
var migSymbols = []string{symMigMode, "nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetMigDeviceHandleByIndex",
	"nvmlDeviceGetGpuInstanceId", "nvmlDeviceGetComputeInstanceId"}

const symGPMMig = "nvmlGpmMigSampleGet"

// mig reads the MIG devices of a GPU in MIG mode: each one's memory and,
// with GPM, its GPU instance's engine activity (NVML samples GPU instances
// in MIG mode).
func (r *sampleReader) mig() {
	for _, sym := range migSymbols {
		if !r.b.has(sym) {
			return
		}
	}
	mode := func() (int, gonvml.Return) {
		current, _, ret := r.h.GetMigMode()
		return current, ret
	}
	m, ok := read(r, symMigMode, mode)
	r.st.migMode = ok && m == gonvml.DEVICE_MIG_ENABLE
	if !r.st.migMode {
		r.st.migGPM.free(r)
		return
	}
	n, ok := read(r, "nvmlDeviceGetMaxMigDeviceCount", r.h.GetMaxMigDeviceCount)
	if !ok {
		return
	}
	seen := map[int]bool{}
	// GPM samples a GPU instance, whose compute instances are separate MIG
	// devices: each GPU instance is sampled once a round (a second sample
	// microseconds later would break NVML's 100 ms rule) and its activity
	// is shared by its compute instances.
	prof := map[int]*gpu.Profiling{}
	for i := range n {
		if r.lost {
			return
		}
		md, ret := r.h.GetMigDeviceHandleByIndex(i)
		if ret == gonvml.ERROR_NOT_FOUND || ret == gonvml.ERROR_INVALID_ARGUMENT {
			continue // an empty slot
		}
		if !r.ok(fmt.Sprintf("nvmlDeviceGetMigDeviceHandleByIndex(%d)", i), ret) {
			continue
		}
		inst := r.migInstance(md)
		if inst == nil {
			continue
		}
		if r.st.gpm.supported && r.b.has(symGPMMig) {
			gi := inst.GPUInstanceID
			if !seen[gi] {
				prof[gi] = r.migProfiling(gi)
			}
			inst.Profiling = prof[gi]
		}
		seen[inst.GPUInstanceID] = true
		r.s.MIG = append(r.s.MIG, *inst)
	}
	r.st.migGPM.forget(seen, r)
}

// migInstance reads one MIG device; nil if it cannot be named.
func (r *sampleReader) migInstance(md gonvml.Device) *gpu.MIGInstance {
	gi, ok1 := read(r, "nvmlDeviceGetGpuInstanceId", md.GetGpuInstanceId)
	ci, ok2 := read(r, "nvmlDeviceGetComputeInstanceId", md.GetComputeInstanceId)
	uuid, ok3 := read(r, "nvmlDeviceGetUUID(MIG)", md.GetUUID)
	if !ok1 || !ok2 || !ok3 {
		return nil
	}
	inst := &gpu.MIGInstance{GPUInstanceID: gi, ComputeInstanceID: ci, UUID: uuid}
	// The driver names a MIG device "<GPU name> MIG <profile>".
	if name, ok := read(r, "nvmlDeviceGetName(MIG)", md.GetName); ok {
		if i := strings.LastIndex(name, "MIG "); i >= 0 {
			inst.Profile = strings.TrimSpace(name[i+len("MIG "):])
		}
	}
	if m, ok := read(r, "nvmlDeviceGetMemoryInfo(MIG)", md.GetMemoryInfo); ok {
		inst.MemoryTotalBytes, inst.MemoryUsedBytes, inst.MemoryFreeBytes = ptr(m.Total), ptr(m.Used), ptr(m.Free)
	}
	return inst
}

// migGPM holds the GPM samples of each GPU instance.
type migGPM map[int]*gpmState

// migProfiling is profiling for one GPU instance, like profiling for a GPU.
func (r *sampleReader) migProfiling(gi int) *gpu.Profiling {
	if r.st.migGPM == nil {
		r.st.migGPM = migGPM{}
	}
	g := r.st.migGPM[gi]
	if g == nil {
		g = &gpmState{checked: true}
		for _, s := range []*gonvml.GpmSample{&g.prev, &g.cur} {
			sample, ret := r.b.lib.GpmSampleAlloc()
			if ret != gonvml.SUCCESS {
				r.s.Errors = append(r.s.Errors, fmt.Sprintf("nvmlGpmSampleAlloc: %v", ret))
				if err := g.free(); err != nil {
					r.s.Errors = append(r.s.Errors, err.Error())
				}
				return nil
			}
			*s = sample
		}
		g.supported, g.metrics = true, &gonvml.GpmMetricsGetType{}
		r.st.migGPM[gi] = g
	}
	get := func() (struct{}, gonvml.Return) { return struct{}{}, r.h.GpmMigSampleGet(gi, g.cur) }
	if _, ok := read(r, fmt.Sprintf("%s(gpu instance %d)", symGPMMig, gi), get); !ok {
		return nil
	}
	return r.gpmMetrics(g)
}

// forget frees the samples of GPU instances that are gone.
func (m migGPM) forget(keep map[int]bool, r *sampleReader) {
	for gi, g := range m {
		if !keep[gi] {
			if err := g.free(); err != nil {
				r.s.Errors = append(r.s.Errors, err.Error())
			}
			delete(m, gi)
		}
	}
}

// free frees every instance's samples (MIG mode was turned off).
func (m migGPM) free(r *sampleReader) { m.forget(nil, r) }
