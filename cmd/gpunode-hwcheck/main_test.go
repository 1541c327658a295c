package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gpunode/gpunode/hwcheck"
)

var (
	buildOnce                sync.Once
	builtAgent, builtHarness string
	buildErr                 error
)

// build compiles the agent and the harness once for the tests of this
// package (TestMain removes them).
func build(t *testing.T) (agent, harness string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gpunode-hwcheck-test-")
		if err != nil {
			buildErr = err
			return
		}
		builtAgent, builtHarness = filepath.Join(dir, "gpunode-agent"), filepath.Join(dir, "gpunode-hwcheck")
		for _, b := range []struct{ bin, pkg string }{{builtAgent, "../gpunode-agent"}, {builtHarness, "."}} {
			cmd := exec.Command("go", "build", "-o", b.bin, b.pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("build %s: %w\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtAgent, builtHarness
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtAgent != "" {
		os.RemoveAll(filepath.Dir(builtAgent))
	}
	os.Exit(code)
}

// runHarness runs the harness with PATH set to path only (the vendor
// tools it may find) and returns its exit status and report.
func runHarness(t *testing.T, harness, agent, path string, args ...string) (int, hwcheck.Report, string) {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command(harness, append([]string{"--agent=" + agent, "--out=" + out}, args...)...)
	cmd.Env = []string{"PATH=" + path, "HOME=" + t.TempDir()}
	stdout, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
		if code == 2 {
			t.Fatalf("harness could not run: %s\n%s", ee.Stderr, stdout)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep hwcheck.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"report.txt", "inspect.json", "metrics-last.prom", "agent.log"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("--out lacks %s: %v", f, err)
		}
	}
	return code, rep, string(stdout)
}

func row(rep hwcheck.Report, section, fact string) (hwcheck.Row, bool) {
	for _, r := range rep.Rows {
		if r.Section == section && r.Fact == fact {
			return r, true
		}
	}
	return hwcheck.Row{}, false
}

// The harness on this machine (no GPU, no vendor tools) runs the real
// agent binary, finds every tool absent and passes; with an nvidia-smi
// that reports a GPU the agent does not see (the recorded A100 log), it
// fails on that disagreement.
func TestHarnessOnThisMachine(t *testing.T) {
	agent, harness := build(t)

	empty := t.TempDir()
	code, rep, table := runHarness(t, harness, agent, empty)
	if code != 0 {
		t.Fatalf("exit %d without vendor tools:\n%s", code, table)
	}
	for _, want := range []struct{ section, fact string }{{"nvidia", "nvidia-smi"}, {"rdma", "ibv_devinfo"}, {"rdma", "rdma link"}, {"amd", "amd-smi"},
		{"rdma-probe", "probe vs perftest"}} {
		if r, ok := row(rep, want.section, want.fact); !ok || r.Verdict != hwcheck.NotPresent {
			t.Errorf("%s %s: %+v (present %v)", want.section, want.fact, r, ok)
		}
	}
	if r, ok := row(rep, "cost", "RssAnon (heap and stacks)"); !ok || r.Verdict != hwcheck.Recorded || !strings.HasSuffix(r.Agent, "MiB") {
		t.Errorf("agent cost: %+v", r)
	}
	if !strings.Contains(table, "PASS:") {
		t.Errorf("table:\n%s", table)
	}

	// nvidia-smi that answers -q -x with the recorded A100 log and fails
	// everything else (as on a driver without nvlink or dmon support).
	tools := t.TempDir()
	xml, err := filepath.Abs("../../hwcheck/testdata/nvidia-smi-a100-sxm4-v12.xml")
	if err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nif [ \"$1\" = -q ] && [ \"$2\" = -x ]; then exec /bin/cat " + xml + "; fi\nexit 1\n"
	if err := os.WriteFile(filepath.Join(tools, "nvidia-smi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// perftest installed, but no RDMA port here: the probe rows are
	// skipped with the reason, not run.
	for _, p := range []string{"ib_write_bw", "ib_send_lat"} {
		if err := os.WriteFile(filepath.Join(tools, p), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	code, rep, table = runHarness(t, harness, agent, tools, "--python=/nonexistent/python3")
	if r, ok := row(rep, "rdma-probe", "probe vs perftest"); !ok || r.Verdict != hwcheck.NotPresent || !strings.Contains(r.Note, "no ACTIVE RDMA port") {
		t.Errorf("perftest without a port: %+v", r)
	}
	if code != 1 {
		t.Fatalf("exit %d with a GPU only nvidia-smi sees:\n%s", code, table)
	}
	if r, ok := row(rep, "nvidia", "GPU count"); !ok || r.Agent != "0" || r.Vendor != "1" || r.Verdict != hwcheck.Differ {
		t.Errorf("GPU count row %+v", r)
	}
	if r, ok := row(rep, "nvidia", "GPU"); !ok || r.Agent != "(missing)" || r.Device != "GPU-513536b6-7d19-9063-b049-1e69664bb298" {
		t.Errorf("missing GPU row %+v", r)
	}
	if r, ok := row(rep, "nvidia-load", "load"); !ok || !strings.Contains(r.Note, "load not started") {
		t.Errorf("load row %+v", r)
	}
	if !strings.Contains(table, "FAIL:") {
		t.Errorf("table:\n%s", table)
	}
}

// smiXML writes an nvidia-smi -q -x log of the GPUs the agent reports, in
// the recorded logs' layout (DTD v12).
func smiXML(in *hwcheck.Inspect) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<?xml version=\"1.0\" ?>\n<!DOCTYPE nvidia_smi_log SYSTEM \"nvsmi_device_v12.dtd\">\n<nvidia_smi_log>\n\t<driver_version>%s</driver_version>\n\t<cuda_version>%s</cuda_version>\n\t<attached_gpus>%d</attached_gpus>\n",
		in.GPUDriver.DriverVersion, in.GPUDriver.CUDAVersion, len(in.GPUs))
	mode := func(on bool) string {
		if on {
			return "Enabled"
		}
		return "Disabled"
	}
	for _, g := range in.GPUs {
		bus := "0000" + strings.ToUpper(g.PCIBusID)
		fabric := "N/A"
		status := "N/A"
		if g.Fabric != nil {
			fabric, status = strings.ToUpper(g.Fabric.State[:1])+g.Fabric.State[1:], strings.ToUpper(g.Fabric.Status[:1])+g.Fabric.Status[1:]
		}
		fmt.Fprintf(&b, "\t<gpu id=\"%s\">\n\t\t<product_name>%s</product_name>\n\t\t<product_architecture>%s</product_architecture>\n"+
			"\t\t<mig_mode>\n\t\t\t<current_mig>%s</current_mig>\n\t\t\t<pending_mig>%s</pending_mig>\n\t\t</mig_mode>\n"+
			"\t\t<serial>%s</serial>\n\t\t<uuid>%s</uuid>\n\t\t<vbios_version>%s</vbios_version>\n"+
			"\t\t<pci>\n\t\t\t<pci_bus_id>%s</pci_bus_id>\n\t\t\t<pci_gpu_link_info>\n\t\t\t\t<pcie_gen>\n\t\t\t\t\t<max_link_gen>%d</max_link_gen>\n\t\t\t\t\t<current_link_gen>%d</current_link_gen>\n\t\t\t\t</pcie_gen>\n"+
			"\t\t\t\t<link_widths>\n\t\t\t\t\t<max_link_width>%dx</max_link_width>\n\t\t\t\t\t<current_link_width>%dx</current_link_width>\n\t\t\t\t</link_widths>\n\t\t\t</pci_gpu_link_info>\n\t\t</pci>\n"+
			"\t\t<performance_state>P0</performance_state>\n\t\t<fb_memory_usage>\n\t\t\t<total>%d MiB</total>\n\t\t</fb_memory_usage>\n"+
			"\t\t<ecc_mode>\n\t\t\t<current_ecc>%s</current_ecc>\n\t\t\t<pending_ecc>%s</pending_ecc>\n\t\t</ecc_mode>\n"+
			"\t\t<gpu_power_readings>\n\t\t\t<current_power_limit>%.2f W</current_power_limit>\n\t\t</gpu_power_readings>\n"+
			"\t\t<fabric>\n\t\t\t<state>%s</state>\n\t\t\t<status>%s</status>\n\t\t</fabric>\n\t</gpu>\n",
			bus, g.Product, strings.ToUpper(g.Architecture[:1])+g.Architecture[1:], mode(g.MIG.Enabled), mode(g.MIG.Pending), g.Serial, g.UUID, g.VBIOSVersion,
			bus, g.PCIeLink.MaxGen, g.PCIeLink.CurrentGen, g.PCIeLink.MaxWidth, g.PCIeLink.CurrentWidth,
			g.MemoryBytes>>20, mode(g.ECC.Enabled), mode(g.ECC.Pending), g.PowerLimitWatts, fabric, status)
	}
	b.WriteString("</nvidia_smi_log>\n")
	return b.String()
}

// The whole readings path on a simulated DGX H100 against an nvidia-smi
// that streams --query-gpu lines every 250 ms and dmon GPM lines every
// second (a fake: no GPU here): the harness starts both, stamps and
// windows their lines, and compares each reading, the energy integral and
// GPM activity GPU by GPU with both sides holding readings. The facts
// (the log written from the agent's own inspect) all agree.
func TestHarnessReadingsPath(t *testing.T) {
	agent, harness := build(t)
	cmd := exec.Command(agent, "--simulate=dgx-h100-ib", "inspect", "-o", "json")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	in, err := hwcheck.ParseInspect(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	tools := t.TempDir()
	if err := os.WriteFile(filepath.Join(tools, "smi.xml"), []byte(smiXML(in)), 0o644); err != nil {
		t.Fatal(err)
	}
	var uuids []string
	for _, g := range in.GPUs {
		uuids = append(uuids, g.UUID)
	}
	script := `#!/bin/sh
case "$1" in
-q) exec /bin/cat ` + filepath.Join(tools, "smi.xml") + ` ;;
--help-query-gpu) exit 0 ;;
--query-gpu=*)
  while :; do
    for u in ` + strings.Join(uuids, " ") + `; do
      echo "$(/bin/date '+%Y/%m/%d %H:%M:%S.%3N'), $u, 60, 400.00, 50, 55, 1980, 2619, 1980, 30000"
    done
    /bin/sleep 0.25
  done ;;
nvlink)
  i=0
  for u in ` + strings.Join(uuids, " ") + `; do
    echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: $u)"
    for l in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17; do echo "	 Link $l: 26.562 GB/s"; done
    i=$((i+1))
  done
  exit 0 ;;
dmon)
  echo "# gpu    sm   mem   enc   dec   jpg   ofa  gpmsm  gpmten"
  echo "# Idx     %     %     %     %     %     %      %       %"
  while :; do
    for i in 0 1 2 3 4 5 6 7; do echo "    $i    60    20     -     -     -     -     45      30"; done
    /bin/sleep 1
  done ;;
esac
exit 1
`
	if err := os.WriteFile(filepath.Join(tools, "nvidia-smi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	_, rep, table := runHarness(t, harness, agent, tools, "--agent.simulate=dgx-h100-ib", "--python=/nonexistent/python3")
	for _, r := range rep.Rows {
		if r.Section == "nvidia" && r.Verdict != hwcheck.Agree {
			t.Errorf("fact written from the agent's own inspect does not agree: %+v", r)
		}
	}
	per := map[string]int{}
	for _, r := range rep.Rows {
		if r.Section != "nvidia-load" || r.Device == "" {
			continue
		}
		if r.Verdict == hwcheck.NotPresent || !strings.Contains(r.Agent, "over") && !strings.Contains(r.Agent, "readings") || !strings.Contains(r.Vendor, "readings") {
			t.Errorf("%s %s: one side without readings: %+v", r.Device, r.Fact, r)
		}
		per[r.Device]++
	}
	if len(per) != 8 || per["gpu0"] != 11 {
		t.Errorf("reading rows per GPU %v, want 8 GPUs with 10 readings and energy each\n%s", per, table)
	}
	if r, ok := row(rep, "cost", "CPU per sampling round per GPU"); !ok || r.Verdict == hwcheck.NotPresent {
		t.Errorf("cost with 8 GPUs: %+v", r)
	}
}

// The AMD path on the simulated MI300X node against an amd-smi (a fake: no
// AMD GPU here) whose static --json is written from the agent's own
// inspect and whose metric --json gives every GPU the same readings in
// amd-smi's units: the static facts agree, and every GPU gets its
// readings compared with the agent's last scrape, both sides present.
func TestHarnessAMDPath(t *testing.T) {
	agent, harness := build(t)
	out, err := exec.Command(agent, "--simulate=mi300x-roce", "inspect", "-o", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	in, err := hwcheck.ParseInspect(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	var static, metric []string
	for i, g := range in.GPUs {
		static = append(static, fmt.Sprintf(`{"gpu": %d, "asic": {"market_name": %q, "device_id": %q}, "bus": {"bdf": %q}, "vram": {"size": {"value": %d, "unit": "MB"}}}`,
			i, g.Product, g.PCIDeviceID, g.PCIBusID, g.MemoryBytes>>20))
		metric = append(metric, fmt.Sprintf(`{"gpu": %d, "usage": {"gfx_activity": {"value": 50, "unit": "%%"}}, "power": {"socket_power": {"value": 600, "unit": "W"}}, "temperature": {"edge": "N/A", "hotspot": {"value": 50, "unit": "C"}}, "clock": "N/A", "mem_usage": "N/A"}`, i))
	}
	tools := t.TempDir()
	for name, body := range map[string]string{
		"static.json": `{"gpu_data": [` + strings.Join(static, ",") + `]}`,
		"metric.json": `{"gpu_data": [` + strings.Join(metric, ",") + `]}`,
	} {
		if err := os.WriteFile(filepath.Join(tools, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := "#!/bin/sh\ncase \"$1\" in\nstatic) exec /bin/cat " + filepath.Join(tools, "static.json") + " ;;\nmetric) exec /bin/cat " + filepath.Join(tools, "metric.json") + " ;;\nesac\nexit 1\n"
	if err := os.WriteFile(filepath.Join(tools, "amd-smi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	_, rep, table := runHarness(t, harness, agent, tools, "--agent.simulate=mi300x-roce")
	per := map[string]map[string]hwcheck.Row{}
	for _, r := range rep.Rows {
		if r.Section != "amd" || r.Device == "" {
			continue
		}
		if per[r.Device] == nil {
			per[r.Device] = map[string]hwcheck.Row{}
		}
		per[r.Device][r.Fact] = r
	}
	if len(per) != len(in.GPUs) || len(in.GPUs) != 8 {
		t.Fatalf("AMD rows for %d devices, agent has %d GPUs\n%s", len(per), len(in.GPUs), table)
	}
	for dev, facts := range per {
		for _, f := range []string{"product", "PCI device id", "memory total (MiB)"} {
			if facts[f].Verdict != hwcheck.Agree {
				t.Errorf("%s %s: %+v", dev, f, facts[f])
			}
		}
		for _, f := range []string{"power (W)", "utilization (%)", "temperature gpu (C)"} {
			if r, ok := facts[f]; !ok || r.Verdict == hwcheck.NotPresent || !strings.Contains(r.Agent, "1 readings") || !strings.Contains(r.Vendor, "1 readings") {
				t.Errorf("%s %s: one side without a reading: %+v", dev, f, r)
			}
		}
		// amd-smi printed the clocks N/A: the agent's clock is not compared.
		if r := facts["clock graphics (MHz)"]; r.Verdict != hwcheck.NotPresent {
			t.Errorf("%s clock with amd-smi's clock N/A: %+v", dev, r)
		}
	}
}
