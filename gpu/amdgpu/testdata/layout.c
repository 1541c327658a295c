/* The gpu_metrics revisions the parser supports, declared as C structs
 * (from the kernel's kgd_pp_interface.h documentation), so the test can
 * check the Go layout table against what a C compiler makes of them. It
 * prints "<revision> <member> <offset>" lines and "<revision> sizeof <n>". */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct header { uint16_t structure_size; uint8_t format_revision, content_revision; };

#define V11_MEMBERS                                                                                   \
	struct header common_header;                                                                      \
	uint16_t temperature_edge, temperature_hotspot, temperature_mem, temperature_vrgfx,               \
		temperature_vrsoc, temperature_vrmem;                                                         \
	uint16_t average_gfx_activity, average_umc_activity, average_mm_activity;                         \
	uint16_t average_socket_power;                                                                    \
	uint64_t energy_accumulator;                                                                      \
	uint64_t system_clock_counter;                                                                    \
	uint16_t average_gfxclk_frequency, average_socclk_frequency, average_uclk_frequency,              \
		average_vclk0_frequency, average_dclk0_frequency, average_vclk1_frequency,                    \
		average_dclk1_frequency;                                                                      \
	uint16_t current_gfxclk, current_socclk, current_uclk, current_vclk0, current_dclk0,              \
		current_vclk1, current_dclk1;                                                                 \
	uint32_t throttle_status;                                                                         \
	uint16_t current_fan_speed;                                                                       \
	uint16_t pcie_link_width, pcie_link_speed;                                                        \
	uint16_t padding;                                                                                 \
	uint32_t gfx_activity_acc, mem_activity_acc;                                                      \
	uint16_t temperature_hbm[4];

struct v11 { V11_MEMBERS };
struct v12 { V11_MEMBERS uint64_t firmware_timestamp; };
struct v13 {
	V11_MEMBERS uint64_t firmware_timestamp;
	uint16_t voltage_soc, voltage_gfx, voltage_mem, padding1;
	uint64_t indep_throttle_status;
};

#define V14_HEAD                                                                \
	struct header common_header;                                                \
	uint16_t temperature_hotspot, temperature_mem, temperature_vrsoc;           \
	uint16_t curr_socket_power;                                                 \
	uint16_t average_gfx_activity, average_umc_activity;                        \
	uint16_t vcn_activity[4];
#define V14_MID                                                                 \
	uint64_t energy_accumulator, system_clock_counter;                          \
	uint32_t throttle_status, gfxclk_lock_status;                               \
	uint16_t pcie_link_width, pcie_link_speed, xgmi_link_width, xgmi_link_speed; \
	uint32_t gfx_activity_acc, mem_activity_acc;                                \
	uint64_t pcie_bandwidth_acc, pcie_bandwidth_inst, pcie_l0_to_recov_count_acc, \
		pcie_replay_count_acc, pcie_replay_rover_count_acc;
#define V14_TAIL                                                                \
	uint64_t xgmi_read_data_acc[8], xgmi_write_data_acc[8];                     \
	uint64_t firmware_timestamp;                                                \
	uint16_t current_gfxclk[8], current_socclk[4], current_vclk0[4], current_dclk0[4]; \
	uint16_t current_uclk, padding;

struct v14 { V14_HEAD V14_MID V14_TAIL };
struct v15 {
	V14_HEAD uint16_t jpeg_activity[32];
	V14_MID uint32_t pcie_nak_sent_count_acc, pcie_nak_rcvd_count_acc;
	V14_TAIL
};

/* 1.6 to 1.8: the kernel's per-partition stats (amdgpu_xcp_metrics, _v1_1,
 * _v1_2; MAX_XCC 8, NUM_JPEG_ENG 32, NUM_JPEG_ENG_V1 40, NUM_VCN 4, NUM_XCP 8). */
struct xcp10 { uint32_t gfx_busy_inst[8]; uint16_t jpeg_busy[32], vcn_busy[4]; uint64_t gfx_busy_acc[8]; };
struct xcp11 { struct xcp10 base; uint64_t gfx_below_host_limit_acc[8]; };
struct xcp12 {
	uint32_t gfx_busy_inst[8]; uint16_t jpeg_busy[40], vcn_busy[4]; uint64_t gfx_busy_acc[8];
	uint64_t gfx_below_host_limit_ppt_acc[8], gfx_below_host_limit_thm_acc[8], gfx_low_utilization_acc[8],
		gfx_below_host_limit_total_acc[8];
};

#define RESIDENCIES                                                             \
	uint32_t accumulation_counter, prochot_residency_acc, ppt_residency_acc,   \
		socket_thm_residency_acc, vr_thm_residency_acc, hbm_thm_residency_acc;
#define V16_PCIE                                                                \
	uint16_t pcie_link_width, pcie_link_speed, xgmi_link_width, xgmi_link_speed; \
	uint32_t gfx_activity_acc, mem_activity_acc;                                \
	uint64_t pcie_bandwidth_acc, pcie_bandwidth_inst, pcie_l0_to_recov_count_acc, \
		pcie_replay_count_acc, pcie_replay_rover_count_acc;                     \
	uint32_t pcie_nak_sent_count_acc, pcie_nak_rcvd_count_acc;                  \
	uint64_t xgmi_read_data_acc[8], xgmi_write_data_acc[8];
#define V16_CLOCKS                                                              \
	uint16_t current_gfxclk[8], current_socclk[4], current_vclk0[4], current_dclk0[4]; \
	uint16_t current_uclk;
#define V16_HEAD                                                                \
	struct header common_header;                                                \
	uint16_t temperature_hotspot, temperature_mem, temperature_vrsoc;           \
	uint16_t curr_socket_power;                                                 \
	uint16_t average_gfx_activity, average_umc_activity;

/* 1.6 as first added: 1.5 plus the residencies. */
struct v16early {
	V14_HEAD uint16_t jpeg_activity[32];
	uint64_t energy_accumulator, system_clock_counter;
	RESIDENCIES
	uint32_t throttle_status, gfxclk_lock_status;
	V16_PCIE
	uint64_t firmware_timestamp;
	V16_CLOCKS
	uint16_t padding;
};
/* 1.6 as the kernel declares it now. */
struct v16 {
	V16_HEAD
	uint64_t energy_accumulator, system_clock_counter;
	RESIDENCIES
	uint32_t gfxclk_lock_status;
	V16_PCIE
	uint64_t firmware_timestamp;
	V16_CLOCKS
	uint16_t num_partition;
	struct xcp10 xcp_stats[8];
	uint32_t pcie_lc_perf_other_end_recovery;
};
#define V17_LIKE(xcp)                                                           \
	V16_HEAD                                                                    \
	uint64_t mem_max_bandwidth, energy_accumulator, system_clock_counter;       \
	RESIDENCIES                                                                 \
	uint32_t gfxclk_lock_status;                                                \
	V16_PCIE                                                                    \
	uint16_t xgmi_link_status[8];                                               \
	uint16_t padding;                                                           \
	uint64_t firmware_timestamp;                                                \
	V16_CLOCKS                                                                  \
	uint16_t num_partition;                                                     \
	struct xcp xcp_stats[8];                                                    \
	uint32_t pcie_lc_perf_other_end_recovery;
struct v17 { V17_LIKE(xcp11) };
struct v18 { V17_LIKE(xcp12) };

#define P(rev, s, m) printf("%s %s %zu\n", rev, #m, offsetof(struct s, m))

int main(void) {
	P("1.1", v11, temperature_edge); P("1.1", v11, temperature_hotspot); P("1.1", v11, temperature_mem);
	P("1.1", v11, average_gfx_activity); P("1.1", v11, average_umc_activity); P("1.1", v11, average_socket_power);
	P("1.1", v11, energy_accumulator); P("1.1", v11, current_gfxclk); P("1.1", v11, current_uclk);
	P("1.1", v11, pcie_link_width); P("1.1", v11, pcie_link_speed); P("1.1", v11, temperature_hbm);
	printf("1.1 sizeof %zu\n", sizeof(struct v11));
	P("1.2", v12, firmware_timestamp);
	printf("1.2 sizeof %zu\n", sizeof(struct v12));
	P("1.3", v13, energy_accumulator); P("1.3", v13, current_uclk); P("1.3", v13, firmware_timestamp);
	P("1.3", v13, indep_throttle_status);
	printf("1.3 sizeof %zu\n", sizeof(struct v13));
	P("1.4", v14, temperature_hotspot); P("1.4", v14, temperature_mem); P("1.4", v14, curr_socket_power);
	P("1.4", v14, average_gfx_activity); P("1.4", v14, average_umc_activity); P("1.4", v14, energy_accumulator);
	P("1.4", v14, system_clock_counter); P("1.4", v14, pcie_link_width); P("1.4", v14, pcie_link_speed);
	P("1.4", v14, xgmi_link_width); P("1.4", v14, xgmi_link_speed); P("1.4", v14, pcie_replay_count_acc);
	P("1.4", v14, xgmi_read_data_acc); P("1.4", v14, xgmi_write_data_acc); P("1.4", v14, current_gfxclk);
	P("1.4", v14, current_uclk);
	printf("1.4 sizeof %zu\n", sizeof(struct v14));
	P("1.5", v15, temperature_hotspot); P("1.5", v15, temperature_mem); P("1.5", v15, curr_socket_power);
	P("1.5", v15, average_gfx_activity); P("1.5", v15, average_umc_activity); P("1.5", v15, jpeg_activity);
	P("1.5", v15, energy_accumulator); P("1.5", v15, system_clock_counter); P("1.5", v15, pcie_link_width);
	P("1.5", v15, pcie_link_speed); P("1.5", v15, xgmi_link_width); P("1.5", v15, xgmi_link_speed);
	P("1.5", v15, pcie_replay_count_acc); P("1.5", v15, pcie_nak_sent_count_acc); P("1.5", v15, xgmi_read_data_acc);
	P("1.5", v15, xgmi_write_data_acc); P("1.5", v15, current_gfxclk); P("1.5", v15, current_uclk);
	printf("1.5 sizeof %zu\n", sizeof(struct v15));
#define V16_COMMON(rev, s)                                                                                 \
	P(rev, s, temperature_hotspot); P(rev, s, temperature_mem); P(rev, s, curr_socket_power);            \
	P(rev, s, average_gfx_activity); P(rev, s, average_umc_activity); P(rev, s, energy_accumulator);     \
	P(rev, s, system_clock_counter); P(rev, s, accumulation_counter); P(rev, s, hbm_thm_residency_acc);  \
	P(rev, s, gfxclk_lock_status); P(rev, s, pcie_link_width); P(rev, s, pcie_link_speed);               \
	P(rev, s, xgmi_link_width); P(rev, s, xgmi_link_speed); P(rev, s, pcie_replay_count_acc);            \
	P(rev, s, pcie_nak_rcvd_count_acc); P(rev, s, xgmi_read_data_acc); P(rev, s, xgmi_write_data_acc);   \
	P(rev, s, firmware_timestamp); P(rev, s, current_gfxclk); P(rev, s, current_uclk);                   \
	printf("%s sizeof %zu\n", rev, sizeof(struct s));
	V16_COMMON("1.6-early", v16early);
	P("1.6-early", v16early, jpeg_activity); P("1.6-early", v16early, throttle_status);
	V16_COMMON("1.6", v16);
	P("1.6", v16, num_partition); P("1.6", v16, xcp_stats); P("1.6", v16, pcie_lc_perf_other_end_recovery);
	V16_COMMON("1.7", v17);
	P("1.7", v17, mem_max_bandwidth); P("1.7", v17, xgmi_link_status); P("1.7", v17, num_partition);
	P("1.7", v17, xcp_stats); P("1.7", v17, pcie_lc_perf_other_end_recovery);
	V16_COMMON("1.8", v18);
	P("1.8", v18, mem_max_bandwidth); P("1.8", v18, xgmi_link_status); P("1.8", v18, num_partition);
	P("1.8", v18, xcp_stats); P("1.8", v18, pcie_lc_perf_other_end_recovery);
	return 0;
}
