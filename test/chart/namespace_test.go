package chart

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpunode/gpunode/test/kube"
)

// The agent's pod uses hostPath volumes, hostNetwork and a privileged
// container, which the baseline Pod Security level refuses
// (https://kubernetes.io/docs/concepts/security/pod-security-standards/),
// so the namespace must enforce privileged. Helm's --create-namespace
// cannot label the namespace; namespace.create makes the chart do it.
func TestNamespacePodSecurity(t *testing.T) {
	if ns := findObject(renderObjects(t), "Namespace"); ns != nil {
		t.Errorf("a Namespace by default: %v", ns)
	}
	ns := findObject(renderObjects(t, "--set", "namespace.create=true", "--set", "namespace.labels.team=gpu"), "Namespace")
	if ns == nil {
		t.Fatal("namespace.create=true renders no Namespace")
	}
	md := ns["metadata"].(map[string]any)
	if md["name"] != "gpunode" {
		t.Errorf("Namespace %v, want the release's", md["name"])
	}
	labels := md["labels"].(map[string]any)
	for _, mode := range []string{"enforce", "audit", "warn"} {
		if v := labels["pod-security.kubernetes.io/"+mode]; v != "privileged" {
			t.Errorf("pod-security.kubernetes.io/%s=%v, want privileged", mode, v)
		}
	}
	if labels["team"] != "gpu" {
		t.Errorf("namespace.labels not applied: %v", labels)
	}
}

// A real helm install with namespace.create into a namespace created
// beforehand without labels (helm stores the release there before any
// object, and checks for conflicts before its own --create-namespace):
// --take-ownership lets the chart's Namespace adopt and label it.
func TestNamespaceOnAPIServer(t *testing.T) {
	c := kube.StartT(t, kube.Options{})
	kubeconfig, err := c.Kubeconfig(c.AdminConfig.BearerToken)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gpu-psa"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := helm(t, "install", "psa", chartDir, "--kubeconfig", kubeconfig, "--namespace", "gpu-psa",
		"--take-ownership", "--set", "namespace.create=true")
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	ns, err := c.Admin.CoreV1().Namespaces().Get(ctx, "gpu-psa", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v := ns.Labels["pod-security.kubernetes.io/enforce"]; v != "privileged" {
		t.Errorf("installed namespace labels %v", ns.Labels)
	}
}
