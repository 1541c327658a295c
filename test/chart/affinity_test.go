package chart

import (
	"encoding/json"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// renderedDaemonSet renders the chart and decodes its DaemonSet as the
// apiserver would.
func renderedDaemonSet(t *testing.T, args ...string) *appsv1.DaemonSet {
	t.Helper()
	o := findObject(renderObjects(t, args...), "DaemonSet")
	if o == nil {
		t.Fatal("no DaemonSet rendered")
	}
	b, err := json.Marshal(jsonRoundTrip(t, o))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := json.Unmarshal(b, &ds); err != nil {
		t.Fatalf("decode DaemonSet: %v", err)
	}
	return &ds
}

// schedules says whether the DaemonSet's pod may run on a node with these
// labels: nodeSelector and required node affinity, evaluated by the
// scheduler's own matcher (the DaemonSet controller and kube-scheduler's
// NodeAffinity plugin both use GetRequiredNodeAffinity(pod).Match).
func schedules(t *testing.T, ds *appsv1.DaemonSet, labels map[string]string) bool {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: labels}}
	ok, err := nodeaffinity.GetRequiredNodeAffinity(&corev1.Pod{Spec: ds.Spec.Template.Spec}).Match(node)
	if err != nil {
		t.Fatalf("node affinity: %v", err)
	}
	return ok
}

// By default the agent runs only on GPU nodes: any one of the labels NVIDIA's
// GPU operator / GFD, Node Feature Discovery (both of its PCI label
// formats), AMD's GPU operator, GKE or AKS put on GPU nodes; a CPU node gets
// no pod (and is not tuned).
func TestDefaultOnlyGPUNodes(t *testing.T) {
	ds := renderedDaemonSet(t)
	linux := func(k, v string) map[string]string {
		m := map[string]string{"kubernetes.io/os": "linux"}
		if k != "" {
			m[k] = v
		}
		return m
	}
	for _, l := range []map[string]string{
		linux("", ""),
		linux("node-role.kubernetes.io/worker", ""),
		linux("feature.node.kubernetes.io/pci-8086.present", "true"), // an Intel NIC
		linux("nvidia.com/gpu.present", "false"),
		linux("feature.node.kubernetes.io/pci-10de.present", "false"),
	} {
		if schedules(t, ds, l) {
			t.Errorf("a node without GPU labels %v gets the agent", l)
		}
	}
	for _, l := range []map[string]string{
		linux("nvidia.com/gpu.present", "true"),
		linux("feature.node.kubernetes.io/pci-10de.present", "true"),
		linux("feature.node.kubernetes.io/pci-0300_10de.present", "true"),
		linux("feature.node.kubernetes.io/pci-0302_10de.present", "true"),
		linux("feature.node.kubernetes.io/pci-1002.present", "true"),
		linux("feature.node.kubernetes.io/pci-0300_1002.present", "true"),
		linux("feature.node.kubernetes.io/pci-0380_1002.present", "true"),
		linux("feature.node.kubernetes.io/pci-1200_1002.present", "true"),
		linux("feature.node.kubernetes.io/amd-gpu", "true"),
		linux("cloud.google.com/gke-accelerator", "nvidia-h100-80gb"),
		linux("kubernetes.azure.com/accelerator", "nvidia"),
	} {
		if !schedules(t, ds, l) {
			t.Errorf("a GPU node %v gets no agent", l)
		}
	}
	// Only Linux nodes, GPU or not.
	if schedules(t, ds, map[string]string{"kubernetes.io/os": "windows", "nvidia.com/gpu.present": "true"}) {
		t.Error("a Windows GPU node gets the agent")
	}

	// affinity: null drops the GPU condition: every Linux node.
	if ds := renderedDaemonSet(t, "--set", "affinity=null"); !schedules(t, ds, linux("", "")) || ds.Spec.Template.Spec.Affinity != nil {
		t.Errorf("affinity=null: %v", ds.Spec.Template.Spec.Affinity)
	}
	// Own terms replace the defaults (lists are not merged by helm).
	ds = renderedDaemonSet(t, "--set-json", `affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"pool","operator":"In","values":["gpu"]}]}]}}}`)
	if !schedules(t, ds, linux("pool", "gpu")) || schedules(t, ds, linux("nvidia.com/gpu.present", "true")) {
		t.Errorf("own affinity: %v", ds.Spec.Template.Spec.Affinity)
	}
}
