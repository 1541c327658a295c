package admission

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/nodestatus"
)

var quoted = regexp.MustCompile(`'([^']*)'`)

// policyList reads the strings of a list variable of the rendered policy.
func policyList(t *testing.T, policy *unstructured.Unstructured, name string) []string {
	t.Helper()
	vars, _, _ := unstructured.NestedSlice(policy.Object, "spec", "variables")
	for _, v := range vars {
		m := v.(map[string]any)
		if m["name"] == name {
			var out []string
			for _, q := range quoted.FindAllStringSubmatch(m["expression"].(string), -1) {
				out = append(out, q[1])
			}
			slices.Sort(out)
			return out
		}
	}
	t.Fatalf("policy has no variable %s", name)
	return nil
}

// The policy's lists of label keys and condition types are the code's:
// a key the agent starts writing without the policy allowing it would be
// denied on every cluster with the chart.
func TestPolicyListsMatchCode(t *testing.T) {
	for _, domain := range []string{"gpunode.dev", "gpu.example.com"} {
		policy := find(render(t, "--set", "config.labels.domain="+domain), "ValidatingAdmissionPolicy", "")
		if policy == nil {
			t.Fatal("no ValidatingAdmissionPolicy rendered")
		}
		var keys, prefixes []string
		for _, d := range labels.Defs {
			switch {
			case d.Own:
				if !slices.Contains(prefixes, domain+"/") {
					prefixes = append(prefixes, domain+"/")
				}
			case d.Pattern():
				k := d.FullKey(domain)
				prefixes = append(prefixes, k[:strings.LastIndex(k, "<")])
			default:
				keys = append(keys, d.Key)
			}
		}
		slices.Sort(keys)
		slices.Sort(prefixes)
		if got := policyList(t, policy, "ownedLabelKeys"); !slices.Equal(got, keys) {
			t.Errorf("policy label keys:\n%q\ncode:\n%q", got, keys)
		}
		if got := policyList(t, policy, "ownedLabelPrefixes"); !slices.Equal(got, prefixes) {
			t.Errorf("policy label prefixes %q, code %q", got, prefixes)
		}
		types := slices.Sorted(slices.Values(nodestatus.OwnedConditionTypes))
		if got := policyList(t, policy, "ownedConditionTypes"); !slices.Equal(got, types) {
			t.Errorf("policy condition types %q, code %q", got, types)
		}
	}
	if find(render(t, "--set", "admissionPolicy.enabled=false"), "ValidatingAdmissionPolicy", "") != nil {
		t.Error("admissionPolicy.enabled=false still renders the policy")
	}
}

// The agent's taint key reaches the policy, the DaemonSet's tolerations
// (the agent must stay on a node it tainted) and the uninstall hook, from
// the one chart value the agent's configuration has it in; by default it
// is the agent's own default.
func TestTaintKeyFollowsConfig(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		variable string // the policy's variable holding the key
		key      string
	}{
		{nil, "ownedTaintKey", config.Default().Metrics.Health.Taint.Key},
		{[]string{"--set", "config.metrics.health.taint.key=example.com/gpu-bad"}, "ownedTaintKey", "example.com/gpu-bad"},
		{nil, "ownedRDMATaintKey", config.Default().Metrics.RDMAHealth.Taint.Key},
		{[]string{"--set", "config.metrics.rdmaHealth.taint.key=example.com/rdma-bad"}, "ownedRDMATaintKey", "example.com/rdma-bad"},
	} {
		objs := render(t, tc.args...)
		if got := policyList(t, find(objs, "ValidatingAdmissionPolicy", ""), tc.variable); !slices.Equal(got, []string{tc.key}) {
			t.Errorf("%v: policy taint key %q, want %q", tc.args, got, tc.key)
		}
		// NoCopy: helm's YAML has ints, which the copying helpers refuse.
		tolerations, _, _ := unstructured.NestedFieldNoCopy(find(objs, "DaemonSet", "").Object, "spec", "template", "spec", "tolerations")
		if tl, _ := tolerations.([]any); !slices.ContainsFunc(tl, func(v any) bool {
			m := v.(map[string]any)
			return m["key"] == tc.key && m["operator"] == "Exists" && m["effect"] == nil
		}) {
			t.Errorf("%v: the DaemonSet does not tolerate %s: %v", tc.args, tc.key, tolerations)
		}
		containers, _, _ := unstructured.NestedFieldNoCopy(find(objs, "Job", "-cleanup").Object, "spec", "template", "spec", "containers")
		args := fmt.Sprint(containers.([]any)[0].(map[string]any)["args"])
		if !strings.Contains(strings.TrimSuffix(args, "]")+" ", " --taint-key="+tc.key+" ") {
			t.Errorf("%v: cleanup hook args %v", tc.args, args)
		}
	}
}
