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

func compareNetNS(self, host string) NetNS {
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
	return NetNS{State: NetNSOther, Detail: fmt.Sprintf("agent in net:[%d], host PID 1 in net:[%d]", sa.Ino, sb.Ino)}
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
