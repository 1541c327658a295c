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
