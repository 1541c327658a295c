package probe

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/rdma/verbs"
)

func TestPeersFor(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	peers := []Peer{{"n3", "c:1"}, {"n1", "a:1"}, {"n2", "b:1"}, {"n1", "dup:1"}, {"", "x:1"}, {"n4", "d:1"}}
	names := func(ps []Peer) string {
		var s []string
		for _, p := range ps {
			s = append(s, p.Node)
		}
		return strings.Join(s, ",")
	}
	for self, want := range map[string]string{"n1": "n2", "n2": "n3", "n4": "n1", "n0": "n1", "n9": "n1", "n25": "n3"} {
		if got := names(PeersFor(self, peers, 0, rnd)); got != want {
			t.Errorf("successor of %s: %s, want %s", self, got, want)
		}
	}
	// Every node probes exactly one successor: N probes a round, and every
	// node is probed once.
	probed := map[string]int{}
	for _, self := range []string{"n1", "n2", "n3", "n4"} {
		for _, p := range PeersFor(self, peers, 0, rnd) {
			probed[p.Node]++
		}
	}
	if len(probed) != 4 {
		t.Errorf("ring coverage %v", probed)
	}
	got := PeersFor("n1", peers, 2, rnd)
	if len(got) != 3 || got[0].Node != "n2" || got[0].Address != "b:1" || got[1].Node == got[2].Node || got[1].Node == "n1" || got[1].Node == "n2" {
		t.Errorf("successor and 2 random: %+v", got)
	}
	if got := PeersFor("n1", peers, 10, rnd); len(got) != 3 {
		t.Errorf("more random than peers: %+v", got)
	}
	if got := PeersFor("n1", []Peer{{"n1", "self:1"}}, 3, rnd); got != nil {
		t.Errorf("alone: %+v", got)
	}
	if p := PeersFor("n1", peers, 0, rnd); p[0].Address != "a:1" && p[0].Node == "n1" {
		t.Error("duplicate node replaced the first")
	}
}

func TestJitter(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	lo, hi := time.Hour, time.Duration(0)
	for range 1000 {
		d := Jitter(10*time.Minute, rnd)
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo < 8*time.Minute || hi > 12*time.Minute || hi-lo < 3*time.Minute {
		t.Errorf("jitter range %s..%s", lo, hi)
	}
}

func TestVerdict(t *testing.T) {
	port := Port{Device: "mlx5_0", Port: 1, RateGbps: 400, DataRateGbps: 400}
	loopBW := Result{Kind: KindWriteBW, Local: port, Peer: PeerLoopback, BytesPerSecond: 45e9}
	bw := Result{Kind: KindWriteBW, Local: port, Peer: "n2", BytesPerSecond: 45e9, LineRateFraction: 0.9}
	lat := Result{Kind: KindSendLat, Local: port, Peer: "n2", Latency: &verbs.Latency{P50: 3 * time.Microsecond}}
	loopLat := Result{Kind: KindSendLat, Local: port, Peer: PeerLoopback, Latency: &verbs.Latency{P50: 2 * time.Microsecond}}
	rail0 := bw
	rail0.Rail, rail0.PeerPort = new(0), &Port{Device: "mlx5_4", Port: 1}
	th := Thresholds{MinBandwidthBytesPerSecond: 40e9, MinLineRateFraction: 0.8, MaxLatencyP50: 5 * time.Microsecond}
	for name, tc := range map[string]struct {
		r           Round
		peer, loop  Thresholds
		ok          bool
		reason, msg string
	}{
		"pass":      {Round{Results: []Result{loopBW, bw, lat}}, th, th, true, "ProbesPassed", "3 probes passed (1 HCA loopback, 2 to peers)"},
		"no checks": {Round{Results: []Result{bw}}, Thresholds{}, Thresholds{}, true, "ProbesPassed", ""},
		"slow":      {Round{Results: []Result{bw, lat}}, Thresholds{MinBandwidthBytesPerSecond: 50e9}, Thresholds{}, false, "BelowThreshold", "mlx5_0/1 to n2: bandwidth 4.5e+10 B/s below 5e+10"},
		"line rate": {Round{Results: []Result{bw}}, Thresholds{MinLineRateFraction: 0.95}, Thresholds{}, false, "BelowThreshold", "90.0% of line rate"},
		"latency":   {Round{Results: []Result{lat}}, Thresholds{MaxLatencyP50: 2 * time.Microsecond}, Thresholds{}, false, "BelowThreshold", "p50 latency 3µs above 2µs"},
		// Loopback is an HCA check: the peers' thresholds, line rate
		// above all, do not apply to it, its own do.
		"loopback own thresholds": {Round{Results: []Result{loopBW, loopLat}}, Thresholds{MinBandwidthBytesPerSecond: 50e9, MinLineRateFraction: 0.95, MaxLatencyP50: time.Microsecond}, Thresholds{}, true, "LoopbackPassed", "2 HCA loopback probes passed; no peer probe ran, so links and the fabric are not verified"},
		"loopback slow":           {Round{Results: []Result{loopBW, bw}}, Thresholds{}, Thresholds{MinBandwidthBytesPerSecond: 50e9}, false, "LoopbackBelowThreshold", "mlx5_0/1 HCA loopback: bandwidth 4.5e+10 B/s below 5e+10"},
		"loopback line rate":      {Round{Results: []Result{loopBW}}, Thresholds{}, Thresholds{MinLineRateFraction: 0.5}, true, "LoopbackPassed", ""},
		"peer before loopback":    {Round{Results: []Result{loopBW, bw}}, Thresholds{MinBandwidthBytesPerSecond: 50e9}, Thresholds{MinBandwidthBytesPerSecond: 50e9}, false, "BelowThreshold", "to n2: bandwidth 4.5e+10 B/s below 5e+10; mlx5_0/1 HCA loopback"},
		"failed":                  {Round{Results: []Result{bw}, Failures: []Failure{{Kind: KindSendLat, Peer: "n2", Err: "peer: busy"}}}, th, th, false, "ProbeFailed", "1 of 2 probes failed; n2 send_lat: peer: busy"},
		"loopback failed":         {Round{Failures: []Failure{{Kind: KindWriteBW, Port: "rxe0/1", Err: "x"}}}, th, th, false, "LoopbackFailed", "rxe0/1 HCA loopback write_bw"},
		"peer failure first":      {Round{Failures: []Failure{{Kind: KindWriteBW, Port: "rxe0/1", Err: "x"}, {Kind: KindWriteBW, Peer: "n2", Err: "y"}}}, th, th, false, "ProbeFailed", "2 of 2 probes failed; n2 write_bw: y"},
		"none":                    {Round{}, th, th, false, "NoProbe", ""},
		// Per rail: the verdict names the rail that failed or fell short.
		"rail failed": {Round{Results: []Result{rail0}, Failures: []Failure{{Kind: KindWriteBW, Peer: "n2", Port: "mlx5_1/1", Rail: new(1), Err: "rail 1 (mlx5_1/1): peer: unavailable: rail 1: this node's rail 1 (mlx5_1/1) is DOWN"}}}, th, th, false, "ProbeFailed",
			"1 of 2 probes failed; n2 rail 1 (mlx5_1/1) write_bw: rail 1 (mlx5_1/1): peer: unavailable"},
		"rail slow": {Round{Results: []Result{rail0}}, Thresholds{MinBandwidthBytesPerSecond: 50e9}, Thresholds{}, false, "BelowThreshold", "rail 0: mlx5_0/1 to n2 mlx5_4: bandwidth 4.5e+10 B/s below 5e+10"},
		// The TCP baseline is for comparison: neither its slowness nor its
		// failure decides whether RDMA is verified.
		"tcp baseline": {Round{Results: []Result{bw, lat, {Kind: KindTCPBW, Peer: "n2", BytesPerSecond: 1e6}}, Failures: []Failure{{Kind: KindTCPLat, Peer: "n2", Err: "reset"}}}, th, th, true, "ProbesPassed", ""},
		"unavailable":  {Round{Unavailable: "RDMA probes unavailable: no kernel"}, th, th, false, "ProbesUnavailable", "no kernel"},
	} {
		v := tc.r.Verdict(tc.peer, tc.loop)
		if v.Verified != tc.ok || v.Reason != tc.reason || !strings.Contains(v.Message, tc.msg) {
			t.Errorf("%s: %+v", name, v)
		}
	}
}

// perftest's other kinds are judged like the two they stand beside:
// read_bw by the bandwidth thresholds, write_lat by the latency one; and
// a round runs the kinds it is configured with.
func TestOtherKindsThresholdsAndRounds(t *testing.T) {
	port := Port{Device: "mlx5_0", Port: 1, RateGbps: 400, DataRateGbps: 400}
	read := Result{Kind: KindReadBW, Local: port, Peer: "n2", BytesPerSecond: 45e9, LineRateFraction: 0.9}
	wlat := Result{Kind: KindWriteLat, Local: port, Peer: "n2", Latency: &verbs.Latency{P50: 3 * time.Microsecond}}
	if err := (Thresholds{MinBandwidthBytesPerSecond: 50e9}).Check(read); err == nil || !strings.Contains(err.Error(), "bandwidth 4.5e+10 B/s below 5e+10") {
		t.Errorf("read_bw below the bandwidth threshold: %v", err)
	}
	if err := (Thresholds{MinLineRateFraction: 0.95}).Check(read); err == nil || !strings.Contains(err.Error(), "90.0% of line rate") {
		t.Errorf("read_bw below the line-rate threshold: %v", err)
	}
	if err := (Thresholds{MaxLatencyP50: 2 * time.Microsecond}).Check(wlat); err == nil || !strings.Contains(err.Error(), "p50 latency 3µs above 2µs") {
		t.Errorf("write_lat above the latency threshold: %v", err)
	}

	s := &Scheduler{Timeout: time.Minute}
	if got := kindsOf(s.requests(false)); !slices.Equal(got, []string{KindWriteBW, KindSendLat}) {
		t.Errorf("default kinds %v", got)
	}
	s.Kinds, s.TCPBaseline = []string{KindReadBW, KindWriteLat}, true
	if got := kindsOf(s.requests(true)); !slices.Equal(got, []string{KindReadBW, KindWriteLat, KindTCPBW, KindTCPLat}) {
		t.Errorf("configured kinds %v", got)
	}
}

func kindsOf(rs []Request) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Kind)
	}
	return out
}
