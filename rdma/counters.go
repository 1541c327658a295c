package rdma

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"

	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
)

// CounterNames are the files under ports/<n>/counters that ReadCounters
// reads: the InfiniBand PMA port counters the kernel exposes for every
// device (extended 64-bit ones where the HCA has them, as mlx5 does).
// port_xmit_data and port_rcv_data count 4-byte words. port_rcv_discards
// is not in the upstream kernel's list (drivers/infiniband/core/sysfs.c)
// but prometheus/procfs reads it: read where a driver has it.
var CounterNames = []string{
	"VL15_dropped",
	"excessive_buffer_overrun_errors",
	"link_downed",
	"link_error_recovery",
	"local_link_integrity_errors",
	"multicast_rcv_packets",
	"multicast_xmit_packets",
	"port_rcv_constraint_errors",
	"port_rcv_data",
	"port_rcv_discards",
	"port_rcv_errors",
	"port_rcv_packets",
	"port_rcv_remote_physical_errors",
	"port_rcv_switch_relay_errors",
	"port_xmit_constraint_errors",
	"port_xmit_data",
	"port_xmit_discards",
	"port_xmit_packets",
	"port_xmit_wait",
	"symbol_error",
	"unicast_rcv_packets",
	"unicast_xmit_packets",
}

// HWCounterNames are the driver-specific files under ports/<n>/hw_counters
// that ReadCounters reads where the driver has them: mlx5's queue counters
// (RDMA requests received, out of buffer, completion and remote errors),
// its congestion control and RoCE retransmission counters, as
// drivers/infiniband/hw/mlx5/counters.c names them.
var HWCounterNames = []string{
	"duplicate_request",
	"implied_nak_seq_err",
	"local_ack_timeout_err",
	"np_cnp_sent",
	"np_ecn_marked_roce_packets",
	"out_of_buffer",
	"out_of_sequence",
	"packet_seq_err",
	"req_cqe_error",
	"req_cqe_flush_error",
	"req_remote_access_errors",
	"req_remote_invalid_request",
	"req_rnr_retries_exceeded",
	"req_transport_retries_exceeded",
	"resp_cqe_error",
	"resp_cqe_flush_error",
	"resp_local_length_error",
	"resp_remote_access_errors",
	"rnr_nak_retry_err",
	"roce_adp_retrans",
	"roce_adp_retrans_to",
	"roce_slow_restart",
	"roce_slow_restart_cnps",
	"roce_slow_restart_trans",
	"rp_cnp_handled",
	"rp_cnp_ignored",
	"rx_atomic_requests",
	"rx_dct_connect",
	"rx_icrc_encapsulated",
	"rx_read_requests",
	"rx_write_requests",
}

// ExtCounterNames are the files under ports/<n>/counters_ext that
// ReadCounters reads where they exist: the 64-bit data and packet counters
// kernels before 4.5 (and mlx4 on them) kept apart from the 32-bit PMA
// ones in counters/, which saturate within seconds at today's rates.
// port_xmit_data_64 and port_rcv_data_64 count 4-byte words too.
var ExtCounterNames = []string{
	"port_multicast_rcv_packets",
	"port_multicast_xmit_packets",
	"port_rcv_data_64",
	"port_rcv_packets_64",
	"port_unicast_rcv_packets",
	"port_unicast_xmit_packets",
	"port_xmit_data_64",
	"port_xmit_packets_64",
}

// PortCounters is one port's counters at one moment.
type PortCounters struct {
	Device string `json:"device"`
	Port   int    `json:"port"`
	// Board is the adapter's board_id ("MT_0000000838"; "" where the
	// driver has none): ports on the same board model are peers whose
	// rates can be compared, unlike a storage NIC beside compute NICs.
	Board string `json:"board,omitempty"`
	// State is the port's logical state now ("ACTIVE"); empty if unreadable.
	State string `json:"state"`
	// Counters holds the CounterNames the port has, in that order;
	// HWCounters the HWCounterNames it has.
	Counters   []Counter `json:"counters"`
	HWCounters []Counter `json:"hw_counters,omitempty"`
	// ExtCounters holds the ExtCounterNames the port has (counters_ext).
	ExtCounters []Counter `json:"counters_ext,omitempty"`
	// PhysState is the port's physical state without its number
	// ("LinkUp", "Polling", "Disabled"), RateGbps its signalling rate now
	// (0 when unreadable): a port can renegotiate at run time.
	PhysState string  `json:"phys_state,omitempty"`
	RateGbps  float64 `json:"rate_gbps,omitempty"`
	// Netdev is a RoCE port's Ethernet netdev ("" on InfiniBand), and
	// CarrierChanges its carrier_changes count (nil when unreadable): a
	// RoCE link that flaps counts there, not in link_downed.
	Netdev         string  `json:"netdev,omitempty"`
	CarrierChanges *uint64 `json:"carrier_changes,omitempty"`
	// Pause are the PFC pause frames per priority the netdev's driver
	// reports (mlx5 ethtool -S rx_prio<N>_pause / tx_prio<N>_pause), sorted
	// by priority; empty where the driver has no such statistics.
	Pause []PriorityPause `json:"pause,omitempty"`
	// Errors lists files that exist but could not be read or parsed.
	Errors []string `json:"errors,omitempty"`
}

// PriorityPause is one priority's pause frames received and sent.
type PriorityPause struct {
	Priority int    `json:"priority"`
	RX       uint64 `json:"rx"`
	TX       uint64 `json:"tx"`
}

// Counter is one counter file's value, as the kernel prints it (words for
// the two data counters).
type Counter struct {
	Name  string `json:"name"`
	Value uint64 `json:"value"`
}

// Active reports whether the port is usable for traffic.
func (p PortCounters) Active() bool { return p.State == "ACTIVE" }

// ReadCounters reads the counters of every port of every RDMA device with
// a Reader of its own (see Reader.ReadCounters). A caller that reads again
// and again keeps a Reader instead, so a device whose read hangs is not
// read again on top of it.
func ReadCounters(ctx context.Context, fsys hostfs.FS) ([]PortCounters, error) {
	return NewReader(fsys).ReadCounters(ctx)
}

// ReadCounters reads the counters of every port of every RDMA device,
// sorted by device (naturally: mlx5_10 after mlx5_9) and port. A counter
// file that is missing is left out: drivers differ in what they have. A
// file that cannot be read or parsed, or that reads "N/A (no PMA)", is
// named on the port's Errors and in the returned error; the port's other
// counters are still returned.
//
// Each device's files are read in their own goroutine, under four fifths
// of the time ctx has left (source.Each, source.DeviceDeadline). The ports
// of a device whose read has not returned by then are returned without
// counters, with the reason on their Errors, while the other devices are
// read in full; the device is not read again until that read returns.
//
// With a DriverStats (WithDriverStats), each Ethernet port's netdev's
// driver statistics are read for its pause frames as soon as its device's
// files are in, each netdev in its own goroutine under the same deadline:
// a netdev whose call has not returned by then loses only its pause
// frames, the reason on its port, and is not asked again until it returns.
//
// With no RDMA device it returns an error for which
// errors.Is(err, source.ErrAbsent) holds.
func (r *Reader) ReadCounters(ctx context.Context) ([]PortCounters, error) {
	root := r.fs.Path(classDir)
	devices, err := readNames(root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, source.NewAbsent("no RDMA devices: %s does not exist", classDir)
	case err != nil:
		return nil, fmt.Errorf("list %s: %w", classDir, cause(err))
	case len(devices) == 0:
		return nil, source.NewAbsent("no RDMA devices: %s is empty", classDir)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ctx, cancel := source.DeviceDeadline(ctx)
	defer cancel()
	slices.SortStableFunc(devices, compareNames)
	var (
		errs  []error
		reads []source.Device[deviceRead]
	)
	for _, dev := range devices {
		// Listing a sysfs directory does not call into the driver, so it
		// is done here; reading the files, which does, is the device's.
		portsDir := path.Join(root, dev, "ports")
		ports, err := readNames(portsDir)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: list ports: %w", dev, cause(err)))
			continue
		}
		nums := make([]int, 0, len(ports))
		for _, p := range ports {
			n, err := parseInt(p, 1, maxIndex)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: port %q: %w", dev, p, err))
				continue
			}
			nums = append(nums, n)
		}
		slices.Sort(nums)
		reads = append(reads, source.Device[deviceRead]{Busy: r.countersBusy(dev),
			Read: func() deviceRead {
				ports := readPorts(r.fs, dev, nums)
				return deviceRead{ports: ports, pause: r.startPause(ports)}
			},
			Down: func(why string) deviceRead {
				out := make([]PortCounters, len(nums))
				for i, n := range nums {
					out[i] = PortCounters{Device: dev, Port: n, Errors: []string{why}}
				}
				return deviceRead{ports: out}
			}})
	}
	r.forgetBusy(r.counters, devices)
	var (
		out     []PortCounters
		netdevs []string
	)
	for _, d := range source.Each(ctx, reads) {
		for i := range d.ports {
			pc := &d.ports[i]
			netdevs = append(netdevs, pc.Netdev)
			if i < len(d.pause) && d.pause[i] != nil {
				pc.addPause(ctx, d.pause[i])
			}
			for _, e := range pc.Errors {
				errs = append(errs, fmt.Errorf("%s port %d: %s", pc.Device, pc.Port, e))
			}
			out = append(out, *pc)
		}
	}
	r.forgetBusy(r.pause, netdevs)
	return out, errors.Join(errs...)
}

// deviceRead is one device's ports and, per port, the driver statistics
// read of its netdev that the device's read started (nil where none).
type deviceRead struct {
	ports []PortCounters
	pause []<-chan pauseResult
}

// readPorts reads the state, facts and counters of the numbered ports of
// dev.
func readPorts(fsys hostfs.FS, dev string, nums []int) []PortCounters {
	var buf [64]byte
	devDir := path.Join(classDir, dev)
	portsDir := fsys.Path(devDir + "/ports")
	var links *deviceLinks // read once, for the first port that needs them
	var boardErr string
	var boardBuf [256]byte // free text: hfi1 names the whole adapter there
	board, err := readAttr(fsys.Path(devDir+"/board_id"), boardBuf[:])
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		boardErr = fmt.Sprintf("read board_id: %v", cause(err))
	}
	out := make([]PortCounters, 0, len(nums))
	for _, n := range nums {
		pc := PortCounters{Device: dev, Port: n, Board: board}
		if boardErr != "" {
			pc.Errors = append(pc.Errors, boardErr)
		}
		dir := path.Join(portsDir, strconv.Itoa(n))
		for _, a := range []struct {
			file  string
			parse func(string) error
		}{
			{"state", func(s string) (err error) { pc.State, _, err = parseState(s); return err }},
			{"phys_state", func(s string) (err error) { pc.PhysState, _, err = parseState(s); return err }},
			{"rate", func(s string) (err error) { pc.RateGbps, err = parseRate(s); return err }},
		} {
			s, err := readAttr(dir+"/"+a.file, buf[:])
			switch {
			case errors.Is(err, fs.ErrNotExist):
			case err != nil:
				pc.Errors = append(pc.Errors, fmt.Sprintf("read %s: %v", a.file, cause(err)))
			default:
				if err := a.parse(s); err != nil {
					pc.Errors = append(pc.Errors, fmt.Sprintf("parse %s: %v", a.file, err))
				}
			}
		}
		// Only an Ethernet port (RoCE, iWARP) has a netdev of its own whose
		// carrier flaps with the link; IPoIB's follows the port state.
		if ll, err := readAttr(dir+"/link_layer", buf[:]); err == nil && ll == "Ethernet" {
			if links == nil {
				links = readDeviceLinks(fsys, devDir)
			}
			pc.Netdev = portNetdev(fsys, devDir, n, *links, &pc.Errors)
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			pc.Errors = append(pc.Errors, fmt.Sprintf("read link_layer: %v", cause(err)))
		}
		if pc.Netdev != "" {
			s, err := readAttr(fsys.Path(path.Join(netDir, pc.Netdev, "carrier_changes")), buf[:])
			if err == nil {
				var v uint64
				if v, err = parseCounter(s); err == nil {
					pc.CarrierChanges = &v
				}
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				pc.Errors = append(pc.Errors, fmt.Sprintf("%s/carrier_changes: %v", pc.Netdev, cause(err)))
			}
		}
		pc.Counters = readCounterFiles(dir+"/counters", CounterNames, buf[:], &pc.Errors)
		pc.HWCounters = readCounterFiles(dir+"/hw_counters", HWCounterNames, buf[:], &pc.Errors)
		// Only kernels before 4.5 have counters_ext: one stat spares
		// every other port eight failed opens a round.
		if _, err := os.Stat(dir + "/counters_ext"); err == nil {
			pc.ExtCounters = readCounterFiles(dir+"/counters_ext", ExtCounterNames, buf[:], &pc.Errors)
		}
		out = append(out, pc)
	}
	return out
}

// deviceLinks are what a port's netdev is found from when its GID table
// does not say: the parent device (a PCI function) and rxe's parent netdev.
type deviceLinks struct {
	parent, rxeParent string
	errs              []string
}

func readDeviceLinks(fsys hostfs.FS, devDir string) *deviceLinks {
	rd := reader{fsys: fsys}
	var l deviceLinks
	if _, err := fsys.Readlink(devDir + "/device"); err == nil {
		if l.parent, err = fsys.Resolve(devDir + "/device"); err != nil {
			rd.fail(fmt.Errorf("resolve %s/device: %w", devDir, cause(err)))
		}
	}
	if s, ok := rd.read(devDir+"/parent", isNotExist); ok {
		if validNetdevName(s) {
			l.rxeParent = s
		} else {
			rd.fail(fmt.Errorf("parse %s/parent: %q is not a network interface name", devDir, s))
		}
	}
	l.errs = messages(rd.errs)
	return &l
}

// portNetdev finds an Ethernet port's netdev the way Discover does, with
// one file in the common case: GID 0, the link-local GID every RoCE port
// has, is bound to the netdev (gid_attrs/ndevs/0); else rxe's parent, else
// the parent function's interfaces matched by dev_port.
func portNetdev(fsys hostfs.FS, devDir string, n int, l deviceLinks, problems *[]string) string {
	rd := reader{fsys: fsys}
	p := Port{Number: n}
	ndev := fmt.Sprintf("%s/ports/%d/gid_attrs/ndevs/0", devDir, n)
	if nd, ok := rd.read(ndev, gidAttrUnset); ok {
		if validNetdevName(nd) {
			p.GIDs = []GID{{Netdev: nd}}
		} else {
			rd.fail(fmt.Errorf("parse %s: %q is not a network interface name", ndev, nd))
		}
	}
	if len(p.GIDs) == 0 {
		*problems = append(*problems, l.errs...)
	}
	nd := rd.netdev(p, l.parent, l.rxeParent)
	*problems = append(*problems, messages(rd.errs)...)
	return nd
}

// noPMA is what older kernels print in every counters/ file of a device
// without a performance management agent (iWARP devices: i40iw, cxgb4,
// siw); newer kernels do not create the files. The device has none of
// these counters.
const noPMA = "N/A (no PMA)"

// readCounterFiles reads the named counters present in dir. Files that
// read noPMA are one problem, not one each.
func readCounterFiles(dir string, names []string, buf []byte, problems *[]string) []Counter {
	var out []Counter
	na := 0
	for _, name := range names {
		s, err := readAttr(dir+"/"+name, buf)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil && s == noPMA {
			na++
			continue
		}
		if err == nil {
			var v uint64
			if v, err = parseCounter(s); err == nil {
				out = append(out, Counter{Name: name, Value: v})
				continue
			}
		}
		*problems = append(*problems, fmt.Sprintf("%s/%s: %v", path.Base(dir), name, cause(err)))
	}
	if na > 0 {
		*problems = append(*problems, fmt.Sprintf("%s: %d files read %q: the device has no performance management agent (an iWARP device), so it has none of these counters",
			path.Base(dir), na, noPMA))
	}
	return out
}

// readAttr reads a small sysfs attribute with one read into buf (sysfs
// hands out a whole attribute per read) and trims the newline. It is the
// hot path of every sampling round, so it allocates nothing but the string.
func readAttr(p string, buf []byte) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	n, err := f.Read(buf)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if n == len(buf) {
		return "", fmt.Errorf("more than %d bytes: not a counter", len(buf)-1)
	}
	b := buf[:n]
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return string(b), nil
}

// readNames lists a directory's entry names (following a symlinked dir).
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// parseCounter parses a counter file: the kernel prints an unsigned
// decimal ("%llu"); anything else (signs, spaces, hex, overflow) is an error.
func parseCounter(s string) (uint64, error) {
	if !allDigits(s) {
		return 0, fmt.Errorf("counter %q is not an unsigned decimal", s)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("counter %q does not fit in 64 bits", s)
	}
	return v, nil
}
