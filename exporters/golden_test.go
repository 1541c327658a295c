package exporters_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/internal/testsupport"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/gpunode/gpunode/exporters"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/amdgpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	goldenfile "github.com/gpunode/gpunode/internal/golden"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/kmsg"
	"github.com/gpunode/gpunode/sim"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/telemetry"
	"github.com/gpunode/gpunode/test/tools"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func shmDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "gpunode-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// simNode is a simulated node sampled twice, ten seconds apart on a fixed
// clock, so that everything it exports is the same on every run.
type simNode struct {
	node    sim.Node
	lib     gonvml.Interface
	sampler *telemetry.Sampler
	snap    *snapshot.Snapshot
	clock   *testsupport.Clock
}

func newSimNode(t testing.TB, name string) *simNode {
	t.Helper()
	return newSimNodeWith(t, name, nil, nil)
}

// newSimNodeWith builds the node with its NVML machine changed by change
// (nil: as built) and the sampler's options by opts.
func newSimNodeWith(t testing.TB, name string, change func(*nvmlfake.Machine), opts func(*telemetry.Options)) *simNode {
	t.Helper()
	n, err := sim.Build(name, shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := hostfs.New(n.Root)
	if err != nil {
		t.Fatal(err)
	}
	c := testsupport.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	var lib gonvml.Interface
	if n.NVIDIA != nil {
		m := *n.NVIDIA
		m.Clock = c.Now
		if change != nil {
			m.GPUs = append([]nvmlfake.GPU(nil), m.GPUs...)
			change(&m)
		}
		if lib, err = nvmlfake.New(m); err != nil {
			t.Fatal(err)
		}
	}
	b := nvml.New(lib, nvml.WithClock(c.Now))
	t.Cleanup(func() { b.Close() })
	// The AMD backend of an agent without AMD SMI: amdgpu sysfs.
	backends := []gpu.Backend{b, amdgpu.New(fsys, amdgpu.WithClock(c.Now))}
	o := telemetry.Options{Interval: time.Second, Timeout: 10 * time.Second, FS: fsys, Backends: backends,
		// The node's kernel log, as the agent reads it (no journal: the
		// tree is new each time).
		KernelLog: kmsg.NewReader(fsys, ""),
		// Its netdevs' driver statistics (pause frames), as the agent's
		// simulated environment reads them.
		DriverStats: sim.DriverStats{Root: n.Root}}
	if opts != nil {
		opts(&o)
	}
	s := telemetry.New(o)
	env := &discovery.Env{FS: fsys, Backends: backends, Simulated: name, PFC: n.PFC}
	snap := testsupport.Untimed(discovery.New(env, testsupport.SourceTimeout).Discover(context.Background()), time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s.Round(context.Background())
	c.Advance(10 * time.Second)
	s.Round(context.Background())
	return &simNode{node: n, lib: lib, sampler: s, snap: snap, clock: c}
}

// frame is the latest frame with run-dependent timings zeroed.
func (n *simNode) frame() *telemetry.Frame {
	f := *n.sampler.Latest()
	f.Sources = append(f.Sources[:0:0], f.Sources...)
	for i := range f.Sources {
		f.Sources[i].Duration, f.Sources[i].DurationSeconds = 0, 0
	}
	return &f
}

// gather renders what the agent exports for the node, without the Go and
// process collectors (they describe the test process).
func (n *simNode) gather(t testing.TB, o exporters.TelemetryOptions) []byte {
	t.Helper()
	reg := prometheus.NewRegistry()
	sources := func() []source.Status { return n.frame().Sources }
	reg.MustRegister(
		exporters.NewAgentCollector(func() *snapshot.Snapshot { return n.snap }, exporters.BuildInfo{Version: "test", Revision: "golden", GoVersion: "go"}, sources),
		exporters.NewTelemetryCollector(n.frame, func() *snapshot.Snapshot { return n.snap }, o),
	)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	goldenfile.Check(t, file, got, *update, "go test ./exporters -run Golden -update")
}

// promtool runs promtool check metrics on a scrape and returns its
// complaints, one per line.
func promtool(t *testing.T, scrape []byte) []string {
	t.Helper()
	bin, err := tools.Promtool()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	if err != nil && len(lines) == 0 {
		t.Fatalf("promtool: %v", err)
	}
	return lines
}

// The /metrics of every simulated node, byte for byte, and promtool's
// lint clean on it.
func TestGoldenMetrics(t *testing.T) {
	for _, name := range sim.Names() {
		t.Run(name, func(t *testing.T) {
			n := newSimNode(t, name)
			got := n.gather(t, exporters.TelemetryOptions{})
			golden(t, "metrics-"+name+".prom", got)
			if problems := promtool(t, got); len(problems) > 0 {
				t.Errorf("promtool check metrics:\n%s", strings.Join(problems, "\n"))
			}
		})
	}
}

// The DCGM-compatible names on a DGX. promtool objects only to what
// compatibility requires: dcgm-exporter's camelCase labels and a name with
// "counter" in it (its counters lack _total; gpunode types them untyped so
// that no format renames them, see dcgmFamilies).
func TestGoldenDCGMCompat(t *testing.T) {
	n := newSimNode(t, "dgx-h100-ib")
	got := n.gather(t, exporters.TelemetryOptions{DCGMCompat: true, Hostname: "dgx-h100-01"})
	var dcgm bytes.Buffer
	for _, l := range strings.SplitAfter(string(got), "\n") {
		if strings.Contains(l, "DCGM_FI_") {
			dcgm.WriteString(l)
		}
	}
	golden(t, "metrics-dgx-h100-ib-dcgm.prom", dcgm.Bytes())
	for _, p := range promtool(t, got) {
		inherent := strings.Contains(p, "label names should be written in 'snake_case' not 'camelCase'") ||
			strings.HasPrefix(p, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER metric name should not include type 'counter'")
		if !strings.HasPrefix(p, "DCGM_FI_") || !inherent {
			t.Errorf("promtool: %s", p)
		}
	}
}
