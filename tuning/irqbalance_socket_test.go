package tuning

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeIRQBalance speaks irqbalance's socket protocol as sock_handle() in
// irqbalance.c does: one command per connection, obeyed only with the
// sender's credentials attached; setup answers with the banned IRQs,
// "settings ban irqs" replaces them ("NONE": none).
type fakeIRQBalance struct {
	mu       sync.Mutex
	banned   []int
	refused  int
	commands []string
	ln       *net.UnixListener
}

func startFakeIRQBalance(t *testing.T, f *fixture, pid int, banned ...int) *fakeIRQBalance {
	t.Helper()
	sock := irqbalanceSocket(f.fs, pid)
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	fb := &fakeIRQBalance{banned: banned, ln: ln}
	raw, _ := ln.SyscallConn()
	raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			fb.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return fb
}

func (fb *fakeIRQBalance) serve(c *net.UnixConn) {
	defer c.Close()
	buf, oob := make([]byte, 16384), make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return
	}
	fb.mu.Lock()
	defer fb.mu.Unlock()
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	if len(msgs) != 1 {
		fb.refused++
		return
	}
	cred, err := unix.ParseUnixCredentials(&msgs[0])
	if err != nil || int(cred.Uid) != os.Getuid() { // irqbalance: uid 0 only
		fb.refused++
		return
	}
	cmd := string(buf[:n])
	fb.commands = append(fb.commands, cmd)
	switch {
	case strings.HasPrefix(cmd, "setup"):
		reply := "SLEEP 10 "
		for _, irq := range fb.banned {
			reply += fmt.Sprintf("IRQ %d LOAD 0 DIFF 0 CLASS 0 ", irq)
		}
		c.Write([]byte(reply + "BANNED 00000000,00000000"))
	case strings.HasPrefix(cmd, "settings ban irqs "):
		fb.banned = nil
		arg := strings.TrimPrefix(cmd, "settings ban irqs ")
		if !strings.HasPrefix(arg, "NONE") {
			fb.banned = parseBanList(arg)
		}
	}
}

func (fb *fakeIRQBalance) bans() []int {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return slices.Sorted(slices.Values(fb.banned))
}

func (fb *fakeIRQBalance) restart(banned ...int) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.banned = banned
}

func TestParseBanned(t *testing.T) {
	got, err := parseBanned("SLEEP 10 IRQ 33 LOAD 1 DIFF 0 CLASS 2 IRQ 12 LOAD 0 DIFF 0 CLASS 0 BANNED 00000000,0000000f")
	if err != nil || banList(got) != "12 33" {
		t.Errorf("%v %v", got, err)
	}
	if got, err := parseBanned("SLEEP 10 BANNED 00000000"); err != nil || len(got) != 0 {
		t.Errorf("none: %v %v", got, err)
	}
	for _, bad := range []string{"", "IRQ 1", "SLEEP 10 IRQ x LOAD 0", "SLEEP 10 IRQ"} {
		if _, err := parseBanned(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// With irq.irqbalance: coexist a running irqbalance is told, through its
// socket, to leave the placed interrupts alone (keeping its own bans); it
// balances the rest. A restarted irqbalance has forgotten: drift, banned
// again. Revert gives it its own list back. Without the socket the
// interrupts are left to irqbalance: never a conflict.
func TestIRQBalanceCoexist(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "h100-roce")
	b := scanProcesses(f.fs, "irqbalance")
	if len(b.PIDs) != 1 {
		t.Fatalf("irqbalance in the fixture: %+v", b)
	}
	fb := startFakeIRQBalance(t, f, b.PIDs[0], 5)
	p := mustProfile(t, "name: c\nirq:\n  policies: [{policy: nic-local}]\n  irqbalance: coexist\n")
	before := f.files(t)

	res, err := f.tuner.Apply(ctx, p, f.m)
	if err != nil || !res.OK() {
		t.Fatalf("apply: %v %+v", err, res.Failed())
	}
	var placed []int
	for _, s := range res.Plan.Steps {
		if s.Kind == KindIRQ {
			if s.Action != ActionSet {
				t.Fatalf("%s: %s %q", s.Key, s.Action, s.Note)
			}
			placed = append(placed, s.IRQ)
		}
	}
	if res.Plan.Steps[0].Kind != KindIRQBalance {
		t.Errorf("the ban is not planned first: %v", res.Plan.Steps[0].ID)
	}
	want := banList(append([]int{5}, placed...))
	if got := banList(fb.bans()); got != want {
		t.Errorf("irqbalance bans %q, want its own 5 and the placed IRQs %q", got, want)
	}
	pl, _, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil || !pl.Compliant() || Summarize(pl, 0) != StateCompliant {
		t.Fatalf("after apply: %v %s", err, pl.Summary())
	}

	fb.restart(5) // a restarted irqbalance knows only its --banirq
	pl, _, _ = f.tuner.Plan(ctx, p, f.m)
	if d := pl.Drifted(); len(d) != 1 || d[0].Kind != KindIRQBalance {
		t.Errorf("drifted %+v, want the ban", d)
	}
	if res, err := f.tuner.Apply(ctx, p, f.m); err != nil || !res.OK() || banList(fb.bans()) != want {
		t.Errorf("repair: %v, bans %v", err, fb.bans())
	}

	if res, err := f.tuner.Revert(ctx); err != nil || !res.OK() {
		t.Fatalf("revert: %v %+v", err, res.Failed())
	}
	if got := fb.bans(); !slices.Equal(got, []int{5}) {
		t.Errorf("after revert irqbalance bans %v, want its own [5]", got)
	}
	managed := map[string]string{}
	for _, n := range placed {
		managed[irqAffinityPath(n)] = ""
	}
	sameValues(t, "after revert", before, f.files(t), managed)
	if fb.refused != 0 {
		t.Errorf("%d commands without credentials", fb.refused)
	}

	// No socket (irqbalance built without it): left to irqbalance.
	fb.ln.Close()
	pl, _, err = f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range pl.Steps {
		if s.Kind == KindIRQ && (s.Action != ActionSkip || !strings.Contains(s.Note, "socket")) {
			t.Fatalf("%s without the socket: %s %q", s.Key, s.Action, s.Note)
		}
	}
	if got := Summarize(pl, 0); got == StateConflict {
		t.Errorf("coexist without the socket: %s", got)
	}
}
