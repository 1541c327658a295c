// Package tools installs the real components tests run (helm, kube-apiserver,
// etcd, Prometheus, promtool, node_exporter) into a cache directory, once
// per version, so a fresh machine needs only Go and gcc.
package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

// BuildAgent builds gpunode-agent from this checkout into dir as the
// Makefile does (cgo, dynamically linked) and returns its path.
func BuildAgent(dir string) (string, error) {
	bin := filepath.Join(dir, "gpunode-agent")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/gpunode/gpunode/cmd/gpunode-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the agent: %v\n%s", err, out)
	}
	return bin, nil
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
	unlock, err := lockTool(cache, name+"-"+version)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // built while this process waited for the lock
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

// lockTool holds an exclusive lock on <cache>/<tool>.lock until the
// returned func runs. Test binaries of several packages (and `make tools`)
// may ask for the same tool at once; without the lock each started its own
// six-minute, 3 GB kube-apiserver build.
func lockTool(cache, tool string) (func(), error) {
	unlock, err := Flock(filepath.Join(cache, tool+".lock"), true)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", tool, err)
	}
	return unlock, nil
}

// Flock holds a flock(2) on path, created if needed, shared or exclusive,
// until the returned func runs (closing the file releases it). It waits
// for the lock; it serialises test binaries, which go test runs side by side.
func Flock(path string, exclusive bool) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("flock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
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
	unlock, err := lockTool(cache, pkg+"-"+version)
	if err != nil {
		return "", err
	}
	defer unlock()
	if haveAll(dir, bins) {
		return dir, nil // installed while this process waited for the lock
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
