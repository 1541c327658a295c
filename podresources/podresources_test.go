package podresources

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	v1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpunode/gpunode/internal/source"
)

// kubelet serves the real pod-resources v1 API, as the kubelet does, from
// a list the test sets.
type kubelet struct {
	v1.UnimplementedPodResourcesListerServer
	pods  atomic.Pointer[[]*v1.PodResources]
	calls atomic.Int32
}

func (k *kubelet) List(context.Context, *v1.ListPodResourcesRequest) (*v1.ListPodResourcesResponse, error) {
	k.calls.Add(1)
	return &v1.ListPodResourcesResponse{PodResources: *k.pods.Load()}, nil
}

// serve starts the server on socket; the returned stop ends it.
func serve(t *testing.T, socket string, k *kubelet) (stop func()) {
	t.Helper()
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	v1.RegisterPodResourcesListerServer(srv, k)
	go srv.Serve(l)
	return srv.Stop
}

func pod(ns, name string, ctrs ...*v1.ContainerResources) *v1.PodResources {
	return &v1.PodResources{Namespace: ns, Name: name, Containers: ctrs}
}

func ctr(name string, devs ...*v1.ContainerDevices) *v1.ContainerResources {
	return &v1.ContainerResources{Name: name, Devices: devs, CpuIds: []int64{2, 3}}
}

func devs(resource string, ids ...string) *v1.ContainerDevices {
	return &v1.ContainerDevices{ResourceName: resource, DeviceIds: ids,
		Topology: &v1.TopologyInfo{Nodes: []*v1.NUMANode{{ID: 0}}}}
}

func TestListAgainstAKubeletServer(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "kubelet.sock")
	c := New(socket)
	defer c.Close()
	if _, err := c.List(context.Background()); !errors.Is(err, source.ErrAbsent) {
		t.Fatalf("no socket: %v", err)
	}

	k := &kubelet{}
	k.pods.Store(&[]*v1.PodResources{
		pod("llm", "vllm-decode-0", ctr("engine", devs("nvidia.com/gpu", "GPU-bbbb", "GPU-aaaa")), ctr("sidecar")),
		pod("llm", "prefill-1", ctr("engine", devs("nvidia.com/gpu", "GPU-cccc::0", "GPU-cccc::1"), devs("rdma/rdma_shared_device_a", "rdma0"))),
		pod("batch", "notebook", ctr("lab", devs("nvidia.com/gpu", "GPU-cccc::2"))),
		pod("kube-system", "coredns"),
	})
	stop := serve(t, socket, k)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Allocation{
		{DeviceID: "GPU-aaaa", Resource: "nvidia.com/gpu", Namespace: "llm", Pod: "vllm-decode-0", Container: "engine"},
		{DeviceID: "GPU-bbbb", Resource: "nvidia.com/gpu", Namespace: "llm", Pod: "vllm-decode-0", Container: "engine"},
		{DeviceID: "GPU-cccc::0", Resource: "nvidia.com/gpu", Namespace: "llm", Pod: "prefill-1", Container: "engine"},
		{DeviceID: "GPU-cccc::1", Resource: "nvidia.com/gpu", Namespace: "llm", Pod: "prefill-1", Container: "engine"},
		{DeviceID: "GPU-cccc::2", Resource: "nvidia.com/gpu", Namespace: "batch", Pod: "notebook", Container: "lab"},
		{DeviceID: "rdma0", Resource: "rdma/rdma_shared_device_a", Namespace: "llm", Pod: "prefill-1", Container: "engine"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List:\n got %+v\nwant %+v", got, want)
	}
	idx := Index(got)
	if owners := idx["GPU-cccc"]; len(owners) != 2 || owners[0].Pod != "prefill-1" || owners[1].Pod != "notebook" {
		t.Errorf("time-sliced GPU owners %+v", owners)
	}
	if owners := idx["GPU-aaaa"]; len(owners) != 1 || owners[0].Container != "engine" {
		t.Errorf("GPU-aaaa owners %+v", owners)
	}

	// The kubelet restarts: List fails while it is away (its socket goes
	// with it) and works again on the same client once it is back.
	stop()
	if _, err := c.List(ctx); !errors.Is(err, source.ErrAbsent) {
		t.Errorf("List with the kubelet gone: %v", err)
	}
	k.pods.Store(&[]*v1.PodResources{})
	stop = serve(t, socket, k)
	defer stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err = c.List(ctx)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || len(got) != 0 {
		t.Errorf("after the restart: %v, %v", got, err)
	}
}

func TestDeviceKey(t *testing.T) {
	for in, want := range map[string]string{"GPU-1": "GPU-1", "GPU-1::3": "GPU-1", "MIG-2": "MIG-2", "": ""} {
		if got := DeviceKey(in); got != want {
			t.Errorf("DeviceKey(%q) = %q", in, got)
		}
	}
}

// A socket whose server never answers (a wedged kubelet) costs one
// timeout, not a hang.
func TestListTimesOut(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "kubelet.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			defer conn.Close() // held open, never answered
		}
	}()
	c := New(socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.List(ctx); err == nil || errors.Is(err, source.ErrAbsent) {
		t.Errorf("List from a silent server: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("List took %s", d)
	}
}
