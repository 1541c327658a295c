package nvmlfake

import (
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpunode/gpunode/gpu"
)

func twoGPUs(model Model) Machine {
	return Machine{Model: model, Seed: "node-a", GPUs: []GPU{
		{PCIBusID: "0000:1b:00.0", NUMANode: 0},
		{PCIBusID: "0000:df:00.0", NUMANode: 1},
	}}
}

func mustNew(t *testing.T, m Machine) gonvml.Interface {
	t.Helper()
	lib, err := New(m)
	if err != nil {
		t.Fatal(err)
	}
	if ret := lib.Init(); ret != gonvml.SUCCESS {
		t.Fatalf("Init: %v", ret)
	}
	return lib
}

func handle(t *testing.T, lib gonvml.Interface, i int) gonvml.Device {
	t.Helper()
	h, ret := lib.DeviceGetHandleByIndex(i)
	if ret != gonvml.SUCCESS {
		t.Fatalf("DeviceGetHandleByIndex(%d): %v", i, ret)
	}
	return h
}

func TestNewRejectsBadMachines(t *testing.T) {
	withGPU := func(g GPU) Machine { return Machine{Model: H100, GPUs: []GPU{g}} }
	for name, tc := range map[string]struct {
		m    Machine
		want string
	}{
		"unknown model":    {Machine{Model: "v100"}, `unknown model "v100"`},
		"empty model":      {Machine{}, `unknown model ""`},
		"nvml bus id form": {withGPU(GPU{PCIBusID: "00000000:1B:00.0"}), "bad PCI bus id"},
		"empty bus id":     {withGPU(GPU{}), "bad PCI bus id"},
		"device too big":   {withGPU(GPU{PCIBusID: "0000:1b:20.0"}), "bad PCI bus id"},
		"link beyond 18": {withGPU(GPU{PCIBusID: "0000:1b:00.0", NVLinkDown: []int{18}}),
			"NVLink 18 out of range"},
		"pcie above max": {withGPU(GPU{PCIBusID: "0000:1b:00.0", PCIeGen: 6}), "outside the model's Gen5 x16"},
		"negative width": {withGPU(GPU{PCIBusID: "0000:1b:00.0", PCIeWidth: -1}), "outside"},
		"a100 has no gen5": {Machine{Model: A100, GPUs: []GPU{{PCIBusID: "0000:07:00.0", PCIeGen: 5}}},
			"Gen4 x16"},
		"duplicate bus id": {Machine{Model: B200, GPUs: []GPU{{PCIBusID: "0000:1b:00.0"}, {PCIBusID: "0000:1B:00.0"}}},
			"gpu 1: bus id 0000:1B:00.0 already used by gpu 0"},
	} {
		t.Run(name, func(t *testing.T) {
			lib, err := New(tc.m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, %v; want error containing %q", lib, err, tc.want)
			}
		})
	}
}

func TestNvmlBusID(t *testing.T) {
	good := map[string]string{
		"0000:1b:00.0": "00000000:1B:00.0",
		"0000:DF:00.0": "00000000:DF:00.0",
		"abcd:00:1f.7": "0000ABCD:00:1F.7",
	}
	for in, want := range good {
		if got, err := nvmlBusID(in); err != nil || got != want {
			t.Errorf("nvmlBusID(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0000:1b:00", "00000000:1B:00.0", "0000:1b:00.8", "0000:1b:20.0",
		"zzzz:1b:00.0", "0x00:1b:00.0", "+000:1b:00.0", "0000-1b:00.0", "0000:1b:00:0", "0000:1b:0_.0",
		"0000:1b:00.\xff", "\x00\x00\x00\x00:1b:00.0"} {
		if got, err := nvmlBusID(in); err == nil {
			t.Errorf("nvmlBusID(%q) = %q, want an error", in, got)
		}
	}
}

// FuzzNvmlBusID: whatever is accepted converts back to the same sysfs id.
func FuzzNvmlBusID(f *testing.F) {
	for _, s := range []string{"0000:1b:00.0", "ABCD:ef:1f.7", "00000000:1B:00.0", "", "0000:1b:00.9", "-000:1b:00.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := nvmlBusID(in)
		if err != nil {
			return
		}
		if len(out) != 16 || gpu.NormalizePCIBusID(out) != strings.ToLower(in) {
			t.Fatalf("nvmlBusID(%q) = %q does not round-trip", in, out)
		}
		info := pciInfo(out, 0x233010DE)
		if got := cString(info.BusId[:]); got != out {
			t.Fatalf("PciInfo.BusId = %q, want %q", got, out)
		}
	})
}

func cString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func TestNothingAnswersBeforeInit(t *testing.T) {
	lib, err := New(twoGPUs(H100))
	if err != nil {
		t.Fatal(err)
	}
	if _, ret := lib.DeviceGetCount(); ret != gonvml.ERROR_UNINITIALIZED {
		t.Errorf("DeviceGetCount before Init = %v", ret)
	}
	if err := lib.Extensions().LookupSymbol("nvmlDeviceGetNumaNodeId"); err == nil {
		t.Error("LookupSymbol before Init succeeded")
	}
	if ret := lib.Shutdown(); ret != gonvml.ERROR_UNINITIALIZED {
		t.Errorf("Shutdown before Init = %v", ret)
	}
	// Init is counted like NVML's: two Inits need two Shutdowns.
	lib.Init()
	h := handle(t, lib, 1)
	lib.Init()
	lib.Shutdown()
	if _, ret := h.GetUUID(); ret != gonvml.SUCCESS {
		t.Errorf("GetUUID after one of two Shutdowns = %v", ret)
	}
	lib.Shutdown()
	if _, ret := h.GetUUID(); ret != gonvml.ERROR_UNINITIALIZED {
		t.Errorf("GetUUID after the last Shutdown = %v", ret)
	}
}

func TestIdentityIsDeterministic(t *testing.T) {
	uuids := func(m Machine) (u, s []string) {
		lib := mustNew(t, m)
		for i := range m.GPUs {
			h := handle(t, lib, i)
			uuid, _ := h.GetUUID()
			serial, _ := h.GetSerial()
			u, s = append(u, uuid), append(s, serial)
		}
		return u, s
	}
	a1, s1 := uuids(twoGPUs(H100))
	a2, s2 := uuids(twoGPUs(H100))
	other := twoGPUs(H100)
	other.Seed = "node-b"
	b, sb := uuids(other)
	form := regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for i := range a1 {
		if a1[i] != a2[i] || s1[i] != s2[i] {
			t.Errorf("GPU %d: same seed gave %s/%s and %s/%s", i, a1[i], s1[i], a2[i], s2[i])
		}
		if a1[i] == b[i] || s1[i] == sb[i] {
			t.Errorf("GPU %d: seeds node-a and node-b both gave %s/%s", i, a1[i], s1[i])
		}
		if !form.MatchString(a1[i]) || len(s1[i]) != 13 {
			t.Errorf("GPU %d: malformed uuid %q or serial %q", i, a1[i], s1[i])
		}
	}
	if a1[0] == a1[1] || s1[0] == s1[1] {
		t.Errorf("GPUs 0 and 1 share an identity: %v %v", a1, s1)
	}
}

func TestDeviceAnswers(t *testing.T) {
	m := twoGPUs(B200)
	m.GPUs[1].NVLinkDown = []int{3}
	m.GPUs[1].PCIeGen, m.GPUs[1].PCIeWidth = 4, 8
	m.GPUs[1].MIGEnabled = true
	lib := mustNew(t, m)
	h := handle(t, lib, 1)

	info, _ := h.GetPciInfo()
	if got := cString(info.BusId[:]); got != "00000000:DF:00.0" || info.Bus != 0xdf || info.PciDeviceId != 0x290110DE {
		t.Errorf("PciInfo = %q bus %#x device %#x", got, info.Bus, info.PciDeviceId)
	}
	if got := cString(info.BusIdLegacy[:]); got != "0000:DF:00.0" {
		t.Errorf("BusIdLegacy = %q", got)
	}
	if st, _ := h.GetNvLinkState(3); st != gonvml.FEATURE_DISABLED {
		t.Errorf("link 3 = %v, want disabled", st)
	}
	if st, _ := h.GetNvLinkState(17); st != gonvml.FEATURE_ENABLED {
		t.Errorf("link 17 = %v, want enabled", st)
	}
	if _, ret := h.GetNvLinkState(18); ret != gonvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("link 18 = %v, want INVALID_ARGUMENT", ret)
	}
	if v, _ := h.GetNvLinkVersion(0); v != uint32(gonvml.NVLINK_VERSION_5_0) {
		t.Errorf("NVLink version = %d", v)
	}
	cur, _ := h.GetCurrPcieLinkGeneration()
	maxGen, _ := h.GetMaxPcieLinkGeneration()
	w, _ := h.GetCurrPcieLinkWidth()
	if cur != 4 || maxGen != 5 || w != 8 {
		t.Errorf("PCIe Gen%d/%d x%d", cur, maxGen, w)
	}
	if c, p, _ := h.GetMigMode(); c != gonvml.DEVICE_MIG_ENABLE || p != gonvml.DEVICE_MIG_ENABLE {
		t.Errorf("MIG mode %d/%d", c, p)
	}
	if mw, _ := h.GetEnforcedPowerLimit(); mw != 1_000_000 {
		t.Errorf("power limit %d mW", mw)
	}
	if n, _ := h.GetNumaNodeId(); n != 1 {
		t.Errorf("NUMA node %d", n)
	}
	// The go-nvml mock's own MIG machinery still drives the mode we report.
	h0 := handle(t, lib, 0)
	h0.SetMigMode(gonvml.DEVICE_MIG_ENABLE)
	if c, _, _ := h0.GetMigMode(); c != gonvml.DEVICE_MIG_ENABLE {
		t.Errorf("GetMigMode after SetMigMode = %d", c)
	}
	// A node without NUMA information: NVML says not supported.
	m.GPUs[0].NUMANode = -1
	if _, ret := handle(t, mustNew(t, m), 0).GetNumaNodeId(); ret != gonvml.ERROR_NOT_SUPPORTED {
		t.Errorf("GetNumaNodeId without NUMA = %v", ret)
	}
	if v, ret := lib.SystemGetDriverVersion(); v != "570.124.06" || ret != gonvml.SUCCESS {
		t.Errorf("driver %q %v", v, ret)
	}
	if v, _ := lib.SystemGetNVMLVersion(); v != "12.570.124.06" {
		t.Errorf("NVML version %q", v)
	}
}

func TestFaultHelpers(t *testing.T) {
	lib := mustNew(t, twoGPUs(H200))
	h := handle(t, lib, 0)

	SetReturn(lib, 0, "nvmlDeviceGetSerial", gonvml.ERROR_NOT_SUPPORTED)
	if v, ret := h.GetSerial(); v != "" || ret != gonvml.ERROR_NOT_SUPPORTED {
		t.Errorf("GetSerial with fault = %q %v", v, ret)
	}
	if _, ret := handle(t, lib, 1).GetSerial(); ret != gonvml.SUCCESS {
		t.Errorf("fault leaked to GPU 1: %v", ret)
	}
	SetReturn(lib, 0, "nvmlDeviceGetSerial", gonvml.SUCCESS)
	if _, ret := h.GetSerial(); ret != gonvml.SUCCESS {
		t.Errorf("GetSerial after restore = %v", ret)
	}

	SetLost(lib, 0)
	if _, ret := h.GetName(); ret != gonvml.ERROR_GPU_IS_LOST {
		t.Errorf("GetName on a lost GPU = %v", ret)
	}
	if _, ret := lib.DeviceGetHandleByIndex(0); ret != gonvml.ERROR_GPU_IS_LOST {
		t.Errorf("handle of a lost GPU = %v", ret)
	}

	HideSymbol(lib, "nvmlDeviceGetNumaNodeId")
	if err := lib.Extensions().LookupSymbol("nvmlDeviceGetNumaNodeId"); err == nil {
		t.Error("hidden symbol was found")
	}
	if err := lib.Extensions().LookupSymbol("nvmlDeviceGetSerial"); err != nil {
		t.Errorf("implemented symbol: %v", err)
	}
	if err := lib.Extensions().LookupSymbol("nvmlDeviceGetFanSpeed"); err == nil {
		t.Error("a symbol the fake does not implement was found")
	}
	mustPanic(t, "calling a hidden symbol", func() { handle(t, lib, 1).GetNumaNodeId() })
	mustPanic(t, "unknown symbol", func() { SetReturn(lib, 1, "nvmlDeviceGetFanSpeed", gonvml.ERROR_UNKNOWN) })
	mustPanic(t, "index out of range", func() { SetLost(lib, 2) })
	mustPanic(t, "foreign library", func() { SetLost(&server.Server{}, 0) })

	SetInitReturn(lib, gonvml.ERROR_DRIVER_NOT_LOADED)
	if ret := lib.Init(); ret != gonvml.ERROR_DRIVER_NOT_LOADED {
		t.Errorf("Init with fault = %v", ret)
	}
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	f()
}

// Faults may be injected while another goroutine uses the library (run with -race).
func TestFaultsWhileInUse(t *testing.T) {
	lib := mustNew(t, twoGPUs(A100))
	var wg sync.WaitGroup
	lost := errors.New("lost")
	errs := make(chan error, 1)
	wg.Go(func() {
		for range 1000 {
			if h, ret := lib.DeviceGetHandleByIndex(1); ret == gonvml.ERROR_GPU_IS_LOST {
				errs <- lost
				return
			} else if _, ret := h.GetUUID(); ret != gonvml.SUCCESS && ret != gonvml.ERROR_GPU_IS_LOST {
				errs <- ret
				return
			}
		}
		errs <- nil
	})
	SetReturn(lib, 1, "nvmlDeviceGetVbiosVersion", gonvml.ERROR_UNKNOWN)
	SetLost(lib, 1)
	wg.Wait()
	if err := <-errs; err != nil && err != lost {
		t.Fatal(err)
	}
}

// TestGB200 checks the GB200 model against what nvidia-smi and lspci print
// on a GB200 compute tray: name, memory, PCI id, power limit, driver and
// CUDA version, NVLink 5, and a completed fabric in the machine's clique.
func TestGB200(t *testing.T) {
	m := twoGPUs(GB200)
	m.FabricCluster = [16]byte{0x9c, 0x6f, 0x5a, 0xf3, 0x53, 0xbf, 0x49, 0xb5, 0xa4, 0x36, 0xb6, 0x67, 0x66, 0xc4, 0x13, 0xc3}
	m.FabricClique = 4026
	lib := mustNew(t, m)
	h := handle(t, lib, 1)
	if v, _ := h.GetName(); v != "NVIDIA GB200" {
		t.Errorf("name %q", v)
	}
	if mem, _ := h.GetMemoryInfo(); mem.Total != 189471<<20 {
		t.Errorf("memory total %d, want 189471 MiB", mem.Total)
	}
	if pci, _ := h.GetPciInfo(); pci.PciDeviceId != 0x294110DE {
		t.Errorf("PCI device id %#x", pci.PciDeviceId)
	}
	if p, _ := h.GetEnforcedPowerLimit(); p != 1_200_000 {
		t.Errorf("power limit %d mW", p)
	}
	if v, _ := lib.SystemGetDriverVersion(); v != "580.126.09" {
		t.Errorf("driver %q", v)
	}
	if v, _ := lib.SystemGetCudaDriverVersion(); v != 13000 {
		t.Errorf("CUDA %d", v)
	}
	if v, _ := h.GetNvLinkVersion(17); v != uint32(gonvml.NVLINK_VERSION_5_0) {
		t.Errorf("NVLink version %v", v)
	}
	f, ret := h.GetGpuFabricInfo()
	if ret != gonvml.SUCCESS || f.State != gonvml.GPU_FABRIC_STATE_COMPLETED || f.CliqueId != 4026 || f.ClusterUuid != m.FabricCluster {
		t.Errorf("fabric %+v %v", f, ret)
	}
}
