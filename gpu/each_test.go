package gpu

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A device whose read hangs is down for that round and the next, while
// the others answer in order; once it returns it is read again.
func TestSampleEach(t *testing.T) {
	release := make(chan struct{})
	devs := make([]DeviceRead, 3)
	for i := range devs {
		devs[i] = DeviceRead{Busy: make(chan struct{}, 1),
			Read: func() Sample {
				if i == 1 {
					<-release
				}
				return Sample{Index: i, Up: true}
			},
			Down: func(why string) Sample { return Sample{Index: i, Errors: []string{why}} }}
	}
	round := func() []Sample {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		return SampleEach(ctx, devs)
	}
	s := round()
	if !s[0].Up || !s[2].Up || s[0].Index != 0 || s[2].Index != 2 {
		t.Fatalf("answering devices: %+v", s)
	}
	if s[1].Up || !strings.HasPrefix(s[1].Errors[0], "timed out") {
		t.Fatalf("hung device: %+v", s[1])
	}
	if s = round(); s[1].Up || !strings.Contains(s[1].Errors[0], "previous read has not returned") || !s[2].Up {
		t.Fatalf("second round: %+v", s)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for len(devs[1].Busy) != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if s = round(); !s[1].Up {
		t.Fatalf("after the hang ends: %+v", s[1])
	}
}
