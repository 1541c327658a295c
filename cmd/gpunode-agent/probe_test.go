package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/rdma/verbs"
)

// This machine's kernel has no RDMA: every probe command says so and
// exits 1; bad usage exits 2.
func TestProbeCLIWithoutRDMA(t *testing.T) {
	for _, tc := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"help", "probe"}, 0, "loopback", ""},
		{[]string{"probe", "loopback"}, 1, "", "RDMA probes are unavailable on this node: the kernel has no RDMA support"},
		{[]string{"probe", "loopback", "-o", "json", "--tcp"}, 1, "", "unavailable"},
		{[]string{"probe", "serve", "--listen", "127.0.0.1:0"}, 1, "", "unavailable"},
		{[]string{"probe", "bw", "--peer", "127.0.0.1"}, 1, "", "unavailable"},
		{[]string{"probe", "lat"}, 2, "", "--peer"},
		{[]string{"probe", "loopback", "--kind", "read"}, 2, "", "enum value"},
		{[]string{"probe"}, 2, "", "must select a subcommand"},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errOut.String(), tc.errOut) {
			t.Errorf("%v: exit %d (want %d)\nstdout: %s\nstderr: %s", tc.args, code, tc.code, out.String(), errOut.String())
		}
	}
}

func TestProbeHelpers(t *testing.T) {
	for in, want := range map[string]string{"node-a": "node-a:9836", "10.0.0.1:1234": "10.0.0.1:1234", "fd00::1": "[fd00::1]:9836", "[fd00::1]": "[fd00::1]:9836"} {
		if got := peerAddress(in); got != want {
			t.Errorf("peerAddress(%q) = %q, want %q", in, got, want)
		}
	}
	f := &probeFlags{timeout: time.Minute}
	if r := f.request(probe.KindWriteBW); r.Size != 65536 || r.Iterations != 5000 || r.Depth != 128 || r.Validate() != nil {
		t.Errorf("bandwidth defaults %+v", r)
	}
	f = &probeFlags{timeout: time.Minute, size: 4096, depth: 16, duration: 30 * time.Second}
	if r := f.request(probe.KindWriteBW); r.Size != 4096 || r.Depth != 16 || r.Duration != 30*time.Second || r.Timeout < 40*time.Second || r.Validate() != nil {
		t.Errorf("bandwidth flags %+v", r)
	}
	if r := f.request(probe.KindSendLat); r.Size != 4096 || r.Iterations != 1000 || r.Depth != 1 || r.Duration != 0 {
		t.Errorf("latency flags %+v", r)
	}
	port := probe.Port{Device: "rxe0", Port: 1, RateGbps: 2.5}
	line := formatResult(probe.Result{Kind: probe.KindWriteBW, Local: port, Peer: "loopback", Size: 65536, Iterations: 5000, Depth: 128, BytesPerSecond: 5.083e7, LineRateFraction: 0.163, CPUSecondsPerGB: 19.68})
	if !strings.Contains(line, "rxe0/1") || !strings.Contains(line, "64 KiB x 5000, depth 128: 50.83 MB/s (16.3% of 2.5 Gb/s), 19.68 CPU s/GB") {
		t.Errorf("bandwidth line %q", line)
	}
	line = formatResult(probe.Result{Kind: probe.KindSendLat, Local: port, Peer: "node-b:9836", Size: 2, Iterations: 1000,
		Latency: &verbs.Latency{Min: 8 * time.Microsecond, P50: 9500 * time.Nanosecond, P99: 20 * time.Microsecond, P999: 40 * time.Microsecond, Max: time.Millisecond}})
	if !strings.Contains(line, "2 B x 1000: latency min 8.00us p50 9.50us p99 20.00us p99.9 40.00us max 1000.00us") {
		t.Errorf("latency line %q", line)
	}
}
