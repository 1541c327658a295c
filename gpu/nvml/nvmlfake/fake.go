package nvmlfake

import (
	"cmp"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

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
	// Live behaviour: maximum SM and memory clocks (MHz), per-link NVLink
	// data rate per direction at full load (bytes/s), and whether the GPU
	// has GPM (Hopper and newer).
	smMHz, memMHz int
	linkBps       float64
	gpm           bool
	// fabric: the model sits on an NVSwitch baseboard and reports its
	// fabric registration (Hopper and newer).
	fabric bool
	// clockReasons is the nvmlClocksEventReason mask the GPU supports.
	clockReasons uint64
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
			pcieGen: 4, pcieWidth: 16, vbios: "92.00.45.00.03", driver: "535.183.01", cuda: 12020,
			smMHz: 1410, memMHz: 1215, linkBps: 25e9, clockReasons: clockReasonsBeforeBlackwell}, true
	case H100:
		return modelSpec{config: gpus.H100_SXM5_80GB, links: 18, linkVersion: gonvml.NVLINK_VERSION_4_0, powerMW: 700_000,
			pcieGen: 5, pcieWidth: 16, vbios: "96.00.74.00.0D", driver: "550.54.15", cuda: 12040,
			smMHz: 1980, memMHz: 2619, linkBps: 25e9, gpm: true, fabric: true, clockReasons: clockReasonsBeforeBlackwell}, true
	case H200:
		c := gpus.H200_SXM5_141GB
		c.Name, c.PciDeviceId = "NVIDIA H200", 0x233510DE
		return modelSpec{config: c, links: 18, linkVersion: gonvml.NVLINK_VERSION_4_0, powerMW: 700_000,
			pcieGen: 5, pcieWidth: 16, vbios: "96.00.A5.00.01", driver: "550.90.07", cuda: 12040,
			smMHz: 1980, memMHz: 3201, linkBps: 25e9, gpm: true, fabric: true, clockReasons: clockReasonsBeforeBlackwell}, true
	case B200:
		c := gpus.B200_SXM5_180GB
		c.Name, c.PciDeviceId = "NVIDIA B200", 0x290110DE
		return modelSpec{config: c, links: 18, linkVersion: gonvml.NVLINK_VERSION_5_0, powerMW: 1_000_000,
			pcieGen: 5, pcieWidth: 16, vbios: "97.00.82.00.0A", driver: "570.124.06", cuda: 12080,
			smMHz: 1965, memMHz: 3996, linkBps: 50e9, gpm: true, fabric: true, clockReasons: gonvml.ClocksEventReasonAll}, true
	case GB200:
		// go-nvml (v0.13.4-1) has no GB200 mock; its B200 is the nearest.
		// Name, total memory (189471 MiB), power limit (1200 W) and driver
		// 580.126.09 / CUDA 13.0 are what nvidia-smi prints on a GB200
		// compute tray (a public RHEL4NV GB200 OpenShift demo); the device
		// id 10de:2941 is lspci's on the same trays (NVIDIA/mig-parted#227,
		// NVIDIA/kubevirt-gpu-device-plugin#154). The VBIOS string, clocks
		// and the B200 MIG profiles are not confirmed on a GB200.
		c := gpus.B200_SXM5_180GB
		c.Name, c.PciDeviceId, c.MemoryMB = "NVIDIA GB200", 0x294110DE, 189471
		return modelSpec{config: c, links: 18, linkVersion: gonvml.NVLINK_VERSION_5_0, powerMW: 1_200_000,
			pcieGen: 5, pcieWidth: 16, vbios: "97.00.9D.00.11", driver: "580.126.09", cuda: 13000,
			smMHz: 2062, memMHz: 3996, linkBps: 50e9, gpm: true, fabric: true, clockReasons: gonvml.ClocksEventReasonAll}, true
	}
	return modelSpec{}, false
}

// machine is the fake library: go-nvml's mock server plus the state that
// Init/Shutdown, the clock and the fault helpers change.
//
// Every function the agent calls is a method of machine or device rather
// than one of the mock's XxxFunc fields: go-nvml's generated mocks append
// every call's arguments to a slice kept forever, which a simulated agent
// calling thousands of times a minute would grow without bound. Calls are
// counted per symbol instead (Calls). Everything else falls through to the
// mock, whose MIG machinery the fake keeps.
type machine struct {
	*server.Server
	spec  modelSpec
	devs  []*device
	clock func() time.Time
	start time.Time

	mu       sync.Mutex
	inits    int // nvmlInit calls not yet matched by nvmlShutdown
	initRet  gonvml.Return
	hidden   map[string]bool
	provided map[string]bool // symbols LookupSymbol finds
	calls    map[string]int  // calls per symbol: bounded by the symbols
	sets     []*eventSet     // event sets not yet freed
	schedule []XIDEvent      // not yet delivered, in time order
	periodic PeriodicXID
	nextTick int // next periodic XID number

	cluster [16]byte // Machine.FabricCluster
	clique  uint32   // Machine.FabricClique
}

// New builds the NVIDIA side of m. The result is an NVML library whose
// devices answer, in m.GPUs order, every function the gpu/nvml backend
// calls; UUIDs and serial numbers follow from m.Seed and the GPU's index,
// live readings from m.Clock.
func New(m Machine) (gonvml.Interface, error) {
	spec, ok := specFor(m.Model)
	if !ok {
		return nil, fmt.Errorf("nvmlfake: unknown model %q", m.Model)
	}
	driver := cmp.Or(m.DriverVersion, spec.driver)
	cuda := cmp.Or(m.CUDAVersion, spec.cuda)
	nvmlVersion := fmt.Sprintf("%d.%s", cuda/1000, driver) // NVML 12.550.54.15 ships with driver 550.54.15
	srv := server.NewServerWithGPUs(driver, nvmlVersion, cuda, gpus.Multiple(len(m.GPUs), spec.config)...)

	clock := m.Clock
	if clock == nil {
		clock = time.Now
	}
	f := &machine{Server: srv, spec: spec, clock: clock, start: clock(), initRet: gonvml.SUCCESS,
		hidden: map[string]bool{}, provided: map[string]bool{}, calls: map[string]int{}, periodic: m.PeriodicXID,
		cluster: m.FabricCluster, clique: m.FabricClique}
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
	for _, x := range m.XIDs {
		if x.GPU < 0 || x.GPU >= len(m.GPUs) {
			errs = append(errs, fmt.Errorf("nvmlfake: scheduled XID %d for GPU %d, machine has %d", x.XID, x.GPU, len(m.GPUs)))
		}
	}
	if m.PeriodicXID.Every < 0 || (m.PeriodicXID.Every > 0 && m.PeriodicXID.XID == 0) {
		errs = append(errs, fmt.Errorf("nvmlfake: periodic XID needs a positive interval and an XID"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	f.schedule = sortedSchedule(m.XIDs)
	f.provide(systemSymbols...)
	f.provide(deviceSymbols...)
	return f, nil
}

// Symbols the fake implements, for LookupSymbol and the fault helpers.
var (
	systemSymbols = []string{"nvmlInit", "nvmlShutdown", "nvmlSystemGetDriverVersion", "nvmlSystemGetCudaDriverVersion",
		"nvmlSystemGetNVMLVersion", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlEventSetCreate",
		"nvmlEventSetWait", "nvmlEventSetFree", "nvmlGpmSampleAlloc", "nvmlGpmSampleFree", "nvmlGpmMetricsGet"}
	deviceSymbols = []string{"nvmlDeviceGetUUID", "nvmlDeviceGetName", "nvmlDeviceGetArchitecture",
		"nvmlDeviceGetCudaComputeCapability", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetPciInfo",
		"nvmlDeviceGetNumaNodeId", "nvmlDeviceGetMigMode", "nvmlDeviceGetNvLinkState",
		"nvmlDeviceGetNvLinkVersion", "nvmlDeviceGetEnforcedPowerLimit",
		"nvmlDeviceGetCurrPcieLinkGeneration", "nvmlDeviceGetMaxPcieLinkGeneration",
		"nvmlDeviceGetCurrPcieLinkWidth", "nvmlDeviceGetMaxPcieLinkWidth",
		"nvmlDeviceGetSerial", "nvmlDeviceGetVbiosVersion", "nvmlDeviceGetMinorNumber",
		"nvmlDeviceGetUtilizationRates", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEnergyConsumption",
		"nvmlDeviceGetTemperature", "nvmlDeviceGetClockInfo", "nvmlDeviceGetCurrentClocksEventReasons",
		"nvmlDeviceGetCurrentClocksThrottleReasons", "nvmlDeviceGetPcieReplayCounter",
		"nvmlDeviceGetFieldValues", "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetRemappedRows",
		"nvmlGpmQueryDeviceSupport", "nvmlGpmSampleGet", "nvmlDeviceGetSupportedEventTypes",
		"nvmlDeviceRegisterEvents", "nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetMigDeviceHandleByIndex",
		"nvmlDeviceGetGpuInstanceId", "nvmlDeviceGetComputeInstanceId", "nvmlDeviceIsMigDeviceHandle",
		"nvmlDeviceGetDeviceHandleFromMigDeviceHandle", "nvmlGpmMigSampleGet",
		"nvmlDeviceGetEccMode", "nvmlDeviceGetGpuFabricInfo", "nvmlDeviceGetSupportedClocksEventReasons",
		"nvmlDeviceGetSupportedClocksThrottleReasons", "nvmlDeviceGetTemperatureV", "nvmlDeviceGetPcieThroughput",
		"nvmlDeviceGetPerformanceState", "nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses",
		"nvmlDeviceGetMPSComputeRunningProcesses", "nvmlDeviceGetProcessUtilization"}
)

func (f *machine) newDevice(i int, g GPU, sd *server.Device, seed string) (*device, error) {
	bus, err := nvmlBusID(g.PCIBusID)
	if err != nil {
		return nil, err
	}
	d := &device{Device: sd, f: f, index: i, spec: g, down: map[int]time.Time{}, rets: map[string]gonvml.Return{},
		delays: map[string]time.Duration{}, fieldRets: map[uint32]gonvml.Return{}, serial: serialFor(seed, i),
		phase: phaseFor(seed, i)}
	for _, l := range g.NVLinkDown {
		if l < 0 || l >= f.spec.links {
			return nil, fmt.Errorf("NVLink %d out of range: %s has links 0-%d", l, f.spec.config.Name, f.spec.links-1)
		}
		d.down[l] = f.start
	}
	if g.PCIeGen < 0 || g.PCIeGen > f.spec.pcieGen || g.PCIeWidth < 0 || g.PCIeWidth > f.spec.pcieWidth {
		return nil, fmt.Errorf("PCIe Gen%d x%d outside the model's Gen%d x%d", g.PCIeGen, g.PCIeWidth, f.spec.pcieGen, f.spec.pcieWidth)
	}
	d.curGen, d.curWidth = cmp.Or(g.PCIeGen, f.spec.pcieGen), cmp.Or(g.PCIeWidth, f.spec.pcieWidth)
	sd.UUID = uuidFor(seed, i)
	sd.PciBusID = bus
	if g.MIGEnabled {
		sd.MigMode = gonvml.DEVICE_MIG_ENABLE
	}
	if len(g.MIG) > 0 && !g.MIGEnabled {
		return nil, fmt.Errorf("MIG instances %v on a GPU without MIG mode", g.MIG)
	}
	if err := f.newMIGDevices(d, seed); err != nil {
		return nil, err
	}
	if err := d.checkProcesses(); err != nil {
		return nil, err
	}
	return d, nil
}

// enter is the start of every implemented function: it counts the call,
// enforces what a real driver would (a symbol reported missing is not
// callable, nothing answers before Init) and applies injected faults,
// sleeping first for an injected delay. d is nil for system functions.
func (f *machine) enter(symbol string, d *device) gonvml.Return {
	f.mu.Lock()
	f.calls[symbol]++
	if f.hidden[symbol] {
		f.mu.Unlock()
		// A real process dies here with an undefined symbol.
		panic(fmt.Sprintf("nvmlfake: %s called although LookupSymbol reported it missing", symbol))
	}
	var delay time.Duration
	if d != nil {
		delay = d.delays[symbol]
	}
	f.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay) // a hung driver call; outside the lock
	}
	f.mu.Lock()
	defer f.mu.Unlock()
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

// provide registers symbols as implemented.
func (f *machine) provide(symbols ...string) {
	for _, s := range symbols {
		f.provided[s] = true
	}
}

// now is seconds since the machine was built, by its clock.
func (f *machine) now() float64 { return f.clock().Sub(f.start).Seconds() }

// The system functions.

func (f *machine) Init() gonvml.Return {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["nvmlInit"]++
	if f.initRet != gonvml.SUCCESS {
		return f.initRet
	}
	f.inits++ // NVML counts Init calls; the last Shutdown unloads
	return gonvml.SUCCESS
}

func (f *machine) Shutdown() gonvml.Return {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["nvmlShutdown"]++
	if f.inits == 0 {
		return gonvml.ERROR_UNINITIALIZED
	}
	f.inits--
	if f.inits == 0 {
		f.sets = nil // handles die with the library
	}
	return gonvml.SUCCESS
}

// extensions is what Extensions returns: LookupSymbol without the mock's
// call recording.
type extensions struct {
	gonvml.ExtendedInterface
	f *machine
}

func (f *machine) Extensions() gonvml.ExtendedInterface {
	return extensions{ExtendedInterface: f.Server, f: f}
}

func (e extensions) LookupSymbol(symbol string) error {
	f := e.f
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["LookupSymbol"]++
	switch {
	case f.inits == 0:
		return fmt.Errorf("error looking up %s: library not loaded", symbol)
	case f.hidden[symbol] || !f.provided[symbol]:
		return fmt.Errorf("undefined symbol: %s", symbol)
	}
	return nil
}

func (f *machine) SystemGetDriverVersion() (string, gonvml.Return) {
	return answer(f, "nvmlSystemGetDriverVersion", nil, func() string { return f.Server.DriverVersion })
}

func (f *machine) SystemGetCudaDriverVersion() (int, gonvml.Return) {
	return answer(f, "nvmlSystemGetCudaDriverVersion", nil, func() int { return f.Server.CudaDriverVersion })
}

func (f *machine) SystemGetNVMLVersion() (string, gonvml.Return) {
	return answer(f, "nvmlSystemGetNVMLVersion", nil, func() string { return f.Server.NvmlVersion })
}

func (f *machine) DeviceGetCount() (int, gonvml.Return) {
	return answer(f, "nvmlDeviceGetCount", nil, func() int { return len(f.devs) })
}

func (f *machine) DeviceGetHandleByIndex(i int) (gonvml.Device, gonvml.Return) {
	if i < 0 || i >= len(f.devs) {
		return nil, gonvml.ERROR_INVALID_ARGUMENT
	}
	if ret := f.enter("nvmlDeviceGetHandleByIndex", f.devs[i]); ret != gonvml.SUCCESS {
		return nil, ret
	}
	return f.devs[i], gonvml.SUCCESS
}

// answer returns v, or the zero value with the failure enter decided.
func answer[T any](f *machine, symbol string, d *device, v func() T) (T, gonvml.Return) {
	if ret := f.enter(symbol, d); ret != gonvml.SUCCESS {
		var zero T
		return zero, ret
	}
	return v(), gonvml.SUCCESS
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

// phaseFor places a GPU's load curve: GPUs of one node run out of step.
func phaseFor(seed string, index int) float64 {
	h := digest("phase", seed, index)
	return float64(binary.BigEndian.Uint16(h[:2])) / 65536 * 2 * math.Pi
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
