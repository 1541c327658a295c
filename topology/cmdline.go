package topology

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/gpunode/gpunode/internal/cpuset"
)

// cmdlineCPUs is what the kernel command line says about CPU isolation.
type cmdlineCPUs struct {
	Isolated      cpuset.Set
	IsolatedFlags []string
	NohzFull      cpuset.Set
}

// parseCmdline reads isolcpus= and nohz_full= from /proc/cmdline. As in the
// kernel, the last occurrence of a parameter wins, so an earlier garbage
// value that a later one replaces is not an error.
func parseCmdline(s string) (cmdlineCPUs, error) {
	var out cmdlineCPUs
	var isolcpus, nohzFull *string
	for _, p := range splitCmdline(s) {
		if !p.hasValue {
			continue // a bare "isolcpus" matches no handler: those are "isolcpus="
		}
		switch p.name {
		case "isolcpus":
			isolcpus = &p.value
		case "nohz_full":
			nohzFull = &p.value
		}
	}
	var errs []error
	if isolcpus != nil {
		// On an unknown flag the CPUs are still returned, as the kernel
		// still isolates them.
		flags, cpus, err := parseIsolcpus(*isolcpus)
		if err != nil {
			errs = append(errs, fmt.Errorf("isolcpus=%s: %w", truncate(*isolcpus, 80), err))
		}
		out.Isolated, out.IsolatedFlags = cpus, flags
	}
	if nohzFull != nil {
		cpus, err := cpuset.Parse(*nohzFull)
		if err != nil {
			errs = append(errs, fmt.Errorf("nohz_full=%s: %w", truncate(*nohzFull, 80), err))
		} else {
			out.NohzFull = cpus
		}
	}
	return out, errors.Join(errs...)
}

// parseIsolcpus reads an isolcpus= value: optional flags, then a cpulist,
// all comma-separated ("managed_irq,domain,2-5,8"). Flags are the leading
// elements that start with a letter. The kernel rejects the whole
// parameter when a flag holds anything but letters and underscores, and
// skips unknown flags with a warning: those are reported as an error too
// (most likely a typo), with the CPUs still returned. Without flags the
// kernel isolates from the scheduler domains, so the flags in effect are
// then just "domain"; with no CPUs there are none.
func parseIsolcpus(v string) (flags []string, cpus cpuset.Set, err error) {
	var unknown []string
	rest := v
	for rest != "" && isASCIILetter(rest[0]) {
		var flag string
		flag, rest, _ = strings.Cut(rest, ",")
		for _, c := range []byte(flag) {
			if !isASCIILetter(c) && c != '_' {
				return nil, cpuset.Set{}, fmt.Errorf("invalid flag %q", truncate(flag, 40))
			}
		}
		// The flags kernel/sched/isolation.c knows.
		switch flag {
		case "domain", "managed_irq", "nohz":
			flags = append(flags, flag)
		default:
			unknown = append(unknown, flag)
		}
	}
	cpus, err = cpuset.Parse(rest)
	if err != nil {
		return nil, cpuset.Set{}, err
	}
	switch {
	case cpus.IsEmpty():
		flags = nil // nothing isolated, whatever the flags
	case len(flags) == 0:
		flags = []string{"domain"}
	}
	slices.Sort(flags)
	flags = slices.Compact(flags)
	if len(unknown) > 0 {
		err = fmt.Errorf("unknown flags %q, which the kernel skips", unknown)
	}
	return flags, cpus, err
}

func isASCIILetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// cmdlineParam is one "name=value" or bare "name" of the command line.
type cmdlineParam struct {
	name, value string
	hasValue    bool
}

// splitCmdline splits a kernel command line the way the kernel's
// next_arg() does: parameters are separated by white space, double quotes
// protect white space ("dyndbg=\"file x.c +p\"") and are dropped around the
// value, and "--" ends the kernel's part (the rest belongs to init). The
// kernel treats '-' and '_' in parameter names alike, so names are
// normalised to underscores.
func splitCmdline(s string) []cmdlineParam {
	var out []cmdlineParam
	for {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
		if s == "" {
			return out
		}
		inQuote := false
		i := 0
		for ; i < len(s); i++ {
			c := s[i]
			if c == '"' {
				inQuote = !inQuote
			} else if !inQuote && (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
				break
			}
		}
		arg := s[:i]
		s = s[i:]
		if arg == "--" {
			return out
		}
		// A quote opening the argument or its value is dropped, and so is
		// one closing quote at its end.
		closing := false
		if strings.HasPrefix(arg, `"`) {
			arg, closing = arg[1:], true
		}
		name, value, hasValue := strings.Cut(arg, "=")
		if strings.HasPrefix(value, `"`) {
			value, closing = value[1:], true
		}
		if closing && hasValue {
			value = strings.TrimSuffix(value, `"`)
		} else if closing {
			name = strings.TrimSuffix(name, `"`)
		}
		name = strings.ReplaceAll(name, "-", "_")
		out = append(out, cmdlineParam{name: name, value: value, hasValue: hasValue})
	}
}
