package tuning

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gpunode/gpunode/internal/hostfs"
)

func newHostFS(t *testing.T) (hostfs.FS, string) {
	t.Helper()
	root := t.TempDir()
	fsys, err := hostfs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return fsys, root
}

// The namespace check compares real namespace files of real processes: this
// one, and a child in a new network namespace.
func TestNetNS(t *testing.T) {
	fsys, root := newHostFS(t)
	if got := CheckNetNS(fsys); got.State != NetNSUnknown || !strings.Contains(got.Detail, "PID 1") {
		t.Errorf("no /proc/1 under the root: %+v", got)
	}
	os.MkdirAll(filepath.Join(root, "proc/1/ns"), 0o755)
	// The host's PID 1 in the same namespace as this test.
	os.Symlink("/proc/self/ns/net", filepath.Join(root, "proc/1/ns/net"))
	if got := CheckNetNS(fsys); got.State != NetNSHost {
		t.Errorf("same namespace: %+v", got)
	}

	// A process in its own network namespace (the test runs as root, as
	// the agent does).
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a process in a new network namespace (needs root): %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	other := fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
	got := compareNetNS(selfNetNS, other)
	if got.State != NetNSOther || !strings.Contains(got.Detail, "net:[") {
		t.Errorf("other namespace: %+v", got)
	}
	if n := got.netRefusal(); !strings.Contains(n, "hostNetwork: true") {
		t.Errorf("refusal %q", n)
	}
	if n := (NetNS{State: NetNSUnknown, Detail: "x"}).netRefusal(); !strings.Contains(n, "cannot tell") {
		t.Errorf("unknown refusal %q", n)
	}
}
