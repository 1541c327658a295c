package discovery_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/discovery"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/sim"
)

// On a host (not simulated) the agent uses AMD SMI when the library loads
// and amdgpu sysfs when it does not, saying why; gpu.amd.enabled=false
// adds neither.
func TestAMDBackendChoice(t *testing.T) {
	node, err := sim.Build("mi300x-roce", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(t.TempDir(), "libamd_smi.so")
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", lib, "../gpu/amdsmi/testdata/fake_amdsmi.c").CombinedOutput(); err != nil {
		t.Fatalf("build the fake AMD SMI: %v\n%s", err, out)
	}
	names := func(env *discovery.Env) string {
		var n []string
		for _, b := range env.Backends {
			n = append(n, b.Name())
		}
		return strings.Join(n, ",")
	}
	cfg := config.Default()
	cfg.HostRoot = node.Root
	cfg.GPU.NVML.Enabled = false

	cfg.GPU.AMD.LibraryPath = lib
	env, err := discovery.Open(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	if names(env) != "amdsmi" || env.AMDSMIAbsent != "" {
		t.Errorf("library loads: backends %s, %q", names(env), env.AMDSMIAbsent)
	}
	s := discovery.New(env, 10*time.Second).Discover(context.Background())
	if s.GPUDriver == nil || s.GPUDriver.Backend != "amdsmi" || len(s.GPUs) != 2 || s.GPUDriver.ROCmVersion != "6.4.1-120" {
		t.Errorf("snapshot over AMD SMI: %+v, %d GPUs", s.GPUDriver, len(s.GPUs))
	}
	if err := env.Close(); err != nil {
		t.Error(err)
	}

	cfg.GPU.AMD.LibraryPath = filepath.Join(t.TempDir(), "missing.so")
	env, err = discovery.Open(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	if names(env) != "amdgpu" || !strings.Contains(env.AMDSMIAbsent, "missing.so") {
		t.Errorf("no library: backends %s, %q", names(env), env.AMDSMIAbsent)
	}
	s = discovery.New(env, 10*time.Second).Discover(context.Background())
	if s.GPUDriver == nil || s.GPUDriver.Backend != "amdgpu" || len(s.GPUs) != 8 {
		t.Errorf("snapshot over sysfs: %+v, %d GPUs", s.GPUDriver, len(s.GPUs))
	}

	cfg.GPU.AMD.Enabled = false
	if env, err = discovery.Open(cfg, ""); err != nil || len(env.Backends) != 0 {
		t.Errorf("disabled: %v %s", err, names(env))
	}
}
