package verbs

import (
	"errors"
	"testing"
	"time"
)

// This machine's kernel has no RDMA: the binding must say so instead of
// failing to start or crashing. Where the library is missing it says that.
// (The verbs paths themselves run on soft-RoCE in test/probe.)
func TestDevicesWithoutRDMA(t *testing.T) {
	names, err := Devices()
	switch {
	case errors.Is(err, ErrNoLibrary), errors.Is(err, ErrNoKernelSupport):
		t.Logf("unavailable, as expected here: %v", err)
		if _, oerr := OpenDevice("rxe0"); oerr == nil || (!errors.Is(oerr, ErrNoLibrary) && !errors.Is(oerr, ErrNoKernelSupport)) {
			t.Errorf("OpenDevice = %v, want the same reason", oerr)
		}
	case err != nil:
		t.Fatalf("Devices: unexpected error %v", err)
	default:
		t.Logf("devices: %v", names)
	}
}

func TestSummarize(t *testing.T) {
	if got := Summarize(nil); got != (Latency{}) {
		t.Errorf("empty: %+v", got)
	}
	var s []time.Duration
	for i := 1000; i >= 1; i-- { // unsorted input
		s = append(s, time.Duration(i)*time.Microsecond)
	}
	l := Summarize(s)
	if l.Samples != 1000 || l.Min != time.Microsecond || l.Max != 1000*time.Microsecond ||
		l.P50 != 501*time.Microsecond || l.P99 != 991*time.Microsecond || l.P999 != 1000*time.Microsecond {
		t.Errorf("summary %+v", l)
	}
	if s[0] != 1000*time.Microsecond {
		t.Error("input was reordered")
	}
	one := Summarize([]time.Duration{7})
	if one.Min != 7 || one.P50 != 7 || one.P999 != 7 || one.Max != 7 || one.Mean != 7 {
		t.Errorf("one sample: %+v", one)
	}
}

func TestMTUBytes(t *testing.T) {
	for mtu, want := range map[int]int{0: 0, 1: 256, 3: 1024, 5: 4096, 6: 0, -1: 0} {
		if got := MTUBytes(mtu); got != want {
			t.Errorf("MTUBytes(%d) = %d, want %d", mtu, got, want)
		}
	}
}
