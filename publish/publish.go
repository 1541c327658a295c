package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/nodestatus"
)

// Desired is what the agent wants on its Node.
type Desired struct {
	Labels labels.Set
	// Failed are the label sources that failed in the snapshot Labels come
	// from; their labels keep the values the agent owns on the Node
	// (labels.Hold), also right after a restart.
	Failed []labels.Source
	// LabelOptions are the options Labels were computed with (domain and
	// sets), which say which keys are the agent's and which are shared.
	LabelOptions labels.Options
	Conditions   []nodestatus.Condition
	// Taints are the agent's own taints (the opt-in GPU health taint).
	Taints []nodestatus.Taint
	// TaintKeys are the taint keys the agent manages: a taint on the Node
	// with one of them that is not in Taints is removed. Taints with other
	// keys (the kubelet's, the node controller's, an operator's) are never
	// touched. The keys of Taints are always managed.
	TaintKeys []string
}

func (d Desired) equal(o Desired) bool {
	return d.Labels.Equal(o.Labels) && slices.Equal(d.Failed, o.Failed) && slices.Equal(d.Conditions, o.Conditions) &&
		d.LabelOptions.Domain == o.LabelOptions.Domain && maps.Equal(d.LabelOptions.Sets, o.LabelOptions.Sets) &&
		slices.Equal(d.Taints, o.Taints) && slices.Equal(d.TaintKeys, o.TaintKeys)
}

// Options configure a Publisher.
type Options struct {
	Client *kubeapi.Client
	// Node is the agent's own Node, the only one it reads or writes.
	Node string
	// Resync is how often the Node is re-read when nothing changed.
	Resync time.Duration
	// BackoffInitial and BackoffMax bound the retry delay after a failure.
	BackoffInitial, BackoffMax time.Duration
	// EventNamespace is where events about the Node are created.
	EventNamespace string
	// Instance, when set, is written as the Node's InstanceAnnotation.
	Instance string
	Logger   *slog.Logger
	// Now is the clock for condition and event times; nil means time.Now.
	Now func() time.Time
}

// Publisher keeps the agent's labels and conditions on its Node. Set and
// Event never block; Run does the API calls.
type Publisher struct {
	o       Options
	log     *slog.Logger
	m       *metrics
	backoff *backoff
	wake    chan struct{}

	mu      sync.Mutex
	desired *Desired // nil until the first Set
	events  []*kubeapi.Event
	seq     int // makes event names unique within a nanosecond

	// Owned by Run's goroutine.
	conflicts map[string]conflict
}

// conflict is a shared label another manager owns with another value.
type conflict struct{ theirs, ours, manager string }

// maxQueuedEvents bounds the events kept while the API server is away.
const maxQueuedEvents = 100

// New returns a publisher; call Run to start it.
func New(o Options) *Publisher {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Publisher{
		o:         o,
		log:       o.Logger.With("node", o.Node),
		m:         newMetrics(),
		backoff:   newBackoff(o.BackoffInitial, o.BackoffMax),
		wake:      make(chan struct{}, 1),
		conflicts: map[string]conflict{},
	}
}

// Collectors are the publisher's metrics, for the agent's registry.
func (p *Publisher) Collectors() []prometheus.Collector { return p.m.collectors() }

// Set replaces what the agent wants on its Node. An unchanged value costs
// nothing: no request is made.
func (p *Publisher) Set(d Desired) {
	d.Conditions = slices.DeleteFunc(slices.Clone(d.Conditions), func(c nodestatus.Condition) bool {
		if slices.Contains(nodestatus.OwnedConditionTypes, c.Type) {
			return false
		}
		p.log.Error("condition type not owned by the agent; the admission policy would reject it, so it is not published", "type", c.Type)
		return true
	})
	slices.SortFunc(d.Conditions, func(a, b nodestatus.Condition) int { return compareStrings(a.Type, b.Type) })
	d.Taints = sortTaints(slices.Clone(d.Taints))
	d.TaintKeys = slices.Clone(d.TaintKeys)
	for _, t := range d.Taints {
		d.TaintKeys = append(d.TaintKeys, t.Key)
	}
	slices.Sort(d.TaintKeys)
	d.TaintKeys = slices.Compact(d.TaintKeys)
	p.mu.Lock()
	changed := p.desired == nil || !p.desired.equal(d)
	if changed {
		p.desired = &d
	}
	p.mu.Unlock()
	if changed {
		p.poke()
	}
}

// Event records an event about the Node; it is sent with the next pass.
func (p *Publisher) Event(e nodestatus.Event) {
	p.mu.Lock()
	p.queueLocked(e)
	p.mu.Unlock()
	p.poke()
}

func (p *Publisher) queueLocked(e nodestatus.Event) {
	if len(p.events) >= maxQueuedEvents {
		p.events = p.events[1:]
		p.m.eventsDropped.Inc()
	}
	p.events = append(p.events, p.newEvent(e))
}

func (p *Publisher) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run publishes until ctx ends: after every change, every Resync, and
// after a failure when its backoff delay has passed (changes that arrive
// meanwhile wait for it, so an unreachable API server is never hammered).
func (p *Publisher) Run(ctx context.Context) {
	resync := time.NewTicker(p.o.Resync)
	defer resync.Stop()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
			if retry != nil {
				continue
			}
		case <-resync.C:
			if retry != nil {
				continue
			}
		case <-retry:
		}
		retry = nil
		if err := p.sync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			d := p.backoff.next()
			p.m.retryDelay.Set(d.Seconds())
			p.log.Warn("publishing to the Node failed; retrying", "in", d.Round(time.Millisecond), "err", err)
			retry = time.After(d)
			continue
		}
		if p.backoff.n > 0 {
			p.log.Info("publishing to the Node works again")
		}
		p.backoff.reset()
		p.m.retryDelay.Set(0)
		p.m.lastSync.Set(float64(p.o.Now().UnixNano()) / 1e9)
	}
}

// sync is one pass: read the Node, write what differs, send queued events.
func (p *Publisher) sync(ctx context.Context) error {
	p.mu.Lock()
	desired := p.desired
	p.mu.Unlock()
	if desired == nil {
		return p.flushEvents(ctx, nil)
	}
	node, err := p.o.Client.GetNode(ctx, p.o.Node)
	p.m.count("get", err)
	if err != nil {
		p.m.inSync.Set(0) // unknown, so not known to be in sync
		if kubeapi.IsNotFound(err) {
			return fmt.Errorf("node %q does not exist (is NODE_NAME right?)", p.o.Node)
		}
		return fmt.Errorf("get node: %w", err)
	}
	inSync := true
	if node, err = p.syncLabels(ctx, node, *desired); err != nil {
		inSync = false
		err = fmt.Errorf("labels: %w", err)
	}
	var terr error
	if node, terr = p.syncTaints(ctx, node, *desired); terr != nil {
		inSync = false
		err = errors.Join(err, fmt.Errorf("taints: %w", terr))
	}
	if cerr := p.syncConditions(ctx, node, desired.Conditions); cerr != nil {
		inSync = false
		err = errors.Join(err, fmt.Errorf("conditions: %w", cerr))
	}
	if eerr := p.flushEvents(ctx, node); eerr != nil {
		err = errors.Join(err, fmt.Errorf("events: %w", eerr))
	}
	p.m.inSync.Set(boolGauge(inSync))
	return err
}

// flushEvents creates the queued events, oldest first, and keeps those
// that failed for the next pass. Without the Node (no desired state yet)
// they wait.
func (p *Publisher) flushEvents(ctx context.Context, node *kubeapi.Node) error {
	if node == nil {
		return nil
	}
	for {
		p.mu.Lock()
		if len(p.events) == 0 {
			p.mu.Unlock()
			return nil
		}
		ev := p.events[0]
		p.mu.Unlock()
		ev.InvolvedObject.UID = node.UID
		err := p.o.Client.CreateEvent(ctx, ev)
		p.m.count("event", err)
		switch {
		case err == nil, kubeapi.IsAlreadyExists(err):
		case kubeapi.IsForbidden(err), kubeapi.IsInvalid(err), kubeapi.IsBadRequest(err):
			// Retrying cannot help (RBAC, admission policy, a bad event): drop it.
			p.m.eventsDropped.Inc()
			p.log.Error("event rejected by the API server; dropped", "reason", ev.Reason, "err", err)
		default:
			return fmt.Errorf("create event %s: %w", ev.Reason, err)
		}
		p.mu.Lock()
		p.events = p.events[1:]
		p.mu.Unlock()
	}
}

// newEvent builds an event; the caller holds p.mu.
func (p *Publisher) newEvent(e nodestatus.Event) *kubeapi.Event {
	p.seq++
	now := p.o.Now()
	at := kubeapi.NewTime(now)
	return &kubeapi.Event{
		ObjectMeta: kubeapi.ObjectMeta{
			// Like client-go's recorder: the object, then a unique suffix.
			Name:      fmt.Sprintf("%s.%x%02x", p.o.Node, now.UnixNano(), p.seq%256),
			Namespace: p.o.EventNamespace,
		},
		InvolvedObject:      kubeapi.ObjectReference{Kind: "Node", APIVersion: "v1", Name: p.o.Node},
		Reason:              e.Reason,
		Message:             e.Message,
		Type:                string(e.Type),
		Source:              kubeapi.EventSource{Component: FieldManager, Host: p.o.Node},
		FirstTimestamp:      at,
		LastTimestamp:       at,
		Count:               1,
		ReportingController: "gpunode.dev/" + FieldManager,
		ReportingInstance:   FieldManager + "-" + p.o.Node,
	}
}

func resultOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case kubeapi.IsConflict(err):
		return "conflict"
	default:
		return "error"
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
