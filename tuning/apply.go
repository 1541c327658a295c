package tuning

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// Tuner plans, applies, verifies and reverts profiles on one host root,
// with its journal in one state directory.
type Tuner struct {
	FS    hostfs.FS
	Store Store
	// Host names the host in the journal (its host_root); empty means the
	// host root. A simulated node, whose tree is generated anew for every
	// run, names itself instead.
	Host string
	// NetNS tells whether the agent is in the host's network namespace;
	// nil compares /proc/self/ns/net with the host's /proc/1/ns/net.
	NetNS func() NetNS
	// Namespace does the same for the IPC and UTS namespaces (NSIPC,
	// NSUTS); nil compares /proc/self/ns/<kind> with the host's.
	Namespace func(kind string) NetNS
	// Systemd connects to the host's systemd; nil means no access (the
	// irqbalance unit is then "unknown" and cannot be stopped).
	Systemd func(ctx context.Context) (UnitManager, error)
	// Now defaults to time.Now.
	Now func() time.Time
	// DCB reads and sets PFC (rtnetlink DCB on a host, a table on a
	// simulated node), and the trust mode where it is a DSCPTrust too;
	// nil: both are unsupported.
	DCB DCB
	// Latency holds the CPU latency limit (cpu.maxLatencyUs); a daemon
	// keeps one for its lifetime, releases it on stop, and gives it to
	// every Tuner it makes. nil (one-shot commands) holds nothing.
	Latency *CPULatency
	// NIC opens the ethtool interface; nil means DialEthtool.
	NIC func() (NICIO, error)
	// Unmovable remembers the interrupts the kernel refused to move; a
	// daemon keeps one for its lifetime (one boot) and gives it to every
	// Tuner it makes. nil remembers nothing beyond one run.
	Unmovable *UnmovableIRQs

	// writeErr, in tests, answers a write in place of the kernel (the
	// refusals of /proc/irq that a fixture tree cannot give).
	writeErr func(hostPath string) error

	// afterWrite, in tests, is called after each successful write with
	// the host path and value: a fixture tree emulates there what the
	// kernel does besides storing the value (zeroing a pair member).
	afterWrite func(hostPath, value string)

	// afterMkdir, in tests, is called after tuning creates a configfs
	// directory: a fixture tree fills it in as configfs does.
	afterMkdir func(hostPath string)
	// removeDir, in tests, removes a configfs directory in place of
	// rmdir(2) (configfs removes the default groups inside with it).
	removeDir func(path string) error

	// crashPoint, in tests, is called after the journal is saved
	// ("journal") and after each write ("write"); a test kills the
	// process there to check that a crash loses nothing.
	crashPoint func(stage string)
}

func (t *Tuner) crash(stage string) {
	if t.crashPoint != nil {
		t.crashPoint(stage)
	}
}

// Outcome of one step when applied.
type Outcome string

const (
	// OutcomeChanged: written and read back as wanted.
	OutcomeChanged Outcome = "changed"
	// OutcomeRestored: the original was written back and its entry removed.
	OutcomeRestored Outcome = "restored"
	// OutcomeUnsupported: the kernel refused the setting as unknown.
	OutcomeUnsupported Outcome = "unsupported"
	// OutcomeFailed: the write or its read-back failed.
	OutcomeFailed Outcome = "failed"
	// OutcomeAccepted: written; the kernel holds another value, its answer
	// to the write (rounding, huge pages partly allocated), which the
	// journal records so it is not drift.
	OutcomeAccepted Outcome = "accepted"
	// OutcomeKept: not restored, since someone else changed the value
	// after tuning wrote it; the entry is dropped.
	OutcomeKept Outcome = "kept"
)

// Change is the result of one attempted step.
type Change struct {
	Step
	Outcome Outcome `json:"outcome"`
	Error   string  `json:"error,omitempty"`
	// got is the value read back after the write.
	got string
}

// Result is what Apply or Revert did.
type Result struct {
	// Plan is the plan the changes were made from.
	Plan    Plan     `json:"plan"`
	Changes []Change `json:"changes,omitempty"`
	// PreviousBoot is a journal of an earlier boot that was set aside.
	PreviousBoot *Journal `json:"previous_boot,omitempty"`
	// Journal is the journal after the run (empty when nothing is changed).
	Journal *Journal `json:"journal"`
}

// Failed lists the changes that did not succeed.
func (r Result) Failed() []Change {
	var out []Change
	for _, c := range r.Changes {
		if c.Outcome == OutcomeFailed {
			out = append(out, c)
		}
	}
	return out
}

// OK reports whether the run left every managed setting as wanted:
// nothing failed and the plan had no conflicts, refusals or errors.
func (r Result) OK() bool {
	if len(r.Failed()) > 0 {
		return false
	}
	for _, s := range r.Plan.Steps {
		switch s.Action {
		case ActionConflict, ActionRefused, ActionError:
			return false
		}
	}
	return true
}

// LiveHost is the host_root a journal records for a live host: the host
// as it sees itself, whatever path the agent reaches its root by (/host
// in the chart's container, / in a host shell), so a revert from either
// finds the other's journal.
const LiveHost = "/"

// hostID names the host in the journal: Host when set, LiveHost when the
// root's /proc is the running kernel's procfs (what is tuned is then that
// kernel's, however its root is mounted), else the root's path (a fixture
// tree).
func (t *Tuner) hostID() string {
	if t.Host != "" {
		return t.Host
	}
	if isProcfs(t.FS.Path("/proc")) {
		return LiveHost
	}
	return t.FS.Root()
}

// isProcfs reports whether path is a mounted procfs (statfs(2) f_type
// PROC_SUPER_MAGIC, include/uapi/linux/magic.h).
func isProcfs(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.PROC_SUPER_MAGIC
}

// Replay writes into the host tree the value tuning last wrote for every
// file-backed setting in the journal (a service cannot be replayed). A
// simulated node's tree is generated anew for each command; replayed, it
// looks as the last apply left it, so apply, verify and revert work
// across commands. On a real host the values are there already: it is
// for simulated trees only. A setting the tree lacks is skipped.
func (t *Tuner) Replay(ctx context.Context) error {
	unlock, err := t.Store.lockForReading(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	j, _, err := t.Store.load(t.hostID(), readBootID(t.FS), true)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range j.Entries {
		if e.Kind == KindService || e.Kind == KindIRQBalance || e.Kind == KindPMQoS || e.Kind == KindNIC {
			continue
		}
		if e.Kind == KindPFC || e.Kind == KindTrust {
			if err := t.replayRoCE(ctx, e); err != nil {
				errs = append(errs, fmt.Errorf("replay %s: %w", e.ID(), err))
			}
			continue
		}
		path, err := settingPath(e.ID(), e.IRQ)
		if err == nil {
			err = writeAt(t.FS, path, e.Wrote)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("replay %s: %w", e.ID(), err))
		}
	}
	return errors.Join(errs...)
}

func (t *Tuner) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// Plan reads the host and the journal and returns what Apply would do.
// It writes nothing, not even the state directory.
func (t *Tuner) Plan(ctx context.Context, p Profile, m Machine) (Plan, *Journal, error) {
	unlock, err := t.Store.lockForReading(ctx)
	if err != nil {
		return Plan{}, nil, err
	}
	defer unlock()
	j, prev, err := t.Store.load(t.hostID(), readBootID(t.FS), true)
	if err != nil {
		return Plan{}, nil, err
	}
	h, err := t.Read(ctx, p, m, j)
	if err != nil {
		return Plan{}, nil, err
	}
	pl := MakePlan(p, h, j)
	if prev != nil {
		pl.Warnings = append(pl.Warnings, previousBootWarning(prev))
	}
	return pl, j, nil
}

func previousBootWarning(prev *Journal) string {
	return fmt.Sprintf("the journal is of an earlier boot (%s, %d settings): the reboot restored those settings; the next apply sets it aside as %s", prev.BootID, len(prev.Entries), previousBootFile)
}

// Apply changes what differs from the profile. Before the first change to
// a setting its original value goes to the journal (written and synced
// before the setting is touched); settings the journal holds but the
// profile no longer manages are restored. A failing step does not stop the
// others.
func (t *Tuner) Apply(ctx context.Context, p Profile, m Machine) (Result, error) {
	return t.run(ctx, p, m)
}

// Revert restores every original in the journal and clears it.
func (t *Tuner) Revert(ctx context.Context) (Result, error) {
	return t.run(ctx, Profile{Name: "none"}, Machine{})
}

func (t *Tuner) run(ctx context.Context, p Profile, m Machine) (Result, error) {
	unlock, err := t.Store.Lock(ctx)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	t.Store.sweepTemps()
	j, prev, err := t.Store.Load(t.hostID(), readBootID(t.FS))
	if err != nil {
		return Result{}, err
	}
	h, err := t.Read(ctx, p, m, j)
	if err != nil {
		return Result{}, err
	}
	res := Result{Plan: MakePlan(p, h, j), PreviousBoot: prev, Journal: j}
	if prev != nil {
		res.Plan.Warnings = append(res.Plan.Warnings, previousBootWarning(prev))
	}

	// Journal first: every original is on disk before anything changes.
	var todo, kept []Step
	now := t.now()
	newEntry := map[ID]bool{}
	for _, s := range res.Plan.Steps {
		switch s.Action {
		case ActionSet:
			newEntry[s.ID] = !j.has(s.ID)
			j.record(s.ID, s.Current, s.Want, entryNote(s), now)
			// The kernel zeroes the pair member: journal its value (only
			// the first time, like any original) so revert can write it back.
			if pid, ok := pairPartner(s.ID); ok && !j.has(pid) {
				if cur := h.Current[pid]; cur.Err == "" && !cur.Unsupported {
					j.record(pid, cur.Value, "0", "", now)
				}
			}
			j.setIRQ(s.ID, s.IRQ)
			j.setCreated(s.ID, s.ConfigfsDir)
			todo = append(todo, s)
		case ActionRestore:
			// Marked, so a crash in the middle never makes a restored
			// value look drifted.
			j.restoring(s.ID)
			todo = append(todo, s)
		case ActionKept:
			// Nothing is written: the value is someone else's now.
			j.remove(s.ID)
			kept = append(kept, s)
		}
	}
	if len(todo) == 0 && len(kept) == 0 {
		return res, nil
	}
	for _, s := range kept {
		res.Changes = append(res.Changes, Change{Step: s, Outcome: OutcomeKept, Error: s.Note})
	}
	if p.Name != "none" || len(j.Entries) > 0 {
		j.Profile = p.Name
	}
	if err := t.Store.Save(j); err != nil {
		return res, fmt.Errorf("nothing changed: %w", err)
	}
	t.crash("journal")
	if err := t.createConfigfsDirs(ctx, j, todo); err != nil {
		return res, err
	}
	// Interrupts go back before irqbalance is started again (or told its
	// old bans) and may move them again; a pair member restored through
	// its partner is checked after that write.
	last := func(s Step) int {
		return 2*boolInt((s.Kind == KindService || s.Kind == KindIRQBalance) && s.Action == ActionRestore) + boolInt(s.Via != "")
	}
	slices.SortStableFunc(todo, func(a, b Step) int { return last(a) - last(b) })
	for _, s := range todo {
		if err := ctx.Err(); err != nil {
			res.Changes = append(res.Changes, Change{Step: s, Outcome: OutcomeFailed, Error: err.Error()})
			continue
		}
		c := t.do(ctx, s)
		t.crash("write")
		switch {
		case c.Outcome == OutcomeAccepted:
			j.accept(s.ID, c.got)
		case s.Action == ActionRestore && (c.Outcome == OutcomeRestored || c.Outcome == OutcomeUnsupported):
			j.remove(s.ID)
		case s.Action == ActionRestore:
			// Not restored: the value is still what tuning wrote before.
			j.restoreFailed(s.ID)
		case s.Action == ActionSet && c.Outcome != OutcomeChanged && newEntry[s.ID]:
			// Not changed: drop the entry again if the value is provably
			// still the original.
			// (A configfs directory tuning created keeps its entry, so
			// revert removes it.)
			if e, ok := j.entry(s.ID); ok && e.ConfigfsDir == "" && t.current(ctx, s).Value == e.Original {
				j.remove(s.ID)
			}
		}
		res.Changes = append(res.Changes, c)
	}
	if len(j.Entries) == 0 {
		j.Profile = ""
	}
	if err := t.Store.Save(j); err != nil {
		return res, fmt.Errorf("settings changed, but the journal could not be updated (its earlier version still holds every original): %w", err)
	}
	return res, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// entryNote keeps what identifies an IRQ for people reading the journal.
func entryNote(s Step) string {
	if s.Kind == KindIRQ {
		return s.Note
	}
	return ""
}

// current re-reads the setting of a step.
func (t *Tuner) current(ctx context.Context, s Step) Current {
	if s.Kind == KindService {
		return Current{Value: t.irqbalance(ctx).Unit}
	}
	if s.Kind == KindIRQBalance {
		return t.readBanned(ctx, t.irqbalance(ctx))
	}
	if s.Kind == KindPFC {
		cur, _ := t.readPFC(ctx, s.Key)
		return cur
	}
	if s.Kind == KindTrust {
		cur, _ := t.readTrust(ctx, s.Key)
		return cur
	}
	if s.Kind == KindPMQoS {
		return t.readLatency()
	}
	if s.Kind == KindNIC {
		h := Host{Current: map[ID]Current{}}
		t.readNIC([]ID{s.ID}, &h)
		return h.Current[s.ID]
	}
	path, err := settingPath(s.ID, s.IRQ)
	if s.Kind == KindIRQ && err != nil {
		return Current{Unsupported: true} // not found on this host: gone
	}
	if err != nil {
		return Current{Err: err.Error()}
	}
	return readAt(t.FS, s.ID, path)
}

// do performs one set or restore step and checks the result.
func (t *Tuner) do(ctx context.Context, s Step) Change {
	c := Change{Step: s}
	done := OutcomeChanged
	if s.Action == ActionRestore {
		done = OutcomeRestored
	}
	if s.Kind == KindService {
		err := t.unitJob(ctx, s)
		if err != nil {
			c.Outcome, c.Error = OutcomeFailed, err.Error()
			return c
		}
		c.Outcome = done
		return c
	}
	if s.Kind == KindPMQoS {
		return t.latencyChange(c, done)
	}
	if s.Kind == KindNIC {
		if s.Action == ActionRestore && t.current(ctx, s).Unsupported {
			c.Outcome, c.Error = OutcomeUnsupported, "the netdev is gone"
			return c
		}
		return t.doNIC(c, done)
	}
	if s.Action == ActionRestore && t.current(ctx, s).Unsupported {
		c.Outcome, c.Error = OutcomeUnsupported, "the setting is gone"
		return c
	}
	switch {
	case s.Kind == KindPFC:
		return t.doPFC(ctx, s, done)
	case s.Kind == KindTrust:
		return t.doTrust(ctx, s, done)
	case s.Kind == KindRoCEMode && s.Action == ActionRestore:
		return t.restoreRoCEMode(s)
	}
	if s.Kind == KindIRQBalance {
		if err := t.writeBanned(ctx, s.Want); err != nil {
			c.Outcome, c.Error = OutcomeFailed, fmt.Sprintf("irqbalance: ban IRQs: %v", err)
			return c
		}
		switch after := t.current(ctx, s); {
		case after.Err != "":
			c.Outcome, c.Error = OutcomeFailed, "read back: "+after.Err
		case after.Value != s.Want:
			c.Outcome, c.Error = OutcomeFailed, fmt.Sprintf("irqbalance bans %q after being told %q", after.Value, s.Want)
		default:
			c.Outcome = done
		}
		return c
	}
	path, err := settingPath(s.ID, s.IRQ)
	if err != nil {
		c.Outcome, c.Error = OutcomeFailed, err.Error()
		return c
	}
	if s.Via == "" {
		if err := t.write(path, s.Want); err != nil {
			if n, ok := irqNumberOf(s, path); ok {
				if why := unmovableReason(t.FS, n, err); why != "" {
					t.Unmovable.add(s.ID, n, why)
					c.Outcome, c.Error = OutcomeUnsupported, why
					return c
				}
			}
			c.Outcome, c.Error = classifyWrite(s.ID, err)
			return c
		}
		if t.afterWrite != nil {
			t.afterWrite(path, s.Want)
		}
	}
	after := readAt(t.FS, s.ID, path)
	switch {
	case after.Err != "":
		c.Outcome, c.Error = OutcomeFailed, "read back: "+after.Err
	case after.Value != s.Want && s.Action == ActionSet && (s.Kind == KindSysctl || s.Kind == KindNUMA) && after.Value != s.Current:
		// Changed, but not to what was written: the kernel's answer. (IRQ
		// affinities are judged by their own rules in planIRQs.)
		c.Outcome, c.Error, c.got = OutcomeAccepted, fmt.Sprintf("the kernel holds %q after writing %q", after.Value, s.Want), after.Value
	case after.Value != s.Want:
		c.Outcome, c.Error = OutcomeFailed, fmt.Sprintf("the kernel kept %q after writing %q", after.Value, s.Want)
	default:
		c.Outcome = done
	}
	return c
}

// write writes one setting's file (see writeValue).
func (t *Tuner) write(path, v string) error {
	if t.writeErr != nil {
		if err := t.writeErr(path); err != nil {
			return &fs.PathError{Op: "write", Path: path, Err: err}
		}
	}
	return writeAt(t.FS, path, v)
}

// irqNumberOf is the number of a step's interrupt, from the file written.
func irqNumberOf(s Step, path string) (int, bool) {
	if s.Kind != KindIRQ {
		return 0, false
	}
	if s.IRQ > 0 {
		return s.IRQ, true
	}
	return legacyIRQKey(strings.TrimSuffix(strings.TrimPrefix(path, "/proc/irq/"), "/smp_affinity_list"))
}

// unitJob stops irqbalance (set) or starts it again (restore).
func (t *Tuner) unitJob(ctx context.Context, s Step) error {
	if t.Systemd == nil {
		return errors.New("no systemd connection configured")
	}
	m, err := t.Systemd(ctx)
	if err != nil {
		return fmt.Errorf("systemd not reachable: %w", err)
	}
	defer m.Close()
	if s.Action == ActionRestore {
		if s.Current == UnitMasked && s.Want != UnitMasked {
			if err := m.UnmaskUnit(ctx, s.Key); err != nil {
				return err
			}
		}
		if s.Want != "active" && !unitActive(s.Want) {
			return nil // it was not running before we stopped it
		}
		return m.StartUnit(ctx, s.Key)
	}
	// Masked first, so nothing starts it between the stop and the mask.
	if s.Want == UnitMasked {
		if err := m.MaskUnit(ctx, s.Key); err != nil {
			return err
		}
	}
	if err := m.StopUnit(ctx, s.Key); err != nil {
		return err
	}
	st, err := m.UnitState(ctx, s.Key)
	if err != nil {
		return err
	}
	if unitActive(st) || (s.Want == UnitMasked && st != UnitMasked) {
		return fmt.Errorf("%s is %s after masking and stopping it", s.Key, st)
	}
	return nil
}

// writeValue writes one setting in a single write(2) at offset 0, as
// procfs and sysfs handlers expect. The file must exist: a missing one is
// an unsupported setting, never created.
func writeValue(fsys hostfs.FS, id ID, v string) error {
	path, err := id.hostPath()
	if err != nil {
		return err
	}
	return writeAt(fsys, path, v)
}

// writeAt writes a setting's file (see writeValue).
func writeAt(fsys hostfs.FS, path, v string) error {
	var old string
	if isChoiceFile(path) {
		old, _ = fsys.ReadString(path)
	}
	f, err := os.OpenFile(fsys.Path(path), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte(v))
	cerr := f.Close()
	if werr != nil {
		return &fs.PathError{Op: "write", Path: path, Err: unwrapPath(werr)}
	}
	if cerr != nil {
		return &fs.PathError{Op: "write", Path: path, Err: unwrapPath(cerr)}
	}
	if isChoiceFile(path) {
		return emulateChoice(fsys, path, old, v)
	}
	return nil
}

// classifyWrite turns the kernel's answer into an outcome with a reason
// an operator can act on.
func classifyWrite(id ID, err error) (Outcome, string) {
	path, _ := id.hostPath()
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		path = pe.Path // an interrupt's file is found through its number
	}
	switch {
	case errors.Is(err, fs.ErrNotExist) && id.Key == "net.ipv4.tcp_congestion_control":
		return OutcomeUnsupported, fmt.Sprintf("write %s: the kernel has no such congestion control (ENOENT)", path)
	case errors.Is(err, fs.ErrNotExist):
		return OutcomeUnsupported, fmt.Sprintf("%s does not exist in this kernel", path)
	case errors.Is(err, syscall.EROFS):
		return OutcomeFailed, fmt.Sprintf("write %s: read-only file system: mount the host's /proc and /sys read-write", path)
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return OutcomeFailed, fmt.Sprintf("write %s: %v: the agent must run as root, privileged", path, unwrapPath(err))
	case errors.Is(err, syscall.EBUSY) && id.Kind == KindCPUFreq:
		return OutcomeFailed, fmt.Sprintf("write %s: the driver is busy (EBUSY): intel_pstate takes no preference but performance under the performance governor", path)
	case errors.Is(err, syscall.EINVAL):
		return OutcomeFailed, fmt.Sprintf("write %s: the kernel rejected the value (EINVAL)", path)
	}
	return OutcomeFailed, err.Error()
}
