package report_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/gpu"
	goldenfile "github.com/gpunode/gpunode/internal/golden"
	"github.com/gpunode/gpunode/internal/testsupport"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/report"
	"github.com/gpunode/gpunode/sim"
	"github.com/gpunode/gpunode/snapshot"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// discoverSim runs discovery once on a simulated node, with the timing
// fields fixed so the output is comparable byte for byte.
func discoverSim(t *testing.T, name string) *snapshot.Snapshot {
	t.Helper()
	return testsupport.Untimed(testsupport.DiscoverSim(t, name), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
}

func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	goldenfile.Check(t, file, got, *update, "go test ./report -update")
}

func TestGoldenInspect(t *testing.T) {
	for _, name := range sim.Names() {
		t.Run(name, func(t *testing.T) {
			s := discoverSim(t, name)
			for _, st := range s.Sources {
				// The node without NVML has GPUs no backend can read:
				// its nvml source fails (issue 14).
				if st.State == "error" && (name != "dgx-h100-ib-no-nvml" || st.Name != "nvml") {
					t.Errorf("source %s failed on a simulated node: %s", st.Name, st.Message)
				}
			}
			l := labels.For(s, config.Default().Labels.Options())
			var text, js, lines bytes.Buffer
			if err := report.Text(&text, s, l); err != nil {
				t.Fatal(err)
			}
			if err := report.JSON(&js, s); err != nil {
				t.Fatal(err)
			}
			if err := report.Labels(&lines, l); err != nil {
				t.Fatal(err)
			}
			golden(t, name+".txt", text.Bytes())
			golden(t, name+".json", js.Bytes())
			golden(t, name+".labels", lines.Bytes())

			var top map[string]json.RawMessage
			if err := json.Unmarshal(js.Bytes(), &top); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"gpus", "rdma_devices", "numa_nodes", "sources", "host", "pci_devices", "gpudirect_rdma"} {
				if _, ok := top[k]; !ok {
					t.Errorf("JSON lacks top-level key %q", k)
				}
			}
			if !slices.IsSorted(l.Lines()) {
				t.Error("label lines are not sorted")
			}
		})
	}
}

// Discovery of the same node twice gives the same report: nothing depends
// on map order or timing.
func TestDeterministic(t *testing.T) {
	var out [2]bytes.Buffer
	for i := range out {
		s := discoverSim(t, "dgx-b200-ib")
		if err := report.JSON(&out[i], s); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(out[0].Bytes(), out[1].Bytes()) {
		t.Fatal("two discoveries of one simulated node differ")
	}
}

// A multi-line source error (errors.Join) stays in its cell of the
// Sources table and on its line of the summary.
func TestTextFoldsMultiLineMessages(t *testing.T) {
	s := discoverSim(t, "cpu-only")
	s.Sources = slices.Clone(s.Sources)
	s.Sources[0].State, s.Sources[0].Message = "error", "read mlx5_0: timeout\nread mlx5_1:\ttimeout\n"
	var text bytes.Buffer
	if err := report.Text(&text, s, nil); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	if !strings.Contains(out, "read mlx5_0: timeout; read mlx5_1: timeout") {
		t.Errorf("message not folded:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "read mlx5_1") {
			t.Errorf("the message spilled onto its own line %q:\n%s", l, out)
		}
	}
}

// Where the GPU library was found, for each way of finding it, in the
// summary inspect prints and in its JSON.
func TestGoldenLibrary(t *testing.T) {
	var text, js bytes.Buffer
	for _, tc := range []struct {
		node string
		lib  gpu.Library
	}{
		{"dgx-h100-ib", gpu.Library{Path: "/host/run/nvidia/driver/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15", Found: gpu.FoundDriverRoot}},
		{"dgx-h100-ib", gpu.Library{Path: "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15", Found: gpu.FoundRuntime}},
		{"dgx-h100-ib", gpu.Library{Path: "/host/home/kubernetes/bin/nvidia/lib64/libnvidia-ml.so.550.54.15", Found: gpu.FoundWellKnown}},
		{"dgx-h100-ib", gpu.Library{Path: "/opt/nvidia/libnvidia-ml.so.1", Found: gpu.FoundConfigured}},
		{"mi300x-roce", gpu.Library{Path: "/host/opt/rocm-6.4.1/lib/libamd_smi.so.24.7.60401", Found: gpu.FoundWellKnown}},
	} {
		s := discoverSim(t, tc.node)
		d := *s.GPUDriver
		d.Library = &tc.lib
		if d.Backend == "amdgpu" { // the simulated node reads sysfs; a host with ROCm uses AMD SMI
			d.Backend = "amdsmi"
		}
		s.GPUDriver = &d
		for _, l := range report.Summary(s) {
			if strings.HasPrefix(l, "GPU") {
				text.WriteString(l + "\n")
			}
		}
		if err := json.NewEncoder(&js).Encode(s.GPUDriver); err != nil {
			t.Fatal(err)
		}
	}
	golden(t, "library.txt", text.Bytes())
	golden(t, "library.json", js.Bytes())
}
