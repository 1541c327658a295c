package rdma_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/internal/testsupport"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/sim"
)

func dgx(t *testing.T) hostfs.FS {
	t.Helper()
	// Building in memory where there is a /dev/shm: a whole DGX tree is
	// many small files, slow on some test machines' disks.
	dir, err := os.MkdirTemp("/dev/shm", "gpunode-test-")
	if err != nil {
		dir = t.TempDir()
	} else {
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	n, err := sim.Build("dgx-h100-ib", dir)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := hostfs.New(n.Root)
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

func within(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// hang makes the host file p a FIFO nobody writes and returns what
// releases it with the file's content.
func hang(t *testing.T, fsys hostfs.FS, p string) func() {
	t.Helper()
	content, err := os.ReadFile(fsys.Path(p))
	if err != nil {
		t.Fatal(err)
	}
	release := testsupport.Hang(t, fsys.Path(p))
	return func() { release(string(content)) }
}

// rounds runs round n times and fails when goroutines pile up: a hung
// device holds one reading goroutine, however often it is asked for.
func rounds(t *testing.T, n int, round func(i int)) {
	t.Helper()
	round(0)
	before := runtime.NumGoroutine()
	for i := 1; i < n; i++ {
		round(i)
	}
	if after := runtime.NumGoroutine(); after > before+1 {
		t.Errorf("%d goroutines after %d rounds with a hung device, %d after the first", after, n, before)
	}
}

// A hung port rate hides only its device: it is reported from its last
// complete reading with the reason, the other devices are read in full,
// and it is read again once the file answers.
func TestDiscoverHungDevice(t *testing.T) {
	fsys := dgx(t)
	r := rdma.NewReader(fsys)
	ctx, cancel := within(10 * time.Second)
	good, err := r.Discover(ctx)
	cancel()
	if err != nil || len(good) != 8 {
		t.Fatalf("first discovery: %d devices, %v", len(good), err)
	}
	release := hang(t, fsys, "/sys/class/infiniband/mlx5_3/ports/1/rate")
	rounds(t, 3, func(i int) {
		want := map[bool]string{true: "timed out", false: source.StillReading}[i == 0]
		ctx, cancel := within(time.Second)
		defer cancel()
		start := time.Now()
		devs, err := r.Discover(ctx)
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("round %d took %s, with 1s to go", i, el)
		}
		if err == nil || !strings.Contains(err.Error(), "mlx5_3: "+want) {
			t.Errorf("round %d: err %v, want mlx5_3 %q", i, err, want)
		}
		if len(devs) != 8 {
			t.Fatalf("round %d: %d devices", i, len(devs))
		}
		for k, d := range devs {
			if k == 3 {
				if len(d.Errors) != 1 || !strings.HasPrefix(d.Errors[0], want) || d.Ports[0].RateGbps != 400 || d.PCIAddress != good[3].PCIAddress {
					t.Errorf("round %d: hung device, want its last reading and %q: %+v", i, want, d)
				}
				continue
			}
			if d.Errors != nil || d.Ports[0].Errors != nil || d.Ports[0].RateGbps != 400 {
				t.Errorf("round %d: %s: %+v", i, d.Name, d)
			}
		}
	})
	release()
	testsupport.Eventually(t, "mlx5_3 read again", func() error {
		ctx, cancel := within(10 * time.Second)
		defer cancel()
		devs, err := r.Discover(ctx)
		if err != nil || devs[3].Errors != nil {
			return fmt.Errorf("%v, %+v", err, devs[3])
		}
		return nil
	})
}

// A device hung on its first read is listed by name with the reason.
func TestDiscoverHungFromTheStart(t *testing.T) {
	fsys := dgx(t)
	hang(t, fsys, "/sys/class/infiniband/mlx5_0/fw_ver")
	ctx, cancel := within(time.Second)
	defer cancel()
	devs, err := rdma.Discover(ctx, fsys)
	if len(devs) != 8 || devs[0].Name != "mlx5_0" || devs[0].NUMANode != -1 || len(devs[0].Errors) != 1 || devs[1].Errors != nil {
		t.Fatalf("devices %+v", devs[:2])
	}
	if !strings.Contains(err.Error(), "mlx5_0: timed out") {
		t.Errorf("err %v", err)
	}
}

// A hung uverbs ibdev costs the verbs device of that entry only.
func TestDiscoverHungVerbsEntry(t *testing.T) {
	fsys := dgx(t)
	names, err := fsys.Names("/sys/class/infiniband_verbs")
	if err != nil {
		t.Fatal(err)
	}
	hang(t, fsys, "/sys/class/infiniband_verbs/uverbs0/ibdev")
	ctx, cancel := within(time.Second)
	defer cancel()
	devs, err := rdma.Discover(ctx, fsys)
	if err == nil || !strings.Contains(err.Error(), "/sys/class/infiniband_verbs/uverbs0/ibdev: timed out") {
		t.Errorf("err %v", err)
	}
	verbs := 0
	for _, d := range devs {
		if d.Verbs != "" {
			verbs++
		}
	}
	if len(devs) != 8 || verbs != len(names)-2 { // abi_version and the hung entry
		t.Errorf("%d devices, %d with verbs of %d entries", len(devs), verbs, len(names))
	}
}

// A hung counter file hides only its device's ports, which are listed with
// the reason and no counters; the device is read again once it answers.
func TestReadCountersHungDevice(t *testing.T) {
	fsys := dgx(t)
	r := rdma.NewReader(fsys)
	release := hang(t, fsys, "/sys/class/infiniband/mlx5_5/ports/1/hw_counters/np_cnp_sent")
	rounds(t, 3, func(i int) {
		want := map[bool]string{true: "timed out", false: source.StillReading}[i == 0]
		ctx, cancel := within(time.Second)
		defer cancel()
		ports, err := r.ReadCounters(ctx)
		if err == nil || !strings.Contains(err.Error(), "mlx5_5 port 1: "+want) {
			t.Errorf("round %d: err %v", i, err)
		}
		if len(ports) != 8 {
			t.Fatalf("round %d: %d ports", i, len(ports))
		}
		for k, p := range ports {
			if k == 5 {
				if p.Device != "mlx5_5" || p.Counters != nil || p.State != "" || len(p.Errors) != 1 || !strings.HasPrefix(p.Errors[0], want) {
					t.Errorf("round %d: hung port %+v", i, p)
				}
			} else if p.Errors != nil || len(p.Counters) == 0 || !p.Active() {
				t.Errorf("round %d: %s port %d: %+v", i, p.Device, p.Port, p)
			}
		}
	})
	release()
	testsupport.Eventually(t, "mlx5_5 read again", func() error {
		ctx, cancel := within(10 * time.Second)
		defer cancel()
		ports, err := r.ReadCounters(ctx)
		if err != nil || len(ports[5].Counters) == 0 {
			return fmt.Errorf("%v, %+v", err, ports[5])
		}
		return nil
	})
}
