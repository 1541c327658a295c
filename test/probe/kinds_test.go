package probe_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gpunode/gpunode/rdma/probe"
)

// kindRounds of paired runs per kind: few, to keep the VM's time short.
const kindRounds = 3

// kindCase is one of perftest's other tests beside ours, with the same
// parameters: ib_read_bw, ib_write_lat, ib_write_bw -b and -q 2. What
// perftest 4.5 picks itself on rxe (it prints them): MTU 1024 (the port's
// active MTU, as ours), 128 outstanding reads (max_qp_rd_atom, as ours),
// a completion per request for messages over 8 KiB (ours for READs;
// writes keep one per 64, see gn_bw), and no
// inline data (rxe is a device it does not know; ours inlines the 2 B of
// write_lat, as perftest does on the devices it knows).
type kindCase struct {
	name, kind string
	ours, perf string // the helpers' arguments
	latency    bool
	qps        int
	bidir      bool
}

var kindCases = []kindCase{
	// ib_read_bw's default 1000 READs: in runs of 200 (about 0.27 s under
	// TCG) perftest's figure carried a fixed 20-40 ms more than ours, and
	// ours read 1.07-1.14x perftest's in every run; at 1000 the two agree
	// (14 paired rounds, both orders: median 0.99, best 1.04) and at 2000
	// too (best 1.06), so the bias was startup, not the READ loop.
	{name: "read", kind: probe.KindReadBW, ours: "--kind read_bw --size 65536 --iterations 1000 --depth 128",
		perf: "ib_read_bw -s 65536 -n 1000 -t 128"},
	{name: "wlat", kind: probe.KindWriteLat, ours: "--kind write_lat --size 2 --iterations 500",
		perf: "ib_write_lat -s 2 -n 500", latency: true},
	{name: "bidir", kind: probe.KindWriteBW, ours: "--kind write_bw --bidir --size 65536 --iterations 200 --depth 128",
		perf: "ib_write_bw -b -s 65536 -n 200 -t 128", bidir: true},
	// 500 per QP, not 100, for the same reason as read's 1000.
	{name: "qps", kind: probe.KindWriteBW, ours: "--kind write_bw --qps 2 --size 65536 --iterations 500 --depth 128",
		perf: "ib_write_bw -q 2 -s 65536 -n 500 -t 128", qps: 2},
}

// kindsScript alternates ours and perftest per round and kind, so host
// load hits both alike; the sweep runs once, two round trips per size
// (8 MiB ones take a while under TCG).
func kindsScript() string {
	s := common + "for round in $(seq 1 " + fmt.Sprint(kindRounds) + "); do\n"
	for _, c := range kindCases {
		s += fmt.Sprintf("\tours ours-%s-$round %s\n\tperf perf-%s-$round %s\n", c.name, c.ours, c.name, c.perf)
	}
	s += "done\n"
	s += "ours sweep --kind write_lat --sweep --iterations 2\n"
	// The new kinds between two agents (protocol version 3).
	s += `printf 'probe-token-for-the-vm-test-0001\n' > /tmp/token
gpunode-agent probe serve --listen 10.0.2.15:9836 --token-file /tmp/token > /tmp/serve.log 2>&1 &
server=$!
sleep 2
peer() { gpunode-agent probe --token-file /tmp/token "$@" --peer 10.0.2.15 -o json; }
echo "== peer-read"; peer bw --kind read_bw --qps 2 --bidir --iterations 200; echo "== rc $?"
echo "== peer-wlat"; peer lat --kind write_lat --iterations 500; echo "== rc $?"
kill $server; wait $server
echo "== serve-log"; cat /tmp/serve.log; echo "== end"
`
	return s
}

// perftest's other tests beside ours in one soft-RoCE VM: RDMA READ
// bandwidth, RDMA WRITE latency, bidirectional and two-QP RDMA WRITE
// bandwidth each within 0.9x..1.1x of perftest's figure (the best round
// of each: host load only ever slows a TCG run down); and the sweep.
func TestProbeKindsVsPerftest(t *testing.T) {
	cfg := machine(t, kindsScript())
	cfg.Exclusive = true // it compares our timings with perftest's
	// The guest kernel finds the TCG vCPUs' TSCs unsynchronised and
	// falls back to the HPET, whose every read is an emulated device
	// access: our clock_gettime stamps then cost about 1 us more per half
	// round trip than perftest's raw rdtsc (measured in one guest, HPET
	// against TSC, alternating: write_lat p50 +0.5..1.6 us). With the TSC
	// as clock source both tools read the same counter, as on real hosts.
	cfg.Cmdline = "tsc=reliable"
	// Some 30 short runs under TCG: a loaded host needs more than the
	// usual 5 minutes.
	cfg.Timeout = 8 * time.Minute
	dirs := filepath.Dir(filepath.Dir(filepath.Dir(cfg.Binaries[1]))) // perftest's unpacked root
	cfg.Binaries = append(cfg.Binaries, filepath.Join(dirs, "usr/bin/ib_read_bw"), filepath.Join(dirs, "usr/bin/ib_write_lat"))
	secs := runVM(t, cfg)

	for _, c := range kindCases {
		var ours, perf, ratios []float64
		for i := 1; i <= kindRounds; i++ {
			r := find(t, parseReport(t, secs, fmt.Sprintf("ours-%s-%d", c.name, i)), c.kind)
			pf := perfFields(t, secs, fmt.Sprintf("perf-%s-%d", c.name, i), 5)
			var o, p float64
			if c.latency {
				if r.Latency == nil || r.Latency.Samples != 500 || r.Latency.Min <= 0 {
					t.Fatalf("%s round %d: %+v", c.name, i, r)
				}
				// ib_write_lat: t_typical, usec.
				o, p = r.Latency.P50.Seconds(), pf[4]/1e6
			} else {
				if r.QPs != max(c.qps, 0) || r.Bidirectional != c.bidir || r.BytesPerSecond <= 0 {
					t.Fatalf("%s round %d: %+v", c.name, i, r)
				}
				if c.bidir && (r.ReverseBytes != r.Bytes || r.ReverseElapsed <= 0) {
					t.Errorf("%s round %d: the reverse direction %d B in %s, this one %d B", c.name, i, r.ReverseBytes, r.ReverseElapsed, r.Bytes)
				}
				// BW average, MB = 2^20 bytes; for -b and -q perftest
				// reports the sum, as we do.
				o, p = r.BytesPerSecond, pf[3]*(1<<20)
			}
			ours, perf, ratios = append(ours, o), append(perf, p), append(ratios, o/p)
		}
		best := slices.Max[[]float64]
		if c.latency {
			best = slices.Min[[]float64]
		}
		ratio := best(ours) / best(perf)
		// The goal is 0.9..1.1, widened by perftest's own scatter (see
		// window).
		lo, hi, spread := window(perf, 0.9, 1.1)
		t.Logf("%s (%s): ours/perftest best %.3f (window %.2f..%.2f, perftest's rounds %.2fx apart); per round %s; ours %s perftest %s",
			c.name, c.perf, ratio, lo, hi, spread, fmts(ratios), figs(ours, c.latency), figs(perf, c.latency))
		if ratio < lo || ratio > hi {
			t.Errorf("%s: ours/perftest %.3f outside %.2f..%.2f", c.name, ratio, lo, hi)
		}
	}

	// Between two agents: both directions of two QPs' READs, and the
	// write ping-pong, over the control channel's version 3 frames.
	pr := find(t, parseReport(t, secs, "peer-read"), probe.KindReadBW)
	if pr.QPs != 2 || !pr.Bidirectional || pr.Bytes != 2*200*65536 || pr.ReverseBytes != 2*200*65536 || pr.BytesPerSecond <= 0 ||
		pr.LineRateFraction <= 0 || pr.Peer != "10.0.2.15:9836" {
		t.Errorf("peer read_bw, 2 QPs both ways: %+v", pr)
	}
	pl := find(t, parseReport(t, secs, "peer-wlat"), probe.KindWriteLat)
	if pl.Latency == nil || pl.Latency.Samples != 500 || pl.Latency.Min <= 0 {
		t.Errorf("peer write_lat: %+v", pl)
	} else {
		t.Logf("peer: read_bw 2 QPs both ways %.1f MB/s; write_lat p50 %s", pr.BytesPerSecond/1e6, pl.Latency.P50)
	}

	sweep := parseReport(t, secs, "sweep")
	var sizes []int
	for _, r := range sweep.Results {
		if r.Kind != probe.KindWriteLat || r.Latency == nil || r.Latency.Samples != 2 {
			t.Errorf("sweep result %+v", r)
		}
		sizes = append(sizes, r.Size)
	}
	if len(sizes) != 23 || sizes[0] != 2 || sizes[22] != 8<<20 || !slices.IsSorted(sizes) {
		t.Errorf("sweep sizes %v", sizes)
	}
}

// figs prints MB/s, or microseconds for latency.
func figs(v []float64, latency bool) []string {
	if latency {
		return uss(v)
	}
	return mbs(v)
}
