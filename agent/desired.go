package agent

import (
	"slices"
	"sync"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/health"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/publish"
	"github.com/gpunode/gpunode/rdmahealth"
)

// desiredNode is what the publisher gets, merged from producers in two
// goroutines: discovery in the main loop (labels and the discovery
// condition) and the sampler in its own (the GPUHealthy condition and
// the opt-in taint it implies; the RDMAHealthy condition and its own
// opt-in taint). Every change hands the publisher the
// latest of both under one lock, so whatever the interleaving, the last
// Set carries the newest of each, and a GPU health change is published at
// once rather than at the next discovery.
//
// Nothing is published before both have spoken once: discovery's first
// result and the sampler's first round. Labels published earlier would
// drop the GPUHealthy condition and the taint the agent owns on the Node
// from its previous run, only to add them back a moment later.
type desiredNode struct {
	mu      sync.Mutex
	pub     desiredSetter    // nil: standalone, nothing is published
	base    *publish.Desired // discovery's latest; nil before the first
	sampled bool             // the sampler's first round is done
	gpu     *nodestatus.Condition
	taint   config.Taint
	// rdma is the RDMAHealthy condition (nil on a node without RDMA) and
	// rdmaTaint the configuration of the taint it implies.
	rdma      *nodestatus.Condition
	rdmaTaint config.Taint
	// taintKeys are every taint key configured since the start: the
	// agent's taint goes when disabled or healthy, and a key changed on
	// reload does not leave the old one behind.
	taintKeys []string
}

// desiredSetter is the publisher's Set.
type desiredSetter interface{ Set(publish.Desired) }

func newDesiredNode(pub *publish.Publisher, taint, rdmaTaint config.Taint) *desiredNode {
	n := &desiredNode{taint: taint, rdmaTaint: rdmaTaint, taintKeys: []string{taint.Key, rdmaTaint.Key}}
	if pub != nil { // a nil *Publisher in the interface would not be nil
		n.pub = pub
	}
	return n
}

// discovered takes discovery's labels and conditions.
func (n *desiredNode) discovered(d publish.Desired) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.base = &d
	n.publishLocked()
}

// gpuCondition takes the sampler's GPUHealthy condition and returns the
// taint configuration in force.
func (n *desiredNode) gpuCondition(c nodestatus.Condition) config.Taint {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gpu = &c
	n.publishLocked()
	return n.taint
}

// rdmaCondition takes the sampler's RDMAHealthy condition and returns the
// RDMA taint configuration in force.
func (n *desiredNode) rdmaCondition(c nodestatus.Condition) config.Taint {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.rdma = &c
	n.publishLocked()
	return n.rdmaTaint
}

// setRDMATaint changes the RDMA taint configuration (on reload) and
// reports whether it changed.
func (n *desiredNode) setRDMATaint(t config.Taint) bool { return n.replaceTaint(&n.rdmaTaint, t) }

// firstRoundDone records that the sampler has handed over its first
// verdict (or that the node has no GPUs, when none came).
func (n *desiredNode) firstRoundDone() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sampled = true
	n.publishLocked()
}

// setTaint changes the taint configuration (on reload) and reports
// whether it changed.
func (n *desiredNode) setTaint(t config.Taint) bool { return n.replaceTaint(&n.taint, t) }

// replaceTaint sets *dst (one of n's taint configurations) to t and
// publishes; the new key joins the managed ones, so the taint of a key
// moved away from is still removed. It reports whether anything changed.
func (n *desiredNode) replaceTaint(dst *config.Taint, t config.Taint) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if *dst == t {
		return false
	}
	*dst = t
	if !slices.Contains(n.taintKeys, t.Key) {
		n.taintKeys = append(n.taintKeys, t.Key)
	}
	n.publishLocked()
	return true
}

// manageTaintKey makes the agent manage a taint key it never sets (the
// tuning readiness taint): the publisher removes that taint from the Node.
func (n *desiredNode) manageTaintKey(key string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if slices.Contains(n.taintKeys, key) {
		return
	}
	n.taintKeys = append(n.taintKeys, key)
	n.publishLocked()
}

// taintFor is the taint a condition implies under the configuration.
func taintFor(c nodestatus.Condition, t config.Taint) *nodestatus.Taint {
	if c.Type == nodestatus.RDMAHealthy {
		return rdmahealth.TaintFor(c, t.Enabled, t.Key, t.Effect)
	}
	return health.TaintFor(c, health.TaintOptions{Enabled: t.Enabled, Key: t.Key, Effect: t.Effect})
}

func (n *desiredNode) publishLocked() {
	if n.pub == nil || n.base == nil || !n.sampled {
		return
	}
	d := *n.base
	d.TaintKeys = append(slices.Clone(d.TaintKeys), n.taintKeys...)
	if n.gpu != nil {
		d.Conditions = append(slices.Clone(d.Conditions), *n.gpu)
		if t := taintFor(*n.gpu, n.taint); t != nil {
			d.Taints = append(slices.Clone(d.Taints), *t)
		}
	}
	if n.rdma != nil {
		d.Conditions = append(slices.Clone(d.Conditions), *n.rdma)
		if t := taintFor(*n.rdma, n.rdmaTaint); t != nil {
			d.Taints = append(slices.Clone(d.Taints), *t)
		}
	}
	n.pub.Set(d)
}
