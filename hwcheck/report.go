// Package hwcheck compares what gpunode-agent reports about the machine it
// runs on with what the vendors' own tools report (nvidia-smi, amd-smi,
// ibv_devinfo, rdma, perftest): the comparison logic of the hardware
// conformance harness (cmd/gpunode-hwcheck, `make hwcheck`). It parses the
// tools' outputs and the agent's (inspect -o json, /metrics) with pure
// functions and returns rows; running the tools is the command's job.
package hwcheck

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Verdict of one row.
type Verdict string

const (
	// Agree: the agent and the vendor tool say the same (within the row's
	// tolerance).
	Agree Verdict = "yes"
	// Differ: they disagree; the harness exits 1.
	Differ Verdict = "NO"
	// NotPresent: the tool or the hardware is not on this machine, or the
	// tool cannot report the fact here (N/A); not a failure.
	NotPresent Verdict = "not present"
	// Recorded: a measurement with nothing to compare it to (the agent's
	// cost, an NVML call's availability); not a failure.
	Recorded Verdict = "recorded"
)

// Row is one fact or reading of one device.
type Row struct {
	Section string  `json:"section"` // "nvidia", "nvidia-load", "cost", "nvml-calls", "amd", "rdma", "rdma-probe"
	Device  string  `json:"device,omitempty"`
	Fact    string  `json:"fact"`
	Agent   string  `json:"gpunode"`
	Vendor  string  `json:"vendor_tool"`
	Verdict Verdict `json:"agree"`
	// Tolerance says how far apart the two may be and why; empty for
	// exact comparisons.
	Tolerance string `json:"tolerance,omitempty"`
	Note      string `json:"note,omitempty"`
}

// Report is one run of the harness.
type Report struct {
	Host string `json:"host,omitempty"`
	// Tools names the vendor tools and versions that answered.
	Tools []string `json:"tools,omitempty"`
	Rows  []Row    `json:"rows"`
}

// Failed reports whether some row disagrees.
func (r *Report) Failed() bool {
	for _, row := range r.Rows {
		if row.Verdict == Differ {
			return true
		}
	}
	return false
}

// Counts returns how many rows have each verdict.
func (r *Report) Counts() map[Verdict]int {
	c := map[Verdict]int{}
	for _, row := range r.Rows {
		c[row.Verdict]++
	}
	return c
}

// JSON writes the report as indented JSON.
func (r *Report) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Table writes the report for people: one line per row, then a summary.
func (r *Report) Table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SECTION\tDEVICE\tFACT\tGPUNODE\tVENDOR TOOL\tAGREE?\tNOTE")
	for _, row := range r.Rows {
		note := row.Note
		if row.Tolerance != "" {
			note = strings.TrimSpace("±" + row.Tolerance + "; " + note)
			note = strings.TrimSuffix(note, ";")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", row.Section, dash(row.Device), row.Fact,
			dash(oneLine(row.Agent)), dash(oneLine(row.Vendor)), row.Verdict, oneLine(note))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	c := r.Counts()
	verdict := "PASS"
	if r.Failed() {
		verdict = "FAIL"
	}
	_, err := fmt.Fprintf(w, "%s: %d agree, %d differ, %d not present, %d recorded\n",
		verdict, c[Agree], c[Differ], c[NotPresent], c[Recorded])
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// exact compares two strings as they are.
func exact(section, device, fact, agent, vendor string) Row {
	v := Agree
	if agent != vendor {
		v = Differ
	}
	return Row{Section: section, Device: device, Fact: fact, Agent: agent, Vendor: vendor, Verdict: v}
}

// absentRow is a fact the vendor tool does not report on this machine.
func absentRow(section, device, fact, agent, why string) Row {
	return Row{Section: section, Device: device, Fact: fact, Agent: agent, Vendor: "N/A", Verdict: NotPresent, Note: why}
}
