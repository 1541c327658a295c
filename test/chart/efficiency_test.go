package chart

import (
	"path/filepath"
	"strings"
	"testing"
)

// recordingRules maps each recording rule's name to its expression.
func recordingRules(spec map[string]any) map[string]string {
	rules := map[string]string{}
	for _, g := range spec["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			if name, ok := r.(map[string]any)["record"].(string); ok {
				rules[name] = r.(map[string]any)["expr"].(string)
			}
		}
	}
	return rules
}

// promtool test rules proves the inference efficiency recording rules
// (default values) give the tokens per joule, energy and cost per 1M
// tokens per model and role computed by hand in
// testdata/efficiency_test.yaml, joining gpunode's per-pod energy with
// vLLM's token counters on namespace and pod.
func TestEfficiencyRules(t *testing.T) {
	dir := t.TempDir()
	renderedRules(t, dir, false)
	test, err := filepath.Abs("testdata/efficiency_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, test, filepath.Join(dir, "efficiency_test.yaml"))
	if out, err := promtool(t, dir, "test", "rules", "efficiency_test.yaml"); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// The join labels, the vLLM selector, the role label, the windows and
// the prices come from values; efficiency.enabled=false drops the group.
func TestEfficiencyRulesFromValues(t *testing.T) {
	dir := t.TempDir()
	spec := renderedRules(t, dir, false,
		"--set", "prometheusRule.efficiency.vllm.namespaceLabel=kubernetes_namespace",
		"--set", "prometheusRule.efficiency.vllm.podLabel=kubernetes_pod_name",
		"--set-string", `prometheusRule.efficiency.vllm.selector=job="vllm"`,
		"--set", "prometheusRule.efficiency.roleLabel=label_role",
		"--set", "prometheusRule.efficiency.rateWindow=2m",
		"--set", "prometheusRule.efficiency.idleWindow=30m",
		"--set-json", `prometheusRule.efficiency.gpuHourPrices={"NVIDIA H100 80GB HBM3":2.25,"NVIDIA B200":null}`,
		"--set-json", "prometheusRule.efficiency.defaultGPUHourPrice=1.5")
	if out, err := promtool(t, dir, "check", "rules", "gpunode-agent.rules.yaml"); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	rules := recordingRules(spec)
	for name, want := range map[string]string{
		"namespace_pod_model:vllm_prompt_tokens:rate": `sum by (namespace, pod, model_name) (label_replace(label_replace(rate(vllm:prompt_tokens_total{job="vllm"}[2m]), ` +
			`"namespace", "$1", "kubernetes_namespace", "(.*)"), "pod", "$1", "kubernetes_pod_name", "(.*)"))`,
		"gpunode:gpu_allocated_peak_utilization:ratio": "max_over_time(gpunode_gpu_utilization_ratio[30m])\n" +
			`  and on (uuid) group by (uuid) (gpunode_gpu_allocation_info{pod!=""})`,
	} {
		if rules[name] != want {
			t.Errorf("%s:\n%s\nwant\n%s", name, rules[name], want)
		}
	}
	// Prices merge with the placeholders as helm merges maps: a product
	// set to null is removed.
	price := rules["gpunode:gpu_price_per_hour"]
	if !strings.Contains(price, `2.25 * group by (node, gpu, uuid, model) (gpunode_gpu_info{model="NVIDIA H100 80GB HBM3"}) or`) ||
		!strings.Contains(price, `3.5 * group by (node, gpu, uuid, model) (gpunode_gpu_info{model="NVIDIA H200"}) or`) ||
		!strings.Contains(price, "1.5 * group by (node, gpu, uuid, model) (gpunode_gpu_info)") || strings.Contains(price, "B200") {
		t.Errorf("price rule:\n%s", price)
	}
	if role := rules["namespace_pod:gpunode_pod_role:info"]; !strings.Contains(role, `kube_pod_labels{label_role!=""}`) ||
		!strings.Contains(role, `gpunode_gpu_pod_energy_joules_total{label_role!="", pod!=""}`) {
		t.Errorf("role rule:\n%s", role)
	}

	off := renderedRules(t, t.TempDir(), false, "--set", "prometheusRule.efficiency.enabled=false")
	for _, g := range off["groups"].([]any) {
		if name := g.(map[string]any)["name"]; name == "gpunode-agent.efficiency" {
			t.Errorf("group %s rendered with efficiency.enabled=false", name)
		}
	}
}
