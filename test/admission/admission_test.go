// Package admission proves the chart's RBAC and ValidatingAdmissionPolicy
// on a real kube-apiserver with real Pod-bound service account tokens: the
// agent may change only the Node its token is bound to, and there only the
// labels and conditions it owns.
package admission

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/testsupport"

	"go.yaml.in/yaml/v3"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/publish"
	"github.com/gpunode/gpunode/test/kube"
	"github.com/gpunode/gpunode/test/tools"
)

const (
	chartDir  = "../../charts/gpunode-agent"
	namespace = "gpunode"
	release   = "gpunode-agent" // the chart's fullname is then "gpunode-agent"
	agentSA   = "gpunode-agent"
	nodeA     = "gpu-a"
	nodeB     = "gpu-b"
)

// render runs helm template on the chart and returns its objects, hooks included.
func render(t *testing.T, args ...string) []*unstructured.Unstructured {
	t.Helper()
	bin, err := tools.Helm()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin, append([]string{"template", release, chartDir, "--namespace", namespace, "--kube-version", "1.37.0",
		// as helm install learns from the apiserver; helm template's
		// built-in API list names no kinds
		"--api-versions", "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm template: %v\n%s", err, errOut.String())
	}
	var objs []*unstructured.Unstructured
	dec := yaml.NewDecoder(&out)
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if m != nil {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs
}

func find(objs []*unstructured.Unstructured, kind, nameSuffix string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && strings.HasSuffix(o.GetName(), nameSuffix) {
			return o
		}
	}
	return nil
}

// create makes each object in the cluster through the dynamic client.
func create(t *testing.T, c *kube.Cluster, objs []*unstructured.Unstructured) {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(c.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(c.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		ri := dyn.Resource(m.Resource)
		var rc dynamic.ResourceInterface = ri
		if m.Scope.Name() == "namespace" {
			rc = ri.Namespace(namespace)
		}
		if _, err := rc.Create(context.Background(), o, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

type setup struct {
	c     *kube.Cluster
	agent kubernetes.Interface // the agent's service account, token bound to a Pod on node A
	// agentKube is the same identity in the agent's own client.
	agentKube *kubeapi.Client
}

func start(t *testing.T) *setup {
	c := kube.StartT(t, kube.Options{})
	ctx := context.Background()
	if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	objs := render(t)
	var install []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() != "Job" { // the uninstall hook's Job needs a controller; its RBAC is tested
			install = append(install, o)
		}
	}
	create(t, c, install)
	for _, n := range []string{nodeA, nodeB} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{
			"kubernetes.io/hostname": n, "team.example.com/owner": "ml"}}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{gpuTaint}}}
		if _, err := c.Admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{FieldManager: "kubelet"}); err != nil {
			t.Fatal(err)
		}
		node, _ = c.Admin.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}}
		node.Status.Capacity = corev1.ResourceList{"cpu": resource.MustParse("64")}
		if _, err := c.Admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{FieldManager: "kubelet"}); err != nil {
			t.Fatal(err)
		}
	}
	// The agent's Pod on node A, from the DaemonSet's own template, as the
	// DaemonSet controller would create it.
	var ds struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(find(objs, "DaemonSet", "").Object, &ds); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: ds.Spec.Template.ObjectMeta, Spec: ds.Spec.Template.Spec}
	pod.Name, pod.Namespace, pod.Spec.NodeName = "gpunode-agent-a", namespace, nodeA
	pod, err := c.Admin.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.ServiceAccountName != agentSA {
		t.Fatalf("the DaemonSet runs as %q, want %q", pod.Spec.ServiceAccountName, agentSA)
	}
	token, err := c.BoundToken(ctx, namespace, agentSA, pod)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := kubernetes.NewForConfig(c.Config(token))
	if err != nil {
		t.Fatal(err)
	}
	agentKube, err := c.Kube(token)
	if err != nil {
		t.Fatal(err)
	}
	s := &setup{c: c, agent: agent, agentKube: agentKube}
	// The policy is enforced once the apiserver has loaded and compiled it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.applyLabels(nodeB, map[string]string{"gpunode.dev/gpu.count": "8"})
		if isDenied(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admission policy not enforced after 30 s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, _, err := publish.Cleanup(ctx, c.AdminKube, nodeB); err != nil { // undo what got through before
		t.Fatal(err)
	}
	return s
}

// gpuTaint is an operator's taint on both nodes; the apiserver adds its
// not-ready taint to new Nodes beside it.
var gpuTaint = corev1.Taint{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule}

// healthTaintKey is the chart's default config.metrics.health.taint.key.
const healthTaintKey = "gpunode.dev/gpu-unhealthy"

// rdmaTaintKey is the chart's default config.metrics.rdmaHealth.taint.key.
const rdmaTaintKey = "gpunode.dev/rdma-unhealthy"

// taintsJSON is a merge patch setting the Node's taints to ts.
func taintsJSON(t *testing.T, ts ...corev1.Taint) string {
	b, err := json.Marshal(map[string]any{"spec": map[string]any{"taints": ts}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// authTokenRequest asks for a token bound to nothing: no node claim.
var authTokenRequest = authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}

func ptr[T any](v T) *T { return &v }

func (s *setup) applyLabels(node string, l map[string]string) error {
	_, err := s.agent.CoreV1().Nodes().Apply(context.Background(), applycorev1.Node(node).WithLabels(l),
		metav1.ApplyOptions{FieldManager: publish.FieldManager, Force: true})
	return err
}

func (s *setup) patch(node string, patch string, subresource ...string) error {
	_, err := s.agent.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, subresource...)
	return err
}

// isDenied is true for a rejection by the admission policy (not RBAC).
func isDenied(err error) bool {
	return apierrors.IsForbidden(err) || apierrors.IsInvalid(err) &&
		strings.Contains(err.Error(), "ValidatingAdmissionPolicy")
}

func denied(t *testing.T, what string, err error, msg string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: allowed, want denied", what)
		return
	}
	if !strings.Contains(err.Error(), "ValidatingAdmissionPolicy") || !strings.Contains(err.Error(), msg) {
		t.Errorf("%s: %v; want a denial by the admission policy saying %q", what, err, msg)
	}
}

func allowed(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

func TestAdmissionPolicy(t *testing.T) {
	s := start(t)
	ctx := context.Background()

	// The real publisher, with the agent's token, on its own node: labels,
	// conditions, the health taint and events.
	p := publish.New(publish.Options{Client: s.agentKube, Node: nodeA, Resync: 100 * time.Millisecond,
		BackoffInitial: 50 * time.Millisecond, BackoffMax: time.Second, EventNamespace: "default",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { p.Run(runCtx); close(done) }()
	want := labels.Set{"gpunode.dev/gpu.count": "8", "llm-d.ai/gpu-node": "true", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
	p.Set(publish.Desired{Labels: want, LabelOptions: labels.Options{Domain: "gpunode.dev", Sets: labels.DefaultSets()},
		Conditions: []nodestatus.Condition{{Type: nodestatus.DiscoveryHealthy, Status: nodestatus.True, Reason: "SourcesOK"},
			{Type: nodestatus.GPUHealthy, Status: nodestatus.False, Reason: "XIDCritical", Message: "1 of 8 GPUs unhealthy"},
			{Type: nodestatus.RDMAHealthy, Status: nodestatus.False, Reason: "LinkFlapping", Message: "1 of 8 RDMA ports unhealthy"}},
		Taints: []nodestatus.Taint{{Key: healthTaintKey, Value: "XIDCritical", Effect: "NoSchedule"},
			{Key: rdmaTaintKey, Value: "LinkFlapping", Effect: "NoSchedule"}}})
	testsupport.Eventually(t, "agent publishes on its own node", func() error {
		n, err := s.c.Admin.CoreV1().Nodes().Get(ctx, nodeA, metav1.GetOptions{})
		if err != nil {
			return err
		}
		kn, err := s.agentKube.GetNode(ctx, nodeA)
		if err != nil {
			return err
		}
		owned, _ := publish.OwnedLabels(kn)
		if !owned.Equal(want) || len(n.Status.Conditions) != 4 {
			return fmt.Errorf("labels %v, conditions %v", owned, n.Status.Conditions)
		}
		if !slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == healthTaintKey && t.Value == "XIDCritical" }) ||
			!slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == rdmaTaintKey && t.Value == "LinkFlapping" }) ||
			!slices.Contains(n.Spec.Taints, gpuTaint) {
			return fmt.Errorf("taints %v", n.Spec.Taints)
		}
		evs, err := s.c.Admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil || len(evs.Items) == 0 {
			return fmt.Errorf("no event (%v)", err)
		}
		return nil
	})
	cancel()
	<-done

	t.Run("other node", func(t *testing.T) {
		denied(t, "apply own labels on node B", s.applyLabels(nodeB, map[string]string{"gpunode.dev/gpu.count": "8"}), "may change only that Node")
		denied(t, "condition on node B", s.applyCondition(nodeB, nodestatus.DiscoveryHealthy), "may change only that Node")
		denied(t, "event about node B", s.event(nodeB), "record events only about it")
	})
	t.Run("foreign labels", func(t *testing.T) {
		denied(t, "change a foreign label", s.patch(nodeA, `{"metadata":{"labels":{"team.example.com/owner":"me"}}}`), "not team.example.com/owner")
		denied(t, "remove a foreign label", s.patch(nodeA, `{"metadata":{"labels":{"kubernetes.io/hostname":null}}}`), "not kubernetes.io/hostname")
		denied(t, "add a foreign label", s.applyLabels(nodeA, map[string]string{"node-role.kubernetes.io/control-plane": ""}), "node-role.kubernetes.io/control-plane")
		denied(t, "a GFD key the agent never writes", s.patch(nodeA, `{"metadata":{"labels":{"nvidia.com/gpu.replicas":"4"}}}`), "nvidia.com/gpu.replicas")
	})
	t.Run("own labels", func(t *testing.T) {
		allowed(t, "patch an own label", s.patch(nodeA, `{"metadata":{"labels":{"gpunode.dev/gpu.count":"7"}}}`))
		// Every key the code can write, with its example value.
		all := map[string]string{}
		for _, d := range labels.Defs {
			k := d.FullKey("gpunode.dev")
			if d.Pattern() {
				k = k[:strings.LastIndex(k, "<")] + "x"
			}
			all[k] = d.Example
		}
		allowed(t, "apply every label the agent can write", s.applyLabels(nodeA, all))
	})
	t.Run("spec and metadata", func(t *testing.T) {
		denied(t, "unschedulable", s.patch(nodeA, `{"spec":{"unschedulable":true}}`), "may change only labels and its own taint")
		denied(t, "providerID", s.patch(nodeA, `{"spec":{"providerID":"aws:///x"}}`), "may change only labels and its own taint")
		denied(t, "annotation", s.patch(nodeA, `{"metadata":{"annotations":{"x":"y"}}}`), "may change only labels and its own taint")
		denied(t, "unschedulable with the own taint", s.patch(nodeA, `{"spec":{"unschedulable":true,"taints":[]}}`), "may change only labels and its own taint")
	})
	t.Run("taints", func(t *testing.T) {
		n, err := s.c.Admin.CoreV1().Nodes().Get(ctx, nodeA, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var others []corev1.Taint // the operator's and the apiserver's not-ready
		for _, tn := range n.Spec.Taints {
			if tn.Key != healthTaintKey && tn.Key != rdmaTaintKey {
				others = append(others, tn)
			}
		}
		if len(others) != 2 {
			t.Fatalf("foreign taints %v", others)
		}
		own := func(value string, effect corev1.TaintEffect) corev1.Taint {
			return corev1.Taint{Key: healthTaintKey, Value: value, Effect: effect}
		}
		allowed(t, "change the own taint", s.patch(nodeA, taintsJSON(t, append(slices.Clone(others), own("NVLinkDown", corev1.TaintEffectNoSchedule))...)))
		allowed(t, "remove the own taint", s.patch(nodeA, taintsJSON(t, others...)))
		allowed(t, "add the own taint", s.patch(nodeA, taintsJSON(t, append(slices.Clone(others), own("GPULost", corev1.TaintEffectNoExecute))...)))
		withOwn := append(slices.Clone(others), own("GPULost", corev1.TaintEffectNoExecute))
		// The RDMA health taint has its own key, owned the same way.
		rdma := corev1.Taint{Key: rdmaTaintKey, Value: "LinkFlapping", Effect: corev1.TaintEffectNoSchedule}
		allowed(t, "add the RDMA taint", s.patch(nodeA, taintsJSON(t, append(slices.Clone(withOwn), rdma)...)))
		allowed(t, "remove the RDMA taint", s.patch(nodeA, taintsJSON(t, withOwn...)))
		denied(t, "another taint key", s.patch(nodeA, taintsJSON(t, append(slices.Clone(withOwn), corev1.Taint{Key: "example.com/other", Effect: corev1.TaintEffectNoSchedule})...)),
			"may change only its own taints "+healthTaintKey+" and "+rdmaTaintKey)
		denied(t, "another key under the agent's domain", s.patch(nodeA, taintsJSON(t, append(slices.Clone(withOwn), corev1.Taint{Key: "gpunode.dev/other", Effect: corev1.TaintEffectNoSchedule})...)),
			"may change only its own taint")
		denied(t, "remove someone else's taint", s.patch(nodeA, taintsJSON(t, withOwn[1:]...)), "not the taints of others")
		changed := slices.Clone(withOwn)
		changed[0].Value = "changed"
		denied(t, "change someone else's taint", s.patch(nodeA, taintsJSON(t, changed...)), "not the taints of others")
		denied(t, "remove every taint", s.patch(nodeA, `{"spec":{"taints":null}}`), "not the taints of others")
		_, err = s.agent.CoreV1().Nodes().Apply(ctx, applycorev1.Node(nodeA).WithSpec(applycorev1.NodeSpec().WithTaints(
			applycorev1.Taint().WithKey(healthTaintKey).WithEffect(corev1.TaintEffectNoSchedule))), metav1.ApplyOptions{FieldManager: publish.FieldManager, Force: true})
		denied(t, "a forced apply of the atomic taint list", err, "not the taints of others")
		denied(t, "the own taint on node B", s.patch(nodeB, taintsJSON(t, gpuTaint, own("GPULost", corev1.TaintEffectNoSchedule))), "may change only that Node")
	})
	t.Run("status", func(t *testing.T) {
		allowed(t, "own condition", s.applyCondition(nodeA, nodestatus.GPUHealthy))
		denied(t, "the kubelet's Ready", s.patch(nodeA, `{"status":{"conditions":[{"type":"Ready","status":"False","reason":"Hacked"}]}}`, "status"), "may change only its own conditions")
		denied(t, "a foreign condition type", s.applyCondition(nodeA, "DiskPressure"), "may change only its own conditions")
		denied(t, "capacity", s.patch(nodeA, `{"status":{"capacity":{"nvidia.com/gpu":"8"}}}`, "status"), "may change only its own conditions")
	})
	t.Run("rbac", func(t *testing.T) {
		_, err := s.agent.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) || strings.Contains(err.Error(), "ValidatingAdmissionPolicy") {
			t.Errorf("list nodes: %v, want forbidden by RBAC", err)
		}
		err = s.agent.CoreV1().Nodes().Delete(ctx, nodeA, metav1.DeleteOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("delete own node: %v", err)
		}
		_, err = s.agent.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-c"}}, metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("create a node: %v", err)
		}
		_, err = s.agent.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("list pods: %v", err)
		}
	})
	t.Run("token not bound to a pod", func(t *testing.T) {
		tr, err := s.c.Admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, agentSA, &authTokenRequest, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		unbound, _ := kubernetes.NewForConfig(s.c.Config(tr.Status.Token))
		_, err = unbound.CoreV1().Nodes().Apply(ctx, applycorev1.Node(nodeA).WithLabels(map[string]string{"gpunode.dev/gpu.count": "8"}),
			metav1.ApplyOptions{FieldManager: publish.FieldManager})
		denied(t, "unbound token", err, "token bound to its Pod")
	})
	t.Run("cleanup", func(t *testing.T) {
		// The agent cleans its own node, its taint included...
		if _, _, err := publish.Cleanup(ctx, s.agentKube, nodeA, healthTaintKey); err != nil {
			t.Fatalf("cleanup as the agent: %v", err)
		}
		n, _ := s.c.Admin.CoreV1().Nodes().Get(ctx, nodeA, metav1.GetOptions{})
		for k := range n.Labels {
			if labels.Owned(k, "gpunode.dev") {
				t.Errorf("label %s left after cleanup", k)
			}
		}
		if n.Labels["team.example.com/owner"] != "ml" || n.Labels["kubernetes.io/hostname"] != nodeA {
			t.Errorf("foreign labels lost: %v", n.Labels)
		}
		if len(n.Spec.Taints) != 2 || !slices.Contains(n.Spec.Taints, gpuTaint) || slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == healthTaintKey }) {
			t.Errorf("taints after cleanup: %v", n.Spec.Taints)
		}
		// ...and the uninstall hook's service account every node.
		s.applyLabels(nodeA, map[string]string{"gpunode.dev/gpu.count": "8"})
		hookSA := release + "-cleanup"
		tr, err := s.c.Admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, hookSA, &authTokenRequest, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		hook, err := s.c.Kube(tr.Status.Token)
		if err != nil {
			t.Fatal(err)
		}
		var cleaned []string
		if err := publish.CleanupAll(ctx, hook, "", func(node string, _, _ int) { cleaned = append(cleaned, node) }, nil, healthTaintKey); err != nil {
			t.Fatalf("cleanup --all-nodes as the hook: %v", err)
		}
		if !slices.Contains(cleaned, nodeA) {
			t.Errorf("hook cleaned %v", cleaned)
		}
	})
}

func (s *setup) applyCondition(node, typ string) error {
	now := metav1.Now()
	_, err := s.agent.CoreV1().Nodes().ApplyStatus(context.Background(), applycorev1.Node(node).WithStatus(applycorev1.NodeStatus().WithConditions(
		applycorev1.NodeCondition().WithType(corev1.NodeConditionType(typ)).WithStatus(corev1.ConditionTrue).WithReason("Test").
			WithLastTransitionTime(now).WithLastHeartbeatTime(now))), metav1.ApplyOptions{FieldManager: publish.FieldManager, Force: true})
	return err
}

func (s *setup) event(node string) error {
	_, err := s.agent.CoreV1().Events("default").Create(context.Background(), &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: "gpunode-"},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: node, APIVersion: "v1"},
		Reason:         "Test", Message: "test", Type: "Normal",
	}, metav1.CreateOptions{})
	return err
}
