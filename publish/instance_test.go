package publish

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/testsupport"
)

// Two releases split the fleet: each agent writes its instance on its
// Node, and the cleanup of one release (on the real kube-apiserver)
// removes the labels, instance annotation and taints from its own Nodes
// only, leaving the other release's Nodes as they are.
func TestCleanupAllByInstance(t *testing.T) {
	nodes := map[string]string{"inst-a1": "gpunode/team-a", "inst-a2": "gpunode/team-a", "inst-b1": "other/team-b"}
	for _, n := range slices.Sorted(maps.Keys(nodes)) {
		createNode(t, n, nil)
		p := New(Options{
			Client: cluster.AdminKube, Node: n, Resync: 100 * time.Millisecond,
			BackoffInitial: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
			EventNamespace: "default", Logger: slog.New(slog.DiscardHandler), Instance: nodes[n],
		})
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { p.Run(ctx) })
		p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts})
		testsupport.Eventually(t, "converge", func() error {
			if err := hasLabels(n, gpuLabels())(); err != nil {
				return err
			}
			if got := getNode(t, n).Annotations[InstanceAnnotation]; got != nodes[n] {
				return fmt.Errorf("%s: instance %q, want %q", n, got, nodes[n])
			}
			return nil
		})
		cancel()
		wg.Wait()
	}
	cleaned, skipped := map[string]int{}, map[string]string{}
	err := CleanupAll(context.Background(), cluster.AdminKube, "gpunode/team-a",
		func(node string, l, _ int) { cleaned[node] = l },
		func(node, instance string) { skipped[node] = instance })
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"inst-a1", "inst-a2"} {
		if cleaned[n] != len(gpuLabels()) {
			t.Errorf("%s: removed %d labels", n, cleaned[n])
		}
		if err := hasLabels(n, map[string]string{"gpunode.dev/gpu.count": ""})(); err != nil {
			t.Error(err)
		}
		if a, ok := getNode(t, n).Annotations[InstanceAnnotation]; ok {
			t.Errorf("%s: instance annotation %q survived cleanup", n, a)
		}
	}
	if _, ok := cleaned["inst-b1"]; ok || skipped["inst-b1"] != "other/team-b" {
		t.Errorf("the other release's node: cleaned %v, skipped %v", cleaned, skipped)
	}
	if err := hasLabels("inst-b1", gpuLabels())(); err != nil {
		t.Errorf("the other release's node lost its labels: %v", err)
	}
	if got := getNode(t, "inst-b1").Annotations[InstanceAnnotation]; got != "other/team-b" {
		t.Errorf("the other release's instance: %q", got)
	}
}
