package tuning

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/gpunode/gpunode/internal/cpuset"
	"github.com/gpunode/gpunode/internal/hostfs"
)

// CPU power setting kinds.
const (
	// KindCPUFreq is a cpufreq policy attribute of one CPU; key
	// "cpu<N>/scaling_governor" or "cpu<N>/energy_performance_preference".
	KindCPUFreq = "cpufreq"
	// KindPMQoS is the CPU latency (C-state exit latency) limit this
	// process holds through /dev/cpu_dma_latency; key CPULatencyKey.
	KindPMQoS = "pm-qos"
)

// cpufreq attributes and the PM QoS key.
const (
	attrGovernor    = "scaling_governor"
	attrEPP         = "energy_performance_preference"
	CPULatencyKey   = "cpu_dma_latency"
	cpuLatencyPath  = "/dev/cpu_dma_latency"
	cpuidlePath     = "/sys/devices/system/cpu/cpuidle"
	latencyNotHeld  = "none"
	maxLatencyLimit = 2000000000 // PM_QOS_DEFAULT_VALUE: no limit
)

// CPUPower is the CPU power part of a profile. Nothing is changed unless
// asked: the governor and preference only on the CPUs listed.
type CPUPower struct {
	// CPUs (cpulist) get Governor and EnergyPerformancePreference;
	// offline ones are left alone.
	CPUs string `yaml:"cpus,omitempty" json:"cpus,omitempty"`
	// Governor is the cpufreq governor (performance, schedutil, ...).
	Governor string `yaml:"governor,omitempty" json:"governor,omitempty"`
	// EnergyPerformancePreference is the hardware's energy/performance
	// hint where the driver has one (intel_pstate, amd-pstate active
	// mode): performance, balance_performance, ... or 0-255.
	EnergyPerformancePreference string `yaml:"energyPerformancePreference,omitempty" json:"energy_performance_preference,omitempty"`
	// MaxLatencyUs limits C-state exit latency (microseconds) for as long
	// as the daemon runs, as TuneD's force_latency does: the kernel keeps
	// the limit while the file /dev/cpu_dma_latency is held open and
	// drops it when it is closed (stop, revert, or the process dying).
	// 0 keeps every CPU out of deep C-states. nil leaves it alone.
	MaxLatencyUs *int `yaml:"maxLatencyUs,omitempty" json:"max_latency_us,omitempty"`
}

var (
	governorName = regexp.MustCompile(`^[a-z0-9_]{1,15}$`) // CPUFREQ_NAME_LEN 16
	eppName      = regexp.MustCompile(`^([a-z_]{1,31}|[0-9]{1,3})$`)
)

// validate adds the problems of the cpu section to bad.
func (c CPUPower) validate(bad func(key, format string, args ...any)) {
	set, err := cpuset.Parse(c.CPUs)
	if err != nil {
		bad("cpu.cpus", "%v", err)
	}
	if c.Governor != "" && !governorName.MatchString(c.Governor) {
		bad("cpu.governor", "%q is not a governor name", c.Governor)
	}
	if e := c.EnergyPerformancePreference; e != "" {
		n, nerr := strconv.Atoi(e)
		if !eppName.MatchString(e) || (nerr == nil && (n > 255 || strconv.Itoa(n) != e)) {
			bad("cpu.energyPerformancePreference", "%q: want a preference name or 0-255", e)
		}
	}
	hasFreq := c.Governor != "" || c.EnergyPerformancePreference != ""
	switch {
	case hasFreq && err == nil && set.IsEmpty():
		bad("cpu.cpus", "empty: name the CPUs the governor or preference is for")
	case !hasFreq && c.CPUs != "":
		bad("cpu.cpus", "set, but there is no governor or energyPerformancePreference")
	}
	if l := c.MaxLatencyUs; l != nil && (*l < 0 || *l >= maxLatencyLimit) {
		bad("cpu.maxLatencyUs", "%d: want 0 to %d", *l, maxLatencyLimit-1)
	}
}

// cpufreqKey names one CPU's attribute.
func cpufreqKey(cpu int, attr string) string { return fmt.Sprintf("cpu%d/%s", cpu, attr) }

// parseCPUFreqKey splits a KindCPUFreq key.
func parseCPUFreqKey(key string) (cpu int, attr string, err error) {
	c, attr, ok := strings.Cut(key, "/")
	n, nerr := strconv.Atoi(strings.TrimPrefix(c, "cpu"))
	if !ok || !strings.HasPrefix(c, "cpu") || nerr != nil || n < 0 || "cpu"+strconv.Itoa(n) != c || (attr != attrGovernor && attr != attrEPP) {
		return 0, "", fmt.Errorf("cpufreq %q: want cpu<N>/%s or cpu<N>/%s", key, attrGovernor, attrEPP)
	}
	return n, attr, nil
}

func cpufreqPath(key string) (string, error) {
	cpu, attr, err := parseCPUFreqKey(key)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("/sys/devices/system/cpu/cpu%d/cpufreq/%s", cpu, attr), nil
}

// compareCPUFreq orders by CPU, the governor before the preference:
// intel_pstate answers EBUSY to any preference but performance while the
// performance governor is set, so a revert must leave it first.
func compareCPUFreq(a, b string) int {
	ca, aa, _ := parseCPUFreqKey(a)
	cb, ab, _ := parseCPUFreqKey(b)
	return cmp.Or(cmp.Compare(ca, cb), cmp.Compare(boolInt(aa == attrEPP), boolInt(ab == attrEPP)), strings.Compare(a, b))
}

// CPUFreqCaps is what a CPU's cpufreq driver offers.
type CPUFreqCaps struct {
	Driver    string   `json:"driver,omitempty"`
	Governors []string `json:"governors,omitempty"`
	EPPs      []string `json:"epps,omitempty"`
}

// cpuPowerCPUs are the online CPUs of the section.
func cpuPowerCPUs(c CPUPower, online cpuset.Set) []int {
	set, err := cpuset.Parse(c.CPUs)
	if err != nil || (c.Governor == "" && c.EnergyPerformancePreference == "") {
		return nil
	}
	var out []int
	for _, cpu := range set.CPUs() {
		if online.IsEmpty() || online.Contains(cpu) {
			out = append(out, cpu)
		}
	}
	return out
}

// readCPUPower reads what the cpu section needs into h.
func (t *Tuner) readCPUPower(p Profile, h *Host) []ID {
	var ids []ID
	c := p.CPU
	online := h.OnlineCPUs
	if online.IsEmpty() {
		if s, err := t.FS.ReadString("/sys/devices/system/cpu/online"); err == nil {
			online, _ = cpuset.Parse(s)
		}
	}
	for _, cpu := range cpuPowerCPUs(c, online) {
		if h.CPUFreq == nil {
			h.CPUFreq = map[int]CPUFreqCaps{}
		}
		dir := fmt.Sprintf("/sys/devices/system/cpu/cpu%d/cpufreq/", cpu)
		var caps CPUFreqCaps
		caps.Driver, _ = t.FS.ReadString(dir + "scaling_driver")
		if s, err := t.FS.ReadString(dir + "scaling_available_governors"); err == nil {
			caps.Governors = strings.Fields(s)
		}
		if s, err := t.FS.ReadString(dir + "energy_performance_available_preferences"); err == nil {
			caps.EPPs = strings.Fields(s)
		}
		h.CPUFreq[cpu] = caps
		if c.Governor != "" {
			ids = append(ids, ID{KindCPUFreq, cpufreqKey(cpu, attrGovernor)})
		}
		if c.EnergyPerformancePreference != "" {
			ids = append(ids, ID{KindCPUFreq, cpufreqKey(cpu, attrEPP)})
		}
	}
	h.CanHoldLatency = t.Latency != nil
	return ids
}

// readLatency is the PM QoS setting as this process holds it: the value
// it holds, or "none"; unsupported without the device or cpuidle.
func (t *Tuner) readLatency() Current {
	if !t.FS.Exists(cpuLatencyPath) {
		return Current{Unsupported: true}
	}
	if !t.FS.IsDir(cpuidlePath) {
		return Current{Unsupported: true}
	}
	if v, ok := t.Latency.held(); ok {
		return Current{Value: strconv.Itoa(int(v))}
	}
	return Current{Value: latencyNotHeld}
}

// planCPUPower plans the cpu section.
func planCPUPower(p Profile, h Host, j *Journal) []Step {
	c := p.CPU
	var steps []Step
	for _, cpu := range cpuPowerCPUs(c, h.OnlineCPUs) {
		caps := h.CPUFreq[cpu]
		for _, x := range []struct{ attr, want, what string }{
			{attrGovernor, c.Governor, "governor"},
			{attrEPP, c.EnergyPerformancePreference, "preference"},
		} {
			if x.want == "" {
				continue
			}
			s := valueStep(ID{KindCPUFreq, cpufreqKey(cpu, x.attr)}, x.want, h, j)
			offered := caps.Governors
			if x.attr == attrEPP {
				offered = caps.EPPs
			}
			switch {
			case s.Action == ActionUnsupported && x.attr == attrEPP:
				s.Note = fmt.Sprintf("cpu%d: the cpufreq driver %s has no energy/performance preference (intel_pstate and amd-pstate in active mode have)", cpu, orDash(caps.Driver))
			case s.Action == ActionUnsupported:
				s.Note = fmt.Sprintf("cpu%d has no cpufreq policy (no cpufreq driver, or a VM without frequency control)", cpu)
			case s.Action == ActionSet && offered != nil && !slices.Contains(offered, x.want) && !(x.attr == attrEPP && decimal.MatchString(x.want)):
				s.Action, s.Drift = ActionUnsupported, false
				s.Note = fmt.Sprintf("the cpufreq driver %s offers no %s %s (available: %s)", orDash(caps.Driver), x.what, x.want, strings.Join(offered, " "))
			}
			steps = append(steps, s)
		}
	}
	if c.MaxLatencyUs != nil {
		steps = append(steps, latencyStep(strconv.Itoa(*c.MaxLatencyUs), h, j))
	}
	return steps
}

// latencyStep plans holding the CPU latency limit.
func latencyStep(want string, h Host, j *Journal) Step {
	id := ID{KindPMQoS, CPULatencyKey}
	cur := h.Current[id]
	s := Step{ID: id, Current: cur.Value, Want: want}
	switch {
	case cur.Unsupported:
		s.Action, s.Note = ActionUnsupported, "no "+cpuLatencyPath+" or no cpuidle ("+cpuidlePath+"): no C-states to limit"
	case cur.Err != "":
		s.Action, s.Note = ActionError, cur.Err
	case !h.CanHoldLatency:
		s.Action, s.Note = ActionSkip, "held only by the daemon (gpunode-agent run): the kernel drops the limit when the process that holds it exits"
	case cur.Value == want:
		s.Action = ActionOK
	default:
		s.Action = ActionSet
		if e, ok := j.entry(id); ok && e.Wrote == want && cur.Value == latencyNotHeld {
			// Not drift: nobody else can close our file; the agent that
			// held it exited (and the kernel dropped its limit).
			s.Note = "the agent that held it exited; held again"
		}
	}
	return s
}

// CPULatency holds the CPU latency limit: /dev/cpu_dma_latency open
// with the limit written to it. A daemon keeps one for its lifetime and
// gives it to every Tuner it makes; Release on stop.
type CPULatency struct {
	mu    sync.Mutex
	f     *os.File
	value int32
}

func (l *CPULatency) held() (int32, bool) {
	if l == nil {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.value, l.f != nil
}

// hold opens the device (once) and writes the limit: a 4-byte s32 in the
// CPU's byte order, as the kernel's cpu_latency_qos_write reads it. A
// second write to the same open file updates the same request.
func (l *CPULatency) hold(fsys hostfs.FS, want string) error {
	if l == nil {
		return errors.New("only the daemon holds a CPU latency limit")
	}
	n, err := strconv.ParseInt(want, 10, 32)
	if err != nil || n < 0 {
		return fmt.Errorf("latency %q: want 0 to %d microseconds", want, maxLatencyLimit-1)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		f, err := os.OpenFile(fsys.Path(cpuLatencyPath), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", cpuLatencyPath, unwrapPath(err))
		}
		l.f = f
	}
	// At offset 0, so a fixture's regular file holds the last value as
	// the device would; the device ignores the offset.
	b := binary.NativeEndian.AppendUint32(nil, uint32(n))
	if _, err := l.f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("write %s: %w", cpuLatencyPath, unwrapPath(err))
	}
	l.value = int32(n)
	return nil
}

// Release closes the device, which drops the limit. Safe to call when
// nothing is held.
func (l *CPULatency) Release() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f, l.value = nil, 0
	if err != nil {
		return fmt.Errorf("close %s: %w", cpuLatencyPath, err)
	}
	return nil
}

// ReadCPULatencyLimit reads the kernel's current CPU latency limit (the
// smallest held by anyone; 2000000000 for none).
func ReadCPULatencyLimit(fsys hostfs.FS) (int32, error) {
	f, err := os.Open(fsys.Path(cpuLatencyPath))
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", cpuLatencyPath, unwrapPath(err))
	}
	defer f.Close()
	var b [4]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return 0, fmt.Errorf("read %s: %w", cpuLatencyPath, err)
	}
	return int32(binary.NativeEndian.Uint32(b[:])), nil
}

// doLatency holds (set) or releases (restore) the CPU latency limit.
func (t *Tuner) doLatency(s Step) error {
	if s.Action == ActionRestore {
		return t.Latency.Release()
	}
	return t.Latency.hold(t.FS, s.Want)
}

// latencyChange holds or releases the limit and checks the kernel's
// limit: at most the one held (another process may hold a lower one).
func (t *Tuner) latencyChange(c Change, done Outcome) Change {
	if err := t.doLatency(c.Step); err != nil {
		c.Outcome, c.Error = OutcomeFailed, err.Error()
		return c
	}
	if c.Action == ActionRestore {
		c.Outcome = done
		return c
	}
	limit, err := ReadCPULatencyLimit(t.FS)
	want, _ := strconv.Atoi(c.Want)
	switch {
	case err != nil:
		c.Outcome, c.Error = OutcomeFailed, "read back: "+err.Error()
	case int(limit) > want:
		c.Outcome, c.Error = OutcomeFailed, fmt.Sprintf("the kernel's CPU latency limit is %d us after holding %d", limit, want)
	default:
		c.Outcome = done
	}
	return c
}
