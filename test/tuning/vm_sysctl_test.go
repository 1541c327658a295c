package tuning_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/test/vm"
)

// On a real kernel: writing vm.dirty_ratio zeroes vm.dirty_bytes, and
// apply then revert of a ratio profile gives the host back its byte limit
// (not ratio 0 with bytes 0); an IPC sysctl is refused from another IPC
// namespace (unshare -i), where it would change only that namespace's copy;
// revert keeps a value changed by hand after apply; a value the kernel
// rounds (fs.pipe-max-size) is its answer, not drift.
func TestSysctlEdgesOnRealKernel(t *testing.T) {
	cfg := vm.Config{CPUs: 2, MemoryMiB: 1024, Timeout: 3 * time.Minute}
	cfg.Binaries = []string{buildAgent(t)}
	cfg.Script = `
A="gpunode-agent --log.level=warn"
step() { name=$1; shift; echo "== step $name"; "$@"; echo "== rc $?"; }
vmvals() { echo "$1_bytes=$(cat /proc/sys/vm/dirty_bytes)"; echo "$1_ratio=$(cat /proc/sys/vm/dirty_ratio)"; echo "$1_bg_ratio=$(cat /proc/sys/vm/dirty_background_ratio)"; echo "$1_bg_bytes=$(cat /proc/sys/vm/dirty_background_bytes)"; }
echo 268435456 > /proc/sys/vm/dirty_bytes
vmvals before
printf 'name: dirty\nsysctl:\n  vm.dirty_ratio: 15\n  vm.dirty_background_ratio: 5\n' > /tmp/dirty.yaml
step plan $A tune --profile /tmp/dirty.yaml plan
step apply $A tune --profile /tmp/dirty.yaml apply
vmvals applied
step revert $A tune revert
vmvals reverted

printf 'name: ipc\nsysctl:\n  kernel.shmmni: 8192\n' > /tmp/ipc.yaml
echo "shmmni_before=$(cat /proc/sys/kernel/shmmni)"
step ipc unshare -i $A tune --profile /tmp/ipc.yaml apply
echo "shmmni_after_unshare=$(cat /proc/sys/kernel/shmmni)"
step ipc-host $A tune --profile /tmp/ipc.yaml apply
echo "shmmni_after_host=$(cat /proc/sys/kernel/shmmni)"
step ipc-revert $A tune revert
echo "shmmni_reverted=$(cat /proc/sys/kernel/shmmni)"

# Revert after a hand edit keeps the hand-set value.
printf 'name: swap\nsysctl:\n  vm.swappiness: 7\n' > /tmp/swap.yaml
step swap-apply $A tune --profile /tmp/swap.yaml apply
echo 33 > /proc/sys/vm/swappiness
step swap-revert $A tune revert
echo "swappiness_reverted=$(cat /proc/sys/vm/swappiness)"

# fs.pipe-max-size is rounded up to a power-of-two number of pages
# (fs/pipe.c, round_pipe_size): the kernel holds another value than the one
# written. That is its answer, not drift on every verification.
echo "pipe_before=$(cat /proc/sys/fs/pipe-max-size)"
printf 'name: pipe\nsysctl:\n  fs.pipe-max-size: 100000\n' > /tmp/pipe.yaml
step pipe-apply $A tune --profile /tmp/pipe.yaml apply
echo "pipe_applied=$(cat /proc/sys/fs/pipe-max-size)"
step pipe-verify $A tune --profile /tmp/pipe.yaml verify
step pipe-apply-again $A tune --profile /tmp/pipe.yaml apply
step pipe-revert $A tune revert
echo "pipe_reverted=$(cat /proc/sys/fs/pipe-max-size)"
`
	res := runGuest(t, cfg)
	out := parseOutput(res.Output)
	v := out.vars
	// The kernel's own behaviour, which the fix depends on.
	if v["before_bytes"] != "268435456" || v["before_ratio"] != "0" {
		t.Fatalf("before: dirty_bytes %q, dirty_ratio %q (want the byte limit in use, ratio 0)", v["before_bytes"], v["before_ratio"])
	}
	out.wantRC(t, "plan", 0)
	if !strings.Contains(out.steps["plan"], "the kernel zeroes vm.dirty_bytes (now 268435456)") {
		t.Errorf("plan does not say dirty_bytes is zeroed:\n%s", out.steps["plan"])
	}
	out.wantRC(t, "apply", 0)
	if v["applied_ratio"] != "15" || v["applied_bytes"] != "0" {
		t.Errorf("applied: ratio %q bytes %q, want 15 and 0 (the kernel zeroes bytes)", v["applied_ratio"], v["applied_bytes"])
	}
	out.wantRC(t, "revert", 0)
	for k, want := range map[string]string{"reverted_bytes": "268435456", "reverted_ratio": "0", "reverted_bg_ratio": v["before_bg_ratio"], "reverted_bg_bytes": v["before_bg_bytes"]} {
		if v[k] != want {
			t.Errorf("%s = %q, want %q\nrevert:\n%s", k, v[k], want, out.steps["revert"])
		}
	}

	// IPC: refused from another IPC namespace, applied and reverted from the host's.
	if rc := out.rcs["ipc"]; rc != 1 || !strings.Contains(out.steps["ipc"], "hostIPC: true") {
		t.Errorf("apply in another IPC namespace: rc %d\n%s", rc, out.steps["ipc"])
	}
	if v["shmmni_after_unshare"] != v["shmmni_before"] {
		t.Errorf("shmmni changed from another IPC namespace: %q -> %q", v["shmmni_before"], v["shmmni_after_unshare"])
	}
	out.wantRC(t, "ipc-host", 0)
	if v["shmmni_after_host"] != "8192" || v["shmmni_reverted"] != v["shmmni_before"] {
		t.Errorf("shmmni: host apply %q, reverted %q (was %q)", v["shmmni_after_host"], v["shmmni_reverted"], v["shmmni_before"])
	}

	// A value changed by hand after apply is kept by revert.
	out.wantRC(t, "swap-apply", 0)
	out.wantRC(t, "swap-revert", 0)
	if v["swappiness_reverted"] != "33" || !strings.Contains(out.steps["swap-revert"], "kept") {
		t.Errorf("swappiness after revert %q, want the hand-set 33 kept:\n%s", v["swappiness_reverted"], out.steps["swap-revert"])
	}

	// A value the kernel rounds: accepted, verified as ok, not written again.
	out.wantRC(t, "pipe-apply", 0)
	if n := v["pipe_applied"]; n != "131072" || !strings.Contains(out.steps["pipe-apply"], "accepted") {
		t.Errorf("pipe-max-size after apply %q, want the kernel's 131072, accepted:\n%s", n, out.steps["pipe-apply"])
	}
	out.wantRC(t, "pipe-verify", 0)
	if strings.Contains(out.steps["pipe-verify"], "drift") {
		t.Errorf("the kernel's answer verified as drift:\n%s", out.steps["pipe-verify"])
	}
	if !strings.Contains(out.steps["pipe-apply-again"], "nothing to change") {
		t.Errorf("applied again:\n%s", out.steps["pipe-apply-again"])
	}
	out.wantRC(t, "pipe-revert", 0)
	if v["pipe_reverted"] != v["pipe_before"] {
		t.Errorf("pipe-max-size after revert %q, want %q", v["pipe_reverted"], v["pipe_before"])
	}
}
