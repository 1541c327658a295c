package nvmlfake

import (
	"cmp"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// modelSpec is what a model's GPUs report beyond go-nvml's gpus.Config.
type modelSpec struct {
	config      gpus.Config
	links       int
	linkVersion gonvml.NvlinkVersion
	powerMW     uint32
	pcieGen     int
	pcieWidth   int
	vbios       string
	driver      string
	cuda        int
}

// specFor returns the model's spec. Names and PCI device ids are what the
// real driver reports, where go-nvml's configs differ ("Mock ..." names,
// placeholder device ids).
func specFor(m Model) (modelSpec, bool) {
	switch m {
	case A100:
		c := gpus.A100_SXM4_40GB
		c.Name = "NVIDIA A100-SXM4-40GB"
		return modelSpec{config: c, links: 12, linkVersion: gonvml.NVLINK_VERSION_3_0, powerMW: 400_000,
			pcieGen: 4, pcieWidth: 16, vbios: "92.00.45.00.03", driver: "535.183.01", cuda: 12020}, true
	case H100:
		return modelSpec{config: gpus.H100_SXM5_80GB, links: 18, linkVersion: gonvml.NVLINK_VERSION_4_0, powerMW: 700_000,
			pcieGen: 5, pcieWidth: 16, vbios: "96.00.74.00.0D", driver: "550.54.15", cuda: 12040}, true
	case H200:
		c := gpus.H200_SXM5_141GB
		c.Name, c.PciDeviceId = "NVIDIA H200", 0x233510DE
		return modelSpec{config: c, links: 18, linkVersion: gonvml.NVLINK_VERSION_4_0, powerMW: 700_000,
			pcieGen: 5, pcieWidth: 16, vbios: "96.00.A5.00.01", driver: "550.90.07", cuda: 12040}, true
	case B200:
		c := gpus.B200_SXM5_180GB
		c.Name, c.PciDeviceId = "NVIDIA B200", 0x290110DE
		return modelSpec{config: c, links: 18, linkVersion: gonvml.NVLINK_VERSION_5_0, powerMW: 1_000_000,
			pcieGen: 5, pcieWidth: 16, vbios: "97.00.82.00.0A", driver: "570.124.06", cuda: 12080}, true
	}
	return modelSpec{}, false
}

// machine is the fake library: go-nvml's mock server plus the state that
// Init/Shutdown and the fault helpers change. Every filled-in function goes
// through enter, so faults apply uniformly and nothing answers before Init.
type machine struct {
	*server.Server
	spec modelSpec
	devs []*device

	mu       sync.Mutex
	inits    int // nvmlInit calls not yet matched by nvmlShutdown
	initRet  gonvml.Return
	hidden   map[string]bool
	provided map[string]bool // symbols LookupSymbol finds
}

// device is one fake GPU's spec and injected faults (guarded by machine.mu).
type device struct {
	*server.Device
	spec GPU
	down map[int]bool
	lost bool
	rets map[string]gonvml.Return
}

// New builds the NVIDIA side of m. The result is an NVML library whose
// devices answer, in m.GPUs order, every function the gpu/nvml backend
// calls; UUIDs and serial numbers follow from m.Seed and the GPU's index.
func New(m Machine) (gonvml.Interface, error) {
	spec, ok := specFor(m.Model)
	if !ok {
		return nil, fmt.Errorf("nvmlfake: unknown model %q", m.Model)
	}
	driver := cmp.Or(m.DriverVersion, spec.driver)
	cuda := cmp.Or(m.CUDAVersion, spec.cuda)
	nvmlVersion := fmt.Sprintf("%d.%s", cuda/1000, driver) // NVML 12.550.54.15 ships with driver 550.54.15
	srv := server.NewServerWithGPUs(driver, nvmlVersion, cuda, gpus.Multiple(len(m.GPUs), spec.config)...)

	f := &machine{Server: srv, spec: spec, initRet: gonvml.SUCCESS, hidden: map[string]bool{}, provided: map[string]bool{}}
	busIDs := map[string]int{}
	var errs []error
	for i, g := range m.GPUs {
		d, err := f.newDevice(i, g, srv.Devices[i].(*server.Device), m.Seed)
		if err != nil {
			errs = append(errs, fmt.Errorf("nvmlfake: gpu %d: %w", i, err))
			continue
		}
		if j, dup := busIDs[d.PciBusID]; dup {
			errs = append(errs, fmt.Errorf("nvmlfake: gpu %d: bus id %s already used by gpu %d", i, g.PCIBusID, j))
		}
		busIDs[d.PciBusID] = i
		f.devs = append(f.devs, d)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	f.fillSystem()
	return f, nil
}

func (f *machine) newDevice(i int, g GPU, sd *server.Device, seed string) (*device, error) {
	bus, err := nvmlBusID(g.PCIBusID)
	if err != nil {
		return nil, err
	}
	d := &device{Device: sd, spec: g, down: map[int]bool{}, rets: map[string]gonvml.Return{}}
	for _, l := range g.NVLinkDown {
		if l < 0 || l >= f.spec.links {
			return nil, fmt.Errorf("NVLink %d out of range: %s has links 0-%d", l, f.spec.config.Name, f.spec.links-1)
		}
		d.down[l] = true
	}
	if g.PCIeGen < 0 || g.PCIeGen > f.spec.pcieGen || g.PCIeWidth < 0 || g.PCIeWidth > f.spec.pcieWidth {
		return nil, fmt.Errorf("PCIe Gen%d x%d outside the model's Gen%d x%d", g.PCIeGen, g.PCIeWidth, f.spec.pcieGen, f.spec.pcieWidth)
	}
	sd.UUID = uuidFor(seed, i)
	sd.PciBusID = bus
	if g.MIGEnabled {
		sd.MigMode = gonvml.DEVICE_MIG_ENABLE
	}
	f.fillDevice(d, i, seed)
	return d, nil
}

// enter is the start of every filled-in function: it enforces what a real
// driver would (a symbol reported missing is not callable, nothing answers
// before Init) and applies injected faults. d is nil for system functions.
func (f *machine) enter(symbol string, d *device) gonvml.Return {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hidden[symbol] {
		// A real process dies here with an undefined symbol.
		panic(fmt.Sprintf("nvmlfake: %s called although LookupSymbol reported it missing", symbol))
	}
	switch {
	case f.inits == 0:
		return gonvml.ERROR_UNINITIALIZED
	case d == nil:
		return gonvml.SUCCESS
	case d.lost:
		return gonvml.ERROR_GPU_IS_LOST
	}
	if ret, ok := d.rets[symbol]; ok {
		return ret
	}
	return gonvml.SUCCESS
}

// provide registers symbol as implemented, for LookupSymbol and the fault helpers.
func (f *machine) provide(symbols ...string) {
	for _, s := range symbols {
		f.provided[s] = true
	}
}

func (f *machine) fillSystem() {
	s := f.Server
	f.provide("nvmlInit", "nvmlShutdown", "nvmlSystemGetDriverVersion", "nvmlSystemGetCudaDriverVersion",
		"nvmlSystemGetNVMLVersion", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex")
	s.InitFunc = func() gonvml.Return {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.initRet != gonvml.SUCCESS {
			return f.initRet
		}
		f.inits++ // NVML counts Init calls; the last Shutdown unloads
		return gonvml.SUCCESS
	}
	s.ShutdownFunc = func() gonvml.Return {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.inits == 0 {
			return gonvml.ERROR_UNINITIALIZED
		}
		f.inits--
		return gonvml.SUCCESS
	}
	s.LookupSymbolFunc = func(symbol string) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case f.inits == 0:
			return fmt.Errorf("error looking up %s: library not loaded", symbol)
		case f.hidden[symbol] || !f.provided[symbol]:
			return fmt.Errorf("undefined symbol: %s", symbol)
		}
		return nil
	}
	s.SystemGetDriverVersionFunc = func() (string, gonvml.Return) {
		if ret := f.enter("nvmlSystemGetDriverVersion", nil); ret != gonvml.SUCCESS {
			return "", ret
		}
		return s.DriverVersion, gonvml.SUCCESS
	}
	s.SystemGetCudaDriverVersionFunc = func() (int, gonvml.Return) {
		if ret := f.enter("nvmlSystemGetCudaDriverVersion", nil); ret != gonvml.SUCCESS {
			return 0, ret
		}
		return s.CudaDriverVersion, gonvml.SUCCESS
	}
	s.SystemGetNVMLVersionFunc = func() (string, gonvml.Return) {
		if ret := f.enter("nvmlSystemGetNVMLVersion", nil); ret != gonvml.SUCCESS {
			return "", ret
		}
		return s.NvmlVersion, gonvml.SUCCESS
	}
	s.DeviceGetCountFunc = func() (int, gonvml.Return) {
		if ret := f.enter("nvmlDeviceGetCount", nil); ret != gonvml.SUCCESS {
			return 0, ret
		}
		return len(f.devs), gonvml.SUCCESS
	}
	s.DeviceGetHandleByIndexFunc = func(i int) (gonvml.Device, gonvml.Return) {
		if i < 0 || i >= len(f.devs) {
			return nil, gonvml.ERROR_INVALID_ARGUMENT
		}
		if ret := f.enter("nvmlDeviceGetHandleByIndex", f.devs[i]); ret != gonvml.SUCCESS {
			return nil, ret
		}
		return f.devs[i].Device, gonvml.SUCCESS
	}
}

// answer returns v, or the zero value with the failure enter decided.
func answer[T any](f *machine, symbol string, d *device, v func() T) (T, gonvml.Return) {
	if ret := f.enter(symbol, d); ret != gonvml.SUCCESS {
		var zero T
		return zero, ret
	}
	return v(), gonvml.SUCCESS
}

func (f *machine) fillDevice(d *device, index int, seed string) {
	sd, spec, g := d.Device, f.spec, d.spec
	f.provide("nvmlDeviceGetUUID", "nvmlDeviceGetName", "nvmlDeviceGetArchitecture",
		"nvmlDeviceGetCudaComputeCapability", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetPciInfo",
		"nvmlDeviceGetNumaNodeId", "nvmlDeviceGetMigMode", "nvmlDeviceGetNvLinkState",
		"nvmlDeviceGetNvLinkVersion", "nvmlDeviceGetEnforcedPowerLimit",
		"nvmlDeviceGetCurrPcieLinkGeneration", "nvmlDeviceGetMaxPcieLinkGeneration",
		"nvmlDeviceGetCurrPcieLinkWidth", "nvmlDeviceGetMaxPcieLinkWidth",
		"nvmlDeviceGetSerial", "nvmlDeviceGetVbiosVersion")
	serial := serialFor(seed, index)
	curGen, curWidth := cmp.Or(g.PCIeGen, spec.pcieGen), cmp.Or(g.PCIeWidth, spec.pcieWidth)

	sd.GetUUIDFunc = func() (string, gonvml.Return) {
		return answer(f, "nvmlDeviceGetUUID", d, func() string { return sd.UUID })
	}
	sd.GetNameFunc = func() (string, gonvml.Return) {
		return answer(f, "nvmlDeviceGetName", d, func() string { return sd.Config.Name })
	}
	sd.GetArchitectureFunc = func() (gonvml.DeviceArchitecture, gonvml.Return) {
		return answer(f, "nvmlDeviceGetArchitecture", d, func() gonvml.DeviceArchitecture { return sd.Config.Architecture })
	}
	sd.GetCudaComputeCapabilityFunc = func() (int, int, gonvml.Return) {
		v, ret := answer(f, "nvmlDeviceGetCudaComputeCapability", d, func() [2]int { return [2]int{sd.Config.CudaMajor, sd.Config.CudaMinor} })
		return v[0], v[1], ret
	}
	sd.GetMemoryInfoFunc = func() (gonvml.Memory, gonvml.Return) {
		return answer(f, "nvmlDeviceGetMemoryInfo", d, func() gonvml.Memory { return sd.MemoryInfo })
	}
	sd.GetPciInfoFunc = func() (gonvml.PciInfo, gonvml.Return) {
		return answer(f, "nvmlDeviceGetPciInfo", d, func() gonvml.PciInfo { return pciInfo(sd.PciBusID, sd.Config.PciDeviceId) })
	}
	sd.GetNumaNodeIdFunc = func() (int, gonvml.Return) {
		if ret := f.enter("nvmlDeviceGetNumaNodeId", d); ret != gonvml.SUCCESS {
			return 0, ret
		}
		if g.NUMANode < 0 { // the platform has no NUMA information
			return 0, gonvml.ERROR_NOT_SUPPORTED
		}
		return g.NUMANode, gonvml.SUCCESS
	}
	sd.GetMigModeFunc = func() (int, int, gonvml.Return) {
		if ret := f.enter("nvmlDeviceGetMigMode", d); ret != gonvml.SUCCESS {
			return 0, 0, ret
		}
		sd.RLock() // the mock's SetMigMode writes it
		defer sd.RUnlock()
		return sd.MigMode, sd.MigMode, gonvml.SUCCESS
	}
	sd.GetNvLinkStateFunc = func(link int) (gonvml.EnableState, gonvml.Return) {
		if ret := f.enter("nvmlDeviceGetNvLinkState", d); ret != gonvml.SUCCESS {
			return 0, ret
		}
		if link < 0 || link >= spec.links {
			return 0, gonvml.ERROR_INVALID_ARGUMENT
		}
		if d.down[link] {
			return gonvml.FEATURE_DISABLED, gonvml.SUCCESS
		}
		return gonvml.FEATURE_ENABLED, gonvml.SUCCESS
	}
	sd.GetNvLinkVersionFunc = func(link int) (uint32, gonvml.Return) {
		if ret := f.enter("nvmlDeviceGetNvLinkVersion", d); ret != gonvml.SUCCESS {
			return 0, ret
		}
		if link < 0 || link >= spec.links {
			return 0, gonvml.ERROR_INVALID_ARGUMENT
		}
		return uint32(spec.linkVersion), gonvml.SUCCESS
	}
	sd.GetEnforcedPowerLimitFunc = func() (uint32, gonvml.Return) {
		return answer(f, "nvmlDeviceGetEnforcedPowerLimit", d, func() uint32 { return spec.powerMW })
	}
	sd.GetCurrPcieLinkGenerationFunc = func() (int, gonvml.Return) {
		return answer(f, "nvmlDeviceGetCurrPcieLinkGeneration", d, func() int { return curGen })
	}
	sd.GetMaxPcieLinkGenerationFunc = func() (int, gonvml.Return) {
		return answer(f, "nvmlDeviceGetMaxPcieLinkGeneration", d, func() int { return spec.pcieGen })
	}
	sd.GetCurrPcieLinkWidthFunc = func() (int, gonvml.Return) {
		return answer(f, "nvmlDeviceGetCurrPcieLinkWidth", d, func() int { return curWidth })
	}
	sd.GetMaxPcieLinkWidthFunc = func() (int, gonvml.Return) {
		return answer(f, "nvmlDeviceGetMaxPcieLinkWidth", d, func() int { return spec.pcieWidth })
	}
	sd.GetSerialFunc = func() (string, gonvml.Return) {
		return answer(f, "nvmlDeviceGetSerial", d, func() string { return serial })
	}
	sd.GetVbiosVersionFunc = func() (string, gonvml.Return) {
		return answer(f, "nvmlDeviceGetVbiosVersion", d, func() string { return spec.vbios })
	}
}

// nvmlBusID turns a sysfs bus id ("0000:1b:00.0": 4-digit domain, bus,
// device up to 1f, function 0-7) into NVML's form ("00000000:1B:00.0").
func nvmlBusID(sysfs string) (string, error) {
	bad := fmt.Errorf("bad PCI bus id %q, want sysfs form 0000:1b:00.0", sysfs)
	if len(sysfs) != 12 || sysfs[4] != ':' || sysfs[7] != ':' || sysfs[10] != '.' {
		return "", bad
	}
	dom, err1 := strconv.ParseUint(sysfs[0:4], 16, 16)
	bus, err2 := strconv.ParseUint(sysfs[5:7], 16, 8)
	dev, err3 := strconv.ParseUint(sysfs[8:10], 16, 8)
	fn, err4 := strconv.ParseUint(sysfs[11:12], 8, 8)
	if err := errors.Join(err1, err2, err3, err4); err != nil || dev > 0x1f {
		return "", bad
	}
	return fmt.Sprintf("%08X:%02X:%02X.%d", dom, bus, dev, fn), nil
}

// pciInfo fills NVML's PciInfo for a bus id in NVML form (checked by nvmlBusID).
func pciInfo(busID string, deviceID uint32) gonvml.PciInfo {
	p := gonvml.PciInfo{PciDeviceId: deviceID}
	dom, _ := strconv.ParseUint(busID[0:8], 16, 32)
	bus, _ := strconv.ParseUint(busID[9:11], 16, 8)
	dev, _ := strconv.ParseUint(busID[12:14], 16, 8)
	p.Domain, p.Bus, p.Device = uint32(dom), uint32(bus), uint32(dev)
	putCString(p.BusId[:], busID)
	putCString(p.BusIdLegacy[:], busID[4:]) // 4-digit domain
	return p
}

func putCString(dst []int8, s string) {
	for i := 0; i < len(s) && i < len(dst)-1; i++ {
		dst[i] = int8(s[i])
	}
}

// digest hashes the seed, the GPU index and what the value is for.
func digest(kind, seed string, index int) [sha1.Size]byte {
	return sha1.Sum([]byte("gpunode/nvmlfake\x00" + kind + "\x00" + seed + "\x00" + strconv.Itoa(index)))
}

// uuidFor is a name-based (version 5 layout) UUID in NVML's "GPU-" form.
func uuidFor(seed string, index int) string {
	h := digest("uuid", seed, index)
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// serialFor is a 13-digit board serial like those NVIDIA prints.
func serialFor(seed string, index int) string {
	h := digest("serial", seed, index)
	return fmt.Sprintf("1%012d", binary.BigEndian.Uint64(h[:8])%1_000_000_000_000)
}
