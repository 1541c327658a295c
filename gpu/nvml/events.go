package nvml

import (
	"context"
	"errors"
	"fmt"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
)

// eventWait bounds one nvmlEventSetWait: Close waits at most this long for
// the watcher to let go of the library, and ctx is checked this often.
const eventWait = 500 * time.Millisecond

// eventSet is the NVML event set the watcher waits on, with the GPUs
// registered on it. It belongs to one Init generation.
type eventSet struct {
	set        gonvml.EventSet
	generation uint64
	devices    []eventDevice
}

type eventDevice struct {
	h     gonvml.Device
	index int
	uuid  string
}

func (e *eventSet) free() error {
	if ret := e.set.Free(); ret != gonvml.SUCCESS {
		return fmt.Errorf("nvmlEventSetFree: %w", ret)
	}
	return nil
}

// WatchEvents reports XID errors as they happen. It waits on an NVML event
// set in short steps, holding the library only while it waits, and
// returns when ctx is done. Failures to wait are retried with a pause;
// it gives up only when NVML is absent.
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

// waitEvent waits up to eventWait for one event. ok is false when none came.
func (b *Backend) waitEvent() (gpu.Event, bool, error) {
	release, err := b.acquire()
	if err != nil {
		return gpu.Event{}, false, err
	}
	defer release()
	b.evMu.Lock()
	defer b.evMu.Unlock()
	if b.events != nil && b.events.generation != b.generation {
		b.events = nil // died with its Init; nothing to free
	}
	if b.events == nil {
		es, err := b.newEventSet()
		if err != nil {
			return gpu.Event{}, false, err
		}
		b.events = es
	}
	data, ret := b.events.set.Wait(uint32(eventWait / time.Millisecond))
	switch ret {
	case gonvml.SUCCESS:
	case gonvml.ERROR_TIMEOUT:
		return gpu.Event{}, false, nil
	default:
		// Rebuild the set on the next try: registrations may be stale.
		err := fmt.Errorf("nvmlEventSetWait: %w", ret)
		if ferr := b.events.free(); ferr != nil {
			err = errors.Join(err, ferr)
		}
		b.events = nil
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

// newEventSet creates a set and registers every GPU that supports XID
// events. A GPU that cannot be registered is skipped (it may be lost);
// the set is rebuilt after a failed wait, which retries it.
func (b *Backend) newEventSet() (*eventSet, error) {
	n, ret := b.lib.DeviceGetCount()
	if ret != gonvml.SUCCESS {
		return nil, fmt.Errorf("nvmlDeviceGetCount: %w", ret)
	}
	set, ret := b.lib.EventSetCreate()
	if ret != gonvml.SUCCESS {
		return nil, fmt.Errorf("nvmlEventSetCreate: %w", ret)
	}
	es := &eventSet{set: set, generation: b.generation}
	for i := range n {
		h, ret := b.lib.DeviceGetHandleByIndex(i)
		if ret != gonvml.SUCCESS {
			continue
		}
		types, ret := h.GetSupportedEventTypes()
		if ret != gonvml.SUCCESS || types&gonvml.EventTypeXidCriticalError == 0 {
			continue
		}
		if ret := h.RegisterEvents(gonvml.EventTypeXidCriticalError, set); ret != gonvml.SUCCESS {
			continue
		}
		uuid, _ := h.GetUUID()
		es.devices = append(es.devices, eventDevice{h: h, index: i, uuid: uuid})
	}
	return es, nil
}

func isAbsent(err error) bool { return errors.Is(err, source.ErrAbsent) }
