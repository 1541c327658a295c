package verify_test

import (
	"os"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/verify"
)

// README.md's checks table is generated from Checks; it must not drift.
func TestREADMETable(t *testing.T) {
	const path = "../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, verify.TableBegin), strings.Index(doc, verify.TableEnd)
	if i < 0 || j < i {
		t.Fatalf("README lacks the markers %q ... %q", verify.TableBegin, verify.TableEnd)
	}
	table := verify.Table()
	want := doc[:i+len(verify.TableBegin)] + "\n" + table + doc[j:]
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if want != doc {
		t.Error("README.md's checks table differs from the code; run go test ./verify -update and review the diff")
	}
	if strings.Contains(table, "|  |") || strings.Count(table, "\n") != len(verify.Checks())+2 {
		t.Errorf("a check lacks a column:\n%s", table)
	}
}
