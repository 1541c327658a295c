package probe_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/test/vm"
)

// wireServer is the probed VM: rxe0 on its end of the wire, the agent's
// probe server, until the other VM says it is done (or the VM times out).
const wireServer = `
rdma link add rxe0 type rxe netdev eth0
printf 'wire-token-0123456789abcdef' > /tmp/token
gpunode-agent probe serve --token-file /tmp/token > /tmp/serve.log 2>&1 &
busybox nc -l -p 9999 > /dev/null
echo "== serve-log"; cat /tmp/serve.log; echo "== end"
`

// wireClient probes the server VM across the wire once its server
// answers: RDMA WRITE bandwidth and SEND/RECV latency with the TCP
// baseline beside them, then a wrong token.
const wireClient = `
rdma link add rxe0 type rxe netdev eth0
printf 'wire-token-0123456789abcdef' > /tmp/token
printf 'someone-else-0123456789abcdef' > /tmp/wrong
peer() { gpunode-agent probe --token-file /tmp/token "$@" --peer 10.0.3.1; }
try=0
until peer lat --iterations 10 > /dev/null 2>&1; do
	try=$((try+1)); [ $try -ge 60 ] && break; sleep 1
done
echo "== wire-bw"; peer bw --tcp --iterations 1500 -o json; echo "== rc $?"
echo "== wire-lat"; peer lat --tcp -o json; echo "== rc $?"
echo "== wire-wrong-token"; gpunode-agent probe --token-file /tmp/wrong bw --peer 10.0.3.1 2>&1; echo "== rc $?"
echo done | busybox nc 10.0.3.1 9999
`

// Two VMs on one emulated Ethernet wire, each with soft-RoCE on its end:
// the peer probe crosses from one kernel's rxe to the other's, as between
// two nodes.
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
}

// twoVMs runs serverScript in a VM at 10.0.3.1 and clientScript in one at
// 10.0.3.2, cabled to each other, and returns both runs; both must exit 0.
// adjust, if given, changes the server VM's configuration.
func twoVMs(t *testing.T, serverScript, clientScript string, adjust ...func(*vm.Config)) (server, client vm.Result) {
	t.Helper()
	port := freeTCPPort(t)
	scfg := machine(t, serverScript)
	scfg.NICs = []vm.NIC{{NUMANode: -1, IPv4: "10.0.3.1/24", Socket: fmt.Sprintf("listen=127.0.0.1:%d", port), MAC: "52:54:00:00:03:01"}}
	scfg.Timeout = 5 * time.Minute
	for _, f := range adjust {
		f(&scfg)
	}
	ccfg := machine(t, clientScript)
	ccfg.NICs = []vm.NIC{{NUMANode: -1, IPv4: "10.0.3.2/24", Socket: fmt.Sprintf("connect=127.0.0.1:%d", port), MAC: "52:54:00:00:03:02"}}
	ccfg.Timeout = 5 * time.Minute

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
	waitListening(t, port, 60*time.Second)
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
