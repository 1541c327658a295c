package metrics

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpunode/gpunode/test/kube"
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
	wire      int     // bytes on the wire (gzip) of the last scrape
	plain     int     // uncompressed
	anon      []int64 // RssAnon every anonEvery scrapes
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

// memory is a process's resident memory from /proc/PID/status, in bytes:
// all of it (VmRSS) and its anonymous part (RssAnon: heap, stacks). The
// rest is file-backed, mostly the binary's pages: shared page cache the
// kernel can reclaim, not memory the process holds on to.
type memory struct{ rss, anon int64 }

// parseStatus reads VmRSS and RssAnon from the text of /proc/PID/status.
func parseStatus(status string) memory {
	var m memory
	for _, l := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			m.rss = kb << 10
		case "RssAnon":
			m.anon = kb << 10
		}
	}
	return m
}

// procStats are a process's CPU time and resident memory from /proc.
func procStats(b *testing.B, pid int) (cpu time.Duration, mem memory) {
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
	mem = parseStatus(string(status))
	if mem.rss == 0 || mem.anon == 0 {
		b.Fatalf("/proc/%d/status: no VmRSS or RssAnon", pid)
	}
	return cpu, mem
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

// The agent's memory goals after benchScrapes scrapes.
const (
	// goalRSSMiB bounds all its resident memory, the binary's pages
	// included.
	goalRSSMiB = 64
	// goalAnonMiB bounds the anonymous part, the memory it holds on to
	// (heap, stacks), over the last anonWindow scrapes.
	goalAnonMiB = 16
	// maxAnonGrowthMiB bounds RssAnon's growth over the run.
	maxAnonGrowthMiB = 2
	// RssAnon is read every anonEvery scrapes; a figure for a span of
	// scrapes is the median of the readings in it, as one reading depends
	// on where the GC cycle (about every 15 scrapes: 6 MiB of headroom
	// over the live heap, 0.4 MB of garbage a scrape) and the scavenger
	// stand. Even the medians wander slowly: those of each 1,000 scrapes
	// lay between 15.2 and 17.6 MiB in the runs of December 2026, so the
	// spans are 2,000 scrapes and the tolerance 2 MiB.
	anonEvery  = 100
	anonWindow = 2_000
	// Growth is the median over the last anonWindow scrapes less the
	// median over the anonWindow from anonWarm scrapes on. Not from idle:
	// the first scrapes rightly grow the heap (the registry's, the HTTP
	// and gzip writers' buffers, GC cycles up to the heap goal one
	// scrape's garbage sets); by 1,000 scrapes (about 400 MB allocated,
	// dozens of GC cycles) that is done. 2 MiB over the 7,000 scrapes
	// between the spans' middles catches a leak of about 300 bytes a
	// scrape (a series, a buffer or a goroutine kept per scrape).
	anonWarm = 1_000
)

// anonMedian is the median of tg's RssAnon readings after scrapes
// from+anonEvery to to.
func (tg *target) anonMedian(from, to int) int64 {
	v := slices.Clone(tg.anon[from/anonEvery : to/anonEvery])
	slices.Sort(v)
	return v[len(v)/2]
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// BenchmarkScrapeVsNodeExporter serves 10,000 scrapes from the agent on a
// simulated DGX H100 (its full /metrics: 8 GPUs, 8 InfiniBand ports, the
// agent's own, Go and process metrics) and 10,000 from node_exporter's
// infiniband collector on the same sysfs tree, alternately, as Prometheus
// asks (OpenMetrics, gzip) over loopback keep-alive connections. It
// reports each side's p50/p99 latency, bytes and allocations per scrape,
// CPU per scrape, RSS and RssAnon idle and after the scrapes, RssAnon's
// growth after a warm-up, and gpunode/node_exporter ratios. Run it with
// make bench.
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
		results := scrapeAll(b, client, targets)
		reportScrapes(b, targets, results)
		checkGoals(b, results["gpunode"], results["node_exporter"])
	}
}

// BenchmarkScrapeWithPodLabelsVsNodeExporter is the same with pod labels
// on: eight pods, one per GPU, from the pod-resources API, with three
// labels each (metrics.podLabels) read from a real API server, so the
// allocation and per-pod series carry them. The goals are the same.
func BenchmarkScrapeWithPodLabelsVsNodeExporter(b *testing.B) {
	c := kube.StartT(b, kube.Options{})
	ctx := context.Background()
	if err := c.CreateNamespace(ctx, "llm"); err != nil {
		b.Fatal(err)
	}
	uuids := simUUIDs(b, "dgx-h100-ib")
	var pods []*v1.PodResources
	for i, uuid := range uuids {
		name := fmt.Sprintf("vllm-%d", i)
		role := []string{"prefill", "decode"}[i%2]
		if _, err := c.CreatePod(ctx, "llm", name, "bench-node", map[string]string{"app.kubernetes.io/name": "vllm",
			"llm-d.ai/model": "llama-3-70b", "llm-d.ai/role": role}); err != nil {
			b.Fatal(err)
		}
		pods = append(pods, &v1.PodResources{Namespace: "llm", Name: name, Containers: []*v1.ContainerResources{{
			Name: "vllm", Devices: []*v1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{uuid}}}}}})
	}
	kubeconfig, err := c.Kubeconfig(c.AdminConfig.BearerToken)
	if err != nil {
		b.Fatal(err)
	}
	cfg := writeConfig(b, fmt.Sprintf("nodeName: bench-node\nmetrics:\n  podResourcesSocket: %s\n  podLabels:\n    keys: [app.kubernetes.io/name, llm-d.ai/model, llm-d.ai/role]\n",
		startKubelet(b, pods...)))
	a := startAgent(b, "--simulate=dgx-h100-ib", "--config="+cfg, "--kubeconfig="+kubeconfig)
	if a.root == "" {
		b.Fatal("no simulated tree in the agent's log")
	}
	// The labels arrive with the first list of the node's pods.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(string(get(b, "http://"+a.addr+"/metrics")), `label_llm_d_ai_role="decode"`) {
		if time.Now().After(deadline) {
			b.Fatalf("no pod labels on /metrics:\n%s", a.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	nep, ne := startNodeExporter(b, a.root)
	targets := []*target{
		{name: "gpunode", url: "http://" + a.addr + "/metrics", pid: a.cmd.Process.Pid},
		{name: "node_exporter", url: "http://" + ne + "/metrics", pid: nep.cmd.Process.Pid},
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2, DisableCompression: true}}
	for range b.N {
		results := scrapeAll(b, client, targets)
		reportScrapes(b, targets, results)
		checkGoals(b, results["gpunode"], results["node_exporter"])
	}
}

// scrapeAll runs the scrapes and returns each target's figures by name.
// tg.anon gets its RssAnon every anonEvery scrapes.
func scrapeAll(b *testing.B, client *http.Client, targets []*target) map[string]map[string]float64 {
	idle := map[string]memory{}
	for _, tg := range targets {
		_, idle[tg.name] = procStats(b, tg.pid)
	}
	for _, tg := range targets { // warm up: first GC cycles, connections
		for range 100 {
			tg.scrape(b, client)
		}
		tg.latencies, tg.anon = nil, nil
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
	for i := range benchScrapes {
		for _, tg := range targets {
			tg.scrape(b, client)
			if (i+1)%anonEvery == 0 {
				_, m := procStats(b, tg.pid)
				tg.anon = append(tg.anon, m.anon)
			}
		}
	}
	results := map[string]map[string]float64{}
	for _, tg := range targets {
		cpu, mem := procStats(b, tg.pid)
		m := before[tg.name]
		early := tg.anonMedian(anonWarm, anonWarm+anonWindow)
		late := tg.anonMedian(benchScrapes-anonWindow, benchScrapes)
		var peak int64
		for _, v := range tg.anon {
			peak = max(peak, v)
		}
		results[tg.name] = map[string]float64{
			"p50_ms":               ms(percentile(tg.latencies, 0.50)),
			"p99_ms":               ms(percentile(tg.latencies, 0.99)),
			"cpu_ms/scrape":        ms(cpu-m.cpu) / benchScrapes,
			"allocs/scrape":        (goStat(b, tg.url, "go_memstats_mallocs_total") - m.mallocs) / benchScrapes,
			"alloc_B/scrape":       (goStat(b, tg.url, "go_memstats_alloc_bytes_total") - m.allocBy) / benchScrapes,
			"wire_B/scrape":        float64(tg.wire),
			"body_B/scrape":        float64(tg.plain),
			"rss_MiB_idle":         mib(idle[tg.name].rss),
			"rss_MiB_at_10k":       mib(mem.rss),
			"rss_anon_MiB_idle":    mib(idle[tg.name].anon),
			"rss_anon_MiB_last_2k": mib(late),
			"rss_anon_MiB_max":     mib(peak),
			"rss_anon_MiB_early":   mib(early),
			"rss_anon_growth_MiB":  mib(late - early),
		}
		// What the Go runtime says its share of RssAnon is.
		for k, name := range map[string]string{
			"go_heap_inuse_MiB": "go_memstats_heap_inuse_bytes",
			"go_heap_idle_MiB":  "go_memstats_heap_idle_bytes",
			"go_released_MiB":   "go_memstats_heap_released_bytes",
			"go_stack_MiB":      "go_memstats_stack_inuse_bytes",
			"go_next_gc_MiB":    "go_memstats_next_gc_bytes",
			"go_sys_MiB":        "go_memstats_sys_bytes",
		} {
			results[tg.name][k] = goStat(b, tg.url, name) / (1 << 20)
		}
	}
	return results
}

// reportScrapes reports the figures as benchmark metrics and logs them
// as a table.
func reportScrapes(b *testing.B, targets []*target, results map[string]map[string]float64) {
	for name, r := range results {
		for k, v := range r {
			b.ReportMetric(v, name+"_"+k)
		}
	}
	g, n := results["gpunode"], results["node_exporter"]
	ratios := []struct{ name, key string }{
		{"p50", "p50_ms"}, {"p99", "p99_ms"}, {"cpu", "cpu_ms/scrape"}, {"rss", "rss_MiB_at_10k"}, {"rss_anon", "rss_anon_MiB_last_2k"},
	}
	var rs []string
	for _, q := range ratios {
		b.ReportMetric(g[q.key]/n[q.key], q.name+"_ratio")
		rs = append(rs, fmt.Sprintf("%s %.2f", q.name, g[q.key]/n[q.key]))
	}
	var lines []string
	for _, tg := range targets {
		r := results[tg.name]
		var anon []string
		for from := 0; from < benchScrapes; from += 1000 {
			anon = append(anon, fmt.Sprintf("%.1f", mib(tg.anonMedian(from, from+1000))))
		}
		lines = append(lines, fmt.Sprintf("%-13s p50 %.3f ms  p99 %.3f ms  cpu %.3f ms/scrape  %.0f allocs/scrape  %.0f B allocated/scrape  %.0f B on the wire (%.0f B plain)\n"+
			"%-13s RSS %.1f MiB idle, %.1f MiB after %d scrapes; RssAnon %.1f MiB idle, %.1f MiB over the last %d scrapes (median), at most %.1f MiB; medians of each 1,000: %s MiB\n"+
			"%-13s Go runtime: heap %.1f MiB in use, %.1f MiB idle of which %.1f MiB released, next GC at %.1f MiB heap, stacks %.1f MiB, %.1f MiB from the OS",
			tg.name, r["p50_ms"], r["p99_ms"], r["cpu_ms/scrape"], r["allocs/scrape"], r["alloc_B/scrape"], r["wire_B/scrape"], r["body_B/scrape"],
			"", r["rss_MiB_idle"], r["rss_MiB_at_10k"], benchScrapes, r["rss_anon_MiB_idle"],
			r["rss_anon_MiB_last_2k"], anonWindow, r["rss_anon_MiB_max"], strings.Join(anon, " "),
			"", r["go_heap_inuse_MiB"], r["go_heap_idle_MiB"], r["go_released_MiB"], r["go_next_gc_MiB"], r["go_stack_MiB"], r["go_sys_MiB"]))
	}
	b.Logf("dgx-h100-ib, %d scrapes each, alternating:\n%s\nratios gpunode/node_exporter: %s",
		benchScrapes, strings.Join(lines, "\n"), strings.Join(rs, ", "))
}

// checkGoals fails the benchmark where the agent (g) misses a goal;
// latency is judged against node_exporter (n) in the same run.
func checkGoals(b *testing.B, g, n map[string]float64) {
	// On a shared machine the absolute tail is the machine's (the
	// p99 < 5 ms goal is logged, not enforced).
	if g["p50_ms"] > n["p50_ms"] || g["p99_ms"] > n["p99_ms"] {
		b.Errorf("gpunode's full scrape is slower than node_exporter's infiniband collector")
	}
	if g["p99_ms"] >= 5 {
		b.Logf("gpunode p99 %.2f ms is above the 5 ms goal on this machine (node_exporter's p99 here: %.2f ms)", g["p99_ms"], n["p99_ms"])
	}
	if g["rss_MiB_at_10k"] >= goalRSSMiB {
		b.Errorf("gpunode RSS %.1f MiB after %d scrapes, goal < %d MiB", g["rss_MiB_at_10k"], benchScrapes, goalRSSMiB)
	}
	if g["rss_anon_MiB_last_2k"] >= goalAnonMiB {
		b.Errorf("gpunode RssAnon %.1f MiB over the last %d of %d scrapes (median), goal < %d MiB", g["rss_anon_MiB_last_2k"], anonWindow, benchScrapes, goalAnonMiB)
	}
	if g["rss_anon_growth_MiB"] > maxAnonGrowthMiB {
		b.Errorf("gpunode RssAnon grew %.1f MiB over the run (median %.1f MiB over scrapes %d-%d, %.1f MiB over %d-%d), goal at most %d MiB",
			g["rss_anon_growth_MiB"], g["rss_anon_MiB_early"], anonWarm, anonWarm+anonWindow, g["rss_anon_MiB_last_2k"], benchScrapes-anonWindow, benchScrapes, maxAnonGrowthMiB)
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tgpunode-agent\nVmPeak:\t 1300000 kB\nVmRSS:\t   36100 kB\nRssAnon:\t   10240 kB\nRssFile:\t   25860 kB\nThreads:\t12\n"
	if got, want := parseStatus(status), (memory{rss: 36100 << 10, anon: 10 << 20}); got != want {
		t.Errorf("parseStatus = %+v, want %+v", got, want)
	}
	if got := parseStatus("Name:\tkthreadd\n"); got != (memory{}) {
		t.Errorf("kernel thread: %+v", got)
	}
}
