package source

import (
	"context"
	"strings"
	"testing"
	"time"
)

type reading struct {
	index  int
	up     bool
	errors []string
}

// A device whose read hangs is down for that round and the next, while
// the others answer in order; once it returns it is read again.
func TestEach(t *testing.T) {
	release := make(chan struct{})
	devs := make([]Device[reading], 3)
	for i := range devs {
		devs[i] = Device[reading]{Busy: NewBusy(),
			Read: func() reading {
				if i == 1 {
					<-release
				}
				return reading{index: i, up: true}
			},
			Down: func(why string) reading { return reading{index: i, errors: []string{why}} }}
	}
	round := func() []reading {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		return Each(ctx, devs)
	}
	s := round()
	if !s[0].up || !s[2].up || s[0].index != 0 || s[2].index != 2 {
		t.Fatalf("answering devices: %+v", s)
	}
	if s[1].up || !strings.HasPrefix(s[1].errors[0], "timed out") {
		t.Fatalf("hung device: %+v", s[1])
	}
	if s = round(); s[1].up || !strings.HasPrefix(s[1].errors[0], StillReading) || !s[2].up {
		t.Fatalf("second round: %+v", s)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for len(devs[1].Busy) != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if s = round(); !s[1].up {
		t.Fatalf("after the hang ends: %+v", s[1])
	}
}

func TestDeviceDeadline(t *testing.T) {
	ctx, cancel := DeviceDeadline(context.Background())
	if _, ok := ctx.Deadline(); ok {
		t.Error("a deadline from a context without one")
	}
	cancel()
	if ctx.Err() == nil {
		t.Error("cancel did not cancel")
	}
	parent, cancelParent := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelParent()
	ctx, cancel = DeviceDeadline(parent)
	defer cancel()
	d, _ := ctx.Deadline()
	if left := time.Until(d); left > 8*time.Second || left < 7*time.Second {
		t.Errorf("%s left of 10s, want four fifths", left)
	}
}
