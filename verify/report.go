package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Text writes the report for people: a verdict line, one row per result,
// then the remedy of every warning and failure.
func Text(w io.Writer, r Report) error {
	var b strings.Builder
	verdict := "VERIFIED"
	if !r.Verified {
		verdict = "NOT VERIFIED"
	}
	fmt.Fprintf(&b, "Node verification: %s (%d failed, %d warnings, %d passed, %d skipped)\n", verdict, r.Counts.Fail, r.Counts.Warn, r.Counts.Pass, r.Counts.Skip)
	if r.Simulated != "" {
		fmt.Fprintf(&b, "SIMULATED node %s: built-in fixture, not this machine\n", r.Simulated)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSUBJECT\tSTATUS\tOBSERVED\tEXPECTED")
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", res.Check, oneLine(res.Subject), res.Status, oneLine(res.Observed), oneLine(dash(res.Expected)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	first := true
	for _, res := range r.Results {
		if res.Remedy == "" {
			continue
		}
		if first {
			b.WriteString("\nRemedies:\n")
			first = false
		}
		fmt.Fprintf(&b, "  %s %s %s: %s\n", res.Status, res.Check, oneLine(res.Subject), oneLine(res.Remedy))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// oneLine folds a value onto one line for a table cell: line breaks
// (errors.Join separates its errors with them) become "; " and tabs a
// space, so a multi-line error stays in its cell.
func oneLine(s string) string { return oneLineReplacer.Replace(strings.TrimRight(s, "\r\n")) }

var oneLineReplacer = strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", "; ", "\t", " ")

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// JSON writes the report as indented JSON.
func JSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Markers around the generated checks table in README.md.
const (
	TableBegin = "<!-- BEGIN checks table: generated from verify (go test ./verify -update); do not edit -->"
	TableEnd   = "<!-- END checks table -->"
)

// Table renders every check as a Markdown table for the README.
func Table() string {
	var b strings.Builder
	b.WriteString("| check | severity | subject | checks that | remedy |\n|---|---|---|---|---|\n")
	for _, c := range Checks() {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", c.Name, c.Severity, subjectOf[c.Name], c.Summary, c.Remedy)
	}
	return b.String()
}

// subjectOf says what each check's results are about, for the table.
var subjectOf = map[string]string{
	"discovery": "node", "gpu-count": "node", "gpu-pcie-link": "GPU", "nvlink": "GPU", "nvswitch-fabric": "GPU",
	"gpu-ecc": "GPU", "gpu-row-remap": "GPU", "gpu-nic-affinity": "GPU", "rdma-modules": "node",
	"ib-port-sm": "port", "roce-mode": "port", "roce-congestion": "port", "rdma-mtu": "port",
	"rdma-port-rate": "port", "gpudirect-rdma": "node",
}
