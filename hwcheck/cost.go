package hwcheck

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

const secCost = "cost"

// userHZ is the unit of /proc/<pid>/stat's CPU times: USER_HZ, 100 on
// every Linux architecture the agent builds for.
const userHZ = 100

// ProcCPU returns the CPU time (user + system) in /proc/<pid>/stat.
func ProcCPU(stat []byte) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields from the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/pid/stat: no ')'")
	}
	f := strings.Fields(string(stat[i+1:]))
	// After ')': state(3) ... utime(14) stime(15): indices 11 and 12.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/pid/stat: %d fields after the command", len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/pid/stat: %w", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// ProcMemory returns VmRSS and RssAnon of /proc/<pid>/status in bytes.
func ProcMemory(status []byte) (rss, anon uint64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	found := 0
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "RssAnon") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("parse /proc/pid/status %s: %q", k, v)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse /proc/pid/status %s: %w", k, err)
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			anon = n << 10
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("parse /proc/pid/status: VmRSS or RssAnon missing")
	}
	return rss, anon, nil
}

// Cost is what the agent used while the harness watched it.
type Cost struct {
	CPU      time.Duration // user + system over the window
	Window   time.Duration
	Interval time.Duration // the agent's metrics.sample-interval
	GPUs     int
	Scrapes  int // the harness's own scrapes in the window, which the CPU includes
	RSS      uint64
	RssAnon  uint64
}

// Budgets the cost rows are noted against. A row over budget says so in
// its note but does not fail the run: the harness fails on disagreements
// with the vendor tools, and the agent's cost has none to disagree with.
const (
	BudgetCPUPerRoundPerGPU = 10 * time.Millisecond
	BudgetRssAnon           = 64 << 20
)

// CostRows reports the agent's CPU per sampling round per GPU and its
// memory. The rounds are the window over the sampling interval; the CPU
// includes serving the harness's scrapes and any discovery in the window,
// so it is an upper bound.
func CostRows(c Cost) []Row {
	rounds := int(c.Window / c.Interval)
	row := Row{Section: secCost, Fact: "CPU per sampling round per GPU", Vendor: "-",
		Note: fmt.Sprintf("%v CPU over %v, %d rounds of %d GPUs, including %d scrapes; budget %v",
			c.CPU.Round(time.Millisecond), c.Window.Round(time.Second), rounds, c.GPUs, c.Scrapes, BudgetCPUPerRoundPerGPU)}
	switch {
	case rounds == 0 || c.GPUs == 0:
		row.Agent, row.Verdict = "-", NotPresent
		row.Note = "no GPU or no full sampling round in the window"
	default:
		per := c.CPU / time.Duration(rounds*c.GPUs)
		row.Agent, row.Verdict = fmt.Sprintf("%.2f ms", float64(per)/float64(time.Millisecond)), Recorded
		if per > BudgetCPUPerRoundPerGPU {
			row.Note = "OVER BUDGET: " + row.Note
		}
	}
	anon := Row{Section: secCost, Fact: "RssAnon (heap and stacks)", Agent: mib(c.RssAnon), Vendor: "-", Verdict: Recorded,
		Note: "budget " + mib(BudgetRssAnon)}
	if c.RssAnon > BudgetRssAnon {
		anon.Note = "OVER BUDGET: " + anon.Note
	}
	return []Row{row, anon,
		{Section: secCost, Fact: "RSS", Agent: mib(c.RSS), Vendor: "-", Verdict: Recorded,
			Note: "most of it is the binary's shared page cache (README, Metrics)"},
	}
}

func mib(b uint64) string {
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
