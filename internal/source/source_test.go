package source

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestStatusOf(t *testing.T) {
	if s := StatusOf("x", nil, time.Second); s.State != OK || s.DurationSeconds != 1 {
		t.Errorf("nil error: %+v", s)
	}
	if s := StatusOf("x", NewAbsent("no %s", "library"), 0); s.State != Absent || s.Message != "no library" {
		t.Errorf("absent: %+v", s)
	}
	if s := StatusOf("x", errors.New("boom"), 0); s.State != Error || s.Message != "boom" {
		t.Errorf("error: %+v", s)
	}
	// Degraded only when every error is a fallback note; a real error
	// beside one is an error.
	fallback := NewDegraded("gpu_metrics 1.9 not decoded")
	if s := StatusOf("x", errors.Join(fallback, nil, NewDegraded("another")), 0); s.State != Degraded ||
		!strings.Contains(s.Message, "1.9 not decoded") || !errors.Is(fallback, ErrDegraded) {
		t.Errorf("degraded: %+v", s)
	}
	if s := StatusOf("x", errors.Join(fallback, errors.New("boom")), 0); s.State != Error {
		t.Errorf("degraded and broken: %+v", s)
	}
}

func TestRunnerTimeoutAndStuck(t *testing.T) {
	release := make(chan struct{})
	r := &Runner[int]{Name: "slow", Timeout: 20 * time.Millisecond, Fn: func(ctx context.Context) (int, error) {
		<-release // a read that ignores its context, like a hung sysfs file
		return 1, nil
	}}
	if _, st := r.Run(context.Background()); st.State != Error || !strings.Contains(st.Message, "timed out") {
		t.Fatalf("first run: %+v", st)
	}
	if _, st := r.Run(context.Background()); st.State != Error || !strings.Contains(st.Message, ErrStillRunning.Error()) {
		t.Fatalf("second run while stuck: %+v", st)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, st := r.Run(context.Background())
		if st.State == OK && v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never recovered: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunnerKeepsPartialResultsAndPanics(t *testing.T) {
	r := &Runner[[]string]{Name: "p", Timeout: time.Second, Fn: func(ctx context.Context) ([]string, error) {
		return []string{"good"}, errors.New("one device broken")
	}}
	v, st := r.Run(context.Background())
	if len(v) != 1 || st.State != Error {
		t.Fatalf("partial: %v %+v", v, st)
	}
	r = &Runner[[]string]{Name: "p", Timeout: time.Second, Fn: func(ctx context.Context) ([]string, error) {
		panic("bug")
	}}
	if _, st := r.Run(context.Background()); st.State != Error || !strings.Contains(st.Message, "panicked") {
		t.Fatalf("panic: %+v", st)
	}
}

// A run that starts right after another returned finds the runner free.
func TestBackToBackRuns(t *testing.T) {
	r := &Runner[int]{Name: "fast", Timeout: time.Second, Fn: func(context.Context) (int, error) { return 1, nil }}
	for i := range 2000 {
		if _, st := r.Run(context.Background()); st.State != OK {
			t.Fatalf("run %d: %+v", i, st)
		}
	}
}
