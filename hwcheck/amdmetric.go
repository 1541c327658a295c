package hwcheck

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/gpunode/gpunode/gpu"
)

// AMDMetric is one GPU of `amd-smi metric --json`: the readings the harness
// compares, each {"value": 10, "unit": "W"} or "N/A" (amd-smi prints the
// string where a GPU lacks the sensor, and "N/A" for a whole section).
type AMDMetric struct {
	GPU         int             `json:"gpu"`
	Usage       json.RawMessage `json:"usage"`
	Power       json.RawMessage `json:"power"`
	Temperature json.RawMessage `json:"temperature"`
	MemUsage    json.RawMessage `json:"mem_usage"`
	Clock       json.RawMessage `json:"clock"`
}

// ParseAMDSMIMetric parses `amd-smi metric --json`: a list of GPUs, or
// (amd-smi of ROCm 6.4 on) an object with the list under "gpu_data".
func ParseAMDSMIMetric(r io.Reader) ([]AMDMetric, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read amd-smi metric --json: %w", err)
	}
	var list []AMDMetric
	if err := json.Unmarshal(b, &list); err != nil {
		var wrapped struct {
			GPUData []AMDMetric `json:"gpu_data"`
		}
		if err := json.Unmarshal(b, &wrapped); err != nil {
			return nil, fmt.Errorf("parse amd-smi metric --json: %w", err)
		}
		list = wrapped.GPUData
	}
	return list, nil
}

// field reads key of a section as an amd-smi value in the unit the
// harness compares in; false when the section or the value is "N/A" or
// missing.
func field(section json.RawMessage, key string) (amdValue, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(section, &m) != nil {
		return amdValue{}, false
	}
	var v amdValue
	if json.Unmarshal(m[key], &v) != nil || len(v.Value) == 0 {
		return amdValue{}, false
	}
	return v, true
}

// number is v's value in want, converting the units amd-smi prints
// (W and mW, C, MHz and GHz, %); false for "N/A" or an unknown unit.
func (v amdValue) number(want string) (float64, bool) {
	f, err := strconv.ParseFloat(strings.Trim(string(v.Value), `"`), 64)
	if err != nil {
		return 0, false
	}
	unit := strings.ToUpper(v.Unit)
	switch {
	case unit == strings.ToUpper(want):
		return f, true
	case want == "W" && unit == "MW":
		return f / 1000, true
	case want == "MHz" && unit == "GHZ":
		return f * 1000, true
	case want == "MiB":
		return v.mib()
	}
	return 0, false
}

// Values turns one GPU's metrics into the harness's readings: gfx_activity
// is the utilization, socket_power the power, hotspot the GPU temperature
// and mem the memory's (the sensors the agent exports as sensor="gpu" and
// "memory"), gfx_0 and mem_0 the graphics and memory clocks, used_vram the
// memory used.
func (m AMDMetric) Values() map[Reading]float64 {
	out := map[Reading]float64{}
	var clock map[string]json.RawMessage
	_ = json.Unmarshal(m.Clock, &clock) // "N/A" leaves it empty
	for _, f := range []struct {
		section json.RawMessage
		key     string
		unit    string
		r       Reading
	}{
		{m.Usage, "gfx_activity", "%", Utilization},
		{m.Power, "socket_power", "W", Power},
		{m.Temperature, "hotspot", "C", TempGPU},
		{m.Temperature, "mem", "C", TempMemory},
		{m.MemUsage, "used_vram", "MiB", MemoryUsed},
		{clock["gfx_0"], "clk", "MHz", ClockGr},
		{clock["mem_0"], "clk", "MHz", ClockMemory},
	} {
		if v, ok := field(f.section, f.key); ok {
			if x, ok := v.number(f.unit); ok {
				out[f.r] = x
			}
		}
	}
	return out
}

// AMDSamples stamps one `amd-smi metric --json` run at at, each GPU named
// by the UUID the agent gives the GPU at the bus id `amd-smi static`
// reports for the same index; GPUs the agent does not know are left out
// (CompareAMD reports them missing).
func AMDSamples(in *Inspect, static []AMDStatic, metrics []AMDMetric, at time.Time) []Sample {
	uuidByBus := map[string]string{}
	for _, d := range in.GPUs {
		if d.Vendor == gpu.AMD {
			uuidByBus[d.PCIBusID] = d.UUID
		}
	}
	uuidByIndex := map[int]string{}
	for _, s := range static {
		if u := uuidByBus[gpu.NormalizePCIBusID(s.Bus.BDF)]; u != "" {
			uuidByIndex[s.GPU] = u
		}
	}
	var out []Sample
	for _, m := range metrics {
		if u := uuidByIndex[m.GPU]; u != "" {
			out = append(out, Sample{At: at, UUID: u, Values: m.Values()})
		}
	}
	return out
}

// CompareAMDReadings compares one `amd-smi metric --json` run with one
// scrape of the agent's /metrics, GPU by GPU in amd-smi's order. The two
// are read moments apart, not together, so the load-window tolerances
// hold only on a GPU whose readings are steady (an idle one).
func CompareAMDReadings(in *Inspect, static []AMDStatic, metrics []AMDMetric, agent Metrics) []Row {
	at := time.Unix(0, 0)
	vendor := AMDSamples(in, static, metrics, at)
	var devices []string
	for _, s := range vendor {
		devices = append(devices, s.UUID)
	}
	var rows []Row
	for _, r := range CompareReadings(devices, AgentSamples(agent, at), vendor, at, at) {
		if strings.HasPrefix(r.Fact, "energy") {
			continue // one reading each: no power integral to compare with
		}
		r.Section = secAMD
		r.Fact = strings.TrimSuffix(r.Fact, " mean")
		rows = append(rows, r)
	}
	return rows
}
