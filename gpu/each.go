package gpu

import "context"

// DeviceRead is one device's part of a sampling round for SampleEach.
type DeviceRead struct {
	// Busy has capacity 1 and is held while a read of the device runs, so
	// a read that hangs past its round is not started again on top of it.
	Busy chan struct{}
	// Read reads the device; it may outlive the round.
	Read func() Sample
	// Down is the device's sample when it has no reading: Read is still
	// running from an earlier round, or the round's context ended first.
	Down func(why string) Sample
}

// SampleEach reads every device in its own goroutine and returns their
// samples in order. It returns when all have answered or ctx is done;
// then each device still reading is reported down with the reason, and
// only its own series go down. Every read reports on its own buffered
// channel, so one that returns after the round gave up writes where
// nobody looks.
func SampleEach(ctx context.Context, devs []DeviceRead) []Sample {
	results := make([]chan Sample, len(devs))
	for k, d := range devs {
		results[k] = make(chan Sample, 1)
		select {
		case d.Busy <- struct{}{}:
		default:
			results[k] <- d.Down("previous read has not returned (the GPU hangs)")
			continue
		}
		go func() {
			s := d.Read()
			<-d.Busy // before reporting, so the next round finds the device free
			results[k] <- s
		}()
	}
	out := make([]Sample, len(devs))
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
