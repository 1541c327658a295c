package source

import (
	"context"
	"time"
)

// Device is one device's part of a round of Each: the GPUs of a backend,
// the RDMA devices under /sys/class/infiniband.
type Device[T any] struct {
	// Busy has capacity 1 and is held while a read of the device runs, so
	// a read that hangs past its round is not started again on top of it.
	// It belongs to the device and outlives the round (NewBusy).
	Busy chan struct{}
	// Read reads the device; it may outlive the round.
	Read func() T
	// Down is the device's result when it has no reading: Read is still
	// running from an earlier round, or the round's context ended first.
	Down func(why string) T
}

// NewBusy returns a device's Busy channel.
func NewBusy() chan struct{} { return make(chan struct{}, 1) }

// StillReading starts the reason Each gives for a device whose read from
// an earlier round has not returned.
const StillReading = "previous read has not returned"

// Each reads every device in its own goroutine and returns their results
// in order. It returns when all have answered or ctx is done; then each
// device still reading is reported down with the reason, and only its own
// results go down. Reads of a hung device (a driver stuck in a sysfs read,
// a GPU that does not answer) cannot be interrupted: the device is not
// read again until its read returns, and until then every round reports
// it down with StillReading. Every read reports on its own buffered
// channel, so one that returns after the round gave up writes where
// nobody looks.
func Each[T any](ctx context.Context, devs []Device[T]) []T {
	results := make([]chan T, len(devs))
	for k, d := range devs {
		results[k] = make(chan T, 1)
		select {
		case d.Busy <- struct{}{}:
		default:
			results[k] <- d.Down(StillReading + " (the device hangs); it is not read again until it does")
			continue
		}
		go func() {
			v := d.Read()
			<-d.Busy // before reporting, so the next round finds the device free
			results[k] <- v
		}()
	}
	out := make([]T, len(devs))
	expired := false
	for k, d := range devs {
		if !expired {
			select {
			case out[k] = <-results[k]:
				continue
			case <-ctx.Done():
				expired = true
			}
		}
		select {
		case out[k] = <-results[k]:
		default:
			out[k] = d.Down("timed out: " + context.Cause(ctx).Error())
		}
	}
	return out
}

// DeviceDeadline returns the context for the per-device reads (Each) of a
// source run under ctx: its deadline comes at four fifths of the time ctx
// has left, so that the source reports its hung devices down (and the
// others read) before a Runner's own timeout, the backstop for a source
// that hangs whole, gives up on all of them. Without a deadline on ctx
// it is ctx.
func DeviceDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, time.Now().Add(time.Until(deadline)*4/5))
}
