package publish

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/testsupport"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/test/kube"
)

const healthTaintKey = "gpunode.dev/gpu-unhealthy"

// The taints other managers put on the test Node: the kubelet's (at
// registration) and an operator's NoExecute one with its time.
var (
	gpuTaint         = corev1.Taint{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule}
	maintenanceTaint = corev1.Taint{Key: "team.example.com/maintenance", Effect: corev1.TaintEffectNoExecute,
		TimeAdded: &metav1.Time{Time: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}}
)

func createTaintedNode(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{gpuTaint}}}
	if _, err := cluster.Admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{FieldManager: "kubelet"}); err != nil {
		t.Fatal(err)
	}
	setTaints(t, name, "kubectl-taint", gpuTaint, maintenanceTaint)
}

// setTaints replaces the Node's taints, as kubectl taint does.
func setTaints(t *testing.T, name, manager string, taints ...corev1.Taint) {
	t.Helper()
	n := getNode(t, name)
	n.Spec.Taints = taints
	if _, err := cluster.Admin.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{FieldManager: manager}); err != nil {
		t.Fatal(err)
	}
}

// hasTaints checks the Node's taints, in order; times are compared for
// the taints that have one in want.
func hasTaints(name string, want ...corev1.Taint) func() error {
	return func() error {
		n, err := cluster.Admin.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		got := n.Spec.Taints
		if len(got) != len(want) {
			return fmt.Errorf("taints %v, want %v", got, want)
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Key != w.Key || g.Value != w.Value || g.Effect != w.Effect || w.TimeAdded != nil && !w.TimeAdded.Equal(g.TimeAdded) {
				return fmt.Errorf("taint %d is %v, want %v (all: %v)", i, g, w, got)
			}
		}
		return nil
	}
}

func gpuCondition(status nodestatus.Status, reason, msg string) nodestatus.Condition {
	return nodestatus.Condition{Type: nodestatus.GPUHealthy, Status: status, Reason: reason, Message: msg}
}

// The opt-in GPU health taint on a real apiserver: set beside the
// kubelet's and an operator's taints, which stay exactly as they are;
// no write in steady state; restored when someone removes it; moved when
// its effect changes; removed on recovery, when disabled, and by cleanup.
func TestHealthTaint(t *testing.T) {
	const node = "health-taint"
	createTaintedNode(t, node)
	p := start(t, cluster.AdminKube, node)
	keys := []string{healthTaintKey}
	unhealthy := gpuCondition(nodestatus.False, "XIDCritical", "1 of 8 GPUs unhealthy: GPU 2 (GPU-2): XID 79 at 2026-03-04T05:06:07Z")
	taint := nodestatus.Taint{Key: healthTaintKey, Value: "XIDCritical", Effect: "NoSchedule"}
	want := Desired{Labels: gpuLabels(), LabelOptions: opts, Conditions: append(healthy(), unhealthy), Taints: []nodestatus.Taint{taint}, TaintKeys: keys}
	p.Set(want)
	agentTaint := corev1.Taint{Key: healthTaintKey, Value: "XIDCritical", Effect: corev1.TaintEffectNoSchedule}
	testsupport.Eventually(t, "taint set beside the others", hasTaints(node, gpuTaint, maintenanceTaint, agentTaint))
	testsupport.Eventually(t, "labels", hasLabels(node, gpuLabels()))
	testsupport.Eventually(t, "condition False with its event", func() error {
		if c := condition(node, nodestatus.GPUHealthy); c == nil || c.Status != corev1.ConditionFalse || c.Reason != "XIDCritical" || c.Message != unhealthy.Message {
			return fmt.Errorf("condition %+v", c)
		}
		return hasEvent(node, "XIDCritical", "GPUHealthy is False: 1 of 8 GPUs unhealthy: GPU 2")
	})
	if owned, _ := OwnedLabels(kubeNode(t, node)); !owned.Equal(gpuLabels()) {
		t.Errorf("labels owned beside the taint: %v", owned)
	}
	if !strings.Contains(p.logs.String(), "taint set") {
		t.Errorf("taint not logged:\n%s", p.logs.String())
	}

	// Steady state: re-reads, no writes.
	testsupport.Eventually(t, "in sync", func() error {
		if testutil.ToFloat64(p.m.inSync) != 1 {
			return fmt.Errorf("not in sync")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // let the events go out
	before := scrape(t)
	for range 10 {
		p.Set(want)
		time.Sleep(100 * time.Millisecond)
	}
	d := scrape(t).Since(before)
	if w := d.Writes("nodes", "") + d.Writes("nodes", "status") + d.Writes("events", ""); w != 0 {
		t.Errorf("%v writes in steady state with the taint set, want 0", w)
	}
	if n := d.Requests(kube.Match{"verb": "GET", "resource": "nodes"}); n < 3 {
		t.Errorf("only %v GETs: the publisher is not re-reading its Node", n)
	}

	// Someone removes the agent's taint: it is back at the next resync,
	// and the others stay.
	setTaints(t, node, "kubectl-taint", gpuTaint, maintenanceTaint)
	testsupport.Eventually(t, "removed taint restored", hasTaints(node, gpuTaint, maintenanceTaint, agentTaint))

	// Another effect: the old entry goes, the new one is a NoExecute
	// taint with its time.
	noExec := nodestatus.Taint{Key: healthTaintKey, Value: "XIDCritical", Effect: "NoExecute"}
	want.Taints = []nodestatus.Taint{noExec}
	p.Set(want)
	testsupport.Eventually(t, "effect changed", hasTaints(node, gpuTaint, maintenanceTaint,
		corev1.Taint{Key: healthTaintKey, Value: "XIDCritical", Effect: corev1.TaintEffectNoExecute}))
	if ta := getNode(t, node).Spec.Taints[2].TimeAdded; ta == nil || time.Since(ta.Time) > time.Minute {
		t.Errorf("NoExecute taint added at %v", ta)
	}

	// Recovery: the condition is True and the taint goes.
	recovered := gpuCondition(nodestatus.True, "AllGPUsHealthy", "8 GPUs healthy")
	want.Conditions, want.Taints = append(healthy(), recovered), nil
	p.Set(want)
	testsupport.Eventually(t, "taint removed on recovery", hasTaints(node, gpuTaint, maintenanceTaint))
	testsupport.Eventually(t, "condition True with its event", func() error {
		if c := condition(node, nodestatus.GPUHealthy); c == nil || c.Status != corev1.ConditionTrue {
			return fmt.Errorf("condition %+v", c)
		}
		return hasEvent(node, "AllGPUsHealthy", "GPUHealthy is True: 8 GPUs healthy")
	})
	if !strings.Contains(p.logs.String(), "taint removed") {
		t.Errorf("removal not logged:\n%s", p.logs.String())
	}

	// Unhealthy again, then the taint is disabled while the GPU stays
	// unhealthy: the key is still managed, so the taint goes.
	want.Conditions, want.Taints = append(healthy(), unhealthy), []nodestatus.Taint{taint}
	p.Set(want)
	testsupport.Eventually(t, "taint back", hasTaints(node, gpuTaint, maintenanceTaint, agentTaint))
	want.Taints = nil
	p.Set(want)
	testsupport.Eventually(t, "taint removed when disabled", hasTaints(node, gpuTaint, maintenanceTaint))
	if c := condition(node, nodestatus.GPUHealthy); c == nil || c.Status != corev1.ConditionFalse {
		t.Errorf("condition %+v, want still False", c)
	}

	// Cleanup removes the taint and the conditions, and only those.
	want.Taints = []nodestatus.Taint{taint}
	p.Set(want)
	testsupport.Eventually(t, "taint back", hasTaints(node, gpuTaint, maintenanceTaint, agentTaint))
	p.stop()
	nl, nc, err := Cleanup(context.Background(), cluster.AdminKube, node, healthTaintKey)
	if err != nil || nl != len(gpuLabels()) || nc != 2 {
		t.Fatalf("Cleanup removed %d labels, %d conditions: %v", nl, nc, err)
	}
	if err := hasTaints(node, gpuTaint, maintenanceTaint)(); err != nil {
		t.Errorf("after cleanup: %v", err)
	}
	if n := getNode(t, node); len(n.Status.Conditions) != 0 || n.Labels["kubernetes.io/hostname"] != node {
		t.Errorf("after cleanup: conditions %v, labels %v", n.Status.Conditions, n.Labels)
	}
}

// The agent's write of the taints is conditional on the Node it read: a
// taint an operator adds in between is not lost. The patch on a stale
// read fails with a conflict; syncTaints re-reads and converges.
func TestHealthTaintRace(t *testing.T) {
	const node = "health-taint-race"
	createTaintedNode(t, node)
	stale := kubeNode(t, node)
	operator := corev1.Taint{Key: "team.example.com/drain", Effect: corev1.TaintEffectNoSchedule}
	setTaints(t, node, "kubectl-taint", gpuTaint, maintenanceTaint, operator)

	taint := nodestatus.Taint{Key: healthTaintKey, Value: "NVLinkDown", Effect: "NoSchedule"}
	_, err := patchTaints(context.Background(), cluster.AdminKube, stale, []string{healthTaintKey}, []nodestatus.Taint{taint}, kubeapi.NewTime(time.Now()))
	if !kubeapi.IsConflict(err) {
		t.Fatalf("patch on a stale read: %v, want a conflict", err)
	}
	p := New(Options{Client: cluster.AdminKube, Node: node, Logger: slog.New(slog.DiscardHandler), EventNamespace: "default"})
	got, err := p.syncTaints(context.Background(), stale, Desired{Taints: []nodestatus.Taint{taint}, TaintKeys: []string{healthTaintKey}})
	if err != nil {
		t.Fatal(err)
	}
	agentTaint := corev1.Taint{Key: healthTaintKey, Value: "NVLinkDown", Effect: corev1.TaintEffectNoSchedule}
	if err := hasTaints(node, gpuTaint, maintenanceTaint, operator, agentTaint)(); err != nil {
		t.Error(err)
	}
	if !slices.Equal(managedTaints(got, []string{healthTaintKey}), []nodestatus.Taint{taint}) {
		t.Errorf("returned node has taints %v", got.Spec.Taints)
	}
	if v := testutil.ToFloat64(p.m.requests.WithLabelValues("taints", "conflict")); v != 1 {
		t.Errorf("%v conflicts counted, want 1", v)
	}
	// The write is a merge patch by the agent's field manager.
	n := getNode(t, node)
	if !slices.ContainsFunc(n.ManagedFields, func(mf metav1.ManagedFieldsEntry) bool {
		return mf.Manager == FieldManager && mf.Operation == metav1.ManagedFieldsOperationUpdate
	}) {
		t.Errorf("no update by %s in managedFields", FieldManager)
	}
	// A freshly registered Node, with the not-ready taint the apiserver's
	// TaintNodesByCondition admission puts on every new Node.
	const fresh = "health-taint-fresh"
	createNode(t, fresh, nil)
	notReady := corev1.Taint{Key: "node.kubernetes.io/not-ready", Effect: corev1.TaintEffectNoSchedule}
	if err := hasTaints(fresh, notReady)(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.syncTaints(context.Background(), kubeNode(t, fresh), Desired{Taints: []nodestatus.Taint{taint}, TaintKeys: []string{healthTaintKey}}); err != nil {
		t.Fatal(err)
	}
	if err := hasTaints(fresh, notReady, agentTaint)(); err != nil {
		t.Error(err)
	}
	if _, err := p.syncTaints(context.Background(), kubeNode(t, fresh), Desired{TaintKeys: []string{healthTaintKey}}); err != nil {
		t.Fatal(err)
	}
	if err := hasTaints(fresh, notReady)(); err != nil {
		t.Error(err)
	}
	// Ready now: the agent's taint alone, then none.
	setTaints(t, fresh, "node-controller")
	for _, want := range [][]nodestatus.Taint{{taint}, nil} {
		if _, err := p.syncTaints(context.Background(), kubeNode(t, fresh), Desired{Taints: want, TaintKeys: []string{healthTaintKey}}); err != nil {
			t.Fatal(err)
		}
		if got := getNode(t, fresh).Spec.Taints; len(got) != len(want) {
			t.Errorf("taints %v, want %v", got, want)
		}
	}
}

func TestSortTaints(t *testing.T) {
	in := []nodestatus.Taint{
		{Key: "b", Effect: "NoSchedule", Value: "1"}, {Key: "a", Effect: "NoExecute"},
		{Key: "b", Effect: "NoSchedule", Value: "2"}, {Key: "a", Effect: "NoSchedule"},
	}
	got := sortTaints(in)
	want := []nodestatus.Taint{{Key: "a", Effect: "NoExecute"}, {Key: "a", Effect: "NoSchedule"}, {Key: "b", Effect: "NoSchedule", Value: "1"}}
	if !slices.Equal(got, want) {
		t.Errorf("sortTaints = %v", got)
	}
	n := &kubeapi.Node{Spec: kubeapi.NodeSpec{Taints: []kubeapi.Taint{{Key: gpuTaint.Key, Value: gpuTaint.Value, Effect: string(gpuTaint.Effect)}, {Key: "k", Value: "v", Effect: "NoSchedule", TimeAdded: &kubeapi.Time{}}}}}
	if got := managedTaints(n, []string{"k"}); !slices.Equal(got, []nodestatus.Taint{{Key: "k", Value: "v", Effect: "NoSchedule"}}) {
		t.Errorf("managedTaints = %v", got)
	}
	if got := managedTaints(n, nil); got != nil {
		t.Errorf("no keys: %v", got)
	}
}

// Set normalises the taints: sorted, one per key and effect, their keys
// managed.
func TestSetTaints(t *testing.T) {
	p := New(Options{Logger: slog.New(slog.DiscardHandler)})
	p.Set(Desired{Taints: []nodestatus.Taint{{Key: "b", Effect: "NoSchedule"}, {Key: "a", Effect: "NoSchedule"}, {Key: "b", Effect: "NoSchedule", Value: "x"}},
		TaintKeys: []string{"c", "a"}})
	if got := p.desired.Taints; !slices.Equal(got, []nodestatus.Taint{{Key: "a", Effect: "NoSchedule"}, {Key: "b", Effect: "NoSchedule"}}) {
		t.Errorf("taints %v", got)
	}
	if got := p.desired.TaintKeys; !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("keys %v", got)
	}
	// The same again, in another order: no change, no pass.
	<-p.wake
	p.Set(Desired{Taints: []nodestatus.Taint{{Key: "a", Effect: "NoSchedule"}, {Key: "b", Effect: "NoSchedule"}}, TaintKeys: []string{"a", "b", "c"}})
	select {
	case <-p.wake:
		t.Error("an unchanged desired state woke the publisher")
	default:
	}
}
