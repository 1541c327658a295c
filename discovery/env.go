// Package discovery is the environment discovery runs against (a host
// root and GPU backends, real or simulated) and the discoverer that runs
// the sources over it and assembles a snapshot.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/kmsg"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdma/dcb"
	"github.com/gpunode/gpunode/rdma/ethstats"
	"github.com/gpunode/gpunode/sim"
	"github.com/gpunode/gpunode/tuning"
)

// Env is what discovery runs against: a host root and GPU backends, real
// or simulated.
type Env struct {
	FS        hostfs.FS
	Backends  []gpu.Backend
	Simulated string
	// Traffic moves a simulated node's RDMA counters and GPU metrics
	// tables to the given time; nil on real hardware.
	Traffic interface{ Advance(time.Time) error }
	// PFC reads RoCE netdevs' PFC state: DCB over netlink on a host, the
	// node's table when simulated.
	PFC rdma.PFCReader
	// DriverStats reads RoCE netdevs' driver statistics (their PFC pause
	// frames): SIOCETHTOOL on a host, the node's files when simulated.
	DriverStats rdma.DriverStats
	// closeStats closes the ethtool socket; nil when simulated.
	closeStats func()
	// AMDSMIAbsent says why AMD SMI is not used when the amdgpu sysfs
	// backend serves AMD GPUs instead; "" otherwise.
	AMDSMIAbsent string
	// removeTree deletes a simulated node's generated tree; nil on a host.
	removeTree func() error
}

// failedStats answers every driver statistics read with the error that
// kept the ethtool socket from opening.
type failedStats struct{ err error }

func (f failedStats) DriverStats(string) (map[string]uint64, error) { return nil, f.err }

// Close closes every GPU backend and removes a simulated tree. It may be
// called more than once.
func (e *Env) Close() error {
	var errs []error
	for _, b := range e.Backends {
		if err := b.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close GPU backend %s: %w", b.Name(), err))
		}
	}
	e.Backends = nil
	if e.closeStats != nil {
		e.closeStats()
		e.closeStats = nil
	}
	if e.removeTree != nil {
		if err := e.removeTree(); err != nil {
			errs = append(errs, fmt.Errorf("remove simulated tree: %w", err))
		}
		e.removeTree = nil
	}
	return errors.Join(errs...)
}

// Open prepares the real host (simulate empty) or a simulated node, whose
// tree is generated in a temporary directory removed by Close.
func Open(cfg config.Config, simulate string) (*Env, error) {
	if simulate == "" {
		fsys, err := hostfs.New(cfg.HostRoot)
		if err != nil {
			return nil, err
		}
		env := &Env{FS: fsys, PFC: &dcb.Reader{}}
		if st, err := ethstats.Open(); err == nil {
			env.DriverStats, env.closeStats = st, st.Close
		} else {
			// Every RoCE port then says why it has no pause frames.
			env.DriverStats = failedStats{err}
		}
		if n := cfg.GPU.NVML; n.Enabled {
			env.Backends = append(env.Backends, nvml.NewLocating(nvml.Candidates(cfg.HostRoot, n.DriverRoot, n.LibraryPath, runtime.GOARCH)))
		}
		if cfg.GPU.AMD.Enabled {
			b, why := amdBackend(cfg.GPU.AMD, fsys, false)
			env.Backends, env.AMDSMIAbsent = append(env.Backends, b), why
		}
		return env, nil
	}
	base := simDir()
	removeStaleSimTrees(base)
	dir, err := os.MkdirTemp(base, fmt.Sprintf("%s%d-%s-", simPrefix, os.Getpid(), simulate))
	if err != nil {
		return nil, fmt.Errorf("simulate %s: %w", simulate, err)
	}
	cleanup := func() error { return os.RemoveAll(dir) }
	node, err := sim.Build(simulate, dir)
	if err != nil {
		return nil, errors.Join(err, cleanup())
	}
	fsys, err := hostfs.New(node.Root)
	if err != nil {
		return nil, errors.Join(err, cleanup())
	}
	env := &Env{FS: fsys, Simulated: simulate, removeTree: cleanup, PFC: node.PFC, DriverStats: sim.DriverStats{Root: node.Root}}
	traffic, err := sim.NewTraffic(node, time.Now())
	if err != nil {
		return nil, errors.Join(fmt.Errorf("simulate %s: %w", simulate, err), cleanup())
	}
	env.Traffic = traffic
	if cfg.GPU.NVML.Enabled {
		var lib gonvml.Interface // nil: the node has no NVIDIA library
		switch {
		case node.NVIDIA != nil:
			if lib, err = nvmlfake.New(*node.NVIDIA); err != nil {
				return nil, errors.Join(fmt.Errorf("simulate %s: %w", simulate, err), cleanup())
			}
		case node.NVMLMissing:
			// The real loader, pointed inside the tree where the library
			// is not: NVML fails as on a host without it, even on a
			// machine that has one.
			lib = gonvml.New(gonvml.WithLibraryPath(filepath.Join(node.Root, "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1")))
		}
		env.Backends = append(env.Backends, nvml.New(lib))
	}
	if cfg.GPU.AMD.Enabled {
		b, why := amdBackend(cfg.GPU.AMD, fsys, true)
		env.Backends, env.AMDSMIAbsent = append(env.Backends, b), why
	}
	return env, nil
}

// Tuner returns the tuner for this environment. On a real host it reaches
// systemd through the sockets under the root and compares network
// namespaces. A simulated node has neither: it counts as the host's
// namespace, has no systemd, and keeps its journal inside the simulated
// tree unless stateDir is another directory than the default.
func (e *Env) Tuner(stateDir string) *tuning.Tuner {
	t := &tuning.Tuner{FS: e.FS, Store: tuning.Store{Dir: stateDir}}
	// The PFC source discovery reads sets PFC too: DCB netlink on a
	// host, the simulated node's table in a simulation.
	if d, ok := e.PFC.(tuning.DCB); ok {
		t.DCB = d
	}
	if e.Simulated == "" {
		t.Systemd = tuning.DialSystemd(e.FS)
		return t
	}
	if stateDir == tuning.DefaultStateDir {
		t.Store.Dir = filepath.Join(e.FS.Root(), "var/lib/gpunode")
	}
	t.NetNS = func() tuning.NetNS {
		return tuning.NetNS{State: tuning.NetNSHost, Detail: "simulated node " + e.Simulated}
	}
	t.Namespace = func(string) tuning.NetNS {
		return tuning.NetNS{State: tuning.NetNSHost, Detail: "simulated node " + e.Simulated}
	}
	return t
}

// KernelLog returns the reader of this environment's kernel log
// (/dev/kmsg under the host root), journaling the last record read in
// stateDir. A simulated node keeps the journal in its tree, as the
// daemon's tuning journal is kept, unless stateDir is another directory
// than the default.
func (e *Env) KernelLog(stateDir string) *kmsg.Reader {
	if e.Simulated != "" && stateDir == tuning.DefaultStateDir {
		stateDir = filepath.Join(e.FS.Root(), "var/lib/gpunode")
	}
	return kmsg.NewReader(e.FS, stateDir)
}

// CommandTuner is the tuner for a `tune` command, which runs once. On a
// real host it is Tuner's. A simulated node's tree is generated anew for
// each command, so there the journal is kept in
// <stateDir>/simulated/<node> and the values it records as written are
// put into the fresh tree first: apply, verify and revert then work
// across commands as on a host, and a simulated journal never mixes with
// the host's. (The daemon's Tuner keeps a simulated node's journal in its
// tree: it lives as long as the process.)
func (e *Env) CommandTuner(ctx context.Context, stateDir string) (*tuning.Tuner, error) {
	t := e.Tuner(stateDir)
	if e.Simulated == "" {
		return t, nil
	}
	t.Store.Dir = SimulatedStateDir(stateDir, e.Simulated)
	t.Host = "simulated node " + e.Simulated
	if err := t.Replay(ctx); err != nil {
		return nil, fmt.Errorf("simulated tuning state in %s: %w", t.Store.Dir, err)
	}
	return t, nil
}

// SimulatedStateDir is where `tune` keeps a simulated node's journal.
func SimulatedStateDir(stateDir, node string) string {
	return filepath.Join(stateDir, "simulated", node)
}

// simDir is where simulated trees are generated: $TMPDIR when set, else
// /dev/shm when writable. A DGX tree is ~4,700 files; on tmpfs it builds in
// tens of milliseconds, on a disk-backed /tmp in seconds (writeback).
func simDir() string {
	if os.Getenv("TMPDIR") != "" {
		return ""
	}
	const shm = "/dev/shm"
	if unix.Access(shm, unix.W_OK) == nil {
		return shm
	}
	return ""
}

// simPrefix starts the name of every simulated tree: gpunode-sim-<pid>-<node>-<random>.
const simPrefix = "gpunode-sim-"

// removeStaleSimTrees deletes trees left by agents that were killed before
// they could clean up (SIGKILL, OOM); on tmpfs they would hold RAM.
func removeStaleSimTrees(base string) {
	if base == "" {
		base = os.TempDir()
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return // best effort: nothing to sweep
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), simPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 {
			continue
		}
		if unix.Kill(pid, 0) == unix.ESRCH {
			os.RemoveAll(filepath.Join(base, e.Name()))
		}
	}
}
