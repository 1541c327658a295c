package rdma

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/internal/source"
)

// DriverStats reads a network interface's driver statistics, the
// name/value pairs `ethtool -S` prints. The real one asks the kernel
// (SIOCETHTOOL, rdma/ethstats); simulated nodes bring their own. A call
// may hang in a driver: ReadCounters gives each netdev its own goroutine
// and deadline.
type DriverStats interface {
	DriverStats(netdev string) (map[string]uint64, error)
}

// ErrNoDriverStats is returned (wrapped) by a DriverStats for an interface
// without driver statistics, or not in the agent's network namespace: the
// port has no pause counts, which is no error.
var ErrNoDriverStats = errors.New("interface has no driver statistics here")

// maxPriority is the highest 802.1p priority.
const maxPriority = 7

// PauseFrames picks the PFC pause frame counts per priority out of driver
// statistics: mlx5's rx_prio<N>_pause and tx_prio<N>_pause (en_stats.c's
// per-priority port counters; their _duration and _transition siblings are
// not frame counts). Sorted by priority; empty where the driver has none.
func PauseFrames(stats map[string]uint64) []PriorityPause {
	var byPrio [maxPriority + 1]PriorityPause
	var seen [maxPriority + 1]bool
	for name, v := range stats {
		dir, rest, ok := strings.Cut(name, "_prio")
		if !ok || (dir != "rx" && dir != "tx") {
			continue
		}
		num, ok := strings.CutSuffix(rest, "_pause")
		if !ok || len(num) != 1 || num[0] < '0' || num[0] > '0'+maxPriority {
			continue
		}
		prio, _ := strconv.Atoi(num)
		seen[prio] = true
		byPrio[prio].Priority = prio
		if dir == "rx" {
			byPrio[prio].RX = v
		} else {
			byPrio[prio].TX = v
		}
	}
	var out []PriorityPause
	for prio, ok := range seen {
		if ok {
			out = append(out, byPrio[prio])
		}
	}
	return out
}

// WithDriverStats makes ReadCounters fill in the pause frames of each
// Ethernet port's netdev from s. Call it before the first read.
func (r *Reader) WithDriverStats(s DriverStats) *Reader {
	r.stats = s
	return r
}

type pauseResult struct {
	pause []PriorityPause
	err   error
}

// startPause starts reading the driver statistics of each port's netdev
// (nil entries for ports without one, or without a DriverStats), each in
// its own goroutine: a driver whose statistics hang holds up only its own
// netdev, which is not asked again until that call returns.
func (r *Reader) startPause(ports []PortCounters) []<-chan pauseResult {
	if r.stats == nil {
		return nil
	}
	out := make([]<-chan pauseResult, len(ports))
	for i, p := range ports {
		if p.Netdev == "" {
			continue
		}
		ch := make(chan pauseResult, 1)
		out[i] = ch
		busy := r.busy(r.pause, p.Netdev)
		select {
		case busy <- struct{}{}:
		default:
			ch <- pauseResult{err: fmt.Errorf("driver statistics of %s: %s (the driver hangs); not asked again until it does", p.Netdev, source.StillReading)}
			continue
		}
		go func() {
			stats, err := r.stats.DriverStats(p.Netdev)
			<-busy
			switch {
			case errors.Is(err, ErrNoDriverStats):
				ch <- pauseResult{}
			case err != nil:
				ch <- pauseResult{err: fmt.Errorf("driver statistics of %s: %w", p.Netdev, err)}
			default:
				ch <- pauseResult{pause: PauseFrames(stats)}
			}
		}()
	}
	return out
}

// addPause waits for the port's driver statistics until ctx is done.
func (p *PortCounters) addPause(ctx context.Context, ch <-chan pauseResult) {
	var res pauseResult
	select {
	case res = <-ch:
	case <-ctx.Done():
		select {
		case res = <-ch:
		default:
			res.err = fmt.Errorf("driver statistics of %s: timed out: %v", p.Netdev, context.Cause(ctx))
		}
	}
	p.Pause = res.pause
	if res.err != nil {
		p.Errors = append(p.Errors, res.err.Error())
	}
	slices.SortFunc(p.Pause, func(a, b PriorityPause) int { return a.Priority - b.Priority })
}
