// Package metrics tests the agent's metrics end to end with real
// components: a real Prometheus server scraping the agent binary on
// simulated nodes, node_exporter on the same sysfs trees as the peer for
// RDMA counters, and NVIDIA's dcgm-exporter dashboard queries.
package metrics

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/gpunode/gpunode/test/tools"
)

var (
	agentOnce sync.Once
	agentBin  string
	agentErr  error
)

// agentBinary builds cmd/gpunode-agent once per test run.
func agentBinary(t testing.TB) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gpunode-agent-bin-")
		if err != nil {
			agentErr = err
			return
		}
		agentBin, agentErr = tools.BuildAgent(dir)
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentBin
}

// process is a component the test started; its output is kept for
// failure messages and log checks.
type process struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs a command until the test ends, then stops it with SIGTERM
// (SIGKILL after 5 s) and, on failure, prints its output.
func start(t testing.TB, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, p.Output())
		}
	})
	return p
}

// waitLine waits for a line of output matching re and returns its groups.
func (p *process) waitLine(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(p.Output()))
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				return m
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited:\n%s", p.name, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("%s: no line matching %s in %s:\n%s", p.name, re, timeout, p.Output())
	return nil
}

var servingRE = regexp.MustCompile(`msg="serving metrics and health" address=(\S+)`)
var simRootRE = regexp.MustCompile(`SIMULATED node.* host_root=(\S+)`)

// agent is a running gpunode-agent.
type agent struct {
	*process
	addr string
	// root is the host root: the simulated tree with --simulate.
	root string
}

// startAgent runs the agent binary on a loopback port with the given flags
// and waits until it is ready.
func startAgent(t testing.TB, args ...string) *agent {
	t.Helper()
	args = append([]string{"run", "--web.listen-address=127.0.0.1:0", "--log.level=debug"}, args...)
	p := start(t, "gpunode-agent", agentBinary(t), args...)
	a := &agent{process: p, addr: p.waitLine(t, servingRE, 30*time.Second)[1]}
	if slices := simRootRE.FindStringSubmatch(p.Output()); slices != nil {
		a.root = slices[1]
	}
	waitHTTP(t, "http://"+a.addr+"/readyz", 30*time.Second)
	return a
}

func waitHTTP(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %s: %v", url, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t testing.TB, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return b
}

// freePort returns a loopback port nothing listens on (for components
// that cannot be told port 0 and report the choice).
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// prometheus is a real Prometheus server scraping targets every second.
type prometheus struct {
	*process
	url string
}

func startPrometheus(t testing.TB, targets ...string) *prometheus {
	t.Helper()
	var quoted []string
	for _, tg := range targets {
		quoted = append(quoted, fmt.Sprintf("%q", tg))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: gpunode
    static_configs:
      - targets: [%s]
`, strings.Join(quoted, ", "))
	return runPrometheus(t, cfg)
}

// runPrometheus starts Prometheus with the configuration cfg on a free
// loopback port and waits until it is ready.
func runPrometheus(t testing.TB, cfg string) *prometheus {
	t.Helper()
	bin, err := tools.Prometheus()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	p := start(t, "prometheus", bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitHTTP(t, url+"/-/ready", 30*time.Second)
	return &prometheus{process: p, url: url}
}

// apiGet calls Prometheus' HTTP API and decodes the data of a success.
func (p *prometheus) apiGet(t testing.TB, path string, params url.Values, data any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+path+"?"+params.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %v: %v", path, params, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status   string          `json:"status"`
		Error    string          `json:"error"`
		Data     json.RawMessage `json:"data"`
		Warnings []string        `json:"warnings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s %v: %v", path, params, err)
	}
	if body.Status != "success" {
		t.Fatalf("%s %v: %s", path, params, body.Error)
	}
	if len(body.Warnings) > 0 {
		t.Logf("%s %v: warnings %v", path, params, body.Warnings)
	}
	if err := json.Unmarshal(body.Data, data); err != nil {
		t.Fatalf("%s %v: %v", path, params, err)
	}
}

// query runs an instant PromQL query now.
func (p *prometheus) query(t testing.TB, expr string) model.Vector {
	t.Helper()
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	p.apiGet(t, "/api/v1/query", url.Values{"query": {expr}}, &data)
	if data.ResultType != "vector" {
		t.Fatalf("query %s: %s, not a vector", expr, data.ResultType)
	}
	var v model.Vector
	if err := json.Unmarshal(data.Result, &v); err != nil {
		t.Fatalf("query %s: %v", expr, err)
	}
	return v
}

// labelValues lists a label's values on the series matching selector in
// the last minute (Grafana's label_values).
func (p *prometheus) labelValues(t testing.TB, label, selector string) []string {
	t.Helper()
	var vals []string
	p.apiGet(t, "/api/v1/label/"+label+"/values", url.Values{"match[]": {selector},
		"start": {strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10)}}, &vals)
	return vals
}

// waitFor polls expr until ok accepts its result.
func (p *prometheus) waitFor(t testing.TB, expr string, timeout time.Duration, ok func(model.Vector) bool) model.Vector {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := p.query(t, expr)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after %s", expr, v, timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
