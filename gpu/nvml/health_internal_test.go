package nvml

import (
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
)

func TestFabricState(t *testing.T) {
	for _, c := range []struct {
		state  uint8
		status gonvml.Return
		want   *gpu.Fabric
	}{
		{gonvml.GPU_FABRIC_STATE_NOT_SUPPORTED, gonvml.ERROR_NOT_SUPPORTED, nil},
		{gonvml.GPU_FABRIC_STATE_NOT_STARTED, gonvml.ERROR_UNINITIALIZED, &gpu.Fabric{State: "not-started"}},
		{gonvml.GPU_FABRIC_STATE_IN_PROGRESS, gonvml.SUCCESS, &gpu.Fabric{State: "in-progress"}},
		{gonvml.GPU_FABRIC_STATE_COMPLETED, gonvml.SUCCESS, &gpu.Fabric{State: "completed", Status: "success"}},
		{gonvml.GPU_FABRIC_STATE_COMPLETED, gonvml.ERROR_INSUFFICIENT_RESOURCES, &gpu.Fabric{State: "completed", Status: "ERROR_INSUFFICIENT_RESOURCES"}},
		{200, gonvml.SUCCESS, &gpu.Fabric{State: "unknown-200"}}, // garbage from a future driver
	} {
		got := fabricState(c.state, c.status)
		if (got == nil) != (c.want == nil) || got != nil && *got != *c.want {
			t.Errorf("fabricState(%d, %v) = %+v, want %+v", c.state, c.status, got, c.want)
		}
	}
}
