package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/exporters"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/internal/testsupport"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/sim"
)

// The whole agent on a simulated DGX H100 whose mlx5_2 link drops and
// retrains while it runs, publishing to a real kube-apiserver: RDMAHealthy
// goes True, False (naming the port) with the opt-in RDMA taint, and True
// again without it once the port was quiet. This is also how to get an
// RDMAHealthy change on a Node: sim.Node.Runtime (or sim.WithRuntimeFaults)
// plus its Traffic in the discovery.Env.
func TestRDMAHealthPublished(t *testing.T) {
	c := testCluster(t)
	ctx := context.Background()
	const node = "rdma-health"
	registerNode(t, c, node)

	fsys, lib := simNVML(t)
	start := time.Now()
	traffic, err := sim.NewTraffic(sim.Node{Root: fsys.Root(), Runtime: []sim.PortFault{
		{Device: "mlx5_2", Port: 1, Kind: sim.FaultFlap, At: 6 * time.Second, For: 3 * time.Second}}}, start)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.NodeName = node
	cfg.Discovery.Interval = time.Hour
	cfg.Publish.AllowSimulated = true
	cfg.Publish.Resync = 500 * time.Millisecond
	cfg.Publish.BackoffInitial, cfg.Publish.BackoffMax = 50*time.Millisecond, time.Second
	cfg.Metrics.ListenAddress = "127.0.0.1:0"
	cfg.Metrics.SampleInterval = time.Second
	cfg.Metrics.PodResourcesSocket = ""
	cfg.Metrics.RDMAHealth.Window, cfg.Metrics.RDMAHealth.Quiet = 2*time.Second, 3*time.Second
	cfg.Metrics.RDMAHealth.Taint.Enabled = true
	logs := &syncBuffer{}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil)),
			Env:   &discovery.Env{FS: fsys, Backends: []gpu.Backend{nvml.New(lib)}, Simulated: "dgx-h100-ib", Traffic: traffic},
			Build: exporters.BuildInfo{Version: "test"}, Kube: agentClient(t, c)})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	rdmaHealthy := func(status corev1.ConditionStatus, reasons, msg string) func() error {
		return func() error {
			n, err := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			var taint *corev1.Taint
			for i, tn := range n.Spec.Taints {
				if tn.Key == config.DefaultRDMATaintKey {
					taint = &n.Spec.Taints[i]
				}
			}
			for _, cond := range n.Status.Conditions {
				if string(cond.Type) != nodestatus.RDMAHealthy {
					continue
				}
				if cond.Status != status || !strings.Contains(reasons, cond.Reason) || !strings.Contains(cond.Message, msg) {
					return fmt.Errorf("RDMAHealthy %s %s %q", cond.Status, cond.Reason, cond.Message)
				}
				switch {
				case status == corev1.ConditionFalse && (taint == nil || taint.Value != cond.Reason || taint.Effect != corev1.TaintEffectNoSchedule):
					return fmt.Errorf("RDMAHealthy False (%s) with taint %v", cond.Reason, taint)
				case status == corev1.ConditionTrue && taint != nil:
					return fmt.Errorf("RDMAHealthy True with taint %v", taint)
				}
				return nil
			}
			return fmt.Errorf("no RDMAHealthy condition among %v", n.Status.Conditions)
		}
	}
	testsupport.Eventually(t, "RDMAHealthy True", rdmaHealthy(corev1.ConditionTrue, "AllPortsHealthy", "8 RDMA ports healthy"))
	testsupport.Eventually(t, "RDMAHealthy False, tainted", rdmaHealthy(corev1.ConditionFalse, "PortDown LinkFlapping", "mlx5_2 port 1"))
	testsupport.Eventually(t, "RDMAHealthy True again, untainted", rdmaHealthy(corev1.ConditionTrue, "AllPortsHealthy", "8 RDMA ports healthy"))
	if !strings.Contains(logs.String(), `msg="node condition" type=RDMAHealthy status=False`) {
		t.Error("the RDMAHealthy change is not logged")
	}
}
