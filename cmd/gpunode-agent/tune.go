package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/topology"
	"github.com/gpunode/gpunode/tuning"
)

// tuneFlags are the flags of `tune`.
type tuneFlags struct {
	profile  string
	stateDir string
	output   string
	show     string

	plan, apply, verify, revert, profiles *kingpin.CmdClause
}

func addTune(app *kingpin.Application, c *cli) *tuneFlags {
	f := &tuneFlags{}
	cmd := app.Command("tune", "Host tuning: plan, apply, verify or revert a profile (sysctls, NUMA balancing, transparent hugepages, NIC/GPU interrupt affinity, RoCE: rdma_cm's default RoCE mode, PFC, trust mode and ECN). Original values go to a journal in the state directory before the first change; revert restores them. Only the profile's settings are touched; /etc/sysctl.conf and /etc/sysctl.d are never edited.")
	c.flag(cmd, "profile", "Built-in profile ("+strings.Join(tuning.BuiltinNames(), ", ")+") or a profile file (a path, or a name ending in .yaml); several separated by commas are composed (llm-inference,roce-lossless: settings merge, disagreements are refused). Default: the configuration's tuning.profiles or tuning.profile ("+tuning.DefaultProfile+").").PlaceHolder("NAME|FILE").StringVar(&f.profile)
	c.flag(cmd, "state-dir", "Directory of the journal of original values (default: the configuration's tuning.stateDir, "+tuning.DefaultStateDir+"). With --simulate the journal of the simulated node goes to its subdirectory simulated/NAME, and the values it records are put into each new simulated tree, so apply, verify and revert work across commands.").PlaceHolder("DIR").StringVar(&f.stateDir)
	cmd.Flag("output", "Output format: text or json.").Short('o').Default("text").EnumVar(&f.output, "text", "json")
	f.plan = cmd.Command("plan", "Print every setting of the profile with its current value, wanted value and action. Changes nothing.")
	f.apply = cmd.Command("apply", "Change what differs from the profile (recording originals first) and restore what an earlier profile changed but this one does not manage. Exits 1 if a setting failed, conflicts or was refused.")
	f.verify = cmd.Command("verify", "Exit 0 when every managed setting has the profile's value, 1 when something differs or drifted (printed).")
	f.revert = cmd.Command("revert", "Restore every original value in the journal and clear it. Exits 1 if a value could not be restored (it stays in the journal).")
	f.profiles = cmd.Command("profiles", "List the built-in profiles, or print one (NAME, or --profile: a built-in or a file) as YAML to start a profile of your own; -o json prints the list or the profile as JSON.")
	f.profiles.Arg("name", "Built-in profile to print.").StringVar(&f.show)
	return f
}

// is reports whether cmd is one of the tune subcommands.
func (f *tuneFlags) is(cmd string) bool { return strings.HasPrefix(cmd, "tune ") }

// runTune runs a tune subcommand. Exit codes: 0 success, 1 something
// failed or differs (apply, verify, revert), 2 bad usage or profile.
func runTune(f *tuneFlags, cmd string, env *discovery.Env, cfg config.Config, c *cli, stdout, stderr io.Writer) int {
	if cmd == f.profiles.FullCommand() {
		return listProfiles(f, c, stdout, stderr)
	}
	var p tuning.Profile
	var err error
	if *c.set["profile"] {
		p, err = tuning.LoadProfile(f.profile)
	} else {
		p, err = cfg.Tuning.ResolveProfile()
	}
	if err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: %v\n", err)
		return exitUsage
	}
	stateDir := cfg.Tuning.StateDir
	if *c.set["state-dir"] {
		stateDir = f.stateDir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*cfg.Discovery.SourceTimeout+tuneTimeout)
	defer cancel()
	t, err := env.CommandTuner(ctx, stateDir)
	if err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: tune: %v\n", err)
		return exitFailure
	}

	var m tuning.Machine
	if cmd != f.revert.FullCommand() {
		tctx, tcancel := context.WithTimeout(ctx, cfg.Discovery.SourceTimeout)
		topo, err := topology.Discover(tctx, env.FS)
		tcancel()
		m = tuning.MachineFrom(topo, err)
	}
	switch cmd {
	case f.plan.FullCommand(), f.verify.FullCommand():
		pl, _, err := t.Plan(ctx, p, m)
		if err != nil {
			fmt.Fprintf(stderr, "gpunode-agent: tune: %v\n", err)
			return exitFailure
		}
		if err := writeOut(stdout, f.output, pl, func(w io.Writer) error { return tuning.WritePlan(w, pl) }); err != nil {
			fmt.Fprintf(stderr, "gpunode-agent: %v\n", err)
			return exitFailure
		}
		if cmd == f.verify.FullCommand() {
			if !pl.Compliant() {
				fmt.Fprintf(stderr, "gpunode-agent: tune verify: the host does not match profile %s (%s)\n", p.Name, tuning.Summarize(pl, 0))
				return exitFailure
			}
			fmt.Fprintf(stderr, "gpunode-agent: tune verify: the host matches profile %s\n", p.Name)
		}
		return 0
	case f.apply.FullCommand(), f.revert.FullCommand():
		var res tuning.Result
		if cmd == f.apply.FullCommand() {
			res, err = t.Apply(ctx, p, m)
		} else {
			res, err = t.Revert(ctx)
		}
		if err != nil {
			fmt.Fprintf(stderr, "gpunode-agent: tune: %v\n", err)
			return exitFailure
		}
		if err := writeOut(stdout, f.output, res, func(w io.Writer) error { return tuning.WriteResult(w, res) }); err != nil {
			fmt.Fprintf(stderr, "gpunode-agent: %v\n", err)
			return exitFailure
		}
		if !res.OK() {
			fmt.Fprintf(stderr, "gpunode-agent: %s: %s\n", cmd, problems(res))
			return exitFailure
		}
		return 0
	}
	fmt.Fprintf(stderr, "gpunode-agent: unknown command %q\n", cmd)
	return exitUsage
}

// problems sums up why an apply or revert did not succeed entirely.
func problems(r tuning.Result) string {
	counts := map[string]int{}
	counts["failed"] = len(r.Failed())
	for _, s := range r.Plan.Steps {
		switch s.Action {
		case tuning.ActionConflict:
			counts["conflict with irqbalance"]++
		case tuning.ActionRefused:
			counts["refused (net.* or a netdev's DCB/ECN outside, or not provably in, the host's network namespace)"]++
		case tuning.ActionError:
			counts["could not be read"]++
		}
	}
	var parts []string
	for _, k := range []string{"failed", "conflict with irqbalance", "refused (net.* or a netdev's DCB/ECN outside, or not provably in, the host's network namespace)", "could not be read"} {
		if counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
		}
	}
	return "settings not as the profile wants: " + strings.Join(parts, ", ")
}

// tuneTimeout bounds a tune command beyond discovery: the journal lock
// wait and the writes.
const tuneTimeout = 60 * time.Second

func writeOut(w io.Writer, format string, v any, text func(io.Writer) error) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return text(w)
}

// listProfiles lists the built-in profiles, or prints one (NAME or
// --profile: a built-in or a file), as text (a table, or the profile's
// YAML) or JSON. --state-dir has no meaning here and is refused.
func listProfiles(f *tuneFlags, c *cli, stdout, stderr io.Writer) int {
	if *c.set["state-dir"] {
		fmt.Fprintln(stderr, "gpunode-agent: tune profiles: --state-dir has no meaning here (profiles read no journal)")
		return exitUsage
	}
	name := f.show
	if *c.set["profile"] {
		if name != "" && name != f.profile {
			fmt.Fprintf(stderr, "gpunode-agent: tune profiles: name the profile once (%q or --profile %q)\n", name, f.profile)
			return exitUsage
		}
		name = f.profile
	}
	if name == "" {
		return listBuiltins(f.output, stdout, stderr)
	}
	p, err := tuning.LoadProfile(name)
	if err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: %v\n", err)
		return exitUsage
	}
	err = writeOut(stdout, f.output, p, func(w io.Writer) error {
		var src []byte
		var err error
		if slices.Contains(tuning.BuiltinNames(), name) {
			src, err = tuning.BuiltinSource(name)
		} else {
			src, err = os.ReadFile(name)
		}
		if err == nil {
			_, err = w.Write(src)
		}
		return err
	})
	if err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: %v\n", err)
		return exitFailure
	}
	return 0
}

// profileInfo is one built-in profile in `tune profiles -o json`.
type profileInfo struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

func listBuiltins(output string, stdout, stderr io.Writer) int {
	var list []profileInfo
	for _, n := range tuning.BuiltinNames() {
		p, err := tuning.Builtin(n)
		if err != nil {
			fmt.Fprintf(stderr, "gpunode-agent: %v\n", err)
			return exitFailure
		}
		list = append(list, profileInfo{Name: n, Description: p.Description})
	}
	err := writeOut(stdout, output, list, func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tDESCRIPTION")
		for _, p := range list {
			fmt.Fprintf(tw, "%s\t%s\n", p.Name, p.Description)
		}
		return tw.Flush()
	})
	if err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: %v\n", err)
		return exitFailure
	}
	return 0
}
