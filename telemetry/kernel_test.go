package telemetry

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/health"
	"github.com/gpunode/gpunode/kmsg"
	"github.com/gpunode/gpunode/nodestatus"
)

func appendKmsg(t *testing.T, root, records string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(root, "dev/kmsg"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(records); err != nil {
		t.Fatal(err)
	}
}

func xidCount(f *Frame, gpuIndex int, xid uint64) uint64 {
	for _, x := range f.XIDs {
		if x.GPU == gpuIndex && x.XID == xid {
			return x.Count
		}
	}
	return 0
}

func kernelCount(f *Frame, kind kmsg.Kind, device, severity string) uint64 {
	for _, e := range f.Kernel {
		if e.Kind == kind && e.Device == device && e.Severity == severity {
			return e.Count
		}
	}
	return 0
}

// The degraded DGX's kernel log, from before the agent started: an Xid 79
// on GPU 3 joins the XID series and makes it unhealthy; mlx5_1's health
// syndrome and fatal AER error are counted once each on its address.
// Later records: the same XID from the GPU library and the kernel log is
// counted once; AER and "fallen off the bus" on a GPU make it unhealthy;
// a restart of the reader counts nothing twice.
func TestKernelLog(t *testing.T) {
	n := newNode(t, "dgx-h100-ib-degraded")
	o := n.options()
	state := t.TempDir()
	o.KernelLog = kmsg.NewReader(n.fs, state)
	s := New(o)
	ctx := context.Background()
	s.Round(ctx)
	f := s.Latest()
	if st := status(f, SourceKernelLog); st.State != "ok" {
		t.Fatalf("kernel log source %+v", st)
	}
	if c := xidCount(f, 3, 79); c != 1 || len(f.XIDs) != 1 {
		t.Fatalf("XIDs %+v", f.XIDs)
	}
	if h := f.Health[3]; h.Healthy || h.Problems[0].Reason != health.ReasonXIDCritical {
		t.Errorf("GPU 3 %+v", h)
	}
	const hca = "0000:40:00.0" // mlx5_1
	if kernelCount(f, kmsg.AER, hca, kmsg.SeverityFatal) != 1 || kernelCount(f, kmsg.MLX5Health, hca, "") != 1 || len(f.Kernel) != 2 {
		t.Errorf("kernel events %+v", f.Kernel)
	}
	if f.KernelLog == nil || f.KernelLog.Records == 0 || f.KernelLog.Lost != 0 {
		t.Errorf("stats %+v", f.KernelLog)
	}

	// The sim's Xid is logged 3600.001 s after boot: that gives the boot
	// time the reader works with, to log new records at known times.
	var boot time.Time
	for _, x := range f.XIDs {
		boot = x.Last.Add(-3600001 * time.Millisecond)
	}
	at := func(sec int) time.Time { return boot.Add(time.Duration(sec) * time.Second) }
	g0, g1, g4 := f.GPUs[0], f.GPUs[1], f.GPUs[4]
	appendKmsg(t, n.Root, fmt.Sprintf(
		"3,100,%d,-;NVRM: Xid (PCI:%s): 48, pid=0, An uncorrectable double bit error\n"+
			"3,101,%d,-;NVRM: Xid (PCI:0000:ee:00): 48, pid=0, a GPU the agent does not know\n"+
			"3,102,%d,-;nvidia %s: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, (Requester ID)\n"+
			"3,103,%d,-;NVRM: GPU at PCI:%s: GPU has fallen off the bus.\n",
		7200*1000000, g4.PCIBusID[:len(g4.PCIBusID)-2], 7201*1000000,
		7202*1000000, g0.PCIBusID, 7203*1000000, g1.PCIBusID))
	// The library's report of the same Xid arrives a second after the log's.
	s.Event(gpu.Event{Kind: gpu.XID, GPU: 4, UUID: g4.UUID, Code: 48, Time: at(7201)})
	s.Round(ctx)
	// ...and of another one, 30 s later: a second fault.
	s.Event(gpu.Event{Kind: gpu.XID, GPU: 4, UUID: g4.UUID, Code: 48, Time: at(7231)})
	f = s.Latest()
	if c := xidCount(f, 4, 48); c != 2 {
		t.Errorf("XID 48 on GPU 4 counted %d times, want 2 (one fault in both sources, one in the library only): %+v", c, f.XIDs)
	}
	if kernelCount(f, kmsg.XID, "0000:ee:00.0", "") != 1 {
		t.Errorf("XID of an unknown GPU: %+v", f.Kernel)
	}
	if h := f.Health[0]; h.Healthy || h.Problems[0].Reason != health.ReasonPCIeError {
		t.Errorf("GPU 0 %+v", h)
	}
	if h := f.Health[1]; h.Healthy || h.Problems[0].Reason != health.ReasonGPULost {
		t.Errorf("GPU 1 %+v", h)
	}
	if f.Condition.Reason != health.ReasonGPULost {
		t.Errorf("condition %+v", f.Condition)
	}

	// The agent restarts: a new sampler and reader on the same journal
	// count nothing they counted before.
	o.KernelLog = kmsg.NewReader(n.fs, state)
	s2 := New(o)
	s2.Round(ctx)
	f = s2.Latest()
	if len(f.XIDs) != 0 || len(f.Kernel) != 0 || f.KernelLog.Records != 0 {
		t.Errorf("after a restart: XIDs %+v kernel %+v stats %+v", f.XIDs, f.Kernel, f.KernelLog)
	}
}

// A node whose tree has no kernel log (the chart did not mount /dev/kmsg)
// reports the source absent, not failed.
func TestKernelLogAbsent(t *testing.T) {
	n := newNode(t, "cpu-only")
	if err := os.Remove(filepath.Join(n.Root, "dev/kmsg")); err != nil {
		t.Fatal(err)
	}
	o := n.options()
	o.KernelLog = kmsg.NewReader(n.fs, "")
	s := New(o)
	s.Round(context.Background())
	if st := status(s.Latest(), SourceKernelLog); st.State != "absent" {
		t.Errorf("source %+v", st)
	}
}

// Good simulated nodes log only harmless lines.
func TestKernelLogOfGoodNodes(t *testing.T) {
	for _, name := range []string{"dgx-h100-ib", "h100-roce", "mi300x-roce", "cpu-only"} {
		n := newNode(t, name)
		o := n.options()
		o.KernelLog = kmsg.NewReader(n.fs, "")
		s := New(o)
		s.Round(context.Background())
		f := s.Latest()
		if len(f.XIDs) != 0 || len(f.Kernel) != 0 || f.KernelLog.Records == 0 {
			t.Errorf("%s: XIDs %+v kernel %+v stats %+v", name, f.XIDs, f.Kernel, f.KernelLog)
		}
	}
}

// Run reads the kernel log between rounds: an Xid logged after the first
// round changes the condition well before the next round (an hour away
// here), as the GPU library's events do.
func TestKernelLogReadBetweenRounds(t *testing.T) {
	n := newNode(t, "dgx-h100-ib")
	o := n.options()
	o.Interval = time.Hour
	o.KernelLog = kmsg.NewReader(n.fs, "")
	conds := make(chan nodestatus.Condition, 16)
	o.OnCondition = func(c nodestatus.Condition) { conds <- c }
	s := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	defer func() { cancel(); <-done }()
	if c := <-conds; c.Status != nodestatus.True {
		t.Fatalf("first condition %+v", c)
	}
	bus := s.Latest().GPUs[5].PCIBusID
	appendKmsg(t, n.Root, fmt.Sprintf("3,500,%d,-;NVRM: Xid (PCI:%s): 79, pid=0, GPU has fallen off the bus.\n", 90000*1000000, bus[:len(bus)-2]))
	logged := time.Now()
	select {
	case c := <-conds:
		if c.Status != nodestatus.False || c.Reason != health.ReasonXIDCritical || !strings.Contains(c.Message, "GPU 5 (") {
			t.Errorf("condition %+v", c)
		}
		if d := time.Since(logged); d > 4*KernelLogPoll+time.Second {
			t.Errorf("condition changed %s after the Xid was logged, want within %s", d, 4*KernelLogPoll+time.Second)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Xid logged after the first round did not change the condition before the next round")
	}
}
