package tuning_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/test/vm"
)

// On a real kernel: the daemon holds the CPU latency limit of
// cpu.maxLatencyUs through /dev/cpu_dma_latency while it runs (the
// kernel's limit, read from the same device, is 0), and the kernel drops
// it when the daemon stops and when it is killed with SIGKILL; a one-shot
// `tune plan` says only the daemon holds it. The guest has no cpufreq
// driver (QEMU offers no frequency control), so the governor is
// unsupported there, as the plan says. verify's advice checks read the
// configuration space of the guest's virtio NIC.
func TestCPUPowerOnRealKernel(t *testing.T) {
	cfg := vm.Config{CPUs: 2, MemoryMiB: 1024, Timeout: 3 * time.Minute,
		// A virtio NIC behind a PCIe root port: its configuration space
		// has a PCIe capability the advice checks read.
		NICs: []vm.NIC{{NUMANode: -1, IPv4: "10.0.2.15/24"}}}
	cfg.Binaries = []string{buildAgent(t)}
	cfg.Script = `
A="gpunode-agent --log.level=warn"
step() { name=$1; shift; echo "== step $name"; "$@"; echo "== rc $?"; }
lat() { od -An -td4 -N4 /dev/cpu_dma_latency | tr -d ' '; }
held() {
	i=0
	while [ $i -lt 120 ] && [ "$(lat)" != 0 ]; do sleep 0.5; i=$((i+1)); done
}
echo "lat_before=$(lat)"
echo "cpuidle=$(ls -d /sys/devices/system/cpu/cpuidle 2>/dev/null)"
printf 'name: lat\ncpu:\n  cpus: "0"\n  governor: performance\n  maxLatencyUs: 0\n' > /tmp/lat.yaml
step plan $A tune --profile /tmp/lat.yaml plan
printf 'tuning:\n  mode: enforce\n  profile: /tmp/lat.yaml\n  interval: 1s\ndiscovery:\n  interval: 2s\n  sourceTimeout: 2s\nmetrics:\n  listenAddress: 127.0.0.1:9835\n' > /tmp/agent.yaml
gpunode-agent run --config /tmp/agent.yaml > /tmp/agent.log 2>&1 &
agent=$!
held
echo "lat_held=$(lat)"
kill $agent; wait $agent
echo "lat_stopped=$(lat)"
gpunode-agent run --config /tmp/agent.yaml >> /tmp/agent.log 2>&1 &
agent=$!
held
echo "lat_held_again=$(lat)"
kill -9 $agent; wait $agent
echo "lat_killed=$(lat)"
step revert $A tune revert
nic=$(basename "$(readlink -f /sys/class/net/eth0/device/..)")
echo "nic=$nic"
step advice $A verify -v
step inspect $A inspect -o json
echo "== agent log"
cat /tmp/agent.log
echo "== end"
`
	res := runGuest(t, cfg)
	out := parseOutput(res.Output)
	v := out.vars
	const none = "2000000000" // PM_QOS_DEFAULT_VALUE: no limit
	if v["lat_before"] != none {
		t.Fatalf("the guest's CPU latency limit before is %q, want %s (no limit)\n%s", v["lat_before"], none, res.Output)
	}
	out.wantRC(t, "plan", 0)
	for _, w := range []string{"pm-qos", "held only by the daemon", "cpu0/scaling_governor", "unsupported"} {
		if !strings.Contains(out.steps["plan"], w) {
			t.Errorf("plan lacks %q:\n%s", w, out.steps["plan"])
		}
	}
	if v["cpuidle"] == "" {
		t.Fatalf("the guest kernel has no cpuidle:\n%s", res.Output)
	}
	for k, want := range map[string]string{"lat_held": "0", "lat_stopped": none, "lat_held_again": "0", "lat_killed": none} {
		if v[k] != want {
			t.Errorf("%s = %q, want %q\nagent log:\n%s", k, v[k], want, out.sections["agent log"])
		}
	}
	out.wantRC(t, "revert", 0)

	// Discovery reads the real configuration space of the virtio NIC (as
	// root); the advice checks judge RDMA NICs only, so this one is
	// skipped there.
	nic := v["nic"]
	if !regexp.MustCompile(`(?s)"address":\s*"` + regexp.QuoteMeta(nic) + `".*?"pcie_config":\s*\{\s*"max_read_request":\s*\d+,\s*"max_payload":\s*\d+`).MatchString(out.steps["inspect"]) {
		t.Errorf("inspect does not show the NIC %s's PCIe registers:\n%s", nic, out.steps["inspect"])
	}
	for _, w := range []string{"iommu-passthrough", "isolcpus-irqs", "pcie-acs-redirect"} {
		if !strings.Contains(out.steps["advice"], w) {
			t.Errorf("verify -v lacks %s:\n%s", w, out.steps["advice"])
		}
	}
}
