package exporters

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/telemetry"
)

var rdmaLabels = []string{"device", "port"}

// rdmaCounter maps a sysfs counter file to its metric.
type rdmaCounter struct {
	scale float64 // port_xmit_data and port_rcv_data count 4-byte words
	fam   family
}

type rdmaFamilies struct {
	info, up, rate, readErrors, physState, device, pause family
	counters                                             []rdmaCounter
	// byFile maps "counters/<file>", "hw/<file>" and "ext/<file>" to the
	// counter's index; a counters_ext file shares its 32-bit twin's.
	byFile map[string]int
}

func newRDMAFamilies() rdmaFamilies {
	p := func(name, help string, typ prometheus.ValueType) family {
		return newFamily("gpunode_rdma_port_"+name, help, typ, rdmaLabels)
	}
	r := rdmaFamilies{
		info: newFamily("gpunode_rdma_port_info", "RDMA port identity; always 1.", prometheus.GaugeValue, rdmaLabels,
			"link_layer", "netdev", "numa_node", "rate"),
		up:   p("up", "1 if the port's logical state is ACTIVE.", prometheus.GaugeValue),
		rate: p("rate_bytes_per_second", "The port's rate as the kernel reports it (400 Gb/sec is 5e10).", prometheus.GaugeValue),
		readErrors: p("read_errors", "Problems reading the port's state and counter files in the last sampling round "+
			"(a file that cannot be read or parsed, counters that read N/A (no PMA), a device whose reads hang); 0 when all were read.",
			prometheus.GaugeValue),
		physState: p("physical_state_id", "The port's physical state as the kernel numbers it (5 LinkUp, 2 Polling, 3 Disabled, "+
			"1 Sleep, 4 PortConfigurationTraining, 6 LinkErrorRecovery, 7 Phy Test), as node_exporter's node_infiniband_physical_state_id.",
			prometheus.GaugeValue),
		device: newFamily("gpunode_rdma_device_info", "RDMA device identity; always 1 (empty labels where the driver has no such file).",
			prometheus.GaugeValue, []string{"device"}, "board_id", "firmware_version", "hca_type"),
		pause: newFamily("gpunode_rdma_pause_frames_total", "PFC pause frames per priority on a RoCE port's netdev, received (rx: "+
			"the peer asked this port to stop sending) and sent (tx: this port's receive buffers filled), from the driver's "+
			"statistics (mlx5 rx_prio<N>_pause / tx_prio<N>_pause); only priorities the driver lists, which on mlx5 are those with PFC on.",
			prometheus.CounterValue, rdmaLabels, "netdev", "priority", "direction"),
		byFile: map[string]int{},
	}
	c := func(file string, hw bool, scale float64, name, help string) {
		key := "counters/" + file
		if hw {
			key = "hw/" + file
		}
		r.byFile[key] = len(r.counters)
		r.counters = append(r.counters, rdmaCounter{scale: scale, fam: p(name, help, prometheus.CounterValue)})
	}
	c("port_xmit_data", false, 4, "transmit_bytes_total", "Bytes transmitted (port_xmit_data, which counts 4-byte words, times 4).")
	c("port_rcv_data", false, 4, "receive_bytes_total", "Bytes received (port_rcv_data, which counts 4-byte words, times 4).")
	c("port_xmit_packets", false, 1, "transmit_packets_total", "Packets transmitted.")
	c("port_rcv_packets", false, 1, "receive_packets_total", "Packets received.")
	c("unicast_xmit_packets", false, 1, "unicast_transmit_packets_total", "Unicast packets transmitted.")
	c("unicast_rcv_packets", false, 1, "unicast_receive_packets_total", "Unicast packets received.")
	c("multicast_xmit_packets", false, 1, "multicast_transmit_packets_total", "Multicast packets transmitted.")
	c("multicast_rcv_packets", false, 1, "multicast_receive_packets_total", "Multicast packets received.")
	c("port_rcv_errors", false, 1, "receive_errors_total", "Packets received with errors.")
	c("port_rcv_discards", false, 1, "receive_discards_total", "Inbound packets discarded (where the driver counts them; not in the upstream kernel's PMA list).")
	c("port_xmit_discards", false, 1, "transmit_discards_total", "Outbound packets discarded (port down or congestion).")
	c("symbol_error", false, 1, "symbol_errors_total", "Minor link errors on any lane.")
	c("link_downed", false, 1, "link_downed_total", "Times the link went down after failing recovery.")
	c("link_error_recovery", false, 1, "link_error_recovery_total", "Successful link error recoveries.")
	c("port_xmit_wait", false, 1, "transmit_wait_total", "Ticks during which the port had data to send but no credits (a congestion signal).")
	c("port_rcv_remote_physical_errors", false, 1, "receive_remote_physical_errors_total", "Packets received marked with the EBP delimiter.")
	c("port_rcv_switch_relay_errors", false, 1, "receive_switch_relay_errors_total", "Packets discarded because they could not be forwarded.")
	c("port_xmit_constraint_errors", false, 1, "transmit_constraint_errors_total", "Packets not transmitted because of outbound constraints.")
	c("port_rcv_constraint_errors", false, 1, "receive_constraint_errors_total", "Packets discarded because of inbound constraints.")
	c("local_link_integrity_errors", false, 1, "local_link_integrity_errors_total", "Times the local physical error count passed its threshold.")
	c("excessive_buffer_overrun_errors", false, 1, "excessive_buffer_overrun_errors_total", "Consecutive buffer overruns past the threshold.")
	c("VL15_dropped", false, 1, "vl15_dropped_total", "Subnet management packets dropped for lack of buffers.")
	c("np_cnp_sent", true, 1, "cnp_sent_total", "RoCE congestion notification packets sent (as notification point, after ECN-marked packets arrived).")
	c("rp_cnp_handled", true, 1, "cnp_handled_total", "RoCE congestion notification packets handled (as reaction point, by slowing down).")
	c("rp_cnp_ignored", true, 1, "cnp_ignored_total", "RoCE congestion notification packets ignored.")
	c("np_ecn_marked_roce_packets", true, 1, "ecn_marked_packets_total", "RoCE packets received with an ECN congestion mark.")
	c("out_of_sequence", true, 1, "out_of_sequence_total", "Packets received out of sequence (a sign of loss).")
	c("packet_seq_err", true, 1, "packet_sequence_errors_total", "NAKs received for packet sequence errors.")
	c("implied_nak_seq_err", true, 1, "implied_nak_sequence_errors_total", "Implied NAK sequence errors.")
	c("local_ack_timeout_err", true, 1, "local_ack_timeout_errors_total", "Times the local ACK timer expired on a queue pair (retransmission).")
	c("rnr_nak_retry_err", true, 1, "rnr_nak_retry_errors_total", "Receiver-not-ready NAKs whose retries ran out.")
	c("duplicate_request", true, 1, "duplicate_requests_total", "Duplicate requests received.")
	c("roce_adp_retrans", true, 1, "adaptive_retransmissions_total", "Adaptive retransmissions (RoCE).")
	c("roce_adp_retrans_to", true, 1, "adaptive_retransmission_timeouts_total", "Adaptive retransmission timeouts (RoCE).")
	c("roce_slow_restart", true, 1, "slow_restarts_total", "Slow restarts after retransmission (RoCE).")
	c("roce_slow_restart_cnps", true, 1, "slow_restart_cnps_total", "CNPs sent during slow restart (RoCE).")
	c("roce_slow_restart_trans", true, 1, "slow_restart_transitions_total", "RoCE slow restart state transitions.")
	c("out_of_buffer", true, 1, "out_of_buffer_total", "Packets dropped because no receive buffer (WQE) was posted: the receiver falls behind.")
	c("rx_write_requests", true, 1, "receive_write_requests_total", "RDMA write requests this port served as responder.")
	c("rx_read_requests", true, 1, "receive_read_requests_total", "RDMA read requests this port served as responder.")
	c("rx_atomic_requests", true, 1, "receive_atomic_requests_total", "RDMA atomic requests this port served as responder.")
	c("rx_dct_connect", true, 1, "receive_dct_connects_total", "Dynamically connected transport connect requests received.")
	c("rx_icrc_encapsulated", true, 1, "receive_icrc_encapsulated_errors_total", "RoCE packets received with an ICRC error (encapsulated).")
	c("req_cqe_error", true, 1, "requester_cqe_errors_total", "Requester work completions with an error.")
	c("req_cqe_flush_error", true, 1, "requester_cqe_flush_errors_total", "Requester work requests flushed with an error (the queue pair went to error).")
	c("resp_cqe_error", true, 1, "responder_cqe_errors_total", "Responder work completions with an error.")
	c("resp_cqe_flush_error", true, 1, "responder_cqe_flush_errors_total", "Responder work requests flushed with an error (the queue pair went to error).")
	c("req_remote_access_errors", true, 1, "requester_remote_access_errors_total", "Remote access errors (NAKs) the requester received: a bad rkey or address.")
	c("req_remote_invalid_request", true, 1, "requester_remote_invalid_requests_total", "Remote invalid request errors (NAKs) the requester received.")
	c("resp_remote_access_errors", true, 1, "responder_remote_access_errors_total", "Requests the responder refused for a remote access error.")
	c("resp_local_length_error", true, 1, "responder_local_length_errors_total", "Incoming messages longer than the posted receive buffer.")
	c("req_transport_retries_exceeded", true, 1, "requester_transport_retries_exceeded_total", "Requests that ran out of transport retries (the peer did not answer).")
	c("req_rnr_retries_exceeded", true, 1, "requester_rnr_retries_exceeded_total", "Requests that ran out of receiver-not-ready retries.")
	// The 64-bit counters_ext files (kernels before 4.5) feed their
	// 32-bit twins' metrics: the 32-bit ones saturate.
	for ext, twin := range map[string]string{
		"port_xmit_data_64": "port_xmit_data", "port_rcv_data_64": "port_rcv_data",
		"port_xmit_packets_64": "port_xmit_packets", "port_rcv_packets_64": "port_rcv_packets",
		"port_unicast_xmit_packets": "unicast_xmit_packets", "port_unicast_rcv_packets": "unicast_rcv_packets",
		"port_multicast_xmit_packets": "multicast_xmit_packets", "port_multicast_rcv_packets": "multicast_rcv_packets",
	} {
		r.byFile["ext/"+ext] = r.byFile["counters/"+twin]
	}
	return r
}

func (r *rdmaFamilies) collect(emit func(prometheus.Metric), f *telemetry.Frame, snap *snapshot.Snapshot) {
	ports := map[string]rdma.Port{}
	devs := map[string]rdma.Device{}
	if snap != nil {
		for _, d := range snap.RDMADevices {
			devs[d.Name] = d
			emit(r.device.metric(target{id: []string{d.Name}}, 1, d.BoardID, d.FirmwareVersion, d.HCAType))
			for _, p := range d.Ports {
				ports[d.Name+"/"+strconv.Itoa(p.Number)] = p
			}
		}
	}
	for _, pc := range f.RDMA {
		t := target{id: []string{pc.Device, strconv.Itoa(pc.Port)}}
		p, known := ports[pc.Device+"/"+t.id[1]]
		if known {
			numa := strconv.Itoa(devs[pc.Device].NUMANode)
			emit(r.info.metric(t, 1, p.LinkLayer, p.Netdev, numa, p.Rate))
			emit(r.rate.metric(t, p.RateGbps*1e9/8))
		}
		state := pc.State
		if state == "" && known {
			state = p.State
		}
		if state != "" {
			emit(r.up.metric(t, boolValue(state == "ACTIVE")))
		}
		// The problems themselves are on the rdma-counters source's
		// message and in the log: a port whose counters cannot be read is
		// told from one that has none.
		if id, ok := rdma.PhysStateID(pc.PhysState); ok {
			emit(r.physState.metric(t, float64(id)))
		}
		emit(r.readErrors.metric(t, float64(len(pc.Errors))))
		emitted := map[int]bool{}
		for _, group := range []struct {
			prefix string
			cs     []rdma.Counter
		}{{"ext/", pc.ExtCounters}, {"counters/", pc.Counters}, {"hw/", pc.HWCounters}} {
			for _, c := range group.cs {
				i, ok := r.byFile[group.prefix+c.Name]
				if !ok || emitted[i] {
					continue // a 32-bit counter whose 64-bit twin was there
				}
				emitted[i] = true
				rc := r.counters[i]
				emit(rc.fam.metric(t, float64(c.Value)*rc.scale))
			}
		}
		for _, pp := range pc.Pause {
			prio := strconv.Itoa(pp.Priority)
			emit(r.pause.metric(t, float64(pp.RX), pc.Netdev, prio, "rx"))
			emit(r.pause.metric(t, float64(pp.TX), pc.Netdev, prio, "tx"))
		}
	}
}
