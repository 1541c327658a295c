package agent

import (
	"context"
	"net"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"google.golang.org/grpc"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
)

// kubelet serves pod-resources: one pod holding GPU 0.
type kubelet struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	uuid string
}

func (k *kubelet) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{{Namespace: "llm", Name: "decode-0",
		Containers: []*podresourcesv1.ContainerResources{{Name: "vllm",
			Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{k.uuid}}}}}}}}, nil
}

// The daemon with metrics.podLabels: the pod's labels come from the API
// server onto the allocation series; without the permission to list pods
// the pod-labels source is in error and the labels are empty, and once
// the chart's ClusterRole rule is granted they arrive on the next refresh.
func TestPodLabelsInTheDaemon(t *testing.T) {
	c := testCluster(t)
	ctx := context.Background()
	const node = "gpu-pod-labels"
	registerNode(t, c, node)
	if err := c.CreateNamespace(ctx, "llm"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreatePod(ctx, "llm", "decode-0", node, map[string]string{"app.kubernetes.io/name": "vllm", "llm-d.ai/role": "decode"}); err != nil {
		t.Fatal(err)
	}
	fsys, lib := simNVML(t)
	lib.Init() // counted: the backend's own Init and Shutdown pair apart
	dev, ret := lib.DeviceGetHandleByIndex(0)
	uuid, ret2 := dev.GetUUID()
	lib.Shutdown()
	if ret != 0 || ret2 != 0 {
		t.Fatalf("GPU 0's UUID: %v %v", ret, ret2)
	}
	socket := filepath.Join(t.TempDir(), "kubelet.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, &kubelet{uuid: uuid})
	go srv.Serve(l)
	t.Cleanup(srv.Stop)

	cfg := config.Default()
	cfg.NodeName = node
	cfg.Discovery.Interval = time.Hour
	cfg.Publish.AllowSimulated = true
	cfg.Metrics.SampleInterval = 100 * time.Millisecond
	cfg.Metrics.PodResourcesSocket = socket
	cfg.Metrics.PodLabels = config.PodLabels{Keys: []string{"llm-d.ai/role", "app.kubernetes.io/name"}, MaxValuesPerLabel: 8, RefreshInterval: 200 * time.Millisecond}
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	base, _ := runAgent(t, &discovery.Env{FS: fsys, Backends: []gpu.Backend{nvml.New(lib)}, Simulated: "dgx-h100-ib"}, cfg, agentClient(t, c), logs)
	scrapeFor := func(what string, re *regexp.Regexp) {
		t.Helper()
		waitFor(t, what, func() bool {
			_, m := get(t, base+"/metrics")
			return re.MatchString(m)
		})
	}
	scrapeFor("pod-labels in error without the permission", regexp.MustCompile(`gpunode_source_state\{source="pod-labels",state="error"\} 1`))
	scrapeFor("empty labels", regexp.MustCompile(`gpunode_gpu_allocation_info\{container="vllm",gpu="0",label_app_kubernetes_io_name="",label_llm_d_ai_role="",namespace="llm",pod="decode-0",`))

	// The chart's rule when metrics.podLabels.keys is set.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "gpunode-agent-pod-labels"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "gpunode-agent-pod-labels"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "gpunode-agents"}}}
	if _, err := c.Admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Admin.RbacV1().ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{})
	})
	if _, err := c.Admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
	})
	scrapeFor("the pod's labels", regexp.MustCompile(`gpunode_gpu_allocation_info\{container="vllm",gpu="0",label_app_kubernetes_io_name="vllm",label_llm_d_ai_role="decode",namespace="llm",pod="decode-0",`))
	scrapeFor("pod-labels ok", regexp.MustCompile(`gpunode_source_state\{source="pod-labels",state="ok"\} 1`))
	scrapeFor("per-pod series with labels", regexp.MustCompile(`gpunode_gpu_pod_processes\{[^}]*label_app_kubernetes_io_name="vllm",label_llm_d_ai_role="decode",namespace="llm",pod="decode-0"`))
}
