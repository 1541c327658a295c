package chart

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/gpunode/gpunode/test/tools"
)

// servesPolicy tells helm template that the cluster serves the admission
// policy API, as helm install learns from the apiserver.
const servesPolicy = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"

// renderObjects runs helm template with extra arguments (-f FILE, --set
// ...) for a cluster that serves the admission policy API and returns
// every object, hooks included, as generic maps.
func renderObjects(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	out, err := helm(t, append([]string{"template", "gpunode", chartDir, "--namespace", "gpunode", "--kube-version", kubeVersion, "--api-versions", servesPolicy}, args...)...)
	if err != nil {
		t.Fatalf("helm template %v: %v", args, err)
	}
	return decodeObjects(t, out)
}

func decodeObjects(t *testing.T, s string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	dec := yaml.NewDecoder(strings.NewReader(s))
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, s)
		}
		if m != nil {
			objs = append(objs, m)
		}
	}
	return objs
}

// findObject returns the first object of a kind, or nil.
func findObject(objs []map[string]any, kind string) map[string]any {
	for _, o := range objs {
		if o["kind"] == kind {
			return o
		}
	}
	return nil
}

// promtool runs promtool in dir and returns its output.
func promtool(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	bin, err := tools.Promtool()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// renderedRules renders the chart's alert rules (the PrometheusRule's
// spec) with extra helm arguments and writes them to dir as a Prometheus
// rules file; strip drops the annotations.
func renderedRules(t *testing.T, dir string, strip bool, args ...string) map[string]any {
	t.Helper()
	pr := findObject(renderObjects(t, append([]string{"--set", "prometheusRule.enabled=true"}, args...)...), "PrometheusRule")
	if pr == nil {
		t.Fatal("no PrometheusRule rendered")
	}
	spec := pr["spec"].(map[string]any)
	if strip {
		for _, g := range spec["groups"].([]any) {
			for _, r := range g.(map[string]any)["rules"].([]any) {
				delete(r.(map[string]any), "annotations")
			}
		}
	}
	b, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gpunode-agent.rules.yaml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return spec
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(p string, b []byte) error { return os.WriteFile(p, b, 0o644) }

func mustYAML(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
