// Package podlabels copies a configured list of pod label keys onto the
// per-pod GPU series. The kubelet's pod-resources API names the pods that
// hold devices but not their labels; this package reads them from the API
// server, listing the pods bound to its own node on a slow cadence of its
// own (never on a scrape), and keeps them by pod UID.
//
// Label names follow kube-state-metrics' kube_pod_labels: "label_" and the
// key with every character outside [a-zA-Z0-9_] made "_", camelCase made
// snake_case, lower-cased; keys that come out alike are told apart by
// "_conflict1", "_conflict2", ... in the keys' sorted order (all of them,
// the first included). The names depend on the configured keys only, not
// on which pods carry them, so every series of a family has the same
// label names.
//
// Cardinality is bounded: each label takes at most a configured number of
// distinct values at once among the node's pods. A pod keeps the values it
// was given while it lives with them; a pod whose value would exceed the
// cap gets the label empty, and is counted once per pod and label.
package podlabels

import (
	"cmp"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/kubeapi"
)

// SourceName is the source's name in gpunode_source_state.
const SourceName = "pod-labels"

// DefaultMaxValues is the default cap on one label's distinct values. A
// node runs at most 110 pods by default (the kubelet's maxPods) and far
// fewer hold GPUs; 64 leaves every honest label alone and stops one that
// carries a per-request value or a hash.
const DefaultMaxValues = 64

// Label is one configured pod label key and its Prometheus name.
type Label struct {
	Key  string // the Kubernetes label key ("app.kubernetes.io/name")
	Name string // the Prometheus label name ("label_app_kubernetes_io_name")
}

var (
	invalidChar = regexp.MustCompile(`[^a-zA-Z0-9_]`)
	lowerUpper  = regexp.MustCompile(`([a-z0-9])([A-Z])`)
)

// sanitise is kube-state-metrics' rule for one key, without the prefix.
func sanitise(key string) string {
	s := invalidChar.ReplaceAllString(key, "_")
	return strings.ToLower(lowerUpper.ReplaceAllString(s, "${1}_${2}"))
}

// Labels names the keys, sorted by key; duplicate keys count once.
func Labels(keys []string) []Label {
	keys = slices.Compact(slices.Sorted(slices.Values(keys)))
	count := map[string]int{}
	for _, k := range keys {
		count["label_"+sanitise(k)]++
	}
	seen := map[string]int{}
	out := make([]Label, 0, len(keys))
	for _, k := range keys {
		n := "label_" + sanitise(k)
		if count[n] > 1 {
			seen[n]++
			n = fmt.Sprintf("%s_conflict%d", n, seen[n])
		}
		out = append(out, Label{Key: k, Name: n})
	}
	return out
}

// Ref names a pod as pod-resources does.
type Ref struct{ Namespace, Pod string }

// View is the labels at one moment; it is shared: treat it as read-only.
// A nil *View has no labels.
type View struct {
	// Labels are the configured keys and their names, in the order of
	// every Values slice.
	Labels []Label
	// Dropped counts, per label in the same order, the pods whose value
	// was left out for the cap since the agent started.
	Dropped []uint64
	// Status is the last refresh's; Name is "" before the first.
	Status source.Status
	// Refreshed is when the labels were last read successfully.
	Refreshed time.Time
	pods      map[Ref][]string
	none      []string
}

// Names are the Prometheus label names, in order.
func (v *View) Names() []string {
	if v == nil {
		return nil
	}
	out := make([]string, len(v.Labels))
	for i, l := range v.Labels {
		out[i] = l.Name
	}
	return out
}

// Values are the pod's label values in the order of Labels, "" for a
// label the pod does not have, one dropped for the cap, or an unknown
// pod. The slice is shared.
func (v *View) Values(namespace, pod string) []string {
	if v == nil {
		return nil
	}
	if vals, ok := v.pods[Ref{namespace, pod}]; ok {
		return vals
	}
	return v.none
}

// Options configure a Cache.
type Options struct {
	// Keys are the pod label keys to copy.
	Keys []string
	// MaxValues caps each label's distinct values (DefaultMaxValues if 0).
	MaxValues int
	// Interval between refreshes; Timeout bounds each (Interval if 0).
	Interval, Timeout time.Duration
	// List returns the pods bound to this node (kubeapi.Client.ListPodsOnNode).
	List func(ctx context.Context) ([]kubeapi.Pod, error)
}

// entry is one pod's admitted values, by label.
type entry struct {
	ref     Ref
	values  []string
	dropped []bool // counted already, per label
}

// Cache keeps the node's pods' labels by pod UID. Refresh (or Run) reads
// them; View is safe to call from any goroutine at any time.
type Cache struct {
	o      Options
	labels []Label
	runner *source.Runner[[]kubeapi.Pod]

	mu      sync.Mutex // one refresh at a time
	byUID   map[string]*entry
	dropped []uint64

	view atomic.Pointer[View]
}

// New prepares a cache; nothing is read until Refresh or Run.
func New(o Options) *Cache {
	if o.MaxValues <= 0 {
		o.MaxValues = DefaultMaxValues
	}
	if o.Timeout <= 0 {
		o.Timeout = o.Interval
	}
	c := &Cache{o: o, labels: Labels(o.Keys), byUID: map[string]*entry{}}
	c.dropped = make([]uint64, len(c.labels))
	c.runner = &source.Runner[[]kubeapi.Pod]{Name: SourceName, Timeout: o.Timeout, Fn: o.List}
	c.view.Store(&View{Labels: c.labels, Dropped: slices.Clone(c.dropped), none: make([]string, len(c.labels))})
	return c
}

// View returns the latest labels.
func (c *Cache) View() *View { return c.view.Load() }

// Run refreshes now and then every Interval until ctx is done.
func (c *Cache) Run(ctx context.Context) {
	t := time.NewTicker(c.o.Interval)
	defer t.Stop()
	for {
		c.Refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refresh lists the node's pods once and publishes a new View. A failed
// list keeps the last labels: the View's status says it failed and since
// when the labels are stale.
func (c *Cache) Refresh(ctx context.Context) {
	pods, st := c.runner.Run(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.view.Load()
	if st.State != source.OK {
		v := *prev
		if st.State == source.Error && !prev.Refreshed.IsZero() {
			st.Message = fmt.Sprintf("%s; keeping the labels read at %s", st.Message, prev.Refreshed.UTC().Format(time.RFC3339))
		}
		v.Status = st
		c.view.Store(&v)
		return
	}
	order := c.admit(pods)
	v := &View{Labels: c.labels, Dropped: slices.Clone(c.dropped), Status: st, Refreshed: time.Now(),
		pods: make(map[Ref][]string, len(order)), none: prev.none}
	// A pod being deleted and its successor of the same name (a
	// StatefulSet's) both list: the successor comes later and wins.
	for _, uid := range order {
		e := c.byUID[uid]
		v.pods[e.ref] = e.values
	}
	c.view.Store(v)
}

// admit replaces the cache's pods with pods, giving each label's values
// under the cap: first to the pods that had the same value before, then
// to the others in namespace and name order. It returns the pods' UIDs in
// that order, pods being deleted before others of the same name.
func (c *Cache) admit(pods []kubeapi.Pod) []string {
	live := make([]kubeapi.Pod, 0, len(pods))
	for _, p := range pods {
		// Finished pods hold no devices.
		if p.UID != "" && p.Status.Phase != "Succeeded" && p.Status.Phase != "Failed" {
			live = append(live, p)
		}
	}
	slices.SortFunc(live, func(a, b kubeapi.Pod) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name),
			-cmp.Compare(btoi(a.DeletionTimestamp != nil), btoi(b.DeletionTimestamp != nil)), strings.Compare(a.UID, b.UID))
	})
	next := make(map[string]*entry, len(live))
	for _, p := range live {
		e := &entry{ref: Ref{p.Namespace, p.Name}, values: make([]string, len(c.labels)), dropped: make([]bool, len(c.labels))}
		if old := c.byUID[p.UID]; old != nil {
			copy(e.dropped, old.dropped)
		}
		next[p.UID] = e
	}
	for i, l := range c.labels {
		taken := map[string]bool{}
		kept := func(p kubeapi.Pod) bool {
			old := c.byUID[p.UID]
			return old != nil && old.values[i] != "" && old.values[i] == p.Labels[l.Key]
		}
		for _, p := range live {
			if kept(p) {
				next[p.UID].values[i] = p.Labels[l.Key]
				taken[p.Labels[l.Key]] = true
			}
		}
		for _, p := range live {
			val, ok := p.Labels[l.Key]
			if !ok || val == "" || kept(p) {
				continue
			}
			e := next[p.UID]
			if !taken[val] && len(taken) >= c.o.MaxValues {
				if !e.dropped[i] {
					e.dropped[i] = true
					c.dropped[i]++
				}
				continue
			}
			taken[val] = true
			e.values[i] = val
		}
	}
	c.byUID = next
	order := make([]string, len(live))
	for i, p := range live {
		order[i] = p.UID
	}
	return order
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
