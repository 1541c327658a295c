package tuning

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

// firstIRQStep returns the first IRQ step of the profile's plan.
func firstIRQStep(t *testing.T, f *fixture, p Profile) Step {
	t.Helper()
	pl, _, err := f.tuner.Plan(context.Background(), p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range pl.Steps {
		if s.Kind == KindIRQ && s.Action == ActionSet {
			return s
		}
	}
	t.Fatal("no IRQ to set")
	return Step{}
}

func irqStep(pl Plan, key string) (Step, bool) {
	for _, s := range pl.Steps {
		if s.Kind == KindIRQ && s.Key == key {
			return s, true
		}
	}
	return Step{}, false
}

// Linux 6.12+ registers smp_affinity read-only for an interrupt whose
// affinity user space cannot set (a managed one) and refuses the write
// with EPERM. The plan reads the mode: unsupported, never written, never
// journaled, and the host is compliant without it.
func TestManagedIRQReadOnly(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "dgx-h100-ib")
	p := builtin(t, "llm-inference")
	s := firstIRQStep(t, f, p)
	n := irqNumberOf(t, s)
	ro := f.fs.Path("/proc/irq/" + n + "/smp_affinity")
	if err := os.Chmod(ro, 0o444); err != nil {
		t.Fatal(err)
	}
	path, _ := s.ID.hostPath()
	before := f.read(t, path)
	res, err := f.tuner.Apply(ctx, p, f.m)
	if err != nil || !res.OK() {
		t.Fatalf("apply: %v %+v", err, res.Failed())
	}
	got, _ := irqStep(res.Plan, s.Key)
	if got.Action != ActionUnsupported || !strings.Contains(got.Note, "read-only") {
		t.Errorf("managed IRQ planned %s %q, want unsupported", got.Action, got.Note)
	}
	for _, c := range res.Changes {
		if c.ID == s.ID {
			t.Errorf("managed IRQ written: %+v", c)
		}
	}
	if f.read(t, path) != before {
		t.Error("managed IRQ's affinity changed")
	}
	pl, j, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil || !pl.Compliant() || Summarize(pl, 0) != StateCompliant {
		t.Fatalf("after apply: %v %s", err, Summarize(pl, 0))
	}
	if j.has(s.ID) {
		t.Error("journal holds the managed IRQ")
	}
}

// The kernel's answers to an affinity write it refuses: EIO before 6.12,
// EPERM (with a read-only smp_affinity) since; EPERM on a writable file
// is a lack of privilege.
func TestUnmovableReason(t *testing.T) {
	f := newFixture(t, "dgx-h100-ib")
	s := firstIRQStep(t, f, builtin(t, "llm-inference"))
	n := irqNumberOf(t, s)
	num := atoi(t, n)
	if why := unmovableReason(f.fs, num, syscall.EIO); !strings.Contains(why, "EIO") {
		t.Errorf("EIO: %q", why)
	}
	if why := unmovableReason(f.fs, num, syscall.EPERM); why != "" {
		t.Errorf("EPERM on a writable smp_affinity: %q, want a privilege error", why)
	}
	if o, msg := classifyWrite(s.ID, &os.PathError{Op: "write", Path: "x", Err: syscall.EPERM}); o != OutcomeFailed || !strings.Contains(msg, "root") {
		t.Errorf("EPERM, writable: %s %q", o, msg)
	}
	os.Chmod(f.fs.Path("/proc/irq/"+n+"/smp_affinity"), 0o444)
	if why := unmovableReason(f.fs, num, syscall.EPERM); !strings.Contains(why, "EPERM") {
		t.Errorf("EPERM on a read-only smp_affinity: %q", why)
	}
}

// Before 6.12 nothing but the refused write tells a managed interrupt.
// The daemon's tuner remembers it: the next run plans it unsupported and
// neither journals (two fsyncs) nor writes it again.
func TestRefusedIRQRemembered(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EIO, syscall.EPERM} {
		t.Run(errno.Error(), func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, "dgx-h100-ib")
			f.tuner.Unmovable = &UnmovableIRQs{}
			p := builtin(t, "llm-inference")
			s := firstIRQStep(t, f, p)
			path, _ := s.ID.hostPath()
			n := irqNumberOf(t, s)
			writes := 0
			f.tuner.writeErr = func(p string) error {
				if p != path {
					return nil
				}
				writes++
				if errno == syscall.EPERM {
					// 6.12+: the file turns out read-only on a second look
					// (it was registered so; the fixture lags).
					os.Chmod(f.fs.Path("/proc/irq/"+n+"/smp_affinity"), 0o444)
				}
				return errno
			}
			res, err := f.tuner.Apply(ctx, p, f.m)
			if err != nil || !res.OK() {
				t.Fatalf("apply: %v %+v", err, res.Failed())
			}
			var c Change
			for _, x := range res.Changes {
				if x.ID == s.ID {
					c = x
				}
			}
			if c.Outcome != OutcomeUnsupported || !strings.Contains(c.Error, "manages") {
				t.Errorf("refused write: %s %q, want unsupported", c.Outcome, c.Error)
			}
			again, err := f.tuner.Apply(ctx, p, f.m)
			if err != nil {
				t.Fatal(err)
			}
			if len(again.Changes) != 0 || writes != 1 {
				t.Errorf("second apply: %d changes, %d writes of the refused IRQ", len(again.Changes), writes)
			}
			if got, _ := irqStep(again.Plan, s.Key); got.Action != ActionUnsupported {
				t.Errorf("second plan: %s %q", got.Action, got.Note)
			}
			j, _, _ := f.tuner.Store.Load(f.root, readBootID(f.fs))
			if j.has(s.ID) {
				t.Error("journal holds the refused IRQ")
			}
		})
	}
}

// irqNumberOf is the IRQ number of a step, from its path.
func irqNumberOf(t *testing.T, s Step) string {
	t.Helper()
	path, err := s.ID.hostPath()
	if err != nil {
		t.Fatal(err)
	}
	n := strings.TrimSuffix(strings.TrimPrefix(path, "/proc/irq/"), "/smp_affinity_list")
	if n == path || strings.Contains(n, "/") {
		t.Fatalf("path %s", path)
	}
	return n
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatal(errors.New("not a number: " + s))
		}
		n = n*10 + int(c-'0')
	}
	return n
}
