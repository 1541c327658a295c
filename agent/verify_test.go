package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/internal/testsupport"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/nodestatus"
)

// The daemon on the degraded DGX, publishing to a real apiserver with the
// agent's RBAC: the Node gets verified=false, a GPUNodeVerified condition
// naming the three planted faults, a Warning event per failed check, and
// /metrics the per-check series.
func TestVerificationPublished(t *testing.T) {
	c := testCluster(t)
	const node = "gpu-node-degraded"
	registerNode(t, c, node)
	env := testsupport.SimEnv(t, "dgx-h100-ib-degraded")
	cfg := config.Default()
	cfg.NodeName = node
	cfg.Publish.AllowSimulated = true
	logs := &syncBuffer{}
	base, stop := runAgent(t, env, cfg, agentClient(t, c), logs)
	defer stop()
	ctx := context.Background()

	testsupport.Eventually(t, "verification on the Node", func() error {
		n, err := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if v := n.Labels["gpunode.dev/verified"]; v != "false" {
			return fmt.Errorf("verified label %q", v)
		}
		for _, cond := range n.Status.Conditions {
			if string(cond.Type) != nodestatus.Verified {
				continue
			}
			want := "3 failed: gpu-pcie-link gpu2: Gen4 x8 in P0 (expected Gen5 x16); nvlink gpu5: 17/18 active, NVLink 4 (expected 18/18 active, NVLink 4); rdma-port-rate mlx5_6/1: 200 Gb/sec (2X NDR) (expected 400 Gb/s (fastest MT4129 infiniband port))"
			if cond.Status != corev1.ConditionFalse || cond.Reason != "ChecksFailed" || cond.Message != want {
				return fmt.Errorf("condition %s %s %q", cond.Status, cond.Reason, cond.Message)
			}
			return nil
		}
		return fmt.Errorf("no %s condition among %v", nodestatus.Verified, n.Status.Conditions)
	})
	testsupport.Eventually(t, "a Warning event per failed check", func() error {
		evs, err := c.Admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, want := range []string{"gpu-pcie-link gpu2 fail", "nvlink gpu5 fail", "rdma-port-rate mlx5_6/1 fail"} {
			found := false
			for _, e := range evs.Items {
				found = found || e.InvolvedObject.Name == node && e.Type == "Warning" && e.Reason == "CheckFailed" && strings.HasPrefix(e.Message, want)
			}
			if !found {
				return fmt.Errorf("no CheckFailed event %q", want)
			}
		}
		return nil
	})
	_, m := get(t, base+"/metrics")
	for _, w := range []string{
		`gpunode_check_status{check="gpu-pcie-link",severity="critical",subject="gpu2"} 0`,
		`gpunode_check_status{check="gpu-pcie-link",severity="critical",subject="gpu1"} 1`,
		`gpunode_check_status{check="rdma-port-rate",severity="critical",subject="mlx5_6/1"} 0`,
		"gpunode_node_verified 0",
	} {
		if !strings.Contains(m, w+"\n") {
			t.Errorf("/metrics lacks %s", w)
		}
	}
	if strings.Contains(m, `check="roce-mode"`) {
		t.Error("a skipped check (no RoCE ports) is exported")
	}
}
