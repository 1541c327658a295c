package publish

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/testsupport"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/test/kube"
)

// The API server goes away while labels change: the publisher keeps
// running, backs off (bounded, no busy loop) and converges once the server
// is back. Its own cluster, since it stops the apiserver.
func TestRecoveryAfterAPIServerRestart(t *testing.T) {
	c := kube.StartT(t, kube.Options{})
	ctx := context.Background()
	const node = "recover"
	if _, err := c.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{"kubernetes.io/hostname": node}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := c.KubeConfig("gpunode-test-admin")
	cfg.Timeout = time.Second
	client, err := kubeapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, client, node)
	p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts})
	has := func(want map[string]string) func() error {
		return func() error {
			n, err := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for k, v := range want {
				if n.Labels[k] != v {
					return fmt.Errorf("%s=%q, want %q", k, n.Labels[k], v)
				}
			}
			return nil
		}
	}
	testsupport.Eventually(t, "converge", has(gpuLabels()))

	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	next := gpuLabels()
	next["gpunode.dev/gpu.count"] = "4"
	p.Set(Desired{Labels: next, LabelOptions: opts})
	down := 3 * time.Second
	time.Sleep(down)
	failures := testutil.ToFloat64(p.m.requests.WithLabelValues("get", "error"))
	// Backoff 50 ms doubling to 500 ms with jitter: about 10 attempts in
	// 3 s; a busy loop would make hundreds.
	if failures < 2 || failures > 20 {
		t.Errorf("%v failed GETs while the apiserver was down for %s", failures, down)
	}
	if d := testutil.ToFloat64(p.m.retryDelay); d <= 0 || d > 0.5 {
		t.Errorf("retry delay %v s, want within (0, 0.5]", d)
	}
	if !strings.Contains(p.logs.String(), "retrying") {
		t.Error("failures not logged")
	}

	ctxStart, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.StartAPIServer(ctxStart); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, "converge after restart", has(next))
	testsupport.Eventually(t, "healthy again", func() error {
		if testutil.ToFloat64(p.m.retryDelay) != 0 || testutil.ToFloat64(p.m.inSync) != 1 {
			return fmt.Errorf("retry delay %v, in sync %v", testutil.ToFloat64(p.m.retryDelay), testutil.ToFloat64(p.m.inSync))
		}
		return nil
	})
	owned, err := OwnedLabels(mustGet(t, c, node))
	if err != nil || !owned.Equal(labels.Set(next)) {
		t.Errorf("owned after recovery %v (%v)", owned, err)
	}
}

func mustGet(t *testing.T, c *kube.Cluster, name string) *kubeapi.Node {
	n, err := c.AdminKube.GetNode(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
