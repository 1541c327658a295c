package tuning_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/test/vm"
)

// On a real kernel with soft-RoCE (rxe on a virtio NIC) and rdma_cm's
// configfs (Debian 6.1: CONFIG_INFINIBAND_ADDR_TRANS_CONFIGFS=y): tune
// creates the device's rdma_cm directory, sets and verifies the default
// RoCE mode, and revert removes the directory again; a directory someone
// else created stays. rxe has RoCE v2 GIDs only and the kernel refuses
// IB/RoCE v1 there (EINVAL), which the plan reports as unsupported from
// the GID types; so no other value can be written and drift cannot be
// made on rxe (the fixture tests cover it). rxe's netdev has no DCB and no
// ECN switches: PFC and trust (over real DCB netlink, EOPNOTSUPP) and ECN
// are unsupported, and from another network namespace (unshare -n) they
// are refused while the RoCE mode (configfs is global) is not.
func TestRoCEModeOnRealKernel(t *testing.T) {
	iproute, err := vm.Package("iproute2")
	if err != nil {
		t.Fatal(err)
	}
	cfg := vm.Config{
		CPUs: 2, MemoryMiB: 1024, Timeout: 3 * time.Minute,
		NICs:     []vm.NIC{{NUMANode: -1, IPv4: "10.0.2.15/24"}},
		Modules:  append([]string{"configfs"}, append(vm.SoftRoCEModules, "rdma_cm")...),
		Binaries: []string{buildAgent(t), filepath.Join(iproute, "usr/bin/rdma")},
	}
	cfg.Script = `
A="gpunode-agent --log.level=warn"
step() { name=$1; shift; echo "== step $name"; "$@"; echo "== rc $?"; }
M=/sys/kernel/config/rdma_cm
mount -t configfs none /sys/kernel/config
rdma link add rxe0 type rxe netdev eth0
echo "dirs_before=$(ls $M | tr '\n' ' ')"
printf 'name: v2\nroce:\n  defaultMode: RoCE v2\n  pfc: [3]\n  trust: dscp\n  ecn: [3]\n' > /tmp/v2.yaml
printf 'name: v1\nroce:\n  defaultMode: IB/RoCE v1\n' > /tmp/v1.yaml
step plan $A tune --profile /tmp/v2.yaml plan
step netns unshare -n $A tune --profile /tmp/v2.yaml plan
step apply $A tune --profile /tmp/v2.yaml apply
echo "dirs_applied=$(ls $M | tr '\n' ' ')"
echo "mode_applied=$(cat $M/rxe0/ports/1/default_roce_mode)"
step verify $A tune --profile /tmp/v2.yaml verify
step v1 $A tune --profile /tmp/v1.yaml plan
echo "v1_write=$(echo 'IB/RoCE v1' > $M/rxe0/ports/1/default_roce_mode 2>&1 && echo accepted || echo refused)"
step revert $A tune revert
echo "dirs_reverted=$(ls $M | tr '\n' ' ')"
mkdir $M/rxe0
step apply2 $A tune --profile /tmp/v2.yaml apply
step revert2 $A tune revert
echo "dirs_kept=$(ls $M | tr '\n' ' ')"
echo "mode_kept=$(cat $M/rxe0/ports/1/default_roce_mode)"
`
	res := runGuest(t, cfg)
	out := parseOutput(res.Output)
	v := out.vars
	if v["dirs_before"] != "" {
		t.Fatalf("rdma_cm has directories before tuning: %q\n%s", v["dirs_before"], res.Output)
	}
	out.wantRC(t, "plan", 0)
	for _, want := range []string{
		"tuning creates /sys/kernel/config/rdma_cm/rxe0",
		"the driver of eth0 has no DCB (IEEE PFC)", "the driver of eth0 has no DCB (application table)",
		"the driver exposes no /sys/class/net/eth0/ecn/roce_np/enable/3",
		"5 settings: 1 set, 4 unsupported",
	} {
		if !strings.Contains(out.steps["plan"], want) {
			t.Errorf("plan does not say %q:\n%s", want, out.steps["plan"])
		}
	}
	if s := out.steps["netns"]; !strings.Contains(s, "4 refused, 1 set") {
		t.Errorf("from another network namespace, want PFC, trust and the 2 ECN switches refused, the RoCE mode not:\n%s", s)
	}
	out.wantRC(t, "apply", 0)
	if v["dirs_applied"] != "rxe0 " || v["mode_applied"] != "RoCE v2" {
		t.Errorf("after apply: directories %q, mode %q\n%s", v["dirs_applied"], v["mode_applied"], out.steps["apply"])
	}
	out.wantRC(t, "verify", 0)
	if s := out.steps["v1"]; !strings.Contains(s, "no IB/RoCE v1 GIDs (only RoCE v2)") || v["v1_write"] != "refused" {
		t.Errorf("IB/RoCE v1 on rxe: the kernel %s it; plan:\n%s", v["v1_write"], s)
	}
	out.wantRC(t, "revert", 0)
	if v["dirs_reverted"] != "" {
		t.Errorf("after revert: directories %q\n%s", v["dirs_reverted"], out.steps["revert"])
	}
	out.wantRC(t, "apply2", 0)
	out.wantRC(t, "revert2", 0)
	if v["dirs_kept"] != "rxe0 " || v["mode_kept"] != "RoCE v2" {
		t.Errorf("a directory tuning did not create: after revert dirs %q mode %q\n%s%s", v["dirs_kept"], v["mode_kept"], out.steps["apply2"], out.steps["revert2"])
	}
}
