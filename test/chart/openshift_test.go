package chart

import (
	"reflect"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/test/kube"
)

// sccUse returns the names of the SecurityContextConstraints a Role
// grants `use` of, or nil when it grants anything else too.
func sccUse(t *testing.T, role map[string]any) []any {
	t.Helper()
	rules, _ := role["rules"].([]any)
	if len(rules) != 1 {
		t.Fatalf("Role %v: want one rule", role["metadata"])
	}
	r := rules[0].(map[string]any)
	if !reflect.DeepEqual(r["apiGroups"], []any{"security.openshift.io"}) ||
		!reflect.DeepEqual(r["resources"], []any{"securitycontextconstraints"}) ||
		!reflect.DeepEqual(r["verbs"], []any{"use"}) {
		t.Errorf("Role %v: rule %v", role["metadata"], r)
	}
	names, _ := r["resourceNames"].([]any)
	return names
}

// On OpenShift, pods run only under an SCC their service account may use
// (https://docs.openshift.com/container-platform/4.16/authentication/managing-security-context-constraints.html):
// hostPath, hostNetwork and privileged need `privileged`; the cleanup
// Job's fixed non-root UID 65534 is outside restricted-v2's namespace
// range and fits nonroot-v2.
func TestOpenShiftSCC(t *testing.T) {
	for _, o := range renderObjects(t) {
		if o["kind"] == "Role" || o["kind"] == "ClusterRole" {
			for _, r := range o["rules"].([]any) {
				if g := r.(map[string]any)["apiGroups"]; reflect.DeepEqual(g, []any{"security.openshift.io"}) {
					t.Errorf("SCC rule without openshift.enabled: %v", o["metadata"])
				}
			}
		}
	}
	objs := renderObjects(t, "-f", "testdata/values/openshift.yaml")
	want := map[string]struct {
		scc string
		sa  string
	}{
		"gpunode-gpunode-agent-scc":         {"privileged", "gpunode-gpunode-agent"},
		"gpunode-gpunode-agent-cleanup-scc": {"nonroot-v2", "gpunode-gpunode-agent-cleanup"},
	}
	roles := map[string]map[string]any{}
	for _, o := range objs {
		if o["kind"] == "Role" {
			roles[o["metadata"].(map[string]any)["name"].(string)] = o
		}
	}
	for name, w := range want {
		role := roles[name]
		if role == nil {
			t.Errorf("no Role %s", name)
			continue
		}
		if got := sccUse(t, role); !reflect.DeepEqual(got, []any{w.scc}) {
			t.Errorf("Role %s grants use of %v, want [%s]", name, got, w.scc)
		}
		var bound bool
		for _, o := range objs {
			md := o["metadata"].(map[string]any)
			if o["kind"] != "RoleBinding" || md["name"] != name {
				continue
			}
			ref := o["roleRef"].(map[string]any)
			subj := o["subjects"].([]any)[0].(map[string]any)
			bound = ref["kind"] == "Role" && ref["name"] == name && subj["kind"] == "ServiceAccount" && subj["name"] == w.sa && subj["namespace"] == "gpunode"
			if role["metadata"].(map[string]any)["annotations"] != nil && !reflect.DeepEqual(md["annotations"], role["metadata"].(map[string]any)["annotations"]) {
				t.Errorf("RoleBinding %s is not a hook like its Role: %v", name, md["annotations"])
			}
		}
		if !bound {
			t.Errorf("Role %s is not bound to ServiceAccount %s", name, w.sa)
		}
	}
	// The Node Tuning Operator owns the host there: the chart changes no
	// host setting unless the operator opts in.
	if mode := agentAccepts(t, configOf(t, objs)).Tuning.Mode; mode != "audit" {
		t.Errorf("tuning mode on OpenShift %q, want audit by default", mode)
	}
}

// helm's server-side dry run on a real kube-apiserver accepts the SCC
// Roles (the SCCs themselves exist only on OpenShift), and the notes warn
// when tuning is enforced there.
func TestOpenShiftOnAPIServer(t *testing.T) {
	c := kube.StartT(t, kube.Options{})
	kubeconfig, err := c.Kubeconfig(c.AdminConfig.BearerToken)
	if err != nil {
		t.Fatal(err)
	}
	out, err := helm(t, "install", "gpunode-agent", chartDir, "--kubeconfig", kubeconfig, "--namespace", "default",
		"--dry-run=server", "-f", "testdata/values/openshift.yaml", "--set", "config.tuning.mode=enforce")
	if err != nil {
		t.Fatalf("helm install --dry-run=server: %v\n%s", err, out)
	}
	manifest, notes, _ := strings.Cut(out, "NOTES:")
	if !strings.Contains(manifest, "name: gpunode-agent-scc") {
		t.Errorf("no SCC Role in the dry run:\n%s", manifest)
	}
	if !strings.Contains(notes, "Node Tuning Operator owns the host") {
		t.Errorf("notes lack the Node Tuning Operator warning:\n%s", notes)
	}
	out, err = helm(t, "install", "gpunode-agent", chartDir, "--kubeconfig", kubeconfig, "--namespace", "default",
		"--dry-run=server", "-f", "testdata/values/openshift.yaml")
	if err != nil {
		t.Fatalf("helm install --dry-run=server: %v\n%s", err, out)
	}
	if _, notes, _ := strings.Cut(out, "NOTES:"); strings.Contains(notes, "Node Tuning Operator") {
		t.Errorf("audit on OpenShift warns:\n%s", notes)
	}
}
