package telemetry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/health"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/topology"
)

// SourcePCIe is the reader of the GPUs' and NICs' AER counters and links.
const SourcePCIe = "pcie-health"

// PCIeDevice is a GPU, NIC or a bridge above one, with its AER counters
// (since boot) and link as last read.
type PCIeDevice struct {
	topology.PCIeHealth
	// NonFatalIncrease and FatalIncrease are the uncorrectable errors
	// counted since the agent's first reading of the device: they make the
	// device (and the GPUs below a bridge) unhealthy.
	NonFatalIncrease, FatalIncrease uint64
	// Downtrained is true while the link runs narrower than its maximum
	// (or, for a NIC, slower): a finding at run time, not only at discovery.
	Downtrained bool
}

type pcieState struct {
	// endpoints for the runner's next read (a read that hung may still
	// hold the last list: it is replaced, not changed).
	endpoints   atomic.Pointer[[]topology.PCIeEndpoint]
	base        map[string]topology.AERCounts // first reading of each device
	downtrained map[string]bool               // logged state
}

// newPCIeRunner reads the endpoints last stored, under the round's
// timeout; a read that hangs is left behind and reported, not repeated.
func (s *Sampler) newPCIeRunner() *source.Runner[[]topology.PCIeHealth] {
	return &source.Runner[[]topology.PCIeHealth]{Name: SourcePCIe, Timeout: s.o.Timeout,
		Fn: func(context.Context) ([]topology.PCIeHealth, error) {
			eps := *s.pcie.endpoints.Load()
			if len(eps) == 0 {
				return nil, fmt.Errorf("%w: no PCIe GPU or NIC", source.ErrAbsent)
			}
			read, errs := topology.ReadPCIeHealth(s.o.FS, eps)
			return read, errors.Join(errs...)
		}}
}

// readPCIe reads the AER counters and links of the round's GPUs and RDMA
// devices and of the bridges above them. Called by Round with roundMu held.
func (s *Sampler) readPCIe(ctx context.Context, gpus []gpu.Sample, ports []rdma.PortCounters) ([]PCIeDevice, source.Status) {
	var eps []topology.PCIeEndpoint
	for _, g := range gpus {
		if g.PCIBusID != "" {
			eps = append(eps, topology.PCIeEndpoint{Address: g.PCIBusID, Role: "gpu"})
		}
	}
	seen := map[string]bool{}
	for _, p := range ports {
		if seen[p.Device] {
			continue
		}
		seen[p.Device] = true
		// Soft devices (rxe) have no PCI device.
		if addr, err := s.o.FS.LinkBase("/sys/class/infiniband/" + p.Device + "/device"); err == nil && strings.Count(addr, ":") == 2 {
			eps = append(eps, topology.PCIeEndpoint{Address: addr, Role: "nic"})
		}
	}
	s.pcie.endpoints.Store(&eps)
	read, st := s.pcieRunner.Run(ctx)
	if len(read) > 0 {
		st = partial(st)
	}
	out := make([]PCIeDevice, 0, len(read))
	for _, h := range read {
		d := PCIeDevice{PCIeHealth: h, Downtrained: h.Link.Downtrained(h.Role == "nic")}
		if h.AER != nil {
			base, ok := s.pcie.base[h.Address]
			if !ok || h.AER.Fatal < base.Fatal || h.AER.NonFatal < base.NonFatal {
				// First reading, or the counters went back (the device was
				// removed and found again): a new baseline.
				base = *h.AER
				s.pcie.base[h.Address] = base
			}
			d.FatalIncrease, d.NonFatalIncrease = h.AER.Fatal-base.Fatal, h.AER.NonFatal-base.NonFatal
		}
		if was := s.pcie.downtrained[h.Address]; d.Downtrained != was {
			if d.Downtrained {
				s.o.Logger.Warn("PCIe link runs below its maximum", "device", h.Address, "role", h.Role, "below", h.Below,
					"speed", h.Link.CurrentSpeed, "width", h.Link.CurrentWidth, "max_speed", h.Link.MaxSpeed, "max_width", h.Link.MaxWidth)
			} else {
				s.o.Logger.Info("PCIe link back at its maximum", "device", h.Address, "role", h.Role)
			}
			s.pcie.downtrained[h.Address] = d.Downtrained
		}
		out = append(out, d)
	}
	return out, st
}

// pcieProblems: uncorrectable AER errors counted since the agent started
// on a GPU or a bridge above it make the GPU unhealthy.
func pcieProblems(g gpu.Sample, devs []PCIeDevice) []health.Problem {
	if g.PCIBusID == "" {
		return nil
	}
	var parts []string
	for _, d := range devs {
		if d.FatalIncrease+d.NonFatalIncrease == 0 || d.Address != g.PCIBusID && !slices.Contains(d.Below, g.PCIBusID) {
			continue
		}
		where := "the GPU"
		if d.Address != g.PCIBusID {
			where = "its upstream port " + d.Address
		}
		parts = append(parts, fmt.Sprintf("%d fatal, %d non-fatal on %s", d.FatalIncrease, d.NonFatalIncrease, where))
	}
	if len(parts) == 0 {
		return nil
	}
	return []health.Problem{{Reason: health.ReasonPCIeError,
		Message: "PCIe AER errors since the agent started (aer_dev_*): " + strings.Join(parts, "; ")}}
}
