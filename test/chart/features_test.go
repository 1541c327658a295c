package chart

import (
	"slices"
	"strings"
	"testing"
)

// agentContainer returns the DaemonSet's agent container.
func agentContainer(t *testing.T, objs []map[string]any) map[string]any {
	t.Helper()
	ds := findObject(objs, "DaemonSet")
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	spec := ds["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	return spec["containers"].([]any)[0].(map[string]any)
}

func podSpec(objs []map[string]any) map[string]any {
	return findObject(objs, "DaemonSet")["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
}

func names(list any, key string) []string {
	var out []string
	l, _ := list.([]any)
	for _, e := range l {
		out = append(out, e.(map[string]any)[key].(string))
	}
	return out
}

func configOf(t *testing.T, objs []map[string]any) string {
	t.Helper()
	for _, o := range objs {
		if o["kind"] == "ConfigMap" && o["metadata"].(map[string]any)["name"] == "gpunode-gpunode-agent" {
			return o["data"].(map[string]any)["config.yaml"].(string)
		}
	}
	t.Fatal("no config ConfigMap")
	return ""
}

// Probes on, tuning off: host network, privileged, the probe port, the
// token in the config volume at the path the config names, the peers
// Role; off (the default): none of it, and no probe section in the config.
func TestProbes(t *testing.T) {
	objs := renderObjects(t, "--set", "config.probe.enabled=true", "--set", "config.tuning.mode=off")
	spec, c := podSpec(objs), agentContainer(t, objs)
	if spec["hostNetwork"] != true || c["securityContext"].(map[string]any)["privileged"] != true {
		t.Errorf("probes: hostNetwork %v, securityContext %v", spec["hostNetwork"], c["securityContext"])
	}
	if !slices.Contains(names(c["ports"], "name"), "probe") || !slices.Contains(names(c["env"], "name"), "POD_NAMESPACE") {
		t.Errorf("ports %v, env %v", c["ports"], c["env"])
	}
	cfg := configOf(t, objs)
	for _, want := range []string{"tokenFile: /etc/gpunode/probe/token", "peerSelector: app.kubernetes.io/name=gpunode-agent,app.kubernetes.io/instance=gpunode", `listenAddress: :9836`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	var projected []any
	for _, v := range spec["volumes"].([]any) {
		if v.(map[string]any)["name"] == "config" {
			projected = v.(map[string]any)["projected"].(map[string]any)["sources"].([]any)
		}
	}
	if len(projected) != 2 || projected[1].(map[string]any)["secret"].(map[string]any)["name"] != "gpunode-gpunode-agent-probe-token" {
		t.Errorf("config volume sources %v", projected)
	}
	for _, kind := range []string{"Secret", "Role", "RoleBinding"} {
		if findObject(objs, kind) == nil {
			t.Errorf("no %s with probes on", kind)
		}
	}
	if rules := findObject(objs, "Role")["rules"].([]any)[0].(map[string]any); mustYAML(t, rules["verbs"]) != "- get\n- list\n- watch\n" ||
		mustYAML(t, rules["resources"]) != "- pods\n" {
		t.Errorf("peers Role %v", rules)
	}

	// An IPv6 listen address: the container port is its port.
	objs = renderObjects(t, "--set", "config.probe.enabled=true", "--set", "config.probe.listenAddress=[::]:19836")
	if !strings.Contains(mustYAML(t, agentContainer(t, objs)["ports"]), "containerPort: 19836\n  name: probe") {
		t.Errorf("ports %s", mustYAML(t, agentContainer(t, objs)["ports"]))
	}

	// A Secret of the user's: no generated one, its key mounted.
	objs = renderObjects(t, "--set", "config.probe.enabled=true", "--set", "probeToken.existingSecret=mine", "--set", "probeToken.existingSecretKey=shared")
	if findObject(objs, "Secret") != nil {
		t.Error("a token Secret besides the user's")
	}
	if !strings.Contains(mustYAML(t, podSpec(objs)["volumes"]), "name: mine") || !strings.Contains(mustYAML(t, podSpec(objs)["volumes"]), "key: shared") {
		t.Errorf("volumes %s", mustYAML(t, podSpec(objs)["volumes"]))
	}

	objs = renderObjects(t, "--set", "config.tuning.mode=off")
	if podSpec(objs)["hostNetwork"] == true || findObject(objs, "Secret") != nil || findObject(objs, "Role") != nil {
		t.Error("probes off: host network, a Secret or a Role")
	}
	if strings.Contains(configOf(t, objs), "probe") {
		t.Errorf("probes off, yet a probe section:\n%s", configOf(t, objs))
	}
}

// The pod-resources socket directory is mounted read-only where the
// config looks for it, or disabled in the config; a web config Secret is
// mounted and named in the config; https reaches the kubelet's probes.
func TestPodResourcesAndWebConfig(t *testing.T) {
	objs := renderObjects(t)
	c := agentContainer(t, objs)
	if !strings.Contains(mustYAML(t, c["volumeMounts"]), "mountPath: /var/lib/kubelet/pod-resources\n  name: pod-resources\n  readOnly: true") {
		t.Errorf("mounts %s", mustYAML(t, c["volumeMounts"]))
	}
	if cfg := agentAccepts(t, configOf(t, objs)); cfg.Metrics.PodResourcesSocket != "/var/lib/kubelet/pod-resources/kubelet.sock" {
		t.Errorf("socket %q", cfg.Metrics.PodResourcesSocket)
	}
	objs = renderObjects(t, "--set", "podResources.enabled=false", "--set", "metrics.webConfig.existingSecret=web", "--set", "metrics.scheme=https")
	c = agentContainer(t, objs)
	cfg := agentAccepts(t, configOf(t, objs))
	if cfg.Metrics.PodResourcesSocket != "" || strings.Contains(mustYAML(t, c["volumeMounts"]), "pod-resources") {
		t.Errorf("pod resources off: socket %q, mounts %s", cfg.Metrics.PodResourcesSocket, mustYAML(t, c["volumeMounts"]))
	}
	if cfg.Metrics.WebConfigFile != "/etc/gpunode/web/web-config.yml" || !strings.Contains(mustYAML(t, c["volumeMounts"]), "mountPath: /etc/gpunode/web") {
		t.Errorf("web config %q", cfg.Metrics.WebConfigFile)
	}
	// The kubelet's probes have no credentials: with a web config they go
	// to the health port, plain HTTP, which the agent serves without auth.
	if cfg.Metrics.HealthListenAddress != ":9837" || !strings.Contains(mustYAML(t, c["ports"]), "containerPort: 9837\n  name: health") {
		t.Errorf("health address %q, ports %s", cfg.Metrics.HealthListenAddress, mustYAML(t, c["ports"]))
	}
	for _, p := range []string{"livenessProbe", "readinessProbe"} {
		if y := mustYAML(t, c[p]); !strings.Contains(y, "port: health") || !strings.Contains(y, "scheme: HTTP\n") {
			t.Errorf("%s %s", p, y)
		}
	}
	objs = renderObjects(t, "--set", "metrics.scheme=https")
	c = agentContainer(t, objs)
	if cfg := agentAccepts(t, configOf(t, objs)); cfg.Metrics.HealthListenAddress != "" || !strings.Contains(mustYAML(t, c["livenessProbe"]), "scheme: HTTPS") {
		t.Errorf("no web config: health address %q, liveness %s", cfg.Metrics.HealthListenAddress, mustYAML(t, c["livenessProbe"]))
	}
}

// helm lint --strict passes with every values file too.
func TestLintValuesFiles(t *testing.T) {
	for _, f := range valuesFiles(t) {
		if out, err := helm(t, "lint", "--strict", chartDir, "--kube-version", kubeVersion, "-f", f); err != nil {
			t.Errorf("helm lint -f %s: %v\n%s", f, err, out)
		}
	}
}

// Monitoring objects: the scrape keeps the agent's own pod, namespace and
// container labels (the GPU holder's, from the pod-resources API) rather
// than renaming them exported_* (Prometheus' honor_labels), and
// kube-prometheus-stack's Prometheus, which selects these objects by its
// release label, finds every one of them.
func TestMonitoringObjects(t *testing.T) {
	objs := renderObjects(t, "--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true",
		"--set", "prometheusRule.enabled=true", "--set", "dashboards.enabled=true", "--set", "metrics.prometheusRelease=kps")
	seen := map[string]int{}
	for _, o := range objs {
		kind := o["kind"].(string)
		md := o["metadata"].(map[string]any)
		if kind == "ConfigMap" && md["labels"].(map[string]any)["grafana_dashboard"] == nil {
			continue
		}
		switch kind {
		case "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap":
			seen[kind]++
			if rel := md["labels"].(map[string]any)["release"]; rel != "kps" {
				t.Errorf("%s %s: release label %v", kind, md["name"], rel)
			}
		}
		spec, _ := o["spec"].(map[string]any)
		for _, key := range []string{"endpoints", "podMetricsEndpoints"} {
			eps, ok := spec[key].([]any)
			if !ok {
				continue
			}
			for _, ep := range eps {
				if ep.(map[string]any)["honorLabels"] != true {
					t.Errorf("%s endpoint without honorLabels: %s", kind, mustYAML(t, ep))
				}
			}
		}
	}
	if seen["ServiceMonitor"] != 1 || seen["PodMonitor"] != 1 || seen["PrometheusRule"] != 1 || seen["ConfigMap"] != len(dashboards()) {
		t.Errorf("monitoring objects %v", seen)
	}
	// Without the value no release label is invented.
	for _, o := range renderObjects(t, "--set", "serviceMonitor.enabled=true") {
		if o["kind"] == "ServiceMonitor" && o["metadata"].(map[string]any)["labels"].(map[string]any)["release"] != nil {
			t.Errorf("release label without metrics.prometheusRelease")
		}
	}
}

// The agent's pod-resources socket follows podResources.hostPath, which is
// mounted at the same path (a kubelet with another --root-dir).
func TestPodResourcesPath(t *testing.T) {
	objs := renderObjects(t, "--set", "podResources.hostPath=/data/kubelet/pod-resources")
	c := agentContainer(t, objs)
	if !strings.Contains(mustYAML(t, c["volumeMounts"]), "mountPath: /data/kubelet/pod-resources\n  name: pod-resources\n  readOnly: true") {
		t.Errorf("mounts %s", mustYAML(t, c["volumeMounts"]))
	}
	if cfg := agentAccepts(t, configOf(t, objs)); cfg.Metrics.PodResourcesSocket != "/data/kubelet/pod-resources/kubelet.sock" {
		t.Errorf("socket %q", cfg.Metrics.PodResourcesSocket)
	}
	// A socket set in the config outside the mounted directory is refused.
	if _, err := helm(t, "template", "gpunode", chartDir, "--kube-version", kubeVersion, "--set", "config.metrics.podResourcesSocket=/elsewhere/kubelet.sock"); err == nil || !strings.Contains(err.Error(), "podResources.hostPath") {
		t.Errorf("socket outside the mount: %v", err)
	}
}

// A health agent must run on unhealthy nodes, so it tolerates every taint
// by default (as node-problem-detector does) and is node-critical; both can
// be overridden, the agent's own health taint stays tolerated.
func TestTolerationsAndPriority(t *testing.T) {
	spec := podSpec(renderObjects(t))
	if !strings.Contains(mustYAML(t, spec["tolerations"]), "- operator: Exists\n") {
		t.Errorf("default tolerations %s", mustYAML(t, spec["tolerations"]))
	}
	if spec["priorityClassName"] != "system-node-critical" {
		t.Errorf("priority class %v", spec["priorityClassName"])
	}
	objs := renderObjects(t, "--set-json", "tolerations=[]", "--set", "priorityClassName=")
	spec = podSpec(objs)
	if y := mustYAML(t, spec["tolerations"]); y != "- key: gpunode.dev/gpu-unhealthy\n  operator: Exists\n- key: gpunode.dev/rdma-unhealthy\n  operator: Exists\n" {
		t.Errorf("tolerations overridden: %s", y)
	}
	if _, ok := spec["priorityClassName"]; ok || findObject(objs, "ResourceQuota") != nil {
		t.Errorf("priority class %v", spec["priorityClassName"])
	}
	// GKE admits system-node-critical pods outside kube-system only within a
	// ResourceQuota scoped to that class; the chart can create it.
	q := findObject(renderObjects(t, "--set", "priorityQuota.create=true"), "ResourceQuota")
	if q == nil || !strings.Contains(mustYAML(t, q["spec"]), "scopeName: PriorityClass\n          values:\n            - system-node-critical") {
		t.Fatalf("quota %s", mustYAML(t, q))
	}
}

// Pod labels are opt-in: with keys the config carries them and a
// ClusterRole grants list on pods (cluster-wide: RBAC cannot narrow it to
// the node); without keys there is no such rule; keys without the
// pod-resources socket fail to render.
func TestPodLabels(t *testing.T) {
	hasPodsRule := func(objs []map[string]any) bool {
		for _, o := range objs {
			if o["kind"] == "ClusterRole" && strings.Contains(mustYAML(t, o["rules"]), "- pods\n") {
				return true
			}
		}
		return false
	}
	if objs := renderObjects(t); hasPodsRule(objs) || !strings.Contains(configOf(t, objs), "keys: []") {
		t.Errorf("default: pods rule %v, config:\n%s", hasPodsRule(objs), configOf(t, objs))
	}
	objs := renderObjects(t, "--set", "config.metrics.podLabels.keys={app.kubernetes.io/name,llm-d.ai/role}", "--set", "config.metrics.podLabels.maxValuesPerLabel=16")
	var role, binding map[string]any
	for _, o := range objs {
		if o["metadata"].(map[string]any)["name"] == "gpunode-gpunode-agent-pod-labels" {
			switch o["kind"] {
			case "ClusterRole":
				role = o
			case "ClusterRoleBinding":
				binding = o
			}
		}
	}
	if role == nil || binding == nil {
		t.Fatalf("pod labels ClusterRole %v, binding %v", role, binding)
	}
	if rules := role["rules"].([]any); len(rules) != 1 || mustYAML(t, rules[0].(map[string]any)["verbs"]) != "- list\n" ||
		mustYAML(t, rules[0].(map[string]any)["resources"]) != "- pods\n" {
		t.Errorf("pod labels ClusterRole rules %v", rules)
	}
	cfg := configOf(t, objs)
	for _, want := range []string{"- app.kubernetes.io/name\n", "- llm-d.ai/role\n", "maxValuesPerLabel: 16", "refreshInterval: 1m"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if _, err := helm(t, "template", "gpunode", chartDir, "--kube-version", kubeVersion, "--set", "podResources.enabled=false",
		"--set", "config.metrics.podLabels.keys={app}"); err == nil || !strings.Contains(err.Error(), "needs podResources.enabled") {
		t.Errorf("keys without pod-resources: %v", err)
	}
	if _, err := helm(t, "template", "gpunode", chartDir, "--kube-version", kubeVersion, "--set", "config.metrics.podLabels.keys={bad key}"); err == nil {
		t.Error("a bad label key passed the schema")
	}
}
