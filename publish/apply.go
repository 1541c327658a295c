package publish

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/nodestatus"
)

// syncLabels applies the desired labels when they differ from those the
// agent owns on node, and returns the Node as it is afterwards.
func (p *Publisher) syncLabels(ctx context.Context, node *kubeapi.Node, d Desired) (*kubeapi.Node, error) {
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
	if !maps.Equal(want, map[string]string(owned)) || p.o.Instance != "" && node.Annotations[InstanceAnnotation] != p.o.Instance {
		node, err = p.applyLabels(ctx, node, want, found, d.LabelOptions.Domain)
	}
	p.reportConflicts(found)
	return node, err
}

// applyLabels applies exactly want. A conflict on a shared key drops the
// key (recorded in found) and retries without force; a conflict on one of
// the agent's own keys (someone edited gpunode.dev/...) retries with force.
func (p *Publisher) applyLabels(ctx context.Context, node *kubeapi.Node, want labels.Set, found map[string]conflict, domain string) (*kubeapi.Node, error) {
	force := false
	for attempt := 0; ; attempt++ {
		cfg := applyFor(node)
		cfg.Metadata.Labels = want
		if p.o.Instance != "" {
			cfg.Metadata.Annotations = map[string]string{InstanceAnnotation: p.o.Instance}
		}
		res, err := p.o.Client.ApplyNode(ctx, node.Name, cfg, FieldManager, force)
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
	var status *kubeapi.StatusError
	if !errors.As(err, &status) || !kubeapi.IsConflict(err) {
		return nil, nil
	}
	for _, c := range status.Causes {
		k, ok := strings.CutPrefix(c.Field, ".metadata.labels.")
		if c.Type != "FieldManagerConflict" || !ok {
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
func labelManager(node *kubeapi.Node, key string) string {
	names := managerOf(node, key)
	if len(names) == 0 {
		return "unknown"
	}
	slices.Sort(names)
	return strings.Join(slices.Compact(names), ",")
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
func (p *Publisher) syncConditions(ctx context.Context, node *kubeapi.Node, want []nodestatus.Condition) error {
	owned, err := ownedConditions(node)
	if err != nil {
		return err
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
	now := kubeapi.NewTime(p.o.Now())
	status := &statusApply{}
	var changed []nodestatus.Condition
	for _, c := range want {
		transition, heartbeat := now, now
		o, had := owned[c.Type]
		if had && o.status == string(c.Status) && !o.transition.IsZero() {
			transition = o.transition
		}
		if had && sameCondition(o, c) && !o.heartbeat.IsZero() {
			heartbeat = o.heartbeat
		} else {
			changed = append(changed, c)
		}
		status.Conditions = append(status.Conditions, conditionApply{
			Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message,
			// The heartbeat is the time of the last change: refreshing it on
			// every pass would be a write every pass.
			LastTransitionTime: transition, LastHeartbeatTime: heartbeat,
		})
	}
	cfg := applyFor(node)
	cfg.Status = status
	_, err = p.o.Client.ApplyNodeStatus(ctx, node.Name, cfg, FieldManager, true)
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

func sameCondition(o ownedCondition, c nodestatus.Condition) bool {
	return o.status == string(c.Status) && o.reason == c.Reason && o.message == c.Message
}
