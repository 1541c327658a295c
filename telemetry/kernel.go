package telemetry

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/health"
	"github.com/gpunode/gpunode/kmsg"
)

// SourceKernelLog is the kernel log reader, as gpunode_source_up names it.
const SourceKernelLog = "kernel-log"

// KernelLog reads the records the kernel logged since the last read
// (kmsg.Reader).
type KernelLog interface {
	Read(ctx context.Context) (kmsg.Batch, error)
}

// KernelEvent counts the kernel log's reports of one kind about one
// device since the agent started (since boot on its first start).
type KernelEvent struct {
	Kind   kmsg.Kind
	Device string
	// Code is the SXid, the mlx5 syndrome or the Xid of a device that is no
	// GPU the agent knows; 0 when the kind has none.
	Code     uint64
	Severity string
	// Detail is the last report's description (mlx5 syndrome, RAS block).
	Detail string
	Count  uint64
	Last   time.Time
}

// KernelLogStats describes the reading of the kernel log.
type KernelLogStats struct {
	// Records read since the agent started; Lost were overwritten in the
	// kernel's buffer before they were read.
	Records, Lost uint64
}

// xidMatchWindow: an XID the GPU library reports and the same XID in the
// kernel log on the same GPU this close in time are one fault. The library
// stamps the event when it is delivered, the log when it is printed; a
// second apart at most in practice, and the same XID twice on one GPU
// within 10 s is a burst the first already reported.
const xidMatchWindow = 10 * time.Second

type xidSource int

const (
	fromLibrary xidSource = iota
	fromKernel
)

type occurrence struct {
	at      time.Time
	src     xidSource
	matched bool
}

type kernelKey struct {
	kind     kmsg.Kind
	device   string
	code     uint64
	severity string
}

// kernelState is what the sampler keeps of the kernel log. Its fields are
// guarded by Sampler.mu, but pending, which the reader fills (possibly
// after its runner gave up on it: a late batch is counted next round,
// never dropped, as its records are already journaled).
type kernelState struct {
	pendingMu sync.Mutex
	pending   []kmsg.Batch

	events map[kernelKey]*KernelEvent
	stats  KernelLogStats
	seen   map[xidKey][]occurrence
}

// countXIDLocked counts one XID unless it is the other source's report of
// one already counted. Called with s.mu held.
func (s *Sampler) countXIDLocked(gpuIndex int, uuid string, code uint64, at time.Time, src xidSource) bool {
	k := xidKey{gpuIndex, code}
	occ := s.kernel.seen[k]
	// Forget what is too old to match anything (arrival is in rough time
	// order; a few stragglers kept are harmless).
	occ = slices.DeleteFunc(occ, func(o occurrence) bool { return at.Sub(o.at) > 4*xidMatchWindow })
	for i := range occ {
		o := &occ[i]
		if o.src != src && !o.matched && absDuration(at.Sub(o.at)) <= xidMatchWindow {
			o.matched = true
			s.kernel.seen[k] = occ
			return false
		}
	}
	s.kernel.seen[k] = append(occ, occurrence{at: at, src: src})
	x := s.xids[k]
	if x == nil {
		x = &XIDCount{GPU: gpuIndex, UUID: uuid, XID: code}
		s.xids[k] = x
	}
	x.Count++
	if at.After(x.Last) {
		x.Last = at
	}
	return true
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// takePending hands over the batches the reader brought.
func (k *kernelState) takePending() []kmsg.Batch {
	k.pendingMu.Lock()
	defer k.pendingMu.Unlock()
	p := k.pending
	k.pending = nil
	return p
}

// applyKernelLocked counts the kernel log's new events: XIDs of a known GPU
// join the XID series, the rest are counted by kind and device. Called by
// Round with s.mu held; gpus are the round's samples.
func (s *Sampler) applyKernelLocked(gpus []gpu.Sample) {
	byBus := map[string]gpu.Sample{}
	for _, g := range gpus {
		if g.PCIBusID != "" {
			byBus[g.PCIBusID] = g
		}
	}
	for _, b := range s.kernel.takePending() {
		s.kernel.stats.Records += uint64(b.Records)
		s.kernel.stats.Lost += b.Lost
		if b.Lost > 0 {
			s.o.Logger.Warn("kernel log records were overwritten before they were read; faults in them are missed", "lost", b.Lost)
		}
		for _, e := range b.Events {
			// Corrected errors are counted but logged at debug: some
			// platforms log them by the thousand (AER spam on a marginal link).
			level := slog.LevelWarn
			if e.Severity == kmsg.SeverityCorrected {
				level = slog.LevelDebug
			}
			s.o.Logger.Log(context.Background(), level, "kernel log reports a device fault", "kind", e.Kind, "device", e.Device, "code", e.Code,
				"severity", e.Severity, "detail", e.Detail, "seq", e.Seq, "logged", e.Time.UTC().Format(time.RFC3339))
			if g, ok := byBus[e.Device]; ok && e.Kind == kmsg.XID {
				s.countXIDLocked(g.Index, g.UUID, e.Code, e.Time, fromKernel)
				continue
			}
			k := kernelKey{e.Kind, e.Device, e.Code, e.Severity}
			if e.Kind == kmsg.AMDGPURAS {
				k.code = 0 // the code is a count of errors, not an identity
			}
			ev := s.kernel.events[k]
			if ev == nil {
				ev = &KernelEvent{Kind: k.kind, Device: k.device, Code: k.code, Severity: k.severity}
				s.kernel.events[k] = ev
			}
			n := uint64(1)
			if e.Kind == kmsg.AMDGPURAS && e.Code > 0 {
				n = e.Code
			}
			ev.Count += n
			ev.Detail = e.Detail
			if e.Time.After(ev.Last) {
				ev.Last = e.Time
			}
		}
	}
}

// kernelEventsLocked lists the counts in a fixed order.
func (s *Sampler) kernelEventsLocked() []KernelEvent {
	out := make([]KernelEvent, 0, len(s.kernel.events))
	for _, e := range s.kernel.events {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b KernelEvent) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Device, b.Device), cmp.Compare(a.Code, b.Code),
			cmp.Compare(a.Severity, b.Severity))
	})
	return out
}

// kernelProblems are the health problems the kernel log reports for a GPU:
// it fell off the bus, or PCIe AER logged an uncorrectable error on it.
func kernelProblems(g gpu.Sample, events []KernelEvent) []health.Problem {
	if g.PCIBusID == "" {
		return nil
	}
	var ps []health.Problem
	var aer []string
	var last time.Time
	for _, e := range events {
		if e.Device != g.PCIBusID {
			continue
		}
		switch {
		case e.Kind == kmsg.FellOffBus:
			ps = append(ps, health.Problem{Reason: health.ReasonGPULost,
				Message: "fell off the bus (kernel log, " + e.Last.UTC().Format(time.RFC3339) + ")"})
		case e.Kind == kmsg.AER && (e.Severity == kmsg.SeverityFatal || e.Severity == kmsg.SeverityNonFatal):
			aer = append(aer, fmt.Sprintf("%d %s", e.Count, e.Severity))
			if e.Last.After(last) {
				last = e.Last
			}
		case e.Kind == kmsg.AMDGPURAS && e.Severity == kmsg.SeverityFatal:
			ps = append(ps, health.Problem{Reason: health.ReasonUncorrectableECC,
				Message: fmt.Sprintf("%d uncorrectable RAS errors in the %s block (kernel log, last at %s)", e.Count, e.Detail, e.Last.UTC().Format(time.RFC3339))})
		}
	}
	if len(aer) > 0 {
		ps = append(ps, health.Problem{Reason: health.ReasonPCIeError,
			Message: "PCIe AER " + strings.Join(aer, ", ") + " error(s) in the kernel log, last at " + last.UTC().Format(time.RFC3339)})
	}
	return ps
}
