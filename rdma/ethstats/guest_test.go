package ethstats

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/rdma"
)

// The counter reader with the real driver statistics on a real kernel: run
// by test/probe in the soft-RoCE VM with GPUNODE_RDMA_PORTS, a
// comma-separated list of "<rxe device> <its netdev> <carrier_changes it
// must report>" (the script flaps one of them). This machine's kernel has
// no RDMA.
func TestReadCountersOnGuest(t *testing.T) {
	spec := os.Getenv("GPUNODE_RDMA_PORTS")
	if spec == "" {
		t.Skip("needs RDMA devices (GPUNODE_RDMA_PORTS): test/probe runs it in a soft-RoCE VM")
	}
	fsys, err := hostfs.New("/")
	if err != nil {
		t.Fatal(err)
	}
	st, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ports, err := rdma.NewReader(fsys).WithDriverStats(st).ReadCounters(ctx)
	if err != nil {
		t.Fatalf("ReadCounters: %v", err)
	}
	for _, want := range strings.Split(spec, ",") {
		f := strings.Fields(want)
		if len(f) != 3 {
			t.Fatalf("GPUNODE_RDMA_PORTS entry %q", want)
		}
		changes, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ports, func(p rdma.PortCounters) bool { return p.Device == f[0] })
		if i < 0 {
			t.Fatalf("no port of %s in %+v", f[0], ports)
		}
		p := ports[i]
		var got any
		if p.CarrierChanges != nil {
			got = *p.CarrierChanges
		}
		t.Logf("%s port %d: state %s, phys %s, rate %g, netdev %s, carrier_changes %v, pause %+v, %d hw_counters",
			p.Device, p.Port, p.State, p.PhysState, p.RateGbps, p.Netdev, got, p.Pause, len(p.HWCounters))
		// The netdev is found on a real kernel; its driver (virtio-net,
		// veth) has statistics but no pause ones.
		if p.Netdev != f[1] || p.PhysState != "LinkUp" || p.RateGbps <= 0 || got != changes || p.Pause != nil || p.Errors != nil {
			t.Errorf("%s port: %+v, want netdev %s, LinkUp, a rate, %d carrier changes, no pause, no errors", f[0], p, f[1], changes)
		}
		stats, err := st.DriverStats(f[1])
		t.Logf("%s: %d driver statistics", f[1], len(stats))
		if err != nil || len(stats) == 0 {
			t.Errorf("%s driver statistics: %d, %v", f[1], len(stats), err)
		}
	}
}
