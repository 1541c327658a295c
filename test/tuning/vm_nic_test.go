package tuning_test

import (
	"regexp"
	"testing"
	"time"

	"github.com/gpunode/gpunode/test/vm"
)

// On a real kernel (virtio-net of Linux 6.1 under QEMU 7.2, which resizes
// rings through virtqueue reset): a ring resize is planned as disruptive
// and not made without nic.allowDisruptive, made and verified with it,
// and reverted to the driver's original size; adaptive coalescing, which
// virtio-net 6.1 lacks, is unsupported; from another network namespace
// the netdev settings are refused.
func TestNICRingsOnRealKernel(t *testing.T) {
	cfg := vm.Config{CPUs: 2, MemoryMiB: 1024, Timeout: 3 * time.Minute,
		NICs: []vm.NIC{{NUMANode: -1, IPv4: "10.0.2.15/24"}}}
	cfg.Binaries = []string{buildAgent(t)}
	cfg.Script = `
A="gpunode-agent --log.level=warn"
step() { name=$1; shift; echo "== step $name"; "$@"; echo "== rc $?"; }
base='name: nic\nnic:\n  netdevs: [eth0]\n  rxRing: 128\n  txRing: 128\n  adaptiveRx: true\n'
printf "$base" > /tmp/nic.yaml
printf "$base  allowDisruptive: true\n" > /tmp/allow.yaml
step plan-gated $A tune --profile /tmp/nic.yaml plan
step apply-gated $A tune --profile /tmp/nic.yaml apply
step plan-after-gated $A tune --profile /tmp/nic.yaml plan
step apply $A tune --profile /tmp/allow.yaml apply
step verify $A tune --profile /tmp/allow.yaml verify
step revert $A tune revert
step plan-reverted $A tune --profile /tmp/allow.yaml plan
step netns unshare -n $A tune --profile /tmp/allow.yaml plan
`
	res := runGuest(t, cfg)
	out := parseOutput(res.Output)
	want := func(step, re string) {
		t.Helper()
		if !regexp.MustCompile(`(?m)` + re).MatchString(out.steps[step]) {
			t.Errorf("%s does not match %q:\n%s", step, re, out.steps[step])
		}
	}
	// virtio-net's default ring is 256 (QEMU rx_queue_size/tx_queue_size).
	want("plan-gated", `^nic\s+eth0/rx-ring\s+256\s+128\s+skip \(disruptive\)\s+disruptive`)
	want("plan-gated", `^nic\s+eth0/tx-ring\s+256\s+128\s+skip \(disruptive\)`)
	want("plan-gated", `^nic\s+eth0/adaptive-rx\s+-\s+on\s+unsupported`)
	out.wantRC(t, "apply-gated", 0)
	want("plan-after-gated", `^nic\s+eth0/rx-ring\s+256\s+128\s+skip \(disruptive\)`)
	out.wantRC(t, "apply", 0)
	want("apply", `eth0/rx-ring\s+256\s+128\s+changed`)
	out.wantRC(t, "verify", 0)
	want("verify", `^nic\s+eth0/rx-ring\s+128\s+128\s+ok`)
	want("verify", `^nic\s+eth0/tx-ring\s+128\s+128\s+ok`)
	out.wantRC(t, "revert", 0)
	want("plan-reverted", `^nic\s+eth0/rx-ring\s+256\s+128\s+set \(disruptive\)`)
	want("netns", `^nic\s+eth0/rx-ring\s+.*refused`)
}
