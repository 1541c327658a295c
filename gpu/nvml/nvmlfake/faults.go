package nvmlfake

import (
	"fmt"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Fault helpers change a machine built by New while it is in use; they are
// safe to call concurrently with the library. Symbols are NVML's C function
// names without a version suffix ("nvmlDeviceGetSerial"). The helpers panic
// when lib was not built by New, the index is out of range or the symbol is
// not one the fake implements: those are mistakes in the calling test.

// SetLost makes GPU index fall off the bus: its handle lookup and every call
// on it return ERROR_GPU_IS_LOST from now on.
func SetLost(lib gonvml.Interface, index int) {
	f, d := mustDevice(lib, index)
	f.mu.Lock()
	defer f.mu.Unlock()
	d.lost = true
}

// SetReturn makes symbol on GPU index return ret (with a zero value) from
// now on; gonvml.SUCCESS restores the normal answer. ERROR_NOT_SUPPORTED
// mimics a GPU without the feature.
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
