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

// TestClique checks GPU Feature Discovery's nvidia.com/gpu.clique format:
// the cluster UUID as github.com/google/uuid's String() writes 16 bytes
// (lower-case 8-4-4-4-12 hex) and the clique id in decimal, joined by a
// dot (NVIDIA/k8s-device-plugin internal/resource GetFabricIDs and
// internal/lm/imex.go, Apache-2.0; read, not copied).
func TestClique(t *testing.T) {
	uuid := [16]uint8{0x9f, 0x2b, 0x0c, 0x41, 0x7e, 0x15, 0x4a, 0x3d, 0x8b, 0x6e, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab}
	for _, c := range []struct {
		uuid [16]uint8
		id   uint32
		want string
	}{
		{uuid, 32766, "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.32766"},
		{uuid, 0, "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.0"},
		// HGX H100 with fabric manager: completed, but no multi-node domain.
		{[16]uint8{}, 0, ""},
		{[16]uint8{}, 7, ""},
	} {
		if got := clique(c.uuid, c.id); got != c.want {
			t.Errorf("clique(%x, %d) = %q, want %q", c.uuid, c.id, got, c.want)
		}
	}
}
