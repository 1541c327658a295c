package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/rdma/verbs"
)

// This machine's kernel has no RDMA: every probe command that needs it
// says so and exits 1; bad usage exits 2. (serve: TestProbeServeWithoutRDMA.)
func TestProbeCLIWithoutRDMA(t *testing.T) {
	for _, tc := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"help", "probe"}, 0, "loopback", ""},
		{[]string{"probe", "loopback"}, 1, "", "RDMA probes are unavailable on this node: the kernel has no RDMA support"},
		{[]string{"probe", "loopback", "-o", "json", "--tcp"}, 1, "", "unavailable"},
		{[]string{"probe", "bw", "--peer", "127.0.0.1"}, 1, "", "unavailable"},
		{[]string{"probe", "lat"}, 2, "", "--peer"},
		{[]string{"probe", "loopback", "--kind", "read"}, 2, "", "enum value"},
		{[]string{"probe", "bw", "--peer", "127.0.0.1", "--kind", "send_lat"}, 2, "", "enum value"},
		{[]string{"probe", "lat", "--peer", "127.0.0.1", "--kind", "read_bw"}, 2, "", "enum value"},
		{[]string{"probe", "bw", "--peer", "127.0.0.1", "--tcp", "--qps", "17"}, 2, "", "qps 17 out of range 1..16"},
		{[]string{"probe", "bw", "--peer", "127.0.0.1", "--tcp", "--sweep", "--size", "4096"}, 2, "", "--sweep and --size exclude each other"},
		{[]string{"probe", "lat", "--peer", "127.0.0.1", "--kind", "write_lat"}, 1, "", "unavailable"},
		{[]string{"probe"}, 2, "", "must select a subcommand"},
		{[]string{"probe", "bw", "--peer", "127.0.0.1", "--tcp", "--sl", "16"}, 2, "", "service level 16 out of range 0..15"},
		{[]string{"probe", "bw", "--peer", "127.0.0.1", "--tcp", "--rail", "two"}, 2, "", `--rail "two": want all or a rail number`},
		{[]string{"probe", "bw", "--peer", "127.0.0.1", "--tcp", "--rail", "0", "--device", "mlx5_0"}, 2, "", "--rail and --device exclude each other"},
		{[]string{"probe", "bw", "--peer", "127.0.0.1", "--tcp", "--rail", "all", "--rail-match", "slot"}, 2, "", "enum value"},
		{[]string{"probe", "bw", "--peer", "127.0.0.1", "--tcp", "--memory", "gpu"}, 2, "", "--memory gpu and --tcp exclude each other"},
		{[]string{"probe", "bw", "--peer", "127.0.0.1", "--tcp", "--gpu", "0"}, 2, "", "--gpu needs --memory gpu"},
		{[]string{"probe", "loopback", "--memory", "vram"}, 2, "", "enum value"},
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
	f = &probeFlags{timeout: time.Minute, sl: 3, tclass: 106}
	if r := f.request(probe.KindSendLat); r.ServiceLevel != 3 || r.TrafficClass != 106 || r.Validate() != nil {
		t.Errorf("class flags %+v", r)
	}
	// The TCP baseline has no class to set.
	if r := f.request(probe.KindTCPBW); r.ServiceLevel != 0 || r.TrafficClass != 0 || r.Validate() != nil {
		t.Errorf("class flags on TCP %+v", r)
	}
	// perftest's other tests: --qps and --bidir go to the RDMA bandwidth
	// kinds only; --sweep runs every size from 2 bytes to 8 MiB.
	f = &probeFlags{timeout: time.Minute, qps: 2, bidir: true}
	if r := f.request(probe.KindReadBW); r.QPs != 2 || !r.Bidirectional || r.Size != 65536 || r.Validate() != nil {
		t.Errorf("read_bw flags %+v", r)
	}
	if r := f.request(probe.KindWriteLat); r.QPs != 0 || r.Bidirectional || r.Size != 2 || r.Validate() != nil {
		t.Errorf("write_lat flags %+v", r)
	}
	if r := f.request(probe.KindTCPBW); r.QPs != 0 || r.Bidirectional || r.Validate() != nil {
		t.Errorf("qps on TCP %+v", r)
	}
	f = &probeFlags{timeout: time.Minute, sweep: true}
	reqs, err := f.requests([]string{probe.KindWriteBW, probe.KindWriteLat})
	if err != nil || len(reqs) != 2*23 || reqs[0].Size != 2 || reqs[22].Size != 8<<20 || reqs[23].Kind != probe.KindWriteLat || reqs[45].Size != 8<<20 {
		t.Errorf("sweep: %v, %d requests", err, len(reqs))
	}
	port := probe.Port{Device: "rxe0", Port: 1, RateGbps: 2.5, DataRateGbps: 2.5}
	line := formatResult(probe.Result{Kind: probe.KindReadBW, Local: port, Peer: "loopback", Size: 65536, Iterations: 5000, Depth: 128, QPs: 2, Bidirectional: true, BytesPerSecond: 1e8})
	if !strings.Contains(line, "read_bw   64 KiB x 5000, depth 128, 2 QPs, both ways: 100.00 MB/s") {
		t.Errorf("several QPs both ways %q", line)
	}
	line = formatResult(probe.Result{Kind: probe.KindWriteBW, Local: port, Peer: "loopback", Size: 65536, Iterations: 5000, Depth: 128, BytesPerSecond: 5.083e7, CPUSecondsPerGB: 19.68})
	if !strings.Contains(line, "rxe0/1") || !strings.Contains(line, "64 KiB x 5000, depth 128: 50.83 MB/s = 48.48 MiB/s, 19.68 CPU s/GB") {
		t.Errorf("loopback bandwidth line %q", line)
	}
	// A peer probe: the fraction of the slower port's data rate (QDR:
	// 40 Gb/s signalling, 32 of data).
	qdr := probe.Port{Device: "mlx4_0", Port: 1, RateGbps: 40, DataRateGbps: 32}
	line = formatResult(probe.Result{Kind: probe.KindWriteBW, Local: qdr, Peer: "node-b:9836", PeerDataRateGbps: 100, Size: 65536, Iterations: 5000, Depth: 128, BytesPerSecond: 3.2e9, LineRateFraction: 0.8, CPUSecondsPerGB: 0.1})
	if !strings.Contains(line, ": 3200.00 MB/s = 3051.76 MiB/s (80.0% of 32 Gb/s), 0.10 CPU s/GB") {
		t.Errorf("peer bandwidth line %q", line)
	}
	line = formatResult(probe.Result{Kind: probe.KindWriteBW, Local: port, Peer: "node-b:9836", Rail: new(1), PeerPort: &probe.Port{Device: "mlx5_1", Port: 1}, Size: 65536, Iterations: 5000, Depth: 128, BytesPerSecond: 5e7})
	if !strings.HasPrefix(line, "rail 1 rxe0/1 node-b:9836 mlx5_1/1 ") {
		t.Errorf("per-rail line %q", line)
	}
	line = formatResult(probe.Result{Kind: probe.KindSendLat, Local: port, Peer: "node-b:9836", Size: 2, Iterations: 1000,
		Latency: &verbs.Latency{Min: 8 * time.Microsecond, P50: 9500 * time.Nanosecond, P99: 20 * time.Microsecond, P999: 40 * time.Microsecond, Max: time.Millisecond}})
	if !strings.Contains(line, "2 B x 1000: latency min 8.00us p50 9.50us p99 20.00us p99.9 40.00us max 1000.00us") {
		t.Errorf("latency line %q", line)
	}
}

// Without RDMA, `probe serve` starts all the same, says why RDMA is
// unavailable, answers the TCP baseline (through the CLI's bw/lat --tcp
// and the Client API) and refuses an RDMA kind saying this node has none.
func TestProbeServeWithoutRDMA(t *testing.T) {
	if probe.Available() == nil {
		t.Skip("this machine has RDMA")
	}
	bin, err := buildAgent()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, err.(*exec.ExitError).Stderr)
	}
	token := []byte("0123456789abcdef0123")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, token, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	var serveErr syncBuffer
	serve := exec.Command(bin, "probe", "--token-file", tokenFile, "serve", "--listen", addr)
	serve.Stderr = &serveErr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = serve.Wait(); close(exited) }()
	stop := sync.OnceFunc(func() {
		serve.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			if err := waitErr; err != nil {
				t.Errorf("probe serve: %v\n%s", err, serveErr.String())
			}
		case <-time.After(10 * time.Second):
			serve.Process.Kill()
			t.Error("probe serve did not stop on SIGTERM")
		}
	})
	defer stop()
	for deadline := time.Now().Add(20 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("probe serve exited: %v\n%s", waitErr, serveErr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("probe serve not listening: %v\n%s", err, serveErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	c := &probe.Client{Token: token, Limiter: probe.NewLimiter(), StepTimeout: 5 * time.Second,
		Devices: func(context.Context) ([]rdma.Device, error) { return nil, nil }}
	for _, k := range []string{probe.KindTCPBW, probe.KindTCPLat} {
		req := probe.DefaultRequest(k)
		req.Iterations = 200
		if res, err := c.Run(context.Background(), addr, req); err != nil || res.Bytes == 0 {
			t.Errorf("%s: %+v %v", k, res, err)
		}
	}
	_, err = c.Run(context.Background(), addr, probe.DefaultRequest(probe.KindWriteBW))
	var re *probe.RemoteError
	if !errors.As(err, &re) || re.Code != probe.CodeUnavailable || !strings.Contains(re.Message, "this node has no RDMA") || !strings.Contains(re.Message, "no RDMA support") {
		t.Errorf("write_bw: %v", err)
	}

	// The CLI: bw --tcp runs the TCP baseline and says RDMA is unavailable
	// here (exit 1, one probe failed).
	var out, errOut bytes.Buffer
	code := run([]string{"probe", "--token-file", tokenFile, "--iterations", "200", "bw", "--tcp", "--peer", addr}, &out, &errOut)
	if code != 1 || !strings.Contains(out.String(), "tcp_bw") || !strings.Contains(errOut.String(), "write_bw: RDMA probes are unavailable on this node") {
		t.Errorf("bw --tcp: exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	code = run([]string{"probe", "--token-file", tokenFile, "-o", "json", "--iterations", "200", "lat", "--tcp", "--peer", addr}, &out, &errOut)
	if code != 1 || !strings.Contains(out.String(), `"kind": "tcp_lat"`) {
		t.Errorf("lat --tcp: exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
	}

	stop()
	if l := serveErr.String(); !strings.Contains(l, "RDMA is unavailable on this node") || !strings.Contains(l, "no RDMA support") || !strings.Contains(l, "serving RDMA probes") {
		t.Errorf("serve log:\n%s", l)
	}
}

// syncBuffer is a bytes.Buffer a child process writes while a test reads.
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

// --memory gpu pairs each GPU with its nearest NIC's port from the
// inventory (a simulated HGX H100 here: gpuN under mlx5_N's switch).
func TestProbeGPUPorts(t *testing.T) {
	cfg := config.Default()
	env, err := discovery.Open(cfg, "dgx-h100-ib")
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	devs, err := rdma.NewReader(env.FS).Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ports := probe.Ports(devs)
	ctx := context.Background()
	f := &probeFlags{gpu: "3"}
	gps, err := f.gpuPorts(ctx, env, cfg, ports)
	if err != nil || len(gps) != 1 || gps[0].err != "" || gps[0].gpu.Index != 3 || gps[0].gpu.MaxBytes != 4<<20 || gps[0].gpu.PCIBusID == "" {
		t.Fatalf("--gpu 3: %+v, %v", gps, err)
	}
	t.Logf("gpu3 %s on %s", gps[0].gpu.PCIBusID, gps[0].port.Name())
	f = &probeFlags{}
	all, err := f.gpuPorts(ctx, env, cfg, ports)
	if err != nil || len(all) != 8 || all[3].port != gps[0].port || all[0].port == all[3].port {
		t.Errorf("every GPU: %+v, %v", all, err)
	}
	f = &probeFlags{gpu: strings.ToUpper(gps[0].gpu.PCIBusID), device: "mlx5_0"}
	if bus, err := f.gpuPorts(ctx, env, cfg, ports); err != nil || len(bus) != 1 || bus[0].gpu.Index != 3 || bus[0].port.Device != "mlx5_0" {
		t.Errorf("by bus id, on --device: %+v, %v", bus, err)
	}
	// A bus id the inventory does not know runs on the first port.
	f = &probeFlags{gpu: "0000:EE:00.0"}
	if unk, err := f.gpuPorts(ctx, env, cfg, ports); err != nil || len(unk) != 1 || unk[0].gpu.Index != -1 || unk[0].gpu.PCIBusID != "0000:ee:00.0" || unk[0].port != ports[0] {
		t.Errorf("unknown bus id: %+v, %v", unk, err)
	}
	for gpu, want := range map[string]string{"8": "--gpu 8: the inventory has 8 GPUs", "first": `--gpu "first": want a GPU index or a PCI bus id`} {
		f = &probeFlags{gpu: gpu}
		if _, err := f.gpuPorts(ctx, env, cfg, ports); err == nil || err.Error() != want {
			t.Errorf("--gpu %s: %v", gpu, err)
		}
	}
	line := formatResult(probe.Result{Kind: probe.KindWriteBW, Local: ports[0], Peer: "loopback", Size: 65536, Iterations: 10, Depth: 128,
		Memory: verbs.MemoryGPU, GPU: &probe.GPUResult{Index: 3, Path: verbs.PathDMABuf}})
	if !strings.HasPrefix(line, ports[0].Name()+" gpu3 (dmabuf) loopback") {
		t.Errorf("GPU line %q", line)
	}
}
