package kubeapi

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadKubeconfig(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "ca.crt", "CA-PEM")
	write(t, dir, "token", "file-token\n")
	b64 := base64.StdEncoding.EncodeToString
	good := write(t, dir, "good", `apiVersion: v1
kind: Config
current-context: dev
preferences: {}
clusters:
- name: c1
  cluster: {server: "https://10.0.0.1:6443", certificate-authority: ca.crt, tls-server-name: api.example}
contexts:
- name: dev
  context: {cluster: c1, user: u1, namespace: ml}
users:
- name: u1
  user:
    client-certificate-data: `+b64([]byte("CERT"))+`
    client-key-data: `+b64([]byte("KEY"))+`
    tokenFile: token
`)
	cfg, err := LoadKubeconfig(good)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://10.0.0.1:6443" || string(cfg.TLS.CAData) != "CA-PEM" || cfg.TLS.ServerName != "api.example" ||
		string(cfg.TLS.CertData) != "CERT" || string(cfg.TLS.KeyData) != "KEY" || cfg.BearerTokenFile != filepath.Join(dir, "token") {
		t.Errorf("config %+v", cfg)
	}

	// A $KUBECONFIG list: missing files skipped, the first definition wins.
	other := write(t, dir, "other", `current-context: prod
contexts:
- {name: prod, context: {cluster: c1, user: u2}}
- {name: dev, context: {cluster: nowhere}}
users:
- {name: u2, user: {token: abc, username: ignored}}
clusters:
- {name: c1, cluster: {server: "https://shadowed"}}
`)
	cfg, err = LoadKubeconfig(filepath.Join(dir, "missing"), other, good)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://shadowed" || cfg.BearerToken != "abc" {
		t.Errorf("merged config %+v", cfg)
	}

	// Exec plugin: a command with a path is relative to the kubeconfig.
	execCfg := write(t, dir, "exec", `current-context: x
contexts: [{name: x, context: {cluster: c, user: u}}]
clusters: [{name: c, cluster: {server: "https://h", certificate-authority-data: `+b64([]byte("CA"))+`}}]
users:
- name: u
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ./bin/cred
      args: [get]
      env: [{name: A, value: b}]
      provideClusterInfo: true
`)
	cfg, err = LoadKubeconfig(execCfg)
	if err != nil {
		t.Fatal(err)
	}
	if e := cfg.Exec; e == nil || e.Command != filepath.Join(dir, "bin/cred") || len(e.Args) != 1 || e.Env[0].Name != "A" ||
		e.cluster == nil || e.cluster.Server != "https://h" || string(e.cluster.CertificateAuthorityData) != "CA" {
		t.Errorf("exec %+v", cfg.Exec)
	}

	for name, body := range map[string]string{
		"no current context":   `clusters: []`,
		"undefined context":    `current-context: a`,
		"undefined cluster":    "current-context: a\ncontexts: [{name: a, context: {cluster: b}}]",
		"no server":            "current-context: a\ncontexts: [{name: a, context: {cluster: b}}]\nclusters: [{name: b, cluster: {}}]",
		"undefined user":       "current-context: a\ncontexts: [{name: a, context: {cluster: b, user: u}}]\nclusters: [{name: b, cluster: {server: https://h}}]",
		"bad base64":           "current-context: a\ncontexts: [{name: a, context: {cluster: b}}]\nclusters: [{name: b, cluster: {server: https://h, certificate-authority-data: '!!'}}]",
		"missing CA file":      "current-context: a\ncontexts: [{name: a, context: {cluster: b}}]\nclusters: [{name: b, cluster: {server: https://h, certificate-authority: nope.crt}}]",
		"auth provider":        "current-context: a\ncontexts: [{name: a, context: {cluster: b, user: u}}]\nclusters: [{name: b, cluster: {server: https://h}}]\nusers: [{name: u, user: {auth-provider: {name: gcp}}}]",
		"impersonation":        "current-context: a\ncontexts: [{name: a, context: {cluster: b, user: u}}]\nclusters: [{name: b, cluster: {server: https://h}}]\nusers: [{name: u, user: {token: t, as: admin}}]",
		"cert without key":     "current-context: a\ncontexts: [{name: a, context: {cluster: b, user: u}}]\nclusters: [{name: b, cluster: {server: https://h}}]\nusers: [{name: u, user: {client-certificate-data: QQ==}}]",
		"exec without command": "current-context: a\ncontexts: [{name: a, context: {cluster: b, user: u}}]\nclusters: [{name: b, cluster: {server: https://h}}]\nusers: [{name: u, user: {exec: {apiVersion: v}}}]",
		"not yaml":             "\x00\t: [",
		"wrong shape":          "clusters: {a: b}",
	} {
		p := write(t, dir, "bad", body)
		if _, err := LoadKubeconfig(p); err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.Contains(err.Error(), p) && !strings.Contains(err.Error(), "kubeconfig") {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
	if _, err := LoadKubeconfig(filepath.Join(dir, "missing")); err == nil {
		t.Error("a single missing file is not an error")
	}
}

func FuzzLoadKubeconfig(f *testing.F) {
	f.Add("current-context: a\ncontexts: [{name: a, context: {cluster: b, user: u}}]\nclusters: [{name: b, cluster: {server: https://h}}]\nusers: [{name: u, user: {token: t}}]")
	f.Add("clusters: [{name: b, cluster: {server: 1}}]\n")
	f.Add("\xff\xfe")
	f.Fuzz(func(t *testing.T, body string) {
		p := filepath.Join(t.TempDir(), "k")
		os.WriteFile(p, []byte(body), 0o600)
		cfg, err := LoadKubeconfig(p)
		if err == nil && cfg.Host == "" {
			t.Fatalf("no error and no host for %q", body)
		}
	})
}

func TestInCluster(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
	if _, err := inCluster(func(k string) string { return env[k] }, dir); err == nil {
		t.Error("no error without a token")
	}
	write(t, dir, "token", "t")
	cfg, err := inCluster(func(k string) string { return env[k] }, dir)
	if err != nil || cfg.Host != "https://[fd00::1]:443" || cfg.BearerTokenFile != filepath.Join(dir, "token") || cfg.TLS.CAData != nil {
		t.Errorf("%+v %v", cfg, err)
	}
	write(t, dir, "ca.crt", "CA")
	if cfg, _ := inCluster(func(k string) string { return env[k] }, dir); string(cfg.TLS.CAData) != "CA" {
		t.Errorf("CA %q", cfg.TLS.CAData)
	}
	if _, err := inCluster(func(string) string { return "" }, dir); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Errorf("outside a pod: %v", err)
	}
}
