// Package nvml is the NVIDIA GPU backend. It reads the GPU inventory through
// NVML (libnvidia-ml.so.1), which go-nvml loads at run time, so the agent
// binary runs unchanged on nodes without an NVIDIA driver.
package nvml

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"golang.org/x/sync/semaphore"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
)

// Backend implements gpu.Backend, gpu.Sampler and gpu.EventWatcher over an
// NVML library. It is safe for concurrent use: NVML itself is thread-safe,
// so Inventory, Sample and the event watcher run side by side, and Close
// waits for all of them so the library is never shut down under a caller.
// Close waits a bounded time: a call hung in the driver leaves NVML
// initialised rather than hanging the caller.
type Backend struct {
	lib gonvml.Interface
	// cands, when lib is nil, are where initialisation looks for the
	// library (NewLocating); library is where it was found. Both change
	// only with all of lock held.
	cands   []Candidate
	library *gpu.Library

	now        func() time.Time
	closeWait  time.Duration
	eventRetry time.Duration

	// lock is a readers-writer lock whose writer can give up: every call
	// into the library holds one unit, nvmlInit and nvmlShutdown hold all
	// of them. (sync.RWMutex cannot bound a Lock, and a pending Lock
	// would block every later reader behind a hung call.)
	lock *semaphore.Weighted
	// holders names what holds the library now, for Close's error.
	holdMu  sync.Mutex
	holders map[uint64]holder
	nextID  uint64

	// initialised and generation change only with all of lock held.
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
	// watch is what EventWatch reports, guarded by watchMu (never held
	// while calling the library).
	watchMu sync.Mutex
	watch   []gpu.EventWatchState
}

// holder is one acquire not yet released.
type holder struct {
	op    string
	since time.Time
}

// allUnits is the whole lock: more units than goroutines can ever hold.
const allUnits = 1 << 40

// defaultCloseWait bounds Close (WithCloseTimeout changes it). The
// daemon's stop must end within systemd's TimeoutStopSec (15 s in our
// unit) and the pod's grace period.
const defaultCloseWait = 3 * time.Second

var (
	_ gpu.Backend            = (*Backend)(nil)
	_ gpu.Sampler            = (*Backend)(nil)
	_ gpu.EventWatcher       = (*Backend)(nil)
	_ gpu.EventWatchReporter = (*Backend)(nil)
)

// Option configures a Backend.
type Option func(*Backend)

// WithClock stamps samples and events with now instead of time.Now (tests
// and simulated nodes share it with the NVML fake).
func WithClock(now func() time.Time) Option { return func(b *Backend) { b.now = now } }

// WithCloseTimeout bounds how long Close waits for calls in the library
// to return (default 3 s).
func WithCloseTimeout(d time.Duration) Option { return func(b *Backend) { b.closeWait = d } }

// New returns a backend over lib (gonvml.New() on a host, an nvmlfake
// machine in tests). A nil lib is a backend whose library is always absent.
// NVML is initialised lazily by the first call that needs it.
func New(lib gonvml.Interface, opts ...Option) *Backend {
	b := &Backend{lib: lib, now: time.Now, closeWait: defaultCloseWait, eventRetry: defaultEventRetry,
		lock: semaphore.NewWeighted(allUnits), holders: map[uint64]holder{}}
	for _, o := range opts {
		o(b)
	}
	return b
}

// NewLocating returns a backend that looks for libnvidia-ml.so.1 among
// cands (see Candidates) when it initialises, and again at each
// initialisation until a library is found: the driver may be installed
// after the agent starts (the GPU operator's driver container). Inventory
// reports where it was found.
func NewLocating(cands []Candidate, opts ...Option) *Backend {
	b := New(nil, opts...)
	b.cands = cands
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
	if b.library != nil {
		lib := *b.library
		inv.Library = &lib
	}

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
// initialises the library again. It waits at most the close timeout for
// calls in the library to return: when one hangs (a GPU in a bad state),
// Close gives up, leaves NVML initialised (the process's exit releases
// it) and returns an error naming the calls it abandoned.
func (b *Backend) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), b.closeWait)
	defer cancel()
	if err := b.lock.Acquire(ctx, allUnits); err != nil {
		return fmt.Errorf("NVML not shut down: gave up after %s waiting for %s; it stays initialised until the process exits",
			b.closeWait, b.describeHolders())
	}
	defer b.lock.Release(allUnits)
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
	b.setWatch(nil)
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

// acquire initialises NVML if needed and returns holding one unit of the
// lock; the caller calls release when it no longer uses the library.
func (b *Backend) acquire() (release func(), err error) {
	for {
		_ = b.lock.Acquire(context.Background(), 1) // fails only with a done context
		if b.initialised {
			return b.hold(callerName()), nil
		}
		b.lock.Release(1)
		_ = b.lock.Acquire(context.Background(), allUnits)
		err := b.initLocked()
		b.lock.Release(allUnits)
		if err != nil {
			return nil, err
		}
		// Loop: a Close may slip in between Release and Acquire.
	}
}

// hold records op as holding one unit and returns its release.
func (b *Backend) hold(op string) func() {
	b.holdMu.Lock()
	b.nextID++
	id := b.nextID
	b.holders[id] = holder{op: op, since: time.Now()}
	b.holdMu.Unlock()
	return func() {
		b.holdMu.Lock()
		delete(b.holders, id)
		b.holdMu.Unlock()
		b.lock.Release(1)
	}
}

// describeHolders names what holds the library, longest first.
func (b *Backend) describeHolders() string {
	b.holdMu.Lock()
	hs := make([]holder, 0, len(b.holders))
	for _, h := range b.holders {
		hs = append(hs, h)
	}
	b.holdMu.Unlock()
	if len(hs) == 0 {
		return "the library (no call in it any more)"
	}
	slices.SortFunc(hs, func(a, b holder) int { return a.since.Compare(b.since) })
	parts := make([]string, len(hs))
	for i, h := range hs {
		parts[i] = fmt.Sprintf("%s (in NVML for %s)", h.op, time.Since(h.since).Round(time.Millisecond))
	}
	noun := "calls"
	if len(hs) == 1 {
		noun = "call"
	}
	return fmt.Sprintf("%d %s: %s", len(hs), noun, strings.Join(parts, ", "))
}

// callerName is the function that called acquire ("sampleGPU"), so that
// Close can say what it abandoned without every caller naming itself.
func callerName() string {
	pc, _, _, ok := runtime.Caller(2)
	if !ok {
		return "unknown"
	}
	name := "unknown"
	if f := runtime.FuncForPC(pc); f != nil {
		name = f.Name()
	}
	// "github.com/gpunode/gpunode/gpu/nvml.(*Backend).sampleGPU" -> "sampleGPU"
	if i := strings.LastIndex(name, ")."); i >= 0 {
		return name[i+2:]
	}
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	return name
}

// initLocked runs nvmlInit until it succeeds once; failures are retried on
// the next call because the driver may be installed or loaded later.
func (b *Backend) initLocked() error {
	if b.initialised {
		return nil
	}
	if b.lib == nil && b.cands != nil {
		lib, load, err := Locate(b.cands)
		if err != nil {
			return err
		}
		b.lib, b.library = gonvml.New(gonvml.WithLibraryPath(load)), &lib
	}
	if b.lib == nil {
		return source.NewAbsent("NVIDIA management library not available")
	}
	at := "" // names the library found, for errors
	if b.library != nil {
		at = " (library " + b.library.Path + ")"
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
		if b.library != nil { // it loaded when located: not absent
			return fmt.Errorf("NVIDIA library %s no longer loads", b.library.Path)
		}
		return source.NewAbsent("NVIDIA driver library libnvidia-ml.so.1 not found")
	case gonvml.ERROR_DRIVER_NOT_LOADED:
		return source.NewAbsent("NVIDIA kernel driver is not loaded%s", at)
	default:
		return fmt.Errorf("nvmlInit%s: %w", at, ret)
	}
}

// has reports whether the loaded library exports symbol, asking once per
// Init. It is called holding the lock.
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
