package amdsmi

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/amdgpu"
)

// throttle sets the sample's clock event reasons from the GPU's amdgpu
// gpu_metrics table under the host root (amdgpu.ThrottleReasons). AMD
// SMI's own violation status (amdsmi_get_violation_status) is computed
// from the same throttler residencies; reading the table keeps the shim to
// the functions every supported library version has, and the reasons the
// same whichever AMD backend runs. Called with b.mu held. Without a host
// root or a table (an older driver), nothing is set.
func (b *Backend) throttle(s *gpu.Sample, errs *[]error) {
	if b.fs == nil || s.PCIBusID == "" {
		return
	}
	p := "/sys/bus/pci/devices/" + s.PCIBusID + "/gpu_metrics"
	raw, err := b.fs.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		*errs = append(*errs, fmt.Errorf("throttle reasons: %w", err))
		return
	}
	m, err := amdgpu.ParseMetrics(raw)
	if err != nil {
		return // a revision amdgpu cannot decode: no reasons, as there
	}
	if b.residency == nil {
		b.residency = map[string]map[string]uint64{}
	}
	if b.residency[s.PCIBusID] == nil {
		b.residency[s.PCIBusID] = map[string]uint64{}
	}
	s.ClockEventReasons = amdgpu.ThrottleReasons(m, b.residency[s.PCIBusID])
}
