package publish

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/test/kube"
)

// fleetToken authenticates the fleet's agents as a user in group
// gpunode-agents, bound to the agent's ClusterRole: their requests go
// through RBAC and API priority and fairness like a DaemonSet's would.
const fleetToken = "gpunode-test-fleet"

var fleetTokens = map[string]string{
	fleetToken:    "gpunode-fleet,fleet-uid,gpunode-agents",
	noEventsToken: "gpunode-noevents,noevents-uid,gpunode-noevents",
}

// simulatedLabelSets reads the label sets of the simulated nodes, every
// set on (labels' golden files), to give the fleet real label sets.
func simulatedLabelSets(tb testing.TB) []labels.Set {
	files, _ := filepath.Glob("../labels/testdata/*.all.labels")
	var sets []labels.Set
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			tb.Fatal(err)
		}
		s := labels.Set{}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok {
				s[k] = v
			}
		}
		fh.Close()
		sets = append(sets, s)
	}
	if len(sets) == 0 {
		tb.Fatal("no label sets in ../labels/testdata")
	}
	return sets
}

var allSets = labels.Options{Domain: "gpunode.dev", Sets: map[labels.SetName]bool{labels.GPUNode: true, labels.LLMD: true, labels.NVIDIA: true, labels.AMD: true}}

// fleetResult is what a fleet run measured, from the apiserver's metrics.
type fleetResult struct {
	nodes        int
	converge     time.Duration
	requests     float64 // by the fleet until converged: node GETs and APPLYs, event POSTs
	writes       float64 // of those, the APPLYs and POSTs the apiserver took (not throttled)
	throttled    float64 // requests answered 429 by API priority and fairness (client-go retries them)
	applyP99     float64 // seconds, apiserver_request_duration_seconds for APPLY on nodes
	getP99       float64
	steady       time.Duration
	steadyWrites float64 // node and event writes after convergence
	steadyGets   float64
}

func (r fleetResult) String() string {
	return fmt.Sprintf("%d nodes: converged in %s with %.0f requests (%.2f per node, %.2f writes taken per node, %.0f throttled with 429); apiserver p99 APPLY %s, GET %s; after convergence %s: %.0f writes, %.0f GETs",
		r.nodes, r.converge.Round(time.Millisecond), r.requests, r.requests/float64(r.nodes), r.writes/float64(r.nodes), r.throttled,
		kube.FormatSeconds(r.applyP99), kube.FormatSeconds(r.getP99), r.steady, r.steadyWrites, r.steadyGets)
}

// runFleet registers n Nodes, starts one publisher per Node, each with its
// own connection and client-side rate limiter as separate agents would
// have, waits until every Node carries its labels and condition, then
// watches a steady period.
func runFleet(tb testing.TB, c *kube.Cluster, prefix string, n int, resync, steady time.Duration) fleetResult {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.GrantAgent(ctx, "gpunode-fleet", "gpunode-agents"); err != nil {
		tb.Fatal(err)
	}
	sets := simulatedLabelSets(tb)
	names := make([]string, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%04d", prefix, i)
		g.Go(func() error {
			_, err := c.Admin.CoreV1().Nodes().Create(gctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
				Name: names[i], Labels: map[string]string{"kubernetes.io/hostname": names[i]}}}, metav1.CreateOptions{FieldManager: "kubelet"})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		tb.Fatal(err)
	}
	cond := []nodestatus.Condition{{Type: nodestatus.DiscoveryHealthy, Status: nodestatus.True, Reason: "SourcesOK", Message: "all 4 discovery sources ran"}}

	before, err := c.Scrape(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i, name := range names {
		cfg := c.KubeConfig(fleetToken)
		cfg.QPS, cfg.Burst = 0, 0 // the defaults (5 and 10, client-go's), as the agent runs
		cfg.Timeout = 30 * time.Second
		cfg.Proxy = http.ProxyFromEnvironment // a transport (connection) of its own
		client, err := kubeapi.New(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		p := New(Options{Client: client, Node: name, Resync: resync, BackoffInitial: 200 * time.Millisecond, BackoffMax: 10 * time.Second,
			EventNamespace: "default", Logger: slog.New(slog.DiscardHandler)})
		p.Set(Desired{Labels: sets[i%len(sets)], LabelOptions: allSets, Conditions: cond})
		wg.Go(func() { p.Run(ctx) })
	}
	defer wg.Wait()
	defer cancel()

	// Converged: every Node has its labels and condition, and the events
	// are out. Polled with LIST, which the counts below leave out.
	for {
		if err := fleetConverged(ctx, c, prefix, names, sets); err == nil {
			break
		} else if time.Since(start) > 10*time.Minute {
			tb.Fatalf("fleet not converged after %s: %v", time.Since(start).Round(time.Second), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	converged := time.Since(start)
	mid, err := c.Scrape(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	time.Sleep(steady)
	after, err := c.Scrape(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	d1, d2 := mid.Since(before), after.Since(mid)
	r := fleetResult{nodes: n, converge: converged, steady: steady}
	for _, verb := range []string{"GET", "APPLY"} {
		r.requests += d1.Requests(kube.Match{"verb": verb, "resource": "nodes"})
	}
	r.requests += d1.Requests(kube.Match{"verb": "POST", "resource": "events"})
	r.writes = d1.Writes("nodes", "") + d1.Writes("nodes", "status") + d1.Writes("events", "")
	for _, res := range []string{"nodes", "events"} {
		r.throttled += d1.Requests(kube.Match{"resource": res, "code": "429"})
		for _, verb := range []string{"APPLY", "POST"} {
			r.writes -= d1.Requests(kube.Match{"resource": res, "verb": verb, "code": "429"})
		}
	}
	r.applyP99, _ = d1.Latency(0.99, kube.Match{"verb": "APPLY", "resource": "nodes"})
	r.getP99, _ = d1.Latency(0.99, kube.Match{"verb": "GET", "resource": "nodes"})
	r.steadyWrites = d2.Writes("nodes", "") + d2.Writes("nodes", "status") + d2.Writes("events", "")
	r.steadyGets = d2.Requests(kube.Match{"verb": "GET", "resource": "nodes"})
	return r
}

func fleetConverged(ctx context.Context, c *kube.Cluster, prefix string, names []string, sets []labels.Set) error {
	list, err := c.Admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	byName := map[string]*corev1.Node{}
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	for i, name := range names {
		n := byName[name]
		for k, v := range sets[i%len(sets)] {
			if n == nil || n.Labels[k] != v {
				return fmt.Errorf("node %s: %s not yet %q", name, k, v)
			}
		}
		ok := false
		for _, cond := range n.Status.Conditions {
			ok = ok || string(cond.Type) == nodestatus.DiscoveryHealthy
		}
		if !ok {
			return fmt.Errorf("node %s: no condition yet", name)
		}
	}
	evs, err := c.Admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	seen := 0
	for _, e := range evs.Items {
		if strings.HasPrefix(e.InvolvedObject.Name, prefix+"-") && e.Reason == "SourcesOK" {
			seen++
		}
	}
	if seen < len(names) {
		return fmt.Errorf("%d of %d condition events", seen, len(names))
	}
	return nil
}

// A small fleet in the regular tests: 50 agents converge, and once they
// have, re-reading their Nodes every second writes nothing.
func TestFleet50(t *testing.T) {
	r := runFleet(t, cluster, "fleet", 50, time.Second, 3*time.Second)
	t.Log(r)
	if r.steadyWrites != 0 {
		t.Errorf("%v writes after convergence, want 0", r.steadyWrites)
	}
	if r.steadyGets < 50 {
		t.Errorf("%v GETs in 3 s of 1 s resyncs by 50 agents: they are not watching their Nodes", r.steadyGets)
	}
	// Each agent needs one label apply, one status apply and one event;
	// anything more is a wasted write. (Reads: one GET each, plus one per
	// resync while the fleet converges.)
	if r.writes != 3*50 {
		t.Errorf("%v writes to converge 50 nodes, want 150", r.writes)
	}
}
