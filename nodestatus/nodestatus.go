// Package nodestatus holds what the agent reports about its Node besides
// labels: conditions (GPUHealthy, RDMAReady, ...) and events. Features
// compute them as plain values; the publisher writes them to Kubernetes,
// and in standalone mode the agent logs them.
package nodestatus

// Status of a condition, as Kubernetes spells it.
type Status string

const (
	True    Status = "True"
	False   Status = "False"
	Unknown Status = "Unknown"
)

// Condition is one Node condition owned by the agent.
type Condition struct {
	// Type is CamelCase, e.g. "GPUHealthy".
	Type   string `json:"type"`
	Status Status `json:"status"`
	// Reason is a CamelCase machine-readable cause, e.g. "XIDCritical".
	Reason string `json:"reason"`
	// Message is one human-readable line.
	Message string `json:"message"`
}

// EventType is Normal or Warning.
type EventType string

const (
	Normal  EventType = "Normal"
	Warning EventType = "Warning"
)

// Event is something that happened on the node worth an operator's
// attention: a tuning drift repaired, a condition changed.
type Event struct {
	Type    EventType `json:"type"`
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
}

// Taint is a Node taint the agent owns (the opt-in GPU health taint), as
// Kubernetes spells its fields. Key and Effect identify it on the Node:
// taints are a list keyed by both, so the agent owns only its own entries.
type Taint struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Effect string `json:"effect"`
}

// String is the taint as kubectl writes it: key=value:effect.
func (t Taint) String() string {
	if t.Value == "" {
		return t.Key + ":" + t.Effect
	}
	return t.Key + "=" + t.Value + ":" + t.Effect
}

// Condition types the agent owns on its Node. The chart's admission policy
// lets the agent's service account change exactly these (a test keeps the
// two lists equal), and the publisher refuses any other type.
const (
	// DiscoveryHealthy is False while a discovery source fails.
	DiscoveryHealthy = "GPUNodeDiscoveryHealthy"
	// GPUHealthy is filled in by the GPU telemetry feature.
	GPUHealthy = "GPUHealthy"
	// RDMAReady is filled in by the RDMA probe feature.
	RDMAReady = "RDMAReady"
	// RDMAHealthy is the RDMA ports' verdict (rdmahealth), from the sampler.
	RDMAHealthy = "RDMAHealthy"
	// Verified is node verification's verdict (verify).
	Verified = "GPUNodeVerified"
)

// OwnedConditionTypes lists the condition types above.
var OwnedConditionTypes = []string{DiscoveryHealthy, GPUHealthy, RDMAReady, RDMAHealthy, Verified}

// ChangeEvent is the event recorded when a condition changes: Normal when
// it is True (every condition the agent owns is good when True), Warning
// otherwise.
func ChangeEvent(c Condition) Event {
	t := Normal
	if c.Status != True {
		t = Warning
	}
	msg := c.Type + " is " + string(c.Status)
	if c.Message != "" {
		msg += ": " + c.Message
	}
	return Event{Type: t, Reason: c.Reason, Message: msg}
}
