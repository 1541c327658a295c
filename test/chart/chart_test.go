// Package chart tests the Helm chart with a real helm: lint, and the
// rendered objects for several values files.
package chart

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/test/tools"
)

const chartDir = "../../charts/gpunode-agent"

// kubeVersion is passed to helm: a go-installed helm otherwise assumes 1.20.
const kubeVersion = "1.33.0"

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := tools.Helm()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	if err := cmd.Run(); err != nil {
		return out.String(), errors.New(errOut.String())
	}
	return out.String(), nil
}

type object struct {
	Kind     string
	Metadata struct{ Name string }
	Data     map[string]string
	Spec     struct {
		Template struct {
			Spec struct {
				RuntimeClassName string            `yaml:"runtimeClassName"`
				HostNetwork      bool              `yaml:"hostNetwork"`
				NodeSelector     map[string]string `yaml:"nodeSelector"`
				Tolerations      []map[string]any
				Containers       []struct {
					Args []string
					Env  []struct {
						Name      string
						Value     string
						ValueFrom map[string]map[string]string `yaml:"valueFrom"`
					}
					LivenessProbe  map[string]any `yaml:"livenessProbe"`
					ReadinessProbe map[string]any `yaml:"readinessProbe"`
					VolumeMounts   []struct {
						Name      string
						MountPath string `yaml:"mountPath"`
						ReadOnly  bool   `yaml:"readOnly"`
					} `yaml:"volumeMounts"`
					SecurityContext map[string]any `yaml:"securityContext"`
				}
			}
		}
	}
}

func render(t *testing.T, values string) map[string]object {
	t.Helper()
	args := []string{"template", "gpunode", chartDir, "--namespace", "gpunode", "--kube-version", kubeVersion}
	if values != "" {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(values), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", f)
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	objs := map[string]object{}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var o object
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, out)
		}
		if o.Kind != "" {
			objs[o.Kind] = o
		}
	}
	return objs
}

func TestLint(t *testing.T) {
	if out, err := helm(t, "lint", "--strict", chartDir, "--kube-version", kubeVersion); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
}

func TestDefaults(t *testing.T) {
	objs := render(t, "")
	for _, k := range []string{"DaemonSet", "ConfigMap", "ServiceAccount"} {
		if _, ok := objs[k]; !ok {
			t.Fatalf("no %s rendered", k)
		}
	}
	// The rendered configuration passes the agent's own strict decoder.
	cfg, err := config.Parse([]byte(objs["ConfigMap"].Data["config.yaml"]))
	if err != nil {
		t.Fatalf("the chart's default config is rejected by the agent: %v", err)
	}
	if cfg.HostRoot != "/host" || cfg.Metrics.ListenAddress != ":9835" {
		t.Errorf("config: %+v", cfg)
	}
	ds := objs["DaemonSet"].Spec.Template.Spec
	c := ds.Containers[0]
	if !slices.Equal(c.Args, []string{"run", "--config=/etc/gpunode/config.yaml"}) {
		t.Errorf("args = %v", c.Args)
	}
	nodeName := false
	for _, e := range c.Env {
		nodeName = nodeName || e.Name == "NODE_NAME" && e.ValueFrom["fieldRef"]["fieldPath"] == "spec.nodeName"
	}
	if !nodeName {
		t.Error("NODE_NAME is not taken from the downward API")
	}
	// Tuning (audit by default, until the operator opts in to enforce)
	// keeps its journal on the host; audit writes nothing else, so
	// everything else, the host's /proc and /sys included, is read-only.
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		writable := m.MountPath == "/var/lib/gpunode"
		if m.ReadOnly == writable {
			t.Errorf("mount %s: read-only %v", m.MountPath, m.ReadOnly)
		}
		mounts[m.MountPath] = true
	}
	for _, p := range []string{"/host/sys", "/host/proc", "/host/dev/infiniband", "/host/dev/kmsg", "/etc/gpunode", "/var/lib/gpunode", "/host/run/systemd", "/host/lib/modules", "/host/var/lib/kubelet"} {
		if !mounts[p] {
			t.Errorf("no mount at %s", p)
		}
	}
	if cfg.Tuning.Mode != "audit" || !ds.HostNetwork || c.SecurityContext["privileged"] != true {
		t.Errorf("tuning: mode %q, hostNetwork %v, securityContext %v", cfg.Tuning.Mode, ds.HostNetwork, c.SecurityContext)
	}
	// The default profile manages no RoCE setting (PFC, ECN, rdma_cm's
	// mode must match the switches): roce-lossless is the operator's
	// opt-in (config.tuning.profiles).
	if p, err := cfg.Tuning.ResolveProfile(); err != nil || p.Name != "llm-inference" || len(p.RoCE.PFC)+len(p.RoCE.ECN) > 0 || p.RoCE.DefaultMode != "" {
		t.Errorf("chart default profile %s manages RoCE settings: %+v %v", p.Name, p.RoCE, err)
	}
	probePath := func(p map[string]any) any { h, _ := p["httpGet"].(map[string]any); return h["path"] }
	if probePath(c.LivenessProbe) != "/healthz" || probePath(c.ReadinessProbe) != "/readyz" {
		t.Errorf("probes: %v %v", c.LivenessProbe, c.ReadinessProbe)
	}
	if ds.NodeSelector["kubernetes.io/os"] != "linux" || len(ds.Tolerations) == 0 {
		t.Errorf("scheduling: %v %v", ds.NodeSelector, ds.Tolerations)
	}
}

func TestOverrides(t *testing.T) {
	objs := render(t, `
runtimeClassName: nvidia
nodeSelector: {feature.node.kubernetes.io/pci-10de.present: "true"}
extraArgs: [--log.level=debug]
metrics: {port: 9999}
config:
  discovery: {interval: 5m}
`)
	ds := objs["DaemonSet"].Spec.Template.Spec
	if ds.RuntimeClassName != "nvidia" || ds.NodeSelector["feature.node.kubernetes.io/pci-10de.present"] != "true" {
		t.Errorf("runtime class / node selector: %q %v", ds.RuntimeClassName, ds.NodeSelector)
	}
	if args := ds.Containers[0].Args; args[len(args)-1] != "--log.level=debug" {
		t.Errorf("extra args: %v", args)
	}
	cfg, err := config.Parse([]byte(objs["ConfigMap"].Data["config.yaml"]))
	if err != nil || cfg.Metrics.ListenAddress != ":9999" || cfg.Discovery.Interval.Minutes() != 5 {
		t.Errorf("config %+v, %v", cfg, err)
	}
}

// With tuning off the pod needs no host network, privileges or writable
// host files.
func TestTuningOff(t *testing.T) {
	objs := render(t, "config:\n  tuning:\n    mode: \"off\"\n")
	ds := objs["DaemonSet"].Spec.Template.Spec
	c := ds.Containers[0]
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("mount %s is writable with tuning off", m.MountPath)
		}
	}
	if ds.HostNetwork || c.SecurityContext["privileged"] == true || c.SecurityContext["allowPrivilegeEscalation"] != false {
		t.Errorf("tuning off: hostNetwork %v, securityContext %v", ds.HostNetwork, c.SecurityContext)
	}
	if _, err := config.Parse([]byte(objs["ConfigMap"].Data["config.yaml"])); err != nil {
		t.Error(err)
	}
}

// A typo in the values' config is refused by values.schema.json; where
// the schema leaves an object open (an inline tuning profile) it reaches
// the agent, which refuses it with the key named, instead of silently
// running on defaults.
func TestConfigTypoIsCaught(t *testing.T) {
	objs := render(t, "config:\n  tuning:\n    customProfile:\n      name: x\n      numa:\n        balanse: 1\n")
	_, err := config.Parse([]byte(objs["ConfigMap"].Data["config.yaml"]))
	if err == nil || !strings.Contains(err.Error(), `unknown key "balanse" in tuning.customProfile.numa`) {
		t.Fatalf("typo not caught: %v", err)
	}
}

// Label sets and the NFD feature file reach the agent's configuration,
// with the features.d directory mounted writable.
func TestLabelSetsAndNFD(t *testing.T) {
	objs := render(t, "config:\n  labels:\n    sets: {nvidia: true, llm-d: false}\nnfd:\n  enabled: true\n  featuresDir: /etc/nfd/features.d/\n")
	cfg, err := config.Parse([]byte(objs["ConfigMap"].Data["config.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Labels.Sets; !s.GPUNode || s.LLMD || !s.NVIDIA || s.AMD {
		t.Errorf("label sets %+v", s)
	}
	if cfg.Publish.NFDFeatureFile != "/etc/nfd/features.d/gpunode" {
		t.Errorf("NFD feature file %q", cfg.Publish.NFDFeatureFile)
	}
	writable := false
	for _, m := range objs["DaemonSet"].Spec.Template.Spec.Containers[0].VolumeMounts {
		writable = writable || m.MountPath == "/etc/nfd/features.d/" && !m.ReadOnly
	}
	if !writable {
		t.Error("features.d is not mounted writable")
	}
}

// Composed profiles pass the schema and reach the agent.
func TestTuningProfilesComposed(t *testing.T) {
	objs := render(t, "config:\n  tuning:\n    profiles: [llm-inference, roce-lossless]\n")
	cfg, err := config.Parse([]byte(objs["ConfigMap"].Data["config.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := cfg.Tuning.ResolveProfile(); err != nil || p.Name != "llm-inference.roce-lossless" {
		t.Errorf("composed profile %q: %v", p.Name, err)
	}
}
