// Package layers checks that imports run one way, as docs/architecture.md
// draws them: a package imports only packages of its own layer or below.
package layers

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/gpunode/gpunode/"

// layers lists every package of the agent from the bottom up. A package
// that is not listed fails the test: place it when you add it.
var layers = [][]string{
	{"internal/hostfs", "internal/source", "internal/cpuset", "internal/golden"},
	// readers and actuators of one subject each, and the simulated nodes
	// built from their fixtures
	{"gpu", "gpu/nvml", "gpu/nvml/nvmlfake", "gpu/amdgpu", "gpu/amdsmi", "rdma", "rdma/verbs", "rdma/dcb", "rdma/ethstats", "rdma/probe",
		"topology", "tuning", "podresources", "procpod", "kubeapi", "podlabels", "kmsg", "sim"},
	// the models every layer above shares
	{"snapshot", "nodestatus"},
	// derivations (pure functions of the models), the sampler, configuration
	{"labels", "verify", "health", "rdmahealth", "telemetry", "config"},
	// outputs
	{"exporters", "publish", "report", "hwcheck"},
	{"discovery"},
	{"agent"},
	{"cmd/gpunode-agent", "cmd/gpunode-hwcheck"},
}

// testOnly are imported by tests alone; they may import anything.
var testOnly = []string{"internal/testsupport", "test/"}

func TestImportsRunOneWay(t *testing.T) {
	rank := map[string]int{}
	for i, l := range layers {
		for _, p := range l {
			rank[p] = i
		}
	}
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if isTestOnly(pkg) {
			continue
		}
		r, ok := rank[pkg]
		if !ok {
			t.Errorf("package %s is in no layer: add it to the table here and to docs/architecture.md", pkg)
			continue
		}
		seen++
		for _, imp := range fields[1:] {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue
			}
			if isTestOnly(dep) {
				t.Errorf("%s imports the test-only package %s", pkg, dep)
			} else if dr, ok := rank[dep]; ok && dr > r {
				t.Errorf("%s (layer %d) imports %s (layer %d, above it)", pkg, r, dep, dr)
			}
		}
	}
	if seen != len(rank) {
		t.Errorf("go list saw %d of the %d packages in the table: remove the ones that are gone", seen, len(rank))
	}
}

func isTestOnly(pkg string) bool {
	for _, p := range testOnly {
		if pkg == p || strings.HasSuffix(p, "/") && strings.HasPrefix(pkg, p) {
			return true
		}
	}
	return false
}
