package telemetry

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/rdmahealth"
	"github.com/gpunode/gpunode/sim"
)

// A port of a simulated DGX drops and retrains mid-run while another takes
// a burst of symbol errors: the sampler's verdicts, the RDMAHealthy
// condition handed over and the frame follow, and recover once the
// ports were quiet for the quiet time.
func TestRDMAHealthFollowsRuntimeFaults(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	start := time.Now()
	faults := []sim.PortFault{
		{Device: "mlx5_2", Port: 1, Kind: sim.FaultFlap, At: 500 * time.Millisecond, For: time.Second},
		{Device: "mlx5_5", Port: 1, Kind: sim.FaultErrorBurst, At: 500 * time.Millisecond, For: time.Second,
			Counter: "symbol_error", PerSecond: 1000},
	}
	node := n.Node
	node.Runtime = faults
	tr, err := sim.NewTraffic(node, start)
	if err != nil {
		t.Fatal(err)
	}
	o := n.options()
	o.Traffic = tr
	o.RDMAHealth = rdmahealth.DefaultOptions()
	o.RDMAHealth.Window, o.RDMAHealth.Quiet = 2*time.Second, 2*time.Second
	var conds []nodestatus.Condition
	o.OnRDMACondition = func(c nodestatus.Condition) { conds = append(conds, c) }
	s := New(o)
	reasons := func() map[string]string {
		out := map[string]string{}
		for _, p := range s.Latest().RDMAHealth {
			var rs []string
			for _, pr := range p.Problems {
				rs = append(rs, pr.Reason)
			}
			if len(rs) > 0 {
				out[p.Device] = strings.Join(rs, ",")
			}
		}
		return out
	}
	round := func(at time.Duration) {
		time.Sleep(time.Until(start.Add(at)))
		s.Round(context.Background())
	}

	round(0)
	f := s.Latest()
	if len(f.RDMAHealth) != 8 || !f.HasRDMACondition || f.RDMACondition.Status != nodestatus.True {
		t.Fatalf("first round: %d verdicts, condition %v %+v", len(f.RDMAHealth), f.HasRDMACondition, f.RDMACondition)
	}
	round(time.Second) // mlx5_2 down, mlx5_5 bursting
	if got := reasons(); got["mlx5_2"] != "PortDown,LinkFlapping" || got["mlx5_5"] != "ErrorBurst" || len(got) != 2 {
		t.Errorf("during the faults: %v", got)
	}
	if c := s.Latest().RDMACondition; c.Status != nodestatus.False || c.Reason != rdmahealth.ReasonPortDown ||
		!strings.Contains(c.Message, "mlx5_2 port 1") || !strings.Contains(c.Message, "mlx5_5 port 1") {
		t.Errorf("condition during the faults: %+v", c)
	}
	round(2 * time.Second) // back up: the flap and the burst are held
	if got := reasons(); got["mlx5_2"] != "LinkFlapping" || got["mlx5_5"] != "ErrorBurst" {
		t.Errorf("after the faults: %v", got)
	}
	// The flap and the burst are raised while the readings from before
	// them are in the window (up to 2.5 s), then held a quiet time (2 s).
	// The margins are wide: a loaded machine runs rounds late.
	round(6500 * time.Millisecond)
	if got := reasons(); len(got) != 0 {
		t.Errorf("after the quiet time: %v", got)
	}
	var seq []string
	for _, c := range conds {
		seq = append(seq, string(c.Status)+"/"+c.Reason)
	}
	if want := "True/AllPortsHealthy False/PortDown False/LinkFlapping True/AllPortsHealthy"; strings.Join(seq, " ") != want {
		t.Errorf("conditions handed over: %v, want %s", seq, want)
	}
}

// A node without RDMA has no RDMAHealthy condition.
func TestNoRDMANoCondition(t *testing.T) {
	n := newNode(t, "cpu-only")
	called := false
	o := n.options()
	o.OnRDMACondition = func(nodestatus.Condition) { called = true }
	s := New(o)
	s.Round(context.Background())
	if f := s.Latest(); f.HasRDMACondition || called || len(f.RDMAHealth) != 0 {
		t.Errorf("cpu-only: condition %v %+v, handed over %v", f.HasRDMACondition, f.RDMACondition, called)
	}
}

// A round whose counters cannot be read at all (here: cancelled, as at
// shutdown) keeps the last verdicts instead of turning the node Unknown.
func TestRDMAVerdictsSurviveAFailedRead(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	var conds []nodestatus.Condition
	o := n.options()
	o.OnRDMACondition = func(c nodestatus.Condition) { conds = append(conds, c) }
	s := New(o)
	s.Round(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Round(ctx)
	f := s.Latest()
	if st := status(f, SourceRDMA); len(f.RDMA) != 0 || st.State != "error" {
		t.Fatalf("the cancelled round read counters: %d ports, %+v", len(f.RDMA), st)
	}
	if !f.HasRDMACondition || f.RDMACondition.Status != nodestatus.True || len(f.RDMAHealth) != 8 || len(conds) != 1 {
		t.Errorf("after a failed read: %v %+v, %d verdicts, conditions handed over %v", f.HasRDMACondition, f.RDMACondition, len(f.RDMAHealth), conds)
	}
}

// A RoCE port's peer keeps pausing it on the lossless priority: the
// driver statistics' pause frames climb past the threshold, the port is
// PauseStorm and the condition False, and it recovers after the quiet
// time once the storm ends.
func TestRDMAHealthPauseStorm(t *testing.T) {
	n := newNode(t, "h100-roce")
	start := time.Now()
	node := n.Node
	node.Runtime = []sim.PortFault{{Device: "mlx5_1", Port: 1, Kind: sim.FaultPauseStorm, Priority: 3, PerSecond: 20000,
		At: 500 * time.Millisecond, For: time.Second}}
	tr, err := sim.NewTraffic(node, start)
	if err != nil {
		t.Fatal(err)
	}
	o := n.options()
	o.Traffic = tr
	o.DriverStats = sim.DriverStats{Root: node.Root}
	o.RDMAHealth = rdmahealth.DefaultOptions()
	o.RDMAHealth.Window, o.RDMAHealth.Quiet = 2*time.Second, 2*time.Second
	s := New(o)
	bad := func() map[string]string {
		out := map[string]string{}
		for _, p := range s.Latest().RDMAHealth {
			for _, pr := range p.Problems {
				out[p.Device] += pr.Reason
			}
		}
		return out
	}
	round := func(at time.Duration) {
		time.Sleep(time.Until(start.Add(at)))
		s.Round(context.Background())
	}
	round(0)
	if got := bad(); len(got) != 0 || s.Latest().RDMACondition.Status != nodestatus.True {
		t.Fatalf("before the storm: %v %+v", got, s.Latest().RDMACondition)
	}
	round(1200 * time.Millisecond)
	if got := bad(); got["mlx5_1"] != rdmahealth.ReasonPauseStorm || len(got) != 1 {
		t.Errorf("during the storm: %v", got)
	}
	if c := s.Latest().RDMACondition; c.Status != nodestatus.False || c.Reason != rdmahealth.ReasonPauseStorm ||
		!strings.Contains(c.Message, "mlx5_1 port 1") {
		t.Errorf("condition during the storm: %+v", c)
	}
	round(6500 * time.Millisecond)
	if got := bad(); len(got) != 0 {
		t.Errorf("after the quiet time: %v", got)
	}
}
