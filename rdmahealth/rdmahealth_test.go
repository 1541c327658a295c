package rdmahealth

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/rdma"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// ib is an active 400G InfiniBand port with the given counters.
func ib(dev string, counters ...rdma.Counter) rdma.PortCounters {
	return rdma.PortCounters{Device: dev, Port: 1, State: "ACTIVE", PhysState: "LinkUp", RateGbps: 400, Counters: counters}
}

func c(name string, v uint64) rdma.Counter { return rdma.Counter{Name: name, Value: v} }

// run feeds rounds 10 s apart and returns the verdicts of each round for
// the first port.
func run(t *testing.T, o Options, rounds ...[]rdma.PortCounters) [][]string {
	t.Helper()
	var st State
	var out [][]string
	for i, r := range rounds {
		var ports []Port
		st, ports = Evaluate(st, r, t0.Add(time.Duration(i)*10*time.Second), o)
		var reasons []string
		for _, p := range ports[0].Problems {
			reasons = append(reasons, p.Reason)
			if !strings.Contains(p.Message, ports[0].Name()) {
				t.Errorf("round %d: message %q does not name %s", i, p.Message, ports[0].Name())
			}
		}
		out = append(out, reasons)
	}
	return out
}

func TestEvaluate(t *testing.T) {
	o := DefaultOptions()
	down := ib("mlx5_0")
	down.State, down.PhysState = "DOWN", "Polling"
	carrier := func(n uint64) rdma.PortCounters {
		p := ib("mlx5_0")
		p.Netdev, p.CarrierChanges = "eth0", &n
		return p
	}
	pause := func(rx uint64) rdma.PortCounters {
		p := carrier(1)
		p.Pause = []rdma.PriorityPause{{Priority: 0}, {Priority: 3, RX: rx}}
		return p
	}
	slow := ib("mlx5_0")
	slow.RateGbps = 200
	never := ib("mlx5_0")
	never.State, never.PhysState = "DOWN", "Disabled"
	for name, tc := range map[string]struct {
		rounds [][]rdma.PortCounters
		want   [][]string
	}{
		"steady": {[][]rdma.PortCounters{{ib("mlx5_0", c("symbol_error", 3))}, {ib("mlx5_0", c("symbol_error", 5))}},
			[][]string{nil, nil}},
		"went down": {[][]rdma.PortCounters{{ib("mlx5_0")}, {down}, {ib("mlx5_0")}},
			[][]string{nil, {ReasonPortDown}, nil}},
		// The unused port of a dual-port card is not judged.
		"never active": {[][]rdma.PortCounters{{never}, {never}}, [][]string{nil, nil}},
		"active, phys_state not LinkUp": {[][]rdma.PortCounters{{func() rdma.PortCounters {
			p := ib("mlx5_0")
			p.PhysState = "LinkErrorRecovery"
			return p
		}()}}, [][]string{{ReasonPortDown}}},
		"link_downed flap, down then up": {[][]rdma.PortCounters{
			{ib("mlx5_0", c("link_downed", 2))}, {func() rdma.PortCounters { d := down; d.Counters = []rdma.Counter{c("link_downed", 3)}; return d }()},
			{ib("mlx5_0", c("link_downed", 3))}},
			[][]string{nil, {ReasonPortDown, ReasonLinkFlapping}, {ReasonLinkFlapping}}},
		"RoCE carrier flap": {[][]rdma.PortCounters{{carrier(4)}, {carrier(6)}}, [][]string{nil, {ReasonLinkFlapping}}},
		"symbol error burst": {[][]rdma.PortCounters{{ib("mlx5_0", c("symbol_error", 100))}, {ib("mlx5_0", c("symbol_error", 110))}},
			[][]string{nil, {ReasonErrorBurst}}},
		"below threshold": {[][]rdma.PortCounters{{ib("mlx5_0", c("symbol_error", 100))}, {ib("mlx5_0", c("symbol_error", 109))}},
			[][]string{nil, nil}},
		// A counter that went backwards restarted (driver reload): no burst.
		"counter reset": {[][]rdma.PortCounters{{ib("mlx5_0", c("symbol_error", 1000))}, {ib("mlx5_0", c("symbol_error", 0))}},
			[][]string{nil, nil}},
		"RoCE retransmission timeouts": {[][]rdma.PortCounters{{func() rdma.PortCounters {
			p := carrier(1)
			p.HWCounters = []rdma.Counter{c("local_ack_timeout_err", 0)}
			return p
		}()}, {func() rdma.PortCounters {
			p := carrier(1)
			p.HWCounters = []rdma.Counter{c("local_ack_timeout_err", 500)}
			return p
		}()}}, [][]string{nil, {ReasonErrorBurst}}},
		// 10 s apart: 10 000 frames is 1000/s, at the threshold.
		"pause storm":       {[][]rdma.PortCounters{{pause(0)}, {pause(10_000)}}, [][]string{nil, {ReasonPauseStorm}}},
		"pause below storm": {[][]rdma.PortCounters{{pause(0)}, {pause(9_000)}}, [][]string{nil, nil}},
		"rate dropped":      {[][]rdma.PortCounters{{ib("mlx5_0")}, {slow}, {ib("mlx5_0")}}, [][]string{nil, {ReasonRateDegraded}, nil}},
	} {
		t.Run(name, func(t *testing.T) {
			if got := run(t, o, tc.rounds...); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("reasons per round %v, want %v", got, tc.want)
			}
		})
	}
}

// A flap is held for Quiet after the last round that saw it in the window,
// then clears; a new flap holds it again.
func TestRecoveryAfterQuiet(t *testing.T) {
	o := DefaultOptions()
	o.Window, o.Quiet = 30*time.Second, time.Minute
	var st State
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	verdict := func(s int, downed uint64) []Problem {
		var ports []Port
		st, ports = Evaluate(st, []rdma.PortCounters{ib("mlx5_0", c("link_downed", downed))}, at(s), o)
		return ports[0].Problems
	}
	verdict(0, 0)
	if p := verdict(10, 1); len(p) != 1 || p[0].Reason != ReasonLinkFlapping {
		t.Fatalf("flap not seen: %v", p)
	}
	// Raised while the reading from before it (0 s) is in the window, up to
	// 30 s, then held until a minute after that.
	for _, s := range []int{20, 30, 40, 60, 80} {
		if p := verdict(s, 1); len(p) != 1 {
			t.Errorf("at %d s: %v, want the flap held", s, p)
		}
	}
	if p := verdict(90, 1); len(p) != 0 {
		t.Errorf("at 90 s, a minute after the flap was last in the window: %v, want healthy", p)
	}
	if p := verdict(100, 2); len(p) != 1 || !strings.Contains(p[0].Message, "1 time(s)") {
		t.Errorf("a new flap: %v", p)
	}
}

func TestSiblings(t *testing.T) {
	var ports []rdma.PortCounters
	for _, d := range []string{"mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"} {
		ports = append(ports, ib(d))
	}
	ports[2].RateGbps = 200
	roce := ib("mlx5_4")
	roce.Netdev, roce.RateGbps = "eth4", 100 // another link layer: not a sibling
	ports = append(ports, roce)
	// Two 200G storage HCAs of another board beside the 400G compute ones
	// (h100-roce's shape): not siblings of the compute ones, so not slow.
	for _, d := range []string{"mlx5_8", "mlx5_9"} {
		p := ib(d)
		p.Board, p.RateGbps = "MT_0000000359", 200
		ports = append(ports, p)
	}
	_, v := Evaluate(State{}, ports, t0, DefaultOptions())
	for i, p := range v {
		want := i == 2
		if got := len(p.Problems) == 1 && p.Problems[0].Reason == ReasonRateDegraded; got != want {
			t.Errorf("%s: problems %v, want degraded %v", p.Name(), p.Problems, want)
		}
	}
	o := DefaultOptions()
	o.CompareSiblings = false
	if _, v := Evaluate(State{}, ports, t0, o); !v[2].Healthy {
		t.Errorf("with siblings off: %v", v[2])
	}
}

func TestCondition(t *testing.T) {
	healthy := Port{Device: "mlx5_0", Port: 1, Judged: true, Healthy: true}
	unused := Port{Device: "mlx5_0", Port: 2}
	flap := Port{Device: "mlx5_1", Port: 1, Judged: true, Problems: []Problem{{ReasonLinkFlapping, "mlx5_1 port 1: link went down"}}}
	down := Port{Device: "mlx5_2", Port: 1, Judged: true, Problems: []Problem{{ReasonPortDown, "mlx5_2 port 1 (state DOWN)"}}}
	for name, tc := range map[string]struct {
		ports   []Port
		sampled bool
		ok      bool
		status  nodestatus.Status
		reason  string
	}{
		"no RDMA":          {nil, true, false, "", ""},
		"not read":         {nil, false, true, nodestatus.Unknown, ReasonNoSamples},
		"none ever active": {[]Port{unused}, true, true, nodestatus.Unknown, ReasonNoActivePorts},
		"healthy":          {[]Port{healthy, unused}, true, true, nodestatus.True, ReasonHealthy},
		"most severe wins": {[]Port{healthy, flap, down}, true, true, nodestatus.False, ReasonPortDown},
	} {
		t.Run(name, func(t *testing.T) {
			c, ok := Condition(tc.ports, tc.sampled)
			if ok != tc.ok || c.Status != tc.status || c.Reason != tc.reason {
				t.Fatalf("got %v %+v, want %v %s %s", ok, c, tc.ok, tc.status, tc.reason)
			}
			if ok && c.Type != nodestatus.RDMAHealthy {
				t.Errorf("type %q", c.Type)
			}
		})
	}
	c, _ := Condition([]Port{healthy, flap, down}, true)
	for _, want := range []string{"2 of 3 RDMA ports unhealthy", "mlx5_1 port 1", "mlx5_2 port 1", "LinkFlapping"} {
		if !strings.Contains(c.Message, want) {
			t.Errorf("message %q lacks %q", c.Message, want)
		}
	}
}

func TestTaintFor(t *testing.T) {
	flapping := nodestatus.Condition{Type: nodestatus.RDMAHealthy, Status: nodestatus.False, Reason: ReasonLinkFlapping}
	if tt := TaintFor(flapping, true, "gpunode.dev/rdma-unhealthy", ""); tt == nil || tt.String() != "gpunode.dev/rdma-unhealthy=LinkFlapping:NoSchedule" {
		t.Errorf("taint %v", tt)
	}
	for _, c := range []nodestatus.Condition{
		{Type: nodestatus.RDMAHealthy, Status: nodestatus.Unknown, Reason: ReasonNoActivePorts},
		{Type: nodestatus.RDMAHealthy, Status: nodestatus.True, Reason: ReasonHealthy},
		{Type: nodestatus.GPUHealthy, Status: nodestatus.False, Reason: "GPULost"},
	} {
		if tt := TaintFor(c, true, "k", "NoExecute"); tt != nil {
			t.Errorf("%+v tainted: %v", c, tt)
		}
	}
	if tt := TaintFor(flapping, false, "k", "NoExecute"); tt != nil {
		t.Errorf("disabled, tainted: %v", tt)
	}
}

// The sampler's cost per round on a DGX-sized node: 10 ports with 35
// counters each, a 5-minute window at a 1 s interval (300 readings).
func BenchmarkEvaluate(b *testing.B) {
	var ports []rdma.PortCounters
	for d := range 10 {
		p := ib("mlx5_" + strconv.Itoa(d))
		for _, n := range append(slices.Clone(rdma.CounterNames), rdma.HWCounterNames...) {
			p.Counters = append(p.Counters, c(n, 0))
		}
		ports = append(ports, p)
	}
	o := DefaultOptions()
	var st State
	for i := range 300 {
		st, _ = Evaluate(st, ports, t0.Add(time.Duration(i)*time.Second), o)
	}
	b.ResetTimer()
	for i := range b.N {
		st, _ = Evaluate(st, ports, t0.Add(time.Duration(300+i)*time.Second), o)
	}
}
