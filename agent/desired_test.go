package agent

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/publish"
)

// recorder keeps what a desiredNode hands the publisher.
type recorder struct {
	mu   sync.Mutex
	sets []publish.Desired
}

func (r *recorder) Set(d publish.Desired) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, d)
}

func (r *recorder) last(t *testing.T) publish.Desired {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.sets) == 0 {
		t.Fatal("nothing published")
	}
	return r.sets[len(r.sets)-1]
}

var (
	discoveryOK = nodestatus.Condition{Type: nodestatus.DiscoveryHealthy, Status: nodestatus.True, Reason: "SourcesOK"}
	gpusOK      = nodestatus.Condition{Type: nodestatus.GPUHealthy, Status: nodestatus.True, Reason: "AllGPUsHealthy"}
	gpuLost     = nodestatus.Condition{Type: nodestatus.GPUHealthy, Status: nodestatus.False, Reason: "GPULost", Message: "GPU 1 fell off the bus"}
)

func TestDesiredNode(t *testing.T) {
	r := &recorder{}
	taint := config.Taint{Enabled: true, Key: "gpunode.dev/gpu-unhealthy", Effect: "NoSchedule"}
	n := &desiredNode{pub: r, taint: taint, taintKeys: []string{taint.Key}}
	base := publish.Desired{Labels: labels.Set{"gpunode.dev/gpu.count": "8"}, Conditions: []nodestatus.Condition{discoveryOK}}

	// Nothing until discovery and the sampler's first round are both in:
	// labels alone would drop the GPUHealthy condition and taint the
	// Node carries from the agent's last run.
	n.discovered(base)
	if got := n.gpuCondition(gpuLost); got != taint {
		t.Errorf("taint configuration %+v", got)
	}
	if len(r.sets) != 0 {
		t.Fatalf("published before the sampler's first round: %+v", r.sets)
	}
	n.firstRoundDone()
	d := r.last(t)
	if !slices.Equal(d.Conditions, []nodestatus.Condition{discoveryOK, gpuLost}) ||
		!slices.Equal(d.Taints, []nodestatus.Taint{{Key: taint.Key, Value: "GPULost", Effect: "NoSchedule"}}) ||
		!slices.Equal(d.TaintKeys, []string{taint.Key}) || d.Labels["gpunode.dev/gpu.count"] != "8" {
		t.Errorf("first publication %+v", d)
	}
	if len(base.Conditions) != 1 || base.Taints != nil {
		t.Error("discovery's value was changed")
	}

	// Disabled on reload: no taint, but its key still managed (so the
	// publisher removes it); unchanged: nothing new.
	off := taint
	off.Enabled = false
	if !n.setTaint(off) || n.setTaint(off) {
		t.Error("setTaint does not report changes")
	}
	if d := r.last(t); d.Taints != nil || !slices.Equal(d.TaintKeys, []string{taint.Key}) || len(d.Conditions) != 2 {
		t.Errorf("disabled: %+v", d)
	}
	// Another key: both managed, so the old one does not linger.
	moved := config.Taint{Enabled: true, Key: "example.com/gpu-bad", Effect: "NoExecute"}
	n.setTaint(moved)
	if d := r.last(t); !slices.Equal(d.Taints, []nodestatus.Taint{{Key: moved.Key, Value: "GPULost", Effect: "NoExecute"}}) ||
		!slices.Equal(d.TaintKeys, []string{taint.Key, moved.Key}) {
		t.Errorf("new key: %+v", d)
	}
	// Healthy: no taint.
	n.gpuCondition(gpusOK)
	if d := r.last(t); d.Taints != nil || d.Conditions[1] != gpusOK {
		t.Errorf("healthy: %+v", d)
	}

	// A node without GPUs: the first round brings no condition.
	r2 := &recorder{}
	cpu := &desiredNode{pub: r2, taint: taint, taintKeys: []string{taint.Key}}
	cpu.firstRoundDone()
	cpu.discovered(base)
	if d := r2.last(t); !slices.Equal(d.Conditions, []nodestatus.Condition{discoveryOK}) || d.Taints != nil {
		t.Errorf("no GPUs: %+v", d)
	}

	// Standalone: no publisher, and nothing breaks.
	alone := newDesiredNode(nil, taint, config.Taint{Key: config.DefaultRDMATaintKey, Effect: "NoSchedule"})
	alone.firstRoundDone()
	alone.discovered(base)
	alone.gpuCondition(gpuLost)
	alone.rdmaCondition(rdmaFlapping)
}

var rdmaFlapping = nodestatus.Condition{Type: nodestatus.RDMAHealthy, Status: nodestatus.False, Reason: "LinkFlapping",
	Message: "1 of 8 RDMA ports unhealthy: LinkFlapping: mlx5_3 port 1: link went down and retrained 1 time(s) in 10s"}

// RDMAHealthy joins the conditions with its own taint, configured apart
// from the GPU's: enabled, disabled and moved on reload without touching
// the GPU taint.
func TestDesiredNodeRDMA(t *testing.T) {
	r := &recorder{}
	gpuTaint := config.Taint{Enabled: true, Key: "gpunode.dev/gpu-unhealthy", Effect: "NoSchedule"}
	rdmaTaint := config.Taint{Enabled: true, Key: config.DefaultRDMATaintKey, Effect: "NoExecute"}
	n := newDesiredNode(nil, gpuTaint, rdmaTaint)
	n.pub = r
	base := publish.Desired{Conditions: []nodestatus.Condition{discoveryOK}}
	n.discovered(base)
	n.gpuCondition(gpusOK)
	if got := n.rdmaCondition(rdmaFlapping); got != rdmaTaint {
		t.Errorf("taint configuration %+v", got)
	}
	n.firstRoundDone()
	d := r.last(t)
	if !slices.Equal(d.Conditions, []nodestatus.Condition{discoveryOK, gpusOK, rdmaFlapping}) ||
		!slices.Equal(d.Taints, []nodestatus.Taint{{Key: rdmaTaint.Key, Value: "LinkFlapping", Effect: "NoExecute"}}) ||
		!slices.Equal(d.TaintKeys, []string{gpuTaint.Key, rdmaTaint.Key}) {
		t.Errorf("flapping: %+v", d)
	}
	off := rdmaTaint
	off.Enabled = false
	if !n.setRDMATaint(off) || n.setRDMATaint(off) {
		t.Error("setRDMATaint does not report changes")
	}
	if d := r.last(t); d.Taints != nil || len(d.Conditions) != 3 || !slices.Contains(d.TaintKeys, rdmaTaint.Key) {
		t.Errorf("disabled: %+v", d)
	}
	n.setRDMATaint(rdmaTaint)
	ok := nodestatus.Condition{Type: nodestatus.RDMAHealthy, Status: nodestatus.True, Reason: "AllPortsHealthy"}
	n.rdmaCondition(ok)
	if d := r.last(t); d.Taints != nil || d.Conditions[2] != ok {
		t.Errorf("healthy: %+v", d)
	}
}

// Discovery (main loop) and the sampler (its own goroutine) hand in
// changes at once: whatever the interleaving, the last publication has
// the latest of each.
func TestDesiredNodeConcurrent(t *testing.T) {
	r := &recorder{}
	n := &desiredNode{pub: r, taint: config.Taint{Key: "k", Effect: "NoSchedule"}, taintKeys: []string{"k"}, sampled: true}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			n.discovered(publish.Desired{Labels: labels.Set{"gpunode.dev/gpu.count": fmt.Sprint(i)}, Conditions: []nodestatus.Condition{discoveryOK}})
		}
	})
	wg.Go(func() {
		for i := range 200 {
			c := gpusOK
			c.Message = fmt.Sprint(i)
			n.gpuCondition(c)
		}
	})
	wg.Wait()
	d := r.last(t)
	if d.Labels["gpunode.dev/gpu.count"] != "199" || len(d.Conditions) != 2 || d.Conditions[1].Message != "199" {
		t.Errorf("last publication %+v", d)
	}
}
