package chart

import (
	"strings"
	"testing"

	"github.com/gpunode/gpunode/test/kube"
)

func hasPolicy(objs []map[string]any) (policy, binding bool) {
	return findObject(objs, "ValidatingAdmissionPolicy") != nil, findObject(objs, "ValidatingAdmissionPolicyBinding") != nil
}

// The policy is admissionregistration.k8s.io/v1 only from Kubernetes 1.30
// (https://kubernetes.io/blog/2024/04/24/validating-admission-policy-ga/),
// the release that also puts the Pod's node into bound service account
// tokens: the chart renders it only where the API serves it (helm
// template: --api-versions), and still installs from 1.27 (Chart.yaml
// kubeVersion) without it.
func TestAdmissionPolicyByAPI(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"--kube-version", "1.29.9"}, false},
		{[]string{"--kube-version", "1.33.0"}, false},
		{[]string{"--kube-version", "1.33.0", "--api-versions", "admissionregistration.k8s.io/v1beta1/ValidatingAdmissionPolicy"}, false},
		{[]string{"--kube-version", "1.30.0", "--api-versions", servesPolicy}, true},
		{[]string{"--kube-version", "1.33.0", "--api-versions", servesPolicy, "--set", "admissionPolicy.enabled=false"}, false},
	} {
		out, err := helm(t, append([]string{"template", "gpunode", chartDir, "--namespace", "gpunode"}, tc.args...)...)
		if err != nil {
			t.Fatalf("helm template %v: %v", tc.args, err)
		}
		p, b := hasPolicy(decodeObjects(t, out))
		if p != tc.want || b != tc.want {
			t.Errorf("%v: policy %v, binding %v, want %v", tc.args, p, b, tc.want)
		}
	}
	if out, err := helm(t, "template", "gpunode", chartDir, "--kube-version", "1.26.0"); err == nil {
		t.Errorf("Kubernetes 1.26 accepted, Chart.yaml kubeVersion says 1.27+:\n%.200s", out)
	}
}

// On a real kube-apiserver that does not serve the v1 policy API, helm's
// server-side dry run leaves the policy out and the notes say that RBAC
// alone does not keep the agent to its own Node.
func TestAdmissionPolicyNotServed(t *testing.T) {
	c := kube.StartT(t, kube.Options{Args: []string{
		"--runtime-config=admissionregistration.k8s.io/v1/validatingadmissionpolicies=false,admissionregistration.k8s.io/v1/validatingadmissionpolicybindings=false",
		// its admission plugin waits for the disabled API and never gets ready
		"--disable-admission-plugins=ValidatingAdmissionPolicy",
	}})
	kubeconfig, err := c.Kubeconfig(c.AdminConfig.BearerToken)
	if err != nil {
		t.Fatal(err)
	}
	out, err := helm(t, "install", "gpunode-agent", chartDir, "--kubeconfig", kubeconfig, "--namespace", "default", "--dry-run=server")
	if err != nil {
		t.Fatalf("helm install --dry-run=server: %v\n%s", err, out)
	}
	manifest, notes, _ := strings.Cut(out, "NOTES:")
	if strings.Contains(manifest, "kind: ValidatingAdmissionPolicy") {
		t.Errorf("the policy is rendered where the API does not serve it:\n%s", manifest)
	}
	for _, want := range []string{"RBAC alone", "any Node", "authentication.kubernetes.io/node-name"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
}
