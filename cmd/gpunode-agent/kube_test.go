package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/gpunode/gpunode/publish"
	"github.com/gpunode/gpunode/test/kube"
)

// The binary, end to end against a real apiserver: `run` on a simulated
// node with NODE_NAME and --kubeconfig publishes its labels (client-go's
// klog output arrives in our JSON log), and `cleanup` removes them.
func TestRunAndCleanupAgainstAPIServer(t *testing.T) {
	bin, err := buildAgent()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	c := kube.StartT(t, kube.Options{})
	ctx := context.Background()
	const node = "cli-node"
	if _, err := c.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node,
		Labels: map[string]string{"kubernetes.io/hostname": node}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kc, err := c.Kubeconfig("gpunode-test-admin")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	nfd := filepath.Join(dir, "gpunode")
	os.WriteFile(cfg, []byte("metrics:\n  listenAddress: "+freePort(t)+"\npublish:\n  allowSimulated: true\n  nfdFeatureFile: "+nfd+"\nlog:\n  format: json\n"), 0o600)

	cmd := exec.Command(bin, "run", "--simulate=dgx-b200-ib", "--config", cfg, "--kubeconfig", kc)
	cmd.Env = append(os.Environ(), "NODE_NAME="+node, "KUBECONFIG=")
	stderr, _ := cmd.StderrPipe()
	var mu sync.Mutex
	var logs strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
		}
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		// Labels and the four conditions: discovery, verification, GPU and RDMA health.
		if err == nil && n.Labels["hardware.llm-d.ai/gpu-type"] == "b200" && n.Labels["gpunode.dev/verified"] == "true" && len(n.Status.Conditions) == 4 {
			break
		}
		if time.Now().After(deadline) {
			mu.Lock()
			t.Fatalf("labels never appeared: %v\n%s", n.GetLabels(), logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	mu.Lock()
	for _, w := range []string{`"msg":"labels applied"`, `"field_manager":"gpunode-agent"`} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("log lacks %s", w)
		}
	}
	mu.Unlock()
	if _, err := os.Stat(nfd); err != nil {
		t.Errorf("NFD file: %v", err)
	}

	// The agent's GPU health taint (as if a GPU had failed) beside an
	// operator's taint.
	n, _ := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	n.Spec.Taints = []corev1.Taint{{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule},
		{Key: "gpunode.dev/gpu-unhealthy", Value: "XIDCritical", Effect: corev1.TaintEffectNoSchedule}}
	if _, err := c.Admin.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// cleanup without a node is a usage error; with NODE_NAME it removes
	// the labels, the conditions, the taint and the NFD file.
	var out, errOut bytes.Buffer
	t.Setenv("NODE_NAME", "")
	if code := run([]string{"--config", cfg, "--kubeconfig", kc, "cleanup"}, &out, &errOut); code != exitUsage {
		t.Errorf("cleanup without a node: exit %d: %s", code, errOut.String())
	}
	t.Setenv("NODE_NAME", node)
	errOut.Reset()
	if code := run([]string{"--config", cfg, "--kubeconfig", kc, "cleanup"}, &out, &errOut); code != 0 {
		t.Fatalf("cleanup: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), `"node":"cli-node"`) || !strings.Contains(errOut.String(), `"conditions":4`) {
		t.Errorf("cleanup log: %s", errOut.String())
	}
	// apimachinery logs through klog, which run routed to our JSON logger.
	klog.InfoS("from klog", "component", "client-go")
	klog.Flush()
	if !strings.Contains(errOut.String(), `"msg":"from klog","component":"client-go"`) {
		t.Errorf("klog output not in the agent's log: %s", errOut.String())
	}
	n, _ = c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	kn, err := c.AdminKube.GetNode(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	if owned, _ := publish.OwnedLabels(kn); len(owned) != 0 || len(n.Status.Conditions) != 0 || n.Labels["kubernetes.io/hostname"] != node {
		t.Errorf("after cleanup: owned %v, conditions %v, labels %v", owned, n.Status.Conditions, n.Labels)
	}
	if len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != "nvidia.com/gpu" {
		t.Errorf("after cleanup: taints %v, want the operator's only", n.Spec.Taints)
	}
	if _, err := os.Stat(nfd); !os.IsNotExist(err) {
		t.Errorf("NFD file left: %v", err)
	}
	// --all-nodes (the chart's hook, which has no configuration, names the
	// taint key), and a bad kubeconfig fails cleanly.
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "example.com/gpu-bad", Effect: corev1.TaintEffectNoExecute})
	if _, err := c.Admin.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"--kubeconfig", kc, "cleanup", "--all-nodes", "--taint-key=example.com/gpu-bad"}, &out, &errOut); code != 0 {
		t.Errorf("cleanup --all-nodes: exit %d", code)
	}
	n, _ = c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != "nvidia.com/gpu" {
		t.Errorf("after cleanup --all-nodes --taint-key: taints %v, want the operator's only", n.Spec.Taints)
	}
	// --instance: a Node annotated with another release's instance is left
	// alone; its own release's cleanup removes every --taint-key given.
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "example.com/a", Effect: corev1.TaintEffectNoSchedule}, corev1.Taint{Key: "example.com/b", Effect: corev1.TaintEffectNoSchedule})
	n.Annotations = map[string]string{publish.InstanceAnnotation: "ns/other"}
	if _, err := c.Admin.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	keys := []string{"--taint-key=example.com/a", "--taint-key=example.com/b"}
	if code := run(append([]string{"--kubeconfig", kc, "cleanup", "--all-nodes", "--instance=ns/mine"}, keys...), &out, &errOut); code != 0 {
		t.Errorf("cleanup --all-nodes --instance: exit %d", code)
	}
	if n, _ = c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); len(n.Spec.Taints) != 3 || !strings.Contains(errOut.String(), "instance=ns/other") {
		t.Errorf("another instance's node: taints %v; log %s", n.Spec.Taints, errOut.String())
	}
	if code := run(append([]string{"--kubeconfig", kc, "cleanup", "--all-nodes", "--instance=ns/other"}, keys...), &out, &errOut); code != 0 {
		t.Errorf("cleanup --all-nodes --instance: exit %d", code)
	}
	if n, _ = c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != "nvidia.com/gpu" {
		t.Errorf("own instance's node: taints %v, want the operator's only", n.Spec.Taints)
	}
	errOut.Reset()
	if code := run([]string{"--kubeconfig", filepath.Join(dir, "missing"), "cleanup"}, &out, &errOut); code != exitUsage || !strings.Contains(errOut.String(), "kubernetes client configuration") {
		t.Errorf("missing kubeconfig: exit %d: %s", code, errOut.String())
	}
}
