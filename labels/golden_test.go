package labels_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gpunode/gpunode/agent"
	"github.com/gpunode/gpunode/config"
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
			env, err := agent.NewEnv(cfg, name)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				for _, b := range env.Backends {
					b.Close()
				}
				env.Close()
			}()
			s := agent.NewDiscoverer(env.FS, env.Backends, 10*time.Second, env.Simulated).Discover(context.Background())
			var b bytes.Buffer
			for _, line := range labels.For(s, agent.LabelOptions(cfg.Labels)).Lines() {
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
