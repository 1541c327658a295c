package config

import (
	"strings"
	"testing"
)

func TestVerifySection(t *testing.T) {
	c, err := Parse([]byte("verify:\n  expectedGPUCount: 4\n"))
	if err != nil || c.Verify.ExpectedGPUCount != 4 {
		t.Fatalf("Parse: %+v, %v", c.Verify, err)
	}
	if Default().Verify.ExpectedGPUCount != 0 {
		t.Error("the default count must come from the product (0)")
	}
	for _, tc := range []struct{ yaml, want string }{
		{"verify:\n  expectedGPUCount: -1", "verify.expectedGPUCount: must be between 0"},
		{"verify:\n  expectedGPUCount: 1000", "got 1000"},
		{"verify:\n  expectedGPUCount: eight", "cannot unmarshal"},
		{"verify:\n  expectedGpuCount: 8", `unknown key "expectedGpuCount" in verify`},
		{"verify: true", "cannot unmarshal"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
