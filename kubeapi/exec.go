package kubeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// ExecConfig is a kubeconfig user's credential plugin: a command that
// prints an ExecCredential (client.authentication.k8s.io) with a token or
// a client certificate, as cloud providers' kubeconfigs use.
type ExecConfig struct {
	APIVersion         string    `yaml:"apiVersion"`
	Command            string    `yaml:"command"`
	Args               []string  `yaml:"args"`
	Env                []ExecEnv `yaml:"env"`
	InstallHint        string    `yaml:"installHint"`
	ProvideClusterInfo bool      `yaml:"provideClusterInfo"`
	InteractiveMode    string    `yaml:"interactiveMode"`
	cluster            *execCluster
}

// ExecEnv is one environment variable for the plugin.
type ExecEnv struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

type execCluster struct {
	Server                   string `json:"server"`
	TLSServerName            string `json:"tls-server-name,omitempty"`
	InsecureSkipTLSVerify    bool   `json:"insecure-skip-tls-verify,omitempty"`
	CertificateAuthorityData []byte `json:"certificate-authority-data,omitempty"`
}

// execTimeout bounds one run of the plugin.
const execTimeout = time.Minute

// execCredentials runs the plugin when its last credential expired or
// was refused, and keeps what it printed.
type execCredentials struct {
	cfg ExecConfig

	mu      sync.Mutex
	token   string
	cert    *tls.Certificate
	expires time.Time // zero: until refused
	valid   bool
}

type execCredential struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Status     *struct {
		Token                 string `json:"token"`
		ClientCertificateData string `json:"clientCertificateData"`
		ClientKeyData         string `json:"clientKeyData"`
		ExpirationTimestamp   *Time  `json:"expirationTimestamp"`
	} `json:"status"`
}

func (e *execCredentials) get(ctx context.Context) (string, *tls.Certificate, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.valid && (e.expires.IsZero() || time.Now().Before(e.expires)) {
		return e.token, e.cert, nil
	}
	if err := e.run(ctx); err != nil {
		return "", nil, err
	}
	return e.token, e.cert, nil
}

// refused forgets the credential after a 401.
func (e *execCredentials) refused() {
	e.mu.Lock()
	e.valid = false
	e.mu.Unlock()
}

func (e *execCredentials) run(ctx context.Context) error {
	if e.cfg.InteractiveMode == "Always" {
		return fmt.Errorf("exec plugin %s needs a terminal (interactiveMode Always)", e.cfg.Command)
	}
	spec := map[string]any{"interactive": false}
	if e.cfg.cluster != nil {
		spec["cluster"] = e.cfg.cluster
	}
	infoJSON, err := json.Marshal(map[string]any{"apiVersion": e.cfg.APIVersion, "kind": "ExecCredential", "spec": spec})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, execTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.cfg.Command, e.cfg.Args...)
	cmd.Env = append(os.Environ(), "KUBERNETES_EXEC_INFO="+string(infoJSON))
	for _, v := range e.cfg.Env {
		cmd.Env = append(cmd.Env, v.Name+"="+v.Value)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := fmt.Sprintf("exec plugin %s: %v", e.cfg.Command, err)
		if s := strings.TrimSpace(stderr.String()); s != "" {
			msg += ": " + s
		}
		if (errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist)) && e.cfg.InstallHint != "" {
			msg += " (" + strings.TrimSpace(e.cfg.InstallHint) + ")"
		}
		return errors.New(msg)
	}
	var out execCredential
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return fmt.Errorf("exec plugin %s: output is not an ExecCredential: %w", e.cfg.Command, err)
	}
	switch {
	case out.Kind != "ExecCredential" || out.APIVersion != e.cfg.APIVersion:
		return fmt.Errorf("exec plugin %s: printed %s %s, want ExecCredential %s", e.cfg.Command, out.APIVersion, out.Kind, e.cfg.APIVersion)
	case out.Status == nil || (out.Status.Token == "" && out.Status.ClientCertificateData == ""):
		return fmt.Errorf("exec plugin %s: no token or client certificate in its status", e.cfg.Command)
	}
	e.token, e.cert, e.expires = out.Status.Token, nil, time.Time{}
	if out.Status.ClientCertificateData != "" {
		c, err := tls.X509KeyPair([]byte(out.Status.ClientCertificateData), []byte(out.Status.ClientKeyData))
		if err != nil {
			return fmt.Errorf("exec plugin %s: client certificate: %w", e.cfg.Command, err)
		}
		e.cert = &c
	}
	if t := out.Status.ExpirationTimestamp; t != nil {
		e.expires = t.Time
	}
	e.valid = true
	return nil
}
