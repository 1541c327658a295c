package exporters

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/rdma/verbs"
)

func TestProbeCollector(t *testing.T) {
	var round *probe.Round
	var refused map[string]uint64 // probes off
	c := NewProbeCollector(func() *probe.Round { return round }, func() map[string]uint64 { return refused })
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Errorf("before the first round: %d metrics", n)
	}
	refused = map[string]uint64{"bad_request": 3, "unauthorized": 2000, "version": 0}
	port := probe.Port{Device: "rxe0", Port: 1, RateGbps: 2.5}
	gpu3 := &probe.GPUResult{Index: 3, PCIBusID: "0000:17:00.0", Path: verbs.PathDMABuf}
	round = &probe.Round{
		At: time.Unix(1700000000, 500000000),
		Results: []probe.Result{
			{Kind: probe.KindWriteBW, Local: port, Peer: probe.PeerLoopback, BytesPerSecond: 5e7, CPUSecondsPerGB: 2.5},
			{Kind: probe.KindWriteBW, Local: port, Peer: "node-c", BytesPerSecond: 2e8, LineRateFraction: 0.64, Rail: new(0), PeerPort: &probe.Port{Device: "mlx5_0", Port: 1}},
			// read_bw beside it: its own bandwidth series, and no second
			// line-rate one (that series has no kind label).
			{Kind: probe.KindReadBW, Local: port, Peer: "node-c", BytesPerSecond: 1e8, LineRateFraction: 0.32, Rail: new(0), PeerPort: &probe.Port{Device: "mlx5_0", Port: 1}},
			{Kind: probe.KindTCPBW, Peer: "node-b", BytesPerSecond: 2e8, CPUSecondsPerGB: 1.25},
			{Kind: probe.KindSendLat, Local: port, Peer: "node-b", Latency: &verbs.Latency{Min: 8 * time.Microsecond, P50: 10 * time.Microsecond, P99: 20 * time.Microsecond, P999: 40 * time.Microsecond, Max: time.Millisecond}},
			// GPU 3's memory beside host memory: series of their own,
			// the line rate's too.
			{Kind: probe.KindWriteBW, Local: port, Peer: probe.PeerLoopback, BytesPerSecond: 4e7, Memory: verbs.MemoryGPU, GPU: gpu3},
			{Kind: probe.KindWriteBW, Local: port, Peer: "node-c", BytesPerSecond: 1.9e8, LineRateFraction: 0.608, Rail: new(0), PeerPort: &probe.Port{Device: "mlx5_0", Port: 1}, Memory: verbs.MemoryGPU, GPU: gpu3},
		},
		Failures: []probe.Failure{
			{Kind: probe.KindWriteBW, Peer: "node-b", Err: "peer: busy"},
			// A rail whose peer refused: its device is unknown.
			{Kind: probe.KindWriteBW, Peer: "node-c", Port: "rxe1/1", Rail: new(1), Err: "rail 1 (rxe1/1): peer: unavailable: this node's rail 1 (rxe1/1) is DOWN"},
			{Kind: probe.KindSendLat, Port: "rxe0/1", GPU: new(3), Err: "GPU 3: GPU memory on 0000:17:00.0: cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY (2)"},
		},
	}
	want := `
# HELP gpunode_rdma_probe_bandwidth_bytes_per_second Bandwidth the last probe measured: kind write_bw is RDMA WRITE as ib_write_bw measures it, read_bw RDMA READ as ib_read_bw (a bidirectional probe: both directions' sum), tcp_bw the TCP baseline to the same peer. peer is a node name (the link and fabric), or loopback (a check of the HCA and its driver: the traffic turns around inside the adapter and never meets the link); peer_device is the peer's device on the rail probed (empty for loopback, the TCP baseline and probes without rails); memory is where this end's buffers were, host or gpu (GPUDirect RDMA: the memory of GPU gpu, the GPU nearest device; the peer's in the GPU nearest its port), gpu empty for host memory.
# TYPE gpunode_rdma_probe_bandwidth_bytes_per_second gauge
gpunode_rdma_probe_bandwidth_bytes_per_second{device="",gpu="",kind="tcp_bw",memory="host",peer="node-b",peer_device="",port=""} 2e+08
gpunode_rdma_probe_bandwidth_bytes_per_second{device="rxe0",gpu="",kind="read_bw",memory="host",peer="node-c",peer_device="mlx5_0",port="1"} 1e+08
gpunode_rdma_probe_bandwidth_bytes_per_second{device="rxe0",gpu="",kind="write_bw",memory="host",peer="loopback",peer_device="",port="1"} 5e+07
gpunode_rdma_probe_bandwidth_bytes_per_second{device="rxe0",gpu="",kind="write_bw",memory="host",peer="node-c",peer_device="mlx5_0",port="1"} 2e+08
gpunode_rdma_probe_bandwidth_bytes_per_second{device="rxe0",gpu="3",kind="write_bw",memory="gpu",peer="loopback",peer_device="",port="1"} 4e+07
gpunode_rdma_probe_bandwidth_bytes_per_second{device="rxe0",gpu="3",kind="write_bw",memory="gpu",peer="node-c",peer_device="mlx5_0",port="1"} 1.9e+08
# HELP gpunode_rdma_probe_cpu_seconds_per_gigabyte CPU seconds the probe threads of both ends spent per 1e9 bytes moved by the last bandwidth probe of this kind.
# TYPE gpunode_rdma_probe_cpu_seconds_per_gigabyte gauge
gpunode_rdma_probe_cpu_seconds_per_gigabyte{device="",gpu="",kind="tcp_bw",memory="host",peer="node-b",peer_device="",port=""} 1.25
gpunode_rdma_probe_cpu_seconds_per_gigabyte{device="rxe0",gpu="",kind="write_bw",memory="host",peer="loopback",peer_device="",port="1"} 2.5
# HELP gpunode_rdma_probe_last_run_timestamp_seconds Unix time when the last round of RDMA probes started.
# TYPE gpunode_rdma_probe_last_run_timestamp_seconds gauge
gpunode_rdma_probe_last_run_timestamp_seconds 1.7000000005e+09
# HELP gpunode_rdma_probe_latency_seconds Half round trip of the last probe: kind send_lat is SEND/RECV as ib_send_lat measures it, write_lat RDMA WRITE as ib_write_lat, tcp_lat the TCP baseline; quantile 0 is the minimum, 1 the maximum; memory and gpu as for the bandwidth.
# TYPE gpunode_rdma_probe_latency_seconds gauge
gpunode_rdma_probe_latency_seconds{device="rxe0",gpu="",kind="send_lat",memory="host",peer="node-b",peer_device="",port="1",quantile="0"} 8e-06
gpunode_rdma_probe_latency_seconds{device="rxe0",gpu="",kind="send_lat",memory="host",peer="node-b",peer_device="",port="1",quantile="0.5"} 1e-05
gpunode_rdma_probe_latency_seconds{device="rxe0",gpu="",kind="send_lat",memory="host",peer="node-b",peer_device="",port="1",quantile="0.99"} 2e-05
gpunode_rdma_probe_latency_seconds{device="rxe0",gpu="",kind="send_lat",memory="host",peer="node-b",peer_device="",port="1",quantile="0.999"} 4e-05
gpunode_rdma_probe_latency_seconds{device="rxe0",gpu="",kind="send_lat",memory="host",peer="node-b",peer_device="",port="1",quantile="1"} 0.001
# HELP gpunode_rdma_probe_line_rate_ratio RDMA WRITE bandwidth (write_bw) of the last probe to a peer over the data rate of the slower of the two ports (0 to 1; a bidirectional probe over twice it); loopback probes have none, their traffic never meets the link.
# TYPE gpunode_rdma_probe_line_rate_ratio gauge
gpunode_rdma_probe_line_rate_ratio{device="rxe0",gpu="",memory="host",peer="node-c",peer_device="mlx5_0",port="1"} 0.64
gpunode_rdma_probe_line_rate_ratio{device="rxe0",gpu="3",memory="gpu",peer="node-c",peer_device="mlx5_0",port="1"} 0.608
# HELP gpunode_rdma_probe_refused_total Connections to the probe server refused before the peer proved it holds the probe token: reason bad_request (malformed, truncated or no request), unauthorized (wrong token), version (another protocol version).
# TYPE gpunode_rdma_probe_refused_total counter
gpunode_rdma_probe_refused_total{reason="bad_request"} 3
gpunode_rdma_probe_refused_total{reason="unauthorized"} 2000
gpunode_rdma_probe_refused_total{reason="version"} 0
# HELP gpunode_rdma_probe_success 1 if the last probe of this kind ran to the end, 0 if it failed; device and port are this node's port (its rail, for per-rail peer probes), peer_device is empty for a failure; memory and gpu as for the bandwidth.
# TYPE gpunode_rdma_probe_success gauge
gpunode_rdma_probe_success{device="",gpu="",kind="tcp_bw",memory="host",peer="node-b",peer_device="",port=""} 1
gpunode_rdma_probe_success{device="",gpu="",kind="write_bw",memory="host",peer="node-b",peer_device="",port=""} 0
gpunode_rdma_probe_success{device="rxe0",gpu="",kind="read_bw",memory="host",peer="node-c",peer_device="mlx5_0",port="1"} 1
gpunode_rdma_probe_success{device="rxe0",gpu="",kind="send_lat",memory="host",peer="node-b",peer_device="",port="1"} 1
gpunode_rdma_probe_success{device="rxe0",gpu="",kind="write_bw",memory="host",peer="loopback",peer_device="",port="1"} 1
gpunode_rdma_probe_success{device="rxe0",gpu="",kind="write_bw",memory="host",peer="node-c",peer_device="mlx5_0",port="1"} 1
gpunode_rdma_probe_success{device="rxe0",gpu="3",kind="send_lat",memory="gpu",peer="loopback",peer_device="",port="1"} 0
gpunode_rdma_probe_success{device="rxe0",gpu="3",kind="write_bw",memory="gpu",peer="loopback",peer_device="",port="1"} 1
gpunode_rdma_probe_success{device="rxe0",gpu="3",kind="write_bw",memory="gpu",peer="node-c",peer_device="mlx5_0",port="1"} 1
gpunode_rdma_probe_success{device="rxe1",gpu="",kind="write_bw",memory="host",peer="node-c",peer_device="",port="1"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Error(err)
	}
}
