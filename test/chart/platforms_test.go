package chart

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"go.yaml.in/yaml/v3"

	"github.com/gpunode/gpunode/test/kube"
)

// hostMount is what a platform needs mounted from the host beneath the
// host root: the host path, read-only, and whether mounts made on the host
// after the pod started reach it (HostToContainer).
type hostMount struct {
	host        string
	propagation string
}

// platform is what a values file in the chart's examples/ must render.
type platform struct {
	runtimeClass      string            // the pod's runtimeClassName
	createsRuntimeCls bool              // a RuntimeClass object with handler nvidia
	mounts            []hostMount       // beyond the modes' own mounts
	nvml, amd         map[string]string // the agent's config.gpu.nvml / .amd keys the chart sets
	gpuOperatorClient bool              // nvidia.com/gpu.deploy.client=true in the nodeSelector
	openshift         bool              // the privileged SCC Role
	priorityQuota     bool
}

// The platform facts behind each file are in the chart README's
// "Platforms" table, with their sources.
var platforms = map[string]platform{
	"gpu-operator-driver-container": {
		mounts:            []hostMount{{"/run/nvidia/driver", "HostToContainer"}},
		nvml:              map[string]string{"driverRoot": "/run/nvidia/driver"},
		gpuOperatorClient: true,
	},
	"gpu-operator-cdi": {
		runtimeClass:      "nvidia",
		mounts:            []hostMount{{"/run/nvidia/driver", "HostToContainer"}},
		nvml:              map[string]string{"driverRoot": "/run/nvidia/driver"},
		gpuOperatorClient: true,
	},
	"container-toolkit": {
		runtimeClass:      "nvidia",
		createsRuntimeCls: true,
		mounts:            []hostMount{{"/usr/lib/x86_64-linux-gnu", ""}},
		nvml:              map[string]string{"libraryPath": "/host/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"},
	},
	"gke": {
		mounts:        []hostMount{{"/home/kubernetes/bin/nvidia", "HostToContainer"}},
		nvml:          map[string]string{"driverRoot": "/home/kubernetes/bin/nvidia"},
		priorityQuota: true,
	},
	"eks-al2023": {
		mounts: []hostMount{{"/usr/lib64", ""}},
		nvml:   map[string]string{"libraryPath": "/host/usr/lib64/libnvidia-ml.so.1"},
	},
	"eks-bottlerocket": {
		mounts: []hostMount{{"/usr/lib", ""}},
		nvml:   map[string]string{"libraryPath": "/host/usr/lib/libnvidia-ml.so.1"},
	},
	"aks": {
		mounts: []hostMount{{"/usr/lib/x86_64-linux-gnu", ""}},
		nvml:   map[string]string{"libraryPath": "/host/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"},
	},
	"openshift": {
		runtimeClass:      "nvidia",
		mounts:            []hostMount{{"/run/nvidia/driver", "HostToContainer"}},
		nvml:              map[string]string{"driverRoot": "/run/nvidia/driver"},
		gpuOperatorClient: true,
		openshift:         true,
	},
	"rocm-gpu-operator": {
		mounts: []hostMount{{"/opt/rocm", ""}},
		amd:    map[string]string{"libraryPath": "/host/opt/rocm/lib/libamd_smi.so"},
	},
}

func exampleFiles(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "examples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range files {
		out[strings.TrimSuffix(filepath.Base(f), ".yaml")] = f
	}
	return out
}

// gpuConfig decodes the gpu section of the rendered agent config.
func gpuConfig(t *testing.T, objs []map[string]any) (nvml, amd map[string]string) {
	t.Helper()
	var cfg struct {
		GPU struct {
			NVML map[string]any `yaml:"nvml"`
			AMD  map[string]any `yaml:"amd"`
		} `yaml:"gpu"`
	}
	if err := yaml.Unmarshal([]byte(configOf(t, objs)), &cfg); err != nil {
		t.Fatal(err)
	}
	str := func(m map[string]any) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			if s, ok := v.(string); ok {
				out[k] = s
			}
		}
		return out
	}
	return str(cfg.GPU.NVML), str(cfg.GPU.AMD)
}

// hostPaths maps each hostPath volume's name to its host path.
func hostPaths(spec map[string]any) map[string]string {
	out := map[string]string{}
	for _, v := range spec["volumes"].([]any) {
		v := v.(map[string]any)
		if hp, ok := v["hostPath"].(map[string]any); ok {
			out[v["name"].(string)] = hp["path"].(string)
		}
	}
	return out
}

// mountsByPath maps the agent container's mount paths to their mounts.
func mountsByPath(c map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, m := range c["volumeMounts"].([]any) {
		m := m.(map[string]any)
		out[m["mountPath"].(string)] = m
	}
	return out
}

// Each platform's values file renders what the platform needs for the
// agent to find NVML or AMD SMI: the runtime class, the host's driver or
// library directory mounted read-only beneath the host root (a driver
// container's root with HostToContainer propagation), the agent's config
// pointing at it, the GPU operator's client label in the nodeSelector,
// and the platform's own objects (RuntimeClass, SCC Role, ResourceQuota).
func TestPlatformValuesFiles(t *testing.T) {
	files := exampleFiles(t)
	readme := readFile(t, filepath.Join(chartDir, "README.md"))
	for name := range platforms {
		if files[name] == "" {
			t.Errorf("no examples/%s.yaml", name)
		}
	}
	for name, f := range files {
		t.Run(name, func(t *testing.T) {
			want, ok := platforms[name]
			if !ok {
				t.Fatalf("examples/%s.yaml has no expectations in this test", name)
			}
			if !strings.Contains(readme, "(examples/"+name+".yaml)") {
				t.Errorf("the chart README does not link examples/%s.yaml", name)
			}
			if out, err := helm(t, "lint", "--strict", chartDir, "--kube-version", kubeVersion, "-f", f); err != nil {
				t.Errorf("helm lint: %v\n%s", err, out)
			}
			objs := renderObjects(t, "-f", f)
			spec, c := podSpec(objs), agentContainer(t, objs)
			if got, _ := spec["runtimeClassName"].(string); got != want.runtimeClass {
				t.Errorf("runtimeClassName %q, want %q", got, want.runtimeClass)
			}
			rc := findObject(objs, "RuntimeClass")
			if want.createsRuntimeCls != (rc != nil) || rc != nil && (rc["handler"] != "nvidia" || rc["metadata"].(map[string]any)["name"] != want.runtimeClass) {
				t.Errorf("RuntimeClass %v, want one: %v", rc, want.createsRuntimeCls)
			}
			volumes, mounts := hostPaths(spec), mountsByPath(c)
			for _, hm := range want.mounts {
				m := mounts["/host"+hm.host]
				if m == nil {
					t.Errorf("no mount at /host%s", hm.host)
					continue
				}
				if volumes[m["name"].(string)] != hm.host || m["readOnly"] != true {
					t.Errorf("mount /host%s: volume %q of host path %q, read-only %v", hm.host, m["name"], volumes[m["name"].(string)], m["readOnly"])
				}
				if got, _ := m["mountPropagation"].(string); got != hm.propagation {
					t.Errorf("mount /host%s: propagation %q, want %q", hm.host, got, hm.propagation)
				}
			}
			nvml, amd := gpuConfig(t, objs)
			for k, v := range want.nvml {
				if nvml[k] != v {
					t.Errorf("config gpu.nvml.%s = %q, want %q", k, nvml[k], v)
				}
			}
			for k, v := range want.amd {
				if amd[k] != v {
					t.Errorf("config gpu.amd.%s = %q, want %q", k, amd[k], v)
				}
			}
			sel, _ := spec["nodeSelector"].(map[string]any)
			if got := sel["nvidia.com/gpu.deploy.client"] == "true"; got != want.gpuOperatorClient {
				t.Errorf("nodeSelector %v: gpu.deploy.client %v, want %v", sel, got, want.gpuOperatorClient)
			}
			scc := false
			for _, o := range objs {
				scc = scc || o["kind"] == "Role" && o["metadata"].(map[string]any)["name"] == "gpunode-gpunode-agent-scc"
			}
			if scc != want.openshift {
				t.Errorf("SCC Role rendered %v, want %v", scc, want.openshift)
			}
			if got := findObject(objs, "ResourceQuota") != nil; got != want.priorityQuota {
				t.Errorf("ResourceQuota rendered %v, want %v", got, want.priorityQuota)
			}
			// The rest of the configuration passes the agent's strict
			// decoder. gpu.nvml.driverRoot is the agent key of the library
			// search (issue 22, item 1, agent side), checked above.
			agentAccepts(t, configOf(t, objs))
		})
	}
}

// Each platform's objects pass a server-side dry run with strict field
// validation on a real kube-apiserver (the RuntimeClass included; the SCC
// Roles reference OpenShift's API group, which RBAC accepts anywhere).
func TestPlatformsOnAPIServer(t *testing.T) {
	c := kube.StartT(t, kube.Options{})
	a := newClients(t, c)
	ctx := context.Background()
	if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gpunode"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, f := range exampleFiles(t) {
		t.Run(name, func(t *testing.T) {
			kinds := map[string]int{}
			for _, m := range renderObjects(t, "-f", f) {
				o := &unstructured.Unstructured{Object: jsonRoundTrip(t, m)}
				kinds[o.GetKind()]++
				if _, err := a.resource(t, o).Create(ctx, o, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}); err != nil {
					t.Errorf("%s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
			if kinds["DaemonSet"] != 1 {
				t.Errorf("objects %v", kinds)
			}
			t.Logf("%v", kinds)
		})
	}
}

// mountModes lists the agent container's mounts as path:ro|rw.
func mountModes(c map[string]any) []string {
	var out []string
	for p, m := range mountsByPath(c) {
		mode := "rw"
		if m["readOnly"] == true {
			mode = "ro"
		}
		out = append(out, p+":"+mode)
	}
	slices.Sort(out)
	return out
}

// Least privilege per mode: of the host's /dev only /dev/infiniband (RDMA
// discovery) and, where the container is privileged, /dev/kmsg (the
// kernel log reader; an unprivileged container's device cgroup refuses
// it); /sys and /proc writable only where tuning writes (enforce).
func TestLeastPrivilegePerMode(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		privileged bool
		want       []string // host mounts beneath /host, with their modes
	}{
		{"tuning off", []string{"--set", "config.tuning.mode=off"}, false,
			[]string{"/host/dev/infiniband:ro", "/host/proc:ro", "/host/sys:ro"}},
		{"tuning off, kernel log off", []string{"--set", "config.tuning.mode=off", "--set", "kernelLog.enabled=false"}, false,
			[]string{"/host/dev/infiniband:ro", "/host/proc:ro", "/host/sys:ro"}},
		{"tuning off, privileged by securityContext", []string{"--set", "config.tuning.mode=off", "--set", "securityContext.privileged=true"}, true,
			[]string{"/host/dev/infiniband:ro", "/host/dev/kmsg:ro", "/host/proc:ro", "/host/sys:ro"}},
		{"audit (default)", nil, true,
			[]string{"/host/dev/infiniband:ro", "/host/dev/kmsg:ro", "/host/lib/modules:ro", "/host/proc:ro", "/host/run/systemd:ro", "/host/sys:ro", "/host/var/lib/kubelet:ro"}},
		{"audit, kernel log off", []string{"--set", "kernelLog.enabled=false"}, true,
			[]string{"/host/dev/infiniband:ro", "/host/lib/modules:ro", "/host/proc:ro", "/host/run/systemd:ro", "/host/sys:ro", "/host/var/lib/kubelet:ro"}},
		{"enforce", []string{"--set", "config.tuning.mode=enforce"}, true,
			[]string{"/host/dev/cpu_dma_latency:rw", "/host/dev/infiniband:ro", "/host/dev/kmsg:ro", "/host/lib/modules:ro", "/host/proc:rw", "/host/run/systemd:ro", "/host/sys:rw", "/host/var/lib/kubelet:ro"}},
		{"probes, tuning off", []string{"--set", "config.tuning.mode=off", "--set", "config.probe.enabled=true"}, true,
			[]string{"/host/dev/infiniband:ro", "/host/dev/kmsg:ro", "/host/proc:ro", "/host/sys:ro"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := renderObjects(t, tc.args...)
			spec, c := podSpec(objs), agentContainer(t, objs)
			var got []string
			for _, m := range mountModes(c) {
				if strings.HasPrefix(m, "/host/") {
					got = append(got, m)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("host mounts\n got %v\nwant %v", got, tc.want)
			}
			if p, _ := c["securityContext"].(map[string]any)["privileged"].(bool); p != tc.privileged {
				t.Errorf("privileged %v, want %v", p, tc.privileged)
			}
			volumes := hostPaths(spec)
			for _, v := range volumes {
				if v == "/dev" || v == "/" {
					t.Errorf("the host's %s is mounted whole", v)
				}
			}
			if volumes["host-dev-infiniband"] != "/dev/infiniband" {
				t.Errorf("volumes %v", volumes)
			}
			if m := mountsByPath(c)["/host/dev/kmsg"]; m != nil && volumes[m["name"].(string)] != "/dev/kmsg" {
				t.Errorf("kmsg volume %v", volumes)
			}
			// The kernel log reader journals its place beside tuning's.
			_, kmsg := mountsByPath(c)["/host/dev/kmsg"]
			_, state := mountsByPath(c)["/var/lib/gpunode"]
			if kmsg && !state {
				t.Errorf("the kernel log is read but the state directory is not mounted")
			}
			if m := mountsByPath(c)["/host/dev/cpu_dma_latency"]; m != nil && volumes[m["name"].(string)] != "/dev/cpu_dma_latency" {
				t.Errorf("cpu_dma_latency volume %v", volumes)
			}
		})
	}
}

// A libraryPath given in config wins over the one the chart derives from
// the mounted directory, and a RuntimeClass needs its name.
func TestGPULibraryOverrides(t *testing.T) {
	objs := renderObjects(t, "--set", "nvidia.hostLibDir=/usr/lib64", "--set", "config.gpu.nvml.libraryPath=/opt/nvidia/libnvidia-ml.so.1",
		"--set", "amd.rocmPath=/opt/rocm-6.4.0", "--set", "config.gpu.amd.libraryPath=/opt/amd/libamd_smi.so")
	nvml, amd := gpuConfig(t, objs)
	if nvml["libraryPath"] != "/opt/nvidia/libnvidia-ml.so.1" || amd["libraryPath"] != "/opt/amd/libamd_smi.so" {
		t.Errorf("configured library paths replaced: nvml %v, amd %v", nvml, amd)
	}
	if m := mountsByPath(agentContainer(t, objs))["/host/opt/rocm-6.4.0"]; m == nil || m["readOnly"] != true {
		t.Errorf("ROCm not mounted read-only: %v", m)
	}
	if _, err := helm(t, "template", "gpunode", chartDir, "--kube-version", kubeVersion, "--set", "runtimeClass.create=true"); err == nil || !strings.Contains(err.Error(), "runtimeClass.create needs runtimeClassName") {
		t.Errorf("runtimeClass.create without a name: %v", err)
	}
	// Host paths are absolute, without a trailing slash, and not / itself
	// (the host's root is never mounted whole).
	for _, v := range []string{"nvidia.hostLibDir=/", "nvidia.driverRoot=run/nvidia/driver", "amd.rocmPath=/opt/rocm/"} {
		if _, err := helm(t, "template", "gpunode", chartDir, "--kube-version", kubeVersion, "--set", v); err == nil || !strings.Contains(err.Error(), "schema") {
			t.Errorf("%s: %v, want a schema error", v, err)
		}
	}
}
