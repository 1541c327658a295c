package tuning_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/test/vm"
)

// On a real kernel, the agent reads the guest's own /dev/kmsg: lines
// written into it (as `echo '<3>...' > /dev/kmsg`, the way the kernel's
// drivers would log them) before the agent starts, while it runs and while
// it is stopped are each counted exactly once across a restart, which goes
// on after the record journaled in the state directory. (This package
// holds the tests that run the agent in a VM; the kernel log is one more.)
func TestKernelLogOnRealKernel(t *testing.T) {
	cfg := vm.Config{CPUs: 2, MemoryMiB: 1024, Timeout: 3 * time.Minute}
	cfg.Binaries = []string{buildAgent(t)}
	cfg.Script = `
cat > /tmp/agent.yaml <<EOF
discovery:
  interval: 2s
  sourceTimeout: 2s
metrics:
  listenAddress: 127.0.0.1:9835
  sampleInterval: 1s
EOF
# wait_for PATTERN: until the agent's metrics have a line matching it.
wait_for() {
	i=0
	while [ $i -lt 120 ]; do
		wget -qO- http://127.0.0.1:9835/metrics 2>/dev/null | grep -q "$1" && return 0
		sleep 0.5; i=$((i+1))
	done
	echo "timed out waiting for $1"
}
metrics() { echo "== metrics $1"; wget -qO- http://127.0.0.1:9835/metrics | grep '^gpunode_kernel_log'; echo "== end"; }
start() { gpunode-agent run --config /tmp/agent.yaml >> /tmp/agent.log 2>&1 & agent=$!; }

# Before the agent ever ran: an Xid (of a GPU this VM does not have), an
# mlx5 health syndrome and a fatal AER error.
echo '<3>NVRM: Xid (PCI:0000:00:1f): 79, pid=0, GPU has fallen off the bus.' > /dev/kmsg
echo '<3>mlx5_core 0000:00:05.0: print_health_info:431:(pid 0): Health issue observed, firmware internal error, severity(3) ERROR:' > /dev/kmsg
echo '<3>pcieport 0000:00:1c.0: PCIe Bus Error: severity=Uncorrected (Fatal), type=Transaction Layer, (Requester ID)' > /dev/kmsg
start
wait_for '^gpunode_kernel_log_events_total{.*kind="aer"'
metrics before

# While it runs: an SXid, and a second mlx5 syndrome on the same NIC.
echo '<3>nvidia-nvswitch0: SXid (PCI:0000:00:1e.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error' > /dev/kmsg
echo '<3>mlx5_core 0000:00:05.0: print_health_info:431:(pid 0): Health issue observed, firmware internal error, severity(3) ERROR:' > /dev/kmsg
wait_for '^gpunode_kernel_log_events_total{.*kind="sxid"'
sleep 2
metrics running
kill $agent; wait $agent

# While it is stopped: another Xid. Then a restart.
echo '<3>NVRM: Xid (PCI:0000:00:1f): 48, pid=0, An uncorrectable double bit error' > /dev/kmsg
echo "journal=$(cat /var/lib/gpunode/kmsg.json)"
start
wait_for '^gpunode_kernel_log_events_total{code="48"'
sleep 2
metrics restarted
kill $agent; wait $agent
echo "== agent log"
cat /tmp/agent.log
echo "== end"
`
	res := runGuest(t, cfg)
	out := parseOutput(res.Output)
	series := func(section string) map[string]string {
		m := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out.sections["metrics "+section]), "\n") {
			if i := strings.LastIndexByte(l, ' '); i > 0 {
				m[l[:i]] = l[i+1:]
			}
		}
		return m
	}
	const (
		xid79 = `gpunode_kernel_log_events_total{code="79",device="0000:00:1f.0",kind="xid",severity=""}`
		xid48 = `gpunode_kernel_log_events_total{code="48",device="0000:00:1f.0",kind="xid",severity=""}`
		mlx5  = `gpunode_kernel_log_events_total{code="0",device="0000:00:05.0",kind="mlx5_health",severity=""}`
		aer   = `gpunode_kernel_log_events_total{code="0",device="0000:00:1c.0",kind="aer",severity="fatal"}`
		sxid  = `gpunode_kernel_log_events_total{code="12028",device="0000:00:1e.0",kind="sxid",severity="nonfatal"}`
		lost  = `gpunode_kernel_log_records_lost_total`
	)
	want := map[string]map[string]string{
		"before":    {xid79: "1", mlx5: "1", aer: "1", lost: "0"},
		"running":   {xid79: "1", mlx5: "2", aer: "1", sxid: "1", lost: "0"},
		"restarted": {xid48: "1", lost: "0"},
	}
	for _, section := range []string{"before", "running", "restarted"} {
		got := series(section)
		for k, v := range want[section] {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %s", section, k, got[k], v)
			}
		}
		for k := range got {
			if strings.HasPrefix(k, "gpunode_kernel_log_events_total") {
				if _, ok := want[section][k]; !ok {
					t.Errorf("%s: unexpected %s %s (counted twice?)", section, k, got[k])
				}
			}
		}
	}
	if !strings.Contains(out.vars["journal"], `"seq":`) {
		t.Errorf("no journal: %q", out.vars["journal"])
	}
	if t.Failed() {
		t.Logf("output:\n%s", res.Output)
	}
}
