// Package cpuset parses and formats the kernel's CPU list and CPU mask
// formats ("0-55,112-167", "ff,ffffffff").
package cpuset

import (
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// MaxCPU bounds parsed CPU numbers; the kernel's NR_CPUS tops out at 8192.
const MaxCPU = 8191

// Set is an immutable, sorted set of CPU numbers. The zero value is empty.
type Set struct {
	cpus []int
}

// Of returns the set of the given CPUs.
func Of(cpus ...int) Set {
	c := slices.Clone(cpus)
	slices.Sort(c)
	return Set{cpus: slices.Compact(c)}
}

// Parse reads the kernel's cpulist format: "0-3,8,10-15", with optional
// strides as in "0-15:2/4" (groups of 2 out of every 4). White space around
// the list is ignored; an empty list is an empty set.
func Parse(s string) (Set, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Set{}, nil
	}
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			return Set{}, fmt.Errorf("cpulist %q: empty element", s)
		}
		c, err := parseRange(part)
		if err != nil {
			return Set{}, fmt.Errorf("cpulist %q: %w", s, err)
		}
		cpus = append(cpus, c...)
	}
	return Of(cpus...), nil
}

func parseRange(part string) ([]int, error) {
	rng, stride, hasStride := strings.Cut(part, ":")
	lo, hi, isRange := strings.Cut(rng, "-")
	a, err := parseCPU(lo)
	if err != nil {
		return nil, err
	}
	b := a
	if isRange {
		if b, err = parseCPU(hi); err != nil {
			return nil, err
		}
	}
	if b < a {
		return nil, fmt.Errorf("range %q is reversed", part)
	}
	used, group := 1, 1
	if hasStride {
		u, g, ok := strings.Cut(stride, "/")
		if !ok || !isRange {
			return nil, fmt.Errorf("stride %q needs the form a-b:used/group", part)
		}
		if used, err = strconv.Atoi(u); err != nil || used <= 0 {
			return nil, fmt.Errorf("bad used count in %q", part)
		}
		if group, err = strconv.Atoi(g); err != nil || group <= 0 || used > group {
			return nil, fmt.Errorf("bad group size in %q", part)
		}
	}
	var out []int
	for start := a; start <= b; start += group {
		for c := start; c < start+used && c <= b; c++ {
			out = append(out, c)
		}
	}
	return out, nil
}

func parseCPU(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad CPU number %q", s)
	}
	if n > MaxCPU {
		return 0, fmt.Errorf("CPU %d above the maximum %d", n, MaxCPU)
	}
	return n, nil
}

// ParseMask reads the kernel's hex mask format: comma-separated 32-bit words,
// most significant first ("ff,ffffffff"), as in /proc/irq/N/smp_affinity.
func ParseMask(s string) (Set, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Set{}, fmt.Errorf("cpu mask is empty")
	}
	words := strings.Split(s, ",")
	if len(words)*32 > MaxCPU+1 {
		return Set{}, fmt.Errorf("cpu mask %q: more than %d CPUs", s, MaxCPU+1)
	}
	var cpus []int
	for i, w := range words {
		if w == "" || len(w) > 8 {
			return Set{}, fmt.Errorf("cpu mask %q: bad word %q", s, w)
		}
		v, err := strconv.ParseUint(w, 16, 32)
		if err != nil {
			return Set{}, fmt.Errorf("cpu mask %q: bad word %q", s, w)
		}
		base := (len(words) - 1 - i) * 32
		for v != 0 {
			b := bits.TrailingZeros64(v)
			cpus = append(cpus, base+b)
			v &^= 1 << b
		}
	}
	return Of(cpus...), nil
}

// String formats the set as a cpulist with ranges: "0-3,8".
func (s Set) String() string {
	var b strings.Builder
	for i := 0; i < len(s.cpus); {
		j := i
		for j+1 < len(s.cpus) && s.cpus[j+1] == s.cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(s.cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(s.cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}

// Mask formats the set in the kernel's hex mask format with nwords 32-bit
// words (at least as many as the highest CPU needs).
func (s Set) Mask(nwords int) string {
	if n := len(s.cpus); n > 0 {
		nwords = max(nwords, s.cpus[n-1]/32+1)
	}
	nwords = max(nwords, 1)
	words := make([]uint32, nwords)
	for _, c := range s.cpus {
		words[c/32] |= 1 << (c % 32)
	}
	parts := make([]string, nwords)
	for i := range words {
		parts[nwords-1-i] = fmt.Sprintf("%08x", words[i])
	}
	return strings.Join(parts, ",")
}

// CPUs returns the CPU numbers in ascending order (a copy).
func (s Set) CPUs() []int { return slices.Clone(s.cpus) }

// Len is the number of CPUs in the set.
func (s Set) Len() int { return len(s.cpus) }

// IsEmpty reports whether the set has no CPUs.
func (s Set) IsEmpty() bool { return len(s.cpus) == 0 }

// Contains reports whether cpu is in the set.
func (s Set) Contains(cpu int) bool {
	_, ok := slices.BinarySearch(s.cpus, cpu)
	return ok
}

// Equal reports whether both sets hold the same CPUs.
func (s Set) Equal(o Set) bool { return slices.Equal(s.cpus, o.cpus) }

// Union returns the CPUs in either set.
func (s Set) Union(o Set) Set { return Of(append(s.CPUs(), o.cpus...)...) }

// Intersect returns the CPUs in both sets.
func (s Set) Intersect(o Set) Set {
	var out []int
	for _, c := range s.cpus {
		if o.Contains(c) {
			out = append(out, c)
		}
	}
	return Set{cpus: out}
}

// Difference returns the CPUs of s that are not in o.
func (s Set) Difference(o Set) Set {
	var out []int
	for _, c := range s.cpus {
		if !o.Contains(c) {
			out = append(out, c)
		}
	}
	return Set{cpus: out}
}

// MarshalText encodes the set as a cpulist, so JSON shows "0-55,112-167".
func (s Set) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a cpulist.
func (s *Set) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
