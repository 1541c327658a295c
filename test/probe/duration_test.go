package probe_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/rdma/probe"
)

// durationDepths are queue depths around the write loop's signalling
// interval (depth/2, at most 100): multiples of it (64, 100, 1000) and
// not (256: interval 100; 1023: interval 100, odd).
var durationDepths = []int{64, 100, 256, 1000, 1023}

const (
	probeDuration = 2 * time.Second
	// durationTimeout bounds each run: a loop that does not stop at the
	// duration fails with "timed out" here.
	durationTimeout = 20 * time.Second
)

var durationScript = func() string {
	s := common
	for _, d := range durationDepths {
		s += fmt.Sprintf("ours duration-%d --kind bw --duration %s --depth %d --timeout %s\n", d, probeDuration, d, durationTimeout)
	}
	return s
}()

// Duration mode stops at the duration whatever the queue depth: the last
// write posted is a signaled one, so every write is accounted for.
func TestDurationModeDepths(t *testing.T) {
	secs := runVM(t, machine(t, durationScript))
	for _, d := range durationDepths {
		name := fmt.Sprintf("duration-%d", d)
		s, ok := secs[name]
		if !ok {
			t.Errorf("section %s missing", name)
			continue
		}
		if s.rc != 0 {
			t.Errorf("depth %d: exit %d: %s", d, s.rc, strings.TrimSpace(s.body))
			continue
		}
		res := find(t, parseReport(t, secs, name), probe.KindWriteBW)
		t.Logf("depth %d: %d writes in %s, %.1f MB/s", d, res.Messages, res.Elapsed.Round(time.Millisecond), res.BytesPerSecond/1e6)
		if res.Depth != d || res.Messages == 0 || res.Bytes != res.Messages*uint64(res.Size) {
			t.Errorf("depth %d: result %+v", d, res)
		}
		// After the duration the loop posts up to the next signaled write
		// (at most 100 more) and drains at most a queue's worth: about
		// messages x (1 - duration/elapsed) at the run's average rate,
		// which host load can make slow (6 MB/s: 10 s to drain 1023 x
		// 64 KiB), so the bound is in writes, not seconds.
		after := float64(res.Messages) * (1 - probeDuration.Seconds()/res.Elapsed.Seconds())
		if res.Elapsed < probeDuration || after > 1.5*float64(d+100) {
			t.Errorf("depth %d: %d writes in %s for a duration of %s: about %.0f after it", d, res.Messages, res.Elapsed, probeDuration, after)
		}
	}
}
