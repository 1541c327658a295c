package topology

import (
	"bufio"
	"errors"
	"io/fs"
	"net"
	"slices"
	"strconv"
	"strings"
)

// IMEX is what the node offers NVIDIA's IMEX service, which exports GPU
// memory across the nodes of a multi-node NVLink domain (GB200/GB300 NVL).
// Facts from NVIDIA's "IMEX Service for NVLink Networks" guide: the driver
// registers the character device nvidia-caps-imex-channels (listed in
// /proc/devices); the channels are /dev/nvidia-caps-imex-channels/channelN
// nodes an administrator (or the driver's NVreg_CreateImexChannel0, or a
// DRA driver) creates, N the minor number; without one, CUDA's fabric
// memory calls fail with an insufficient-permission error. The nvidia-imex
// daemon reads /etc/nvidia-imex/config.cfg and the domain's node addresses,
// one per line, from /etc/nvidia-imex/nodes_config.cfg.
type IMEX struct {
	// ChannelMajor is the major number /proc/devices gives
	// nvidia-caps-imex-channels: the driver supports IMEX channels. 0 when
	// not listed.
	ChannelMajor int `json:"channel_major,omitempty"`
	// Channels are the channel numbers with a device node, sorted.
	Channels []int `json:"channels,omitempty"`
	// Config: the daemon's config.cfg exists.
	Config bool `json:"config,omitempty"`
	// DomainNodes is the number of node addresses in nodes_config.cfg; 0
	// when the file is absent.
	DomainNodes int `json:"domain_nodes,omitempty"`
	// Daemon: a process named nvidia-imex runs (seen only where the
	// agent shares the host's PID namespace).
	Daemon bool `json:"daemon,omitempty"`
}

const (
	imexChannelDir   = "/dev/nvidia-caps-imex-channels"
	imexConfig       = "/etc/nvidia-imex/config.cfg"
	imexNodesConfig  = "/etc/nvidia-imex/nodes_config.cfg"
	imexDeviceName   = "nvidia-caps-imex-channels"
	imexDaemonComm   = "nvidia-imex"
	procDevicesPath  = "/proc/devices"
	imexChannelStart = "channel"
)

// imex reads the IMEX facts; Topology.IMEX stays nil on nodes with none.
func (d *discovery) imex(t *Topology) {
	var x IMEX
	if s, ok := d.optional(procDevicesPath); ok {
		x.ChannelMajor = charMajor(s, imexDeviceName)
	}
	names, err := d.fsys.Names(imexChannelDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		d.fail(pathErr("list", imexChannelDir, err))
	default:
		for _, n := range names {
			if v, err := strconv.Atoi(strings.TrimPrefix(n, imexChannelStart)); err == nil && strings.HasPrefix(n, imexChannelStart) {
				x.Channels = append(x.Channels, v)
			}
		}
		slices.Sort(x.Channels)
	}
	x.Config = d.fsys.Exists(imexConfig)
	if s, ok := d.optional(imexNodesConfig); ok {
		x.DomainNodes = countAddresses(s)
	}
	if x.ChannelMajor == 0 && len(x.Channels) == 0 && !x.Config && x.DomainNodes == 0 {
		return // not an IMEX node: no process scan either
	}
	x.Daemon = d.running(imexDaemonComm)
	t.IMEX = &x
}

// charMajor finds name's major number in /proc/devices' "Character
// devices:" section; 0 when absent.
func charMajor(procDevices, name string) int {
	inChar := false
	for line := range strings.Lines(procDevices) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasSuffix(line, "devices:"):
			inChar = line == "Character devices:"
			continue
		case !inChar:
			continue
		}
		major, dev, ok := strings.Cut(line, " ")
		if ok && strings.TrimSpace(dev) == name {
			if n, err := strconv.Atoi(major); err == nil {
				return n
			}
		}
	}
	return 0
}

// countAddresses counts the IP addresses in nodes_config.cfg, one per
// line; blank lines and # comments are skipped, other lines too (the
// daemon rejects them; we only count what it would use).
func countAddresses(s string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if net.ParseIP(strings.TrimSpace(sc.Text())) != nil {
			n++
		}
	}
	return n
}

// running reports whether a process with that command name is in /proc.
// Processes come and go while we read: unreadable entries are skipped.
func (d *discovery) running(comm string) bool {
	pids, err := d.fsys.Names("/proc")
	if err != nil {
		return false
	}
	for _, p := range pids {
		if _, err := strconv.Atoi(p); err != nil {
			continue
		}
		if s, err := d.fsys.ReadString("/proc/" + p + "/comm"); err == nil && s == comm {
			return true
		}
	}
	return false
}

// machine reads the DMI product name, which GPU Feature Discovery labels
// as nvidia.com/gpu.machine. Arm servers without SMBIOS tables have no
// /sys/class/dmi: that is normal.
func (d *discovery) machine(t *Topology) {
	if s, ok := d.optional("/sys/class/dmi/id/product_name"); ok {
		t.Machine = s
	}
}
