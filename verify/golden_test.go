package verify_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"slices"
	"strings"
	"testing"

	goldenfile "github.com/gpunode/gpunode/internal/golden"
	"github.com/gpunode/gpunode/internal/testsupport"
	"github.com/gpunode/gpunode/sim"
	"github.com/gpunode/gpunode/verify"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	goldenfile.Check(t, file, got, *update, "go test ./verify -update")
}

// plantedFaults are the findings (check subject) each simulated node must
// report, and nothing else: the good nodes none, the degraded variants
// exactly the faults planted in them.
var plantedFaults = map[string][]string{
	"cpu-only":    nil,
	"dgx-b200-ib": nil,
	"dgx-h100-ib": nil,
	"dgx-h100-ib-degraded": {
		"gpu-pcie-link gpu2",
		"nvlink gpu5",
		"rdma-port-rate mlx5_6/1",
	},
	// The GPUs are on PCI but the agent has no NVML: not a node without
	// GPUs (issue 14).
	"dgx-h100-ib-no-nvml": {"discovery node"},
	"h100-roce":           nil,
	"mi300x-roce":         nil,
	"mi355x-roce":         nil,
	"gb200-nvl":           nil,
	"h100-roce-lossy": {
		"roce-congestion mlx5_0/1", "roce-congestion mlx5_1/1", "roce-congestion mlx5_2/1", "roce-congestion mlx5_3/1",
		"roce-congestion mlx5_4/1", "roce-congestion mlx5_5/1", "roce-congestion mlx5_6/1", "roce-congestion mlx5_7/1",
	},
}

// failingSources are the sources that fail on a simulated node: on the
// node without NVML, the nvml source; none elsewhere.
var failingSources = map[string][]string{"dgx-h100-ib-no-nvml": {"nvml"}}

func TestGoldenReports(t *testing.T) {
	for _, name := range sim.Names() {
		t.Run(name, func(t *testing.T) {
			s := testsupport.DiscoverSim(t, name)
			var failing []string
			for _, st := range s.Sources {
				if st.State == "error" {
					failing = append(failing, st.Name)
				}
			}
			if !slices.Equal(failing, failingSources[name]) {
				t.Errorf("failing sources %v, want %v: %+v", failing, failingSources[name], s.Sources)
			}
			r := verify.Run(s, verify.Options{})
			var findings []string
			for _, res := range r.Results {
				if res.Status == verify.Fail || res.Status == verify.Warn {
					findings = append(findings, res.Check+" "+res.Subject)
				}
			}
			want, known := plantedFaults[name]
			if !known {
				t.Fatalf("simulated node %s has no entry in plantedFaults", name)
			}
			if !slices.Equal(findings, want) {
				t.Errorf("findings:\n  %s\nwant:\n  %s", strings.Join(findings, "\n  "), strings.Join(want, "\n  "))
			}
			if r.Verified != (len(want) == 0) {
				t.Errorf("verified = %v with findings %v", r.Verified, findings)
			}
			var text, js bytes.Buffer
			if err := verify.Text(&text, r, verify.TextOptions{}); err != nil {
				t.Fatal(err)
			}
			if name == "dgx-h100-ib-degraded" { // one node with every row, as -v prints it
				var all bytes.Buffer
				if err := verify.Text(&all, r, verify.TextOptions{All: true}); err != nil {
					t.Fatal(err)
				}
				golden(t, name+".verify-all.txt", all.Bytes())
			}
			if err := verify.JSON(&js, r); err != nil {
				t.Fatal(err)
			}
			golden(t, name+".verify.txt", text.Bytes())
			golden(t, name+".verify.json", js.Bytes())
			var back verify.Report
			if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Results) != len(r.Results) {
				t.Errorf("JSON does not round-trip: %v", err)
			}
		})
	}
}

// Issue 14: a DGX whose agent runs without NVML (no NVIDIA container
// runtime, no driver mounts) is not verified, the failure names the fix,
// and no check takes the node for one without GPUs.
func TestNodeWithoutNVML(t *testing.T) {
	r := verify.Run(testsupport.DiscoverSim(t, "dgx-h100-ib-no-nvml"), verify.Options{})
	if r.Verified {
		t.Fatal("verified without NVML")
	}
	for _, res := range r.Results {
		if strings.Contains(res.Observed, "no GPUs") {
			t.Errorf("%s %s: %q", res.Check, res.Subject, res.Observed)
		}
	}
	f := r.Failed()
	if len(f) != 1 || f[0].Check != "discovery" ||
		!strings.Contains(f[0].Observed, "8 NVIDIA GPUs on PCI (bound to nvidia) but NVML is not available: NVIDIA driver library libnvidia-ml.so.1 not found") ||
		!strings.Contains(f[0].Remedy, "NVIDIA container runtime") || !strings.Contains(f[0].Remedy, "gpu.nvml.libraryPath") {
		t.Errorf("failed: %+v", f)
	}
}
