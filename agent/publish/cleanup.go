package publish

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
)

// Cleanup removes every label and condition the agent's field manager owns
// on a Node, by applying an empty configuration: server-side apply then
// deletes the fields that only the agent owned and leaves fields other
// managers co-own. It also removes the Node's taints with taintKeys (the
// agent's own, see syncTaints). A missing Node is not an error. It
// reports the labels and conditions it removed.
func Cleanup(ctx context.Context, client kubernetes.Interface, name string, taintKeys ...string) (removedLabels, removedConditions int, err error) {
	node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("get node %s: %w", name, err)
	}
	return cleanupNode(ctx, client, node, taintKeys)
}

func cleanupNode(ctx context.Context, client kubernetes.Interface, node *corev1.Node, taintKeys []string) (int, int, error) {
	owned, err := applycorev1.ExtractNode(node, FieldManager)
	if err != nil {
		return 0, 0, fmt.Errorf("read managedFields of node %s: %w", node.Name, err)
	}
	status, err := applycorev1.ExtractNodeStatus(node, FieldManager)
	if err != nil {
		return 0, 0, fmt.Errorf("read managedFields of node %s: %w", node.Name, err)
	}
	conds := 0
	if status.Status != nil {
		conds = len(status.Status.Conditions)
	}
	if err := cleanupTaints(ctx, client, node, taintKeys); err != nil {
		return 0, 0, err
	}
	nodes := client.CoreV1().Nodes()
	if len(owned.Labels) > 0 {
		// The UID makes the apply fail rather than create a deleted Node.
		if _, err := nodes.Apply(ctx, applycorev1.Node(node.Name).WithUID(node.UID), metav1.ApplyOptions{FieldManager: FieldManager}); err != nil {
			return 0, 0, fmt.Errorf("remove labels from node %s: %w", node.Name, err)
		}
	}
	if conds > 0 {
		if _, err := nodes.ApplyStatus(ctx, applycorev1.Node(node.Name).WithUID(node.UID).WithStatus(applycorev1.NodeStatus()), metav1.ApplyOptions{FieldManager: FieldManager}); err != nil {
			return len(owned.Labels), 0, fmt.Errorf("remove conditions from node %s: %w", node.Name, err)
		}
	}
	return len(owned.Labels), conds, nil
}

// CleanupAll runs Cleanup on every Node where the agent owns fields: for
// the chart's uninstall hook, which runs once for the cluster (it needs
// list on nodes, which the agent itself never gets). It goes on past a
// failing Node and returns every error.
func CleanupAll(ctx context.Context, client kubernetes.Interface, report func(node string, labels, conditions int), taintKeys ...string) error {
	list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	var errs []error
	for i := range list.Items {
		n := &list.Items[i]
		if !managedBy(n) && len(managedTaints(n, taintKeys)) == 0 {
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

func managedBy(n *corev1.Node) bool {
	for _, mf := range n.ManagedFields {
		if mf.Manager == FieldManager {
			return true
		}
	}
	return false
}

// cleanupTaints removes the Node's taints with keys, re-reading it when it
// changed under the patch.
func cleanupTaints(ctx context.Context, client kubernetes.Interface, node *corev1.Node, keys []string) error {
	for attempt := 1; len(managedTaints(node, keys)) > 0; attempt++ {
		_, err := patchTaints(ctx, client, node, keys, nil, metav1.Now())
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) || attempt == maxTaintAttempts {
			return err
		}
		name := node.Name
		if node, err = client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("get node %s: %w", name, err)
		}
	}
	return nil
}
