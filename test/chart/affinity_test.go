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

// The NVIDIA GPU operator labels its GPU nodes nvidia.com/gpu.deploy.client=true
// for third-party GPU clients; its driver manager (k8s-driver-manager,
// maybeSetPaused) sets it to paused-for-driver-upgrade, or appends
// _paused-for-driver-upgrade to another value, and its MIG manager
// (mig-parted reconfigure) to paused-for-mig-change, keeping "false";
// then they wait for the DaemonSet pods whose nodeSelector has the key to
// leave the node before unloading the driver or resetting GPUs. The
// default affinity takes the agent off a node whose label is anything but
// "true" (or absent: no GPU operator), and nvidia.gpuOperatorClient puts
// the key in the nodeSelector so that the managers wait for it.
func TestGPUOperatorClientLabel(t *testing.T) {
	const client = "nvidia.com/gpu.deploy.client"
	gpuNode := func(extra ...string) map[string]string {
		m := map[string]string{"kubernetes.io/os": "linux", "nvidia.com/gpu.present": "true"}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	ds := renderedDaemonSet(t)
	for _, tc := range []struct {
		labels map[string]string
		want   bool
	}{
		{gpuNode(), true},
		{gpuNode(client, "true"), true},
		{gpuNode(client, "paused-for-driver-upgrade"), false},
		{gpuNode(client, "paused-for-mig-change"), false},
		{gpuNode(client, "paused-for-mig-change_paused-for-driver-upgrade"), false},
		{gpuNode(client, "false"), false},
		{map[string]string{"kubernetes.io/os": "linux", "cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}, true},
		{map[string]string{"kubernetes.io/os": "linux", "feature.node.kubernetes.io/amd-gpu": "true", client: "paused-for-driver-upgrade"}, false},
		{map[string]string{"kubernetes.io/os": "linux", client: "true"}, false}, // no GPU label
	} {
		if got := schedules(t, ds, tc.labels); got != tc.want {
			t.Errorf("default affinity, node %v: schedules %v, want %v", tc.labels, got, tc.want)
		}
	}
	if _, ok := ds.Spec.Template.Spec.NodeSelector[client]; ok {
		t.Errorf("the key is in the default nodeSelector %v: nodes without the GPU operator would get no agent", ds.Spec.Template.Spec.NodeSelector)
	}

	ds = renderedDaemonSet(t, "--set", "nvidia.gpuOperatorClient=true")
	if ds.Spec.Template.Spec.NodeSelector[client] != "true" {
		t.Fatalf("nodeSelector %v lacks %s=true", ds.Spec.Template.Spec.NodeSelector, client)
	}
	for _, tc := range []struct {
		labels map[string]string
		want   bool
	}{
		{gpuNode(client, "true"), true},
		{gpuNode(client, "paused-for-driver-upgrade"), false},
		{gpuNode(), false},
	} {
		if got := schedules(t, ds, tc.labels); got != tc.want {
			t.Errorf("gpuOperatorClient, node %v: schedules %v, want %v", tc.labels, got, tc.want)
		}
	}
	// Your own nodeSelector keeps its keys.
	ds = renderedDaemonSet(t, "--set", "nvidia.gpuOperatorClient=true", "--set", "nodeSelector.pool=gpu")
	if sel := ds.Spec.Template.Spec.NodeSelector; sel["pool"] != "gpu" || sel[client] != "true" || sel["kubernetes.io/os"] != "linux" {
		t.Errorf("nodeSelector %v", sel)
	}
}
