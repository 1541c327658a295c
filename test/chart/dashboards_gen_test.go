package chart

// The dashboards are written here, as data, and generated into
// charts/gpunode-agent/dashboards/*.json (Grafana's dashboard JSON model)
// by `go test ./test/chart -run TestDashboardsUpToDate -update`; the test
// fails when a file differs from what this generates. The JSON is what
// Grafana and the chart use; this file only keeps the layout consistent.

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "regenerate the dashboards from their definitions")

const dashboardDir = chartDir + "/dashboards"

// panel is one Grafana panel; a panel with no queries starts a row.
type panel struct {
	title, kind, unit, desc string
	width                   int // of 24 columns; default 12 (stat: 4)
	queries                 []query
}

type query struct{ expr, legend string }

type variable struct{ name, label, definition string }

type dashboard struct {
	file, uid, title, desc string
	vars                   []variable
	panels                 []panel
}

func row(title string) panel { return panel{title: title, kind: "row"} }
func ts(title, unit, desc string, qs ...query) panel {
	return panel{title: title, kind: "timeseries", unit: unit, desc: desc, queries: qs}
}
func stat(title, unit, desc string, qs ...query) panel {
	return panel{title: title, kind: "stat", unit: unit, desc: desc, queries: qs}
}
func table(title, desc string, qs ...query) panel {
	return panel{title: title, kind: "table", desc: desc, width: 24, queries: qs}
}
func q(expr, legend string) query { return query{expr, legend} }

const (
	nodeVar = `label_values(gpunode_build_info, node)`
	gpuSel  = `node=~"$node", gpu=~"$gpu"`
	portSel = `node=~"$node", device=~"$device"`
	gpuLeg  = "{{node}} GPU {{gpu}}"
	portLeg = "{{node}} {{device}}/{{port}}"
)

func dashboards() []dashboard {
	return []dashboard{{
		file: "gpunode-gpu.json", uid: "gpunode-gpu", title: "gpunode / GPU node overview",
		desc: "Per-GPU utilization, memory, power, thermals, clocks, throttling, PCIe and NVLink/XGMI traffic, errors and health from gpunode-agent.",
		vars: []variable{
			{"node", "Node", nodeVar},
			{"gpu", "GPU", `label_values(gpunode_gpu_info{node=~"$node"}, gpu)`},
		},
		panels: []panel{
			row("Node totals"),
			stat("GPUs", "none", "GPUs the agent sees.", q(`count(gpunode_gpu_info{node=~"$node"})`, "")),
			stat("Unhealthy GPUs", "none", "gpunode_gpu_healthy 0: lost, critical XID, uncorrectable ECC, row remap, NVLink down.",
				q(`count(gpunode_gpu_healthy{node=~"$node"} == 0) or vector(0)`, "")),
			stat("Power", "watt", "Total GPU power draw.", q(`sum(gpunode_gpu_power_watts{node=~"$node"})`, "")),
			stat("Energy in range", "joule", "GPU energy used over the dashboard's time range.",
				q(`sum(increase(gpunode_gpu_energy_joules_total{node=~"$node"}[$__range]))`, "")),
			stat("Memory used", "percentunit", "Device memory used of total, all GPUs.",
				q(`sum(gpunode_gpu_memory_used_bytes{node=~"$node"}) / sum(gpunode_gpu_memory_total_bytes{node=~"$node"})`, "")),
			stat("Mean utilization", "percentunit", "Mean kernel-busy fraction.", q(`avg(gpunode_gpu_utilization_ratio{node=~"$node"})`, "")),
			row("Utilization and memory"),
			ts("GPU utilization", "percentunit", "Fraction of time a kernel ran.", q(`gpunode_gpu_utilization_ratio{`+gpuSel+`}`, gpuLeg)),
			ts("Memory controller utilization", "percentunit", "Fraction of time device memory was read or written.",
				q(`gpunode_gpu_memory_utilization_ratio{`+gpuSel+`}`, gpuLeg)),
			ts("Memory used", "bytes", "Device memory in use.", q(`gpunode_gpu_memory_used_bytes{`+gpuSel+`}`, gpuLeg)),
			ts("SM, tensor and DRAM activity (GPM)", "percentunit", "NVML GPM ratios (Hopper and newer).",
				q(`gpunode_gpu_sm_active_ratio{`+gpuSel+`}`, gpuLeg+" SM"),
				q(`gpunode_gpu_tensor_active_ratio{`+gpuSel+`}`, gpuLeg+" tensor"),
				q(`gpunode_gpu_dram_active_ratio{`+gpuSel+`}`, gpuLeg+" DRAM")),
			row("Power, thermals and clocks"),
			ts("Power", "watt", "Draw and the enforced limit.",
				q(`gpunode_gpu_power_watts{`+gpuSel+`}`, gpuLeg),
				q(`gpunode_gpu_power_limit_watts{`+gpuSel+`}`, gpuLeg+" limit")),
			ts("Energy rate", "watt", "rate() of the energy counter: the mean power between scrapes.",
				q(`rate(gpunode_gpu_energy_joules_total{`+gpuSel+`}[$__rate_interval])`, gpuLeg)),
			ts("Temperature", "celsius", "GPU and memory sensors.", q(`gpunode_gpu_temperature_celsius{`+gpuSel+`}`, gpuLeg+" {{sensor}}")),
			ts("Clocks", "hertz", "SM and memory clocks.", q(`gpunode_gpu_clock_hertz{`+gpuSel+`, clock=~"sm|memory"}`, gpuLeg+" {{clock}}")),
			ts("Clock event reasons (throttling)", "none", "GPUs whose clocks each reason holds down.",
				q(`sum by (node, reason) (gpunode_gpu_clocks_event_reasons{`+gpuSel+`})`, "{{node}} {{reason}}")),
			row("PCIe and NVLink / XGMI"),
			// The byte counters are exported only where they are wider than the
			// driver's 32 bits; elsewhere NVML's own rate gauge stands in.
			ts("PCIe throughput", "Bps", "Bytes per second over PCIe, transmit and receive.",
				q(`rate(gpunode_gpu_pcie_transmit_bytes_total{`+gpuSel+`}[$__rate_interval]) or gpunode_gpu_pcie_transmit_bytes_per_second{`+gpuSel+`}`, gpuLeg+" tx"),
				q(`rate(gpunode_gpu_pcie_receive_bytes_total{`+gpuSel+`}[$__rate_interval]) or gpunode_gpu_pcie_receive_bytes_per_second{`+gpuSel+`}`, gpuLeg+" rx")),
			ts("PCIe link", "none", "Current link generation and width (a degraded link trains lower).",
				q(`gpunode_gpu_pcie_link_generation{`+gpuSel+`}`, gpuLeg+" gen"),
				q(`gpunode_gpu_pcie_link_width{`+gpuSel+`}`, gpuLeg+" width")),
			ts("NVLink / XGMI throughput", "Bps", "Data bytes per second over all links of each GPU.",
				q(`sum by (node, gpu, kind) (rate(gpunode_gpu_interconnect_transmit_bytes_total{`+gpuSel+`}[$__rate_interval]))`, gpuLeg+" {{kind}} tx"),
				q(`sum by (node, gpu, kind) (rate(gpunode_gpu_interconnect_receive_bytes_total{`+gpuSel+`}[$__rate_interval]))`, gpuLeg+" {{kind}} rx")),
			ts("Active links", "none", "NVLink / XGMI links up per GPU.", q(`gpunode_gpu_interconnect_links_active{`+gpuSel+`}`, gpuLeg+" {{kind}}")),
			row("Errors and health"),
			ts("PCIe replays and interconnect errors", "cps", "Per second.",
				q(`rate(gpunode_gpu_pcie_replay_errors_total{`+gpuSel+`}[$__rate_interval])`, gpuLeg+" PCIe replay"),
				q(`sum by (node, gpu, type) (rate(gpunode_gpu_interconnect_errors_total{`+gpuSel+`}[$__rate_interval]))`, gpuLeg+" {{type}}")),
			ts("ECC errors", "none", "Volatile ECC error counts (since the driver loaded).",
				q(`gpunode_gpu_ecc_errors_total{`+gpuSel+`, scope="volatile"}`, gpuLeg+" {{type}}")),
			ts("XID errors in range", "none", "XIDs the driver reported (0 where none).",
				q(`sum by (node, gpu) (increase(gpunode_gpu_xid_errors_total{`+gpuSel+`}[$__range])) or sum by (node, gpu) (0 * gpunode_gpu_up{`+gpuSel+`})`, gpuLeg)),
			ts("Row remapping", "none", "Rows remapped by cause, and remaps pending a reset or failed.",
				q(`gpunode_gpu_remapped_rows{`+gpuSel+`}`, gpuLeg+" {{state}}"),
				q(`gpunode_gpu_row_remap_pending{`+gpuSel+`}`, gpuLeg+" pending"),
				q(`gpunode_gpu_row_remap_failed{`+gpuSel+`}`, gpuLeg+" failed")),
			table("GPU health", "1 healthy / answering, 0 not.",
				q(`gpunode_gpu_healthy{`+gpuSel+`}`, ""),
				q(`gpunode_gpu_up{`+gpuSel+`}`, "")),
		},
	}, {
		file: "gpunode-rdma.json", uid: "gpunode-rdma", title: "gpunode / RDMA fabric",
		desc: "RDMA port throughput, errors and congestion, and gpunode-agent's RDMA probe bandwidth and latency against line rate and TCP.",
		vars: []variable{
			{"node", "Node", nodeVar},
			{"device", "Device", `label_values(gpunode_rdma_port_info{node=~"$node"}, device)`},
		},
		panels: []panel{
			row("Ports"),
			stat("Ports up", "none", "RDMA ports ACTIVE.", q(`sum(gpunode_rdma_port_up{`+portSel+`})`, "")),
			stat("Line rate", "Bps", "Sum of the ports' rates.", q(`sum(gpunode_rdma_port_rate_bytes_per_second{`+portSel+`})`, "")),
			stat("Throughput", "Bps", "Transmit plus receive, all ports.",
				q(`sum(rate(gpunode_rdma_port_transmit_bytes_total{`+portSel+`}[$__rate_interval])) + sum(rate(gpunode_rdma_port_receive_bytes_total{`+portSel+`}[$__rate_interval]))`, "")),
			table("Port state", "Link layer, netdev, NUMA node and rate of each port (value: 1 up).",
				q(`gpunode_rdma_port_up{`+portSel+`} * on (node, device, port) group_left (link_layer, netdev, numa_node, rate) max by (node, device, port, link_layer, netdev, numa_node, rate) (gpunode_rdma_port_info{`+portSel+`})`, "")),
			table("Port health", "The agent's verdict per port (README \"RDMA port health\"): one row per reason a port is unhealthy (PortDown, LinkFlapping, ErrorBurst, RateDegraded, PauseStorm; value 0), or reason healthy (value 1). Ports not ACTIVE since the agent started are not judged.",
				q(`max by (node, device, port, reason) (gpunode_rdma_port_health_problem{`+portSel+`} * 0 or on (node, device, port) label_replace(gpunode_rdma_port_healthy{`+portSel+`}, "reason", "healthy", "", ""))`, "")),
			row("Traffic"),
			ts("Port throughput", "Bps", "Bytes per second (port_xmit_data / port_rcv_data are 4-byte words; the agent converts).",
				q(`rate(gpunode_rdma_port_transmit_bytes_total{`+portSel+`}[$__rate_interval])`, portLeg+" tx"),
				q(`rate(gpunode_rdma_port_receive_bytes_total{`+portSel+`}[$__rate_interval])`, portLeg+" rx")),
			ts("Fraction of line rate", "percentunit", "Port throughput over the port's rate.",
				q(`rate(gpunode_rdma_port_transmit_bytes_total{`+portSel+`}[$__rate_interval]) / on (node, device, port) gpunode_rdma_port_rate_bytes_per_second{`+portSel+`}`, portLeg+" tx"),
				q(`rate(gpunode_rdma_port_receive_bytes_total{`+portSel+`}[$__rate_interval]) / on (node, device, port) gpunode_rdma_port_rate_bytes_per_second{`+portSel+`}`, portLeg+" rx")),
			ts("Packets", "pps", "Packets per second.",
				q(`rate(gpunode_rdma_port_transmit_packets_total{`+portSel+`}[$__rate_interval])`, portLeg+" tx"),
				q(`rate(gpunode_rdma_port_receive_packets_total{`+portSel+`}[$__rate_interval])`, portLeg+" rx")),
			row("Errors and congestion"),
			ts("Errors and discards", "cps", "PMA error counters per second.",
				q(`rate(gpunode_rdma_port_receive_errors_total{`+portSel+`}[$__rate_interval])`, portLeg+" rcv errors"),
				q(`rate(gpunode_rdma_port_transmit_discards_total{`+portSel+`}[$__rate_interval])`, portLeg+" xmit discards"),
				q(`rate(gpunode_rdma_port_symbol_errors_total{`+portSel+`}[$__rate_interval])`, portLeg+" symbol errors"),
				q(`increase(gpunode_rdma_port_link_downed_total{`+portSel+`}[$__rate_interval])`, portLeg+" link downed")),
			ts("Transmit wait (InfiniBand congestion)", "cps", "port_xmit_wait ticks per second: the port had data but no credits.",
				q(`rate(gpunode_rdma_port_transmit_wait_total{`+portSel+`}[$__rate_interval])`, portLeg)),
			ts("RoCE congestion control", "cps", "CNPs sent and handled, ECN-marked packets per second (mlx5 hw_counters).",
				q(`rate(gpunode_rdma_port_cnp_sent_total{`+portSel+`}[$__rate_interval])`, portLeg+" CNP sent"),
				q(`rate(gpunode_rdma_port_cnp_handled_total{`+portSel+`}[$__rate_interval])`, portLeg+" CNP handled"),
				q(`rate(gpunode_rdma_port_ecn_marked_packets_total{`+portSel+`}[$__rate_interval])`, portLeg+" ECN marked")),
			ts("Retransmissions", "cps", "Out-of-sequence packets, local ACK timeouts and adaptive retransmissions per second.",
				q(`rate(gpunode_rdma_port_out_of_sequence_total{`+portSel+`}[$__rate_interval])`, portLeg+" out of sequence"),
				q(`rate(gpunode_rdma_port_local_ack_timeout_errors_total{`+portSel+`}[$__rate_interval])`, portLeg+" local ACK timeout"),
				q(`rate(gpunode_rdma_port_adaptive_retransmissions_total{`+portSel+`}[$__rate_interval])`, portLeg+" adaptive retransmit")),
			row("Probes"),
			ts("Probe bandwidth", "Bps", "RDMA WRITE bandwidth of the agent's peer probes (the links and fabric) and loopback probes (peer loopback: a check of the HCA and its driver, whose traffic never meets the link), from host memory and from the memory of the GPU nearest the port (gpuN: GPUDirect RDMA).",
				q(`gpunode_rdma_probe_bandwidth_bytes_per_second{`+portSel+`, kind="write_bw"}`, portLeg+" → {{peer}} {{memory}}{{gpu}}")),
			ts("Probe latency", "s", "SEND/RECV half round trip, p50 and p99, from host memory and GPU memory.",
				q(`gpunode_rdma_probe_latency_seconds{`+portSel+`, kind="send_lat", quantile=~"0.5|0.99"}`, portLeg+" → {{peer}} {{memory}}{{gpu}} p{{quantile}}")),
			ts("Probe bandwidth, fraction of line rate", "percentunit", "RDMA WRITE peer probe bandwidth over the data rate of the slower of the two ports (loopback probes have none).",
				q(`gpunode_rdma_probe_line_rate_ratio{`+portSel+`}`, portLeg+" → {{peer}} {{memory}}{{gpu}}")),
			ts("GPUDirect RDMA vs host memory", "percentunit", "RDMA WRITE bandwidth from a GPU's memory over the same port's and peer's from host memory, in the same round: well below 1 is a GPU-NIC path in trouble (PCIe peer-to-peer through the CPU, an ACS or IOMMU setting, a degraded link) that host memory probes never see.",
				q(`gpunode_rdma_probe_bandwidth_bytes_per_second{`+portSel+`, kind="write_bw", memory="gpu"} / ignoring(memory, gpu) group_left gpunode_rdma_probe_bandwidth_bytes_per_second{`+portSel+`, kind="write_bw", memory="host"}`, portLeg+" → {{peer}} gpu{{gpu}}")),
			ts("RDMA vs TCP", "Bps", "Best peer probe bandwidth per node, by kind (write_bw: RDMA WRITE; tcp_bw: the TCP baseline to the same peer) and memory.",
				q(`max by (node, kind, memory) (gpunode_rdma_probe_bandwidth_bytes_per_second{node=~"$node", peer!="loopback"})`, "{{node}} {{kind}} {{memory}}")),
			ts("RDMA vs TCP: CPU per GB", "s", "CPU seconds both ends' probe threads spent per 1e9 bytes moved, by kind and memory.",
				q(`max by (node, kind, memory) (gpunode_rdma_probe_cpu_seconds_per_gigabyte{node=~"$node"})`, "{{node}} {{kind}} {{memory}}")),
			ts("Probe success", "none", "1 when the last probe passed.", q(`gpunode_rdma_probe_success{node=~"$node"}`, "{{node}} {{device}} → {{peer}} {{kind}} {{memory}}{{gpu}}")),
			ts("Time since last probe", "s", "", q(`time() - gpunode_rdma_probe_last_run_timestamp_seconds{node=~"$node"}`, "{{node}} {{device}} → {{peer}}")),
		},
	}, {
		file: "gpunode-agent.json", uid: "gpunode-agent", title: "gpunode / Tuning and agent",
		desc: "Host tuning compliance and drift, the agent's sources, node verification and the cost of scraping the agent.",
		vars: []variable{{"node", "Node", nodeVar}},
		panels: []panel{
			row("Tuning"),
			stat("Compliant settings", "percentunit", "Managed settings that have the profile's value.",
				q(`sum(gpunode_tuning_setting_compliant{node=~"$node"}) / count(gpunode_tuning_setting_compliant{node=~"$node"})`, "")),
			stat("Drift in range", "none", "Settings someone else changed after tuning set them.",
				q(`sum(increase(gpunode_tuning_drift_total{node=~"$node"}[$__range]))`, "")),
			stat("Since last tuning change", "s", "", q(`time() - max(gpunode_tuning_last_apply_timestamp_seconds{node=~"$node"})`, "")),
			table("Tuning state", "Profile, mode and state per node.", q(`gpunode_tuning_info{node=~"$node"}`, "")),
			ts("Non-compliant settings", "none", "Managed settings without the profile's value, per node.",
				q(`count by (node) (gpunode_tuning_setting_compliant{node=~"$node"} == 0) or count by (node) (gpunode_tuning_info{node=~"$node"}) * 0`, "{{node}}")),
			ts("Drift", "none", "Settings found changed by someone else, per hour.",
				q(`increase(gpunode_tuning_drift_total{node=~"$node"}[1h])`, "{{node}}")),
			table("Settings", "1: the setting has the profile's value.", q(`gpunode_tuning_setting_compliant{node=~"$node"}`, "")),
			row("Sources and verification"),
			ts("Source status", "none", "1 while the source's last run succeeded or it is absent here.",
				q(`gpunode_source_up{node=~"$node"}`, "{{node}} {{source}}")),
			ts("Source duration", "s", "Time the source's last run took.", q(`gpunode_source_duration_seconds{node=~"$node"}`, "{{node}} {{source}}")),
			ts("Snapshot age", "s", "Time since the last discovery.", q(`time() - gpunode_snapshot_timestamp_seconds{node=~"$node"}`, "{{node}}")),
			table("Node verification", "gpunode_check_status: 1 pass, 0 fail (gpunode-agent verify).",
				q(`gpunode_check_status{node=~"$node"}`, "")),
			row("Scrape cost"),
			ts("Scrape duration", "s", "How long Prometheus took to scrape the agent.", q(`scrape_duration_seconds{node=~"$node"}`, "{{node}}")),
			ts("Samples per scrape", "none", "", q(`scrape_samples_scraped{node=~"$node"}`, "{{node}}")),
			ts("Agent CPU", "percentunit", "CPU seconds per second.", q(`rate(process_cpu_seconds_total{node=~"$node"}[$__rate_interval])`, "{{node}}")),
			ts("Agent memory", "bytes", "Resident set size.", q(`process_resident_memory_bytes{node=~"$node"}`, "{{node}}")),
			table("Agent build", "", q(`gpunode_build_info{node=~"$node"}`, "")),
		},
	}, {
		file: "gpunode-efficiency.json", uid: "gpunode-efficiency", title: "gpunode / Inference efficiency",
		desc: "Tokens per joule, energy and cost per 1M tokens per model and llm-d role (gpunode's per-pod GPU energy joined with vLLM's token counters by the chart's recording rules), and GPUs allocated but idle.",
		vars: []variable{
			{"node", "Node", nodeVar},
			{"model", "Model", `label_values(namespace_pod_model_role:vllm_counted_tokens:rate, model_name)`},
		},
		panels: []panel{
			row("Selected models"),
			stat("Tokens per joule", "none", "Tokens served per joule of GPU energy attributed to the serving pods.",
				q(`sum(`+effTokens+`) / sum(`+effWatts+`)`, "")),
			stat("Energy per 1M tokens", "joule", "GPU energy per million tokens (3.6e6 J = 1 kWh).",
				q(`1e6 * sum(`+effWatts+`) / sum(`+effTokens+`)`, "")),
			stat("Cost per 1M tokens", "currencyUSD", "GPU-hours of the priced pods per million of their tokens, at prometheusRule.efficiency.gpuHourPrices (placeholders unless set; your currency).",
				q(`1e6 / 3600 * sum(namespace_pod_model_role:gpunode_gpu_price_per_hour:sum{`+modelSel+`}) / sum(`+effTokens+` and on (namespace, pod) namespace_pod:gpunode_gpu_price_per_hour:sum)`, "")),
			stat("Tokens per second", "none", "Tokens counted once across prefill and decode.", q(`sum(`+effTokens+`)`, "")),
			stat("GPU power of the serving pods", "watt", "GPU energy per second attributed to the pods serving the models.", q(`sum(`+effWatts+`)`, "")),
			stat("Allocated GPUs idle", "none", "GPUs whose GPUAllocatedIdle alert fires: held by a pod, below the idle threshold for an hour.",
				q(`count(ALERTS{alertname="GPUAllocatedIdle", alertstate="firing", node=~"$node"}) or vector(0)`, "")),
			row("Per model and role"),
			ts("Tokens per joule", "none", "model_role:gpunode_tokens_per_joule:ratio.",
				q(`model_role:gpunode_tokens_per_joule:ratio{`+modelSel+`}`, effLeg)),
			ts("Energy per 1M tokens", "joule", "model_role:gpunode_energy_joules_per_million_tokens:ratio (3.6e6 J = 1 kWh).",
				q(`model_role:gpunode_energy_joules_per_million_tokens:ratio{`+modelSel+`}`, effLeg)),
			ts("Cost per 1M tokens", "currencyUSD", "model_role:gpunode_cost_per_million_tokens:ratio, at the chart's GPU-hour prices.",
				q(`model_role:gpunode_cost_per_million_tokens:ratio{`+modelSel+`}`, effLeg)),
			ts("Tokens per second", "none", "Prompt tokens of prefill pods, generated tokens of decode pods, both of others.",
				q(`sum by (model_name, role, tokens) (`+effTokens+`)`, effLeg+" {{tokens}}")),
			ts("GPU power of the serving pods", "watt", "GPU energy per second attributed to the pods (by SM share; idle energy is nobody's).",
				q(`sum by (model_name, role) (`+effWatts+`)`, effLeg)),
			ts("GPU cost per hour of the serving pods", "currencyUSD", "The priced pods' GPUs per hour (a time-sliced GPU split among its pods).",
				q(`sum by (model_name, role) (namespace_pod_model_role:gpunode_gpu_price_per_hour:sum{`+modelSel+`})`, effLeg)),
			table("Serving pods", "Per pod: GPU watts (A), tokens per second (B), GPU price per hour (C).",
				q(`sum by (namespace, pod, model_name, role) (`+effWatts+`)`, ""),
				q(`sum by (namespace, pod, model_name, role) (`+effTokens+`)`, ""),
				q(`sum by (namespace, pod, model_name, role) (namespace_pod_model_role:gpunode_gpu_price_per_hour:sum{`+modelSel+`})`, "")),
			row("Allocated GPUs"),
			ts("Allocated GPUs: peak utilization over the idle window", "percentunit", "Peak utilization over prometheusRule.efficiency.idleWindow of each GPU allocated to a pod; GPUAllocatedIdle fires below prometheusRule.thresholds.gpuAllocatedIdleUtilization.",
				q(`gpunode:gpu_allocated_peak_utilization:ratio{node=~"$node"}`, gpuLeg+" {{namespace}}/{{pod}}")),
			ts("GPU cost per hour", "currencyUSD", "All GPUs of each node at the chart's GPU-hour prices, and the part allocated to pods.",
				q(`sum by (node) (gpunode:gpu_price_per_hour{node=~"$node"})`, "{{node}} all"),
				q(`sum by (node) (gpunode:gpu_price_per_hour{node=~"$node"} and on (uuid) gpunode_gpu_allocation_info)`, "{{node}} allocated")),
			table("Allocated GPUs", "Peak utilization over the idle window, lowest first: the candidates for GPUAllocatedIdle.",
				q(`sort(gpunode:gpu_allocated_peak_utilization:ratio{node=~"$node"})`, "")),
		},
	}}
}

// The inference efficiency dashboard's selections.
const (
	modelSel  = `model_name=~"$model"`
	effTokens = `namespace_pod_model_role:vllm_counted_tokens:rate{` + modelSel + `}`
	effWatts  = `namespace_pod_model_role:gpunode_gpu_pod_energy_joules:rate{` + modelSel + `}`
	effLeg    = "{{model_name}} {{role}}"
)

// model renders a dashboard as Grafana's JSON model.
func (d dashboard) model() map[string]any {
	ds := map[string]any{"type": "prometheus", "uid": "${datasource}"}
	vars := []any{map[string]any{
		"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
		"current": map[string]any{}, "hide": 0, "refresh": 1,
	}}
	for _, v := range d.vars {
		vars = append(vars, map[string]any{
			"name": v.name, "label": v.label, "type": "query", "datasource": ds,
			"definition": v.definition, "query": map[string]any{"query": v.definition, "refId": v.name},
			"refresh": 2, "multi": true, "includeAll": true, "current": map[string]any{}, "sort": 3, "hide": 0,
		})
	}
	var panels []any
	x, y, rowH := 0, 0, 0
	for i, p := range d.panels {
		w, h := p.width, 8
		switch {
		case p.kind == "row":
			w, h = 24, 1
		case p.kind == "stat" && w == 0:
			w, h = 4, 4
		case w == 0:
			w = 12
		}
		if x+w > 24 || p.kind == "row" {
			x, y = 0, y+rowH
			rowH = 0
		}
		m := map[string]any{"id": i + 1, "type": p.kind, "title": p.title, "gridPos": map[string]int{"x": x, "y": y, "w": w, "h": h}}
		if p.kind == "row" {
			m["collapsed"], m["panels"] = false, []any{}
		} else {
			m["datasource"] = ds
			if p.desc != "" {
				m["description"] = p.desc
			}
			var targets []any
			for j, qu := range p.queries {
				t := map[string]any{"refId": string(rune('A' + j)), "expr": qu.expr, "datasource": ds}
				if qu.legend != "" {
					t["legendFormat"] = qu.legend
				}
				if p.kind == "table" {
					t["instant"], t["range"], t["format"] = true, false, "table"
				}
				targets = append(targets, t)
			}
			m["targets"] = targets
			unit := p.unit
			if unit == "" {
				unit = "none"
			}
			m["fieldConfig"] = map[string]any{"defaults": map[string]any{"unit": unit}, "overrides": []any{}}
			switch p.kind {
			case "timeseries":
				m["options"] = map[string]any{"legend": map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true},
					"tooltip": map[string]any{"mode": "multi", "sort": "desc"}}
			case "stat":
				m["options"] = map[string]any{"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
					"colorMode": "value", "graphMode": "area"}
			case "table":
				m["transformations"] = []any{map[string]any{"id": "merge", "options": map[string]any{}}}
			}
		}
		panels = append(panels, m)
		x += w
		rowH = max(rowH, h)
	}
	return map[string]any{
		"uid": d.uid, "title": d.title, "description": d.desc, "tags": []string{"gpunode", "gpu", "rdma"},
		"editable": true, "schemaVersion": 39, "version": 1, "refresh": "30s", "timezone": "browser",
		"time":        map[string]any{"from": "now-6h", "to": "now"},
		"annotations": map[string]any{"list": []any{}},
		"templating":  map[string]any{"list": vars},
		"panels":      panels,
		"links":       []any{map[string]any{"title": "gpunode", "type": "dashboards", "tags": []string{"gpunode"}, "asDropdown": true}},
	}
}

func TestDashboardsUpToDate(t *testing.T) {
	for _, d := range dashboards() {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(d.model()); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dashboardDir, d.file)
		if *update {
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, buf.Bytes()) {
			t.Errorf("%s differs from its definition in %s; run go test ./test/chart -run TestDashboardsUpToDate -update", path, "dashboards_gen_test.go")
		}
	}
	entries, _ := filepath.Glob(filepath.Join(dashboardDir, "*.json"))
	if len(entries) != len(dashboards()) {
		t.Errorf("%d dashboard files, %d defined: %v", len(entries), len(dashboards()), entries)
	}
}
