package tuning

import (
	"context"
	"testing"
	"time"

	"github.com/gpunode/gpunode/topology"
)

// The daemon re-verifies every interval: reading the host and planning a
// DGX (275 settings, 264 of them interrupts) is measured against the
// topology discovery the daemon runs anyway, alternating in the same loop
// so machine load hits both alike. Goal: verify/discover <= 1.
func BenchmarkVerifyDGX(b *testing.B) {
	f := newFixture(b, "dgx-h100-ib")
	p := builtin(b, "llm-inference")
	ctx := context.Background()
	var discover, verify time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := topology.Discover(ctx, f.fs); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if _, _, err := f.tuner.Plan(ctx, p, f.m); err != nil {
			b.Fatal(err)
		}
		discover += mid.Sub(start)
		verify += time.Since(mid)
	}
	b.ReportMetric(float64(verify)/float64(discover), "verify/discover")
	b.ReportMetric(float64(verify.Microseconds())/float64(b.N), "verify-µs/op")
}
