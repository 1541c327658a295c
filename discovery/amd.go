package discovery

import (
	"errors"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/amdgpu"
	"github.com/gpunode/gpunode/gpu/amdsmi"
	"github.com/gpunode/gpunode/internal/hostfs"
)

// amdBackend picks the AMD backend: AMD SMI when libamd_smi.so loads and
// initialises, else the amdgpu driver's sysfs. The choice is made once, at
// start-up; the chosen backend's name is the source inspect and
// gpunode_source_up report. why says why AMD SMI was not used ("" when it
// was). Simulated nodes have no AMD SMI library: they get sysfs.
func amdBackend(cfg config.AMD, fsys hostfs.FS, simulated bool) (b gpu.Backend, why string) {
	if !simulated {
		smi, err := amdsmi.Open(cfg.LibraryPath, amdsmi.WithHostFS(fsys))
		if err == nil {
			return smi, ""
		}
		why = err.Error()
		if errors.Is(err, amdsmi.ErrUnsupportedVersion) {
			// AMD SMI is there but of a version we cannot read: the
			// sysfs samples say so (degraded) rather than only a debug log.
			return amdgpu.New(fsys, amdgpu.WithInsteadOf(why)), why
		}
	} else {
		why = "simulated node: no AMD SMI library"
	}
	return amdgpu.New(fsys), why
}
