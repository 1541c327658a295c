package vm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/gpunode/gpunode/test/tools"
)

// debDir is where unpacked Debian packages are cached: one directory per
// package and version, <cache>/debs/<name>_<version>.
func debDir() (string, error) {
	cache, err := tools.CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "debs"), nil
}

// Package returns the directory a Debian package is unpacked in,
// downloading it with apt-get download and unpacking it with dpkg-deb -x
// the first time. Nothing is installed on this machine. The version is
// the candidate apt-cache knows; without package lists (apt-get update
// never ran) the newest cached version is used, and failing that the
// error says what to run.
func Package(name string) (string, error) {
	dir, err := debDir()
	if err != nil {
		return "", err
	}
	version, verr := candidate(name)
	if verr != nil {
		if cached := newestCached(dir, name); cached != "" {
			return cached, nil
		}
		return "", verr
	}
	dest := filepath.Join(dir, name+"_"+sanitizeVersion(version))
	if _, err := os.Stat(filepath.Join(dest, ".complete")); err == nil {
		return dest, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, ".fetch-"+name+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	// apt-get download as root warns that the _apt user cannot write the
	// directory and downloads unsandboxed; harmless.
	cmd := exec.Command("apt-get", "download", "-q", name+"="+version)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s=%s: %w\n%s\n(run `apt-get update` first if the package lists are missing)", name, version, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s: want one .deb, got %v", name, debs)
	}
	root := filepath.Join(tmp, "root")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x %s: %w\n%s", debs[0], err, out)
	}
	if err := os.WriteFile(filepath.Join(root, ".complete"), []byte(version+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(root, dest); err != nil {
		if _, statErr := os.Stat(filepath.Join(dest, ".complete")); statErr == nil {
			return dest, nil // another test process won the race
		}
		return "", err
	}
	return dest, nil
}

// candidate asks apt-cache for the version apt would fetch.
func candidate(name string) (string, error) {
	out, err := exec.Command("apt-cache", "show", "--no-all-versions", name).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache show %s: %w (is this Debian with package lists? run `apt-get update`)", name, err)
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(line, "Version: "); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("apt-cache show %s: no Version", name)
}

// dependsOn returns the first dependency of a metapackage
// (linux-image-amd64 -> linux-image-6.1.0-56-amd64).
func dependsOn(meta string) (string, error) {
	out, err := exec.Command("apt-cache", "depends", meta).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w (run `apt-get update`)", meta, err)
	}
	for line := range strings.Lines(string(out)) {
		if dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok {
			return strings.TrimSpace(dep), nil
		}
	}
	return "", fmt.Errorf("apt-cache depends %s: no dependency", meta)
}

var unsafeVersion = regexp.MustCompile(`[^A-Za-z0-9.+~-]`)

// sanitizeVersion makes a version usable in a file name (epochs have ':').
func sanitizeVersion(v string) string { return unsafeVersion.ReplaceAllString(v, "_") }

// newestCached finds a cached unpacked version of a package.
func newestCached(dir, name string) string {
	matches, _ := filepath.Glob(filepath.Join(dir, name+"_*", ".complete"))
	slices.Sort(matches)
	if len(matches) == 0 {
		return ""
	}
	return filepath.Dir(matches[len(matches)-1])
}

// Kernel is a Debian kernel image, unpacked.
type Kernel struct {
	// Version is the release ("6.1.0-56-amd64").
	Version string
	// Image is the vmlinuz file.
	Image string
	// Modules is lib/modules/<Version>.
	Modules string
}

// DebianKernel fetches the kernel linux-image-amd64 points to (never
// installed: only unpacked into the cache).
func DebianKernel() (Kernel, error) {
	pkg, err := dependsOn("linux-image-amd64")
	var dir string
	if err != nil {
		// Offline: any cached kernel.
		cache, cerr := debDir()
		if cerr != nil {
			return Kernel{}, err
		}
		if dir = newestCached(cache, "linux-image-*-amd64"); dir == "" {
			return Kernel{}, err
		}
	} else if dir, err = Package(pkg); err != nil {
		return Kernel{}, err
	}
	images, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return Kernel{}, fmt.Errorf("kernel package %s: want one boot/vmlinuz-*, got %v", dir, images)
	}
	version := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	mods := filepath.Join(dir, "lib", "modules", version)
	if _, err := os.Stat(mods); err != nil {
		return Kernel{}, fmt.Errorf("kernel package %s: %w", dir, err)
	}
	return Kernel{Version: version, Image: images[0], Modules: mods}, nil
}

// Busybox returns the static busybox of Debian's busybox-static.
func Busybox() (string, error) {
	dir, err := Package("busybox-static")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "bin", "busybox")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("busybox-static: %w", err)
	}
	return bin, nil
}

// QEMU returns qemu-system-x86_64, which scripts/deps.sh installs (it is
// a host tool; unlike the kernel it runs on this machine).
func QEMU() (string, error) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", errors.New("qemu-system-x86_64 not found: run scripts/deps.sh as root, or apt-get install qemu-system-x86")
	}
	return bin, nil
}

// sharedLibraries lists the shared libraries a binary loads (ldd),
// including the dynamic loader; none for static binaries. libPath adds
// directories (unpacked packages) to the search.
func sharedLibraries(bin string, libPath []string) ([]string, error) {
	cmd := exec.Command("ldd", bin)
	if len(libPath) > 0 {
		cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+strings.Join(libPath, ":"))
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if strings.Contains(stdout.String()+stderr.String(), "not a dynamic executable") {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, stderr.String())
	}
	return parseLdd(stdout.String())
}

// parseLdd reads ldd's output:
//
//	linux-vdso.so.1 (0x00007ffd...)
//	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
//	/lib64/ld-linux-x86-64.so.2 (0x...)
//	libfoo.so.1 => not found
func parseLdd(out string) ([]string, error) {
	var libs []string
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if name, rest, ok := strings.Cut(line, " => "); ok {
			if strings.HasPrefix(rest, "not found") {
				return nil, fmt.Errorf("ldd: %s not found", name)
			}
			path, _, _ := strings.Cut(rest, " (")
			if strings.HasPrefix(path, "/") {
				libs = append(libs, path)
			}
			continue
		}
		path, _, _ := strings.Cut(line, " (")
		if strings.HasPrefix(path, "/") { // the loader; vdso has no path
			libs = append(libs, path)
		}
	}
	slices.Sort(libs)
	return slices.Compact(libs), nil
}

// SoftRoCEGuest unpacks pkgs for a soft-RoCE guest; they must include
// libibverbs1 and ibverbs-providers. It returns where each package was
// unpacked, the library directories ldd looks in, and the files that give
// the guest libibverbs with its rxe provider, which libibverbs loads with
// dlopen (so ldd does not bring it along).
func SoftRoCEGuest(pkgs []string) (dirs map[string]string, libPath []string, files []File, err error) {
	dirs = map[string]string{}
	for _, p := range pkgs {
		d, err := Package(p)
		if err != nil {
			return nil, nil, nil, err
		}
		dirs[p] = d
		libPath = append(libPath, filepath.Join(d, "usr/lib/x86_64-linux-gnu"), filepath.Join(d, "lib/x86_64-linux-gnu"))
	}
	const libs = "usr/lib/x86_64-linux-gnu/"
	verbsLib, err := filepath.EvalSymlinks(filepath.Join(dirs["libibverbs1"], libs, "libibverbs.so.1"))
	if err != nil {
		return nil, nil, nil, err
	}
	files = []File{
		{Path: "/" + libs + "libibverbs.so.1", HostPath: verbsLib, Libraries: true},
		{Path: "/" + libs + "libibverbs/librxe-rdmav34.so", HostPath: filepath.Join(dirs["ibverbs-providers"], libs, "libibverbs/librxe-rdmav34.so"), Libraries: true},
		{Path: "/etc/libibverbs.d/rxe.driver", HostPath: filepath.Join(dirs["ibverbs-providers"], "etc/libibverbs.d/rxe.driver")},
	}
	return dirs, libPath, files, nil
}
