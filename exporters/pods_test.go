package exporters_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	v1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpunode/gpunode/exporters"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/podlabels"
	"github.com/gpunode/gpunode/podresources"
	"github.com/gpunode/gpunode/telemetry"
	"github.com/gpunode/gpunode/test/kube"
)

// podKubelet is a kubelet pod-resources server whose pods the test sets
// once the GPUs' UUIDs are known.
type podKubelet struct {
	v1.UnimplementedPodResourcesListerServer
	mu   sync.Mutex
	pods []*v1.PodResources
}

func (k *podKubelet) List(context.Context, *v1.ListPodResourcesRequest) (*v1.ListPodResourcesResponse, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return &v1.ListPodResourcesResponse{PodResources: k.pods}, nil
}

func gpuPod(ns, name, ctr string, ids ...string) *v1.PodResources {
	return &v1.PodResources{Namespace: ns, Name: name, Containers: []*v1.ContainerResources{{Name: ctr,
		Devices: []*v1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: ids}}}}}
}

// Container IDs and pod UIDs of the processes, as cgroup v2 with the
// systemd driver and containerd names them (procpod's tests hold the
// real-world shapes).
const (
	uidDecode0 = "11111111-2222-4333-8444-555555555555"
	uidDecode1 = "21111111-2222-4333-8444-555555555555"
	uidMPS     = "31111111-2222-4333-8444-555555555555"
	uidBig     = "41111111-2222-4333-8444-555555555555"
	uidSmall   = "51111111-2222-4333-8444-555555555555"
	uidStray   = "61111111-2222-4333-8444-555555555555"
)

func cgroupLine(uid string, ctr byte) string {
	return "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(uid, "-", "_") +
		".slice/cri-containerd-" + strings.Repeat(string(ctr), 64) + ".scope\n"
}

// podsNode is dgx-h100-ib with processes: GPU 0 time-sliced by two pods
// (decode-0 also holds GPU 1 alone, which names its UID), GPU 2 under MPS
// (the MPS server on the host, two clients in one pod), GPU 3 in MIG mode
// with a pod per instance, GPU 4 running a process of a pod that holds no
// GPU through the device plugin. It is sampled twice with the pods known,
// ten seconds apart.
func podsNode(t *testing.T) (*simNode, []*telemetry.Frame) {
	t.Helper()
	return podsNodeWith(t, nil)
}

// podsNodeWith is podsNode with more sampler options (pod labels).
func podsNodeWith(t *testing.T, opts func(*telemetry.Options)) (*simNode, []*telemetry.Frame) {
	t.Helper()
	k := &podKubelet{}
	socket := filepath.Join(t.TempDir(), "kubelet.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	v1.RegisterPodResourcesListerServer(srv, k)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	pods := podresources.New(socket)
	t.Cleanup(func() { pods.Close() })
	n := newSimNodeWith(t, "dgx-h100-ib", func(m *nvmlfake.Machine) {
		m.GPUs[0].Processes = []nvmlfake.Process{{PID: 2001, MemoryBytes: 30 << 30, SMShare: 0.6}, {PID: 1001, MemoryBytes: 10 << 30, SMShare: 0.2}}
		m.GPUs[1].Processes = []nvmlfake.Process{{PID: 2001, MemoryBytes: 60 << 30, SMShare: 0.9}}
		m.GPUs[2].Processes = []nvmlfake.Process{{PID: 3000, MemoryBytes: 32 << 20},
			{PID: 3001, Kind: nvmlfake.ProcessMPS, MemoryBytes: 20 << 30, SMShare: 0.3},
			{PID: 3002, Kind: nvmlfake.ProcessMPS, MemoryBytes: 20 << 30, SMShare: 0.3}}
		m.GPUs[3].MIGEnabled = true
		m.GPUs[3].MIG = []string{"3g.40gb", "1g.10gb"}
		m.GPUs[3].Processes = []nvmlfake.Process{{PID: 5000, MemoryBytes: 30 << 30, MIGDevice: 0}, {PID: 5001, MemoryBytes: 5 << 30, MIGDevice: 1}}
		m.GPUs[4].Processes = []nvmlfake.Process{{PID: 6000, MemoryBytes: 8 << 30, SMShare: 0.5}}
	}, func(o *telemetry.Options) {
		o.Pods = pods
		if opts != nil {
			opts(o)
		}
	})

	for pid, line := range map[string]string{
		"2001": cgroupLine(uidDecode0, 'a'), "1001": cgroupLine(uidDecode1, 'b'),
		"3000": "0::/system.slice/nvidia-mps.service\n", "3001": cgroupLine(uidMPS, 'c'), "3002": cgroupLine(uidMPS, 'c'),
		"5000": cgroupLine(uidBig, 'd'), "5001": cgroupLine(uidSmall, 'e'), "6000": cgroupLine(uidStray, 'f'),
	} {
		dir := filepath.Join(n.node.Root, "proc", pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f := n.sampler.Latest()
	uuid := func(i int) string { return f.GPUs[i].UUID }
	k.mu.Lock()
	k.pods = []*v1.PodResources{
		gpuPod("llm", "decode-0", "vllm", uuid(0)+"::0", uuid(1)),
		gpuPod("llm", "decode-1", "vllm", uuid(0)+"::1"),
		gpuPod("batch", "mps-job", "worker", uuid(2)),
		gpuPod("infer", "big", "server", f.GPUs[3].MIG[0].UUID),
		gpuPod("infer", "small", "server", f.GPUs[3].MIG[1].UUID),
	}
	k.mu.Unlock()
	var frames []*telemetry.Frame
	for range 2 {
		n.clock.Advance(10 * time.Second)
		n.sampler.Round(context.Background())
		frames = append(frames, n.sampler.Latest())
	}
	return n, frames
}

// The per-pod series of a node with processes, byte for byte.
func TestGoldenPodMetrics(t *testing.T) {
	n, _ := podsNode(t)
	got := n.gather(t, exporters.TelemetryOptions{})
	var pods strings.Builder
	for _, l := range strings.SplitAfter(string(got), "\n") {
		if strings.Contains(l, "gpunode_gpu_pod_") || strings.Contains(l, "gpunode_gpu_processes") {
			pods.WriteString(l)
		}
	}
	golden(t, "metrics-dgx-h100-ib-pods.prom", []byte(pods.String()))
	if problems := promtool(t, got); len(problems) > 0 {
		t.Errorf("promtool check metrics:\n%s", strings.Join(problems, "\n"))
	}
}

// The allocation and per-pod series with pod labels copied from a real
// API server: three keys, the model label capped at two values (the
// node's third model is dropped and counted), pods of another node
// ignored; byte for byte.
func TestGoldenPodLabelMetrics(t *testing.T) {
	c := kube.StartT(t, kube.Options{})
	ctx := context.Background()
	for _, ns := range []string{"llm", "batch", "infer"} {
		if err := c.CreateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	llm := func(model, role string) map[string]string {
		return map[string]string{"app.kubernetes.io/name": "vllm", "llm-d.ai/model": model, "llm-d.ai/role": role}
	}
	for _, p := range []struct {
		ns, name, node string
		labels         map[string]string
	}{
		{"llm", "decode-0", "gpu-1", llm("llama-70b", "decode")},
		{"llm", "decode-1", "gpu-1", llm("llama-70b", "decode")},
		{"batch", "mps-job", "gpu-1", map[string]string{"app.kubernetes.io/name": "trainer"}},
		{"infer", "big", "gpu-1", llm("qwen-32b", "prefill")},
		{"infer", "small", "gpu-1", llm("mistral-7b", "decode")},
		{"llm", "decode-0", "gpu-2", llm("other-node", "decode")},
	} {
		if p.node == "gpu-2" {
			p.ns = "batch" // same name, other namespace and node: never matched
		}
		if _, err := c.CreatePod(ctx, p.ns, p.name, p.node, p.labels); err != nil {
			t.Fatal(err)
		}
	}
	cache := podlabels.New(podlabels.Options{Keys: []string{"app.kubernetes.io/name", "llm-d.ai/model", "llm-d.ai/role"}, MaxValues: 2,
		Interval: time.Minute, List: func(ctx context.Context) ([]kubeapi.Pod, error) { return c.AdminKube.ListPodsOnNode(ctx, "gpu-1") }})
	cache.Refresh(ctx)
	n, _ := podsNodeWith(t, func(o *telemetry.Options) { o.PodLabels = cache })
	got := n.gather(t, exporters.TelemetryOptions{})
	var pods strings.Builder
	for _, l := range strings.SplitAfter(string(got), "\n") {
		if strings.Contains(l, "gpunode_gpu_pod_") || strings.Contains(l, "allocation_info") || strings.Contains(l, `source="pod-labels"`) {
			pods.WriteString(l)
		}
	}
	golden(t, "metrics-dgx-h100-ib-pod-labels.prom", []byte(pods.String()))
	if problems := promtool(t, got); len(problems) > 0 {
		t.Errorf("promtool check metrics:\n%s", strings.Join(problems, "\n"))
	}
}

func usage(f *telemetry.Frame, gpu int, pod string) *telemetry.PodUsage {
	for i, u := range f.PodUsage {
		if u.GPU == gpu && u.Pod == pod {
			return &f.PodUsage[i]
		}
	}
	return nil
}

// Each GPU's energy between two rounds is all attributed, to pods by their
// SM share and the rest to the row with no pod; pods are named through
// cgroup UIDs and pod-resources, also on the time-sliced GPU.
func TestPodEnergySplit(t *testing.T) {
	_, frames := podsNode(t)
	a, b := frames[0], frames[1]
	for i, g := range b.GPUs {
		dE := float64(*g.EnergyMillijoules-*a.GPUs[i].EnergyMillijoules) / 1000
		sum := 0.0
		for _, u := range b.PodUsage {
			if u.GPU == i {
				prev := 0.0
				for _, p := range a.PodUsage {
					if p.GPU == i && p.GPUInstance == u.GPUInstance && p.Namespace == u.Namespace && p.Pod == u.Pod && p.Container == u.Container {
						prev = p.EnergyJoules
					}
				}
				sum += u.EnergyJoules - prev
			}
		}
		if math.Abs(sum-dE) > 1e-6*dE {
			t.Errorf("GPU %d: pods got %.3f J of %.3f J", i, sum, dE)
		}
	}
	dE0 := float64(*b.GPUs[0].EnergyMillijoules-*a.GPUs[0].EnergyMillijoules) / 1000
	for _, pod := range []string{"decode-0", "decode-1"} {
		ua, ub := usage(a, 0, pod), usage(b, 0, pod)
		if ua == nil || ub == nil || ub.SMUtilization == nil || ub.Container != "vllm" || ub.Processes != 1 {
			t.Fatalf("GPU 0 %s: %+v", pod, ub)
		}
		if got, want := ub.EnergyJoules-ua.EnergyJoules, dE0**ub.SMUtilization; math.Abs(got-want) > 1e-6*want {
			t.Errorf("GPU 0 %s: %.3f J, want %.3f (SM share %.2f)", pod, got, want, *ub.SMUtilization)
		}
	}
	if u := usage(b, 2, "mps-job"); u == nil || u.Processes != 2 || *u.MemoryUsedBytes != 40<<30 {
		t.Errorf("MPS clients: %+v", u)
	}
	if u := usage(b, 2, ""); u == nil || u.Processes != 1 {
		t.Errorf("MPS server on the host: %+v", u)
	}
	if u := usage(b, 4, ""); u == nil || u.Processes != 1 || math.Abs(*u.SMUtilization-0.5**b.GPUs[4].Utilization) > 0.011 {
		t.Errorf("process of a pod holding no GPU: %+v", u)
	}
	// MIG: energy by compute slices (3 and 1) times each instance's GPM SM activity.
	big, small := usage(b, 3, "big"), usage(b, 3, "small")
	bigA, smallA := usage(a, 3, "big"), usage(a, 3, "small")
	if big == nil || small == nil || bigA == nil || smallA == nil || big.GPUInstance != 1 || small.GPUInstance != 2 {
		t.Fatalf("MIG pods: big %+v, small %+v", big, small)
	}
	mig := b.GPUs[3].MIG
	want := 3 * *mig[0].Profiling.SMActive / (1 * *mig[1].Profiling.SMActive)
	if got := (big.EnergyJoules - bigA.EnergyJoules) / (small.EnergyJoules - smallA.EnergyJoules); math.Abs(got-want) > 1e-6*want {
		t.Errorf("MIG energy big/small %.4f, want %.4f", got, want)
	}
}

// BenchmarkSamplingRoundProcesses is one sampling round of a simulated DGX
// H100 (8 GPUs, NVML fake, 8 InfiniBand ports, the kubelet on a socket),
// without processes and with 64: a pod per GPU running eight, every
// process's cgroup read from the host tree and its pod named through
// pod-resources. The difference is the process lists, the cgroup reads
// and the attribution.
func BenchmarkSamplingRoundProcesses(b *testing.B) {
	for _, perGPU := range []int{0, 8} {
		b.Run(strconv.Itoa(8*perGPU)+"-processes", func(b *testing.B) {
			k := &podKubelet{}
			socket := filepath.Join(b.TempDir(), "kubelet.sock")
			l, err := net.Listen("unix", socket)
			if err != nil {
				b.Fatal(err)
			}
			srv := grpc.NewServer()
			v1.RegisterPodResourcesListerServer(srv, k)
			go srv.Serve(l)
			b.Cleanup(srv.Stop)
			pods := podresources.New(socket)
			b.Cleanup(func() { pods.Close() })
			n := newSimNodeWith(b, "dgx-h100-ib", func(m *nvmlfake.Machine) {
				for g := range m.GPUs {
					for p := range perGPU {
						m.GPUs[g].Processes = append(m.GPUs[g].Processes, nvmlfake.Process{PID: uint32(1000 + 10*g + p), MemoryBytes: 4 << 30, SMShare: 0.1})
					}
				}
			}, func(o *telemetry.Options) { o.Pods = pods })
			f := n.sampler.Latest()
			var all []*v1.PodResources
			for g := range 8 {
				// One pod per GPU, its processes the workers of one
				// server (MPS clients or tensor-parallel ranks).
				uid := fmt.Sprintf("%08x-0000-4000-8000-000000000000", g)
				for p := range perGPU {
					dir := filepath.Join(n.node.Root, "proc", strconv.Itoa(1000+10*g+p))
					if err := os.MkdirAll(dir, 0o755); err != nil {
						b.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroupLine(uid, 'a'+byte(g))), 0o644); err != nil {
						b.Fatal(err)
					}
				}
				all = append(all, gpuPod("llm", fmt.Sprintf("server-%d", g), "vllm", f.GPUs[g].UUID))
			}
			k.mu.Lock()
			k.pods = all
			k.mu.Unlock()
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				n.clock.Advance(time.Second)
				n.sampler.Round(ctx)
			}
			b.StopTimer()
			for _, u := range n.sampler.Latest().PodUsage {
				if u.Pod != "" && u.Processes != perGPU {
					b.Fatalf("pod row %+v, want %d processes", u, perGPU)
				}
			}
		})
	}
}
