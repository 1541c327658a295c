package metrics

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
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
