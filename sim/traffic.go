package sim

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Traffic makes a simulated node's RDMA port counters move, as if every
// active port carried a steady load: each counter file grows from the value
// the tree was built with at a fixed rate per second (scaled per port), so
// rate() over any window gives back that rate. The files are rewritten
// atomically (a temporary file renamed over them) so a concurrent reader,
// the agent or node_exporter, never sees half a number.
type Traffic struct {
	root  string
	start time.Time
	files []trafficFile
	// metrics are the amdgpu cards' gpu_metrics tables (amd.go).
	metrics []gpuMetricsFile
	// faults are the node's runtime faults (runtime.go).
	faults []runtimeFault

	mu sync.Mutex
}

type trafficFile struct {
	path      string // real path
	base      uint64
	perSecond float64
	last      uint64
	extra     uint64 // what runtime faults added
}

// Per-second growth at full scale. Data counters count 4-byte words: 2.5e9
// words/s is 10 GB/s. Packets assume 4 KiB messages.
var trafficRates = map[string]float64{
	"port_xmit_data":         2.5e9,
	"port_rcv_data":          2.25e9,
	"port_xmit_packets":      10e9 / 4096,
	"port_rcv_packets":       9e9 / 4096,
	"unicast_xmit_packets":   10e9 / 4096,
	"unicast_rcv_packets":    9e9 / 4096,
	"multicast_xmit_packets": 2,
	"multicast_rcv_packets":  3,
	"port_xmit_wait":         10_000,
	"symbol_error":           1.0 / 3600,
	"port_rcv_errors":        1.0 / 1800,
}

// roceRates are the congestion and retransmission counters of RoCE ports.
var roceRates = map[string]float64{
	"np_cnp_sent":                200,
	"rp_cnp_handled":             180,
	"np_ecn_marked_roce_packets": 250,
	"out_of_sequence":            0.5,
	"local_ack_timeout_err":      0.01,
	"roce_adp_retrans":           0.2,
	"rx_write_requests":          20_000,
	"rx_read_requests":           15_000,
}

// NewTraffic prepares traffic on a built node, starting at start.
func NewTraffic(n Node, start time.Time) (*Traffic, error) {
	t := &Traffic{root: n.Root, start: start}
	if err := t.addGPUMetrics(); err != nil {
		return nil, fmt.Errorf("simulated traffic: %w", err)
	}
	class := filepath.Join(n.Root, "sys/class/infiniband")
	devs, err := os.ReadDir(class)
	if errors.Is(err, os.ErrNotExist) && len(n.Runtime) == 0 {
		return t, nil // no RDMA: nothing moves
	}
	if err != nil {
		return nil, fmt.Errorf("simulated traffic: %w", err)
	}
	for _, dev := range devs {
		portsDir := filepath.Join(class, dev.Name(), "ports")
		ports, err := os.ReadDir(portsDir)
		if err != nil {
			return nil, fmt.Errorf("simulated traffic: %w", err)
		}
		for _, p := range ports {
			dir := filepath.Join(portsDir, p.Name())
			if err := t.addPort(dev.Name()+"/"+p.Name(), dir); err != nil {
				return nil, fmt.Errorf("simulated traffic: %w", err)
			}
		}
	}
	if err := t.addFaults(n.Runtime); err != nil {
		return nil, fmt.Errorf("simulated traffic: %w", err)
	}
	return t, nil
}

func (t *Traffic) addPort(name, dir string) error {
	state, err := os.ReadFile(filepath.Join(dir, "state"))
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(state)) != "4: ACTIVE" {
		return nil // a port that is down carries nothing
	}
	linkLayer, err := os.ReadFile(filepath.Join(dir, "link_layer"))
	if err != nil {
		return err
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	scale := 0.5 + float64(h.Sum32()%100)/100 // 0.5 to 1.5 of full scale
	for sub, rates := range map[string]map[string]float64{"counters": trafficRates, "hw_counters": roceRates} {
		if sub == "hw_counters" && strings.TrimSpace(string(linkLayer)) != "Ethernet" {
			continue // congestion notification is RoCE's
		}
		for name, rate := range rates {
			p := filepath.Join(dir, sub, name)
			b, err := os.ReadFile(p)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			t.files = append(t.files, trafficFile{path: p, base: v, perSecond: rate * scale, last: v})
		}
	}
	return nil
}

// Advance rewrites every counter to its value at now. Times before the
// start, or before an earlier Advance, change nothing: counters never go
// back.
func (t *Traffic) Advance(now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	elapsed := now.Sub(t.start).Seconds()
	if elapsed <= 0 {
		return nil
	}
	errs := []error{t.advanceFaults(elapsed)}
	for i := range t.files {
		f := &t.files[i]
		v := f.base + uint64(f.perSecond*elapsed) + f.extra
		if v <= f.last {
			continue
		}
		if err := t.write(f.path, v); err != nil {
			errs = append(errs, err)
			continue
		}
		f.last = v
	}
	errs = append(errs, t.advanceGPUMetrics(elapsed))
	return errors.Join(errs...)
}

// write replaces path's content with v, atomically. The temporary file is
// written outside the counter directories (readers such as node_exporter
// list those and would trip over it), on the same file system, and
// renamed into place.
func (t *Traffic) write(path string, v uint64) error {
	return t.writeBytes(path, []byte(strconv.FormatUint(v, 10)+"\n"))
}

// writeBytes replaces path's content with b, atomically.
func (t *Traffic) writeBytes(path string, b []byte) error {
	tmpDir := filepath.Join(t.root, trafficTmp)
	if err := os.MkdirAll(tmpDir, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(tmpDir, "counter")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// trafficTmp is where Advance writes before renaming, under the root.
const trafficTmp = ".sim-traffic"

// Rate is the per-second growth of a counter file of a port, for tests:
// device "mlx5_0", port 1, file "port_xmit_data". ok is false for a
// counter that does not move.
func (t *Traffic) Rate(device string, port int, file string) (float64, bool) {
	suffix := filepath.Join("sys/class/infiniband", device, "ports", strconv.Itoa(port))
	for _, f := range t.files {
		if filepath.Base(f.path) == file && strings.HasPrefix(f.path, filepath.Join(t.root, suffix)+"/") {
			return f.perSecond, true
		}
	}
	return 0, false
}
