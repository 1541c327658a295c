package metrics

import (
	"bufio"
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
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	v1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/sim"
)

func shmDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "gpunode-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// simUUIDs are the GPU UUIDs a simulated node reports (they follow from
// its name).
func simUUIDs(t testing.TB, name string) []string {
	t.Helper()
	n, err := sim.Build(name, shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	lib, err := nvmlfake.New(*n.NVIDIA)
	if err != nil {
		t.Fatal(err)
	}
	lib.Init()
	defer lib.Shutdown()
	var uuids []string
	for i := range n.NVIDIA.GPUs {
		h, _ := lib.DeviceGetHandleByIndex(i)
		u, ret := h.GetUUID()
		if ret != gonvml.SUCCESS {
			t.Fatal(ret)
		}
		uuids = append(uuids, u)
	}
	return uuids
}

type kubelet struct {
	v1.UnimplementedPodResourcesListerServer
	pods []*v1.PodResources
}

func (k *kubelet) List(context.Context, *v1.ListPodResourcesRequest) (*v1.ListPodResourcesResponse, error) {
	return &v1.ListPodResourcesResponse{PodResources: k.pods}, nil
}

// startKubelet serves the pod-resources v1 API on a temporary socket.
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

func writeConfig(t testing.TB, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gpunode.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func single(t testing.TB, v model.Vector, what string) float64 {
	t.Helper()
	if len(v) != 1 {
		t.Fatalf("%s: %d results, want 1: %v", what, len(v), v)
	}
	return float64(v[0].Value)
}

// window is the range the rate checks use; the agent samples every 200 ms
// and Prometheus scrapes every second, so a scraped counter is at most one
// sample old and rate() over the window is within a few percent of the
// true rate.
const window = "15s"

// energyRateIsPower checks that on each of the node's gpus the energy
// counter's rate is the mean power over the window, within 8%.
func energyRateIsPower(t *testing.T, prom *prometheus, gpus int) {
	t.Helper()
	expr := fmt.Sprintf(`abs(rate(gpunode_gpu_energy_joules_total[%[1]s]) - avg_over_time(gpunode_gpu_power_watts[%[1]s]))
		/ avg_over_time(gpunode_gpu_power_watts[%[1]s])`, window)
	v := prom.query(t, expr)
	if len(v) != gpus {
		t.Fatalf("%d GPUs in %s", len(v), expr)
	}
	worst := 0.0
	for _, s := range v {
		worst = max(worst, float64(s.Value))
		if !(s.Value <= 0.08) { // NaN fails too
			t.Errorf("GPU %s: energy rate off the mean power by %.1f%%", s.Metric["gpu"], 100*s.Value)
		}
	}
	t.Logf("rate(energy) within %.2f%% of avg_over_time(power) on all %d GPUs", 100*worst, gpus)
}

// A real Prometheus scrapes the agent on a simulated DGX H100: the series
// are there, counters behave under rate() (the energy counter's rate is
// the power gauge, the RDMA byte counters' rates are the simulated
// traffic), pod labels arrive, and every panel of NVIDIA's dcgm-exporter
// dashboard has data.
func TestPrometheusScrapesASimulatedNode(t *testing.T) {
	uuids := simUUIDs(t, "dgx-h100-ib")
	socket := startKubelet(t, &v1.PodResources{Namespace: "llm", Name: "decode-0", Containers: []*v1.ContainerResources{{
		Name: "vllm", Devices: []*v1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{uuids[2], uuids[3]}}}}}})
	cfg := writeConfig(t, fmt.Sprintf("metrics:\n  sampleInterval: 1s\n  podResourcesSocket: %s\n", socket))
	a := startAgent(t, "--simulate=dgx-h100-ib", "--config="+cfg, "--metrics.dcgm-compat")
	prom := startPrometheus(t, a.addr)

	// Wait for a full window of scrapes.
	prom.waitFor(t, `count_over_time(gpunode_gpu_energy_joules_total{gpu="0"}[1m])`, 60*time.Second, func(v model.Vector) bool {
		return len(v) == 1 && v[0].Value >= 16
	})
	if single(t, prom.query(t, `up{job="gpunode"}`), "up") != 1 {
		t.Fatal("target down")
	}

	t.Run("series", func(t *testing.T) {
		for expr, want := range map[string]float64{
			`count(gpunode_gpu_info)`:                                                        8,
			`count(gpunode_gpu_up == 1)`:                                                     8,
			`count(gpunode_gpu_healthy == 1)`:                                                8,
			`count(gpunode_gpu_xid_watch_up == 1)`:                                           8,
			`sum(gpunode_gpu_interconnect_links_active)`:                                     8 * 18,
			`count(gpunode_rdma_port_up == 1)`:                                               8,
			`count(gpunode_rdma_port_info{link_layer="InfiniBand"})`:                         8,
			`sum(gpunode_rdma_port_rate_bytes_per_second)`:                                   8 * 50e9,
			`count(gpunode_gpu_memory_total_bytes == 80 * 1024^3)`:                           8,
			`min(gpunode_source_up)`:                                                         1,
			`count(gpunode_gpu_power_watts{namespace="llm",pod="decode-0"})`:                 2,
			`count(DCGM_FI_DEV_GPU_UTIL{pod="decode-0",container="vllm"})`:                   2,
			`count(gpunode_gpu_allocation_info{resource="nvidia.com/gpu"})`:                  2,
			`count(gpunode_gpu_power_watts unless on(gpu) gpunode_gpu_power_watts{pod!=""})`: 6,
		} {
			if got := single(t, prom.query(t, expr), expr); got != want {
				t.Errorf("%s = %v, want %v", expr, got, want)
			}
		}
	})

	t.Run("energy rate is power", func(t *testing.T) { energyRateIsPower(t, prom, 8) })

	t.Run("rdma rates are the traffic", func(t *testing.T) {
		n, err := sim.Build("dgx-h100-ib", shmDir(t))
		if err != nil {
			t.Fatal(err)
		}
		traffic, err := sim.NewTraffic(n, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		worst := 0.0
		for _, dir := range []struct{ metric, file string }{
			{"gpunode_rdma_port_transmit_bytes_total", "port_xmit_data"},
			{"gpunode_rdma_port_receive_bytes_total", "port_rcv_data"},
			{"gpunode_rdma_port_transmit_packets_total", "port_xmit_packets"},
		} {
			v := prom.query(t, fmt.Sprintf("rate(%s[%s])", dir.metric, window))
			if len(v) != 8 {
				t.Fatalf("%d ports in rate(%s)", len(v), dir.metric)
			}
			for _, s := range v {
				dev := string(s.Metric["device"])
				perSecond, ok := traffic.Rate(dev, 1, dir.file)
				if !ok {
					t.Fatalf("no traffic on %s", dev)
				}
				want := perSecond
				if strings.HasSuffix(dir.file, "_data") {
					want *= 4 // words to bytes
				}
				got := float64(s.Value)
				off := math.Abs(got-want) / want
				worst = max(worst, off)
				if !(off <= 0.08) {
					t.Errorf("rate(%s{device=%q}) = %.4g, the traffic is %.4g per second", dir.metric, dev, got, want)
				}
			}
		}
		t.Logf("rate() of RDMA byte and packet counters within %.2f%% of the simulated traffic on all 8 ports", 100*worst)
		// Error counters that do not move have a rate of zero.
		if got := single(t, prom.query(t, fmt.Sprintf(`sum(rate(gpunode_rdma_port_link_downed_total[%s]))`, window)), "link_downed"); got != 0 {
			t.Errorf("link_downed rate %v", got)
		}
	})

	t.Run("counters are monotonic", func(t *testing.T) {
		for _, m := range []string{"gpunode_gpu_energy_joules_total", "gpunode_gpu_interconnect_transmit_bytes_total",
			"gpunode_gpu_pcie_receive_bytes_total", "gpunode_rdma_port_receive_bytes_total"} {
			if got := single(t, prom.query(t, fmt.Sprintf("sum(resets(%s[1m]))", m)), m); got != 0 {
				t.Errorf("%s reset %v times", m, got)
			}
		}
		nv := prom.query(t, fmt.Sprintf(`sum by (gpu) (rate(gpunode_gpu_interconnect_transmit_bytes_total[%s]))`, window))
		for _, s := range nv {
			if s.Value < 18*25e9*0.05 || s.Value > 18*25e9*1.1 {
				t.Errorf("GPU %s NVLink transmit %.3g B/s is not plausible for 18 links at 25 GB/s", s.Metric["gpu"], s.Value)
			}
		}
	})

	t.Run("dcgm-exporter dashboard 12239", func(t *testing.T) {
		dashboard(t, prom)
	})
}

// dashboard runs every query of the dcgm-exporter dashboard with its
// variables set to "All" and requires data from each.
func dashboard(t *testing.T, prom *prometheus) {
	f, err := os.Open("testdata/dcgm-exporter-dashboard-12239.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vars := strings.NewReplacer(`"$Hostname"`, `".+"`, `"$gpu"`, `".+"`)
	panels := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, "\t")
		if len(parts) != 3 {
			t.Fatalf("bad line %q", line)
		}
		kind, title, expr := parts[0], parts[1], vars.Replace(parts[2])
		switch kind {
		case "variable":
			// label_values(<selector>, <label>)
			inner := strings.TrimSuffix(strings.TrimPrefix(expr, "label_values("), ")")
			i := strings.LastIndex(inner, ",")
			selector, label := strings.TrimSpace(inner[:i]), strings.TrimSpace(inner[i+1:])
			vals := prom.labelValues(t, label, selector)
			if len(vals) == 0 {
				t.Errorf("variable %s (%s) has no values", title, expr)
			}
			if label == "gpu" && len(vals) != 8 {
				t.Errorf("variable gpu has %d values, want 8: %v", len(vals), vals)
			}
		case "panel":
			panels++
			v := prom.query(t, expr)
			if len(v) == 0 {
				t.Errorf("panel %q has no data: %s", title, expr)
			}
			for _, s := range v {
				if math.IsNaN(float64(s.Value)) || s.Value < 0 {
					t.Errorf("panel %q: %v", title, s)
				}
			}
		}
	}
	if panels != 8 {
		t.Errorf("%d panels, want the dashboard's 8", panels)
	}
}
