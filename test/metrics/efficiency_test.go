package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	v1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	gpunodeagent "github.com/gpunode/gpunode/agent"
	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/sim"
	grafana "github.com/gpunode/gpunode/test/dashboards"
)

// efficiencyDashboard is checked by TestInferenceEfficiency, the only test
// with vLLM series for it.
const efficiencyDashboard = "gpunode-efficiency.json"

// vllmPod is a stand-in vLLM server of one pod: it serves vLLM's real
// token counters (names, HELP, labels engine and model_name, as vLLM V1
// prints them) growing at fixed rates from the test's start.
type vllmPod struct {
	namespace, name, model string
	prompt, generation     float64 // tokens per second
}

func (p vllmPod) serve(t *testing.T, start time.Time) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s := time.Since(start).Seconds()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n# TYPE vllm:prompt_tokens_total counter\n")
		fmt.Fprintf(w, "vllm:prompt_tokens_total{engine=\"0\",model_name=%q} %g\n", p.model, 1e6+p.prompt*s)
		fmt.Fprintf(w, "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n# TYPE vllm:generation_tokens_total counter\n")
		fmt.Fprintf(w, "vllm:generation_tokens_total{engine=\"0\",model_name=%q} %g\n", p.model, 1e5+p.generation*s)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// cgroupV2 is a container's cgroup as cgroup v2 with the systemd driver and
// containerd name it (procpod's tests hold the real-world shapes).
func cgroupV2(uid string, ctr byte) string {
	return "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(uid, "-", "_") +
		".slice/cri-containerd-" + strings.Repeat(string(ctr), 64) + ".scope\n"
}

// startAgentInProcess runs the agent daemon (agent.Run, as `gpunode-agent
// run` does) on the simulated DGX H100 with processes on its GPUs, which
// the --simulate catalog's nodes have none of, and returns its address.
func startAgentInProcess(t *testing.T, node sim.Node, machine nvmlfake.Machine, socket string) string {
	t.Helper()
	lib, err := nvmlfake.New(machine)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := hostfs.New(node.Root)
	if err != nil {
		t.Fatal(err)
	}
	env := &discovery.Env{FS: fsys, Backends: []gpu.Backend{nvml.New(lib)}, Simulated: node.Name, PFC: node.PFC}
	cfg := config.Default()
	cfg.NodeName = ""
	cfg.Metrics.ListenAddress = "127.0.0.1:0"
	cfg.Metrics.SampleInterval = time.Second
	cfg.Metrics.PodResourcesSocket = socket
	cfg.Tuning.Mode = "off"
	cfg.Tuning.StateDir = t.TempDir() // never the host's /var/lib/gpunode
	var logs syncBuffer
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- gpunodeagent.Run(ctx, gpunodeagent.Options{Config: cfg, Env: env, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			Listening: func(a string) { addr <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("agent: %v", err)
		}
		env.Close()
		if t.Failed() {
			t.Logf("--- agent log:\n%s", logs.String())
		}
	})
	select {
	case a := <-addr:
		waitHTTP(t, "http://"+a+"/readyz", 30*time.Second)
		return a
	case err := <-done:
		t.Fatalf("agent stopped: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("agent not listening after 30 s:\n%s", logs.String())
	}
	return ""
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// queryAt runs an instant query at ts and returns its raw result.
func (p *prometheus) queryAt(t testing.TB, expr string, ts float64) (string, json.RawMessage) {
	t.Helper()
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	p.apiGet(t, "/api/v1/query", url.Values{"query": {expr}, "time": {strconv.FormatFloat(ts, 'f', 3, 64)}}, &data)
	return data.ResultType, data.Result
}

// rateByHand is what rate() over the window ending at ts gives, from the
// raw samples Prometheus stored, summed over the series (counters without
// a reset). It gives it twice: with every sample, and without each
// series' newest one, which a rule evaluated at ts has not seen when that
// scrape was stored after the evaluation ran.
func (p *prometheus) rateByHand(t testing.TB, selector string, window time.Duration, ts float64) (sum [2]float64, series int) {
	t.Helper()
	kind, raw := p.queryAt(t, selector+"["+model.Duration(window).String()+"]", ts)
	var m model.Matrix
	if err := json.Unmarshal(raw, &m); kind != "matrix" || err != nil {
		t.Fatalf("%s: %s, %v", selector, kind, err)
	}
	end := model.TimeFromUnixNano(int64(math.Round(ts*1e3)) * 1e6)
	for _, s := range m {
		if len(s.Values) < 3 {
			t.Fatalf("%s: %d samples", s.Metric, len(s.Values))
		}
		for i := range s.Values[1:] {
			if s.Values[i+1].Value < s.Values[i].Value {
				t.Fatalf("%s: counter reset in the window", s.Metric)
			}
		}
		sum[0] += extrapolatedRate(s.Values, end.Add(-window), end)
		sum[1] += extrapolatedRate(s.Values[:len(s.Values)-1], end.Add(-window), end)
	}
	return sum, len(m)
}

// extrapolatedRate is rate() as Prometheus defines it for a counter's
// samples v (two or more, no reset) in the range start..end: the increase
// between the first and last sample, extrapolated to the range's ends
// where they lie within 1.1 average sample intervals (else by half an
// interval), never to below zero, per second of the range.
func extrapolatedRate(v []model.SamplePair, start, end model.Time) float64 {
	first, last := v[0], v[len(v)-1]
	increase := float64(last.Value - first.Value)
	sampled := float64(last.Timestamp-first.Timestamp) / 1e3
	toStart := float64(first.Timestamp-start) / 1e3
	toEnd := float64(end-last.Timestamp) / 1e3
	avg := sampled / float64(len(v)-1)
	if increase > 0 && first.Value >= 0 {
		if toZero := sampled * float64(first.Value) / increase; toZero < toStart {
			toStart = toZero
		}
	}
	interval := sampled
	for _, d := range []float64{toStart, toEnd} {
		if d < avg*1.1 {
			interval += d
		} else {
			interval += avg / 2
		}
	}
	return increase * (interval / sampled) / (float64(end-start) / 1e3)
}

// A real Prometheus scrapes the agent (the daemon, in process) on a
// simulated DGX H100 whose GPUs run processes of pods, stand-in vLLM
// servers of those pods (vLLM's real metric names, target labels
// namespace and pod as a kubernetes_sd scrape config sets them) and a
// stand-in kube-state-metrics with llm-d's role label, and evaluates the
// chart's rules. The recording rules' tokens per joule, energy and cost
// per 1M tokens per model and role equal the values computed here from
// the raw samples and the chart's prices, and every panel of the
// Inference efficiency dashboard returns data.
func TestInferenceEfficiency(t *testing.T) {
	const (
		llama  = "meta-llama/Llama-3.1-8B-Instruct"
		qwen   = "Qwen/Qwen3-8B"
		price  = 3.2 // per H100-hour, set below
		window = 20 * time.Second
	)
	node, err := sim.Build("dgx-h100-ib", shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	machine := *node.NVIDIA
	machine.GPUs = append([]nvmlfake.GPU(nil), machine.GPUs...)
	// prefill-0 on GPU 0, decode-0 on GPUs 1 and 2 (tensor parallel, one
	// process), chat-0 on GPU 3; idle-0 holds GPU 4 and runs nothing.
	machine.GPUs[0].Processes = []nvmlfake.Process{{PID: 4001, MemoryBytes: 60 << 30, SMShare: 0.7}}
	machine.GPUs[1].Processes = []nvmlfake.Process{{PID: 4002, MemoryBytes: 70 << 30, SMShare: 0.5}}
	machine.GPUs[2].Processes = []nvmlfake.Process{{PID: 4002, MemoryBytes: 70 << 30, SMShare: 0.5}}
	machine.GPUs[3].Processes = []nvmlfake.Process{{PID: 4003, MemoryBytes: 40 << 30, SMShare: 0.4}}
	for pid, cg := range map[string]string{
		"4001": cgroupV2("a1111111-2222-4333-8444-555555555555", 'a'),
		"4002": cgroupV2("b1111111-2222-4333-8444-555555555555", 'b'),
		"4003": cgroupV2("c1111111-2222-4333-8444-555555555555", 'c'),
	} {
		dir := filepath.Join(node.Root, "proc", pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	uuids := simUUIDs(t, "dgx-h100-ib")
	pod := func(ns, name string, gpus ...int) *v1.PodResources {
		var ids []string
		for _, g := range gpus {
			ids = append(ids, uuids[g])
		}
		return &v1.PodResources{Namespace: ns, Name: name, Containers: []*v1.ContainerResources{{Name: "vllm",
			Devices: []*v1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: ids}}}}}
	}
	socket := startKubelet(t, pod("llm", "prefill-0", 0), pod("llm", "decode-0", 1, 2), pod("chat", "chat-0", 3), pod("dev", "idle-0", 4))
	addr := startAgentInProcess(t, node, machine, socket)

	start := time.Now()
	pods := []vllmPod{
		{"llm", "prefill-0", llama, 900, 3},   // role prefill: its prompt tokens count
		{"llm", "decode-0", llama, 880, 120},  // role decode: its generated tokens count
		{"chat", "chat-0", qwen, 40, 60},      // no role: both count
		{"llm", "cpu-0", llama, 50000, 50000}, // no GPU gpunode knows: left out
	}
	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n")
	fmt.Fprintf(&cfg, "rule_files: [%q]\n", chartRules(t, "--set", "prometheusRule.efficiency.rateWindow="+model.Duration(window).String(),
		"--set", "prometheusRule.efficiency.idleWindow=1m",
		"--set-json", fmt.Sprintf(`prometheusRule.efficiency.gpuHourPrices={"NVIDIA H100 80GB HBM3":%g}`, price)))
	fmt.Fprintf(&cfg, "scrape_configs:\n  - job_name: gpunode-agent\n    static_configs:\n      - targets: [%q]\n        labels: {node: gpu-eff}\n", addr)
	cfg.WriteString("  - job_name: vllm\n    static_configs:\n")
	for _, p := range pods {
		fmt.Fprintf(&cfg, "      - targets: [%q]\n        labels: {namespace: %q, pod: %q}\n", p.serve(t, start), p.namespace, p.name)
	}
	ksm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# TYPE kube_pod_labels gauge\n")
		for _, l := range [][3]string{{"llm", "prefill-0", "prefill"}, {"llm", "decode-0", "decode"}, {"llm", "cpu-0", "decode"}} {
			fmt.Fprintf(w, "kube_pod_labels{namespace=%q,pod=%q,uid=\"u-%s\",label_llm_d_ai_role=%q} 1\n", l[0], l[1], l[1], l[2])
		}
	}))
	t.Cleanup(ksm.Close)
	fmt.Fprintf(&cfg, "  - job_name: kube-state-metrics\n    static_configs:\n      - targets: [%q]\n", strings.TrimPrefix(ksm.URL, "http://"))
	prom := runPrometheus(t, cfg.String())

	// The rate window fills 20 s after the first scrape; the agent's
	// per-pod energy series appear once the pods are named.
	prom.waitFor(t, `count_over_time(namespace_pod:gpunode_gpu_pod_energy_joules:rate{pod="decode-0"}[1m])`, 90*time.Second, func(v model.Vector) bool {
		return len(v) == 1 && v[0].Value >= 25
	})

	type key struct{ model, role string }
	type served struct {
		key
		// With every sample, and without the newest of each series
		// (rateByHand); tokens come from the pod's own target, watts
		// from the agent.
		tokens, watts [2]float64
		gpus          float64
	}
	var at float64
	// A rule evaluation can run before a scrape stamped just before it is
	// stored (each target's scrape races the evaluation, at a phase fixed
	// for the run; on CI's two cores beside VMs it lost 20 times in a
	// row). The values by hand are therefore taken both with and without
	// each target's newest sample, and the rules must equal one of those
	// combinations exactly; further evaluations are tried in case one saw
	// a scrape stored later still.
	for attempt := 0; ; attempt++ {
		v := prom.query(t, `timestamp(model_role:gpunode_tokens_per_joule:ratio)`)
		if len(v) != 3 {
			t.Fatalf("tokens per joule: %v", v)
		}
		at = float64(v[0].Value)
		var byPod []served
		for _, p := range []struct {
			pod       vllmPod
			role      string
			countedAs []string
			gpus      float64
		}{
			{pods[0], "prefill", []string{"prompt"}, 1},
			{pods[1], "decode", []string{"generation"}, 2},
			{pods[2], "", []string{"prompt", "generation"}, 1},
		} {
			sel := fmt.Sprintf(`{namespace=%q, pod=%q}`, p.pod.namespace, p.pod.name)
			w, n := prom.rateByHand(t, `gpunode_gpu_pod_energy_joules_total`+sel, window, at)
			if n != int(p.gpus) || !(w[0] > 0) || !(w[1] > 0) {
				t.Fatalf("%s: %d energy series, %g W", p.pod.name, n, w)
			}
			sv := served{key: key{p.pod.model, p.role}, watts: w, gpus: p.gpus}
			for _, c := range p.countedAs {
				r, _ := prom.rateByHand(t, `vllm:`+c+`_tokens_total`+sel, window, at)
				rate := map[string]float64{"prompt": p.pod.prompt, "generation": p.pod.generation}[c]
				if math.Abs(r[0]-rate)/rate > 0.02 {
					t.Errorf("%s: %s tokens at %g/s from Prometheus, served %g/s", p.pod.name, c, r[0], rate)
				}
				sv.tokens[0] += r[0]
				sv.tokens[1] += r[1]
			}
			byPod = append(byPod, sv)
		}
		got := func(record string) map[key]float64 {
			kind, raw := prom.queryAt(t, record, at)
			var v model.Vector
			if err := json.Unmarshal(raw, &v); kind != "vector" || err != nil {
				t.Fatalf("%s: %s %v", record, kind, err)
			}
			out := map[key]float64{}
			for _, s := range v {
				out[key{string(s.Metric["model_name"]), string(s.Metric["role"])}] = float64(s.Value)
			}
			return out
		}
		perJoule := got("model_role:gpunode_tokens_per_joule:ratio")
		perMillion := got("model_role:gpunode_energy_joules_per_million_tokens:ratio")
		cost := got("model_role:gpunode_cost_per_million_tokens:ratio")
		// mismatches compares the rules with the values by hand where the
		// rule missed the newest sample of the agent (bit 0) and of each
		// pod's target (bit i+1) set in missed.
		mismatches := func(missed int) (map[key]struct{ tokens, watts, gpus float64 }, []string) {
			want := map[key]struct{ tokens, watts, gpus float64 }{}
			for i, p := range byPod {
				e := want[p.key]
				want[p.key] = struct{ tokens, watts, gpus float64 }{e.tokens + p.tokens[missed>>(i+1)&1], e.watts + p.watts[missed&1], e.gpus + p.gpus}
			}
			var out []string
			for k, w := range want {
				for _, c := range []struct {
					what      string
					got, want float64
				}{
					{"tokens per joule", perJoule[k], w.tokens / w.watts},
					{"joules per 1M tokens", perMillion[k], 1e6 * w.watts / w.tokens},
					{"cost per 1M tokens", cost[k], w.gpus * price / 3600 / w.tokens * 1e6},
				} {
					if !(math.Abs(c.got-c.want) <= 1e-9*c.want) {
						out = append(out, fmt.Sprintf("%s %q: %s %g, by hand %g", k.model, k.role, c.what, c.got, c.want))
					}
				}
			}
			slices.Sort(out)
			return want, out
		}
		want, mismatch := mismatches(0)
		if len(perJoule) != len(want) || len(perMillion) != len(want) || len(cost) != len(want) {
			t.Fatalf("model/role series: tokens per joule %v, energy per 1M %v, cost per 1M %v; want %v", perJoule, perMillion, cost, want)
		}
		missed := 0
		for m := 1; len(mismatch) > 0 && m < 1<<(1+len(byPod)); m++ {
			if w, mm := mismatches(m); len(mm) == 0 {
				want, mismatch, missed = w, nil, m
			}
		}
		if len(mismatch) == 0 {
			t.Logf("rule evaluation at %.3f matches the values by hand (evaluations tried: %d; newest samples the rule had not seen: agent %v, pods %03b)",
				at, attempt+1, missed&1 == 1, missed>>1)
			for k, w := range want {
				t.Logf("%s %q: %.1f tokens/s, %.1f W: %.3f tokens/J, %.0f J and %.4f per 1M tokens (%g GPUs at %g/h)",
					k.model, k.role, w.tokens, w.watts, w.tokens/w.watts, 1e6*w.watts/w.tokens, w.gpus*price/3600/w.tokens*1e6, w.gpus, price)
			}
			break
		}
		if attempt == 9 {
			t.Fatalf("the rules disagree with the values by hand, with or without each target's newest sample, at 10 evaluations; at %.3f, with every sample:\n%s", at, strings.Join(mismatch, "\n"))
		}
		time.Sleep(time.Second)
	}

	// The idle GPU's holder is among the allocated GPUs' peaks; the
	// unallocated GPUs are not.
	if v := prom.query(t, `gpunode:gpu_allocated_peak_utilization:ratio`); len(v) != 5 {
		t.Errorf("allocated GPUs' peak utilization: %v", v)
	}

	ds, err := grafana.Load(chartDir + "/dashboards")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range ds {
		if d.File != efficiencyDashboard {
			continue
		}
		found = true
		values := map[string]string{}
		for _, v := range d.Templating.List {
			if v.Type == "datasource" {
				continue
			}
			sel, label, err := v.LabelValues()
			if err != nil {
				t.Fatal(err)
			}
			if sel, err = grafana.Substitute(sel, values); err != nil {
				t.Fatal(err)
			}
			vals := prom.labelValues(t, label, sel)
			if v.Name == "model" && strings.Join(vals, ",") != qwen+","+llama { // sorted, upper case first
				t.Errorf("model values %v", vals)
			}
			if len(vals) == 0 {
				t.Errorf("variable %s (%s) has no values", v.Name, sel)
			}
			values[v.Name] = grafana.Regex(vals)
		}
		queries := 0
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				expr, err := grafana.Substitute(tg.Expr, values)
				if err != nil {
					t.Fatal(err)
				}
				queries++
				v := prom.query(t, expr)
				if len(v) == 0 {
					t.Errorf("panel %q, query %s: no data:\n%s", p.Title, tg.RefID, expr)
				}
				for _, s := range v {
					if math.IsNaN(float64(s.Value)) || math.IsInf(float64(s.Value), 0) {
						t.Errorf("panel %q, query %s: %v", p.Title, tg.RefID, s)
					}
				}
			}
		}
		t.Logf("%s: %d queries, all with data", d.File, queries)
	}
	if !found {
		t.Errorf("no %s", efficiencyDashboard)
	}
}
