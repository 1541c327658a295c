package tuning

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/cpuset"
)

// firstIRQStep returns the first IRQ step of the profile's plan.
func firstIRQStep(t *testing.T, f *fixture, p Profile) Step {
	t.Helper()
	pl, _, err := f.tuner.Plan(context.Background(), p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range pl.Steps {
		if s.Kind == KindIRQ && s.Action == ActionSet {
			return s
		}
	}
	t.Fatal("no IRQ to set")
	return Step{}
}

func irqStep(pl Plan, key string) (Step, bool) {
	for _, s := range pl.Steps {
		if s.Kind == KindIRQ && s.Key == key {
			return s, true
		}
	}
	return Step{}, false
}

// Linux 6.12+ registers smp_affinity read-only for an interrupt whose
// affinity user space cannot set (a managed one) and refuses the write
// with EPERM. The plan reads the mode: unsupported, never written, never
// journaled, and the host is compliant without it.
func TestManagedIRQReadOnly(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "dgx-h100-ib")
	p := builtin(t, "llm-inference")
	s := firstIRQStep(t, f, p)
	n := strconv.Itoa(s.IRQ)
	ro := f.fs.Path("/proc/irq/" + n + "/smp_affinity")
	if err := os.Chmod(ro, 0o444); err != nil {
		t.Fatal(err)
	}
	path := irqAffinityPath(s.IRQ)
	before := f.read(t, path)
	res, err := f.tuner.Apply(ctx, p, f.m)
	if err != nil || !res.OK() {
		t.Fatalf("apply: %v %+v", err, res.Failed())
	}
	got, _ := irqStep(res.Plan, s.Key)
	if got.Action != ActionUnsupported || !strings.Contains(got.Note, "read-only") {
		t.Errorf("managed IRQ planned %s %q, want unsupported", got.Action, got.Note)
	}
	for _, c := range res.Changes {
		if c.ID == s.ID {
			t.Errorf("managed IRQ written: %+v", c)
		}
	}
	if f.read(t, path) != before {
		t.Error("managed IRQ's affinity changed")
	}
	pl, j, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil || !pl.Compliant() || Summarize(pl, 0) != StateCompliant {
		t.Fatalf("after apply: %v %s", err, Summarize(pl, 0))
	}
	if j.has(s.ID) {
		t.Error("journal holds the managed IRQ")
	}
}

// The kernel's answers to an affinity write it refuses: EIO before 6.12,
// EPERM (with a read-only smp_affinity) since; EPERM on a writable file
// is a lack of privilege.
func TestUnmovableReason(t *testing.T) {
	f := newFixture(t, "dgx-h100-ib")
	s := firstIRQStep(t, f, builtin(t, "llm-inference"))
	num := s.IRQ
	n := strconv.Itoa(num)
	if why := unmovableReason(f.fs, num, syscall.EIO); !strings.Contains(why, "EIO") {
		t.Errorf("EIO: %q", why)
	}
	if why := unmovableReason(f.fs, num, syscall.EPERM); why != "" {
		t.Errorf("EPERM on a writable smp_affinity: %q, want a privilege error", why)
	}
	if o, msg := classifyWrite(s.ID, &os.PathError{Op: "write", Path: "x", Err: syscall.EPERM}); o != OutcomeFailed || !strings.Contains(msg, "root") {
		t.Errorf("EPERM, writable: %s %q", o, msg)
	}
	os.Chmod(f.fs.Path("/proc/irq/"+n+"/smp_affinity"), 0o444)
	if why := unmovableReason(f.fs, num, syscall.EPERM); !strings.Contains(why, "EPERM") {
		t.Errorf("EPERM on a read-only smp_affinity: %q", why)
	}
}

// Before 6.12 nothing but the refused write tells a managed interrupt.
// The daemon's tuner remembers it: the next run plans it unsupported and
// neither journals (two fsyncs) nor writes it again.
func TestRefusedIRQRemembered(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EIO, syscall.EPERM} {
		t.Run(errno.Error(), func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, "dgx-h100-ib")
			f.tuner.Unmovable = &UnmovableIRQs{}
			p := builtin(t, "llm-inference")
			s := firstIRQStep(t, f, p)
			path := irqAffinityPath(s.IRQ)
			n := strconv.Itoa(s.IRQ)
			writes := 0
			f.tuner.writeErr = func(p string) error {
				if p != path {
					return nil
				}
				writes++
				if errno == syscall.EPERM {
					// 6.12+: the file turns out read-only on a second look
					// (it was registered so; the fixture lags).
					os.Chmod(f.fs.Path("/proc/irq/"+n+"/smp_affinity"), 0o444)
				}
				return errno
			}
			res, err := f.tuner.Apply(ctx, p, f.m)
			if err != nil || !res.OK() {
				t.Fatalf("apply: %v %+v", err, res.Failed())
			}
			var c Change
			for _, x := range res.Changes {
				if x.ID == s.ID {
					c = x
				}
			}
			if c.Outcome != OutcomeUnsupported || !strings.Contains(c.Error, "manages") {
				t.Errorf("refused write: %s %q, want unsupported", c.Outcome, c.Error)
			}
			again, err := f.tuner.Apply(ctx, p, f.m)
			if err != nil {
				t.Fatal(err)
			}
			if len(again.Changes) != 0 || writes != 1 {
				t.Errorf("second apply: %d changes, %d writes of the refused IRQ", len(again.Changes), writes)
			}
			if got, _ := irqStep(again.Plan, s.Key); got.Action != ActionUnsupported {
				t.Errorf("second plan: %s %q", got.Action, got.Note)
			}
			j, _, _ := f.tuner.Store.Load(f.root, readBootID(f.fs))
			if j.has(s.ID) {
				t.Error("journal holds the refused IRQ")
			}
		})
	}
}

// reloadSwap renumbers the interrupts of two devices as a driver reload
// in the same boot can: each takes the other's IRQ numbers (in
// /proc/interrupts and msi_irqs), and the kernel gives the new interrupts
// its default affinity.
func reloadSwap(t *testing.T, f *fixture, a, b string, def string) {
	t.Helper()
	irqsOf := func(dev string) []string {
		names, err := f.fs.Names("/sys/bus/pci/devices/" + dev + "/msi_irqs")
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(names, func(x, y string) int { return atoi(t, x) - atoi(t, y) })
		return names
	}
	ia, ib := irqsOf(a), irqsOf(b)
	if len(ia) != len(ib) {
		t.Fatalf("%s has %d interrupts, %s %d", a, len(ia), b, len(ib))
	}
	text, err := f.fs.ReadString("/proc/interrupts")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(text, "\n")
	rest := map[string]string{}
	for _, l := range lines {
		label, r, ok := strings.Cut(strings.TrimLeft(l, " "), ":")
		if ok {
			rest[label] = r
		}
	}
	swap := map[string]string{}
	for i := range ia {
		swap[ia[i]], swap[ib[i]] = ib[i], ia[i]
	}
	for i, l := range lines {
		label, _, ok := strings.Cut(strings.TrimLeft(l, " "), ":")
		if other, hit := swap[label]; ok && hit {
			lines[i] = l[:strings.Index(l, ":")+1] + rest[other]
		}
	}
	f.write(t, "/proc/interrupts", strings.Join(lines, "\n"))
	move := func(from, to string, irqs []string) {
		for _, n := range irqs {
			os.Remove(f.fs.Path("/sys/bus/pci/devices/" + from + "/msi_irqs/" + n))
			f.write(t, "/sys/bus/pci/devices/"+to+"/msi_irqs/"+n, "msix\n")
		}
	}
	move(a, b, ia)
	move(b, a, ib)
	for _, n := range append(ia, ib...) {
		f.write(t, "/proc/irq/"+n+"/smp_affinity_list", def)
	}
}

// A driver reload in the same boot hands IRQ numbers to other devices.
// The journal keys interrupts by device and queue, so revert gives each
// queue its own original affinity, not the one of the number it had.
func TestDriverReloadKeepsOriginalsWithTheirQueue(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "dgx-h100-ib")
	byDev := map[string][]int{}
	for _, irq := range f.m.IRQs {
		byDev[irq.PCIAddress] = append(byDev[irq.PCIAddress], irq.Number)
	}
	var a, b string
	for _, d := range f.m.PCIDevices {
		if d.Driver != "mlx5_core" || len(byDev[d.Address]) == 0 {
			continue
		}
		switch {
		case a == "":
			a = d.Address
		case b == "" && len(byDev[d.Address]) == len(byDev[a]):
			b = d.Address
		}
	}
	if a == "" || b == "" {
		t.Fatal("no two mlx5 devices with as many interrupts")
	}
	def := f.read(t, fmt.Sprintf("/proc/irq/%d/smp_affinity_list", byDev[a][0]))
	for dev, orig := range map[string]string{a: "0-3", b: "4-7"} {
		for _, n := range byDev[dev] {
			f.write(t, fmt.Sprintf("/proc/irq/%d/smp_affinity_list", n), orig)
		}
	}
	if res, err := f.tuner.Apply(ctx, builtin(t, "llm-inference"), f.m); err != nil || !res.OK() {
		t.Fatalf("apply: %v %+v", err, res.Failed())
	}
	reloadSwap(t, f, a, b, def)
	g := fixtureAt(t, f.root) // topology after the reload
	if res, err := g.tuner.Revert(ctx); err != nil || !res.OK() {
		t.Fatalf("revert: %v %+v", err, res.Failed())
	}
	// a's queues now have b's old numbers and the other way round.
	for dev, orig := range map[string]string{a: "0-3", b: "4-7"} {
		names, _ := g.fs.Names("/sys/bus/pci/devices/" + dev + "/msi_irqs")
		for _, n := range names {
			if got := g.read(t, "/proc/irq/"+n+"/smp_affinity_list"); got != orig {
				t.Errorf("%s IRQ %s (renumbered): %q after revert, want its queue's original %q", dev, n, got, orig)
			}
		}
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A journal written before interrupts were keyed by device and queue
// (keyed by number) is still reverted by number.
func TestLegacyIRQJournalReverts(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "dgx-h100-ib")
	n := f.m.IRQs[len(f.m.IRQs)-1].Number
	path := irqAffinityPath(n)
	f.write(t, path, "5\n")
	j := &Journal{Version: journalVersion, HostRoot: f.root, BootID: readBootID(f.fs), Entries: []Entry{
		{Kind: KindIRQ, Key: strconv.Itoa(n), Original: "0-3", Wrote: "5"},
	}}
	if err := f.tuner.Store.Save(j); err != nil {
		t.Fatal(err)
	}
	if res, err := f.tuner.Revert(ctx); err != nil || !res.OK() || len(res.Changes) != 1 {
		t.Fatalf("revert: %v %+v", err, res)
	}
	if got := f.read(t, path); got != "0-3" {
		t.Errorf("IRQ %d: %q after revert, want 0-3", n, got)
	}
}

// settle makes a host look as applying the plan leaves it: every set
// step's value written and journaled.
func settle(h Host, pl Plan) (Host, *Journal) {
	j := &Journal{Version: journalVersion, HostRoot: "/"}
	cur := maps.Clone(h.Current)
	for _, s := range pl.Steps {
		if s.Action == ActionSet {
			j.record(s.ID, s.Current, s.Want, s.Note, time.Time{})
			cur[s.ID] = Current{Value: s.Want}
		}
	}
	h.Current = cur
	return h, j
}

// moved lists the IRQs (by key) both plans place, on different CPUs.
func moved(a, b Plan) []string {
	want := map[string]string{}
	for _, s := range a.Steps {
		if s.Kind == KindIRQ {
			want[s.Key] = s.Want
		}
	}
	var out []string
	for _, s := range b.Steps {
		if w, ok := want[s.Key]; ok && s.Kind == KindIRQ && w != s.Want {
			out = append(out, fmt.Sprintf("%s %s->%s", s.Key, w, s.Want))
		}
	}
	return out
}

// One new interrupt, or one CPU going offline, moves only what it must:
// nothing, or the interrupts of that CPU. Placing by position re-pinned
// the interrupts of every later device.
func TestIRQSpreadIsStable(t *testing.T) {
	p := irqProfile(t, "  policies: [{policy: nic-local}]\n")
	h := host()
	first := MakePlan(p, h, nil)
	h, j := settle(h, first)
	if again := MakePlan(p, h, j); !again.Compliant() {
		t.Fatalf("not compliant once settled: %s", again.Summary())
	}

	// mlx5_0 gets a seventh queue (ethtool -L, or a driver that adds one).
	grown := h
	grown.Devices = slices.Clone(h.Devices)
	d := &grown.Devices[0]
	d.IRQs = append(slices.Clone(d.IRQs), DeviceIRQ{Number: 106, Name: "q6"})
	setIRQKeys(d.PCIAddress, d.IRQs)
	grown.Current = maps.Clone(h.Current)
	grown.Current[ID{KindIRQ, d.IRQs[6].Key}] = Current{Value: "0-7"}
	pl := MakePlan(p, grown, j)
	if m := moved(first, pl); len(m) != 0 {
		t.Errorf("a new IRQ moved others: %v", m)
	}
	if s, _ := irqStep(pl, d.IRQs[6].Key); s.Action != ActionSet || s.Want == "" {
		t.Errorf("the new IRQ: %s %q", s.Action, s.Want)
	}

	// CPU 1 goes offline: only its interrupts move, to the least loaded CPUs.
	down := h
	down.OnlineCPUs = h.OnlineCPUs.Difference(cpuset.Of(1))
	pl = MakePlan(p, down, j)
	var onOne []string
	for _, s := range first.Steps {
		if s.Kind == KindIRQ && s.Want == "1" {
			onOne = append(onOne, s.Key)
		}
	}
	m := moved(first, pl)
	if len(m) != len(onOne) {
		t.Errorf("CPU 1 offline moved %v, want only CPU 1's %v", m, onOne)
	}
	load := map[string]int{}
	for _, s := range pl.Steps {
		if s.Kind == KindIRQ && s.Want == "1" {
			t.Errorf("%s still on offline CPU 1", s.Key)
		}
		load[s.Want]++
	}
	// Node 0: 9 interrupts on CPUs 0, 2, 3: three each.
	if load["0"] != 3 || load["2"] != 3 || load["3"] != 3 {
		t.Errorf("node 0 load %v, want 3 on each of 0, 2, 3", load)
	}
}

// NIC interrupts stay off the CPUs the kubelet's static CPU manager gave
// to Guaranteed pods and off cgroup v2 isolated partitions.
func TestIRQsAvoidWorkloadCPUs(t *testing.T) {
	f := newFixture(t, "dgx-h100-ib")
	if err := os.MkdirAll(f.fs.Path("/var/lib/kubelet"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.write(t, "/var/lib/kubelet/cpu_manager_state", `{"policyName":"static","defaultCpuSet":"0-1,6-223","entries":{"5c1a":{"vllm":"2-5"}},"checksum":1552716370}`)
	if err := os.MkdirAll(f.fs.Path("/sys/fs/cgroup"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.write(t, "/sys/fs/cgroup/cpuset.cpus.isolated", "8-9\n")
	pl, _, err := f.tuner.Plan(context.Background(), builtin(t, "llm-inference"), f.m)
	if err != nil {
		t.Fatal(err)
	}
	forbidden := cpuset.Of(2, 3, 4, 5, 8, 9)
	n := 0
	for _, s := range pl.Steps {
		if s.Kind != KindIRQ {
			continue
		}
		n++
		want, err := cpuset.Parse(s.Want)
		if err != nil || want.IsEmpty() {
			t.Fatalf("%s: want %q", s.Key, s.Want)
		}
		if !want.Intersect(forbidden).IsEmpty() {
			t.Errorf("%s placed on %s: a pod's exclusive CPU or an isolated partition", s.Key, s.Want)
		}
	}
	if n == 0 {
		t.Fatal("no IRQ planned")
	}
	// A checkpoint that cannot be parsed is a warning, not a guess.
	f.write(t, "/var/lib/kubelet/cpu_manager_state", "{")
	pl, _, _ = f.tuner.Plan(context.Background(), builtin(t, "llm-inference"), f.m)
	if !slices.ContainsFunc(pl.Warnings, func(w string) bool { return strings.Contains(w, "cpu_manager_state") }) {
		t.Errorf("warnings %q", pl.Warnings)
	}
}

func TestParseCPUManagerState(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{`{"policyName":"none","defaultCpuSet":"","checksum":3242152201}`, "", ""},
		{`{"policyName":"static","defaultCpuSet":"0,2-12,14-23","entries":{"235148fe":{"c0":"1,13"},"77":{"a":"30","b":"31-32"}},"checksum":1}`, "1,13,30-32", ""},
		{`{"policyName":"static","defaultCpuSet":"0-1","entries":{"containerid":"2-3"}}`, "2-3", ""}, // v1
		{`{"policyName":"static","entries":{"p":{"c":"3-1"}}}`, "", "reversed"},
		{`{"policyName":"static","entries":{"p":5}}`, "", "neither"},
		{`[`, "", "not a CPU manager checkpoint"},
	} {
		got, err := parseCPUManagerState([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.in, got, err, tc.want)
		}
	}
}

// drivers: [mlx5_core] selects the physical functions; the SR-IOV VFs the
// same driver runs are their owners', unless named in devices.
func TestDriverSelectionSkipsVFs(t *testing.T) {
	pl := MakePlan(irqProfile(t, "  policies: [{policy: nic-local, drivers: [mlx5_core]}]\n"), host(), nil)
	got := wants(pl)
	for _, vf := range []string{"140", "141"} {
		if _, ok := got[vf]; ok {
			t.Errorf("VF IRQ %s selected by driver: %v", vf, got)
		}
	}
	if _, ok := got["100"]; !ok {
		t.Errorf("PF not selected: %v", got)
	}
	pl = MakePlan(irqProfile(t, "  policies: [{policy: nic-local, devices: [mlx5_2]}]\n"), host(), nil)
	if got := wants(pl); got["140"] == "" || got["141"] == "" {
		t.Errorf("VF named in devices not selected: %v", got)
	}
}
