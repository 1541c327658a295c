// Package verify judges whether a node will perform: named checks over a
// snapshot catch the misconfigurations that silently cost inference
// throughput (a GPU trained at Gen4 x8, an NVLink down, an HCA on the
// wrong socket, RoCE without PFC or ECN, an InfiniBand port without a
// subnet manager, ...). Every check is a pure function of the snapshot and
// the options, listed in Checks; the report is what `gpunode-agent verify`
// prints and what the daemon turns into a metric, a label, a Node
// condition and events.
package verify

import (
	"cmp"
	"slices"

	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/snapshot"
)

// Status of one check on one subject.
type Status string

const (
	Pass Status = "pass"
	// Warn is a finding of a check whose severity is Warning.
	Warn Status = "warn"
	// Fail is a finding of a check whose severity is Critical: the node
	// is not verified.
	Fail Status = "fail"
	// Skip means the check does not apply (no such hardware) or the
	// facts it needs are unknown; Observed says which.
	Skip Status = "skip"
)

// Severity is what a finding of a check means. It belongs to the check,
// not to one result, so metric series keep their labels.
type Severity string

const (
	Critical Severity = "critical"
	Warning  Severity = "warning"
)

// Node is the subject of checks about the node as a whole.
const Node = "node"

// Options are the expectations that do not come from the snapshot.
type Options struct {
	// ExpectedGPUCount is the number of GPUs the node must have; 0 takes
	// it from the product (8 on HGX/DGX and OAM baseboards), and skips
	// the check for products without a standard count.
	ExpectedGPUCount int
	// GPUMemoryRegistrations are the attempts to register each GPU's
	// memory on its nearest NIC (probe.RegisterGPUs over GPUPairs); nil
	// when none were made, which gpudirect-rdma-works skips.
	GPUMemoryRegistrations []probe.GPURegistration
}

// Result is one check on one subject.
type Result struct {
	Check    string   `json:"check"`
	Subject  string   `json:"subject"`
	Status   Status   `json:"status"`
	Severity Severity `json:"severity"`
	Observed string   `json:"observed"`
	Expected string   `json:"expected,omitempty"`
	// Remedy is one line on what to do; set on warn and fail only.
	Remedy string `json:"remedy,omitempty"`
}

// Check is one named check.
type Check struct {
	Name     string
	Severity Severity
	// Summary says what the check checks, and Remedy what to do when it
	// finds something: the README's checks table.
	Summary, Remedy string
	run             func(s *snapshot.Snapshot, o Options) []finding
}

// finding is a check's verdict on one subject before the check's name,
// severity and remedy are attached.
type finding struct {
	subject  string
	ok       bool
	skip     bool
	observed string
	expected string
	// remedy overrides the check's remedy for this finding.
	remedy string
}

func pass(subject, observed, expected string) finding {
	return finding{subject: subject, ok: true, observed: observed, expected: expected}
}

func bad(subject, observed, expected string) finding {
	return finding{subject: subject, observed: observed, expected: expected}
}

func skip(subject, why string) finding { return finding{subject: subject, skip: true, observed: why} }

// Checks lists every check in report order. There is no other registry.
func Checks() []Check {
	return []Check{
		discoverySources(), gpuCount(), gpuPCIeLink(), gpuPCIeGeneration(), nvlinkActive(), nvswitchFabric(), nvlinkClique(), gpuECC(), gpuRowRemap(),
		gpuNICAffinity(), rdmaModules(), ibPortSM(), roceMode(), roceLossless(), rdmaMTU(),
		rdmaPortRate(), gpuDirectRDMA(), gpuDirectRDMAWorks(),
		iommuPassthrough(), isolcpusManagedIRQ(), pcieMaxReadRequest(), pcieACSRedirect(), hugepagesReserved(),
	}
}

// Report is the verdict on a node.
type Report struct {
	// Verified is true when no check failed (warnings do not count).
	Verified  bool     `json:"verified"`
	Simulated string   `json:"simulated,omitempty"`
	Counts    Counts   `json:"counts"`
	Results   []Result `json:"results"`
}

// Counts are the results by status.
type Counts struct {
	Pass int `json:"pass"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
	Skip int `json:"skip"`
}

// Run evaluates every check over s. Results are in check order, subjects
// within a check in the order the check produced them (GPU index, device
// and port name).
func Run(s *snapshot.Snapshot, o Options) Report {
	r := Report{Simulated: s.Simulated, Results: []Result{}}
	for _, c := range Checks() {
		r.Results = append(r.Results, c.Evaluate(s, o)...)
	}
	for _, res := range r.Results {
		switch res.Status {
		case Pass:
			r.Counts.Pass++
		case Warn:
			r.Counts.Warn++
		case Fail:
			r.Counts.Fail++
		case Skip:
			r.Counts.Skip++
		}
	}
	r.Verified = r.Counts.Fail == 0
	return r
}

// Evaluate runs one check.
func (c Check) Evaluate(s *snapshot.Snapshot, o Options) []Result {
	var out []Result
	for _, f := range c.run(s, o) {
		res := Result{Check: c.Name, Subject: f.subject, Severity: c.Severity, Observed: f.observed, Expected: f.expected}
		switch {
		case f.skip:
			res.Status = Skip
		case f.ok:
			res.Status = Pass
		default:
			res.Status = Fail
			if c.Severity == Warning {
				res.Status = Warn
			}
			res.Remedy = cmp.Or(f.remedy, c.Remedy)
		}
		out = append(out, res)
	}
	return out
}

// Failed lists the failed results (not warnings), in report order.
func (r Report) Failed() []Result {
	return slices.DeleteFunc(slices.Clone(r.Results), func(res Result) bool { return res.Status != Fail })
}
