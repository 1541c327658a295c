package kubeapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// These are the parts of the core/v1 objects the agent reads or writes,
// with the API's JSON names. Fields the agent has no use for are not
// decoded, and nothing here is ever sent back whole: writes are
// server-side apply configurations and merge patches of the agent's own
// fields, so what is not decoded cannot be lost.

// ObjectMeta is the part of metadata the agent uses.
type ObjectMeta struct {
	Name              string               `json:"name,omitempty"`
	Namespace         string               `json:"namespace,omitempty"`
	UID               string               `json:"uid,omitempty"`
	ResourceVersion   string               `json:"resourceVersion,omitempty"`
	Labels            map[string]string    `json:"labels,omitempty"`
	Annotations       map[string]string    `json:"annotations,omitempty"`
	DeletionTimestamp *Time                `json:"deletionTimestamp,omitempty"`
	ManagedFields     []ManagedFieldsEntry `json:"managedFields,omitempty"`
}

// ManagedFieldsEntry is one field manager's set of owned fields.
type ManagedFieldsEntry struct {
	Manager     string `json:"manager,omitempty"`
	Operation   string `json:"operation,omitempty"` // "Apply" or "Update"
	APIVersion  string `json:"apiVersion,omitempty"`
	Subresource string `json:"subresource,omitempty"`
	FieldsType  string `json:"fieldsType,omitempty"`
	// FieldsV1 is the owned field set in the FieldsV1 encoding: nested
	// objects keyed "f:<field>", "k:<json key>" for list items, ".".
	FieldsV1 json.RawMessage `json:"fieldsV1,omitempty"`
}

// Node is a v1 Node: metadata, taints and conditions.
type Node struct {
	ObjectMeta `json:"metadata"`
	Spec       NodeSpec   `json:"spec"`
	Status     NodeStatus `json:"status"`
}

// NodeSpec holds the Node's taints.
type NodeSpec struct {
	Taints []Taint `json:"taints,omitempty"`
}

// Taint is one Node taint. Raw is the taint exactly as the API server sent
// it, so that a list rewritten around other managers' taints keeps theirs
// byte for byte, fields this package does not know included.
type Taint struct {
	Key       string          `json:"key"`
	Value     string          `json:"value,omitempty"`
	Effect    string          `json:"effect"`
	TimeAdded *Time           `json:"timeAdded,omitempty"`
	Raw       json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the raw form beside the decoded fields.
func (t *Taint) UnmarshalJSON(b []byte) error {
	type plain Taint
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*t = Taint(p)
	t.Raw = bytes.Clone(b)
	return nil
}

// The taint effects.
const (
	TaintEffectNoSchedule       = "NoSchedule"
	TaintEffectPreferNoSchedule = "PreferNoSchedule"
	TaintEffectNoExecute        = "NoExecute"
)

// NodeStatus holds the Node's conditions.
type NodeStatus struct {
	Conditions []NodeCondition `json:"conditions,omitempty"`
}

// NodeCondition is one Node condition.
type NodeCondition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	LastHeartbeatTime  Time   `json:"lastHeartbeatTime"`
	LastTransitionTime Time   `json:"lastTransitionTime"`
	Reason             string `json:"reason,omitempty"`
	Message            string `json:"message,omitempty"`
}

// Event is a v1 (core) Event.
type Event struct {
	ObjectMeta     `json:"metadata"`
	InvolvedObject ObjectReference `json:"involvedObject"`
	Reason         string          `json:"reason,omitempty"`
	Message        string          `json:"message,omitempty"`
	Source         EventSource     `json:"source"`
	FirstTimestamp Time            `json:"firstTimestamp"`
	LastTimestamp  Time            `json:"lastTimestamp"`
	Count          int32           `json:"count,omitempty"`
	Type           string          `json:"type,omitempty"`
	// ReportingController is "reportingComponent" on the wire, as in core/v1.
	ReportingController string `json:"reportingComponent,omitempty"`
	ReportingInstance   string `json:"reportingInstance,omitempty"`
}

// ObjectReference names the object an event is about.
type ObjectReference struct {
	Kind       string `json:"kind,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name,omitempty"`
	UID        string `json:"uid,omitempty"`
	APIVersion string `json:"apiVersion,omitempty"`
}

// EventSource is the component that reports an event.
type EventSource struct {
	Component string `json:"component,omitempty"`
	Host      string `json:"host,omitempty"`
}

// Pod is the part of a v1 Pod that finds a peer agent.
type Pod struct {
	ObjectMeta `json:"metadata"`
	Spec       PodSpec   `json:"spec"`
	Status     PodStatus `json:"status"`
}

// PodSpec says where the pod runs.
type PodSpec struct {
	NodeName string `json:"nodeName,omitempty"`
}

// PodStatus is the pod's phase and address.
type PodStatus struct {
	Phase string `json:"phase,omitempty"`
	PodIP string `json:"podIP,omitempty"`
}

// PodRunning is the phase of a pod whose containers run.
const PodRunning = "Running"

// Time is a timestamp as the API writes it: RFC 3339 in UTC with whole
// seconds, null when zero.
type Time struct{ time.Time }

// NewTime truncates t to the API's precision.
func NewTime(t time.Time) Time { return Time{t.UTC().Truncate(time.Second)} }

// MarshalJSON writes RFC 3339 or null.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(time.RFC3339))
}

// UnmarshalJSON reads RFC 3339 or null.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("time: %w", err)
	}
	if s == "" {
		*t = Time{}
		return nil
	}
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return fmt.Errorf("time: %w", err)
	}
	*t = Time{v}
	return nil
}
