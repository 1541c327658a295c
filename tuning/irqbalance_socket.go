package tuning

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// irqbalance's runtime socket (built by default, --with-irqbalance-ui):
// a stream socket at /run/irqbalance/irqbalance<pid>.sock in the daemon's
// mount namespace, reached here through the host's /proc/<pid>/root so no
// further mount is needed. Each connection carries one command in one
// message with the sender's credentials (SO_PASSCRED; only uid 0 is
// obeyed), then irqbalance answers (setup, stats) or not (settings) and
// closes. See sock_handle() and init_socket() in irqbalance.c. Commands
// used here:
//
//	setup                        -> "SLEEP 10 IRQ 12 LOAD 0 DIFF 0 CLASS 2 ... BANNED <cpumask>"
//	settings ban irqs 12 13 14   replaces the banned IRQs (--banirq included)
//	settings ban irqs NONE       bans none
//
// A banned interrupt is never moved by irqbalance, which goes on balancing
// the others: the way to coexist with it. The ban lives in the process
// only; a restarted irqbalance has forgotten it, which the next
// verification sees as drift and repairs.
//
// Before 1.9.4 (irqbalance commit de0fe4a, "Fix socket API being blocked
// for 10s"; Debian 12 ships 1.9.2) the rescan a ban triggers sleeps its
// interval (10 s by default) inside the main loop, so the socket accepts
// but answers only after it: the timeout allows for that.
const (
	irqbalanceSocketDir = "/run/irqbalance"
	irqbalanceTimeout   = 15 * time.Second
	maxIRQBalanceReply  = 1 << 20
)

func irqbalanceSocket(fsys hostfs.FS, pid int) string {
	return fsys.Path(fmt.Sprintf("/proc/%d/root%s/irqbalance%d.sock", pid, irqbalanceSocketDir, pid))
}

// irqbalanceCommand sends one command and returns the answer.
func irqbalanceCommand(ctx context.Context, sock, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, irqbalanceTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return "", err
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	if dl, ok := ctx.Deadline(); ok {
		uc.SetDeadline(dl)
	}
	creds := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())})
	if _, _, err := uc.WriteMsgUnix([]byte(cmd), creds, nil); err != nil {
		return "", fmt.Errorf("send %q: %w", cmd, err)
	}
	b, err := io.ReadAll(io.LimitReader(uc, maxIRQBalanceReply))
	if err != nil && !errors.Is(err, unix.ECONNRESET) {
		return "", fmt.Errorf("%q: %w", cmd, err)
	}
	return string(b), nil
}

// parseBanned reads the banned IRQs from the answer to setup: the numbers
// after each IRQ up to BANNED (the banned CPU mask).
func parseBanned(setup string) ([]int, error) {
	f := strings.Fields(setup)
	if len(f) < 2 || f[0] != "SLEEP" {
		return nil, fmt.Errorf("answer to setup %q: want SLEEP ...", truncate(setup, 60))
	}
	var out []int
	for i := 2; i < len(f) && f[i] != "BANNED"; i++ {
		if f[i] != "IRQ" {
			continue
		}
		if i+1 >= len(f) {
			return nil, fmt.Errorf("answer to setup %q: IRQ without a number", truncate(setup, 60))
		}
		n, err := strconv.Atoi(f[i+1])
		if err != nil || n < 0 {
			return nil, fmt.Errorf("answer to setup: IRQ %q", f[i+1])
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// banList is the plan's form of a set of banned IRQs: sorted numbers
// separated by spaces, "" for none.
func banList(irqs []int) string {
	s := slices.Sorted(slices.Values(irqs))
	return joinWith(slices.Compact(s), " ")
}

func parseBanList(s string) []int {
	var out []int
	for _, f := range strings.Fields(s) {
		if n, err := strconv.Atoi(f); err == nil && n >= 0 {
			out = append(out, n)
		}
	}
	return out
}

func joinWith(ns []int, sep string) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, sep)
}

// readBanned asks the running irqbalance for its banned IRQs. Not
// running: Unsupported (a ban would die with the process anyway).
func (t *Tuner) readBanned(ctx context.Context, b IRQBalance) Current {
	if b.Process == StateNotRunning || (b.Process != StateRunning && b.State() == StateNotRunning) {
		return Current{Unsupported: true}
	}
	if len(b.PIDs) == 0 {
		return Current{Err: "irqbalance's process cannot be found, so neither can its socket: " + b.String()}
	}
	var errs []string
	for _, pid := range b.PIDs {
		reply, err := irqbalanceCommand(ctx, irqbalanceSocket(t.FS, pid), "setup")
		if err != nil {
			errs = append(errs, fmt.Sprintf("pid %d: %v", pid, unwrapNet(err)))
			continue
		}
		banned, err := parseBanned(reply)
		if err != nil {
			errs = append(errs, fmt.Sprintf("pid %d: %v", pid, err))
			continue
		}
		return Current{Value: banList(banned)}
	}
	return Current{Err: "irqbalance's socket (" + irqbalanceSocketDir + ", built --with-irqbalance-ui) does not answer: " + strings.Join(errs, "; ")}
}

// writeBanned replaces irqbalance's banned IRQs with list.
func (t *Tuner) writeBanned(ctx context.Context, list string) error {
	b := t.irqbalance(ctx)
	if len(b.PIDs) == 0 {
		return errors.New("irqbalance is not running")
	}
	arg := list
	if arg == "" {
		arg = "NONE"
	}
	var errs []error
	for _, pid := range b.PIDs {
		_, err := irqbalanceCommand(ctx, irqbalanceSocket(t.FS, pid), "settings ban irqs "+arg)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("pid %d: %w", pid, unwrapNet(err)))
	}
	return errors.Join(errs...)
}

func unwrapNet(err error) error {
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Err != nil {
		return oe.Err
	}
	return err
}
