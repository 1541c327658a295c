package tuning_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/test/vm"
)

// On a real kernel: the command line reserves 2M huge pages per node, more
// than node 1 has memory for, so the kernel allocates what fits and says
// so only in dmesg; verify's hugepages-reserved reads the reservation from
// /proc/cmdline and the per-node pools from sysfs and warns, naming node
// 1's shortfall, while node 0 got all of its pages; and it names the
// count the kernel ignored.
func TestHugepagesShortOnRealKernel(t *testing.T) {
	cfg := vm.Config{Timeout: 3 * time.Minute,
		NUMA: []vm.NUMANode{{CPUs: 1, MemoryMiB: 768}, {CPUs: 1, MemoryMiB: 256}},
		// The last count is a second one for 2M, which the kernel ignores
		// ("specified twice without interleaving hugepagesz=").
		Cmdline: "hugepagesz=2M hugepages=0:8,1:512 hugepages=3"}
	cfg.Binaries = []string{buildAgent(t)}
	cfg.Script = `
A="gpunode-agent --log.level=warn"
step() { name=$1; shift; echo "== step $name"; "$@"; echo "== rc $?"; }
echo "node0=$(cat /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages)"
echo "node1=$(cat /sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages)"
step advice $A verify -v
echo "== dmesg"
dmesg | grep -i hugetlb
echo "== end"
`
	res := runGuest(t, cfg)
	out := parseOutput(res.Output)
	v := out.vars
	if v["node0"] != "8" || v["node1"] == "" || v["node1"] == "512" {
		t.Fatalf("the guest kernel allocated node0=%q node1=%q; the test wants node 1 short\n%s", v["node0"], v["node1"], res.Output)
	}
	want := regexp.MustCompile(`hugepages-reserved\s+hugepages-2048kB\s+warn\s+\d+ allocated \(node0 8, node1 ` + regexp.QuoteMeta(v["node1"]) + `\)\s+520 pages of 2M \(node0 8, node1 512\)`)
	t.Logf("kernel allocated node0=%s node1=%s; dmesg: %s", v["node0"], v["node1"], strings.TrimSpace(out.sections["dmesg"]))
	if !want.MatchString(out.steps["advice"]) {
		t.Errorf("verify -v does not warn of node 1's shortfall (node1=%s):\n%s\ndmesg:\n%s", v["node1"], out.steps["advice"], out.sections["dmesg"])
	}
	if !regexp.MustCompile(`hugepages-reserved\s+node\s+warn\s+the kernel ignores: hugepages=3: a second count`).MatchString(out.steps["advice"]) {
		t.Errorf("verify -v does not name the ignored count:\n%s", out.steps["advice"])
	}
	if !strings.Contains(out.steps["advice"], "dmesg for the HugeTLB allocation message") {
		t.Errorf("verify -v lacks the remedy:\n%s", out.steps["advice"])
	}
}
