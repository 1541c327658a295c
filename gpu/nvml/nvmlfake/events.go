package nvmlfake

import (
	"fmt"
	"slices"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// XIDEvent is an XID error the machine raises on its own, At after it was
// built (by its clock).
type XIDEvent struct {
	At  time.Duration
	GPU int
	XID uint64
}

// PeriodicXID raises XID every Every on the GPUs in turn (0, 1, 2, ...),
// as application faults (XID 13, 31, 43) do on a busy node. The zero
// value raises none.
type PeriodicXID struct {
	Every time.Duration
	XID   uint64
}

// maxQueued bounds the events an unread set keeps, like the driver's own
// buffer; older ones are dropped.
const maxQueued = 256

// eventSet is a fake nvmlEventSet: the GPUs registered on it and the
// events not yet waited for (guarded by machine.mu).
type eventSet struct {
	*mock.EventSet
	f       *machine
	devices map[*device]uint64 // registered event types
	queue   []gonvml.EventData
	wake    chan struct{} // signalled (non-blocking) when an event is queued
	freed   bool
	// broken: a registration on the set failed with ERROR_UNKNOWN, or
	// FailEventSets hit it. nvml.h: after UNKNOWN from
	// nvmlDeviceRegisterEvents "event set is in undefined state and should
	// be freed"; every call on it fails with UNKNOWN until it is.
	broken bool
}

var _ gonvml.EventSet = (*eventSet)(nil)

func sortedSchedule(xids []XIDEvent) []XIDEvent {
	s := slices.Clone(xids)
	slices.SortStableFunc(s, func(a, b XIDEvent) int { return int(a.At - b.At) })
	return s
}

func (f *machine) EventSetCreate() (gonvml.EventSet, gonvml.Return) {
	if ret := f.enter("nvmlEventSetCreate", nil); ret != gonvml.SUCCESS {
		return nil, ret
	}
	es := &eventSet{EventSet: &mock.EventSet{}, f: f, devices: map[*device]uint64{}, wake: make(chan struct{}, 1)}
	f.mu.Lock()
	f.sets = append(f.sets, es)
	f.mu.Unlock()
	return es, gonvml.SUCCESS
}

func (d *device) GetSupportedEventTypes() (uint64, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetSupportedEventTypes", d, func() uint64 {
		return gonvml.EventTypeXidCriticalError | gonvml.EventTypeSingleBitEccError | gonvml.EventTypeDoubleBitEccError
	})
}

func (d *device) RegisterEvents(types uint64, set gonvml.EventSet) gonvml.Return {
	ret := d.f.enter("nvmlDeviceRegisterEvents", d)
	es, ok := set.(*eventSet)
	if !ok || es.f != d.f {
		return gonvml.ERROR_INVALID_ARGUMENT
	}
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	switch {
	case es.freed:
		return gonvml.ERROR_INVALID_ARGUMENT
	case ret == gonvml.ERROR_UNKNOWN:
		es.broken = true
		return ret
	case ret != gonvml.SUCCESS:
		return ret
	case es.broken:
		return gonvml.ERROR_UNKNOWN
	}
	es.devices[d] |= types
	return gonvml.SUCCESS
}

// raise queues an XID on every live set d is registered on for XIDs. It
// is called with f.mu held.
func (f *machine) raise(d *device, xid uint64) {
	for _, es := range f.sets {
		if es.freed || es.broken || es.devices[d]&gonvml.EventTypeXidCriticalError == 0 {
			continue
		}
		if len(es.queue) >= maxQueued {
			es.queue = es.queue[1:]
		}
		es.queue = append(es.queue, gonvml.EventData{Device: d, EventType: gonvml.EventTypeXidCriticalError, EventData: xid})
		select {
		case es.wake <- struct{}{}:
		default:
		}
	}
}

// due raises the scheduled and periodic XIDs whose time has come. It is
// called with f.mu held.
func (f *machine) due() {
	elapsed := f.clock().Sub(f.start)
	for len(f.schedule) > 0 && f.schedule[0].At <= elapsed {
		x := f.schedule[0]
		f.schedule = f.schedule[1:]
		f.raise(f.devs[x.GPU], x.XID)
	}
	if p := f.periodic; p.Every > 0 && len(f.devs) > 0 {
		for time.Duration(f.nextTick+1)*p.Every <= elapsed {
			f.raise(f.devs[f.nextTick%len(f.devs)], p.XID)
			f.nextTick++
		}
	}
}

// schedulePoll is how often Wait looks at the clock for scheduled XIDs: a
// test's clock moves without telling anyone.
const schedulePoll = 20 * time.Millisecond

// Wait returns the oldest queued event, waiting up to timeoutms (real
// time) for one; ERROR_TIMEOUT when none came.
func (es *eventSet) Wait(timeoutms uint32) (gonvml.EventData, gonvml.Return) {
	f := es.f
	if ret := f.enter("nvmlEventSetWait", nil); ret != gonvml.SUCCESS {
		return gonvml.EventData{}, ret
	}
	deadline := time.Now().Add(time.Duration(timeoutms) * time.Millisecond)
	poll := time.NewTicker(schedulePoll)
	defer poll.Stop()
	for {
		f.mu.Lock()
		if es.freed || f.inits == 0 {
			f.mu.Unlock()
			return gonvml.EventData{}, gonvml.ERROR_UNINITIALIZED
		}
		if es.broken {
			f.mu.Unlock()
			return gonvml.EventData{}, gonvml.ERROR_UNKNOWN
		}
		f.due()
		if len(es.queue) > 0 {
			ev := es.queue[0]
			es.queue = es.queue[1:]
			f.mu.Unlock()
			return ev, gonvml.SUCCESS
		}
		f.mu.Unlock()
		left := time.Until(deadline)
		if left <= 0 {
			return gonvml.EventData{}, gonvml.ERROR_TIMEOUT
		}
		timer := time.NewTimer(left)
		select {
		case <-es.wake:
		case <-poll.C:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (es *eventSet) Free() gonvml.Return {
	f := es.f
	if ret := f.enter("nvmlEventSetFree", nil); ret != gonvml.SUCCESS {
		return ret
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if es.freed {
		return gonvml.ERROR_INVALID_ARGUMENT
	}
	es.freed = true
	f.sets = slices.DeleteFunc(f.sets, func(s *eventSet) bool { return s == es })
	return gonvml.SUCCESS
}

// String names the set in test failures.
func (es *eventSet) String() string {
	return fmt.Sprintf("nvmlfake event set (%d GPUs)", len(es.devices))
}
