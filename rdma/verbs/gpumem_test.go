package verbs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeCUDA is testdata/fake_cuda.c, built and loaded once per test
// binary (the process keeps the first CUDA library it loads; the file
// may go with the first test's directory once it is mapped). A GPU test
// run in the soft-RoCE VM gets it prebuilt (GPUNODE_FAKE_CUDA), as the
// guest has no compiler.
var (
	fakeMu     sync.Mutex
	fakeLoaded bool
)

func loadFakeCUDA(t *testing.T) {
	t.Helper()
	fakeMu.Lock()
	defer fakeMu.Unlock()
	if fakeLoaded {
		return
	}
	lib := os.Getenv("GPUNODE_FAKE_CUDA")
	if lib == "" {
		lib = filepath.Join(t.TempDir(), "libcuda.so.1")
		out, err := exec.Command("gcc", "-shared", "-fPIC", "-Wall", "-Werror", "-O1", "-Wl,-soname,libcuda.so.1",
			"-o", lib, "testdata/fake_cuda.c").CombinedOutput()
		if err != nil {
			t.Fatalf("gcc builds the fake libcuda.so.1: %v\n%s", err, out)
		}
	}
	if err := LoadCUDA(lib); err != nil {
		t.Fatal(err)
	}
	fakeLoaded = true
}

// fakeLog points the fake's call log at a fresh file and returns a
// reader of the calls made since.
func fakeLog(t *testing.T) func() []string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "calls")
	t.Setenv("GN_FAKE_CUDA_LOG", p)
	return func() []string {
		b, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}

// count is how many logged calls start with call.
func count(calls []string, call string) int {
	n := 0
	for _, c := range calls {
		if c == call || strings.HasPrefix(c, call+" ") {
			n++
		}
	}
	return n
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// succeeded is how many logged calls to call succeeded.
func succeeded(calls []string, call string) int {
	return count(calls, call) - count(calls, "failed "+call)
}

// balanced checks that everything the fake handed out was given back.
func balanced(t *testing.T, calls []string, fds0 int) {
	t.Helper()
	if a, f := succeeded(calls, "cuMemAlloc"), count(calls, "cuMemFree"); a != f {
		t.Errorf("%d allocations, %d frees: %q", a, f, calls)
	}
	if r, rel := succeeded(calls, "cuDevicePrimaryCtxRetain"), count(calls, "cuDevicePrimaryCtxRelease"); r != rel {
		t.Errorf("%d context retains, %d releases: %q", r, rel, calls)
	}
	if n := openFDs(t); n != fds0 {
		t.Errorf("%d open descriptors, %d before: the dma-buf or the memory leaked", n, fds0)
	}
}

// The order of these tests matters: the library is loaded once per
// process, so the failed loads come first.
func TestLoadCUDAFailures(t *testing.T) {
	if _, err := AllocGPUMemory(GPUMemoryConfig{Library: "/nonexistent/libcuda.so.1", Size: 1}); !errors.Is(err, ErrNoCUDA) || !strings.Contains(err.Error(), "/nonexistent/libcuda.so.1") {
		t.Errorf("missing library: %v", err)
	}
	// A library without the calls (an old driver, or the wrong file).
	empty := filepath.Join(t.TempDir(), "libempty.so")
	cc := exec.Command("gcc", "-shared", "-fPIC", "-o", empty, "-x", "c", "-")
	cc.Stdin = strings.NewReader("int unrelated(void) { return 0; }\n")
	if out, err := cc.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	if err := LoadCUDA(empty); !errors.Is(err, ErrNoCUDA) || !strings.Contains(err.Error(), "lacks cuInit") {
		t.Errorf("library without cuInit: %v", err)
	}
	if _, err := AllocGPUMemory(GPUMemoryConfig{Library: empty, Size: 0}); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("size 0: %v", err)
	}
}

func TestGPUMemoryFromFakeCUDA(t *testing.T) {
	loadFakeCUDA(t)
	calls := fakeLog(t)
	t.Setenv("GN_FAKE_CUDA_DEVICES", "0000:17:00.0,0000:3D:00.0")
	fds0 := openFDs(t)
	m, err := AllocGPUMemory(GPUMemoryConfig{PCIBusID: "0000:3d:00.0", Size: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	if m.Size() != 128<<10 {
		t.Errorf("size %d, want 100000 rounded up to 64 KiB pages", m.Size())
	}
	if ok, why := m.DMABuf(); !ok {
		t.Errorf("no dma-buf: %s", why)
	}
	m.Close()
	m.Close()
	got := calls()
	balanced(t, got, fds0)
	if count(got, "cuDeviceGetByPCIBusId 0000:3d:00.0") != 1 || count(got, "cuMemGetHandleForAddressRange 131072 1 0") != 1 {
		t.Errorf("calls %q", got)
	}
	// The context is not left current on the allocating thread.
	if got[len(got)-1] != "cuDevicePrimaryCtxRelease 1" {
		t.Errorf("last call %q", got[len(got)-1])
	}

	// Without a bus id, CUDA's ordinal.
	m, err = AllocGPUMemory(GPUMemoryConfig{Ordinal: 1, Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if _, err := AllocGPUMemory(GPUMemoryConfig{Ordinal: 2, Size: 1}); err == nil || !strings.Contains(err.Error(), "GPU memory on CUDA device 2: cuDeviceGet: CUDA_ERROR_INVALID_DEVICE") {
		t.Errorf("ordinal 2 of 2 GPUs: %v", err)
	}
	t.Setenv("GN_FAKE_CUDA_FAIL", "cuDeviceGet")
	if _, err := AllocGPUMemory(GPUMemoryConfig{Ordinal: 0, Size: 1}); err == nil || !strings.Contains(err.Error(), "cuDeviceGet: CUDA_ERROR_INVALID_DEVICE") {
		t.Errorf("cuDeviceGet failing: %v", err)
	}
	t.Setenv("GN_FAKE_CUDA_FAIL", "")
	if _, err := AllocGPUMemory(GPUMemoryConfig{PCIBusID: "0000:99:00.0", Size: 1}); err == nil || !strings.Contains(err.Error(), "GPU memory on 0000:99:00.0: cuDeviceGetByPCIBusId: CUDA_ERROR_INVALID_DEVICE (CUresult 101)") {
		t.Errorf("unknown bus id: %v", err)
	}
	balanced(t, calls(), fds0)
}

// Every CUDA call the allocation makes fails in turn: the error names the
// call and its CUresult, and nothing allocated before it stays.
func TestGPUMemoryCUDAErrors(t *testing.T) {
	loadFakeCUDA(t)
	for _, tc := range []struct{ call, name string }{
		{"cuInit", "CUDA_ERROR_NO_DEVICE"},
		{"cuDeviceGetByPCIBusId", "CUDA_ERROR_INVALID_DEVICE"},
		{"cuDevicePrimaryCtxRetain", "CUDA_ERROR_OUT_OF_MEMORY"},
		{"cuCtxSetCurrent", "CUDA_ERROR_INVALID_CONTEXT"},
		{"cuMemAlloc", "CUDA_ERROR_OUT_OF_MEMORY"},
		{"cuDeviceGetAttribute", "CUDA_ERROR_INVALID_VALUE"},
	} {
		t.Run(tc.call, func(t *testing.T) {
			calls := fakeLog(t)
			t.Setenv("GN_FAKE_CUDA_FAIL", tc.call)
			fds0 := openFDs(t)
			_, err := AllocGPUMemory(GPUMemoryConfig{PCIBusID: "0000:17:00.0", Size: 4096})
			var ce *CUDAError
			if !errors.As(err, &ce) || ce.Call != tc.call && !strings.HasPrefix(ce.Call, tc.call+"(") || ce.Name != tc.name {
				t.Errorf("error %v, want %s failing with %s", err, tc.call, tc.name)
			}
			balanced(t, calls(), fds0)
		})
	}

	// cuGetErrorName failing leaves the number.
	t.Run("cuGetErrorName", func(t *testing.T) {
		t.Setenv("GN_FAKE_CUDA_FAIL", "cuGetErrorName")
		if got := cudaError("cuMemAlloc", 2).Error(); got != "cuMemAlloc: unknown error (CUresult 2)" {
			t.Errorf("got %q", got)
		}
	})

	// A failed export or a device without dma-buf support still gives
	// memory (registered by address then), and says why there is no
	// dma-buf.
	t.Run("cuMemGetHandleForAddressRange", func(t *testing.T) {
		calls := fakeLog(t)
		t.Setenv("GN_FAKE_CUDA_FAIL", "cuMemGetHandleForAddressRange")
		fds0 := openFDs(t)
		m, err := AllocGPUMemory(GPUMemoryConfig{Size: 4096})
		if err != nil {
			t.Fatal(err)
		}
		if ok, why := m.DMABuf(); ok || why != "cuMemGetHandleForAddressRange: CUDA_ERROR_NOT_SUPPORTED (CUresult 801)" {
			t.Errorf("dma-buf %v: %s", ok, why)
		}
		m.Close()
		balanced(t, calls(), fds0)
	})
	t.Run("no dma-buf support", func(t *testing.T) {
		calls := fakeLog(t)
		t.Setenv("GN_FAKE_CUDA_DMABUF", "0")
		m, err := AllocGPUMemory(GPUMemoryConfig{Size: 4096})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if ok, why := m.DMABuf(); ok || !strings.Contains(why, "DMA_BUF_SUPPORTED is 0") {
			t.Errorf("dma-buf %v: %s", ok, why)
		}
		if n := count(calls(), "cuMemGetHandleForAddressRange"); n != 0 {
			t.Errorf("exported %d times from a device without dma-buf support", n)
		}
	})
}
