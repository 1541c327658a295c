package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/testsupport"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"google.golang.org/grpc"
	v1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/health"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/podresources"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/sim"
)

// node is a simulated node with its NVML fake on a clock the test moves.
type node struct {
	sim.Node
	fs    hostfs.FS
	lib   gonvml.Interface
	nvml  *nvml.Backend
	clock *testsupport.Clock
}

func shmDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "gpunode-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newNode(t testing.TB, name string) *node {
	t.Helper()
	n, err := sim.Build(name, shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := hostfs.New(n.Root)
	if err != nil {
		t.Fatal(err)
	}
	nd := &node{Node: n, fs: fsys, clock: testsupport.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))}
	var lib gonvml.Interface
	if n.NVIDIA != nil {
		m := *n.NVIDIA
		m.Clock = nd.clock.Now
		if lib, err = nvmlfake.New(m); err != nil {
			t.Fatal(err)
		}
	}
	nd.lib = lib
	nd.nvml = nvml.New(lib)
	t.Cleanup(func() { nd.nvml.Close() })
	return nd
}

func (n *node) options() Options {
	return Options{Interval: time.Second, Timeout: 2 * time.Second, FS: n.fs, Backends: []gpu.Backend{n.nvml}}
}

func status(f *Frame, name string) source.Status {
	for _, s := range f.Sources {
		if s.Name == name {
			return s
		}
	}
	return source.Status{}
}

func counter(p rdma.PortCounters, name string) uint64 {
	for _, c := range append(p.Counters, p.HWCounters...) {
		if c.Name == name {
			return c.Value
		}
	}
	return 0
}

func TestRoundOnADGX(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	var conds []nodestatus.Condition
	o := n.options()
	o.OnCondition = func(c nodestatus.Condition) { conds = append(conds, c) }
	s := New(o)
	if s.Latest() != nil {
		t.Fatal("a frame before the first round")
	}
	select {
	case <-s.FirstRound():
		t.Fatal("first round reported done before it ran")
	default:
	}
	s.Round(context.Background())
	select {
	case <-s.FirstRound():
		if len(conds) != 1 {
			t.Error("first round done before its condition was handed over")
		}
	default:
		t.Fatal("first round not reported done")
	}
	f := s.Latest()
	if len(f.GPUs) != 8 || len(f.Health) != 8 || len(f.RDMA) != 8 {
		t.Fatalf("%d GPUs, %d verdicts, %d RDMA ports", len(f.GPUs), len(f.Health), len(f.RDMA))
	}
	for _, name := range []string{"nvml-sample", "rdma-counters"} {
		if st := status(f, name); st.State != source.OK {
			t.Errorf("source %s: %+v", name, st)
		}
	}
	for i, g := range f.GPUs {
		if g.Index != i || !g.Up || !f.Health[i].Healthy {
			t.Errorf("GPU %d: up %v health %+v", i, g.Up, f.Health[i])
		}
	}
	if !f.HasCondition || f.Condition.Status != nodestatus.True || len(conds) != 1 {
		t.Errorf("condition %+v (%v), notified %v", f.Condition, f.HasCondition, conds)
	}
	if f.Pods != nil {
		t.Error("pods without a pod lister")
	}
	// The counters start where the devices are.
	raw, _ := rdma.ReadCounters(context.Background(), n.fs)
	if counter(f.RDMA[3], "port_xmit_data") != counter(raw[3], "port_xmit_data") || counter(raw[3], "port_xmit_data") == 0 {
		t.Errorf("mlx5_3 port_xmit_data %d, device says %d", counter(f.RDMA[3], "port_xmit_data"), counter(raw[3], "port_xmit_data"))
	}
	s.Round(context.Background())
	if len(conds) != 1 {
		t.Errorf("condition notified again without a change: %v", conds)
	}
}

// A GPU reset and an RDMA counter reset (driver reload, perfquery -R)
// make device counters start again from zero; the exported ones go on.
func TestCountersSurviveResets(t *testing.T) {
	n := newNode(t, "h100-roce")
	s := New(n.options())
	s.Round(context.Background())
	first := s.Latest()
	n.clock.Advance(30 * time.Second)
	nvmlfake.ResetGPU(n.lib, 2)
	p := filepath.Join(n.Root, "sys/class/infiniband/mlx5_5/ports/1/counters/port_rcv_data")
	if err := os.WriteFile(p, []byte("1000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Round(context.Background())
	n.clock.Advance(30 * time.Second)
	s.Round(context.Background())
	last := s.Latest()

	e0, e1 := *first.GPUs[2].EnergyMillijoules, *last.GPUs[2].EnergyMillijoules
	if e1 <= e0 {
		t.Errorf("energy went from %d to %d across a GPU reset", e0, e1)
	}
	// 30 s after the reset at up to 630 W: at most ~19 kJ more than before it.
	if e1-e0 > 60*700_000 {
		t.Errorf("energy jumped by %d mJ in 60 s", e1-e0)
	}
	r0, r1 := counter(first.RDMA[5], "port_rcv_data"), counter(last.RDMA[5], "port_rcv_data")
	if r1 != r0+1000 {
		t.Errorf("port_rcv_data %d -> %d across a reset to 1000, want +1000", r0, r1)
	}
}

func TestDelta(t *testing.T) {
	for _, tc := range []struct {
		prev, cur uint64
		bits      uint8
		want      uint64
	}{
		{10, 15, 0, 5},
		{10, 10, 32, 0},
		{10, 3, 0, 3},                         // reset
		{1<<32 - 10, 5, 32, 15},               // wrap of a 32-bit counter
		{1 << 31, 5, 32, 5},                   // mid-range drop: a reset, not a wrap
		{1<<64 - 1, 4, 0, 4},                  // 64-bit counters never wrap in practice
		{1<<32 + 5, 3, 32, 3},                 // a previous value above the width: a reset
		{(1 << 16) - 100, 50, 16, 100 + 50},   // 16-bit
		{(1 << 16) - 100, 20000, 16, 20000},   // too far into the range for a wrap
		{(1 << 63) - 1, 1 << 62, 63, 1 << 62}, // 63-bit, mid-range
	} {
		if got := delta(tc.prev, tc.cur, tc.bits); got != tc.want {
			t.Errorf("delta(%d, %d, %d) = %d, want %d", tc.prev, tc.cur, tc.bits, got, tc.want)
		}
	}
	b := bank{}
	k := counterKey{"GPU-x", "pcie_replay", ""}
	for _, raw := range []uint64{1<<32 - 2, 1, 3} {
		b.update(k, raw, 32)
	}
	if got := b[k].total; got != 1<<32-2+3+2 {
		t.Errorf("after a wrap: total %d", got)
	}
}

// XIDs arrive as events, between rounds, and show at once; a critical
// one makes its GPU unhealthy and the condition False.
func TestXIDEventsAndHealth(t *testing.T) {
	n := newNode(t, "dgx-b200-ib")
	conds := make(chan nodestatus.Condition, 16)
	o := n.options()
	o.OnCondition = func(c nodestatus.Condition) { conds <- c }
	o.Interval = time.Hour // only the first round and events
	s := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if c := <-conds; c.Status != nodestatus.True {
		t.Fatalf("first condition %+v", c)
	}
	for nvmlfake.Calls(n.lib, "nvmlDeviceRegisterEvents") < 8 {
		time.Sleep(10 * time.Millisecond)
	}
	nvmlfake.RaiseXID(n.lib, 5, 13) // an application fault: counted, not critical
	nvmlfake.RaiseXID(n.lib, 6, 79)
	var c nodestatus.Condition
	select {
	case c = <-conds:
	case <-time.After(10 * time.Second):
		t.Fatal("no condition change after XID 79")
	}
	if c.Status != nodestatus.False || c.Reason != health.ReasonXIDCritical || !strings.Contains(c.Message, "GPU 6 (GPU-") ||
		!strings.Contains(c.Message, "XID 79") || strings.Contains(c.Message, "GPU 5") {
		t.Errorf("condition %+v", c)
	}
	f := s.Latest()
	if len(f.XIDs) != 2 || f.XIDs[0].GPU != 5 || f.XIDs[0].XID != 13 || f.XIDs[1].XID != 79 || f.XIDs[1].UUID != f.GPUs[6].UUID {
		t.Errorf("XIDs %+v", f.XIDs)
	}
	if f.Health[6].Healthy || !f.Health[5].Healthy {
		t.Errorf("health 5 %+v, 6 %+v", f.Health[5], f.Health[6])
	}
}

// NVLink down after being up, a lost GPU and a pending remap each make
// their own GPU unhealthy; the rest stay healthy and keep exporting.
func TestHealthFromSamples(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	s := New(n.options())
	s.Round(context.Background())
	nvmlfake.SetNVLinkDown(n.lib, 1, 7, true)
	nvmlfake.SetLost(n.lib, 2)
	nvmlfake.SetRowRemap(n.lib, 3, 1, true, false)
	nvmlfake.AddECCErrors(n.lib, 4, 0, 2)
	n.clock.Advance(time.Second)
	s.Round(context.Background())
	f := s.Latest()
	want := map[int]string{1: health.ReasonNVLinkDown, 2: health.ReasonGPULost, 3: health.ReasonRowRemapPending, 4: health.ReasonUncorrectableECC}
	for i, h := range f.Health {
		reason, bad := want[i]
		if bad != !h.Healthy || (bad && h.Problems[0].Reason != reason) {
			t.Errorf("GPU %d: %+v", i, h)
		}
	}
	if f.GPUs[2].Up || !f.GPUs[5].Up || f.GPUs[5].PowerWatts == nil {
		t.Error("only the lost GPU should be down")
	}
	if f.Condition.Status != nodestatus.False || f.Condition.Reason != health.ReasonGPULost ||
		!strings.HasPrefix(f.Condition.Message, "4 of 8 GPUs unhealthy") {
		t.Errorf("condition %+v", f.Condition)
	}
}

// Uncorrectable ECC errors make a GPU unhealthy until the driver's
// volatile count restarts (a driver reload or GPU reset, nvml.h: "Volatile
// counts are reset each time the driver loads"); the exported counter
// stays monotonic meanwhile.
func TestUncorrectableECCClearsWithTheDriversCount(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	s := New(n.options())
	nvmlfake.AddECCErrors(n.lib, 4, 0, 2)
	s.Round(context.Background())
	f := s.Latest()
	if h := f.Health[4]; h.Healthy || len(h.Problems) != 1 || h.Problems[0].Reason != health.ReasonUncorrectableECC {
		t.Fatalf("GPU 4 with 2 uncorrectable errors: %+v", h)
	}
	n.clock.Advance(30 * time.Second)
	nvmlfake.ResetGPU(n.lib, 4)
	s.Round(context.Background())
	f = s.Latest()
	if h := f.Health[4]; !h.Healthy {
		t.Errorf("GPU 4 after its volatile count restarted: %+v", h)
	}
	if f.Condition.Status != nodestatus.True {
		t.Errorf("condition %+v", f.Condition)
	}
	for _, e := range f.GPUs[4].ECC {
		if e.Type == gpu.ECCUncorrected && e.Scope == gpu.ECCVolatile && (e.Count != 2 || e.Current != 0) {
			t.Errorf("volatile uncorrected: exported %d, device %d; want 2 and 0", e.Count, e.Current)
		}
	}
}

// A GPU the agent may not open (NVML: NO_PERMISSION, a device cgroup
// hides it) is another workload's, not a GPU that does not answer: it has
// no series and no verdict, and the condition stays True.
func TestGPUsTheAgentMayNotOpenAreLeftOut(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	nvmlfake.SetNoPermission(n.lib, 3)
	s := New(n.options())
	for range 2 {
		s.Round(context.Background())
		n.clock.Advance(time.Second)
	}
	f := s.Latest()
	if len(f.GPUs) != 7 || len(f.Health) != 7 {
		t.Fatalf("%d GPUs, %d verdicts, want 7", len(f.GPUs), len(f.Health))
	}
	for _, g := range f.GPUs {
		if g.Index == 3 || !g.Up {
			t.Errorf("GPU %d up %v", g.Index, g.Up)
		}
	}
	if f.Condition.Status != nodestatus.True || status(f, "nvml-sample").State != source.OK || status(f, "nvml-sample").Message != "" {
		t.Errorf("condition %+v, source %+v", f.Condition, status(f, "nvml-sample"))
	}
}

// A GPU whose calls hang is reported down when the round's time is up;
// the round ends on time and everything else is fresh.
func TestHungGPU(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	o := n.options()
	o.Timeout = 300 * time.Millisecond
	s := New(o)
	s.Round(context.Background())
	nvmlfake.SetDelay(n.lib, 0, "nvmlDeviceGetPowerUsage", 2*time.Second)
	defer nvmlfake.SetDelay(n.lib, 0, "nvmlDeviceGetPowerUsage", 0)
	start := time.Now()
	s.Round(context.Background())
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("round took %s", d)
	}
	f := s.Latest()
	if f.GPUs[0].Up || f.GPUs[0].UUID == "" || !f.GPUs[1].Up || len(f.RDMA) != 8 {
		t.Errorf("GPU 0 up %v (%q), GPU 1 up %v, %d ports", f.GPUs[0].Up, f.GPUs[0].UUID, f.GPUs[1].Up, len(f.RDMA))
	}
	if f.Condition.Status != nodestatus.Unknown || f.Condition.Reason != health.ReasonNotResponding {
		t.Errorf("condition %+v", f.Condition)
	}
	if st := status(f, "nvml-sample"); st.State != source.OK {
		t.Errorf("one hung GPU marked the whole source: %+v", st)
	}
}

type kubelet struct {
	v1.UnimplementedPodResourcesListerServer
	pods []*v1.PodResources
}

func (k *kubelet) List(context.Context, *v1.ListPodResourcesRequest) (*v1.ListPodResourcesResponse, error) {
	return &v1.ListPodResourcesResponse{PodResources: k.pods}, nil
}

func TestPodAttributionAndSources(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	inv, _ := n.nvml.Inventory(context.Background())
	socket := filepath.Join(t.TempDir(), "kubelet.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	v1.RegisterPodResourcesListerServer(srv, &kubelet{pods: []*v1.PodResources{{Namespace: "llm", Name: "decode-0",
		Containers: []*v1.ContainerResources{{Name: "vllm", Devices: []*v1.ContainerDevices{
			{ResourceName: "nvidia.com/gpu", DeviceIds: []string{inv.Devices[2].UUID, inv.Devices[3].UUID}}}}}}}})
	go srv.Serve(l)
	defer srv.Stop()
	o := n.options()
	pods := podresources.New(socket)
	defer pods.Close()
	o.Pods = pods
	s := New(o)
	s.Round(context.Background())
	f := s.Latest()
	if st := status(f, SourcePods); st.State != source.OK {
		t.Fatalf("pod source %+v", st)
	}
	if owners := f.Pods[inv.Devices[3].UUID]; len(owners) != 1 || owners[0].Pod != "decode-0" || owners[0].Container != "vllm" {
		t.Errorf("owners of GPU 3: %+v", owners)
	}
	if len(f.Pods[inv.Devices[0].UUID]) != 0 {
		t.Error("GPU 0 attributed")
	}
	o.Pods = podresources.New(filepath.Join(t.TempDir(), "none.sock"))
	s = New(o)
	s.Round(context.Background())
	if st := status(s.Latest(), SourcePods); st.State != source.Absent || s.Latest().Pods != nil {
		t.Errorf("pod source without a kubelet: %+v", st)
	}
}

func TestCPUOnlyNode(t *testing.T) {
	n := newNode(t, "cpu-only")
	s := New(n.options())
	s.Round(context.Background())
	f := s.Latest()
	if len(f.GPUs) != 0 || len(f.RDMA) != 0 || f.HasCondition {
		t.Errorf("frame %+v", f)
	}
	for _, st := range f.Sources {
		if st.State != source.Absent {
			t.Errorf("source %+v", st)
		}
	}
}

// The simulated traffic moves the counters the sampler reads.
func TestSimulatedTraffic(t *testing.T) {
	n := newNode(t, "h100-roce")
	tr, err := sim.NewTraffic(n.Node, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	o := n.options()
	o.Traffic = tr
	s := New(o)
	s.Round(context.Background())
	a := counter(s.Latest().RDMA[0], "port_xmit_data")
	time.Sleep(50 * time.Millisecond)
	s.Round(context.Background())
	if b := counter(s.Latest().RDMA[0], "port_xmit_data"); b <= a {
		t.Errorf("port_xmit_data did not move: %d -> %d", a, b)
	}
}

// flakyPods answers from a list, or fails when told to.
type flakyPods struct {
	mu     sync.Mutex
	allocs []podresources.Allocation
	err    error
}

func (p *flakyPods) List(context.Context) ([]podresources.Allocation, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.allocs, p.err
}

// A kubelet that fails once keeps the last allocations; one that is gone
// (its socket absent) clears them.
func TestPodAllocationsSurviveAFailedList(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	pods := &flakyPods{allocs: []podresources.Allocation{{DeviceID: "GPU-x", Namespace: "ns", Pod: "p", Container: "c"}}}
	o := n.options()
	o.Pods = pods
	s := New(o)
	s.Round(context.Background())
	if len(s.Latest().Pods["GPU-x"]) != 1 {
		t.Fatalf("pods %v", s.Latest().Pods)
	}
	pods.mu.Lock()
	pods.err = errors.New("rpc error: code = Unavailable")
	pods.mu.Unlock()
	s.Round(context.Background())
	if f := s.Latest(); len(f.Pods["GPU-x"]) != 1 || status(f, SourcePods).State != source.Error {
		t.Errorf("after a failed List: pods %v, status %+v", f.Pods, status(f, SourcePods))
	}
	pods.mu.Lock()
	pods.err = source.NewAbsent("no kubelet")
	pods.mu.Unlock()
	s.Round(context.Background())
	if f := s.Latest(); f.Pods != nil {
		t.Errorf("pods kept without a kubelet: %v", f.Pods)
	}
}

// Two backends that read the same GPUs (AMD SMI and amdgpu sysfs on one
// node) report each GPU once: the first backend's.
func TestSameGPUFromTwoBackends(t *testing.T) {
	n := newNode(t, "dgx-b200-ib")
	second := nvml.New(n.lib)
	defer second.Close()
	o := n.options()
	o.Backends = append(o.Backends, namedBackend{second, "second"})
	s := New(o)
	s.Round(context.Background())
	f := s.Latest()
	if len(f.GPUs) != 8 || status(f, "second-sample").State != source.OK {
		t.Errorf("%d GPUs, second source %+v", len(f.GPUs), status(f, "second-sample"))
	}
}

// namedBackend renames a backend, so two can run side by side.
type namedBackend struct {
	*nvml.Backend
	name string
}

func (b namedBackend) Name() string { return b.name }

// One hung counter file (a FIFO nobody writes, in place of mlx5_3's
// port_xmit_data) costs mlx5_3 only: every other port is sampled while
// mlx5_3's read hangs, mlx5_3 is reported with the reason and not read
// again on top of the hung read, and its counters come back once the file
// answers.
func TestHungRDMACounterFile(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	o := n.options()
	o.Timeout = 2 * time.Second
	s := New(o)
	s.Round(context.Background())
	before := s.Latest().RDMA
	p := filepath.Join(n.Root, "sys/class/infiniband/mlx5_3/ports/1/counters/port_xmit_data")
	content, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	release := testsupport.Hang(t, p)
	for round, want := range []string{"timed out", "previous read has not returned"} {
		start := time.Now()
		s.Round(context.Background())
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("round %d took %s", round, el)
		}
		f := s.Latest()
		if len(f.RDMA) != 8 {
			t.Fatalf("round %d: %d RDMA ports, want 8", round, len(f.RDMA))
		}
		for i, pc := range f.RDMA {
			if i == 3 {
				if pc.Device != "mlx5_3" || pc.Port != 1 || len(pc.Counters) != 0 || !strings.Contains(strings.Join(pc.Errors, "\n"), want) {
					t.Errorf("round %d: hung port %+v, want no counters and %q", round, pc, want)
				}
				continue
			}
			if len(pc.Errors) > 0 || len(pc.Counters) != len(before[i].Counters) || !pc.Active() {
				t.Errorf("round %d: healthy port %s/%d lost data: %+v", round, pc.Device, pc.Port, pc)
			}
		}
		st := status(f, SourceRDMA)
		if st.State != source.OK || !strings.Contains(st.Message, "mlx5_3") || !strings.Contains(st.Message, want) {
			t.Errorf("round %d: source %+v, want ok (other ports answered) naming mlx5_3 and %q", round, st, want)
		}
	}
	release(string(content))
	testsupport.Eventually(t, "mlx5_3 sampled again", func() error {
		s.Round(context.Background())
		f := s.Latest()
		if st := status(f, SourceRDMA); st.State != source.OK || st.Message != "" {
			return fmt.Errorf("source %+v", st)
		}
		if pc := f.RDMA[3]; len(pc.Errors) > 0 || counter(pc, "port_xmit_data") == 0 {
			return fmt.Errorf("mlx5_3: %+v", pc)
		}
		return nil
	})
}

// syncBuffer is a log destination safe for the sampler's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A port whose PMA counters read "N/A (no PMA)", as an iWARP device's do on
// older kernels, has no counter series but the problem on its port, once,
// said plainly; the source is ok (the other ports were read) with the
// problem in its message, and the problem is logged once, as is its end.
func TestNoPMACounters(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	var logs syncBuffer
	o := n.options()
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := New(o)
	dir := filepath.Join(n.Root, "sys/class/infiniband/mlx5_3/ports/1/counters")
	names, err := os.ReadDir(dir)
	if err != nil || len(names) == 0 {
		t.Fatal(names, err)
	}
	saved := map[string][]byte{}
	for _, e := range names {
		p := filepath.Join(dir, e.Name())
		if saved[p], err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("N/A (no PMA)\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		s.Round(context.Background())
		n.clock.Advance(time.Second) // GPM samples must be over 100 ms apart
	}
	f := s.Latest()
	pc := f.RDMA[3]
	if pc.Device != "mlx5_3" || len(pc.Counters) != 0 || len(pc.Errors) != 1 || !strings.Contains(pc.Errors[0], "N/A (no PMA)") {
		t.Errorf("mlx5_3 port 1: %+v", pc)
	}
	if st := status(f, SourceRDMA); st.State != source.OK || !strings.Contains(st.Message, "mlx5_3 port 1: counters") {
		t.Errorf("source %+v", st)
	}
	warned := strings.Count(logs.String(), "level=WARN")
	if warned != 1 || !strings.Contains(logs.String(), "source="+SourceRDMA) || !strings.Contains(logs.String(), "no PMA") {
		t.Errorf("logged, want one warning naming the source and the problem:\n%s", logs.String())
	}
	for p, b := range saved {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.Round(context.Background())
	if st := status(s.Latest(), SourceRDMA); st.State != source.OK || st.Message != "" || len(s.Latest().RDMA[3].Counters) == 0 {
		t.Errorf("after the files came back: %+v, %+v", st, s.Latest().RDMA[3])
	}
	if !strings.Contains(logs.String(), "level=INFO") || strings.Count(logs.String(), "level=WARN") != 1 {
		t.Errorf("the end of the problem not logged once:\n%s", logs.String())
	}
}

// Each round says which GPUs the event watcher watches; a GPU it could not
// register is logged once, and again when it is watched.
func TestEventWatchInFrame(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	nvmlfake.SetReturn(n.lib, 4, "nvmlDeviceRegisterEvents", gonvml.ERROR_GPU_IS_LOST)
	var logs syncBuffer
	o := n.options()
	o.Interval = 50 * time.Millisecond
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	testsupport.Eventually(t, "GPU 4 reported unwatched", func() error {
		f := s.Latest()
		if f == nil || len(f.EventWatch) != 8 {
			return errors.New("no watch states yet")
		}
		for _, st := range f.EventWatch {
			if st.Watched == (st.GPU == 4) {
				return fmt.Errorf("%+v", f.EventWatch)
			}
		}
		return nil
	})
	if got := strings.Count(logs.String(), "GPU XID events not watched"); got != 1 || !strings.Contains(logs.String(), "gpu=4") {
		t.Errorf("%d warnings:\n%s", got, logs.String())
	}
}

// A watcher stuck in a hung NVML call does not hold up the sampler's stop:
// Run returns after StopTimeout and says which watcher it left behind.
func TestRunStopsWithAHungWatcher(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	nvmlfake.SetDelay(n.lib, 0, "nvmlDeviceGetSupportedEventTypes", 3*time.Second)
	var logs syncBuffer
	o := n.options()
	o.Interval = time.Hour
	o.StopTimeout = 200 * time.Millisecond
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	<-s.FirstRound()
	for nvmlfake.Calls(n.lib, "nvmlDeviceGetSupportedEventTypes") == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Run did not return with its event watcher hung")
	}
	if !strings.Contains(logs.String(), "GPU event watchers did not stop") || !strings.Contains(logs.String(), "backends=[nvml]") {
		t.Errorf("logs:\n%s", logs.String())
	}
}

// The sampler reads each RoCE port's facts and its netdev's pause frames
// through the DriverStats it is given (the simulated node's files here);
// pause counts, like the sysfs counters, go on across a driver reload
// that restarts them.
func TestPauseFramesAndPortFacts(t *testing.T) {
	n := newNode(t, "h100-roce")
	o := n.options()
	o.DriverStats = sim.DriverStats{Root: n.Root}
	s := New(o)
	s.Round(context.Background())
	p := s.Latest().RDMA[0]
	if p.Netdev == "" || p.PhysState != "LinkUp" || p.RateGbps != 400 || p.CarrierChanges == nil || *p.CarrierChanges != 2 {
		t.Fatalf("port facts: %+v", p)
	}
	if len(p.Pause) != 1 || p.Pause[0] != (rdma.PriorityPause{Priority: 3}) {
		t.Fatalf("pause before: %+v (errors %q)", p.Pause, p.Errors)
	}
	file := filepath.Join(n.Root, sim.EthtoolStatsPath(p.Netdev))
	write := func(rx, tx uint64) {
		b, err := json.Marshal(map[string]uint64{"rx_prio3_pause": rx, "tx_prio3_pause": tx})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(500, 70)
	s.Round(context.Background())
	write(20, 1) // the driver reloaded
	s.Round(context.Background())
	if got := s.Latest().RDMA[0].Pause; len(got) != 1 || got[0] != (rdma.PriorityPause{Priority: 3, RX: 520, TX: 71}) {
		t.Errorf("pause after a reset: %+v, want rx 520 tx 71", got)
	}
}
