// Package tools installs the real components tests run (helm, Prometheus,
// promtool, node_exporter; kube-apiserver and etcd as later tests need
// them) into a cache directory, once per version, so a fresh machine needs
// only Go and gcc.
package tools

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// HelmVersion is the helm the tests use; bump it to test another.
const HelmVersion = "v3.22.0"

// CacheDir is $GPUNODE_CACHE, else $XDG_CACHE_HOME/gpunode, else
// ~/.cache/gpunode. It survives `git clean` and fresh clones.
func CacheDir() (string, error) {
	if d := os.Getenv("GPUNODE_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory (set GPUNODE_CACHE): %w", err)
	}
	return filepath.Join(d, "gpunode"), nil
}

// Helm returns the path of helm HelmVersion, installing it if needed.
func Helm() (string, error) {
	return goInstall("helm", "helm.sh/helm/v3/cmd/helm", HelmVersion)
}

// goInstall builds a Go command at an exact version into
// <cache>/<name>-<version>/<name>. It installs into a fresh directory and
// renames it into place, so concurrent test binaries never see half a file.
func goInstall(name, pkg, version string) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, name+"-"+version)
	bin := filepath.Join(dir, name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cache, name+"-install-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "install", pkg+"@"+version)
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w\n%s\nInstall it by hand with: GOBIN=%s go install %s@%s",
			pkg, version, err, out, dir, pkg, version)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(bin); statErr == nil {
			return bin, nil // another process won the race
		}
		return "", err
	}
	return bin, nil
}

// Debian packages the tests run, by upstream version: what bookworm ships.
const (
	PrometheusVersion   = "2.42"
	NodeExporterVersion = "1.5"
)

// Prometheus returns the path of the prometheus server from Debian's
// prometheus package (PrometheusVersion), installing it if needed.
func Prometheus() (string, error) {
	dir, err := debTool("prometheus", PrometheusVersion, "prometheus", "promtool")
	return filepath.Join(dir, "prometheus"), err
}

// Promtool returns the path of promtool from the same package.
func Promtool() (string, error) {
	dir, err := debTool("prometheus", PrometheusVersion, "prometheus", "promtool")
	return filepath.Join(dir, "promtool"), err
}

// NodeExporter returns the path of node_exporter from Debian's
// prometheus-node-exporter package (NodeExporterVersion).
func NodeExporter() (string, error) {
	dir, err := debTool("prometheus-node-exporter", NodeExporterVersion, "prometheus-node-exporter")
	return filepath.Join(dir, "prometheus-node-exporter"), err
}

// debTool fetches a Debian package with apt-get download (no install, no
// root needed once the package lists exist), checks its upstream version,
// and unpacks the named /usr/bin binaries into <cache>/<pkg>-<version>/.
// The package's binaries are statically linked Go programs.
func debTool(pkg, version string, bins ...string) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, pkg+"-"+version)
	if haveAll(dir, bins) {
		return dir, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cache, pkg+"-install-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("install %s %s: %w\nInstall it by hand with: cd %s && apt-get download %s && dpkg-deb -x %s_*.deb x && mkdir -p %s && cp %s %s/",
			pkg, version, err, tmp, pkg, pkg, dir, binPaths("x/usr/bin", bins), dir)
	}
	if out, err := run(tmp, "apt-get", "download", pkg); err != nil {
		// A fresh machine has no package lists yet; root can fetch them.
		if os.Geteuid() != 0 {
			return fail(fmt.Errorf("apt-get download: %v\n%s(as root, run apt-get update first)", err, out))
		}
		if out, err := run(tmp, "apt-get", "update", "-qq"); err != nil {
			return fail(fmt.Errorf("apt-get update: %v\n%s", err, out))
		}
		if out, err := run(tmp, "apt-get", "download", pkg); err != nil {
			return fail(fmt.Errorf("apt-get download: %v\n%s", err, out))
		}
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return fail(fmt.Errorf("expected one %s .deb, found %v", pkg, debs))
	}
	v, err := run(tmp, "dpkg-deb", "-f", debs[0], "Version")
	if err != nil {
		return fail(fmt.Errorf("dpkg-deb -f: %v", err))
	}
	// "2.42.0+ds-5+deb12u1": the upstream version starts with ours.
	if got := strings.TrimSpace(v); !strings.HasPrefix(got, version+".") {
		return fail(fmt.Errorf("the archive has %s %s, the tests need %s.x", pkg, got, version))
	}
	if out, err := run(tmp, "dpkg-deb", "-x", debs[0], "root"); err != nil {
		return fail(fmt.Errorf("dpkg-deb -x: %v\n%s", err, out))
	}
	stage := filepath.Join(tmp, "bin")
	if err := os.Mkdir(stage, 0o755); err != nil {
		return fail(err)
	}
	for _, b := range bins {
		if err := os.Rename(filepath.Join(tmp, "root/usr/bin", b), filepath.Join(stage, b)); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(stage, dir); err != nil {
		if haveAll(dir, bins) {
			return dir, nil // another process won the race
		}
		return fail(err)
	}
	return dir, nil
}

func haveAll(dir string, bins []string) bool {
	for _, b := range bins {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return false
		}
	}
	return true
}

func binPaths(dir string, bins []string) string {
	var p []string
	for _, b := range bins {
		p = append(p, filepath.Join(dir, b))
	}
	return strings.Join(p, " ")
}

// run runs a command in dir and returns its combined output.
func run(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.Error
	if errors.As(err, &ee) {
		err = fmt.Errorf("%s is not installed (this needs a Debian machine): %w", name, err)
	}
	return out.String(), err
}
