package publish

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gpunode/gpunode/kubeapi"
)

// Cleanup removes every label and condition the agent's field manager owns
// on a Node, by applying an empty configuration: server-side apply then
// deletes the fields that only the agent owned and leaves fields other
// managers co-own. It also removes the Node's taints with taintKeys (the
// agent's own, see syncTaints). A missing Node is not an error. It
// reports the labels and conditions it removed.
func Cleanup(ctx context.Context, client *kubeapi.Client, name string, taintKeys ...string) (removedLabels, removedConditions int, err error) {
	node, err := client.GetNode(ctx, name)
	if kubeapi.IsNotFound(err) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("get node %s: %w", name, err)
	}
	return cleanupNode(ctx, client, node, taintKeys)
}

func cleanupNode(ctx context.Context, client *kubeapi.Client, node *kubeapi.Node, taintKeys []string) (int, int, error) {
	owned, err := OwnedLabels(node)
	if err != nil {
		return 0, 0, err
	}
	conds, err := ownedConditions(node)
	if err != nil {
		return 0, 0, err
	}
	if err := cleanupTaints(ctx, client, node, taintKeys); err != nil {
		return 0, 0, err
	}
	instance, err := ownsInstance(node)
	if err != nil {
		return 0, 0, err
	}
	if len(owned) > 0 || instance {
		if _, err := client.ApplyNode(ctx, node.Name, applyFor(node), FieldManager, false); err != nil {
			return 0, 0, fmt.Errorf("remove labels from node %s: %w", node.Name, err)
		}
	}
	if len(conds) > 0 {
		cfg := applyFor(node)
		cfg.Status = &statusApply{}
		if _, err := client.ApplyNodeStatus(ctx, node.Name, cfg, FieldManager, false); err != nil {
			return len(owned), 0, fmt.Errorf("remove conditions from node %s: %w", node.Name, err)
		}
	}
	return len(owned), len(conds), nil
}

// CleanupAll runs Cleanup on every Node where the agent owns fields: for
// the chart's uninstall hook, which runs once for the cluster (it needs
// list on nodes, which the agent itself never gets). With instance set,
// only on the Nodes whose InstanceAnnotation names it: those of one
// deployment where several split the fleet; skipped reports each Node
// left to another (or to an agent that wrote no instance). It goes on
// past a failing Node and returns every error.
func CleanupAll(ctx context.Context, client *kubeapi.Client, instance string, report func(node string, labels, conditions int), skipped func(node, instance string), taintKeys ...string) error {
	nodes, err := client.ListNodes(ctx)
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	var errs []error
	for i := range nodes {
		n := &nodes[i]
		if !managedBy(n) && len(managedTaints(n, taintKeys)) == 0 {
			continue
		}
		if theirs := n.Annotations[InstanceAnnotation]; instance != "" && theirs != instance {
			if skipped != nil {
				skipped(n.Name, theirs)
			}
			continue
		}
		l, c, err := cleanupNode(ctx, client, n, taintKeys)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		report(n.Name, l, c)
	}
	return errors.Join(errs...)
}

func managedBy(n *kubeapi.Node) bool {
	for _, mf := range n.ManagedFields {
		if mf.Manager == FieldManager {
			return true
		}
	}
	return false
}

// cleanupTaints removes the Node's taints with keys, re-reading it when it
// changed under the patch.
func cleanupTaints(ctx context.Context, client *kubeapi.Client, node *kubeapi.Node, keys []string) error {
	for attempt := 1; len(managedTaints(node, keys)) > 0; attempt++ {
		_, err := patchTaints(ctx, client, node, keys, nil, kubeapi.NewTime(time.Now()))
		if err == nil {
			return nil
		}
		if !kubeapi.IsConflict(err) || attempt == maxTaintAttempts {
			return err
		}
		name := node.Name
		if node, err = client.GetNode(ctx, name); err != nil {
			return fmt.Errorf("get node %s: %w", name, err)
		}
	}
	return nil
}
