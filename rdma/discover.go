package rdma

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
)

// Host paths read by Discover (docs/host-files.md, section RDMA).
const (
	classDir  = "/sys/class/infiniband"
	verbsDir  = "/sys/class/infiniband_verbs"
	netDir    = "/sys/class/net"
	devNodes  = "/dev/infiniband"
	rxeDriver = "rdma_rxe"
)

// maxAttrLen bounds one attribute. sysfs attributes are at most a page
// (4 KiB on x86) and the ones read here hold a few dozen bytes; anything
// longer is not a kernel attribute.
const maxAttrLen = 4096

// Discover reads every RDMA device under /sys/class/infiniband with a
// Reader of its own (see Reader.Discover). A caller that discovers again
// and again keeps a Reader instead, so a device whose read hangs is not
// read again on top of it.
func Discover(ctx context.Context, fsys hostfs.FS) ([]Device, error) {
	return NewReader(fsys).Discover(ctx)
}

// Discover reads every RDMA device under /sys/class/infiniband, sorted by
// name, with ports sorted by number and GIDs by index.
//
// With no RDMA device it returns an error for which
// errors.Is(err, source.ErrAbsent) holds. A device or port that cannot be
// fully read is still returned, with its problems on Device.Errors or
// Port.Errors; the returned error joins all of them, named by device.
// Files that some drivers do not have (node_type, the GUIDs, lid and
// sm_lid, the GID table, fw_ver, hca_type, board_id) are no problem when
// they are missing: the device lacks only those facts.
//
// Each device is read in its own goroutine, under four fifths of the time
// ctx has left (source.Each, source.DeviceDeadline). A device whose read
// has not returned by then (a driver stuck in a sysfs read) is reported
// with the reason, from its last complete reading if there was one, while
// the others are read in full; it is not read again until that read
// returns.
func (r *Reader) Discover(ctx context.Context) ([]Device, error) {
	fsys := r.fs
	names, err := fsys.Names(classDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, source.NewAbsent("no RDMA devices: %s does not exist (no RDMA drivers loaded)", classDir)
	case err != nil:
		return nil, fmt.Errorf("list %s: %w", classDir, cause(err))
	case len(names) == 0:
		return nil, source.NewAbsent("no RDMA devices: %s is empty (RDMA core loaded, no device registered)", classDir)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ctx, cancel := source.DeviceDeadline(ctx)
	defer cancel()
	// The uverbs entries are read beside the devices, so one that hangs
	// does not eat the devices' time.
	var (
		verbs     map[string]string
		errs      []error
		verbsDone = make(chan struct{})
	)
	go func() {
		defer close(verbsDone)
		verbs, errs = r.verbsDevices(ctx)
	}()
	reads := make([]source.Device[deviceReading], len(names))
	for k, name := range names {
		st := r.deviceState(name)
		reads[k] = source.Device[deviceReading]{Busy: st.busy,
			Read: func() deviceReading {
				d, errs := readDevice(fsys, name)
				r.remember(st, d)
				return deviceReading{d, errs}
			},
			Down: func(why string) deviceReading {
				d := r.lastReading(st, name)
				d.Errors = []string{why}
				return deviceReading{d, []error{fmt.Errorf("%s: %s", name, why)}}
			}}
	}
	r.forgetDevices(names)
	results := source.Each(ctx, reads)
	<-verbsDone
	devs := make([]Device, 0, len(names))
	for _, res := range results {
		d := res.dev
		// A stat of /dev/infiniband/uverbs<N> does not call a driver.
		if d.Verbs, d.VerbsDevicePresent = verbs[d.Name], false; d.Verbs != "" {
			d.VerbsDevicePresent = fsys.Exists(path.Join(devNodes, d.Verbs))
		}
		devs = append(devs, d)
		errs = append(errs, res.errs...)
	}
	slices.SortStableFunc(devs, func(a, b Device) int { return compareNames(a.Name, b.Name) })
	return devs, errors.Join(errs...)
}

// deviceReading is what one device's read gives Discover.
type deviceReading struct {
	dev  Device
	errs []error
}

// compareNames orders device names naturally, so mlx5_10 follows mlx5_9
// as it does in ibv_devices and people's heads.
func compareNames(a, b string) int {
	ap, an := splitNumber(a)
	bp, bn := splitNumber(b)
	if c := strings.Compare(ap, bp); c != 0 || an < 0 || bn < 0 {
		if c == 0 {
			return strings.Compare(a, b)
		}
		return c
	}
	return an - bn
}

// splitNumber splits a trailing decimal number off a name: "mlx5_10" ->
// ("mlx5_", 10); -1 when there is none (or it is implausibly long).
func splitNumber(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	if i == len(s) || len(s)-i > 6 {
		return s, -1
	}
	n := 0
	for _, c := range s[i:] {
		n = n*10 + int(c-'0')
	}
	return s[:i], n
}

// verbsDevices maps RDMA device names to their uverbs device ("uverbs0").
// The class is absent when ib_uverbs is not loaded: then no device has one.
// Each entry's ibdev is read under ctx as devices are (source.Each): one
// that hangs leaves its device without a verbs device, and is an error.
func (r *Reader) verbsDevices(ctx context.Context) (map[string]string, []error) {
	names, err := r.fs.Names(verbsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{fmt.Errorf("list %s: %w", verbsDir, cause(err))}
	}
	type entry struct {
		ibdev string
		errs  []error
	}
	var reads []source.Device[entry]
	var uverbs []string
	for _, n := range names {
		if !strings.HasPrefix(n, "uverbs") { // abi_version sits beside the devices
			continue
		}
		p := path.Join(verbsDir, n, "ibdev")
		uverbs = append(uverbs, n)
		reads = append(reads, source.Device[entry]{Busy: r.verbsBusy(n),
			Read: func() entry {
				rd := reader{fsys: r.fs}
				ibdev, _ := rd.read(p, nil)
				return entry{ibdev, rd.errs}
			},
			Down: func(why string) entry { return entry{errs: []error{fmt.Errorf("read %s: %s", p, why)}} }})
	}
	r.forgetBusy(r.verbs, uverbs)
	var errs []error
	verbs := map[string]string{}
	for k, e := range source.Each(ctx, reads) {
		if e.ibdev != "" && verbs[e.ibdev] == "" {
			verbs[e.ibdev] = uverbs[k]
		}
		errs = append(errs, e.errs...)
	}
	return verbs, errs
}

// readDevice reads one device. The errors it returns name the device (and
// port); the same problems are on Device.Errors and Port.Errors.
func readDevice(fsys hostfs.FS, name string) (Device, []error) {
	r := reader{fsys: fsys}
	d := r.device(name)
	d.Errors = messages(r.errs)
	var errs []error
	for _, err := range r.errs {
		errs = append(errs, fmt.Errorf("%s: %w", name, err))
	}
	for _, err := range r.portErrs {
		errs = append(errs, fmt.Errorf("%s %w", name, err))
	}
	return d, errs
}

// reader reads attributes and collects what went wrong, so that one bad
// file does not stop the rest of a device or port from being read.
type reader struct {
	fsys     hostfs.FS
	errs     []error
	portErrs []error // the device's port problems, named by port
}

func (r *reader) fail(err error) { r.errs = append(r.errs, err) }

// check records a parse error of the attribute at p and reports success.
func (r *reader) check(p string, err error) bool {
	if err != nil {
		r.fail(fmt.Errorf("parse %s: %w", p, err))
	}
	return err == nil
}

// read reads a one-line text attribute. Errors for which ignore holds are
// "nothing here" and not recorded; nil ignores nothing.
func (r *reader) read(p string, ignore func(error) bool) (string, bool) {
	s, err := r.fsys.ReadString(p)
	switch {
	case err != nil && ignore != nil && ignore(err):
		return "", false
	case err != nil:
		err = cause(err)
	case len(s) > maxAttrLen:
		err = fmt.Errorf("%d bytes, longer than a sysfs attribute", len(s))
	case !printable(s):
		err = errors.New("content holds control characters")
	}
	if err != nil {
		r.fail(fmt.Errorf("read %s: %w", p, err))
		return "", false
	}
	return s, true
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// optional reads an attribute that some drivers do not provide.
func (r *reader) optional(p string) string {
	s, _ := r.read(p, isNotExist)
	return s
}

// state reads a "<number>: <name>" attribute and returns the name; errors
// for which ignore holds leave it empty and are not recorded.
func (r *reader) state(p string, ignore func(error) bool) string {
	s, ok := r.read(p, ignore)
	if !ok {
		return ""
	}
	name, _, err := parseState(s)
	r.check(p, err)
	return name
}

// numa reads a numa_node attribute; -1 when the platform does not say or
// the device has none.
func (r *reader) numa(p string) int {
	s, ok := r.read(p, isNotExist)
	if !ok {
		return -1
	}
	n, err := parseInt(s, -1, maxNUMANode)
	if !r.check(p, err) {
		return -1
	}
	return n
}

// netdevNUMA is the NUMA node of a netdev's device. A virtio-net
// interface's device is the virtio device (virtio0), which has no
// numa_node: its parent, the PCI function, says.
func (r *reader) netdevNUMA(netdev string) int {
	dev := path.Join(netDir, netdev, "device")
	if r.fsys.Exists(dev + "/numa_node") {
		return r.numa(dev + "/numa_node")
	}
	p, err := r.fsys.Resolve(dev)
	if err != nil {
		return -1 // a virtual netdev (veth, bridge) has no device
	}
	return r.numa(path.Join(path.Dir(p), "numa_node"))
}

func (r *reader) device(name string) Device {
	dir := path.Join(classDir, name)
	d := Device{Name: name, NUMANode: -1}
	// A dangling class link (say, a device removed while we read) leaves
	// nothing else to read.
	if _, err := r.fsys.Resolve(dir); err != nil {
		r.fail(fmt.Errorf("resolve %s: %w", dir, cause(err)))
		return d
	}
	// Captures of real hosts lack some of these (driver and kernel
	// differences): a device without them is still a device.
	d.NodeType = r.state(dir+"/node_type", isNotExist)
	for _, g := range []struct {
		file string
		dst  *string
	}{{"node_guid", &d.NodeGUID}, {"sys_image_guid", &d.SysImageGUID}} {
		p := dir + "/" + g.file
		if s, ok := r.read(p, isNotExist); ok && r.check(p, parseGUID(s)) {
			*g.dst = s
		}
	}
	d.FirmwareVersion = r.optional(dir + "/fw_ver") // empty on rxe
	d.HCAType = r.optional(dir + "/hca_type")
	d.BoardID = r.optional(dir + "/board_id")

	// The parent device: a PCI function for hardware, none for virtual
	// devices (/sys/devices/virtual/infiniband/<name>).
	parent := ""
	if _, err := r.fsys.Readlink(dir + "/device"); err == nil {
		if parent, err = r.fsys.Resolve(dir + "/device"); err != nil {
			r.fail(fmt.Errorf("resolve %s/device: %w", dir, cause(err)))
		}
	} else if !isNotExist(err) {
		r.fail(fmt.Errorf("read link %s/device: %w", dir, cause(err)))
	}
	// Only soft-RoCE (rdma_rxe) has a `parent` attribute: the netdev it
	// runs on. It has no parent device to take a driver name from.
	rxeParent := ""
	if s, ok := r.read(dir+"/parent", isNotExist); ok {
		if validNetdevName(s) {
			rxeParent = s
		} else {
			r.fail(fmt.Errorf("parse %s/parent: %q is not a network interface name", dir, s))
		}
		if parent == "" {
			d.Driver = rxeDriver
		}
	}
	if parent != "" {
		if base := path.Base(parent); isBDF(base) {
			d.PCIAddress = base
		}
		if drv, err := r.fsys.LinkBase(parent + "/driver"); err == nil {
			d.Driver = drv
		} else if !isNotExist(err) {
			r.fail(fmt.Errorf("read link %s/driver: %w", parent, cause(err)))
		}
		d.NUMANode = r.numa(parent + "/numa_node")
		// Only an SR-IOV virtual function has a physfn link (to its
		// physical function).
		if _, err := r.fsys.Readlink(parent + "/physfn"); err == nil {
			d.VirtualFunction = true
		} else if !isNotExist(err) {
			r.fail(fmt.Errorf("read link %s/physfn: %w", parent, cause(err)))
		}
	}

	d.Ports = r.ports(dir, d.NodeType, parent, rxeParent)

	// A device without a parent sits on the NUMA node of its netdev's parent.
	if parent == "" {
		netdev := rxeParent
		for _, p := range d.Ports {
			if netdev == "" {
				netdev = p.Netdev
			}
		}
		if netdev != "" {
			d.NUMANode = r.netdevNUMA(netdev)
		}
	}

	return d
}

// ports reads every port of the device at dir. Problems with one port go
// on that port; a missing or unreadable ports directory is the device's.
func (r *reader) ports(dir, nodeType, parent, rxeParent string) []Port {
	names, err := r.fsys.Names(dir + "/ports")
	if err != nil {
		r.fail(fmt.Errorf("list %s/ports: %w", dir, cause(err)))
		return nil
	}
	var ports []Port
	for _, n := range names {
		num, err := parseInt(n, 0, maxIndex)
		if !r.check(dir+"/ports/"+n, err) {
			continue
		}
		pr := reader{fsys: r.fsys}
		p := pr.port(dir+"/ports/"+n, num, nodeType, parent, rxeParent)
		p.Errors = messages(pr.errs)
		for _, err := range pr.errs {
			r.portErrs = append(r.portErrs, fmt.Errorf("port %d: %w", num, err))
		}
		ports = append(ports, p)
	}
	slices.SortFunc(ports, func(a, b Port) int { return a.Number - b.Number })
	return ports
}

func (r *reader) port(dir string, num int, nodeType, parent, rxeParent string) Port {
	p := Port{Number: num}
	p.State = r.state(dir+"/state", nil)
	p.PhysState = r.state(dir+"/phys_state", nil)
	if ll, ok := r.read(dir+"/link_layer", nil); ok {
		t, err := transportOf(ll, nodeType)
		if r.check(dir+"/link_layer", err) {
			p.LinkLayer, p.Transport = ll, t
		}
	}
	if s, ok := r.read(dir+"/rate", nil); ok {
		v, err := parseRate(s)
		if r.check(dir+"/rate", err) {
			p.Rate, p.RateGbps = s, v
		}
	}
	// A LID that cannot be read is unknown (nil), not 0: 0 says "no
	// subnet manager". A missing file is no error: some drivers lack it.
	for _, l := range []struct {
		file string
		dst  **uint32
	}{{"lid", &p.LID}, {"sm_lid", &p.SMLID}} {
		if s, ok := r.read(dir+"/"+l.file, isNotExist); ok {
			v, err := parseLID(s)
			if r.check(dir+"/"+l.file, err) {
				*l.dst = &v
			}
		}
	}
	p.GIDs = r.gids(dir)
	p.Netdev = r.netdev(p, parent, rxeParent)
	if p.Netdev != "" {
		mtuPath := path.Join(netDir, p.Netdev, "mtu")
		if s, ok := r.read(mtuPath, nil); ok {
			if mtu, err := parseInt(s, 0, maxIndex); r.check(mtuPath, err) {
				p.NetdevMTU = mtu
			}
		}
	}
	// sysfs has no active MTU attribute. For RoCE the kernel derives it from
	// the netdev MTU, and so do we; InfiniBand (set by the subnet manager)
	// and iWARP stay 0, unknown, until a verbs query fills them in.
	if p.Transport == RoCE {
		p.ActiveMTU = activeMTU(p.NetdevMTU)
		p.RoCE = r.roce(path.Base(path.Dir(path.Dir(dir))), num, p)
	}
	return p
}

// gids reads the populated entries of a port's GID table. Tables hold 16 to
// 256 entries, mostly zeros: reading each small file is cheap, and the
// attributes of an entry are read only when it is populated.
func (r *reader) gids(dir string) []GID {
	names, err := r.fsys.Names(dir + "/gids")
	if err != nil {
		if !isNotExist(err) { // no GID table: no GIDs, as some drivers have
			r.fail(fmt.Errorf("list %s/gids: %w", dir, cause(err)))
		}
		return nil
	}
	var gids []GID
	for _, n := range names {
		p := dir + "/gids/" + n
		i, err := parseInt(n, 0, maxIndex)
		if !r.check(p, err) {
			continue
		}
		s, ok := r.read(p, nil)
		if !ok {
			continue
		}
		if zero, err := parseGID(s); !r.check(p, err) || zero {
			continue
		}
		g := GID{Index: i, GID: s}
		g.Type, _ = r.read(dir+"/gid_attrs/types/"+n, gidAttrUnset)
		if nd, ok := r.read(dir+"/gid_attrs/ndevs/"+n, gidAttrUnset); ok {
			if validNetdevName(nd) {
				g.Netdev = nd
			} else {
				r.fail(fmt.Errorf("parse %s/gid_attrs/ndevs/%s: %q is not a network interface name", dir, n, nd))
			}
		}
		gids = append(gids, g)
	}
	slices.SortFunc(gids, func(a, b GID) int { return a.Index - b.Index })
	return gids
}

// netdev finds the network interface of port p: the netdev its GIDs are
// bound to (RoCE), else the netdev rxe runs on, else the interfaces of the
// parent PCI function (IPoIB), matched by dev_port (0-based) when the
// function has several ports.
func (r *reader) netdev(p Port, parent, rxeParent string) string {
	for _, g := range p.GIDs {
		if g.Netdev != "" {
			return g.Netdev
		}
	}
	if rxeParent != "" || parent == "" {
		return rxeParent
	}
	names, err := r.fsys.Names(parent + "/net")
	if err != nil {
		if !isNotExist(err) {
			r.fail(fmt.Errorf("list %s/net: %w", parent, cause(err)))
		}
		return ""
	}
	if len(names) == 1 {
		return names[0]
	}
	for _, n := range names {
		dp := path.Join(parent, "net", n, "dev_port")
		if s, ok := r.read(dp, isNotExist); ok {
			if v, err := parseInt(s, 0, maxDevPort); r.check(dp, err) && v == p.Number-1 {
				return n
			}
		}
	}
	return ""
}

// cause drops the *fs.PathError wrapper of err: its path is the real one
// under the host root (or repeats ours), and the message says which host
// path was read.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func messages(errs []error) []string {
	var out []string
	for _, err := range errs {
		out = append(out, err.Error())
	}
	return out
}
