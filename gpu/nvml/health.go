package nvml

import (
	"fmt"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
)

// symFabricInfo arrived with driver R525 (Hopper NVSwitch systems); older
// drivers lack it and the fabric state stays unknown.
const symFabricInfo = "nvmlDeviceGetGpuFabricInfo"

// memoryHealth reads the ECC mode and the row remapping state: facts node
// verification judges, read once per discovery rather than per sample.
func (r *deviceReader) memoryHealth() {
	mode := func() ([2]gonvml.EnableState, gonvml.Return) {
		cur, pend, ret := r.h.GetEccMode()
		return [2]gonvml.EnableState{cur, pend}, ret
	}
	if v, ok := get(r, "nvmlDeviceGetEccMode", mode); ok {
		r.dev.ECC = &gpu.ECCMode{Enabled: v[0] == gonvml.FEATURE_ENABLED, Pending: v[1] == gonvml.FEATURE_ENABLED}
	}
	if !r.b.has(symRemappedRows) {
		return
	}
	if v, ok := get(r, symRemappedRows, remappedRows(r.h)); ok {
		r.dev.RemappedRows = v
	}
}

// remappedRows reads the row remapping counters and flags; callers gate
// it on symRemappedRows (Ampere and newer drivers).
func remappedRows(h gonvml.Device) func() (*gpu.RemappedRows, gonvml.Return) {
	return func() (*gpu.RemappedRows, gonvml.Return) {
		corr, unc, pending, failed, ret := h.GetRemappedRows()
		return &gpu.RemappedRows{
			Correctable: uint64(max(corr, 0)), Uncorrectable: uint64(max(unc, 0)),
			Pending: pending, Failed: failed,
		}, ret
	}
}

// fabric reads the GPU's NVLink fabric state. GPUs without NVSwitch
// answer NOT_SUPPORTED, or report the state "not supported": both leave
// Fabric nil.
func (r *deviceReader) fabric() {
	if !r.b.has(symFabricInfo) {
		return
	}
	info, ok := get(r, symFabricInfo, r.h.GetGpuFabricInfo)
	if !ok {
		return
	}
	r.dev.Fabric = fabricState(info.State, gonvml.Return(info.Status))
}

// fabricState maps NVML's fabric state and status to the model; nil for
// GPUs outside a fabric.
func fabricState(state uint8, status gonvml.Return) *gpu.Fabric {
	f := &gpu.Fabric{}
	switch state {
	case gonvml.GPU_FABRIC_STATE_NOT_SUPPORTED:
		return nil
	case gonvml.GPU_FABRIC_STATE_NOT_STARTED:
		f.State = gpu.FabricNotStarted
	case gonvml.GPU_FABRIC_STATE_IN_PROGRESS:
		f.State = gpu.FabricInProgress
	case gonvml.GPU_FABRIC_STATE_COMPLETED:
		f.State = gpu.FabricCompleted
	default:
		f.State = fmt.Sprintf("unknown-%d", state)
	}
	// The status means something only once registration completed.
	if f.State == gpu.FabricCompleted {
		if status == gonvml.SUCCESS {
			f.Status = "success"
		} else {
			f.Status = status.Error()
		}
	}
	return f
}
