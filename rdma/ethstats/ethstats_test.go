package ethstats

import (
	"errors"
	"os"
	"testing"

	"github.com/gpunode/gpunode/rdma"
)

// The real ioctls on this machine's interfaces: loopback has no driver
// statistics, so no pause frames and no error; an interface that is not
// here is "no statistics", not a failure. The soft-RoCE VM (test/probe)
// reads a virtio-net NIC's, which has statistics but no pause ones.
func TestDriverStatsHere(t *testing.T) {
	r, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st, err := r.DriverStats("lo")
	if err != nil && !errors.Is(err, rdma.ErrNoDriverStats) {
		t.Fatalf("lo: %v", err)
	}
	if p := rdma.PauseFrames(st); p != nil {
		t.Errorf("lo pause frames %+v", p)
	}
	if _, err := r.DriverStats("nosuchnetdev0"); !errors.Is(err, rdma.ErrNoDriverStats) {
		t.Errorf("missing interface: %v, want ErrNoDriverStats", err)
	}
	// Every interface here answers with statistics or with "none".
	names, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		st, err := r.DriverStats(n.Name())
		if err != nil && !errors.Is(err, rdma.ErrNoDriverStats) {
			t.Errorf("%s: %v", n.Name(), err)
		}
		t.Logf("%s: %d statistics, pause %+v", n.Name(), len(st), rdma.PauseFrames(st))
	}
}
