package telemetry

import (
	"context"
	"time"

	"github.com/gpunode/gpunode/kmsg"
)

// KernelLogPoll is how often Run reads the kernel log between rounds. A
// read at the end of /dev/kmsg returns at once (EAGAIN), so reading often
// costs next to nothing, and a fault the kernel logs (an Xid, a GPU fallen
// off the bus, an AER report) reaches the condition within this rather
// than within a whole sample interval (10 s by default).
const KernelLogPoll = 250 * time.Millisecond

// addPending queues a batch the reader brought, for the next apply.
func (k *kernelState) addPending(b kmsg.Batch) {
	if b.Records == 0 && b.Lost == 0 {
		return
	}
	k.pendingMu.Lock()
	k.pending = append(k.pending, b)
	k.pendingMu.Unlock()
}

// watchKernelLog reads the kernel log every KernelLogPoll until ctx is done
// and applies what it brings at once, as Event does for the GPU library's
// XIDs: counted against the last round's GPUs, a new frame, and the
// condition handed over if it changed. It starts after the first round, so
// the GPUs an XID names are known. Read errors are left to the round's
// runner, which reports the source's state.
func (s *Sampler) watchKernelLog(ctx context.Context) {
	t := time.NewTicker(KernelLogPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := s.o.KernelLog.Read(ctx)
		if err != nil || b.Records == 0 && b.Lost == 0 {
			continue
		}
		s.kernel.addPending(b)
		s.mu.Lock()
		s.applyKernelLocked(s.base.GPUs)
		s.publishLocked()
		s.mu.Unlock()
		s.notify()
	}
}
