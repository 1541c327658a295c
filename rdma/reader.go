package rdma

import (
	"slices"
	"sync"

	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
)

// Reader reads the RDMA devices (Discover) and their port counters
// (ReadCounters) under one host root, each device in its own goroutine
// under its own deadline (source.Each). A sysfs read cannot be
// interrupted: a driver stuck in one holds its reader for as long as it
// likes. So a Reader remembers each device from call to call: a device
// whose read has not returned is reported with the reason, on that device
// (and its ports) only, and is not read again until the read returns.
//
// Keep one Reader for reads that repeat (the discovery loop, the sampler,
// the probes); it is safe for concurrent use.
type Reader struct {
	fs hostfs.FS

	mu       sync.Mutex
	devices  map[string]*deviceState  // Discover, by device name
	verbs    map[string]chan struct{} // Discover's uverbs entries, by name
	counters map[string]chan struct{} // ReadCounters, by device name
	pause    map[string]chan struct{} // ReadCounters' driver statistics, by netdev
	stats    DriverStats              // nil: no pause frames
}

// deviceState is what Discover keeps of one device between calls.
type deviceState struct {
	busy chan struct{}
	last *Device // the last reading that returned; nil before one did
}

// NewReader returns a Reader of the RDMA devices under fsys.
func NewReader(fsys hostfs.FS) *Reader {
	return &Reader{fs: fsys, devices: map[string]*deviceState{},
		verbs: map[string]chan struct{}{}, counters: map[string]chan struct{}{}, pause: map[string]chan struct{}{}}
}

func (r *Reader) deviceState(name string) *deviceState {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.devices[name]
	if st == nil {
		st = &deviceState{busy: source.NewBusy()}
		r.devices[name] = st
	}
	return st
}

// remember keeps d as st's last reading.
func (r *Reader) remember(st *deviceState, d Device) {
	d = cloneDevice(d)
	r.mu.Lock()
	st.last = &d
	r.mu.Unlock()
}

// lastReading is st's last reading, or a device with nothing but its
// name before one returned.
func (r *Reader) lastReading(st *deviceState, name string) Device {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.last == nil {
		return Device{Name: name, NUMANode: -1}
	}
	d := cloneDevice(*st.last)
	for i := range d.Ports {
		d.Ports[i].Errors = nil // the reading's own; the device's problem now is the hang
	}
	return d
}

// cloneDevice copies what the caller of Discover may change in place
// (AddPFC fills in ports' PFC and errors), so a reading kept for later
// shares nothing with the one handed out.
func cloneDevice(d Device) Device {
	d.Errors = slices.Clone(d.Errors)
	d.Ports = slices.Clone(d.Ports)
	for i := range d.Ports {
		p := &d.Ports[i]
		p.Errors = slices.Clone(p.Errors)
		if p.RoCE != nil {
			c := *p.RoCE
			p.RoCE = &c
		}
	}
	return d
}

// forgetDevices drops what Discover keeps of devices no longer listed,
// except those whose read is still running: a device that comes back
// while it hangs must not be read again on top of the hung read.
func (r *Reader) forgetDevices(names []string) {
	forget(r, r.devices, names, func(st *deviceState) chan struct{} { return st.busy })
}

// forgetBusy drops the tokens in m of names no longer listed whose read
// has returned.
func (r *Reader) forgetBusy(m map[string]chan struct{}, names []string) {
	forget(r, m, names, func(b chan struct{}) chan struct{} { return b })
}

// forget deletes the entries of m whose name is not in names and whose
// busy token is free, under r.mu.
func forget[V any](r *Reader, m map[string]V, names []string, busy func(V) chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, v := range m {
		if !slices.Contains(names, name) && len(busy(v)) == 0 {
			delete(m, name)
		}
	}
}

func (r *Reader) verbsBusy(name string) chan struct{} { return r.busy(r.verbs, name) }

func (r *Reader) countersBusy(name string) chan struct{} { return r.busy(r.counters, name) }

func (r *Reader) busy(m map[string]chan struct{}, name string) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := m[name]
	if b == nil {
		b = source.NewBusy()
		m[name] = b
	}
	return b
}
