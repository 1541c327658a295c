package nvml

import (
	"fmt"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
)

// Functions added after the oldest drivers we may meet. They are looked up
// before use (see Backend.has); a missing one leaves its field empty.
const (
	symArchitecture = "nvmlDeviceGetArchitecture"
	symMigMode      = "nvmlDeviceGetMigMode"
	symNumaNodeID   = "nvmlDeviceGetNumaNodeId"
)

// deviceReader collects one GPU's fields and the calls that failed.
type deviceReader struct {
	b    *Backend
	h    gonvml.Device
	dev  gpu.Device
	errs []error
	// lost is set once a call reports ERROR_GPU_IS_LOST: the GPU fell off
	// the bus and every further call would fail the same way.
	lost bool
	// notVisible is set when this process may not open the GPU.
	notVisible bool
}

// ok reports whether ret carries a value. ERROR_NOT_SUPPORTED only means the
// field does not apply to this GPU; any other failure is recorded.
func (r *deviceReader) ok(fn string, ret gonvml.Return) bool {
	switch ret {
	case gonvml.SUCCESS:
		return true
	case gonvml.ERROR_NOT_SUPPORTED:
		return false
	case gonvml.ERROR_GPU_IS_LOST:
		r.lost = true
	}
	r.fail(fmt.Errorf("%s: %w", fn, ret))
	return false
}

func (r *deviceReader) fail(err error) {
	r.errs = append(r.errs, err)
	r.dev.Errors = append(r.dev.Errors, err.Error())
}

// get calls f unless the GPU is already lost and reports whether it answered.
func get[T any](r *deviceReader, fn string, f func() (T, gonvml.Return)) (T, bool) {
	var v T
	if r.lost {
		return v, false
	}
	v, ret := f()
	return v, r.ok(fn, ret)
}

// readDevice reads GPU i. A GPU whose handle cannot be obtained is reported
// with its index and the error.
func (b *Backend) readDevice(i int) *deviceReader {
	r := &deviceReader{b: b, dev: gpu.Device{Index: i, Vendor: gpu.NVIDIA, NUMANode: -1}}
	h, ret := b.lib.DeviceGetHandleByIndex(i)
	if ret == gonvml.ERROR_NO_PERMISSION {
		// nvml.h, nvmlDeviceGetCount_v2: the count includes GPUs
		// whose handle answers NO_PERMISSION (hidden from this process).
		r.notVisible = true
		return r
	}
	if ret != gonvml.SUCCESS {
		r.fail(fmt.Errorf("nvmlDeviceGetHandleByIndex: %w", ret))
		return r
	}
	r.h = h
	for _, read := range []func(){r.identity, r.pci, r.numa, r.mig, r.nvlink, r.power, r.pcie, r.memoryHealth, r.fabric} {
		if r.lost {
			break
		}
		read()
	}
	return r
}

func (r *deviceReader) identity() {
	if v, ok := get(r, "nvmlDeviceGetUUID", r.h.GetUUID); ok {
		r.dev.UUID = v
	}
	if v, ok := get(r, "nvmlDeviceGetName", r.h.GetName); ok {
		r.dev.Product = v
	}
	if r.b.has(symArchitecture) {
		if v, ok := get(r, symArchitecture, r.h.GetArchitecture); ok {
			r.dev.Architecture = architecture(v)
		}
	}
	cc := func() ([2]int, gonvml.Return) {
		major, minor, ret := r.h.GetCudaComputeCapability()
		return [2]int{major, minor}, ret
	}
	if v, ok := get(r, "nvmlDeviceGetCudaComputeCapability", cc); ok {
		r.dev.ComputeMajor, r.dev.ComputeMinor = v[0], v[1]
	}
	if v, ok := get(r, "nvmlDeviceGetMemoryInfo", r.h.GetMemoryInfo); ok {
		r.dev.MemoryBytes = v.Total
	}
	if v, ok := get(r, "nvmlDeviceGetSerial", r.h.GetSerial); ok {
		r.dev.Serial = v
	}
	if v, ok := get(r, "nvmlDeviceGetVbiosVersion", r.h.GetVbiosVersion); ok {
		r.dev.VBIOSVersion = v
	}
}

func (r *deviceReader) pci() {
	info, ok := get(r, "nvmlDeviceGetPciInfo", r.h.GetPciInfo)
	if !ok {
		return
	}
	r.dev.PCIDeviceID = fmt.Sprintf("0x%04x", info.PciDeviceId>>16) // low half is the vendor
	id := cString(info.BusId[:])
	if id == "" {
		r.fail(fmt.Errorf("nvmlDeviceGetPciInfo: empty bus id"))
		return
	}
	r.dev.PCIBusID = gpu.NormalizePCIBusID(id)
}

// numa keeps -1 unless NVML knows the node; x86 drivers answer NOT_SUPPORTED
// and the agent takes the node from sysfs by bus id instead.
func (r *deviceReader) numa() {
	if !r.b.has(symNumaNodeID) {
		return
	}
	// The C API returns an unsigned int; treat values that do not fit a
	// signed node number as unknown rather than as node 4294967295.
	if v, ok := get(r, symNumaNodeID, r.h.GetNumaNodeId); ok && v >= 0 && v <= 1<<20 {
		r.dev.NUMANode = v
	}
}

func (r *deviceReader) mig() {
	if !r.b.has(symMigMode) {
		return
	}
	mode := func() ([2]int, gonvml.Return) {
		current, pending, ret := r.h.GetMigMode()
		return [2]int{current, pending}, ret
	}
	if v, ok := get(r, symMigMode, mode); ok {
		r.dev.MIG = gpu.MIG{
			Capable: true,
			Enabled: v[0] == gonvml.DEVICE_MIG_ENABLE,
			Pending: v[1] == gonvml.DEVICE_MIG_ENABLE,
		}
	}
}

// nvlink counts the GPU's links. NVML has no link count: links that do not
// exist answer NOT_SUPPORTED or INVALID_ARGUMENT, so every possible link
// number is asked.
func (r *deviceReader) nvlink() {
	links, active, firstActive := 0, 0, -1
	for link := 0; link < gonvml.NVLINK_MAX_LINKS && !r.lost; link++ {
		state, ret := r.h.GetNvLinkState(link)
		switch ret {
		case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_INVALID_ARGUMENT:
			continue
		case gonvml.SUCCESS:
		default: // the link exists but could not be read
			r.ok(fmt.Sprintf("nvmlDeviceGetNvLinkState(link %d)", link), ret)
			if r.lost {
				return
			}
		}
		links++
		if ret == gonvml.SUCCESS && state == gonvml.FEATURE_ENABLED {
			active++
			if firstActive < 0 {
				firstActive = link
			}
		}
	}
	if links == 0 {
		return
	}
	ic := &gpu.Interconnect{Kind: "nvlink", Links: links, Active: active}
	if firstActive >= 0 {
		version := func() (uint32, gonvml.Return) { return r.h.GetNvLinkVersion(firstActive) }
		if v, ok := get(r, "nvmlDeviceGetNvLinkVersion", version); ok {
			ic.Generation = nvlinkGeneration(v)
		}
	}
	r.dev.Interconnect = ic
}

func (r *deviceReader) power() {
	if mw, ok := get(r, "nvmlDeviceGetEnforcedPowerLimit", r.h.GetEnforcedPowerLimit); ok {
		r.dev.PowerLimitWatts = float64(mw) / 1000
	}
}

func (r *deviceReader) pcie() {
	var link gpu.PCIeLink
	answered := false
	// The driver lowers the link speed with the performance state
	// (NVIDIA/open-gpu-kernel-modules#731: P8 Gen1, P5 Gen2, P2 and P0 the
	// maximum), so only a GPU at P0 shows whether its link trained low. The
	// state is read before and after the link, and the lower of the two
	// kept: a GPU that woke up in between is not judged on an idle reading.
	before, beforeOK := get(r, "nvmlDeviceGetPerformanceState", r.h.GetPerformanceState)
	for _, f := range []struct {
		fn   string
		get  func() (int, gonvml.Return)
		into *int
	}{
		{"nvmlDeviceGetCurrPcieLinkGeneration", r.h.GetCurrPcieLinkGeneration, &link.CurrentGen},
		{"nvmlDeviceGetMaxPcieLinkGeneration", r.h.GetMaxPcieLinkGeneration, &link.MaxGen},
		{"nvmlDeviceGetCurrPcieLinkWidth", r.h.GetCurrPcieLinkWidth, &link.CurrentWidth},
		{"nvmlDeviceGetMaxPcieLinkWidth", r.h.GetMaxPcieLinkWidth, &link.MaxWidth},
	} {
		if v, ok := get(r, f.fn, f.get); ok {
			*f.into, answered = v, true
		}
	}
	if !answered {
		return
	}
	if after, ok := get(r, "nvmlDeviceGetPerformanceState", r.h.GetPerformanceState); ok && beforeOK {
		if p := max(before, after); p <= gonvml.PSTATE_15 { // not PSTATE_UNKNOWN
			link.PerformanceState = fmt.Sprintf("P%d", p)
		}
	}
	r.dev.PCIeLink = &link
}
