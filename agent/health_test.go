package agent

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/testsupport"

	"github.com/gpunode/gpunode/discovery"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/exporters"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/publish"
	"github.com/gpunode/gpunode/test/kube"
)

// The whole agent on a simulated DGX H100 whose NVML fake fails on
// demand, publishing as a user with only the agent's RBAC to a real
// apiserver: GPU health reaches the Node as the GPUHealthy condition
// (with an event on each change) and the opt-in taint, beside taints of
// others that stay as they are. Discovery runs once an hour here, so
// only the sampler's own path can deliver the changes.
//
// A pending row remap clears when the GPU is reset, so it shows the way
// back: condition True, taint removed. A critical XID is sticky until the
// agent restarts (health), so that taint is lifted by disabling
// it in the configuration and reloading, and by cleanup.
func TestGPUHealthPublished(t *testing.T) {
	c := testCluster(t)
	ctx := context.Background()
	const node = "gpu-health"
	const key = "gpunode.dev/gpu-unhealthy"
	registerNode(t, c, node) // the apiserver adds its not-ready taint
	operator := corev1.Taint{Key: "team.example.com/maintenance", Value: "planned", Effect: corev1.TaintEffectPreferNoSchedule}
	n, err := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Taints = append(n.Spec.Taints, operator)
	if _, err := c.Admin.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{FieldManager: "kubectl-taint"}); err != nil {
		t.Fatal(err)
	}
	others := n.Spec.Taints // the not-ready taint and the operator's

	fsys, lib := simNVML(t)
	cfg := config.Default()
	cfg.NodeName = node
	cfg.Discovery.Interval = time.Hour
	cfg.Publish.AllowSimulated = true
	cfg.Publish.Resync = 500 * time.Millisecond // with the client's 5 QPS, room for writes
	cfg.Publish.BackoffInitial, cfg.Publish.BackoffMax = 50*time.Millisecond, time.Second
	cfg.Metrics.ListenAddress = "127.0.0.1:0"
	cfg.Metrics.SampleInterval = 100 * time.Millisecond
	cfg.Metrics.PodResourcesSocket = ""
	cfg.Metrics.Health.Taint.Enabled = true
	var (
		reloadMu  sync.Mutex
		reloadCfg = cfg
	)
	reload := func(change func(*config.Taint)) {
		reloadMu.Lock()
		change(&reloadCfg.Metrics.Health.Taint)
		reloadMu.Unlock()
	}
	reloads := make(chan struct{})
	logs := &syncBuffer{}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil)), Env: &discovery.Env{FS: fsys, Backends: []gpu.Backend{nvml.New(lib)}, Simulated: "dgx-h100-ib"}, Build: exporters.BuildInfo{Version: "test"},
			Kube: agentClient(t, c), ReloadRequests: reloads,
			Reload: func() (config.Config, error) { reloadMu.Lock(); defer reloadMu.Unlock(); return reloadCfg, nil }})
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})

	gpuHealthy := func(status corev1.ConditionStatus, reason string, msg *regexp.Regexp) func() error {
		return func() error {
			n, err := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, cond := range n.Status.Conditions {
				if string(cond.Type) == nodestatus.GPUHealthy {
					if cond.Status != status || cond.Reason != reason || !msg.MatchString(cond.Message) {
						return fmt.Errorf("GPUHealthy %s %s %q", cond.Status, cond.Reason, cond.Message)
					}
					return nil
				}
			}
			return fmt.Errorf("no GPUHealthy condition among %v", n.Status.Conditions)
		}
	}
	taints := func(agent ...corev1.Taint) func() error {
		return func() error {
			n, err := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			want := append(append([]corev1.Taint{}, others...), agent...)
			if len(n.Spec.Taints) != len(want) {
				return fmt.Errorf("taints %v, want %v", n.Spec.Taints, want)
			}
			for i, w := range want {
				g := n.Spec.Taints[i]
				if g.Key != w.Key || g.Value != w.Value || g.Effect != w.Effect || w.TimeAdded != nil && !w.TimeAdded.Equal(g.TimeAdded) {
					return fmt.Errorf("taints %v, want %v", n.Spec.Taints, want)
				}
			}
			return nil
		}
	}
	event := func(reason, substr string) func() error {
		return func() error {
			evs, err := c.Admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.InvolvedObject.Name == node && e.Reason == reason && strings.Contains(e.Message, substr) {
					return nil
				}
			}
			return fmt.Errorf("no %s event with %q", reason, substr)
		}
	}
	taint := func(value string, effect corev1.TaintEffect) corev1.Taint {
		return corev1.Taint{Key: key, Value: value, Effect: effect}
	}
	gpu3 := regexp.MustCompile(`^1 of 8 GPUs unhealthy: GPU 3 \(GPU-[0-9a-f-]+\): a row remapping is pending: the GPU needs a reset$`)
	gpu2 := regexp.MustCompile(`^1 of 8 GPUs unhealthy: GPU 2 \(GPU-[0-9a-f-]+\): XID 79 at `)
	all := regexp.MustCompile(`^8 GPUs healthy$`)

	// Healthy: the condition, no taint of the agent's, the labels.
	testsupport.Eventually(t, "GPUHealthy True", gpuHealthy(corev1.ConditionTrue, "AllGPUsHealthy", all))
	testsupport.Eventually(t, "no taint of the agent's", taints())
	testsupport.Eventually(t, "event for the healthy condition", event("AllGPUsHealthy", "GPUHealthy is True: 8 GPUs healthy"))
	n, _ = c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if n.Labels["gpunode.dev/gpu.count"] != "8" {
		t.Errorf("labels %v", n.Labels)
	}

	// A row remap waits for a GPU reset: unhealthy, tainted.
	nvmlfake.SetRowRemap(lib, 3, 1, true, false)
	testsupport.Eventually(t, "GPUHealthy False", gpuHealthy(corev1.ConditionFalse, "RowRemapPending", gpu3))
	testsupport.Eventually(t, "taint set beside the others", taints(taint("RowRemapPending", corev1.TaintEffectNoSchedule)))
	testsupport.Eventually(t, "warning event", event("RowRemapPending", "GPUHealthy is False: 1 of 8 GPUs unhealthy: GPU 3"))

	// The GPU was reset: healthy again, the taint goes.
	nvmlfake.SetRowRemap(lib, 3, 1, false, false)
	testsupport.Eventually(t, "GPUHealthy True again", gpuHealthy(corev1.ConditionTrue, "AllGPUsHealthy", all))
	testsupport.Eventually(t, "taint removed on recovery", taints())

	// A GPU falls off the bus (XID 79, critical): tainted, through the
	// sampler's event path, at once.
	testsupport.Eventually(t, "XID registration", func() error {
		if nvmlfake.Calls(lib, "nvmlDeviceRegisterEvents") < 8 {
			return fmt.Errorf("not registered")
		}
		return nil
	})
	raised := time.Now()
	nvmlfake.RaiseXID(lib, 2, 79)
	testsupport.Eventually(t, "GPUHealthy False for the XID", gpuHealthy(corev1.ConditionFalse, "XIDCritical", gpu2))
	testsupport.Eventually(t, "XID taint", taints(taint("XIDCritical", corev1.TaintEffectNoSchedule)))
	t.Logf("XID raised to condition and taint on the Node: %v", time.Since(raised).Round(time.Millisecond))
	testsupport.Eventually(t, "XID event", event("XIDCritical", "GPUHealthy is False: 1 of 8 GPUs unhealthy: GPU 2"))
	if !regexp.MustCompile(`level=WARN msg="node condition" type=GPUHealthy status=False reason=XIDCritical .* taint="gpunode.dev/gpu-unhealthy=XIDCritical:NoSchedule"`).MatchString(logs.String()) {
		t.Error("the condition change is not logged with its taint")
	}

	// Steady state: the agent re-reads its Node (resync 200 ms) and the
	// sampler goes on every 100 ms; nothing is written.
	time.Sleep(500 * time.Millisecond) // let the last pass and its event finish
	before, err := c.Scrape(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	after, err := c.Scrape(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := after.Since(before)
	if w := d.Writes("nodes", "") + d.Writes("nodes", "status") + d.Writes("events", ""); w != 0 {
		t.Errorf("%v writes in steady state with an unhealthy GPU, want 0", w)
	}
	if g := d.Requests(kube.Match{"verb": "GET", "resource": "nodes"}); g < 3 {
		t.Errorf("only %v GETs in 1.5 s: the agent is not re-reading its Node", g)
	}

	// The XID stays until the agent restarts; the operator disables the
	// taint and reloads: it goes, the condition stays False.
	reload(func(tc *config.Taint) { tc.Enabled = false })
	reloads <- struct{}{}
	testsupport.Eventually(t, "taint removed when disabled", taints())
	if err := gpuHealthy(corev1.ConditionFalse, "XIDCritical", gpu2)(); err != nil {
		t.Error(err)
	}
	// Enabled again as NoExecute: the taint is back, with its time.
	reload(func(tc *config.Taint) { tc.Enabled, tc.Effect = true, "NoExecute" })
	reloads <- struct{}{}
	testsupport.Eventually(t, "NoExecute taint", taints(taint("XIDCritical", corev1.TaintEffectNoExecute)))
	n, _ = c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if ta := n.Spec.Taints[len(n.Spec.Taints)-1].TimeAdded; ta == nil {
		t.Error("NoExecute taint without its time")
	}
	if !strings.Contains(logs.String(), `msg="GPU health taint configuration changed" enabled=false`) {
		t.Error("the taint configuration change is not logged")
	}

	// Cleanup, as the agent, removes the taint and the conditions.
	stop()
	if _, nc, err := publish.Cleanup(ctx, agentClient(t, c), node, key); err != nil || nc != 4 { // discovery, GPU and RDMA health, verification
		t.Fatalf("cleanup: %d conditions, %v", nc, err)
	}
	if err := taints()(); err != nil {
		t.Errorf("after cleanup: %v", err)
	}
	n, _ = c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if len(n.Status.Conditions) != 0 || n.Labels["gpunode.dev/gpu.count"] != "" || n.Labels["kubernetes.io/hostname"] != node {
		t.Errorf("after cleanup: conditions %v, labels %v", n.Status.Conditions, n.Labels)
	}
}
