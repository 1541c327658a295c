package labels

import (
	"fmt"
	"slices"
	"strings"
)

// Table renders every label as a Markdown table for the README, with
// the agent's own keys under domain. The README holds this output between
// TableBegin and TableEnd; a test fails when the two differ.
func Table(domain string) string {
	var b strings.Builder
	b.WriteString("| key | sets | value | example | held while failing |\n|---|---|---|---|---|\n")
	for _, d := range Defs {
		sets := make([]string, len(d.Sets))
		for i, s := range d.Sets {
			sets[i] = string(s)
		}
		srcs := make([]string, len(d.Sources))
		for i, s := range d.Sources {
			srcs[i] = string(s)
		}
		slices.Sort(srcs)
		key := "`" + d.FullKey(domain) + "`"
		if d.Shared() {
			key += " (shared)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | `%s` | %s |\n", key, strings.Join(sets, ", "), d.Value, d.Example, strings.Join(srcs, ", "))
	}
	return b.String()
}

// Markers around the generated table in README.md.
const (
	TableBegin = "<!-- BEGIN labels table: generated from labels (go test ./labels -update); do not edit -->"
	TableEnd   = "<!-- END labels table -->"
)

// ReplaceTable returns doc with the text between the markers replaced by
// table, or an error when the markers are missing or out of order.
func ReplaceTable(doc, table string) (string, error) {
	i := strings.Index(doc, TableBegin)
	j := strings.Index(doc, TableEnd)
	if i < 0 || j < i {
		return "", fmt.Errorf("README lacks the markers %q ... %q", TableBegin, TableEnd)
	}
	return doc[:i+len(TableBegin)] + "\n" + table + doc[j:], nil
}
