package hwcheck

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/rdma"
)

// Inspect is what the harness reads of `gpunode-agent inspect -o json`:
// the snapshot's GPU, RDMA and source parts, decoded into the agent's own
// types so a renamed field breaks the harness's tests, not its runs.
type Inspect struct {
	Simulated string `json:"simulated,omitempty"`
	GPUDriver *struct {
		Backend        string `json:"backend"`
		DriverVersion  string `json:"driver_version"`
		CUDAVersion    string `json:"cuda_version"`
		LibraryVersion string `json:"library_version"`
		ROCmVersion    string `json:"rocm_version"`
		GPUsNotVisible []int  `json:"gpus_not_visible"`
	} `json:"gpu_driver"`
	GPUs        []gpu.Device  `json:"gpus"`
	RDMADevices []rdma.Device `json:"rdma_devices"`
	Sources     []struct {
		Name    string `json:"name"`
		State   string `json:"state"`
		Message string `json:"message"`
	} `json:"sources"`
}

// ParseInspect parses inspect's JSON.
func ParseInspect(r io.Reader) (*Inspect, error) {
	var in Inspect
	if err := json.NewDecoder(r).Decode(&in); err != nil {
		return nil, fmt.Errorf("parse gpunode-agent inspect -o json: %w", err)
	}
	return &in, nil
}

// Source returns the state and message of a named source, "" if it did
// not run.
func (in *Inspect) Source(name string) (state, message string) {
	for _, s := range in.Sources {
		if s.Name == name {
			return s.State, s.Message
		}
	}
	return "", ""
}

// GPU returns the agent's GPU with this UUID.
func (in *Inspect) GPU(uuid string) (gpu.Device, bool) {
	for _, d := range in.GPUs {
		if d.UUID == uuid {
			return d, true
		}
	}
	return gpu.Device{}, false
}
