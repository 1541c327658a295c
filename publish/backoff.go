package publish

import (
	"math/rand/v2"
	"time"
)

// backoff is a capped exponential delay with jitter: attempt n waits a
// random time in [d/2, d) where d = initial * 2^n, capped at max, so
// agents that lost the API server together do not retry in step.
type backoff struct {
	initial, max time.Duration
	n            int
	rand         func() float64 // [0, 1); replaced in tests
}

func newBackoff(initial, max time.Duration) *backoff {
	return &backoff{initial: initial, max: max, rand: rand.Float64}
}

// next returns the delay before the next attempt.
func (b *backoff) next() time.Duration {
	d := b.max
	if b.n < 30 { // beyond 2^30 the shift would overflow; max has won long before
		if e := b.initial << b.n; e > 0 && e < b.max {
			d = e
		}
	}
	b.n++
	return d/2 + time.Duration(b.rand()*float64(d/2))
}

func (b *backoff) reset() { b.n = 0 }
