package tuning

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/gpunode/gpunode/internal/cpuset"
)

// Profile is a declarative set of host settings. Field names are the YAML
// keys; see tuning/profiles/*.yaml for the built-in ones.
type Profile struct {
	// Name identifies the profile in plans, the journal and the
	// tuning.profile label: lower case letters, digits and '-'.
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
	// Sysctl maps keys (sysctl(8) spelling) to wanted values.
	Sysctl map[string]SysctlValue `yaml:"sysctl,omitempty" json:"sysctl,omitempty"`
	NUMA   NUMA                   `yaml:"numa,omitempty" json:"numa"`
	IRQ    IRQ                    `yaml:"irq,omitempty" json:"irq"`
	// RoCE tunes RoCE ports: rdma_cm's RoCE mode, PFC, trust and ECN.
	RoCE RoCE        `yaml:"roce,omitempty" json:"roce"`
	CPU  CPUPower    `yaml:"cpu,omitempty" json:"cpu"`
	NIC  NICSettings `yaml:"nic,omitempty" json:"nic"`
}

// SysctlValue is a wanted sysctl value, normalized (single spaces between
// fields). YAML may give it as a number, a string or a list of either.
type SysctlValue string

// NUMA holds the memory placement settings.
type NUMA struct {
	// Balancing is kernel.numa_balancing: 0 off, 1 normal, 2 memory
	// tiering (Linux 6.0+), 3 both. nil leaves it alone.
	Balancing *int `yaml:"balancing,omitempty" json:"balancing,omitempty"`
	// TransparentHugepages is the mode of
	// /sys/kernel/mm/transparent_hugepage/enabled: always, madvise or
	// never; empty leaves it alone.
	TransparentHugepages string `yaml:"transparentHugepages,omitempty" json:"transparent_hugepages,omitempty"`
	// TransparentHugepageDefrag is the mode of
	// /sys/kernel/mm/transparent_hugepage/defrag: always, defer,
	// defer+madvise, madvise or never; empty leaves it alone.
	TransparentHugepageDefrag string `yaml:"transparentHugepageDefrag,omitempty" json:"transparent_hugepage_defrag,omitempty"`
}

// IRQ policy names.
const (
	// PolicyNICLocal spreads the interrupts of each selected NIC over the
	// CPUs of the NIC's NUMA node, one interrupt per CPU where possible.
	PolicyNICLocal = "nic-local"
	// PolicyGPULocal does the same for GPUs.
	PolicyGPULocal = "gpu-local"
)

// How a profile's IRQ policy treats a running irqbalance.
const (
	// IRQBalanceConflict (the default) reports the IRQ settings as
	// conflicting and leaves the interrupts alone.
	IRQBalanceConflict = "conflict"
	// IRQBalanceLeave leaves the interrupts to irqbalance: the IRQ
	// settings are skipped, which is not an error.
	IRQBalanceLeave = "leave"
	// IRQBalanceStop masks irqbalance.service until reboot (a runtime
	// mask) and stops it through systemd, then applies the policy; so
	// cri-o's hooks and package upgrades cannot start it again. Recorded
	// in the journal: revert unmasks it and starts it if it ran.
	IRQBalanceStop = "stop"
	// IRQBalanceCoexist bans the interrupts the policy places through
	// irqbalance's runtime socket ("settings ban irqs"), so irqbalance
	// keeps balancing all others and never moves these (recorded in the
	// journal; revert gives irqbalance its own list back). Where the
	// socket does not answer the interrupts are left to irqbalance, as
	// with leave.
	IRQBalanceCoexist = "coexist"
)

// IRQ is the interrupt affinity part of a profile.
type IRQ struct {
	Policies []IRQPolicy `yaml:"policies,omitempty" json:"policies,omitempty"`
	// ExcludeCPUs never receive interrupts (cpulist). CPUs isolated on the
	// kernel command line (isolcpus=, nohz_full=) are always excluded.
	ExcludeCPUs string `yaml:"excludeCPUs,omitempty" json:"exclude_cpus,omitempty"`
	// IRQBalance says what to do when irqbalance runs: conflict, leave,
	// coexist or stop.
	IRQBalance string `yaml:"irqbalance,omitempty" json:"irqbalance,omitempty"`
}

// IRQPolicy places the interrupts of one class of devices.
type IRQPolicy struct {
	// Policy is nic-local or gpu-local.
	Policy string `yaml:"policy" json:"policy"`
	// Drivers and Devices select devices by kernel driver ("mlx5_core") or
	// by name (netdev, RDMA device or PCI address). A device matching
	// either is selected, except that a driver selects no SR-IOV virtual
	// function (only a name does). With neither, nic-local takes every NIC with an
	// RDMA device or a link of at least MinSpeedMbps (SR-IOV virtual
	// functions excepted) and gpu-local takes every GPU.
	Drivers []string `yaml:"drivers,omitempty" json:"drivers,omitempty"`
	Devices []string `yaml:"devices,omitempty" json:"devices,omitempty"`
	// MinSpeedMbps is the link speed from which a NIC counts as high-speed
	// (nic-local only; default 25000).
	MinSpeedMbps int `yaml:"minSpeedMbps,omitempty" json:"min_speed_mbps,omitempty"`
}

// DefaultMinSpeedMbps is where "high-speed" starts: 25GbE and up, which
// leaves 1/10GbE management ports alone.
const DefaultMinSpeedMbps = 25000

// maxProfileSize bounds a profile file; real ones are a few hundred bytes.
const maxProfileSize = 1 << 20

//go:embed profiles/*.yaml
var builtinFS embed.FS

// DefaultProfile is the profile the daemon applies when none is configured.
const DefaultProfile = "llm-inference"

// BuiltinNames lists the built-in profiles, sorted.
func BuiltinNames() []string {
	entries, err := builtinFS.ReadDir("profiles")
	if err != nil {
		panic(err) // embedded at build time
	}
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	slices.Sort(names)
	return names
}

// Builtin returns a built-in profile by name.
func Builtin(name string) (Profile, error) {
	if !slices.Contains(BuiltinNames(), name) {
		return Profile{}, fmt.Errorf("unknown profile %q (built-in: %s; or give a file path)", name, strings.Join(BuiltinNames(), ", "))
	}
	b, err := builtinFS.ReadFile("profiles/" + name + ".yaml")
	if err != nil {
		return Profile{}, err
	}
	p, err := ParseProfile(b)
	if err != nil {
		return Profile{}, fmt.Errorf("built-in profile %s: %w", name, err)
	}
	return p, nil
}

// BuiltinSource returns the YAML text of a built-in profile, for users who
// want to start their own from it.
func BuiltinSource(name string) ([]byte, error) {
	if !slices.Contains(BuiltinNames(), name) {
		return nil, fmt.Errorf("unknown profile %q", name)
	}
	return builtinFS.ReadFile("profiles/" + name + ".yaml")
}

// LoadProfile resolves --profile: a built-in name, or a file when ref
// contains a path separator or ends in .yaml/.yml; several, separated by
// commas, are composed (Compose).
func LoadProfile(ref string) (Profile, error) {
	if ref == "" {
		ref = DefaultProfile
	}
	if strings.Contains(ref, ",") {
		refs := strings.Split(ref, ",")
		for i := range refs {
			refs[i] = strings.TrimSpace(refs[i])
			if refs[i] == "" {
				return Profile{}, fmt.Errorf("profiles %q: an empty name", ref)
			}
		}
		return LoadProfiles(refs...)
	}
	if !strings.ContainsRune(ref, filepath.Separator) && !strings.HasSuffix(ref, ".yaml") && !strings.HasSuffix(ref, ".yml") {
		return Builtin(ref)
	}
	f, err := os.Open(ref)
	if err != nil {
		return Profile{}, fmt.Errorf("profile: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxProfileSize+1))
	if err != nil {
		return Profile{}, fmt.Errorf("profile %s: %w", ref, err)
	}
	if len(b) > maxProfileSize {
		return Profile{}, fmt.Errorf("profile %s: larger than %d bytes", ref, maxProfileSize)
	}
	p, err := ParseProfile(b)
	if err != nil {
		return Profile{}, fmt.Errorf("profile %s: %w", ref, err)
	}
	return p, nil
}

// ParseProfile decodes a profile strictly (unknown keys, duplicate keys and
// a second document are errors) and validates it.
func ParseProfile(b []byte) (Profile, error) {
	var p Profile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		if errors.Is(err, io.EOF) {
			return Profile{}, errors.New("empty profile")
		}
		return Profile{}, yamlError(err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Profile{}, errors.New("more than one YAML document")
	}
	if err := p.Validate(); err != nil {
		return Profile{}, err
	}
	return p, nil
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type tuning\.(\w+)`)

// yamlError names keys the way users write them instead of Go types.
func yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
	msg = unknownField.ReplaceAllStringFunc(msg, func(m string) string {
		sub := unknownField.FindStringSubmatch(m)
		section := map[string]string{"NUMA": " in numa", "IRQ": " in irq", "IRQPolicy": " in irq.policies", "RoCE": " in roce", "CPUPower": " in cpu", "NICSettings": " in nic"}[sub[2]]
		return fmt.Sprintf("unknown key %q%s", sub[1], section)
	})
	msg = strings.ReplaceAll(msg, "into tuning.SysctlValue", "into a sysctl value")
	return errors.New(strings.ReplaceAll(msg, "\n  ", "; "))
}

// UnmarshalYAML accepts a number, a string or a list of numbers and
// strings (joined with spaces). Booleans, floats, maps and nulls are
// rejected: the kernel has no such sysctl values, so they are typos.
func (v *SysctlValue) UnmarshalYAML(n *yaml.Node) error {
	scalar := func(n *yaml.Node) (string, error) {
		if n.Kind != yaml.ScalarNode {
			return "", fmt.Errorf("line %d: want a number or a string", n.Line)
		}
		switch n.Tag {
		case "!!int":
			var i int64
			if err := n.Decode(&i); err != nil {
				return "", fmt.Errorf("line %d: %q: integer out of range", n.Line, n.Value)
			}
			// Decimal, as the kernel prints it: 0x10 would read back as 16.
			return strconv.FormatInt(i, 10), nil
		case "!!str":
			return n.Value, nil
		case "!!null":
			return "", fmt.Errorf("line %d: empty value", n.Line)
		case "!!float":
			if decimal.MatchString(strings.TrimPrefix(n.Value, "-")) {
				return "", fmt.Errorf("line %d: %q: integer out of range", n.Line, n.Value)
			}
			return "", fmt.Errorf("line %d: %q is not an integer; sysctls take integers or strings", n.Line, n.Value)
		default:
			return "", fmt.Errorf("line %d: %q is a %s; sysctls take numbers or strings (write 1 or 0, not true or false)", n.Line, n.Value, strings.TrimPrefix(n.Tag, "!!"))
		}
	}
	switch n.Kind {
	case yaml.ScalarNode:
		s, err := scalar(n)
		if err != nil {
			return err
		}
		*v = SysctlValue(s)
	case yaml.SequenceNode:
		var parts []string
		for _, c := range n.Content {
			s, err := scalar(c)
			if err != nil {
				return err
			}
			parts = append(parts, s)
		}
		*v = SysctlValue(strings.Join(parts, " "))
	default:
		return fmt.Errorf("line %d: want a number, a string or a list", n.Line)
	}
	return nil
}

var (
	profileName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	ccName      = regexp.MustCompile(`^[a-z0-9_]{1,15}$`)
	deviceName  = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,64}$`)
)

// maxSysctlValue bounds a value; the kernel reads at most a page.
const maxSysctlValue = 1024

// Validate reports every problem of the profile at once, each naming its
// key and the reason.
func (p *Profile) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if !profileName.MatchString(p.Name) {
		bad("name", "%q: want 1-63 lower-case letters, digits or '-' (it becomes a label value)", p.Name)
	}
	paths := map[string]string{}
	for _, key := range slices.Sorted(maps.Keys(p.Sysctl)) {
		v := NormalizeValue(string(p.Sysctl[key]))
		p.Sysctl[key] = SysctlValue(v)
		if err := validateSysctl(key, v); err != nil {
			bad("sysctl."+key, "%v", err)
			continue
		}
		path, _ := SysctlPath(key)
		if other, dup := paths[path]; dup {
			bad("sysctl."+key, "the same sysctl as %s", other)
		}
		paths[path] = key
	}
	for _, key := range slices.Sorted(maps.Keys(p.Sysctl)) {
		if pid, ok := pairPartner(ID{KindSysctl, key}); ok && canonicalKey(key) < pid.Key {
			for other := range p.Sysctl {
				if canonicalKey(other) == pid.Key {
					bad("sysctl."+key, "the kernel keeps only one of %s and %s (writing one zeroes the other): set only one", canonicalKey(key), pid.Key)
				}
			}
		}
	}
	if b := p.NUMA.Balancing; b != nil && (*b < 0 || *b > 3) {
		bad("numa.balancing", "%d: want 0 (off), 1 (normal), 2 (memory tiering) or 3 (both)", *b)
	}
	switch p.NUMA.TransparentHugepages {
	case "", "always", "madvise", "never":
	default:
		bad("numa.transparentHugepages", "%q: want always, madvise or never", p.NUMA.TransparentHugepages)
	}
	if d := p.NUMA.TransparentHugepageDefrag; d != "" && !slices.Contains(thpDefragModes, d) {
		bad("numa.transparentHugepageDefrag", "%q: want %s", d, strings.Join(thpDefragModes, ", "))
	}
	seen := map[string]bool{}
	for i, pol := range p.IRQ.Policies {
		key := fmt.Sprintf("irq.policies[%d]", i)
		switch pol.Policy {
		case PolicyNICLocal, PolicyGPULocal:
		default:
			bad(key+".policy", "%q: want %s or %s", pol.Policy, PolicyNICLocal, PolicyGPULocal)
		}
		if seen[pol.Policy] {
			bad(key+".policy", "%s given twice", pol.Policy)
		}
		seen[pol.Policy] = true
		for _, d := range pol.Drivers {
			if !deviceName.MatchString(d) {
				bad(key+".drivers", "%q is not a driver name", d)
			}
		}
		for _, d := range pol.Devices {
			if !deviceName.MatchString(d) {
				bad(key+".devices", "%q is not a device name (netdev, RDMA device or PCI address)", d)
			}
		}
		switch {
		case pol.MinSpeedMbps < 0 || pol.MinSpeedMbps > 10_000_000:
			bad(key+".minSpeedMbps", "%d: want 0 to 10000000", pol.MinSpeedMbps)
		case pol.MinSpeedMbps != 0 && pol.Policy != PolicyNICLocal:
			bad(key+".minSpeedMbps", "only nic-local selects by link speed")
		}
	}
	if _, err := cpuset.Parse(p.IRQ.ExcludeCPUs); err != nil {
		bad("irq.excludeCPUs", "%v", err)
	}
	switch p.IRQ.IRQBalance {
	case "", IRQBalanceConflict, IRQBalanceLeave, IRQBalanceStop, IRQBalanceCoexist:
	default:
		bad("irq.irqbalance", "%q: want conflict, leave, coexist or stop", p.IRQ.IRQBalance)
	}
	if p.IRQ.IRQBalance != "" && len(p.IRQ.Policies) == 0 {
		bad("irq.irqbalance", "set, but there is no IRQ policy")
	}
	p.RoCE.validate(bad)
	p.CPU.validate(bad)
	p.NIC.validate(bad)
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// knownSysctl types the values of well-known keys; other keys are checked
// only for the generic rules in validateSysctl.
type knownSysctl struct {
	fields   int   // number of integer fields; 0 = a word (tcp_congestion_control)
	min, max int64 // per field
	// ascending requires min <= default <= max (tcp_rmem, tcp_wmem).
	ascending bool
	// owner names the profile section that manages the key instead.
	owner string
}

const intMax = math.MaxInt32

var knownSysctls = map[string]knownSysctl{
	"kernel.numa_balancing":           {owner: "numa.balancing"},
	"kernel.sched_migration_cost_ns":  {fields: 1, min: 0, max: math.MaxInt64},
	"kernel.sched_min_granularity_ns": {fields: 1, min: 0, max: math.MaxInt64},
	"kernel.sched_wakeup_granularity_ns": {
		fields: 1, min: 0, max: math.MaxInt64,
	},
	"net.core.netdev_max_backlog":     {fields: 1, min: 1, max: intMax},
	"net.core.optmem_max":             {fields: 1, min: 0, max: intMax},
	"net.core.rmem_default":           {fields: 1, min: 0, max: intMax},
	"net.core.rmem_max":               {fields: 1, min: 0, max: intMax},
	"net.core.somaxconn":              {fields: 1, min: 0, max: intMax},
	"net.core.wmem_default":           {fields: 1, min: 0, max: intMax},
	"net.core.wmem_max":               {fields: 1, min: 0, max: intMax},
	"net.ipv4.tcp_congestion_control": {},
	"net.ipv4.tcp_mtu_probing":        {fields: 1, min: 0, max: 2},
	"net.ipv4.tcp_rmem":               {fields: 3, min: 1, max: intMax, ascending: true},
	"net.ipv4.tcp_wmem":               {fields: 3, min: 1, max: intMax, ascending: true},
	"vm.dirty_background_bytes":       {fields: 1, min: 0, max: math.MaxInt64},
	"vm.dirty_background_ratio":       {fields: 1, min: 0, max: 100},
	"vm.dirty_bytes":                  {fields: 1, min: 0, max: math.MaxInt64},
	"vm.dirty_ratio":                  {fields: 1, min: 0, max: 100},
	"vm.min_free_kbytes":              {fields: 1, min: 0, max: intMax},
	"vm.overcommit_memory":            {fields: 1, min: 0, max: 2},
	"vm.swappiness":                   {fields: 1, min: 0, max: 200},
	"vm.zone_reclaim_mode":            {fields: 1, min: 0, max: 7},
}

// validateSysctl checks one key and its normalized value.
func validateSysctl(key, v string) error {
	if _, err := SysctlPath(key); err != nil {
		return err
	}
	canon := strings.ReplaceAll(key, "/", ".")
	k, known := knownSysctls[canon]
	if known && k.owner != "" {
		return fmt.Errorf("set it with %s, not as a sysctl", k.owner)
	}
	if v == "" {
		return errors.New("empty value")
	}
	if len(v) > maxSysctlValue {
		return fmt.Errorf("value longer than %d bytes", maxSysctlValue)
	}
	for _, r := range v {
		if r < ' ' || r == 0x7f {
			return fmt.Errorf("value %q holds control characters", truncate(v, 40))
		}
	}
	fields := strings.Fields(v)
	for _, f := range fields {
		if err := checkNumberField(f); err != nil {
			return fmt.Errorf("value %q: %w", truncate(v, 40), err)
		}
	}
	if !known {
		return nil
	}
	if k.fields == 0 {
		if len(fields) != 1 || !ccName.MatchString(v) {
			return fmt.Errorf("value %q: want one lower-case word such as bbr or cubic", truncate(v, 40))
		}
		return nil
	}
	if len(fields) != k.fields {
		return fmt.Errorf("value %q: want %d integer(s), got %d field(s)", truncate(v, 40), k.fields, len(fields))
	}
	var prev int64 = math.MinInt64
	for _, f := range fields {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return fmt.Errorf("value %q: %q is not an integer", truncate(v, 40), truncate(f, 20))
		}
		if n < k.min || n > k.max {
			return fmt.Errorf("value %d out of range %d..%d", n, k.min, k.max)
		}
		if k.ascending && n < prev {
			return fmt.Errorf("value %q: want min <= default <= max", v)
		}
		prev = n
	}
	return nil
}

// checkNumberField rejects number spellings the kernel would read
// differently from how it prints them: it parses integers with base 0, so
// "010" is 8 and "0x10" is 16, and every read-back would look like drift.
// Fields that are not numbers ("bbr", "0-3") are left alone.
func checkNumberField(f string) error {
	sign, s := "", f
	if f[0] == '+' || f[0] == '-' {
		sign, s = f[:1], f[1:]
	}
	if hexNumber.MatchString(s) {
		return fmt.Errorf("%q: write numbers in decimal (the kernel prints them so)", f)
	}
	if !decimal.MatchString(s) {
		return nil // a word
	}
	if sign == "+" {
		return fmt.Errorf("%q: write numbers without '+'", f)
	}
	if len(s) > 1 && s[0] == '0' {
		return fmt.Errorf("%q: write numbers without leading zeros (the kernel reads 0.. as octal)", f)
	}
	if _, err := strconv.ParseInt(f, 10, 64); err != nil {
		return fmt.Errorf("%q: integer out of range", f)
	}
	return nil
}

var (
	decimal   = regexp.MustCompile(`^[0-9]+$`)
	hexNumber = regexp.MustCompile(`^0[xX][0-9a-fA-F]+$`)
)

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
