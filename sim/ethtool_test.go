package sim

import (
	"errors"
	"reflect"
	"testing"

	"github.com/gpunode/gpunode/rdma"
)

// Each Ethernet mlx5 netdev of a RoCE node has driver statistics with
// zero pause frames on its PFC priorities (3 on the GPU-side ports), and
// none where PFC is off (the lossy node's GPU-side ports, the frontend
// ones); IPoIB netdevs and others have no statistics file.
func TestDriverStats(t *testing.T) {
	for _, tc := range []struct {
		node               string
		withPause, noPause int
	}{
		{"h100-roce", 8, 2},
		{"h100-roce-lossy", 0, 10},
		{"dgx-h100-ib", 0, 0}, // InfiniBand only: no Ethernet mlx5 netdev
	} {
		n, err := Build(tc.node, shmDir(t))
		if err != nil {
			t.Fatal(err)
		}
		st := DriverStats{Root: n.Root}
		withPause, without := 0, 0
		for netdev := range n.PFC {
			stats, err := st.DriverStats(netdev)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.node, netdev, err)
			}
			if stats["rx_packets_phy"] == 0 {
				t.Errorf("%s %s: no traffic statistics: %v", tc.node, netdev, stats)
			}
			got := rdma.PauseFrames(stats)
			switch want := []rdma.PriorityPause{{Priority: 3}}; {
			case n.PFC[netdev] == 1<<3 && reflect.DeepEqual(got, want):
				withPause++
			case n.PFC[netdev] == 0 && got == nil:
				without++
			default:
				t.Errorf("%s %s (PFC mask %#x): pause %+v", tc.node, netdev, n.PFC[netdev], got)
			}
		}
		if withPause != tc.withPause || without != tc.noPause {
			t.Errorf("%s: %d netdevs with pause, %d without; want %d and %d", tc.node, withPause, without, tc.withPause, tc.noPause)
		}
		if _, err := st.DriverStats("ibp24s0"); !errors.Is(err, rdma.ErrNoDriverStats) {
			t.Errorf("%s: a netdev without statistics: %v", tc.node, err)
		}
	}
}
