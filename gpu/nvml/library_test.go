package nvml

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/internal/source"
)

func TestCandidates(t *testing.T) {
	names := func(cs []Candidate) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Found+" "+c.String())
		}
		return out
	}
	wellKnown := func(hostRoot string) []string {
		var out []string
		for _, r := range []string{"/run/nvidia/driver", "/home/kubernetes/bin/nvidia", ""} {
			for _, d := range []string{"usr/lib/x86_64-linux-gnu", "usr/lib64", "lib64", "lib/x86_64-linux-gnu", "usr/lib", "lib"} {
				out = append(out, "well-known "+filepath.Join("/", hostRoot, r, d, LibraryName))
			}
		}
		return out
	}
	for _, tc := range []struct {
		name                                    string
		hostRoot, driverRoot, libraryPath, arch string
		want                                    []string
	}{
		{"libraryPath wins", "/host", "/run/nvidia/driver", "/opt/nv/libnvidia-ml.so.1", "amd64",
			[]string{"configured /opt/nv/libnvidia-ml.so.1"}},
		{"default: runtime, then well-known roots", "/host", "", "", "amd64",
			append([]string{"runtime libnvidia-ml.so.1"}, wellKnown("/host")...)},
		{"driverRoot first; its paths are not listed again", "/host", "/run/nvidia/driver", "", "amd64",
			append([]string{
				"driverRoot /host/run/nvidia/driver/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
				"driverRoot /host/run/nvidia/driver/usr/lib64/libnvidia-ml.so.1",
				"driverRoot /host/run/nvidia/driver/lib64/libnvidia-ml.so.1",
				"driverRoot /host/run/nvidia/driver/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
				"driverRoot /host/run/nvidia/driver/usr/lib/libnvidia-ml.so.1",
				"driverRoot /host/run/nvidia/driver/lib/libnvidia-ml.so.1",
				"runtime libnvidia-ml.so.1"}, wellKnown("/host")[6:]...)},
		{"host root /", "/", "", "", "amd64", append([]string{"runtime libnvidia-ml.so.1"}, wellKnown("/")...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := names(Candidates(tc.hostRoot, tc.driverRoot, tc.libraryPath, tc.arch)); !slices.Equal(got, tc.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
	// On arm64 the multiarch directories are aarch64's; GKE's lib64 is there too.
	got := names(Candidates("/host", "/home/kubernetes/bin/nvidia", "", "arm64"))
	for _, want := range []string{"driverRoot /host/home/kubernetes/bin/nvidia/usr/lib/aarch64-linux-gnu/libnvidia-ml.so.1", "driverRoot /host/home/kubernetes/bin/nvidia/lib64/libnvidia-ml.so.1"} {
		if !slices.Contains(got, want) {
			t.Errorf("arm64 candidates lack %q: %v", want, got)
		}
	}
	if slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "x86_64") }) {
		t.Errorf("arm64 candidates name x86_64 directories: %v", got)
	}
}

// Nothing there: absent, and every place tried is named.
func TestLocateNothing(t *testing.T) {
	root := t.TempDir()
	cands := Candidates(root, "/run/nvidia/driver", "", "amd64")
	cands = slices.DeleteFunc(cands, func(c Candidate) bool { return c.Root == "" }) // this machine's loader path may hold one
	_, _, err := Locate(cands)
	if !errors.Is(err, source.ErrAbsent) {
		t.Fatalf("Locate: %v, want absent", err)
	}
	dirs := "{usr/lib/x86_64-linux-gnu,usr/lib64,lib64,lib/x86_64-linux-gnu,usr/lib,lib}/libnvidia-ml.so.1"
	want := "NVIDIA driver library libnvidia-ml.so.1 not found; tried " + root + "/run/nvidia/driver/" + dirs + ", " +
		root + "/home/kubernetes/bin/nvidia/" + dirs + ", " + root + "/" + dirs
	if err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

func TestTried(t *testing.T) {
	for _, tc := range []struct {
		cands []Candidate
		want  string
	}{
		{[]Candidate{{File: "/opt/nv/libnvidia-ml.so.1"}}, "/opt/nv/libnvidia-ml.so.1"},
		{[]Candidate{{File: "libnvidia-ml.so.1"}, {Root: "/h", File: "lib64/libnvidia-ml.so.1"}}, "libnvidia-ml.so.1 by name, /h/lib64/libnvidia-ml.so.1"},
		{[]Candidate{{Root: "/h/a", File: "lib64/libnvidia-ml.so.1"}, {Root: "/h/a", File: "usr/lib/libnvidia-ml.so.1"}, {Root: "/h", File: "lib/libnvidia-ml.so.1"}},
			"/h/a/{lib64,usr/lib}/libnvidia-ml.so.1, /h/lib/libnvidia-ml.so.1"},
		{nil, ""},
	} {
		if got := tried(tc.cands); got != tc.want {
			t.Errorf("tried(%v) = %q, want %q", tc.cands, got, tc.want)
		}
	}
}

// A file that is there but is no library is an error naming it, not
// passed over for the next candidate.
func TestLocateBroken(t *testing.T) {
	root := t.TempDir()
	bad := filepath.Join(root, "run/nvidia/driver/usr/lib64", LibraryName)
	if err := os.MkdirAll(filepath.Dir(bad), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("not an ELF file, long enough to have a header......................"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := Locate(Candidates(root, "/run/nvidia/driver", "", "amd64"))
	if err == nil || errors.Is(err, source.ErrAbsent) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "invalid ELF header") {
		t.Fatalf("Locate: %v", err)
	}
}

// A library for another machine is named as such: glibc says only "No such
// file or directory". The ELF header is this test binary's own, with its
// machine field rewritten.
func TestForeignELF(t *testing.T) {
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	native := filepath.Join(dir, "native")
	if err := os.WriteFile(native, self, 0o644); err != nil {
		t.Fatal(err)
	}
	if why := foreignELF(native, runtime.GOARCH); why != "" {
		t.Errorf("this binary: %s", why)
	}
	other := slices.Clone(self)
	other[18], other[19] = 0x08, 0x00 // e_machine EM_MIPS (little-endian ELF on amd64 and arm64)
	foreign := filepath.Join(dir, "foreign")
	if err := os.WriteFile(foreign, other, 0o644); err != nil {
		t.Fatal(err)
	}
	if why := foreignELF(foreign, runtime.GOARCH); why != "built for EM_MIPS ELFCLASS64; the agent is "+runtime.GOARCH {
		t.Errorf("a MIPS file: %q", why)
	}
	if why := foreignELF("library_test.go", runtime.GOARCH); why != "" {
		t.Errorf("not an ELF file: %q", why)
	}
	if why := foreignELF(native, "riscv64"); why != "" {
		t.Errorf("an architecture without a table entry: %q", why)
	}
}
