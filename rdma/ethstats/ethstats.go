// Package ethstats reads network interfaces' driver statistics, what
// `ethtool -S` prints, with github.com/safchain/ethtool (the library
// node_exporter's ethtool collector uses; tuning already uses it for rings):
// ETHTOOL_GDRVINFO, GSTRINGS and GSTATS over SIOCETHTOOL, which every
// kernel has, in the agent's network namespace.
package ethstats

import (
	"errors"
	"fmt"

	"github.com/safchain/ethtool"
	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/rdma"
)

// Reader is an rdma.DriverStats over one ethtool socket; the ioctls of
// several netdevs may run on it at once.
type Reader struct{ e *ethtool.Ethtool }

// Open opens the socket the ioctls go through.
func Open() (*Reader, error) {
	e, err := ethtool.NewEthtool()
	if err != nil {
		return nil, fmt.Errorf("ethtool socket: %w", err)
	}
	return &Reader{e}, nil
}

// DriverStats returns netdev's driver statistics by name. An interface
// that is not in this network namespace (ENODEV) or whose driver has no
// statistics (EOPNOTSUPP) gives an error wrapping rdma.ErrNoDriverStats.
func (r *Reader) DriverStats(netdev string) (map[string]uint64, error) {
	st, err := r.e.Stats(netdev)
	if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EOPNOTSUPP) {
		return nil, fmt.Errorf("%s: %w: %w", netdev, rdma.ErrNoDriverStats, err)
	}
	return st, err
}

// Close closes the socket.
func (r *Reader) Close() { r.e.Close() }
