package hwcheck

import (
	"os"
	"strings"
	"testing"
)

// TestParseAMDSMIMetricRecorded reads the `amd-smi metric -p --json` that
// AMD published in amdsmi's changelog (ROCm 6.3, testdata/SOURCES.md): the
// power section with units, voltages and throttle state that the harness
// does not compare, and every other section absent.
func TestParseAMDSMIMetricRecorded(t *testing.T) {
	f, err := os.Open("testdata/amd-smi-metric-p-rocm63.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := ParseAMDSMIMetric(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || m[0].GPU != 0 {
		t.Fatalf("GPUs %+v", m)
	}
	v := m[0].Values()
	if len(v) != 1 || v[Power] != 10 {
		t.Errorf("readings %v, want power 10 W only", v)
	}
}

// amdMetricMI300X is `amd-smi metric --json` in the shape amd-smi of ROCm
// 6.4 and 7.x prints (the "gpu_data" wrapper, {"value", "unit"} pairs,
// "N/A" for sensors and whole sections a GPU lacks), written here for the
// simulated MI300X node's GPUs 0 and 1: GPU 0 as the agent reads it, in
// amd-smi's units (mW and GHz where the agent says W and MHz), GPU 1 with
// its power 100 W off.
const amdMetricMI300X = `{"gpu_data": [
 {"gpu": 0,
  "usage": {"gfx_activity": {"value": 75, "unit": "%"}, "umc_activity": {"value": 3, "unit": "%"}},
  "power": {"socket_power": {"value": 590000, "unit": "mW"}, "throttle_status": "UNTHROTTLED"},
  "clock": {"gfx_0": {"clk": {"value": 1.42, "unit": "GHz"}, "min_clk": {"value": 500, "unit": "MHz"}},
            "mem_0": {"clk": {"value": 1300, "unit": "MHz"}}},
  "temperature": {"edge": "N/A", "hotspot": {"value": 48, "unit": "C"}, "mem": {"value": 40, "unit": "C"}},
  "mem_usage": {"total_vram": {"value": 196592, "unit": "MB"}, "used_vram": {"value": 102393, "unit": "MB"}}},
 {"gpu": 1,
  "usage": "N/A",
  "power": {"socket_power": {"value": 759, "unit": "W"}},
  "clock": "N/A",
  "temperature": {"hotspot": {"value": 57, "unit": "C"}, "mem": "N/A"},
  "mem_usage": "N/A"}
]}`

// TestCompareAMDReadings compares amd-smi's readings with the agent's
// /metrics of the simulated MI300X node, GPUs matched through amd-smi
// static's bus ids.
func TestCompareAMDReadings(t *testing.T) {
	in := readInspectNode(t, "mi300x-roce")
	static := []AMDStatic{{GPU: 0}, {GPU: 1}}
	static[0].Bus.BDF, static[1].Bus.BDF = "0000:15:00.0", "0000:25:00.0"
	metrics, err := ParseAMDSMIMetric(strings.NewReader(amdMetricMI300X))
	if err != nil {
		t.Fatal(err)
	}
	rows := CompareAMDReadings(in, static, metrics, readMetrics(t, "mi300x-roce"))
	got := map[string]Verdict{}
	for _, r := range rows {
		if r.Section != secAMD {
			t.Errorf("row %+v outside the amd section", r)
		}
		got[r.Device+" "+r.Fact] = r.Verdict
	}
	for fact, want := range map[string]Verdict{
		"gpu0 utilization (%)":        Agree,
		"gpu0 power (W)":              Agree,
		"gpu0 temperature gpu (C)":    Agree,
		"gpu0 temperature memory (C)": Agree,
		"gpu0 clock graphics (MHz)":   Agree,
		"gpu0 clock memory (MHz)":     Agree,
		"gpu0 memory used (MiB)":      Agree,
		"gpu1 power (W)":              Differ,
		"gpu1 temperature gpu (C)":    Agree,
		"gpu1 utilization (%)":        NotPresent,
		"gpu1 temperature memory (C)": NotPresent,
	} {
		if got[fact] != want {
			t.Errorf("%s: %q, want %q", fact, got[fact], want)
		}
	}
	for fact := range got {
		if strings.Contains(fact, "energy") {
			t.Errorf("energy row %q from a single reading", fact)
		}
	}
}

// readInspectNode parses the agent's golden inspect JSON of a simulated node.
func readInspectNode(t *testing.T, node string) *Inspect {
	t.Helper()
	f, err := os.Open("../report/testdata/" + node + ".json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in, err := ParseInspect(f)
	if err != nil {
		t.Fatal(err)
	}
	return in
}
