package tuning

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultStateDir holds the journal on a host (a hostPath in the chart).
const DefaultStateDir = "/var/lib/gpunode"

// Files in the state directory.
const (
	JournalFile      = "tuning-journal.json"
	previousBootFile = "tuning-journal.previous-boot.json"
	lockFile         = "tuning.lock"
	tempPrefix       = ".tuning-journal-" // Save's temporary files
	journalVersion   = 1
	maxJournalSize   = 16 << 20
)

// Journal records the original value of every setting tuning changed,
// taken before the first change. Revert writes them back. It belongs to
// one host root and one boot: nothing tuning writes survives a reboot (it
// never edits /etc/sysctl.conf or /etc/sysctl.d), so a journal from an
// earlier boot describes nothing that is still changed.
type Journal struct {
	Version  int    `json:"version"`
	HostRoot string `json:"host_root"`
	BootID   string `json:"boot_id,omitempty"`
	// Profile is the profile last applied.
	Profile string  `json:"profile,omitempty"`
	Entries []Entry `json:"entries"`
}

// Entry is one changed setting.
type Entry struct {
	Kind string `json:"kind"`
	Key  string `json:"key"`
	// Original is the value before tuning first changed it.
	Original string `json:"original"`
	// Wrote is the value tuning last wrote (recorded before writing it),
	// which tells drift (someone changed our value) from a profile change.
	Wrote string `json:"wrote"`
	// Accepted is what the kernel held after tuning wrote Wrote, where
	// that differs (its answer to the write: a value rounded, huge pages
	// partly allocated). The setting holding it is as tuning left it: not
	// drift, not written again every interval.
	Accepted string `json:"accepted,omitempty"`
	// RestoringFrom is what tuning had written when a restore began
	// (Wrote then says the original, so a crash in the middle never makes
	// a restored value look drifted); a value still equal to it is
	// tuning's, not changed by someone else.
	RestoringFrom string `json:"restoring_from,omitempty"`
	// Note describes the setting (an IRQ's device and name).
	Note string `json:"note,omitempty"`
	// IRQ is an interrupt's number when tuning last wrote it; the key
	// (device and queue) finds it again when a driver reload renumbers.
	IRQ int `json:"irq,omitempty"`
	// ConfigfsDir is the rdma_cm directory tuning created for a RoCE
	// mode (recorded before the mkdir); revert removes it. One that was
	// there before is never named, so never removed.
	ConfigfsDir string    `json:"configfs_dir,omitempty"`
	RecordedAt  time.Time `json:"recorded_at"`
}

// ID names the entry's setting.
func (e Entry) ID() ID { return ID{Kind: e.Kind, Key: e.Key} }

func (j *Journal) find(id ID) int {
	return slices.IndexFunc(j.Entries, func(e Entry) bool { return e.ID() == id })
}

func (j *Journal) has(id ID) bool { return j != nil && j.find(id) >= 0 }

func (j *Journal) entry(id ID) (Entry, bool) {
	if j == nil {
		return Entry{}, false
	}
	if i := j.find(id); i >= 0 {
		return j.Entries[i], true
	}
	return Entry{}, false
}

// record notes that id is about to be set to wrote. The original is
// recorded only the first time: applying twice never replaces an original
// with a tuned value.
func (j *Journal) record(id ID, original, wrote, note string, now time.Time) {
	if i := j.find(id); i >= 0 {
		e := &j.Entries[i]
		if e.Wrote != wrote {
			e.Accepted = ""
		}
		e.Wrote, e.RestoringFrom = wrote, ""
		return
	}
	j.Entries = append(j.Entries, Entry{Kind: id.Kind, Key: id.Key, Original: original, Wrote: wrote, Note: note, RecordedAt: now.UTC()})
	slices.SortFunc(j.Entries, func(a, b Entry) int { return compareIDs(a.ID(), b.ID()) })
}

// setCreated notes the configfs directory tuning is about to create for
// an entry.
func (j *Journal) setCreated(id ID, dir string) {
	if i := j.find(id); i >= 0 && dir != "" {
		j.Entries[i].ConfigfsDir = dir
	}
}

// setOriginal fills in an original that could be read only after
// creating its configfs directory.
func (j *Journal) setOriginal(id ID, v string) {
	if i := j.find(id); i >= 0 {
		j.Entries[i].Original = v
	}
}

// accept records the kernel's answer to the last write.
func (j *Journal) accept(id ID, value string) {
	if i := j.find(id); i >= 0 {
		j.Entries[i].Accepted = value
	}
}

// restoring marks an entry whose original is about to be written back:
// Wrote becomes the original, RestoringFrom keeps what tuning had written.
func (j *Journal) restoring(id ID) {
	if i := j.find(id); i >= 0 {
		e := &j.Entries[i]
		if e.RestoringFrom == "" && e.Wrote != e.Original {
			e.RestoringFrom = e.Wrote
		}
		e.Wrote = e.Original
	}
}

// restoreFailed undoes restoring: the value is still what tuning wrote.
func (j *Journal) restoreFailed(id ID) {
	if i := j.find(id); i >= 0 {
		e := &j.Entries[i]
		if e.RestoringFrom != "" {
			e.Wrote, e.RestoringFrom = e.RestoringFrom, ""
		}
	}
}

// setIRQ notes the number of the interrupt an entry's key names now.
func (j *Journal) setIRQ(id ID, irq int) {
	if i := j.find(id); i >= 0 && id.Kind == KindIRQ && irq > 0 {
		j.Entries[i].IRQ = irq
	}
}

func (j *Journal) remove(id ID) {
	if i := j.find(id); i >= 0 {
		j.Entries = slices.Delete(j.Entries, i, i+1)
	}
}

// Store is the state directory holding the journal.
type Store struct {
	Dir string
}

func (s Store) path(name string) string { return filepath.Join(s.Dir, name) }

// Lock takes the state directory's lock, so the daemon and a `tune`
// command never interleave their changes. It waits until ctx is done.
func (s Store) Lock(ctx context.Context) (unlock func(), err error) {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	f, err := os.OpenFile(s.path(lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory lock: %w", err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() {
				unix.Flock(int(f.Fd()), unix.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", s.path(lockFile), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: another gpunode-agent is tuning this host: %w", s.path(lockFile), ctx.Err())
		case <-tick.C:
		}
	}
}

// lockForReading takes the lock for a read-only use (plan, verify): a
// state directory that does not exist holds no journal, and one that
// cannot be written (a read-only root file system in audit mode) is read
// without the lock.
func (s Store) lockForReading(ctx context.Context) (unlock func(), err error) {
	if _, err := os.Stat(s.Dir); errors.Is(err, fs.ErrNotExist) {
		return func() {}, nil
	}
	unlock, err = s.Lock(ctx)
	if errors.Is(err, unix.EROFS) || errors.Is(err, fs.ErrPermission) {
		return func() {}, nil
	}
	return unlock, err
}

// Load reads the journal for hostRoot in the boot bootID. Without a
// journal it returns an empty one. A journal from another boot is moved
// aside (the reboot restored every value) and reported in previous. A
// journal of another host root, or one that cannot be parsed, is an error
// and is left untouched: it may hold the only record of original values.
func (s Store) Load(hostRoot, bootID string) (j *Journal, previous *Journal, err error) {
	return s.load(hostRoot, bootID, false)
}

// load is Load; readOnly leaves a journal of an earlier boot in place.
func (s Store) load(hostRoot, bootID string, readOnly bool) (j *Journal, previous *Journal, err error) {
	fresh := &Journal{Version: journalVersion, HostRoot: hostRoot, BootID: bootID}
	path := s.path(JournalFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fresh, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJournalSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("journal %s: %w", path, err)
	}
	old, err := ParseJournal(b)
	if err != nil {
		return nil, nil, fmt.Errorf("journal %s is damaged (%w); it may hold the original values of changed settings, so it is left as it is: repair or move it by hand", path, err)
	}
	// Agents before the host's view was recorded wrote the path they
	// reached the host by (/host in the chart's container). On a live host
	// the same boot id proves the same running kernel, so it is this
	// host's journal; the next save records it as LiveHost.
	if old.HostRoot != hostRoot && hostRoot == LiveHost && old.BootID != "" && old.BootID == bootID {
		old.HostRoot = hostRoot
	}
	if old.HostRoot != hostRoot {
		return nil, nil, fmt.Errorf("journal %s belongs to host root %s, not %s: use that host root, or another --state-dir", path, old.HostRoot, hostRoot)
	}
	if old.BootID != "" && bootID != "" && old.BootID != bootID {
		if readOnly {
			return fresh, old, nil
		}
		if err := os.Rename(path, s.path(previousBootFile)); err != nil {
			return nil, nil, fmt.Errorf("journal from an earlier boot: %w", err)
		}
		if err := syncDir(s.Dir); err != nil {
			return nil, nil, err
		}
		return fresh, old, nil
	}
	if old.BootID == "" {
		old.BootID = bootID
	}
	return old, nil, nil
}

// ParseJournal decodes and checks a journal file.
func ParseJournal(b []byte) (*Journal, error) {
	if len(b) > maxJournalSize {
		return nil, fmt.Errorf("larger than %d bytes", maxJournalSize)
	}
	var j Journal
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the journal")
	}
	if j.Version != journalVersion {
		return nil, fmt.Errorf("version %d, want %d", j.Version, journalVersion)
	}
	if j.HostRoot == "" {
		return nil, errors.New("no host_root")
	}
	seen := map[ID]bool{}
	for _, e := range j.Entries {
		if err := e.ID().check(); err != nil {
			return nil, fmt.Errorf("entry %s: %w", e.ID(), err)
		}
		if e.IRQ < 0 || (e.IRQ != 0 && e.Kind != KindIRQ) {
			return nil, fmt.Errorf("entry %s: irq %d", e.ID(), e.IRQ)
		}
		if e.Kind == KindService && e.Key != IRQBalanceUnit {
			return nil, fmt.Errorf("entry %s: only %s is managed", e.ID(), IRQBalanceUnit)
		}
		if e.Kind == KindIRQBalance && e.Key != BannedIRQsKey {
			return nil, fmt.Errorf("entry %s: only %s is managed", e.ID(), BannedIRQsKey)
		}
		if seen[e.ID()] {
			return nil, fmt.Errorf("entry %s twice", e.ID())
		}
		seen[e.ID()] = true
	}
	slices.SortFunc(j.Entries, func(a, b Entry) int { return compareIDs(a.ID(), b.ID()) })
	return &j, nil
}

// Save writes the journal atomically and durably: a temporary file,
// fsync, rename over the old one, fsync of the directory. An empty journal
// removes the file.
func (s Store) Save(j *Journal) error {
	path := s.path(JournalFile)
	if len(j.Entries) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal: %w", err)
		}
		return syncDir(s.Dir)
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.Dir, tempPrefix+"*")
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("journal: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("journal: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return syncDir(s.Dir)
}

// sweepTemps removes the temporary files of Saves that never finished (a
// process killed between creating one and renaming it). Only a holder of
// the lock may call it: Save runs under the lock, so no live one is
// taken. Best effort: a file left costs only its space, so errors are
// not reported.
func (s Store) sweepTemps() {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), tempPrefix) {
			os.Remove(s.path(e.Name()))
		}
	}
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("state directory: fsync: %w", err)
	}
	return nil
}
