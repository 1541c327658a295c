package discovery

import (
	"errors"
	"strings"

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
		opt, _ := fsys.Names("/opt") // no /opt: only the default names
		cands := amdsmi.Candidates(fsys.Root(), cfg.LibraryPath, opt)
		for i, c := range cands {
			// ROCm's /opt/rocm is an absolute symlink (through
			// /etc/alternatives): follow it under the host root, where
			// dlopen would follow it in the agent's own filesystem.
			if rel, ok := strings.CutPrefix(c.Path, fsys.Root()+"/"); ok && fsys.Root() != "/" && c.Found == gpu.FoundWellKnown {
				if resolved, err := fsys.Resolve(rel); err == nil {
					cands[i].Path = fsys.Path(resolved)
				}
			}
		}
		smi, err := amdsmi.OpenFirst(cands, amdsmi.WithHostFS(fsys))
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
