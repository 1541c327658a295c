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
	"time"

	"github.com/gpunode/gpunode/kubeapi"
)

// FieldManager names the agent in the Node's managedFields.
const FieldManager = "gpunode-agent"

// NewClient finds the API server as kubectl does (an explicit kubeconfig
// file, else $KUBECONFIG, else ~/.kube/config, else the in-cluster service
// account, the DaemonSet case) and returns a client for it.
func NewClient(kubeconfig string, timeout time.Duration, userAgent string) (*kubeapi.Client, error) {
	cfg, err := kubeapi.Load(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.Timeout, cfg.UserAgent = timeout, userAgent
	c, err := kubeapi.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}
