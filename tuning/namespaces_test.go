package tuning

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestSysctlNamespace(t *testing.T) {
	for key, want := range map[string]string{
		"net.core.rmem_max":                "net",
		"net/ipv4/conf/eth0.100/rp_filter": "net",
		"kernel.shmmax":                    "ipc",
		"kernel.shmall":                    "ipc",
		"kernel.shm_rmid_forced":           "ipc",
		"kernel.msgmnb":                    "ipc",
		"kernel/msgmax":                    "ipc",
		"kernel.sem":                       "ipc",
		"kernel.sem_next_id":               "ipc",
		"fs.mqueue.msg_max":                "ipc",
		"kernel.hostname":                  "uts",
		"kernel.domainname":                "uts",
		"kernel.shm_not_a_key_but_ipc":     "ipc",
		"kernel.semaphore_like":            "",
		"kernel.sched_migration_cost_ns":   "",
		"vm.swappiness":                    "",
		"fs.file-max":                      "",
	} {
		if got := (ID{KindSysctl, key}).namespace(); got != want {
			t.Errorf("%s: namespace %q, want %q", key, got, want)
		}
	}
	if got := (ID{KindNUMA, NUMABalancingKey}).namespace(); got != "" {
		t.Errorf("numa: %q", got)
	}
}

// IPC and UTS sysctls written from another IPC or UTS namespace change
// the agent's own copy: they are refused there as net.* is outside the
// host's network namespace, and the host is in error.
func TestIPCAndUTSSysctlsRefusedOutsideHostNamespaces(t *testing.T) {
	p := mustProfile(t, "name: t\nsysctl:\n  kernel.shmmax: 68719476736\n  fs.mqueue.msg_max: 100\n  kernel.hostname: gpu-17\n  vm.swappiness: 1\n")
	h := host()
	for key, v := range map[string]string{"kernel.shmmax": "18446744073692774399", "fs.mqueue.msg_max": "10", "kernel.hostname": "agent-pod", "vm.swappiness": "60"} {
		h.Current[ID{KindSysctl, key}] = Current{Value: v}
	}
	h.IPCNS = NetNS{State: NetNSOther, Detail: "agent in ipc:[1], host PID 1 in ipc:[2]"}
	h.UTSNS = NetNS{State: NetNSOther, Detail: "agent in uts:[3], host PID 1 in uts:[4]"}
	pl := MakePlan(p, h, nil)
	got := map[string]Step{}
	for _, s := range pl.Steps {
		got[s.Key] = s
	}
	for key, word := range map[string]string{"kernel.shmmax": "hostIPC: true", "fs.mqueue.msg_max": "hostIPC: true", "kernel.hostname": "UTS"} {
		if s := got[key]; s.Action != ActionRefused || !strings.Contains(s.Note, word) {
			t.Errorf("%s: %s %q; want refused naming %q", key, s.Action, s.Note, word)
		}
	}
	if s := got["vm.swappiness"]; s.Action != ActionSet {
		t.Errorf("vm.swappiness: %s", s.Action)
	}
	if pl.IPCNS == nil || pl.IPCNS.State != NetNSOther || pl.UTSNS == nil {
		t.Errorf("plan namespaces: ipc %+v uts %+v", pl.IPCNS, pl.UTSNS)
	}
	if st := Summarize(pl, 0); st != StateError {
		t.Errorf("state %s, want error", st)
	}

	// In the host's namespaces they are planned as any other sysctl.
	h.IPCNS, h.UTSNS = NetNS{State: NetNSHost}, NetNS{State: NetNSHost}
	for _, s := range MakePlan(p, h, nil).Steps {
		if s.Action != ActionSet {
			t.Errorf("host namespaces: %s %s", s.Key, s.Action)
		}
	}

	// Unproven: a value already as wanted is ok, one that differs is
	// refused, and the state is unknown rather than error.
	h.IPCNS = NetNS{State: NetNSUnknown, Detail: "cannot read the host's (PID 1's) namespace"}
	h.Current[ID{KindSysctl, "fs.mqueue.msg_max"}] = Current{Value: "100"}
	h.Current[ID{KindSysctl, "kernel.hostname"}] = Current{Value: "gpu-17"}
	h.Current[ID{KindSysctl, "vm.swappiness"}] = Current{Value: "1"}
	pl = MakePlan(p, h, nil)
	got = map[string]Step{}
	for _, s := range pl.Steps {
		got[s.Key] = s
	}
	if got["fs.mqueue.msg_max"].Action != ActionOK || got["kernel.shmmax"].Action != ActionRefused {
		t.Errorf("unknown IPC namespace: %+v", got)
	}
	if st := Summarize(pl, 0); st != StateUnknown {
		t.Errorf("unknown IPC namespace: state %s, want unknown", st)
	}

	// A plan without such keys says nothing of those namespaces.
	if pl := MakePlan(mustProfile(t, "name: t\nsysctl:\n  vm.swappiness: 1\n"), h, nil); pl.IPCNS != nil || pl.UTSNS != nil {
		t.Errorf("namespaces reported without IPC/UTS keys: %+v %+v", pl.IPCNS, pl.UTSNS)
	}
}

// The check compares real namespace files: this process's, and a child's
// in new IPC and UTS namespaces.
func TestCheckNamespaceIPCUTS(t *testing.T) {
	fsys, root := newHostFS(t)
	if got := CheckNamespace(fsys, "ipc"); got.State != NetNSUnknown {
		t.Errorf("no /proc/1 under the root: %+v", got)
	}
	os.MkdirAll(filepath.Join(root, "proc/1/ns"), 0o755)
	os.Symlink("/proc/self/ns/ipc", filepath.Join(root, "proc/1/ns/ipc"))
	if got := CheckNamespace(fsys, "ipc"); got.State != NetNSHost {
		t.Errorf("same IPC namespace: %+v", got)
	}
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a process in new IPC and UTS namespaces (needs root): %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for _, kind := range []string{"ipc", "uts"} {
		got := compareNS(kind, "/proc/self/ns/"+kind, fmt.Sprintf("/proc/%d/ns/%s", cmd.Process.Pid, kind))
		if got.State != NetNSOther || !strings.Contains(got.Detail, kind+":[") {
			t.Errorf("other %s namespace: %+v", kind, got)
		}
	}
}

// Apply in another IPC namespace writes nothing there.
func TestApplyRefusesIPCOutsideHost(t *testing.T) {
	f := newFixture(t, "cpu-only")
	f.write(t, "/proc/sys/kernel/shmmax", "18446744073692774399\n")
	f.tuner.Namespace = func(kind string) NetNS {
		return NetNS{State: NetNSOther, Detail: "agent in " + kind + ":[1], host PID 1 in " + kind + ":[2]"}
	}
	res, err := f.tuner.Apply(t.Context(), mustProfile(t, "name: t\nsysctl:\n  kernel.shmmax: 68719476736\n"), f.m)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 0 || res.OK() || f.read(t, "/proc/sys/kernel/shmmax") != "18446744073692774399" {
		t.Errorf("changes %+v, ok %v, shmmax %s", res.Changes, res.OK(), f.read(t, "/proc/sys/kernel/shmmax"))
	}
}
