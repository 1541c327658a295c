package metrics

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gpunode/gpunode/sim"
	"github.com/gpunode/gpunode/test/tools"
)

// parity pairs node_exporter's infiniband metrics with gpunode's.
var parity = map[string]string{
	"node_infiniband_port_data_transmitted_bytes_total":         "gpunode_rdma_port_transmit_bytes_total",
	"node_infiniband_port_data_received_bytes_total":            "gpunode_rdma_port_receive_bytes_total",
	"node_infiniband_port_packets_transmitted_total":            "gpunode_rdma_port_transmit_packets_total",
	"node_infiniband_port_packets_received_total":               "gpunode_rdma_port_receive_packets_total",
	"node_infiniband_unicast_packets_transmitted_total":         "gpunode_rdma_port_unicast_transmit_packets_total",
	"node_infiniband_unicast_packets_received_total":            "gpunode_rdma_port_unicast_receive_packets_total",
	"node_infiniband_multicast_packets_transmitted_total":       "gpunode_rdma_port_multicast_transmit_packets_total",
	"node_infiniband_multicast_packets_received_total":          "gpunode_rdma_port_multicast_receive_packets_total",
	"node_infiniband_port_errors_received_total":                "gpunode_rdma_port_receive_errors_total",
	"node_infiniband_port_discards_transmitted_total":           "gpunode_rdma_port_transmit_discards_total",
	"node_infiniband_symbol_error_total":                        "gpunode_rdma_port_symbol_errors_total",
	"node_infiniband_link_downed_total":                         "gpunode_rdma_port_link_downed_total",
	"node_infiniband_port_transmit_wait_total":                  "gpunode_rdma_port_transmit_wait_total",
	"node_infiniband_port_receive_remote_physical_errors_total": "gpunode_rdma_port_receive_remote_physical_errors_total",
	"node_infiniband_port_constraint_errors_received_total":     "gpunode_rdma_port_receive_constraint_errors_total",
	"node_infiniband_port_constraint_errors_transmitted_total":  "gpunode_rdma_port_transmit_constraint_errors_total",
	"node_infiniband_local_link_integrity_errors_total":         "gpunode_rdma_port_local_link_integrity_errors_total",
	"node_infiniband_excessive_buffer_overrun_errors_total":     "gpunode_rdma_port_excessive_buffer_overrun_errors_total",
	"node_infiniband_vl15_dropped_total":                        "gpunode_rdma_port_vl15_dropped_total",
	"node_infiniband_rate_bytes_per_second":                     "gpunode_rdma_port_rate_bytes_per_second",
	"node_infiniband_physical_state_id":                         "gpunode_rdma_port_physical_state_id",
}

// parityWherePresent pairs counters that only some kernels and drivers
// have: where either side reports one, both must, with the same value.
var parityWherePresent = map[string]string{
	"node_infiniband_port_discards_received_total":           "gpunode_rdma_port_receive_discards_total",
	"node_infiniband_link_error_recovery_total":              "gpunode_rdma_port_link_error_recovery_total",
	"node_infiniband_port_receive_switch_relay_errors_total": "gpunode_rdma_port_receive_switch_relay_errors_total",
}

// legacy names node_exporter's metric of a counters_ext file (kernels
// before 4.5), by the gpunode metric that takes its value instead of the
// saturating 32-bit counter's where the port has it.
var legacy = map[string]string{
	"gpunode_rdma_port_transmit_bytes_total":             "node_infiniband_legacy_data_transmitted_bytes_total",
	"gpunode_rdma_port_receive_bytes_total":              "node_infiniband_legacy_data_received_bytes_total",
	"gpunode_rdma_port_transmit_packets_total":           "node_infiniband_legacy_packets_transmitted_total",
	"gpunode_rdma_port_receive_packets_total":            "node_infiniband_legacy_packets_received_total",
	"gpunode_rdma_port_unicast_transmit_packets_total":   "node_infiniband_legacy_unicast_packets_transmitted_total",
	"gpunode_rdma_port_unicast_receive_packets_total":    "node_infiniband_legacy_unicast_packets_received_total",
	"gpunode_rdma_port_multicast_transmit_packets_total": "node_infiniband_legacy_multicast_packets_transmitted_total",
	"gpunode_rdma_port_multicast_receive_packets_total":  "node_infiniband_legacy_multicast_packets_received_total",
}

// samples parses a scrape into "name device port" -> value for the
// per-port series.
func samples(t testing.TB, scrape []byte) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(scrape))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.Metric {
			var dev, port string
			for _, l := range m.Label {
				switch l.GetName() {
				case "device":
					dev = l.GetValue()
				case "port":
					port = l.GetValue()
				}
			}
			if dev == "" || port == "" {
				continue
			}
			var v float64
			switch {
			case m.Counter != nil:
				v = m.Counter.GetValue()
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Untyped != nil:
				v = m.Untyped.GetValue()
			}
			out[name+" "+dev+" "+port] = v
		}
	}
	return out
}

// startNodeExporter runs node_exporter's infiniband collector alone on a
// tree and returns its address.
func startNodeExporter(t testing.TB, root string) (*process, string) {
	t.Helper()
	bin, err := tools.NodeExporter()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, "node_exporter", bin, "--path.sysfs="+filepath.Join(root, "sys"), "--path.procfs="+filepath.Join(root, "proc"),
		"--collector.disable-defaults", "--collector.infiniband", "--web.listen-address="+addr)
	waitHTTP(t, "http://"+addr+"/metrics", 30*time.Second)
	return p, addr
}

// compare checks every paired series of every port, and that both see the
// same ports.
func compare(t *testing.T, ne, gn map[string]float64) int {
	t.Helper()
	checked, problems := diff(ne, gn)
	for _, p := range problems {
		t.Error(p)
	}
	return checked
}

// diff lists how two scrapes disagree, and how many values it compared.
func diff(ne, gn map[string]float64) (int, []string) {
	checked := 0
	var problems []string
	var nePorts, gnPorts []string
	for k := range ne {
		if strings.HasPrefix(k, "node_infiniband_state_id ") {
			nePorts = append(nePorts, strings.TrimPrefix(k, "node_infiniband_state_id "))
		}
	}
	for k := range gn {
		if strings.HasPrefix(k, "gpunode_rdma_port_up ") {
			gnPorts = append(gnPorts, strings.TrimPrefix(k, "gpunode_rdma_port_up "))
		}
	}
	slices.Sort(nePorts)
	slices.Sort(gnPorts)
	if !slices.Equal(nePorts, gnPorts) || len(nePorts) == 0 {
		return 0, []string{fmt.Sprintf("ports: node_exporter %v, gpunode %v", nePorts, gnPorts)}
	}
	for _, port := range nePorts {
		for neName, gnName := range parity {
			if l := legacy[gnName]; l != "" {
				if _, ok := ne[l+" "+port]; ok {
					neName = l
				}
			}
			nv, nok := ne[neName+" "+port]
			gv, gok := gn[gnName+" "+port]
			if !nok || !gok {
				problems = append(problems, fmt.Sprintf("%s: node_exporter %s present %v, gpunode %s present %v", port, neName, nok, gnName, gok))
				continue
			}
			if nv != gv {
				problems = append(problems, fmt.Sprintf("%s: node_exporter %s = %v, gpunode %s = %v", port, neName, nv, gnName, gv))
			}
			checked++
		}
		for neName, gnName := range parityWherePresent {
			nv, nok := ne[neName+" "+port]
			gv, gok := gn[gnName+" "+port]
			switch {
			case nok != gok:
				problems = append(problems, fmt.Sprintf("%s: node_exporter %s present %v, gpunode %s present %v", port, neName, nok, gnName, gok))
			case nok && nv != gv:
				problems = append(problems, fmt.Sprintf("%s: node_exporter %s = %v, gpunode %s = %v", port, neName, nv, gnName, gv))
			case nok:
				checked++
			}
		}
		up := gn["gpunode_rdma_port_up "+port]
		if state := ne["node_infiniband_state_id "+port]; (state == 4) != (up == 1) {
			problems = append(problems, fmt.Sprintf("%s: node_exporter state %v, gpunode up %v", port, state, up))
		}
	}
	slices.Sort(problems)
	return checked, problems
}

// node_exporter (Debian's 1.5.0) and the agent read the same simulated
// sysfs trees and must report the same RDMA port byte, packet and error
// counters: before and after the counters move.
func TestNodeExporterParity(t *testing.T) {
	for _, name := range sim.Names() {
		if name == "cpu-only" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			n, err := sim.Build(name, shmDir(t))
			if err != nil {
				t.Fatal(err)
			}
			oldKernelFiles(t, n.Root, "mlx5_1")
			_, ne := startNodeExporter(t, n.Root)
			// --host-root (not --simulate): the agent reads the very tree
			// node_exporter reads and moves nothing in it.
			a := startAgent(t, "--host-root="+n.Root, "--metrics.sample-interval=1s",
				"--config="+writeConfig(t, "metrics:\n  podResourcesSocket: \"\"\n"))
			scrapeBoth := func() (map[string]float64, map[string]float64) {
				return samples(t, get(t, "http://"+ne+"/metrics")), samples(t, get(t, "http://"+a.addr+"/metrics"))
			}
			// The agent exports counters once its first round is in.
			deadline := time.Now().Add(10 * time.Second)
			neS, gnS := scrapeBoth()
			for len(gnS) == 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				neS, gnS = scrapeBoth()
			}
			checked := compare(t, neS, gnS)
			if n, g := infoSeries(t, get(t, "http://"+ne+"/metrics"), "node_infiniband_info"),
				infoSeries(t, get(t, "http://"+a.addr+"/metrics"), "gpunode_rdma_device_info"); !slices.Equal(n, g) || len(n) == 0 {
				t.Errorf("device info: node_exporter %q, gpunode %q", n, g)
			}

			// The counters move (as traffic would move them); once the
			// agent has sampled again, both agree on the new values.
			traffic, err := sim.NewTraffic(n, time.Now().Add(-time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if err := traffic.Advance(time.Now()); err != nil {
				t.Fatal(err)
			}
			// The agent samples on its own clock, possibly while Advance was
			// still writing the files: wait until a sample taken after the
			// writes agrees (or the deadline), then compare.
			key := "mlx5_0 1"
			before := gnS["gpunode_rdma_port_transmit_bytes_total "+key]
			deadline = time.Now().Add(10 * time.Second)
			for {
				neS, gnS = scrapeBoth()
				moved := gnS["gpunode_rdma_port_transmit_bytes_total "+key] != before
				if _, problems := diff(neS, gnS); (moved && len(problems) == 0) || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if neS["node_infiniband_port_data_transmitted_bytes_total "+key] == before {
				t.Fatal("the counters did not move")
			}
			checked += compare(t, neS, gnS)
			t.Logf("%d counter values equal between node_exporter and gpunode", checked)
		})
	}
}

// oldKernelFiles gives port 1 of dev, where the tree has it, the counter
// files the simulated (upstream, recent) kernel lacks: port_rcv_discards
// (MLNX_OFED's), link_error_recovery and port_rcv_switch_relay_errors,
// and the 64-bit counters_ext of kernels before 4.5, which hold other
// values than the 32-bit counters beside them.
func oldKernelFiles(t *testing.T, root, dev string) {
	t.Helper()
	port := filepath.Join(root, "sys/class/infiniband", dev, "ports/1")
	if _, err := os.Stat(port); err != nil {
		return
	}
	files := map[string]string{"counters/port_rcv_discards": "17", "counters/link_error_recovery": "3",
		"counters/port_rcv_switch_relay_errors": "5"}
	for i, f := range []string{"port_xmit_data_64", "port_rcv_data_64", "port_xmit_packets_64", "port_rcv_packets_64",
		"port_unicast_xmit_packets", "port_unicast_rcv_packets", "port_multicast_xmit_packets", "port_multicast_rcv_packets"} {
		files["counters_ext/"+f] = strconv.Itoa(90_000_000_000 + i)
	}
	for f, v := range files {
		p := filepath.Join(port, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// infoSeries lists a scrape's series of the named info metric by their
// device, board_id, firmware_version and hca_type labels, sorted.
func infoSeries(t testing.TB, scrape []byte, name string) []string {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(scrape))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range mfs[name].GetMetric() {
		l := map[string]string{}
		for _, lp := range m.Label {
			l[lp.GetName()] = lp.GetValue()
		}
		out = append(out, fmt.Sprintf("%s board_id=%q firmware_version=%q hca_type=%q", l["device"], l["board_id"], l["firmware_version"], l["hca_type"]))
	}
	slices.Sort(out)
	return out
}
