package nvml

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/dl"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
)

// LibraryName is the NVML library's soname, what the driver installs and
// the container runtime injects.
const LibraryName = "libnvidia-ml.so.1"

// WellKnownDriverRoots are host paths where NVIDIA drivers are installed,
// searched in this order when neither gpu.nvml.libraryPath nor a library
// injected by the container runtime is there: the GPU operator's driver
// container (also OpenShift), GKE's driver installer, and the host's own
// library directories (EKS and AKS GPU images, hand-installed drivers).
var WellKnownDriverRoots = []string{"/run/nvidia/driver", "/home/kubernetes/bin/nvidia", "/"}

// libraryDirs are the directories under a driver root that hold
// libraries, for the agent's architecture: Debian's multiarch directory
// first, then Red Hat's and GKE's lib64, then the plain ones.
func libraryDirs(goarch string) []string {
	multiarch := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[goarch]
	var dirs []string
	if multiarch != "" {
		dirs = append(dirs, "usr/lib/"+multiarch)
	}
	dirs = append(dirs, "usr/lib64", "lib64")
	if multiarch != "" {
		dirs = append(dirs, "lib/"+multiarch)
	}
	return append(dirs, "usr/lib", "lib")
}

// Candidate is one place the library is looked for.
type Candidate struct {
	// Root is the directory, as this process sees it, that absolute
	// symlinks below it are taken relative to: a driver root under the
	// host root. Empty for a path or name handed to dlopen as it is.
	Root string
	// File is the library's path under Root, or with no Root the path or
	// bare name given to dlopen (a bare name searches the loader's path).
	File string
	// Found is how the library counts as found (gpu.Found*).
	Found string
}

// String is the candidate as a path this process sees.
func (c Candidate) String() string {
	if c.Root == "" {
		return c.File
	}
	return path.Join(c.Root, c.File)
}

// Candidates lists, in order, where libnvidia-ml.so.1 is looked for:
// libraryPath alone when set; else the library directories of driverRoot
// (a host path) under hostRoot, then the library by name (the one the
// container runtime injected), then those of each well-known driver root
// under hostRoot. goarch picks the multiarch directories. Candidates
// naming the same file are listed once.
func Candidates(hostRoot, driverRoot, libraryPath, goarch string) []Candidate {
	if libraryPath != "" {
		return []Candidate{{File: libraryPath, Found: gpu.FoundConfigured}}
	}
	var out []Candidate
	seen := map[string]bool{}
	add := func(c Candidate) {
		if !seen[c.String()] {
			seen[c.String()] = true
			out = append(out, c)
		}
	}
	underRoot := func(root, found string) {
		r := path.Join("/", hostRoot, root)
		for _, d := range libraryDirs(goarch) {
			add(Candidate{Root: r, File: path.Join(d, LibraryName), Found: found})
		}
	}
	if driverRoot != "" {
		underRoot(driverRoot, gpu.FoundDriverRoot)
	}
	add(Candidate{File: LibraryName, Found: gpu.FoundRuntime})
	for _, r := range WellKnownDriverRoots {
		underRoot(r, gpu.FoundWellKnown)
	}
	return out
}

// errNotHere is a candidate whose file does not exist.
var errNotHere = errors.New("not found")

// Locate returns the first candidate whose library exists and loads. A
// library that exists but does not load (another architecture, a broken
// file, a missing dependency) is an error naming it: it is not passed
// over for the next candidate, so the agent never quietly uses another
// driver's library than the one it was pointed at. When no candidate
// exists the error is source.ErrAbsent and lists every place tried.
func Locate(cands []Candidate) (lib gpu.Library, load string, err error) {
	for _, c := range cands {
		lib, load, err := probe(c)
		switch {
		case err == nil:
			return lib, load, nil
		case !errors.Is(err, errNotHere):
			return gpu.Library{}, "", fmt.Errorf("NVIDIA library %s (%s) does not load: %w", c.String(), c.Found, err)
		}
	}
	return gpu.Library{}, "", source.NewAbsent("NVIDIA driver library %s not found; tried %s", LibraryName, tried(cands))
}

// tried names every candidate, those under one root together in shell
// brace form (/host/run/nvidia/driver/{usr/lib64,lib64}/libnvidia-ml.so.1):
// a message that lists them one by one runs to 19 paths.
func tried(cands []Candidate) string {
	var out []string
	for i := 0; i < len(cands); {
		c := cands[i]
		j := i + 1
		for j < len(cands) && c.Root != "" && cands[j].Root == c.Root && path.Base(cands[j].File) == path.Base(c.File) {
			j++
		}
		switch {
		case c.Root == "" && !strings.Contains(c.File, "/"):
			out = append(out, c.File+" by name")
		case j-i == 1:
			out = append(out, c.String())
		default:
			dirs := make([]string, 0, j-i)
			for _, d := range cands[i:j] {
				dirs = append(dirs, path.Dir(d.File))
			}
			out = append(out, path.Join(c.Root, "{"+strings.Join(dirs, ",")+"}", path.Base(c.File)))
		}
		i = j
	}
	return strings.Join(out, ", ")
}

// probe checks that c's library exists and dlopen accepts it, and returns
// where it is and the path to load it by.
func probe(c Candidate) (gpu.Library, string, error) {
	file := c.File
	if c.Root != "" {
		fsys, err := hostfs.New(c.Root)
		if err != nil {
			return gpu.Library{}, "", errNotHere
		}
		resolved, err := fsys.Resolve(c.File)
		if errors.Is(err, fs.ErrNotExist) {
			return gpu.Library{}, "", errNotHere
		}
		if err != nil {
			return gpu.Library{}, "", err
		}
		file = fsys.Path(resolved)
	} else if strings.Contains(file, "/") {
		if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
			return gpu.Library{}, "", errNotHere
		}
	}
	// RTLD_LOCAL: the probe's symbols stay out of the global scope; go-nvml
	// opens the library again for use.
	h := dl.New(file, dl.RTLD_LAZY|dl.RTLD_LOCAL)
	if err := h.Open(); err != nil {
		// By name, the loader says the file itself is missing this way; a
		// missing dependency names the dependency instead.
		if !strings.Contains(file, "/") && strings.HasPrefix(err.Error(), file+": cannot open shared object file") {
			return gpu.Library{}, "", errNotHere
		}
		// glibc words a library for another machine "No such file or
		// directory"; say what it is.
		if strings.Contains(file, "/") {
			if why := foreignELF(file, runtime.GOARCH); why != "" {
				return gpu.Library{}, "", fmt.Errorf("%w (%s)", err, why)
			}
		}
		return gpu.Library{}, "", err
	}
	defer h.Close()
	lib := gpu.Library{Path: file, Found: c.Found}
	if !strings.Contains(file, "/") {
		// Loaded by name: name the file the loader picked.
		if maps, err := os.ReadFile("/proc/self/maps"); err == nil {
			if p := gpu.MappedLibrary(maps, file); p != "" {
				lib.Path = p
			}
		}
	}
	return lib, file, nil
}

// elfMachines is the ELF machine and class of each architecture the
// agent is built for.
var elfMachines = map[string]struct {
	machine elf.Machine
	class   elf.Class
}{
	"amd64": {elf.EM_X86_64, elf.ELFCLASS64},
	"arm64": {elf.EM_AARCH64, elf.ELFCLASS64},
}

// foreignELF says how the ELF file at name differs from what a goarch
// process loads ("built for EM_AARCH64 ELFCLASS64; the agent is amd64");
// "" when it does not, or it is no ELF file, or goarch is not known.
func foreignELF(name, goarch string) string {
	want, ok := elfMachines[goarch]
	if !ok {
		return ""
	}
	f, err := elf.Open(name)
	if err != nil {
		return ""
	}
	defer f.Close()
	if f.Machine == want.machine && f.Class == want.class {
		return ""
	}
	return fmt.Sprintf("built for %s %s; the agent is %s", f.Machine, f.Class, goarch)
}
