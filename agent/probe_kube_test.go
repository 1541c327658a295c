package agent

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpunode/gpunode/test/kube"
)

// Peers come from a real API server: the agent's own pods (selector) in
// its own namespace, running and with an address; nothing from elsewhere.
func TestListPeersFromAPIServer(t *testing.T) {
	c := kube.StartT(t, kube.Options{})
	ctx := context.Background()
	for _, ns := range []string{"gpunode-probe", "other"} {
		if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// No controllers run: create what the service account controller would.
		if _, err := c.Admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(ns, name, node, ip string, labels map[string]string, phase corev1.PodPhase) {
		t.Helper()
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "agent", Image: "gpunode-agent"}}},
		}
		p, err := c.Admin.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// No kubelet here: set the status it would.
		p.Status = corev1.PodStatus{Phase: phase, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		if ip == "" {
			p.Status.PodIPs = nil
		}
		if _, err := c.Admin.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	agent := map[string]string{"app.kubernetes.io/name": "gpunode-agent"}
	mk("gpunode-probe", "agent-b", "node-b", "10.0.0.2", agent, corev1.PodRunning)
	mk("gpunode-probe", "agent-a", "node-a", "10.0.0.1", agent, corev1.PodRunning)
	mk("gpunode-probe", "agent-c", "node-c", "", agent, corev1.PodPending)
	mk("gpunode-probe", "web", "node-d", "10.0.0.4", map[string]string{"app.kubernetes.io/name": "web"}, corev1.PodRunning)
	mk("other", "agent-x", "node-x", "10.0.0.9", agent, corev1.PodRunning)

	peers, err := listPeers(ctx, c.AdminKube, "gpunode-probe", "app.kubernetes.io/name=gpunode-agent", "9836")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range peers {
		got[p.Node] = p.Address
	}
	if len(got) != 2 || got["node-a"] != "10.0.0.1:9836" || got["node-b"] != "10.0.0.2:9836" {
		t.Errorf("peers %+v", peers)
	}
	if _, err := listPeers(ctx, c.AdminKube, "gpunode-probe", "app in (", "9836"); err == nil {
		t.Error("a bad selector was accepted")
	}
}
