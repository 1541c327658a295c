// Package kubeapi is a small Kubernetes API client for the few core/v1
// requests the agent makes: get, list, server-side apply and merge-patch
// Nodes, create Events, list Pods. It speaks JSON over one HTTP/2
// connection and finds the API server as kubectl does (a kubeconfig, or
// the pod's service account).
//
// It exists instead of client-go's clientset for the agent's memory: the
// clientset and its apply configurations link and initialise every API
// group, which made up more than half of the agent's binary and most of
// its resident size. Tests keep using client-go against the same
// kube-apiserver.
package kubeapi

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config says how to reach and authenticate to the API server.
type Config struct {
	// Host is the API server's URL ("https://10.0.0.1:443").
	Host string
	TLS  TLSConfig
	// BearerToken is a fixed token; BearerTokenFile a file re-read every
	// minute, as bound service account tokens are rotated in place.
	BearerToken     string
	BearerTokenFile string
	// Username and Password are for HTTP basic authentication.
	Username, Password string
	// Exec is a client-go credential plugin (client.authentication.k8s.io).
	Exec *ExecConfig
	// ProxyURL is an HTTP(S) or SOCKS5 proxy; empty means the
	// environment's (HTTPS_PROXY, NO_PROXY).
	ProxyURL string
	// Timeout bounds each request; zero means none.
	Timeout   time.Duration
	UserAgent string
	// QPS and Burst bound the request rate, as client-go's defaults do
	// (5 and 10 when zero); a negative QPS means no limit.
	QPS   float64
	Burst int
}

// TLSConfig is how the server is verified and the client identified.
type TLSConfig struct {
	CAData     []byte // PEM; none means the system roots
	ServerName string
	Insecure   bool
	// CertData and KeyData are a PEM client certificate and key.
	CertData, KeyData []byte
}

// Load finds the API server: an explicit kubeconfig file, else the files
// in $KUBECONFIG, else the pod's service account.
func Load(kubeconfig string) (*Config, error) {
	if kubeconfig != "" {
		return LoadKubeconfig(kubeconfig)
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return LoadKubeconfig(filepath.SplitList(env)...)
	}
	cfg, err := InCluster()
	if err != nil {
		return nil, fmt.Errorf("%w (outside a pod, pass --kubeconfig or set KUBECONFIG)", err)
	}
	return cfg, nil
}

// ServiceAccountDir is where a pod's service account credentials are.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// InCluster is the configuration inside a pod.
func InCluster() (*Config, error) { return inCluster(os.Getenv, ServiceAccountDir) }

func inCluster(getenv func(string) string, dir string) (*Config, error) {
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
	}
	cfg := &Config{Host: "https://" + net.JoinHostPort(host, port), BearerTokenFile: filepath.Join(dir, "token")}
	if _, err := os.Stat(cfg.BearerTokenFile); err != nil {
		return nil, fmt.Errorf("service account token: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	switch {
	case err == nil:
		cfg.TLS.CAData = ca
	case !errors.Is(err, fs.ErrNotExist): // without one the system roots verify the server
		return nil, fmt.Errorf("service account CA: %w", err)
	}
	return cfg, nil
}

// The kubeconfig format (clientcmd's v1 Config), the parts a client uses.
type kubeconfig struct {
	CurrentContext string `yaml:"current-context"`
	Clusters       []struct {
		Name    string    `yaml:"name"`
		Cluster kcCluster `yaml:"cluster"`
	} `yaml:"clusters"`
	Users []struct {
		Name string `yaml:"name"`
		User kcUser `yaml:"user"`
	} `yaml:"users"`
	Contexts []struct {
		Name    string    `yaml:"name"`
		Context kcContext `yaml:"context"`
	} `yaml:"contexts"`
}

type kcCluster struct {
	Server                   string `yaml:"server"`
	CertificateAuthority     string `yaml:"certificate-authority"`
	CertificateAuthorityData string `yaml:"certificate-authority-data"`
	InsecureSkipTLSVerify    bool   `yaml:"insecure-skip-tls-verify"`
	TLSServerName            string `yaml:"tls-server-name"`
	ProxyURL                 string `yaml:"proxy-url"`
	dir                      string // of the file that defined it
}

type kcUser struct {
	ClientCertificate     string      `yaml:"client-certificate"`
	ClientCertificateData string      `yaml:"client-certificate-data"`
	ClientKey             string      `yaml:"client-key"`
	ClientKeyData         string      `yaml:"client-key-data"`
	Token                 string      `yaml:"token"`
	TokenFile             string      `yaml:"tokenFile"`
	Username              string      `yaml:"username"`
	Password              string      `yaml:"password"`
	Exec                  *ExecConfig `yaml:"exec"`
	AuthProvider          *struct {
		Name string `yaml:"name"`
	} `yaml:"auth-provider"`
	Impersonate       string   `yaml:"as"`
	ImpersonateGroups []string `yaml:"as-groups"`
	dir               string
}

type kcContext struct {
	Cluster string `yaml:"cluster"`
	User    string `yaml:"user"`
}

// LoadKubeconfig reads kubeconfig files and returns the configuration of
// the current context. With several files (a $KUBECONFIG list) the first
// to define a name or the current context wins and missing files are
// skipped, as kubectl does; a single file must exist.
func LoadKubeconfig(paths ...string) (*Config, error) {
	merged := merged{clusters: map[string]kcCluster{}, users: map[string]kcUser{}, contexts: map[string]kcContext{}}
	read := 0
	for _, p := range paths {
		if p == "" {
			continue
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) && len(paths) > 1 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kubeconfig: %w", err)
		}
		if err := merged.add(b, filepath.Dir(p)); err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", p, err)
		}
		read++
	}
	if read == 0 {
		return nil, fmt.Errorf("kubeconfig: none of %q exists", paths)
	}
	cfg, err := merged.config()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", filepath.Join(paths...), err)
	}
	return cfg, nil
}

type merged struct {
	current  string
	clusters map[string]kcCluster
	users    map[string]kcUser
	contexts map[string]kcContext
}

func (m *merged) add(b []byte, dir string) error {
	var f kubeconfig
	if err := yaml.Unmarshal(b, &f); err != nil {
		return err
	}
	if m.current == "" {
		m.current = f.CurrentContext
	}
	for _, c := range f.Clusters {
		if _, ok := m.clusters[c.Name]; !ok {
			c.Cluster.dir = dir
			m.clusters[c.Name] = c.Cluster
		}
	}
	for _, u := range f.Users {
		if _, ok := m.users[u.Name]; !ok {
			u.User.dir = dir
			m.users[u.Name] = u.User
		}
	}
	for _, c := range f.Contexts {
		if _, ok := m.contexts[c.Name]; !ok {
			m.contexts[c.Name] = c.Context
		}
	}
	return nil
}

func (m *merged) config() (*Config, error) {
	if m.current == "" {
		return nil, errors.New("no current-context")
	}
	ctx, ok := m.contexts[m.current]
	if !ok {
		return nil, fmt.Errorf("current-context %q is not defined", m.current)
	}
	cl, ok := m.clusters[ctx.Cluster]
	if !ok {
		return nil, fmt.Errorf("context %q: cluster %q is not defined", m.current, ctx.Cluster)
	}
	if cl.Server == "" {
		return nil, fmt.Errorf("cluster %q has no server", ctx.Cluster)
	}
	cfg := &Config{Host: cl.Server, ProxyURL: cl.ProxyURL}
	cfg.TLS.ServerName, cfg.TLS.Insecure = cl.TLSServerName, cl.InsecureSkipTLSVerify
	var err error
	if cfg.TLS.CAData, err = dataOrFile(cl.CertificateAuthorityData, cl.CertificateAuthority, cl.dir, "certificate-authority"); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", ctx.Cluster, err)
	}
	if ctx.User == "" {
		return cfg, nil
	}
	u, ok := m.users[ctx.User]
	if !ok {
		return nil, fmt.Errorf("context %q: user %q is not defined", m.current, ctx.User)
	}
	if err := u.apply(cfg); err != nil {
		return nil, fmt.Errorf("user %q: %w", ctx.User, err)
	}
	if cfg.Exec != nil && cfg.Exec.ProvideClusterInfo {
		cfg.Exec.cluster = &execCluster{Server: cl.Server, TLSServerName: cl.TLSServerName, InsecureSkipTLSVerify: cl.InsecureSkipTLSVerify, CertificateAuthorityData: cfg.TLS.CAData}
	}
	return cfg, nil
}

func (u kcUser) apply(cfg *Config) error {
	switch {
	case u.AuthProvider != nil:
		return fmt.Errorf("auth-provider %q is not supported; use an exec credential plugin", u.AuthProvider.Name)
	case u.Impersonate != "" || len(u.ImpersonateGroups) > 0:
		return errors.New("impersonation (as, as-groups) is not supported")
	}
	var err error
	if cfg.TLS.CertData, err = dataOrFile(u.ClientCertificateData, u.ClientCertificate, u.dir, "client-certificate"); err != nil {
		return err
	}
	if cfg.TLS.KeyData, err = dataOrFile(u.ClientKeyData, u.ClientKey, u.dir, "client-key"); err != nil {
		return err
	}
	if (cfg.TLS.CertData == nil) != (cfg.TLS.KeyData == nil) {
		return errors.New("client-certificate and client-key go together")
	}
	cfg.BearerToken, cfg.Username, cfg.Password = u.Token, u.Username, u.Password
	if u.TokenFile != "" && u.Token == "" {
		cfg.BearerTokenFile = resolve(u.dir, u.TokenFile)
	}
	if u.Exec != nil {
		e := *u.Exec
		if e.Command == "" {
			return errors.New("exec: no command")
		}
		if filepath.Base(e.Command) != e.Command { // a path: relative to the kubeconfig
			e.Command = resolve(u.dir, e.Command)
		}
		cfg.Exec = &e
	}
	return nil
}

// dataOrFile is the base64 *-data field, else the file it names.
func dataOrFile(data, file, dir, what string) ([]byte, error) {
	if data != "" {
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return nil, fmt.Errorf("%s-data: %w", what, err)
		}
		return b, nil
	}
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(resolve(dir, file))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}

func resolve(dir, p string) string {
	if filepath.IsAbs(p) || dir == "" {
		return p
	}
	return filepath.Join(dir, p)
}
