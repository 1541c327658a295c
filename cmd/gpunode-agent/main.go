// Command gpunode-agent is the gpunode node agent: it discovers, verifies
// and labels GPU and RDMA capabilities, tunes the host and exports metrics.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/coreos/go-systemd/v22/daemon"
	"k8s.io/klog/v2"

	"github.com/gpunode/gpunode/agent"
	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/exporters"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/publish"
	"github.com/gpunode/gpunode/report"
	"github.com/gpunode/gpunode/sim"
)

// Set by the linker: -X main.version=... -X main.revision=...
var (
	version  = "dev"
	revision = "unknown"
)

// Exit codes: 0 success, 1 a runtime failure, 2 bad usage or configuration.
const (
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// cli holds the parsed flags.
type cli struct {
	configFile  string
	configCheck bool
	hostRoot    string
	simulate    string
	logLevel    string
	logFormat   string
	listen      string
	webConfig   string
	interval    time.Duration
	sample      time.Duration
	dcgmCompat  bool
	output      string
	kubeconfig  string
	allNodes    bool
	taintKeys   []string
	instance    string

	set map[string]*bool // flags the user gave explicitly
	// overrides apply the flags that stand for configuration keys, in the
	// order declared, when the user gave them.
	overrides []override
}

type override struct {
	flag  string
	apply func(*config.Config)
}

// flagger is what declares flags: the application or one of its commands.
type flagger interface {
	Flag(name, help string) *kingpin.FlagClause
}

// flag declares a flag whose explicit use is recorded in c.set.
func (c *cli) flag(on flagger, name, help string) *kingpin.FlagClause {
	b := new(bool)
	c.set[name] = b
	return on.Flag(name, help).IsSetByUser(b)
}

// configFlag declares a flag that, when given, overrides the
// configuration file through apply.
func (c *cli) configFlag(on flagger, name, help string, apply func(*config.Config)) *kingpin.FlagClause {
	c.overrides = append(c.overrides, override{flag: name, apply: apply})
	return c.flag(on, name, help)
}

// commands are the subcommands' parsed flags.
type commands struct {
	run, inspect, cleanup, version *kingpin.CmdClause
	tune                           *tuneFlags
	verify                         *verifyFlags
	probe                          *probeFlags
}

// newApp declares every flag and command over c.
func (c *cli) newApp(stdout, stderr io.Writer) (*kingpin.Application, commands) {
	c.set = map[string]*bool{}
	app := kingpin.New("gpunode-agent", "Node agent for GPU inference nodes: discovers, verifies and labels GPU and RDMA capabilities, tunes the host and exports metrics.")
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	app.HelpFlag.Short('h')
	app.UsageTemplate(usageTemplate)
	app.UsageFuncs(usageFuncs)
	c.flag(app, "config", "YAML configuration file (unknown keys are errors). Flags override it.").PlaceHolder("FILE").StringVar(&c.configFile)
	c.flag(app, "config.check", "Validate the configuration as run would use it (the file, the flags, the web configuration file it names and the listen addresses), print the result and exit: 0 valid, 2 invalid.").BoolVar(&c.configCheck)
	c.configFlag(app, "host-root", "Where the host's / is mounted (/host in the DaemonSet): an existing directory; a relative path is taken from the working directory.",
		func(cfg *config.Config) { cfg.HostRoot = c.hostRoot }).Default("/").PlaceHolder("DIR").StringVar(&c.hostRoot)
	c.flag(app, "simulate", "Run on a built-in simulated node instead of this machine: "+strings.Join(sim.Names(), ", ")+".").PlaceHolder("NAME").EnumVar(&c.simulate, sim.Names()...)
	c.configFlag(app, "log.level", "Log level: debug, info, warn, error.",
		func(cfg *config.Config) { cfg.Log.Level = c.logLevel }).Default("info").StringVar(&c.logLevel)
	c.configFlag(app, "log.format", "Log format: text or json.",
		func(cfg *config.Config) { cfg.Log.Format = c.logFormat }).Default("text").StringVar(&c.logFormat)
	c.configFlag(app, "kubeconfig", "kubeconfig file for publishing to the Node (default as kubectl: $KUBECONFIG, ~/.kube/config, else the pod's service account).",
		func(cfg *config.Config) { cfg.Publish.Kubeconfig = c.kubeconfig }).PlaceHolder("FILE").StringVar(&c.kubeconfig)

	var cmds commands
	cmds.run = app.Command("run", "Run the agent daemon (the default): discover on an interval, log or publish labels, serve /metrics, /healthz and /readyz. SIGHUP reloads the configuration; SIGTERM stops.").Default()
	c.configFlag(cmds.run, "web.listen-address", "Address to serve metrics and health on.",
		func(cfg *config.Config) { cfg.Metrics.ListenAddress = c.listen }).Default(config.DefaultListenAddress).StringVar(&c.listen)
	c.configFlag(cmds.run, "web.config.file", "exporter-toolkit web configuration file (TLS, basic auth).",
		func(cfg *config.Config) { cfg.Metrics.WebConfigFile = c.webConfig }).PlaceHolder("FILE").StringVar(&c.webConfig)
	durationVar(c.configFlag(cmds.run, "discovery.interval", "Time between discoveries.",
		func(cfg *config.Config) { cfg.Discovery.Interval = c.interval }).Default("1m"), &c.interval)
	durationVar(c.configFlag(cmds.run, "metrics.sample-interval", "Time between readings of GPUs and RDMA counters (scrapes serve the latest).",
		func(cfg *config.Config) { cfg.Metrics.SampleInterval = c.sample }).Default("10s"), &c.sample)
	c.configFlag(cmds.run, "metrics.dcgm-compat", "Also export dcgm-exporter's metric names and labels (DCGM_FI_*), for dashboards and alerts written for it.",
		func(cfg *config.Config) { cfg.Metrics.DCGMCompat = c.dcgmCompat }).BoolVar(&c.dcgmCompat)

	cmds.inspect = app.Command("inspect", "Discover once and print what this node has: GPUs, RDMA ports, NUMA, GPU-NIC affinity, source status and labels. Exits 0 when discovery ran, even if some sources failed (they are reported).")
	cmds.inspect.Flag("output", "Output format: text, json (the snapshot) or labels (sorted key=value lines: the labels discovery gives; the daemon also sets gpunode.dev/verified, gpunode.dev/tuning.* and, with probes on, gpunode.dev/rdma.verified from its checks, tuning loop and probe rounds).").Short('o').Default("text").EnumVar(&c.output, "text", "json", "labels")

	cmds.tune = addTune(app, c)
	cmds.verify = addVerify(app)
	cmds.probe = addProbe(app)

	cmds.cleanup = app.Command("cleanup", "Remove every label, condition and taint the agent owns on its Node (NODE_NAME), and its NFD feature file, then exit. Labels and conditions other managers also own stay, and so do taints with other keys.")
	cmds.cleanup.Flag("all-nodes", "Clean every Node where the agent owns fields (the chart's uninstall hook; needs list on nodes).").BoolVar(&c.allNodes)
	cmds.cleanup.Flag("instance", "With --all-nodes, clean only the Nodes whose "+publish.InstanceAnnotation+" annotation names this instance: those of one deployment where several split the fleet (default: publish.instance of the configuration; empty: every Node).").PlaceHolder("NAME").StringVar(&c.instance)
	cmds.cleanup.Flag("taint-key", "Key of a taint of the agent's to remove, repeatable (default: metrics.health.taint.key of the configuration, and tuning.readinessTaint.key when enabled).").PlaceHolder("KEY").StringsVar(&c.taintKeys)

	cmds.version = app.Command("version", "Print the version and exit.")
	return app, cmds
}

func run(args []string, stdout, stderr io.Writer) int {
	var c cli
	app, cmds := c.newApp(stdout, stderr)
	// kingpin exits the process after --help; record the request instead,
	// so run stays testable and returns the code.
	exitCode := -1
	app.Terminate(func(code int) {
		if exitCode < 0 {
			exitCode = code
		}
	})
	cmd, err := app.Parse(args)
	if exitCode >= 0 { // --help (or help) printed and asked to stop
		return exitCode
	}
	if err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: %v (see --help)\n", err)
		return exitUsage
	}
	// A relative --host-root is taken from the working directory.
	if abs, err := filepath.Abs(c.hostRoot); err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: --host-root: %v\n", err)
		return exitUsage
	} else if *c.set["host-root"] {
		c.hostRoot = abs
	}
	switch cmd {
	case cmds.tune.profiles.FullCommand():
		return runTune(cmds.tune, cmd, nil, config.Config{}, &c, stdout, stderr)
	case cmds.version.FullCommand():
		fmt.Fprintf(stdout, "gpunode-agent %s (revision %s, %s, %s/%s)\n", version, revision, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	}

	cfg, err := c.load()
	if err == nil && (c.configCheck || cmd == cmds.run.FullCommand()) {
		err = checkServing(cfg)
	}
	if c.configCheck {
		if err != nil {
			fmt.Fprintf(stderr, "configuration is invalid:\n%v\n", err)
			return exitUsage
		}
		fmt.Fprintln(stdout, "configuration is valid")
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: %v\n", err)
		return exitUsage
	}
	if *c.set["host-root"] && c.simulate != "" {
		fmt.Fprintln(stderr, "gpunode-agent: --host-root and --simulate exclude each other (a simulated node brings its own host tree)")
		return exitUsage
	}
	return c.dispatch(cmd, cmds, cfg, stdout, stderr)
}

// dispatch runs a command that needs the configuration and, but for
// cleanup, the node's environment.
func (c *cli) dispatch(cmd string, cmds commands, cfg config.Config, stdout, stderr io.Writer) int {
	level := new(slog.LevelVar)
	lvl, _ := config.ParseLevel(cfg.Log.Level) // validated by load
	level.Set(lvl)
	logger := newLogger(stderr, cfg.Log.Format, level)
	// apimachinery (label selector parsing) logs through klog; send it to our logger.
	klog.SetSlogLogger(logger)

	if cmd == cmds.cleanup.FullCommand() {
		keys := c.taintKeys
		if len(keys) == 0 {
			keys = []string{cfg.Metrics.Health.Taint.Key}
			if rt := cfg.Tuning.ReadinessTaint; rt.Enabled {
				keys = append(keys, rt.Key)
			}
		}
		if c.instance != "" {
			cfg.Publish.Instance = c.instance
		}
		return cleanup(cfg, c.allNodes, keys, logger)
	}

	// A host root that is not there is a usage error, not a failure of
	// discovery.
	if c.simulate == "" {
		if _, err := hostfs.New(cfg.HostRoot); err != nil {
			name := "hostRoot (configuration)"
			if *c.set["host-root"] {
				name = "--host-root"
			}
			fmt.Fprintf(stderr, "gpunode-agent: %s: %v\n", name, err)
			return exitUsage
		}
	}
	env, err := discovery.Open(cfg, c.simulate)
	if err != nil {
		logger.Error("cannot prepare discovery", "err", err)
		return exitFailure
	}
	if env.AMDSMIAbsent != "" {
		logger.Debug("AMD GPUs are read from amdgpu sysfs", "why", env.AMDSMIAbsent)
	}
	defer func() {
		if err := env.Close(); err != nil {
			logger.Warn("close discovery", "err", err)
		}
	}()

	switch {
	case cmd == cmds.inspect.FullCommand():
		return inspect(env, cfg, c.output, stdout, logger)
	case cmd == cmds.verify.cmd.FullCommand():
		return runVerify(cmds.verify, env, cfg, stdout, stderr, logger)
	case cmd == cmds.run.FullCommand():
		return daemonize(env, cfg, *c, level, logger)
	case cmds.tune.is(cmd):
		return runTune(cmds.tune, cmd, env, cfg, c, stdout, stderr)
	case cmds.probe.is(cmd):
		return runProbe(cmds.probe, cmd, env, cfg, logger, stdout, stderr)
	}
	fmt.Fprintf(stderr, "gpunode-agent: unknown command %q\n", cmd)
	return exitUsage
}

// load reads the configuration file and applies the flags the user set,
// which win over the file. It is called again on SIGHUP.
func (c *cli) load() (config.Config, error) {
	cfg, err := config.Load(c.configFile)
	if err != nil {
		return config.Config{}, err
	}
	for _, o := range c.overrides {
		if *c.set[o.flag] {
			o.apply(&cfg)
		}
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

// checkServing checks what the daemon would find wrong only when it
// starts serving: the web configuration file. --config.check and run
// check it first, so a bad file is a configuration error (exit 2) there.
func checkServing(cfg config.Config) error {
	if err := exporters.ValidateWebConfig(cfg.Metrics.WebConfigFile); err != nil {
		return fmt.Errorf("metrics.webConfigFile: %w", err)
	}
	return nil
}

func newLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func inspect(env *discovery.Env, cfg config.Config, output string, stdout io.Writer, logger *slog.Logger) int {
	s := discovery.New(env, cfg.Discovery.SourceTimeout).Discover(context.Background())
	l := labels.For(s, cfg.Labels.Options())
	var err error
	switch output {
	case "json":
		err = report.JSON(stdout, s)
	case "labels":
		err = report.Labels(stdout, l)
	default:
		err = report.Text(stdout, s, l)
	}
	if err != nil {
		logger.Error("write report", "err", err)
		return exitFailure
	}
	return 0
}

// daemonGCPercent is the daemon's GOGC unless the environment sets one.
// Its live heap is small (6-7 MiB on a DGX under scrapes) and each scrape
// allocates about 400 KB, so Go's default of 100 let the heap double before
// a collection and held RssAnon at 16-18 MiB; 50 keeps it near 13 MiB for
// a fraction of a millisecond of CPU per scrape (README, make bench).
const daemonGCPercent = 50

func daemonize(env *discovery.Env, cfg config.Config, c cli, level *slog.LevelVar, logger *slog.Logger) int {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(daemonGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reloads := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reloads <- struct{}{}:
			default: // a reload is already pending
			}
		}
	}()

	o := agent.Options{
		Config:         cfg,
		Reload:         c.load,
		ReloadRequests: reloads,
		Logger:         logger,
		Level:          level,
		Env:            env,
		Build:          exporters.BuildInfo{Version: version, Revision: revision, GoVersion: runtime.Version()},
		Listening: func(addr string) {
			web := cfg.Metrics.WebConfigFile + " (read once: changes take effect after a restart)"
			if cfg.Metrics.WebConfigFile == "" {
				web = "none (plain HTTP, no authentication)"
			}
			logger.Info("serving metrics and health", "address", addr, "endpoints", "/metrics /healthz /readyz", "web_config", web)
		},
	}
	// A client only when labels go to a Node, or pod labels are read (a
	// list of the node's pods, which writes nothing: also on a simulated
	// node); the agent says which mode it runs in.
	if cfg.NodeName != "" && (env.Simulated == "" || cfg.Publish.AllowSimulated || len(cfg.Metrics.PodLabels.Keys) > 0) {
		kube, err := kubeClient(cfg)
		if err != nil {
			logger.Error("cannot publish to the Node", "node", cfg.NodeName, "err", err)
			return exitUsage
		}
		o.Kube = kube
	}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		o.Notify = func(state string) error {
			_, err := daemon.SdNotify(false, state)
			return err
		}
		if wd, err := daemon.SdWatchdogEnabled(false); err != nil {
			logger.Warn("systemd watchdog settings unreadable", "err", err)
		} else {
			o.Watchdog = wd
		}
	}
	if err := agent.Run(ctx, o); err != nil {
		logger.Error("agent stopped", "err", err)
		if errors.Is(err, context.Canceled) {
			return 0
		}
		return exitFailure
	}
	return 0
}

func kubeClient(cfg config.Config) (*kubeapi.Client, error) {
	return publish.NewClient(cfg.Publish.Kubeconfig, cfg.Publish.RequestTimeout, "gpunode-agent/"+version)
}

// cleanup removes what the agent owns on its Node (or on every Node) and
// its NFD feature file.
func cleanup(cfg config.Config, allNodes bool, taintKeys []string, logger *slog.Logger) int {
	if !allNodes && cfg.NodeName == "" {
		logger.Error("cleanup needs the Node: set NODE_NAME (or nodeName), or pass --all-nodes")
		return exitUsage
	}
	kube, err := kubeClient(cfg)
	if err != nil {
		logger.Error("cannot reach Kubernetes", "err", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	report := func(node string, l, c int) {
		logger.Info("removed the agent's labels, conditions and taints", "node", node, "labels", l, "conditions", c, "taint_keys", taintKeys)
	}
	skipped := func(node, theirs string) {
		logger.Info("node left alone: another instance's", "node", node, "instance", theirs, "ours", cfg.Publish.Instance)
	}
	code := 0
	if allNodes {
		if err := publish.CleanupAll(ctx, kube, cfg.Publish.Instance, report, skipped, taintKeys...); err != nil {
			logger.Error("cleanup failed", "err", err)
			code = exitFailure
		}
	} else {
		l, c, err := publish.Cleanup(ctx, kube, cfg.NodeName, taintKeys...)
		if err != nil {
			logger.Error("cleanup failed", "node", cfg.NodeName, "err", err)
			code = exitFailure
		} else {
			report(cfg.NodeName, l, c)
		}
	}
	if f := cfg.Publish.NFDFeatureFile; f != "" && !allNodes {
		if err := publish.RemoveNFDFile(f); err != nil {
			logger.Error("NFD feature file", "err", err)
			code = exitFailure
		}
	}
	return code
}
