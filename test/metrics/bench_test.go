package metrics

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchScrapes is how many scrapes each exporter serves in the benchmark.
const benchScrapes = 10_000

// scrapeHeaders are what Prometheus 2.x sends.
var scrapeHeaders = http.Header{
	"Accept":          {"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"},
	"Accept-Encoding": {"gzip"},
}

// target is an exporter under benchmark.
type target struct {
	name      string
	url       string
	pid       int
	latencies []time.Duration
	wire      int // bytes on the wire (gzip) of the last scrape
	plain     int // uncompressed
}

func (tg *target) scrape(b *testing.B, client *http.Client) {
	req, _ := http.NewRequest(http.MethodGet, tg.url, nil)
	req.Header = scrapeHeaders
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	tg.latencies = append(tg.latencies, time.Since(start))
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: %d %v", tg.name, resp.StatusCode, err)
	}
	tg.wire = len(body)
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, zr)
		tg.plain = int(n)
	} else {
		tg.plain = len(body)
	}
}

// procStats are a process's CPU time and resident memory from /proc.
func procStats(b *testing.B, pid int) (cpu time.Duration, rss int64) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	cpu = time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	return cpu, rss
}

// goStat reads one of an exporter's own Go runtime metrics.
func goStat(b *testing.B, url, name string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
	}
	b.Fatalf("%s: no %s", url, name)
	return 0
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkScrapeVsNodeExporter serves 10,000 scrapes from the agent on a
// simulated DGX H100 (its full /metrics: 8 GPUs, 8 InfiniBand ports, the
// agent's own, Go and process metrics) and 10,000 from node_exporter's
// infiniband collector on the same sysfs tree, alternately, as Prometheus
// asks (OpenMetrics, gzip) over loopback keep-alive connections. It
// reports each side's p50/p99 latency, bytes and allocations per scrape,
// CPU per scrape and RSS after the scrapes, and gpunode/node_exporter
// ratios. Run it with make bench.
func BenchmarkScrapeVsNodeExporter(b *testing.B) {
	a := startAgent(b, "--simulate=dgx-h100-ib")
	if a.root == "" {
		b.Fatal("no simulated tree in the agent's log")
	}
	nep, ne := startNodeExporter(b, a.root)
	targets := []*target{
		{name: "gpunode", url: "http://" + a.addr + "/metrics", pid: a.cmd.Process.Pid},
		{name: "node_exporter", url: "http://" + ne + "/metrics", pid: nep.cmd.Process.Pid},
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2, DisableCompression: true}}
	for range b.N {
		rssIdle := map[string]int64{}
		for _, tg := range targets {
			_, rssIdle[tg.name] = procStats(b, tg.pid)
		}
		for _, tg := range targets { // warm up: first GC cycles, connections
			for range 100 {
				tg.scrape(b, client)
			}
			tg.latencies = nil
		}
		type mark struct {
			cpu              time.Duration
			mallocs, allocBy float64
		}
		before := map[string]mark{}
		for _, tg := range targets {
			cpu, _ := procStats(b, tg.pid)
			before[tg.name] = mark{cpu, goStat(b, tg.url, "go_memstats_mallocs_total"), goStat(b, tg.url, "go_memstats_alloc_bytes_total")}
		}
		for range benchScrapes {
			for _, tg := range targets {
				tg.scrape(b, client)
			}
		}
		results := map[string]map[string]float64{}
		for _, tg := range targets {
			cpu, rss := procStats(b, tg.pid)
			m := before[tg.name]
			r := map[string]float64{
				"p50_ms":         ms(percentile(tg.latencies, 0.50)),
				"p99_ms":         ms(percentile(tg.latencies, 0.99)),
				"cpu_ms/scrape":  ms(cpu-m.cpu) / benchScrapes,
				"allocs/scrape":  (goStat(b, tg.url, "go_memstats_mallocs_total") - m.mallocs) / benchScrapes,
				"alloc_B/scrape": (goStat(b, tg.url, "go_memstats_alloc_bytes_total") - m.allocBy) / benchScrapes,
				"wire_B/scrape":  float64(tg.wire),
				"body_B/scrape":  float64(tg.plain),
				"rss_MiB_at_10k": float64(rss) / (1 << 20),
				"rss_MiB_idle":   float64(rssIdle[tg.name]) / (1 << 20),
			}
			results[tg.name] = r
			for k, v := range r {
				b.ReportMetric(v, tg.name+"_"+k)
			}
		}
		g, n := results["gpunode"], results["node_exporter"]
		b.ReportMetric(g["p50_ms"]/n["p50_ms"], "p50_ratio")
		b.ReportMetric(g["p99_ms"]/n["p99_ms"], "p99_ratio")
		b.ReportMetric(g["cpu_ms/scrape"]/n["cpu_ms/scrape"], "cpu_ratio")
		b.ReportMetric(g["rss_MiB_at_10k"]/n["rss_MiB_at_10k"], "rss_ratio")
		var lines []string
		for _, name := range []string{"gpunode", "node_exporter"} {
			r := results[name]
			lines = append(lines, fmt.Sprintf("%-13s p50 %.3f ms  p99 %.3f ms  cpu %.3f ms/scrape  %.0f allocs/scrape  %.0f B allocated/scrape  %.0f B on the wire (%.0f B plain)  RSS %.1f MiB idle, %.1f MiB after %d scrapes",
				name, r["p50_ms"], r["p99_ms"], r["cpu_ms/scrape"], r["allocs/scrape"], r["alloc_B/scrape"], r["wire_B/scrape"], r["body_B/scrape"],
				r["rss_MiB_idle"], r["rss_MiB_at_10k"], benchScrapes))
		}
		b.Logf("dgx-h100-ib, %d scrapes each, alternating:\n%s\nratios gpunode/node_exporter: p50 %.2f, p99 %.2f, cpu %.2f, RSS %.2f",
			benchScrapes, strings.Join(lines, "\n"), g["p50_ms"]/n["p50_ms"], g["p99_ms"]/n["p99_ms"],
			g["cpu_ms/scrape"]/n["cpu_ms/scrape"], g["rss_MiB_at_10k"]/n["rss_MiB_at_10k"])
		// The goals. Latency is judged against the peer in the same run: on
		// a shared machine the absolute tail is the machine's (the p99 < 5 ms
		// goal is logged, not enforced).
		if g["p50_ms"] > n["p50_ms"] || g["p99_ms"] > n["p99_ms"] {
			b.Errorf("gpunode's full scrape is slower than node_exporter's infiniband collector")
		}
		if g["p99_ms"] >= 5 {
			b.Logf("gpunode p99 %.2f ms is above the 5 ms goal on this machine (node_exporter's p99 here: %.2f ms)", g["p99_ms"], n["p99_ms"])
		}
		if g["rss_MiB_at_10k"] >= 40 {
			b.Errorf("gpunode RSS %.1f MiB after %d scrapes, goal < 40 MiB", g["rss_MiB_at_10k"], benchScrapes)
		}
	}
}
