package probe_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/test/vm"
)

// wireServer is the probed VM: rxe0 and rxe1 on its ends of two wires
// (two rails), the agent's probe server, until the other VM says to break
// the second wire (eth1 down: rxe1's port goes DOWN) and then that it is
// done (or the VM times out).
const wireServer = `
rdma link add rxe0 type rxe netdev eth0
rdma link add rxe1 type rxe netdev eth1
printf 'wire-token-0123456789abcdef' > /tmp/token
gpunode-agent probe serve --token-file /tmp/token > /tmp/serve.log 2>&1 &
busybox nc -l -p 9999 > /dev/null
ip link set eth1 down
echo "== rxe1-after-break"; cat /sys/class/infiniband/rxe1/ports/1/state; echo "== end"
busybox nc -l -p 9999 > /dev/null
echo "== serve-log"; cat /tmp/serve.log; echo "== end"
`

// wireClient probes the server VM across the wire once its server
// answers: RDMA WRITE bandwidth and SEND/RECV latency with the TCP
// baseline beside them (SEND/RECV with a 2 minute timeout: across the
// emulated wire a half round trip takes 20-30 ms in TCG, so the default
// 1000 round trips take about a minute), then a wrong token; then every rail (by index
// and by subnet), breaks the second wire and probes every rail again.
const wireClient = `
rdma link add rxe0 type rxe netdev eth0
rdma link add rxe1 type rxe netdev eth1
printf 'wire-token-0123456789abcdef' > /tmp/token
printf 'someone-else-0123456789abcdef' > /tmp/wrong
peer() { gpunode-agent probe --token-file /tmp/token "$@" --peer 10.0.3.1; }
try=0
until peer lat --iterations 10 > /dev/null 2>&1; do
	try=$((try+1)); [ $try -ge 60 ] && break; sleep 1
done
echo "== wire-bw"; peer bw --tcp --iterations 1500 -o json; echo "== rc $?"
echo "== wire-lat"; peer lat --tcp --timeout 2m -o json; echo "== rc $?"
echo "== wire-wrong-token"; gpunode-agent probe --token-file /tmp/wrong bw --peer 10.0.3.1 2>&1; echo "== rc $?"
echo "== rails-bw"; peer bw --rail all --iterations 200 -o json; echo "== rc $?"
echo "== rails-lat"; peer lat --rail all --rail-match subnet --iterations 100 -o json; echo "== rc $?"
echo break | busybox nc 10.0.3.1 9999
# The server's rxe1 goes DOWN with its netdev; wait until its agent sees it.
try=0
until peer bw --rail 1 --iterations 10 2>&1 | grep -q DOWN; do
	try=$((try+1)); [ $try -ge 30 ] && break; sleep 1
done
echo "== rails-broken"; peer bw --rail all --iterations 200 -o json 2>/dev/null; echo "== rc $?"
echo done | busybox nc 10.0.3.1 9999
`

// Two VMs on two emulated Ethernet wires (two rails), each with soft-RoCE
// on its ends: the peer probe crosses from one kernel's rxe to the
// other's, as between two nodes, and so does each rail's. Two VMs rather
// than one with two rxe devices: in one kernel the traffic between two
// local addresses never crosses a wire, so a broken wire would not show.
func TestPeerProbeAcrossTwoVMs(t *testing.T) {
	srv, cres := twoVMs(t, wireServer, wireClient)
	secs := sections(cres.Output)
	bw := parseReport(t, secs, "wire-bw")
	rb, tb := find(t, bw, probe.KindWriteBW), find(t, bw, probe.KindTCPBW)
	if rb.Peer != "10.0.3.1:9836" || rb.Local.Device != "rxe0" || rb.Local.IP != "10.0.3.2" || rb.BytesPerSecond <= 0 || rb.Bytes != 1500*bwSize {
		t.Errorf("RDMA WRITE across the wire: %+v", rb)
	}
	if tb.BytesPerSecond <= 0 {
		t.Errorf("TCP baseline across the wire: %+v", tb)
	}
	lat := parseReport(t, secs, "wire-lat")
	rl, tl := find(t, lat, probe.KindSendLat), find(t, lat, probe.KindTCPLat)
	if rl.Latency == nil || rl.Latency.P50 <= 0 || tl.Latency == nil || tl.Latency.P50 <= 0 {
		t.Errorf("latency across the wire: RDMA %+v TCP %+v", rl.Latency, tl.Latency)
	} else {
		t.Logf("across the wire: RDMA WRITE %.1f MB/s, TCP %.1f MB/s; SEND/RECV p50 %s, TCP p50 %s",
			rb.BytesPerSecond/1e6, tb.BytesPerSecond/1e6, rl.Latency.P50, tl.Latency.P50)
	}
	if s := secs["wire-wrong-token"]; s.rc != 1 || !strings.Contains(s.body, "unauthorized") {
		t.Errorf("a wrong token across the wire: exit %d\n%s", s.rc, s.body)
	}
	if log := sections(srv.Output)["serve-log"].body; !strings.Contains(log, "wrong probe token") {
		t.Errorf("the server did not log the wrong token:\n%s", log)
	}
	checkRails(t, secs, sections(srv.Output))
}

// checkRails: every rail is probed, local port k against the peer's port
// on rail k (by index, and by subnet for latency); with the second wire
// broken, rail 1 fails, named as such, while rail 0 passes.
func checkRails(t *testing.T, secs, srvSecs map[string]section) {
	t.Helper()
	type want struct{ dev, ip, peerDev string }
	rails := []want{{"rxe0", "10.0.3.2", "rxe0"}, {"rxe1", "10.0.4.2", "rxe1"}}
	for _, name := range []string{"rails-bw", "rails-lat"} {
		r := parseReport(t, secs, name)
		if len(r.Results) != len(rails) {
			t.Fatalf("%s: %d results, want one per rail: %+v", name, len(r.Results), r.Results)
		}
		for i, w := range rails {
			res := r.Results[i]
			if res.Rail == nil || *res.Rail != i || res.Local.Device != w.dev || res.Local.IP != w.ip || res.PeerDevice() != w.peerDev || res.Messages == 0 {
				t.Errorf("%s rail %d: %+v (peer port %+v)", name, i, res, res.PeerPort)
			}
		}
		t.Logf("%s: rail 0 %s, rail 1 %s", name, summary(r.Results[0]), summary(r.Results[1]))
	}
	if s := srvSecs["rxe1-after-break"]; !strings.Contains(s.body, "DOWN") {
		t.Errorf("the server's rxe1 after eth1 went down: %q", s.body)
	}
	s := secs["rails-broken"]
	var r report
	if err := json.Unmarshal([]byte(s.body), &r); err != nil {
		t.Fatalf("rails-broken: %v\n%s", err, s.body)
	}
	if s.rc != 1 || len(r.Results) != 1 || r.Results[0].Rail == nil || *r.Results[0].Rail != 0 || r.Results[0].BytesPerSecond <= 0 {
		t.Errorf("broken second wire: exit %d, results %+v", s.rc, r.Results)
	}
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "write_bw: rail 1 (rxe1/1): ") || !strings.Contains(r.Errors[0], "peer: unavailable: rail 1: this node's rail 1 (rxe1/1) is DOWN") {
		t.Errorf("broken second wire: errors %q", r.Errors)
	}
}

func summary(r probe.Result) string {
	if r.Latency != nil {
		return "p50 " + r.Latency.P50.String()
	}
	return fmt.Sprintf("%.1f MB/s", r.BytesPerSecond/1e6)
}

// twoVMs runs serverScript in a VM at 10.0.3.1 and clientScript in one at
// 10.0.3.2, cabled to each other (and on a second wire at 10.0.4.1 and
// 10.0.4.2), and returns both runs; both must exit 0.
// adjust, if given, changes the server VM's configuration.
func twoVMs(t *testing.T, serverScript, clientScript string, adjust ...func(*vm.Config)) (server, client vm.Result) {
	t.Helper()
	// Two wires, two rails: eth0 on 10.0.3/24 (the control connection's)
	// and eth1 on 10.0.4/24.
	ports := []int{freeTCPPort(t), freeTCPPort(t)}
	scfg := machine(t, serverScript)
	ccfg := machine(t, clientScript)
	scfg.NICs, ccfg.NICs = nil, nil
	for i, port := range ports {
		scfg.NICs = append(scfg.NICs, vm.NIC{NUMANode: -1, IPv4: fmt.Sprintf("10.0.%d.1/24", 3+i), Socket: fmt.Sprintf("listen=127.0.0.1:%d", port), MAC: fmt.Sprintf("52:54:00:00:%02x:01", 3+i)})
		ccfg.NICs = append(ccfg.NICs, vm.NIC{NUMANode: -1, IPv4: fmt.Sprintf("10.0.%d.2/24", 3+i), Socket: fmt.Sprintf("connect=127.0.0.1:%d", port), MAC: fmt.Sprintf("52:54:00:00:%02x:02", 3+i)})
	}
	scfg.Timeout = 8 * time.Minute
	for _, f := range adjust {
		f(&scfg)
	}
	ccfg.Timeout = 8 * time.Minute
	// The two guests exchange RDMA with a retry budget of about 0.4 s
	// (timeout 14, retry_cnt 6): beside the suite's other VMs on two
	// cores, a descheduled guest missed it ("transport retry counter
	// exceeded" in CI), so the pair runs alone.
	unlock, err := vm.Alone()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	scfg.LockHeld, ccfg.LockHeld = true, true

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type run struct {
		res vm.Result
		err error
	}
	done := make(chan run, 1)
	go func() {
		res, err := vm.Run(ctx, scfg)
		done <- run{res, err}
	}()
	// QEMU listens before the guest boots; the client's QEMU must find it.
	for _, port := range ports {
		waitListening(t, port, 60*time.Second)
	}
	cres, cerr := vm.Run(ctx, ccfg)
	srv := <-done
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("GPUNODE_VM_OUTPUT") != "" {
			t.Logf("server VM output:\n%s\nclient VM output:\n%s", srv.res.Output, cres.Output)
		}
	})
	if cerr != nil || cres.ExitCode != 0 {
		t.Fatalf("client VM: exit %d, %v", cres.ExitCode, cerr)
	}
	if srv.err != nil || srv.res.ExitCode != 0 {
		t.Fatalf("server VM: exit %d, %v", srv.res.ExitCode, srv.err)
	}
	t.Logf("VMs: boot %.1fs and %.1fs, client run %s", srv.res.BootSeconds, cres.BootSeconds, cres.Wall.Round(100*time.Millisecond))
	return srv.res, cres
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening waits for a listening socket on port without connecting
// to it (QEMU's socket netdev takes the first connection as its peer).
func waitListening(t *testing.T, port int, timeout time.Duration) {
	t.Helper()
	want := fmt.Sprintf(":%04X 00000000:0000 0A", port)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if b, err := os.ReadFile("/proc/net/tcp"); err == nil && strings.Contains(string(b), want) {
			return
		}
	}
	t.Fatalf("nothing listens on 127.0.0.1:%d after %s", port, timeout)
}
