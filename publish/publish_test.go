package publish

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/testsupport"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/test/kube"
)

// cluster is one real kube-apiserver + etcd for the package's tests; each
// test works on Nodes of its own.
var cluster *kube.Cluster

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	dir, err := os.MkdirTemp("", "gpunode-publish-test-")
	if err == nil {
		cluster, err = kube.Start(ctx, dir, kube.Options{Tokens: fleetTokens})
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start test apiserver:", err)
		os.Exit(1)
	}
	code := m.Run()
	cluster.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

var opts = labels.Options{Domain: "gpunode.dev", Sets: map[labels.SetName]bool{labels.GPUNode: true, labels.LLMD: true, labels.NVIDIA: true}}

// logBuffer collects a publisher's log for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type running struct {
	*Publisher
	logs *logBuffer
	stop func()
}

// start runs a publisher for node until the test ends (or stop).
func start(t *testing.T, client *kubeapi.Client, node string) *running {
	t.Helper()
	logs := &logBuffer{}
	p := New(Options{
		Client: client, Node: node, Resync: 100 * time.Millisecond,
		BackoffInitial: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		EventNamespace: "default", Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return &running{Publisher: p, logs: logs, stop: stop}
}

func createNode(t *testing.T, name string, l map[string]string) *corev1.Node {
	t.Helper()
	n, err := cluster.Admin.CoreV1().Nodes().Create(context.Background(),
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}, metav1.CreateOptions{FieldManager: "test-admin"})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// kubeNode reads a Node as the agent does.
func kubeNode(t *testing.T, name string) *kubeapi.Node {
	t.Helper()
	n, err := cluster.AdminKube.GetNode(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func getNode(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n, err := cluster.Admin.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// hasLabels checks that node carries want (a "" value: the key is absent).
func hasLabels(name string, want map[string]string) func() error {
	return func() error {
		n, err := cluster.Admin.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for k, v := range want {
			got, ok := n.Labels[k]
			if v == "" && ok {
				return fmt.Errorf("label %s=%s still there", k, got)
			}
			if v != "" && got != v {
				return fmt.Errorf("label %s=%q, want %q (all: %v)", k, got, v, n.Labels)
			}
		}
		return nil
	}
}

func gpuLabels() labels.Set {
	return labels.Set{
		"gpunode.dev/gpu.present": "true", "gpunode.dev/gpu.count": "8", "gpunode.dev/rdma.present": "true",
		"llm-d.ai/gpu-node": "true", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "8",
	}
}

func healthy() []nodestatus.Condition {
	return []nodestatus.Condition{{Type: nodestatus.DiscoveryHealthy, Status: nodestatus.True, Reason: "SourcesOK", Message: "all 3 discovery sources ran"}}
}

func condition(name, typ string) *corev1.NodeCondition {
	for _, c := range getNode(&testing.T{}, name).Status.Conditions {
		if string(c.Type) == typ {
			return &c
		}
	}
	return nil
}

func TestConvergeRemoveStaleKeepForeign(t *testing.T) {
	const node = "converge"
	createNode(t, node, map[string]string{"kubernetes.io/hostname": node, "team.example.com/owner": "ml"})
	p := start(t, cluster.AdminKube, node)
	p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts, Conditions: healthy()})
	testsupport.Eventually(t, "labels converge", hasLabels(node, gpuLabels()))
	testsupport.Eventually(t, "condition set", func() error {
		if c := condition(node, nodestatus.DiscoveryHealthy); c == nil || c.Status != corev1.ConditionTrue || c.Reason != "SourcesOK" {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})
	owned, err := OwnedLabels(kubeNode(t, node))
	if err != nil || !maps.Equal(owned, gpuLabels()) {
		t.Fatalf("the agent owns %v (%v), want exactly its labels", owned, err)
	}

	// A label the agent stops producing disappears; other managers' stay.
	next := gpuLabels()
	delete(next, "nvidia.com/gpu.count")
	next["gpunode.dev/gpu.count"] = "7"
	p.Set(Desired{Labels: next, LabelOptions: opts, Conditions: healthy()})
	testsupport.Eventually(t, "stale label removed", hasLabels(node, map[string]string{
		"nvidia.com/gpu.count": "", "gpunode.dev/gpu.count": "7",
		"kubernetes.io/hostname": node, "team.example.com/owner": "ml",
	}))

	// Someone removes one of the agent's labels: it comes back at the next resync.
	if _, err := cluster.Admin.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"gpunode.dev/gpu.present":null}}}`), metav1.PatchOptions{FieldManager: "kubectl-label"}); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, "removed label restored", hasLabels(node, map[string]string{"gpunode.dev/gpu.present": "true"}))
}

func TestConflictsNotForced(t *testing.T) {
	const node = "conflict"
	// GFD (through NFD) owns a different product value, and an operator
	// hand-edited one of the agent's own keys.
	createNode(t, node, map[string]string{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-SHARED"})
	if _, err := cluster.Admin.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"gpunode.dev/gpu.count":"99"}}}`), metav1.PatchOptions{FieldManager: "kubectl-label"}); err != nil {
		t.Fatal(err)
	}
	p := start(t, cluster.AdminKube, node)
	p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts})
	testsupport.Eventually(t, "own labels applied, the conflicting shared key left alone", hasLabels(node, map[string]string{
		"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-SHARED", "nvidia.com/gpu.count": "8",
		"gpunode.dev/gpu.count": "8", "llm-d.ai/gpu-node": "true",
	}))
	testsupport.Eventually(t, "conflict metric", func() error {
		if v := testutil.ToFloat64(p.m.conflicts.WithLabelValues("nvidia.com/gpu.product")); v != 1 {
			return fmt.Errorf("gpunode_label_conflict = %v", v)
		}
		return nil
	})
	testsupport.Eventually(t, "conflict event", func() error {
		return hasEvent(node, "LabelConflict", `label nvidia.com/gpu.product is "NVIDIA-H100-80GB-HBM3-SHARED", owned by test-admin`)
	})
	if !strings.Contains(p.logs.String(), "label conflict") {
		t.Errorf("conflict not logged:\n%s", p.logs.String())
	}
	// The agent stays out of the way: no write per resync for the conflict.
	before := scrape(t)
	time.Sleep(time.Second)
	if w := scrape(t).Since(before).Writes("nodes", ""); w != 0 {
		t.Errorf("%v node writes while a conflict stands; want 0", w)
	}
	// The other manager lets go: the agent takes the key.
	if _, err := cluster.Admin.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"nvidia.com/gpu.product":null}}}`), metav1.PatchOptions{FieldManager: "test-admin"}); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, "key taken once free", hasLabels(node, map[string]string{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}))
	testsupport.Eventually(t, "conflict metric cleared", func() error {
		if n := testutil.CollectAndCount(p.m.conflicts); n != 0 {
			return fmt.Errorf("%d conflict series", n)
		}
		return nil
	})
}

// A shared key the agent co-owns with another manager, whose value the
// agent then wants to change: the apply conflicts (409) and the key is
// dropped from the apply, not forced.
func TestConflictOnChangeNotForced(t *testing.T) {
	const node = "conflict-change"
	// With a label, as the kubelet registers Nodes: an object without
	// managedFields gets them only at its first apply, and then every
	// field already there belongs to "before-first-apply".
	createNode(t, node, map[string]string{"kubernetes.io/hostname": node})
	if _, err := cluster.Admin.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"nvidia.com/gpu.product":"NVIDIA-H100-80GB-HBM3"}}}`), metav1.PatchOptions{FieldManager: "nfd-master"}); err != nil {
		t.Fatal(err)
	}
	p := start(t, cluster.AdminKube, node)
	p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts})
	testsupport.Eventually(t, "co-owned", func() error {
		if owned, _ := OwnedLabels(kubeNode(t, node)); owned["nvidia.com/gpu.product"] == "" {
			return fmt.Errorf("not co-owned: %v", owned)
		}
		return nil
	})
	next := gpuLabels()
	next["nvidia.com/gpu.product"] = "NVIDIA-H200"
	p.Set(Desired{Labels: next, LabelOptions: opts})
	testsupport.Eventually(t, "conflict reported by the apiserver", func() error {
		return hasEvent(node, "LabelConflict", "owned by nfd-master")
	})
	if got := getNode(t, node).Labels["nvidia.com/gpu.product"]; got != "NVIDIA-H100-80GB-HBM3" {
		t.Errorf("the other manager's value was overwritten: %q", got)
	}
	if v := testutil.ToFloat64(p.m.requests.WithLabelValues("apply", "conflict")); v < 1 {
		t.Errorf("no apply conflict counted (%v)", v)
	}
}

func TestLabelsHeldWhileSourceFails(t *testing.T) {
	const node = "held"
	createNode(t, node, nil)
	p := start(t, cluster.AdminKube, node)
	p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts})
	testsupport.Eventually(t, "converge", hasLabels(node, gpuLabels()))

	// The GPU source fails: its labels are missing from the computed set
	// but stay on the Node; the RDMA label can still change.
	failing := labels.Set{"gpunode.dev/rdma.present": "false"}
	p.Set(Desired{Labels: failing, Failed: []labels.Source{labels.SourceGPU}, LabelOptions: opts})
	want := gpuLabels()
	want["gpunode.dev/rdma.present"] = "false"
	testsupport.Eventually(t, "GPU labels held", hasLabels(node, want))

	// After a restart with the source still failing, the labels the agent
	// owns on the Node are its last good ones.
	p.stop()
	p2 := start(t, cluster.AdminKube, node)
	p2.Set(Desired{Labels: failing, Failed: []labels.Source{labels.SourceGPU}, LabelOptions: opts})
	time.Sleep(500 * time.Millisecond)
	if err := hasLabels(node, want)(); err != nil {
		t.Errorf("after restart: %v", err)
	}

	// The source turns absent (the driver is gone): its labels go.
	p2.Set(Desired{Labels: labels.Set{"gpunode.dev/gpu.present": "false", "gpunode.dev/rdma.present": "false"}, LabelOptions: opts})
	testsupport.Eventually(t, "absent source removes its labels", hasLabels(node, map[string]string{
		"gpunode.dev/gpu.present": "false", "gpunode.dev/gpu.count": "", "nvidia.com/gpu.product": "", "llm-d.ai/gpu-node": "",
	}))
}

func scrape(t *testing.T) kube.Metrics {
	t.Helper()
	m, err := cluster.Scrape(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Steady state: once converged, re-reading the Node every resync and
// re-setting the same desired state writes nothing, counted by the
// apiserver itself.
func TestSteadyStateZeroWrites(t *testing.T) {
	const node = "steady"
	createNode(t, node, nil)
	p := start(t, cluster.AdminKube, node)
	p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts, Conditions: healthy()})
	testsupport.Eventually(t, "converge", hasLabels(node, gpuLabels()))
	testsupport.Eventually(t, "in sync", func() error {
		if testutil.ToFloat64(p.m.inSync) != 1 {
			return fmt.Errorf("not in sync")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // let the condition's event go out
	before := scrape(t)
	gets := testutil.ToFloat64(p.m.requests.WithLabelValues("get", "ok"))
	for range 20 {
		p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts, Conditions: healthy()})
		time.Sleep(100 * time.Millisecond)
	}
	d := scrape(t).Since(before)
	if w := d.Writes("nodes", "") + d.Writes("nodes", "status"); w != 0 {
		t.Errorf("%v writes to nodes in steady state, want 0", w)
	}
	if n := d.Requests(kube.Match{"verb": "GET", "resource": "nodes"}); n < 5 {
		t.Errorf("only %v GETs: the publisher is not re-reading its Node", n)
	}
	if testutil.ToFloat64(p.m.requests.WithLabelValues("get", "ok"))-gets < 5 {
		t.Error("publisher counted no GETs")
	}
	if w := d.Writes("events", ""); w != 0 {
		t.Errorf("%v events created in steady state", w)
	}
}

func hasEvent(node, reason, substr string) error {
	evs, err := cluster.Admin.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return err
	}
	var seen []string
	for _, e := range evs.Items {
		if e.InvolvedObject.Name != node {
			continue
		}
		seen = append(seen, e.Reason+": "+e.Message)
		if e.Reason == reason && strings.Contains(e.Message, substr) && e.InvolvedObject.Kind == "Node" && e.InvolvedObject.UID != "" {
			return nil
		}
	}
	return fmt.Errorf("no %s event with %q among %q", reason, substr, seen)
}

func TestConditionsAndEvents(t *testing.T) {
	const node = "conditions"
	createNode(t, node, nil)
	// Another manager's condition (the kubelet's Ready) is left alone.
	ready := &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}}}}
	ready.Name = node
	if _, err := cluster.Admin.CoreV1().Nodes().UpdateStatus(context.Background(), withResourceVersion(t, ready), metav1.UpdateOptions{FieldManager: "kubelet"}); err != nil {
		t.Fatal(err)
	}
	p := start(t, cluster.AdminKube, node)
	p.Set(Desired{Labels: labels.Set{}, LabelOptions: opts, Conditions: healthy()})
	testsupport.Eventually(t, "event for the new condition", func() error { return hasEvent(node, "SourcesOK", "GPUNodeDiscoveryHealthy is True") })
	first := condition(node, nodestatus.DiscoveryHealthy)

	failing := []nodestatus.Condition{{Type: nodestatus.DiscoveryHealthy, Status: nodestatus.False, Reason: "SourceFailed", Message: "rdma: timed out after 10s"}}
	time.Sleep(1100 * time.Millisecond) // condition times have second resolution
	p.Set(Desired{Labels: labels.Set{}, LabelOptions: opts, Conditions: failing})
	testsupport.Eventually(t, "warning event on failure", func() error {
		return hasEvent(node, "SourceFailed", "GPUNodeDiscoveryHealthy is False: rdma: timed out after 10s")
	})
	c := condition(node, nodestatus.DiscoveryHealthy)
	if c.Status != corev1.ConditionFalse || !c.LastTransitionTime.After(first.LastTransitionTime.Time) {
		t.Errorf("transition not recorded: %+v (was %+v)", c, first)
	}
	if k := condition(node, string(corev1.NodeReady)); k == nil || k.Reason != "KubeletReady" {
		t.Errorf("kubelet's condition touched: %+v", k)
	}
	// A condition type the agent does not own is refused before any request.
	p.Set(Desired{Labels: labels.Set{}, LabelOptions: opts, Conditions: append(failing, nodestatus.Condition{Type: "Ready", Status: nodestatus.False})})
	time.Sleep(300 * time.Millisecond)
	if k := condition(node, string(corev1.NodeReady)); k.Status != corev1.ConditionTrue {
		t.Errorf("agent wrote the kubelet's Ready: %+v", k)
	}
	if !strings.Contains(p.logs.String(), "condition type not owned") {
		t.Error("foreign condition type not reported")
	}
	// Features' own events go out too.
	p.Event(nodestatus.Event{Type: nodestatus.Normal, Reason: "TuningApplied", Message: "profile inference applied"})
	testsupport.Eventually(t, "feature event", func() error { return hasEvent(node, "TuningApplied", "profile inference applied") })
}

func withResourceVersion(t *testing.T, n *corev1.Node) *corev1.Node {
	n.ResourceVersion = getNode(t, n.Name).ResourceVersion
	return n
}

func TestCleanup(t *testing.T) {
	const node = "cleanup"
	createNode(t, node, map[string]string{"team.example.com/owner": "ml", "llm-d.ai/gpu-node": "true"})
	p := start(t, cluster.AdminKube, node)
	p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts, Conditions: healthy()})
	testsupport.Eventually(t, "converge", hasLabels(node, gpuLabels()))
	testsupport.Eventually(t, "condition", func() error {
		if condition(node, nodestatus.DiscoveryHealthy) == nil {
			return fmt.Errorf("no condition yet")
		}
		return nil
	})
	p.stop()
	nl, nc, err := Cleanup(context.Background(), cluster.AdminKube, node)
	if err != nil || nl != len(gpuLabels()) || nc != 1 {
		t.Fatalf("Cleanup removed %d labels, %d conditions: %v", nl, nc, err)
	}
	n := getNode(t, node)
	for k := range gpuLabels() {
		if _, ok := n.Labels[k]; ok && k != "llm-d.ai/gpu-node" {
			t.Errorf("label %s survived cleanup", k)
		}
	}
	// A label the admin set too (same value, co-owned) stays: it is theirs as well.
	if n.Labels["team.example.com/owner"] != "ml" || n.Labels["llm-d.ai/gpu-node"] != "true" {
		t.Errorf("foreign labels lost: %v", n.Labels)
	}
	if c := condition(node, nodestatus.DiscoveryHealthy); c != nil {
		t.Errorf("condition survived cleanup: %+v", c)
	}
	if owned, _ := OwnedLabels(kubeNode(t, node)); len(owned) != 0 {
		t.Errorf("still owned: %v", owned)
	}
	// Again: nothing to do. A missing node: nothing to do.
	if nl, nc, err := Cleanup(context.Background(), cluster.AdminKube, node); nl+nc != 0 || err != nil {
		t.Errorf("second cleanup: %d %d %v", nl, nc, err)
	}
	if _, _, err := Cleanup(context.Background(), cluster.AdminKube, "no-such-node"); err != nil {
		t.Errorf("missing node: %v", err)
	}
	if _, err := cluster.Admin.CoreV1().Nodes().Get(context.Background(), "no-such-node", metav1.GetOptions{}); err == nil {
		t.Error("cleanup created a node")
	}
}

func TestCleanupAll(t *testing.T) {
	for _, n := range []string{"all-a", "all-b"} {
		createNode(t, n, nil)
		p := start(t, cluster.AdminKube, n)
		p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts})
		testsupport.Eventually(t, "converge", hasLabels(n, gpuLabels()))
		p.stop()
	}
	seen := map[string]int{}
	if err := CleanupAll(context.Background(), cluster.AdminKube, "", func(node string, l, c int) { seen[node] = l }, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"all-a", "all-b"} {
		if seen[n] != len(gpuLabels()) {
			t.Errorf("%s: removed %d labels", n, seen[n])
		}
		if err := hasLabels(n, map[string]string{"gpunode.dev/gpu.count": ""})(); err != nil {
			t.Error(err)
		}
	}
}

// The publisher never creates a Node: a missing one is an error it
// retries with backoff, and it converges once the Node registers.
func TestNodeAppearsLater(t *testing.T) {
	const node = "late"
	p := start(t, cluster.AdminKube, node)
	p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts})
	testsupport.Eventually(t, "not-found reported", func() error {
		if !strings.Contains(p.logs.String(), `node \"late\" does not exist`) {
			return fmt.Errorf("log: %s", p.logs.String())
		}
		return nil
	})
	if _, err := cluster.Admin.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{}); err == nil {
		t.Fatal("the publisher created its Node")
	}
	createNode(t, node, nil)
	testsupport.Eventually(t, "converge after registration", hasLabels(node, gpuLabels()))
}

func TestMetricsRegister(t *testing.T) {
	p := New(Options{Logger: slog.New(slog.DiscardHandler)})
	if err := prometheus.NewPedanticRegistry().Register(prometheus.Collector(p.m.requests)); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	for _, c := range p.Collectors() {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
}

// noEventsToken is a user that may publish labels and conditions but not
// create events (an RBAC mistake): rejected events are dropped and
// counted, not retried forever, and the labels are unaffected.
const noEventsToken = "gpunode-test-noevents"

func TestRejectedEventsDropped(t *testing.T) {
	ctx := context.Background()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "gpunode-noevents"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
	}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "gpunode-noevents"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "gpunode-noevents"},
		Subjects: []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "gpunode-noevents"}}}
	if _, err := cluster.Admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	client, err := cluster.Kube(noEventsToken)
	if err != nil {
		t.Fatal(err)
	}
	const node = "no-events"
	createNode(t, node, map[string]string{"kubernetes.io/hostname": node})
	p := start(t, client, node)
	p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts, Conditions: healthy()})
	testsupport.Eventually(t, "labels despite the forbidden event", hasLabels(node, gpuLabels()))
	testsupport.Eventually(t, "event dropped", func() error {
		if v := testutil.ToFloat64(p.m.eventsDropped); v != 1 {
			return fmt.Errorf("dropped %v", v)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	if v := testutil.ToFloat64(p.m.requests.WithLabelValues("event", "error")); v != 1 {
		t.Errorf("event attempted %v times, want once", v)
	}
	if testutil.ToFloat64(p.m.inSync) != 1 || testutil.ToFloat64(p.m.retryDelay) != 0 {
		t.Error("a rejected event put the publisher into backoff")
	}
}
