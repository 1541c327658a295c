package gpu

// Process kinds (Process.Kind).
const (
	// ProcessCompute is a CUDA/HIP compute context; under MPS the MPS
	// server is one.
	ProcessCompute = "compute"
	// ProcessGraphics is a graphics context.
	ProcessGraphics = "graphics"
	// ProcessMPS is an MPS client: its work runs inside the MPS server's
	// context, and NVML lists it apart.
	ProcessMPS = "mps"
)

// Process is one host process using a GPU or a MIG device, as the driver
// sees it. PID is in the host's pid namespace (NVML and KFD report host
// pids whatever namespace the reader is in).
type Process struct {
	PID  uint32 `json:"pid"`
	Kind string `json:"kind"`
	// MemoryUsedBytes is the device memory the process holds; nil when the
	// driver will not say (NVML without the privilege to read it, or a
	// GPU in MIG mode on some drivers).
	MemoryUsedBytes *uint64 `json:"memory_used_bytes,omitempty"`
	// SMUtilization and MemoryUtilization are the process's share of the
	// device's time in [0, 1], averaged over the driver's samples since
	// the previous round; nil when the driver kept none (the process was
	// idle, or the device keeps no per-process samples, as MIG devices).
	SMUtilization     *float64 `json:"sm_utilization,omitempty"`
	MemoryUtilization *float64 `json:"memory_utilization,omitempty"`
	// EncoderUtilization and DecoderUtilization, likewise (NVIDIA).
	EncoderUtilization *float64 `json:"encoder_utilization,omitempty"`
	DecoderUtilization *float64 `json:"decoder_utilization,omitempty"`
}
