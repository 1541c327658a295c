package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// `run --simulate=dgx-h100-ib-degraded` reads the node's kernel log from
// its start: the Xid 79 on GPU 3, the mlx5 health syndrome and the fatal
// AER error on mlx5_1 (0000:40:00.0), all logged before the agent started,
// are each counted once on the right device, and GPUHealthy follows. The
// good DGX's log holds only harmless lines.
func TestRunReadsTheKernelLog(t *testing.T) {
	bin, err := buildAgent()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	metrics, logs := runUntilMetric(t, bin, "dgx-h100-ib-degraded", "gpunode_kernel_log_events_total")
	for _, want := range []string{
		`gpunode_gpu_xid_errors_total{gpu="3",model="NVIDIA H100 80GB HBM3",pci_bus_id="0000:61:00.0",uuid="GPU-f4526305-fab4-515e-9a52-1aa6a351392d",xid="79"} 1`,
		`gpunode_kernel_log_events_total{code="0",device="0000:40:00.0",kind="aer",severity="fatal"} 1`,
		`gpunode_kernel_log_events_total{code="0",device="0000:40:00.0",kind="mlx5_health",severity=""} 1`,
		`gpunode_gpu_health_problem{gpu="3",model="NVIDIA H100 80GB HBM3",pci_bus_id="0000:61:00.0",reason="XIDCritical",uuid="GPU-f4526305-fab4-515e-9a52-1aa6a351392d"} 1`,
		`gpunode_kernel_log_records_lost_total 0`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "gpunode_gpu_xid_errors_total{") && !strings.Contains(line, `gpu="3"`) ||
			strings.HasPrefix(line, "gpunode_kernel_log_events_total{") && !strings.Contains(line, `device="0000:40:00.0"`) {
			t.Errorf("unexpected series %s", line)
		}
	}
	for _, want := range []string{
		`msg="node condition" type=GPUHealthy status=False reason=XIDCritical message="1 of 8 GPUs unhealthy: GPU 3`,
		`msg="kernel log reports a device fault" kind=mlx5_health device=0000:40:00.0`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}

	metrics, _ = runUntilMetric(t, bin, "dgx-h100-ib", "gpunode_kernel_log_records_total")
	if strings.Contains(metrics, "gpunode_kernel_log_events_total{") || strings.Contains(metrics, "gpunode_gpu_xid_errors_total{") {
		t.Errorf("the good DGX's kernel log reports faults:\n%s", grepLines(metrics, "kernel_log", "xid_errors"))
	}
}

// runUntilMetric runs the agent on a simulated node until its /metrics has
// the metric, stops it, and returns the metrics and the log.
func runUntilMetric(t *testing.T, bin, node, metric string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	addr := freePort(t)
	os.WriteFile(cfg, []byte("metrics:\n  listenAddress: "+addr+"\n"), 0o600)
	cmd := exec.Command(bin, "run", "--simulate="+node, "--config", cfg)
	cmd.Env = append(os.Environ(), "NODE_NAME=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
		}
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if body = string(b); strings.Contains(body, "\n"+metric) {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(body, "\n"+metric) {
		t.Fatalf("%s: no %s in /metrics after 30 s:\n%s", node, metric, logs.String())
	}
	return body, logs.String()
}

func grepLines(s string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
