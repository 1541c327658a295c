package config

import "fmt"

// Verify configures node verification (`gpunode-agent verify` and the
// daemon's checks each discovery).
type Verify struct {
	// ExpectedGPUCount is the number of GPUs the node must have; 0 takes
	// it from the product (8 on HGX/DGX and OAM baseboards).
	ExpectedGPUCount int `yaml:"expectedGPUCount"`
}

// maxGPUs bounds expectedGPUCount: more GPUs than any one host carries is
// a typo.
const maxGPUs = 64

func (v Verify) validate() []error {
	if v.ExpectedGPUCount < 0 || v.ExpectedGPUCount > maxGPUs {
		return []error{fmt.Errorf("verify.expectedGPUCount: must be between 0 (from the product) and %d, got %d", maxGPUs, v.ExpectedGPUCount)}
	}
	return nil
}
