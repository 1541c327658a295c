package sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/rdma"
)

func readAttr(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// The degraded DGX's mlx5_3 drops and retrains mid-run, counting one
// link_downed, and mlx5_4 takes a burst of symbol errors; both stay quiet
// afterwards.
func TestRuntimeFaultsOnTheDegradedDGX(t *testing.T) {
	n, err := Build("dgx-h100-ib-degraded", shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	tr, err := NewTraffic(n, start)
	if err != nil {
		t.Fatal(err)
	}
	port := filepath.Join(n.Root, "sys/class/infiniband/mlx5_3/ports/1")
	downed0, sym0 := readCounter(t, n.Root, "mlx5_3", "link_downed"), readCounter(t, n.Root, "mlx5_4", "symbol_error")
	for _, step := range []struct {
		at           time.Duration
		state, phys  string
		downed, syms uint64 // increases since the start
	}{
		{15 * time.Second, "4: ACTIVE", "5: LinkUp", 0, 0},
		{22 * time.Second, "1: DOWN", "2: Polling", 1, 100},
		{28 * time.Second, "1: DOWN", "2: Polling", 1, 400},
		{31 * time.Second, "4: ACTIVE", "5: LinkUp", 1, 500},
		{90 * time.Second, "4: ACTIVE", "5: LinkUp", 1, 500},
	} {
		if err := tr.Advance(start.Add(step.at)); err != nil {
			t.Fatal(err)
		}
		if s, p := readAttr(t, port+"/state"), readAttr(t, port+"/phys_state"); s != step.state || p != step.phys {
			t.Errorf("at %s: state %q phys_state %q, want %q %q", step.at, s, p, step.state, step.phys)
		}
		if d := readCounter(t, n.Root, "mlx5_3", "link_downed") - downed0; d != step.downed {
			t.Errorf("at %s: link_downed +%d, want +%d", step.at, d, step.downed)
		}
		// symbol_error also moves with the traffic, by under one in a minute.
		if d := readCounter(t, n.Root, "mlx5_4", "symbol_error") - sym0; d < step.syms || d > step.syms+1 {
			t.Errorf("at %s: symbol_error +%d, want +%d", step.at, d, step.syms)
		}
	}
}

// On RoCE a flap counts on the netdev too: carrier_changes goes up by one
// each way and the carrier drops meanwhile.
func TestRuntimeFlapOnRoCE(t *testing.T) {
	n, err := Build("h100-roce", shmDir(t), WithRuntimeFaults(PortFault{Device: "mlx5_0", Port: 1, Kind: FaultFlap, At: time.Second, For: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tr, err := NewTraffic(n, start)
	if err != nil {
		t.Fatal(err)
	}
	netdev := readAttr(t, filepath.Join(n.Root, "sys/class/infiniband/mlx5_0/ports/1/gid_attrs/ndevs/0"))
	dir := filepath.Join(n.Root, "sys/class/net", netdev)
	if c := readAttr(t, dir+"/carrier_changes"); c != "2" {
		t.Fatalf("carrier_changes at the start %q", c)
	}
	for _, step := range []struct {
		at               time.Duration
		carrier, changes string
	}{{1500 * time.Millisecond, "0", "3"}, {3 * time.Second, "1", "4"}} {
		if err := tr.Advance(start.Add(step.at)); err != nil {
			t.Fatal(err)
		}
		if c, ch := readAttr(t, dir+"/carrier"), readAttr(t, dir+"/carrier_changes"); c != step.carrier || ch != step.changes {
			t.Errorf("at %s: carrier %s, carrier_changes %s, want %s %s", step.at, c, ch, step.carrier, step.changes)
		}
	}
	if _, err := Build("h100-roce", shmDir(t), WithRuntimeFaults(PortFault{Device: "mlx5_0", Port: 1, Kind: FaultErrorBurst, For: time.Second})); err == nil {
		t.Error("an error burst without a counter was accepted")
	}
}

// A pause storm raises the priority's rx pause frames in the netdev's
// driver statistics, read the way the agent reads them, and stops
// climbing when it ends; a priority without PFC has no counter to storm.
func TestRuntimePauseStorm(t *testing.T) {
	storm := PortFault{Device: "mlx5_0", Port: 1, Kind: FaultPauseStorm, Priority: 3, PerSecond: 5000, At: time.Second, For: 2 * time.Second}
	n, err := Build("h100-roce", shmDir(t), WithRuntimeFaults(storm))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tr, err := NewTraffic(n, start)
	if err != nil {
		t.Fatal(err)
	}
	netdev := readAttr(t, filepath.Join(n.Root, "sys/class/infiniband/mlx5_0/ports/1/gid_attrs/ndevs/0"))
	rx := func() uint64 {
		st, err := DriverStats{Root: n.Root}.DriverStats(netdev)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range rdma.PauseFrames(st) {
			if p.Priority == 3 {
				return p.RX
			}
		}
		t.Fatalf("%s has no priority 3 pause counters", netdev)
		return 0
	}
	for _, step := range []struct {
		at   time.Duration
		want uint64
	}{{500 * time.Millisecond, 0}, {2 * time.Second, 5000}, {3 * time.Second, 10000}, {10 * time.Second, 10000}} {
		if err := tr.Advance(start.Add(step.at)); err != nil {
			t.Fatal(err)
		}
		if got := rx(); got != step.want {
			t.Errorf("at %s: rx pause %d, want %d", step.at, got, step.want)
		}
	}
	storm.Priority = 5
	n, err = Build("h100-roce", shmDir(t), WithRuntimeFaults(storm))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewTraffic(n, start); err == nil || !strings.Contains(err.Error(), "rx_prio5_pause") {
		t.Errorf("a pause storm on a priority without PFC: %v", err)
	}
}
