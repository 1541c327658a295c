package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/exporters"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/publish"
	"github.com/gpunode/gpunode/report"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/telemetry"
	"github.com/gpunode/gpunode/verify"
)

// Options configure the daemon. Everything the daemon touches comes in
// through here; cmd/ builds it from flags.
type Options struct {
	Config config.Config
	// Reload re-reads the configuration (file plus flag overrides); nil
	// disables reloading.
	Reload func() (config.Config, error)
	// ReloadRequests delivers SIGHUP.
	ReloadRequests <-chan struct{}
	Logger         *slog.Logger
	// Level is the logger's level, changed on reload.
	Level *slog.LevelVar
	// Env is the host or simulated node the daemon discovers and samples;
	// its owner closes it after Run returns.
	Env   *discovery.Env
	Build exporters.BuildInfo
	// Notify sends a systemd notification ("READY=1"); nil when not under systemd.
	Notify func(state string) error
	// Watchdog is systemd's WatchdogSec; 0 disables the keep-alive.
	Watchdog time.Duration
	// Listening, if set, is called with the bound metrics address.
	Listening func(addr string)
	// Events receives the agent's Kubernetes events (tuning applied,
	// drift, revert); nil logs them (standalone mode).
	Events func(nodestatus.Event)
	// Kube is the client for publishing to the Node named by
	// Config.NodeName; nil means standalone.
	Kube *kubeapi.Client
}

type daemon struct {
	o         Options
	cfg       config.Config
	log       *slog.Logger
	disc      *discovery.Discoverer
	snap      atomic.Pointer[snapshot.Snapshot]
	heartbeat atomic.Int64 // unix nanos of the last loop iteration
	liveLimit atomic.Int64 // how stale the heartbeat may get, in nanoseconds
	labels    labels.Set
	states    map[string]source.State
	tuning    *tuningLoop
	probes    *probeLoop
	condition nodestatus.Condition
	pub       *publish.Publisher // nil when not publishing
	sampler   *telemetry.Sampler
	desired   *desiredNode // what goes to the publisher, from discovery and the sampler
	// verification is node verification's latest report; emit takes the
	// events of checks that change state (nil: logged).
	verification atomic.Pointer[verify.Report]
	emit         func(nodestatus.Event)
	// conditions are the discovery-side conditions last logged standalone.
	conditions []nodestatus.Condition
	// notVisible are the GPUs last logged as not visible to the agent.
	notVisible []int
}

// Run runs the daemon until ctx is cancelled (SIGTERM). It returns an error
// only for start-up failures (such as the metrics port being taken).
func Run(ctx context.Context, o Options) error {
	d := newDaemon(o)
	d.logMode()
	// The goroutines stop in the reverse order of their start: the probes
	// and tuning (whose run in flight finishes its step, so the journal
	// stays consistent), then the publisher, then the sampler, which
	// uses the GPU backends the caller closes after Run returns.
	var g group
	defer g.stop()
	d.startSampler(ctx, &g)
	servers, err := d.listen()
	if err != nil {
		return err
	}
	serveErr := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { serveErr <- srv.Serve() }()
	}
	if d.pub != nil {
		g.start(ctx, d.pub.Run)
	}

	d.beat()
	d.discover(ctx)
	d.summarize()
	tuningConfigs := make(chan config.Config, 1)
	tuningConfigs <- d.cfg
	g.start(ctx, func(ctx context.Context) { d.tuning.run(ctx, tuningConfigs) })
	g.start(ctx, func(ctx context.Context) { d.probes.run(ctx, d.cfg.NodeName, o.Env.FS, o.Kube, d.snap.Load) })
	d.notify("READY=1", "STATUS="+d.status())

	if err := d.loop(ctx, serveErr, tuningConfigs); err != nil {
		return err
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			errs = append(errs, fmt.Errorf("shut down the server on %s: %w", srv.Addr(), err))
		}
	}
	return errors.Join(errs...)
}

// newDaemon builds the daemon and its loops; nothing runs yet.
func newDaemon(o Options) *daemon {
	d := &daemon{o: o, cfg: o.Config, log: o.Logger, states: map[string]source.State{}}
	d.disc = discovery.New(o.Env, d.cfg.Discovery.SourceTimeout)
	d.setLiveLimit()
	d.pub = d.newPublisher()
	d.desired = newDesiredNode(d.pub, d.cfg.Metrics.Health.Taint, d.cfg.Metrics.RDMAHealth.Taint)
	// Events go to the Node through the publisher; standalone, they are logged.
	d.emit = o.Events
	if d.emit == nil && d.pub != nil {
		d.emit = d.pub.Event
	}
	d.tuning = newTuningLoop(o.Env.Tuner, d.log, d.emit, d.snap.Load)
	d.tuning.liftTaint = d.desired.manageTaintKey
	d.probes = newProbeLoop(d.cfg.Probe, d.log)
	return d
}

// listen binds the metrics and health endpoints and, when configured, the
// health endpoints alone on their own address without authentication.
func (d *daemon) listen() ([]*exporters.Server, error) {
	srv, err := d.listenMetrics()
	if err != nil {
		return nil, err
	}
	servers := []*exporters.Server{srv}
	if addr := d.cfg.Metrics.HealthListenAddress; addr != "" {
		health, err := exporters.Listen(addr, "", exporters.NewHealthHandler(exporters.Health{Live: d.live, Ready: d.ready}), d.log)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("health endpoints: %w", err), srv.Close())
		}
		d.log.Info("serving /healthz and /readyz without authentication", "address", health.Addr().String())
		servers = append(servers, health)
	}
	return servers, nil
}

// listenMetrics binds the metrics and health endpoints over every collector.
func (d *daemon) listenMetrics() (*exporters.Server, error) {
	collectors := []prometheus.Collector{
		exporters.NewAgentCollector(d.snap.Load, d.o.Build, d.samplerSources),
		exporters.NewTuningCollector(d.tuning.Status),
		exporters.NewVerifyCollector(d.verification.Load),
		exporters.NewProbeCollector(d.probes.Round, d.probes.Refused),
	}
	if d.pub != nil {
		collectors = append(collectors, d.pub.Collectors()...)
	}
	reg, err := exporters.NewRegistry(collectors...)
	if err != nil {
		return nil, err
	}
	telemetryPart, err := exporters.NewTelemetryPart(d.sampler.Latest, d.snap.Load, exporters.TelemetryOptions{
		DCGMCompat: d.cfg.Metrics.DCGMCompat, Hostname: d.cfg.NodeName})
	if err != nil {
		return nil, err
	}
	handler, err := exporters.NewHandler(reg, exporters.Health{Live: d.live, Ready: d.ready}, d.o.Build.Version, d.log, telemetryPart)
	if err != nil {
		return nil, err
	}
	// One log line for the listener: the caller's (Listening), not
	// exporter-toolkit's two more.
	srv, err := exporters.Listen(d.cfg.Metrics.ListenAddress, d.cfg.Metrics.WebConfigFile, handler, exporters.ToolkitLogger(d.log))
	if err != nil {
		return nil, err
	}
	if d.o.Listening != nil {
		d.o.Listening(srv.Addr().String())
	}
	return srv, nil
}

// loop is the main loop: discovery on its interval, label refreshes when
// tuning or the probes change them, the watchdog, reloads. It returns nil
// when ctx is cancelled and the metrics server's error if it stops.
func (d *daemon) loop(ctx context.Context, serveErr <-chan error, tuningConfigs chan config.Config) error {
	ticker := time.NewTicker(d.cfg.Discovery.Interval)
	defer ticker.Stop()
	var watchdog <-chan time.Time
	if d.o.Watchdog > 0 {
		t := time.NewTicker(d.o.Watchdog / 2) // systemd's advice: ping at half the interval
		defer t.Stop()
		watchdog = t.C
	}
	for {
		select {
		case <-ctx.Done():
			d.notify("STOPPING=1")
			d.log.Info("shutting down")
			return nil
		case err := <-serveErr:
			return fmt.Errorf("metrics server: %w", err)
		case <-ticker.C:
			d.beat()
			d.discover(ctx)
		case <-d.tuning.changed:
			d.refreshLabels()
		case <-d.probes.changed:
			// A round's GPU memory registrations change the verdict.
			if s := d.snap.Load(); s != nil {
				d.verifyNode(s)
			}
			d.refreshLabels()
		case <-watchdog:
			// Pinged from the main loop, so a wedged loop stops the pings
			// and systemd restarts us.
			d.notify("WATCHDOG=1")
		case <-d.o.ReloadRequests:
			d.beat()
			if d.reload() {
				ticker.Reset(d.cfg.Discovery.Interval)
				d.discover(ctx)
				sendLatest(tuningConfigs, d.cfg)
			}
			d.notify("READY=1", "STATUS="+d.status())
		}
	}
}

// group runs the daemon's goroutines, each under its own cancellable
// context. stop cancels and waits for them one at a time, in the reverse
// order of their start, so each stops before what it uses.
type group struct{ stops []func() }

func (g *group) start(ctx context.Context, run func(context.Context)) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx)
	}()
	g.stops = append(g.stops, func() { cancel(); <-done })
}

func (g *group) stop() {
	for i := len(g.stops) - 1; i >= 0; i-- {
		g.stops[i]()
	}
	g.stops = nil
}

func (d *daemon) beat() { d.heartbeat.Store(time.Now().UnixNano()) }

// setLiveLimit allows the loop two intervals plus two source timeouts
// between iterations; every run is bounded by the source timeout.
func (d *daemon) setLiveLimit() {
	d.liveLimit.Store(int64(2*d.cfg.Discovery.Interval + 2*d.cfg.Discovery.SourceTimeout))
}

// live fails when the main loop has not come round in time, which means a bug.
func (d *daemon) live() error {
	if age := time.Since(time.Unix(0, d.heartbeat.Load())); age > time.Duration(d.liveLimit.Load()) {
		return fmt.Errorf("main loop stalled for %s", age.Round(time.Second))
	}
	return nil
}

func (d *daemon) ready() error {
	if d.snap.Load() == nil {
		return errors.New("first discovery not finished")
	}
	return nil
}

func (d *daemon) notify(states ...string) {
	if d.o.Notify == nil {
		return
	}
	for _, s := range states {
		if err := d.o.Notify(s); err != nil {
			d.log.Warn("systemd notify failed", "state", s, "err", err)
		}
	}
}

func (d *daemon) logMode() {
	if d.o.Env.Simulated != "" {
		d.log.Warn("SIMULATED node: every fact below comes from a built-in fixture, not this machine", "simulate", d.o.Env.Simulated, "host_root", d.o.Env.FS.Root())
	}
}

// newPublisher decides the mode, says it, and returns the publisher when
// labels go to a Node.
func (d *daemon) newPublisher() *publish.Publisher {
	switch {
	case d.cfg.NodeName == "":
		d.log.Info("standalone mode: no NODE_NAME, so nothing is published; labels are logged when they change")
		return nil
	case d.o.Env.Simulated != "" && !d.cfg.Publish.AllowSimulated:
		d.log.Warn("SIMULATED node: its labels are NOT published to the real Node (set publish.allowSimulated to do so); they are logged when they change", "node", d.cfg.NodeName)
		return nil
	case d.o.Kube == nil:
		d.log.Error("NODE_NAME is set but there is no Kubernetes client; labels are only logged", "node", d.cfg.NodeName)
		return nil
	}
	if d.o.Env.Simulated != "" {
		d.log.Warn("SIMULATED node: publishing its labels to a real Node because publish.allowSimulated is set", "node", d.cfg.NodeName)
	}
	d.log.Info("publishing labels and conditions to the Node with server-side apply", "node", d.cfg.NodeName, "field_manager", publish.FieldManager)
	return publish.New(publish.Options{
		Client:         d.o.Kube,
		Node:           d.cfg.NodeName,
		Resync:         d.cfg.Publish.Resync,
		BackoffInitial: d.cfg.Publish.BackoffInitial,
		BackoffMax:     d.cfg.Publish.BackoffMax,
		EventNamespace: d.cfg.Publish.EventNamespace,
		Instance:       d.cfg.Publish.Instance,
		Logger:         d.log,
	})
}

// discover takes a snapshot and reports what changed since the last one.
func (d *daemon) discover(ctx context.Context) {
	s := d.disc.Discover(ctx)
	d.snap.Store(s)
	d.verifyNode(s)
	for _, st := range s.Sources {
		prev, seen := d.states[st.Name]
		if seen && prev == st.State {
			continue
		}
		d.states[st.Name] = st.State
		attrs := []any{"source", st.Name, "state", st.State}
		if st.Message != "" {
			attrs = append(attrs, "message", st.Message)
		}
		if st.State == source.Error {
			d.log.Warn("source failed", attrs...)
		} else {
			d.log.Info("source status", attrs...)
		}
	}
	d.logNotVisible(s)
	d.refreshLabels()
}

// logNotVisible logs the GPUs the driver counts but the agent may not open
// when that set changes: once, not every discovery, as they are not faults
// (their series, health and checks are absent, not down).
func (d *daemon) logNotVisible(s *snapshot.Snapshot) {
	var nv []int
	if s.GPUDriver != nil {
		nv = s.GPUDriver.GPUsNotVisible
	}
	if slices.Equal(nv, d.notVisible) {
		return
	}
	if len(nv) > 0 {
		d.log.Warn("GPUs not visible to the agent: the driver counts them but the agent may not open them (no permission: a device cgroup or /dev/nvidia* permissions); they are neither sampled nor judged",
			"gpus", nv)
	} else {
		d.log.Info("every GPU the driver counts is visible to the agent again")
	}
	d.notVisible = nv
}

// refreshLabels computes the labels and conditions from the latest
// snapshot and tuning state, and logs or publishes what changed.
func (d *daemon) refreshLabels() {
	s := d.snap.Load()
	if s == nil {
		return // the tuning loop finished before the first discovery
	}
	opts := d.cfg.Labels.Options()
	failed := labels.Failed(s)
	// A failing source keeps its last good labels, so they do not flap.
	next := labels.Hold(labels.Compute(labels.Inputs{Snapshot: s, Tuning: d.tuning.Labels(), Verified: d.verified(), RDMAProbe: d.probes.Labels()}, opts), d.labels, failed, opts)
	d.logLabelChanges(next)
	cond := nodestatus.Discovery(s.Sources)
	conds := append([]nodestatus.Condition{cond}, d.verifiedCondition()...)
	if rc := d.probes.Condition(); rc != nil {
		conds = append(conds, *rc)
	}
	if d.pub != nil {
		d.desired.discovered(publish.Desired{Labels: next, Failed: failed, LabelOptions: opts, Conditions: conds})
	} else {
		d.logConditions(conds)
	}
	d.condition = cond
	d.writeNFDFile(next)
}

// writeNFDFile keeps the NFD feature file, if configured, equal to the
// labels; a failure is logged and retried on the next discovery.
func (d *daemon) writeNFDFile(l labels.Set) {
	path := d.cfg.Publish.NFDFeatureFile
	if path == "" {
		return
	}
	wrote, err := publish.WriteNFDFile(path, l, d.cfg.Publish.NFDFeatureTTL, time.Now())
	switch {
	case err != nil:
		d.log.Warn("NFD feature file not written; retrying on the next discovery", "err", err)
	case wrote:
		d.log.Info("NFD feature file written", "path", path, "labels", len(l))
	}
}

func (d *daemon) logLabelChanges(next labels.Set) {
	for _, k := range slices.Sorted(maps.Keys(next)) {
		old, had := d.labels[k]
		switch {
		case !had:
			d.log.Info("label", "key", k, "value", next[k])
		case old != next[k]:
			d.log.Info("label changed", "key", k, "value", next[k], "previous", old)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(d.labels)) {
		if _, ok := next[k]; !ok {
			d.log.Info("label removed", "key", k, "previous", d.labels[k])
		}
	}
	d.labels = next
}

func (d *daemon) summarize() {
	for _, line := range report.Summary(d.snap.Load()) {
		d.log.Info(line)
	}
}

func (d *daemon) status() string {
	s := d.snap.Load()
	return fmt.Sprintf("%d GPUs, %d RDMA devices", len(s.GPUs), len(s.RDMADevices))
}

// reload applies a new configuration; settings that need a restart are
// reported and keep their running values. It returns false when the new
// configuration was rejected.
func (d *daemon) reload() bool {
	if d.o.Reload == nil {
		d.log.Warn("reload requested, but there is no configuration file to reload")
		return false
	}
	d.notify("RELOADING=1")
	next, err := d.o.Reload()
	if err != nil {
		d.log.Error("config reload failed; keeping the running configuration", "err", err)
		return false
	}
	if keys := config.RestartNeeded(d.cfg, next); len(keys) > 0 {
		d.log.Warn("config changes that take effect only after a restart were ignored", "keys", keys)
		taint, rdmaTaint := next.Metrics.Health.Taint, next.Metrics.RDMAHealth.Taint // reloadable
		next.HostRoot, next.NodeName, next.GPU, next.Metrics = d.cfg.HostRoot, d.cfg.NodeName, d.cfg.GPU, d.cfg.Metrics
		next.Metrics.Health.Taint, next.Metrics.RDMAHealth.Taint = taint, rdmaTaint
		next.Log.Format = d.cfg.Log.Format
	}
	if lvl, err := config.ParseLevel(next.Log.Level); err == nil && d.o.Level != nil {
		d.o.Level.Set(lvl)
	}
	d.disc.SetTimeout(next.Discovery.SourceTimeout)
	d.cfg = next
	d.setLiveLimit()
	if t := next.Metrics.Health.Taint; d.desired.setTaint(t) {
		d.log.Info("GPU health taint configuration changed", "enabled", t.Enabled, "key", t.Key, "effect", t.Effect)
	}
	if t := next.Metrics.RDMAHealth.Taint; d.desired.setRDMATaint(t) {
		d.log.Info("RDMA health taint configuration changed", "enabled", t.Enabled, "key", t.Key, "effect", t.Effect)
	}
	d.log.Info("configuration reloaded", "interval", next.Discovery.Interval, "source_timeout", next.Discovery.SourceTimeout, "log_level", next.Log.Level)
	return true
}
