package tuning

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/internal/cpuset"
	goldenfile "github.com/gpunode/gpunode/internal/golden"
	"github.com/gpunode/gpunode/sim"
	"github.com/gpunode/gpunode/topology"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	goldenfile.Check(t, file, got, *update, "go test ./tuning -run Golden -update")
}

// Golden plans: every built-in profile that manages something on every
// simulated node, as `tune plan` prints them.
func TestGoldenPlans(t *testing.T) {
	for _, node := range sim.Names() {
		for _, profile := range []string{"llm-inference", "llm-d-reference"} {
			t.Run(node+"/"+profile, func(t *testing.T) {
				f := newFixture(t, node)
				pl, _, err := f.tuner.Plan(context.Background(), builtin(t, profile), f.m)
				if err != nil {
					t.Fatal(err)
				}
				pl.NetNS.Detail = "simulated node" // as gpunode-agent --simulate reports it
				var b bytes.Buffer
				if err := WritePlan(&b, pl); err != nil {
					t.Fatal(err)
				}
				golden(t, "plans/"+node+"."+profile+".txt", b.Bytes())
				for _, s := range pl.Steps {
					if s.Action == ActionError {
						t.Errorf("error step on a simulated node: %+v", s)
					}
				}
			})
		}
	}
}

// The same inputs give the same plan, byte for byte (map order must not leak).
func TestPlanDeterministic(t *testing.T) {
	f := newFixture(t, "dgx-b200-ib")
	p := builtin(t, "llm-inference")
	var out [3][]byte
	for i := range out {
		pl, _, err := f.tuner.Plan(context.Background(), p, f.m)
		if err != nil {
			t.Fatal(err)
		}
		out[i], _ = json.Marshal(pl)
	}
	if !bytes.Equal(out[0], out[1]) || !bytes.Equal(out[1], out[2]) {
		t.Fatal("plans of one host differ")
	}
}

// host builds a Host by hand: two nodes of 4 CPUs, NICs and a GPU.
func host() Host {
	n0, n1 := cpuset.Of(0, 1, 2, 3), cpuset.Of(4, 5, 6, 7)
	irqs := func(first, n int) []DeviceIRQ {
		var out []DeviceIRQ
		for i := range n {
			out = append(out, DeviceIRQ{Number: first + i, Name: "q" + strconv.Itoa(i)})
		}
		return out
	}
	h := Host{
		Kernel:     "6.8.0",
		Current:    map[ID]Current{},
		NodeCPUs:   map[int]cpuset.Set{0: n0, 1: n1},
		OnlineCPUs: n0.Union(n1),
		NetNS:      NetNS{State: NetNSHost},
		IRQBalance: IRQBalance{Process: StateNotRunning, Unit: StateUnknown},
		Devices: []Device{
			{PCIAddress: "0000:18:00.0", Kind: topology.KindNIC, Driver: "mlx5_core", NUMANode: 0, RDMA: []string{"mlx5_0"}, IRQs: irqs(100, 6)},
			{PCIAddress: "0000:19:00.0", Kind: topology.KindNIC, Driver: "mlx5_core", NUMANode: 0, RDMA: []string{"mlx5_1"}, IRQs: irqs(110, 3)},
			{PCIAddress: "0000:97:00.0", Kind: topology.KindNIC, Driver: "ice", NUMANode: 1, Netdevs: []Netdev{{"ens1", 100000}}, IRQs: irqs(120, 2)},
			{PCIAddress: "0000:2a:00.0", Kind: topology.KindNIC, Driver: "i40e", NUMANode: 0, Netdevs: []Netdev{{"eno1", 10000}}, IRQs: irqs(130, 2)},
			{PCIAddress: "0000:2b:00.0", Kind: topology.KindNIC, Driver: "mlx5_core", NUMANode: 1, RDMA: []string{"mlx5_2"}, VirtualFunction: true, IRQs: irqs(140, 2)},
			{PCIAddress: "0000:9a:00.0", Kind: topology.KindNIC, Driver: "ice", NUMANode: -1, Netdevs: []Netdev{{"ens9", 200000}}, LocalCPUs: cpuset.Of(6, 7), IRQs: irqs(150, 2)},
			{PCIAddress: "0000:1b:00.0", Kind: topology.KindGPU, Driver: "nvidia", NUMANode: 1, IRQs: irqs(160, 1)},
		},
	}
	h.IRQNumbers = map[string]int{}
	for _, d := range h.Devices {
		setIRQKeys(d.PCIAddress, d.IRQs)
		for _, irq := range d.IRQs {
			h.Current[ID{KindIRQ, irq.Key}] = Current{Value: "0-7"}
			h.IRQNumbers[irq.Key] = irq.Number
		}
	}
	return h
}

// wants returns IRQ number -> wanted cpulist (or the action when not set).
func wants(pl Plan) map[string]string {
	out := map[string]string{}
	for _, s := range pl.Steps {
		if s.Kind != KindIRQ {
			continue
		}
		n := strconv.Itoa(s.IRQ)
		if s.Action == ActionSet || s.Action == ActionOK {
			out[n] = s.Want
		} else {
			out[n] = string(s.Action)
		}
	}
	return out
}

func irqProfile(t *testing.T, irq string) Profile {
	return mustProfile(t, "name: t\nirq:\n"+irq)
}

func TestNICLocalSpreadsOverNodeCPUs(t *testing.T) {
	pl := MakePlan(irqProfile(t, "  policies: [{policy: nic-local}]\n"), host(), nil)
	got := wants(pl)
	want := map[string]string{
		// mlx5_0 on node 0: one CPU each, wrapping after 4.
		"100": "0", "101": "1", "102": "2", "103": "3", "104": "0", "105": "1",
		// mlx5_1 continues the turn on node 0.
		"110": "2", "111": "3", "112": "0",
		// 100G ice on node 1.
		"120": "4", "121": "5",
		// No NUMA node: its local CPUs.
		"150": "6", "151": "7",
	}
	// Not selected: the 10G i40e (slow), the VF, the GPU.
	if len(got) != len(want) {
		t.Errorf("planned IRQs %v, want %v", got, want)
	}
	for irq, w := range want {
		if got[irq] != w {
			t.Errorf("IRQ %s -> %q, want %q", irq, got[irq], w)
		}
	}
}

func TestIRQExclusionsAndSelection(t *testing.T) {
	h := host()
	h.IsolatedCPUs = cpuset.Of(1)
	h.NohzFullCPUs = cpuset.Of(2)
	pl := MakePlan(irqProfile(t, "  policies: [{policy: nic-local, devices: [mlx5_1, eno1, ens404]}, {policy: gpu-local}]\n  excludeCPUs: \"3\"\n"), h, nil)
	got := wants(pl)
	// Node 0 minus 1 (isolated), 2 (nohz_full) and 3 (excluded) is CPU 0.
	for irq, w := range map[string]string{"110": "0", "111": "0", "130": "0", "131": "0", "160": "4"} {
		if got[irq] != w {
			t.Errorf("IRQ %s -> %q, want %q (all: %v)", irq, got[irq], w, got)
		}
	}
	if _, ok := got["100"]; ok {
		t.Error("mlx5_0 selected though the profile names devices")
	}
	if len(pl.Warnings) != 1 || !strings.Contains(pl.Warnings[0], `"ens404" matches no NIC`) {
		t.Errorf("warnings %q", pl.Warnings)
	}
	// By driver; a node with every CPU excluded is an error, not a guess.
	pl = MakePlan(irqProfile(t, "  policies: [{policy: nic-local, drivers: [ice]}]\n  excludeCPUs: 4-7\n"), host(), nil)
	for _, s := range pl.Steps {
		if s.Action != ActionError || !strings.Contains(s.Note, "no CPU left") {
			t.Errorf("%s: %s %q", s.ID, s.Action, s.Note)
		}
	}
	if len(pl.Steps) != 4 {
		t.Errorf("%d steps for the two ice NICs", len(pl.Steps))
	}
	// Topology unknown: no IRQ steps, a warning.
	h = host()
	h.TopologyError = "read /sys/devices/system/cpu/online: permission denied"
	pl = MakePlan(irqProfile(t, "  policies: [{policy: nic-local}]\n"), h, nil)
	if len(pl.Steps) != 0 || len(pl.Warnings) != 1 {
		t.Errorf("topology failure: %d steps, warnings %q", len(pl.Steps), pl.Warnings)
	}
}

// A policy whose default selection finds nothing (a host without NICs,
// or with only slow ones) has nothing to do and says nothing; drivers the
// profile names and the host lacks are a warning.
func TestIRQPolicyWithoutDevices(t *testing.T) {
	h := host()
	h.Devices = slices.DeleteFunc(h.Devices, func(d Device) bool { return d.Kind == topology.KindNIC })
	pl := MakePlan(irqProfile(t, "  policies: [{policy: nic-local}]\n"), h, nil)
	if len(pl.Warnings) != 0 {
		t.Errorf("warnings on a host without NICs: %q", pl.Warnings)
	}
	h.Devices = append(h.Devices, Device{PCIAddress: "0000:00:03.0", Kind: topology.KindNIC, Driver: "virtio-pci", NUMANode: -1, Netdevs: []Netdev{{"eth0", 1000}}})
	pl = MakePlan(irqProfile(t, "  policies: [{policy: nic-local}]\n"), h, nil)
	if len(pl.Warnings) != 0 {
		t.Errorf("warnings on a host with a 1 Gb/s NIC only: %q", pl.Warnings)
	}
	pl = MakePlan(irqProfile(t, "  policies: [{policy: nic-local, drivers: [bnxt_en]}]\n"), host(), nil)
	if len(pl.Warnings) != 1 || !strings.Contains(pl.Warnings[0], "no device selected") {
		t.Errorf("warnings with NICs none of which is selected: %q", pl.Warnings)
	}
}

// Where the agent cannot tell its network namespace from the host's, a
// net.* setting that already reads as wanted is ok, one that differs is
// refused, and the host's state is unknown rather than error (unless
// something else is wrong). In another namespace both are refused and
// the state is error.
func TestUnprovenNetNS(t *testing.T) {
	p := mustProfile(t, "name: t\nsysctl:\n  net.core.rmem_max: 134217728\n  net.ipv4.tcp_congestion_control: bbr\n  vm.swappiness: 1\n")
	h := host()
	h.Current[ID{KindSysctl, "net.core.rmem_max"}] = Current{Value: "4194304"}
	h.Current[ID{KindSysctl, "net.ipv4.tcp_congestion_control"}] = Current{Value: "bbr"}
	h.CongestionControl.Available = []string{"bbr", "cubic"}
	h.Current[ID{KindSysctl, "vm.swappiness"}] = Current{Value: "1"}
	h.NetNS = NetNS{State: NetNSUnknown, Detail: "cannot read the host's (PID 1's) namespace: permission denied"}
	pl := MakePlan(p, h, nil)
	actions := map[string]Action{}
	for _, s := range pl.Steps {
		actions[s.Key] = s.Action
	}
	if actions["net.ipv4.tcp_congestion_control"] != ActionOK || actions["net.core.rmem_max"] != ActionRefused || actions["vm.swappiness"] != ActionOK {
		t.Errorf("unknown namespace: %v", actions)
	}
	if got := Summarize(pl, 0); got != StateUnknown {
		t.Errorf("unknown namespace: state %s, want %s", got, StateUnknown)
	}
	h.Current[ID{KindSysctl, "vm.swappiness"}] = Current{Value: "60"}
	if got := Summarize(MakePlan(p, h, nil), 0); got != StatePending {
		t.Errorf("unknown namespace, vm.swappiness to set: state %s, want %s", got, StatePending)
	}
	h.NetNS = NetNS{State: NetNSOther, Detail: "agent in net:[1], host PID 1 in net:[2]"}
	pl = MakePlan(p, h, nil)
	for _, s := range pl.Steps {
		if s.ID.isNet() && s.Action != ActionRefused {
			t.Errorf("other namespace: %s %s", s.Key, s.Action)
		}
	}
	if got := Summarize(pl, 0); got != StateError {
		t.Errorf("other namespace: state %s, want %s", got, StateError)
	}
}

func TestIRQBalanceHandling(t *testing.T) {
	running := IRQBalance{Process: StateRunning, PIDs: []int{812}, Unit: "active"}
	for _, tc := range []struct {
		name   string
		ib     IRQBalance
		mode   string
		irq    Action // action of the IRQ steps
		unit   Action // action of the service step, "" for none
		inNote string
	}{
		{"not running", IRQBalance{Process: StateNotRunning, Unit: "inactive"}, "", ActionSet, "", ""},
		{"running, conflict", running, "", ActionConflict, "", "set irq.irqbalance to coexist, leave or stop"},
		{"unknown is not guessed", IRQBalance{Process: StateUnknown, Unit: StateUnknown}, "conflict", ActionConflict, "", "cannot tell"},
		{"leave", running, "leave", ActionSkip, "", "left to irqbalance"},
		{"stop", running, "stop", ActionSet, ActionSet, ""},
		{"stop, outside systemd", IRQBalance{Process: StateRunning, PIDs: []int{5}, Unit: "inactive"}, "stop", ActionConflict, ActionConflict, "cannot be stopped"},
		{"stop, systemd unreachable", IRQBalance{Process: StateRunning, Unit: StateUnknown}, "stop", ActionConflict, ActionConflict, "cannot be stopped"},
		// Stopped but not masked: masked, so nothing starts it later.
		{"stop, already stopped", IRQBalance{Process: StateNotRunning, Unit: "inactive"}, "stop", ActionSet, ActionSet, ""},
		{"stop, masked", IRQBalance{Process: StateNotRunning, Unit: UnitMasked}, "stop", ActionSet, ActionOK, ""},
		{"stop, masked but run by hand", IRQBalance{Process: StateRunning, PIDs: []int{5}, Unit: UnitMasked}, "stop", ActionConflict, ActionConflict, "cannot be stopped"},
		{"stop, not installed", IRQBalance{Process: StateNotRunning, Unit: UnitNotFound}, "stop", ActionSet, ActionOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := host()
			h.IRQBalance = tc.ib
			yaml := "  policies: [{policy: nic-local, drivers: [ice]}]\n"
			if tc.mode != "" {
				yaml += "  irqbalance: " + tc.mode + "\n"
			}
			pl := MakePlan(irqProfile(t, yaml), h, nil)
			var unit Action
			for _, s := range pl.Steps {
				switch s.Kind {
				case KindService:
					unit = s.Action
				case KindIRQ:
					if s.Action != tc.irq || !strings.Contains(s.Note, tc.inNote) {
						t.Errorf("%s: %s %q, want %s with %q", s.ID, s.Action, s.Note, tc.irq, tc.inNote)
					}
				}
			}
			if unit != tc.unit {
				t.Errorf("service step %q, want %q", unit, tc.unit)
			}
			if tc.unit != "" && pl.Steps[0].Kind != KindService {
				t.Error("the service step does not come first")
			}
		})
	}
}

func TestIRQBalanceState(t *testing.T) {
	for _, tc := range []struct {
		ib   IRQBalance
		want string
	}{
		{IRQBalance{Process: StateRunning, Unit: StateUnknown}, StateRunning},
		{IRQBalance{Process: StateNotRunning, Unit: "activating"}, StateRunning},
		{IRQBalance{Process: StateNotRunning, Unit: StateUnknown}, StateNotRunning},
		{IRQBalance{Process: StateUnknown, Unit: UnitNotFound}, StateNotRunning},
		{IRQBalance{Process: StateUnknown, Unit: StateUnknown}, StateUnknown},
	} {
		if got := tc.ib.State(); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.ib, got, tc.want)
		}
	}
}

func TestProcessScan(t *testing.T) {
	f := newFixture(t, "h100-roce")
	b := scanProcesses(f.fs, "irqbalance")
	if b.Process != StateRunning || len(b.PIDs) != 1 {
		t.Errorf("h100-roce: %+v", b)
	}
	g := newFixture(t, "dgx-h100-ib")
	if b := scanProcesses(g.fs, "irqbalance"); b.Process != StateNotRunning {
		t.Errorf("dgx-h100-ib: %+v", b)
	}
	// Found by argv[0] when comm was changed, not fooled by arguments.
	g.write(t, "/proc/1/cmdline", "/usr/sbin/irqbalance\x00--foreground\x00")
	g.write(t, "/proc/412/cmdline", "/bin/sh\x00-c\x00irqbalance\x00")
	if b := scanProcesses(g.fs, "irqbalance"); b.Process != StateRunning || len(b.PIDs) != 1 || b.PIDs[0] != 1 {
		t.Errorf("argv[0]: %+v", b)
	}
	// A tree without /proc/1 is not the host's /proc: unknown, not "not running".
	empty, _ := newHostFS(t)
	if b := scanProcesses(empty, "irqbalance"); b.Process != StateUnknown || b.ProcessDetail == "" {
		t.Errorf("no /proc: %+v", b)
	}
}

func TestSummarizeAndLabels(t *testing.T) {
	step := func(a Action, drift bool) Step { return Step{Action: a, Drift: drift} }
	for _, tc := range []struct {
		steps  []Step
		failed int
		want   string
	}{
		{nil, 0, StateCompliant},
		{[]Step{step(ActionOK, false), step(ActionUnsupported, false), step(ActionSkip, false)}, 0, StateCompliant},
		{[]Step{step(ActionSet, false)}, 0, StatePending},
		{[]Step{step(ActionSet, false), step(ActionSet, true)}, 0, StateDrifted},
		{[]Step{step(ActionSet, true), step(ActionConflict, false)}, 0, StateConflict},
		{[]Step{step(ActionConflict, false), step(ActionRefused, false)}, 0, StateError},
		{[]Step{step(ActionOK, false)}, 1, StateError},
	} {
		if got := Summarize(Plan{Steps: tc.steps}, tc.failed); got != tc.want {
			t.Errorf("%+v failed %d: %s, want %s", tc.steps, tc.failed, got, tc.want)
		}
	}
}
