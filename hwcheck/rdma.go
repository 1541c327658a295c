package hwcheck

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/rdma"
)

const secRDMA = "rdma"

// IBVDevice is one hca_id stanza of `ibv_devinfo` (-v adds fields; the
// harness reads those both forms print, plus width and speed).
type IBVDevice struct {
	Name         string
	FWVersion    string
	NodeGUID     string
	SysImageGUID string
	BoardID      string
	Ports        []IBVPort
}

// IBVPort is one "port:" block.
type IBVPort struct {
	Number int
	// State without its number: "PORT_ACTIVE".
	State     string
	PhysState string // -v only: "LINK_UP"
	ActiveMTU int    // bytes
	LinkLayer string
	Width     string // -v only: "4X"
	Speed     string // -v only: "25.0 Gbps"
	// GIDs are the -v "GID[  N]:" lines: the populated entries of the
	// port's GID table.
	GIDs []IBVGID
}

// IBVGID is one GID table entry as ibv_devinfo -v prints it: the address
// in IPv6 notation, then on RoCE ports ", RoCE v2" or ", RoCE v1" (the
// kernel's "IB/RoCE v1").
type IBVGID struct {
	Index int
	GID   net.IP
	Type  string
}

// ParseIBVDevinfo parses `ibv_devinfo` or `ibv_devinfo -v`.
func ParseIBVDevinfo(r io.Reader) ([]IBVDevice, error) {
	var devs []IBVDevice
	var port *IBVPort
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if k == "hca_id" {
			devs = append(devs, IBVDevice{Name: v})
			port = nil
			continue
		}
		if len(devs) == 0 {
			continue
		}
		d := &devs[len(devs)-1]
		if k == "port" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("ibv_devinfo %s: port %q: %w", d.Name, v, err)
			}
			d.Ports = append(d.Ports, IBVPort{Number: n})
			port = &d.Ports[len(d.Ports)-1]
			continue
		}
		if idx, ok := strings.CutPrefix(k, "GID["); ok && port != nil {
			g, err := parseIBVGID(strings.TrimSuffix(idx, "]"), v)
			if err != nil {
				return nil, fmt.Errorf("ibv_devinfo %s port %d: %w", d.Name, port.Number, err)
			}
			port.GIDs = append(port.GIDs, g)
			continue
		}
		word, _, _ := strings.Cut(v, " (")
		if port == nil {
			switch k {
			case "fw_ver":
				d.FWVersion = v
			case "node_guid":
				d.NodeGUID = v
			case "sys_image_guid":
				d.SysImageGUID = v
			case "board_id":
				d.BoardID = v
			}
			continue
		}
		switch k {
		case "state":
			port.State = word
		case "phys_state":
			port.PhysState = word
		case "active_mtu":
			port.ActiveMTU, _ = strconv.Atoi(word)
		case "link_layer":
			port.LinkLayer = v
		case "active_width":
			port.Width = word
		case "active_speed":
			port.Speed = word
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read ibv_devinfo: %w", err)
	}
	return devs, nil
}

// RDMALink is one line of `rdma link`.
type RDMALink struct {
	Device    string
	Port      int
	State     string // "ACTIVE"
	PhysState string // "LINK_UP"
	Netdev    string
}

// ParseRDMALink parses `rdma link` ("link rxe0/1 state ACTIVE
// physical_state LINK_UP netdev eth0").
func ParseRDMALink(r io.Reader) ([]RDMALink, error) {
	var out []RDMALink
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "link" {
			continue
		}
		dev, p, ok := strings.Cut(f[1], "/")
		n, err := strconv.Atoi(p)
		if !ok || err != nil {
			return nil, fmt.Errorf("rdma link: %q is not device/port", f[1])
		}
		l := RDMALink{Device: dev, Port: n}
		for i := 2; i+1 < len(f); i += 2 {
			switch f[i] {
			case "state":
				l.State = f[i+1]
			case "physical_state":
				l.PhysState = f[i+1]
			case "netdev":
				l.Netdev = f[i+1]
			}
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// physState maps sysfs's phys_state words ("LinkUp") to the tools' ("LINK_UP").
func physState(s string) string {
	switch s {
	case "LinkUp":
		return "LINK_UP"
	case "Polling":
		return "POLLING"
	case "Disabled":
		return "DISABLED"
	case "Sleep":
		return "SLEEP"
	case "PortConfigurationTraining":
		return "PORT_CONFIGURATION_TRAINING"
	case "LinkErrorRecovery":
		return "LINK_ERROR_RECOVERY"
	case "PhyTest":
		return "PHY_TEST"
	}
	return strings.ToUpper(s)
}

// rateGbps is width times lane speed ("4X", "25.0 Gbps" → 100).
func rateGbps(width, speed string) (float64, bool) {
	w, err := strconv.Atoi(strings.TrimSuffix(width, "X"))
	if err != nil {
		return 0, false
	}
	s, ok := number(speed)
	return float64(w) * s, ok
}

// CompareRDMA compares the agent's RDMA devices with ibv_devinfo (nil when
// it did not run) and rdma link (nil when it did not run).
func CompareRDMA(agent []rdma.Device, ibv []IBVDevice, links []RDMALink) []Row {
	var rows []Row
	byName := map[string]rdma.Device{}
	for _, d := range agent {
		byName[d.Name] = d
	}
	port := func(d rdma.Device, n int) (rdma.Port, bool) {
		for _, p := range d.Ports {
			if p.Number == n {
				return p, true
			}
		}
		return rdma.Port{}, false
	}
	if ibv != nil {
		rows = append(rows, exact(secRDMA, "", "devices (ibv_devinfo)", strconv.Itoa(len(agent)), strconv.Itoa(len(ibv))))
	}
	for _, v := range ibv {
		d, ok := byName[v.Name]
		if !ok {
			rows = append(rows, Row{Section: secRDMA, Device: v.Name, Fact: "device", Agent: "(missing)", Vendor: "ibv_devinfo lists it", Verdict: Differ})
			continue
		}
		fw := exact(secRDMA, v.Name, "firmware version", d.FirmwareVersion, v.FWVersion)
		if d.FirmwareVersion == "" && v.FWVersion == "0.0.0" {
			// A device without a fw_ver file in sysfs (soft-RoCE):
			// libibverbs prints the kernel's numeric version, 0, as 0.0.0.
			fw.Verdict, fw.Note = Agree, "no firmware version: ibv_devinfo prints the kernel's 0 as 0.0.0"
		}
		rows = append(rows, fw,
			exact(secRDMA, v.Name, "node GUID", d.NodeGUID, v.NodeGUID),
			exact(secRDMA, v.Name, "system image GUID", d.SysImageGUID, v.SysImageGUID))
		if v.BoardID != "" {
			rows = append(rows, exact(secRDMA, v.Name, "board id", d.BoardID, v.BoardID))
		}
		for _, vp := range v.Ports {
			dev := fmt.Sprintf("%s/%d", v.Name, vp.Number)
			p, ok := port(d, vp.Number)
			if !ok {
				rows = append(rows, Row{Section: secRDMA, Device: dev, Fact: "port", Agent: "(missing)", Vendor: vp.State, Verdict: Differ})
				continue
			}
			rows = append(rows,
				exact(secRDMA, dev, "state", "PORT_"+p.State, vp.State),
				exact(secRDMA, dev, "link layer", p.LinkLayer, vp.LinkLayer))
			if vp.PhysState != "" {
				rows = append(rows, exact(secRDMA, dev, "physical state", physState(p.PhysState), vp.PhysState))
			}
			if vp.GIDs != nil {
				rows = append(rows, gidRows(dev, p.GIDs, vp.GIDs)...)
			}
			if p.ActiveMTU != 0 {
				rows = append(rows, exact(secRDMA, dev, "active MTU", strconv.Itoa(p.ActiveMTU), strconv.Itoa(vp.ActiveMTU)))
			} else {
				rows = append(rows, absentRow(secRDMA, dev, "active MTU", "0 (unknown from sysfs)", "ibv_devinfo: "+strconv.Itoa(vp.ActiveMTU)))
			}
			if g, ok := rateGbps(vp.Width, vp.Speed); ok {
				r := exact(secRDMA, dev, "rate (Gb/s)", strconv.FormatFloat(p.RateGbps, 'f', -1, 64), strconv.FormatFloat(g, 'f', -1, 64))
				r.Tolerance = "1%"
				r.Note = "width x lane speed (" + vp.Width + " x " + vp.Speed + ") against sysfs rate " + p.Rate
				if math.Abs(p.RateGbps-g) <= 0.01*g {
					r.Verdict = Agree
				}
				rows = append(rows, r)
			}
		}
	}
	for _, d := range agent {
		found := ibv == nil
		for _, v := range ibv {
			found = found || v.Name == d.Name
		}
		if !found {
			rows = append(rows, Row{Section: secRDMA, Device: d.Name, Fact: "device", Agent: "found", Vendor: "(missing from ibv_devinfo)", Verdict: Differ})
		}
	}
	for _, l := range links {
		dev := fmt.Sprintf("%s/%d", l.Device, l.Port)
		d, ok := byName[l.Device]
		p, pok := port(d, l.Port)
		if !ok || !pok {
			rows = append(rows, Row{Section: secRDMA, Device: dev, Fact: "port (rdma link)", Agent: "(missing)", Vendor: l.State, Verdict: Differ})
			continue
		}
		rows = append(rows,
			exact(secRDMA, dev, "state (rdma link)", p.State, l.State),
			exact(secRDMA, dev, "physical state (rdma link)", physState(p.PhysState), l.PhysState),
			exact(secRDMA, dev, "netdev (rdma link)", p.Netdev, l.Netdev))
	}
	return rows
}

// parseIBVGID reads the index and the value of a "GID[ N]:" line.
func parseIBVGID(index, value string) (IBVGID, error) {
	n, err := strconv.Atoi(strings.TrimSpace(index))
	if err != nil {
		return IBVGID{}, fmt.Errorf("GID index %q: %w", index, err)
	}
	addr, typ, _ := strings.Cut(value, ",")
	ip := net.ParseIP(strings.TrimSpace(addr))
	if ip == nil {
		return IBVGID{}, fmt.Errorf("GID[%d] %q is not an address", n, addr)
	}
	return IBVGID{Index: n, GID: ip, Type: strings.TrimSpace(typ)}, nil
}

// gidRows compares a port's GID table with ibv_devinfo's: the number of
// populated entries, then each of ibv_devinfo's by index, address and (on
// RoCE) type. The agent reads GIDs in the kernel's full notation and
// v1 GIDs as "IB/RoCE v1", which ibv_devinfo prints as "RoCE v1".
func gidRows(dev string, agent []rdma.GID, vendor []IBVGID) []Row {
	rows := []Row{exact(secRDMA, dev, "GIDs", strconv.Itoa(len(agent)), strconv.Itoa(len(vendor)))}
	for _, v := range vendor {
		fact := fmt.Sprintf("GID[%d]", v.Index)
		want := v.GID.String()
		if v.Type != "" {
			want += " " + v.Type
		}
		i := slices.IndexFunc(agent, func(g rdma.GID) bool { return g.Index == v.Index })
		if i < 0 {
			rows = append(rows, Row{Section: secRDMA, Device: dev, Fact: fact, Agent: "(missing)", Vendor: want, Verdict: Differ})
			continue
		}
		a := agent[i]
		got := a.GID
		if ip := net.ParseIP(a.GID); ip != nil {
			got = ip.String()
		}
		if v.Type != "" {
			got += " " + strings.TrimPrefix(a.Type, "IB/")
		}
		rows = append(rows, exact(secRDMA, dev, fact, got, want))
	}
	return rows
}
