package exporters_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	v1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpunode/gpunode/exporters"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/testsupport"
	"github.com/gpunode/gpunode/podresources"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/telemetry"
)

// parse reads an exposition into series: "name{labels}" -> value.
func parse(t *testing.T, scrape []byte) map[string]*model.Sample {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(scrape))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*model.Sample{}
	vec, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{Timestamp: model.Now()}, values(mfs)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range vec {
		out[s.Metric.String()] = s
	}
	return out
}

// find returns the samples of a metric whose labels include want.
func find(series map[string]*model.Sample, name string, want map[string]string) []*model.Sample {
	var out []*model.Sample
	for _, s := range series {
		if string(s.Metric[model.MetricNameLabel]) != name {
			continue
		}
		ok := true
		for k, v := range want {
			if string(s.Metric[model.LabelName(k)]) != v {
				ok = false
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// A scrape serves the cached frame: it makes no NVML call and reads no
// file, however often it runs.
func TestScrapeNeverTouchesDevices(t *testing.T) {
	n := newSimNode(t, "dgx-h100-ib")
	c := exporters.NewTelemetryCollector(n.sampler.Latest, func() *snapshot.Snapshot { return n.snap }, exporters.TelemetryOptions{DCGMCompat: true})
	calls := nvmlfake.TotalCalls(n.lib)
	for range 50 {
		if got := testutil.CollectAndCount(c); got < 1000 {
			t.Fatalf("%d series", got)
		}
	}
	if d := nvmlfake.TotalCalls(n.lib) - calls; d != 0 {
		t.Errorf("50 scrapes made %d NVML calls", d)
	}
}

// A lost GPU keeps its info and up=0 (and healthy=0) and loses its
// readings; every other GPU is exported as before.
func TestLostGPUExportsOnlyItsState(t *testing.T) {
	n := newSimNode(t, "dgx-b200-ib")
	nvmlfake.SetLost(n.lib, 4)
	n.clock.Advance(10 * time.Second)
	n.sampler.Round(context.Background())
	s := parse(t, n.gather(t, exporters.TelemetryOptions{DCGMCompat: true}))
	gpu4 := map[string]string{"gpu": "4"}
	for name, want := range map[string]int{"gpunode_gpu_info": 1, "gpunode_gpu_up": 1, "gpunode_gpu_healthy": 1,
		"gpunode_gpu_power_watts": 0, "gpunode_gpu_energy_joules_total": 0, "DCGM_FI_DEV_GPU_UTIL": 0} {
		if got := len(find(s, name, gpu4)); got != want {
			t.Errorf("GPU 4: %d series of %s, want %d", got, name, want)
		}
	}
	if v := find(s, "gpunode_gpu_up", gpu4)[0].Value; v != 0 {
		t.Errorf("gpunode_gpu_up = %v", v)
	}
	if v := find(s, "gpunode_gpu_health_problem", map[string]string{"gpu": "4", "reason": "GPULost"}); len(v) != 1 {
		t.Errorf("health problem series: %v", v)
	}
	for _, name := range []string{"gpunode_gpu_power_watts", "DCGM_FI_DEV_GPU_UTIL"} {
		if got := len(find(s, name, nil)); got != 7 {
			t.Errorf("%d series of %s, want 7", got, name)
		}
	}
}

type kubelet struct {
	v1.UnimplementedPodResourcesListerServer
	pods []*v1.PodResources
}

func (k *kubelet) List(context.Context, *v1.ListPodResourcesRequest) (*v1.ListPodResourcesResponse, error) {
	return &v1.ListPodResourcesResponse{PodResources: k.pods}, nil
}

// GPUs held by pods carry the pod on every per-GPU series, gpunode's and
// DCGM's; a time-sliced GPU names its first holder and lists all of them
// on gpunode_gpu_allocation_info.
func TestPodLabels(t *testing.T) {
	n := newSimNode(t, "h100-roce")
	uuid := func(i int) string { return n.snap.GPUs[i].UUID }
	socket := filepath.Join(t.TempDir(), "kubelet.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	v1.RegisterPodResourcesListerServer(srv, &kubelet{pods: []*v1.PodResources{
		{Namespace: "llm", Name: "decode-0", Containers: []*v1.ContainerResources{{Name: "vllm",
			Devices: []*v1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{uuid(1), uuid(2)}}}}}},
		{Namespace: "dev", Name: "notebook", Containers: []*v1.ContainerResources{{Name: "lab",
			Devices: []*v1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{uuid(5) + "::0"}}}}}},
		{Namespace: "dev", Name: "notebook-2", Containers: []*v1.ContainerResources{{Name: "lab",
			Devices: []*v1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{uuid(5) + "::1"}}}}}},
	}})
	go srv.Serve(l)
	defer srv.Stop()
	fsys, _ := hostfs.New(n.node.Root)
	pods := podresources.New(socket)
	defer pods.Close()
	b := nvml.New(n.lib)
	defer b.Close()
	sampler := telemetry.New(telemetry.Options{Interval: time.Second, Timeout: 10 * time.Second, FS: fsys,
		Backends: []gpu.Backend{b}, Pods: pods})
	sampler.Round(context.Background())
	reg := prometheus.NewRegistry()
	reg.MustRegister(exporters.NewTelemetryCollector(sampler.Latest, func() *snapshot.Snapshot { return n.snap },
		exporters.TelemetryOptions{DCGMCompat: true, Hostname: "node-7"}))
	var buf bytes.Buffer
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain)).Encode(mf)
	}
	s := parse(t, buf.Bytes())
	for _, tc := range []struct {
		gpu, ns, pod string
	}{{"1", "llm", "decode-0"}, {"2", "llm", "decode-0"}, {"5", "dev", "notebook"}, {"0", "", ""}} {
		for _, name := range []string{"gpunode_gpu_power_watts", "gpunode_gpu_up", "DCGM_FI_DEV_POWER_USAGE"} {
			got := find(s, name, map[string]string{"gpu": tc.gpu})
			if len(got) != 1 || string(got[0].Metric["namespace"]) != tc.ns || string(got[0].Metric["pod"]) != tc.pod {
				t.Errorf("GPU %s %s: %v", tc.gpu, name, got)
			}
			if tc.pod != "" && string(got[0].Metric["container"]) == "" {
				t.Errorf("GPU %s %s: no container", tc.gpu, name)
			}
		}
	}
	if got := find(s, "gpunode_gpu_allocation_info", map[string]string{"gpu": "5"}); len(got) != 2 {
		t.Errorf("allocation info of the shared GPU: %v", got)
	}
	if got := find(s, "DCGM_FI_DEV_GPU_TEMP", map[string]string{"gpu": "3", "Hostname": "node-7", "device": "nvidia3"}); len(got) != 1 {
		t.Errorf("DCGM labels: %v", got)
	}
}

// The DCGM names carry dcgm-exporter's units: MiB, MHz, percent, mJ.
func TestDCGMUnits(t *testing.T) {
	n := newSimNode(t, "dgx-h100-ib")
	s := parse(t, n.gather(t, exporters.TelemetryOptions{DCGMCompat: true}))
	g0 := map[string]string{"gpu": "0"}
	one := func(name string) float64 {
		t.Helper()
		got := find(s, name, g0)
		if len(got) != 1 {
			t.Fatalf("%s: %v", name, got)
		}
		return float64(got[0].Value)
	}
	checks := []struct {
		dcgm, gpunode string
		factor        float64
	}{
		{"DCGM_FI_DEV_GPU_UTIL", "gpunode_gpu_utilization_ratio", 100},
		{"DCGM_FI_DEV_POWER_USAGE", "gpunode_gpu_power_watts", 1},
		{"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "gpunode_gpu_energy_joules_total", 1000},
		{"DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gpunode_gpu_graphics_active_ratio", 1},
		{"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gpunode_gpu_tensor_active_ratio", 1},
		{"DCGM_FI_PROF_DRAM_ACTIVE", "gpunode_gpu_dram_active_ratio", 1},
		{"DCGM_FI_PROF_SM_ACTIVE", "gpunode_gpu_sm_active_ratio", 1},
		{"DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "gpunode_gpu_pcie_replay_errors_total", 1},
	}
	for _, c := range checks {
		if d, g := one(c.dcgm), one(c.gpunode)*c.factor; d != g && (d-g)/g > 1e-12 {
			t.Errorf("%s = %v, %s x %v = %v", c.dcgm, d, c.gpunode, c.factor, g)
		}
	}
	// As DCGM reads them from nvmlDeviceGetMemoryInfo_v2: used excludes
	// reserved, and the three make the total (each rounded down to MiB).
	if r := one("DCGM_FI_DEV_FB_RESERVED"); r != one("gpunode_gpu_memory_reserved_bytes")/(1<<20) || r == 0 {
		t.Errorf("FB reserved = %v MiB", r)
	}
	if u := one("DCGM_FI_DEV_FB_USED"); u != math.Floor(one("gpunode_gpu_memory_used_bytes")/(1<<20)) {
		t.Errorf("FB used = %v MiB, gpunode used %v bytes", u, one("gpunode_gpu_memory_used_bytes"))
	}
	used := one("DCGM_FI_DEV_FB_USED") + one("DCGM_FI_DEV_FB_FREE") + one("DCGM_FI_DEV_FB_RESERVED")
	if used < 81918 || used > 81920 {
		t.Errorf("FB used + free + reserved = %v MiB, want 80 GiB", used)
	}
	if one("DCGM_FI_DEV_SM_CLOCK") != 1980 || one("DCGM_FI_DEV_MEM_CLOCK") != 2619 {
		t.Error("clocks not in MHz")
	}
	if got := find(s, "DCGM_FI_DEV_GPU_UTIL", g0)[0].Metric["pci_bus_id"]; got != "00000000:1B:00.0" {
		t.Errorf("pci_bus_id %q, want NVML's form", got)
	}
	// The last XID's value, per GPU.
	nvmlfake.RaiseXID(n.lib, 0, 31)
	n.sampler.Event(gpu.Event{Time: time.Now(), GPU: 0, UUID: n.snap.GPUs[0].UUID, Kind: gpu.XID, Code: 31})
	s = parse(t, n.gather(t, exporters.TelemetryOptions{DCGMCompat: true}))
	if got := find(s, "DCGM_FI_DEV_XID_ERRORS", g0); len(got) != 1 || got[0].Value != 31 {
		t.Errorf("XID %v", got)
	}
	if got := find(s, "gpunode_gpu_xid_errors_total", map[string]string{"gpu": "0", "xid": "31"}); len(got) != 1 || got[0].Value != 1 {
		t.Errorf("xid counter %v", got)
	}
	if !strings.Contains(string(n.gather(t, exporters.TelemetryOptions{})), "gpunode_gpu_xid_errors_total") {
		t.Error("XIDs only in DCGM mode")
	}
}

func values(m map[string]*dto.MetricFamily) []*dto.MetricFamily {
	out := make([]*dto.MetricFamily, 0, len(m))
	for _, mf := range m {
		out = append(out, mf)
	}
	return out
}

// A GPU in MIG mode: each instance has its gpunode_gpu_mig_* series and
// dcgm-exporter's per-instance series with GPU_I_PROFILE and GPU_I_ID, the
// pod holding an instance labels that instance's series, and promtool
// finds nothing to object to in gpunode's names.
func TestMIG(t *testing.T) {
	uuids := make(chan []string, 1)
	var socket string
	n := newSimNodeWith(t, "dgx-h100-ib", func(m *nvmlfake.Machine) {
		m.GPUs[3].MIGEnabled = true
		m.GPUs[3].MIG = []string{"3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"}
		lib, err := nvmlfake.New(*m)
		if err != nil {
			t.Fatal(err)
		}
		lib.Init()
		h, _ := lib.DeviceGetHandleByIndex(3)
		var u []string
		for i := range 4 {
			md, _ := h.GetMigDeviceHandleByIndex(i)
			id, _ := md.GetUUID()
			u = append(u, id)
		}
		lib.Shutdown()
		uuids <- u
		socket = startKubelet(t, &v1.PodResources{Namespace: "llm", Name: "small-model", Containers: []*v1.ContainerResources{{
			Name: "vllm", Devices: []*v1.ContainerDevices{{ResourceName: "nvidia.com/mig-1g.10gb", DeviceIds: []string{u[2]}}}}}})
	}, func(o *telemetry.Options) { o.Pods = podresources.New(socket) })
	migUUIDs := <-uuids
	scrape := n.gather(t, exporters.TelemetryOptions{DCGMCompat: true, Hostname: "node-1"})
	s := parse(t, scrape)
	if got := find(s, "gpunode_gpu_mig_info", map[string]string{"gpu": "3"}); len(got) != 4 {
		t.Fatalf("MIG info: %v", got)
	}
	if got := find(s, "gpunode_gpu_mig_info", map[string]string{"gpu_instance": "3", "profile": "1g.10gb", "mig_uuid": migUUIDs[2]}); len(got) != 1 {
		t.Errorf("instance 3: %v", got)
	}
	for _, name := range []string{"gpunode_gpu_mig_memory_used_bytes", "gpunode_gpu_mig_graphics_active_ratio", "gpunode_gpu_mig_tensor_active_ratio"} {
		if got := find(s, name, map[string]string{"gpu": "3"}); len(got) != 4 {
			t.Errorf("%s: %d series", name, len(got))
		}
	}
	if got := find(s, "gpunode_gpu_mig_memory_total_bytes", map[string]string{"gpu_instance": "1"}); len(got) != 1 || got[0].Value != 40<<30 {
		t.Errorf("3g.40gb memory: %v", got)
	}
	// The pod labels follow the instance it holds, not the GPU.
	if got := find(s, "gpunode_gpu_mig_memory_used_bytes", map[string]string{"gpu_instance": "3", "pod": "small-model", "container": "vllm"}); len(got) != 1 {
		t.Errorf("owned instance: %v", got)
	}
	if got := find(s, "gpunode_gpu_power_watts", map[string]string{"gpu": "3"}); len(got) != 1 || got[0].Metric["pod"] != "" {
		t.Errorf("GPU-level series of a MIG GPU: %v", got)
	}
	if got := find(s, "gpunode_gpu_mig_allocation_info", map[string]string{"gpu_instance": "3", "resource": "nvidia.com/mig-1g.10gb"}); len(got) != 1 {
		t.Errorf("allocation info: %v", got)
	}
	// dcgm-exporter's per-instance series, as its dashboard groups them.
	for _, name := range []string{"DCGM_FI_DEV_FB_USED", "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"} {
		got := find(s, name, map[string]string{"gpu": "3"})
		withGI := 0
		for _, x := range got {
			if x.Metric["GPU_I_ID"] != "" && x.Metric["GPU_I_PROFILE"] != "" {
				withGI++
			}
		}
		if withGI != 4 {
			t.Errorf("%s: %d instance series of %v", name, withGI, got)
		}
	}
	if got := find(s, "DCGM_FI_DEV_FB_USED", map[string]string{"GPU_I_ID": "3", "pod": "small-model"}); len(got) != 1 {
		t.Errorf("DCGM instance pod labels: %v", got)
	}
	var gpunodeOnly []string
	for _, l := range strings.Split(string(scrape), "\n") {
		if !strings.Contains(l, "DCGM_FI_") {
			gpunodeOnly = append(gpunodeOnly, l)
		}
	}
	if problems := promtool(t, []byte(strings.Join(gpunodeOnly, "\n"))); len(problems) > 0 {
		t.Errorf("promtool: %v", problems)
	}
}

func startKubelet(t testing.TB, pods ...*v1.PodResources) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "kubelet.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	v1.RegisterPodResourcesListerServer(srv, &kubelet{pods: pods})
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return socket
}

// A port whose PMA counters read "N/A (no PMA)" (an iWARP device on an
// older kernel) loses those series but keeps its identity and state, and
// says on gpunode_rdma_port_read_errors that its files could not be read;
// every other port reads 0 there.
func TestRDMAPortReadErrors(t *testing.T) {
	n := newSimNode(t, "dgx-h100-ib")
	dir := filepath.Join(n.node.Root, "sys/class/infiniband/mlx5_3/ports/1/counters")
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range names {
		if err := os.WriteFile(filepath.Join(dir, e.Name()), []byte("N/A (no PMA)\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n.sampler.Round(context.Background())
	s := parse(t, n.gather(t, exporters.TelemetryOptions{}))
	mlx53 := map[string]string{"device": "mlx5_3", "port": "1"}
	for name, want := range map[string]int{"gpunode_rdma_port_info": 1, "gpunode_rdma_port_up": 1, "gpunode_rdma_port_read_errors": 1,
		"gpunode_rdma_port_transmit_bytes_total": 0, "gpunode_rdma_port_symbol_errors_total": 0} {
		if got := len(find(s, name, mlx53)); got != want {
			t.Errorf("mlx5_3: %d series of %s, want %d", got, name, want)
		}
	}
	for _, v := range find(s, "gpunode_rdma_port_read_errors", nil) {
		want := map[bool]model.SampleValue{true: 1, false: 0}[v.Metric["device"] == "mlx5_3"]
		if v.Value != want {
			t.Errorf("%s = %v, want %v", v.Metric, v.Value, want)
		}
	}
	if got := len(find(s, "gpunode_rdma_port_transmit_bytes_total", nil)); got != 7 {
		t.Errorf("%d ports export transmit bytes, want 7", got)
	}
}

// A GPU instance split into compute instances: each compute instance is a
// MIG device with its own gpunode_gpu_mig_* series (keyed by
// compute_instance, so the gather has no duplicates), and dcgm-exporter's
// series, which name only the GPU instance, come once per GPU instance.
func TestMIGComputeInstances(t *testing.T) {
	n := newSimNodeWith(t, "dgx-h100-ib", func(m *nvmlfake.Machine) {
		m.GPUs[3].MIGEnabled = true
		m.GPUs[3].MIG = []string{"4g.40gb", "1g.10gb"}
		m.GPUs[3].MIGComputeInstances = []int{2}
	}, nil)
	s := parse(t, n.gather(t, exporters.TelemetryOptions{DCGMCompat: true, Hostname: "node-1"}))
	if got := find(s, "gpunode_gpu_mig_info", map[string]string{"gpu": "3", "gpu_instance": "1", "profile": "2c.4g.40gb"}); len(got) != 2 {
		t.Errorf("compute instances of GPU instance 1: %v", got)
	}
	for _, name := range []string{"gpunode_gpu_mig_memory_used_bytes", "gpunode_gpu_mig_sm_active_ratio"} {
		for _, ci := range []string{"0", "1"} {
			if got := find(s, name, map[string]string{"gpu": "3", "gpu_instance": "1", "compute_instance": ci}); len(got) != 1 {
				t.Errorf("%s of compute instance %s: %v", name, ci, got)
			}
		}
	}
	if got := find(s, "DCGM_FI_PROF_SM_ACTIVE", map[string]string{"gpu": "3", "GPU_I_ID": "1"}); len(got) != 1 {
		t.Errorf("DCGM series of GPU instance 1: %v", got)
	}
}

// gpunode_gpu_xid_watch_up says which GPUs the event watcher watches: 0
// for one it could not register.
func TestXIDWatchUp(t *testing.T) {
	var b *nvml.Backend
	n := newSimNodeWith(t, "dgx-h100-ib", nil, func(o *telemetry.Options) { b = o.Backends[0].(*nvml.Backend) })
	nvmlfake.SetReturn(n.lib, 2, "nvmlDeviceRegisterEvents", gonvml.ERROR_GPU_IS_LOST)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.WatchEvents(ctx, func(gpu.Event) {}); close(done) }()
	defer func() { cancel(); <-done }()
	testsupport.Eventually(t, "watch states", func() error {
		if got := len(b.EventWatch()); got != 8 {
			return fmt.Errorf("%d states", got)
		}
		return nil
	})
	n.sampler.Round(context.Background())
	s := parse(t, n.gather(t, exporters.TelemetryOptions{}))
	up := find(s, "gpunode_gpu_xid_watch_up", nil)
	if len(up) != 8 {
		t.Fatalf("%d series: %v", len(up), up)
	}
	for _, m := range up {
		want := 1.0
		if m.Metric["gpu"] == "2" {
			want = 0
		}
		if float64(m.Value) != want || m.Metric["uuid"] == "" || m.Metric["pci_bus_id"] == "" {
			t.Errorf("%v", m)
		}
	}
}

// An AMD GPU's clock reasons have no DCGM bits: it has no
// DCGM_FI_DEV_CLOCK_THROTTLE_REASONS rather than a 0 that says unthrottled.
func TestDCGMThrottleReasonsOnlyForNVML(t *testing.T) {
	n := newSimNode(t, "mi355x-roce")
	s := parse(t, n.gather(t, exporters.TelemetryOptions{DCGMCompat: true}))
	if got := find(s, "gpunode_gpu_clocks_event_reasons", map[string]string{"gpu": "0", "reason": "hbm_thermal"}); len(got) != 1 {
		t.Fatalf("GPU 0 reports no hbm_thermal: %v", got)
	}
	if got := find(s, "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", nil); len(got) != 0 {
		t.Errorf("DCGM throttle reasons on AMD GPUs: %v", got)
	}
}
