// The subset of AMD SMI's C API that gpunode calls, declared by us from
// AMD's public amdsmi.h of each library version we accept. Only the types
// and constants we use are here; the functions are looked up with dlsym at
// run time (shim.c).
//
// Three layouts of the structs we exchange:
//   24.7 (ROCm 6.3): the plain amdsmi_*_t below.
//   26.x (ROCm 7.x, from amdsmi.h 26.1.0 and AMD's amdsmi docs for ROCm
//     7.0.0 to 7.1.1): the *_v26_t below. AMDSMI_MAX_STRING_LENGTH is 256
//     (asic and driver strings; 24.7's vendor_name and driver strings had
//     64, its asic_serial 32); amdsmi_power_info_t has a u64 socket_power
//     in front and u64 voltages; link_type is amdsmi_link_type_t (XGMI 2,
//     was 1); amdsmi_version_t lost its year (major, minor, release); asic
//     info gained subsystem_id (in what was reserved); from 26.1 each link
//     of amdsmi_link_metrics_t has one reserved u64 less.
//   25.x (ROCm 6.4, from AMD's amdsmi docs for ROCm 6.4.0 to 6.4.3): asic
//     info as 26.x (256-byte strings, reserved[22]); amdsmi_power_info_t
//     u64 socket_power, then current and average at the same offsets as
//     26.x (its voltages are u32 and it is shorter: read through a padded
//     buffer); links as 26.0 (56 bytes, amdsmi_io_link_type_t: XGMI 2);
//     amdsmi_version_t keeps its year ("To Be Deprecated") while the
//     library numbers itself 25.x.y. 25.2 alone (ROCm 6.4.0) takes a
//     sensor index in amdsmi_get_power_info (reverted in 25.3; ROCm's own
//     RDC and rocprofiler-systems call it so).
// The backend checks the ASIC info it reads (vendor 0x1002, a device id)
// before trusting a layout, so a wrong one reads nothing rather than
// garbage.
#ifndef GPUNODE_AMDSMI_TYPES_H
#define GPUNODE_AMDSMI_TYPES_H

#include <stdint.h>

typedef uint32_t amdsmi_status_t;
typedef void *amdsmi_socket_handle;
typedef void *amdsmi_processor_handle;

enum {
	AMDSMI_STATUS_SUCCESS = 0,
	AMDSMI_STATUS_NOT_SUPPORTED = 2,
	AMDSMI_STATUS_NOT_YET_IMPLEMENTED = 3,
	AMDSMI_STATUS_NO_PERM = 10,
	AMDSMI_STATUS_NOT_FOUND = 31,
	AMDSMI_STATUS_DRIVER_NOT_LOADED = 34,
};

#define AMDSMI_INIT_AMD_GPUS (1ull << 1)
#define AMDSMI_MEM_TYPE_VRAM 0
#define AMDSMI_TEMPERATURE_TYPE_EDGE 0
#define AMDSMI_TEMPERATURE_TYPE_HOTSPOT 1
#define AMDSMI_TEMPERATURE_TYPE_VRAM 2
#define AMDSMI_TEMP_CURRENT 0
#define AMDSMI_CLK_TYPE_GFX 0
#define AMDSMI_CLK_TYPE_MEM 4
#define AMDSMI_LINK_TYPE_XGMI 1      // 24.7: amdsmi_link_type_t {PCIE, XGMI, ...}
#define AMDSMI_LINK_TYPE_XGMI_V25 2  // 25.x amdsmi_io_link_type_t and 26.x amdsmi_link_type_t
#define AMDSMI_MAX_NUM_XGMI_PHYSICAL_LINK 64
#define AMDSMI_GPU_UUID_SIZE 38

typedef struct {
	uint32_t year;
	uint32_t major;
	uint32_t minor;
	uint32_t release;
	const char *build;
} amdsmi_version_t;

// bdf: function bits 0-2, device 3-7, bus 8-15, domain 16-63.
typedef struct {
	uint64_t as_uint;
} amdsmi_bdf_t;

typedef struct {
	char market_name[256];
	uint32_t vendor_id;
	char vendor_name[64];
	uint32_t subvendor_id;
	uint64_t device_id;
	uint32_t rev_id;
	char asic_serial[32];
	uint32_t oam_id;
	uint32_t num_of_compute_units;
	uint64_t target_graphics_version;
	uint32_t reserved[15];
} amdsmi_asic_info_t;

typedef struct {
	char driver_version[64];
	char driver_date[64];
	char driver_name[64];
} amdsmi_driver_info_t;

typedef struct {
	uint32_t current_socket_power;
	uint32_t average_socket_power;
	uint32_t gfx_voltage;
	uint32_t soc_voltage;
	uint32_t mem_voltage;
	uint32_t power_limit;
	uint32_t reserved[11];
} amdsmi_power_info_t;

typedef struct {
	uint32_t clk;
	uint32_t min_clk;
	uint32_t max_clk;
	uint8_t clk_locked;
	uint8_t clk_deep_sleep;
	uint32_t reserved[4];
} amdsmi_clk_info_t;

typedef struct {
	uint32_t gfx_activity;
	uint32_t umc_activity;
	uint32_t mm_activity;
	uint32_t reserved[13];
} amdsmi_engine_usage_t;

typedef struct {
	uint64_t correctable_count;
	uint64_t uncorrectable_count;
	uint64_t deferred_count;
	uint64_t reserved[5];
} amdsmi_error_count_t;

typedef struct {
	amdsmi_bdf_t bdf;
	uint32_t bit_rate;
	uint32_t max_bandwidth;
	uint32_t link_type; // an enum in amdsmi.h: int sized
	uint64_t read;      // KB received
	uint64_t write;     // KB sent
	uint64_t reserved[2];
} amdsmi_link_t;

typedef struct {
	uint32_t num_links;
	amdsmi_link_t links[AMDSMI_MAX_NUM_XGMI_PHYSICAL_LINK];
	uint64_t reserved[7];
} amdsmi_link_metrics_t;

// 26.x (AMDSMI_MAX_STRING_LENGTH 256).
typedef struct {
	char market_name[256];
	uint32_t vendor_id;
	char vendor_name[256];
	uint32_t subvendor_id;
	uint64_t device_id;
	uint32_t rev_id;
	char asic_serial[256];
	uint32_t oam_id;
	uint32_t num_of_compute_units;
	uint64_t target_graphics_version;
	uint32_t subsystem_id;
	uint32_t reserved[21];
} amdsmi_asic_info_v26_t;

typedef struct {
	char driver_version[256];
	char driver_date[256];
	char driver_name[256];
} amdsmi_driver_info_v26_t;

typedef struct {
	uint64_t socket_power;
	uint32_t current_socket_power;
	uint32_t average_socket_power;
	uint64_t gfx_voltage;
	uint64_t soc_voltage;
	uint64_t mem_voltage;
	uint32_t power_limit;
	uint64_t reserved[18];
} amdsmi_power_info_v26_t;

// Link metrics: 25.x (link_type an amdsmi_io_link_type_t) and 26.0
// (amdsmi_link_type_t) keep 24.7's 56-byte links, XGMI now 2; 26.1 on
// has one reserved u64 less per link (48 bytes), as AMD's amdsmi docs
// for ROCm 7.0.0 and 7.1.0 show (_links: reserved[2], then reserved[1]).
typedef struct {
	amdsmi_bdf_t bdf;
	uint32_t bit_rate;
	uint32_t max_bandwidth;
	uint32_t link_type;
	uint64_t read;
	uint64_t write;
	uint64_t reserved[1];
} amdsmi_link_v261_t;

typedef struct {
	uint32_t num_links;
	amdsmi_link_v261_t links[AMDSMI_MAX_NUM_XGMI_PHYSICAL_LINK];
	uint64_t reserved[7];
} amdsmi_link_metrics_v261_t;

// Sizes as gcc lays the public headers out on x86-64 and arm64.
_Static_assert(sizeof(amdsmi_asic_info_t) == 456, "24.7 asic info");
_Static_assert(sizeof(amdsmi_asic_info_v26_t) == 896, "26.x asic info");
_Static_assert(sizeof(amdsmi_power_info_v26_t) == 192, "26.x power info");
_Static_assert(sizeof(amdsmi_link_t) == 56 && sizeof(amdsmi_link_v261_t) == 48, "link entries");

#endif
