package rdma

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"syscall"
)

// rdmaCMDir is rdma_cm's configfs tree. A device appears there only after
// someone creates its directory (mkdir, as cma_roce_mode does); the agent
// only reads, so a missing directory means the kernel's default.
const rdmaCMDir = "/sys/kernel/config/rdma_cm"

// priorities are the eight 802.1p priorities.
const priorities = 8

// roce reads the RoCE configuration of port num of device dev.
func (r *reader) roce(dev string, num int, p Port) *RoCEConfig {
	c := &RoCEConfig{}
	modePath := fmt.Sprintf("%s/%s/ports/%d/default_roce_mode", rdmaCMDir, dev, num)
	if s, ok := r.read(modePath, isNotExist); ok {
		m, err := parseRoCEMode(s)
		if r.check(modePath, err) {
			c.DefaultMode, c.ModeSource = m, ModeConfigfs
		}
	} else if !r.fsys.Exists(modePath) && len(p.GIDs) > 0 {
		// Without GIDs (no address yet) the port's RoCE versions are unknown.
		c.DefaultMode, c.ModeSource = RoCEv1, ModeKernelDefault
		if slices.ContainsFunc(p.GIDs, func(g GID) bool { return g.Type == RoCEv2 }) {
			c.DefaultMode = RoCEv2
		}
	}
	if p.Netdev != "" {
		c.ECN = r.ecn(path.Join(netDir, p.Netdev, "ecn"))
	}
	return c
}

// ecn reads <netdev>/ecn/roce_np/enable/<prio> and roce_rp/enable/<prio>;
// nil when the driver has no such directory.
func (r *reader) ecn(dir string) *ECN {
	if !r.fsys.IsDir(dir) {
		return nil
	}
	e := &ECN{NotificationPoint: []int{}, ReactionPoint: []int{}}
	for _, side := range []struct {
		name string
		dst  *[]int
	}{{"roce_np", &e.NotificationPoint}, {"roce_rp", &e.ReactionPoint}} {
		for prio := range priorities {
			p := fmt.Sprintf("%s/%s/enable/%d", dir, side.name, prio)
			s, ok := r.read(p, isNotExist)
			if !ok {
				continue
			}
			on, err := parseFlag(s)
			if r.check(p, err) && on {
				*side.dst = append(*side.dst, prio)
			}
		}
	}
	return e
}

// parseRoCEMode accepts the two values default_roce_mode shows.
func parseRoCEMode(s string) (string, error) {
	switch s {
	case RoCEv1, RoCEv2:
		return s, nil
	}
	return "", fmt.Errorf("%q is not a RoCE mode (want %q or %q)", s, RoCEv1, RoCEv2)
}

// parseFlag parses a sysfs boolean, "0" or "1".
func parseFlag(s string) (bool, error) {
	switch s {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, fmt.Errorf("%q is not 0 or 1", s)
}

// PFCReader reads the PFC state of a network interface: a bitmask with
// bit i set when priority i has PFC enabled. The real one asks the kernel
// over rtnetlink (DCB); simulated nodes bring their own.
type PFCReader interface {
	PFCEnabled(ctx context.Context, ifname string) (uint8, error)
}

// ErrNoDCB is returned (wrapped) by a PFCReader for an interface whose
// driver has no DCB support: PFC is unknown there, not an error.
var ErrNoDCB = errors.New("interface has no DCB support")

// AddPFC fills in the PFC state of every RoCE port's netdev. A port whose
// interface has no DCB support, or is not in the agent's network
// namespace, keeps PFC nil; other failures go on the port's errors and are
// returned, joined.
func AddPFC(ctx context.Context, devs []Device, pfc PFCReader) error {
	if pfc == nil {
		return nil
	}
	var errs []error
	for i := range devs {
		for j := range devs[i].Ports {
			p := &devs[i].Ports[j]
			if p.RoCE == nil || p.Netdev == "" {
				continue
			}
			mask, err := pfc.PFCEnabled(ctx, p.Netdev)
			switch {
			// No DCB in the driver, or no such interface in the agent's
			// network namespace (a pod without hostNetwork, a fixture
			// tree under --host-root): PFC stays unknown.
			case errors.Is(err, ErrNoDCB) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENODEV):
			case err != nil:
				err = fmt.Errorf("%s port %d: PFC of %s: %w", devs[i].Name, p.Number, p.Netdev, err)
				p.Errors = append(p.Errors, err.Error())
				errs = append(errs, err)
			default:
				p.RoCE.PFC = &PFC{Enabled: maskPriorities(mask)}
			}
		}
	}
	return errors.Join(errs...)
}

// maskPriorities lists the set bits of a priority mask.
func maskPriorities(mask uint8) []int {
	out := []int{}
	for i := range priorities {
		if mask&(1<<i) != 0 {
			out = append(out, i)
		}
	}
	return out
}
