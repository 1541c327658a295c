package verbs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHSA is testdata/fake_hsa.c, built and loaded once per test binary
// like the fake libcuda (GPUNODE_FAKE_HSA: prebuilt, for the VM guest).
var fakeHSALoaded bool

func loadFakeHSA(t *testing.T) {
	t.Helper()
	fakeMu.Lock()
	defer fakeMu.Unlock()
	if fakeHSALoaded {
		return
	}
	lib := os.Getenv("GPUNODE_FAKE_HSA")
	if lib == "" {
		lib = filepath.Join(t.TempDir(), HSALibrary)
		out, err := exec.Command("gcc", "-shared", "-fPIC", "-Wall", "-Werror", "-O1", "-Wl,-soname,"+HSALibrary,
			"-o", lib, "testdata/fake_hsa.c").CombinedOutput()
		if err != nil {
			t.Fatalf("gcc builds the fake %s: %v\n%s", HSALibrary, err, out)
		}
	}
	if err := LoadHSA(lib); err != nil {
		t.Fatal(err)
	}
	fakeHSALoaded = true
}

// fakeHSALog points the fake's call log at a fresh file and returns a
// reader of the calls made since.
func fakeHSALog(t *testing.T) func() []string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "calls")
	t.Setenv("GN_FAKE_HSA_LOG", p)
	return func() []string {
		b, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}

// hsaBalanced checks that every allocation was freed, every dma-buf
// closed and every hsa_init matched by hsa_shut_down.
func hsaBalanced(t *testing.T, calls []string, fds0 int) {
	t.Helper()
	if a, f := succeeded(calls, "hsa_amd_memory_pool_allocate"), count(calls, "hsa_amd_memory_pool_free"); a != f {
		t.Errorf("%d allocations, %d frees: %q", a, f, calls)
	}
	if e, c := succeeded(calls, "hsa_amd_portable_export_dmabuf"), count(calls, "hsa_amd_portable_close_dmabuf"); e != c {
		t.Errorf("%d dma-buf exports, %d closes: %q", e, c, calls)
	}
	if i, s := succeeded(calls, "hsa_init"), count(calls, "hsa_shut_down"); i != s {
		t.Errorf("%d hsa_init, %d hsa_shut_down: %q", i, s, calls)
	}
	if n := openFDs(t); n != fds0 {
		t.Errorf("%d open descriptors, %d before: the dma-buf or the memory leaked", n, fds0)
	}
}

// The failed loads come first: the runtime is loaded once per process.
func TestLoadHSAFailures(t *testing.T) {
	if _, err := AllocAMDGPUMemory(AMDGPUMemoryConfig{Library: "/nonexistent/" + HSALibrary, PCIBusID: "0000:c1:00.0", Size: 1}); !errors.Is(err, ErrNoHSA) || !strings.Contains(err.Error(), "/nonexistent/libhsa-runtime64.so.1") {
		t.Errorf("missing library: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "libempty.so")
	cc := exec.Command("gcc", "-shared", "-fPIC", "-o", empty, "-x", "c", "-")
	cc.Stdin = strings.NewReader("int unrelated(void) { return 0; }\n")
	if out, err := cc.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	if err := LoadHSA(empty); !errors.Is(err, ErrNoHSA) || !strings.Contains(err.Error(), "lacks hsa_init") {
		t.Errorf("library without hsa_init: %v", err)
	}
	for _, cfg := range []AMDGPUMemoryConfig{{Library: empty, PCIBusID: "0000:c1:00.0"}, {Library: empty, PCIBusID: "0000:c1:00.0", Size: MaxGPUMemory + 1}} {
		if _, err := AllocAMDGPUMemory(cfg); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("size %d: %v", cfg.Size, err)
		}
	}
	for _, bus := range []string{"", "c1:00.0", "0000:c1:20.0", "0000:c1:00.8"} {
		if _, err := AllocAMDGPUMemory(AMDGPUMemoryConfig{Library: empty, PCIBusID: bus, Size: 1}); err == nil || !strings.Contains(err.Error(), "want domain:bus:device.function") {
			t.Errorf("bus id %q: %v", bus, err)
		}
	}
}

func TestParseBDF(t *testing.T) {
	// HSA_AMD_AGENT_INFO_BDFID is bus<<8 | device<<3 | function.
	d, b, err := parseBDF("0001:C1:1f.7")
	if err != nil || d != 1 || b != 0xc1<<8|0x1f<<3|7 {
		t.Errorf("got %#x %#x %v", d, b, err)
	}
}

func TestAMDGPUMemoryFromFakeHSA(t *testing.T) {
	loadFakeHSA(t)
	calls := fakeHSALog(t)
	t.Setenv("GN_FAKE_HSA_DEVICES", "0000:c1:00.0,0001:41:00.0")
	fds0 := openFDs(t)
	m, err := AllocAMDGPUMemory(AMDGPUMemoryConfig{PCIBusID: "0001:41:00.0", Size: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if m.Size() != 8192 {
		t.Errorf("size %d, want 5000 rounded up to the 4 KiB granule", m.Size())
	}
	if ok, why := m.DMABuf(); !ok {
		t.Errorf("no dma-buf: %s", why)
	}
	if ext := m.extmem(); ext.dmabuf_fd < 0 || ext.len != 8192 || ext.addr == 0 {
		t.Errorf("registration sees %+v", ext)
	}
	// The second GPU (agent handle 3) and its VRAM pool (the third).
	got := calls()
	if count(got, "hsa_amd_agent_iterate_memory_pools 3") != 1 || count(got, "hsa_amd_memory_pool_allocate 50 8192 0") != 1 {
		t.Errorf("calls %q", got)
	}
	b := m.fakeBytes()
	b[0], b[len(b)-1] = 1, 2
	m.Close()
	m.Close()
	got = calls()
	hsaBalanced(t, got, fds0)
	if got[len(got)-1] != "hsa_shut_down" {
		t.Errorf("last call %q", got[len(got)-1])
	}

	if _, err := AllocAMDGPUMemory(AMDGPUMemoryConfig{PCIBusID: "0000:99:00.0", Size: 1}); err == nil || err.Error() != "GPU memory on 0000:99:00.0: no GPU agent has this PCI address" {
		t.Errorf("unknown bus id: %v", err)
	}
	t.Setenv("GN_FAKE_HSA_NOVRAM", "1")
	if _, err := AllocAMDGPUMemory(AMDGPUMemoryConfig{PCIBusID: "0000:c1:00.0", Size: 1}); err == nil || !strings.Contains(err.Error(), "no coarse-grained global memory pool") {
		t.Errorf("no VRAM pool: %v", err)
	}
	hsaBalanced(t, calls(), fds0)
}

// Every HSA call the allocation makes fails in turn: the error names the
// call and its status, and nothing allocated before it stays.
func TestAMDGPUMemoryHSAErrors(t *testing.T) {
	loadFakeHSA(t)
	for _, tc := range []struct{ call, text string }{
		{"hsa_init", "HSA_STATUS_ERROR_OUT_OF_RESOURCES"},
		{"hsa_iterate_agents", "HSA_STATUS_ERROR:"},
		{"hsa_agent_get_info(HSA_AGENT_INFO_DEVICE)", "HSA_STATUS_ERROR_INVALID_AGENT"},
		{"hsa_agent_get_info(HSA_AMD_AGENT_INFO_BDFID)", "HSA_STATUS_ERROR_INVALID_ARGUMENT"},
		{"hsa_agent_get_info(HSA_AMD_AGENT_INFO_DOMAIN)", "HSA_STATUS_ERROR_INVALID_ARGUMENT"},
		{"hsa_amd_agent_iterate_memory_pools", "HSA_STATUS_ERROR_INVALID_AGENT"},
		{"hsa_amd_memory_pool_get_info(HSA_AMD_MEMORY_POOL_INFO_SEGMENT)", "HSA_STATUS_ERROR_INVALID_ARGUMENT"},
		{"hsa_amd_memory_pool_get_info(HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS)", "HSA_STATUS_ERROR_INVALID_ARGUMENT"},
		{"hsa_amd_memory_pool_get_info(HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALLOWED)", "HSA_STATUS_ERROR_INVALID_ARGUMENT"},
		{"hsa_amd_memory_pool_get_info(HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_GRANULE)", "HSA_STATUS_ERROR_INVALID_ARGUMENT"},
		{"hsa_amd_memory_pool_allocate", "HSA_STATUS_ERROR_OUT_OF_RESOURCES"},
	} {
		t.Run(tc.call, func(t *testing.T) {
			calls := fakeHSALog(t)
			t.Setenv("GN_FAKE_HSA_FAIL", tc.call)
			fds0 := openFDs(t)
			_, err := AllocAMDGPUMemory(AMDGPUMemoryConfig{PCIBusID: "0000:c1:00.0", Size: 4096})
			var he *HSAError
			if !errors.As(err, &he) || he.Call != tc.call || !strings.HasPrefix(he.Text, tc.text) {
				t.Errorf("error %v, want %s failing with %s", err, tc.call, tc.text)
			}
			got := calls()
			if count(got, "failed "+tc.call) != 1 {
				t.Errorf("the fake did not fail %s: %q", tc.call, got)
			}
			hsaBalanced(t, got, fds0)
		})
	}

	t.Run("hsa_status_string", func(t *testing.T) {
		t.Setenv("GN_FAKE_HSA_FAIL", "hsa_status_string")
		if got := hsaError("hsa_init", 0x1008).Error(); got != "hsa_init: unknown error (hsa_status_t 0x1008)" {
			t.Errorf("got %q", got)
		}
	})

	// A failed export still gives memory (registered by address then),
	// says why there is no dma-buf, and frees everything.
	t.Run("hsa_amd_portable_export_dmabuf", func(t *testing.T) {
		calls := fakeHSALog(t)
		t.Setenv("GN_FAKE_HSA_FAIL", "hsa_amd_portable_export_dmabuf")
		fds0 := openFDs(t)
		m, err := AllocAMDGPUMemory(AMDGPUMemoryConfig{PCIBusID: "0000:c1:00.0", Size: 4096})
		if err != nil {
			t.Fatal(err)
		}
		if ok, why := m.DMABuf(); ok || why != "hsa_amd_portable_export_dmabuf: HSA_STATUS_ERROR_INVALID_AGENT: bad agent (hsa_status_t 0x1004)" {
			t.Errorf("dma-buf %v: %s", ok, why)
		}
		if ext := m.extmem(); ext.dmabuf_fd != -1 {
			t.Errorf("registration sees dma-buf %d", ext.dmabuf_fd)
		}
		m.Close()
		hsaBalanced(t, calls(), fds0)
	})
}
