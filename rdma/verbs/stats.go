package verbs

import (
	"slices"
	"time"
)

// Latency summarizes half round trips as ib_send_lat reports them: its
// "typical" is the median (P50), and percentiles index the sorted samples.
type Latency struct {
	Samples int           `json:"samples"`
	Min     time.Duration `json:"min_ns"`
	P50     time.Duration `json:"p50_ns"`
	P99     time.Duration `json:"p99_ns"`
	P999    time.Duration `json:"p999_ns"`
	Max     time.Duration `json:"max_ns"`
	Mean    time.Duration `json:"mean_ns"`
}

// Summarize computes the summary; the input is not changed.
func Summarize(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	at := func(q float64) time.Duration {
		i := int(q * float64(len(s)))
		return s[min(i, len(s)-1)]
	}
	return Latency{
		Samples: len(s),
		Min:     s[0],
		P50:     at(0.5),
		P99:     at(0.99),
		P999:    at(0.999),
		Max:     s[len(s)-1],
		Mean:    sum / time.Duration(len(s)),
	}
}
