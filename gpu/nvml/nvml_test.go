package nvml_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/dl"
	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/internal/source"
)

// The bus ids and NUMA nodes of a DGX H100.
var dgxBusIDs = []string{"0000:1b:00.0", "0000:43:00.0", "0000:52:00.0", "0000:61:00.0",
	"0000:9d:00.0", "0000:c3:00.0", "0000:d1:00.0", "0000:df:00.0"}

func dgx(model nvmlfake.Model) nvmlfake.Machine {
	m := nvmlfake.Machine{Model: model, Seed: "dgx-h100-01"}
	for i, id := range dgxBusIDs {
		m.GPUs = append(m.GPUs, nvmlfake.GPU{PCIBusID: id, NUMANode: i / 4})
	}
	return m
}

func build(t *testing.T, m nvmlfake.Machine) gonvml.Interface {
	t.Helper()
	lib, err := nvmlfake.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return lib
}

// spy wraps a library to count Init/Shutdown and to act in the middle of a walk.
type spy struct {
	gonvml.Interface
	inits, shutdowns atomic.Int32
	countRet         gonvml.Return // when set, DeviceGetCount fails with it
	afterHandle      func(i int)   // runs after each handle lookup
}

func (s *spy) Init() gonvml.Return {
	s.inits.Add(1)
	return s.Interface.Init()
}

func (s *spy) Shutdown() gonvml.Return {
	s.shutdowns.Add(1)
	return s.Interface.Shutdown()
}

func (s *spy) DeviceGetCount() (int, gonvml.Return) {
	if s.countRet != gonvml.SUCCESS {
		return 0, s.countRet
	}
	return s.Interface.DeviceGetCount()
}

func (s *spy) DeviceGetHandleByIndex(i int) (gonvml.Device, gonvml.Return) {
	h, ret := s.Interface.DeviceGetHandleByIndex(i)
	if s.afterHandle != nil {
		s.afterHandle(i)
	}
	return h, ret
}

func inventory(t *testing.T, b *nvml.Backend) gpu.Inventory {
	t.Helper()
	inv, err := b.Inventory(context.Background())
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	return inv
}

func TestH100DeviceFieldByField(t *testing.T) {
	b := nvml.New(build(t, dgx(nvmlfake.H100)))
	defer b.Close()
	inv := inventory(t, b)
	if inv.Backend != "nvml" || inv.DriverVersion != "550.54.15" || inv.CUDAVersion != "12.4" || inv.LibraryVersion != "12.550.54.15" {
		t.Errorf("inventory header = %q %q %q %q", inv.Backend, inv.DriverVersion, inv.CUDAVersion, inv.LibraryVersion)
	}
	want := gpu.Device{
		Index: 0, Vendor: gpu.NVIDIA,
		UUID:         "GPU-0665141a-d98f-5314-a0be-432baca2efe0", // fixed by the seed
		Product:      "NVIDIA H100 80GB HBM3",
		Architecture: "hopper", ComputeMajor: 9, ComputeMinor: 0,
		MemoryBytes: 80 << 30,
		PCIBusID:    "0000:1b:00.0", PCIDeviceID: "0x2330",
		NUMANode:        0,
		MIG:             gpu.MIG{Capable: true},
		Interconnect:    &gpu.Interconnect{Kind: "nvlink", Links: 18, Active: 18, Generation: 4},
		PowerLimitWatts: 700,
		PCIeLink:        &gpu.PCIeLink{CurrentGen: 5, MaxGen: 5, CurrentWidth: 16, MaxWidth: 16, PerformanceState: "P0"},
		Serial:          "1126013088837",
		VBIOSVersion:    "96.00.74.00.0D",
		ECC:             &gpu.ECCMode{Enabled: true, Pending: true},
		RemappedRows:    &gpu.RemappedRows{},
		Fabric:          &gpu.Fabric{State: gpu.FabricCompleted, Status: "success"},
	}
	if len(inv.Devices) != 8 {
		t.Fatalf("%d devices, want 8", len(inv.Devices))
	}
	if got := inv.Devices[0]; !reflect.DeepEqual(got, want) {
		t.Errorf("device 0:\n got %+v\nwant %+v", got, want)
	}
}

func TestModels(t *testing.T) {
	for _, tc := range []struct {
		model         nvmlfake.Model
		product, arch string
		major         int
		memMiB        uint64
		deviceID      string
		links, gen    int
		watts         float64
		pcieGen       int
		driver, cuda  string
	}{
		{nvmlfake.A100, "NVIDIA A100-SXM4-40GB", "ampere", 8, 40960, "0x20b0", 12, 3, 400, 4, "535.183.01", "12.2"},
		{nvmlfake.H100, "NVIDIA H100 80GB HBM3", "hopper", 9, 81920, "0x2330", 18, 4, 700, 5, "550.54.15", "12.4"},
		{nvmlfake.H200, "NVIDIA H200", "hopper", 9, 144384, "0x2335", 18, 4, 700, 5, "550.90.07", "12.4"},
		{nvmlfake.B200, "NVIDIA B200", "blackwell", 10, 184320, "0x2901", 18, 5, 1000, 5, "570.124.06", "12.8"},
	} {
		t.Run(string(tc.model), func(t *testing.T) {
			b := nvml.New(build(t, dgx(tc.model)))
			defer b.Close()
			inv := inventory(t, b)
			if inv.DriverVersion != tc.driver || inv.CUDAVersion != tc.cuda || inv.LibraryVersion != tc.cuda[:2]+"."+tc.driver {
				t.Errorf("versions %q %q %q", inv.DriverVersion, inv.CUDAVersion, inv.LibraryVersion)
			}
			if len(inv.Devices) != 8 {
				t.Fatalf("%d devices, want 8", len(inv.Devices))
			}
			uuids := map[string]bool{}
			for i, d := range inv.Devices {
				if d.Index != i || d.Vendor != gpu.NVIDIA || d.Product != tc.product || d.Architecture != tc.arch ||
					d.ComputeMajor != tc.major || d.ComputeMinor != 0 || d.MemoryBytes != tc.memMiB<<20 ||
					d.PCIDeviceID != tc.deviceID || d.PCIBusID != dgxBusIDs[i] || d.NUMANode != i/4 {
					t.Errorf("device %d identity: %+v", i, d)
				}
				if ic := d.Interconnect; ic == nil || *ic != (gpu.Interconnect{Kind: "nvlink", Links: tc.links, Active: tc.links, Generation: tc.gen}) {
					t.Errorf("device %d interconnect %+v", i, ic)
				}
				want := gpu.PCIeLink{CurrentGen: tc.pcieGen, MaxGen: tc.pcieGen, CurrentWidth: 16, MaxWidth: 16, PerformanceState: "P0"}
				if l := d.PCIeLink; l == nil || *l != want {
					t.Errorf("device %d PCIe %+v", i, l)
				}
				if d.PowerLimitWatts != tc.watts || d.MIG != (gpu.MIG{Capable: true}) || d.Serial == "" || d.VBIOSVersion == "" || len(d.Errors) != 0 {
					t.Errorf("device %d: %+v", i, d)
				}
				if !strings.HasPrefix(d.UUID, "GPU-") || uuids[d.UUID] {
					t.Errorf("device %d uuid %q missing or repeated", i, d.UUID)
				}
				uuids[d.UUID] = true
			}
		})
	}
}

func TestUUIDsFollowTheSeed(t *testing.T) {
	uuids := func(seed string) []string {
		m := dgx(nvmlfake.B200)
		m.Seed = seed
		b := nvml.New(build(t, m))
		defer b.Close()
		var u []string
		for _, d := range inventory(t, b).Devices {
			u = append(u, d.UUID)
		}
		return u
	}
	a, again, other := uuids("node-1"), uuids("node-1"), uuids("node-2")
	if !reflect.DeepEqual(a, again) {
		t.Errorf("same seed, different UUIDs:\n%v\n%v", a, again)
	}
	for i := range a {
		if a[i] == other[i] {
			t.Errorf("device %d: seeds node-1 and node-2 share %s", i, a[i])
		}
	}
}

func TestVersionOverrides(t *testing.T) {
	m := dgx(nvmlfake.H100)
	m.DriverVersion, m.CUDAVersion = "560.35.03", 12060
	b := nvml.New(build(t, m))
	defer b.Close()
	inv := inventory(t, b)
	if inv.DriverVersion != "560.35.03" || inv.CUDAVersion != "12.6" || inv.LibraryVersion != "12.560.35.03" {
		t.Errorf("versions %q %q %q", inv.DriverVersion, inv.CUDAVersion, inv.LibraryVersion)
	}
}

func TestMachineFaults(t *testing.T) {
	m := dgx(nvmlfake.H100)
	m.GPUs[2].NVLinkDown = []int{0, 5, 17}
	m.GPUs[4].PCIeGen, m.GPUs[4].PCIeWidth = 3, 8 // trained down, e.g. a bad riser
	m.GPUs[6].PCIeWidth = 8
	m.GPUs[1].MIGEnabled = true
	lib := build(t, m)
	nvmlfake.SetIdle(lib, 7, true)
	b := nvml.New(lib)
	defer b.Close()
	inv := inventory(t, b)
	for i, d := range inv.Devices {
		wantActive := 18
		if i == 2 {
			wantActive = 15
		}
		if d.Interconnect.Links != 18 || d.Interconnect.Active != wantActive || d.Interconnect.Generation != 4 {
			t.Errorf("device %d links %+v, want %d of 18 active", i, d.Interconnect, wantActive)
		}
		wantLink := gpu.PCIeLink{CurrentGen: 5, MaxGen: 5, CurrentWidth: 16, MaxWidth: 16, PerformanceState: "P0"}
		switch i {
		case 4:
			wantLink.CurrentGen, wantLink.CurrentWidth = 3, 8
		case 6:
			wantLink.CurrentWidth = 8
		case 7: // idle: the driver runs the link at Gen1 in P8
			wantLink.CurrentGen, wantLink.PerformanceState = 1, "P8"
		}
		if *d.PCIeLink != wantLink {
			t.Errorf("device %d PCIe %+v, want %+v", i, *d.PCIeLink, wantLink)
		}
		if want := (gpu.MIG{Capable: true, Enabled: i == 1, Pending: i == 1}); d.MIG != want {
			t.Errorf("device %d MIG %+v, want %+v", i, d.MIG, want)
		}
	}
}

func TestAllLinksDownKeepsLinkCount(t *testing.T) {
	m := dgx(nvmlfake.A100)
	m.GPUs[0].NVLinkDown = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	b := nvml.New(build(t, m))
	defer b.Close()
	ic := inventory(t, b).Devices[0].Interconnect
	// Generation comes from an active link, so it is unknown here.
	if ic == nil || *ic != (gpu.Interconnect{Kind: "nvlink", Links: 12}) {
		t.Errorf("interconnect %+v", ic)
	}
}

func TestLostGPUBetweenRuns(t *testing.T) {
	lib := build(t, dgx(nvmlfake.H100))
	b := nvml.New(lib)
	defer b.Close()
	first := inventory(t, b)
	nvmlfake.SetLost(lib, 3)
	inv, err := b.Inventory(context.Background())
	if err == nil || !errors.Is(err, gonvml.ERROR_GPU_IS_LOST) || errors.Is(err, source.ErrAbsent) {
		t.Fatalf("err = %v, want one wrapping ERROR_GPU_IS_LOST", err)
	}
	if !strings.Contains(err.Error(), "gpu 3: nvmlDeviceGetHandleByIndex") {
		t.Errorf("err %q does not name the GPU and call", err)
	}
	if len(inv.Devices) != 8 {
		t.Fatalf("%d devices, want 8", len(inv.Devices))
	}
	for i, d := range inv.Devices {
		if i == 3 {
			want := gpu.Device{Index: 3, Vendor: gpu.NVIDIA, NUMANode: -1,
				Errors: []string{"nvmlDeviceGetHandleByIndex: " + gonvml.ERROR_GPU_IS_LOST.Error()}}
			if !reflect.DeepEqual(d, want) {
				t.Errorf("lost device %+v, want %+v", d, want)
			}
			continue
		}
		if !reflect.DeepEqual(d, first.Devices[i]) {
			t.Errorf("device %d changed:\n got %+v\nwant %+v", i, d, first.Devices[i])
		}
	}
}

func TestLostGPUMidWalk(t *testing.T) {
	s := &spy{Interface: build(t, dgx(nvmlfake.H200))}
	// GPU 5 falls off the bus right after its handle was obtained.
	s.afterHandle = func(i int) {
		if i == 5 {
			nvmlfake.SetLost(s.Interface, 5)
		}
	}
	b := nvml.New(s)
	defer b.Close()
	inv, err := b.Inventory(context.Background())
	if !errors.Is(err, gonvml.ERROR_GPU_IS_LOST) {
		t.Fatalf("err = %v", err)
	}
	if len(inv.Devices) != 8 {
		t.Fatalf("%d devices, want 8", len(inv.Devices))
	}
	// The first call reports the loss and nothing more is asked.
	lost := inv.Devices[5]
	if lost.UUID != "" || lost.Index != 5 || len(lost.Errors) != 1 || !strings.HasPrefix(lost.Errors[0], "nvmlDeviceGetUUID: ") {
		t.Errorf("lost device %+v", lost)
	}
	for i, d := range inv.Devices {
		if i != 5 && (d.UUID == "" || len(d.Errors) != 0 || d.Interconnect == nil) {
			t.Errorf("device %d incomplete: %+v", i, d)
		}
	}
}

// A GPU the process may not open (a device cgroup hides it) is counted by
// nvmlDeviceGetCount_v2 and answers NO_PERMISSION for its handle: it is
// reported as not visible, not as a failed GPU.
func TestGPUsTheProcessMayNotOpen(t *testing.T) {
	lib := build(t, dgx(nvmlfake.H100))
	nvmlfake.SetNoPermission(lib, 3)
	nvmlfake.SetNoPermission(lib, 6)
	b := nvml.New(lib)
	defer b.Close()
	inv, err := b.Inventory(context.Background())
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	if !slices.Equal(inv.NotVisible, []int{3, 6}) || len(inv.Devices) != 6 {
		t.Fatalf("not visible %v, %d devices", inv.NotVisible, len(inv.Devices))
	}
	for _, d := range inv.Devices {
		if d.Index == 3 || d.Index == 6 || d.UUID == "" || len(d.Errors) != 0 {
			t.Errorf("device %+v", d)
		}
	}
	samples, err := b.Sample(context.Background())
	if err != nil || len(samples) != 6 {
		t.Fatalf("%d samples, error %v", len(samples), err)
	}
	for _, s := range samples {
		if s.Index == 3 || s.Index == 6 || !s.Up {
			t.Errorf("sample %d up %v", s.Index, s.Up)
		}
	}
}

func TestNotSupportedLeavesFieldsEmpty(t *testing.T) {
	lib := build(t, dgx(nvmlfake.B200))
	for _, sym := range []string{"nvmlDeviceGetArchitecture", "nvmlDeviceGetNumaNodeId", "nvmlDeviceGetMigMode",
		"nvmlDeviceGetNvLinkState", "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetCurrPcieLinkGeneration",
		"nvmlDeviceGetMaxPcieLinkGeneration", "nvmlDeviceGetCurrPcieLinkWidth", "nvmlDeviceGetMaxPcieLinkWidth",
		"nvmlDeviceGetSerial", "nvmlDeviceGetVbiosVersion", "nvmlDeviceGetEccMode", "nvmlDeviceGetRemappedRows",
		"nvmlDeviceGetGpuFabricInfo"} {
		nvmlfake.SetReturn(lib, 0, sym, gonvml.ERROR_NOT_SUPPORTED)
	}
	nvmlfake.SetReturn(lib, 0, "nvmlDeviceGetPerformanceState", gonvml.ERROR_NOT_SUPPORTED)
	nvmlfake.SetReturn(lib, 1, "nvmlDeviceGetMaxPcieLinkWidth", gonvml.ERROR_NOT_SUPPORTED)
	b := nvml.New(lib)
	defer b.Close()
	inv := inventory(t, b) // NOT_SUPPORTED is not an error
	want := gpu.Device{Index: 0, Vendor: gpu.NVIDIA, UUID: inv.Devices[0].UUID, Product: "NVIDIA B200",
		ComputeMajor: 10, MemoryBytes: 184320 << 20, PCIBusID: "0000:1b:00.0", PCIDeviceID: "0x2901", NUMANode: -1}
	if got := inv.Devices[0]; !reflect.DeepEqual(got, want) || got.UUID == "" {
		t.Errorf("device 0:\n got %+v\nwant %+v", got, want)
	}
	if l := inv.Devices[1].PCIeLink; *l != (gpu.PCIeLink{CurrentGen: 5, MaxGen: 5, CurrentWidth: 16, PerformanceState: "P0"}) {
		t.Errorf("device 1 PCIe %+v", *l)
	}
}

func TestOtherErrorsAreRecorded(t *testing.T) {
	lib := build(t, dgx(nvmlfake.H100))
	nvmlfake.SetReturn(lib, 6, "nvmlDeviceGetSerial", gonvml.ERROR_UNKNOWN)
	nvmlfake.SetReturn(lib, 7, "nvmlDeviceGetNvLinkVersion", gonvml.ERROR_NO_PERMISSION)
	nvmlfake.SetReturn(lib, 7, "nvmlDeviceGetPciInfo", gonvml.ERROR_UNKNOWN)
	b := nvml.New(lib)
	defer b.Close()
	inv, err := b.Inventory(context.Background())
	if err == nil || errors.Is(err, source.ErrAbsent) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"gpu 6: nvmlDeviceGetSerial", "gpu 7: nvmlDeviceGetNvLinkVersion", "gpu 7: nvmlDeviceGetPciInfo"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err %q lacks %q", err, want)
		}
	}
	d6, d7 := inv.Devices[6], inv.Devices[7]
	if d6.Serial != "" || len(d6.Errors) != 1 || d6.VBIOSVersion == "" || d6.Interconnect == nil {
		t.Errorf("device 6: %+v", d6)
	}
	// The other fields of device 7 are still read.
	if len(d7.Errors) != 2 || d7.Interconnect.Active != 18 || d7.Interconnect.Generation != 0 ||
		d7.PCIBusID != "" || d7.PCIDeviceID != "" || d7.UUID == "" || d7.Serial == "" {
		t.Errorf("device 7: %+v", d7)
	}
}

func TestMissingSymbolsAreNotCalled(t *testing.T) {
	lib := build(t, dgx(nvmlfake.H100))
	for _, sym := range []string{"nvmlDeviceGetNumaNodeId", "nvmlDeviceGetArchitecture", "nvmlDeviceGetMigMode",
		"nvmlDeviceGetGpuFabricInfo", "nvmlDeviceGetRemappedRows"} {
		nvmlfake.HideSymbol(lib, sym) // the fake panics if one is called anyway
	}
	b := nvml.New(lib)
	defer b.Close()
	for range 2 {
		inv := inventory(t, b)
		for i, d := range inv.Devices {
			if d.NUMANode != -1 || d.Architecture != "" || d.MIG != (gpu.MIG{}) || d.UUID == "" || d.Fabric != nil || d.RemappedRows != nil {
				t.Errorf("device %d: %+v", i, d)
			}
		}
	}
	if n := nvmlfake.Calls(lib, "nvmlDeviceGetNumaNodeId"); n != 0 {
		t.Errorf("GetNumaNodeId called %d times", n)
	}
}

func TestSymbolLookupsAreCachedPerInit(t *testing.T) {
	lib := build(t, dgx(nvmlfake.A100))
	lookups := func() int { return nvmlfake.Calls(lib, "LookupSymbol") }
	b := nvml.New(lib)
	inventory(t, b)
	inventory(t, b)
	if n := lookups(); n != 5 {
		t.Errorf("%d lookups over two runs, want 5 (one per gated symbol)", n)
	}
	b.Close() // a new Init may load another library version: ask again
	inventory(t, b)
	if n := lookups(); n != 10 {
		t.Errorf("%d lookups after re-Init, want 10", n)
	}
	b.Close()
}

func TestInitOnceAndClose(t *testing.T) {
	s := &spy{Interface: build(t, dgx(nvmlfake.H100))}
	b := nvml.New(s)
	for range 3 {
		inventory(t, b)
	}
	if n := s.inits.Load(); n != 1 {
		t.Errorf("Init called %d times over 3 runs", n)
	}
	h, _ := s.DeviceGetHandleByIndex(0)
	for range 2 {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.shutdowns.Load(); n != 1 {
		t.Errorf("Shutdown called %d times by two Closes", n)
	}
	if _, ret := h.GetUUID(); ret != gonvml.ERROR_UNINITIALIZED {
		t.Errorf("library still initialised after Close: %v", ret)
	}
	if inv := inventory(t, b); len(inv.Devices) != 8 || s.inits.Load() != 2 {
		t.Errorf("Inventory after Close: %d devices, %d Inits", len(inv.Devices), s.inits.Load())
	}
	b.Close()
}

func TestInitFailures(t *testing.T) {
	for _, tc := range []struct {
		ret    gonvml.Return
		absent bool
		msg    string
	}{
		{gonvml.ERROR_LIBRARY_NOT_FOUND, true, "libnvidia-ml.so.1 not found"},
		{gonvml.ERROR_DRIVER_NOT_LOADED, true, "driver is not loaded"},
		{gonvml.ERROR_LIB_RM_VERSION_MISMATCH, false, "nvmlInit: "},
		{gonvml.ERROR_NO_PERMISSION, false, "nvmlInit: "},
	} {
		t.Run(tc.ret.Error(), func(t *testing.T) {
			s := &spy{Interface: build(t, dgx(nvmlfake.H100))}
			nvmlfake.SetInitReturn(s.Interface, tc.ret)
			b := nvml.New(s)
			inv, err := b.Inventory(context.Background())
			if err == nil || errors.Is(err, source.ErrAbsent) != tc.absent || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want absent=%v containing %q", err, tc.absent, tc.msg)
			}
			if len(inv.Devices) != 0 || inv.Backend != "nvml" {
				t.Errorf("inventory %+v", inv)
			}
			if err := b.Close(); err != nil || s.shutdowns.Load() != 0 {
				t.Errorf("Close after a failed Init: %v, %d Shutdowns", err, s.shutdowns.Load())
			}
			// The driver appears later: the next run initialises.
			nvmlfake.SetInitReturn(s.Interface, gonvml.SUCCESS)
			if inv := inventory(t, b); len(inv.Devices) != 8 || s.inits.Load() != 2 {
				t.Errorf("retry: %d devices after %d Inits", len(inv.Devices), s.inits.Load())
			}
			b.Close()
		})
	}
}

func TestDeviceCountFailure(t *testing.T) {
	s := &spy{Interface: build(t, dgx(nvmlfake.H100)), countRet: gonvml.ERROR_UNKNOWN}
	b := nvml.New(s)
	defer b.Close()
	inv, err := b.Inventory(context.Background())
	if err == nil || !strings.Contains(err.Error(), "nvmlDeviceGetCount") || inv.DriverVersion != "550.54.15" || len(inv.Devices) != 0 {
		t.Errorf("Inventory = %+v, %v", inv, err)
	}
}

func TestNoGPUs(t *testing.T) {
	b := nvml.New(build(t, nvmlfake.Machine{Model: nvmlfake.H100}))
	defer b.Close()
	if inv := inventory(t, b); inv.Devices == nil || len(inv.Devices) != 0 {
		t.Errorf("devices %#v, want empty", inv.Devices)
	}
}

func TestContext(t *testing.T) {
	s := &spy{Interface: build(t, dgx(nvmlfake.H100))}
	b := nvml.New(s)
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Inventory(ctx); !errors.Is(err, context.Canceled) || s.inits.Load() != 0 {
		t.Errorf("cancelled context: %v, %d Inits", err, s.inits.Load())
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	s.afterHandle = func(i int) {
		if i == 2 {
			cancel() // GPU 2 is still read in full; the walk stops before GPU 3
		}
	}
	inv, err := b.Inventory(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "stopped after 3 of 8 GPUs") {
		t.Errorf("err = %v", err)
	}
	if len(inv.Devices) != 3 || inv.Devices[2].UUID == "" {
		t.Errorf("got %d devices: %+v", len(inv.Devices), inv.Devices)
	}
}

func TestNilLibraryIsAbsent(t *testing.T) {
	b := nvml.New(nil)
	if b.Name() != "nvml" {
		t.Errorf("Name = %q", b.Name())
	}
	_, err := b.Inventory(context.Background())
	if !errors.Is(err, source.ErrAbsent) || !strings.Contains(err.Error(), "not available") {
		t.Errorf("err = %v", err)
	}
	if err := b.Close(); err != nil {
		t.Error(err)
	}
}

// TestRealLibrary runs the backend over the host's libnvidia-ml. Where the
// library cannot be loaded (hosts without the NVIDIA driver, like CI) it
// must be reported absent, twice, without touching any other NVML symbol.
func TestRealLibrary(t *testing.T) {
	probe := dl.New("libnvidia-ml.so.1", dl.RTLD_LAZY)
	installed := probe.Open() == nil
	if installed {
		probe.Close()
	}
	b := nvml.New(gonvml.New())
	for run := range 2 {
		inv, err := b.Inventory(context.Background())
		switch {
		case !installed:
			if !errors.Is(err, source.ErrAbsent) || !strings.Contains(err.Error(), "libnvidia-ml.so.1") {
				t.Fatalf("run %d without the library: %v", run, err)
			}
		case errors.Is(err, source.ErrAbsent):
			t.Logf("library present, driver not loaded: %v", err)
		default:
			// A GPU host: every GPU NVML counts is reported with its identity.
			if err != nil {
				t.Errorf("run %d: %v", run, err)
			}
			if inv.DriverVersion == "" || inv.CUDAVersion == "" {
				t.Errorf("run %d: versions %+v", run, inv)
			}
			for i, d := range inv.Devices {
				if d.Index != i || !strings.HasPrefix(d.UUID, "GPU-") || d.Product == "" || d.PCIBusID == "" || d.MemoryBytes == 0 {
					t.Errorf("device %d: %+v", i, d)
				}
				t.Logf("%s", fmt.Sprintf("%+v", d))
			}
		}
	}
	if err := b.Close(); err != nil {
		t.Error(err)
	}
	if err := b.Close(); err != nil {
		t.Error(err)
	}
}

// Inventory, Close and fault injection from many goroutines (run with -race).
func TestConcurrentUse(t *testing.T) {
	lib := build(t, dgx(nvmlfake.H100))
	b := nvml.New(lib)
	defer b.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Go(func() {
			for range 10 {
				inv, err := b.Inventory(context.Background())
				if len(inv.Devices) != 8 {
					errs <- fmt.Errorf("goroutine %d: %d devices, %v", g, len(inv.Devices), err)
					return
				}
				if err != nil && !errors.Is(err, gonvml.ERROR_UNKNOWN) {
					errs <- fmt.Errorf("goroutine %d: %v", g, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			if err := b.Close(); err != nil {
				errs <- err
			}
		}
	})
	nvmlfake.SetReturn(lib, 4, "nvmlDeviceGetSerial", gonvml.ERROR_UNKNOWN)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestFabricClique reads the multi-node NVLink clique of a tray whose
// fabric manager put one GPU into another partition and has not yet
// registered another: only completed GPUs in a cluster carry a clique.
func TestFabricClique(t *testing.T) {
	m := dgx(nvmlfake.B200)
	m.GPUs = m.GPUs[:4]
	m.FabricCluster = [16]byte{0x9f, 0x2b, 0x0c, 0x41, 0x7e, 0x15, 0x4a, 0x3d, 0x8b, 0x6e, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab}
	m.FabricClique = 32766
	other := uint32(5)
	m.GPUs[2].FabricClique = &other
	m.GPUs[3].FabricNotStarted = true
	b := nvml.New(build(t, m))
	defer b.Close()
	inv := inventory(t, b)
	want := []gpu.Fabric{
		{State: gpu.FabricCompleted, Status: "success", Clique: "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.32766"},
		{State: gpu.FabricCompleted, Status: "success", Clique: "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.32766"},
		{State: gpu.FabricCompleted, Status: "success", Clique: "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.5"},
		{State: gpu.FabricNotStarted},
	}
	for i, w := range want {
		if f := inv.Devices[i].Fabric; f == nil || *f != w {
			t.Errorf("gpu %d fabric = %+v, want %+v", i, f, w)
		}
	}

	// A single-node NVSwitch baseboard reports a completed fabric with a
	// zero cluster UUID: no clique.
	b2 := nvml.New(build(t, dgx(nvmlfake.H100)))
	defer b2.Close()
	if f := inventory(t, b2).Devices[0].Fabric; f == nil || f.Clique != "" {
		t.Errorf("HGX H100 fabric = %+v, want no clique", f)
	}
}
