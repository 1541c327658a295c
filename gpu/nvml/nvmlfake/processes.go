package nvmlfake

import (
	"fmt"
	"math"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// noInstance is what NVML puts in ProcessInfo's GPU and compute instance
// IDs for a process on a GPU not in MIG mode (0xFFFFFFFF).
const noInstance = math.MaxUint32

// checkProcesses rejects a process list no driver would report.
func (d *device) checkProcesses() error {
	share := 0.0
	pids := map[uint32]bool{}
	for _, p := range d.spec.Processes {
		switch p.Kind {
		case "", ProcessCompute, ProcessGraphics, ProcessMPS:
		default:
			return fmt.Errorf("process %d: kind %q", p.PID, p.Kind)
		}
		if p.PID == 0 || pids[p.PID] {
			return fmt.Errorf("process pid %d is zero or listed twice", p.PID)
		}
		pids[p.PID] = true
		if d.spec.MIGEnabled && (p.MIGDevice < 0 || p.MIGDevice >= len(d.mig)) {
			return fmt.Errorf("process %d on MIG device %d of %d", p.PID, p.MIGDevice, len(d.mig))
		}
		if p.SMShare < 0 {
			return fmt.Errorf("process %d: negative SM share", p.PID)
		}
		share += p.SMShare
	}
	if share > 1+1e-9 {
		return fmt.Errorf("processes' SM shares add up to %.2f, above 1", share)
	}
	return nil
}

// processes lists the GPU's processes of one kind as NVML does: on a GPU
// in MIG mode each names its GPU and compute instance.
func (d *device) processes(kind string) []gonvml.ProcessInfo {
	out := []gonvml.ProcessInfo{}
	for _, p := range d.spec.Processes {
		if p.Kind != kind && (kind != ProcessCompute || p.Kind != "") {
			continue
		}
		info := gonvml.ProcessInfo{Pid: p.PID, UsedGpuMemory: p.MemoryBytes, GpuInstanceId: noInstance, ComputeInstanceId: noInstance}
		if d.migEnabled() {
			m := d.mig[p.MIGDevice]
			info.GpuInstanceId, info.ComputeInstanceId = uint32(m.gi), uint32(m.ci)
		}
		out = append(out, info)
	}
	return out
}

func (d *device) GetComputeRunningProcesses() ([]gonvml.ProcessInfo, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetComputeRunningProcesses", d, func() []gonvml.ProcessInfo { return d.processes(ProcessCompute) })
}

func (d *device) GetGraphicsRunningProcesses() ([]gonvml.ProcessInfo, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetGraphicsRunningProcesses", d, func() []gonvml.ProcessInfo { return d.processes(ProcessGraphics) })
}

func (d *device) GetMPSComputeRunningProcesses() ([]gonvml.ProcessInfo, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetMPSComputeRunningProcesses", d, func() []gonvml.ProcessInfo { return d.processes(ProcessMPS) })
}

// GetProcessUtilization returns one sample per process stamped with the
// clock (microseconds since the epoch, as NVML's timeStamp) when the clock
// has moved past lastSeen, and NOT_FOUND when there is nothing newer, as
// the driver does. Each process's SM and memory utilization is its share
// of the GPU's. A GPU in MIG mode answers NOT_SUPPORTED, as real ones
// do: NVML keeps no per-process samples for MIG devices.
func (d *device) GetProcessUtilization(lastSeen uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetProcessUtilization", d); ret != gonvml.SUCCESS {
		return nil, ret
	}
	if d.migEnabled() {
		return nil, gonvml.ERROR_NOT_SUPPORTED
	}
	ts := uint64(d.f.clock().UnixMicro())
	if ts <= lastSeen || len(d.spec.Processes) == 0 {
		return nil, gonvml.ERROR_NOT_FOUND
	}
	a := d.load(d.f.now())
	out := make([]gonvml.ProcessUtilizationSample, 0, len(d.spec.Processes))
	for _, p := range d.spec.Processes {
		// The GPU's own rates are 100a and 70a (GetUtilizationRates).
		out = append(out, gonvml.ProcessUtilizationSample{Pid: p.PID, TimeStamp: ts,
			SmUtil: uint32(math.Round(100 * a * p.SMShare)), MemUtil: uint32(math.Round(70 * a * p.SMShare))})
	}
	return out, gonvml.SUCCESS
}
