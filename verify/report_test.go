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
	if err := verify.Text(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "rdma error: read a: timeout; read b: timeout  every source ok or absent") || !strings.Contains(out, "fix it; then re-run") {
		t.Errorf("multi-line values not folded:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "read b") || strings.HasPrefix(l, "then") {
			t.Errorf("a value spilled onto its own line %q:\n%s", l, out)
		}
	}
}
