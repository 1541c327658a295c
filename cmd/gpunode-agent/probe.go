package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/discovery"
	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/rdma/verbs"
	"github.com/gpunode/gpunode/verify"
)

// defaultProbePort is where `probe serve` listens and peers are reached.
const defaultProbePort = "9836"

// defaultTokenFile is where the chart mounts the probe token Secret.
const defaultTokenFile = "/etc/gpunode/probe/token"

// probeFlags are the flags of `probe`.
type probeFlags struct {
	listen     string
	tokenFile  string
	device     string
	peer       string
	size       int
	iterations int
	depth      int
	duration   time.Duration
	timeout    time.Duration
	tcp        bool
	output     string
	kind       string
	bwKind     string
	latKind    string
	qps        int
	bidir      bool
	sweep      bool
	rail       string
	railMatch  string
	sl, tclass int
	memory     string
	gpu        string

	serve, loopback, bw, lat *kingpin.CmdClause
}

func addProbe(app *kingpin.Application) *probeFlags {
	f := &probeFlags{}
	cmd := app.Command("probe", "RDMA probes: RDMA WRITE bandwidth and SEND/RECV latency between two queue pairs of this node (loopback) or with another node's agent (probe serve), measured as perftest's ib_write_bw and ib_send_lat, with an optional TCP baseline; --kind adds RDMA READ bandwidth and RDMA WRITE latency (ib_read_bw, ib_write_lat). Bandwidth is printed in MB/s (10^6 bytes/s) and MiB/s (2^20 bytes/s, what perftest prints as MB/sec); JSON output has bytes_per_second. Loopback checks the HCA and its driver (its traffic turns around inside the adapter), peer probes the links and fabric; only peer probes report a fraction of the line rate, the data rate of the slower port. Where RDMA is unavailable, serve answers the TCP baseline only, bw and lat with --tcp run only the TCP baseline, and every RDMA probe exits 1 with the reason.")
	cmd.Flag("device", "RDMA device to use (default: the port whose RoCE address the connection uses, else the first ACTIVE port).").PlaceHolder("NAME").StringVar(&f.device)
	cmd.Flag("token-file", "File holding the shared probe token (at least 16 bytes; the chart mounts a Secret there).").Default(defaultTokenFile).PlaceHolder("FILE").StringVar(&f.tokenFile)
	intVar(cmd.Flag("size", "Message size in bytes (default 65536 for bandwidth, 2 for latency, as perftest).").PlaceHolder("BYTES"), &f.size)
	intVar(cmd.Flag("iterations", "Messages (bandwidth) or round trips (latency) (default 5000 and 1000, as perftest).").PlaceHolder("N"), &f.iterations)
	intVar(cmd.Flag("depth", "Send queue depth: writes or reads in flight per queue pair (default 128).").PlaceHolder("N"), &f.depth)
	intVar(cmd.Flag("qps", "Queue pairs per bandwidth probe, driven by one loop, each moving --iterations messages; the figure is their sum (perftest -q; default 1).").PlaceHolder("N"), &f.qps)
	cmd.Flag("bidir", "Bandwidth probes run both ways at once; the figure is the sum of both directions (perftest -b).").BoolVar(&f.bidir)
	cmd.Flag("sweep", "Run every message size from 2 bytes to 8 MiB in powers of two, one result each (perftest -a); excludes --size.").BoolVar(&f.sweep)
	durationVar(cmd.Flag("duration", "Run bandwidth probes for this long instead of --iterations.").PlaceHolder("DURATION"), &f.duration)
	durationVar(cmd.Flag("timeout", "Bound on each measurement.").Default("1m"), &f.timeout)
	intVar(cmd.Flag("sl", "Service level (0-15) of the RDMA probes' queue pairs (both ends): where lossless traffic is mapped by SL (InfiniBand, some RoCE setups), SL 0 is not always its class.").PlaceHolder("N"), &f.sl)
	intVar(cmd.Flag("traffic-class", "Traffic class (0-255) of the RDMA probes' queue pairs (both ends): on RoCE v2 the IP header's DSCP (upper 6 bits) and ECN bits, e.g. 106 for DSCP 26, where lossless RoCE traffic is often put.").PlaceHolder("N"), &f.tclass)
	cmd.Flag("tcp", "Also measure the TCP baseline over the same path (bandwidth, latency, CPU seconds per GB).").BoolVar(&f.tcp)
	cmd.Flag("output", "Output format: text or json.").Short('o').Default("text").EnumVar(&f.output, "text", "json")
	cmd.Flag("rail", "Probe per rail: all, or one rail's number K. Rail K is this node's K-th RDMA port (devices in natural order, then ports; a port that is down keeps its number; no SR-IOV VFs), probed against the peer's port on the same rail (--rail-match). Default: one port, the one whose address the connection uses.").PlaceHolder("all|K").StringVar(&f.rail)
	cmd.Flag("rail-match", "How a peer pairs its port with this node's rail: index (its K-th port) or subnet (its port on the same RoCE /24 or /64 subnet, or InfiniBand subnet prefix).").Default(probe.RailMatchIndex).EnumVar(&f.railMatch, probe.RailMatchIndex, probe.RailMatchSubnet)
	cmd.Flag("memory", "Where the RDMA probes' buffers live: host, or gpu (GPUDirect RDMA: GPU memory exported as a dma-buf and registered with ibv_reg_dmabuf_mr, else registered by address through nvidia_peermem; the result says which). Each GPU is probed from its nearest NIC, at most probe.gpuMemoryBytes per end; a peer answers from the GPU nearest its port (protocol version 4). serve answers GPU memory probes whenever asked.").Default(verbs.MemoryHost).EnumVar(&f.memory, verbs.MemoryHost, verbs.MemoryGPU)
	cmd.Flag("gpu", "With --memory gpu, the GPU: its index, or a PCI bus id (one the inventory does not know runs on --device or the first ACTIVE port). Default: every GPU. For serve, the GPU that answers on every port instead of the one nearest it.").PlaceHolder("N|BUS-ID").StringVar(&f.gpu)
	f.serve = cmd.Command("serve", "Answer other agents' probes until SIGTERM, one at a time, after checking their token.")
	f.serve.Flag("listen", "Address to listen on.").Default(":" + defaultProbePort).StringVar(&f.listen)
	f.loopback = cmd.Command("loopback", "Probe every ACTIVE port against itself: bandwidth and latency.")
	f.loopback.Flag("kind", "What to measure: all (write_bw and send_lat), bw (write_bw), lat (send_lat), or one of write_bw, read_bw, send_lat, write_lat.").Default("all").EnumVar(&f.kind,
		"all", "bw", "lat", probe.KindWriteBW, probe.KindReadBW, probe.KindSendLat, probe.KindWriteLat)
	f.bw = cmd.Command("bw", "Bandwidth to another node's agent (probe serve).")
	f.bw.Flag("peer", "The peer: HOST or HOST:PORT (port "+defaultProbePort+" when none is given).").Required().PlaceHolder("HOST[:PORT]").StringVar(&f.peer)
	f.bw.Flag("kind", "RDMA WRITE (write_bw, as ib_write_bw) or READ (read_bw, as ib_read_bw).").Default(probe.KindWriteBW).EnumVar(&f.bwKind, probe.KindWriteBW, probe.KindReadBW)
	f.lat = cmd.Command("lat", "Latency to another node's agent (probe serve).")
	f.lat.Flag("peer", "The peer: HOST or HOST:PORT (port "+defaultProbePort+" when none is given).").Required().PlaceHolder("HOST[:PORT]").StringVar(&f.peer)
	f.lat.Flag("kind", "SEND/RECV (send_lat, as ib_send_lat) or RDMA WRITE polled on the last byte (write_lat, as ib_write_lat).").Default(probe.KindSendLat).EnumVar(&f.latKind, probe.KindSendLat, probe.KindWriteLat)
	return f
}

// is reports whether cmd is one of the probe subcommands.
func (f *probeFlags) is(cmd string) bool { return strings.HasPrefix(cmd, "probe ") }

// request builds a request of kind from the flags over perftest's defaults.
func (f *probeFlags) request(kind string) probe.Request {
	r := probe.DefaultRequest(kind)
	if f.size > 0 {
		r.Size = f.size
	}
	if f.iterations > 0 {
		r.Iterations = f.iterations
	}
	if f.depth > 0 && probe.IsBandwidth(kind) {
		r.Depth = f.depth
	}
	if probe.IsBandwidth(kind) {
		r.Duration = f.duration
	}
	r.Timeout = f.timeout
	if probe.IsRDMA(kind) {
		r.ServiceLevel, r.TrafficClass = f.sl, f.tclass
	}
	if probe.IsRDMA(kind) && probe.IsBandwidth(kind) {
		r.QPs, r.Bidirectional = f.qps, f.bidir
	}
	if r.Duration > 0 {
		r.Timeout = max(r.Timeout, r.Duration+10*time.Second)
		if f.iterations == 0 {
			r.Iterations = 100_000_000
		}
	}
	return r
}

// Sweep sizes, as perftest -a: 2 bytes to 8 MiB.
const (
	sweepMin = 2
	sweepMax = 8 << 20
)

// requests are the probes a command runs: each kind, at each size of the
// sweep or at --size (or the kind's default).
func (f *probeFlags) requests(kinds []string) ([]probe.Request, error) {
	if f.sweep && f.size > 0 {
		return nil, errors.New("--sweep and --size exclude each other: the sweep runs every size")
	}
	if f.qps < 0 {
		return nil, fmt.Errorf("--qps %d: want 1 or more", f.qps)
	}
	var out []probe.Request
	for _, k := range kinds {
		r := f.request(k)
		if !f.sweep {
			out = append(out, r)
			continue
		}
		for size := sweepMin; size <= sweepMax; size *= 2 {
			r.Size = size
			out = append(out, r)
		}
	}
	for _, r := range out {
		if err := r.Validate(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// probeReport is the -o json output.
type probeReport struct {
	Results []probe.Result `json:"results"`
	Errors  []string       `json:"errors,omitempty"`
}

func runProbe(f *probeFlags, cmd string, env *discovery.Env, cfg config.Config, logger *slog.Logger, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	devices := rdma.NewReader(env.FS).Discover // one reader: a hung HCA is not read again on top of itself
	rdmaErr := probe.Available()
	lim := probe.NewLimiter()
	if cmd == f.serve.FullCommand() {
		// The TCP kinds need no RDMA: serve them, and answer the RDMA
		// kinds that this node has none.
		return probeServe(ctx, f, devices, lim, rdmaErr, env, cfg, logger, stderr)
	}
	kinds, ok := f.kinds(cmd)
	if !ok {
		fmt.Fprintf(stderr, "gpunode-agent: unknown command %q\n", cmd)
		return exitUsage
	}
	// Without RDMA only a peer probe with --tcp has something to run.
	if rdmaErr != nil && (cmd == f.loopback.FullCommand() || !f.tcp) {
		fmt.Fprintf(stderr, "gpunode-agent: RDMA probes are unavailable on this node: %v\n", rdmaErr)
		return exitFailure
	}
	reqs, err := f.requests(kinds)
	if err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: probe: %v\n", err)
		return exitUsage
	}
	if f.memory == verbs.MemoryGPU {
		switch {
		case f.rail != "":
			fmt.Fprintln(stderr, "gpunode-agent: probe: --memory gpu and --rail exclude each other: each GPU is probed on its nearest NIC")
			return exitUsage
		case f.tcp:
			fmt.Fprintln(stderr, "gpunode-agent: probe: --memory gpu and --tcp exclude each other: TCP runs on host memory")
			return exitUsage
		case f.sweep || f.qps > 1 || f.bidir:
			fmt.Fprintln(stderr, "gpunode-agent: probe: --memory gpu runs one queue pair one way at one size: leave --sweep, --qps and --bidir off")
			return exitUsage
		case cfg.Probe.GPUMemoryBytes == 0:
			fmt.Fprintln(stderr, "gpunode-agent: probe: --memory gpu: probe.gpuMemoryBytes is 0, which never touches GPU memory")
			return exitUsage
		}
	} else if f.gpu != "" && cmd != f.serve.FullCommand() {
		fmt.Fprintln(stderr, "gpunode-agent: probe: --gpu needs --memory gpu")
		return exitUsage
	}
	rails, code, railErr := f.rails(ctx, devices)
	if railErr != nil {
		fmt.Fprintf(stderr, "gpunode-agent: probe: %v\n", railErr)
		return code
	}
	var rep probeReport
	if cmd == f.loopback.FullCommand() {
		devs, err := devices(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "gpunode-agent: probe: discover RDMA devices: %v\n", err)
			return exitFailure
		}
		ports := probe.Ports(devs)
		if f.device != "" {
			ports = filterPorts(ports, f.device)
		}
		if rails != nil {
			ports = nil
			for _, r := range rails {
				if !r.Usable {
					rep.add(probe.Result{}, fmt.Errorf("port is %s or has no usable address", r.State), r.Name()+" loopback")
					continue
				}
				ports = append(ports, r.Port)
			}
		}
		if len(ports) == 0 && len(rep.Errors) == 0 {
			fmt.Fprintf(stderr, "gpunode-agent: probe: %v\n", probe.ErrNoPort)
			return exitFailure
		}
		if f.memory == verbs.MemoryGPU {
			gps, err := f.gpuPorts(ctx, env, cfg, ports)
			if err != nil {
				fmt.Fprintf(stderr, "gpunode-agent: probe: %v\n", err)
				return exitUsage
			}
			for _, gp := range gps {
				if gp.err != "" {
					rep.add(probe.Result{}, errors.New(gp.err), gpuName(gp.gpu)+" loopback")
					continue
				}
				for _, k := range kinds {
					req := f.request(k)
					req.Memory, req.GPU = verbs.MemoryGPU, &gp.gpu
					res, err := probe.Loopback(ctx, lim, gp.port, req)
					rep.add(res, err, fmt.Sprintf("%s %s loopback %s", gp.port.Name(), gpuName(gp.gpu), k))
				}
			}
			return rep.write(f.output, stdout, stderr)
		}
		for _, p := range ports {
			for _, req := range reqs {
				res, err := probe.Loopback(ctx, lim, p, req)
				rep.add(res, err, fmt.Sprintf("%s loopback %s", p.Name(), f.what(req)))
			}
		}
	} else {
		token, err := probe.ReadToken(f.tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "gpunode-agent: probe: %v\n", err)
			return exitUsage
		}
		c := &probe.Client{Token: token, Devices: devices, Device: f.device, Limiter: lim}
		addr := peerAddress(f.peer)
		if f.memory == verbs.MemoryGPU {
			return f.peerGPU(ctx, env, cfg, c, addr, kinds, devices, stdout, stderr)
		}
		for _, req := range reqs {
			what := fmt.Sprintf("%s %s", addr, f.what(req))
			if rdmaErr != nil && probe.IsRDMA(req.Kind) {
				rep.add(probe.Result{}, fmt.Errorf("RDMA probes are unavailable on this node: %w", rdmaErr), what)
				continue
			}
			if rails == nil || !probe.IsRDMA(req.Kind) {
				res, err := c.Run(ctx, addr, req)
				rep.add(res, err, what)
				continue
			}
			for _, r := range rails {
				res, err := c.RunRail(ctx, addr, r, probe.RailRule{Match: f.railMatch}, req)
				rep.add(res, err, what)
			}
		}
	}
	return rep.write(f.output, stdout, stderr)
}

// what names a request in an error: its kind, and its size in a sweep.
func (f *probeFlags) what(r probe.Request) string {
	if f.sweep {
		return r.Kind + " " + sizeText(r.Size)
	}
	return r.Kind
}

// gpuPort is a GPU and the port its loopback probes use (err, when set,
// says why it has none).
type gpuPort struct {
	gpu  probe.GPUTarget
	port probe.Port
	err  string
}

// gpuName is "gpuN", or the bus id of a GPU the inventory does not know.
func gpuName(g probe.GPUTarget) string {
	if g.Index < 0 {
		return "GPU " + g.PCIBusID
	}
	return fmt.Sprintf("gpu%d", g.Index)
}

// gpuPorts pairs the GPUs --gpu picks (every GPU by default) with the
// first usable port of their nearest RDMA device, from the inventory's
// GPU-NIC affinity; --device overrides the device.
func (f *probeFlags) gpuPorts(ctx context.Context, env *discovery.Env, cfg config.Config, ports []probe.Port) ([]gpuPort, error) {
	snap := discovery.New(env, cfg.Discovery.SourceTimeout).Discover(ctx)
	pairs := verify.GPUPairs(snap)
	if f.gpu != "" {
		var picked []probe.GPUPair
		n, err := strconv.Atoi(f.gpu)
		bus := gpu.NormalizePCIBusID(f.gpu)
		for _, p := range pairs {
			if err == nil && p.GPU.Index == n || err != nil && p.GPU.PCIBusID == bus {
				picked = append(picked, p)
			}
		}
		switch {
		case len(picked) == 0 && err == nil:
			return nil, fmt.Errorf("--gpu %d: the inventory has %d GPUs", n, len(pairs))
		case len(picked) == 0 && !strings.Contains(f.gpu, ":"):
			return nil, fmt.Errorf("--gpu %q: want a GPU index or a PCI bus id", f.gpu)
		case len(picked) == 0:
			// A GPU the inventory does not know (no NVML, a container
			// that sees only this one): the driver finds it by bus id.
			picked = []probe.GPUPair{{GPU: probe.GPUTarget{Index: -1, PCIBusID: bus, Library: verbs.CUDALibrary}}}
		}
		pairs = picked
	}
	if len(pairs) == 0 {
		return nil, errors.New("--memory gpu: the inventory has no GPUs (name one by PCI bus id with --gpu)")
	}
	out := make([]gpuPort, 0, len(pairs))
	for _, p := range pairs {
		gp := gpuPort{gpu: p.GPU}
		gp.gpu.MaxBytes = cfg.Probe.GPUMemoryBytes
		dev := cmp.Or(f.device, p.Device)
		i := slices.IndexFunc(ports, func(pt probe.Port) bool { return pt.Device == dev })
		switch {
		case dev == "" && p.GPU.Index < 0:
			gp.port = ports[0]
		case dev == "":
			gp.err = p.NoDevice
		case i < 0:
			gp.err = fmt.Sprintf("%s has no ACTIVE port with a usable address", dev)
		default:
			gp.port = ports[i]
		}
		out = append(out, gp)
	}
	return out, nil
}

// peerGPU runs the peer probes over GPU memory: each GPU --gpu picks
// (every GPU by default) from its nearest NIC, the peer answering from
// the GPU nearest its port.
func (f *probeFlags) peerGPU(ctx context.Context, env *discovery.Env, cfg config.Config, c *probe.Client, addr string, kinds []string, devices probe.Devices, stdout, stderr io.Writer) int {
	devs, err := devices(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: probe: discover RDMA devices: %v\n", err)
		return exitFailure
	}
	ports := probe.Ports(devs)
	if len(ports) == 0 {
		fmt.Fprintf(stderr, "gpunode-agent: probe: %v\n", probe.ErrNoPort)
		return exitFailure
	}
	gps, err := f.gpuPorts(ctx, env, cfg, ports)
	if err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: probe: %v\n", err)
		return exitUsage
	}
	var rep probeReport
	for _, gp := range gps {
		if gp.err != "" {
			rep.add(probe.Result{}, errors.New(gp.err), gpuName(gp.gpu)+" "+addr)
			continue
		}
		gc := *c
		gc.Device = gp.port.Device
		for _, k := range kinds {
			req := f.request(k)
			req.Memory, req.GPU = verbs.MemoryGPU, &gp.gpu
			res, err := gc.Run(ctx, addr, req)
			rep.add(res, err, fmt.Sprintf("%s %s %s", gpuName(gp.gpu), addr, k))
		}
	}
	return rep.write(f.output, stdout, stderr)
}

// serveGPU is how `probe serve` picks the GPU that answers a GPU memory
// probe: --gpu for every port, else the GPU nearest the port, from an
// inventory taken at the first such probe.
func (f *probeFlags) serveGPU(ctx context.Context, env *discovery.Env, cfg config.Config) func(probe.Port) (*probe.GPUTarget, error) {
	pairs := sync.OnceValue(func() []probe.GPUPair {
		return verify.GPUPairs(discovery.New(env, cfg.Discovery.SourceTimeout).Discover(ctx))
	})
	return func(port probe.Port) (*probe.GPUTarget, error) {
		if f.gpu == "" {
			return probe.GPUForPort(pairs(), port, cfg.Probe.GPUMemoryBytes)
		}
		gps, err := f.gpuPorts(ctx, env, cfg, []probe.Port{port})
		if err != nil {
			return nil, err
		}
		if cfg.Probe.GPUMemoryBytes == 0 {
			return nil, errors.New("this agent touches no GPU memory (probe.gpuMemoryBytes is 0)")
		}
		return &gps[0].gpu, nil
	}
}

func isRDMAKind(k string) bool { return k == probe.KindWriteBW || k == probe.KindSendLat }

// rails are the rails --rail picks (nil without --rail): all of this
// node's, or rail K; on error, the exit code too.
func (f *probeFlags) rails(ctx context.Context, devices probe.Devices) ([]probe.Rail, int, error) {
	if f.rail == "" {
		return nil, 0, nil
	}
	if f.device != "" {
		return nil, exitUsage, errors.New("--rail and --device exclude each other: a rail names its port")
	}
	k := -1
	if f.rail != "all" {
		n, err := strconv.Atoi(f.rail)
		if err != nil || n < 0 {
			return nil, exitUsage, fmt.Errorf("--rail %q: want all or a rail number (0, 1, ...)", f.rail)
		}
		k = n
	}
	devs, err := devices(ctx)
	if err != nil {
		return nil, exitFailure, fmt.Errorf("discover RDMA devices: %w", err)
	}
	all := probe.Rails(devs, probe.RailRule{Match: f.railMatch})
	switch {
	case k < 0 && len(all) == 0:
		return nil, exitFailure, fmt.Errorf("--rail all: %w", probe.ErrNoPort)
	case k < 0:
		return all, 0, nil
	case k >= len(all):
		return nil, exitFailure, fmt.Errorf("--rail %d: this node has %d rails", k, len(all))
	}
	return all[k : k+1], 0, nil
}

// kinds are the probe kinds a command runs, with the TCP baselines when
// --tcp is given; false for a command that runs no probes.
func (f *probeFlags) kinds(cmd string) ([]string, bool) {
	var kinds []string
	switch cmd {
	case f.loopback.FullCommand():
		switch f.kind {
		case "all":
			kinds = []string{probe.KindWriteBW, probe.KindSendLat}
		case "bw":
			kinds = []string{probe.KindWriteBW}
		case "lat":
			kinds = []string{probe.KindSendLat}
		default:
			kinds = []string{f.kind}
		}
	case f.bw.FullCommand():
		kinds = []string{f.bwKind}
	case f.lat.FullCommand():
		kinds = []string{f.latKind}
	default:
		return nil, false
	}
	if f.tcp {
		for _, k := range kinds {
			if probe.IsBandwidth(k) {
				kinds = append(kinds, probe.KindTCPBW)
			} else {
				kinds = append(kinds, probe.KindTCPLat)
			}
		}
	}
	return kinds, true
}

// write prints the results (text or JSON) and the errors, and returns the
// exit code: 1 when any probe failed.
func (rep *probeReport) write(output string, stdout, stderr io.Writer) int {
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "gpunode-agent: %v\n", err)
			return exitFailure
		}
	} else {
		for _, r := range rep.Results {
			fmt.Fprintln(stdout, formatResult(r))
		}
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(stderr, "gpunode-agent: probe: %s\n", e)
	}
	if len(rep.Errors) > 0 {
		return exitFailure
	}
	return 0
}

func (r *probeReport) add(res probe.Result, err error, what string) {
	if err != nil {
		r.Errors = append(r.Errors, what+": "+err.Error())
		return
	}
	r.Results = append(r.Results, res)
}

func filterPorts(ports []probe.Port, device string) []probe.Port {
	var out []probe.Port
	for _, p := range ports {
		if p.Device == device {
			out = append(out, p)
		}
	}
	return out
}

// peerAddress adds the default port to a bare host.
func peerAddress(peer string) string {
	if _, _, err := net.SplitHostPort(peer); err == nil {
		return peer
	}
	return net.JoinHostPort(strings.Trim(peer, "[]"), defaultProbePort)
}

// probeServe serves until ctx ends. Without RDMA (rdmaErr says why) it
// still serves the TCP kinds; the RDMA kinds are refused "unavailable".
func probeServe(ctx context.Context, f *probeFlags, devices probe.Devices, lim *probe.Limiter, rdmaErr error, env *discovery.Env, cfg config.Config, logger *slog.Logger, stderr io.Writer) int {
	token, err := probe.ReadToken(f.tokenFile)
	if err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: probe serve: %v\n", err)
		return exitUsage
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: probe serve: %v\n", err)
		return exitFailure
	}
	if rdmaErr != nil {
		logger.Warn("RDMA is unavailable on this node: serving the TCP baseline only, RDMA probes are refused", "err", rdmaErr)
	}
	logger.Info("serving RDMA probes", "address", ln.Addr().String(), "rdma", rdmaErr == nil)
	s := &probe.Server{Token: token, Devices: devices, Device: f.device, Limiter: lim, Logger: logger,
		GPU: f.serveGPU(ctx, env, cfg)}
	if err := s.Serve(ctx, ln); err != nil {
		fmt.Fprintf(stderr, "gpunode-agent: %v\n", err)
		return exitFailure
	}
	return 0
}

// formatResult is one human line per result.
func formatResult(r probe.Result) string {
	where := r.Local.Name()
	if r.Local.Device == "" {
		where = "-"
	}
	peer := r.Peer
	if r.Rail != nil {
		where = fmt.Sprintf("rail %d %s", *r.Rail, where)
		if r.PeerPort != nil {
			peer += " " + r.PeerPort.Name()
		}
	}
	if r.GPU != nil {
		where += fmt.Sprintf(" %s (%s)", gpuName(probe.GPUTarget{Index: r.GPU.Index, PCIBusID: r.GPU.PCIBusID}), r.GPU.Path)
	}
	head := fmt.Sprintf("%-10s %-22s %-9s %s x %d", where, peer, r.Kind, sizeText(r.Size), r.Iterations)
	if r.Latency != nil {
		l := r.Latency
		return fmt.Sprintf("%s: latency min %s p50 %s p99 %s p99.9 %s max %s", head,
			us(l.Min), us(l.P50), us(l.P99), us(l.P999), us(l.Max))
	}
	// MB/s are 10^6 bytes; perftest's "MB/sec" are 2^20 bytes, our MiB/s.
	head += fmt.Sprintf(", depth %d", r.Depth)
	if r.QPs > 1 {
		head += fmt.Sprintf(", %d QPs", r.QPs)
	}
	if r.Bidirectional {
		head += ", both ways"
	}
	s := fmt.Sprintf("%s: %.2f MB/s = %.2f MiB/s", head, r.BytesPerSecond/1e6, r.BytesPerSecond/(1<<20))
	if r.LineRateFraction > 0 {
		s += fmt.Sprintf(" (%.1f%% of %s Gb/s)", 100*r.LineRateFraction, strconv.FormatFloat(r.LineRateGbps(), 'f', -1, 64))
	}
	return s + fmt.Sprintf(", %.2f CPU s/GB", r.CPUSecondsPerGB)
}

func us(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e3, 'f', 2, 64) + "us" }

func sizeText(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
