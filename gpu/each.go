package gpu

import (
	"context"

	"github.com/gpunode/gpunode/internal/source"
)

// DeviceRead is one GPU's part of a sampling round for SampleEach.
type DeviceRead = source.Device[Sample]

// SampleEach reads every GPU in its own goroutine with source.Each: a GPU
// that hangs is reported down with the reason, only its own series go
// down, and it is not read again until its read returns.
func SampleEach(ctx context.Context, devs []DeviceRead) []Sample { return source.Each(ctx, devs) }
