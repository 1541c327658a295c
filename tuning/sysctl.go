// Package tuning reads, and (in its plan/apply half) manages, the host
// settings that matter for GPU inference nodes: sysctls, NUMA balancing,
// transparent hugepages and IRQ affinity.
package tuning

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// ErrUnsupported means the running kernel has no such setting (for example
// kernel.sched_migration_cost_ns, moved to debugfs in Linux 5.13).
var ErrUnsupported = errors.New("not supported by this kernel")

// SysctlPath maps a sysctl key to its host path under /proc/sys. As with
// sysctl(8), a key containing '/' uses '/' as the separator, so components
// may contain dots ("net/ipv4/conf/eth0.100/rp_filter"); otherwise '.'
// separates ("net.core.rmem_max").
func SysctlPath(key string) (string, error) {
	sep := "."
	if strings.Contains(key, "/") {
		sep = "/"
	}
	parts := strings.Split(key, sep)
	for _, p := range parts {
		switch {
		case p == "" || p == "." || p == "..":
			return "", fmt.Errorf("sysctl key %q: empty or relative component", key)
		case strings.ContainsAny(p, "\x00 \t\n"):
			return "", fmt.Errorf("sysctl key %q: white space or NUL in a component", key)
		case sep == "." && strings.Contains(p, "/"):
			return "", fmt.Errorf("sysctl key %q: mixed separators", key)
		}
	}
	return "/proc/sys/" + strings.Join(parts, "/"), nil
}

// NormalizeValue collapses the white space in a sysctl value, so
// "4096\t87380\t6291456" (how the kernel prints tcp_rmem) compares equal to
// "4096 87380 6291456" (how people write it).
func NormalizeValue(v string) string {
	return strings.Join(strings.Fields(v), " ")
}

// ReadSysctl returns the normalized current value of a sysctl key.
func ReadSysctl(fsys hostfs.FS, key string) (string, error) {
	p, err := SysctlPath(key)
	if err != nil {
		return "", err
	}
	v, err := fsys.ReadString(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("sysctl %s: %w", key, ErrUnsupported)
	}
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", key, err)
	}
	return NormalizeValue(v), nil
}

// THPPath is the transparent hugepage mode file.
const THPPath = "/sys/kernel/mm/transparent_hugepage/enabled"

// ParseBracketed returns the selected word of a sysfs multiple-choice
// attribute: "always [madvise] never" -> "madvise".
func ParseBracketed(s string) (string, error) {
	open := strings.IndexByte(s, '[')
	end := strings.IndexByte(s, ']')
	if open < 0 || end < open+2 || strings.Count(s, "[") != 1 || strings.Count(s, "]") != 1 {
		return "", fmt.Errorf("no single [selected] choice in %q", s)
	}
	return s[open+1 : end], nil
}

// Setting is the observed state of one host setting.
type Setting struct {
	// Kind is "sysctl" or "thp".
	Kind string `json:"kind"`
	Key  string `json:"key"`
	// Value is the current, normalized value; empty when unsupported.
	Value     string `json:"value"`
	Supported bool   `json:"supported"`
}

// ObservedSysctls are the sysctls the built-in profiles and the tuning
// scripts our users run today touch; the snapshot reports their values so
// `inspect` shows them before anything is changed.
var ObservedSysctls = []string{
	"kernel.numa_balancing",
	"kernel.sched_migration_cost_ns",
	"net.core.netdev_max_backlog",
	"net.core.rmem_max",
	"net.core.wmem_max",
	"net.ipv4.tcp_congestion_control",
	"net.ipv4.tcp_rmem",
	"net.ipv4.tcp_wmem",
	"vm.dirty_background_ratio",
	"vm.dirty_ratio",
	"vm.swappiness",
}

// Observe reads the given sysctls and the transparent hugepage mode. A
// setting the kernel lacks is reported unsupported, not as an error; other
// failures are joined into the error while the rest is still returned.
func Observe(ctx context.Context, fsys hostfs.FS, sysctls []string) ([]Setting, error) {
	var out []Setting
	var errs []error
	for _, key := range sysctls {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		v, err := ReadSysctl(fsys, key)
		switch {
		case errors.Is(err, ErrUnsupported):
			out = append(out, Setting{Kind: "sysctl", Key: key})
		case err != nil:
			errs = append(errs, err)
		default:
			out = append(out, Setting{Kind: "sysctl", Key: key, Value: v, Supported: true})
		}
	}
	raw, err := fsys.ReadString(THPPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		out = append(out, Setting{Kind: "thp", Key: "transparent_hugepage.enabled"})
	case err != nil:
		errs = append(errs, err)
	default:
		mode, perr := ParseBracketed(raw)
		if perr != nil {
			errs = append(errs, fmt.Errorf("%s: %w", THPPath, perr))
		} else {
			out = append(out, Setting{Kind: "thp", Key: "transparent_hugepage.enabled", Value: mode, Supported: true})
		}
	}
	return out, errors.Join(errs...)
}
