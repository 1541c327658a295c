package chart

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/gpunode/gpunode/test/kube"
)

// podAnnotations returns the DaemonSet's pod template annotations.
func podAnnotations(objs []map[string]any) map[string]any {
	ds := findObject(objs, "DaemonSet")
	tmpl, _ := ds["spec"].(map[string]any)["template"].(map[string]any)
	md, _ := tmpl["metadata"].(map[string]any)
	a, _ := md["annotations"].(map[string]any)
	return a
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// The pods read the probe token at start, so a new token must roll them:
// the pod template carries the token's checksum, the same token the
// generated Secret holds (one render generates it once, also on a first
// install), and none for an existingSecret helm template cannot read.
func TestProbeTokenChecksum(t *testing.T) {
	objs := renderObjects(t, "--set", "config.probe.enabled=true")
	var token string
	for _, o := range objs {
		if o["kind"] == "Secret" {
			token, _ = o["data"].(map[string]any)["token"].(string)
		}
	}
	if token == "" {
		t.Fatal("no generated probe token Secret")
	}
	if got, want := podAnnotations(objs)["checksum/probe-token"], sha256Hex(token); got != want {
		t.Errorf("checksum/probe-token %v, want sha256 of the Secret's token %s", got, want)
	}
	if a := podAnnotations(renderObjects(t, "--set", "config.probe.enabled=true", "--set", "probeToken.existingSecret=mine")); a["checksum/probe-token"] != nil {
		t.Errorf("existingSecret unreadable to helm template, checksum %v", a["checksum/probe-token"])
	}
	if a := podAnnotations(renderObjects(t)); a["checksum/probe-token"] != nil {
		t.Errorf("probes off, checksum %v", a["checksum/probe-token"])
	}
}

// readinessPolicy checks, as the agent's service account on node gpu-a,
// that the admission policy admits removing the tuning readiness taint
// and refuses adding it back.
func readinessPolicy(t *testing.T, c *kube.Cluster, sa string) {
	t.Helper()
	ctx := context.Background()
	readiness := corev1.Taint{Key: "gpunode.dev/tuning", Value: "pending", Effect: corev1.TaintEffectNoSchedule}
	if _, err := c.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-a"},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{readiness}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := *c.AdminConfig
	cfg.Impersonate.UserName = "system:serviceaccount:gpunode:" + sa
	cfg.Impersonate.Groups = []string{"system:serviceaccounts", "system:serviceaccounts:gpunode", "system:authenticated"}
	cfg.Impersonate.Extra = map[string][]string{"authentication.kubernetes.io/node-name": {"gpu-a"}}
	agent, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	setTaints := func(ts []corev1.Taint) error {
		n, err := c.Admin.CoreV1().Nodes().Get(ctx, "gpu-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		keep := slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == readiness.Key })
		body, err := json.Marshal(map[string]any{"spec": map[string]any{"taints": append(keep, ts...)}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = agent.CoreV1().Nodes().Patch(ctx, "gpu-a", types.MergePatchType, body, metav1.PatchOptions{})
		return err
	}
	// The policy enforces some moments after helm created it: wait until
	// a foreign taint is refused.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := setTaints([]corev1.Taint{readiness, {Key: "example.com/x", Effect: corev1.TaintEffectNoSchedule}})
		if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) && strings.Contains(err.Error(), "ValidatingAdmissionPolicy") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the installed admission policy does not enforce after 30 s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := setTaints(nil); err != nil {
		t.Errorf("the agent may not remove the readiness taint: %v", err)
	}
	// Its instance annotation (what the cleanup hook selects by), and no other.
	annotate := func(key string) error {
		body := `{"metadata":{"annotations":{"` + key + `":"gpunode/` + sa + `"}}}`
		_, err := agent.CoreV1().Nodes().Patch(ctx, "gpu-a", types.MergePatchType, []byte(body), metav1.PatchOptions{})
		return err
	}
	if err := annotate("gpunode.dev/instance"); err != nil {
		t.Errorf("the agent may not write its instance annotation: %v", err)
	}
	if err := annotate("example.com/note"); err == nil || !strings.Contains(err.Error(), "gpunode.dev/instance annotation") {
		t.Errorf("a foreign annotation: %v", err)
	}
	if err := setTaints([]corev1.Taint{readiness}); err == nil || !strings.Contains(err.Error(), "may only remove the readiness taint") {
		t.Errorf("the agent added the readiness taint: %v", err)
	}
}

// With a real helm against a real kube-apiserver: the probe token's
// checksum follows the token (kept on upgrade, changed when the Secret
// changes, an existingSecret's read by lookup), and a cleanup hook that
// fails (no Job controller runs here, so it never completes) leaves none
// of its objects behind, the cluster-scoped RBAC included.
func TestLifecycleOnAPIServer(t *testing.T) {
	c := kube.StartT(t, kube.Options{})
	ctx := context.Background()
	if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gpunode"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := c.Kubeconfig(c.AdminConfig.BearerToken)
	if err != nil {
		t.Fatal(err)
	}
	const name = "gpunode-agent"
	args := []string{"--kubeconfig", kubeconfig, "--namespace", "gpunode", "--set", "config.probe.enabled=true", "--set", "config.tuning.readinessTaint.enabled=true"}
	checksum := func() string {
		ds, err := c.Admin.AppsV1().DaemonSets("gpunode").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return ds.Spec.Template.Annotations["checksum/probe-token"]
	}
	secretSum := func(secret, key string) string {
		s, err := c.Admin.CoreV1().Secrets("gpunode").Get(ctx, secret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return sha256Hex(base64.StdEncoding.EncodeToString(s.Data[key]))
	}
	if out, err := helm(t, append([]string{"install", name, chartDir}, args...)...); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	first := checksum()
	if want := secretSum(name+"-probe-token", "token"); first != want {
		t.Fatalf("install: checksum %q, want the Secret's %q", first, want)
	}
	upgrade := func(extra ...string) {
		t.Helper()
		if out, err := helm(t, append(append([]string{"upgrade", name, chartDir}, args...), extra...)...); err != nil {
			t.Fatalf("helm upgrade: %v\n%s", err, out)
		}
	}
	upgrade()
	if got := checksum(); got != first {
		t.Errorf("an upgrade that keeps the token changed the checksum: %q -> %q", first, got)
	}
	// Someone rotates the token in the Secret: the next upgrade rolls the pods.
	s, err := c.Admin.CoreV1().Secrets("gpunode").Get(ctx, name+"-probe-token", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Data["token"] = []byte(strings.Repeat("r", 48))
	if _, err := c.Admin.CoreV1().Secrets("gpunode").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	upgrade()
	if got, want := checksum(), secretSum(name+"-probe-token", "token"); got == first || got != want {
		t.Errorf("rotated token: checksum %q (was %q), want %q", got, first, want)
	}
	// An existingSecret, read by helm's lookup.
	if _, err := c.Admin.CoreV1().Secrets("gpunode").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mine"}, Data: map[string][]byte{"tok": []byte(strings.Repeat("m", 32))}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	upgrade("--set", "probeToken.existingSecret=mine", "--set", "probeToken.existingSecretKey=tok")
	if got, want := checksum(), secretSum("mine", "tok"); got != want {
		t.Errorf("existingSecret: checksum %q, want %q", got, want)
	}

	// The installed admission policy lets the agent remove the readiness
	// taint from its own Node, and never add it.
	readinessPolicy(t, c, name)

	// The uninstall procedure's first step: revert mode, accepted by the
	// schema and the agent, and the notes say what to wait for.
	out, err := helm(t, append(append([]string{"upgrade", name, chartDir}, args...), "--reuse-values", "--set", "config.tuning.mode=revert")...)
	if err != nil {
		t.Fatalf("helm upgrade to revert mode: %v\n%s", err, out)
	}
	if _, notes, _ := strings.Cut(out, "NOTES:"); !strings.Contains(notes, "Host tuning: revert mode") || !strings.Contains(notes, "tuning.state says reverted") {
		t.Errorf("revert mode notes:\n%s", notes)
	}
	cm, err := c.Admin.CoreV1().ConfigMaps("gpunode").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg := agentAccepts(t, cm.Data["config.yaml"]); cfg.Tuning.Mode != "revert" {
		t.Errorf("rendered tuning mode %q", cfg.Tuning.Mode)
	}

	out, err = helm(t, "uninstall", name, "--kubeconfig", kubeconfig, "--namespace", "gpunode", "--timeout", "5s")
	if err == nil {
		t.Fatalf("helm uninstall succeeded although no Job controller runs: %s", out)
	}
	cleanup := name + "-cleanup"
	for what, get := range map[string]func() error{
		"Job": func() error {
			_, err := c.Admin.BatchV1().Jobs("gpunode").Get(ctx, cleanup, metav1.GetOptions{})
			return err
		},
		"ServiceAccount": func() error {
			_, err := c.Admin.CoreV1().ServiceAccounts("gpunode").Get(ctx, cleanup, metav1.GetOptions{})
			return err
		},
		"ClusterRole": func() error {
			_, err := c.Admin.RbacV1().ClusterRoles().Get(ctx, cleanup, metav1.GetOptions{})
			return err
		},
		"ClusterRoleBinding": func() error {
			_, err := c.Admin.RbacV1().ClusterRoleBindings().Get(ctx, cleanup, metav1.GetOptions{})
			return err
		},
	} {
		if err := get(); !apierrors.IsNotFound(err) {
			t.Errorf("failed cleanup hook: %s %s left behind (%v)", what, cleanup, err)
		}
	}
}

// The agent tolerates its readiness taint when it is on, also with the
// tolerations value emptied.
func TestReadinessTaintToleration(t *testing.T) {
	if y := mustYAML(t, podSpec(renderObjects(t, "--set-json", "tolerations=[]"))["tolerations"]); strings.Contains(y, "gpunode.dev/tuning") {
		t.Errorf("readiness taint tolerated while off: %s", y)
	}
	y := mustYAML(t, podSpec(renderObjects(t, "--set-json", "tolerations=[]", "--set", "config.tuning.readinessTaint.enabled=true", "--set", "config.tuning.readinessTaint.key=example.com/tuned"))["tolerations"])
	if !strings.Contains(y, "- key: example.com/tuned\n  operator: Exists\n") {
		t.Errorf("tolerations: %s", y)
	}
}

// The agents name their release on their Nodes and the cleanup hook
// cleans only the Nodes naming it (and lifts the readiness taint there).
func TestCleanupHookSelectsRelease(t *testing.T) {
	objs := renderObjects(t, "--set", "config.tuning.readinessTaint.enabled=true")
	if cfg := agentAccepts(t, configOf(t, objs)); cfg.Publish.Instance != "gpunode/gpunode" {
		t.Errorf("publish.instance %q", cfg.Publish.Instance)
	}
	var args []any
	for _, o := range objs {
		if o["kind"] == "Job" {
			c := o["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0]
			args = c.(map[string]any)["args"].([]any)
		}
	}
	want := []any{"cleanup", "--all-nodes", "--log.format=json", "--instance=gpunode/gpunode", "--taint-key=gpunode.dev/gpu-unhealthy", "--taint-key=gpunode.dev/rdma-unhealthy", "--taint-key=gpunode.dev/tuning"}
	if !slices.Equal(args, want) {
		t.Errorf("cleanup args %v, want %v", args, want)
	}
	if cfg := agentAccepts(t, configOf(t, renderObjects(t, "--set", "config.publish.instance=fleet-a"))); cfg.Publish.Instance != "fleet-a" {
		t.Errorf("publish.instance set: %q", cfg.Publish.Instance)
	}
}
