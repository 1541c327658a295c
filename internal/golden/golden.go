// Package golden compares test output with files under testdata, or
// rewrites them when the package's tests run with -update. Only tests
// import it.
package golden

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Check compares got with testdata/file, or writes it there when update
// is set. rerun is the command that regenerates the file ("go test
// ./tuning -update"), named in the failure.
func Check(t testing.TB, file string, got []byte, update bool, rerun string) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run %s to create it)", err, rerun)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file; if the change is intended, run %s and review the diff.\n--- got:\n%s", path, rerun, got)
	}
}
