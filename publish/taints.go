package publish

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/nodestatus"
)

// The agent's taints cannot go through server-side apply: spec.taints is
// an atomic list (+listType=atomic in k8s.io/api), so an apply owns the
// whole list. Without force it conflicts with whoever wrote the list last
// (the kubelet, the node controller, kubectl taint); with force it would
// replace their taints by the agent's. So the agent rewrites the list
// itself, with the entries of other keys exactly as they are and a
// resourceVersion precondition: a list someone changed in between makes
// the patch fail (409) instead of losing their change, and the agent
// re-reads and tries again. Its taints are those with the keys it
// manages (Desired.TaintKeys), which the admission policy also grants
// it; no write is made when they already are as wanted.

// maxTaintAttempts bounds the re-read and retry after a lost race.
const maxTaintAttempts = 3

// syncTaints makes the Node's taints with the managed keys equal to
// d.Taints and returns the Node as it is afterwards.
func (p *Publisher) syncTaints(ctx context.Context, node *kubeapi.Node, d Desired) (*kubeapi.Node, error) {
	for attempt := 1; ; attempt++ {
		had := managedTaints(node, d.TaintKeys)
		if slices.Equal(had, d.Taints) {
			return node, nil
		}
		res, err := patchTaints(ctx, p.o.Client, node, d.TaintKeys, d.Taints, kubeapi.NewTime(p.o.Now()))
		p.m.count("taints", err)
		if err == nil {
			p.logTaintChanges(had, d.Taints)
			return res, nil
		}
		if !kubeapi.IsConflict(err) || attempt == maxTaintAttempts {
			return node, err
		}
		fresh, gerr := p.o.Client.GetNode(ctx, node.Name)
		p.m.count("get", gerr)
		if gerr != nil {
			return node, fmt.Errorf("%w; re-read: %w", err, gerr)
		}
		node = fresh
	}
}

// managedTaints are the Node's taints with one of keys, sorted by key and
// effect, without their times.
func managedTaints(node *kubeapi.Node, keys []string) []nodestatus.Taint {
	var out []nodestatus.Taint
	for _, t := range node.Spec.Taints {
		if slices.Contains(keys, t.Key) {
			out = append(out, nodestatus.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect})
		}
	}
	return sortTaints(out)
}

// patchTaints replaces the Node's taints with keys by want, keeping every
// other taint as and where it is, on the condition that the Node is still
// the one read. A taint the Node keeps keeps its time; a new NoExecute
// taint gets one, as kubectl taint does (tolerationSeconds count from it).
func patchTaints(ctx context.Context, client *kubeapi.Client, node *kubeapi.Node, keys []string, want []nodestatus.Taint, now kubeapi.Time) (*kubeapi.Node, error) {
	// Other managers' taints go back exactly as read, fields this agent
	// does not know included.
	var next []json.RawMessage
	for _, t := range node.Spec.Taints {
		if slices.Contains(keys, t.Key) {
			continue
		}
		raw := t.Raw
		if raw == nil { // not read from the API server
			var err error
			if raw, err = json.Marshal(t); err != nil {
				return node, fmt.Errorf("encode taint: %w", err)
			}
		}
		next = append(next, raw)
	}
	for _, w := range want {
		t := kubeapi.Taint{Key: w.Key, Value: w.Value, Effect: w.Effect}
		if i := slices.IndexFunc(node.Spec.Taints, func(o kubeapi.Taint) bool { return o.Key == t.Key && o.Effect == t.Effect }); i >= 0 {
			t.TimeAdded = node.Spec.Taints[i].TimeAdded
		} else if t.Effect == kubeapi.TaintEffectNoExecute {
			t.TimeAdded = &now
		}
		b, err := json.Marshal(t)
		if err != nil {
			return node, fmt.Errorf("encode taint: %w", err)
		}
		next = append(next, b)
	}
	var patch struct {
		Metadata struct {
			// The precondition: a Node changed since it was read fails with 409.
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Spec struct {
			Taints []json.RawMessage `json:"taints"` // null removes the field
		} `json:"spec"`
	}
	patch.Metadata.ResourceVersion, patch.Spec.Taints = node.ResourceVersion, next
	body, err := json.Marshal(patch)
	if err != nil {
		return node, fmt.Errorf("encode taints: %w", err)
	}
	res, err := client.MergePatchNode(ctx, node.Name, body, FieldManager)
	if err != nil {
		return node, fmt.Errorf("patch taints of node %s: %w", node.Name, err)
	}
	return res, nil
}

// sortTaints orders taints by key and effect (what identifies a taint on
// a Node) and keeps the first of entries with the same both, which the
// API server would reject.
func sortTaints(ts []nodestatus.Taint) []nodestatus.Taint {
	slices.SortStableFunc(ts, compareTaints)
	return slices.CompactFunc(ts, func(a, b nodestatus.Taint) bool { return compareTaints(a, b) == 0 })
}

func compareTaints(a, b nodestatus.Taint) int {
	return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Effect, b.Effect))
}

// logTaintChanges says which of the agent's taints a patch set or removed.
func (p *Publisher) logTaintChanges(had, want []nodestatus.Taint) {
	for _, t := range want {
		if !slices.Contains(had, t) {
			p.log.Info("taint set", "taint", t.String())
		}
	}
	for _, t := range had {
		if !slices.ContainsFunc(want, func(w nodestatus.Taint) bool { return compareTaints(w, t) == 0 }) {
			p.log.Info("taint removed", "taint", t.String())
		}
	}
}
