package probe

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// A peer that has not proved it holds the token is refused with a code
// only: it learns nothing of this agent's parser. Anyone who can reach the
// port can make such connections, so they are counted (Refusals, exported
// as gpunode_rdma_probe_refused_total) and logged at most once per
// interval with the count since the last line, never once each.

// RefusalReasons are the reasons an unauthenticated peer is refused, in
// order: a malformed, truncated or missing request (a peer that closes or
// stays silent included), a wrong token (HMAC), another protocol version.
var RefusalReasons = []string{CodeBadRequest, CodeUnauthorized, CodeVersion}

// Refusals counts the connections a server refused before the peer
// authenticated, by reason. The zero value is ready; it is safe for
// concurrent use.
type Refusals struct {
	badRequest, unauthorized, version atomic.Uint64
}

func (r *Refusals) counter(reason string) *atomic.Uint64 {
	switch reason {
	case CodeUnauthorized:
		return &r.unauthorized
	case CodeVersion:
		return &r.version
	}
	return &r.badRequest
}

// Counts returns the count of every reason in RefusalReasons.
func (r *Refusals) Counts() map[string]uint64 {
	out := make(map[string]uint64, len(RefusalReasons))
	for _, reason := range RefusalReasons {
		out[reason] = r.counter(reason).Load()
	}
	return out
}

// DefaultRefusalLogInterval is the least time between two log lines about
// refused unauthenticated peers.
const DefaultRefusalLogInterval = 10 * time.Second

// refusalLog writes a refusal at once when no line was written in the last
// interval; otherwise it holds it and a timer writes the count at the end
// of the interval.
type refusalLog struct {
	log   *slog.Logger
	every time.Duration

	mu      sync.Mutex
	last    time.Time         // when the last line was written
	pending map[string]uint64 // refusals since then, by reason
	total   uint64
	peer    string // the latest refusal's
	err     string
	timer   *time.Timer
}

func newRefusalLog(log *slog.Logger, every time.Duration) *refusalLog {
	if every <= 0 {
		every = DefaultRefusalLogInterval
	}
	return &refusalLog{log: log, every: every, pending: map[string]uint64{}}
}

func (l *refusalLog) refused(reason, peer string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending[reason]++
	l.total++
	l.peer, l.err = peer, err.Error()
	now := time.Now()
	wait := l.every - now.Sub(l.last)
	if l.last.IsZero() || wait <= 0 {
		l.writeLocked(now)
		return
	}
	if l.timer == nil {
		l.timer = time.AfterFunc(wait, l.flush)
	}
}

// flush writes what is held (the timer's end of an interval).
func (l *refusalLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = nil
	l.writeLocked(time.Now())
}

// stop writes what is held and stops the timer (the server is done).
func (l *refusalLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.writeLocked(time.Now())
}

func (l *refusalLog) writeLocked(now time.Time) {
	if l.total == 0 {
		return
	}
	args := []any{"count", l.total}
	for _, reason := range RefusalReasons {
		if n := l.pending[reason]; n > 0 {
			args = append(args, reason, n)
		}
	}
	if !l.last.IsZero() {
		args = append(args, "since", l.last.Format(time.RFC3339))
	}
	args = append(args, "last_peer", l.peer, "last_err", l.err)
	l.log.Warn("refused unauthenticated probe connections", args...)
	l.last, l.total, l.pending = now, 0, map[string]uint64{}
}
