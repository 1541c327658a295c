package tuning

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Action is what a plan step does, or why it does nothing.
type Action string

const (
	// ActionOK: the setting already has the wanted value.
	ActionOK Action = "ok"
	// ActionSet: the setting will be changed.
	ActionSet Action = "set"
	// ActionRestore: tuning changed the setting earlier, the profile no
	// longer manages it, so its original value is written back.
	ActionRestore Action = "restore"
	// ActionUnsupported: the kernel has no such setting (reported, not an error).
	ActionUnsupported Action = "unsupported"
	// ActionConflict: irqbalance manages the interrupts and the profile
	// does not say how to handle it.
	ActionConflict Action = "conflict"
	// ActionSkip: deliberately left alone (irqbalance: leave).
	ActionSkip Action = "skip"
	// ActionRefused: net.* outside the host's network namespace.
	ActionRefused Action = "refused"
	// ActionError: the value cannot be read, or no CPU is left for a device.
	ActionError Action = "error"
	// ActionKept: a setting to restore that someone else changed after
	// tuning wrote it (a hand edit, a sysctl.d reload, TuneD): their value
	// is kept, not clobbered with the original, and the entry is dropped.
	ActionKept Action = "kept"
)

// Step is one setting in a plan.
type Step struct {
	ID
	Current string `json:"current"`
	Want    string `json:"want"`
	Action  Action `json:"action"`
	// Drift is true for a set step whose setting tuning had set to Want
	// and someone else changed since.
	Drift bool   `json:"drift,omitempty"`
	Note  string `json:"note,omitempty"`
	// Via names the pair member whose write restores this setting (the
	// kernel zeroes one of vm.dirty_ratio and vm.dirty_bytes when the other
	// is written): nothing is written to this one.
	Via string `json:"via,omitempty"`
	// IRQ is the number an interrupt has now (its key names device and
	// queue); 0 for other settings and for interrupts that are gone.
	IRQ int `json:"irq,omitempty"`
	// ConfigfsDir is the rdma_cm directory a RoCE mode step creates (set)
	// or removes after writing the original back (restore).
	ConfigfsDir string `json:"configfs_dir,omitempty"`
	// Disruptive marks a change that can take a link down (a NIC ring
	// resize); made only with nic.allowDisruptive.
	Disruptive bool `json:"disruptive,omitempty"`
}

// Plan is what applying a profile would do to a host.
type Plan struct {
	Profile string `json:"profile"`
	Kernel  string `json:"kernel"`
	// IRQBalance is set when the profile has IRQ policies.
	IRQBalance *IRQBalance `json:"irqbalance,omitempty"`
	NetNS      NetNS       `json:"network_namespace"`
	// IPCNS and UTSNS are set when the plan has settings of that namespace.
	IPCNS    *NetNS   `json:"ipc_namespace,omitempty"`
	UTSNS    *NetNS   `json:"uts_namespace,omitempty"`
	Steps    []Step   `json:"steps"`
	Warnings []string `json:"warnings,omitempty"`
}

// kernelHints explain well-known unsupported keys. The scheduler's
// tunables moved to debugfs (/sys/kernel/debug/sched/) in Linux 5.13
// ("sched: Move SCHED_DEBUG sysctl to debugfs"); the EEVDF scheduler in
// 6.6 ("sched/fair: Commit to EEVDF", "sched/debug: Rename
// sysctl_sched_min_granularity to sysctl_sched_base_slice") then removed
// wakeup_granularity_ns and turned min_granularity_ns into base_slice_ns,
// a different knob.
var kernelHints = map[string]string{
	"kernel.sched_migration_cost_ns":     "moved to debugfs (/sys/kernel/debug/sched/migration_cost_ns) in Linux 5.13",
	"kernel.sched_min_granularity_ns":    "moved to debugfs (/sys/kernel/debug/sched/) in Linux 5.13",
	"kernel.sched_wakeup_granularity_ns": "moved to debugfs (/sys/kernel/debug/sched/) in Linux 5.13",
	NUMABalancingKey:                     "kernel built without CONFIG_NUMA_BALANCING",
}

// eevdfHints replace kernelHints on Linux 6.6 and later, where the keys
// exist nowhere: nothing can be set in their place.
var eevdfHints = map[string]string{
	"kernel.sched_min_granularity_ns":    "removed with the EEVDF scheduler in Linux 6.6 (not moved: debugfs base_slice_ns is a different knob); drop it from the profile",
	"kernel.sched_wakeup_granularity_ns": "removed with the EEVDF scheduler in Linux 6.6 (not moved: nothing replaces it); drop it from the profile",
}

// kernelHint explains why kernel lacks key, or "".
func kernelHint(key, kernel string) string {
	if h, ok := eevdfHints[key]; ok && kernelAtLeast(kernel, 6, 6) {
		return h
	}
	return kernelHints[key]
}

// kernelAtLeast reports whether release ("6.8.0-49-generic") is at least
// major.minor; an unparsable release is not.
func kernelAtLeast(release string, major, minor int) bool {
	a, rest, ok := strings.Cut(strings.TrimSpace(release), ".")
	if !ok {
		return false
	}
	if i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		rest = rest[:i]
	}
	x, err1 := strconv.Atoi(a)
	y, err2 := strconv.Atoi(rest)
	if err1 != nil || err2 != nil {
		return false
	}
	return x > major || (x == major && y >= minor)
}

// kernelKnown reports whether release can be compared at all.
func kernelKnown(release string) bool {
	return kernelAtLeast(release, 0, 0)
}

// numaTieringNote checks kernel.numa_balancing 2 and 3 (memory tiering),
// added in Linux 5.18 (the "NUMA balancing: optimize memory placement for
// memory tiering system" series); older kernels accept only 0 and 1 and
// answer EINVAL. In tiering-only mode (2) the scanner still runs but skips
// top-tier memory (mm/mprotect.c), so on a node with one tier (DRAM only)
// it migrates nothing without being off. ok is false where the kernel
// cannot take the value.
func numaTieringNote(id ID, want string, h Host) (ok bool, note string) {
	if id.Kind != KindNUMA || (want != "2" && want != "3") {
		return true, ""
	}
	if kernelKnown(h.Kernel) && !kernelAtLeast(h.Kernel, 5, 18) {
		return false, fmt.Sprintf("kernel.numa_balancing %s (memory tiering) needs Linux 5.18; kernel %s accepts only 0 and 1 (EINVAL): use 0 for off", want, h.Kernel)
	}
	if want == "2" && h.MemoryTiers == 1 {
		return true, "memory tiering mode on a node with one memory tier (DRAM only): it migrates nothing but the NUMA scanner still runs, so it is not off (0 is off)"
	}
	return true, ""
}

// MakePlan compares the profile with the host. It is a pure function of
// its inputs: the same profile, host and journal give the same plan.
func MakePlan(p Profile, h Host, j *Journal) Plan {
	pl := Plan{Profile: p.Name, Kernel: h.Kernel, NetNS: h.NetNS}
	managed := map[ID]bool{}
	add := func(s Step) {
		managed[s.ID] = true
		pl.Steps = append(pl.Steps, s)
	}
	for key, want := range p.Sysctl {
		id := ID{KindSysctl, key}
		add(valueStep(id, string(want), h, j))
		if pid, ok := pairPartner(id); ok {
			managed[pid] = true // written (zeroed) with it
		}
	}
	if b := p.NUMA.Balancing; b != nil {
		add(valueStep(ID{KindNUMA, NUMABalancingKey}, strconv.Itoa(*b), h, j))
	}
	if m := p.NUMA.TransparentHugepages; m != "" {
		add(valueStep(ID{KindTHP, THPKey}, m, h, j))
	}
	if m := p.NUMA.TransparentHugepageDefrag; m != "" {
		add(valueStep(ID{KindTHP, THPDefragKey}, m, h, j))
	}
	for _, s := range planCPUPower(p, h, j) {
		add(s)
	}
	for _, s := range planNIC(p, h, j) {
		add(s)
	}
	if len(p.IRQ.Policies) > 0 {
		b := h.IRQBalance
		pl.IRQBalance = &b
		irqSteps, svc, warnings := planIRQs(p, h, j)
		pl.Warnings = append(pl.Warnings, warnings...)
		if svc != nil {
			add(*svc)
		}
		for _, s := range irqSteps {
			add(s)
		}
	}
	roceSteps, warnings := planRoCE(p, h, j)
	pl.Warnings = append(pl.Warnings, warnings...)
	for _, s := range roceSteps {
		add(s)
	}
	if j != nil {
		for _, e := range j.Entries {
			if managed[e.ID()] {
				continue
			}
			add(restoreStep(e, h))
		}
	}
	pairRestores(pl.Steps, h, j)
	if w := namespaceCopyFinding(pl.Steps, j); w != "" {
		pl.Warnings = append(pl.Warnings, w)
	}
	slices.SortFunc(pl.Steps, func(a, b Step) int { return compareIDs(a.ID, b.ID) })
	for _, s := range pl.Steps {
		switch s.ID.namespace() {
		case NSIPC:
			n, _ := h.nsOf(s.ID)
			pl.IPCNS = &n
		case NSUTS:
			n, _ := h.nsOf(s.ID)
			pl.UTSNS = &n
		}
	}
	return pl
}

// nsState is the state of the namespace a step's setting belongs to.
func (pl Plan) nsState(id ID) string {
	switch id.namespace() {
	case NSIPC:
		if pl.IPCNS != nil {
			return pl.IPCNS.State
		}
	case NSUTS:
		if pl.UTSNS != nil {
			return pl.UTSNS.State
		}
		return NetNSUnknown
	}
	return pl.NetNS.State
}

// copiedAtCreation are net.* sysctls the kernel copies from the host's
// (initial) network namespace into a namespace when it is created
// (net/ipv4/tcp_ipv4.c tcp_sk_init: tcp_rmem, tcp_wmem and the default
// congestion control are taken from init_net). A pod without hostNetwork
// keeps the copy it got at creation: a later change on the host does not
// reach it.
var copiedAtCreation = []string{"net.ipv4.tcp_congestion_control", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}

// namespaceCopyFinding says which of copiedAtCreation this plan changes,
// or tuning changed earlier in this boot (the journal), and that pods
// started before then keep their old values.
func namespaceCopyFinding(steps []Step, j *Journal) string {
	var keys []string
	for _, s := range steps {
		if s.Kind != KindSysctl || !slices.Contains(copiedAtCreation, canonicalKey(s.Key)) {
			continue
		}
		if s.Action == ActionSet || (s.Action == ActionOK && j.has(s.ID)) {
			keys = append(keys, s.Key)
		}
	}
	if len(keys) == 0 {
		return ""
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ") + ": per network namespace, copied into a pod's network namespace only when it is created: pods without hostNetwork started before tuning changed the host's value keep the old one (restart them; on a new node let tuning run before workloads)"
}

// valueStep plans one file-backed setting.
func valueStep(id ID, want string, h Host, j *Journal) Step {
	s := Step{ID: id, Want: want}
	cur, read := h.Current[id]
	s.Current = cur.Value
	// Where the namespace cannot be proven (no access to the host's
	// /proc/1) a net.* (IPC, UTS) setting that already reads as wanted
	// needs no write, so nothing is refused; in another namespace the
	// value read is that namespace's copy and proves nothing about the
	// host's.
	ns, namespaced := h.nsOf(id)
	unproven := namespaced && ns.State == NetNSUnknown
	alreadyWanted := read && cur.Err == "" && !cur.Unsupported && cur.Value == want
	switch {
	case namespaced && ns.State != NetNSHost && !(unproven && alreadyWanted):
		s.Action, s.Note = ActionRefused, ns.refusal(id.namespace())
	case unproven && alreadyWanted:
		s.Action, s.Note = ActionOK, "read in the agent's own "+nsName(id.namespace())+" (the host's is unknown)"
	case !read:
		s.Action, s.Note = ActionError, "not read"
	case cur.Unsupported:
		s.Action, s.Note = ActionUnsupported, unsupportedNote(id, h.Kernel)
	case cur.Err != "":
		s.Action, s.Note = ActionError, cur.Err
	case cur.Value == want:
		s.Action = ActionOK
		if _, note := numaTieringNote(id, want, h); note != "" {
			s.Note = note
		}
	case kernelAnswer(j, id, want, cur.Value):
		s.Action = ActionOK
		s.Note = fmt.Sprintf("the kernel holds %s since tuning wrote %s (its answer to the write: rounding or a partial allocation); not written again", cur.Value, want)
	default:
		s.Action = ActionSet
		if e, ok := j.entry(id); ok && e.Wrote == want {
			s.Drift, s.Note = true, "drifted: changed by someone else since it was applied"
		}
		s.Note = joinNotes(s.Note, partnerNote(id, h))
		if ok, note := numaTieringNote(id, want, h); !ok {
			s.Action, s.Note, s.Drift = ActionUnsupported, note, false
		} else if note != "" {
			s.Note = joinNotes(s.Note, note)
		}
		if id.Key == "net.ipv4.tcp_congestion_control" {
			if ok, note := congestionAvailable(want, h); !ok {
				s.Action, s.Note, s.Drift = ActionUnsupported, note, false
			} else if note != "" {
				s.Note = joinNotes(s.Note, note)
			}
		}
	}
	return s
}

func nsName(kind string) string {
	switch kind {
	case NSIPC:
		return "IPC namespace"
	case NSUTS:
		return "UTS namespace"
	}
	return "network namespace"
}

func unsupportedNote(id ID, kernel string) string {
	path, _ := id.hostPath()
	n := fmt.Sprintf("kernel %s has no %s", kernel, path)
	if hint := kernelHint(id.Key, kernel); hint != "" {
		n += ": " + hint
	}
	return n
}

// congestionAvailable says whether the kernel can use algorithm want:
// built in or loaded, or as a tcp_<want> module it loads on the write.
func congestionAvailable(want string, h Host) (bool, string) {
	cc := h.CongestionControl
	if slices.Contains(cc.Available, want) {
		return true, ""
	}
	mod := "tcp_" + want
	switch {
	case slices.Contains(cc.Modules, mod):
		return true, "the kernel loads the " + mod + " module on the write"
	case cc.Modules != nil:
		return false, fmt.Sprintf("congestion control %s is not available in kernel %s: not built in, not loaded, no %s module", want, h.Kernel, mod)
	}
	return true, "not loaded; the kernel tries to load " + mod + " on the write"
}

func joinNotes(a, b string) string {
	if a == "" {
		return b
	}
	if b == "" {
		return a
	}
	return a + "; " + b
}

// restoreStep plans writing back the original of a setting the profile
// no longer manages.
func restoreStep(e Entry, h Host) Step {
	id := e.ID()
	s := Step{ID: id, Want: e.Original, Action: ActionRestore, Note: joinNotes("no longer in the profile: restore the original", e.Note), ConfigfsDir: e.ConfigfsDir}
	if id.Kind == KindIRQ {
		if n, err := h.irqNumber(id); err == nil && n > 0 {
			s.IRQ = n
		}
	}
	cur := h.Current[id]
	s.Current = cur.Value
	switch ns, namespaced := h.nsOf(id); {
	case namespaced && ns.State != NetNSHost:
		s.Action, s.Note = ActionRefused, ns.refusal(id.namespace())
	case id.Kind == KindService:
		// The unit is started again whatever its state.
	case cur.Unsupported:
		// Gone (an IRQ freed by its driver): nothing to write back.
		s.Note = joinNotes("the setting is gone; the entry is dropped", e.Note)
	case cur.Err != "":
		s.Action, s.Note = ActionError, cur.Err
	case changedElsewhere(e, cur):
		s.Action = ActionKept
		s.Note = joinNotes(fmt.Sprintf("changed by someone else since tuning wrote %s: their value is kept, the original %s is not written back", orDash(e.Wrote), orDash(e.Original)), e.Note)
	}
	return s
}

// kernelAnswer reports whether value is what the kernel held after tuning
// last wrote want.
func kernelAnswer(j *Journal, id ID, want, value string) bool {
	e, ok := j.entry(id)
	return ok && e.Wrote == want && e.Accepted != "" && value == e.Accepted
}

// changedElsewhere reports whether a value-backed setting holds neither
// what tuning last wrote nor the original. IRQ affinities are left out:
// the kernel itself rewrites them when CPUs go offline.
func changedElsewhere(e Entry, cur Current) bool {
	switch e.Kind {
	case KindRoCEMode:
		// No original yet (a crash before it was read): nothing written.
		if e.Original == "" {
			return false
		}
		fallthrough
	case KindSysctl, KindNUMA, KindTHP, KindPFC, KindECN, KindTrust, KindCPUFreq, KindNIC:
		return cur.Value != e.Wrote && cur.Value != e.Original && (e.RestoringFrom == "" || cur.Value != e.RestoringFrom) && (e.Accepted == "" || cur.Value != e.Accepted)
	}
	return false
}

// planIRQs plans the IRQ affinities and, with irqbalance: stop, the
// irqbalance unit.
func planIRQs(p Profile, h Host, j *Journal) (steps []Step, svc *Step, warnings []string) {
	if h.TopologyError != "" {
		return nil, nil, []string{"IRQ policies not planned: topology discovery failed: " + h.TopologyError}
	}
	targets, warnings := irqTargets(p, h, j)
	mode := p.IRQ.IRQBalance
	if mode == "" {
		mode = IRQBalanceConflict
	}
	ib := h.IRQBalance
	state := ib.State()
	// blocked says why IRQ steps cannot be applied, if they cannot.
	var blocked Action
	var why string
	if state != StateNotRunning {
		switch mode {
		case IRQBalanceLeave:
			blocked, why = ActionSkip, "left to irqbalance (irq.irqbalance: leave)"
		case IRQBalanceConflict:
			blocked, why = ActionConflict, "irqbalance runs; set irq.irqbalance to coexist, leave or stop"
			if state == StateUnknown {
				why = "cannot tell whether irqbalance runs; set irq.irqbalance to coexist, leave or stop"
			}
		case IRQBalanceCoexist:
			var s Step
			s, blocked, why = banStep(targets, h, j)
			if s.Action != "" {
				svc = &s
			}
		}
	}
	if mode == IRQBalanceStop {
		s := Step{ID: ID{KindService, IRQBalanceUnit}, Current: ib.Unit, Want: UnitMasked}
		switch {
		case (ib.Unit == UnitMasked || ib.Unit == UnitNotFound) && ib.Process != StateRunning:
			s.Action = ActionOK
		case unitActive(ib.Unit) || (ib.Unit != StateUnknown && ib.Unit != UnitNotFound && ib.Process != StateRunning):
			// Masked even when stopped: nothing may start it later.
			s.Action = ActionSet
			if e, ok := j.entry(s.ID); ok && e.Wrote == s.Want {
				s.Drift, s.Note = true, "drifted: unmasked or started again since it was masked"
			}
			if ib.Process == StateRunning && len(ib.PIDs) > 0 {
				s.Note = joinNotes(s.Note, "stops pid "+joinInts(ib.PIDs))
			}
		case state == StateNotRunning:
			s.Action, s.Note = ActionOK, "not running; cannot be masked without systemd: "+ib.String()
		default:
			// Running outside systemd, or systemd unreachable: nothing we
			// can stop, so the interrupts stay irqbalance's.
			s.Action, s.Note = ActionConflict, "cannot stop irqbalance through systemd: "+ib.String()
			blocked, why = ActionConflict, "irqbalance cannot be stopped through systemd"
		}
		svc = &s
	}
	for _, t := range targets {
		id := ID{KindIRQ, t.key}
		cur := h.Current[id]
		s := Step{ID: id, IRQ: t.irq, Current: cur.Value, Want: t.want.String(), Note: t.note}
		switch {
		case t.err != "":
			s.Action, s.Note = ActionError, joinNotes(t.note, t.err)
		case cur.Unsupported:
			s.Action, s.Note = ActionSkip, joinNotes(t.note, "no /proc/irq entry (not requested by its driver)")
		case cur.Err != "":
			s.Action, s.Note = ActionError, joinNotes(t.note, cur.Err)
		case cur.Unmovable != "":
			// Not ours to place, whatever irqbalance does: reported once
			// as unsupported, never written.
			s.Action, s.Note = ActionUnsupported, joinNotes(t.note, cur.Unmovable)
		case blocked != "":
			s.Action, s.Note = blocked, joinNotes(t.note, why)
		case cur.Value == s.Want:
			s.Action = ActionOK
		default:
			s.Action = ActionSet
			if e, ok := j.entry(id); ok && e.Wrote == s.Want {
				s.Drift, s.Note = true, joinNotes("drifted: changed by someone else since it was applied", t.note)
			}
		}
		steps = append(steps, s)
	}
	return steps, svc, warnings
}

// banStep plans telling a running irqbalance to leave the interrupts the
// policy places alone: its banned IRQs become its own list (from before
// tuning first banned any) and ours. Where irqbalance cannot be asked the
// interrupts are left to it, as with leave: coexisting never fails a host.
func banStep(targets []irqTarget, h Host, j *Journal) (s Step, blocked Action, why string) {
	id := ID{KindIRQBalance, BannedIRQsKey}
	cur, read := h.Current[id]
	if !read || cur.Err != "" || cur.Unsupported {
		reason := cur.Err
		if reason == "" {
			reason = "irqbalance cannot be asked"
		}
		return Step{}, ActionSkip, "left to irqbalance (irq.irqbalance: coexist): " + reason
	}
	own := cur.Value
	e, journaled := j.entry(id)
	if journaled {
		own = e.Original
	}
	ours := parseBanList(own)
	for _, t := range targets {
		if t.err == "" {
			ours = append(ours, t.irq)
		}
	}
	s = Step{ID: id, Current: cur.Value, Want: banList(ours), Note: "irqbalance leaves the interrupts placed here alone and balances the rest"}
	switch {
	case cur.Value == s.Want:
		s.Action = ActionOK
	default:
		s.Action = ActionSet
		if journaled && e.Wrote == s.Want {
			s.Drift, s.Note = true, "drifted: irqbalance forgot the ban (restarted, or told otherwise)"
		}
	}
	return s, "", ""
}

// Counts sums the steps by action.
func (pl Plan) Counts() map[Action]int {
	c := map[Action]int{}
	for _, s := range pl.Steps {
		c[s.Action]++
	}
	return c
}

// Compliant reports whether every managed setting has its wanted value:
// nothing to set or restore, no conflict, refusal or error.
// Unsupported and skipped settings do not count against it.
func (pl Plan) Compliant() bool {
	for _, s := range pl.Steps {
		switch s.Action {
		case ActionOK, ActionUnsupported, ActionSkip, ActionKept:
		default:
			return false
		}
	}
	return true
}

// Drifted lists the steps whose value someone else changed after tuning set it.
func (pl Plan) Drifted() []Step {
	var out []Step
	for _, s := range pl.Steps {
		if s.Drift {
			out = append(out, s)
		}
	}
	return out
}
