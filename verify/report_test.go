package verify_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/verify"
)

// A multi-line observed value (a joined error) stays in its cell: every
// line of the table starts with a check name.
func TestTextFoldsMultiLineValues(t *testing.T) {
	r := verify.Report{Counts: verify.Counts{Fail: 1}, Results: []verify.Result{
		{Check: "discovery", Subject: "node", Status: verify.Fail, Severity: verify.Critical,
			Observed: "rdma error: read a: timeout\nread b:\ttimeout\n", Expected: "every source ok or absent", Remedy: "fix it\nthen re-run"},
	}}
	var b bytes.Buffer
	if err := verify.Text(&b, r, verify.TextOptions{}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "rdma error: read a: timeout; read b: timeout  every source ok or absent") || !strings.Contains(out, "(node): fix it; then re-run") {
		t.Errorf("multi-line values not folded:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "read b") || strings.HasPrefix(l, "then") {
			t.Errorf("a value spilled onto its own line %q:\n%s", l, out)
		}
	}
}

// By default Text lists failures and warnings only, counts the rest, and
// gives each distinct cause one remedy naming its subjects; All lists
// every row.
func TestTextFindingsAndRemedies(t *testing.T) {
	port := func(subject string, st verify.Status, remedy string) verify.Result {
		return verify.Result{Check: "roce-congestion", Subject: subject, Status: st, Observed: "PFC none, ECN none", Expected: "PFC or ECN", Remedy: remedy}
	}
	r := verify.Report{Counts: verify.Counts{Fail: 3, Pass: 1, Skip: 1}, Results: []verify.Result{
		{Check: "discovery", Subject: "node", Status: verify.Pass, Observed: "all ok"},
		port("mlx5_0/1", verify.Fail, "enable PFC or ECN"),
		port("mlx5_1/1", verify.Fail, "enable PFC or ECN"),
		port("mlx5_2/1", verify.Fail, "enable PFC or ECN on the switch too"),
		{Check: "roce-mode", Subject: "mlx5_0/1", Status: verify.Skip, Observed: "unknown"},
	}}
	var b bytes.Buffer
	if err := verify.Text(&b, r, verify.TextOptions{}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"1 passed and 1 skipped not listed (-v lists every check).",
		"  fail roce-congestion (mlx5_0/1, mlx5_1/1): enable PFC or ECN\n",
		"  fail roce-congestion (mlx5_2/1): enable PFC or ECN on the switch too\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "discovery") || strings.Contains(out, "roce-mode") || strings.Count(out, "enable PFC or ECN\n") != 1 {
		t.Errorf("passed or skipped rows listed, or a remedy repeated:\n%s", out)
	}
	b.Reset()
	if err := verify.Text(&b, r, verify.TextOptions{All: true}); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "discovery") || !strings.Contains(out, "roce-mode") || strings.Contains(out, "not listed") {
		t.Errorf("All does not list every row:\n%s", out)
	}
	b.Reset()
	r.Counts, r.Results = verify.Counts{Pass: 1, Skip: 1}, []verify.Result{r.Results[0], r.Results[4]}
	r.Verified = true
	if err := verify.Text(&b, r, verify.TextOptions{}); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "No failures or warnings; 1 passed and 1 skipped not listed") || strings.Contains(out, "CHECK") {
		t.Errorf("clean report:\n%s", out)
	}
}
