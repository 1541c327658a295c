package publish

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/labels"
)

// The agent's own fields on its Node are those in the managedFields entry
// of its server-side applies. What it applied last is read back from
// there, not remembered, so a restarted agent (or the cleanup job) knows
// exactly what it owns and nothing someone else set.

// fieldSet is a FieldsV1 object: "f:<name>" for a field, "k:<json>" for a
// list item by key, "." for the item itself.
type fieldSet map[string]json.RawMessage

// appliedFields is the field set the agent applied to the Node
// (subresource "") or its status ("status"); empty when it applied none.
func appliedFields(node *kubeapi.Node, subresource string) (fieldSet, error) {
	out := fieldSet{}
	for _, mf := range node.ManagedFields {
		if mf.Manager != FieldManager || mf.Operation != "Apply" || mf.Subresource != subresource || len(mf.FieldsV1) == 0 {
			continue
		}
		var set fieldSet
		if err := json.Unmarshal(mf.FieldsV1, &set); err != nil {
			return nil, fmt.Errorf("read managedFields of node %s: %w", node.Name, err)
		}
		for k, v := range set { // one entry per API version; the union is what is owned
			out[k] = v
		}
	}
	return out, nil
}

// sub is the nested field set at path, empty when absent.
func (s fieldSet) sub(path ...string) (fieldSet, error) {
	for _, p := range path {
		raw, ok := s[p]
		if !ok {
			return fieldSet{}, nil
		}
		var next fieldSet
		if err := json.Unmarshal(raw, &next); err != nil {
			return nil, fmt.Errorf("managedFields %s: %w", p, err)
		}
		s = next
	}
	return s, nil
}

func (s fieldSet) has(field string) bool {
	_, ok := s["f:"+field]
	return ok
}

// OwnedLabels are the labels the agent's field manager owns on node, with
// their current values: what it applied last and nobody took over since.
func OwnedLabels(node *kubeapi.Node) (labels.Set, error) {
	set, err := appliedFields(node, "")
	if err == nil {
		set, err = set.sub("f:metadata", "f:labels")
	}
	if err != nil {
		return nil, fmt.Errorf("read managedFields of node %s: %w", node.Name, err)
	}
	owned := labels.Set{}
	for k := range set {
		key, ok := strings.CutPrefix(k, "f:")
		if v, present := node.Labels[key]; ok && present {
			owned[key] = v
		}
	}
	return owned, nil
}

// InstanceAnnotation names, on each Node an agent manages, the deployment
// it belongs to (publish.instance; the chart: <namespace>/<release>). The
// cleanup of one deployment selects its Nodes by it, so releases that
// split a fleet (by nodeSelector or affinity) each clean only their own.
// It records where an agent really ran, which the DaemonSet's selector,
// gone by the time a post-delete hook runs and changeable since, does not.
// It is applied with the labels, so the cleanup's empty apply removes it.
const InstanceAnnotation = "gpunode.dev/instance"

// ownsInstance reports whether the agent's applied fields hold the
// instance annotation.
func ownsInstance(node *kubeapi.Node) (bool, error) {
	set, err := appliedFields(node, "")
	if err == nil {
		set, err = set.sub("f:metadata", "f:annotations")
	}
	if err != nil {
		return false, fmt.Errorf("read managedFields of node %s: %w", node.Name, err)
	}
	return set.has(InstanceAnnotation), nil
}

// ownedCondition is a condition the agent applied, with the fields it
// owns as they are on the Node.
type ownedCondition struct {
	status, reason, message string
	transition, heartbeat   kubeapi.Time // zero when not owned
}

// ownedConditions are the agent's conditions on node, by type.
func ownedConditions(node *kubeapi.Node) (map[string]ownedCondition, error) {
	set, err := appliedFields(node, "status")
	if err == nil {
		set, err = set.sub("f:status", "f:conditions")
	}
	if err != nil {
		return nil, fmt.Errorf("read managedFields of node %s: %w", node.Name, err)
	}
	out := map[string]ownedCondition{}
	for k := range set {
		item, ok := strings.CutPrefix(k, "k:")
		var key struct {
			Type string `json:"type"`
		}
		if !ok || json.Unmarshal([]byte(item), &key) != nil || key.Type == "" {
			continue
		}
		fields, err := set.sub(k)
		if err != nil {
			return nil, fmt.Errorf("read managedFields of node %s: %w", node.Name, err)
		}
		for _, c := range node.Status.Conditions {
			if c.Type != key.Type {
				continue
			}
			var o ownedCondition
			if fields.has("status") {
				o.status = c.Status
			}
			if fields.has("reason") {
				o.reason = c.Reason
			}
			if fields.has("message") {
				o.message = c.Message
			}
			if fields.has("lastTransitionTime") {
				o.transition = c.LastTransitionTime
			}
			if fields.has("lastHeartbeatTime") {
				o.heartbeat = c.LastHeartbeatTime
			}
			out[key.Type] = o
		}
	}
	return out, nil
}

// managerOf names the field managers other than the agent that own a
// label, from managedFields.
func managerOf(node *kubeapi.Node, key string) []string {
	var names []string
	for _, mf := range node.ManagedFields {
		var set fieldSet
		if mf.Manager == FieldManager || json.Unmarshal(mf.FieldsV1, &set) != nil {
			continue
		}
		if l, err := set.sub("f:metadata", "f:labels"); err == nil && l.has(key) {
			names = append(names, mf.Manager)
		}
	}
	return names
}

// The server-side apply configurations the agent sends: only the fields
// it owns, so the apply gives up any it no longer sends.
type nodeApply struct {
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Metadata   metaApply    `json:"metadata"`
	Status     *statusApply `json:"status,omitempty"`
}

type metaApply struct {
	Name string `json:"name"`
	// UID makes the apply fail rather than create a Node that was deleted.
	UID         string            `json:"uid,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type statusApply struct {
	Conditions []conditionApply `json:"conditions,omitempty"`
}

// conditionApply sends every field, empty reason and message included, so
// the agent owns the whole condition.
type conditionApply struct {
	Type               string       `json:"type"`
	Status             string       `json:"status"`
	Reason             string       `json:"reason"`
	Message            string       `json:"message"`
	LastTransitionTime kubeapi.Time `json:"lastTransitionTime"`
	LastHeartbeatTime  kubeapi.Time `json:"lastHeartbeatTime"`
}

func applyFor(node *kubeapi.Node) nodeApply {
	return nodeApply{APIVersion: "v1", Kind: "Node", Metadata: metaApply{Name: node.Name, UID: node.UID}}
}
