package sim

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// uptime is how long every simulated node has been up, in seconds.
const uptime = 86400

// kernelLog writes the node's kernel log as dev/kmsg: a plain file of
// records in the format /dev/kmsg hands out ("PRI,SEQ,USEC,FLAGS;TEXT" and
// " KEY=VALUE" continuation lines), which the agent's reader takes as it
// takes the character device. A good node's log holds only harmless lines
// (boot, driver and port messages); a degraded node's adds the faults it
// plants, logged an hour after boot, before any agent ran. The lines are
// shaped as the drivers print them (see kmsg's tests for captured ones).
func (b *builder) kernelLog() {
	b.t.attr("/proc/uptime", fmt.Sprintf("%d.00 %d.00", uptime, uptime*64))
	var log strings.Builder
	seq, usec := 0, int64(0)
	add := func(level int, step int64, text, device string) {
		usec += step
		fmt.Fprintf(&log, "%d,%d,%d,-;%s\n", level, seq, usec, text)
		if device != "" {
			fmt.Fprintf(&log, " SUBSYSTEM=pci\n DEVICE=+pci:%s\n", device)
		}
		seq++
	}
	add(5, 0, "Linux version "+kernelRelease+" (buildd@lcy02-amd64-048) #49-Ubuntu SMP PREEMPT_DYNAMIC", "")
	names := slices.Sorted(maps.Keys(b.hcas))
	for _, n := range names {
		h := b.hcas[n]
		add(6, 1200000, fmt.Sprintf("mlx5_core %s: firmware version: %s", h.dev.bdf, h.fw), h.dev.bdf)
	}
	for _, g := range b.gpuDevs {
		add(6, 150000, fmt.Sprintf("nvidia %s: enabling device (0000 -> 0002)", g.bdf), g.bdf)
	}
	for _, n := range names {
		h := b.hcas[n]
		add(6, 900000, fmt.Sprintf("mlx5_core %s %s: Port: 1 Link ACTIVE", h.dev.bdf, n), h.dev.bdf)
	}
	usec = 3600 * 1000000
	for _, i := range slices.Sorted(maps.Keys(b.faults.kernelXID)) {
		if i >= len(b.gpuDevs) {
			b.t.fail(fmt.Errorf("kernel log: no GPU %d", i))
			continue
		}
		// NVRM names the GPU without its function.
		bus := strings.TrimSuffix(b.gpuDevs[i].bdf, ".0")
		add(3, 1000, fmt.Sprintf("NVRM: Xid (PCI:%s): %d, pid=0, GPU has fallen off the bus.", bus, b.faults.kernelXID[i]), "")
	}
	for _, n := range b.faults.mlx5Health {
		h, ok := b.hcas[n]
		if !ok {
			b.t.fail(fmt.Errorf("kernel log: no HCA %s", n))
			continue
		}
		// One fault, a dump of several lines: only the first counts.
		p := fmt.Sprintf("mlx5_core %s: print_health_info:431:(pid 0): ", h.dev.bdf)
		add(3, 5000, p+"Health issue observed, firmware internal error, severity(3) ERROR:", h.dev.bdf)
		add(3, 10, p+"assert_var[0] 0x0521945b", h.dev.bdf)
		add(3, 10, p+"assert_var[1] 0x00000000", h.dev.bdf)
		add(3, 10, p+"ext_synd 0x035e", h.dev.bdf)
	}
	for _, n := range b.faults.aerFatal {
		h, ok := b.hcas[n]
		if !ok || h.dev.parent == nil {
			b.t.fail(fmt.Errorf("kernel log: no HCA %s", n))
			continue
		}
		// The root port's summary, then the device's own report (the one
		// that counts) and its detail lines.
		rp, dev := h.dev.parent.bdf, h.dev.bdf
		ids := strings.TrimPrefix(h.id.vendor, "0x") + ":" + strings.TrimPrefix(h.id.device, "0x")
		add(3, 5000, fmt.Sprintf("pcieport %s: AER: Uncorrected (Fatal) error received: %s", rp, dev), rp)
		add(3, 10, fmt.Sprintf("mlx5_core %s: PCIe Bus Error: severity=Uncorrected (Fatal), type=Transaction Layer, (Requester ID)", dev), dev)
		add(3, 10, fmt.Sprintf("mlx5_core %s:   device [%s] error status/mask=00040000/00000000", dev, ids), dev)
		add(3, 10, fmt.Sprintf("mlx5_core %s:    [18] MalfTLP                (First)", dev), dev)
	}
	b.t.file("/dev/kmsg", log.String())
}

// aerCounters writes every PCIe function's and bridge's AER statistics
// (aer_dev_correctable, aer_dev_nonfatal, aer_dev_fatal), all zero but
// the fatal errors the node's faults planted (the same the kernel log
// reports: one malformed TLP).
func (b *builder) aerCounters() {
	fatal := map[*pciDev]int{}
	for _, n := range b.faults.aerFatal {
		if h, ok := b.hcas[n]; ok {
			fatal[h.dev]++
		}
	}
	for _, d := range b.pci {
		if d.hostBridge {
			continue
		}
		b.t.file(d.dir+"/aer_dev_correctable", aerFile([]string{"RxErr", "BadTLP", "BadDLLP", "Rollover", "Timeout",
			"NonFatalErr", "CorrIntErr", "HeaderOF"}, "TOTAL_ERR_COR", "", 0))
		uncorrectable := []string{"Undefined", "DLP", "SDES", "TLP", "FCP", "CmpltTO", "CmpltAbrt", "UnxCmplt", "RxOF",
			"MalfTLP", "ECRC", "UnsupReq", "ACSViol", "UncorrIntErr", "BlockedTLP", "AtomicOpBlocked", "TLPBlockedErr", "PoisonTLPBlocked"}
		b.t.file(d.dir+"/aer_dev_nonfatal", aerFile(uncorrectable, "TOTAL_ERR_NONFATAL", "", 0))
		b.t.file(d.dir+"/aer_dev_fatal", aerFile(uncorrectable, "TOTAL_ERR_FATAL", "MalfTLP", fatal[d]))
	}
}

// aerFile is an aer_dev_* file: a line per error type, then the total;
// n errors of type which.
func aerFile(names []string, total, which string, n int) string {
	var s strings.Builder
	for _, name := range names {
		v := 0
		if name == which {
			v = n
		}
		fmt.Fprintf(&s, "%s %d\n", name, v)
	}
	fmt.Fprintf(&s, "%s %d\n", total, n)
	return s.String()
}
