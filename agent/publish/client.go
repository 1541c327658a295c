// Package publish writes the agent's labels and conditions to its own
// Node with server-side apply, and its events, safely: exactly the
// agent's labels under field manager gpunode-agent, compatibility keys
// never forced, no write when the Node already holds what the agent
// wants, last good labels held while a source fails, and capped
// exponential backoff with jitter while the API server is away. The
// agent's own taint (the opt-in GPU health taint) goes in a merge patch
// conditional on the Node read, since taints are an atomic list that
// server-side apply cannot share (taints.go). It also writes the labels
// as a Node Feature Discovery features.d file.
package publish

import (
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// FieldManager names the agent in the Node's managedFields.
const FieldManager = "gpunode-agent"

// RESTConfig finds the API server: an explicit kubeconfig file, else
// $KUBECONFIG, else the in-cluster service account (the DaemonSet case).
func RESTConfig(kubeconfig string, timeout time.Duration, userAgent string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	switch {
	case kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case os.Getenv("KUBECONFIG") != "":
		rules := clientcmd.NewDefaultClientConfigLoadingRules() // honours a list in $KUBECONFIG
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	default:
		cfg, err = rest.InClusterConfig()
		if err != nil {
			err = fmt.Errorf("%w (outside a pod, pass --kubeconfig or set KUBECONFIG)", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.Timeout = timeout
	cfg.UserAgent = userAgent
	return cfg, nil
}

// NewClient builds a clientset from RESTConfig's result.
func NewClient(cfg *rest.Config) (kubernetes.Interface, error) {
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}
