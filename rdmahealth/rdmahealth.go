// Package rdmahealth judges each RDMA port from the counters and state the
// sampler reads every round: a port that was ACTIVE and went down, a link
// that flaps, a rate below the port's own earlier rate or its siblings',
// error counters that climb too fast, PFC pause storms. It derives the
// node's RDMAHealthy condition from the verdicts.
//
// Everything here is a pure function: Evaluate takes the history kept so
// far (a State value the sampler holds between rounds) and one round's
// readings, and returns the new history and the verdicts.
package rdmahealth

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/rdma"
)

// Reasons a port is unhealthy, as CamelCase condition reasons, from the
// most to the least severe; the condition takes the first that applies.
const (
	ReasonPortDown     = "PortDown"
	ReasonLinkFlapping = "LinkFlapping"
	ReasonErrorBurst   = "ErrorBurst"
	ReasonRateDegraded = "RateDegraded"
	ReasonPauseStorm   = "PauseStorm"
	// Not problems, but condition reasons.
	ReasonHealthy       = "AllPortsHealthy"
	ReasonNoActivePorts = "NoActivePorts"
	ReasonNoSamples     = "NoRDMASamples"
)

var severity = []string{ReasonPortDown, ReasonLinkFlapping, ReasonErrorBurst, ReasonRateDegraded, ReasonPauseStorm}

// Options are the thresholds. DefaultOptions explains the defaults.
type Options struct {
	// Window is how far back error, flap and pause counts are taken.
	Window time.Duration
	// Quiet is how long a port must stay free of flaps, error bursts and
	// pause storms before that finding clears. Down ports and degraded
	// rates clear as soon as the port is back.
	Quiet time.Duration
	// Flaps is how many link_downed plus carrier_changes increases within
	// Window make a port LinkFlapping; 0 disables the check.
	Flaps uint64
	// ErrorBurst maps a counter (a counters/ or hw_counters/ file name) to
	// the increase within Window that is an ErrorBurst; 0 or absent: not
	// judged.
	ErrorBurst map[string]uint64
	// PausePerSecond is the rate of PFC pause frames (received or sent, on
	// any one priority), averaged over Window, that is a PauseStorm; 0
	// disables the check.
	PausePerSecond float64
	// CompareSiblings also judges a port's rate against the rate most of
	// its siblings (ports of the same driver, link layer and board) run at, so a
	// port that trained low before the agent started is caught too.
	CompareSiblings bool
}

// DefaultOptions are the thresholds a fabric engineer would start from:
//
//   - Window 5 minutes, Quiet 15 minutes: a link that misbehaves keeps
//     the node flagged for three windows after the last sign, so a port
//     that flaps every few minutes does not toggle the condition (and a
//     taint) each time.
//   - Flaps 1: a link_downed or carrier_changes increase is a link that
//     went down and retrained, which no running NCCL/MPI job survives on
//     that port; Azure's aznhc fails a node on any IB flap in 6 hours and
//     NVSentinel treats any link_downed increase as fatal.
//   - symbol_error 10 per 5 minutes: the IBTA's bit error rate limit of
//     1e-12 is about 120 symbol errors an hour (Oracle's InfiniBand docs
//     cite it); faster means the link is leaving its specification.
//     PAM4 links (HDR, NDR) see some symbol errors always, so it is a
//     rate, not "any".
//   - link_error_recovery 5, local_link_integrity_errors 1,
//     excessive_buffer_overrun_errors 1: a recovery is a retrain without
//     a drop (a few are tolerable); local integrity and buffer overruns
//     mean the physical link or the lossless contract failed (NVSentinel
//     counts any increase of either as fatal).
//   - port_rcv_errors 100, port_rcv_discards 100, out_of_buffer 10000 per
//     5 minutes: malformed packets and discards at a steady trickle are
//     a bad cable or optic; out_of_buffer (no receive WQE posted) is
//     mostly the application's, so only a flood of it counts.
//   - RoCE transport: local_ack_timeout_err 100, packet_seq_err 100,
//     out_of_sequence 1000, roce_adp_retrans_to 100, rnr_nak_retry_err 10
//     per 5 minutes: retransmission timeouts and sequence errors mean
//     packets are being lost on a fabric built to lose none.
//   - CNP/ECN: np_cnp_sent, rp_cnp_handled 3 000 000 per 5 minutes
//     (10 000 a second, sustained): congestion notification at that rate
//     for minutes is a congestion storm, not incast bursts.
//   - PausePerSecond 1000: with the maximum pause quanta (65535 x 512 bit
//     times, 335 us at 100 Gb/s) a thousand pauses a second hold a
//     100G port paused a third of the time, for the whole window; mlx5's
//     own PFC storm prevention acts only after seconds of continuous
//     pause, far later.
//   - CompareSiblings on: an HCA whose cable came up on 2 of 4 lanes
//     is the common case. Switch it off on nodes that mix NIC speeds in
//     one driver (a 200G storage NIC beside 400G compute NICs).
func DefaultOptions() Options {
	return Options{
		Window: 5 * time.Minute,
		Quiet:  15 * time.Minute,
		Flaps:  1,
		ErrorBurst: map[string]uint64{
			"symbol_error":                    10,
			"link_error_recovery":             5,
			"local_link_integrity_errors":     1,
			"excessive_buffer_overrun_errors": 1,
			"port_rcv_errors":                 100,
			"port_rcv_discards":               100,
			"out_of_buffer":                   10000,
			"local_ack_timeout_err":           100,
			"packet_seq_err":                  100,
			"out_of_sequence":                 1000,
			"roce_adp_retrans_to":             100,
			"rnr_nak_retry_err":               10,
			"np_cnp_sent":                     3_000_000,
			"rp_cnp_handled":                  3_000_000,
		},
		PausePerSecond:  1000,
		CompareSiblings: true,
	}
}

// Problem is one reason a port is unhealthy.
type Problem struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// Port is one port's verdict. Judged is false for a port that has not
// been ACTIVE since the agent started (the unused port of a dual-port
// card): nothing is said about it.
type Port struct {
	Device   string    `json:"device"`
	Port     int       `json:"port"`
	Judged   bool      `json:"judged"`
	Healthy  bool      `json:"healthy"`
	Problems []Problem `json:"problems,omitempty"`
}

// Name is "device port N", as messages name a port.
func (p Port) Name() string { return p.Device + " port " + strconv.Itoa(p.Port) }

// State is the history Evaluate keeps between rounds. The zero value is
// the start. It is a value: Evaluate never changes the one it is given.
type State struct {
	ports map[string]portState
}

type portState struct {
	everActive bool
	maxRate    float64
	points     []point // readings within Window, oldest first
	held       map[string]held
}

// point is one reading of the counters a port is judged by.
type point struct {
	at time.Time
	v  map[string]uint64
}

// held is a counter finding that stays until Quiet passes after last.
type held struct {
	last time.Time
	msg  string
}

// Keys of point.v besides the counter names.
const (
	keyCarrier = "carrier_changes"
	keyPause   = "pause/" // + "rx/<prio>" or "tx/<prio>"
)

func portKey(device string, port int) string { return device + "/" + strconv.Itoa(port) }

// Evaluate judges every port read this round (in their order) against
// the history, and returns the new history. Ports missing from this
// round are forgotten.
func Evaluate(prev State, ports []rdma.PortCounters, now time.Time, o Options) (State, []Port) {
	next := State{ports: make(map[string]portState, len(ports))}
	sib := siblingRates(ports)
	out := make([]Port, 0, len(ports))
	for _, pc := range ports {
		key := portKey(pc.Device, pc.Port)
		st, v := step(prev.ports[key], pc, now, o, sib)
		next.ports[key] = st
		out = append(out, v)
	}
	return next, out
}

func step(prev portState, pc rdma.PortCounters, now time.Time, o Options, sib map[string]float64) (portState, Port) {
	st := portState{everActive: prev.everActive || pc.Active(), maxRate: prev.maxRate, held: map[string]held{}}
	v := Port{Device: pc.Device, Port: pc.Port, Judged: st.everActive}
	add := func(reason, format string, args ...any) {
		v.Problems = append(v.Problems, Problem{Reason: reason, Message: fmt.Sprintf(format, args...)})
	}

	// The window: earlier readings no older than Window, then this one.
	cur := reading(pc)
	for _, p := range prev.points {
		if now.Sub(p.at) <= o.Window && p.at.Before(now) {
			st.points = append(st.points, p)
		}
	}
	if len(pc.Errors) == 0 || len(cur) > 0 {
		st.points = append(st.points, point{at: now, v: cur})
	}

	if st.everActive && pc.State != "" {
		switch {
		case !pc.Active():
			phys := ""
			if pc.PhysState != "" {
				phys = ", phys_state " + pc.PhysState
			}
			add(ReasonPortDown, "%s (state %s%s) after being ACTIVE", v.Name(), pc.State, phys)
		case pc.PhysState != "" && pc.PhysState != "LinkUp":
			add(ReasonPortDown, "%s: phys_state %s, not LinkUp", v.Name(), pc.PhysState)
		}
	}

	// Counter findings: raised this round, or held from an earlier one.
	raised := map[string]string{}
	if len(st.points) > 1 {
		first, last := st.points[0], st.points[len(st.points)-1]
		span := last.at.Sub(first.at)
		if o.Flaps > 0 {
			flaps := increase(first, last, "link_downed") + increase(first, last, keyCarrier)
			if flaps >= o.Flaps {
				raised[ReasonLinkFlapping] = fmt.Sprintf("%s: link went down and retrained %d time(s) in %s (link_downed/carrier_changes)",
					v.Name(), flaps, span.Round(time.Second))
			}
		}
		var bursts []string
		for _, name := range slices.Sorted(maps.Keys(o.ErrorBurst)) {
			limit := o.ErrorBurst[name]
			if d := increase(first, last, name); limit > 0 && d >= limit {
				bursts = append(bursts, fmt.Sprintf("%s +%d", name, d))
			}
		}
		if len(bursts) > 0 {
			raised[ReasonErrorBurst] = fmt.Sprintf("%s: %s in %s", v.Name(), strings.Join(bursts, ", "), span.Round(time.Second))
		}
		if o.PausePerSecond > 0 && span > 0 {
			var storms []string
			for _, k := range pauseKeys(last) {
				if r := float64(increase(first, last, k)) / span.Seconds(); r >= o.PausePerSecond {
					dir, prio, _ := strings.Cut(strings.TrimPrefix(k, keyPause), "/")
					storms = append(storms, fmt.Sprintf("priority %s %s %.0f/s", prio, dir, r))
				}
			}
			if len(storms) > 0 {
				raised[ReasonPauseStorm] = fmt.Sprintf("%s: PFC pause frames %s over %s", v.Name(), strings.Join(storms, ", "), span.Round(time.Second))
			}
		}
	}
	for _, reason := range []string{ReasonLinkFlapping, ReasonErrorBurst, ReasonPauseStorm} {
		if msg, ok := raised[reason]; ok {
			st.held[reason] = held{last: now, msg: msg}
			add(reason, "%s", msg)
		} else if h, ok := prev.held[reason]; ok && now.Sub(h.last) < o.Quiet {
			st.held[reason] = h
			add(reason, "%s (last seen %s; clears after %s without)", h.msg, h.last.UTC().Format(time.RFC3339), o.Quiet)
		}
	}

	if pc.RateGbps > 0 && pc.Active() {
		switch {
		case pc.RateGbps < st.maxRate:
			add(ReasonRateDegraded, "%s runs at %s Gb/s, below its earlier %s Gb/s", v.Name(), gbps(pc.RateGbps), gbps(st.maxRate))
		case o.CompareSiblings && pc.RateGbps < sib[group(pc)]:
			add(ReasonRateDegraded, "%s runs at %s Gb/s, below the %s Gb/s of its siblings", v.Name(), gbps(pc.RateGbps), gbps(sib[group(pc)]))
		}
		st.maxRate = max(st.maxRate, pc.RateGbps)
	}

	slices.SortStableFunc(v.Problems, func(a, b Problem) int {
		return slices.Index(severity, a.Reason) - slices.Index(severity, b.Reason)
	})
	if len(v.Problems) > 0 {
		v.Judged = true
	}
	v.Healthy = v.Judged && len(v.Problems) == 0
	return st, v
}

// reading collects what a port is judged by from one round's counters.
func reading(pc rdma.PortCounters) map[string]uint64 {
	v := map[string]uint64{}
	for _, c := range pc.Counters {
		v[c.Name] = c.Value
	}
	for _, c := range pc.HWCounters {
		v[c.Name] = c.Value
	}
	if pc.CarrierChanges != nil {
		v[keyCarrier] = *pc.CarrierChanges
	}
	for _, p := range pc.Pause {
		v[keyPause+"rx/"+strconv.Itoa(p.Priority)] = p.RX
		v[keyPause+"tx/"+strconv.Itoa(p.Priority)] = p.TX
	}
	return v
}

// increase is how much a counter grew from first to last; 0 when either
// lacks it or it went backwards (a driver reload restarted it).
func increase(first, last point, name string) uint64 {
	a, ok1 := first.v[name]
	b, ok2 := last.v[name]
	if !ok1 || !ok2 || b < a {
		return 0
	}
	return b - a
}

func pauseKeys(p point) []string {
	var keys []string
	for k := range p.v {
		if strings.HasPrefix(k, keyPause) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		// priority order, then rx before tx
		pa, pb := a[strings.LastIndexByte(a, '/')+1:], b[strings.LastIndexByte(b, '/')+1:]
		return cmp.Or(cmp.Compare(len(pa), len(pb)), cmp.Compare(pa, pb), cmp.Compare(a, b))
	})
	return keys
}

// group names a port's siblings: the same driver (the device name without
// its number: "mlx5"), the same link layer (RoCE ports have a netdev) and
// the same board model, so a 200G storage or frontend NIC is not judged
// against the 400G compute NICs beside it.
func group(pc rdma.PortCounters) string {
	g := strings.TrimRight(pc.Device, "0123456789")
	if pc.Netdev != "" {
		g += "/eth"
	} else {
		g += "/ib"
	}
	return g + "/" + pc.Board
}

// siblingRates is, per group of at least three active ports, the rate
// most of them run at (the highest such rate on a tie); a group where no
// rate is shared by more than half has none (no majority to compare with).
func siblingRates(ports []rdma.PortCounters) map[string]float64 {
	counts := map[string]map[float64]int{}
	total := map[string]int{}
	for _, pc := range ports {
		if !pc.Active() || pc.RateGbps <= 0 {
			continue
		}
		g := group(pc)
		if counts[g] == nil {
			counts[g] = map[float64]int{}
		}
		counts[g][pc.RateGbps]++
		total[g]++
	}
	out := map[string]float64{}
	for g, byRate := range counts {
		if total[g] < 3 {
			continue
		}
		for rate, n := range byRate {
			if 2*n > total[g] && rate > out[g] {
				out[g] = rate
			}
		}
	}
	return out
}

func gbps(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

// Condition is the node's RDMAHealthy condition: False when a port is
// unhealthy (reason of the most severe problem, message naming every bad
// port), Unknown before the first reading or when no port has been ACTIVE
// since the agent started, True otherwise. ok is false on a node without
// RDMA ports, which has no such condition: a node without RDMA is a
// normal node, and a condition there would only invite remediation tools
// to act on it.
func Condition(ports []Port, sampled bool) (c nodestatus.Condition, ok bool) {
	c.Type = nodestatus.RDMAHealthy
	if !sampled {
		c.Status, c.Reason, c.Message = nodestatus.Unknown, ReasonNoSamples, "RDMA port counters could not be read"
		return c, true
	}
	if len(ports) == 0 {
		return nodestatus.Condition{}, false
	}
	var bad []string
	judged := 0
	reason := ""
	for _, p := range ports {
		if p.Judged {
			judged++
		}
		if len(p.Problems) == 0 {
			continue
		}
		var ms []string
		for _, pr := range p.Problems {
			ms = append(ms, pr.Reason+": "+pr.Message)
		}
		bad = append(bad, strings.Join(ms, "; "))
		if r := p.Problems[0].Reason; reason == "" || slices.Index(severity, r) < slices.Index(severity, reason) {
			reason = r
		}
	}
	switch {
	case len(bad) > 0:
		c.Status, c.Reason = nodestatus.False, reason
		c.Message = fmt.Sprintf("%d of %d RDMA ports unhealthy: %s", len(bad), judged, strings.Join(bad, ". "))
	case judged == 0:
		c.Status, c.Reason = nodestatus.Unknown, ReasonNoActivePorts
		c.Message = fmt.Sprintf("none of the %d RDMA ports has been ACTIVE since the agent started", len(ports))
	default:
		c.Status, c.Reason = nodestatus.True, ReasonHealthy
		c.Message = fmt.Sprintf("%d RDMA ports healthy", judged)
		if n := len(ports) - judged; n > 0 {
			c.Message += fmt.Sprintf(" (%d never ACTIVE, not judged)", n)
		}
	}
	return c, true
}

// TaintFor is the opt-in taint RDMAHealthy implies: when enabled and the
// condition is False, a taint whose value is the reason; otherwise none.
// Unknown never taints, as with GPUHealthy.
func TaintFor(c nodestatus.Condition, enabled bool, key, effect string) *nodestatus.Taint {
	if !enabled || c.Type != nodestatus.RDMAHealthy || c.Status != nodestatus.False {
		return nil
	}
	if effect == "" {
		effect = "NoSchedule"
	}
	return &nodestatus.Taint{Key: key, Value: c.Reason, Effect: effect}
}
