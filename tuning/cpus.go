package tuning

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"

	"github.com/gpunode/gpunode/internal/cpuset"
	"github.com/gpunode/gpunode/internal/hostfs"
)

// CPUs that belong to workloads and must receive no device interrupts,
// besides isolcpus= and nohz_full= (read by topology discovery).
const (
	// KubeletCPUManagerState is the kubelet's CPU manager checkpoint
	// (under the default --root-dir). With the static policy its entries
	// hold the CPUs given exclusively to containers of Guaranteed pods
	// with integer CPU requests; with the none policy it has none.
	KubeletCPUManagerState = "/var/lib/kubelet/cpu_manager_state"
	// CgroupIsolatedCPUs lists the CPUs of cgroup v2 isolated partitions
	// (cpuset.cpus.partition = isolated), kept by the kernel in the root
	// cgroup since Linux 6.7 (Documentation/admin-guide/cgroup-v2.rst).
	CgroupIsolatedCPUs = "/sys/fs/cgroup/cpuset.cpus.isolated"
)

// readWorkloadCPUs reads the CPUs pods own exclusively and the CPUs of
// isolated cgroup partitions. A file that is absent (no kubelet, the none
// policy before its first checkpoint, a kernel before 6.7, cgroup v1) means
// none; one that cannot be read or parsed is a warning, since the CPUs it
// would name cannot be avoided.
func readWorkloadCPUs(fsys hostfs.FS) (pods, partitions cpuset.Set, warnings []string) {
	b, err := fsys.ReadFile(KubeletCPUManagerState)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		warnings = append(warnings, fmt.Sprintf("%s: %v: CPUs given exclusively to pods cannot be kept free of interrupts", KubeletCPUManagerState, unwrapPath(err)))
	default:
		if pods, err = parseCPUManagerState(b); err != nil {
			warnings = append(warnings, fmt.Sprintf("%s: %v: CPUs given exclusively to pods cannot be kept free of interrupts", KubeletCPUManagerState, err))
		}
	}
	s, err := fsys.ReadString(CgroupIsolatedCPUs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		warnings = append(warnings, fmt.Sprintf("%s: %v: CPUs of isolated partitions cannot be kept free of interrupts", CgroupIsolatedCPUs, unwrapPath(err)))
	default:
		if partitions, err = cpuset.Parse(s); err != nil {
			warnings = append(warnings, fmt.Sprintf("%s: %v", CgroupIsolatedCPUs, err))
		}
	}
	return pods, partitions, warnings
}

// parseCPUManagerState returns the CPUs of every entry of a CPU manager
// checkpoint: {"policyName":"static","defaultCpuSet":"0,2-12",
// "entries":{"<pod UID>":{"<container>":"1,13"}},"checksum":N} (the v2
// format, Kubernetes 1.18+; pkg/kubelet/cm/cpumanager/state/checkpoint.go),
// or the v1 format whose entries map container IDs to CPU lists.
func parseCPUManagerState(b []byte) (cpuset.Set, error) {
	var st struct {
		PolicyName string                     `json:"policyName"`
		Entries    map[string]json.RawMessage `json:"entries"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return cpuset.Set{}, fmt.Errorf("not a CPU manager checkpoint: %w", err)
	}
	var all cpuset.Set
	add := func(list string) error {
		s, err := cpuset.Parse(list)
		if err != nil {
			return err
		}
		all = all.Union(s)
		return nil
	}
	for pod, raw := range st.Entries {
		var containers map[string]string
		if err := json.Unmarshal(raw, &containers); err == nil {
			for _, list := range containers {
				if err := add(list); err != nil {
					return cpuset.Set{}, fmt.Errorf("entry %s: %w", pod, err)
				}
			}
			continue
		}
		var list string
		if err := json.Unmarshal(raw, &list); err != nil {
			return cpuset.Set{}, fmt.Errorf("entry %s: neither containers nor a CPU list", pod)
		}
		if err := add(list); err != nil {
			return cpuset.Set{}, fmt.Errorf("entry %s: %w", pod, err)
		}
	}
	return all, nil
}
