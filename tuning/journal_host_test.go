package tuning

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// liveRoot is a host root whose /proc is the running kernel's procfs, as
// the chart's /host is (the host's /proc mounted at /host/proc), without
// being the test process's "/".
func liveRoot(t *testing.T) (hostfs.FS, string) {
	t.Helper()
	root := t.TempDir()
	if err := os.Symlink("/proc", filepath.Join(root, "proc")); err != nil {
		t.Fatal(err)
	}
	fsys, err := hostfs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return fsys, root
}

// A live host root is recorded as the host sees itself ("/"), so the
// journal the daemon wrote under /host is the one a revert from a host
// shell (--host-root=/) reads; a fixture tree keeps its path.
func TestJournalRecordsTheHostsView(t *testing.T) {
	fsys, _ := liveRoot(t)
	tu := &Tuner{FS: fsys}
	if got := tu.hostID(); got != "/" {
		t.Errorf("live root recorded as %q, want /", got)
	}
	fix, root := newHostFS(t)
	if got := (&Tuner{FS: fix}).hostID(); got != root {
		t.Errorf("fixture tree recorded as %q, want %q", got, root)
	}
	if got := (&Tuner{FS: fsys, Host: "simulated node x"}).hostID(); got != "simulated node x" {
		t.Errorf("named host recorded as %q", got)
	}
}

// A journal written by an older agent in a container (host_root /host) in
// this boot is read by a live host root: the boot id names the running
// kernel, so it is the same host.
func TestJournalOfContainerHostRootThisBoot(t *testing.T) {
	fsys, root := liveRoot(t)
	boot := readBootID(fsys)
	if boot == "" {
		t.Fatal("no boot id in /proc")
	}
	store := Store{Dir: filepath.Join(root, "state")}
	write := func(hostRoot, bootID string) {
		t.Helper()
		j := Journal{Version: journalVersion, HostRoot: hostRoot, BootID: bootID, Profile: "p",
			Entries: []Entry{{Kind: KindSysctl, Key: "vm.swappiness", Original: "60", Wrote: "1"}}}
		b, _ := json.Marshal(j)
		os.MkdirAll(store.Dir, 0o755)
		if err := os.WriteFile(filepath.Join(store.Dir, JournalFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tu := &Tuner{FS: fsys, Store: store, NetNS: func() NetNS { return NetNS{State: NetNSHost} }}
	write("/host", boot)
	pl, j, err := tu.Plan(t.Context(), Profile{Name: "none"}, Machine{})
	if err != nil {
		t.Fatalf("journal of /host in this boot: %v", err)
	}
	if len(j.Entries) != 1 || len(pl.Steps) != 1 || pl.Steps[0].Key != "vm.swappiness" {
		t.Errorf("journal %+v, plan %+v", j, pl.Steps)
	}
	// Another boot's id does not prove the same host: refused as before.
	write("/host", "00000000-0000-4000-8000-000000000001")
	if _, _, err := tu.Plan(t.Context(), Profile{Name: "none"}, Machine{}); err == nil || !strings.Contains(err.Error(), "belongs to host root /host") {
		t.Errorf("journal of /host in another boot: %v", err)
	}
}
