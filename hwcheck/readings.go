package hwcheck

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const secLoad = "nvidia-load"

// Reading names a live value both sides report, in the vendor tool's
// units (percent, W, °C, MHz, MiB, J).
type Reading string

const (
	Utilization Reading = "utilization (%)"
	Power       Reading = "power (W)"
	TempGPU     Reading = "temperature gpu (C)"
	TempMemory  Reading = "temperature memory (C)"
	ClockSM     Reading = "clock sm (MHz)"
	ClockMemory Reading = "clock memory (MHz)"
	ClockGr     Reading = "clock graphics (MHz)"
	MemoryUsed  Reading = "memory used (MiB)"
	Energy      Reading = "energy (J)"
	GPMSM       Reading = "GPM SM active (%)"
	GPMTensor   Reading = "GPM tensor active (%)"
)

// QueryFields are the `nvidia-smi --query-gpu` fields the harness samples,
// with the reading each is; timestamp and uuid come first.
var QueryFields = []struct {
	Field   string
	Reading Reading
}{
	{"utilization.gpu", Utilization},
	{"power.draw", Power},
	{"temperature.gpu", TempGPU},
	{"temperature.memory", TempMemory},
	{"clocks.sm", ClockSM},
	{"clocks.mem", ClockMemory},
	{"clocks.gr", ClockGr},
	{"memory.used", MemoryUsed},
}

// Tolerance is how far the two means may be apart: within Abs, or within
// Rel of the vendor's value, whichever is larger.
type Tolerance struct {
	Abs, Rel float64
	Why      string
}

func (t Tolerance) String() string {
	s := strconv.FormatFloat(t.Abs, 'f', -1, 64)
	if t.Rel > 0 {
		s = fmt.Sprintf("max(%s, %s%%)", s, strconv.FormatFloat(t.Rel*100, 'f', -1, 64))
	}
	return s
}

func (t Tolerance) ok(agent, vendor float64) bool {
	return math.Abs(agent-vendor) <= math.Max(t.Abs, t.Rel*math.Abs(vendor))
}

// Tolerances per reading. Both sides read the same NVML counters; what
// differs is when: the agent's sampler and nvidia-smi read at different
// moments of the window (sampling skew), so the harness compares means
// over the load window, not single readings.
var Tolerances = map[Reading]Tolerance{
	Utilization: {Abs: 10, Why: "NVML's utilization is the busy fraction of the driver's last sample period (1/6 s to 1 s by product); a steady matmul reads 90-100 at any moment, gaps between kernels a little less"},
	Power:       {Abs: 15, Rel: 0.10, Why: "matmul power swings by tens of watts between iterations and the two sides read at different moments; means over the window"},
	TempGPU:     {Abs: 3, Why: "the die warms through the window and the two sides read at different moments"},
	TempMemory:  {Abs: 3, Why: "as the GPU temperature"},
	ClockSM:     {Abs: 30, Rel: 0.05, Why: "boost clocks move with power and temperature from one reading to the next"},
	ClockMemory: {Abs: 30, Rel: 0.05, Why: "as the SM clock (the memory clock is normally fixed)"},
	ClockGr:     {Abs: 30, Rel: 0.05, Why: "as the SM clock"},
	MemoryUsed:  {Abs: 64, Rel: 0.02, Why: "the load allocates once; the CUDA context and allocator pools may grow by a few MiB during the window"},
	Energy:      {Rel: 0.10, Why: "the energy counter against the integral of nvidia-smi's power readings every 250 ms: a 1 s average integrated misses transients, and the agent's first and last readings are up to one sampling interval older than their scrapes"},
	GPMSM:       {Abs: 10, Why: "GPM activity over each side's own interval (the agent's sampling interval, dmon's second)"},
	GPMTensor:   {Abs: 10, Why: "as GPM SM activity"},
}

// Sample is one reading of one GPU at one moment.
type Sample struct {
	At     time.Time
	UUID   string
	Values map[Reading]float64
}

// ParseQueryCSV parses `nvidia-smi --query-gpu=timestamp,uuid,<fields>
// --format=csv,noheader,nounits`: one sample per line, times in loc (the
// tool prints local time). N/A values are left out.
func ParseQueryCSV(r io.Reader, fields []string, loc *time.Location) ([]Sample, error) {
	readings := map[string]Reading{}
	for _, f := range QueryFields {
		readings[f.Field] = f.Reading
	}
	var out []Sample
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		cols := strings.Split(line, ",")
		if len(cols) != len(fields)+2 {
			return nil, fmt.Errorf("nvidia-smi --query-gpu line %d: %d columns, want %d: %q", n, len(cols), len(fields)+2, line)
		}
		at, err := time.ParseInLocation("2006/01/02 15:04:05.000", strings.TrimSpace(cols[0]), loc)
		if err != nil {
			return nil, fmt.Errorf("nvidia-smi --query-gpu line %d: timestamp: %w", n, err)
		}
		s := Sample{At: at, UUID: strings.TrimSpace(cols[1]), Values: map[Reading]float64{}}
		for i, f := range fields {
			if v, ok := number(cols[i+2]); ok {
				s.Values[readings[f]] = v
			}
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read nvidia-smi --query-gpu: %w", err)
	}
	return out, nil
}

// ParseDmonGPM parses `nvidia-smi dmon -s u --gpm-metrics 2,5`: comment
// lines start with '#', data lines start with the GPU index and end with
// the requested GPM metrics (SM activity, then tensor activity, percent;
// "-" when unavailable). byIndex maps GPU indices to UUIDs. dmon prints
// no timestamps without -o T; the k-th data line (from 0, comment lines
// not counted) is stamped at(k).
func ParseDmonGPM(r io.Reader, byIndex map[int]string, at func(k int) time.Time) ([]Sample, error) {
	var out []Sample
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) < 3 {
			return nil, fmt.Errorf("nvidia-smi dmon line %d: %d columns: %q", n, len(f), sc.Text())
		}
		idx, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("nvidia-smi dmon line %d: GPU index %q: %w", n, f[0], err)
		}
		s := Sample{At: at(len(out)), UUID: byIndex[idx], Values: map[Reading]float64{}}
		if v, err := strconv.ParseFloat(f[len(f)-2], 64); err == nil {
			s.Values[GPMSM] = v
		}
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			s.Values[GPMTensor] = v
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

// agentSeries maps the agent's metrics to readings, with the factor that
// turns them into the vendor tool's units.
var agentSeries = []struct {
	Metric string
	Label  string // "name=value" the series must carry, or ""
	R      Reading
	Scale  float64
}{
	{"gpunode_gpu_utilization_ratio", "", Utilization, 100},
	{"gpunode_gpu_power_watts", "", Power, 1},
	{"gpunode_gpu_temperature_celsius", "sensor=gpu", TempGPU, 1},
	{"gpunode_gpu_temperature_celsius", "sensor=memory", TempMemory, 1},
	{"gpunode_gpu_clock_hertz", "clock=sm", ClockSM, 1e-6},
	{"gpunode_gpu_clock_hertz", "clock=memory", ClockMemory, 1e-6},
	{"gpunode_gpu_clock_hertz", "clock=graphics", ClockGr, 1e-6},
	{"gpunode_gpu_memory_used_bytes", "", MemoryUsed, 1.0 / (1 << 20)},
	{"gpunode_gpu_energy_joules_total", "", Energy, 1},
	{"gpunode_gpu_sm_active_ratio", "", GPMSM, 100},
	{"gpunode_gpu_tensor_active_ratio", "", GPMTensor, 100},
}

// Metrics is one scrape of the agent's /metrics.
type Metrics map[string]*dto.MetricFamily

// ParseMetrics parses the Prometheus text format.
func ParseMetrics(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return mf, nil
}

// Value returns the value of the first series of a family whose labels
// include every name=value pair given.
func (m Metrics) Value(name string, labels ...string) (float64, bool) {
	fam, ok := m[name]
	if !ok {
		return 0, false
	}
	for _, met := range fam.GetMetric() {
		if hasLabels(met, labels) {
			return metricValue(met), true
		}
	}
	return 0, false
}

// Has reports whether any series of the family carries the labels.
func (m Metrics) Has(name string, labels ...string) bool {
	_, ok := m.Value(name, labels...)
	return ok
}

func hasLabels(met *dto.Metric, want []string) bool {
	for _, w := range want {
		k, v, _ := strings.Cut(w, "=")
		found := false
		for _, l := range met.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func metricValue(met *dto.Metric) float64 {
	switch {
	case met.Gauge != nil:
		return met.GetGauge().GetValue()
	case met.Counter != nil:
		return met.GetCounter().GetValue()
	case met.Untyped != nil:
		return met.GetUntyped().GetValue()
	}
	return math.NaN()
}

// AgentSamples turns one scrape into one sample per GPU (by uuid label).
func AgentSamples(m Metrics, at time.Time) []Sample {
	byUUID := map[string]map[Reading]float64{}
	var order []string
	for _, s := range agentSeries {
		fam, ok := m[s.Metric]
		if !ok {
			continue
		}
		var want []string
		if s.Label != "" {
			want = []string{s.Label}
		}
		for _, met := range fam.GetMetric() {
			if !hasLabels(met, want) || hasLabel(met, "gpu_instance") {
				continue
			}
			uuid := labelValue(met, "uuid")
			if uuid == "" {
				continue
			}
			if byUUID[uuid] == nil {
				byUUID[uuid] = map[Reading]float64{}
				order = append(order, uuid)
			}
			byUUID[uuid][s.R] = metricValue(met) * s.Scale
		}
	}
	slices.Sort(order)
	out := make([]Sample, 0, len(order))
	for _, u := range order {
		out = append(out, Sample{At: at, UUID: u, Values: byUUID[u]})
	}
	return out
}

func labelValue(met *dto.Metric, name string) string {
	for _, l := range met.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func hasLabel(met *dto.Metric, name string) bool {
	return labelValue(met, name) != ""
}

// CompareReadings compares the means of each reading over [from, to], GPU
// by GPU (devices names the UUIDs in order, as "gpuN"), and the agent's
// energy counter against the integral of the vendor's power readings.
func CompareReadings(devices []string, agent, vendor []Sample, from, to time.Time) []Row {
	var rows []Row
	readings := []Reading{Utilization, Power, TempGPU, TempMemory, ClockSM, ClockMemory, ClockGr, MemoryUsed, GPMSM, GPMTensor}
	for i, uuid := range devices {
		dev := fmt.Sprintf("gpu%d", i)
		a := window(agent, uuid, from, to)
		v := window(vendor, uuid, from, to)
		for _, r := range readings {
			am, an := mean(a, r)
			vm, vn := mean(v, r)
			tol := Tolerances[r]
			row := Row{Section: secLoad, Device: dev, Fact: string(r) + " mean", Tolerance: tol.String(), Note: tol.Why}
			switch {
			case an == 0 && vn == 0:
				continue // neither side has it (an older GPU, GPM before Hopper)
			case vn == 0:
				row.Agent, row.Vendor, row.Verdict = fmt.Sprintf("%.1f (%d readings)", am, an), "N/A", NotPresent
				row.Note = "the vendor tool does not report it here"
			case an == 0:
				row.Agent, row.Vendor, row.Verdict = "(absent)", fmt.Sprintf("%.1f (%d readings)", vm, vn), Differ
				row.Note = "the vendor tool reports it, the agent does not"
			default:
				row.Agent, row.Vendor = fmt.Sprintf("%.1f (%d readings)", am, an), fmt.Sprintf("%.1f (%d readings)", vm, vn)
				row.Verdict = Differ
				if tol.ok(am, vm) {
					row.Verdict = Agree
				}
			}
			rows = append(rows, row)
		}
		rows = append(rows, energyRow(dev, a, v))
	}
	return rows
}

// energyRow compares the agent's energy counter's increase between its
// first and last reading in the window with the trapezoid integral of the
// vendor's power readings over the same span.
func energyRow(dev string, agent, vendor []Sample) Row {
	tol := Tolerances[Energy]
	row := Row{Section: secLoad, Device: dev, Fact: "energy over the window (J) vs power integral", Tolerance: tol.String(), Note: tol.Why}
	var ea []Sample
	for _, s := range agent {
		if _, ok := s.Values[Energy]; ok {
			ea = append(ea, s)
		}
	}
	if len(ea) < 2 {
		row.Agent, row.Vendor, row.Verdict = "(fewer than 2 readings)", "-", NotPresent
		row.Note = "the agent exports no energy counter for this GPU (before Volta)"
		return row
	}
	first, last := ea[0], ea[len(ea)-1]
	got := last.Values[Energy] - first.Values[Energy]
	var integral float64
	var prev *Sample
	n := 0
	for i := range vendor {
		s := &vendor[i]
		if _, ok := s.Values[Power]; !ok || s.At.Before(first.At) || s.At.After(last.At) {
			continue
		}
		if prev != nil {
			integral += (prev.Values[Power] + s.Values[Power]) / 2 * s.At.Sub(prev.At).Seconds()
		}
		prev = s
		n++
	}
	row.Agent = fmt.Sprintf("%.0f over %.1fs", got, last.At.Sub(first.At).Seconds())
	if n < 2 {
		row.Vendor, row.Verdict = "(fewer than 2 power readings)", NotPresent
		return row
	}
	row.Vendor = fmt.Sprintf("%.0f (%d power readings)", integral, n)
	row.Verdict = Differ
	if tol.ok(got, integral) {
		row.Verdict = Agree
	}
	return row
}

func window(samples []Sample, uuid string, from, to time.Time) []Sample {
	var out []Sample
	for _, s := range samples {
		if s.UUID == uuid && !s.At.Before(from) && !s.At.After(to) {
			out = append(out, s)
		}
	}
	return out
}

func mean(samples []Sample, r Reading) (float64, int) {
	var sum float64
	n := 0
	for _, s := range samples {
		if v, ok := s.Values[r]; ok && !math.IsNaN(v) {
			sum += v
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return sum / float64(n), n
}

// TolerancesMarkdown is the tolerance table of docs/hardware.md
// (TestHardwareDoc).
func TolerancesMarkdown() string {
	var b strings.Builder
	b.WriteString("| reading | agrees within | why |\n|---|---|---|\n")
	for _, r := range []Reading{Utilization, Power, TempGPU, TempMemory, ClockSM, ClockMemory, ClockGr, MemoryUsed, Energy, GPMSM, GPMTensor} {
		t := Tolerances[r]
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r, t, t.Why)
	}
	return b.String()
}
