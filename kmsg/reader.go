package kmsg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// Path is the host path of the kernel log device.
const Path = "/dev/kmsg"

// JournalFile is the name of the reader's journal in its state directory.
const JournalFile = "kmsg.json"

// maxRecord is the kernel's largest /dev/kmsg record (CONSOLE_EXT_LOG_MAX,
// 8 KiB); a read with a smaller buffer fails with EINVAL.
const maxRecord = 8192

// Event is a finding with where and when the kernel logged it.
type Event struct {
	Finding
	Seq uint64
	// Time is when the kernel logged it: boot time plus the record's
	// timestamp (the time of the read when the boot time is unknown).
	Time time.Time
}

// Batch is what one Read brings.
type Batch struct {
	// Records is how many records were new.
	Records int
	// Lost is how many records were overwritten in the kernel's ring
	// before they were read (EPIPE, or a gap in the sequence numbers):
	// their faults, if any, are missed.
	Lost uint64
	// Events are the new records that report a fault, in log order.
	Events []Event
}

// Reader reads the kernel log from the records after the last one it read
// before (its journal), or from the start of the log on a first start or
// after a reboot.
type Reader struct {
	mu       sync.Mutex // Read and Close may come from different goroutines
	fs       hostfs.FS
	stateDir string
	now      func() time.Time

	started bool
	bootID  string
	boot    time.Time // zero when unknown
	last    uint64    // sequence number of the last record read
	haveAny bool      // last is set (from the journal or a read)
	dev     *os.File  // the open character device; nil for a plain file
}

// NewReader reads the kernel log under fsys and keeps its journal in
// stateDir (none when empty: every start reads the log from its start).
func NewReader(fsys hostfs.FS, stateDir string) *Reader {
	return &Reader{fs: fsys, stateDir: stateDir, now: time.Now}
}

// journal is the last record read in one boot of one host root. The root
// keeps apart the logs of trees read through --host-root (a test's, a
// simulated node's), which share the default state directory and may
// share a boot id; on a host and in the DaemonSet it never changes.
type journal struct {
	BootID string `json:"bootID"`
	Root   string `json:"root"`
	Seq    uint64 `json:"seq"`
}

// start reads the boot id, the boot time and the journal. A journal of
// another boot is ignored (the kernel numbers records from 0 again), and
// so is one of another host root.
func (r *Reader) start() error {
	b, err := r.fs.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return fmt.Errorf("read boot id: %w", err)
	}
	r.bootID = strings.TrimSpace(string(b))
	if up, err := r.fs.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(up)); len(f) > 0 {
			if s, err := strconv.ParseFloat(f[0], 64); err == nil {
				r.boot = r.now().Add(-time.Duration(s * float64(time.Second)))
			}
		}
	}
	if r.stateDir != "" {
		b, err := os.ReadFile(filepath.Join(r.stateDir, JournalFile))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("read kernel log journal: %w", err)
		default:
			var j journal
			// A journal that does not parse is treated as absent: at
			// worst records are counted again, never lost.
			if json.Unmarshal(b, &j) == nil && j.BootID == r.bootID && j.Root == r.fs.Root() {
				r.last, r.haveAny = j.Seq, true
			}
		}
	}
	r.started = true
	return nil
}

// Read reads the records logged since the last Read (since the journaled
// record on the first; the whole log on a first start) without blocking.
// A /dev/kmsg that is absent is fs.ErrNotExist; one that cannot be opened
// for lack of CAP_SYSLOG (kernel.dmesg_restrict=1) is fs.ErrPermission.
func (r *Reader) Read(ctx context.Context) (Batch, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.started {
		if err := r.start(); err != nil {
			return Batch{}, err
		}
	}
	var (
		b    Batch
		recs [][]byte
		err  error
	)
	if r.dev == nil {
		var st os.FileInfo
		if st, err = os.Stat(r.fs.Path(Path)); err != nil {
			return Batch{}, fmt.Errorf("kernel log: %w", err)
		}
		if st.Mode()&fs.ModeCharDevice != 0 {
			// O_NONBLOCK: a read at the end of the log returns EAGAIN
			// instead of waiting for the next record.
			if r.dev, err = os.OpenFile(r.fs.Path(Path), os.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
				return Batch{}, fmt.Errorf("kernel log: %w", err)
			}
		}
	}
	var epipes uint64
	if r.dev != nil {
		recs, epipes, err = readDevice(ctx, r.dev)
	} else {
		var data []byte
		data, err = r.fs.ReadFile(Path)
		recs = splitRecords(data)
	}
	if err != nil {
		return Batch{}, fmt.Errorf("kernel log: %w", err)
	}
	now := r.now()
	prev := r.last
	for _, raw := range recs {
		rec, perr := ParseRecord(raw)
		if perr != nil || r.haveAny && rec.Seq <= r.last {
			continue // not a record, or one counted before this start
		}
		if r.haveAny && rec.Seq > r.last+1 {
			// Records the kernel overwrote before they were read, while
			// the agent was down or between reads. EPIPE tells the same
			// for the device; the gap is the count.
			b.Lost += rec.Seq - r.last - 1
		}
		r.last, r.haveAny = rec.Seq, true
		b.Records++
		f, ok := Classify(rec)
		if !ok {
			continue
		}
		t := now
		if !r.boot.IsZero() {
			t = r.boot.Add(rec.Since)
		}
		b.Events = append(b.Events, Event{Finding: f, Seq: rec.Seq, Time: t})
	}
	// Each EPIPE is followed by a record whose sequence number shows the
	// gap, counted above; one with no gap to show (the first read of a
	// start) still lost at least one record.
	b.Lost = max(b.Lost, epipes)
	if r.last != prev || b.Records > 0 {
		if err := r.writeJournal(); err != nil {
			return b, err
		}
	}
	return b, nil
}

// readDevice reads records until the end of the log. Each read(2) returns
// one record. EPIPE means the next record was overwritten: the kernel has
// moved the reader on to the oldest record left, so reading goes on.
func readDevice(ctx context.Context, f *os.File) (recs [][]byte, epipes uint64, err error) {
	buf := make([]byte, maxRecord)
	for ctx.Err() == nil {
		n, err := syscall.Read(int(f.Fd()), buf)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			return recs, epipes, nil
		case errors.Is(err, syscall.EPIPE):
			epipes++
			continue
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return recs, epipes, err
		case n == 0:
			return recs, epipes, nil
		}
		recs = append(recs, append([]byte(nil), buf[:n]...))
	}
	return recs, epipes, ctx.Err()
}

// writeJournal records the last record read, atomically (a temporary
// file renamed over the journal), so a restart goes on after it.
func (r *Reader) writeJournal() error {
	if r.stateDir == "" {
		return nil
	}
	if err := os.MkdirAll(r.stateDir, 0o755); err != nil {
		return fmt.Errorf("kernel log journal: %w", err)
	}
	b, err := json.Marshal(journal{BootID: r.bootID, Root: r.fs.Root(), Seq: r.last})
	if err != nil {
		return fmt.Errorf("kernel log journal: %w", err)
	}
	tmp, err := os.CreateTemp(r.stateDir, JournalFile+".*")
	if err != nil {
		return fmt.Errorf("kernel log journal: %w", err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("kernel log journal: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(r.stateDir, JournalFile)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("kernel log journal: %w", err)
	}
	return nil
}

// Close closes the device.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dev == nil {
		return nil
	}
	err := r.dev.Close()
	r.dev = nil
	return err
}
