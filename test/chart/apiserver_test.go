package chart

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/test/kube"
)

// agentAccepts parses a rendered config.yaml with the agent's own decoder.
func agentAccepts(t *testing.T, rendered string) config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(rendered))
	if err != nil {
		t.Fatalf("the agent rejects the rendered config: %v\n%s", err, rendered)
	}
	return cfg
}

func valuesFiles(t *testing.T) []string {
	files, err := filepath.Glob("testdata/values/*.yaml")
	if err != nil || len(files) < 5 {
		t.Fatalf("values files: %v %v", files, err)
	}
	return files
}

// apiClients are the admin's dynamic client and REST mapper.
type apiClients struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newClients(t *testing.T, c *kube.Cluster) *apiClients {
	dc, err := discovery.NewDiscoveryClientForConfig(c.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(c.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	return &apiClients{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

func (a *apiClients) resource(t *testing.T, o *unstructured.Unstructured) dynamic.ResourceInterface {
	t.Helper()
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		a.mapper.Reset()
		if m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
	}
	ri := a.dyn.Resource(m.Resource)
	if m.Scope.Name() == "namespace" {
		ns := o.GetNamespace()
		if ns == "" {
			ns = "gpunode"
		}
		return ri.Namespace(ns)
	}
	return ri
}

// installCRDs creates the test's minimal Prometheus Operator CRDs and
// waits until they are served.
func installCRDs(t *testing.T, c *kube.Cluster, a *apiClients) {
	t.Helper()
	ctx := context.Background()
	for _, m := range decodeObjects(t, readFile(t, "testdata/crds/monitoring.coreos.com.yaml")) {
		o := &unstructured.Unstructured{Object: jsonRoundTrip(t, m)}
		if _, err := a.resource(t, o).Create(ctx, o, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
			t.Fatalf("create CRD %s: %v", o.GetName(), err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		a.mapper.Reset()
		_, err := a.mapper.RESTMapping(schema.GroupKind{Group: "monitoring.coreos.com", Kind: "PrometheusRule"}, "v1")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("CRDs not served: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// jsonRoundTrip turns YAML-decoded values (ints, nested maps) into what
// the apimachinery JSON helpers expect.
func jsonRoundTrip(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// On a real kube-apiserver: every values file's objects pass a server-side
// dry run with strict field validation (schemas, CEL of the admission
// policy, CRD schemas), and a real helm install and upgrade create them,
// keep the probe token and make the admission policy enforce.
func TestOnAPIServer(t *testing.T) {
	c := kube.StartT(t, kube.Options{})
	a := newClients(t, c)
	ctx := context.Background()
	installCRDs(t, c, a)
	for _, ns := range []string{"gpunode", "monitoring"} {
		if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("dry run", func(t *testing.T) {
		for _, f := range valuesFiles(t) {
			t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
				objs := renderObjects(t, "-f", f)
				kinds := map[string]int{}
				for _, m := range objs {
					o := &unstructured.Unstructured{Object: jsonRoundTrip(t, m)}
					kinds[o.GetKind()]++
					if _, err := a.resource(t, o).Create(ctx, o, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}); err != nil {
						t.Errorf("%s %s: %v", o.GetKind(), o.GetName(), err)
					}
					if o.GetKind() == "ConfigMap" && o.GetName() == "gpunode-gpunode-agent" {
						cm, _, _ := unstructured.NestedString(o.Object, "data", "config.yaml")
						agentAccepts(t, cm)
					}
				}
				t.Logf("%v", kinds)
			})
		}
	})

	t.Run("helm install", func(t *testing.T) {
		kubeconfig, err := c.Kubeconfig(c.AdminConfig.BearerToken)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"--kubeconfig", kubeconfig, "--namespace", "gpunode", "-f", "testdata/values/all-on.yaml"}
		out, err := helm(t, append([]string{"install", "gpunode-agent", chartDir}, args...)...)
		if err != nil {
			t.Fatalf("helm install: %v\n%s", err, out)
		}
		for _, want := range []string{"a ServiceMonitor scrapes every agent", "Alert rules: PrometheusRule gpunode-agent", "Grafana: 4 dashboards as ConfigMaps labelled grafana_dashboard=1 in gpunode",
			"ValidatingAdmissionPolicy gpunode-agent keeps the agent to the Node named in its Pod-bound service account token"} {
			if !strings.Contains(out, want) {
				t.Errorf("helm install's notes lack %q:\n%s", want, out)
			}
		}
		const name = "gpunode-agent"
		for _, get := range []func() error{
			func() error {
				_, err := c.Admin.AppsV1().DaemonSets("gpunode").Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := c.Admin.CoreV1().ConfigMaps("gpunode").Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := c.Admin.CoreV1().ServiceAccounts("gpunode").Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := c.Admin.CoreV1().Services("gpunode").Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := c.Admin.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := c.Admin.RbacV1().ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := c.Admin.RbacV1().Roles("gpunode").Get(ctx, name+"-peers", metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := c.Admin.RbacV1().RoleBindings("gpunode").Get(ctx, name+"-peers", metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := c.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := c.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, name, metav1.GetOptions{})
				return err
			},
		} {
			if err := get(); err != nil {
				t.Error(err)
			}
		}
		for _, kind := range []string{"ServiceMonitor", "PodMonitor", "PrometheusRule"} {
			o := &unstructured.Unstructured{}
			o.SetAPIVersion("monitoring.coreos.com/v1")
			o.SetKind(kind)
			if _, err := a.resource(t, o).Get(ctx, name, metav1.GetOptions{}); err != nil {
				t.Errorf("%s: %v", kind, err)
			}
		}
		if cms, err := c.Admin.CoreV1().ConfigMaps("gpunode").List(ctx, metav1.ListOptions{LabelSelector: "grafana_dashboard=1"}); err != nil || len(cms.Items) != len(dashboards()) {
			t.Errorf("dashboard ConfigMaps: %v, %v", cms, err)
		}

		// The probe token is generated once and survives an upgrade.
		token := func() string {
			s, err := c.Admin.CoreV1().Secrets("gpunode").Get(ctx, name+"-probe-token", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return string(s.Data["token"])
		}
		before := token()
		if len(before) != 48 {
			t.Errorf("probe token of %d characters", len(before))
		}
		if out, err := helm(t, append([]string{"upgrade", "gpunode-agent", chartDir, "--set", "config.discovery.interval=2m"}, args...)...); err != nil {
			t.Fatalf("helm upgrade: %v\n%s", err, out)
		}
		if after := token(); after != before {
			t.Error("helm upgrade replaced the probe token")
		}
		cm, err := c.Admin.CoreV1().ConfigMaps("gpunode").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg := agentAccepts(t, cm.Data["config.yaml"]); cfg.Discovery.Interval != 2*time.Minute {
			t.Errorf("upgrade: discovery interval %v", cfg.Discovery.Interval)
		}

		// The installed policy enforces: the agent's service account, as
		// its Pod-bound token on gpu-a presents it, may set its own label
		// there and nothing else.
		for _, n := range []string{"gpu-a", "gpu-b"} {
			if _, err := c.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		cfg := *c.AdminConfig
		cfg.Impersonate.UserName = "system:serviceaccount:gpunode:" + name
		cfg.Impersonate.Groups = []string{"system:serviceaccounts", "system:serviceaccounts:gpunode", "system:authenticated"}
		cfg.Impersonate.Extra = map[string][]string{"authentication.kubernetes.io/node-name": {"gpu-a"}}
		agent, err := kubernetes.NewForConfig(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		label := func(node, key string) error {
			patch := `{"metadata":{"labels":{"` + key + `":"true"}}}`
			_, err := agent.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			return err
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := label("gpu-b", "gpunode.dev/probe")
			if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) && strings.Contains(err.Error(), "ValidatingAdmissionPolicy") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the installed admission policy does not enforce after 30 s: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := label("gpu-a", "gpunode.dev/gpu.present"); err != nil {
			t.Errorf("the agent may not set its own label on its own node: %v", err)
		}
		if err := label("gpu-a", "team.example.com/owner"); err == nil || !strings.Contains(err.Error(), "may change only its own labels") {
			t.Errorf("a foreign label on its own node: %v", err)
		}
		// RBAC: peer discovery reads pods in its namespace only.
		if _, err := agent.CoreV1().Pods("gpunode").List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("list pods in the release namespace: %v", err)
		}
		if _, err := agent.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list pods in another namespace: %v", err)
		}
		if _, err := agent.CoreV1().Secrets("gpunode").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list secrets: %v", err)
		}
	})
}
