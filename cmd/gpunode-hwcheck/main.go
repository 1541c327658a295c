// Command gpunode-hwcheck is the hardware conformance harness: it runs the
// built gpunode-agent on the machine it is on and compares every fact and
// reading with the vendor's own tool (nvidia-smi, amd-smi, ibv_devinfo,
// rdma; its RDMA loopback probe with perftest), under a GPU load it
// generates itself. It prints a table (and writes it and the JSON, with
// every raw output, to --out) and exits 1 when something disagrees. See
// docs/hardware.md.
//
// It is a separate program, not an agent subcommand, so that it treats the
// agent as users do, through its binary's outputs (inspect -o json,
// /metrics), and shares none of the agent's code paths to the hardware:
// a bug in gpu/nvml cannot hide itself by being on both sides.
package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/gpunode/gpunode/hwcheck"
)

//go:embed load.py
var loadScript []byte

type options struct {
	agent          string
	out            string
	load           bool
	loadSeconds    time.Duration
	python         string
	sampleInterval time.Duration
	// probeRounds and probeIterations: the loopback probe against
	// perftest (0 iterations: the agent's defaults).
	probeRounds     int
	probeIterations int
	// simulate runs the agent on a simulated node: only for testing the
	// harness itself against fake vendor tools.
	simulate string
}

// agentArgs are the global flags the agent gets before its command.
func (o options) agentArgs(cmd ...string) []string {
	if o.simulate != "" {
		return append([]string{"--simulate=" + o.simulate}, cmd...)
	}
	return cmd
}

func main() {
	app := kingpin.New("gpunode-hwcheck", "Compare what gpunode-agent reports on this machine with the vendors' tools (nvidia-smi, amd-smi, ibv_devinfo, rdma), and its RDMA loopback probe with perftest, under a GPU load. Exits 1 when something disagrees.")
	var o options
	app.Flag("agent", "The gpunode-agent binary to check.").Default("bin/gpunode-agent").StringVar(&o.agent)
	app.Flag("out", "Directory for report.txt, report.json and the raw outputs of every tool (created).").StringVar(&o.out)
	app.Flag("load", "Load the GPUs with PyTorch or CuPy while comparing readings.").Default("true").BoolVar(&o.load)
	app.Flag("load.duration", "How long the load (and the readings window within it) runs.").Default("60s").DurationVar(&o.loadSeconds)
	app.Flag("python", "Python interpreter for the load.").Default("python3").StringVar(&o.python)
	app.Flag("agent.sample-interval", "The agent's --metrics.sample-interval while it is watched.").Default("1s").DurationVar(&o.sampleInterval)
	app.Flag("perftest.rounds", "Rounds of the agent's loopback probe beside perftest's ib_write_bw and ib_send_lat (where installed and a port is ACTIVE); 0 skips them.").Default("3").IntVar(&o.probeRounds)
	app.Flag("perftest.iterations", "Iterations of each probe and perftest run (0: the agent's defaults, as perftest's: 5000 writes, 1000 round trips).").Default("0").IntVar(&o.probeIterations)
	app.Flag("agent.simulate", "Run the agent on this simulated node (tests of the harness with fake vendor tools).").Hidden().StringVar(&o.simulate)
	kingpin.MustParse(app.Parse(os.Args[1:]))

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, log, o)
	if err != nil {
		log.Error("hwcheck failed", "err", err)
		os.Exit(2)
	}
	if rep.Failed() {
		os.Exit(1)
	}
}

// raw keeps every tool's output for --out.
type raw struct {
	mu    sync.Mutex
	files map[string][]byte
}

func (r *raw) put(name string, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.files == nil {
		r.files = map[string][]byte{}
	}
	r.files[name] = b
}

// tool runs a command with a timeout and returns its standard output.
func tool(ctx context.Context, timeout time.Duration, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func run(ctx context.Context, log *slog.Logger, o options) (*hwcheck.Report, error) {
	var files raw
	rep := &hwcheck.Report{}
	rep.Host, _ = os.Hostname()

	out, err := tool(ctx, 2*time.Minute, o.agent, o.agentArgs("inspect", "-o", "json")...)
	files.put("inspect.json", out)
	if err != nil {
		return nil, err
	}
	in, err := hwcheck.ParseInspect(bytes.NewReader(out))
	if err != nil {
		return nil, err
	}
	if v, err := tool(ctx, 10*time.Second, o.agent, "version"); err == nil {
		rep.Tools = append(rep.Tools, "gpunode-agent "+strings.TrimSpace(string(v)))
	}

	_, smiErr := exec.LookPath("nvidia-smi")
	haveSMI := smiErr == nil
	var smi *hwcheck.SMILog
	if haveSMI {
		rep.Tools = append(rep.Tools, "nvidia-smi")
		smi, err = nvidiaFacts(ctx, rep, in, &files)
		if err != nil {
			return nil, err
		}
	} else {
		rep.Rows = append(rep.Rows, notPresent("nvidia", "nvidia-smi", fmt.Sprintf("not on PATH; the agent found %d GPUs (nvml source %s)", len(in.GPUs), state(in, "nvml"))))
	}

	watched, err := watchAgent(ctx, log, o, in, haveSMI && smi != nil && len(smi.GPUs) > 0, &files)
	if err != nil {
		return nil, err
	}
	rep.Rows = append(rep.Rows, watched...)

	rep.Rows = append(rep.Rows, rdmaRows(ctx, rep, in, &files)...)
	rep.Rows = append(rep.Rows, perftestRows(ctx, log, o, rep, in, &files)...)
	rep.Rows = append(rep.Rows, amdRows(ctx, rep, in, &files)...)

	if err := write(o.out, rep, &files); err != nil {
		return nil, err
	}
	return rep, rep.Table(os.Stdout)
}

func state(in *hwcheck.Inspect, source string) string {
	st, msg := in.Source(source)
	if msg != "" {
		return st + ": " + msg
	}
	return st
}

func notPresent(section, fact, note string) hwcheck.Row {
	return hwcheck.Row{Section: section, Fact: fact, Agent: "-", Vendor: "not present", Verdict: hwcheck.NotPresent, Note: note}
}

func nvidiaFacts(ctx context.Context, rep *hwcheck.Report, in *hwcheck.Inspect, files *raw) (*hwcheck.SMILog, error) {
	x, err := tool(ctx, time.Minute, "nvidia-smi", "-q", "-x")
	files.put("nvidia-smi-q-x.xml", x)
	if err != nil {
		// nvidia-smi without a working driver: the agent must say the
		// same (its nvml source not ok).
		rep.Rows = append(rep.Rows, hwcheck.Row{Section: "nvidia", Fact: "driver answers", Agent: state(in, "nvml"),
			Vendor: err.Error(), Verdict: verdict(state(in, "nvml") != "ok")})
		return nil, nil
	}
	smi, err := hwcheck.ParseSMIXML(bytes.NewReader(x))
	if err != nil {
		return nil, err
	}
	var links map[string]hwcheck.NVLinkStatus
	if nv, err := tool(ctx, time.Minute, "nvidia-smi", "nvlink", "-s"); err == nil {
		files.put("nvidia-smi-nvlink-s.txt", nv)
		if links, err = hwcheck.ParseNVLinkStatus(bytes.NewReader(nv)); err != nil {
			return nil, err
		}
	} else {
		// No link states to compare: the NVLink rows say so rather than
		// read it as "no links".
		files.put("nvidia-smi-nvlink-s.txt", []byte(err.Error()))
	}
	rep.Tools = append(rep.Tools, "NVIDIA driver "+smi.DriverVersion)
	rep.Rows = append(rep.Rows, hwcheck.CompareNVIDIAFacts(in, smi, links)...)
	return smi, nil
}

func verdict(agree bool) hwcheck.Verdict {
	if agree {
		return hwcheck.Agree
	}
	return hwcheck.Differ
}

// freePort picks a loopback port for the watched agent.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// watchAgent runs the agent daemon (standalone: no NODE_NAME, so it
// publishes nothing), loads the GPUs, and samples both the agent's
// /metrics and nvidia-smi over the load window; then compares readings,
// the agent's cost and which NVML calls answered.
func watchAgent(ctx context.Context, log *slog.Logger, o options, in *hwcheck.Inspect, nvidia bool, files *raw) ([]hwcheck.Row, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	agent := exec.CommandContext(ctx, o.agent, o.agentArgs("run", "--web.listen-address="+addr,
		"--metrics.sample-interval="+o.sampleInterval.String(), "--discovery.interval=10m")...)
	agent.Env = withoutEnv(os.Environ(), "NODE_NAME")
	var agentLog bytes.Buffer
	agent.Stdout, agent.Stderr = &agentLog, &agentLog
	agent.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := agent.Start(); err != nil {
		return nil, fmt.Errorf("start the agent: %w", err)
	}
	defer func() {
		_ = agent.Process.Signal(syscall.SIGTERM)
		_ = agent.Wait()
		files.put("agent.log", agentLog.Bytes())
	}()
	url := "http://" + addr
	if err := waitReady(ctx, url+"/readyz", time.Minute); err != nil {
		return nil, fmt.Errorf("agent did not get ready: %w\n%s", err, agentLog.String())
	}

	window := 5 * time.Second // no GPU load: a short window for the cost
	warm := 2 * time.Second
	var loadCmd *exec.Cmd
	var loadOut bytes.Buffer
	loadNote := "no NVIDIA GPU with nvidia-smi: no load"
	if nvidia && o.load {
		script := filepath.Join(os.TempDir(), fmt.Sprintf("gpunode-hwcheck-load-%d.py", os.Getpid()))
		if err := os.WriteFile(script, loadScript, 0o600); err != nil {
			return nil, fmt.Errorf("write the load script: %w", err)
		}
		defer os.Remove(script)
		loadCmd = exec.CommandContext(ctx, o.python, script, strconv.FormatFloat(o.loadSeconds.Seconds(), 'f', 0, 64))
		loadCmd.Stdout, loadCmd.Stderr = &loadOut, &loadOut
		if err := loadCmd.Start(); err != nil {
			loadNote = "load not started: " + err.Error()
			loadCmd = nil
		} else {
			// Model load and tensor set-up take a few seconds; the
			// window starts after them and ends before the load does.
			warm = 15 * time.Second
			window = o.loadSeconds - warm - 5*time.Second
			loadNote = "PyTorch or CuPy load"
		}
	} else if nvidia {
		loadNote = "--load=false: idle readings"
		window = 20 * time.Second
	}
	if window < 5*time.Second {
		window = 5 * time.Second
	}

	smiCtx, smiStop := context.WithCancel(ctx)
	defer smiStop()
	var smiOut, dmonOut bytes.Buffer
	var smiCmd, dmonCmd *exec.Cmd
	var fields []string
	if nvidia {
		fields = queryFields(ctx)
		q := append([]string{"timestamp", "uuid"}, fields...)
		smiCmd = exec.CommandContext(smiCtx, "nvidia-smi", "--query-gpu="+strings.Join(q, ","), "--format=csv,noheader,nounits", "-lms", "250")
		smiCmd.Stdout = &smiOut
		interruptOnCancel(smiCmd)
		if err := smiCmd.Start(); err != nil {
			return nil, fmt.Errorf("start nvidia-smi --query-gpu: %w", err)
		}
	}

	if err := sleep(ctx, warm); err != nil {
		return nil, err
	}
	if nvidia {
		// GPM activity (2: SM, 5: any tensor pipe), one line per GPU per
		// second, for the window.
		dmonCmd = exec.CommandContext(smiCtx, "nvidia-smi", "dmon", "-s", "u", "--gpm-metrics", "2,5", "-d", "1",
			"-c", strconv.Itoa(int(window.Seconds())))
		dmonCmd.Stdout, dmonCmd.Stderr = &dmonOut, &dmonOut
		interruptOnCancel(dmonCmd)
		if err := dmonCmd.Start(); err != nil {
			dmonCmd = nil
		}
	}
	from := time.Now()
	cpu0, err := procCPU(agent.Process.Pid)
	if err != nil {
		return nil, err
	}
	var agentSamples []hwcheck.Sample
	var last hwcheck.Metrics
	var scrapes int
	var dmonStamps []time.Time
	for t := time.NewTicker(time.Second); ; {
		m, body, err := scrape(ctx, url+"/metrics")
		if err != nil {
			return nil, err
		}
		scrapes++
		now := time.Now()
		agentSamples = append(agentSamples, hwcheck.AgentSamples(m, now)...)
		dmonStamps = append(dmonStamps, now)
		last = m
		files.put("metrics-last.prom", body)
		if now.Sub(from) >= window {
			t.Stop()
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	to := time.Now()
	cpu1, err := procCPU(agent.Process.Pid)
	if err != nil {
		return nil, err
	}
	rss, anon, err := procMemory(agent.Process.Pid)
	if err != nil {
		return nil, err
	}
	// dmon stops by itself after its count; give it a moment, then stop
	// both samplers.
	_ = sleep(ctx, 2*time.Second)
	smiStop()
	if dmonCmd != nil {
		_ = dmonCmd.Wait()
	}
	if smiCmd != nil {
		_ = smiCmd.Wait()
	}
	if loadCmd != nil {
		err := loadCmd.Wait()
		files.put("load.log", loadOut.Bytes())
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee) && ee.ExitCode() == 3:
			loadNote = "no PyTorch or CuPy: readings compared at idle"
		case err != nil:
			loadNote = "load failed (" + err.Error() + "): see load.log"
		}
	}

	var rows []hwcheck.Row
	rows = append(rows, hwcheck.Row{Section: "nvidia-load", Fact: "load", Agent: "-", Vendor: "-", Verdict: hwcheck.Recorded,
		Note: fmt.Sprintf("%s; window %.0fs", loadNote, to.Sub(from).Seconds())})
	if nvidia {
		files.put("nvidia-smi-query-gpu.csv", smiOut.Bytes())
		files.put("nvidia-smi-dmon-gpm.txt", dmonOut.Bytes())
		vendor, err := hwcheck.ParseQueryCSV(bytes.NewReader(smiOut.Bytes()), fields, time.Local)
		if err != nil {
			return nil, err
		}
		byIndex := map[int]string{}
		var uuids []string
		for _, g := range in.GPUs {
			byIndex[g.Index] = g.UUID
			uuids = append(uuids, g.UUID)
		}
		// dmon prints one line per GPU per second from its start; stamp
		// the k-th round with the k-th second of the window.
		gpus := max(len(in.GPUs), 1)
		gpm, err := hwcheck.ParseDmonGPM(bytes.NewReader(dmonOut.Bytes()), byIndex, func(k int) time.Time {
			return from.Add(time.Duration(k/gpus) * time.Second)
		})
		if err != nil {
			gpm = nil // dmon without --gpm-metrics (before R525) prints usage
		}
		vendor = append(vendor, gpm...)
		rows = append(rows, hwcheck.CompareReadings(uuids, agentSamples, vendor, from, to)...)
	}
	rows = append(rows, hwcheck.CostRows(hwcheck.Cost{CPU: cpu1 - cpu0, Window: to.Sub(from), Interval: o.sampleInterval,
		GPUs: len(in.GPUs), Scrapes: scrapes, RSS: rss, RssAnon: anon})...)
	rows = append(rows, hwcheck.SourceRows(in, last)...)
	if nvidia || len(in.GPUs) > 0 {
		rows = append(rows, hwcheck.NVMLCallRows(in, last)...)
	}
	return rows, nil
}

// interruptOnCancel makes a sampler stop as on Ctrl-C when its context
// ends, so it can flush the lines it buffered for the pipe, and kills it
// only if it has not exited 5 s later.
func interruptOnCancel(cmd *exec.Cmd) {
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
}

// queryFields are the harness's --query-gpu fields this nvidia-smi knows
// (an unknown field fails the whole query).
func queryFields(ctx context.Context) []string {
	help, _ := tool(ctx, 30*time.Second, "nvidia-smi", "--help-query-gpu")
	var out []string
	for _, f := range hwcheck.QueryFields {
		if len(help) == 0 || bytes.Contains(help, []byte(`"`+f.Field+`"`)) {
			out = append(out, f.Field)
		}
	}
	return out
}

func withoutEnv(env []string, name string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, name+"=") {
			out = append(out, e)
		}
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func waitReady(ctx context.Context, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func scrape(ctx context.Context, url string) (hwcheck.Metrics, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("scrape the agent: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("scrape the agent: %w", err)
	}
	m, err := hwcheck.ParseMetrics(bytes.NewReader(body))
	return m, body, err
}

func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("agent CPU: %w", err)
	}
	return hwcheck.ProcCPU(b)
}

func procMemory(pid int) (rss, anon uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("agent memory: %w", err)
	}
	return hwcheck.ProcMemory(b)
}

func rdmaRows(ctx context.Context, rep *hwcheck.Report, in *hwcheck.Inspect, files *raw) []hwcheck.Row {
	var ibv []hwcheck.IBVDevice
	var links []hwcheck.RDMALink
	var rows []hwcheck.Row
	if _, err := exec.LookPath("ibv_devinfo"); err != nil {
		rows = append(rows, notPresent("rdma", "ibv_devinfo", fmt.Sprintf("not on PATH; the agent found %d RDMA devices", len(in.RDMADevices))))
	} else {
		out, err := tool(ctx, time.Minute, "ibv_devinfo", "-v")
		files.put("ibv_devinfo-v.txt", out)
		switch {
		case err != nil && len(in.RDMADevices) == 0:
			// ibv_devinfo exits 1 with "No IB devices found".
			rows = append(rows, notPresent("rdma", "ibv_devinfo", "no devices: "+err.Error()))
		case err != nil:
			rows = append(rows, hwcheck.Row{Section: "rdma", Fact: "ibv_devinfo", Agent: strconv.Itoa(len(in.RDMADevices)) + " devices",
				Vendor: err.Error(), Verdict: hwcheck.Differ})
		default:
			rep.Tools = append(rep.Tools, "ibv_devinfo")
			if ibv, err = hwcheck.ParseIBVDevinfo(bytes.NewReader(out)); err != nil {
				rows = append(rows, hwcheck.Row{Section: "rdma", Fact: "ibv_devinfo", Vendor: err.Error(), Verdict: hwcheck.Differ})
			} else if ibv == nil {
				ibv = []hwcheck.IBVDevice{}
			}
		}
	}
	if _, err := exec.LookPath("rdma"); err != nil {
		rows = append(rows, notPresent("rdma", "rdma link", "iproute2's rdma is not on PATH"))
	} else if out, err := tool(ctx, time.Minute, "rdma", "link"); err != nil {
		rows = append(rows, notPresent("rdma", "rdma link", err.Error()))
	} else {
		files.put("rdma-link.txt", out)
		rep.Tools = append(rep.Tools, "rdma")
		if links, err = hwcheck.ParseRDMALink(bytes.NewReader(out)); err != nil {
			rows = append(rows, hwcheck.Row{Section: "rdma", Fact: "rdma link", Vendor: err.Error(), Verdict: hwcheck.Differ})
		}
		rows = append(rows, hwcheck.Row{Section: "rdma", Fact: "ports (rdma link)", Agent: strconv.Itoa(ports(in)), Vendor: strconv.Itoa(len(links)),
			Verdict: verdict(ports(in) == len(links))})
	}
	return append(rows, hwcheck.CompareRDMA(in.RDMADevices, ibv, links)...)
}

func ports(in *hwcheck.Inspect) int {
	n := 0
	for _, d := range in.RDMADevices {
		n += len(d.Ports)
	}
	return n
}

func amdRows(ctx context.Context, rep *hwcheck.Report, in *hwcheck.Inspect, files *raw) []hwcheck.Row {
	amd := 0
	for _, g := range in.GPUs {
		if g.Vendor == "amd" {
			amd++
		}
	}
	if _, err := exec.LookPath("amd-smi"); err != nil {
		return []hwcheck.Row{notPresent("amd", "amd-smi", fmt.Sprintf("not on PATH; the agent found %d AMD GPUs", amd))}
	}
	rep.Tools = append(rep.Tools, "amd-smi")
	for _, args := range [][]string{{"static", "--json"}, {"metric", "--json"}} {
		out, err := tool(ctx, 2*time.Minute, "amd-smi", args...)
		if err != nil {
			out = append(out, []byte("\n"+err.Error())...)
		}
		files.put("amd-smi-"+args[0]+".json", out)
	}
	static, err := hwcheck.ParseAMDSMIStatic(bytes.NewReader(files.files["amd-smi-static.json"]))
	if err != nil {
		return []hwcheck.Row{{Section: "amd", Fact: "amd-smi static --json", Agent: strconv.Itoa(amd) + " GPUs", Vendor: err.Error(), Verdict: hwcheck.Differ}}
	}
	rows := hwcheck.CompareAMD(in, static)
	metrics, err := hwcheck.ParseAMDSMIMetric(bytes.NewReader(files.files["amd-smi-metric.json"]))
	if err != nil {
		return append(rows, hwcheck.Row{Section: "amd", Fact: "amd-smi metric --json", Agent: strconv.Itoa(amd) + " GPUs", Vendor: err.Error(), Verdict: hwcheck.Differ})
	}
	// The readings against the agent's last scrape of the watch window.
	last, ok := files.files["metrics-last.prom"]
	if !ok {
		return append(rows, notPresent("amd", "amd-smi metric readings", "the agent's /metrics was not scraped"))
	}
	m, err := hwcheck.ParseMetrics(bytes.NewReader(last))
	if err != nil {
		return append(rows, hwcheck.Row{Section: "amd", Fact: "agent /metrics", Agent: err.Error(), Vendor: "-", Verdict: hwcheck.Differ})
	}
	return append(rows, hwcheck.CompareAMDReadings(in, static, metrics, m)...)
}

// write puts the report and every raw output under dir.
func write(dir string, rep *hwcheck.Report, files *raw) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	var txt, js bytes.Buffer
	if err := rep.Table(&txt); err != nil {
		return err
	}
	if err := rep.JSON(&js); err != nil {
		return err
	}
	files.put("report.txt", txt.Bytes())
	files.put("report.json", js.Bytes())
	for name, b := range files.files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// perftestRows runs the agent's loopback probe and perftest's
// ib_write_bw and ib_send_lat with the same parameters on each ACTIVE
// port, alternating round by round so host load hits both alike, and
// compares them (hwcheck.ComparePerftest). Without perftest or an ACTIVE
// port the rows say so and are not a failure.
func perftestRows(ctx context.Context, log *slog.Logger, o options, rep *hwcheck.Report, in *hwcheck.Inspect, files *raw) []hwcheck.Row {
	const fact = "probe vs perftest"
	for _, t := range []string{"ib_write_bw", "ib_send_lat"} {
		if _, err := exec.LookPath(t); err != nil {
			return []hwcheck.Row{notPresent("rdma-probe", fact, t+" is not on PATH (perftest not installed): probes not compared")}
		}
	}
	active := 0
	for _, d := range in.RDMADevices {
		for _, p := range d.Ports {
			if p.Active() {
				active++
			}
		}
	}
	if active == 0 {
		return []hwcheck.Row{notPresent("rdma-probe", fact, fmt.Sprintf("no ACTIVE RDMA port (the agent found %d devices): nothing to probe", len(in.RDMADevices)))}
	}
	if o.probeRounds <= 0 {
		return []hwcheck.Row{notPresent("rdma-probe", fact, "--perftest.rounds=0")}
	}
	rep.Tools = append(rep.Tools, "perftest (ib_write_bw, ib_send_lat)")
	var ports []string
	rounds := map[string][]hwcheck.PerftestRound{}
	var rows []hwcheck.Row
	for round := 1; round <= o.probeRounds; round++ {
		args := o.agentArgs("probe", "loopback", "-o", "json")
		if o.probeIterations > 0 {
			args = append(args, "--iterations="+strconv.Itoa(o.probeIterations))
		}
		out, err := tool(ctx, 5*time.Minute, o.agent, args...)
		files.put(fmt.Sprintf("probe-loopback-%d.json", round), out)
		pr, perr := hwcheck.ParseProbeReport(bytes.NewReader(out))
		if perr != nil {
			// The agent exits 1 when a probe failed, with the JSON
			// still printed; only unreadable output ends the rounds.
			return append(rows, hwcheck.Row{Section: "rdma-probe", Fact: "probe loopback", Agent: fmt.Sprint(errors.Join(err, perr)), Vendor: "-", Verdict: hwcheck.Differ})
		}
		for _, e := range pr.Errors {
			rows = append(rows, hwcheck.Row{Section: "rdma-probe", Fact: "probe loopback", Agent: e, Vendor: "-", Verdict: hwcheck.Differ,
				Note: fmt.Sprintf("round %d", round)})
		}
		byPort := map[string]*hwcheck.PerftestRound{}
		var order []string
		for i := range pr.Results {
			r := &pr.Results[i]
			if r.Local.Device == "" {
				continue
			}
			name := fmt.Sprintf("%s/%d", r.Local.Device, r.Local.Port)
			pair, ok := byPort[name]
			if !ok {
				pair = &hwcheck.PerftestRound{}
				byPort[name] = pair
				order = append(order, name)
			}
			switch r.Kind {
			case "write_bw":
				pair.ProbeBW = r
			case "send_lat":
				pair.ProbeLat = r
			}
		}
		for _, name := range order {
			r := byPort[name]
			if !slices.Contains(ports, name) {
				ports = append(ports, name)
			}
			if p := r.ProbeBW; p != nil {
				var bw hwcheck.PerftestBW
				out, err := perftest(ctx, log, p, "ib_write_bw", func(b []byte) (err error) {
					bw, err = hwcheck.ParsePerftestBW(bytes.NewReader(b))
					return err
				}, "-s", strconv.Itoa(p.Size), "-n", strconv.Itoa(p.Iterations), "-t", strconv.Itoa(p.Depth))
				files.put(fmt.Sprintf("ib_write_bw-%s-%d.txt", strings.ReplaceAll(name, "/", "-"), round), out)
				if err == nil {
					r.BW = &bw
				}
				r.BWErr = err
			}
			if p := r.ProbeLat; p != nil {
				var lat hwcheck.PerftestLat
				out, err := perftest(ctx, log, p, "ib_send_lat", func(b []byte) (err error) {
					lat, err = hwcheck.ParsePerftestLat(bytes.NewReader(b))
					return err
				}, "-s", strconv.Itoa(p.Size), "-n", strconv.Itoa(p.Iterations))
				files.put(fmt.Sprintf("ib_send_lat-%s-%d.txt", strings.ReplaceAll(name, "/", "-"), round), out)
				if err == nil {
					r.Lat = &lat
				}
				r.LatErr = err
			}
			rounds[name] = append(rounds[name], *r)
		}
	}
	if len(ports) == 0 {
		return append(rows, hwcheck.Row{Section: "rdma-probe", Fact: fact, Agent: "no loopback result", Vendor: "-", Verdict: hwcheck.Differ,
			Note: fmt.Sprintf("%d ACTIVE ports", active)})
	}
	for _, name := range ports {
		rows = append(rows, hwcheck.ComparePerftest(name, rounds[name])...)
	}
	return rows
}

// perftest runs a perftest server and client on the probe's port (the
// client to 127.0.0.1: loopback, as the probe) and returns the client's
// output once parse accepts it. -F: perftest refuses to report when it cannot trust the CPU
// clock's frequency (VMs, cpufreq scaling) unless told to go on; it
// still sometimes refuses, so a run is tried up to three times.
func perftest(ctx context.Context, log *slog.Logger, p *hwcheck.ProbeResult, name string, parse func([]byte) error, args ...string) ([]byte, error) {
	base := []string{"-d", p.Local.Device, "-i", strconv.Itoa(p.Local.Port), "-F"}
	if p.Local.GIDIndex >= 0 {
		base = append(base, "-x", strconv.Itoa(p.Local.GIDIndex))
	}
	base = append(base, args...)
	var out []byte
	var err error
	for try := 1; try <= 3; try++ {
		out, err = perftestOnce(ctx, name, base)
		if err == nil {
			err = parse(out)
		}
		if err == nil {
			return out, nil
		}
		log.Warn("perftest gave no result", "tool", name, "try", try, "err", err)
	}
	return out, err
}

func perftestOnce(ctx context.Context, name string, args []string) ([]byte, error) {
	srvCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var srvOut bytes.Buffer
	srv := exec.CommandContext(srvCtx, name, args...)
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("start %s server: %w", name, err)
	}
	// The server listens on its TCP port within a moment; the client
	// gives up at once when nobody does.
	if err := sleep(ctx, time.Second); err != nil {
		cancel()
		_ = srv.Wait()
		return nil, err
	}
	out, err := tool(ctx, 2*time.Minute, name, append(args, "127.0.0.1")...)
	if err != nil {
		// A server whose client never came waits for ever.
		cancel()
	}
	if werr := srv.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("%s server: %w: %s", name, werr, strings.TrimSpace(srvOut.String()))
	}
	return out, err
}
