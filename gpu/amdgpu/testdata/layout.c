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
	return 0;
}
