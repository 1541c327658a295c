package kube

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
)

// The harness itself: the apiserver answers, counts requests in its own
// metrics, survives a restart with its data, and mints bound tokens.
func TestCluster(t *testing.T) {
	c := StartT(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before, err := c.Scrape(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apply := applycorev1.Node("n1").WithLabels(map[string]string{"a.io/x": "1"})
	for range 3 {
		if _, err := c.Admin.CoreV1().Nodes().Apply(ctx, apply, metav1.ApplyOptions{FieldManager: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	after, err := c.Scrape(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := after.Since(before)
	if got := d.Requests(Match{"verb": "APPLY", "resource": "nodes"}); got != 3 {
		t.Errorf("APPLY on nodes counted %v, want 3", got)
	}
	if got := d.Writes("nodes", ""); got != 4 {
		t.Errorf("writes on nodes %v, want 4 (a POST and three APPLYs)", got)
	}
	if p99, n := d.Latency(0.99, Match{"verb": "APPLY", "resource": "nodes"}); n != 3 || !(p99 > 0) {
		t.Errorf("APPLY latency p99 %v over %d", p99, n)
	}

	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{}); err == nil {
		t.Fatal("apiserver answers while stopped")
	}
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := c.Admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil || n.Labels["a.io/x"] != "1" {
		t.Fatalf("after restart: %v %v", n.GetLabels(), err)
	}
}
