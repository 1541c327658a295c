package discovery_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/internal/testsupport"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/report"
	"github.com/gpunode/gpunode/verify"
)

// A simulated DGX with broken files in several sources: every problem is
// reported with its path, nothing panics, and everything else is still
// discovered.
func TestDiscoverGarbageHost(t *testing.T) {
	env := testsupport.SimEnv(t, "dgx-h100-ib")
	write := func(p string, b []byte) {
		if err := os.WriteFile(env.FS.Path(p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("/sys/class/infiniband/mlx5_3/ports/1/rate", []byte("\xff\xfe garbage"))
	write("/sys/bus/pci/devices/0000:43:00.0/numa_node", []byte(""))
	write("/proc/modules", bytes.Repeat([]byte("x"), 9<<20))
	write("/proc/sys/vm/swappiness", []byte("6\x000"))
	if err := os.Remove(env.FS.Path("/sys/class/infiniband/mlx5_5/ports/1/state")); err != nil {
		t.Fatal(err)
	}

	s := discovery.New(env, 10*time.Second).Discover(context.Background())
	want := map[string][]string{
		"rdma":     {"mlx5_3 port 1", "/sys/class/infiniband/mlx5_3/ports/1/rate", "mlx5_5 port 1", "ports/1/state"},
		"topology": {"/sys/bus/pci/devices/0000:43:00.0/numa_node", "/proc/modules", "too large"},
		"settings": {"vm.swappiness", "NUL"},
	}
	for name, parts := range want {
		st, _ := s.Source(name)
		if st.State != source.Error {
			t.Errorf("source %s = %s, want error", name, st.State)
		}
		for _, p := range parts {
			if !strings.Contains(st.Message, p) {
				t.Errorf("source %s message lacks %q: %s", name, p, st.Message)
			}
		}
	}
	if st, _ := s.Source("nvml"); st.State != source.OK {
		t.Errorf("nvml = %+v", st)
	}
	if len(s.GPUs) != 8 || len(s.RDMADevices) != 8 || len(s.NUMANodes) != 2 {
		t.Fatalf("lost data: %d GPUs, %d RDMA devices, %d NUMA nodes", len(s.GPUs), len(s.RDMADevices), len(s.NUMANodes))
	}
	if p := s.RDMADevices[4].Ports[0]; p.State != "ACTIVE" || p.RateGbps != 400 {
		t.Errorf("a healthy device lost data: %+v", p)
	}
	if p := s.RDMADevices[3].Ports[0]; p.State != "ACTIVE" || p.RateGbps != 0 || len(p.Errors) == 0 {
		t.Errorf("broken rate: %+v", p)
	}
	var out bytes.Buffer
	if err := report.Text(&out, s, labels.For(s, config.Default().Labels.Options())); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"source rdma FAILED", "Problems", "mlx5_3 port 1: read /sys/class/infiniband/mlx5_3/ports/1/rate"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("report lacks %q", w)
		}
	}
	l := labels.For(s, labels.Options{Domain: "d", Sets: labels.DefaultSets()})
	if _, ok := l["d/rdma.present"]; ok {
		t.Error("RDMA labels published from a failed source")
	}
	if l["d/gpu.count"] != "8" {
		t.Errorf("GPU labels lost because other sources failed: %v", l.Lines())
	}
}

// hungBackend stands in for a GPU driver whose calls never return.
type hungBackend struct{ release chan struct{} }

func (h hungBackend) Name() string { return "hung" }
func (h hungBackend) Inventory(ctx context.Context) (gpu.Inventory, error) {
	<-h.release
	return gpu.Inventory{}, nil
}
func (h hungBackend) Close() error { return nil }

func TestDiscoverHungBackend(t *testing.T) {
	env := testsupport.SimEnv(t, "cpu-only")
	h := hungBackend{release: make(chan struct{})}
	defer close(h.release)
	d := discovery.New(&discovery.Env{FS: env.FS, Backends: []gpu.Backend{h}}, 200*time.Millisecond)
	start := time.Now()
	for i, want := range []string{"timed out after 200ms", source.ErrStillRunning.Error()} {
		s := d.Discover(context.Background())
		st, _ := s.Source("hung")
		if st.State != source.Error || !strings.Contains(st.Message, want) {
			t.Errorf("run %d: hung source = %+v, want %q", i, st, want)
		}
		if st, _ := s.Source("topology"); st.State != source.OK {
			t.Errorf("run %d: topology = %+v", i, st)
		}
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("two discoveries with a hung source took %s", el)
	}
}

// One hung sysfs file (a FIFO nobody writes, in place of mlx5_3's port
// rate) costs mlx5_3 only: every other HCA is discovered in full while
// mlx5_3's read hangs, it is not read again on top of the hung read, and
// it is read in full once the file answers.
func TestDiscoverHungRDMADevice(t *testing.T) {
	env := testsupport.SimEnv(t, "dgx-h100-ib")
	rate := env.FS.Path("/sys/class/infiniband/mlx5_3/ports/1/rate")
	content, err := os.ReadFile(rate)
	if err != nil {
		t.Fatal(err)
	}
	release := testsupport.Hang(t, rate)
	d := discovery.New(env, 2*time.Second)
	check := func(run int, want string) {
		t.Helper()
		start := time.Now()
		s := d.Discover(context.Background())
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("run %d took %s", run, el)
		}
		st, _ := s.Source("rdma")
		if st.State != source.Error || !strings.Contains(st.Message, "mlx5_3") || !strings.Contains(st.Message, want) {
			t.Errorf("run %d: rdma source %+v, want an error naming mlx5_3 and %q", run, st, want)
		}
		if len(s.RDMADevices) != 8 {
			t.Fatalf("run %d: %d RDMA devices, want 8", run, len(s.RDMADevices))
		}
		for i, dev := range s.RDMADevices {
			if i == 3 {
				if dev.Name != "mlx5_3" || !strings.Contains(strings.Join(dev.Errors, "\n"), want) {
					t.Errorf("run %d: hung device %+v, want its error %q", run, dev, want)
				}
				continue
			}
			if len(dev.Errors) > 0 || len(dev.Ports) != 1 || !dev.Ports[0].Active() || dev.Ports[0].RateGbps != 400 {
				t.Errorf("run %d: healthy device %s lost data: %+v", run, dev.Name, dev)
			}
			if strings.Contains(st.Message, dev.Name+":") {
				t.Errorf("run %d: the error blames %s: %s", run, dev.Name, st.Message)
			}
		}
	}
	check(1, "timed out")
	check(2, "previous read has not returned")
	release(string(content))
	testsupport.Eventually(t, "mlx5_3 read again", func() error {
		s := d.Discover(context.Background())
		if st, _ := s.Source("rdma"); st.State != source.OK {
			return fmt.Errorf("rdma source %+v", st)
		}
		if p := s.RDMADevices[3].Ports; len(p) != 1 || p[0].RateGbps != 400 {
			return fmt.Errorf("mlx5_3 ports %+v", p)
		}
		return nil
	})
}

// A host whose driver lacks some optional RDMA files (node_type,
// sys_image_guid, lid, sm_lid, the GID table) loses only those facts: the
// rdma source is ok and the rdma labels are published, the unknown LID is
// shown as unknown, and verification cannot tell (skip) rather than
// blame a missing subnet manager.
func TestDiscoverWithoutOptionalRDMAFiles(t *testing.T) {
	env := testsupport.SimEnv(t, "dgx-h100-ib")
	const dev = "/sys/class/infiniband/mlx5_2"
	for _, f := range []string{"node_type", "sys_image_guid", "ports/1/lid", "ports/1/sm_lid", "ports/1/gids", "ports/1/gid_attrs"} {
		if err := os.RemoveAll(env.FS.Path(dev + "/" + f)); err != nil {
			t.Fatal(err)
		}
	}
	s := discovery.New(env, testsupport.SourceTimeout).Discover(context.Background())
	if st, _ := s.Source("rdma"); st.State != source.OK {
		t.Fatalf("rdma source %+v, want ok", st)
	}
	d := s.RDMADevices[2]
	if p := d.Ports[0]; d.Name != "mlx5_2" || d.NodeType != "" || d.SysImageGUID != "" || d.NodeGUID == "" ||
		p.LID != nil || p.SMLID != nil || p.GIDs != nil || !p.Active() || p.RateGbps != 400 || d.Errors != nil || p.Errors != nil {
		t.Errorf("mlx5_2: %+v", d)
	}
	l := labels.For(s, labels.Options{Domain: "d", Sets: labels.DefaultSets()})
	if l["d/rdma.devices"] != "8" || l["d/rdma.link-layer"] != "infiniband" || l["d/rdma.rate-gbps"] != "400" {
		t.Errorf("rdma labels: %v", l.Lines())
	}
	var out bytes.Buffer
	if err := report.Text(&out, s, l); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out.String(), "\n") {
		// The LID is the eighth field: RATE ("400 Gb/s") is two.
		if f := strings.Fields(line); len(f) > 7 && f[0] == "mlx5_2" && f[1] == "1" && f[7] != "-" {
			t.Errorf("report shows an unknown LID as %q: %s", f[7], line)
		}
	}
	rep := verify.Run(s, verify.Options{})
	for _, r := range rep.Results {
		if r.Check == "ib-port-sm" && r.Subject == "mlx5_2/1" && (r.Status != verify.Skip || !strings.Contains(r.Observed, "LID unknown")) {
			t.Errorf("ib-port-sm on mlx5_2: %+v", r)
		}
	}
	if !rep.Verified {
		t.Errorf("not verified: %+v", rep.Counts)
	}
}
