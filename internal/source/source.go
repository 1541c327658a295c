// Package source defines how a discovery source reports on itself: ok,
// absent (the hardware or library is not there, which is normal),
// degraded (it read its devices, but some readings came from a fallback
// because a table or library it met is of a revision it cannot decode) or
// error.
package source

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// State is the outcome of one run of a source.
type State string

const (
	OK       State = "ok"
	Absent   State = "absent"
	Degraded State = "degraded"
	Error    State = "error"
)

// States are every State, in the order gpunode_source_state lists them.
func States() []State { return []State{OK, Absent, Degraded, Error} }

// The discovery sources' names, as snapshots, logs, labels and
// gpunode_source_up report them. Each is defined here once.
const (
	Topology = "topology"
	RDMA     = "rdma"
	Settings = "settings"
	NVML     = "nvml"
	AMDSMI   = "amdsmi"
	AMDGPU   = "amdgpu"
)

// GPUBackends names the sources that inventory GPUs, in the order
// discovery prefers them.
func GPUBackends() []string { return []string{NVML, AMDSMI, AMDGPU} }

// ErrAbsent marks "not here" as opposed to "broken". Test with errors.Is.
var ErrAbsent = errors.New("absent")

// AbsentError says why a source found nothing to report.
type AbsentError struct{ Reason string }

func (e *AbsentError) Error() string        { return e.Reason }
func (e *AbsentError) Is(target error) bool { return target == ErrAbsent }

// NewAbsent returns an error that errors.Is(err, ErrAbsent) and says why.
func NewAbsent(format string, args ...any) error {
	return &AbsentError{Reason: fmt.Sprintf(format, args...)}
}

// ErrDegraded marks "read, but through a fallback": the source met a
// format it does not know and reported what it could read another way.
// Test with errors.Is.
var ErrDegraded = errors.New("degraded")

// DegradedError says what the source fell back from, and to what.
type DegradedError struct{ Reason string }

func (e *DegradedError) Error() string        { return e.Reason }
func (e *DegradedError) Is(target error) bool { return target == ErrDegraded }

// NewDegraded returns an error that errors.Is(err, ErrDegraded) and says
// what was read another way.
func NewDegraded(format string, args ...any) error {
	return &DegradedError{Reason: fmt.Sprintf(format, args...)}
}

// onlyDegraded reports whether every error err holds (through
// errors.Join) is a DegradedError: then the run did not fail.
func onlyDegraded(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !onlyDegraded(e) {
				return false
			}
		}
		return true
	}
	var d *DegradedError
	return errors.As(err, &d)
}

// Status is what a source reports about its last run.
type Status struct {
	Name  string `json:"name"`
	State State  `json:"state"`
	// Message is the error text, or why the source is absent.
	Message  string        `json:"message,omitempty"`
	Duration time.Duration `json:"-"`
	// DurationSeconds mirrors Duration for JSON consumers.
	DurationSeconds float64 `json:"duration_seconds"`
}

// StatusOf classifies err (nil, absent or other) into a Status.
func StatusOf(name string, err error, d time.Duration) Status {
	s := Status{Name: name, State: OK, Duration: d, DurationSeconds: d.Seconds()}
	switch {
	case err == nil:
	case errors.Is(err, ErrAbsent):
		s.State, s.Message = Absent, err.Error()
	case onlyDegraded(err):
		s.State, s.Message = Degraded, err.Error()
	default:
		s.State, s.Message = Error, err.Error()
	}
	return s
}

// ErrStillRunning is reported when a source's previous run has not returned:
// reads of a hung device cannot be interrupted, so a source is never run
// twice at once.
var ErrStillRunning = errors.New("previous run has not returned yet")

// Runner runs one source with a timeout. A run that outlives its timeout is
// reported as an error and left to finish in the background; until it does,
// later runs report ErrStillRunning instead of piling up goroutines.
type Runner[T any] struct {
	Name    string
	Timeout time.Duration
	Fn      func(ctx context.Context) (T, error)

	busy chan struct{} // holds one token while a run is in flight
}

type result[T any] struct {
	v   T
	err error
}

// Run executes the source once. The value is returned even with an error,
// so partial results (one broken device among good ones) are kept.
func (r *Runner[T]) Run(ctx context.Context) (T, Status) {
	if r.busy == nil {
		r.busy = make(chan struct{}, 1)
	}
	var zero T
	start := time.Now()
	select {
	case r.busy <- struct{}{}:
	default:
		return zero, StatusOf(r.Name, ErrStillRunning, 0)
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	done := make(chan result[T], 1)
	go func() {
		var res result[T]
		defer func() {
			if p := recover(); p != nil {
				res = result[T]{err: fmt.Errorf("source %s panicked: %v", r.Name, p)}
			}
			// Free the runner before reporting, so a Run that follows
			// this one at once does not find it still busy.
			<-r.busy
			done <- res
		}()
		res.v, res.err = r.Fn(ctx)
	}()
	select {
	case res := <-done:
		return res.v, StatusOf(r.Name, res.err, time.Since(start))
	case <-ctx.Done():
		select {
		case res := <-done: // finished just in time: keep the result
			return res.v, StatusOf(r.Name, res.err, time.Since(start))
		default:
		}
		err := ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %s", r.Timeout)
		}
		return zero, StatusOf(r.Name, err, time.Since(start))
	}
}
