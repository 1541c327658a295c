package kubeapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/test/kube"
)

// inPodEnv marks the test binary re-run as a pod (TestInCluster).
const inPodEnv = "KUBEAPI_TEST_IN_POD"

func TestMain(m *testing.M) {
	if os.Getenv(inPodEnv) != "" {
		if err := inPod(); err != nil {
			fmt.Fprintln(os.Stderr, "in pod:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// noAmbientConfig keeps the machine's own kubeconfig and pod out of Load.
func noAmbientConfig(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
}

// The configuration paths kubectl has, through client-go, against a real
// kube-apiserver: a kubeconfig with a token, a token file or an exec
// credential plugin, a $KUBECONFIG list, and the pod's service account.
func TestConfigAgainstAPIServer(t *testing.T) {
	c := kube.StartT(t, kube.Options{})
	ctx := context.Background()
	const node = "config-node"
	if _, err := c.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := c.AdminConfig.BearerToken
	dir := t.TempDir()
	// kubeconfig writes a kubeconfig for one user (YAML flow mapping);
	// its paths are relative to the file, as kubectl reads them.
	kubeconfig := func(name, user string) string {
		p := filepath.Join(dir, name)
		body := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: u, user: %s}]
contexts: [{name: test, context: {cluster: test, user: u}}]
current-context: test
`, c.URL, filepath.Join(c.Dir(), "ca.crt"), user)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	getNode := func(t *testing.T, cfg *kubeapi.Config) {
		t.Helper()
		client, err := kubeapi.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := client.GetNode(ctx, node); err != nil || n.Name != node {
			t.Fatalf("get node: %+v %v", n, err)
		}
		if _, err := client.GetNode(ctx, "missing"); !kubeapi.IsNotFound(err) {
			t.Fatalf("missing node: %v", err)
		}
	}

	t.Run("token", func(t *testing.T) {
		noAmbientConfig(t)
		p := kubeconfig("token", fmt.Sprintf("{token: %q}", token))
		cfg, err := kubeapi.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Host != c.URL || cfg.BearerToken != token || cfg.TLS.CAFile == "" {
			t.Errorf("loaded %+v", cfg)
		}
		cfg.UserAgent = "kubeapi-test"
		getNode(t, cfg)
	})

	t.Run("tokenFile", func(t *testing.T) {
		noAmbientConfig(t)
		if err := os.WriteFile(filepath.Join(dir, "token-file"), []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := kubeapi.Load(kubeconfig("tokenfile", "{tokenFile: token-file}"))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.BearerTokenFile != filepath.Join(dir, "token-file") {
			t.Errorf("token file %q", cfg.BearerTokenFile)
		}
		getNode(t, cfg)
	})

	// The plugin runs once for both requests; the kubeconfig's exec
	// settings travel in Config unseen.
	t.Run("exec", func(t *testing.T) {
		noAmbientConfig(t)
		count := filepath.Join(dir, "runs")
		plugin := filepath.Join(dir, "cred")
		script := `#!/bin/sh
echo x >> ` + count + `
case "$KUBERNETES_EXEC_INFO" in *'"interactive":false'*) ;; *) echo "bad exec info: $KUBERNETES_EXEC_INFO" >&2; exit 1;; esac
echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"` + token + `"}}'
`
		if err := os.WriteFile(plugin, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		cfg, err := kubeapi.Load(kubeconfig("exec", `{exec: {apiVersion: client.authentication.k8s.io/v1, command: ./cred, interactiveMode: Never}}`))
		if err != nil {
			t.Fatal(err)
		}
		getNode(t, cfg)
		if b, _ := os.ReadFile(count); strings.Count(string(b), "x") != 1 {
			t.Errorf("plugin ran %d times, want 1", strings.Count(string(b), "x"))
		}
		bad, err := kubeapi.Load(kubeconfig("exec-missing", `{exec: {apiVersion: client.authentication.k8s.io/v1, command: nope-cred, installHint: "install nope-cred", interactiveMode: Never}}`))
		if err != nil {
			t.Fatal(err)
		}
		client, err := kubeapi.New(bad)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.GetNode(ctx, node); err == nil || !strings.Contains(err.Error(), "install nope-cred") {
			t.Errorf("missing plugin: %v", err)
		}
	})

	// $KUBECONFIG: missing files are skipped and the first file to set a
	// value wins, as kubectl merges them.
	t.Run("KUBECONFIG", func(t *testing.T) {
		noAmbientConfig(t)
		wrong := kubeconfig("wrong-token", `{token: wrong}`)
		right := kubeconfig("right-token", fmt.Sprintf("{token: %q}", token))
		t.Setenv("KUBECONFIG", strings.Join([]string{filepath.Join(dir, "missing"), right, wrong}, string(filepath.ListSeparator)))
		cfg, err := kubeapi.Load("")
		if err != nil {
			t.Fatal(err)
		}
		getNode(t, cfg)
		t.Setenv("KUBECONFIG", wrong)
		if cfg, err = kubeapi.Load(""); err != nil {
			t.Fatal(err)
		}
		client, err := kubeapi.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.GetNode(ctx, node); err == nil || !strings.Contains(err.Error(), "Unauthorized") {
			t.Errorf("wrong token: %v", err)
		}
	})

	t.Run("none", func(t *testing.T) {
		noAmbientConfig(t)
		if _, err := kubeapi.Load(""); err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
			t.Errorf("no configuration: %v", err)
		}
		if _, err := kubeapi.Load(filepath.Join(dir, "missing")); err == nil {
			t.Error("a missing --kubeconfig is not an error")
		}
	})

	// In a pod: KUBERNETES_SERVICE_HOST and _PORT, and the token and CA
	// at their fixed paths, which the test binary, run again in a mount
	// namespace of its own, puts on a tmpfs over /var/run.
	t.Run("inCluster", func(t *testing.T) {
		u, err := url.Parse(c.URL)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), inPodEnv+"=1", "HOME="+t.TempDir(), "KUBECONFIG=",
			"KUBERNETES_SERVICE_HOST="+u.Hostname(), "KUBERNETES_SERVICE_PORT="+u.Port(),
			"TEST_TOKEN="+token, "TEST_CA="+filepath.Join(c.Dir(), "ca.crt"), "TEST_NODE="+node)
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		out, err := cmd.CombinedOutput()
		if errors.Is(err, syscall.EPERM) {
			t.Skip("a mount namespace needs root (CAP_SYS_ADMIN):", err)
		}
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	})
}

// inPod is the inCluster case in its mount namespace.
func inPod() error {
	if err := unix.Mount("tmpfs", "/var/run", "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount a tmpfs on /var/run: %w", err)
	}
	sa := "/var/run/secrets/kubernetes.io/serviceaccount"
	if err := os.MkdirAll(sa, 0o755); err != nil {
		return err
	}
	ca, err := os.ReadFile(os.Getenv("TEST_CA"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(sa, "ca.crt"), ca, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(sa, "token"), []byte(os.Getenv("TEST_TOKEN")), 0o600); err != nil {
		return err
	}
	cfg, err := kubeapi.Load("")
	if err != nil {
		return err
	}
	if cfg.BearerTokenFile != filepath.Join(sa, "token") || cfg.TLS.CAFile != filepath.Join(sa, "ca.crt") {
		return fmt.Errorf("not the service account's token and CA: %+v", cfg)
	}
	client, err := kubeapi.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := client.GetNode(ctx, os.Getenv("TEST_NODE"))
	if err != nil {
		return err
	}
	if n.Name != os.Getenv("TEST_NODE") {
		return fmt.Errorf("got node %q", n.Name)
	}
	return nil
}
