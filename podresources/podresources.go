// Package podresources asks the kubelet which containers hold which
// devices, over the kubelet's pod-resources v1 gRPC API on its local unix
// socket, so that GPU metrics can carry the pod that uses the GPU.
package podresources

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	v1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpunode/gpunode/internal/source"
)

// DefaultSocket is where the kubelet serves the API.
const DefaultSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// maxMessage matches the kubelet's own limit on List responses (16 MiB);
// gRPC's default of 4 MiB is too small for a node with many pods.
const maxMessage = 16 << 20

// Allocation is one device held by one container.
type Allocation struct {
	// DeviceID as the device plugin names it: a GPU UUID for
	// nvidia.com/gpu ("GPU-..."; "GPU-...::2" when the GPU is time-sliced),
	// a MIG UUID for MIG resources.
	DeviceID string `json:"device_id"`
	// Resource is the extended resource name ("nvidia.com/gpu").
	Resource  string `json:"resource"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Container string `json:"container"`
}

// Client lists allocations. It connects on first use and keeps the
// connection; gRPC reconnects by itself when the kubelet restarts. Safe
// for concurrent use.
type Client struct {
	socket string

	mu   sync.Mutex
	conn *grpc.ClientConn
}

// New returns a client for the kubelet socket at path (a host path
// already mapped under the host root by the caller).
func New(socket string) *Client { return &Client{socket: socket} }

// List returns every device allocated to a container, sorted by device,
// namespace, pod and container. When the socket does not exist (no
// kubelet: a standalone node) the error satisfies
// errors.Is(err, source.ErrAbsent).
func (c *Client) List(ctx context.Context) ([]Allocation, error) {
	if _, err := os.Stat(c.socket); errors.Is(err, fs.ErrNotExist) {
		return nil, source.NewAbsent("no kubelet pod-resources socket at %s", c.socket)
	}
	client, err := c.client()
	if err != nil {
		return nil, err
	}
	resp, err := client.List(ctx, &v1.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("kubelet pod-resources List on %s: %w", c.socket, err)
	}
	return flatten(resp), nil
}

func (c *Client) client() (v1.PodResourcesListerClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		conn, err := grpc.NewClient("unix://"+c.socket,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage)))
		if err != nil {
			return nil, fmt.Errorf("kubelet pod-resources socket %s: %w", c.socket, err)
		}
		c.conn = conn
	}
	return v1.NewPodResourcesListerClient(c.conn), nil
}

// Close drops the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// flatten turns the kubelet's tree into one row per device and container.
func flatten(resp *v1.ListPodResourcesResponse) []Allocation {
	var out []Allocation
	for _, pod := range resp.GetPodResources() {
		for _, ctr := range pod.GetContainers() {
			for _, dev := range ctr.GetDevices() {
				for _, id := range dev.GetDeviceIds() {
					out = append(out, Allocation{DeviceID: id, Resource: dev.GetResourceName(),
						Namespace: pod.GetNamespace(), Pod: pod.GetName(), Container: ctr.GetName()})
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b Allocation) int {
		return cmp.Or(strings.Compare(a.DeviceID, b.DeviceID), strings.Compare(a.Namespace, b.Namespace),
			strings.Compare(a.Pod, b.Pod), strings.Compare(a.Container, b.Container), strings.Compare(a.Resource, b.Resource))
	})
	return slices.CompactFunc(out, func(a, b Allocation) bool { return a == b })
}

// DeviceKey is what an allocation's device ID names: time-sliced GPUs are
// handed out as "<uuid>::<replica>", which is still that GPU.
func DeviceKey(id string) string {
	base, _, _ := strings.Cut(id, "::")
	return base
}

// Index maps device keys (GPU UUIDs, and whatever else device plugins use)
// to the containers that hold them, each container once, in List's order.
func Index(allocs []Allocation) map[string][]Allocation {
	m := map[string][]Allocation{}
	for _, a := range allocs {
		k := DeviceKey(a.DeviceID)
		if !slices.ContainsFunc(m[k], func(b Allocation) bool {
			return b.Namespace == a.Namespace && b.Pod == a.Pod && b.Container == a.Container
		}) {
			m[k] = append(m[k], a)
		}
	}
	return m
}
