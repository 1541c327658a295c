package telemetry

import (
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/rdmahealth"
)

// judgePorts judges the round's RDMA ports against their history (kept
// here, between rounds) and sets the frame's verdicts and RDMAHealthy
// condition. Called by Round, with roundMu held, after the counters were
// made monotonic: a counter that restarted is then no burst.
func (s *Sampler) judgePorts(f *Frame, st source.Status) {
	if len(f.RDMA) == 0 && st.State == source.Error && s.rdmaJudged != nil {
		// The counters could not be read at all this round (gpunode_source_up
		// says so): the last verdicts stand, and the history is kept.
		f.RDMAHealth, f.RDMACondition, f.HasRDMACondition = s.rdmaJudged.RDMAHealth, s.rdmaJudged.RDMACondition, s.rdmaJudged.HasRDMACondition
		return
	}
	s.rdmaHistory, f.RDMAHealth = rdmahealth.Evaluate(s.rdmaHistory, f.RDMA, f.Time, s.o.RDMAHealth)
	// Counters never read leave the condition unknown; a node without
	// RDMA devices (absent) has none.
	sampled := len(f.RDMA) > 0 || st.State != source.Error
	f.RDMACondition, f.HasRDMACondition = rdmahealth.Condition(f.RDMAHealth, sampled)
	if len(f.RDMA) > 0 {
		s.rdmaJudged = &Frame{RDMAHealth: f.RDMAHealth, RDMACondition: f.RDMACondition, HasRDMACondition: f.HasRDMACondition}
	}
}

// notifyRDMA hands the latest RDMAHealthy condition to OnRDMACondition if
// it differs from the last one handed over (see notify).
func (s *Sampler) notifyRDMA() {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	f := s.latest.Load()
	if s.o.OnRDMACondition == nil || f == nil || !f.HasRDMACondition || (s.rdmaSent != nil && *s.rdmaSent == f.RDMACondition) {
		return
	}
	c := f.RDMACondition
	s.rdmaSent = &c
	s.o.OnRDMACondition(c)
}
