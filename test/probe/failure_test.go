package probe_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/test/vm"
)

// lossServer serves probes and, when the client VM says so (port 9998),
// loses the client's SENDs at its ingress: RoCE v2 (UDP 4791) packets
// whose BTH opcode, 28 bytes into the IPv4 packet, is 0x04 (RC SEND
// only). The ACKs of its own replies still arrive, so its last reply
// completes and it waits for a ping that never comes, while the client
// retransmits its ping until its retries run out: a failure of one end
// only. Port 9997 ends the loss.
const lossServer = `
rdma link add rxe0 type rxe netdev eth0
printf 'wire-token-0123456789abcdef' > /tmp/token
gpunode-agent probe serve --token-file /tmp/token > /tmp/serve.log 2>&1 &
tc=/opt/iproute2/tc
$tc qdisc add dev eth0 ingress
busybox nc -l -p 9998 > /dev/null
$tc filter add dev eth0 parent ffff: protocol ip prio 1 u32 match ip protocol 17 0xff match ip dport 4791 0xffff match u8 0x04 0xff at 28 action drop
busybox nc -l -p 9997 > /dev/null
echo "== filter"; $tc -s filter show dev eth0 parent ffff:; echo "== end"
$tc filter del dev eth0 parent ffff: prio 1
busybox nc -l -p 9999 > /dev/null
echo "== serve-log"; cat /tmp/serve.log; echo "== end"
`

// lossClient runs a long latency probe (a million round trips, a 2
// minute timeout), has the server lose its SENDs once the probe
// measures, and then probes again: the server must be free at once.
const lossClient = `
rdma link add rxe0 type rxe netdev eth0
printf 'wire-token-0123456789abcdef' > /tmp/token
peer() { gpunode-agent probe --token-file /tmp/token "$@" --peer 10.0.3.1; }
tell() { i=0; until echo "$1" | busybox nc 10.0.3.1 $2; do i=$((i+1)); [ $i -ge 30 ] && break; sleep 1; done; }
try=0
until peer lat --iterations 10 > /dev/null 2>&1; do
	try=$((try+1)); [ $try -ge 60 ] && break; sleep 1
done
qps() { rdma res show qp 2>/dev/null | wc -l; }
before=$(qps)
peer lat --iterations 1000000 --timeout 2m > /tmp/lost.log 2>&1 &
client=$!
i=0
while [ "$(qps)" -le $before ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
sleep 2
t0=$(cut -d. -f1 /proc/uptime)
tell lose 9998
wait $client
rc=$?
t1=$(cut -d. -f1 /proc/uptime)
echo "== lost"; cat /tmp/lost.log; echo "== rc $rc"
echo "== lost-time"; echo "$((t1-t0))"; echo "== end"
tell stop 9997
# The server must be free now: busy means its loop still polls.
try=1
until out=$(peer lat --iterations 100 -o json 2>&1); rc=$?; [ $rc -eq 0 ] || [ $try -ge 5 ]; do
	try=$((try+1)); sleep 1
done
echo "== after"; echo "$out"; echo "== rc $rc"
tell done 9999
`

// TestOneSidedFailureAcrossTwoVMs: the client's pings are lost, so its
// loop fails (retries exceeded) while the server's waits for pings. The
// client's done carries the error and the server's loop stops at once,
// instead of polling until the 2 minute timeout with the node's probe
// slot taken.
func TestOneSidedFailureAcrossTwoVMs(t *testing.T) {
	srv, cres := twoVMs(t, lossServer, lossClient, func(c *vm.Config) {
		dir, err := vm.Package("iproute2")
		if err != nil {
			t.Fatal(err)
		}
		// Not /usr/bin/tc: busybox's tc applet would answer instead.
		c.Files = append(c.Files, vm.File{Path: "/opt/iproute2/tc", HostPath: filepath.Join(dir, "sbin/tc"), Mode: 0o755, Libraries: true})
		c.Modules = append(c.Modules, "sch_ingress", "cls_u32", "act_gact")
	})
	secs, ssecs := sections(cres.Output), sections(srv.Output)
	t.Logf("server's filter:\n%s", ssecs["filter"].body)
	l := secs["lost"]
	// The failed completion is the flushed receive, which hides the
	// retries exceeded on the send (issue 20, item 16).
	if l.rc != 1 || !strings.Contains(l.body, "SEND/RECV: completion failed") {
		t.Errorf("the probe whose pings were lost: exit %d: %s", l.rc, l.body)
	}
	n, err := strconv.Atoi(strings.TrimSpace(secs["lost-time"].body))
	if err != nil || n > 30 {
		t.Errorf("the client ended %q s after its pings were lost (timeout 2 min)", secs["lost-time"].body)
	}
	t.Logf("the client ended %d s after its pings were lost: %s", n, strings.TrimSpace(l.body))
	find(t, parseReport(t, secs, "after"), "send_lat")
	if log := ssecs["serve-log"].body; !strings.Contains(log, `probe failed: client: \"SEND/RECV: completion failed`) || !strings.Contains(log, "server: SEND/RECV: operation canceled") {
		t.Errorf("the server did not log the client's failure:\n%s", log)
	}
}
