package tuning

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// WritePlan prints a plan as a table: every setting with its current
// value, wanted value, action and why.
func WritePlan(w io.Writer, pl Plan) error {
	var b strings.Builder
	fmt.Fprintf(&b, "profile %s, kernel %s\n", pl.Profile, orDash(pl.Kernel))
	fmt.Fprintf(&b, "network namespace: %s", pl.NetNS.State)
	if pl.NetNS.Detail != "" {
		fmt.Fprintf(&b, " (%s)", pl.NetNS.Detail)
	}
	b.WriteString("\n")
	for _, ns := range []struct {
		name string
		n    *NetNS
	}{{"IPC", pl.IPCNS}, {"UTS", pl.UTSNS}} {
		if ns.n == nil {
			continue
		}
		fmt.Fprintf(&b, "%s namespace: %s", ns.name, ns.n.State)
		if ns.n.Detail != "" {
			fmt.Fprintf(&b, " (%s)", ns.n.Detail)
		}
		b.WriteString("\n")
	}
	if pl.IRQBalance != nil {
		fmt.Fprintf(&b, "irqbalance: %s: %s\n", pl.IRQBalance.State(), pl.IRQBalance)
	}
	for _, warn := range pl.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tKEY\tCURRENT\tWANT\tACTION\tNOTE")
	for _, s := range pl.Steps {
		action := string(s.Action)
		if s.Drift {
			action += " (drift)"
		}
		if s.Disruptive {
			action += " (disruptive)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Kind, s.Key, orDash(s.Current), orDash(s.Want), action, s.Note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&b, "\n%s\n", pl.Summary())
	_, err := io.WriteString(w, b.String())
	return err
}

// Summary is one line: "20 settings: 3 ok, 15 set, 2 unsupported".
func (pl Plan) Summary() string {
	c := pl.Counts()
	var parts []string
	for _, a := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, fmt.Sprintf("%d %s", c[a], a))
	}
	if len(parts) == 0 {
		return "nothing to manage"
	}
	s := fmt.Sprintf("%d settings: %s", len(pl.Steps), strings.Join(parts, ", "))
	if d := len(pl.Drifted()); d > 0 {
		s += fmt.Sprintf("; %d drifted", d)
	}
	return s
}

// WriteResult prints what Apply or Revert changed and what failed.
func WriteResult(w io.Writer, r Result) error {
	var b strings.Builder
	for _, warn := range r.Plan.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	if len(r.Changes) > 0 {
		fmt.Fprintln(tw, "KIND\tKEY\tFROM\tTO\tOUTCOME\tERROR")
		for _, c := range r.Changes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Kind, c.Key, orDash(c.Current), orDash(c.Want), c.Outcome, c.Error)
		}
	}
	// Steps that were not attempted but need attention.
	for _, s := range r.Plan.Steps {
		switch s.Action {
		case ActionConflict, ActionRefused, ActionError, ActionUnsupported:
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Kind, s.Key, orDash(s.Current), orDash(s.Want), s.Action, s.Note)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	counts := map[Outcome]int{}
	for _, c := range r.Changes {
		counts[c.Outcome]++
	}
	var parts []string
	for _, o := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[o], o))
	}
	if len(parts) == 0 {
		parts = append(parts, "nothing to change")
	}
	held := 0
	if r.Journal != nil {
		held = len(r.Journal.Entries)
	}
	fmt.Fprintf(&b, "%s; the journal holds %d original values\n", strings.Join(parts, ", "), held)
	_, err := io.WriteString(w, b.String())
	return err
}

// FirstProblem returns the note of the first step that keeps the host from
// complying (refused, error, conflict), or "".
func (pl Plan) FirstProblem() string {
	for _, s := range pl.Steps {
		switch s.Action {
		case ActionRefused, ActionError, ActionConflict:
			return s.ID.String() + ": " + s.Note
		}
	}
	return ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
