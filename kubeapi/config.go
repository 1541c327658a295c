// Package kubeapi is the agent's Kubernetes API client: the few core/v1
// requests it makes (get, list, server-side apply and merge-patch Nodes,
// create Events, list Pods) with small types of its own, sent through
// client-go's REST client. Configuration, authentication and transport are
// client-go's, so they behave as kubectl's: the kubeconfig files kubectl
// reads or the pod's service account, exec credential plugins, bound
// service account tokens re-read as they rotate, client certificate files
// reloaded, proxies, HTTP/2 health checks, the client-side rate limit and
// retries after Retry-After.
//
// It uses client-go's rest and clientcmd packages but not its clientset
// (k8s.io/client-go/kubernetes) or k8s.io/api, for the agent's size: the
// clientset, its apply configurations and the API types link and
// initialise every API group, which made up more than half of the agent's
// binary and most of its resident size. Tests keep using the clientset
// against the same kube-apiserver.
package kubeapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config says how to reach and authenticate to the API server. Load fills
// it in; tests build one for a server of their own. The fields are the
// parts of client-go's rest.Config that callers read or set; the rest of
// what Load found (an exec plugin, impersonation) is kept
// unexported and used by New as it is.
type Config struct {
	// Host is the API server's URL ("https://10.0.0.1:443").
	Host string
	// TLS is how the server is verified and the client identified (PEM
	// data or files; certificate and key files are reloaded as they change).
	TLS TLSConfig
	// BearerToken is a token; BearerTokenFile a file client-go re-reads
	// (every minute), as bound service account tokens rotate in place.
	BearerToken     string
	BearerTokenFile string
	// Username and Password are for HTTP basic authentication.
	Username, Password string
	// Proxy picks the proxy of a request; nil means the environment's
	// (HTTPS_PROXY, NO_PROXY). Any Proxy, http.ProxyFromEnvironment too,
	// also gives the client a transport (connection) of its own: client-go
	// shares one among clients with equal TLS settings otherwise.
	Proxy func(*http.Request) (*url.URL, error)
	// Timeout bounds each request; zero means none.
	Timeout   time.Duration
	UserAgent string
	// QPS and Burst bound the request rate, client-go's defaults (5 and
	// 10) when zero; a negative QPS means no limit.
	QPS   float64
	Burst int

	loaded *rest.Config
}

// TLSConfig is client-go's: CAData, ServerName, Insecure, CertData and
// KeyData, or the files CAFile, CertFile and KeyFile.
type TLSConfig = rest.TLSClientConfig

// Load finds the API server as kubectl does: the kubeconfig file given
// (--kubeconfig), else the files in $KUBECONFIG merged, else
// ~/.kube/config, and the pod's service account when none of them exists.
// Unlike kubectl it does not fall back to http://localhost:8080.
func Load(kubeconfig string) (*Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return nil, errors.New("no kubeconfig and not in a pod: pass --kubeconfig or set KUBECONFIG")
	}
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return fromREST(rc), nil
}

func fromREST(rc *rest.Config) *Config {
	return &Config{
		Host: rc.Host, TLS: rc.TLSClientConfig,
		BearerToken: rc.BearerToken, BearerTokenFile: rc.BearerTokenFile,
		Username: rc.Username, Password: rc.Password, Proxy: rc.Proxy,
		Timeout: rc.Timeout, UserAgent: rc.UserAgent, QPS: float64(rc.QPS), Burst: rc.Burst,
		loaded: rest.CopyConfig(rc),
	}
}

// restConfig is what Load found with cfg's fields over it.
func (cfg *Config) restConfig() *rest.Config {
	rc := &rest.Config{}
	if cfg.loaded != nil {
		rc = rest.CopyConfig(cfg.loaded)
	}
	rc.Host, rc.TLSClientConfig = cfg.Host, cfg.TLS
	rc.BearerToken, rc.BearerTokenFile = cfg.BearerToken, cfg.BearerTokenFile
	rc.Username, rc.Password, rc.Proxy = cfg.Username, cfg.Password, cfg.Proxy
	rc.Timeout, rc.UserAgent = cfg.Timeout, cfg.UserAgent
	rc.QPS, rc.Burst = float32(cfg.QPS), cfg.Burst
	return rc
}
