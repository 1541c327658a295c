// Package probe_test proves the RDMA probes on a real kernel: soft-RoCE
// (rdma_rxe) in a QEMU VM, where gpunode-agent discovers rxe0, its
// loopback probes run beside perftest's ib_write_bw and ib_send_lat with
// the same parameters, and two agents probe each other over the
// authenticated control channel, including a wrong token and peers killed
// mid-probe.
//
// The two agents share one network namespace and rxe0: on this kernel
// (6.1) rxe's UDP socket lives in the initial namespace only, so rxe in a
// second namespace never receives (measured: perftest between two
// namespaces over veth hangs), and two rxe devices in one namespace route
// to each other through loopback, which rxe delivers to the sending
// device. TestPeerProbeAcrossTwoVMs takes the probe across a wire between
// two VMs instead.
package probe_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/test/vm"
)

// The parameters both tools get: ib_write_bw's and ib_send_lat's
// defaults, with fewer writes (1500, not 5000) to keep the TCG run short.
const (
	bwSize, bwIters, bwDepth = 65536, 1500, 128
	latSize, latIters        = 2, 1000
	rounds                   = 4
)

// common is the start of every VM script: rxe0 on eth0, the RoCE v2 IPv4
// GID index, and perf, which runs a perftest server and client on rxe0
// and prints the client's result line, retrying when perftest refuses to
// report under TCG ("Correlation coefficient").
const common = `
rdma link add rxe0 type rxe netdev eth0
port=/sys/class/infiniband/rxe0/ports/1
gid=
for f in $port/gid_attrs/types/*; do
	i=${f##*/}
	case "$(cat $port/gids/$i)" in 0000:0000:0000:0000:0000:ffff:*)
		[ "$(cat $f 2>/dev/null)" = "RoCE v2" ] && [ -z "$gid" ] && gid=$i;;
	esac
done
echo "gid=$gid"
perf() {
	name=$1; tool=$2; shift 2
	try=1
	while [ $try -le 5 ]; do
		$tool -d rxe0 -x $gid -F "$@" > /tmp/perf-server.log 2>&1 &
		srv=$!
		sleep 1
		$tool -d rxe0 -x $gid -F "$@" 127.0.0.1 > /tmp/perf-client.log 2>&1
		wait $srv
		line=$(grep -E '^ *[0-9]+ +[0-9]+ +[0-9.]+' /tmp/perf-client.log | tail -n1)
		if [ -n "$line" ]; then
			echo "== $name"; echo "$line"; echo "== end"
			return
		fi
		echo "perftest $tool try $try gave no result: $(grep -i -m1 -E 'correlation|error|fail' /tmp/perf-client.log)"
		try=$((try+1))
	done
}
ours() {
	name=$1; shift
	echo "== $name"; gpunode-agent probe loopback -o json "$@"; echo "== rc $?"
}
`

// proofScript: discovery, then paired runs (ours, perftest, twice each,
// alternating so host load hits both alike), then the peer probes.
const proofScript = common + `
echo "== inspect"; gpunode-agent inspect -o json; echo "== rc $?"
for round in 1 2 3 4; do
	ours ours-bw-$round --kind bw --size 65536 --iterations 1500 --depth 128
	perf perf-bw-$round ib_write_bw -s 65536 -n 1500 -t 128
	ours ours-lat-$round --kind lat --size 2 --iterations 1000
	perf perf-lat-$round ib_send_lat -s 2 -n 1000
done

# Two agents: a server on the RoCE address, clients connecting to it.
printf 'probe-token-for-the-vm-test-0001\n' > /tmp/token
printf 'a-different-token-of-enough-length\n' > /tmp/wrong
gpunode-agent --log.level=debug probe serve --listen 10.0.2.15:9836 --token-file /tmp/token > /tmp/serve.log 2>&1 &
server=$!
sleep 2
peer() { gpunode-agent probe --token-file /tmp/token "$@" --peer 10.0.2.15; }
echo "== res-start"; rdma res show; echo "== end"
echo "== peer-bw"; peer bw --tcp --iterations 2000 -o json; echo "== rc $?"
echo "== peer-lat"; peer lat --tcp -o json; echo "== rc $?"
echo "== wrong-token"; gpunode-agent probe --token-file /tmp/wrong bw --peer 10.0.2.15 2>&1; echo "== rc $?"

# A client killed mid-probe: the server's responder loop must end and
# release its queue pair, and the server must take the next probe.
# It is killed once both ends hold their queue pairs (the endpoints are
# exchanged, the measurement runs), not after a fixed time: on a loaded
# machine the client may still be setting up after seconds.
qps() { rdma res show qp 2>/dev/null | wc -l; }
qps_before=$(qps)
gpunode-agent probe --token-file /tmp/token lat --peer 10.0.2.15 --iterations 1000000 > /tmp/killed.log 2>&1 &
client=$!
i=0
while [ "$(qps)" -lt $((qps_before + 2)) ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
sleep 1
kill -9 $client; wait $client
sleep 2
echo "== res-after-client-kill"; rdma res show; echo "== end"
echo "== peer-after-kill"; peer bw --iterations 500 -o json; echo "== rc $?"

# The server killed mid-probe: the client ends with an error, promptly.
gpunode-agent probe --token-file /tmp/token bw --peer 10.0.2.15 --duration 60s > /tmp/orphan.log 2>&1 &
client=$!
sleep 3
t0=$(cut -d. -f1 /proc/uptime)
kill -9 $server
wait $client
rc=$?
t1=$(cut -d. -f1 /proc/uptime)
echo "== server-kill"; cat /tmp/orphan.log; echo "== rc $rc"
echo "== server-kill-time"; echo "$((t1-t0))"; echo "== end"
sleep 1
echo "== res-end"; rdma res show; echo "== end"
echo "== serve-log"; cat /tmp/serve.log; echo "== end"

# The daemon with probes on (standalone: loopback only) publishes a
# verified round in its metrics, labels and condition: the HCA checked
# against the loopback thresholds, the peers' (which it would miss) not
# applied, and no line rate.
printf 'metrics:\n  listenAddress: 127.0.0.1:9835\nprobe:\n  enabled: true\n  listenAddress: 127.0.0.1:19836\n  tokenFile: /tmp/token\n  interval: 2m\n  timeout: 30s\n  thresholds:\n    minBandwidthBytesPerSecond: 1e12\n    minLineRateFraction: 0.99\n  loopbackThresholds:\n    minBandwidthBytesPerSecond: 1000000\n    maxLatencyP50: 100ms\n' > /tmp/agent.yaml
gpunode-agent run --config /tmp/agent.yaml > /tmp/agent.log 2>&1 &
agent=$!
i=0
while [ $i -lt 120 ] && ! grep -q 'RDMA probe round' /tmp/agent.log; do sleep 0.5; i=$((i+1)); done
sleep 1
echo "== daemon-metrics"; wget -qO- http://127.0.0.1:9835/metrics | grep '^gpunode_rdma_probe'; echo "== end"
kill $agent; wait $agent
echo "== daemon-log"; cat /tmp/agent.log; echo "== end"
`

// window is the range ours/perftest must fall in, lo..hi, widened by
// perftest's own scatter between its rounds (max over min) when that
// exceeds 1.1x: a loaded host preempts the TCG vCPUs for whole ticks and
// scatters both tools' rounds alike (measured: perftest's own best and
// worst 1.5x apart on an idle 2-core host, 5x at a load of 20), and no
// comparison is tighter than the reference's own scatter. On a quiet
// host the window is the goal itself.
func window(perf []float64, lo, hi float64) (wlo, whi, spread float64) {
	spread = slices.Max(perf) / slices.Min(perf)
	if spread > 1.1 {
		return lo / spread, hi * spread, spread
	}
	return lo, hi, spread
}

// section is one "== name" ... "== end" / "== rc N" block.
type section struct {
	body string
	rc   int // -1 for "== end"
}

var sectionRE = regexp.MustCompile(`(?ms)^== ([a-z0-9-]+)\n(.*?)^== (end|rc (\d+))\n`)

func sections(out string) map[string]section {
	m := map[string]section{}
	for _, s := range sectionRE.FindAllStringSubmatch(out, -1) {
		rc := -1
		if s[4] != "" {
			rc, _ = strconv.Atoi(s[4])
		}
		m[s[1]] = section{body: s[2], rc: rc}
	}
	return m
}

// report is `probe ... -o json`.
type report struct {
	Results []probe.Result `json:"results"`
	Errors  []string       `json:"errors"`
}

func parseReport(t testing.TB, secs map[string]section, name string) report {
	t.Helper()
	s, ok := secs[name]
	if !ok {
		t.Fatalf("section %s missing", name)
	}
	var r report
	if err := json.Unmarshal([]byte(s.body), &r); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, s.body)
	}
	if s.rc != 0 || len(r.Errors) > 0 {
		t.Fatalf("%s: exit %d, errors %v", name, s.rc, r.Errors)
	}
	return r
}

func find(t testing.TB, r report, kind string) probe.Result {
	t.Helper()
	for _, res := range r.Results {
		if res.Kind == kind {
			return res
		}
	}
	t.Fatalf("no %s result in %+v", kind, r)
	return probe.Result{}
}

// perftest's result lines: ib_write_bw "#bytes #iterations BW-peak
// BW-average MsgRate" with MB = 2^20 bytes; ib_send_lat "#bytes
// #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9%" in usec.
func perfFields(t testing.TB, secs map[string]section, name string, n int) []float64 {
	t.Helper()
	s, ok := secs[name]
	if !ok {
		t.Fatalf("perftest section %s missing (perftest refused five times?)", name)
	}
	fs := strings.Fields(s.body)
	if len(fs) < n {
		t.Fatalf("%s: result line %q", name, s.body)
	}
	var out []float64
	for _, f := range fs[:n] {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", name, s.body, err)
		}
		out = append(out, v)
	}
	return out
}

// paired are the figures of one VM run: ours and perftest's per round.
type paired struct {
	oursBW, perfBW   []float64 // bytes/s
	oursLat, perfLat []float64 // p50 / t_typical, seconds
}

func collect(t testing.TB, secs map[string]section, rounds int) paired {
	t.Helper()
	var p paired
	for i := 1; i <= rounds; i++ {
		bw := find(t, parseReport(t, secs, fmt.Sprintf("ours-bw-%d", i)), probe.KindWriteBW)
		if bw.Size != bwSize || bw.Iterations != bwIters || bw.Depth != bwDepth || bw.Bytes != bwSize*bwIters {
			t.Errorf("round %d: our bandwidth run %+v", i, bw)
		}
		p.oursBW = append(p.oursBW, bw.BytesPerSecond)
		pf := perfFields(t, secs, fmt.Sprintf("perf-bw-%d", i), 5)
		if pf[0] != bwSize || pf[1] != bwIters {
			t.Errorf("perftest bandwidth line %v", pf)
		}
		perfBps := pf[3] * (1 << 20)
		// The unit check: MsgRate (Mpps) x size agrees with BW average.
		if msg := pf[4] * 1e6 * bwSize; msg < perfBps*0.9 || msg > perfBps*1.1 {
			t.Errorf("perftest BW average %.0f B/s disagrees with its message rate %.0f B/s: MB is not 2^20 bytes?", perfBps, msg)
		}
		p.perfBW = append(p.perfBW, perfBps)

		lat := find(t, parseReport(t, secs, fmt.Sprintf("ours-lat-%d", i)), probe.KindSendLat)
		l := lat.Latency
		if l == nil || l.Samples != latIters || !(l.Min <= l.P50 && l.P50 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) || l.Min <= 0 {
			t.Errorf("round %d: our latency %+v", i, l)
			continue
		}
		p.oursLat = append(p.oursLat, l.P50.Seconds())
		pl := perfFields(t, secs, fmt.Sprintf("perf-lat-%d", i), 5)
		p.perfLat = append(p.perfLat, pl[4]/1e6)
	}
	return p
}

func runVM(t testing.TB, cfg vm.Config) map[string]section {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Minute
	}
	res, err := vm.Run(context.Background(), cfg)
	t.Logf("VM: boot to init %.1fs, whole run %s", res.BootSeconds, res.Wall.Round(100*time.Millisecond))
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, res.Output)
	}
	if res.ExitCode != 0 {
		t.Fatalf("script exit %d\n%s", res.ExitCode, res.Output)
	}
	secs := sections(res.Output)
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("GPUNODE_VM_OUTPUT") != "" {
			t.Logf("VM output:\n%s", res.Output)
		}
	})
	return secs
}

func TestProbesOnSoftRoCE(t *testing.T) {
	cfg := machine(t, proofScript)
	cfg.Exclusive = true // it compares our timings with perftest's
	// Both tools read the TSC, as on real hosts (see
	// TestProbeKindsVsPerftest): without it the guest's clock is the
	// emulated HPET, which only our stamps pay for.
	cfg.Cmdline = "tsc=reliable"
	secs := runVM(t, cfg)

	// Discovery: rxe0 is RoCE with its GIDs on eth0.
	s := secs["inspect"]
	var snap snapshot.Snapshot
	if err := json.Unmarshal([]byte(s.body), &snap); err != nil || s.rc != 0 {
		t.Fatalf("inspect: exit %d, %v", s.rc, err)
	}
	i := slices.IndexFunc(snap.RDMADevices, func(d rdma.Device) bool { return d.Name == "rxe0" })
	if i < 0 {
		t.Fatalf("inspect found no rxe0: %+v", snap.RDMADevices)
	}
	rxe := snap.RDMADevices[i]
	if len(rxe.Ports) != 1 || rxe.Ports[0].Transport != "roce" || rxe.Ports[0].Netdev != "eth0" || !rxe.Ports[0].Active() || !rxe.VerbsDevicePresent {
		t.Errorf("rxe0 as discovered: %+v", rxe)
	}
	if !slices.ContainsFunc(rxe.Ports[0].GIDs, func(g rdma.GID) bool {
		return g.Type == "RoCE v2" && g.GID == "0000:0000:0000:0000:0000:ffff:0a00:020f"
	}) {
		t.Errorf("rxe0 has no RoCE v2 GID for 10.0.2.15: %+v", rxe.Ports[0].GIDs)
	}

	// Ours beside perftest, best of four rounds each: host load (this
	// machine's other work) only ever slows a TCG run down, by up to half;
	// the bounds widen by perftest's own scatter (window). Two of six runs
	// on an idle 2-core host failed without it (7 December 2026), one with
	// perftest's rounds at 30.6-46.0 MB/s and ours at 30.9-38.5: best
	// against best 0.84, paired rounds 0.76-1.13.
	p := collect(t, secs, rounds)
	if t.Failed() {
		return
	}
	oursBW, perfBW := slices.Max(p.oursBW), slices.Max(p.perfBW)
	oursLat, perfLat := slices.Min(p.oursLat), slices.Min(p.perfLat)
	t.Logf("RDMA WRITE %d B x %d depth %d: ours %.1f MB/s, ib_write_bw %.1f MB/s (ratio %.3f); rounds ours %v perftest %v",
		bwSize, bwIters, bwDepth, oursBW/1e6, perfBW/1e6, oursBW/perfBW, mbs(p.oursBW), mbs(p.perfBW))
	t.Logf("SEND/RECV %d B x %d: ours p50 %.2f us, ib_send_lat typical %.2f us (ratio %.3f); rounds ours %v perftest %v",
		latSize, latIters, oursLat*1e6, perfLat*1e6, oursLat/perfLat, uss(p.oursLat), uss(p.perfLat))
	if lo, _, spread := window(p.perfBW, 0.9, 0); oursBW < lo*perfBW {
		t.Errorf("our bandwidth %.1f MB/s is below %.2f x perftest's %.1f MB/s (perftest's rounds %.2fx apart)", oursBW/1e6, lo, perfBW/1e6, spread)
	}
	if _, hi, spread := window(p.perfLat, 0, 1.5); oursLat > hi*perfLat {
		t.Errorf("our p50 latency %.2f us is above %.2f x perftest's typical %.2f us (perftest's rounds %.2fx apart)", oursLat*1e6, hi, perfLat*1e6, spread)
	}

	// Peer probes between two agents, RDMA and the TCP baseline.
	bw := parseReport(t, secs, "peer-bw")
	rb, tb := find(t, bw, probe.KindWriteBW), find(t, bw, probe.KindTCPBW)
	if rb.Peer != "10.0.2.15:9836" || rb.Local.Device != "rxe0" || rb.Local.IP != "10.0.2.15" || rb.Bytes != 2000*bwSize || rb.BytesPerSecond <= 0 {
		t.Errorf("peer RDMA bandwidth %+v", rb)
	}
	if rb.LineRateFraction <= 0 || rb.LineRateFraction > 1 || rb.PeerDataRateGbps != 2.5 {
		t.Errorf("line rate fraction %v of 2.5 Gb/s, the peer's rate %v (its port frame)", rb.LineRateFraction, rb.PeerDataRateGbps)
	}
	if tb.Bytes != 2000*bwSize || tb.BytesPerSecond <= 0 || tb.CPUSecondsPerGB <= 0 || rb.CPUSecondsPerGB <= 0 {
		t.Errorf("peer TCP bandwidth %+v", tb)
	}
	lat := parseReport(t, secs, "peer-lat")
	rl, tl := find(t, lat, probe.KindSendLat), find(t, lat, probe.KindTCPLat)
	if rl.Latency == nil || rl.Latency.Samples != latIters || tl.Latency == nil || tl.Latency.Samples != latIters {
		t.Errorf("peer latency: RDMA %+v TCP %+v", rl.Latency, tl.Latency)
	} else {
		t.Logf("peer: RDMA %.1f MB/s %.1f CPU s/GB, p50 %s; TCP %.1f MB/s %.1f CPU s/GB, p50 %s",
			rb.BytesPerSecond/1e6, rb.CPUSecondsPerGB, rl.Latency.P50, tb.BytesPerSecond/1e6, tb.CPUSecondsPerGB, tl.Latency.P50)
	}

	// A wrong token is refused, and the server says so.
	if w := secs["wrong-token"]; w.rc != 1 || !strings.Contains(w.body, "unauthorized") {
		t.Errorf("wrong token: exit %d: %s", w.rc, w.body)
	}
	serveLog := secs["serve-log"].body
	if !strings.Contains(serveLog, "wrong probe token") {
		t.Errorf("the server did not log the refused token:\n%s", serveLog)
	}

	// A killed client: the server released its QP (the counts are back
	// to what they were) and answered the next probe.
	start, afterKill := resCounts(t, secs["res-start"].body), resCounts(t, secs["res-after-client-kill"].body)
	if start == "" || start != afterKill {
		t.Errorf("RDMA resources before %q and after a killed client %q differ: the server leaked", start, afterKill)
	}
	if !strings.Contains(serveLog, "peer went away mid-probe") {
		t.Errorf("the server did not notice the killed client:\n%s", serveLog)
	}
	find(t, parseReport(t, secs, "peer-after-kill"), probe.KindWriteBW)

	// A killed server: the client fails cleanly and promptly.
	k := secs["server-kill"]
	if k.rc != 1 || !strings.Contains(k.body, "went away mid-probe") {
		t.Errorf("client of a killed server: exit %d: %s", k.rc, k.body)
	}
	if n, err := strconv.Atoi(strings.TrimSpace(secs["server-kill-time"].body)); err != nil || n > 10 {
		t.Errorf("the client took %q seconds to notice the killed server", secs["server-kill-time"].body)
	}
	if end := resCounts(t, secs["res-end"].body); end != start {
		t.Errorf("RDMA resources at the end %q, at the start %q", end, start)
	}

	// The daemon's round on rxe0: metrics, the verified label and RDMAReady.
	m := secs["daemon-metrics"].body
	for _, want := range []string{
		`gpunode_rdma_probe_bandwidth_bytes_per_second{device="rxe0",gpu="",kind="write_bw",memory="host",peer="loopback",peer_device="",port="1"} `,
		`gpunode_rdma_probe_latency_seconds{device="rxe0",gpu="",kind="send_lat",memory="host",peer="loopback",peer_device="",port="1",quantile="0.5"} `,
		`gpunode_rdma_probe_success{device="rxe0",gpu="",kind="send_lat",memory="host",peer="loopback",peer_device="",port="1"} 1`,
		`gpunode_rdma_probe_success{device="rxe0",gpu="",kind="write_bw",memory="host",peer="loopback",peer_device="",port="1"} 1`,
		`gpunode_rdma_probe_last_run_timestamp_seconds `,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("daemon metrics lack %s:\n%s", want, m)
		}
	}
	if strings.Contains(m, "gpunode_rdma_probe_line_rate_ratio") {
		t.Errorf("a loopback probe exported a line-rate ratio:\n%s", m)
	}
	dl := secs["daemon-log"].body
	for _, want := range []string{"verified=true reason=LoopbackPassed", "key=gpunode.dev/rdma.verified value=true", "key=hardware.llm-d.ai/rdma value=enabled"} {
		if !strings.Contains(dl, want) {
			t.Errorf("daemon log lacks %q:\n%s", want, dl)
		}
	}
}

// resCounts is rdma res show's line for rxe0 ("pd 1 cq 1 qp 1 ...").
func resCounts(t testing.TB, s string) string {
	t.Helper()
	for line := range strings.Lines(s) {
		if _, rest, ok := strings.Cut(line, "rxe0: "); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Errorf("no rxe0 in rdma res show: %q", s)
	return ""
}

func mbs(v []float64) []string {
	var out []string
	for _, x := range v {
		out = append(out, strconv.FormatFloat(x/1e6, 'f', 1, 64))
	}
	return out
}

func uss(v []float64) []string {
	var out []string
	for _, x := range v {
		out = append(out, strconv.FormatFloat(x*1e6, 'f', 2, 64))
	}
	return out
}
