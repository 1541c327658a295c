package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FaultKind is what a port goes through at run time.
type FaultKind string

const (
	// FaultFlap: the link drops (state DOWN, phys_state Polling, its
	// netdev's carrier off) for the fault's duration and retrains, as a
	// link that lost its signal: link_downed counts one, and a RoCE
	// netdev's carrier_changes two (down and up), as the kernel counts.
	FaultFlap FaultKind = "flap"
	// FaultErrorBurst: a counter climbs at PerSecond for the duration.
	FaultErrorBurst FaultKind = "error-burst"
	// FaultPauseStorm: the RoCE port's netdev receives PFC pause frames on
	// Priority at PerSecond for the duration (its driver statistics'
	// rx_prio<N>_pause climbs), as when a peer's receive buffers stay full.
	FaultPauseStorm FaultKind = "pause-storm"
)

// PortFault is a fault a simulated RDMA port goes through at run time,
// At after its traffic started, for For; then the port is well again.
// Traffic.Advance applies it to the files the agent reads.
type PortFault struct {
	Device string
	Port   int
	Kind   FaultKind
	At     time.Duration
	For    time.Duration
	// Counter (a file under counters/ or hw_counters/) and PerSecond are
	// an error burst's; Priority and PerSecond a pause storm's.
	Counter   string
	Priority  int
	PerSecond float64
}

// WithRuntimeFaults adds faults the node goes through at run time (see
// PortFault) to those its catalog entry plants.
func WithRuntimeFaults(f ...PortFault) Option {
	return func(b *builder) error {
		for _, x := range f {
			if x.For <= 0 || x.At < 0 || x.Kind == FaultErrorBurst && (x.Counter == "" || x.PerSecond <= 0) ||
				x.Kind == FaultPauseStorm && (x.Priority < 0 || x.Priority > 7 || x.PerSecond <= 0) {
				return fmt.Errorf("runtime fault %+v: needs At >= 0, For > 0, for an error burst a counter and a rate, for a pause storm a priority 0-7 and a rate", x)
			}
		}
		b.runtime = append(b.runtime, f...)
		return nil
	}
}

// runtimeFault is a PortFault bound to its files.
type runtimeFault struct {
	PortFault
	dir     string // ports/<n>
	netdev  string // the RoCE port's netdev directory; "" on InfiniBand
	counter int    // index in Traffic.files: link_downed, or the burst's counter
	carrier int    // index in Traffic.files of carrier_changes; -1 without
	phase   int    // 0 before, 1 during, 2 after
	// stats is a pause storm's driver statistics file, pauseKey the
	// counter in it and pauseBase its value before the storm.
	stats, pauseKey string
	pauseBase       uint64
}

// addFaults binds the node's runtime faults to its files. The counters
// they raise move through Traffic.files (as extra on top of the traffic),
// so the traffic's rewrite never takes a raised counter back.
func (t *Traffic) addFaults(faults []PortFault) error {
	for _, f := range faults {
		dir := filepath.Join(t.root, "sys/class/infiniband", f.Device, "ports", strconv.Itoa(f.Port))
		rf := runtimeFault{PortFault: f, dir: dir, counter: -1, carrier: -1}
		if f.Kind == FaultPauseStorm {
			if err := t.bindPauseStorm(&rf); err != nil {
				return fmt.Errorf("runtime fault on %s port %d: %w", f.Device, f.Port, err)
			}
			t.faults = append(t.faults, rf)
			continue
		}
		name := "link_downed"
		if f.Kind == FaultErrorBurst {
			name = f.Counter
		}
		for _, sub := range []string{"counters", "hw_counters"} {
			if p := filepath.Join(dir, sub, name); fileExists(p) {
				i, err := t.fileIndex(p)
				if err != nil {
					return err
				}
				rf.counter = i
			}
		}
		if rf.counter < 0 {
			return fmt.Errorf("runtime fault on %s port %d: no counter %s", f.Device, f.Port, name)
		}
		// The RoCE port's netdev: the one its GIDs name.
		if nd, err := os.ReadFile(filepath.Join(dir, "gid_attrs/ndevs/0")); err == nil {
			netdev := filepath.Join(t.root, "sys/class/net", strings.TrimSpace(string(nd)))
			if p := filepath.Join(netdev, "carrier_changes"); fileExists(p) {
				i, err := t.fileIndex(p)
				if err != nil {
					return err
				}
				rf.netdev, rf.carrier = netdev, i
			}
		}
		t.faults = append(t.faults, rf)
	}
	return nil
}

// fileIndex is the index of path in t.files, added (not moving by itself)
// when the traffic does not move it.
func (t *Traffic) fileIndex(path string) (int, error) {
	for i, f := range t.files {
		if f.path == path {
			return i, nil
		}
	}
	v, err := readUint(path)
	if err != nil {
		return 0, err
	}
	t.files = append(t.files, trafficFile{path: path, base: v, last: v})
	return len(t.files) - 1, nil
}

// advanceFaults applies the runtime faults at elapsed seconds: it sets the
// counters' extra (Advance writes them next) and writes a flap's state on
// its transitions. Called with t.mu held.
func (t *Traffic) advanceFaults(elapsed float64) error {
	var errs []error
	for i := range t.faults {
		f := &t.faults[i]
		at, end := f.At.Seconds(), (f.At + f.For).Seconds()
		phase := 0
		switch {
		case elapsed >= end:
			phase = 2
		case elapsed >= at:
			phase = 1
		}
		switch f.Kind {
		case FaultErrorBurst:
			if phase > 0 {
				t.files[f.counter].extra = uint64(f.PerSecond * (min(elapsed, end) - at))
			}
		case FaultFlap:
			for ; f.phase < phase; f.phase++ {
				errs = append(errs, t.flap(f, f.phase == 0))
			}
		case FaultPauseStorm:
			if phase > 0 && f.phase < 2 {
				errs = append(errs, t.pause(f, f.pauseBase+uint64(f.PerSecond*(min(elapsed, end)-at))))
				f.phase = phase
			}
		}
	}
	return errors.Join(errs...)
}

// flap takes f's port down (down true) or back up, counting link_downed
// on the way down and a carrier change each way.
func (t *Traffic) flap(f *runtimeFault, down bool) error {
	state, phys, carrier, oper := "4: ACTIVE", "5: LinkUp", "1", "up"
	if down {
		state, phys, carrier, oper = "1: DOWN", "2: Polling", "0", "down"
		t.files[f.counter].extra++
	}
	errs := []error{t.writeBytes(filepath.Join(f.dir, "state"), []byte(state+"\n")),
		t.writeBytes(filepath.Join(f.dir, "phys_state"), []byte(phys+"\n"))}
	if f.netdev != "" {
		t.files[f.carrier].extra++
		errs = append(errs, t.writeBytes(filepath.Join(f.netdev, "carrier"), []byte(carrier+"\n")),
			t.writeBytes(filepath.Join(f.netdev, "operstate"), []byte(oper+"\n")))
	}
	return errors.Join(errs...)
}

// bindPauseStorm finds the statistics file of the port's netdev and the
// priority's pause counter in it: mlx5 lists one only for a priority with
// PFC on, and a storm on a priority without it cannot happen.
func (t *Traffic) bindPauseStorm(f *runtimeFault) error {
	nd, err := os.ReadFile(filepath.Join(f.dir, "gid_attrs/ndevs/0"))
	if err != nil {
		return fmt.Errorf("a pause storm needs a RoCE port: %w", err)
	}
	f.stats = filepath.Join(t.root, EthtoolStatsPath(strings.TrimSpace(string(nd))))
	f.pauseKey = fmt.Sprintf("rx_prio%d_pause", f.Priority)
	st, err := readStats(f.stats)
	if err != nil {
		return err
	}
	v, ok := st[f.pauseKey]
	if !ok {
		return fmt.Errorf("%s has no %s (PFC off on priority %d)", f.stats, f.pauseKey, f.Priority)
	}
	f.pauseBase = v
	return nil
}

// pause writes the storm's pause count into the statistics file.
func (t *Traffic) pause(f *runtimeFault, v uint64) error {
	st, err := readStats(f.stats)
	if err != nil {
		return err
	}
	st[f.pauseKey] = v
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return t.writeBytes(f.stats, append(b, '\n'))
}

func readStats(p string) (map[string]uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var st map[string]uint64
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return st, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func readUint(p string) (uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	return v, nil
}
