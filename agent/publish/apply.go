package publish

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/gpunode/gpunode/agent/labels"
	"github.com/gpunode/gpunode/agent/nodestatus"
)

// OwnedLabels are the labels the agent's field manager owns on node, with
// their current values: what it applied last and nobody took over since.
func OwnedLabels(node *corev1.Node) (labels.Set, error) {
	owned, err := applycorev1.ExtractNode(node, FieldManager)
	if err != nil {
		return nil, fmt.Errorf("read managedFields of node %s: %w", node.Name, err)
	}
	return labels.Set(owned.Labels), nil
}

// syncLabels applies the desired labels when they differ from those the
// agent owns on node, and returns the Node as it is afterwards.
func (p *Publisher) syncLabels(ctx context.Context, node *corev1.Node, d Desired) (*corev1.Node, error) {
	owned, err := OwnedLabels(node)
	if err != nil {
		return node, err
	}
	want := labels.Hold(d.Labels, owned, d.Failed, d.LabelOptions)
	found := map[string]conflict{}
	for _, k := range sortedKeys(want) {
		// A shared key someone else set to another value: the apply would
		// conflict, so it is not even tried.
		if cur, ok := node.Labels[k]; ok && cur != want[k] && !hasKey(owned, k) && labels.SharedKey(k, d.LabelOptions.Domain) {
			found[k] = conflict{theirs: cur, ours: want[k], manager: labelManager(node, k)}
			delete(want, k)
		}
	}
	if !maps.Equal(want, map[string]string(owned)) {
		node, err = p.applyLabels(ctx, node, want, found, d.LabelOptions.Domain)
	}
	p.reportConflicts(found)
	return node, err
}

// applyLabels applies exactly want. A conflict on a shared key drops the
// key (recorded in found) and retries without force; a conflict on one of
// the agent's own keys (someone edited gpunode.dev/...) retries with force.
func (p *Publisher) applyLabels(ctx context.Context, node *corev1.Node, want labels.Set, found map[string]conflict, domain string) (*corev1.Node, error) {
	force := false
	for attempt := 0; ; attempt++ {
		// The UID makes the apply fail rather than create a Node that was deleted.
		cfg := applycorev1.Node(node.Name).WithUID(node.UID).WithLabels(want)
		res, err := p.o.Client.CoreV1().Nodes().Apply(ctx, cfg, metav1.ApplyOptions{FieldManager: FieldManager, Force: force})
		p.m.count("apply", err)
		if err == nil {
			p.log.Info("labels applied", "labels", len(want), "forced", force)
			return res, nil
		}
		keys, managers := conflictKeys(err)
		if len(keys) == 0 || attempt == 2 {
			return node, fmt.Errorf("apply: %w", err)
		}
		for i, k := range keys {
			if _, ours := want[k]; !ours {
				continue
			}
			if labels.SharedKey(k, domain) {
				found[k] = conflict{theirs: node.Labels[k], ours: want[k], manager: managers[i]}
				delete(want, k)
			} else {
				force = true
			}
		}
	}
}

var conflictWith = regexp.MustCompile(`conflict with "([^"]*)"`)

// conflictKeys reads the label keys and managers from a server-side apply
// conflict (HTTP 409 with FieldManagerConflict causes whose field is
// ".metadata.labels.<key>").
func conflictKeys(err error) (keys, managers []string) {
	status, ok := err.(apierrors.APIStatus)
	if !ok || !apierrors.IsConflict(err) || status.Status().Details == nil {
		return nil, nil
	}
	for _, c := range status.Status().Details.Causes {
		k, ok := strings.CutPrefix(c.Field, ".metadata.labels.")
		if c.Type != metav1.CauseTypeFieldManagerConflict || !ok {
			continue
		}
		m := "unknown"
		if sub := conflictWith.FindStringSubmatch(c.Message); sub != nil {
			m = sub[1]
		}
		keys, managers = append(keys, k), append(managers, m)
	}
	return keys, managers
}

// labelManager names the field managers that own a label, from managedFields.
func labelManager(node *corev1.Node, key string) string {
	var names []string
	for _, mf := range node.ManagedFields {
		if mf.Manager == FieldManager || mf.FieldsV1 == nil {
			continue
		}
		var f struct {
			Metadata struct {
				Labels map[string]json.RawMessage `json:"f:labels"`
			} `json:"f:metadata"`
		}
		if json.Unmarshal(mf.FieldsV1.Raw, &f) == nil {
			if _, ok := f.Metadata.Labels["f:"+key]; ok && !slices.Contains(names, mf.Manager) {
				names = append(names, mf.Manager)
			}
		}
	}
	if len(names) == 0 {
		return "unknown"
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

// reportConflicts logs, counts and records an event for each new conflict,
// and clears those that ended.
func (p *Publisher) reportConflicts(found map[string]conflict) {
	for _, k := range sortedKeys(found) {
		c := found[k]
		if old, ok := p.conflicts[k]; ok && old == c {
			continue
		}
		p.conflicts[k] = c
		p.m.conflicts.WithLabelValues(k).Set(1)
		msg := fmt.Sprintf("label %s is %q, owned by %s; gpunode-agent would set %q and leaves it alone", k, c.theirs, c.manager, c.ours)
		p.log.Warn("label conflict: another manager owns a different value; not forcing", "key", k, "theirs", c.theirs, "ours", c.ours, "manager", c.manager)
		p.mu.Lock()
		p.queueLocked(nodestatus.Event{Type: nodestatus.Warning, Reason: "LabelConflict", Message: msg})
		p.mu.Unlock()
	}
	for _, k := range sortedKeys(p.conflicts) {
		if _, ok := found[k]; !ok {
			delete(p.conflicts, k)
			p.m.conflicts.DeleteLabelValues(k)
			p.log.Info("label conflict over", "key", k)
		}
	}
}

func hasKey(s labels.Set, k string) bool {
	_, ok := s[k]
	return ok
}

// syncConditions applies the desired conditions when their type, status,
// reason or message differ from those the agent owns, and queues an event
// for each that changed. Times are kept from the Node for conditions that
// did not change, so an unchanged set never causes a write.
func (p *Publisher) syncConditions(ctx context.Context, node *corev1.Node, want []nodestatus.Condition) error {
	ownedStatus, err := applycorev1.ExtractNodeStatus(node, FieldManager)
	if err != nil {
		return fmt.Errorf("read managedFields of node %s: %w", node.Name, err)
	}
	owned := map[string]*applycorev1.NodeConditionApplyConfiguration{}
	if ownedStatus.Status != nil {
		for i := range ownedStatus.Status.Conditions {
			c := &ownedStatus.Status.Conditions[i]
			if c.Type != nil {
				owned[string(*c.Type)] = c
			}
		}
	}
	same := len(owned) == len(want)
	for _, c := range want {
		if o, ok := owned[c.Type]; !ok || !sameCondition(o, c) {
			same = false
		}
	}
	if same {
		return nil
	}
	now := metav1.NewTime(p.o.Now())
	status := applycorev1.NodeStatus()
	var changed []nodestatus.Condition
	for _, c := range want {
		transition, heartbeat := now, now
		o, had := owned[c.Type]
		if had && o.Status != nil && string(*o.Status) == string(c.Status) && o.LastTransitionTime != nil {
			transition = *o.LastTransitionTime
		}
		if had && sameCondition(o, c) && o.LastHeartbeatTime != nil {
			heartbeat = *o.LastHeartbeatTime
		} else {
			changed = append(changed, c)
		}
		status.WithConditions(applycorev1.NodeCondition().
			WithType(corev1.NodeConditionType(c.Type)).WithStatus(corev1.ConditionStatus(c.Status)).
			WithReason(c.Reason).WithMessage(c.Message).
			// The heartbeat is the time of the last change: refreshing it on
			// every pass would be a write every pass.
			WithLastTransitionTime(transition).WithLastHeartbeatTime(heartbeat))
	}
	cfg := applycorev1.Node(node.Name).WithUID(node.UID).WithStatus(status)
	_, err = p.o.Client.CoreV1().Nodes().ApplyStatus(ctx, cfg, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	p.m.count("apply_status", err)
	if err != nil {
		return fmt.Errorf("apply status: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range changed {
		p.log.Info("condition", "type", c.Type, "status", c.Status, "reason", c.Reason, "message", c.Message)
		p.queueLocked(nodestatus.ChangeEvent(c))
	}
	return nil
}

func sameCondition(o *applycorev1.NodeConditionApplyConfiguration, c nodestatus.Condition) bool {
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	status := ""
	if o.Status != nil {
		status = string(*o.Status)
	}
	return status == string(c.Status) && str(o.Reason) == c.Reason && str(o.Message) == c.Message
}
