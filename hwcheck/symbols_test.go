package hwcheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// nvmlSymbolsInAgent greps gpu/nvml's non-test sources for the NVML C
// symbols it names (it names each call's symbol for its has() check and
// its error messages).
func nvmlSymbolsInAgent(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("../gpu/nvml/*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`"(nvml[A-Z][A-Za-z0-9_]*)`)
	out := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = true
		}
	}
	if len(out) < 40 {
		t.Fatalf("found %d NVML symbols in gpu/nvml: the grep no longer matches how it names them", len(out))
	}
	return out
}
