package tuning

import (
	"fmt"
	"os"
	"syscall"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// NetNS states.
const (
	NetNSHost    = "host"
	NetNSOther   = "other"
	NetNSUnknown = "unknown"
)

// NetNS says whether the agent runs in the host's network namespace. net.*
// sysctls are per namespace: written from a pod without hostNetwork they
// change the pod's copy, or do not exist there at all (net.core.rmem_max
// lives only in the initial namespace), so they are refused unless the
// state is NetNSHost.
type NetNS struct {
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
}

// selfNetNS is the agent's own namespace. It is deliberately not under the
// host root: it is where this process runs.
const selfNetNS = "/proc/self/ns/net"

// CheckNetNS compares the agent's network namespace with that of the
// host's PID 1 (under the host root), by device and inode, as the kernel
// identifies namespaces.
func CheckNetNS(fsys hostfs.FS) NetNS {
	return compareNetNS(selfNetNS, fsys.Path("/proc/1/ns/net"))
}

// Namespace kinds of sysctls other than the network's: the System V IPC
// and POSIX message queue limits are per IPC namespace (ipc/ipc_sysctl.c,
// ipc/mq_sysctl.c), the host and domain name per UTS namespace
// (kernel/utsname_sysctl.c). Written from a pod without hostIPC (or from
// another UTS namespace) they change the pod's copy and read back as
// wanted there, while the host keeps its values.
const (
	NSNet = "net"
	NSIPC = "ipc"
	NSUTS = "uts"
)

// CheckNamespace is CheckNetNS for a namespace kind (net, ipc, uts).
func CheckNamespace(fsys hostfs.FS, kind string) NetNS {
	return compareNS(kind, "/proc/self/ns/"+kind, fsys.Path("/proc/1/ns/"+kind))
}

func compareNetNS(self, host string) NetNS { return compareNS(NSNet, self, host) }

func compareNS(kind, self, host string) NetNS {
	a, err := os.Stat(self)
	if err != nil {
		return NetNS{State: NetNSUnknown, Detail: fmt.Sprintf("cannot read the agent's own namespace: %v", err)}
	}
	b, err := os.Stat(host)
	if err != nil {
		return NetNS{State: NetNSUnknown, Detail: fmt.Sprintf("cannot read the host's (PID 1's) namespace: %v", err)}
	}
	sa, okA := a.Sys().(*syscall.Stat_t)
	sb, okB := b.Sys().(*syscall.Stat_t)
	if !okA || !okB {
		return NetNS{State: NetNSUnknown, Detail: "namespace links carry no inode"}
	}
	if sa.Dev == sb.Dev && sa.Ino == sb.Ino {
		return NetNS{State: NetNSHost}
	}
	return NetNS{State: NetNSOther, Detail: fmt.Sprintf("agent in %s:[%d], host PID 1 in %s:[%d]", kind, sa.Ino, kind, sb.Ino)}
}

// netRefusal is the note on net.* settings outside the host namespace.
func (n NetNS) netRefusal() string {
	switch n.State {
	case NetNSHost:
		return ""
	case NetNSOther:
		return "not in the host's network namespace (" + n.Detail + "): net.* sysctls are per namespace; run the agent with hostNetwork: true"
	}
	return "cannot tell whether the agent is in the host's network namespace (" + n.Detail + "): net.* sysctls are per namespace; run the agent with hostNetwork: true and the host's /proc"
}

// refusal is the note on a sysctl of namespace kind outside the host's
// namespace of that kind.
func (n NetNS) refusal(kind string) string {
	var what, fix string
	switch kind {
	case NSNet:
		return n.netRefusal()
	case NSIPC:
		what, fix = "IPC namespace", "IPC sysctls (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) are per IPC namespace; run the agent with hostIPC: true"
	case NSUTS:
		what, fix = "UTS namespace", "kernel.hostname and kernel.domainname are per UTS namespace; run the agent with hostNetwork: true (which shares the host's UTS namespace)"
	}
	switch n.State {
	case NetNSHost:
		return ""
	case NetNSOther:
		return "not in the host's " + what + " (" + n.Detail + "): " + fix
	}
	return "cannot tell whether the agent is in the host's " + what + " (" + n.Detail + "): " + fix + " and the host's /proc"
}
