package podlabels_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/podlabels"
	"github.com/gpunode/gpunode/test/kube"
)

// Names as kube-state-metrics writes kube_pod_labels' (label_, invalid
// characters to "_", camelCase to snake_case), with every key of a
// collision suffixed in the keys' sorted order.
func TestLabels(t *testing.T) {
	got := podlabels.Labels([]string{"llm-d.ai/role", "app.kubernetes.io/name", "llm-d.ai/model", "a_b", "a.b", "a-b", "modelName", "llm-d.ai/role"})
	want := []podlabels.Label{
		{"a-b", "label_a_b_conflict1"}, {"a.b", "label_a_b_conflict2"}, {"a_b", "label_a_b_conflict3"},
		{"app.kubernetes.io/name", "label_app_kubernetes_io_name"},
		{"llm-d.ai/model", "label_llm_d_ai_model"}, {"llm-d.ai/role", "label_llm_d_ai_role"},
		{"modelName", "label_model_name"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

const (
	keyName  = "app.kubernetes.io/name"
	keyModel = "llm-d.ai/model"
	keyRole  = "llm-d.ai/role"
)

// The labels of the pods bound to the agent's node, read from a real API
// server with only the permission the chart grants (list pods), with the
// cap, the drop counter, label changes, and an API server that stops
// answering.
func TestCacheAgainstAPIServer(t *testing.T) {
	c := kube.StartT(t, kube.Options{Tokens: map[string]string{"agent-token": "gpunode-agent,agent-uid,gpunode-agents"}})
	ctx := context.Background()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "pod-labels"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "pod-labels"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "pod-labels"},
		Subjects: []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "gpunode-agents"}}}
	if _, err := c.Admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"llm", "batch"} {
		if err := c.CreateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	pod := func(ns, name, node string, labels map[string]string) {
		t.Helper()
		if _, err := c.CreatePod(ctx, ns, name, node, labels); err != nil {
			t.Fatal(err)
		}
	}
	llm := func(model, role string) map[string]string {
		return map[string]string{keyName: "vllm", keyModel: model, keyRole: role, "pod-template-hash": "abc"}
	}
	pod("llm", "decode-0", "gpu-1", llm("llama-70b", "decode"))
	pod("llm", "decode-1", "gpu-1", llm("llama-70b", "decode"))
	pod("llm", "prefill-0", "gpu-1", llm("mistral-7b", "prefill"))
	pod("batch", "job", "gpu-1", map[string]string{keyName: "trainer"})
	pod("llm", "decode-9", "gpu-2", llm("qwen-32b", "decode"))

	agent, err := c.Kube("agent-token")
	if err != nil {
		t.Fatal(err)
	}
	cache := podlabels.New(podlabels.Options{Keys: []string{keyRole, keyName, keyModel}, MaxValues: 2, Interval: time.Minute,
		List: func(ctx context.Context) ([]kubeapi.Pod, error) { return agent.ListPodsOnNode(ctx, "gpu-1") }})
	if v := cache.View(); v.Status.Name != "" || !slices.Equal(v.Values("llm", "decode-0"), []string{"", "", ""}) {
		t.Errorf("before the first refresh: %+v", v)
	}
	check := func(ns, pod string, want ...string) {
		t.Helper()
		if got := cache.View().Values(ns, pod); !slices.Equal(got, want) {
			t.Errorf("%s/%s: %q, want %q", ns, pod, got, want)
		}
	}
	cache.Refresh(ctx)
	v := cache.View()
	if v.Status.State != source.OK || v.Status.Name != podlabels.SourceName {
		t.Fatalf("status %+v", v.Status)
	}
	if got, want := v.Names(), []string{"label_app_kubernetes_io_name", "label_llm_d_ai_model", "label_llm_d_ai_role"}; !slices.Equal(got, want) {
		t.Errorf("names %q, want %q", got, want)
	}
	check("llm", "decode-0", "vllm", "llama-70b", "decode")
	check("llm", "prefill-0", "vllm", "mistral-7b", "prefill")
	check("batch", "job", "trainer", "", "")
	check("llm", "decode-9", "", "", "") // another node's pod
	check("llm", "gone", "", "", "")

	// A third model on the node is over the cap of two: dropped, and
	// counted once however often it is read.
	pod("llm", "a-decode", "gpu-1", llm("qwen-32b", "decode"))
	cache.Refresh(ctx)
	cache.Refresh(ctx)
	check("llm", "a-decode", "vllm", "", "decode")
	check("llm", "prefill-0", "vllm", "mistral-7b", "prefill") // admitted first, kept
	if got := cache.View().Dropped; !slices.Equal(got, []uint64{0, 1, 0}) {
		t.Errorf("dropped %v, want [0 1 0]", got)
	}
	// The pod holding mistral leaves: its place goes to the waiting value.
	if err := c.Admin.CoreV1().Pods("llm").Delete(ctx, "prefill-0", *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	cache.Refresh(ctx)
	check("llm", "a-decode", "vllm", "qwen-32b", "decode")
	check("llm", "prefill-0", "", "", "")
	if got := cache.View().Dropped; !slices.Equal(got, []uint64{0, 1, 0}) {
		t.Errorf("dropped %v, want [0 1 0]", got)
	}
	// A relabelled pod takes its new value.
	p, err := c.Admin.CoreV1().Pods("batch").Get(ctx, "job", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels[keyRole] = "eval"
	if _, err := c.Admin.CoreV1().Pods("batch").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	cache.Refresh(ctx)
	check("batch", "job", "trainer", "", "eval")

	// The API server stops answering: the labels stay, the status says why.
	before := cache.View().Refreshed
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cache.Refresh(tctx)
	v = cache.View()
	if v.Status.State != source.Error || !strings.Contains(v.Status.Message, "keeping the labels read at") || !v.Refreshed.Equal(before) {
		t.Errorf("after a failed refresh: status %+v, refreshed %v (was %v)", v.Status, v.Refreshed, before)
	}
	check("llm", "decode-0", "vllm", "llama-70b", "decode")
}
