package probe

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdma/verbs"
)

// The daemon's rounds over GPU memory on a real RDMA device: test/probe
// runs this package's test binary in its soft-RoCE VM with
// GPUNODE_PROBE_DEVICE=rxe0 and GPUNODE_FAKE_CUDA, the fake libcuda.so.1
// built from rdma/verbs/testdata (the guest has no compiler). This
// machine's kernel has no RDMA.
func TestSchedulerGPUMemoryOnDevice(t *testing.T) {
	dev, lib := os.Getenv("GPUNODE_PROBE_DEVICE"), os.Getenv("GPUNODE_FAKE_CUDA")
	if dev == "" || lib == "" {
		t.Skip("needs an RDMA device and the fake libcuda (GPUNODE_PROBE_DEVICE, GPUNODE_FAKE_CUDA): test/probe runs it in a soft-RoCE VM")
	}
	fsys, err := hostfs.New("/")
	if err != nil {
		t.Fatal(err)
	}
	devices := rdma.NewReader(fsys).Discover
	t.Setenv("GN_FAKE_CUDA_DEVICES", "0000:17:00.0,0000:3d:00.0")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// The peer (this process's own server, on its own limiter) answers
	// from GPU 5 while it has one nearest the port, and says no_gpu when
	// it has none.
	peerGPU := &GPUTarget{Index: 5, PCIBusID: "0000:3d:00.0", Library: lib}
	var answer atomic.Pointer[GPUTarget]
	answer.Store(peerGPU)
	addr := serve(t, &Server{Devices: devices, Limiter: NewLimiter(), Logger: log, StepTimeout: 10 * time.Second,
		GPU: func(p Port) (*GPUTarget, error) {
			if g := answer.Load(); g != nil {
				return g, nil
			}
			return nil, errors.New("no GPU of this node has " + p.Device + " as its nearest RDMA device")
		}})
	pairs := []GPUPair{{GPU: GPUTarget{Index: 0, PCIBusID: "0000:17:00.0", Library: lib, MaxBytes: 4 << 20}, Device: dev}}
	s := &Scheduler{Self: "a", Loopback: true, Rails: &RailRule{Match: RailMatchIndex}, Timeout: 30 * time.Second, Logger: log,
		Peers:  func(context.Context) ([]Peer, error) { return []Peer{{Node: "b", Address: addr}}, nil },
		Client: &Client{Token: testToken, Devices: devices, Limiter: NewLimiter(), StepTimeout: 10 * time.Second},
		GPUs:   func() []GPUPair { return pairs },
		Rand:   rand.New(rand.NewPCG(1, 2))}
	ctx := context.Background()

	// Every kind on host memory and on GPU 0's, loopback and on rail 0
	// to the peer, which answers from GPU 5.
	r := s.Round(ctx)
	if len(r.Failures) != 0 {
		t.Fatalf("failures %+v", r.Failures)
	}
	var got []string
	for _, res := range r.Results {
		d := res.Kind + " " + res.Peer
		if res.GPU != nil {
			d += " gpu"
			if res.Memory != verbs.MemoryGPU || res.GPU.Index != 0 || res.GPU.PCIBusID != "0000:17:00.0" || res.GPU.Path != verbs.PathPeerMem {
				t.Errorf("GPU memory result %+v (gpu %+v)", res, *res.GPU)
			}
		} else if res.Memory != "" {
			t.Errorf("host memory result says memory %q", res.Memory)
		}
		if res.Peer == "b" && (res.Rail == nil || *res.Rail != 0 || res.PeerDevice() != dev) {
			t.Errorf("peer result %+v not on rail 0 to %s", res, dev)
		}
		got = append(got, d)
	}
	want := "write_bw loopback, send_lat loopback, write_bw loopback gpu, send_lat loopback gpu, write_bw b, send_lat b, write_bw b gpu, send_lat b gpu"
	if strings.Join(got, ", ") != want {
		t.Errorf("results %q\nwant %s", got, want)
	}
	if v := r.Verdict(Thresholds{}, Thresholds{}); !v.Verified || v.Message != "8 probes passed (4 HCA loopback, 4 to peers)" {
		t.Errorf("verdict %+v", v)
	}

	// A peer with no GPU near its port is skipped, not failed.
	answer.Store(nil)
	r = s.Round(ctx)
	if len(r.Results) != 6 || len(r.Failures) != 0 {
		t.Errorf("a peer without a GPU: %d results, failures %+v", len(r.Results), r.Failures)
	}

	// This end's GPU failing to allocate fails its probes, by name.
	answer.Store(peerGPU)
	pairs[0].GPU.PCIBusID = "0000:99:00.0"
	r = s.Round(ctx)
	got = got[:0]
	for _, f := range r.Failures {
		got = append(got, f.Kind+" "+f.where())
	}
	want = "write_bw " + dev + "/1 HCA loopback from GPU 0's memory, send_lat " + dev + "/1 HCA loopback from GPU 0's memory, " +
		"write_bw b rail 0 (" + dev + "/1) from GPU 0's memory, send_lat b rail 0 (" + dev + "/1) from GPU 0's memory"
	if strings.Join(got, ", ") != want || len(r.Results) != 4 || !strings.Contains(r.Failures[0].Err, "0000:99:00.0") {
		t.Errorf("failures %q (%+v)\nwant %s; %d results", got, r.Failures, want, len(r.Results))
	}
	if v := r.Verdict(Thresholds{}, Thresholds{}); v.Reason != "ProbeFailed" || !strings.Contains(v.Message, "4 of 8 probes failed; b rail 0 ("+dev+"/1) from GPU 0's memory write_bw") {
		t.Errorf("verdict %+v", v)
	}
}
