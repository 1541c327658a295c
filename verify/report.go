package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// TextOptions select what Text prints.
type TextOptions struct {
	// All lists every result; by default only failures and warnings are
	// listed, and a line counts the rest.
	All bool
}

// Text writes the report for people: a verdict line, one row per failure
// and warning (per result with All), a line counting the rows left out,
// then one remedy per distinct cause (check, status and remedy) with the
// subjects it applies to.
func Text(w io.Writer, r Report, o TextOptions) error {
	var b strings.Builder
	verdict := "VERIFIED"
	if !r.Verified {
		verdict = "NOT VERIFIED"
	}
	fmt.Fprintf(&b, "Node verification: %s (%d failed, %d warnings, %d passed, %d skipped)\n", verdict, r.Counts.Fail, r.Counts.Warn, r.Counts.Pass, r.Counts.Skip)
	if r.Simulated != "" {
		fmt.Fprintf(&b, "SIMULATED node %s: built-in fixture, not this machine\n", r.Simulated)
	}
	var rows []Result
	for _, res := range r.Results {
		if o.All || res.Status == Fail || res.Status == Warn {
			rows = append(rows, res)
		}
	}
	if len(rows) > 0 {
		b.WriteString("\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CHECK\tSUBJECT\tSTATUS\tOBSERVED\tEXPECTED")
		for _, res := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", res.Check, oneLine(res.Subject), res.Status, oneLine(res.Observed), oneLine(dash(res.Expected)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if hidden := len(r.Results) - len(rows); hidden > 0 {
		what := fmt.Sprintf("%d passed and %d skipped", r.Counts.Pass, r.Counts.Skip)
		if len(rows) == 0 {
			fmt.Fprintf(&b, "\nNo failures or warnings; %s not listed (-v lists every check).\n", what)
		} else {
			fmt.Fprintf(&b, "\n%s not listed (-v lists every check).\n", what)
		}
	}
	if causes := remedies(r.Results); len(causes) > 0 {
		b.WriteString("\nRemedies:\n")
		for _, c := range causes {
			fmt.Fprintf(&b, "  %s %s (%s): %s\n", c.status, c.check, strings.Join(c.subjects, ", "), oneLine(c.remedy))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cause is one remedy and every subject it applies to.
type cause struct {
	check    string
	status   Status
	remedy   string
	subjects []string
}

// remedies groups the results with a remedy by check, status and remedy,
// in the order they first appear: eight ports failing one check for one
// reason get one remedy, not eight.
func remedies(results []Result) []cause {
	var out []cause
	index := map[[3]string]int{}
	for _, res := range results {
		if res.Remedy == "" {
			continue
		}
		k := [3]string{res.Check, string(res.Status), res.Remedy}
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, cause{check: res.Check, status: res.Status, remedy: res.Remedy})
		}
		out[i].subjects = append(out[i].subjects, oneLine(res.Subject))
	}
	return out
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
	"discovery": "node", "gpu-count": "node", "gpu-pcie-link": "GPU", "gpu-pcie-generation": "GPU", "nvlink": "GPU", "nvswitch-fabric": "GPU", "nvlink-clique": "node",
	"gpu-ecc": "GPU", "gpu-row-remap": "GPU", "gpu-nic-affinity": "GPU", "rdma-modules": "node",
	"ib-port-sm": "port", "roce-mode": "port", "roce-congestion": "port", "rdma-mtu": "port",
	"rdma-port-rate": "port", "gpudirect-rdma": "node", "gpudirect-rdma-works": "GPU",
	"iommu-passthrough": "node", "isolcpus-irqs": "node", "pcie-max-read-req": "RDMA NIC", "pcie-acs-redirect": "GPU, RDMA NIC",
	"hugepages-reserved": "huge page size",
}
