package nvml

import (
	"encoding/hex"
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
	if f := r.dev.Fabric; f != nil && f.Status == "success" {
		f.Clique = clique(info.ClusterUuid, info.CliqueId)
	}
}

// clique formats the fabric's cluster UUID and clique id as GPU Feature
// Discovery does for nvidia.com/gpu.clique (k8s-device-plugin
// internal/resource GetFabricIDs: the UUID's canonical string, a dot, the
// id in decimal). An all-zero UUID means no multi-node domain: go-nvlib's
// IsFabricAttached treats such a GPU as not attached, and so do we.
func clique(uuid [16]uint8, id uint32) string {
	if uuid == [16]uint8{} {
		return ""
	}
	h := hex.EncodeToString(uuid[:])
	return fmt.Sprintf("%s-%s-%s-%s-%s.%d", h[:8], h[8:12], h[12:16], h[16:20], h[20:], id)
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
