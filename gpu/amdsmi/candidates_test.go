package amdsmi

import (
	"slices"
	"testing"

	"github.com/gpunode/gpunode/gpu"
)

func TestCandidates(t *testing.T) {
	for _, tc := range []struct {
		name, hostRoot, libraryPath string
		opt                         []string
		want                        []gpu.Library
	}{
		{"configured", "/host", "/x/libamd_smi.so", []string{"rocm"}, []gpu.Library{{Path: "/x/libamd_smi.so", Found: gpu.FoundConfigured}}},
		{"no ROCm on the host", "/host", "", nil, append(slices.Clone(DefaultLibraries),
			gpu.Library{Path: "/host/opt/rocm/lib/libamd_smi.so", Found: gpu.FoundWellKnown})},
		{"versioned installs, newest first", "/host", "", []string{"rocm-6.4.1", "nvidia", "rocm", "rocm-6.10.0", "rocm-"}, append(slices.Clone(DefaultLibraries),
			gpu.Library{Path: "/host/opt/rocm/lib/libamd_smi.so", Found: gpu.FoundWellKnown},
			gpu.Library{Path: "/host/opt/rocm-6.10.0/lib/libamd_smi.so", Found: gpu.FoundWellKnown},
			gpu.Library{Path: "/host/opt/rocm-6.4.1/lib/libamd_smi.so", Found: gpu.FoundWellKnown})},
		{"host root /: /opt/rocm once", "/", "", []string{"rocm-6.3.0"}, append(slices.Clone(DefaultLibraries),
			gpu.Library{Path: "/opt/rocm-6.3.0/lib/libamd_smi.so", Found: gpu.FoundWellKnown})},
	} {
		if got := Candidates(tc.hostRoot, tc.libraryPath, tc.opt); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"6.4.1", "6.10.0", -1}, {"6.4.1", "6.4.1", 0}, {"6.4", "6.4.1", -1}, {"7.0.0", "6.4.3", 1},
	} {
		if got := compareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
