// Package nvml is the NVIDIA GPU backend. It reads the GPU inventory through
// NVML (libnvidia-ml.so.1), which go-nvml loads at run time, so the agent
// binary runs unchanged on nodes without an NVIDIA driver.
package nvml

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
)

// Backend implements gpu.Backend, gpu.Sampler and gpu.EventWatcher over an
// NVML library. It is safe for concurrent use: NVML itself is thread-safe,
// so Inventory, Sample and the event watcher run side by side, and Close
// waits for all of them so the library is never shut down under a caller.
type Backend struct {
	lib gonvml.Interface
	now func() time.Time

	// mu is held for reading by every call into the library and for
	// writing by nvmlInit and nvmlShutdown.
	mu          sync.RWMutex
	initialised bool
	// generation counts successful Inits: handles and event sets from an
	// older generation are dead.
	generation uint64

	symMu sync.Mutex
	// symbols caches LookupSymbol answers for the current Init: calling a
	// function the installed driver lacks kills the process, so functions
	// newer than old drivers are looked up before the first call.
	symbols map[string]bool

	// sampling state (sample.go), guarded by sampleMu.
	sampleMu sync.Mutex
	gpus     map[int]*gpuState

	// event watching state (events.go), guarded by evMu.
	evMu   sync.Mutex
	events *eventSet
}

var (
	_ gpu.Backend      = (*Backend)(nil)
	_ gpu.Sampler      = (*Backend)(nil)
	_ gpu.EventWatcher = (*Backend)(nil)
)

// Option configures a Backend.
type Option func(*Backend)

// WithClock stamps samples and events with now instead of time.Now (tests
// and simulated nodes share it with the NVML fake).
func WithClock(now func() time.Time) Option { return func(b *Backend) { b.now = now } }

// New returns a backend over lib (gonvml.New() on a host, an nvmlfake
// machine in tests). A nil lib is a backend whose library is always absent.
// NVML is initialised lazily by the first call that needs it.
func New(lib gonvml.Interface, opts ...Option) *Backend {
	b := &Backend{lib: lib, now: time.Now}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Name identifies the backend in source status.
func (b *Backend) Name() string { return source.NVML }

// Inventory initialises NVML if needed and describes every GPU in NVML index
// order. A GPU that answers only partly is still reported, with its failed
// calls on Device.Errors; the returned error joins all such problems. When the
// library or the kernel driver is missing the error is source.ErrAbsent.
func (b *Backend) Inventory(ctx context.Context) (gpu.Inventory, error) {
	inv := gpu.Inventory{Backend: b.Name(), Devices: []gpu.Device{}}
	if err := ctx.Err(); err != nil {
		return inv, err
	}
	release, err := b.acquire()
	if err != nil {
		return inv, err
	}
	defer release()

	var errs []error
	system := func(fn string, ret gonvml.Return) bool {
		if ret != gonvml.SUCCESS && ret != gonvml.ERROR_NOT_SUPPORTED {
			errs = append(errs, fmt.Errorf("%s: %w", fn, ret))
		}
		return ret == gonvml.SUCCESS
	}
	if v, ret := b.lib.SystemGetDriverVersion(); system("nvmlSystemGetDriverVersion", ret) {
		inv.DriverVersion = v
	}
	if v, ret := b.lib.SystemGetCudaDriverVersion(); system("nvmlSystemGetCudaDriverVersion", ret) {
		inv.CUDAVersion = cudaVersion(v)
	}
	if v, ret := b.lib.SystemGetNVMLVersion(); system("nvmlSystemGetNVMLVersion", ret) {
		inv.LibraryVersion = v
	}
	n, ret := b.lib.DeviceGetCount()
	if ret != gonvml.SUCCESS {
		errs = append(errs, fmt.Errorf("nvmlDeviceGetCount: %w", ret))
		return inv, errors.Join(errs...)
	}
	for i := range n {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("stopped after %d of %d GPUs: %w", i, n, err))
			break
		}
		r := b.readDevice(i)
		if r.notVisible {
			inv.NotVisible = append(inv.NotVisible, i)
			continue
		}
		for _, err := range r.errs {
			errs = append(errs, fmt.Errorf("gpu %d: %w", i, err))
		}
		inv.Devices = append(inv.Devices, r.dev)
	}
	return inv, errors.Join(errs...)
}

// Close frees what sampling and event watching hold and shuts NVML down if
// it was initialised. It may be called any number of times; a later call
// initialises the library again.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.initialised {
		return nil
	}
	var errs []error
	b.evMu.Lock()
	if b.events != nil {
		errs = append(errs, b.events.free())
		b.events = nil
	}
	b.evMu.Unlock()
	b.sampleMu.Lock()
	for _, st := range b.gpus {
		errs = append(errs, st.freeGPM())
	}
	b.sampleMu.Unlock()
	b.initialised = false
	b.symMu.Lock()
	b.symbols = nil
	b.symMu.Unlock()
	if ret := b.lib.Shutdown(); ret != gonvml.SUCCESS {
		errs = append(errs, fmt.Errorf("nvmlShutdown: %w", ret))
	}
	return errors.Join(errs...)
}

// acquire initialises NVML if needed and returns with mu held for reading;
// the caller calls release when it no longer uses the library.
func (b *Backend) acquire() (release func(), err error) {
	for {
		b.mu.RLock()
		if b.initialised {
			return b.mu.RUnlock, nil
		}
		b.mu.RUnlock()
		b.mu.Lock()
		err := b.initLocked()
		b.mu.Unlock()
		if err != nil {
			return nil, err
		}
		// Loop: a Close may slip in between Unlock and RLock.
	}
}

// initLocked runs nvmlInit until it succeeds once; failures are retried on
// the next call because the driver may be installed or loaded later.
func (b *Backend) initLocked() error {
	if b.lib == nil {
		return source.NewAbsent("NVIDIA management library not available")
	}
	if b.initialised {
		return nil
	}
	// After a failed Init nothing else is called: with the library missing
	// every other NVML entry point is an unresolved symbol. (go-nvml keeps a
	// library that loaded but whose nvmlInit failed open; that costs one
	// mapping, not correctness.)
	switch ret := b.lib.Init(); ret {
	case gonvml.SUCCESS:
		b.initialised = true
		b.generation++
		b.symMu.Lock()
		b.symbols = map[string]bool{}
		b.symMu.Unlock()
		return nil
	case gonvml.ERROR_LIBRARY_NOT_FOUND:
		return source.NewAbsent("NVIDIA driver library libnvidia-ml.so.1 not found")
	case gonvml.ERROR_DRIVER_NOT_LOADED:
		return source.NewAbsent("NVIDIA kernel driver is not loaded")
	default:
		return fmt.Errorf("nvmlInit: %w", ret)
	}
}

// has reports whether the loaded library exports symbol, asking once per
// Init. It is called with mu held for reading.
func (b *Backend) has(symbol string) bool {
	b.symMu.Lock()
	defer b.symMu.Unlock()
	ok, seen := b.symbols[symbol]
	if !seen {
		ok = b.lib.Extensions().LookupSymbol(symbol) == nil
		b.symbols[symbol] = ok
	}
	return ok
}
