package verbs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/internal/cpuset"
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

func TestSetupErrorHint(t *testing.T) {
	for _, c := range []struct {
		stage string
		errno syscall.Errno
		hint  bool
	}{
		{"ibv_reg_mr", syscall.ENOMEM, true},
		{"ibv_reg_mr", syscall.EPERM, true},
		{"ibv_reg_mr", syscall.EINVAL, false},
		{"ibv_create_qp", syscall.ENOMEM, false},
	} {
		err := setupError("mlx5_0", c.stage, c.errno)
		if !errors.Is(err, c.errno) || strings.Contains(err.Error(), "CAP_IPC_LOCK") != c.hint {
			t.Errorf("%s %v: %v (hint wanted: %v)", c.stage, c.errno, err, c.hint)
		}
	}
}

func TestThreadCPUs(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "devices/system/node/node1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "devices/system/node/node1/cpulist"), []byte("4-7,12\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	onNode, err := nodeCPUs(dir, 1)
	if err != nil || onNode.String() != "4-7,12" {
		t.Fatalf("nodeCPUs = %s, %v", onNode, err)
	}
	if _, err := nodeCPUs(dir, 0); err == nil {
		t.Error("a node without a cpulist read fine")
	}
	// A container's cpuset limits the thread to the node's CPUs it has.
	if got, problem := threadCPUs(1, cpuset.Of(0, 1, 6, 7, 12, 13), onNode); got.String() != "6-7,12" || problem != "" {
		t.Errorf("threadCPUs = %s, %q", got, problem)
	}
	if got, problem := threadCPUs(1, cpuset.Of(0, 1), onNode); !got.IsEmpty() || !strings.Contains(problem, "outside this process's CPU set (0-1)") {
		t.Errorf("threadCPUs outside the cpuset = %s, %q", got, problem)
	}
}

func TestFromUnix(t *testing.T) {
	var s unix.CPUSet
	for _, c := range []int{0, 3, 64, 1023} {
		s.Set(c)
	}
	if got := fromUnix(&s).String(); got != "0,3,64,1023" {
		t.Errorf("fromUnix = %s", got)
	}
}
