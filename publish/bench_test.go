package publish

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpunode/gpunode/test/kube"
)

// BenchmarkFleet1000 runs 1,000 agents' publishers for 1,000 Nodes against
// one apiserver (make bench). It reports the requests the fleet needed to
// converge against the floor of 4 per node (a GET, two APPLYs and an
// event; resyncs while converging add GETs, and requests API priority and
// fairness throttles with 429 are retried by client-go), the writes the
// apiserver took per node (3 is the floor), the
// apiserver's own p99 latency, the time to converge, and the writes in a
// steady period after convergence (goal 0).
func BenchmarkFleet1000(b *testing.B) {
	c := kube.StartT(b, kube.Options{Tokens: fleetTokens})
	for i := 0; i < b.N; i++ {
		r := runFleet(b, c, "bench"+string(rune('a'+i%26)), 1000, 10*time.Second, 30*time.Second)
		b.Log(r)
		b.ReportMetric(r.converge.Seconds(), "s-converge")
		b.ReportMetric(r.requests, "requests")
		b.ReportMetric(r.writes/float64(r.nodes), "writes/node")
		b.ReportMetric(r.throttled, "throttled-429")
		b.ReportMetric(r.requests/float64(r.nodes)/4, "requests/floor")
		b.ReportMetric(r.applyP99*1000, "ms-p99-apply")
		b.ReportMetric(r.getP99*1000, "ms-p99-get")
		b.ReportMetric(r.steadyWrites, "writes-after-converge")
	}
}

// BenchmarkSteadyState measures one converged publisher re-reading its Node
// every 100 ms for 5 s and reports, from the apiserver's counts, the writes
// per hour (goal 0) and the reads per hour at the default 5 minute resync.
func BenchmarkSteadyState(b *testing.B) {
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		node := "steady-bench-" + string(rune('a'+i%26))
		if _, err := cluster.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{"kubernetes.io/hostname": node}}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		p := New(Options{Client: cluster.AdminKube, Node: node, Resync: 100 * time.Millisecond, BackoffInitial: time.Second, BackoffMax: time.Minute,
			EventNamespace: "default", Logger: nopLogger()})
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { p.Run(runCtx); close(done) }()
		p.Set(Desired{Labels: gpuLabels(), LabelOptions: opts, Conditions: healthy()})
		for p.m.inSync == nil || gauge(p.m.inSync) != 1 {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		before, err := cluster.Scrape(ctx)
		if err != nil {
			b.Fatal(err)
		}
		const window = 5 * time.Second
		time.Sleep(window)
		d := mustScrape(b).Since(before)
		cancel()
		<-done
		writes := d.Writes("nodes", "") + d.Writes("nodes", "status") + d.Writes("events", "")
		gets := d.Requests(kube.Match{"verb": "GET", "resource": "nodes"})
		perHour := float64(time.Hour / window)
		b.ReportMetric(writes*perHour, "writes/hour")
		// GETs per resync, times the resyncs in an hour at the default 5m.
		b.ReportMetric(gets/float64(window/(100*time.Millisecond))*12, "reads/hour@5m")
	}
}

func mustScrape(b *testing.B) kube.Metrics {
	m, err := cluster.Scrape(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return m
}
