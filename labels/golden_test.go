package labels_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/internal/testsupport"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/sim"
)

// Every label set switched on, for every simulated node: the GFD
// compatible keys in particular are checked byte for byte here (the
// default sets are golden-tested with inspect in report).
func TestGoldenAllSets(t *testing.T) {
	cfg := config.Default()
	cfg.Labels.Sets = config.LabelSets{GPUNode: true, LLMD: true, NVIDIA: true, AMD: true}
	for _, name := range sim.Names() {
		t.Run(name, func(t *testing.T) {
			s := testsupport.DiscoverSim(t, name)
			var b bytes.Buffer
			for _, line := range labels.For(s, cfg.Labels.Options()).Lines() {
				b.WriteString(line + "\n")
			}
			path := filepath.Join("testdata", name+".all.labels")
			if updating() {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./labels -update)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("%s differs; if intended, run go test ./labels -update and review the diff\n--- got:\n%s", path, b.Bytes())
			}
		})
	}
}

// Issue 14: on a DGX whose agent has no NVML the GPU source fails, so
// the GPU labels are left out (never gpu.present=false) and the daemon
// holds their last good values.
func TestGPUsWithoutBackendHeld(t *testing.T) {
	o := config.Default().Labels.Options()
	good := labels.For(testsupport.DiscoverSim(t, "dgx-h100-ib"), o)
	s := testsupport.DiscoverSim(t, "dgx-h100-ib-no-nvml")
	got := labels.For(s, o)
	for _, k := range []string{"gpunode.dev/gpu.present", "gpunode.dev/gpu.count", "llm-d.ai/gpu-node", "gpunode.dev/gpudirect-rdma"} {
		if v, ok := got[k]; ok {
			t.Errorf("%s=%s written from a failing GPU source", k, v)
		}
	}
	if got["gpunode.dev/rdma.present"] != "true" {
		t.Errorf("RDMA labels lost: %v", got.Lines())
	}
	failed := labels.Failed(s)
	if !slices.Equal(failed, []labels.Source{labels.SourceGPU}) {
		t.Fatalf("failed sources %v, want gpu", failed)
	}
	held := labels.Hold(got, good, failed, o)
	for _, k := range []string{"gpunode.dev/gpu.present", "gpunode.dev/gpu.count", "gpunode.dev/gpu.product", "llm-d.ai/gpu-node"} {
		if held[k] != good[k] || held[k] == "" {
			t.Errorf("%s = %q held, want %q", k, held[k], good[k])
		}
	}
}
