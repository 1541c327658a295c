package verbs

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/internal/cpuset"
)

// sysRoot is where the NUMA nodes' CPU lists are read. Thread affinity is
// this process's own, in the kernel's global CPU numbers, and sysfs does
// not namespace the node topology, so the process's /sys is the right
// one even in a container (libibverbs reads /sys/class/infiniband the
// same way).
const sysRoot = "/sys"

// nodeCPUs is NUMA node's CPU list under root.
func nodeCPUs(root string, node int) (cpuset.Set, error) {
	p := filepath.Join(root, fmt.Sprintf("devices/system/node/node%d/cpulist", node))
	b, err := os.ReadFile(p)
	if err != nil {
		return cpuset.Set{}, fmt.Errorf("read %s: %w", p, err)
	}
	s, err := cpuset.Parse(string(b))
	if err != nil {
		return cpuset.Set{}, fmt.Errorf("parse %s: %w", p, err)
	}
	return s, nil
}

// threadCPUs is where a polling thread on node may run: the node's CPUs
// this process is allowed, empty with the reason when there are none.
func threadCPUs(node int, allowed, onNode cpuset.Set) (cpuset.Set, string) {
	want := onNode.Intersect(allowed)
	if want.IsEmpty() {
		return want, fmt.Sprintf("polling thread not pinned: node %d's CPUs (%s) are outside this process's CPU set (%s)", node, onNode, allowed)
	}
	return want, ""
}

// pinThread locks the calling goroutine to its OS thread and pins the
// thread to the HCA node's CPUs for the rest of a measurement, as
// perftest's users do with numactl; the returned function restores the
// thread's affinity and unlocks it. Failing to pin is reported in the
// placement, never fatal.
func (q *QP) pinThread() (restore func()) {
	q.threadCPUs, q.threadProblem = "", ""
	node := q.cfg.NUMANode
	if node < 0 {
		return func() {}
	}
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		q.threadProblem = fmt.Sprintf("polling thread not pinned: sched_getaffinity: %v", err)
		return runtime.UnlockOSThread
	}
	onNode, err := nodeCPUs(sysRoot, node)
	if err != nil {
		q.threadProblem = fmt.Sprintf("polling thread not pinned: %v", err)
		return runtime.UnlockOSThread
	}
	want, problem := threadCPUs(node, fromUnix(&old), onNode)
	if problem != "" {
		q.threadProblem = problem
		return runtime.UnlockOSThread
	}
	var set unix.CPUSet
	for _, c := range want.CPUs() {
		set.Set(c)
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		q.threadProblem = fmt.Sprintf("polling thread not pinned to %s: sched_setaffinity: %v", want, err)
		return runtime.UnlockOSThread
	}
	q.threadCPUs = want.String()
	return func() {
		// Back to the old mask before the thread returns to Go's
		// pool; should that fail, keep the thread locked so the
		// runtime ends it with the goroutine instead of reusing it.
		if err := unix.SchedSetaffinity(0, &old); err == nil {
			runtime.UnlockOSThread()
		}
	}
}

func fromUnix(s *unix.CPUSet) cpuset.Set {
	var cpus []int
	for c := range len(s) * 64 {
		if s.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpuset.Of(cpus...)
}
