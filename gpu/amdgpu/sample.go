package amdgpu

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
)

// cardState is what the sampler keeps per card between rounds.
type cardState struct {
	// busy holds a token while a read of the card is in flight: sysfs
	// reads of a hung GPU block, and blocked reads must not pile up.
	busy chan struct{}

	idMu     sync.Mutex
	identity gpu.Sample
	// xgmiLinks is the number of XGMI links the KFD reports, read once.
	xgmiLinks int
	// kfdIDs are the KFD gpu_ids of the card's topology nodes and cus its
	// compute units, read once (kfdprocs.go).
	kfdIDs []uint32
	cus    int
	dev    string
	// fallback names the gpu_metrics revision of the last read that could
	// not be decoded ("" when it was, or there is none), under idMu.
	fallback string
	// residency is the throttler residencies at the last read, per reason
	// (throttle.go); written only by the read holding busy.
	residency map[string]uint64
}

// Sample reads every amdgpu card, plus any card that answered before and
// is gone now (reported down and lost). Each card is read on its own
// goroutine; one that has not returned when ctx is done is reported down.
func (b *Backend) Sample(ctx context.Context) ([]gpu.Sample, error) {
	cards, err := b.listCards()
	b.mu.Lock()
	if len(cards) == 0 && len(b.cards) == 0 {
		b.mu.Unlock()
		return nil, err
	}
	errs := []error{err}
	present := map[string]bool{}
	var kfd map[string]kfdNode
	var kfdIDs map[string][]uint32
	for i, c := range cards {
		present[c.busID] = true
		st := b.cards[c.busID]
		if st == nil {
			if kfd == nil {
				kfd, kfdIDs = b.kfdTopology(cards), b.kfdGPUIDs(cards)
			}
			st = &cardState{busy: make(chan struct{}, 1), dev: c.dev, xgmiLinks: kfd[c.busID].xgmiLinks,
				kfdIDs: kfdIDs[c.busID], cus: kfd[c.busID].computeUnits}
			b.cards[c.busID] = st
		}
		st.idMu.Lock()
		st.identity.Index, st.identity.PCIBusID, st.identity.DeviceNode = i, c.busID, b.renderNode(c.dev)
		st.idMu.Unlock()
	}
	states := make([]*cardState, 0, len(b.cards))
	for _, st := range b.cards {
		states = append(states, st)
	}
	b.mu.Unlock()
	slices.SortFunc(states, func(x, y *cardState) int { return strings.Compare(x.id().PCIBusID, y.id().PCIBusID) })
	slices.SortStableFunc(states, func(x, y *cardState) int { return x.id().Index - y.id().Index })

	reads := make([]gpu.DeviceRead, len(states))
	for k, st := range states {
		down := func(why string) gpu.Sample { return st.down(b.now(), why) }
		reads[k] = gpu.DeviceRead{Busy: st.busy, Read: func() gpu.Sample { return b.sampleCard(st) }, Down: down}
		if !present[st.id().PCIBusID] {
			// Gone, even while an earlier read hangs: its own token.
			reads[k] = gpu.DeviceRead{Busy: make(chan struct{}, 1), Down: down, Read: func() gpu.Sample {
				s := down("the GPU is gone from " + drmClass)
				s.Lost = true
				return s
			}}
		}
	}
	out := gpu.SampleEach(ctx, reads)
	for _, s := range out {
		for _, e := range s.Errors {
			errs = append(errs, fmt.Errorf("gpu %d (%s): %s", s.Index, s.PCIBusID, e))
		}
	}
	if b.insteadOf != "" {
		errs = append(errs, source.NewDegraded("amdgpu sysfs read instead of AMD SMI: %s", b.insteadOf))
	}
	return out, errors.Join(append(errs, fallbacks(states))...)
}

// fallbacks says which GPUs' gpu_metrics tables were of a revision we
// cannot decode, one line per revision; their readings came from the
// plain sysfs attributes (the source is degraded, not failed).
func fallbacks(states []*cardState) error {
	byRev := map[string][]string{}
	var revs []string
	for _, st := range states {
		st.idMu.Lock()
		rev, bus := st.fallback, st.identity.PCIBusID
		st.idMu.Unlock()
		if rev == "" {
			continue
		}
		if byRev[rev] == nil {
			revs = append(revs, rev)
		}
		byRev[rev] = append(byRev[rev], bus)
	}
	var errs []error
	for _, rev := range revs {
		errs = append(errs, source.NewDegraded("%s on %s: not decoded; read gpu_busy_percent, mem_info_vram_*, pp_dpm_*, hwmon instead (no XGMI counters, and no energy where hwmon lacks it)",
			rev, strings.Join(byRev[rev], ", ")))
	}
	return errors.Join(errs...)
}

func (st *cardState) id() gpu.Sample {
	st.idMu.Lock()
	defer st.idMu.Unlock()
	return st.identity
}

func (st *cardState) down(now time.Time, why string) gpu.Sample {
	s := st.id()
	s.Time, s.Up, s.Errors = now, false, []string{why}
	return s
}

// renderNode returns the card's render node ("dri/renderD128"), which
// device plugins hand to containers, or "".
func (b *Backend) renderNode(dev string) string {
	names, err := b.fs.Names(dev + "/drm")
	if err != nil {
		return ""
	}
	for _, n := range names {
		if strings.HasPrefix(n, "renderD") {
			return "dri/" + n
		}
	}
	return ""
}

func ptr[T any](v T) *T { return &v }

// sampleCard reads one card. Missing attributes are simply not reported;
// attributes that fail to read or parse are named on Errors.
func (b *Backend) sampleCard(st *cardState) gpu.Sample {
	var errs []error
	s := st.id()
	dev := st.dev
	s.Time, s.Up = b.now(), true
	if id, ok := attr(b, dev, "unique_id", parseUniqueID, &errs); ok {
		s.UUID = id
	}
	_, s.Product, _ = b.identify(dev, &errs)
	if r, ok := attr(b, dev, "gpu_busy_percent", parsePercent, &errs); ok {
		s.Utilization = &r
	}
	if r, ok := attr(b, dev, "mem_busy_percent", parsePercent, &errs); ok {
		s.MemoryUtilization = &r
	}
	total, okT := attr(b, dev, "mem_info_vram_total", parseUint, &errs)
	used, okU := attr(b, dev, "mem_info_vram_used", parseUint, &errs)
	if okT {
		s.MemoryTotalBytes = &total
	}
	if okU {
		s.MemoryUsedBytes = &used
	}
	if okT && okU && used <= total {
		s.MemoryFreeBytes = ptr(total - used)
	}
	if hz, ok := attr(b, dev, "pp_dpm_sclk", parseDPM, &errs); ok {
		s.Clocks = append(s.Clocks, gpu.Clock{Clock: gpu.ClockGraphics, Hertz: hz})
	}
	if hz, ok := attr(b, dev, "pp_dpm_mclk", parseDPM, &errs); ok {
		s.Clocks = append(s.Clocks, gpu.Clock{Clock: gpu.ClockMemory, Hertz: hz})
	}
	if hw := b.hwmon(dev); hw != "" {
		b.sampleHwmon(hw, &s, &errs)
	}
	if ue, ce, ok := b.rasCounts(dev, &errs); ok {
		s.ECC = []gpu.ECCCount{
			{Type: gpu.ECCCorrected, Scope: gpu.ECCVolatile, Count: ce},
			{Type: gpu.ECCUncorrected, Scope: gpu.ECCVolatile, Count: ue},
		}
	}
	replays, okR := attr(b, dev, "pcie_replay_count", parseUint, &errs)
	m, okM, fallback := b.metrics(dev, &errs)
	if okM {
		b.fromMetrics(m, st.xgmiLinks, &s)
		if st.residency == nil {
			st.residency = map[string]uint64{}
		}
		s.ClockEventReasons = ThrottleReasons(m, st.residency)
	}
	if okR {
		if s.PCIe == nil {
			s.PCIe = &gpu.PCIeSample{}
		}
		s.PCIe.ReplayErrors = &replays
	}
	if len(st.kfdIDs) > 0 {
		s.Processes = b.kfdProcesses(st.kfdIDs, st.cus)
	}
	st.idMu.Lock()
	st.identity.UUID, st.identity.Product = s.UUID, s.Product
	st.fallback = fallback
	st.idMu.Unlock()
	for _, e := range errs {
		s.Errors = append(s.Errors, e.Error())
	}
	if !b.fs.Exists(dev) {
		s.Up, s.Lost = false, true
	}
	return s
}

// sampleHwmon reads power, energy and temperatures from the card's hwmon
// directory. amdgpu names its temperature inputs with labels (edge,
// junction, mem); junction (the hottest spot of the die) is reported as
// the "gpu" sensor, the one alerts are written against.
func (b *Backend) sampleHwmon(hw string, s *gpu.Sample, errs *[]error) {
	// power1_average is the ASICs' averaged socket power; MI300 and newer
	// report power1_input (current) instead.
	for _, f := range []string{"power1_average", "power1_input"} {
		if uw, ok := attr(b, hw, f, parseUint, errs); ok {
			s.PowerWatts = ptr(float64(uw) / 1e6)
			break
		}
	}
	if uw, ok := attr(b, hw, "power1_cap", parseUint, errs); ok {
		s.PowerLimitWatts = ptr(float64(uw) / 1e6)
	}
	if uj, ok := attr(b, hw, "energy1_input", parseUint, errs); ok {
		s.EnergyMillijoules = ptr(uj / 1000)
	}
	for n := 1; n <= 3; n++ {
		label, ok := attr(b, hw, fmt.Sprintf("temp%d_label", n), text, errs)
		if !ok {
			continue
		}
		c, ok := attr(b, hw, fmt.Sprintf("temp%d_input", n), parseMilliCelsius, errs)
		if !ok {
			continue
		}
		sensor := map[string]string{"edge": gpu.SensorEdge, "junction": gpu.SensorGPU, "mem": gpu.SensorMemory}[label]
		if sensor != "" {
			s.Temperatures = append(s.Temperatures, gpu.Temperature{Sensor: sensor, Celsius: c})
		}
	}
	slices.SortFunc(s.Temperatures, func(x, y gpu.Temperature) int { return strings.Compare(x.Sensor, y.Sensor) })
}

// rasCounts sums the RAS error counts of the memory blocks (umc: HBM).
func (b *Backend) rasCounts(dev string, errs *[]error) (ue, ce uint64, ok bool) {
	type counts struct{ ue, ce uint64 }
	c, ok := attr(b, dev, "ras/umc_err_count", func(s string) (counts, error) {
		ue, ce, err := parseRASCount(s)
		return counts{ue, ce}, err
	}, errs)
	return c.ue, c.ce, ok
}

// metrics reads and decodes the card's gpu_metrics table. A revision we
// cannot decode is no error of the card: fallback names it ("gpu_metrics
// 1.9"), and the sample keeps what the plain attributes gave.
func (b *Backend) metrics(dev string, errs *[]error) (m Metrics, ok bool, fallback string) {
	raw, err := b.fs.ReadFile(dev + "/gpu_metrics")
	if errors.Is(err, fs.ErrNotExist) {
		return Metrics{}, false, ""
	}
	if err != nil {
		*errs = append(*errs, fmt.Errorf("read gpu_metrics: %w", err))
		return Metrics{}, false, ""
	}
	m, err = ParseMetrics(raw)
	if errors.Is(err, ErrUnsupported) {
		return Metrics{}, false, fmt.Sprintf("gpu_metrics %d.%d", m.Format, m.Content)
	}
	if err != nil {
		*errs = append(*errs, err)
		return Metrics{}, false, ""
	}
	return m, true, ""
}

// fromMetrics fills in what sysfs text attributes did not give, plus the
// counters only gpu_metrics has (XGMI, PCIe replays on MI300).
func (b *Backend) fromMetrics(m Metrics, xgmiLinks int, s *gpu.Sample) {
	if s.Utilization == nil {
		s.Utilization = m.GFXActivity
	}
	if s.MemoryUtilization == nil {
		s.MemoryUtilization = m.UMCActivity
	}
	if s.PowerWatts == nil {
		s.PowerWatts = m.SocketPowerW
	}
	if s.EnergyMillijoules == nil {
		s.EnergyMillijoules = m.EnergyMillijoules
	}
	if len(s.Temperatures) == 0 {
		for _, t := range []struct {
			sensor string
			c      *float64
		}{{gpu.SensorEdge, m.TempEdgeC}, {gpu.SensorGPU, m.TempHotspotC}, {gpu.SensorMemory, m.TempMemC}} {
			if t.c != nil {
				s.Temperatures = append(s.Temperatures, gpu.Temperature{Sensor: t.sensor, Celsius: *t.c})
			}
		}
		slices.SortFunc(s.Temperatures, func(x, y gpu.Temperature) int { return strings.Compare(x.Sensor, y.Sensor) })
	}
	if len(s.Clocks) == 0 {
		if m.GFXClockMHz != nil {
			s.Clocks = append(s.Clocks, gpu.Clock{Clock: gpu.ClockGraphics, Hertz: *m.GFXClockMHz * 1e6})
		}
		if m.MemClockMHz != nil {
			s.Clocks = append(s.Clocks, gpu.Clock{Clock: gpu.ClockMemory, Hertz: *m.MemClockMHz * 1e6})
		}
	}
	if m.PCIeReplays != nil || m.PCIeLinkWidth != nil || m.PCIeLinkSpeed != nil {
		p := &gpu.PCIeSample{ReplayErrors: m.PCIeReplays, LinkWidth: m.PCIeLinkWidth}
		if m.PCIeLinkSpeed != nil {
			if g := pcieGen(*m.PCIeLinkSpeed); g > 0 {
				p.LinkGeneration = &g
			}
		}
		s.PCIe = p
	}
	if xgmiLinks > 0 && m.XGMIReadKB != nil {
		ic := &gpu.InterconnectSample{Kind: gpu.XGMI}
		up := m.XGMILinkWidth != nil && *m.XGMILinkWidth > 0
		for i := range min(xgmiLinks, len(m.XGMIReadKB)) {
			// Data counters are in kilobytes (1024 bytes, as AMD SMI
			// converts them). Read from this GPU's point of view is
			// what it received.
			l := gpu.Link{Number: i, Up: up, ReceiveBytes: ptr(m.XGMIReadKB[i] * 1024)}
			if i < len(m.XGMILinkUp) && m.XGMILinkUp[i] != nil {
				l.Up = *m.XGMILinkUp[i] // 1.7 on: each link's own state
			}
			if i < len(m.XGMIWriteKB) {
				l.TransmitBytes = ptr(m.XGMIWriteKB[i] * 1024)
			}
			ic.Links = append(ic.Links, l)
		}
		s.Interconnect = ic
	}
}

// pcieGen maps gpu_metrics' link speed (0.1 GT/s) to the PCIe generation.
func pcieGen(tenthsGTs int) int {
	switch tenthsGTs {
	case 25:
		return 1
	case 50:
		return 2
	case 80:
		return 3
	case 160:
		return 4
	case 320:
		return 5
	case 640:
		return 6
	}
	return 0
}
