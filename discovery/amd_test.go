package discovery_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/discovery"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/internal/source"
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

// With no libraryPath, AMD SMI is found in the host's ROCm under the host
// root: /opt/rocm is an absolute symlink to the versioned install, as
// ROCm's packages lay it out (through /etc/alternatives), and inspect
// names the file and how it was found.
func TestAMDSMIFromHostROCm(t *testing.T) {
	node, err := sim.Build("mi300x-roce", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opt := filepath.Join(node.Root, "opt")
	versioned := filepath.Join(opt, "rocm-6.4.1")
	if err := os.Rename(filepath.Join(opt, "rocm"), versioned); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/opt/rocm-6.4.1", filepath.Join(opt, "rocm")); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(versioned, "lib/libamd_smi.so")
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", lib, "../gpu/amdsmi/testdata/fake_amdsmi.c").CombinedOutput(); err != nil {
		t.Fatalf("build the fake AMD SMI: %v\n%s", err, out)
	}
	cfg := config.Default()
	cfg.HostRoot = node.Root
	cfg.GPU.NVML.Enabled = false
	env, err := discovery.Open(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	s := discovery.New(env, 10*time.Second).Discover(context.Background())
	if s.GPUDriver == nil || s.GPUDriver.Backend != "amdsmi" || s.GPUDriver.Library == nil {
		t.Fatalf("AMD SMI not used (%s): %+v", env.AMDSMIAbsent, s.GPUDriver)
	}
	if got := *s.GPUDriver.Library; got.Path != lib || got.Found != "well-known" {
		t.Errorf("library %+v, want %s found well-known", got, lib)
	}
}

// Issue 14: on a host whose GPUs are bound to their driver on PCI, a GPU
// backend that cannot read them is an error naming the GPUs and the fix,
// not "absent": NVIDIA without libnvidia-ml.so.1, AMD with neither AMD SMI
// nor the amdgpu sysfs files.
func TestGPUsWithoutBackend(t *testing.T) {
	nvidia, err := sim.Build("dgx-h100-ib", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	amd, err := sim.Build("mi300x-roce", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(amd.Root, "sys/class/drm")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		root, failed, absent string
		message              []string
	}{
		{nvidia.Root, "nvml", "amdgpu", []string{
			"8 NVIDIA GPUs on PCI (bound to nvidia) but NVML is not available: NVIDIA driver library libnvidia-ml.so.1 not found; ",
			"NVIDIA container runtime"}},
		{amd.Root, "amdgpu", "nvml", []string{
			"8 AMD GPUs on PCI (bound to amdgpu) but neither AMD SMI nor amdgpu sysfs can read them: no /sys/class/drm; ",
			"gpu.amd.libraryPath"}},
	} {
		cfg := config.Default()
		cfg.HostRoot = tc.root
		// The real loaders, pointed where no library is, so that a
		// machine with NVML or AMD SMI installed gives the same answer.
		cfg.GPU.NVML.LibraryPath = filepath.Join(t.TempDir(), "libnvidia-ml.so.1")
		cfg.GPU.AMD.LibraryPath = filepath.Join(t.TempDir(), "libamd_smi.so")
		env, err := discovery.Open(cfg, "")
		if err != nil {
			t.Fatal(err)
		}
		s := discovery.New(env, 10*time.Second).Discover(context.Background())
		if err := env.Close(); err != nil {
			t.Error(err)
		}
		st, _ := s.Source(tc.failed)
		if st.State != source.Error {
			t.Errorf("%s: %s = %+v, want error", tc.root, tc.failed, st)
		}
		for _, w := range tc.message {
			if !strings.Contains(st.Message, w) {
				t.Errorf("%s message lacks %q: %s", tc.failed, w, st.Message)
			}
		}
		if st, _ := s.Source(tc.absent); st.State != source.Absent {
			t.Errorf("%s = %+v: no GPU of that vendor, so absent", tc.absent, st)
		}
		if len(s.GPUs) != 0 || len(s.GPUsWithoutBackend) != 1 || len(s.GPUsWithoutBackend[0].PCIAddresses) != 8 {
			t.Errorf("%d GPUs, without backend %+v", len(s.GPUs), s.GPUsWithoutBackend)
		}
	}
}
