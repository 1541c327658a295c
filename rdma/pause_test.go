package rdma

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// mlx5Stats is part of `ethtool -S` of an mlx5 netdev with PFC on
// priority 3: the per-priority names are en_stats.c's format strings
// (rx_prio%d_pause and its _duration and _transition siblings); the
// values are made up.
var mlx5Stats = map[string]uint64{
	"rx_packets": 5, "rx_prio3_bytes": 84719203847362, "rx_prio3_packets": 20693166921,
	"rx_prio3_pause": 41927, "rx_prio3_pause_duration": 8134, "rx_prio3_pause_transition": 39218,
	"tx_prio3_pause": 1290418, "tx_prio3_pause_duration": 2914772,
	"rx_prio0_pause": 0, "tx_prio0_pause": 7, "rx_pause_ctrl_phy": 41927, "tx_pause_ctrl_phy": 1290418,
	"rx_prio8_pause": 1, "rx_prio10_pause": 1, "xx_prio1_pause": 1, "rx_global_pause": 3,
}

func TestPauseFrames(t *testing.T) {
	got := PauseFrames(mlx5Stats)
	want := []PriorityPause{{Priority: 0, RX: 0, TX: 7}, {Priority: 3, RX: 41927, TX: 1290418}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PauseFrames = %+v, want %+v", got, want)
	}
	// virtio-net's statistics (what the soft-RoCE VM shows) have no pause.
	if got := PauseFrames(map[string]uint64{"rx_queue_0_packets": 9, "tx_queue_0_kicks": 3}); got != nil {
		t.Errorf("virtio-net: %+v", got)
	}
}

// fakeStats answers per netdev; a netdev in hang blocks until released.
type fakeStats struct {
	mu    sync.Mutex
	calls map[string]int
	hang  map[string]chan struct{}
	stats map[string]map[string]uint64
	errs  map[string]error
}

func (s *fakeStats) DriverStats(netdev string) (map[string]uint64, error) {
	s.mu.Lock()
	s.calls[netdev]++
	h := s.hang[netdev]
	s.mu.Unlock()
	if h != nil {
		<-h
	}
	return s.stats[netdev], s.errs[netdev]
}

// roceCounterPort writes an Ethernet port of dev whose GID 0 is bound to
// netdev, with carrier_changes on the netdev.
func (f *fixture) roceCounterPort(dev, netdev, carrierChanges string) {
	f.counterPort(dev, "1", "4: ACTIVE", map[string]string{"port_rcv_data": "1"}, nil)
	p := "/sys/class/infiniband/" + dev + "/ports/1"
	f.files(p, map[string]string{"phys_state": "5: LinkUp", "link_layer": "Ethernet", "rate": "400 Gb/sec (4X NDR)"})
	f.file(p+"/gid_attrs/ndevs/0", netdev+"\n")
	f.netdev(netdev, "", 9000, 0)
	if carrierChanges != "" {
		f.file("/sys/class/net/"+netdev+"/carrier_changes", carrierChanges+"\n")
	}
}

// Each RoCE netdev's pause frames are read on their own: one whose driver
// hangs loses its own pause counts for the round (an error on its port),
// never another's or its port's sysfs counters, and is not asked again
// while the call hangs. An interface without statistics is no error.
func TestReadCountersPause(t *testing.T) {
	f := newFixture(t)
	f.roceCounterPort("mlx5_0", "eth0", "2")
	f.roceCounterPort("mlx5_1", "eth1", "2")
	f.roceCounterPort("mlx5_2", "eth2", "")
	f.roceCounterPort("mlx5_3", "eth3", "")
	release := make(chan struct{})
	st := &fakeStats{calls: map[string]int{}, hang: map[string]chan struct{}{"eth1": release},
		stats: map[string]map[string]uint64{"eth0": mlx5Stats, "eth1": mlx5Stats},
		errs:  map[string]error{"eth2": fmt.Errorf("eth2: %w", ErrNoDriverStats), "eth3": errors.New("operation not permitted")}}
	r := NewReader(f.fs()).WithDriverStats(st)
	round := func() ([]PortCounters, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		return r.ReadCounters(ctx)
	}
	for i := range 2 {
		got, err := round()
		if len(got) != 4 {
			t.Fatalf("round %d: %+v", i, got)
		}
		if want := PauseFrames(mlx5Stats); !reflect.DeepEqual(got[0].Pause, want) || got[0].Errors != nil {
			t.Errorf("round %d: eth0 pause %+v, errors %q", i, got[0].Pause, got[0].Errors)
		}
		wantHang := "timed out"
		if i == 1 {
			wantHang = "previous read has not returned"
		}
		if p := got[1]; p.Pause != nil || len(p.Errors) != 1 || !strings.Contains(p.Errors[0], "driver statistics of eth1: ") ||
			!strings.Contains(p.Errors[0], wantHang) || len(p.Counters) != 1 {
			t.Errorf("round %d: hung eth1: %+v", i, p)
		}
		if p := got[2]; p.Pause != nil || p.Errors != nil {
			t.Errorf("round %d: eth2 without statistics: %+v", i, p)
		}
		if p := got[3]; len(p.Errors) != 1 || p.Errors[0] != "driver statistics of eth3: operation not permitted" {
			t.Errorf("round %d: eth3: %+v", i, p)
		}
		if err == nil || !strings.Contains(err.Error(), "mlx5_1 port 1: driver statistics of eth1") {
			t.Errorf("round %d: err = %v", i, err)
		}
	}
	st.mu.Lock()
	if st.calls["eth1"] != 1 || st.calls["eth0"] != 2 {
		t.Errorf("calls %v: the hung netdev must be asked once, the others every round", st.calls)
	}
	st.mu.Unlock()
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := round()
		if got[1].Pause != nil || time.Now().After(deadline) {
			if len(got[1].Pause) != 2 || got[1].Errors != nil {
				t.Errorf("after the driver returned: %+v", got[1])
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Whatever names a driver reports, only exact rx_prio<N>_pause and
// tx_prio<N>_pause for N in 0-7 become pause counts.
func FuzzPauseFrames(f *testing.F) {
	for _, s := range []string{"rx_prio3_pause", "tx_prio7_pause", "rx_prio8_pause", "rx_prio3_pause_duration", "rx_prio_pause",
		"rx_prio03_pause", "rx_prio-1_pause", "tx_prio3_pausex", "prio3_pause", "rx_prio３_pause"} {
		f.Add(s, uint64(5))
	}
	f.Fuzz(func(t *testing.T, name string, v uint64) {
		got := PauseFrames(map[string]uint64{name: v})
		want := len(name) == len("rx_prio0_pause") && (strings.HasPrefix(name, "rx_prio") || strings.HasPrefix(name, "tx_prio")) &&
			strings.HasSuffix(name, "_pause") && name[7] >= '0' && name[7] <= '7'
		if (got != nil) != want {
			t.Fatalf("%q: %+v", name, got)
		}
		if want && (len(got) != 1 || got[0].Priority != int(name[7]-'0') || got[0].RX+got[0].TX != v) {
			t.Fatalf("%q = %d: %+v", name, v, got)
		}
	})
}
