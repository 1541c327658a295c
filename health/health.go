// Package health decides whether each GPU is healthy from its latest
// sample and its history (XIDs seen, NVLinks that were up), and derives the
// node's GPUHealthy condition and the opt-in taint from that. Everything
// here is a pure function: the sampler keeps the history and calls it.
package health

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/nodestatus"
)

// DefaultCriticalXIDs are the XIDs that mean the GPU itself needs
// attention (a reset, a drain or service), as opposed to an application
// fault (13, 31, 43, 45, 68 and the like, which the default leaves out):
//
//	48  double-bit ECC error             61, 62  internal micro-controller halt
//	63, 64  ECC page retirement / row remapping event or failure
//	74  NVLink error                     79  GPU has fallen off the bus
//	92  high single-bit ECC error rate   94, 95  contained / uncontained ECC error
//	119, 120  GSP RPC timeout / GSP error 140  unrecovered ECC error
var DefaultCriticalXIDs = []uint64{48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140}

// Reasons a GPU is unhealthy, as CamelCase condition reasons, from the
// most to the least severe; the condition takes the first that applies.
const (
	ReasonGPULost     = "GPULost"
	ReasonXIDCritical = "XIDCritical"
	// ReasonPCIeError: an uncorrectable (fatal or non-fatal) PCIe AER
	// error on the GPU, from the kernel log or its aer_dev_* counters.
	ReasonPCIeError        = "PCIeError"
	ReasonRowRemapFailed   = "RowRemapFailed"
	ReasonUncorrectableECC = "UncorrectableECC"
	ReasonRowRemapPending  = "RowRemapPending"
	ReasonNVLinkDown       = "NVLinkDown"
	// Not problems, but condition reasons.
	ReasonHealthy       = "AllGPUsHealthy"
	ReasonNotResponding = "GPUNotResponding"
	ReasonNoSamples     = "NoGPUSamples"
)

var severity = []string{ReasonGPULost, ReasonXIDCritical, ReasonPCIeError, ReasonRowRemapFailed, ReasonUncorrectableECC,
	ReasonRowRemapPending, ReasonNVLinkDown}

// XIDSeen is a critical XID a GPU raised since the agent started.
type XIDSeen struct {
	XID   uint64
	Count uint64
	Last  time.Time
}

// Input is one GPU's sample and history.
type Input struct {
	Sample gpu.Sample
	// LinksEverUp are the interconnect links seen up since the agent
	// started: one of them down now is a link that failed.
	LinksEverUp []int
	// CriticalXIDs seen since the agent started, sorted by XID. Critical
	// XIDs are sticky: the GPU stays unhealthy until the agent restarts
	// (after the GPU was reset or the node drained and rebooted).
	CriticalXIDs []XIDSeen
	// Reported are problems found outside the GPU library since the agent
	// started: the kernel log said the GPU fell off the bus (ReasonGPULost),
	// PCIe AER reported an uncorrectable error on it (ReasonPCIeError).
	// Sticky, as critical XIDs are.
	Reported []Problem
}

// Problem is one reason a GPU is unhealthy.
type Problem struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// GPU is one GPU's verdict. Known is false when the GPU did not answer
// (and is not lost): nothing can be said about it this round.
type GPU struct {
	Index    int       `json:"index"`
	UUID     string    `json:"uuid"`
	Known    bool      `json:"known"`
	Healthy  bool      `json:"healthy"`
	Problems []Problem `json:"problems,omitempty"`
	// Throttles are the degrading clock reasons the GPU reports (degraded.go).
	Throttles []Throttle `json:"throttles,omitempty"`
}

// Evaluate judges every GPU. The result is in input order.
func Evaluate(in []Input) []GPU {
	out := make([]GPU, 0, len(in))
	for _, g := range in {
		out = append(out, evaluate(g))
	}
	return out
}

func evaluate(in Input) GPU {
	s := in.Sample
	g := GPU{Index: s.Index, UUID: s.UUID, Known: s.Up || s.Lost}
	add := func(reason, format string, args ...any) {
		g.Problems = append(g.Problems, Problem{Reason: reason, Message: fmt.Sprintf(format, args...)})
	}
	if s.Lost {
		add(ReasonGPULost, "fell off the bus (NVML: GPU is lost)")
	}
	for _, x := range in.CriticalXIDs {
		times := ""
		if x.Count > 1 {
			times = fmt.Sprintf(" %d times, last", x.Count)
		}
		add(ReasonXIDCritical, "XID %d%s at %s", x.XID, times, x.Last.UTC().Format(time.RFC3339))
	}
	g.Problems = append(g.Problems, in.Reported...)
	if s.Up {
		if r := s.RemappedRows; r != nil && r.Failed {
			add(ReasonRowRemapFailed, "a row remapping failed: the GPU needs service")
		}
		for _, e := range s.ECC {
			// Current, not the monotonic Count: the driver restarts its
			// volatile count when it reloads, and so does the verdict.
			if e.Type == gpu.ECCUncorrected && e.Scope == gpu.ECCVolatile && e.Current > 0 {
				add(ReasonUncorrectableECC, "%d uncorrectable ECC errors since the driver loaded", e.Current)
			}
		}
		if r := s.RemappedRows; r != nil && r.Pending {
			add(ReasonRowRemapPending, "a row remapping is pending: the GPU needs a reset")
		}
		if ic := s.Interconnect; ic != nil {
			var down []string
			for _, l := range ic.Links {
				if !l.Up && slices.Contains(in.LinksEverUp, l.Number) {
					down = append(down, fmt.Sprint(l.Number))
				}
			}
			if len(down) > 0 {
				add(ReasonNVLinkDown, "%s link(s) %s down after being up", ic.Kind, strings.Join(down, ","))
			}
		}
	}
	slices.SortStableFunc(g.Problems, func(a, b Problem) int {
		return slices.Index(severity, a.Reason) - slices.Index(severity, b.Reason)
	})
	g.Healthy = g.Known && len(g.Problems) == 0
	if len(g.Problems) > 0 {
		g.Known = true // a lost GPU or a sticky XID is known bad even when silent
	}
	return g
}

// Condition is the node's GPUHealthy condition: False when a GPU is
// unhealthy (reason of the most severe problem, message naming every
// unhealthy GPU), Unknown when none is unhealthy but some did not answer
// or there are no samples, True otherwise. ok is false on a node without
// GPUs, which has no such condition.
func Condition(gpus []GPU, sampled bool) (c nodestatus.Condition, ok bool) {
	c.Type = nodestatus.GPUHealthy
	if !sampled {
		c.Status, c.Reason, c.Message = nodestatus.Unknown, ReasonNoSamples, "GPUs have not been sampled yet"
		return c, true
	}
	if len(gpus) == 0 {
		return nodestatus.Condition{}, false
	}
	var bad, silent []string
	reason := ""
	for _, g := range gpus {
		switch {
		case len(g.Problems) > 0:
			var ps []string
			for _, p := range g.Problems {
				ps = append(ps, p.Message)
			}
			bad = append(bad, fmt.Sprintf("GPU %d (%s): %s", g.Index, g.UUID, strings.Join(ps, "; ")))
			if r := g.Problems[0].Reason; reason == "" || slices.Index(severity, r) < slices.Index(severity, reason) {
				reason = r
			}
		case !g.Known:
			silent = append(silent, fmt.Sprint(g.Index))
		}
	}
	switch {
	case len(bad) > 0:
		c.Status, c.Reason = nodestatus.False, reason
		c.Message = fmt.Sprintf("%d of %d GPUs unhealthy: %s", len(bad), len(gpus), strings.Join(bad, ". "))
	case len(silent) > 0:
		c.Status, c.Reason = nodestatus.Unknown, ReasonNotResponding
		c.Message = fmt.Sprintf("GPU(s) %s did not answer the last sampling round", strings.Join(silent, ","))
	default:
		c.Status, c.Reason = nodestatus.True, ReasonHealthy
		c.Message = fmt.Sprintf("%d GPUs healthy", len(gpus))
	}
	return c, true
}

// TaintOptions configure the opt-in taint.
type TaintOptions struct {
	Enabled bool
	// Key of the taint, e.g. "gpunode.dev/gpu-unhealthy".
	Key string
	// Effect is NoSchedule (the default: running pods stay) or NoExecute.
	Effect string
}

// Taint is a Node taint, as Kubernetes spells its fields; the publisher
// takes it as it is.
type Taint = nodestatus.Taint

// TaintFor decides the taint for a condition: when enabled and the
// condition is False, a taint whose value is the reason; otherwise none
// (nil means the agent's taint must be absent). Unknown never taints: a
// GPU that merely did not answer one round does not empty a node.
func TaintFor(c nodestatus.Condition, o TaintOptions) *Taint {
	if !o.Enabled || c.Type != nodestatus.GPUHealthy || c.Status != nodestatus.False {
		return nil
	}
	effect := o.Effect
	if effect == "" {
		effect = "NoSchedule"
	}
	return &Taint{Key: o.Key, Value: c.Reason, Effect: effect}
}
