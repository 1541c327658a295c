package hwcheck

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/gpu"
)

func readSMI(t *testing.T, name string) *SMILog {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	log, err := ParseSMIXML(f)
	if err != nil {
		t.Fatal(err)
	}
	return log
}

// The agent's own inspect JSON of the simulated DGX H100.
// readMetrics parses the exporters' golden /metrics of a simulated node.
func readMetrics(t *testing.T, node string) Metrics {
	t.Helper()
	f, err := os.Open("../exporters/testdata/metrics-" + node + ".prom")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := ParseMetrics(f)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readInspect(t *testing.T) *Inspect {
	t.Helper()
	f, err := os.Open("../report/testdata/dgx-h100-ib.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in, err := ParseInspect(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.GPUs) != 8 || in.GPUDriver == nil || len(in.RDMADevices) == 0 {
		t.Fatalf("inspect JSON of dgx-h100-ib: %d GPUs, driver %v, %d RDMA devices", len(in.GPUs), in.GPUDriver, len(in.RDMADevices))
	}
	return in
}

func TestParseSMIXML(t *testing.T) {
	cases := []struct {
		file                               string
		driver, cuda, product, uuid, bus   string
		memMiB, limitW                     float64
		ecc, eccPending, mig               string
		curGen, maxGen, curWidth, maxWidth string
	}{
		{"nvidia-smi-a100-sxm4-v12.xml", "535.54.03", "12.2", "NVIDIA A100-SXM4-80GB", "GPU-513536b6-7d19-9063-b049-1e69664bb298", "00000000:01:00.0",
			81920, 500, "Enabled", "Enabled", "Enabled", "4", "4", "16x", "16x"},
		{"nvidia-smi-a10g.xml", "515.105.01", "11.7", "NVIDIA A10G", "", "00000000:00:1E.0",
			23028, 300, "Enabled", "Enabled", "N/A", "", "", "", ""},
		{"nvidia-smi-rtx-4000-sff-ada-v13.xml", "595.84", "13.2", "NVIDIA RTX 4000 SFF Ada Generation", "GPU-37037c3f-65c8-ec4d-24a9-420204ad8026", "00000000:06:00.0",
			20475, 70, "Disabled", "Disabled", "N/A", "1", "4", "16x", "16x"},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			log := readSMI(t, c.file)
			if log.DriverVersion != c.driver || log.CUDAVersion != c.cuda || len(log.GPUs) != 1 {
				t.Fatalf("driver %q cuda %q, %d GPUs", log.DriverVersion, log.CUDAVersion, len(log.GPUs))
			}
			g := log.GPUs[0]
			if g.ProductName != c.product || (c.uuid != "" && g.UUID != c.uuid) || g.PCI.BusID != c.bus {
				t.Errorf("identity %q %q %q", g.ProductName, g.UUID, g.PCI.BusID)
			}
			if v, ok := number(g.FBMemory.Total); !ok || v != c.memMiB {
				t.Errorf("memory total %q", g.FBMemory.Total)
			}
			if v, ok := number(g.PowerLimit()); !ok || v != c.limitW {
				t.Errorf("power limit %q (want %v)", g.PowerLimit(), c.limitW)
			}
			if g.ECC.Current != c.ecc || g.ECC.Pending != c.eccPending || g.MIG.Current != c.mig {
				t.Errorf("ECC %q/%q MIG %q", g.ECC.Current, g.ECC.Pending, g.MIG.Current)
			}
			l := g.PCI.Link
			if c.curGen != "" && (l.Gen.Current != c.curGen || l.Gen.Max != c.maxGen || l.Widths.Current != c.curWidth || l.Widths.Max != c.maxWidth) {
				t.Errorf("PCIe %+v", l)
			}
		})
	}
	if _, err := ParseSMIXML(strings.NewReader(`<?xml version="1.0"?><other/>`)); err == nil {
		t.Error("a document that is not nvidia-smi's log parsed")
	}
}

// a100Agent is the agent's inspect output of the simulated DGX H100 with
// one GPU whose identity is what NVML answers on the recorded A100
// machine, so both sides agree.
func a100Agent(t *testing.T) *Inspect {
	in := readInspect(t)
	d := in.GPUs[0]
	d.Product = "NVIDIA A100-SXM4-80GB"
	d.UUID = "GPU-513536b6-7d19-9063-b049-1e69664bb298"
	d.PCIBusID = "0000:01:00.0"
	d.Architecture = "ampere"
	d.Serial = "1650522003820"
	d.VBIOSVersion = "92.00.36.00.02"
	d.MemoryBytes = 81920 << 20
	d.PowerLimitWatts = 500
	d.PCIeLink = &gpu.PCIeLink{CurrentGen: 4, MaxGen: 4, CurrentWidth: 16, MaxWidth: 16, PerformanceState: "P0"}
	d.ECC = &gpu.ECCMode{Enabled: true, Pending: true}
	d.MIG = gpu.MIG{Capable: true, Enabled: true, Pending: true}
	d.Fabric = nil // nvidia-smi: N/A (no NVSwitch fabric on this machine)
	d.Interconnect = nil
	in.GPUs = []gpu.Device{d}
	in.GPUDriver.DriverVersion, in.GPUDriver.CUDAVersion = "535.54.03", "12.2"
	return in
}

func differing(rows []Row) []string {
	var out []string
	for _, r := range rows {
		if r.Verdict == Differ {
			out = append(out, r.Device+" "+r.Fact+": "+r.Agent+" vs "+r.Vendor)
		}
	}
	return out
}

func find(rows []Row, fact string) (Row, bool) {
	for _, r := range rows {
		if r.Fact == fact {
			return r, true
		}
	}
	return Row{}, false
}

func TestCompareNVIDIAFacts(t *testing.T) {
	smi := readSMI(t, "nvidia-smi-a100-sxm4-v12.xml")
	noLinks := map[string]NVLinkStatus{}
	rows := CompareNVIDIAFacts(a100Agent(t), smi, noLinks)
	if d := differing(rows); len(d) > 0 {
		t.Fatalf("agreeing sides differ:\n%s", strings.Join(d, "\n"))
	}
	for _, fact := range []string{"driver version", "CUDA version", "GPU count", "product", "UUID", "PCI bus id", "architecture", "serial", "VBIOS version",
		"memory total (MiB)", "PCIe generation (current)", "PCIe generation (max)", "PCIe width (current)", "PCIe width (max)",
		"power limit (W)", "ECC mode (current)", "ECC mode (pending)", "MIG mode (current)", "MIG mode (pending)", "NVLink links active"} {
		if r, ok := find(rows, fact); !ok || r.Verdict != Agree {
			t.Errorf("%s: %+v (present %v)", fact, r, ok)
		}
	}

	// Each way the agent can be wrong is caught, and only that row differs.
	wrong := []struct {
		fact string
		edit func(in *Inspect)
	}{
		{"product", func(in *Inspect) { in.GPUs[0].Product = "NVIDIA A100-SXM4-40GB" }},
		{"PCI bus id", func(in *Inspect) { in.GPUs[0].PCIBusID = "0000:02:00.0" }},
		{"memory total (MiB)", func(in *Inspect) { in.GPUs[0].MemoryBytes = 40 << 30 }},
		{"power limit (W)", func(in *Inspect) { in.GPUs[0].PowerLimitWatts = 400 }},
		{"PCIe generation (current)", func(in *Inspect) { in.GPUs[0].PCIeLink.CurrentGen = 3 }},
		{"PCIe width (max)", func(in *Inspect) { in.GPUs[0].PCIeLink.MaxWidth = 8 }},
		{"ECC mode (current)", func(in *Inspect) { in.GPUs[0].ECC.Enabled = false }},
		{"ECC mode (pending)", func(in *Inspect) { in.GPUs[0].ECC.Pending = false }},
		{"MIG mode (current)", func(in *Inspect) { in.GPUs[0].MIG.Enabled = false }},
		{"driver version", func(in *Inspect) { in.GPUDriver.DriverVersion = "535.54" }},
		{"CUDA version", func(in *Inspect) { in.GPUDriver.CUDAVersion = "12.4" }},
		{"architecture", func(in *Inspect) { in.GPUs[0].Architecture = "hopper" }},
		{"NVLink links active", func(in *Inspect) {
			in.GPUs[0].Interconnect = &gpu.Interconnect{Kind: "nvlink", Links: 12, Active: 12}
		}},
		{"NVLink fabric state", func(in *Inspect) { in.GPUs[0].Fabric = &gpu.Fabric{State: gpu.FabricCompleted, Status: "success"} }},
	}
	for _, w := range wrong {
		in := a100Agent(t)
		w.edit(in)
		d := differing(CompareNVIDIAFacts(in, smi, noLinks))
		if len(d) != 1 || !strings.Contains(d[0], " "+w.fact+":") {
			t.Errorf("agent wrong about %s: differing rows %q", w.fact, d)
		}
	}

	// A GPU one side has and the other not.
	in := a100Agent(t)
	in.GPUs[0].UUID = "GPU-00000000-0000-0000-0000-000000000000"
	d := differing(CompareNVIDIAFacts(in, smi, noLinks))
	if len(d) != 2 || !strings.Contains(d[0], "(missing)") || !strings.Contains(d[1], "(missing)") {
		t.Errorf("unmatched UUIDs: %q", d)
	}
}

// On a GB200 tray nvidia-smi names the clique in <fabric>; the agent's
// clique must match it, and a zero cluster UUID (HGX) is no clique.
func TestCompareNVLinkClique(t *testing.T) {
	const uuid, id = "9F2B0C41-7E15-4A3D-8B6E-0123456789AB", "32766"
	for _, c := range []struct {
		name, agent, smiUUID string
		differ               bool
	}{
		{"same clique", "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.32766", uuid, false},
		{"agent has another clique", "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.5", uuid, true},
		{"agent has none", "", uuid, true},
		{"HGX: zero UUID on both sides", "", "00000000-0000-0000-0000-000000000000", false},
	} {
		smi := readSMI(t, "nvidia-smi-a100-sxm4-v12.xml")
		g := &smi.GPUs[0]
		g.Fabric.State, g.Fabric.Status, g.Fabric.ClusterUUID, g.Fabric.CliqueID = "Completed", "Success", c.smiUUID, id
		in := a100Agent(t)
		in.GPUs[0].Fabric = &gpu.Fabric{State: gpu.FabricCompleted, Status: "success", Clique: c.agent}
		d := differing(CompareNVIDIAFacts(in, smi, map[string]NVLinkStatus{}))
		if got := len(d) == 1 && strings.Contains(d[0], " NVLink clique:"); got != c.differ || (!c.differ && len(d) != 0) {
			t.Errorf("%s: differing rows %q", c.name, d)
		}
	}
}

// The driver without <power_readings> in DTD v12 (R515) and the v13 log
// (R595) both parse into the same comparisons; N/A modes agree with an
// agent that has none.
func TestCompareNVIDIAFactsOlderAndNewerLogs(t *testing.T) {
	for _, c := range []struct {
		file  string
		setup func(d *gpu.Device, smi *SMIGPU)
	}{
		{"nvidia-smi-a10g.xml", func(d *gpu.Device, _ *SMIGPU) {
			d.Product, d.PCIBusID, d.MemoryBytes, d.PowerLimitWatts = "NVIDIA A10G", "0000:00:1e.0", 23028<<20, 300
			d.Architecture, d.Serial, d.VBIOSVersion = "ampere", "0000000000000", "94.02.75.00.01"
			d.ECC = &gpu.ECCMode{Enabled: true, Pending: true}
		}},
		{"nvidia-smi-rtx-4000-sff-ada-v13.xml", func(d *gpu.Device, _ *SMIGPU) {
			d.Product, d.PCIBusID, d.MemoryBytes, d.PowerLimitWatts = "NVIDIA RTX 4000 SFF Ada Generation", "0000:06:00.0", 20475<<20, 70
			d.Architecture = "ada"
			d.ECC = &gpu.ECCMode{}
		}},
	} {
		t.Run(c.file, func(t *testing.T) {
			smi := readSMI(t, c.file)
			s := &smi.GPUs[0]
			in := readInspect(t)
			d := in.GPUs[0]
			d.UUID = s.UUID
			d.Serial, d.VBIOSVersion = na(s.Serial), na(s.VBIOSVersion)
			d.MIG, d.Fabric, d.Interconnect = gpu.MIG{}, nil, nil
			c.setup(&d, s)
			cg, _ := number(s.PCI.Link.Gen.Current)
			mg, _ := number(s.PCI.Link.Gen.Max)
			cw, _ := number(s.PCI.Link.Widths.Current)
			mw, _ := number(s.PCI.Link.Widths.Max)
			d.PCIeLink = &gpu.PCIeLink{CurrentGen: int(cg), MaxGen: int(mg), CurrentWidth: int(cw), MaxWidth: int(mw)}
			in.GPUs = []gpu.Device{d}
			in.GPUDriver.DriverVersion, in.GPUDriver.CUDAVersion = smi.DriverVersion, smi.CUDAVersion
			rows := CompareNVIDIAFacts(in, smi, map[string]NVLinkStatus{})
			if diff := differing(rows); len(diff) > 0 {
				t.Errorf("differ:\n%s", strings.Join(diff, "\n"))
			}
			if r, _ := find(rows, "MIG mode (current)"); r.Agent != "N/A" || r.Verdict != Agree {
				t.Errorf("MIG on a GPU without it: %+v", r)
			}
		})
	}
}

func TestParseNVLinkStatus(t *testing.T) {
	// nvidia-smi nvlink -s as printed on an H100 PCIe pair (4 inactive
	// links of 18) and, without UUIDs, by older drivers.
	out := "GPU 0: NVIDIA H100 PCIe (UUID: GPU-6968dfc2-d444-d92c-c36b-6abe53445cb9)\n" +
		"\t Link 0: 26.562 GB/s\n\t Link 1: 26.562 GB/s\n\t Link 2: <inactive>\n\t Link 3: <inactive>\n" +
		"GPU 1: Tesla V100-SXM2-16GB\n\t Link 0: 25.781 GB/s\n\t Link 1: 25.781 GB/s\n"
	got, err := ParseNVLinkStatus(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if got["GPU-6968dfc2-d444-d92c-c36b-6abe53445cb9"] != (NVLinkStatus{Links: 4, Active: 2}) || got["index 1"] != (NVLinkStatus{Links: 2, Active: 2}) {
		t.Errorf("got %+v", got)
	}

	in := a100Agent(t)
	in.GPUs[0].Interconnect = &gpu.Interconnect{Kind: "nvlink", Links: 4, Active: 3}
	smi := readSMI(t, "nvidia-smi-a100-sxm4-v12.xml")
	links := map[string]NVLinkStatus{in.GPUs[0].UUID: {Links: 4, Active: 2}}
	if d := differing(CompareNVIDIAFacts(in, smi, links)); len(d) != 1 || !strings.Contains(d[0], "NVLink links active: 3 vs 2") {
		t.Errorf("one link the agent calls up, nvidia-smi inactive: %q", d)
	}
}

func TestReadings(t *testing.T) {
	m := readMetrics(t, "dgx-h100-ib")
	t0 := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	samples := AgentSamples(m, t0)
	if len(samples) != 8 {
		t.Fatalf("%d GPU samples from the simulated DGX's /metrics", len(samples))
	}
	s := samples[0]
	uuid := s.UUID
	for _, r := range []Reading{Utilization, Power, TempGPU, TempMemory, ClockSM, ClockMemory, ClockGr, MemoryUsed, Energy, GPMSM, GPMTensor} {
		if _, ok := s.Values[r]; !ok {
			t.Errorf("no %s in the agent's /metrics", r)
		}
	}
	if s.Values[Utilization] <= 0 || s.Values[Power] <= 0 || s.Values[MemoryUsed] <= 0 {
		t.Errorf("GPU readings %v", s.Values)
	}
	watts := s.Values[Power]

	// A 60 s window: the agent scraped every second with the same values
	// and energy rising at its power; nvidia-smi every 250 ms.
	var agent, vendor []Sample
	csv := &bytes.Buffer{}
	for i := 0; i <= 60; i++ {
		a := Sample{At: t0.Add(time.Duration(i) * time.Second), UUID: uuid, Values: map[Reading]float64{}}
		for k, v := range s.Values {
			a.Values[k] = v
		}
		a.Values[Energy] = s.Values[Energy] + watts*float64(i)
		agent = append(agent, a)
	}
	for i := 0; i <= 240; i++ {
		at := t0.Add(time.Duration(i) * 250 * time.Millisecond)
		// nvidia-smi's view: utilization 5 points higher, power 2 % lower,
		// temperatures 2 degrees higher.
		csv.WriteString(at.Format("2006/01/02 15:04:05.000") + ", " + uuid + ", " + itoa(s.Values[Utilization]+5) + ", " + itoa(watts*0.98) + ", " +
			itoa(s.Values[TempGPU]+2) + ", " + itoa(s.Values[TempMemory]+2) + ", " +
			itoa(s.Values[ClockSM]) + ", " + itoa(s.Values[ClockMemory]) + ", " + itoa(s.Values[ClockGr]) + ", " + itoa(s.Values[MemoryUsed]) + "\n")
	}
	var fields []string
	for _, q := range QueryFields {
		fields = append(fields, q.Field)
	}
	vendor, err := ParseQueryCSV(csv, fields, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	// dmon --gpm-metrics 2,5: SM and tensor activity, percent.
	dmon := "# gpu    sm   mem   enc   dec   jpg   ofa  gpm_sm  gpm_tensor\n# Idx     %     %     %     %     %     %       %       %\n" +
		strings.Repeat("    0    46    52     0     0     0     0      "+itoa(s.Values[GPMSM])+"      "+itoa(s.Values[GPMTensor])+"\n", 60)
	gpm, err := ParseDmonGPM(strings.NewReader(dmon), map[int]string{0: uuid}, func(k int) time.Time { return t0.Add(time.Duration(k) * time.Second) })
	if err != nil || len(gpm) != 60 {
		t.Fatalf("dmon: %d samples, %v", len(gpm), err)
	}
	vendor = append(vendor, gpm...)

	rows := CompareReadings([]string{uuid}, agent, vendor, t0, t0.Add(60*time.Second))
	if d := differing(rows); len(d) > 0 {
		t.Errorf("readings within tolerance differ:\n%s", strings.Join(d, "\n"))
	}
	if r, ok := find(rows, "energy over the window (J) vs power integral"); !ok || r.Verdict != Agree {
		t.Errorf("energy row %+v", r)
	}
	if len(rows) != 11 {
		t.Errorf("%d rows, want 10 readings and energy", len(rows))
	}

	// The agent's power off by 20 %: power and energy differ.
	for i := range agent {
		agent[i].Values[Power] *= 1.2
		agent[i].Values[Energy] = s.Values[Energy] + 1.2*watts*float64(i)
	}
	d := differing(CompareReadings([]string{uuid}, agent, vendor, t0, t0.Add(60*time.Second)))
	if len(d) != 2 || !strings.Contains(d[0], "power (W)") || !strings.Contains(d[1], "energy") {
		t.Errorf("power 20%% high: %q", d)
	}
	// A reading the vendor has and the agent lacks differs; one the
	// vendor lacks is "not present".
	for i := range agent {
		delete(agent[i].Values, TempMemory)
	}
	for i := range vendor {
		delete(vendor[i].Values, GPMTensor)
	}
	rows = CompareReadings([]string{uuid}, agent, vendor, t0, t0.Add(60*time.Second))
	if r, _ := find(rows, string(TempMemory)+" mean"); r.Verdict != Differ {
		t.Errorf("memory temperature only from nvidia-smi: %+v", r)
	}
	if r, _ := find(rows, string(GPMTensor)+" mean"); r.Verdict != NotPresent {
		t.Errorf("tensor activity only from the agent: %+v", r)
	}
}

func itoa(v float64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestParseQueryCSVRejectsShortLines(t *testing.T) {
	if _, err := ParseQueryCSV(strings.NewReader("2026/12/07 01:00:00.000, GPU-x, 5\n"), []string{"utilization.gpu", "power.draw"}, time.UTC); err == nil {
		t.Error("a line with a missing column parsed")
	}
	got, err := ParseQueryCSV(strings.NewReader("2026/12/07 01:00:00.000, GPU-x, [N/A], 71.5\n"), []string{"utilization.gpu", "power.draw"}, time.UTC)
	if err != nil || len(got) != 1 || len(got[0].Values) != 1 || got[0].Values[Power] != 71.5 {
		t.Errorf("N/A utilization: %+v, %v", got, err)
	}
}

func TestCost(t *testing.T) {
	stat := []byte("4242 (gpunode agent) S 1 4242 4242 0 -1 4194560 2000 0 0 0 350 150 0 0 20 0 12 0 100 1000000 5000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")
	cpu, err := ProcCPU(stat)
	if err != nil || cpu != 5*time.Second {
		t.Fatalf("CPU %v, %v: want utime 350 + stime 150 ticks = 5s", cpu, err)
	}
	status := []byte("Name:\tgpunode-agent\nVmRSS:\t   36000 kB\nRssAnon:\t    9000 kB\nRssFile:\t   27000 kB\n")
	rss, anon, err := ProcMemory(status)
	if err != nil || rss != 36000<<10 || anon != 9000<<10 {
		t.Fatalf("memory %d %d %v", rss, anon, err)
	}
	rows := CostRows(Cost{CPU: 480 * time.Millisecond, Window: 60 * time.Second, Interval: time.Second, GPUs: 8, Scrapes: 60, RSS: rss, RssAnon: anon})
	if rows[0].Agent != "1.00 ms" || rows[0].Verdict != Recorded || rows[1].Verdict != Recorded {
		t.Errorf("cost rows %+v", rows)
	}
	rows = CostRows(Cost{CPU: 6 * time.Second, Window: 60 * time.Second, Interval: time.Second, GPUs: 8, RssAnon: 100 << 20})
	if rows[0].Verdict != Recorded || !strings.HasPrefix(rows[0].Note, "OVER BUDGET") || !strings.HasPrefix(rows[1].Note, "OVER BUDGET") {
		t.Errorf("over budget: %+v", rows)
	}
}

func TestNVMLCallRows(t *testing.T) {
	in := readInspect(t)
	m := readMetrics(t, "dgx-h100-ib")
	rows := NVMLCallRows(in, m)
	avail := map[string]string{}
	for _, r := range rows {
		avail[r.Fact] = r.Agent
	}
	// The simulated DGX H100 answers every call it has (Hopper: GPM,
	// fabric, row remapping), and has no MIG devices.
	for _, sym := range []string{"nvmlDeviceGetGpuFabricInfo", "nvmlGpmMetricsGet", "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetRemappedRows"} {
		if avail[sym] != string(Available) {
			t.Errorf("%s: %s", sym, avail[sym])
		}
	}
	if avail["nvmlDeviceGetMigDeviceHandleByIndex"] != string(Unknown) || avail["nvmlDeviceGetPcieThroughput"] != string(Unknown) {
		t.Errorf("calls the agent has no reason to make here (no MIG mode, wide PCIe counters): %s, %s",
			avail["nvmlDeviceGetMigDeviceHandleByIndex"], avail["nvmlDeviceGetPcieThroughput"])
	}
	// Without the reserved-memory series (a driver before R510), _v2 is
	// recorded as not available.
	delete(m, "gpunode_gpu_memory_reserved_bytes")
	for _, r := range NVMLCallRows(in, m) {
		if r.Fact == "nvmlDeviceGetMemoryInfo_v2" && r.Agent != string(NotAvailable) {
			t.Errorf("_v2 without the reserved series: %s", r.Agent)
		}
	}
}

// Every NVML symbol gpu/nvml names is in the table, and nothing else.
func TestNVMLCallsListEverySymbol(t *testing.T) {
	used := nvmlSymbolsInAgent(t)
	listed := map[string]bool{}
	for _, c := range NVMLCalls {
		listed[c.Symbol] = true
		if !used[c.Symbol] {
			t.Errorf("%s is listed but gpu/nvml does not call it", c.Symbol)
		}
	}
	for s := range used {
		if !listed[s] {
			t.Errorf("gpu/nvml calls %s: add it to NVMLCalls with its driver branch", s)
		}
	}
}

// docs/hardware.md holds the NVML calls and tolerance tables as the code
// has them.
func TestHardwareDoc(t *testing.T) {
	doc, err := os.ReadFile("../docs/hardware.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, table := range map[string]string{"NVML calls": NVMLCallsMarkdown(), "tolerances": TolerancesMarkdown()} {
		if !strings.Contains(string(doc), table) {
			t.Errorf("docs/hardware.md does not hold the %s table as the code has it; put this there:\n%s", name, table)
		}
	}
}

func TestReportOutput(t *testing.T) {
	rep := &Report{Rows: []Row{
		exact("nvidia", "gpu0", "product", "NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"),
		exact("nvidia", "gpu0", "UUID", "GPU-a", "GPU-b"),
		absentRow("nvidia", "gpu0", "power limit (W)", "700.00", "no limit"),
	}}
	if !rep.Failed() {
		t.Error("a differing row does not fail the report")
	}
	var txt bytes.Buffer
	if err := rep.Table(&txt); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(txt.String(), "FAIL: 1 agree, 1 differ, 1 not present, 0 recorded") || !strings.Contains(txt.String(), "GPU-a") {
		t.Errorf("table:\n%s", txt.String())
	}
	var js bytes.Buffer
	if err := rep.JSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Rows) != 3 || back.Rows[1].Verdict != Differ {
		t.Errorf("JSON round trip: %v %+v", err, back)
	}
}

func TestSourceRows(t *testing.T) {
	in := readInspect(t)
	m := readMetrics(t, "dgx-h100-ib-degraded")
	got := map[string]string{}
	for _, r := range SourceRows(in, m) {
		got[r.Fact] = r.Agent
	}
	if got["nvml"] != "ok" || got["nvml-sample"] == "" || got["rdma-counters"] == "" {
		t.Errorf("source rows %v", got)
	}
}
