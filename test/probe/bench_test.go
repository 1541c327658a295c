package probe_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/rdma/probe"
)

const benchRounds = 7

// benchScript: paired runs, ours then perftest, per round, and the TCP
// baseline over the same port.
var benchScript = common + `
for round in $(seq 1 ` + fmt.Sprint(benchRounds) + `); do
	ours ours-bw-$round --kind bw --size 65536 --iterations 1500 --depth 128
	perf perf-bw-$round ib_write_bw -s 65536 -n 1500 -t 128
	ours ours-lat-$round --kind lat --size 2 --iterations 1000
	perf perf-lat-$round ib_send_lat -s 2 -n 1000
done
ours tcp --tcp --iterations 1500
`

// BenchmarkProbeVsPerftest reports our probe over perftest for RDMA WRITE
// bandwidth (goal >= 0.95) and SEND/RECV p50 latency (goal <= 1.10), each
// the median of paired runs in one soft-RoCE VM session, and RDMA against
// the TCP baseline. One VM session however large b.N is: the figures are
// ratios measured side by side, not the benchmark's own timing.
func BenchmarkProbeVsPerftest(b *testing.B) {
	cfg := machine(b, benchScript)
	cfg.Exclusive = true
	secs := runVM(b, cfg)
	p := collect(b, secs, benchRounds)
	var bwRatios, latRatios []float64
	for i := range p.oursBW {
		bwRatios = append(bwRatios, p.oursBW[i]/p.perfBW[i])
	}
	for i := range p.oursLat {
		latRatios = append(latRatios, p.oursLat[i]/p.perfLat[i])
	}
	tcp := parseReport(b, secs, "tcp")
	var rdmaBW, tcpBW probe.Result
	var rdmaLat, tcpLat probe.Result
	for _, r := range tcp.Results {
		switch r.Kind {
		case probe.KindWriteBW:
			rdmaBW = r
		case probe.KindTCPBW:
			tcpBW = r
		case probe.KindSendLat:
			rdmaLat = r
		case probe.KindTCPLat:
			tcpLat = r
		}
	}
	b.ReportMetric(median(bwRatios), "bw-ours/perftest")
	b.ReportMetric(median(latRatios), "lat-p50-ours/perftest")
	b.ReportMetric(rdmaBW.BytesPerSecond/tcpBW.BytesPerSecond, "bw-rdma/tcp")
	b.ReportMetric(rdmaLat.Latency.P50.Seconds()/tcpLat.Latency.P50.Seconds(), "lat-p50-rdma/tcp")
	b.ReportMetric(rdmaBW.CPUSecondsPerGB/tcpBW.CPUSecondsPerGB, "cpu-per-GB-rdma/tcp")
	b.Logf("bandwidth ratios %s; latency ratios %s", fmts(bwRatios), fmts(latRatios))
	b.Logf("RDMA WRITE %.1f MB/s %.2f CPU s/GB, p50 %s; TCP %.1f MB/s %.2f CPU s/GB, p50 %s",
		rdmaBW.BytesPerSecond/1e6, rdmaBW.CPUSecondsPerGB, rdmaLat.Latency.P50, tcpBW.BytesPerSecond/1e6, tcpBW.CPUSecondsPerGB, tcpLat.Latency.P50)
	for range b.N {
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmts(v []float64) string {
	var out []string
	for _, x := range v {
		out = append(out, fmt.Sprintf("%.3f", x))
	}
	return strings.Join(out, " ")
}
