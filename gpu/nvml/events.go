package nvml

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
)

// eventWait bounds one nvmlEventSetWait: Close waits at most this long for
// the watcher to let go of the library, and ctx is checked this often.
const eventWait = 500 * time.Millisecond

// defaultEventRetry is how often GPUs missing from the event set are
// registered again (WithEventRetry changes it).
const defaultEventRetry = 30 * time.Second

// WithEventRetry sets how often the event watcher registers again the GPUs
// it could not register (default 30 s).
func WithEventRetry(d time.Duration) Option { return func(b *Backend) { b.eventRetry = d } }

// eventSet is the NVML event set the watcher waits on, with the GPUs
// registered on it. It belongs to one Init generation.
type eventSet struct {
	set        gonvml.EventSet
	generation uint64
	devices    []eventDevice
	// missing are the GPUs not registered, by index, with why; they are
	// registered again at retryAt.
	missing map[int]eventDevice
	retryAt time.Time
}

type eventDevice struct {
	h     gonvml.Device
	index int
	uuid  string
	why   string // why the GPU is not registered; "" when it is
	// hidden is set when this process may not open the GPU (NO_PERMISSION
	// handle): it is retried like any missing GPU but has no watch state,
	// as it has no samples or health.
	hidden bool
}

func (e *eventSet) free() error {
	if ret := e.set.Free(); ret != gonvml.SUCCESS {
		return fmt.Errorf("nvmlEventSetFree: %w", ret)
	}
	return nil
}

// WatchEvents reports XID errors as they happen. It waits on an NVML event
// set in short steps, holding the library only while it waits, and
// returns when ctx is done. GPUs that could not be registered are
// registered again on a schedule; failures to wait free the set, which is
// built again after a pause. It gives up only when NVML is absent.
func (b *Backend) WatchEvents(ctx context.Context, emit func(gpu.Event)) error {
	pause := time.NewTimer(0)
	defer pause.Stop()
	<-pause.C
	failures := 0
	for ctx.Err() == nil {
		ev, ok, err := b.waitEvent()
		switch {
		case err != nil:
			if isAbsent(err) {
				return err
			}
			failures++
			// Back off up to 30 s; a GPU that fell off the bus can make
			// every wait fail until the set is rebuilt.
			pause.Reset(min(time.Duration(failures)*time.Second, 30*time.Second))
			select {
			case <-ctx.Done():
			case <-pause.C:
			}
		case ok:
			failures = 0
			emit(ev)
		default:
			failures = 0
		}
	}
	return ctx.Err()
}

// EventWatch reports, in GPU index order, whether each GPU's XIDs are
// watched and why not; nil before the watcher first ran or while NVML is
// absent. It never waits for the library.
func (b *Backend) EventWatch() []gpu.EventWatchState {
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	return slices.Clone(b.watch)
}

// waitEvent waits up to eventWait for one event. ok is false when none came.
func (b *Backend) waitEvent() (gpu.Event, bool, error) {
	release, err := b.acquire()
	if err != nil {
		if isAbsent(err) {
			b.setWatch(nil)
		} else {
			b.unwatched(err.Error())
		}
		return gpu.Event{}, false, err
	}
	defer release()
	b.evMu.Lock()
	defer b.evMu.Unlock()
	if b.events != nil && b.events.generation != b.generation {
		b.events = nil // died with its Init; nothing to free
	}
	switch {
	case b.events == nil:
		es, err := b.newEventSet(nil)
		if err != nil {
			b.unwatched(err.Error())
			return gpu.Event{}, false, err
		}
		b.events = es
		b.publishWatch()
	case len(b.events.missing) > 0 && !time.Now().Before(b.events.retryAt):
		err := b.registerMissing()
		if b.events == nil {
			b.unwatched(err.Error())
			return gpu.Event{}, false, err
		}
		b.publishWatch()
		if err != nil {
			return gpu.Event{}, false, err
		}
	}
	data, ret := b.events.set.Wait(uint32(eventWait / time.Millisecond))
	switch ret {
	case gonvml.SUCCESS:
	case gonvml.ERROR_TIMEOUT:
		return gpu.Event{}, false, nil
	default:
		// Rebuild the set on the next try: after UNKNOWN it is in an
		// undefined state, after GPU_IS_LOST its registrations are stale.
		err := fmt.Errorf("nvmlEventSetWait: %w", ret)
		if ferr := b.events.free(); ferr != nil {
			err = errors.Join(err, ferr)
		}
		b.events = nil
		b.unwatched(err.Error() + "; the event set is built again")
		return gpu.Event{}, false, err
	}
	if data.EventType&gonvml.EventTypeXidCriticalError == 0 {
		return gpu.Event{}, false, nil
	}
	ev := gpu.Event{Time: b.now(), GPU: -1, Kind: gpu.XID, Code: data.EventData}
	for _, d := range b.events.devices {
		if d.h == data.Device {
			ev.GPU, ev.UUID = d.index, d.uuid
		}
	}
	return ev, true, nil
}

// newEventSet creates a set and registers every GPU but those in skip. A
// GPU that cannot be registered is left out and noted as missing, to be
// registered again later. nvml.h: after nvmlDeviceRegisterEvents returns
// UNKNOWN "event set is in undefined state and should be freed", so the
// set is freed and built again without that GPU; each pass leaves out one
// more GPU, so this ends.
func (b *Backend) newEventSet(skip map[int]eventDevice) (*eventSet, error) {
	n, ret := b.lib.DeviceGetCount()
	if ret != gonvml.SUCCESS {
		return nil, fmt.Errorf("nvmlDeviceGetCount: %w", ret)
	}
	skip = maps.Clone(skip)
	if skip == nil {
		skip = map[int]eventDevice{}
	}
	for {
		set, ret := b.lib.EventSetCreate()
		if ret != gonvml.SUCCESS {
			return nil, fmt.Errorf("nvmlEventSetCreate: %w", ret)
		}
		es := &eventSet{set: set, generation: b.generation, missing: maps.Clone(skip), retryAt: time.Now().Add(b.eventRetry)}
		broken := -1
		for i := range n {
			if _, ok := skip[i]; ok {
				continue
			}
			d, unknown := b.register(set, i)
			if d.why == "" {
				es.devices = append(es.devices, d)
				continue
			}
			es.missing[i] = d
			if unknown {
				broken = i
				break
			}
		}
		if broken < 0 {
			return es, nil
		}
		if err := es.free(); err != nil {
			return nil, fmt.Errorf("free the event set GPU %d left undefined: %w", broken, err)
		}
		skip[broken] = es.missing[broken]
	}
}

// registerMissing registers the missing GPUs on the current set. One that
// fails with UNKNOWN leaves the set undefined: it is freed (with the events
// it had not delivered yet) and built again without that GPU. b.events is
// nil when no set could be built.
func (b *Backend) registerMissing() error {
	es := b.events
	for _, i := range slices.Sorted(maps.Keys(es.missing)) {
		d, unknown := b.register(es.set, i)
		if d.why == "" {
			es.devices = append(es.devices, d)
			delete(es.missing, i)
			continue
		}
		es.missing[i] = d
		if !unknown {
			continue
		}
		b.events = nil
		ferr := es.free()
		if ferr != nil {
			ferr = fmt.Errorf("free the event set GPU %d left undefined: %w", i, ferr)
		}
		next, err := b.newEventSet(map[int]eventDevice{i: d})
		if err != nil {
			return errors.Join(ferr, err)
		}
		b.events = next
		return ferr
	}
	es.retryAt = time.Now().Add(b.eventRetry)
	return nil
}

// register adds GPU i's XIDs to set. unknown is true when the registration
// failed with UNKNOWN, which leaves the set undefined.
func (b *Backend) register(set gonvml.EventSet, i int) (d eventDevice, unknown bool) {
	d.index = i
	h, ret := b.lib.DeviceGetHandleByIndex(i)
	if ret != gonvml.SUCCESS {
		d.why = fmt.Sprintf("nvmlDeviceGetHandleByIndex: %v", ret)
		d.hidden = ret == gonvml.ERROR_NO_PERMISSION
		return d, false
	}
	d.h = h
	if uuid, ret := h.GetUUID(); ret == gonvml.SUCCESS {
		d.uuid = uuid
	}
	types, ret := h.GetSupportedEventTypes()
	switch {
	case ret != gonvml.SUCCESS:
		d.why = fmt.Sprintf("nvmlDeviceGetSupportedEventTypes: %v", ret)
	case types&gonvml.EventTypeXidCriticalError == 0:
		d.why = "the GPU does not report XID events"
	default:
		if ret := h.RegisterEvents(gonvml.EventTypeXidCriticalError, set); ret != gonvml.SUCCESS {
			d.why = fmt.Sprintf("nvmlDeviceRegisterEvents: %v", ret)
			return d, ret == gonvml.ERROR_UNKNOWN
		}
	}
	return d, false
}

// publishWatch reports the current set's GPUs. Called with evMu held.
func (b *Backend) publishWatch() {
	es := b.events
	states := make([]gpu.EventWatchState, 0, len(es.devices)+len(es.missing))
	for _, d := range es.devices {
		states = append(states, gpu.EventWatchState{GPU: d.index, UUID: d.uuid, Watched: true})
	}
	for _, d := range es.missing {
		if d.hidden {
			continue
		}
		states = append(states, gpu.EventWatchState{GPU: d.index, UUID: d.uuid, Reason: d.why})
	}
	slices.SortFunc(states, func(a, b gpu.EventWatchState) int { return a.GPU - b.GPU })
	b.setWatch(states)
}

// unwatched marks every GPU reported so far as not watched, for why.
func (b *Backend) unwatched(why string) {
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	states := slices.Clone(b.watch)
	for i := range states {
		states[i].Watched, states[i].Reason = false, why
	}
	b.watch = states
}

func (b *Backend) setWatch(states []gpu.EventWatchState) {
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	b.watch = states
}

func isAbsent(err error) bool { return errors.Is(err, source.ErrAbsent) }
