// Package nvmllib runs the real agent over host roots laid out as each
// platform installs the NVIDIA driver, with a stand-in libnvidia-ml.so.1
// built here, and checks that inspect finds the library and says where and
// how (issue 22). The agent runs as a subprocess: dlopen is process-wide,
// and once a process has bound NVML's symbols to one library it keeps them.
package nvmllib

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/test/tools"
)

var agent string

// multiarch is Debian's library directory name for this architecture, as
// the agent (built for it) searches.
var multiarch = map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gpunode-nvmllib-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agent, err = tools.BuildAgent(dir)
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// standIn compiles testdata/standin_nvml.c reporting driver version ver
// into dir/libnvidia-ml.so.<ver> and returns that path.
func standIn(t *testing.T, dir, ver string, extra ...string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dir, "libnvidia-ml.so."+ver)
	args := append([]string{"-shared", "-fPIC", "-Wall", "-Werror", "-O1", "-Wl,-soname,libnvidia-ml.so.1",
		fmt.Sprintf(`-DDRIVER_VERSION="%s"`, ver), "-o", lib, "testdata/standin_nvml.c"}, extra...)
	if out, err := exec.Command("cc", args...).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	return lib
}

// install puts a stand-in library reporting ver into hostDir of the tree
// at root and links libnvidia-ml.so.1 to it as ldconfig does (relative),
// or with an absolute link when absolute is set (taken inside root).
func install(t *testing.T, root, hostDir, ver string, absolute bool) string {
	t.Helper()
	lib := standIn(t, filepath.Join(root, hostDir), ver)
	target := filepath.Base(lib)
	if absolute {
		target = filepath.Join("/", hostDir, target)
	}
	if err := os.Symlink(target, filepath.Join(root, hostDir, "libnvidia-ml.so.1")); err != nil {
		t.Fatal(err)
	}
	return lib
}

type snapshot struct {
	GPUDriver *struct {
		Backend       string `json:"backend"`
		DriverVersion string `json:"driver_version"`
		Library       *struct {
			Path  string `json:"path"`
			Found string `json:"found"`
		} `json:"library"`
	} `json:"gpu_driver"`
	Sources []struct {
		Name    string `json:"name"`
		State   string `json:"state"`
		Message string `json:"message"`
	} `json:"sources"`
}

// inspect runs `gpunode-agent --host-root root inspect -o json` with the
// given configuration and environment and returns the snapshot and the
// nvml source's state and message.
func inspect(t *testing.T, root, config string, env ...string) (s snapshot, state, msg string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("gpu:\n  amd:\n    enabled: false\n"+config), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(agent, "--config", cfg, "--host-root", root, "inspect", "-o", "json")
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("inspect: %v\n%s", err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("inspect's JSON: %v\n%s", err, stdout.String())
	}
	for _, st := range s.Sources {
		if st.Name == "nvml" {
			return s, st.State, st.Message
		}
	}
	t.Fatalf("no nvml source in %s", stdout.String())
	return
}

// loadable reports whether this machine's loader finds a libnvidia-ml.so.1
// by name (a GPU host): there it comes before the well-known roots.
func loadable() bool {
	out, err := exec.Command("/sbin/ldconfig", "-p").Output()
	return err == nil && bytes.Contains(out, []byte("libnvidia-ml.so.1 "))
}

func wantFound(t *testing.T, s snapshot, state, msg, path, found, ver string) {
	t.Helper()
	if state != "ok" {
		t.Fatalf("nvml source %s: %s", state, msg)
	}
	d := s.GPUDriver
	if d == nil || d.Library == nil {
		t.Fatalf("no gpu_driver.library in the snapshot: %+v", d)
	}
	if d.Backend != "nvml" || d.Library.Path != path || d.Library.Found != found || d.DriverVersion != ver {
		t.Errorf("got %s driver %s from %s (%s), want driver %s from %s (%s)",
			d.Backend, d.DriverVersion, d.Library.Path, d.Library.Found, ver, path, found)
	}
}

// Each platform's layout, found with no configuration (a well-known driver
// root) and with gpu.nvml.driverRoot set as the chart sets it.
func TestPlatformLayouts(t *testing.T) {
	if loadable() {
		t.Skip("this machine's loader finds a libnvidia-ml.so.1 by name, which comes before the well-known roots")
	}
	for _, tc := range []struct {
		platform   string
		driverRoot string // host path
		dir        string // the library's directory under the driver root
		absolute   bool
	}{
		// The driver container's own links are taken inside its root.
		{"GPU operator driver container", "/run/nvidia/driver", "usr/lib/" + multiarch, true},
		{"GKE", "/home/kubernetes/bin/nvidia", "lib64", false},
		{"EKS (Amazon Linux)", "/", "usr/lib64", false},
		{"AKS (Ubuntu)", "/", "usr/lib/" + multiarch, false},
	} {
		t.Run(tc.platform, func(t *testing.T) {
			root := t.TempDir()
			driverRoot := filepath.Join(root, tc.driverRoot)
			lib := install(t, driverRoot, tc.dir, "550.54.15", tc.absolute)
			s, state, msg := inspect(t, root, "")
			wantFound(t, s, state, msg, lib, "well-known", "550.54.15")
			s, state, msg = inspect(t, root, "  nvml:\n    driverRoot: "+tc.driverRoot+"\n")
			wantFound(t, s, state, msg, lib, "driverRoot", "550.54.15")
		})
	}
}

// Two drivers: gpu.nvml.driverRoot wins over the host's own; without it
// the GPU operator's driver root comes before the host's library
// directories; gpu.nvml.libraryPath wins over both.
func TestDriverRootWins(t *testing.T) {
	if loadable() {
		t.Skip("this machine's loader finds a libnvidia-ml.so.1 by name, which comes before the well-known roots")
	}
	root := t.TempDir()
	operator := install(t, filepath.Join(root, "run/nvidia/driver"), "usr/lib/"+multiarch, "570.86.15", false)
	gke := install(t, filepath.Join(root, "home/kubernetes/bin/nvidia"), "lib64", "535.230.02", false)
	host := install(t, root, "usr/lib64", "550.54.15", false)

	s, state, msg := inspect(t, root, "  nvml:\n    driverRoot: /home/kubernetes/bin/nvidia\n")
	wantFound(t, s, state, msg, gke, "driverRoot", "535.230.02")
	s, state, msg = inspect(t, root, "")
	wantFound(t, s, state, msg, operator, "well-known", "570.86.15")
	s, state, msg = inspect(t, root, "  nvml:\n    driverRoot: /\n")
	wantFound(t, s, state, msg, host, "driverRoot", "550.54.15")
	s, state, msg = inspect(t, root, "  nvml:\n    driverRoot: /\n    libraryPath: "+gke+"\n")
	wantFound(t, s, state, msg, gke, "configured", "535.230.02")
}

// The library the container runtime injected is found by name, before
// the well-known roots, and inspect names the file the loader picked.
func TestRuntimeInjected(t *testing.T) {
	if loadable() {
		t.Skip("this machine's loader finds its own libnvidia-ml.so.1 by name")
	}
	root := t.TempDir()
	install(t, filepath.Join(root, "run/nvidia/driver"), "usr/lib64", "570.86.15", false)
	injected := t.TempDir()
	lib := install(t, injected, "lib", "550.54.15", false)
	s, state, msg := inspect(t, root, "", "LD_LIBRARY_PATH="+filepath.Join(injected, "lib"))
	wantFound(t, s, state, msg, lib, "runtime", "550.54.15")
}

// A library that is there but does not load fails the source with its
// path and the loader's error; the next candidate is not used instead.
// When nothing is there, the source is absent and names every path tried.
func TestBrokenAndAbsent(t *testing.T) {
	if loadable() {
		t.Skip("this machine's loader finds a libnvidia-ml.so.1 by name, which comes before the well-known roots")
	}
	root := t.TempDir()
	install(t, root, "usr/lib64", "550.54.15", false)
	broken := filepath.Join(root, "run/nvidia/driver/usr/lib", multiarch, "libnvidia-ml.so.1")
	if err := os.MkdirAll(filepath.Dir(broken), 0o755); err != nil {
		t.Fatal(err)
	}
	// A truncated copy, as a driver container killed mid-install leaves.
	if err := os.WriteFile(broken, []byte("\x7fELF\x02\x01\x01"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, state, msg := inspect(t, root, "")
	if state != "error" || !strings.Contains(msg, broken) || !strings.Contains(msg, "file too short") || s.GPUDriver != nil {
		t.Errorf("broken driver-root library: nvml %s: %s (gpu_driver %+v)", state, msg, s.GPUDriver)
	}

	// A library for another machine (an arm64 driver tree on an x86 node):
	// the stand-in with its ELF header's e_machine rewritten.
	foreign := t.TempDir()
	lib, err := os.ReadFile(standIn(t, t.TempDir(), "550.54.15"))
	if err != nil {
		t.Fatal(err)
	}
	machine := map[string]byte{"amd64": 0xb7, "arm64": 0x3e}[runtime.GOARCH] // EM_AARCH64, EM_X86_64
	lib[18], lib[19] = machine, 0
	other := filepath.Join(foreign, "usr/lib64/libnvidia-ml.so.1")
	if err := os.MkdirAll(filepath.Dir(other), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, lib, 0o644); err != nil {
		t.Fatal(err)
	}
	_, state, msg = inspect(t, foreign, "")
	if state != "error" || !strings.Contains(msg, other) || !strings.Contains(msg, "ELFCLASS64; the agent is "+runtime.GOARCH) {
		t.Errorf("library for another machine: nvml %s: %s", state, msg)
	}

	// A library that loads but whose nvmlInit fails: an error with the
	// library's path and NVML's own words for it, or absent, with the path,
	// when the kernel driver is not loaded (a node whose driver container
	// has not loaded the module yet).
	for _, tc := range []struct{ ret, state, want string }{
		{"999", "error", "nvmlInit (library %s): stand-in NVML error 999"},
		{"9", "absent", "NVIDIA kernel driver is not loaded (library %s)"},
	} {
		root := t.TempDir()
		lib := standIn(t, filepath.Join(root, "usr/lib64"), "550.54.15", "-DINIT_RETURN="+tc.ret)
		if err := os.Symlink(filepath.Base(lib), filepath.Join(root, "usr/lib64/libnvidia-ml.so.1")); err != nil {
			t.Fatal(err)
		}
		_, state, msg = inspect(t, root, "")
		if want := fmt.Sprintf(tc.want, lib); state != tc.state || msg != want {
			t.Errorf("nvmlInit returns %s: nvml %s: %s, want %s: %s", tc.ret, state, msg, tc.state, want)
		}
	}

	// By name, a library whose dependency is missing is broken, not absent.
	dep := t.TempDir()
	missing := filepath.Join(dep, "libstandin_missing.so")
	cc := exec.Command("cc", "-shared", "-fPIC", "-o", missing, "-x", "c", "-")
	cc.Stdin = strings.NewReader("int standin_missing_dependency(void) { return 0; }\n")
	if out, err := cc.CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	injected := filepath.Join(t.TempDir(), "lib")
	standIn(t, injected, "550.54.15", "-DNEEDS_MISSING", "-L"+dep, "-lstandin_missing")
	if err := os.Symlink("libnvidia-ml.so.550.54.15", filepath.Join(injected, "libnvidia-ml.so.1")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(missing); err != nil {
		t.Fatal(err)
	}
	_, state, msg = inspect(t, t.TempDir(), "", "LD_LIBRARY_PATH="+injected)
	if state != "error" || !strings.Contains(msg, "libstandin_missing.so: cannot open shared object file") || !strings.Contains(msg, "(runtime)") {
		t.Errorf("injected library missing a dependency: nvml %s: %s", state, msg)
	}

	empty := t.TempDir()
	_, state, msg = inspect(t, empty, "  nvml:\n    driverRoot: /run/nvidia/driver\n")
	dirs := "{usr/lib/" + multiarch + ",usr/lib64,lib64,lib/" + multiarch + ",usr/lib,lib}/libnvidia-ml.so.1"
	want := "NVIDIA driver library libnvidia-ml.so.1 not found; tried " + empty + "/run/nvidia/driver/" + dirs +
		", libnvidia-ml.so.1 by name, " + empty + "/home/kubernetes/bin/nvidia/" + dirs + ", " + empty + "/" + dirs
	if state != "absent" || msg != want {
		t.Errorf("nothing there: nvml %s: %s\nwant %s", state, msg, want)
	}
}
