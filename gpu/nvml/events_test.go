package nvml_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/internal/testsupport"
)

// watching runs b's event watcher until the test ends; events arrive on
// the returned channel.
func watching(t *testing.T, b *nvml.Backend) <-chan gpu.Event {
	t.Helper()
	events := make(chan gpu.Event, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.WatchEvents(ctx, func(e gpu.Event) { events <- e })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return events
}

// watchedState waits until the watcher reports GPU index watched (or not).
func watchedState(t *testing.T, b *nvml.Backend, index int, watched bool) gpu.EventWatchState {
	t.Helper()
	var st gpu.EventWatchState
	testsupport.Eventually(t, fmt.Sprintf("GPU %d watched=%v", index, watched), func() error {
		states := b.EventWatch()
		if index >= len(states) {
			return fmt.Errorf("watch states %+v", states)
		}
		if st = states[index]; st.GPU != index || st.Watched != watched {
			return fmt.Errorf("state %+v", st)
		}
		return nil
	})
	return st
}

// xidArrives raises an XID on GPU index until the watcher reports it.
func xidArrives(t *testing.T, lib gonvml.Interface, events <-chan gpu.Event, index int, xid uint64) {
	t.Helper()
	nvmlfake.RaiseXID(lib, index, xid)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e := <-events:
			if e.GPU == index && e.Code == xid {
				return
			}
		case <-deadline:
			t.Fatalf("XID %d on GPU %d never reported", xid, index)
		}
	}
}

// A GPU that cannot be registered when the set is built is registered
// again on a schedule, without waiting for a wait to fail, and is reported
// unwatched meanwhile.
func TestEventRegistrationRetried(t *testing.T) {
	lib := build(t, dgx(nvmlfake.H100))
	nvmlfake.SetReturn(lib, 2, "nvmlDeviceGetSupportedEventTypes", gonvml.ERROR_UNKNOWN)
	b := nvml.New(lib, nvml.WithEventRetry(100*time.Millisecond))
	defer b.Close()
	events := watching(t, b)
	st := watchedState(t, b, 2, false)
	if !strings.Contains(st.Reason, "nvmlDeviceGetSupportedEventTypes") || st.UUID == "" {
		t.Errorf("GPU 2 %+v", st)
	}
	for i, st := range b.EventWatch() {
		if i != 2 && !st.Watched {
			t.Errorf("GPU %d %+v", i, st)
		}
	}
	xidArrives(t, lib, events, 5, 13)
	nvmlfake.SetReturn(lib, 2, "nvmlDeviceGetSupportedEventTypes", gonvml.SUCCESS)
	watchedState(t, b, 2, true)
	xidArrives(t, lib, events, 2, 48)
	if n := nvmlfake.Calls(lib, "nvmlEventSetCreate"); n != 1 {
		t.Errorf("%d event sets built, want 1: GPU 2 joins the set it missed", n)
	}
}

// A registration failing with UNKNOWN leaves the set undefined (nvml.h):
// it is freed and built again without that GPU, so the other GPUs stay
// watched, and the GPU is registered again later.
func TestEventRegistrationUnknown(t *testing.T) {
	lib := build(t, dgx(nvmlfake.H100))
	nvmlfake.SetReturn(lib, 3, "nvmlDeviceRegisterEvents", gonvml.ERROR_UNKNOWN)
	b := nvml.New(lib, nvml.WithEventRetry(200*time.Millisecond))
	defer b.Close()
	events := watching(t, b)
	st := watchedState(t, b, 3, false)
	if !strings.Contains(st.Reason, "nvmlDeviceRegisterEvents") {
		t.Errorf("GPU 3 %+v", st)
	}
	xidArrives(t, lib, events, 6, 13)
	xidArrives(t, lib, events, 0, 31)
	nvmlfake.SetReturn(lib, 3, "nvmlDeviceRegisterEvents", gonvml.SUCCESS)
	watchedState(t, b, 3, true)
	xidArrives(t, lib, events, 3, 48)
	if created, freed := nvmlfake.Calls(lib, "nvmlEventSetCreate"), nvmlfake.Calls(lib, "nvmlEventSetFree"); created != freed+1 {
		t.Errorf("%d sets created, %d freed: every undefined set must be freed", created, freed)
	}
}

// A wait failing with UNKNOWN frees the set and builds a new one; the GPUs
// are reported unwatched until then.
func TestEventSetRebuiltAfterUnknownWait(t *testing.T) {
	lib := build(t, dgx(nvmlfake.H100))
	b := nvml.New(lib)
	defer b.Close()
	events := watching(t, b)
	watchedState(t, b, 7, true)
	nvmlfake.FailEventSets(lib)
	testsupport.Eventually(t, "the failed set freed", func() error {
		if n := nvmlfake.Calls(lib, "nvmlEventSetFree"); n != 1 {
			return fmt.Errorf("%d sets freed", n)
		}
		return nil
	})
	watchedState(t, b, 7, true)
	xidArrives(t, lib, events, 7, 79)
}

// A GPU this process may not open (its handle answers NO_PERMISSION: a
// device cgroup hides it) is not ours to watch: it has no watch state, so
// gpunode_gpu_xid_watch_up and the GPUXIDNotWatched alert leave it out,
// as the samples and health do. It joins once it becomes visible.
func TestEventWatchLeavesOutGPUsNotVisible(t *testing.T) {
	lib := build(t, dgx(nvmlfake.H100))
	nvmlfake.SetNoPermission(lib, 2)
	b := nvml.New(lib, nvml.WithEventRetry(100*time.Millisecond))
	defer b.Close()
	events := watching(t, b)
	testsupport.Eventually(t, "7 watch states", func() error {
		states := b.EventWatch()
		if len(states) != 7 {
			return fmt.Errorf("watch states %+v", states)
		}
		for _, st := range states {
			if st.GPU == 2 || !st.Watched {
				return fmt.Errorf("state %+v", st)
			}
		}
		return nil
	})
	xidArrives(t, lib, events, 5, 13)
	nvmlfake.SetReturn(lib, 2, "nvmlDeviceGetHandleByIndex", gonvml.SUCCESS)
	watchedState(t, b, 2, true)
}
