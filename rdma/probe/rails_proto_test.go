package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/rdma/verbs"
)

// oldServer is an agent from before rails, as far as a client can tell:
// protocol version 1 only. It challenges, reads the request frame's
// header and, like readFrame then did, refuses any other version with
// the code only; a version 1 request it answers busy. It reports the
// version of each request it got.
func oldServer(t *testing.T) (addr string, versions <-chan byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan byte, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				nonce, _ := newNonce()
				writeFrame(c, typeHello, hello{Nonce: nonce})
				var h [9]byte
				if _, err := io.ReadFull(c, h[:]); err != nil {
					return
				}
				got <- h[3]
				if h[3] != 1 {
					writeFrame(c, typeError, RemoteError{Code: CodeVersion})
					return
				}
				io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(h[5:])))
				writeFrame(c, typeError, RemoteError{Code: CodeBusy, Message: ErrBusy.Error()})
			}()
		}
	}()
	return ln.Addr().String(), got
}

// A client asks in version 2 only when it names a rail: a server from
// before rails still answers its other probes, and refuses per-rail ones
// with a version error that says what to do.
func TestRailsAgainstAnOlderPeer(t *testing.T) {
	addr, versions := oldServer(t)
	c := client(testToken)
	req := DefaultRequest(KindWriteBW)
	req.Timeout = 5 * time.Second
	if _, err := c.Run(context.Background(), addr, req); !IsBusy(err) {
		t.Errorf("a probe without rails to an old peer: %v, want its busy answer", err)
	}
	if v := <-versions; v != 1 {
		t.Errorf("a probe without rails was sent as version %d", v)
	}
	rail := Rail{Index: 3, Usable: true, State: "ACTIVE", Port: Port{Device: "mlx5_3", Port: 1, GIDIndex: -1}}
	_, err := c.RunRail(context.Background(), addr, rail, RailRule{}, req)
	if v := <-versions; v != 2 {
		t.Errorf("a per-rail probe was sent as version %d", v)
	}
	if !IsVersion(err) || !strings.Contains(err.Error(), "rail 3 (mlx5_3/1): ") || !strings.Contains(err.Error(), "predates protocol version 2: per-rail probes") {
		t.Errorf("a per-rail probe to an old peer: %v", err)
	}
	// So does a service level or traffic class: an old server would
	// refuse the unknown field as a request it cannot read.
	for _, set := range []func(*Request){func(r *Request) { r.ServiceLevel = 3 }, func(r *Request) { r.TrafficClass = 106 }} {
		r := req
		set(&r)
		_, err := c.Run(context.Background(), addr, r)
		if v := <-versions; v != 2 {
			t.Errorf("%+v was sent as version %d", r, v)
		}
		if !IsVersion(err) || !strings.Contains(err.Error(), "service level and traffic class") {
			t.Errorf("%+v to an old peer: %v", r, err)
		}
	}
}

// A GPU memory probe is version 4: a server before it refuses it with a
// version error that says what to do.
func TestGPUMemoryAgainstAnOlderPeer(t *testing.T) {
	addr, versions := oldServer(t)
	req := DefaultRequest(KindSendLat)
	req.Timeout = 5 * time.Second
	req.Memory, req.GPU = verbs.MemoryGPU, &GPUTarget{Index: 0, PCIBusID: "0000:17:00.0"}
	_, err := client(testToken).Run(context.Background(), addr, req)
	if v := <-versions; v != versionGPU {
		t.Errorf("a GPU memory probe was sent as version %d", v)
	}
	if !IsVersion(err) || !strings.Contains(err.Error(), "predates protocol version 4: GPU memory probes") {
		t.Errorf("a GPU memory probe to an old peer: %v", err)
	}
}

func TestClassReachesQP(t *testing.T) {
	req := DefaultRequest(KindWriteBW)
	req.ServiceLevel, req.TrafficClass = 3, 106 // DSCP 26 (AF31), ECT(0)
	if err := req.Validate(); err != nil {
		t.Fatal(err)
	}
	if c := qpConfig(Port{Port: 1, GIDIndex: 3}, req); c.ServiceLevel != 3 || c.TrafficClass != 106 {
		t.Errorf("QP config %+v", c)
	}
	for _, bad := range []Request{{ServiceLevel: 16}, {ServiceLevel: -1}, {TrafficClass: 256}} {
		r := DefaultRequest(KindSendLat)
		r.ServiceLevel, r.TrafficClass = bad.ServiceLevel, bad.TrafficClass
		if err := r.Validate(); err == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

// A server reads a version 2 request with its rail, authenticates it and
// goes on to the RDMA kinds (which this machine, without RDMA, refuses
// as unavailable: not as a version or a request it could not read).
func TestServerReadsRailRequests(t *testing.T) {
	addr := startServer(t, NewLimiter())
	req := DefaultRequest(KindSendLat)
	req.Timeout = 5 * time.Second
	rail := Rail{Index: 1, Usable: true, State: "ACTIVE", Subnet: "10.0.4.0/24", Port: Port{Device: "rxe1", Port: 1, GIDIndex: 2, IP: "10.0.4.2"}}
	_, err := client(testToken).RunRail(context.Background(), addr, rail, RailRule{Match: RailMatchSubnet}, req)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeUnavailable || !strings.HasPrefix(err.Error(), "rail 1 (rxe1/1): ") {
		t.Errorf("per-rail probe to a server without RDMA: %v", err)
	}
	// A rail whose port is down here is not asked for at all.
	rail.Usable, rail.State = false, "DOWN"
	if _, err := client(testToken).RunRail(context.Background(), addr, rail, RailRule{}, req); err == nil || err.Error() != "rail 1 (rxe1/1): this node's port is DOWN" {
		t.Errorf("a rail down here: %v", err)
	}
}

// A round probes each peer on every rail, one after the other, and once
// on the control connection for the TCP baseline; each failure names its
// rail and the verdict the first that failed. (The server here has no
// RDMA, so it refuses rail 0; rail 1 is down on this node.)
func TestSchedulerProbesEveryRail(t *testing.T) {
	addr := startServer(t, NewLimiter())
	s := &Scheduler{Rails: &RailRule{}, Client: client(testToken), TCPBaseline: true, Timeout: 5 * time.Second}
	rails := []Rail{
		{Index: 0, Usable: true, State: "ACTIVE", Port: Port{Device: "mlx5_0", Port: 1, GIDIndex: -1}},
		{Index: 1, State: "DOWN", Port: Port{Device: "mlx5_1", Port: 1, GIDIndex: -1}},
	}
	var r Round
	s.peerRound(context.Background(), &r, Peer{Node: "n2", Address: addr}, rails)
	var got []string
	for _, f := range r.Failures {
		got = append(got, f.Kind+" "+f.where())
	}
	want := "write_bw n2 rail 0 (mlx5_0/1), write_bw n2 rail 1 (mlx5_1/1), send_lat n2 rail 0 (mlx5_0/1), send_lat n2 rail 1 (mlx5_1/1)"
	if strings.Join(got, ", ") != want {
		t.Errorf("failures %q\nwant %s", got, want)
	}
	if len(r.Results) != 2 || r.Results[0].Kind != KindTCPBW || r.Results[1].Kind != KindTCPLat || r.Results[0].Rail != nil {
		t.Errorf("results %+v: want the TCP baseline once, without a rail", r.Results)
	}
	if len(r.Failures) == 4 && (!strings.Contains(r.Failures[0].Err, "unavailable") || !strings.Contains(r.Failures[1].Err, "this node's port is DOWN")) {
		t.Errorf("failures %+v", r.Failures)
	}
	v := r.Verdict(Thresholds{}, Thresholds{})
	if v.Reason != "ProbeFailed" || !strings.Contains(v.Message, "4 of 6 probes failed; n2 rail 0 (mlx5_0/1) write_bw: rail 0 (mlx5_0/1): ") {
		t.Errorf("verdict %+v", v)
	}
}

// GPU memory probes to a peer go on the rail of the GPU's nearest device
// only; a peer whose agent predates them is skipped, not failed, and one
// that fails (this server has no RDMA) fails by rail and GPU.
func TestSchedulerGPUProbesToPeers(t *testing.T) {
	old, versions := oldServer(t)
	addr := startServer(t, NewLimiter())
	s := &Scheduler{Rails: &RailRule{}, Client: client(testToken), Timeout: 5 * time.Second}
	rails := []Rail{
		{Index: 0, Usable: true, State: "ACTIVE", Port: Port{Device: "mlx5_0", Port: 1, GIDIndex: -1}},
		{Index: 1, State: "DOWN", Port: Port{Device: "mlx5_1", Port: 1, GIDIndex: -1}},
	}
	g3 := GPUPair{GPU: GPUTarget{Index: 3, PCIBusID: "0000:17:00.0"}, Device: "mlx5_0"}
	ctx := context.Background()
	var r Round
	s.gpuPeer(ctx, &r, Peer{Node: "old", Address: old}, g3, rails)
	if v := <-versions; v != versionGPU || len(r.Results)+len(r.Failures) != 0 {
		t.Errorf("a peer before GPU memory probes (asked in version %d): %+v", v, r)
	}
	s.gpuPeer(ctx, &r, Peer{Node: "n2", Address: addr}, g3, rails)
	var got []string
	for _, f := range r.Failures {
		got = append(got, f.Kind+" "+f.where())
	}
	want := "write_bw n2 rail 0 (mlx5_0/1) from GPU 3's memory, send_lat n2 rail 0 (mlx5_0/1) from GPU 3's memory"
	if strings.Join(got, ", ") != want || len(r.Results) != 0 || !strings.Contains(r.Failures[0].Err, "unavailable") {
		t.Errorf("failures %q (%+v)\nwant %s", got, r.Failures, want)
	}
	if v := r.Verdict(Thresholds{}, Thresholds{}); !strings.HasPrefix(v.Message, "2 of 2 probes failed; n2 rail 0 (mlx5_0/1) from GPU 3's memory write_bw: rail 0 (mlx5_0/1): ") {
		t.Errorf("verdict %+v", v)
	}
	// Nothing more: a GPU whose rail is down here (its host memory probes
	// fail), one without a device, and any GPU without rails.
	s.gpuPeer(ctx, &r, Peer{Node: "n2", Address: addr}, GPUPair{GPU: GPUTarget{Index: 4}, Device: "mlx5_1"}, rails)
	s.gpuPeer(ctx, &r, Peer{Node: "n2", Address: addr}, GPUPair{GPU: GPUTarget{Index: 5}, NoDevice: "none near it"}, rails)
	s.Rails = nil
	s.gpuPeer(ctx, &r, Peer{Node: "n2", Address: addr}, g3, rails)
	if len(r.Failures) != 2 || len(r.Results) != 0 {
		t.Errorf("more probes than GPU 3's on rail 0: %+v", r)
	}
}

// A GPU's loopback probes run on its nearest device's first usable port
// and fail by GPU; a GPU whose device has no usable port is left to the
// registration check.
func TestSchedulerGPULoopback(t *testing.T) {
	s := &Scheduler{Client: client(testToken), Timeout: 5 * time.Second, Kinds: []string{KindWriteBW}}
	ports := []Port{{Device: "mlx5_0", Port: 1, GIDIndex: -1}, {Device: "mlx5_1", Port: 1, GIDIndex: -1}}
	var r Round
	s.gpuLoopback(context.Background(), &r, GPUPair{GPU: GPUTarget{Index: 1}, Device: "mlx5_1"}, ports)
	s.gpuLoopback(context.Background(), &r, GPUPair{GPU: GPUTarget{Index: 2}, Device: "mlx5_2"}, ports)
	s.gpuLoopback(context.Background(), &r, GPUPair{GPU: GPUTarget{Index: 3}}, ports)
	if len(r.Failures) != 1 || r.Failures[0].where() != "mlx5_1/1 HCA loopback from GPU 1's memory" || len(r.Results) != 0 {
		t.Errorf("round %+v", r)
	}
	if reqs := s.gpuRequests(GPUTarget{Index: 1}); len(reqs) != 1 || reqs[0].Memory != verbs.MemoryGPU || reqs[0].GPU.Index != 1 || reqs[0].Validate() != nil {
		t.Errorf("GPU requests %+v", reqs)
	}
	s.Kinds, s.TCPBaseline = []string{KindWriteBW, KindSendLat}, true
	if reqs := s.gpuRequests(GPUTarget{}); len(reqs) != 2 {
		t.Errorf("GPU requests for write_bw, send_lat and the TCP baseline: %+v", reqs)
	}
}
