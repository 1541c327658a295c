// Package labels turns a snapshot into Kubernetes node labels: pure
// functions, deterministic, every value valid as a label value. The label
// sets (gpunode, llm-d, nvidia, amd) are switched on and off by Options;
// every key is documented by a Def, from which the README table is generated.
package labels

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/snapshot"
)

// Options select and shape the label sets.
type Options struct {
	// Domain prefixes the agent's own labels ("gpunode.dev").
	Domain string
	// Sets switched on; see DefaultSets.
	Sets map[SetName]bool
}

// DefaultSets are the sets switched on when the configuration does not
// say otherwise: the agent's own and llm-d's. The GFD and AMD labeller
// compatible sets are for clusters that do not run those tools.
func DefaultSets() map[SetName]bool {
	return map[SetName]bool{GPUNode: true, LLMD: true, NVIDIA: false, AMD: false}
}

// Set is a set of node labels.
type Set map[string]string

// Lines formats the labels as sorted "key=value" lines.
func (s Set) Lines() []string {
	out := make([]string, 0, len(s))
	for _, k := range slices.Sorted(maps.Keys(s)) {
		out = append(out, k+"="+s[k])
	}
	return out
}

// Equal reports whether two sets hold the same labels.
func (s Set) Equal(o Set) bool { return maps.Equal(s, o) }

// Inputs are the facts labels are computed from. The snapshot is the
// discovered node; results of features that run beside discovery (RDMA
// probes for rdma.verified and llm-d's rdma gate, the tuning state) are
// added here as fields by those features.
type Inputs struct {
	Snapshot *snapshot.Snapshot
	// Tuning is the tuning loop's state; nil before its first run, and
	// outside the daemon.
	Tuning *Tuning
	// Verified is node verification's verdict; nil before the first
	// verification, and outside the daemon.
	Verified *bool
	// RDMAProbe is the RDMA probes' latest verdict; nil when probes are
	// off (then hardware.llm-d.ai/rdma follows discovery alone).
	RDMAProbe *RDMAProbe
}

// Tuning is what labels need from the tuning loop.
type Tuning struct {
	// Profile is the managed profile; empty when tuning is off, or when
	// the loop failed before it had a profile.
	Profile string
	// State is one of tuning's State constants; empty before a plan.
	State string
}

// RDMAProbe is what labels need from the RDMA probes.
type RDMAProbe struct {
	// Verified: the last round ran and passed its thresholds.
	Verified bool
	// Pending: probes are on but no round has finished; rdma.verified is
	// not written yet and the llm-d gate stays closed, so it does not
	// open at start only to close after the first round.
	Pending bool
	// GPUDirect is the verdict of the last registration of each GPU's
	// memory on its nearest NIC (verify's gpudirect-rdma-works): the
	// gpudirect-rdma label follows it. nil when none was tried, which
	// leaves the label to the modules.
	GPUDirect *bool
}

// For computes the labels of a snapshot; see Compute.
func For(s *snapshot.Snapshot, o Options) Set { return Compute(Inputs{Snapshot: s}, o) }

// Compute computes the labels of the enabled sets. A label whose sources
// did not run cleanly is left out rather than guessed (Hold keeps its last
// good value); a source that is absent (no GPU library, no RDMA) yields
// explicit "false"/"0" labels where the set has them, because a CPU-only
// node is a fact schedulers select on too.
func Compute(in Inputs, o Options) Set {
	e := &emitter{out: Set{}, o: o, states: sourceStates(in.Snapshot)}
	if in.Tuning != nil {
		e.states[SourceTuning] = source.OK
	}
	if in.Verified != nil {
		e.states[SourceVerify] = source.OK
	}
	if o.Sets[GPUNode] {
		gpunodeSet(in.Snapshot, e)
		if in.Tuning != nil {
			e.put(tuningProfile, in.Tuning.Profile)
			e.put(tuningState, in.Tuning.State)
		}
		if in.Verified != nil {
			e.put(verified, strconv.FormatBool(*in.Verified))
		}
	}
	if o.Sets[GPUNode] && in.RDMAProbe != nil && !in.RDMAProbe.Pending {
		e.put(rdmaVerified, strconv.FormatBool(in.RDMAProbe.Verified))
	}
	if o.Sets[GPUNode] && in.RDMAProbe != nil && in.RDMAProbe.GPUDirect != nil && len(in.Snapshot.GPUs) > 0 {
		e.put(gpuDirectRDMA, strconv.FormatBool(*in.RDMAProbe.GPUDirect))
	}
	if o.Sets[LLMD] {
		llmdSet(in.Snapshot, e)
		// With probes on, RDMA counts as enabled only once verified.
		if in.RDMAProbe != nil && !in.RDMAProbe.Verified {
			delete(e.out, llmdRDMA.FullKey(o.Domain))
		}
	}
	if o.Sets[NVIDIA] {
		nvidiaSet(in.Snapshot, e)
	}
	if o.Sets[AMD] {
		amdSet(in.Snapshot, e)
	}
	return e.out
}

// emitter writes labels, enforcing in one place that a label is written
// only when its set is on and every source it depends on ran cleanly.
type emitter struct {
	out    Set
	o      Options
	states map[Source]source.State
}

// usable reports whether every source of d ran (ok or absent).
func (e *emitter) usable(d *Def) bool {
	for _, src := range d.Sources {
		if st := e.states[src]; st != source.OK && st != source.Absent {
			return false
		}
	}
	return true
}

// put writes d's label with value v, sanitised; an empty value writes nothing.
func (e *emitter) put(d *Def, v string) { e.putKey(d, d.FullKey(e.o.Domain), v) }

// putSuffix writes a pattern Def's label for one value-dependent suffix.
func (e *emitter) putSuffix(d *Def, suffix, v string) {
	if suffix = Value(suffix); suffix != "" {
		e.putKey(d, d.prefix(e.o.Domain)+suffix, v)
	}
}

func (e *emitter) putKey(d *Def, key, v string) {
	if !slices.ContainsFunc(d.Sets, func(s SetName) bool { return e.o.Sets[s] }) || !e.usable(d) {
		return
	}
	if v = Value(v); v != "" && len(key) <= maxKey {
		e.out[key] = v
	}
}

// maxKey is Kubernetes' limit: a 253-character prefix, '/', a 63-character name.
const maxKey = 253 + 1 + 63

// sourceStates maps each Source to the state of the discovery sources
// behind it. The GPU state is that of the backend that supplied the
// inventory; without one, an error from any backend wins (it may have
// hidden GPUs), then ok, then absent.
func sourceStates(s *snapshot.Snapshot) map[Source]source.State {
	states := map[Source]source.State{}
	for _, name := range []Source{SourceRDMA, SourceTopology} {
		if st, ok := s.Source(string(name)); ok {
			states[name] = st.State
		}
	}
	if s.GPUDriver != nil {
		if st, ok := s.Source(s.GPUDriver.Backend); ok {
			states[SourceGPU] = st.State
		}
		return states
	}
	for _, name := range source.GPUBackends() {
		st, ok := s.Source(name)
		switch {
		case !ok:
		case st.State == source.Error:
			states[SourceGPU] = source.Error
		case st.State == source.OK && states[SourceGPU] != source.Error:
			states[SourceGPU] = source.OK
		case st.State == source.Absent && states[SourceGPU] == "":
			states[SourceGPU] = source.Absent
		}
	}
	return states
}

// Failed lists the Sources that ran and failed in s, sorted. A source that
// did not run at all (a GPU backend switched off) writes no labels and
// holds none.
func Failed(s *snapshot.Snapshot) []Source {
	var out []Source
	for src, st := range sourceStates(s) {
		if st != source.OK && st != source.Absent {
			out = append(out, src)
		}
	}
	slices.Sort(out)
	return out
}

// Hold returns next plus every label of prev that next lacks and that
// depends on a source listed in failed, so a failing source does not make
// its labels flap. Labels of sources that are absent, of sets switched
// off, or under another domain are not held: they go.
func Hold(next, prev Set, failed []Source, o Options) Set {
	out := maps.Clone(next)
	for k, v := range prev {
		if _, ok := out[k]; ok {
			continue
		}
		d := Lookup(k, o.Domain)
		if d == nil || !slices.ContainsFunc(d.Sets, func(s SetName) bool { return o.Sets[s] }) {
			continue
		}
		if slices.ContainsFunc(d.Sources, func(s Source) bool { return slices.Contains(failed, s) }) {
			out[k] = v
		}
	}
	return out
}

// Owned reports whether key is one the agent may write under o: it matches
// a Def (of any set, so a switched-off set's labels are still recognised
// as ours and removed).
func Owned(key, domain string) bool { return Lookup(key, domain) != nil }

// SharedKey reports whether key is applied without force (see Def.Shared).
func SharedKey(key, domain string) bool {
	d := Lookup(key, domain)
	return d != nil && d.Shared()
}

// Value sanitises a label value to Kubernetes' rules: at most 63
// characters of [A-Za-z0-9._-], starting and ending alphanumeric. Other
// characters become '-' ("NVIDIA H100 80GB HBM3" -> "NVIDIA-H100-80GB-HBM3").
func Value(v string) string {
	b := []byte(v)
	for i, c := range b {
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			b[i] = '-'
		}
	}
	// Collapse runs of '-' that substitution created.
	out := make([]byte, 0, len(b))
	for i, c := range b {
		if c == '-' && i > 0 && b[i-1] == '-' {
			continue
		}
		out = append(out, c)
	}
	if len(out) > 63 {
		out = out[:63]
	}
	return strings.TrimFunc(string(out), func(r rune) bool { return r > 127 || !isAlnum(byte(r)) })
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
