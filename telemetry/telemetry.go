// Package telemetry is the agent's background sampler: on an interval it
// reads every GPU backend, the RDMA port counters and the kubelet's device
// allocations, keeps device counters monotonic, judges GPU health, counts
// XID events as they arrive, and publishes the result as an immutable
// Frame. Metrics scrapes read the latest Frame and never touch a device.
package telemetry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/health"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/podlabels"
	"github.com/gpunode/gpunode/podresources"
	"github.com/gpunode/gpunode/procpod"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdmahealth"
	"github.com/gpunode/gpunode/topology"
)

// Source names, as gpunode_source_up{source} reports them. GPU backends
// report as "<backend>-sample" ("nvml-sample").
const (
	SourceRDMA = "rdma-counters"
	SourcePods = "pod-resources"
)

// PodLister lists the kubelet's device allocations (podresources.Client).
type PodLister interface {
	List(ctx context.Context) ([]podresources.Allocation, error)
}

// PodLabeler hands out the latest pod labels without blocking.
type PodLabeler interface {
	View() *podlabels.View
}

// Traffic moves a simulated node's RDMA counter files to the given time;
// the sampler calls it before reading them.
type Traffic interface {
	Advance(now time.Time) error
}

// Options configure a Sampler.
type Options struct {
	// Interval between rounds; Timeout bounds each round (defaults to Interval).
	Interval, Timeout time.Duration
	// FS is the host root the RDMA counters are read under.
	FS hostfs.FS
	// Backends are the GPU backends; those implementing gpu.Sampler are
	// sampled and those implementing gpu.EventWatcher watched.
	Backends []gpu.Backend
	// Pods, if set, attributes GPUs to the containers holding them, and
	// the GPUs' processes, their use and energy to pods (Frame.PodUsage).
	Pods PodLister
	// Cgroups finds a process's pod; nil reads /proc/<pid>/cgroup under FS.
	Cgroups ProcessCgroups
	// PodLabels, if set with Pods, gives the pods' labels each round
	// (podlabels.Cache, refreshed on its own cadence): they go on the
	// allocation and per-pod series, and its status among the sources.
	PodLabels PodLabeler
	// CriticalXIDs make a GPU unhealthy (health.DefaultCriticalXIDs if nil).
	CriticalXIDs []uint64
	// ThrottleAfter is how long a degrading clock reason must hold before
	// the GPU is Degraded (health.DefaultThrottleAfter if zero).
	ThrottleAfter time.Duration
	// Traffic is set on simulated nodes.
	Traffic Traffic
	// DriverStats, if set, gives each RoCE port the PFC pause frames of
	// its netdev (rdma.PortCounters.Pause).
	DriverStats rdma.DriverStats
	// KernelLog, if set, is read every round, and by Run every
	// KernelLogPoll between rounds: XIDs it reports on a known
	// GPU join the library's XIDs (one series: the same XID on the same
	// GPU within 10 s from both is counted once), its other reports are
	// counted by kind and device, and "fallen off the bus" or an
	// uncorrectable PCIe AER error on a GPU make it unhealthy.
	KernelLog KernelLog
	// OnCondition is called (from the sampler's goroutines, one at a time)
	// whenever the GPUHealthy condition changes.
	OnCondition func(nodestatus.Condition)
	// RDMAHealth are the RDMA port health thresholds (the zero value takes
	// rdmahealth.DefaultOptions), and OnRDMACondition is called, like
	// OnCondition, whenever the RDMAHealthy condition changes.
	RDMAHealth      rdmahealth.Options
	OnRDMACondition func(nodestatus.Condition)
	// StopTimeout bounds how long Run waits for the event watchers once
	// ctx is done (default 3 s): a watcher stuck in a hung driver call is
	// abandoned, and logged, so the daemon still stops.
	StopTimeout time.Duration
	Logger      *slog.Logger
}

// Frame is everything the sampler knows at one moment. It is shared through
// an atomic pointer: treat it as read-only.
type Frame struct {
	Time time.Time
	// GPUs in index order, with counters made monotonic.
	GPUs []gpu.Sample
	// Health has one verdict per GPU, in the same order.
	Health []health.GPU
	// InterconnectRates has, per GPU in the same order, the interconnect
	// traffic (transmit plus receive, all links) in bytes per second over
	// the last round; nil for the first round or a GPU without counters.
	InterconnectRates []*float64
	// Condition is the GPUHealthy condition; HasCondition is false on a
	// node without GPUs.
	Condition    nodestatus.Condition
	HasCondition bool
	// XIDs counts XID events since the agent started, by GPU and XID.
	XIDs []XIDCount
	// EventWatch says, per GPU in index order, whether its XIDs are
	// watched; empty when no backend reports it (no watcher running).
	EventWatch []gpu.EventWatchState
	// RDMA ports, with counters made monotonic.
	RDMA []rdma.PortCounters
	// RDMAHealth has one verdict per RDMA port, in the same order, and
	// RDMACondition is the RDMAHealthy condition (HasRDMACondition is
	// false on a node without RDMA ports).
	RDMAHealth       []rdmahealth.Port
	RDMACondition    nodestatus.Condition
	HasRDMACondition bool
	// Pods maps device keys (GPU UUIDs) to the containers holding them;
	// nil when attribution is off or the kubelet is not there.
	Pods map[string][]podresources.Allocation
	// PCIe has the GPUs', NICs' and their upstream ports' AER counters and
	// links, in the order read.
	PCIe []PCIeDevice
	// Kernel counts the kernel log's device fault reports other than the
	// XIDs of known GPUs (those are in XIDs), by kind and device.
	Kernel []KernelEvent
	// KernelLog is nil when the kernel log is not read.
	KernelLog *KernelLogStats
	// PodUsage is, per GPU or MIG device, what each container's processes
	// used, sorted by GPU, MIG device, namespace, pod and container; nil
	// when attribution is off.
	PodUsage []PodUsage
	// PodLabels are the configured pod labels of the pods in Pods and
	// PodUsage; nil when they are off.
	PodLabels *podlabels.View
	// Sources reports each sampling source's last run.
	Sources []source.Status
}

// XIDCount is how often a GPU raised an XID.
type XIDCount struct {
	GPU   int
	UUID  string
	XID   uint64
	Count uint64
	Last  time.Time
}

// Sampler runs the rounds. Create it with New and run it with Run.
type Sampler struct {
	o        Options
	critical map[uint64]bool
	latest   atomic.Pointer[Frame]

	gpuRunners []*source.Runner[[]gpu.Sample]
	rdmaRunner *source.Runner[[]rdma.PortCounters]
	podRunner  *source.Runner[[]podresources.Allocation]
	kmsgRunner *source.Runner[struct{}]
	pcieRunner *source.Runner[[]topology.PCIeHealth]

	roundMu  sync.Mutex // one round at a time
	bank     bank
	lastGPU  map[string][]gpu.Sample // per backend: what to report down when it fails
	lastLink map[string]linkTotal    // per GPU scope: interconnect bytes at the last round
	lastPods map[string][]podresources.Allocation
	// Pod attribution (pods.go), used by the round only.
	cgroups    ProcessCgroups
	podEnergy  map[usageKey]float64 // joules so far per row
	lastEnergy map[string]uint64    // per GPU scope: its energy counter at the last round
	troubled   map[string]bool      // per source: its last run failed or had problems (logged)
	watched    map[int]bool         // per GPU index: its XIDs were watched at the last round (logged)

	mu      sync.Mutex // guards what frames are built from
	linksUp map[string]map[int]bool
	xids    map[xidKey]*XIDCount
	kernel  kernelState
	pcie    pcieState // guarded by roundMu
	base    Frame     // the last round's frame, before XIDs and health

	throttle throttleSince // guarded by mu

	notifyMu sync.Mutex // OnCondition calls, one at a time, in order
	condSent *nodestatus.Condition
	rdmaSent *nodestatus.Condition // the last RDMAHealthy condition handed over, under notifyMu
	// rdmaHistory is the RDMA port health history and rdmaJudged the last
	// round's verdicts from counters read, both guarded by roundMu.
	rdmaHistory rdmahealth.State
	rdmaJudged  *Frame

	firstRound     chan struct{} // closed after the first round's notify
	firstRoundOnce sync.Once
}

type linkTotal struct {
	bytes uint64
	at    time.Time
}

type xidKey struct {
	gpu int
	xid uint64
}

// New prepares a sampler; nothing runs until Run or Round.
func New(o Options) *Sampler {
	if o.Timeout <= 0 {
		o.Timeout = o.Interval
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 3 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RDMAHealth.Window <= 0 {
		o.RDMAHealth = rdmahealth.DefaultOptions()
	}
	if o.ThrottleAfter <= 0 {
		o.ThrottleAfter = health.DefaultThrottleAfter
	}
	crit := o.CriticalXIDs
	if crit == nil {
		crit = health.DefaultCriticalXIDs
	}
	s := &Sampler{o: o, critical: map[uint64]bool{}, bank: bank{}, lastGPU: map[string][]gpu.Sample{}, lastLink: map[string]linkTotal{},
		linksUp: map[string]map[int]bool{}, xids: map[xidKey]*XIDCount{}, throttle: throttleSince{}, troubled: map[string]bool{}, watched: map[int]bool{},
		firstRound: make(chan struct{}), kernel: kernelState{events: map[kernelKey]*KernelEvent{}, seen: map[xidKey][]occurrence{}},
		pcie: pcieState{base: map[string]topology.AERCounts{}, downtrained: map[string]bool{}}}
	for _, x := range crit {
		s.critical[x] = true
	}
	for _, b := range o.Backends {
		if smp, ok := b.(gpu.Sampler); ok {
			// The backend gets four fifths of the round, so it can report
			// its hung GPUs down (and the others up) before the runner's
			// own timeout, the backstop for a backend that hangs whole.
			sample := func(ctx context.Context) ([]gpu.Sample, error) {
				ctx, cancel := context.WithTimeout(ctx, o.Timeout*4/5)
				defer cancel()
				return smp.Sample(ctx)
			}
			s.gpuRunners = append(s.gpuRunners, &source.Runner[[]gpu.Sample]{
				Name: b.Name() + "-sample", Timeout: o.Timeout, Fn: sample})
		}
	}
	// One reader for every round: a device whose read hangs is reported
	// on its ports and not read again until the read returns, while the
	// others are read (in four fifths of the round, before the runner's
	// own timeout).
	counters := rdma.NewReader(o.FS).WithDriverStats(o.DriverStats)
	s.rdmaRunner = &source.Runner[[]rdma.PortCounters]{Name: SourceRDMA, Timeout: o.Timeout,
		Fn: func(ctx context.Context) ([]rdma.PortCounters, error) {
			if o.Traffic != nil {
				if err := o.Traffic.Advance(time.Now()); err != nil {
					return nil, fmt.Errorf("simulated traffic: %w", err)
				}
			}
			return counters.ReadCounters(ctx)
		}}
	s.pcieRunner = s.newPCIeRunner()
	if o.KernelLog != nil {
		s.kmsgRunner = &source.Runner[struct{}]{Name: SourceKernelLog, Timeout: o.Timeout,
			Fn: func(ctx context.Context) (struct{}, error) {
				b, err := o.KernelLog.Read(ctx)
				if errors.Is(err, fs.ErrNotExist) {
					// No /dev/kmsg under the host root: the chart did not
					// mount it (kernelLog.enabled), or a tree without one.
					err = fmt.Errorf("%w: %w", source.ErrAbsent, err)
				}
				s.kernel.addPending(b)
				return struct{}{}, err
			}}
	}
	if o.Pods != nil {
		s.podRunner = &source.Runner[[]podresources.Allocation]{Name: SourcePods, Timeout: o.Timeout, Fn: o.Pods.List}
		s.cgroups = o.Cgroups
		// The zero FS has no root: it would read this process's own /proc.
		if s.cgroups == nil && o.FS.Root() != "" {
			s.cgroups = procpod.NewReader(o.FS)
		}
	}
	return s
}

// Latest returns the newest frame, nil before the first round completes.
func (s *Sampler) Latest() *Frame { return s.latest.Load() }

// FirstRound is closed once the first round is done and its condition,
// if the node has one, was handed to OnCondition: from then on the
// absence of a condition means a node without GPUs, not "not yet".
func (s *Sampler) FirstRound() <-chan struct{} { return s.firstRound }

// Run samples now and then every Interval, and watches device events,
// until ctx is done. It returns at most StopTimeout after ctx is done.
func (s *Sampler) Run(ctx context.Context) {
	watchers := map[string]chan struct{}{}
	for _, b := range s.o.Backends {
		if w, ok := b.(gpu.EventWatcher); ok {
			done := make(chan struct{})
			watchers[b.Name()] = done
			go func() {
				defer close(done)
				s.watch(ctx, b.Name(), w)
			}()
		}
	}
	defer s.stopWatchers(watchers)
	s.Round(ctx)
	if s.o.KernelLog != nil {
		// Stopped before Run returns: the caller closes the reader then.
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.watchKernelLog(ctx)
		}()
		defer func() { <-done }()
	}
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Round(ctx)
		}
	}
}

// stopWatchers waits up to StopTimeout for the event watchers to return
// (ctx is done). One that does not is stuck in a call into its library,
// which cannot be interrupted: it is logged and left behind.
func (s *Sampler) stopWatchers(watchers map[string]chan struct{}) {
	timeout := time.NewTimer(s.o.StopTimeout)
	defer timeout.Stop()
	for _, name := range slices.Sorted(maps.Keys(watchers)) {
		select {
		case <-watchers[name]:
		case <-timeout.C:
			var stuck []string
			for _, n := range slices.Sorted(maps.Keys(watchers)) {
				select {
				case <-watchers[n]:
				default:
					stuck = append(stuck, n)
				}
			}
			s.o.Logger.Warn("GPU event watchers did not stop; abandoned (stuck in a call into the GPU library)",
				"backends", stuck, "waited", s.o.StopTimeout)
			return
		}
	}
}

// watch keeps an event watcher running: a library that is absent is asked
// again every minute (a driver may be installed later), other failures
// after a pause.
func (s *Sampler) watch(ctx context.Context, name string, w gpu.EventWatcher) {
	for {
		err := w.WatchEvents(ctx, s.Event)
		if ctx.Err() != nil {
			return
		}
		pause := 10 * time.Second
		if errors.Is(err, source.ErrAbsent) {
			pause = time.Minute
			s.o.Logger.Debug("GPU events not watched: library absent", "backend", name, "err", err)
		} else {
			s.o.Logger.Warn("watching GPU events failed; retrying", "backend", name, "err", err, "retry_in", pause)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
	}
}

// Event counts a device event and publishes a frame with it at once.
func (s *Sampler) Event(e gpu.Event) {
	if e.Kind != gpu.XID {
		return
	}
	level := slog.LevelInfo
	if s.critical[e.Code] {
		level = slog.LevelWarn
	}
	s.o.Logger.Log(context.Background(), level, "GPU XID error", "gpu", e.GPU, "uuid", e.UUID, "xid", e.Code, "critical", s.critical[e.Code])
	if e.GPU < 0 {
		return // a GPU the watcher could not name: logged, not counted
	}
	s.mu.Lock()
	s.countXIDLocked(e.GPU, e.UUID, e.Code, e.Time, fromLibrary)
	s.publishLocked()
	s.mu.Unlock()
	s.notify()
}

// Round runs one sampling round and publishes its frame.
func (s *Sampler) Round(ctx context.Context) {
	s.roundMu.Lock()
	defer s.roundMu.Unlock()
	now := time.Now()
	var wg sync.WaitGroup
	gpuSamples := make([][]gpu.Sample, len(s.gpuRunners))
	gpuStatus := make([]source.Status, len(s.gpuRunners))
	for i, r := range s.gpuRunners {
		wg.Go(func() { gpuSamples[i], gpuStatus[i] = r.Run(ctx) })
	}
	var (
		ports       []rdma.PortCounters
		rdmaStatus  source.Status
		allocs      []podresources.Allocation
		podStatus   source.Status
		podsEnabled = s.podRunner != nil
	)
	wg.Go(func() { ports, rdmaStatus = s.rdmaRunner.Run(ctx) })
	if podsEnabled {
		wg.Go(func() { allocs, podStatus = s.podRunner.Run(ctx) })
	}
	var kmsgStatus source.Status
	if s.kmsgRunner != nil {
		wg.Go(func() { _, kmsgStatus = s.kmsgRunner.Run(ctx) })
	}
	wg.Wait()

	f := Frame{Time: now}
	f.GPUs, f.Sources = s.mergeGPUs(now, gpuSamples, gpuStatus)
	f.InterconnectRates = s.linkRates(f.GPUs)
	if len(ports) > 0 {
		rdmaStatus = partial(rdmaStatus)
	}
	for i := range ports {
		s.accumulatePort(&ports[i])
	}
	f.RDMA = ports
	f.Sources = append(f.Sources, rdmaStatus)
	s.judgePorts(&f, rdmaStatus)
	var pcieStatus source.Status
	f.PCIe, pcieStatus = s.readPCIe(ctx, f.GPUs, ports)
	f.Sources = append(f.Sources, pcieStatus)
	if podsEnabled {
		switch podStatus.State {
		case source.OK:
			s.lastPods = podresources.Index(allocs)
		case source.Absent:
			s.lastPods = nil
		}
		// A kubelet that fails to answer once keeps the last allocations:
		// pod labels that came and went would split every GPU series.
		f.Pods = s.lastPods
		f.Sources = append(f.Sources, podStatus)
		s.attribute(&f)
		if s.o.PodLabels != nil {
			f.PodLabels = s.o.PodLabels.View()
			if st := f.PodLabels.Status; st.Name != "" {
				f.Sources = append(f.Sources, st)
			}
		}
	}
	if s.kmsgRunner != nil {
		f.Sources = append(f.Sources, kmsgStatus)
	}
	slices.SortFunc(f.Sources, func(a, b source.Status) int { return cmp.Compare(a.Name, b.Name) })
	s.logSources(f.Sources)
	f.EventWatch = s.eventWatch()

	s.mu.Lock()
	s.recordLinksUp(f.GPUs)
	s.throttle.track(now, f.GPUs)
	s.applyKernelLocked(f.GPUs)
	s.base = f
	s.publishLocked()
	s.mu.Unlock()
	s.notify()
	s.notifyRDMA()
	s.firstRoundOnce.Do(func() { close(s.firstRound) })
}

// mergeGPUs makes one list of the backends' samples, in GPU index order,
// with counters made monotonic, and the backends' statuses. A backend
// that failed as a whole reports its GPUs down, not gone.
func (s *Sampler) mergeGPUs(now time.Time, gpuSamples [][]gpu.Sample, gpuStatus []source.Status) (gpus []gpu.Sample, sources []source.Status) {
	// Two backends may read the same GPU (AMD SMI and amdgpu sysfs): the
	// first in backend order reports it, as in discovery.
	seen := map[string]bool{}
	for i, r := range s.gpuRunners {
		samples, st := gpuSamples[i], gpuStatus[i]
		if len(samples) == 0 && st.State == source.Error {
			// The whole backend failed: its GPUs are down, not gone.
			for _, prev := range s.lastGPU[r.Name] {
				prev.Time, prev.Up, prev.Errors = now, false, []string{st.Message}
				samples = append(samples, downOnly(prev))
			}
		} else if len(samples) > 0 {
			st = partial(st)
			s.lastGPU[r.Name] = identities(samples)
		}
		for _, g := range samples {
			key := g.PCIBusID
			if key == "" {
				key = scope(g)
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			s.accumulateGPU(&g)
			gpus = append(gpus, g)
		}
		sources = append(sources, st)
	}
	slices.SortStableFunc(gpus, func(a, b gpu.Sample) int { return a.Index - b.Index })
	return gpus, sources
}

// recordLinksUp remembers every interconnect link seen up, so a link that
// goes down later is told from one that never came up. Called with s.mu held.
func (s *Sampler) recordLinksUp(gpus []gpu.Sample) {
	for _, g := range gpus {
		if g.Interconnect == nil || !g.Up {
			continue
		}
		key := scope(g)
		for _, l := range g.Interconnect.Links {
			if l.Up {
				if s.linksUp[key] == nil {
					s.linksUp[key] = map[int]bool{}
				}
				s.linksUp[key][l.Number] = true
			}
		}
	}
}

// linkRates is each GPU's interconnect traffic since the last round.
func (s *Sampler) linkRates(gpus []gpu.Sample) []*float64 {
	rates := make([]*float64, len(gpus))
	for i, g := range gpus {
		if g.Interconnect == nil || !g.Up {
			continue
		}
		var total uint64
		have := false
		for _, l := range g.Interconnect.Links {
			for _, c := range []*uint64{l.TransmitBytes, l.ReceiveBytes} {
				if c != nil {
					total, have = total+*c, true
				}
			}
		}
		if !have {
			continue
		}
		key := scope(g)
		if prev, ok := s.lastLink[key]; ok && g.Time.After(prev.at) && total >= prev.bytes {
			r := float64(total-prev.bytes) / g.Time.Sub(prev.at).Seconds()
			rates[i] = &r
		}
		s.lastLink[key] = linkTotal{bytes: total, at: g.Time}
	}
	return rates
}

// logSources logs a sampling source when its runs start to go wrong (it
// failed, or ran with problems on some devices: a hung device, a counter
// that cannot be read) and when they stop. A source that stays wrong is
// logged once, not every round; gpunode_source_state and the devices' own
// series show it meanwhile. Called by Round, with roundMu held.
func (s *Sampler) logSources(sources []source.Status) {
	for _, st := range sources {
		troubled := st.State == source.Error || st.State == source.OK && st.Message != ""
		switch was := s.troubled[st.Name]; {
		case troubled && !was && st.State == source.Error:
			s.o.Logger.Warn("sampling source failed", "source", st.Name, "message", st.Message)
		case troubled && !was:
			s.o.Logger.Warn("sampling source has problems on some devices; the others are read", "source", st.Name, "message", st.Message)
		case !troubled && was:
			s.o.Logger.Info("sampling source reads cleanly again", "source", st.Name, "state", st.State)
		}
		s.troubled[st.Name] = troubled
	}
}

// eventWatch collects which GPUs the event watchers watch and logs a GPU
// when it stops being watched (or is not at first) and when it is again.
// Called by Round, with roundMu held.
func (s *Sampler) eventWatch() []gpu.EventWatchState {
	var states []gpu.EventWatchState
	for _, b := range s.o.Backends {
		if r, ok := b.(gpu.EventWatchReporter); ok {
			states = append(states, r.EventWatch()...)
		}
	}
	slices.SortStableFunc(states, func(a, b gpu.EventWatchState) int { return a.GPU - b.GPU })
	for _, st := range states {
		was, seen := s.watched[st.GPU]
		switch {
		case !st.Watched && (was || !seen):
			s.o.Logger.Warn("GPU XID events not watched; registering again on a schedule", "gpu", st.GPU, "uuid", st.UUID, "reason", st.Reason)
		case st.Watched && seen && !was:
			s.o.Logger.Info("GPU XID events watched again", "gpu", st.GPU, "uuid", st.UUID)
		}
		s.watched[st.GPU] = st.Watched
	}
	return states
}

// partial turns a source that returned values with some errors into OK:
// the failing devices are reported on their own series, and one broken
// GPU must not mark the whole source down.
func partial(st source.Status) source.Status {
	if st.State == source.Error {
		st.State = source.OK
	}
	return st
}

// identities keeps what naming a GPU needs when its backend fails later.
func identities(samples []gpu.Sample) []gpu.Sample {
	out := make([]gpu.Sample, len(samples))
	for i, s := range samples {
		out[i] = gpu.Sample{Index: s.Index, UUID: s.UUID, PCIBusID: s.PCIBusID, Product: s.Product, DeviceNode: s.DeviceNode}
	}
	return out
}

func downOnly(s gpu.Sample) gpu.Sample {
	return gpu.Sample{Index: s.Index, UUID: s.UUID, PCIBusID: s.PCIBusID, Product: s.Product, DeviceNode: s.DeviceNode,
		Time: s.Time, Errors: s.Errors}
}

// scope names a GPU's counters: its UUID, or its index before it has one.
func scope(s gpu.Sample) string {
	if s.UUID != "" {
		return s.UUID
	}
	return "gpu" + strconv.Itoa(s.Index)
}

// accumulateGPU replaces a sample's device counters with monotonic totals.
func (s *Sampler) accumulateGPU(g *gpu.Sample) {
	sc := scope(*g)
	upd := func(p *uint64, name, label string, bits uint8) {
		if p != nil {
			*p = s.bank.update(counterKey{sc, name, label}, *p, bits)
		}
	}
	upd(g.EnergyMillijoules, "energy", "", 0)
	if p := g.PCIe; p != nil {
		upd(p.TransmitBytes, "pcie_tx", "", p.ByteCounterBits)
		upd(p.ReceiveBytes, "pcie_rx", "", p.ByteCounterBits)
		upd(p.ReplayErrors, "pcie_replay", "", p.ReplayCounterBits)
	}
	if ic := g.Interconnect; ic != nil {
		for i := range ic.Links {
			l := &ic.Links[i]
			n := strconv.Itoa(l.Number)
			upd(l.TransmitBytes, "link_tx", n, 0)
			upd(l.ReceiveBytes, "link_rx", n, 0)
		}
		for i := range ic.Errors {
			upd(&ic.Errors[i].Count, "link_errors", ic.Errors[i].Type, 0)
		}
	}
	for i := range g.ECC {
		// Health judges what the driver counts now (a volatile count
		// restarts with the driver); only the exported counter goes on.
		g.ECC[i].Current = g.ECC[i].Count
		upd(&g.ECC[i].Count, "ecc", g.ECC[i].Type+"/"+g.ECC[i].Scope, 0)
	}
}

func (s *Sampler) accumulatePort(p *rdma.PortCounters) {
	sc := p.Device + "/" + strconv.Itoa(p.Port)
	for i := range p.Counters {
		c := &p.Counters[i]
		c.Value = s.bank.update(counterKey{sc, c.Name, ""}, c.Value, 0)
	}
	for i := range p.HWCounters {
		c := &p.HWCounters[i]
		c.Value = s.bank.update(counterKey{sc, "hw/" + c.Name, ""}, c.Value, 0)
	}
	for i := range p.ExtCounters {
		c := &p.ExtCounters[i]
		c.Value = s.bank.update(counterKey{sc, "ext/" + c.Name, ""}, c.Value, 0)
	}
	// A driver reload restarts the pause counters; the exported ones go on.
	for i := range p.Pause {
		pp := &p.Pause[i]
		prio := strconv.Itoa(pp.Priority)
		pp.RX = s.bank.update(counterKey{sc, "pause/rx/" + p.Netdev, prio}, pp.RX, 0)
		pp.TX = s.bank.update(counterKey{sc, "pause/tx/" + p.Netdev, prio}, pp.TX, 0)
	}
}

// publishLocked builds the frame from the last round, the XIDs and the
// history, and stores it. It is called with s.mu held.
func (s *Sampler) publishLocked() {
	f := s.base // a shallow copy: the round's slices are never changed again
	f.XIDs = make([]XIDCount, 0, len(s.xids))
	for _, x := range s.xids {
		f.XIDs = append(f.XIDs, *x)
	}
	slices.SortFunc(f.XIDs, func(a, b XIDCount) int { return cmp.Or(cmp.Compare(a.GPU, b.GPU), cmp.Compare(a.XID, b.XID)) })
	f.Kernel = s.kernelEventsLocked()
	if s.kmsgRunner != nil {
		st := s.kernel.stats
		f.KernelLog = &st
	}

	inputs := make([]health.Input, len(f.GPUs))
	for i, g := range f.GPUs {
		in := health.Input{Sample: g}
		for n := range s.linksUp[scope(g)] {
			in.LinksEverUp = append(in.LinksEverUp, n)
		}
		slices.Sort(in.LinksEverUp)
		in.Reported = append(kernelProblems(g, f.Kernel), pcieProblems(g, f.PCIe)...)
		for _, x := range f.XIDs {
			if x.GPU == g.Index && s.critical[x.XID] {
				in.CriticalXIDs = append(in.CriticalXIDs, health.XIDSeen{XID: x.XID, Count: x.Count, Last: x.Last})
			}
		}
		inputs[i] = in
	}
	f.Health = health.Evaluate(inputs)
	s.throttle.judge(&f, s.o.ThrottleAfter)
	// With no GPU samples, a GPU backend that failed (rather than found
	// no GPUs) leaves the condition unknown.
	sampled := len(f.GPUs) > 0
	if !sampled {
		sampled = true
		for _, r := range s.gpuRunners {
			for _, st := range f.Sources {
				if st.Name == r.Name && st.State == source.Error {
					sampled = false
				}
			}
		}
	}
	f.Condition, f.HasCondition = health.Condition(f.Health, sampled)
	f.Condition = health.WithDegraded(f.Condition, f.Health)
	s.latest.Store(&f)
}

// notify hands the latest condition to OnCondition if it differs from the
// last one handed over. It runs outside s.mu, so OnCondition may log or
// call out without holding up sampling.
func (s *Sampler) notify() {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	f := s.latest.Load()
	if s.o.OnCondition == nil || f == nil || !f.HasCondition || (s.condSent != nil && *s.condSent == f.Condition) {
		return
	}
	c := f.Condition
	s.condSent = &c
	s.o.OnCondition(c)
}
