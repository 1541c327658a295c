package telemetry

import (
	"cmp"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/podresources"
	"github.com/gpunode/gpunode/procpod"
)

// ProcessCgroups finds the pod and container of a host process
// (procpod.Reader over the host root).
type ProcessCgroups interface {
	Of(pid uint32) (procpod.Container, bool, error)
}

// PodUsage is what the processes of one container used of one GPU (or MIG
// device) in the last round. The row with Namespace, Pod and Container
// all "" is what no pod is known for: processes outside pods or in pods
// the agent cannot name, and the GPU's idle time.
type PodUsage struct {
	GPU  int
	UUID string // the GPU's
	// GPUInstance and ComputeInstance name the MIG device; -1 on a whole GPU.
	GPUInstance, ComputeInstance int
	Namespace, Pod, Container    string
	// Processes is the number of processes; MemoryUsedBytes their device
	// memory (nil when the driver did not say for any of them).
	Processes       int
	MemoryUsedBytes *uint64
	// SMUtilization and MemoryUtilization are the sums of the processes'
	// shares (nil when the driver kept no per-process samples).
	SMUtilization, MemoryUtilization *float64
	// EnergyJoules is a counter: the GPU's energy attributed to the row
	// since the agent started (see attributeEnergy).
	EnergyJoules float64
}

// usageKey names a PodUsage row across rounds.
type usageKey struct {
	gpu          string // scope
	gi, ci       int
	ns, pod, ctr string
}

type podRef struct{ ns, pod string }

// device is one GPU, or one MIG device, and its processes.
type device struct {
	g      *gpu.Sample
	key    string // what device plugins allocate: GPU or MIG UUID
	gi, ci int
	procs  []gpu.Process
	// weight is the MIG device's part of the GPU (compute slices × GPM SM
	// activity); nil when unknown.
	weight *float64
}

// migSlices reads the compute slices from a MIG profile ("3g.40gb",
// "1c.3g.40gb": one compute slice of a three-slice GPU instance).
var migSlices = regexp.MustCompile(`^(?:(\d+)c\.)?(\d+)g\.`)

// migSlicesPerGPU is the number of compute slices of every MIG-capable
// NVIDIA GPU so far (A100, H100, H200, B200: seven).
const migSlicesPerGPU = 7

func devices(gpus []gpu.Sample) []device {
	var out []device
	for i := range gpus {
		g := &gpus[i]
		if !g.Up {
			continue
		}
		if len(g.MIG) == 0 {
			if g.Processes != nil {
				out = append(out, device{g: g, key: g.UUID, gi: -1, ci: -1, procs: g.Processes})
			}
			continue
		}
		for _, inst := range g.MIG {
			if inst.Processes == nil {
				continue
			}
			d := device{g: g, key: inst.UUID, gi: inst.GPUInstanceID, ci: inst.ComputeInstanceID, procs: inst.Processes}
			if m := migSlices.FindStringSubmatch(inst.Profile); m != nil && inst.Profiling != nil && inst.Profiling.SMActive != nil {
				n, _ := strconv.Atoi(m[2])
				if m[1] != "" {
					n, _ = strconv.Atoi(m[1])
				}
				d.weight = ptr(*inst.Profiling.SMActive * float64(n) / migSlicesPerGPU)
			}
			out = append(out, d)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// bindPods names the pods of processes. Pod-resources lists which pods hold
// a device but not their UIDs, and a process's cgroup gives its pod's UID
// but not its name: a UID is bound to a pod where a device has exactly one
// unbound UID among its processes and one unbound pod among its holders,
// repeated until nothing more binds (a pod holding two GPUs alone on one
// of them is named there and then recognised on the shared one).
func bindPods(devs []device, uids [][]string, pods map[string][]podresources.Allocation) map[string]podRef {
	bound := map[string]podRef{}
	taken := map[podRef]bool{}
	for changed := true; changed; {
		changed = false
		for k, d := range devs {
			var free []string
			for _, u := range uids[k] {
				if _, ok := bound[u]; !ok && u != "" && !slices.Contains(free, u) {
					free = append(free, u)
				}
			}
			var holders []podRef
			for _, a := range pods[d.key] {
				r := podRef{a.Namespace, a.Pod}
				if !taken[r] && !slices.Contains(holders, r) {
					holders = append(holders, r)
				}
			}
			if len(free) == 1 && len(holders) == 1 {
				bound[free[0]], taken[holders[0]] = holders[0], true
				changed = true
			}
		}
	}
	return bound
}

// attribute builds the frame's PodUsage from its GPUs' processes and the
// pod allocations, and carries the energy counters on. Called once a round.
func (s *Sampler) attribute(f *Frame) {
	devs := devices(f.GPUs)
	cgroups := map[uint32]procpod.Container{}
	uids := make([][]string, len(devs))
	for k, d := range devs {
		uids[k] = make([]string, len(d.procs))
		for j, p := range d.procs {
			c, seen := cgroups[p.PID]
			if !seen && s.cgroups != nil {
				got, ok, err := s.cgroups.Of(p.PID)
				if err != nil && !errors.Is(err, procpod.ErrNoProcess) {
					s.o.Logger.Debug("process cgroup", "pid", p.PID, "error", err)
				}
				if ok {
					c = got
				}
				cgroups[p.PID] = c
			}
			uids[k][j] = c.PodUID
		}
	}
	bound := bindPods(devs, uids, f.Pods)

	rows := map[usageKey]*PodUsage{}
	row := func(d device, ns, pod, ctr string) *PodUsage {
		k := usageKey{scope(*d.g), d.gi, d.ci, ns, pod, ctr}
		r := rows[k]
		if r == nil {
			r = &PodUsage{GPU: d.g.Index, UUID: d.g.UUID, GPUInstance: d.gi, ComputeInstance: d.ci,
				Namespace: ns, Pod: pod, Container: ctr}
			rows[k] = r
		}
		return r
	}
	// sm is each row's SM share on its device, for the energy split.
	sm := map[*PodUsage]float64{}
	for k, d := range devs {
		// Every container holding the device has a row, idle or not.
		for _, a := range f.Pods[d.key] {
			row(d, a.Namespace, a.Pod, a.Container)
		}
		for j, p := range d.procs {
			ref, ok := bound[uids[k][j]]
			ctr := ""
			if ok {
				ctr = holder(f.Pods[d.key], ref)
			}
			r := row(d, ref.ns, ref.pod, ctr)
			r.Processes++
			if p.MemoryUsedBytes != nil {
				r.MemoryUsedBytes = ptr(deref(r.MemoryUsedBytes) + *p.MemoryUsedBytes)
			}
			if p.SMUtilization != nil {
				r.SMUtilization = ptr(deref(r.SMUtilization) + *p.SMUtilization)
				sm[r] += *p.SMUtilization
			}
			if p.MemoryUtilization != nil {
				r.MemoryUtilization = ptr(deref(r.MemoryUtilization) + *p.MemoryUtilization)
			}
		}
	}
	s.attributeEnergy(f.GPUs, devs, rows, sm)

	f.PodUsage = make([]PodUsage, 0, len(rows))
	keep := make(map[usageKey]float64, len(rows))
	for k, r := range rows {
		f.PodUsage = append(f.PodUsage, *r)
		keep[k] = r.EnergyJoules
	}
	// Rows of GPUs down this round keep their counters for when they return.
	up := map[string]bool{}
	for _, g := range f.GPUs {
		up[scope(g)] = g.Up
	}
	for k, e := range s.podEnergy {
		if _, ok := keep[k]; !ok && !up[k.gpu] {
			keep[k] = e
		}
	}
	s.podEnergy = keep
	slices.SortFunc(f.PodUsage, func(a, b PodUsage) int {
		return cmp.Or(cmp.Compare(a.GPU, b.GPU), cmp.Compare(a.GPUInstance, b.GPUInstance), cmp.Compare(a.ComputeInstance, b.ComputeInstance),
			strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Pod, b.Pod), strings.Compare(a.Container, b.Container))
	})
}

// holder is the container of pod ref holding the device, "" when the pod
// holds it in several containers (a process cannot be told apart then).
func holder(allocs []podresources.Allocation, ref podRef) string {
	ctr := ""
	for _, a := range allocs {
		if a.Namespace == ref.ns && a.Pod == ref.pod {
			if ctr != "" && ctr != a.Container {
				return ""
			}
			ctr = a.Container
		}
	}
	return ctr
}

func deref[T any](p *T) T {
	var v T
	if p != nil {
		v = *p
	}
	return v
}

// attributeEnergy splits each GPU's energy since the last round. On a
// whole GPU each row gets the energy times its processes' SM share (their
// fraction of the interval's time on the SMs, as NVML samples it; shares
// adding up to more than 1 are scaled down to 1); on a GPU in MIG mode,
// which keeps no per-process samples, each MIG device gets the energy
// times its compute slices' part of the GPU times its GPM SM activity,
// split evenly among the rows with processes on it. What is left (idle
// time, and shares nobody can be named for) goes to the GPU's row with no
// pod.
func (s *Sampler) attributeEnergy(gpus []gpu.Sample, devs []device, rows map[usageKey]*PodUsage, sm map[*PodUsage]float64) {
	if s.lastEnergy == nil {
		s.lastEnergy = map[string]uint64{}
	}
	for k, r := range rows {
		r.EnergyJoules = s.podEnergy[k]
	}
	for i := range gpus {
		g := &gpus[i]
		sc := scope(*g)
		if !g.Up || g.EnergyMillijoules == nil {
			continue
		}
		prev, had := s.lastEnergy[sc]
		s.lastEnergy[sc] = *g.EnergyMillijoules
		var mine []device
		for _, d := range devs {
			if d.g == g {
				mine = append(mine, d)
			}
		}
		if len(mine) == 0 {
			continue // processes not listed: nothing to split
		}
		rest := s.row0(rows, g)
		if !had || *g.EnergyMillijoules < prev {
			continue
		}
		joules := float64(*g.EnergyMillijoules-prev) / 1000
		given := 0.0
		if len(g.MIG) == 0 {
			total := 0.0
			for r, v := range sm {
				if r.GPU == g.Index && r.GPUInstance < 0 {
					total += v
				}
			}
			scale := 1 / max(1, total)
			for r, v := range sm {
				if r.GPU == g.Index && r.GPUInstance < 0 && r != rest {
					r.EnergyJoules += joules * v * scale
					given += v * scale
				}
			}
		} else {
			total := 0.0
			for _, d := range mine {
				total += deref(d.weight)
			}
			scale := 1 / max(1, total)
			for _, d := range mine {
				var busy []*PodUsage
				for _, r := range rows {
					if r.GPU == g.Index && r.GPUInstance == d.gi && r.ComputeInstance == d.ci && r.Processes > 0 && r.Pod != "" {
						busy = append(busy, r)
					}
				}
				if len(busy) == 0 || d.weight == nil {
					continue
				}
				share := *d.weight * scale / float64(len(busy))
				for _, r := range busy {
					r.EnergyJoules += joules * share
					given += share
				}
			}
		}
		rest.EnergyJoules += joules * max(0, 1-given)
	}
}

// row0 is the GPU's row with no pod, made if missing.
func (s *Sampler) row0(rows map[usageKey]*PodUsage, g *gpu.Sample) *PodUsage {
	k := usageKey{gpu: scope(*g), gi: -1, ci: -1}
	r := rows[k]
	if r == nil {
		r = &PodUsage{GPU: g.Index, UUID: g.UUID, GPUInstance: -1, ComputeInstance: -1, EnergyJoules: s.podEnergy[k]}
		rows[k] = r
	}
	return r
}
