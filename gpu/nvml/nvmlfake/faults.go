package nvmlfake

import (
	"fmt"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Fault helpers change a machine built by New while it is in use; they are
// safe to call concurrently with the library. Symbols are NVML's C function
// names without a version suffix ("nvmlDeviceGetSerial"). The helpers panic
// when lib was not built by New, the index is out of range or the symbol is
// not one the fake implements: those are mistakes in the calling test.

// XIDFallenOffBus is what the driver reports when a GPU drops off the bus.
const XIDFallenOffBus = 79

// SetLost makes GPU index fall off the bus: its handle lookup and every call
// on it return ERROR_GPU_IS_LOST from now on, and XID 79 is raised on the
// event sets it is registered on, as the driver does.
func SetLost(lib gonvml.Interface, index int) {
	f, d := mustDevice(lib, index)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !d.lost {
		f.raise(d, XIDFallenOffBus)
	}
	d.lost = true
}

// SetReturn makes symbol on GPU index return ret (with a zero value) from
// now on; gonvml.SUCCESS restores the normal answer. ERROR_NOT_SUPPORTED
// mimics a GPU without the feature, ERROR_TIMEOUT a driver call that gave up.
func SetReturn(lib gonvml.Interface, index int, symbol string, ret gonvml.Return) {
	f, d := mustDevice(lib, index)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mustProvide(symbol)
	if ret == gonvml.SUCCESS {
		delete(d.rets, symbol)
		return
	}
	d.rets[symbol] = ret
}

// SetDelay makes every call of symbol on GPU index take d before it
// answers, as calls into a GPU in a bad state hang; 0 removes the delay.
func SetDelay(lib gonvml.Interface, index int, symbol string, d time.Duration) {
	f, dev := mustDevice(lib, index)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mustProvide(symbol)
	if d <= 0 {
		delete(dev.delays, symbol)
		return
	}
	dev.delays[symbol] = d
}

// SetFieldReturn makes one field value (nvml FI_DEV_*) of GPU index come back
// with ret, as fields an older driver lacks come back NOT_SUPPORTED;
// gonvml.SUCCESS restores it.
func SetFieldReturn(lib gonvml.Interface, index int, field uint32, ret gonvml.Return) {
	f, d := mustDevice(lib, index)
	f.mu.Lock()
	defer f.mu.Unlock()
	if ret == gonvml.SUCCESS {
		delete(d.fieldRets, field)
		return
	}
	d.fieldRets[field] = ret
}

// SetNVLinkDown takes a link of GPU index down (or up again) from now on;
// its traffic counters stop while it is down.
func SetNVLinkDown(lib gonvml.Interface, index, link int, down bool) {
	f, d := mustDevice(lib, index)
	if link < 0 || link >= f.spec.links {
		panic(fmt.Sprintf("nvmlfake: GPU %d has no NVLink %d", index, link))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !down {
		delete(d.down, link)
		return
	}
	if _, already := d.down[link]; !already {
		d.down[link] = f.clock()
	}
}

// AddECCErrors adds memory errors to GPU index's volatile and aggregate counters.
func AddECCErrors(lib gonvml.Interface, index int, corrected, uncorrected uint64) {
	f, d := mustDevice(lib, index)
	f.mu.Lock()
	defer f.mu.Unlock()
	d.eccCorrected += corrected
	d.eccUncorrected += uncorrected
}

// SetRowRemap sets GPU index's row remapping state: rows remapped for
// uncorrectable errors, a remap waiting for a reset, a failed remap.
func SetRowRemap(lib gonvml.Interface, index int, uncorrectable uint64, pending, failed bool) {
	f, d := mustDevice(lib, index)
	f.mu.Lock()
	defer f.mu.Unlock()
	d.remapUncorrectable, d.remapPending, d.remapFailed = uncorrectable, pending, failed
}

// ResetGPU resets GPU index (nvidia-smi -r, or a driver reload): its
// energy, PCIe, NVLink and volatile ECC counters start again from zero.
func ResetGPU(lib gonvml.Interface, index int) {
	f, d := mustDevice(lib, index)
	f.mu.Lock()
	defer f.mu.Unlock()
	d.reset, d.resetAt = true, f.clock().Sub(f.start).Seconds()
	d.eccCorrectedAtReset, d.eccUncorrectedAtReset = d.eccCorrected, d.eccUncorrected
}

// RaiseXID raises an XID on GPU index now, on every event set it is
// registered on for XIDs.
func RaiseXID(lib gonvml.Interface, index int, xid uint64) {
	f, d := mustDevice(lib, index)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.raise(d, xid)
}

// SetInitReturn makes nvmlInit fail with ret from now on (ERROR_DRIVER_NOT_LOADED,
// ERROR_LIB_RM_VERSION_MISMATCH, ...); gonvml.SUCCESS lets it succeed again.
func SetInitReturn(lib gonvml.Interface, ret gonvml.Return) {
	f := mustMachine(lib)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.initRet = ret
}

// HideSymbol makes the library look like an older driver without symbol:
// LookupSymbol reports it missing, and calling it panics, as the process
// would die on a real host.
func HideSymbol(lib gonvml.Interface, symbol string) {
	f := mustMachine(lib)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mustProvide(symbol)
	f.hidden[symbol] = true
}

// Calls reports how many times symbol was called ("LookupSymbol" for
// symbol lookups), on all GPUs together.
func Calls(lib gonvml.Interface, symbol string) int {
	f := mustMachine(lib)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[symbol]
}

// TotalCalls reports how many calls the library has answered in all.
func TotalCalls(lib gonvml.Interface) int {
	f := mustMachine(lib)
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		n += c
	}
	return n
}

// SetSupportedClockEventReasons narrows the nvmlClocksEventReason bits GPU
// index supports (nvmlDeviceGetSupportedClocksEventReasons), as GPUs and
// drivers without some reasons answer.
func SetSupportedClockEventReasons(lib gonvml.Interface, index int, mask uint64) {
	f, d := mustDevice(lib, index)
	f.mu.Lock()
	defer f.mu.Unlock()
	d.clockReasonMask = &mask
}

// SetClockEventReasons makes GPU index report the nvmlClocksEventReason
// bits in mask as holding its clocks down from now on, on top of those its
// load sets (a fan that failed: ClocksThrottleReasonHwThermalSlowdown); 0
// clears them.
func SetClockEventReasons(lib gonvml.Interface, index int, mask uint64) {
	f, d := mustDevice(lib, index)
	f.mu.Lock()
	defer f.mu.Unlock()
	d.forcedClockReasons = mask
}

// FailEventSets breaks every event set alive now, as a driver fault does:
// its waits return ERROR_UNKNOWN, and it delivers nothing, until it is
// freed. Sets created afterwards work.
func FailEventSets(lib gonvml.Interface) {
	f := mustMachine(lib)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, es := range f.sets {
		es.broken = true
		select {
		case es.wake <- struct{}{}:
		default:
		}
	}
}

func mustMachine(lib gonvml.Interface) *machine {
	f, ok := lib.(*machine)
	if !ok {
		panic(fmt.Sprintf("nvmlfake: %T was not built by nvmlfake.New", lib))
	}
	return f
}

func mustDevice(lib gonvml.Interface, index int) (*machine, *device) {
	f := mustMachine(lib)
	if index < 0 || index >= len(f.devs) {
		panic(fmt.Sprintf("nvmlfake: no GPU %d (machine has %d)", index, len(f.devs)))
	}
	return f, f.devs[index]
}

// mustProvide is called with f.mu held.
func (f *machine) mustProvide(symbol string) {
	if !f.provided[symbol] {
		panic(fmt.Sprintf("nvmlfake: %s is not implemented by the fake", symbol))
	}
}

// SetIdle drops GPU index to performance state P8, its PCIe link to Gen1,
// as a GPU without persistence mode does when nothing runs (true), or
// brings it back to P0 and its trained link (false, the default).
func SetIdle(lib gonvml.Interface, index int, idle bool) {
	f, d := mustDevice(lib, index)
	f.mu.Lock()
	defer f.mu.Unlock()
	d.idle = idle
}

// SetNoPermission makes GPU index one this process may not open, as a
// container's device cgroup or /dev/nvidiaN permissions hide it:
// nvmlDeviceGetCount still counts it and nvmlDeviceGetHandleByIndex
// answers ERROR_NO_PERMISSION (nvml.h: "if the user doesn't have
// permission to talk to this device").
func SetNoPermission(lib gonvml.Interface, index int) {
	SetReturn(lib, index, "nvmlDeviceGetHandleByIndex", gonvml.ERROR_NO_PERMISSION)
}
