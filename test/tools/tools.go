// Package tools installs the real components tests run (helm,
// kube-apiserver, etcd; Prometheus as later tests need them) into a cache
// directory, once per version, so a fresh machine needs only Go and gcc.
package tools

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// HelmVersion is the helm the tests use; bump it to test another.
const HelmVersion = "v3.22.0"

// KubeVersion is the kube-apiserver the tests run: the newest release on
// the module proxy when this was written (it needs Go 1.26).
const KubeVersion = "v1.37.2"

// EtcdVersion is the etcd server the tests run kube-apiserver on.
const EtcdVersion = "v3.7.3"

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
	return install("helm", HelmVersion, func(dir string) error {
		return goCmd(dir, "", "install", "helm.sh/helm/v3/cmd/helm@"+HelmVersion)
	})
}

// KubeAPIServer returns the path of kube-apiserver KubeVersion, building
// it if needed (about 6 minutes and 3 GB of memory on 2 cores, once).
//
// `go install k8s.io/kubernetes/cmd/kube-apiserver@v` is refused because
// k8s.io/kubernetes points its staging modules (k8s.io/api, ...) at local
// directories with replace directives. So the build runs in a throwaway
// module that requires k8s.io/kubernetes and replaces each staging module
// with its published v0.X.Y twin; the list is read from upstream's own
// go.mod, so a version bump needs no edit here.
func KubeAPIServer() (string, error) {
	return install("kube-apiserver", KubeVersion, func(dir string) error {
		mod, err := throwawayModule(dir, "k8s.io/kubernetes", KubeVersion)
		if err != nil {
			return err
		}
		staging := "v0" + strings.TrimPrefix(KubeVersion, "v1") // v1.37.2 -> v0.37.2
		replaces, err := localReplaces(mod, "k8s.io/kubernetes", KubeVersion)
		if err != nil {
			return err
		}
		args := []string{"mod", "edit"}
		for _, r := range replaces {
			// The sample-* modules are not on the proxy and the apiserver does not use them.
			if strings.HasPrefix(r, "k8s.io/sample-") {
				continue
			}
			args = append(args, "-replace="+r+"="+r+"@"+staging)
		}
		if err := goCmd("", mod, args...); err != nil {
			return err
		}
		if err := goCmd("", mod, "get", "k8s.io/kubernetes/cmd/kube-apiserver@"+KubeVersion); err != nil {
			return err
		}
		major, minor, _ := strings.Cut(strings.TrimPrefix(KubeVersion, "v"), ".")
		minor, _, _ = strings.Cut(minor, ".")
		v := "k8s.io/component-base/version"
		ldflags := fmt.Sprintf("-s -w -X %[1]s.gitVersion=%[2]s -X %[1]s.gitMajor=%[3]s -X %[1]s.gitMinor=%[4]s -X %[1]s.gitTreeState=clean",
			v, KubeVersion, major, minor)
		return goCmd("", mod, "build", "-trimpath", "-ldflags", ldflags, "-o", filepath.Join(dir, "kube-apiserver"), "k8s.io/kubernetes/cmd/kube-apiserver")
	})
}

// Etcd returns the path of etcd EtcdVersion, building it if needed (about
// 30 s). Its module root is the server's main package, but the module
// has replace directives too, hence the throwaway module.
func Etcd() (string, error) {
	return install("etcd", EtcdVersion, func(dir string) error {
		mod, err := throwawayModule(dir, "go.etcd.io/etcd/server/v3", EtcdVersion)
		if err != nil {
			return err
		}
		if err := goCmd("", mod, "get", "go.etcd.io/etcd/server/v3@"+EtcdVersion); err != nil {
			return err
		}
		return goCmd("", mod, "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "etcd"), "go.etcd.io/etcd/server/v3")
	})
}

// install builds a tool at an exact version into <cache>/<name>-<version>/<name>.
// build writes into a fresh directory that is renamed into place, so
// concurrent test binaries never see half a file.
func install(name, version string, build func(dir string) error) (string, error) {
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
	if err := build(tmp); err != nil {
		return "", fmt.Errorf("install %s %s: %w", name, version, err)
	}
	// Only the binary moves into place; the throwaway module stays behind.
	final, err := os.MkdirTemp(cache, name+"-final-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(final)
	if err := os.Rename(filepath.Join(tmp, name), filepath.Join(final, name)); err != nil {
		return "", err
	}
	if err := os.Chmod(final, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(final, dir); err != nil {
		if _, statErr := os.Stat(bin); statErr == nil {
			return bin, nil // another process won the race
		}
		return "", err
	}
	return bin, nil
}

// throwawayModule creates a module under dir for building path@version.
func throwawayModule(dir, path, version string) (string, error) {
	mod := filepath.Join(dir, "mod")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return "", err
	}
	gomod := "module gpunode.invalid/build\n\ngo 1.26\n"
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte(gomod), 0o644); err != nil {
		return "", err
	}
	return mod, nil
}

// localReplaces lists the modules that path@version's go.mod replaces with
// local directories (its staging modules).
func localReplaces(mod, path, version string) ([]string, error) {
	var out bytes.Buffer
	cmd := exec.Command("go", "mod", "download", "-json", path+"@"+version)
	cmd.Dir, cmd.Stdout, cmd.Stderr = mod, &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go mod download %s@%s: %w", path, version, err)
	}
	var dl struct{ GoMod string }
	if err := json.Unmarshal(out.Bytes(), &dl); err != nil || dl.GoMod == "" {
		return nil, fmt.Errorf("go mod download %s@%s: no go.mod in %q", path, version, out.String())
	}
	out.Reset()
	cmd = exec.Command("go", "mod", "edit", "-json", dl.GoMod)
	cmd.Dir, cmd.Stdout, cmd.Stderr = mod, &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("read %s: %w", dl.GoMod, err)
	}
	var gm struct {
		Replace []struct {
			Old struct{ Path string }
			New struct{ Path, Version string }
		}
	}
	if err := json.Unmarshal(out.Bytes(), &gm); err != nil {
		return nil, fmt.Errorf("parse %s: %w", dl.GoMod, err)
	}
	var mods []string
	for _, r := range gm.Replace {
		if strings.HasPrefix(r.New.Path, "./") || strings.HasPrefix(r.New.Path, "../") {
			mods = append(mods, r.Old.Path)
		}
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("%s@%s replaces no local modules; the build recipe needs a look", path, version)
	}
	return mods, nil
}

// goCmd runs go with CGO off (the tools are pure Go). gobin, if set, is
// where `go install` puts binaries.
func goCmd(gobin, dir string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command("go", args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &out, &out
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if gobin != "" {
		cmd.Env = append(cmd.Env, "GOBIN="+gobin)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return nil
}
