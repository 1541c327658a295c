// Package arm64 cross-compiles the agent for Grace (GB200/GB300 NVL
// nodes) the way `make build-arm64` does and checks the result is an
// aarch64 Linux program that links glibc dynamically: cgo was on (NVML,
// verbs and AMD SMI are dlopened through it), not silently off.
package arm64

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCrossBuild(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "gpunode-agent-arm64")
	// The same two steps as the Makefile's build-arm64 target.
	script := `eval "$(scripts/arm64-toolchain.sh)" && go build -trimpath -o "$1" ./cmd/gpunode-agent`
	cmd := exec.CommandContext(t.Context(), "bash", "-c", script, "build", bin)
	cmd.Dir = root
	cmd.Env = os.Environ()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cross build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 || f.Class != elf.ELFCLASS64 {
		t.Errorf("machine %v, class %v; want EM_AARCH64, ELFCLASS64", f.Machine, f.Class)
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(libs, " "), "libc.so.6") {
		t.Errorf("imported libraries %v: no libc.so.6, so cgo was off", libs)
	}
	interp := f.Section(".interp")
	if interp == nil {
		t.Fatal("no .interp section: not dynamically linked")
	}
	b, err := interp.Data()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimRight(string(b), "\x00"); got != "/lib/ld-linux-aarch64.so.1" {
		t.Errorf("interpreter %q, want /lib/ld-linux-aarch64.so.1", got)
	}
}
