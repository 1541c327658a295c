// Package procpod finds the Kubernetes pod and container a host process
// belongs to from its cgroup path (/proc/<pid>/cgroup under the host
// root): the kubelet names every pod's cgroup after the pod's UID and the
// container runtime names the container's after its ID, under both cgroup
// drivers (systemd: "kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope";
// cgroupfs: "kubepods/burstable/pod<uid>/<id>") and both cgroup versions.
package procpod

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"syscall"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// Container is where a process runs: the pod's UID (with dashes, as the
// API server writes it; a static pod's is the 32-hex config hash) and the
// container's runtime ID (64 hex digits). ContainerID is empty for a
// process in the pod's cgroup but in no container's.
type Container struct {
	PodUID      string `json:"pod_uid"`
	ContainerID string `json:"container_id,omitempty"`
}

// Parse reads the contents of a /proc/<pid>/cgroup file and returns the pod
// and container its cgroup names; ok is false for a process outside any
// pod (a host daemon) or a file it cannot read. Under cgroup v1 every
// hierarchy names the same pod; the first line that names one is taken,
// preferring the unified ("0::") line where both are mounted.
func Parse(data []byte) (c Container, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<10)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path; the path may hold ':'.
		line := sc.Text()
		id, rest, ok1 := strings.Cut(line, ":")
		_, p, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			continue
		}
		got, found := FromPath(p)
		if !found {
			continue
		}
		if id == "0" {
			return got, true
		}
		if !ok {
			c, ok = got, true
		}
	}
	return c, ok
}

// FromPath reads the pod and container from one cgroup path. The pod is the
// last element naming one; the container is the element right after it
// when that is a container ID (the runtime's "<prefix>-<id>.scope" under
// systemd, the bare ID under cgroupfs). CRI-O's conmon scope and the
// sandbox's pause process are in the pod, in no named container; they
// get the ID they carry, which pod-resources never lists.
func FromPath(p string) (Container, bool) {
	elems := strings.Split(p, "/")
	for i := len(elems) - 1; i >= 0; i-- {
		uid, ok := podUID(elems[i])
		if !ok {
			continue
		}
		c := Container{PodUID: uid}
		if i+1 < len(elems) {
			c.ContainerID = containerID(elems[i+1])
		}
		return c, true
	}
	return Container{}, false
}

// podUID recognises "pod<uid>" (cgroupfs) and "...-pod<uid>.slice"
// (systemd, where the UID's dashes became underscores).
func podUID(elem string) (string, bool) {
	var raw string
	switch {
	case strings.HasSuffix(elem, ".slice"):
		i := strings.LastIndex(elem, "-pod")
		if i < 0 || !strings.Contains(elem[:i+1], "kubepods") {
			return "", false
		}
		raw = strings.ReplaceAll(elem[i+len("-pod"):len(elem)-len(".slice")], "_", "-")
	case strings.HasPrefix(elem, "pod"):
		raw = elem[len("pod"):]
	default:
		return "", false
	}
	if !isUID(raw) {
		return "", false
	}
	return strings.ToLower(raw), true
}

// isUID accepts an RFC 4122 UUID or 32 hex digits (a static or mirror
// pod's UID is its config hash).
func isUID(s string) bool {
	switch len(s) {
	case 36:
		for i, r := range s {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				if r != '-' {
					return false
				}
			} else if !isHex(r) {
				return false
			}
		}
		return true
	case 32:
		return strings.IndexFunc(s, func(r rune) bool { return !isHex(r) }) < 0
	}
	return false
}

func isHex(r rune) bool { return '0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F' }

// containerID takes the 64-hex ID from "cri-containerd-<id>.scope",
// "crio-<id>.scope", "docker-<id>.scope" (systemd driver) or a bare "<id>"
// (cgroupfs driver, and CRI-O's "crio-<id>" there); "" when it holds none.
func containerID(elem string) string {
	elem = strings.TrimSuffix(elem, ".scope")
	if i := strings.LastIndexAny(elem, "-:"); i >= 0 {
		elem = elem[i+1:]
	}
	if len(elem) != 64 || strings.IndexFunc(elem, func(r rune) bool { return !isHex(r) }) >= 0 {
		return ""
	}
	return strings.ToLower(elem)
}

// Reader reads processes' cgroups through the host root.
type Reader struct{ fs hostfs.FS }

// NewReader reads /proc of the host at root ("/" or the mounted host root).
func NewReader(root hostfs.FS) *Reader { return &Reader{fs: root} }

// ErrNoProcess is returned for a pid that has exited.
var ErrNoProcess = errors.New("no such process")

// Of returns the pod and container of the host pid; ok is false for a
// process in no pod. A process that exited between being listed and
// being read gives an error satisfying errors.Is(err, ErrNoProcess).
func (r *Reader) Of(pid uint32) (Container, bool, error) {
	name := "/proc/" + strconv.FormatUint(uint64(pid), 10) + "/cgroup"
	data, err := r.fs.ReadFile(name)
	// A process that exited while its file was open answers ESRCH.
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return Container{}, false, fmt.Errorf("%s: %w", name, ErrNoProcess)
	}
	if err != nil {
		return Container{}, false, fmt.Errorf("reading %s: %w", name, err)
	}
	c, ok := Parse(data)
	return c, ok, nil
}
