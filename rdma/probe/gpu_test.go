package probe

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/rdma/verbs"
)

// fakeCUDA builds rdma/verbs' stand-in libcuda.so.1 (see its
// testdata/fake_cuda.c) and points a call log at a file; it returns the
// library and a reader of the log.
func fakeCUDA(t *testing.T) (string, func() string) {
	t.Helper()
	lib := filepath.Join(t.TempDir(), "libcuda.so.1")
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-Wall", "-Werror", "-o", lib, "../verbs/testdata/fake_cuda.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	log := filepath.Join(t.TempDir(), "calls")
	t.Setenv("GN_FAKE_CUDA_LOG", log)
	return lib, func() string {
		b, _ := os.ReadFile(log)
		return string(b)
	}
}

func TestRequestMemory(t *testing.T) {
	g := &GPUTarget{Index: 0, PCIBusID: "0000:17:00.0"}
	for _, tc := range []struct {
		kind, memory string
		gpu          *GPUTarget
		want         string
	}{
		{KindWriteBW, "", nil, ""},
		{KindWriteBW, verbs.MemoryHost, nil, ""},
		{KindWriteBW, verbs.MemoryGPU, g, ""},
		{KindSendLat, verbs.MemoryGPU, g, ""},
		{KindWriteBW, verbs.MemoryGPU, nil, ""}, // a server's: it picks its own
		{KindTCPBW, verbs.MemoryGPU, g, "kind tcp_bw runs on host memory"},
		{KindWriteBW, "vram", nil, `memory "vram": want host or gpu`},
	} {
		r := DefaultRequest(tc.kind)
		r.Memory, r.GPU = tc.memory, tc.gpu
		err := r.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s memory %q: %v, want %q", tc.kind, tc.memory, err, tc.want)
		}
	}
	// GPU memory is protocol version 4; this end's GPU never goes on the
	// wire, and a client needs one.
	r := DefaultRequest(KindWriteBW)
	r.Memory = verbs.MemoryGPU
	if r.version() != versionGPU {
		t.Errorf("GPU memory request version %d", r.version())
	}
	if _, err := (&Client{Limiter: NewLimiter()}).Run(context.Background(), "127.0.0.1:1", r); !errors.Is(err, errNoGPU) {
		t.Errorf("GPU memory to a peer without a GPU: %v", err)
	}
	r.GPU = g
	b, err := json.Marshal(r)
	if err != nil || !strings.Contains(string(b), `"memory":"gpu"`) || strings.Contains(string(b), "17:00") {
		t.Errorf("request on the wire: %s, %v", b, err)
	}
}

// The GPU side of a registration attempt runs without an RDMA port (this
// machine has none): the memory is allocated and exported, then freed,
// and the attempt says what was missing. The bound and the vendor are
// checked before anything is allocated.
func TestRegisterGPUWithoutPort(t *testing.T) {
	lib, calls := fakeCUDA(t)
	g := GPUTarget{Index: 1, PCIBusID: "0000:17:00.0", Library: lib}
	r := RegisterGPU(g, nil, "no RDMA port near it")
	if r.Registered || r.Error != "GPU memory allocated (65536 bytes; dma-buf exported) but no RDMA port near it" {
		t.Errorf("attempt %+v", r)
	}
	log := calls()
	if strings.Count(log, "cuMemAlloc") != 1 || strings.Count(log, "cuMemFree") != 1 || strings.Count(log, "cuDevicePrimaryCtxRelease") != 1 {
		t.Errorf("the memory was not freed: %s", log)
	}

	// A port this machine cannot open: registration fails after the
	// allocation, which is freed.
	r = RegisterGPU(g, &Port{Device: "mlx5_0", Port: 1, GIDIndex: 3}, "")
	if r.Registered || r.Error == "" || strings.Count(calls(), "cuMemFree") != 2 {
		t.Errorf("attempt on an unopenable port %+v; calls %s", r, calls())
	}

	g.MaxBytes = 4096
	if r := RegisterGPU(g, nil, ""); !strings.Contains(r.Error, "needs 65536 bytes of GPU memory per queue pair, more than the 4096 allowed") {
		t.Errorf("over the bound: %+v", r)
	}
	other := GPUTarget{Index: 0, PCIBusID: "0000:c1:00.0", Vendor: "intel"}
	if r := RegisterGPU(other, nil, ""); !r.NotAvailable || r.Error != "GPU 0 (intel): not available: GPU memory probes exist for NVIDIA and AMD GPUs only" {
		t.Errorf("another vendor: %+v", r)
	}
	if strings.Count(calls(), "cuMemAlloc") != 2 {
		t.Errorf("allocated past the checks: %s", calls())
	}

	// A failing CUDA call is the attempt's error.
	t.Setenv("GN_FAKE_CUDA_FAIL", "cuMemAlloc")
	g.MaxBytes = 0
	if r := RegisterGPU(g, nil, ""); r.Error != "GPU 1: GPU memory on 0000:17:00.0: cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY (CUresult 2)" {
		t.Errorf("failed allocation: %+v", r)
	}
}

// Loopback over GPU memory checks the request before it opens anything.
func TestLoopbackGPUMemoryChecks(t *testing.T) {
	r := DefaultRequest(KindWriteBW)
	r.Memory, r.Timeout = verbs.MemoryGPU, time.Second
	if _, err := Loopback(context.Background(), NewLimiter(), Port{Device: "rxe0", Port: 1}, r); err == nil || !strings.Contains(err.Error(), "GPU memory needs a GPU") {
		t.Errorf("no GPU: %v", err)
	}
}

func TestGPUForPort(t *testing.T) {
	pairs := []GPUPair{{GPU: GPUTarget{Index: 0, PCIBusID: "0000:17:00.0"}, Device: "mlx5_0"}, {GPU: GPUTarget{Index: 1}, NoDevice: "none"},
		{GPU: GPUTarget{Index: 2, PCIBusID: "0000:3d:00.0"}, Device: "mlx5_1"}}
	g, err := GPUForPort(pairs, Port{Device: "mlx5_1", Port: 1}, 1<<20)
	if err != nil || g.Index != 2 || g.MaxBytes != 1<<20 {
		t.Errorf("mlx5_1: %+v, %v", g, err)
	}
	if _, err := GPUForPort(pairs, Port{Device: "mlx5_2", Port: 1}, 1<<20); err == nil || err.Error() != "no GPU of this node has mlx5_2 as its nearest RDMA device" {
		t.Errorf("mlx5_2: %v", err)
	}
	if _, err := GPUForPort(pairs, Port{Device: "mlx5_0", Port: 1}, 0); err == nil || !strings.Contains(err.Error(), "probe.gpuMemoryBytes is 0") {
		t.Errorf("no GPU memory allowed: %v", err)
	}
}

// An AMD GPU's memory comes from ROCm's HSA runtime: without the runtime
// the attempt is "not available" (ROCm is optional), with it (the
// stand-in rdma/verbs' tests use too) the VRAM is allocated, exported as
// a dma-buf and freed, and a failing call is the attempt's error.
func TestRegisterAMDGPUWithoutPort(t *testing.T) {
	amd := GPUTarget{Index: 0, PCIBusID: "0000:c1:00.0", Vendor: gpu.AMD, Library: "/nonexistent/libhsa-runtime64.so.1"}
	r := RegisterGPU(amd, nil, "no RDMA port near it")
	if !r.NotAvailable || r.Registered || !strings.HasPrefix(r.Error, "GPU 0: not available: ROCm HSA runtime not available: /nonexistent/libhsa-runtime64.so.1") {
		t.Errorf("without the runtime: %+v", r)
	}

	amd.Library = filepath.Join(t.TempDir(), verbs.HSALibrary)
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-Wall", "-Werror", "-o", amd.Library, "../verbs/testdata/fake_hsa.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	log := filepath.Join(t.TempDir(), "calls")
	t.Setenv("GN_FAKE_HSA_LOG", log)
	calls := func() string {
		b, _ := os.ReadFile(log)
		return string(b)
	}
	r = RegisterGPU(amd, nil, "no RDMA port near it")
	if r.NotAvailable || r.Registered || r.Error != "GPU memory allocated (65536 bytes; dma-buf exported) but no RDMA port near it" {
		t.Errorf("attempt %+v", r)
	}
	if c := calls(); strings.Count(c, "hsa_amd_memory_pool_allocate") != 1 || strings.Count(c, "hsa_amd_memory_pool_free") != 1 ||
		strings.Count(c, "hsa_amd_portable_close_dmabuf") != 1 || strings.Count(c, "hsa_shut_down") != 1 {
		t.Errorf("the memory was not freed: %s", c)
	}

	// A port this machine cannot open: registration fails after the
	// allocation, which is freed.
	r = RegisterGPU(amd, &Port{Device: "mlx5_0", Port: 1, GIDIndex: 3}, "")
	if r.Registered || r.NotAvailable || r.Error == "" || strings.Count(calls(), "hsa_amd_memory_pool_free") != 2 {
		t.Errorf("attempt on an unopenable port %+v; calls %s", r, calls())
	}

	t.Setenv("GN_FAKE_HSA_FAIL", "hsa_amd_memory_pool_allocate")
	r = RegisterGPU(amd, nil, "")
	if r.NotAvailable || r.Error != "GPU 0: GPU memory on 0000:c1:00.0: hsa_amd_memory_pool_allocate: HSA_STATUS_ERROR_OUT_OF_RESOURCES: out of resources (hsa_status_t 0x1008)" {
		t.Errorf("failed allocation: %+v", r)
	}
	if strings.Count(calls(), "hsa_init") != strings.Count(calls(), "hsa_shut_down") {
		t.Errorf("the runtime was left initialised: %s", calls())
	}
}
