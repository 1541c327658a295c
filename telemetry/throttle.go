package telemetry

import (
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/health"
)

// throttleSince is the history the Degraded verdict needs: per GPU scope,
// when each degrading clock reason the GPU reports began to hold. Guarded
// by s.mu.
type throttleSince map[string]map[string]time.Time

// track records this round: a reason that holds keeps the time it began
// (or begins now), one that stopped is forgotten, so the GPU recovers as
// soon as its reasons clear. A GPU that did not answer keeps its history:
// one silent round neither clears nor restarts a slowdown.
func (h throttleSince) track(now time.Time, gpus []gpu.Sample) {
	for _, g := range gpus {
		if !g.Up {
			continue
		}
		_, active := health.ActiveThrottles(g)
		key := scope(g)
		for _, r := range health.ThrottleReasons {
			switch _, held := h[key][r]; {
			case active[r] && !held:
				if h[key] == nil {
					h[key] = map[string]time.Time{}
				}
				h[key][r] = now
			case !active[r] && held:
				delete(h[key], r)
			}
		}
	}
}

// judge sets each verdict's throttles from the history.
func (h throttleSince) judge(f *Frame, after time.Duration) {
	for i, g := range f.GPUs {
		if i < len(f.Health) {
			reported, _ := health.ActiveThrottles(g)
			f.Health[i].Throttles = health.Throttles(reported, h[scope(g)], f.Time, after)
		}
	}
}
