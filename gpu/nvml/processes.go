package nvml

import (
	"cmp"
	"slices"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
)

// Process functions. The running-process lists are as old as NVML (go-nvml
// calls their _v3, R510, where the driver has it); the MPS list and the
// per-process samples are gated on LookupSymbol.
const (
	symComputeProcs  = "nvmlDeviceGetComputeRunningProcesses"
	symGraphicsProcs = "nvmlDeviceGetGraphicsRunningProcesses"
	symMPSProcs      = "nvmlDeviceGetMPSComputeRunningProcesses"
	symProcessUtil   = "nvmlDeviceGetProcessUtilization"
)

// valueNotAvailable is NVML_VALUE_NOT_AVAILABLE (nvml.h: (unsigned long long)-1),
// what usedGpuMemory holds when the driver will not say (no privilege,
// some MIG configurations).
const valueNotAvailable = ^uint64(0)

// processes lists the GPU's processes (compute, MPS clients, graphics) with
// the memory each holds, and their utilization from the samples the driver
// took since the last round. On a GPU in MIG mode each process goes to the
// MIG instance its GPU and compute instance IDs name; NVML keeps no
// per-process samples there.
func (r *sampleReader) processes() {
	lists := []struct {
		sym, kind string
		f         func() ([]gonvml.ProcessInfo, gonvml.Return)
	}{
		{symComputeProcs, gpu.ProcessCompute, r.h.GetComputeRunningProcesses},
		{symMPSProcs, gpu.ProcessMPS, r.h.GetMPSComputeRunningProcesses},
		{symGraphicsProcs, gpu.ProcessGraphics, r.h.GetGraphicsRunningProcesses},
	}
	type placed struct {
		p      gpu.Process
		gi, ci uint32
	}
	var all []placed
	listed := false
	for _, l := range lists {
		if r.lost || !r.b.has(l.sym) {
			continue
		}
		infos, ret := l.f()
		if ret == gonvml.ERROR_NO_PERMISSION {
			// nvml.h: on a GPU in MIG mode the whole GPU's list needs
			// privileges the agent may not have; the GPU answered, and
			// a partial list would be taken for the whole one.
			r.answered++
			return
		}
		if !r.ok(l.sym, ret) {
			continue
		}
		listed = true
		for _, in := range infos {
			// A process with compute and graphics contexts is in both
			// lists: it is one process, named by its first list.
			if slices.ContainsFunc(all, func(p placed) bool { return p.p.PID == in.Pid }) {
				continue
			}
			p := gpu.Process{PID: in.Pid, Kind: l.kind}
			if in.UsedGpuMemory != valueNotAvailable {
				p.MemoryUsedBytes = ptr(in.UsedGpuMemory)
			}
			all = append(all, placed{p, in.GpuInstanceId, in.ComputeInstanceId})
		}
	}
	if !listed {
		return
	}
	slices.SortFunc(all, func(a, b placed) int { return cmp.Compare(a.p.PID, b.p.PID) })
	if r.st.migMode {
		for k := range r.s.MIG {
			inst := &r.s.MIG[k]
			inst.Processes = []gpu.Process{}
			for _, p := range all {
				if p.gi == uint32(inst.GPUInstanceID) && p.ci == uint32(inst.ComputeInstanceID) {
					inst.Processes = append(inst.Processes, p.p)
				}
			}
		}
		return
	}
	r.s.Processes = make([]gpu.Process, len(all))
	for k, p := range all {
		r.s.Processes[k] = p.p
	}
	r.processUtilization()
}

// processUtilization averages, per pid, the samples NVML took since the
// newest one the last round saw (lastSeenTimeStamp, as nvml.h intends: the
// driver keeps a short ring of samples and returns those newer than it).
func (r *sampleReader) processUtilization() {
	if r.lost || !r.b.has(symProcessUtil) || len(r.s.Processes) == 0 {
		return
	}
	samples, ret := r.h.GetProcessUtilization(r.st.procSeen)
	if ret == gonvml.ERROR_NOT_FOUND {
		r.answered++ // no sample newer than lastSeen: every process was idle
		return
	}
	if !r.ok(symProcessUtil, ret) {
		return
	}
	type sum struct{ n, sm, mem, enc, dec uint64 }
	sums := make(map[uint32]*sum, len(r.s.Processes))
	for _, s := range samples {
		r.st.procSeen = max(r.st.procSeen, s.TimeStamp)
		t := sums[s.Pid]
		if t == nil {
			t = &sum{}
			sums[s.Pid] = t
		}
		t.n++
		t.sm += uint64(min(s.SmUtil, 100))
		t.mem += uint64(min(s.MemUtil, 100))
		t.enc += uint64(min(s.EncUtil, 100))
		t.dec += uint64(min(s.DecUtil, 100))
	}
	for k := range r.s.Processes {
		p := &r.s.Processes[k]
		t := sums[p.PID]
		if t == nil {
			continue
		}
		n := float64(t.n) * 100
		p.SMUtilization, p.MemoryUtilization = ptr(float64(t.sm)/n), ptr(float64(t.mem)/n)
		p.EncoderUtilization, p.DecoderUtilization = ptr(float64(t.enc)/n), ptr(float64(t.dec)/n)
	}
}
