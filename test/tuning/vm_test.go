// Package tuning_test proves host tuning on a real kernel: a Debian kernel in a
// QEMU VM with two NUMA nodes and a 100G NIC on node 1, where gpunode-agent
// applies llm-inference, verifies, has a hand-made change detected and
// repaired by the daemon, and reverts to exactly the values it found.
package tuning_test

import (
	"context"

	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/cpuset"
	"github.com/gpunode/gpunode/test/tools"
	"github.com/gpunode/gpunode/test/vm"
	"github.com/gpunode/gpunode/tuning"
)

// buildAgent builds gpunode-agent; the VM gets it with its shared
// libraries.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin, err := tools.BuildAgent(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// machine is the VM: node 0 has CPUs 0-1, node 1 CPUs 2-4 with CPU 4
// isolated on the kernel command line. eth0 is a NIC of unknown speed on
// the main root complex (not high-speed: nic-local leaves it alone), eth1 a
// 100G NIC behind a host bridge on node 1. systemd is PID 1, with Debian's
// irqbalance and its unit installed but not started.
func machine(t *testing.T) vm.Config {
	irqbalance, err := vm.Package("irqbalance")
	if err != nil {
		t.Fatal(err)
	}
	return vm.Config{
		NUMA:         []vm.NUMANode{{CPUs: 2, MemoryMiB: 512}, {CPUs: 3, MemoryMiB: 512}},
		NICs:         []vm.NIC{{NUMANode: -1, IPv4: "10.0.2.15/24"}, {NUMANode: 1, SpeedMbps: 100000}},
		Modules:      vm.SoftRoCEModules,
		ExtraModules: []string{"tcp_bbr"}, // loaded by the kernel when bbr is written
		Cmdline:      "isolcpus=4",
		Systemd:      true,
		Files: []vm.File{
			{Path: "/usr/sbin/irqbalance", HostPath: filepath.Join(irqbalance, "usr/sbin/irqbalance"), Libraries: true},
			{Path: "/lib/systemd/system/irqbalance.service", HostPath: filepath.Join(irqbalance, "lib/systemd/system/irqbalance.service")},
			// The VM boots only the test's target; without the targets a
			// full boot has, the unit must not depend on them.
			{Path: "/etc/systemd/system/irqbalance.service.d/vm.conf", Data: []byte("[Unit]\nDefaultDependencies=no\n")},
		},
		Timeout: 5 * time.Minute,
	}
}

// script runs the whole scenario in one boot. Sections:
// "== dump NAME" ... "== end" hold path=value lines read with cat, "== step
// NAME" ... "== rc N" the output and exit status of a command.
func script(sysctls []string) string {
	var paths []string
	for _, k := range sysctls {
		p, _ := tuning.SysctlPath(k)
		paths = append(paths, p)
	}
	return `
A="gpunode-agent --log.level=warn"
dump() {
	echo "== dump $1"
	for f in ` + strings.Join(paths, " ") + ` /sys/kernel/mm/transparent_hugepage/enabled /sys/kernel/mm/transparent_hugepage/defrag; do
		echo "$f=$(cat $f 2>&1)"
	done
	for d in /proc/irq/[0-9]*; do echo "$d/smp_affinity_list=$(cat $d/smp_affinity_list)"; done
	echo "== end"
}
step() { name=$1; shift; echo "== step $name"; "$@"; echo "== rc $?"; }
nic=/sys/class/net/eth1/device/..
echo "nic_numa=$(cat $nic/numa_node)"
echo "nic_irqs=$(ls $nic/msi_irqs | tr '\n' ' ')"
echo "node1_cpus=$(cat /sys/devices/system/node/node1/cpulist)"
first=$(ls $nic/msi_irqs | sort -n | head -n1)
echo "first_irq=$first"
# The journal's key of that interrupt: device and queue (action name).
echo "first_key=$(basename "$(readlink -f $nic)")/$(awk -v n="$first:" '$1 == n {print $NF}' /proc/interrupts)"

dump before
step plan $A tune plan
step apply $A tune apply
dump applied
step verify-clean $A tune verify
step apply-again $A tune apply

# A hand-made change, as another tool or an operator would make it.
echo 60 > /proc/sys/vm/swappiness
echo 0-4 > /proc/irq/$first/smp_affinity_list
dump changed
step verify-drift $A tune verify

# The daemon in enforce mode repairs it and says so.
cat > /tmp/agent.yaml <<EOF
tuning:
  mode: enforce
  interval: 1s
discovery:
  interval: 2s
  sourceTimeout: 2s
metrics:
  listenAddress: 127.0.0.1:9835
EOF
gpunode-agent run --config /tmp/agent.yaml > /tmp/agent.log 2>&1 &
agent=$!
i=0
while [ $i -lt 120 ]; do
	if [ "$(cat /proc/sys/vm/swappiness)" = 1 ] && [ "$(cat /proc/irq/$first/smp_affinity_list)" != 0-4 ] &&
		wget -qO- http://127.0.0.1:9835/metrics 2>/dev/null | grep -q '^gpunode_tuning_info.*state="compliant"'; then
		break
	fi
	sleep 0.5; i=$((i+1))
done
echo "== metrics"
wget -qO- http://127.0.0.1:9835/metrics | grep '^gpunode_tuning'
echo "== end"
kill $agent; wait $agent
echo "== agent log"
cat /tmp/agent.log
echo "== end"
dump repaired
step verify-repaired $A tune verify
step revert $A tune revert
dump reverted
echo "journal_left=$(ls /var/lib/gpunode | grep -c journal)"

# Outside the host's network namespace net.* is refused; the rest applies.
step netns unshare -n $A tune apply
dump netns
step revert-netns $A tune revert
dump final

# irqbalance, run by systemd: the default profile coexists with it (bans
# the NIC's interrupts through its socket; Debian 12's irqbalance 1.9.2
# answers only after the 10 s sleep of the rescan a ban starts; over that
# sleep and its next rebalancing it leaves them; a restart forgets the
# ban: drift); a conflict with irqbalance: conflict; with irqbalance: stop the
# unit is masked (until reboot) and stopped through systemd, so a start (as
# cri-o's hooks and package upgrades do) fails, and revert unmasks and
# starts it again.
systemctl start irqbalance
sleep 1
echo "irqbalance_started=$(systemctl is-active irqbalance)"
step irq-coexist $A tune apply
dump irq-coexist
sleep 11
step irq-coexist-verify $A tune verify
systemctl restart irqbalance
sleep 1
step irq-coexist-drift $A tune verify
step irq-coexist-revert $A tune revert
echo "irqbalance_after_coexist=$(systemctl is-active irqbalance)"
printf 'name: nic-local-conflict\nsysctl:\n  vm.swappiness: 1\nirq:\n  policies: [{policy: nic-local}]\n  irqbalance: conflict\n' > /tmp/conflict.yaml
step irq-plan $A tune --profile /tmp/conflict.yaml plan
step irq-apply $A tune --profile /tmp/conflict.yaml apply
dump irq-conflict
step irq-revert-conflict $A tune revert
printf 'name: nic-local-stop\nirq:\n  policies: [{policy: nic-local}]\n  irqbalance: stop\n' > /tmp/stop.yaml
step irq-stop $A tune --profile /tmp/stop.yaml apply
echo "irqbalance_after_stop=$(systemctl is-active irqbalance)"
echo "irqbalance_load_after_stop=$(systemctl show -p LoadState --value irqbalance)"
# What cri-o's hooks and package upgrades do: start it. Masked, it stays down.
systemctl start irqbalance 2>/dev/null
echo "irqbalance_after_start_masked=$(systemctl is-active irqbalance)"
dump irq-stopped
step irq-stop-verify $A tune --profile /tmp/stop.yaml verify
step irq-revert $A tune revert
echo "irqbalance_after_revert=$(systemctl is-active irqbalance)"
echo "irqbalance_load_after_revert=$(systemctl show -p LoadState --value irqbalance)"
`
}

func TestTuningOnRealKernel(t *testing.T) {
	profile, err := tuning.Builtin("llm-inference")
	if err != nil {
		t.Fatal(err)
	}
	sysctls := slices.Sorted(maps.Keys(profile.Sysctl))
	sysctls = append(sysctls, tuning.NUMABalancingKey)

	cfg := machine(t)
	cfg.Binaries = []string{buildAgent(t)}
	cfg.Script = script(sysctls)
	res := runGuest(t, cfg)
	out := parse(t, res.Output)
	if t.Failed() {
		return
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format, args...)
	}
	before, applied := out.dumps["before"], out.dumps["applied"]

	// The NIC is on node 1, as the VM was built.
	if out.vars["nic_numa"] != "1" {
		fail("eth1 reports NUMA node %q, want 1", out.vars["nic_numa"])
	}
	node1, err := cpuset.Parse(out.vars["node1_cpus"])
	if err != nil || node1.String() != "2-4" {
		t.Fatalf("node 1 CPUs %q: %v", out.vars["node1_cpus"], err)
	}
	nicIRQs := map[string]bool{}
	for _, n := range strings.Fields(out.vars["nic_irqs"]) {
		nicIRQs["/proc/irq/"+n+"/smp_affinity_list"] = true
	}
	if len(nicIRQs) < 2 {
		t.Fatalf("eth1 has IRQs %q", out.vars["nic_irqs"])
	}

	// plan and apply succeed; every sysctl reads back as the profile wants.
	out.wantRC(t, "plan", 0)
	// irqbalance is installed but stopped: the process scan and systemd
	// (over D-Bus) both say so.
	if !strings.Contains(out.steps["plan"], "irqbalance: not-running: process not-running, unit irqbalance.service inactive") {
		fail("plan does not report irqbalance stopped, by process and unit:\n%s", out.steps["plan"])
	}
	out.wantRC(t, "apply", 0)
	want := map[string]string{
		"/sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never",
		"/sys/kernel/mm/transparent_hugepage/defrag":  "always defer [defer+madvise] madvise never",
		"/proc/sys/kernel/numa_balancing":             "0",
	}
	for k, v := range profile.Sysctl {
		p, _ := tuning.SysctlPath(k)
		want[p] = string(v)
	}
	for p, w := range want {
		if got := tuning.NormalizeValue(applied[p]); got != w {
			fail("after apply %s = %q, want %q", p, got, w)
		}
		if before[p] == applied[p] {
			t.Logf("note: %s was already %q before apply", p, before[p])
		}
	}

	// NIC interrupts went to node 1's CPUs other than the isolated CPU 4,
	// one CPU each in turn; every other interrupt is untouched.
	used := map[string]bool{}
	for p, v := range applied {
		if !strings.HasPrefix(p, "/proc/irq/") {
			continue
		}
		if !nicIRQs[p] {
			if before[p] != v {
				fail("%s is not eth1's but changed: %q -> %q", p, before[p], v)
			}
			continue
		}
		if v != "2" && v != "3" {
			fail("eth1 interrupt %s on CPUs %q, want one CPU of node 1 other than the isolated 4", p, v)
		}
		used[v] = true
	}
	if len(used) != 2 {
		fail("eth1's %d interrupts use CPUs %v, want both 2 and 3", len(nicIRQs), slices.Sorted(maps.Keys(used)))
	}

	out.wantRC(t, "verify-clean", 0)
	out.wantRC(t, "apply-again", 0)
	if !strings.Contains(out.steps["apply-again"], "nothing to change") {
		fail("second apply changed something:\n%s", out.steps["apply-again"])
	}

	// The hand-made change is drift: verify fails and names both settings.
	out.wantRC(t, "verify-drift", 1)
	first := "/proc/irq/" + out.vars["first_irq"] + "/smp_affinity_list"
	if out.dumps["changed"]["/proc/sys/vm/swappiness"] != "60" || out.dumps["changed"][first] != "0-4" {
		t.Fatalf("the hand-made change did not take: %v", out.dumps["changed"])
	}
	for _, w := range []string{"vm.swappiness", "irq     " + out.vars["first_key"]} {
		if !regexp.MustCompile(regexp.QuoteMeta(w) + `.*set \(drift\)`).MatchString(out.steps["verify-drift"]) {
			fail("verify after a hand-made change does not show %q drifted:\n%s", w, out.steps["verify-drift"])
		}
	}

	// The daemon repaired both, reported it, and its metrics say so.
	repaired := out.dumps["repaired"]
	if repaired["/proc/sys/vm/swappiness"] != "1" || repaired[first] != applied[first] {
		fail("daemon did not repair: swappiness %q, %s %q (want 1, %q)\nagent log:\n%s",
			repaired["/proc/sys/vm/swappiness"], first, repaired[first], applied[first], out.sections["agent log"])
	}
	log := out.sections["agent log"]
	for _, w := range []string{"TuningDriftRepaired", "vm.swappiness is 60, want 1"} {
		if !strings.Contains(log, w) {
			fail("agent log lacks %q:\n%s", w, log)
		}
	}
	metrics := out.sections["metrics"]
	for _, w := range []string{
		`gpunode_tuning_setting_compliant{key="vm.swappiness",kind="sysctl"} 1`,
		`gpunode_tuning_setting_compliant{key="` + out.vars["first_key"] + `",kind="irq"} 1`,
		`gpunode_tuning_info{mode="enforce",profile="llm-inference",state="compliant"} 1`,
		`gpunode_tuning_drift_total 2`,
		`gpunode_tuning_last_apply_timestamp_seconds`,
	} {
		if !strings.Contains(metrics, w) {
			fail("metrics lack %q:\n%s", w, metrics)
		}
	}
	out.wantRC(t, "verify-repaired", 0)

	// Revert restores every value exactly and clears the journal.
	out.wantRC(t, "revert", 0)
	sameDump(t, "after revert", before, out.dumps["reverted"])
	if out.vars["journal_left"] != "0" {
		fail("journal left after revert: %s", out.vars["journal_left"])
	}

	// In another network namespace net.* is refused with the hostNetwork
	// advice, nothing under net.* changes, and revert still restores all.
	out.wantRC(t, "netns", 1)
	if !strings.Contains(out.steps["netns"], "hostNetwork") || !strings.Contains(out.steps["netns"], "refused") {
		fail("apply in another network namespace does not refuse net.* with the hostNetwork advice:\n%s", out.steps["netns"])
	}
	for p, v := range out.dumps["netns"] {
		if strings.HasPrefix(p, "/proc/sys/net/") && v != before[p] {
			fail("%s changed from another network namespace: %q -> %q", p, before[p], v)
		}
	}
	if out.dumps["netns"]["/proc/sys/vm/swappiness"] != "1" {
		fail("apply in another namespace did not apply vm.swappiness")
	}
	out.wantRC(t, "revert-netns", 0)
	sameDump(t, "after the second revert", before, out.dumps["final"])

	// irqbalance running under systemd: the default profile bans the NIC
	// interrupts through irqbalance's socket and places them, and
	// irqbalance leaves them there over its 10 s rebalancing; a restarted
	// irqbalance forgot the ban (drift); revert leaves it running. With
	// irqbalance: conflict the NIC interrupts conflict (and are left alone)
	// while the sysctls apply; with irqbalance: stop the unit is masked and
	// stopped through systemd's D-Bus API, cannot be started while masked,
	// and is unmasked and started again by revert.
	if out.vars["irqbalance_started"] != "active" {
		t.Fatalf("irqbalance did not start in the VM: %q", out.vars["irqbalance_started"])
	}
	out.wantRC(t, "irq-coexist", 0)
	if !regexp.MustCompile(`(?m)^irqbalance\s+banned-irqs\s.*\sok\s`).MatchString(out.steps["irq-coexist-verify"]) {
		fail("irqbalance's ban not verified after apply:\n%s\n%s", out.steps["irq-coexist"], out.steps["irq-coexist-verify"])
	}
	for irq := range nicIRQs {
		if v := out.dumps["irq-coexist"][irq]; v != "2" && v != "3" {
			fail("coexisting with irqbalance, %s = %q, want CPU 2 or 3", irq, v)
		}
	}
	out.wantRC(t, "irq-coexist-verify", 0)
	out.wantRC(t, "irq-coexist-drift", 1)
	if !regexp.MustCompile(`(?m)^irqbalance\s+banned-irqs\s.*set \(drift\)`).MatchString(out.steps["irq-coexist-drift"]) {
		fail("a restarted irqbalance's lost ban is not drift:\n%s", out.steps["irq-coexist-drift"])
	}
	out.wantRC(t, "irq-coexist-revert", 0)
	if out.vars["irqbalance_after_coexist"] != "active" {
		fail("irqbalance is %q after coexisting, want active", out.vars["irqbalance_after_coexist"])
	}
	if !regexp.MustCompile(`irqbalance: running: process running \(pid \d+\), unit irqbalance.service active`).MatchString(out.steps["irq-plan"]) {
		fail("plan does not see irqbalance running:\n%s", out.steps["irq-plan"])
	}
	for irq := range nicIRQs {
		n := strings.Split(irq, "/")[3]
		// Rows are keyed by device and queue; the note names the IRQ number.
		if !regexp.MustCompile(`(?m)^irq\s.*\sconflict\s+IRQ ` + n + `,`).MatchString(out.steps["irq-plan"]) {
			fail("IRQ %s not reported as conflicting:\n%s", n, out.steps["irq-plan"])
		}
	}
	out.wantRC(t, "irq-apply", 1)
	if out.dumps["irq-conflict"]["/proc/sys/vm/swappiness"] != "1" {
		fail("sysctls not applied beside the IRQ conflict")
	}
	out.wantRC(t, "irq-revert-conflict", 0)
	out.wantRC(t, "irq-stop", 0)
	if out.vars["irqbalance_after_stop"] != "inactive" || out.vars["irqbalance_load_after_stop"] != "masked" {
		fail("irqbalance is %q, %q after apply with irqbalance: stop, want inactive and masked\n%s", out.vars["irqbalance_after_stop"], out.vars["irqbalance_load_after_stop"], out.steps["irq-stop"])
	}
	if out.vars["irqbalance_after_start_masked"] != "inactive" {
		fail("a masked irqbalance started: %q", out.vars["irqbalance_after_start_masked"])
	}
	for irq := range nicIRQs {
		if v := out.dumps["irq-stopped"][irq]; v != "2" && v != "3" {
			fail("after stopping irqbalance, %s = %q, want CPU 2 or 3", irq, v)
		}
	}
	out.wantRC(t, "irq-stop-verify", 0)
	out.wantRC(t, "irq-revert", 0)
	if out.vars["irqbalance_after_revert"] != "active" || out.vars["irqbalance_load_after_revert"] != "loaded" {
		fail("irqbalance is %q, %q after revert, want active and loaded (unmasked) again\n%s", out.vars["irqbalance_after_revert"], out.vars["irqbalance_load_after_revert"], out.steps["irq-revert"])
	}
}

// sameDump compares two dumps value by value.
func sameDump(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	if len(want) == 0 || len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
	}
	for _, p := range slices.Sorted(maps.Keys(want)) {
		if got[p] != want[p] {
			t.Errorf("%s: %s = %q, was %q before apply", what, p, got[p], want[p])
		}
	}
}

// output is the parsed VM output.
type output struct {
	vars     map[string]string
	dumps    map[string]map[string]string
	steps    map[string]string
	rcs      map[string]int
	sections map[string]string
	raw      string
}

func (o output) wantRC(t *testing.T, step string, want int) {
	t.Helper()
	rc, ok := o.rcs[step]
	if !ok {
		t.Errorf("step %s did not run", step)
		return
	}
	if rc != want {
		t.Errorf("step %s exited %d, want %d:\n%s", step, rc, want, o.steps[step])
	}
}

// runGuest boots cfg and runs its script to the end (the script's exit
// code is the caller's to judge); GPUNODE_VM_OUTPUT=1 logs its output.
func runGuest(t *testing.T, cfg vm.Config) vm.Result {
	t.Helper()
	res, err := vm.Run(context.Background(), cfg)
	t.Logf("VM: boot to init %.1fs, whole run %s", res.BootSeconds, res.Wall.Round(100*time.Millisecond))
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, res.Output)
	}
	if os.Getenv("GPUNODE_VM_OUTPUT") != "" {
		t.Log(res.Output)
	}
	return res
}

func parse(t *testing.T, s string) output {
	o := parseOutput(s)
	for _, d := range []string{"before", "applied", "changed", "repaired", "reverted", "netns", "final", "irq-conflict", "irq-stopped"} {
		if _, ok := o.dumps[d]; !ok {
			t.Errorf("no %q dump in the VM output:\n%s", d, s)
		}
	}
	return o
}

// parseOutput splits a script's output into its sections.
func parseOutput(s string) output {
	o := output{vars: map[string]string{}, dumps: map[string]map[string]string{}, steps: map[string]string{},
		rcs: map[string]int{}, sections: map[string]string{}, raw: s}
	lines := strings.Split(s, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case strings.HasPrefix(line, "== dump "):
			name, d := strings.TrimPrefix(line, "== dump "), map[string]string{}
			for i++; i < len(lines) && lines[i] != "== end"; i++ {
				k, v, _ := strings.Cut(lines[i], "=")
				d[k] = v
			}
			o.dumps[name] = d
		case strings.HasPrefix(line, "== step "):
			name := strings.TrimPrefix(line, "== step ")
			var b strings.Builder
			for i++; i < len(lines) && !strings.HasPrefix(lines[i], "== rc "); i++ {
				b.WriteString(lines[i] + "\n")
			}
			if i < len(lines) {
				o.rcs[name], _ = strconv.Atoi(strings.TrimPrefix(lines[i], "== rc "))
			}
			o.steps[name] = b.String()
		case strings.HasPrefix(line, "== "):
			name := strings.TrimPrefix(line, "== ")
			var b strings.Builder
			for i++; i < len(lines) && lines[i] != "== end"; i++ {
				b.WriteString(lines[i] + "\n")
			}
			o.sections[name] = b.String()
		default:
			if k, v, ok := strings.Cut(line, "="); ok && !strings.Contains(k, " ") {
				o.vars[k] = v
			}
		}
	}
	return o
}
