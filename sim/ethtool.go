package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gpunode/gpunode/rdma"
)

// EthtoolStatsDir is where a simulated node keeps its netdevs' driver
// statistics (what `ethtool -S` prints on a host, an ioctl with no file of
// its own): <dir>/<netdev>.json, a JSON object of name to value. Only
// netdevs whose driver has statistics have a file. Faults rewrite them.
const EthtoolStatsDir = "/sim/ethtool"

// EthtoolStatsPath is the host path of netdev's statistics file.
func EthtoolStatsPath(netdev string) string { return EthtoolStatsDir + "/" + netdev + ".json" }

// DriverStats reads a simulated node's driver statistics files: the
// simulated side of rdma.DriverStats.
type DriverStats struct{ Root string }

var _ rdma.DriverStats = DriverStats{}

// DriverStats implements rdma.DriverStats; a netdev without a file has no
// statistics, as a driver without them.
func (s DriverStats) DriverStats(netdev string) (map[string]uint64, error) {
	b, err := os.ReadFile(filepath.Join(s.Root, EthtoolStatsPath(netdev)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", netdev, rdma.ErrNoDriverStats)
	}
	if err != nil {
		return nil, err
	}
	var st map[string]uint64
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", EthtoolStatsPath(netdev), err)
	}
	return st, nil
}

// ethtoolStats writes the driver statistics of an Ethernet mlx5 netdev
// with PFC on the priorities in mask: a few of mlx5e's port counters and,
// per priority with PFC on (mlx5 lists no others), the pause counters
// en_stats.c names rx_prio<N>_pause and so on, all zero: a healthy
// lossless fabric rarely pauses.
func (b *builder) ethtoolStats(netdev string, mask uint8) {
	h := func(k string) uint64 { return 1_000_000 + b.hash(netdev+"/"+k)%1_000_000_000 }
	st := map[string]uint64{
		"rx_packets_phy": h("rx"), "tx_packets_phy": h("tx"), "rx_bytes_phy": h("rx") * 4096, "tx_bytes_phy": h("tx") * 4096,
		"rx_discards_phy": 0, "rx_pause_ctrl_phy": 0, "tx_pause_ctrl_phy": 0,
		"tx_pause_storm_warning_events": 0, "tx_pause_storm_error_events": 0,
	}
	for prio := range 8 {
		if mask&(1<<prio) == 0 {
			continue
		}
		for _, s := range []string{"rx_prio%d_pause", "rx_prio%d_pause_duration", "rx_prio%d_pause_transition",
			"tx_prio%d_pause", "tx_prio%d_pause_duration"} {
			st[fmt.Sprintf(s, prio)] = 0
		}
	}
	out, err := json.MarshalIndent(st, "", "  ") // sorted keys: a deterministic tree
	if err != nil {
		b.t.fail(fmt.Errorf("ethtool statistics of %s: %w", netdev, err))
		return
	}
	b.t.file(EthtoolStatsPath(netdev), string(out)+"\n")
}
