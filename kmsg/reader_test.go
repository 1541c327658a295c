package kmsg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// tree is a host root with a boot id, an uptime and a plain-file kernel
// log (a simulated node's dev/kmsg).
func tree(t *testing.T, bootID string, log string) (hostfs.FS, string) {
	t.Helper()
	root := t.TempDir()
	write(t, filepath.Join(root, "proc/sys/kernel/random/boot_id"), bootID+"\n")
	write(t, filepath.Join(root, "proc/uptime"), "3600.00 7000.00\n")
	write(t, filepath.Join(root, "dev/kmsg"), log)
	fsys, err := hostfs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return fsys, root
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const bootLog = "6,0,0,-;Linux version 6.8.0-49-generic\n" +
	"3,1,1843308145,-;NVRM: Xid (PCI:0000:1b:00): 79, pid=0, GPU has fallen off the bus.\n" +
	"6,2,1843400000,-;mlx5_core 0000:ab:00.0 mlx5_5: Port: 1 Link ACTIVE\n" +
	"3,3,1843500000,-;mlx5_core 0000:0d:00.0: print_health_info:431:(pid 0): Health issue observed, firmware internal error, severity(3) ERROR:\n" +
	" SUBSYSTEM=pci\n DEVICE=+pci:0000:0d:00.0\n"

func TestReaderJournalAndBoot(t *testing.T) {
	fsys, root := tree(t, "11111111-2222-4333-8444-555555555555", bootLog)
	state := filepath.Join(t.TempDir(), "state")
	ctx := context.Background()

	r := NewReader(fsys, state)
	now := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	b, err := r.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Records != 4 || b.Lost != 0 || len(b.Events) != 2 {
		t.Fatalf("first read: %+v", b)
	}
	xid := b.Events[0]
	if xid.Kind != XID || xid.Device != "0000:1b:00.0" || xid.Code != 79 || xid.Seq != 1 {
		t.Errorf("xid %+v", xid)
	}
	// Boot was 3600 s before now; the record 1843.308145 s after boot.
	if want := now.Add(-time.Hour).Add(1843308145 * time.Microsecond); !xid.Time.Equal(want) {
		t.Errorf("time %v, want %v", xid.Time, want)
	}
	if b.Events[1].Kind != MLX5Health || b.Events[1].Device != "0000:0d:00.0" {
		t.Errorf("mlx5 %+v", b.Events[1])
	}
	if b, _ := r.Read(ctx); b.Records != 0 {
		t.Errorf("second read brought %+v", b)
	}

	// New records, with a gap: seq 4 was overwritten before it was read.
	appendLog(t, root, "4,5,1900000000,-;pcieport 0000:1a:00.0: PCIe Bus Error: severity=Uncorrected (Fatal), type=Transaction Layer, (Requester ID)\n")
	b, err = r.Read(ctx)
	if err != nil || b.Records != 1 || b.Lost != 1 || len(b.Events) != 1 || b.Events[0].Kind != AER || b.Events[0].Severity != SeverityFatal {
		t.Fatalf("append: %+v %v", b, err)
	}

	// A restart of the agent (a new reader, same state dir, same boot)
	// counts nothing again.
	r2 := NewReader(fsys, state)
	if b, err := r2.Read(ctx); err != nil || b.Records != 0 || len(b.Events) != 0 {
		t.Fatalf("restart: %+v %v", b, err)
	}
	appendLog(t, root, "3,6,1950000000,-;NVRM: Xid (PCI:0000:1b:00): 48, pid=0, An uncorrectable double bit error\n")
	if b, _ := r2.Read(ctx); b.Records != 1 || len(b.Events) != 1 || b.Events[0].Code != 48 {
		t.Fatalf("after restart: %+v", b)
	}

	// A reboot (new boot id): the kernel numbers from 0 again, and the
	// whole log counts.
	write(t, filepath.Join(root, "proc/sys/kernel/random/boot_id"), "99999999-2222-4333-8444-555555555555\n")
	write(t, filepath.Join(root, "dev/kmsg"), bootLog)
	if b, _ := NewReader(fsys, state).Read(ctx); b.Records != 4 || len(b.Events) != 2 {
		t.Fatalf("after reboot: %+v", b)
	}
}

// A journal of another host root (a tree read through --host-root with the
// same boot id) is not this log's.
func TestReaderJournalOfAnotherRoot(t *testing.T) {
	state := t.TempDir()
	a, _ := tree(t, "same-boot", bootLog)
	b, _ := tree(t, "same-boot", bootLog)
	if n, _ := NewReader(a, state).Read(context.Background()); n.Records != 4 {
		t.Fatalf("a: %+v", n)
	}
	if n, _ := NewReader(b, state).Read(context.Background()); n.Records != 4 {
		t.Errorf("b read after a's journal: %+v", n)
	}
}

// A journal that does not parse counts the log again rather than failing.
func TestReaderBadJournal(t *testing.T) {
	fsys, _ := tree(t, "b", bootLog)
	state := t.TempDir()
	write(t, filepath.Join(state, JournalFile), "{not json")
	if b, err := NewReader(fsys, state).Read(context.Background()); err != nil || b.Records != 4 {
		t.Fatalf("%+v %v", b, err)
	}
}

func TestReaderAbsent(t *testing.T) {
	fsys, root := tree(t, "b", "")
	if err := os.Remove(filepath.Join(root, "dev/kmsg")); err != nil {
		t.Fatal(err)
	}
	if _, err := NewReader(fsys, "").Read(context.Background()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err %v, want ErrNotExist", err)
	}
}

// Garbage in a log file (a torn write, binary junk, lines that are not
// records) is skipped: never an error, never a finding.
func TestReaderGarbage(t *testing.T) {
	garbage, err := os.ReadFile("testdata/garbage.kmsg")
	if err != nil {
		t.Fatal(err)
	}
	fsys, _ := tree(t, "b", string(garbage))
	b, err := NewReader(fsys, "").Read(context.Background())
	if err != nil || len(b.Events) != 0 {
		t.Fatalf("%+v %v", b, err)
	}
	if b.Records != 2 {
		t.Errorf("records %d, want the 2 well-formed ones", b.Records)
	}
}

// The host's real /dev/kmsg, reached through a host root whose dev/kmsg is
// a link to it: the reader opens the character device, reads every record
// without blocking at the end, and after a restart reads only a record
// written since (a harmless line, written as `echo '<6>...' > /dev/kmsg`
// would). Needs root, as the agent does, and CAP_SYSLOG where
// kernel.dmesg_restrict is 1 (it is on this machine).
func TestReaderRealDevice(t *testing.T) {
	if _, err := os.Stat("/dev/kmsg"); err != nil {
		t.Fatalf("this machine has no /dev/kmsg: %v", err)
	}
	bootID, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	fsys, root := tree(t, strings.TrimSpace(string(bootID)), "")
	os.Remove(filepath.Join(root, "dev/kmsg"))
	if err := os.Symlink("/dev/kmsg", filepath.Join(root, "dev/kmsg")); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := NewReader(fsys, state)
	defer r.Close()
	b, err := r.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Records == 0 {
		t.Fatal("no records in the host's kernel log")
	}
	r.Close()

	marker := make([]byte, 8)
	rand.Read(marker)
	line := "gpunode kmsg reader test " + hex.EncodeToString(marker)
	if err := os.WriteFile("/dev/kmsg", []byte("<6>"+line+"\n"), 0); err != nil {
		t.Fatal(err)
	}
	r2 := NewReader(fsys, state)
	defer r2.Close()
	b, err = r2.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Other writers (the kernel, other tests) may log meanwhile, but our
	// line is among a handful of new records, not the whole log again.
	if b.Records < 1 || b.Records > 50 {
		t.Fatalf("after restart read %d records, want ours and few others", b.Records)
	}
}

func appendLog(t *testing.T, root, s string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(root, "dev/kmsg"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// With kernel.dmesg_restrict=1 (this machine's setting, and most
// distributions' default) opening /dev/kmsg for reading needs CAP_SYSLOG:
// the reader, in a process without it, fails with fs.ErrPermission. On the
// 6.18 kernel here CAP_SYS_ADMIN alone is not enough either (the child
// keeps it). The child is this test binary run through setpriv
// (util-linux), which drops the capability from the bounding set.
func TestReaderWithoutCAPSYSLOG(t *testing.T) {
	if os.Getenv("GPUNODE_KMSG_CHILD") != "" {
		fsys, err := hostfs.New("/")
		if err != nil {
			t.Fatal(err)
		}
		_, err = NewReader(fsys, "").Read(context.Background())
		if !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("read without CAP_SYSLOG: %v, want a permission error", err)
		}
		return
	}
	restrict, err := os.ReadFile("/proc/sys/kernel/dmesg_restrict")
	if err != nil || strings.TrimSpace(string(restrict)) != "1" {
		t.Fatalf("this test needs kernel.dmesg_restrict=1 (have %q, %v)", restrict, err)
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) not found: %v", err)
	}
	cmd := exec.Command(setpriv, "--bounding-set", "-syslog", "--inh-caps", "-syslog",
		os.Args[0], "-test.run=^TestReaderWithoutCAPSYSLOG$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GPUNODE_KMSG_CHILD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
