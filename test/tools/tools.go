// Package tools installs the real components tests run (helm today;
// kube-apiserver, etcd, Prometheus as later tests need them) into a cache
// directory, once per version, so a fresh machine needs only Go and gcc.
package tools

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
