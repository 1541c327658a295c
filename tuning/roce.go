package tuning

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/gpunode/gpunode/rdma"
)

// Kinds of the RoCE settings (profile section roce).
const (
	// KindRoCEMode is rdma_cm's default RoCE mode of one port; key
	// "<RDMA device>/<port>" (mlx5_0/1).
	KindRoCEMode = "roce-mode"
	// KindPFC is the mask of priorities with priority flow control on, of
	// one netdev, over DCB netlink; key: the netdev.
	KindPFC = "pfc"
	// KindTrust is what a netdev's priority comes from (pcp or dscp),
	// over DCB netlink; key: the netdev.
	KindTrust = "trust"
	// KindECN is one ECN switch of a netdev (mlx5 sysfs); key
	// "<netdev>/<roce_np|roce_rp>/<priority>".
	KindECN = "ecn"
)

// RoCE is the profile section for RoCE ports: the RoCE version rdma_cm
// connects with and the per-priority flow and congestion control that
// make the fabric lossless. Each field left empty leaves that setting
// alone.
type RoCE struct {
	// Devices selects ports by RDMA device (mlx5_0) or netdev name; empty
	// selects every RoCE port except those of SR-IOV virtual functions.
	Devices []string `yaml:"devices,omitempty" json:"devices,omitempty"`
	// DefaultMode is rdma_cm's default_roce_mode of each port: "RoCE v2"
	// or "IB/RoCE v1" (the kernel's spelling).
	DefaultMode string `yaml:"defaultMode,omitempty" json:"default_mode,omitempty"`
	// PFC lists the priorities (0-7) that get priority flow control; the
	// others get none (the netdev's whole PFC mask is set).
	PFC []int `yaml:"pfc,omitempty" json:"pfc,omitempty"`
	// Trust is what the NIC takes a packet's priority from: "pcp" (the
	// VLAN header's 802.1p bits, mlx5's default) or "dscp" (the IP
	// header's DSCP, for fabrics without VLANs). See DSCPTrust.
	Trust string `yaml:"trust,omitempty" json:"trust,omitempty"`
	// ECN lists the priorities whose ECN notification and reaction points
	// (DCQCN) are switched on where the driver exposes them (mlx5:
	// /sys/class/net/<if>/ecn/roce_np|roce_rp/enable/<prio>); the other
	// priorities are left alone.
	ECN []int `yaml:"ecn,omitempty" json:"ecn,omitempty"`
}

func (r RoCE) enabled() bool {
	return r.DefaultMode != "" || len(r.PFC) > 0 || len(r.ECN) > 0 || r.Trust != ""
}

// DCB reads and sets the PFC state of a netdev: rtnetlink DCB on a host
// (rdma/dcb.Reader), a table on a simulated node. Errors wrapping
// rdma.ErrNoDCB mean the driver has no DCB.
type DCB interface {
	PFCEnabled(ctx context.Context, ifname string) (uint8, error)
	SetPFC(ctx context.Context, ifname string, mask uint8) error
}

// DSCPTrust reads and sets the DSCP entries of a netdev's DCB
// application table (DSCP value -> priority). mlx5 trusts DSCP exactly
// while the table holds DSCP entries (its ieee_setapp switches to DSCP
// trust on the first, its ieee_delapp back to PCP when the last goes), so
// the trust mode is set through them: dscp adds the default map (DSCP d
// -> priority d>>3, the class selector, as mlx5 and `mlnx_qos --trust
// dscp` use), pcp deletes every DSCP entry. A map of the host's own is
// kept (trust dscp is already so) and journaled whole, so revert puts it
// back exactly. A DCB source without it has no trust setting.
type DSCPTrust interface {
	DSCPMap(ctx context.Context, ifname string) (map[uint8]uint8, error)
	SetDSCPMap(ctx context.Context, ifname string, m map[uint8]uint8) error
}

// Trust modes.
const (
	TrustPCP  = "pcp"
	TrustDSCP = "dscp"
)

// trustText spells a DSCP map as plans and the journal show it: pcp
// (none), dscp (the default map), or dscp with the map ("dscp 24:3,46:5").
func trustText(m map[uint8]uint8) string {
	if len(m) == 0 {
		return TrustPCP
	}
	def := len(m) == 64
	var parts []string
	for d := range uint8(64) {
		p, ok := m[d]
		if !ok {
			continue
		}
		def = def && p == d>>3
		parts = append(parts, fmt.Sprintf("%d:%d", d, p))
	}
	if def {
		return TrustDSCP
	}
	return TrustDSCP + " " + strings.Join(parts, ",")
}

// parseTrustText reads trustText's spelling back.
func parseTrustText(s string) (map[uint8]uint8, error) {
	m := map[uint8]uint8{}
	switch {
	case s == TrustPCP:
		return m, nil
	case s == TrustDSCP:
		for d := range uint8(64) {
			m[d] = d >> 3
		}
		return m, nil
	case strings.HasPrefix(s, TrustDSCP+" "):
		for e := range strings.SplitSeq(strings.TrimPrefix(s, TrustDSCP+" "), ",") {
			a, b, ok := strings.Cut(e, ":")
			d, err1 := strconv.Atoi(a)
			p, err2 := strconv.Atoi(b)
			if !ok || err1 != nil || err2 != nil || d < 0 || d > 63 || p < 0 || p > 7 {
				return nil, fmt.Errorf("trust %q: want pcp, dscp or dscp <dscp>:<priority>,...", s)
			}
			m[uint8(d)] = uint8(p)
		}
		return m, nil
	}
	return nil, fmt.Errorf("trust %q: want pcp, dscp or dscp <dscp>:<priority>,...", s)
}

// rdmaCMDir is rdma_cm's configfs tree (drivers/infiniband/core/
// cma_configfs.c). A device has a directory there only once someone
// creates it (mkdir: make_cma_dev), which fills in ports/<n>/ with
// default_roce_mode ("IB/RoCE v1" or "RoCE v2", ib_cache_gid_type_str)
// and default_roce_tos. Removing the directory (drop_cma_dev) frees only
// the configfs group: the mode lives in the cma_device and stays as last
// written, so revert writes the original back before removing one.
const rdmaCMDir = "/sys/kernel/config/rdma_cm"

var (
	ecnKey  = regexp.MustCompile(`^([^/]+)/(roce_np|roce_rp)/([0-7])$`)
	modeKey = regexp.MustCompile(`^([^/]+)/([0-9]{1,3})$`)
)

// roceHostPath is the file of an ECN switch or a RoCE mode; PFC has none
// (netlink).
func roceHostPath(id ID) (string, error) {
	switch id.Kind {
	case KindECN:
		m := ecnKey.FindStringSubmatch(id.Key)
		if m == nil || !deviceName.MatchString(m[1]) {
			return "", fmt.Errorf("ecn %q: want <netdev>/<roce_np|roce_rp>/<priority 0-7>", id.Key)
		}
		return fmt.Sprintf("/sys/class/net/%s/ecn/%s/enable/%s", m[1], m[2], m[3]), nil
	case KindRoCEMode:
		m := modeKey.FindStringSubmatch(id.Key)
		if m == nil || !deviceName.MatchString(m[1]) {
			return "", fmt.Errorf("roce-mode %q: want <RDMA device>/<port>", id.Key)
		}
		return fmt.Sprintf("%s/%s/ports/%s/default_roce_mode", rdmaCMDir, m[1], m[2]), nil
	case KindPFC, KindTrust:
		if !deviceName.MatchString(id.Key) {
			return "", fmt.Errorf("%s %q is not a netdev name", id.Kind, id.Key)
		}
		return "", nil
	}
	return "", fmt.Errorf("unknown setting kind %q", id.Kind)
}

func isRoCEKind(kind string) bool {
	return kind == KindRoCEMode || kind == KindPFC || kind == KindECN || kind == KindTrust
}

// validate checks the roce section.
func (r RoCE) validate(bad func(key, format string, args ...any)) {
	for _, d := range r.Devices {
		if !deviceName.MatchString(d) {
			bad("roce.devices", "%q is not a device name (RDMA device or netdev)", d)
		}
	}
	switch r.DefaultMode {
	case "", rdma.RoCEv1, rdma.RoCEv2:
	default:
		bad("roce.defaultMode", "%q: want %q or %q (the kernel's spelling)", r.DefaultMode, rdma.RoCEv2, rdma.RoCEv1)
	}
	switch r.Trust {
	case "", TrustPCP, TrustDSCP:
	default:
		bad("roce.trust", "%q: want pcp or dscp", r.Trust)
	}
	for _, f := range []struct {
		key   string
		prios []int
	}{{"roce.pfc", r.PFC}, {"roce.ecn", r.ECN}} {
		seen := map[int]bool{}
		for _, p := range f.prios {
			if p < 0 || p > 7 {
				bad(f.key, "priority %d: want 0 to 7", p)
			}
			if seen[p] {
				bad(f.key, "priority %d given twice", p)
			}
			seen[p] = true
		}
	}
	if len(r.Devices) > 0 && !r.enabled() {
		bad("roce.devices", "set, but no RoCE setting (defaultMode, pfc, trust, ecn) is")
	}
}

// priorityMask turns priorities into a PFC mask (bit i: priority i).
func priorityMask(prios []int) uint8 {
	var m uint8
	for _, p := range prios {
		m |= 1 << p
	}
	return m
}

// maskText spells a PFC mask as plans show it: "3", "3,4", "none".
func maskText(m uint8) string {
	var parts []string
	for i := range 8 {
		if m&(1<<i) != 0 {
			parts = append(parts, strconv.Itoa(i))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// parseMaskText reads maskText's spelling back.
func parseMaskText(s string) (uint8, error) {
	if s == "none" {
		return 0, nil
	}
	var m uint8
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || n > 7 {
			return 0, fmt.Errorf("PFC priorities %q: want a list of 0-7 or none", s)
		}
		m |= 1 << n
	}
	return m, nil
}

// RoCEPort is a RoCE port a profile's roce section may select.
type RoCEPort struct {
	Device          string `json:"device"`
	Port            int    `json:"port"`
	Netdev          string `json:"netdev,omitempty"`
	VirtualFunction bool   `json:"virtual_function,omitempty"`
	// GIDTypes are the RoCE versions of the port's GIDs ("RoCE v2");
	// empty when it has none yet (no address).
	GIDTypes []string `json:"gid_types,omitempty"`
}

// roceHost is what Read learns for the roce section.
type roceHost struct {
	Ports []RoCEPort `json:"ports,omitempty"`
	// Warning says why ports could not be listed.
	Warning string `json:"warning,omitempty"`
	// notes explain unsupported settings; dirs are the rdma_cm device
	// directories a RoCE mode needs and that do not exist.
	notes map[ID]string
	dirs  map[ID]string
}

// roceWant is the wanted value of every RoCE setting the profile names,
// over the selected ports.
func roceWant(r RoCE, ports []RoCEPort) map[ID]string {
	want := map[ID]string{}
	if !r.enabled() {
		return want
	}
	for _, p := range ports {
		if len(r.Devices) > 0 {
			if !slices.Contains(r.Devices, p.Device) && (p.Netdev == "" || !slices.Contains(r.Devices, p.Netdev)) {
				continue
			}
		} else if p.VirtualFunction {
			continue // a VF belongs to its VM or pod
		}
		if r.DefaultMode != "" {
			want[ID{KindRoCEMode, portKey(p)}] = r.DefaultMode
		}
		if p.Netdev == "" {
			continue
		}
		if len(r.PFC) > 0 {
			want[ID{KindPFC, p.Netdev}] = maskText(priorityMask(r.PFC))
		}
		if r.Trust != "" {
			want[ID{KindTrust, p.Netdev}] = r.Trust
		}
		for _, prio := range r.ECN {
			for _, side := range []string{"roce_np", "roce_rp"} {
				want[ID{KindECN, fmt.Sprintf("%s/%s/%d", p.Netdev, side, prio)}] = "1"
			}
		}
	}
	return want
}

// readRoCE reads the RoCE ports (when the profile has a roce section)
// and the current value of every RoCE setting the profile or the journal
// names, into h. It returns their IDs.
func (t *Tuner) readRoCE(ctx context.Context, p Profile, j *Journal, h *Host) []ID {
	h.RoCE.notes, h.RoCE.dirs = map[ID]string{}, map[ID]string{}
	var ids []ID
	if j != nil {
		for _, e := range j.Entries {
			if isRoCEKind(e.Kind) {
				ids = append(ids, e.ID())
			}
		}
	}
	if p.RoCE.enabled() {
		devs, err := rdma.Discover(ctx, t.FS)
		if err != nil && len(devs) == 0 {
			h.RoCE.Warning = "roce: no RDMA devices: " + err.Error()
		}
		for _, d := range devs {
			for _, port := range d.Ports {
				if port.Transport != rdma.RoCE {
					continue
				}
				rp := RoCEPort{Device: d.Name, Port: port.Number, Netdev: port.Netdev, VirtualFunction: d.VirtualFunction}
				for _, g := range port.GIDs {
					if g.Type != "" && !slices.Contains(rp.GIDTypes, g.Type) {
						rp.GIDTypes = append(rp.GIDTypes, g.Type)
					}
				}
				slices.Sort(rp.GIDTypes)
				h.RoCE.Ports = append(h.RoCE.Ports, rp)
			}
		}
		for id := range roceWant(p.RoCE, h.RoCE.Ports) {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, compareIDs)
	ids = slices.Compact(ids)
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		switch id.Kind {
		case KindPFC:
			h.Current[id], h.RoCE.notes[id] = t.readPFC(ctx, id.Key)
		case KindTrust:
			h.Current[id], h.RoCE.notes[id] = t.readTrust(ctx, id.Key)
		case KindRoCEMode:
			h.Current[id], h.RoCE.notes[id], h.RoCE.dirs[id] = t.readRoCEMode(id)
		default:
			h.Current[id] = readValue(t.FS, id)
			if h.Current[id].Unsupported {
				path, _ := id.hostPath()
				h.RoCE.notes[id] = "the driver exposes no " + path + " (ECN switches are mlx5's)"
			}
		}
	}
	return ids
}

// readPFC reads a netdev's PFC mask; note explains an unsupported one.
func (t *Tuner) readPFC(ctx context.Context, netdev string) (cur Current, note string) {
	if t.DCB == nil {
		return Current{Unsupported: true}, "no DCB access configured"
	}
	mask, err := t.DCB.PFCEnabled(ctx, netdev)
	switch {
	case errors.Is(err, rdma.ErrNoDCB):
		return Current{Unsupported: true}, "the driver of " + netdev + " has no DCB (IEEE PFC)"
	case errors.Is(err, syscall.ENODEV):
		return Current{Err: fmt.Sprintf("%s is not in the agent's network namespace (DCB over netlink sees only its own)", netdev)}, ""
	case err != nil:
		return Current{Err: err.Error()}, ""
	}
	return Current{Value: maskText(mask)}, ""
}

// readTrust reads a netdev's trust mode (its DSCP map).
func (t *Tuner) readTrust(ctx context.Context, netdev string) (cur Current, note string) {
	d, ok := t.DCB.(DSCPTrust)
	if !ok {
		return Current{Unsupported: true}, "no DCB access that sets the application table"
	}
	m, err := d.DSCPMap(ctx, netdev)
	switch {
	case errors.Is(err, rdma.ErrNoDCB):
		return Current{Unsupported: true}, "the driver of " + netdev + " has no DCB (application table)"
	case errors.Is(err, syscall.ENODEV):
		return Current{Err: fmt.Sprintf("%s is not in the agent's network namespace (DCB over netlink sees only its own)", netdev)}, ""
	case err != nil:
		return Current{Err: err.Error()}, ""
	}
	return Current{Value: trustText(m)}, ""
}

// doTrust sets (or restores) a netdev's DSCP map and reads it back.
func (t *Tuner) doTrust(ctx context.Context, s Step, done Outcome) Change {
	c := Change{Step: s}
	m, err := parseTrustText(s.Want)
	if err != nil {
		c.Outcome, c.Error = OutcomeFailed, err.Error()
		return c
	}
	d, ok := t.DCB.(DSCPTrust)
	if !ok {
		c.Outcome, c.Error = OutcomeUnsupported, "no DCB access that sets the application table"
		return c
	}
	return setAndReadBack(c, done, "", d.SetDSCPMap(ctx, s.Key, m), func() Current {
		after, _ := t.readTrust(ctx, s.Key)
		return after
	})
}

// setAndReadBack finishes a DCB step: the set's error (ErrNoDCB:
// unsupported), else what the driver holds when read back, which must be
// what was wanted. what names the setting in the message ("PFC ").
func setAndReadBack(c Change, done Outcome, what string, setErr error, read func() Current) Change {
	if setErr != nil {
		c.Outcome, c.Error = OutcomeFailed, setErr.Error()
		if errors.Is(setErr, rdma.ErrNoDCB) {
			c.Outcome = OutcomeUnsupported
		}
		return c
	}
	after := read()
	switch {
	case after.Err != "":
		c.Outcome, c.Error = OutcomeFailed, "read back: "+after.Err
	case after.Value != c.Want:
		c.Outcome, c.Error = OutcomeFailed, fmt.Sprintf("the driver holds %s%s after setting %s", what, after.Value, c.Want)
	default:
		c.Outcome = done
	}
	return c
}

// readRoCEMode reads a port's default RoCE mode. Where rdma_cm has no
// directory for the device the value cannot be read without creating it:
// the value is empty and dir is the directory apply creates.
func (t *Tuner) readRoCEMode(id ID) (cur Current, note, dir string) {
	path, err := id.hostPath()
	if err != nil {
		return Current{Err: err.Error()}, "", ""
	}
	if !t.FS.IsDir(rdmaCMDir) {
		return Current{Unsupported: true}, "no " + rdmaCMDir + ": configfs not mounted at /sys/kernel/config, rdma_cm not loaded, or a kernel without CONFIG_INFINIBAND_ADDR_TRANS_CONFIGFS", ""
	}
	dev, _, _ := strings.Cut(id.Key, "/")
	if d := rdmaCMDir + "/" + dev; !t.FS.IsDir(d) {
		return Current{}, "", d
	}
	cur = readAt(t.FS, id, path)
	if cur.Unsupported {
		note = "rdma_cm has no port " + id.Key
	}
	return cur, note, ""
}

// planRoCE plans the roce section.
func planRoCE(p Profile, h Host, j *Journal) (steps []Step, warnings []string) {
	if !p.RoCE.enabled() {
		return nil, nil
	}
	if h.RoCE.Warning != "" {
		warnings = append(warnings, h.RoCE.Warning)
	}
	want := roceWant(p.RoCE, h.RoCE.Ports)
	if len(want) == 0 && h.RoCE.Warning == "" {
		warnings = append(warnings, "roce: no RoCE port selected")
	}
	for _, id := range sortedIDs(want) {
		steps = append(steps, roceStep(valueStep(id, want[id], h, j), h))
	}
	return steps, warnings
}

func sortedIDs(m map[ID]string) []ID {
	ids := make([]ID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, compareIDs)
	return ids
}

func portKey(p RoCEPort) string { return fmt.Sprintf("%s/%d", p.Device, p.Port) }

// roceStep completes a value step of a RoCE setting: its notes, and the
// rdma_cm directory a RoCE mode needs created. A mode the port has no GID
// of is unsupported: rdma_cm refuses it (cma_set_default_gid_type checks
// the port's GID types and answers EINVAL; soft-RoCE has RoCE v2 only).
func roceStep(s Step, h Host) Step {
	if !isRoCEKind(s.Kind) {
		return s
	}
	if s.Kind == KindRoCEMode && s.Action == ActionSet {
		i := slices.IndexFunc(h.RoCE.Ports, func(p RoCEPort) bool { return portKey(p) == s.Key })
		if i >= 0 && len(h.RoCE.Ports[i].GIDTypes) > 0 && !slices.Contains(h.RoCE.Ports[i].GIDTypes, s.Want) {
			s.Action, s.Drift = ActionUnsupported, false
			s.Note = fmt.Sprintf("the port has no %s GIDs (only %s): rdma_cm refuses that mode", s.Want, strings.Join(h.RoCE.Ports[i].GIDTypes, ", "))
			return s
		}
	}
	if s.Action == ActionUnsupported && h.RoCE.notes[s.ID] != "" {
		s.Note = h.RoCE.notes[s.ID]
	}
	if s.Kind == KindTrust && s.Want == TrustDSCP && strings.HasPrefix(s.Current, TrustDSCP+" ") && (s.Action == ActionSet || s.Action == ActionOK) {
		// Trusting DSCP with a map of its own: the trust mode is as
		// wanted; the map is the host's.
		s.Action, s.Drift, s.Note = ActionOK, false, "trusts DSCP with its own map (kept)"
	}
	if s.Action == ActionRefused && h.NetNS.State == NetNSOther {
		s.Note = "not in the host's network namespace (" + h.NetNS.Detail + "): a netdev's DCB and ECN settings are reached only from the namespace it is in; run the agent with hostNetwork: true"
	}
	if dir := h.RoCE.dirs[s.ID]; dir != "" && s.Action == ActionSet {
		s.ConfigfsDir = dir
		s.Note = joinNotes(s.Note, "rdma_cm has no directory for the device: tuning creates "+dir+" and removes it on revert")
	}
	return s
}

// doPFC sets (or restores) a netdev's PFC mask and reads it back.
func (t *Tuner) doPFC(ctx context.Context, s Step, done Outcome) Change {
	c := Change{Step: s}
	mask, err := parseMaskText(s.Want)
	if err != nil {
		c.Outcome, c.Error = OutcomeFailed, err.Error()
		return c
	}
	if t.DCB == nil {
		c.Outcome, c.Error = OutcomeUnsupported, "no DCB access configured"
		return c
	}
	return setAndReadBack(c, done, "PFC ", t.DCB.SetPFC(ctx, s.Key, mask), func() Current {
		after, _ := t.readPFC(ctx, s.Key)
		return after
	})
}

// createConfigfsDirs creates the rdma_cm directories the RoCE mode steps
// need. The journal already names each directory (saved before this), so
// a crash after the mkdir still removes it on revert. The mode the kernel
// shows once the directory is there is the original: it is journaled
// (and saved) before anything is written.
func (t *Tuner) createConfigfsDirs(ctx context.Context, j *Journal, todo []Step) error {
	changed := false
	for i, s := range todo {
		if s.Kind != KindRoCEMode || s.Action != ActionSet || s.ConfigfsDir == "" || ctx.Err() != nil {
			continue
		}
		if err := os.Mkdir(t.FS.Path(s.ConfigfsDir), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			continue // the write fails and says why
		}
		if t.afterMkdir != nil {
			t.afterMkdir(s.ConfigfsDir)
		}
		path, _ := s.hostPath()
		cur := readAt(t.FS, s.ID, path)
		if cur.Err != "" || cur.Unsupported {
			continue
		}
		todo[i].Current = cur.Value
		if e, ok := j.entry(s.ID); ok && e.Original == "" {
			j.setOriginal(s.ID, cur.Value)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := t.Store.Save(j); err != nil {
		return fmt.Errorf("rdma_cm directories created, originals not journaled (revert removes the directories): %w", err)
	}
	t.crash("write")
	return nil
}

// restoreRoCEMode writes a port's original mode back, then removes the
// rdma_cm directory tuning created (removing it first would leave the
// mode as tuning set it: see rdmaCMDir). An empty original (a crash
// before it was read) means nothing was written.
func (t *Tuner) restoreRoCEMode(s Step) Change {
	c := Change{Step: s, Outcome: OutcomeRestored}
	path, err := s.hostPath()
	if err != nil {
		c.Outcome, c.Error = OutcomeFailed, err.Error()
		return c
	}
	if s.Want != "" {
		if err := t.write(path, s.Want); err != nil {
			c.Outcome, c.Error = classifyWrite(s.ID, err)
			return c
		}
		if after := readAt(t.FS, s.ID, path); after.Value != s.Want {
			c.Outcome, c.Error = OutcomeFailed, fmt.Sprintf("the kernel kept %q after writing %q", after.Value, s.Want)
			return c
		}
	}
	if s.ConfigfsDir != "" {
		rm := os.Remove
		if t.removeDir != nil {
			rm = t.removeDir
		}
		if err := rm(t.FS.Path(s.ConfigfsDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.Outcome, c.Error = OutcomeFailed, fmt.Sprintf("remove %s: %v", s.ConfigfsDir, unwrapPath(err))
		}
	}
	return c
}

// replayRoCE puts a journaled PFC mask (or DSCP map) into a simulated
// node's DCB table.
func (t *Tuner) replayRoCE(ctx context.Context, e Entry) error {
	if e.Kind == KindTrust {
		d, ok := t.DCB.(DSCPTrust)
		if !ok {
			return nil
		}
		m, err := parseTrustText(e.Wrote)
		if err != nil {
			return err
		}
		if err := d.SetDSCPMap(ctx, e.Key, m); err != nil && !errors.Is(err, rdma.ErrNoDCB) {
			return err
		}
		return nil
	}
	if e.Kind != KindPFC || t.DCB == nil {
		return nil
	}
	mask, err := parseMaskText(e.Wrote)
	if err != nil {
		return err
	}
	err = t.DCB.SetPFC(ctx, e.Key, mask)
	if errors.Is(err, rdma.ErrNoDCB) {
		return nil
	}
	return err
}
