package labels_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/internal/testsupport"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/sim"
)

// amdLabels discovers the host tree under root as the agent does on a host
// without AMD SMI (the amdgpu sysfs backend) and returns its labels, every
// set on, and the amdgpu source's state.
func amdLabels(t *testing.T, root string) (map[string]string, source.Status) {
	t.Helper()
	cfg := config.Default()
	cfg.HostRoot = root
	cfg.GPU.NVML.Enabled = false
	cfg.GPU.AMD.LibraryPath = filepath.Join(t.TempDir(), "no-libamd_smi.so")
	cfg.Labels.Sets = config.LabelSets{GPUNode: true, LLMD: true, NVIDIA: true, AMD: true}
	env := testsupport.OpenEnv(t, cfg, "")
	s := discovery.New(env, testsupport.SourceTimeout).Discover(context.Background())
	st, _ := s.Source(source.AMDGPU)
	out := map[string]string{}
	for _, line := range labels.For(s, cfg.Labels.Options()).Lines() {
		k, v, _ := strings.Cut(line, "=")
		out[k] = v
	}
	return out, st
}

// An MI300X node in CPX with NPS4 (8 KFD nodes per GPU) is labelled as in
// SPX: 304 compute units and 7 XGMI links per GPU, not one partition's 38
// and 62 io_links to partitions.
func TestAMDPartitionedLabels(t *testing.T) {
	n, err := sim.Build("mi300x-roce", t.TempDir(), sim.WithAMDPartition("CPX", "NPS4"))
	if err != nil {
		t.Fatal(err)
	}
	got, st := amdLabels(t, n.Root)
	if st.State != source.OK {
		t.Errorf("amdgpu source %+v", st)
	}
	for k, want := range map[string]string{
		"amd.com/gpu.cu-count":              "304",
		"gpunode.dev/gpu.xgmi.active-links": "7",
		"gpunode.dev/gpu.partition":         "cpx_nps4",
		"gpunode.dev/gpu.count":             "8",
	} {
		if got[k] != want {
			t.Errorf("%s=%q, want %q", k, got[k], want)
		}
	}
}

// procfs's captured Vega 10 (card0/device a directory, no product name),
// as captured and with an empty unique_id, as the kernel leaves it when
// the id is 0: the GPU is labelled, the source is ok, and no label carries
// a name made up from the PCI device id ("GPU-0X687F").
func TestAMDCapturedLabels(t *testing.T) {
	for name, uniqueID := range map[string]string{"as captured": "0123456789abcdef\n", "empty unique_id": ""} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			testsupport.Untar(t, "../gpu/amdgpu/testdata/captures/drm-vega10.tar.gz", root)
			for p, content := range map[string]string{"sys/class/drm/card0/device/unique_id": uniqueID, "sys/module/amdgpu/version": "6.10.5\n"} {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, p), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, st := amdLabels(t, root)
			if st.State != source.OK {
				t.Errorf("amdgpu source %+v", st)
			}
			if got["gpunode.dev/gpu.present"] != "true" || got["gpunode.dev/gpu.count"] != "1" || got["amd.com/gpu.device-id"] != "687f" {
				t.Errorf("labels %v", got)
			}
			for k, v := range got {
				if strings.Contains(strings.ToLower(v), "687f") && k != "amd.com/gpu.device-id" {
					t.Errorf("%s=%s names the GPU by its device id", k, v)
				}
			}
		})
	}
}
