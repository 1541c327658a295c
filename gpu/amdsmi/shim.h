// A small run-time binding to libamd_smi.so: the library is opened with
// dlopen and every function looked up with dlsym, so the agent binary
// needs no ROCm at build time and starts on nodes without it.
#ifndef GPUNODE_AMDSMI_SHIM_H
#define GPUNODE_AMDSMI_SHIM_H

#include <stddef.h>
#include "amdsmi_types.h"

// The functions we call, in the order of the fns table in shim.c.
enum smi_fn {
	FN_INIT, FN_SHUT_DOWN, FN_LIB_VERSION, FN_SOCKETS, FN_PROCESSORS,
	// Required ends here: without these there is nothing to list.
	FN_REQUIRED,
	FN_BDF = FN_REQUIRED, FN_UUID, FN_ASIC, FN_DRIVER, FN_NUMA, FN_MEM_TOTAL, FN_MEM_USAGE,
	FN_ACTIVITY, FN_POWER, FN_ENERGY, FN_TEMP, FN_CLOCK, FN_REPLAY, FN_ECC,
	FN_COMPUTE_PARTITION, FN_MEMORY_PARTITION, FN_LINK_METRICS,
	FN_COUNT
};

// The struct layouts a library uses (amdsmi_types.h).
enum smi_layout { LAYOUT_24 = 24, LAYOUT_25 = 25, LAYOUT_26 = 26 };

typedef struct {
	void *handle;
	void *fn[FN_COUNT];
	int layout;           // enum smi_layout; set once the version is known
	int power_sensor_arg; // amdsmi_get_power_info takes a sensor index (25.2 only)
	int short_links;      // 48-byte link entries (26.1 on)
} smi_lib;

// What we read, the same whatever the library's layout: the wrappers
// below convert each layout's struct into these.
typedef struct {
	char market_name[256];
	uint32_t vendor_id;
	uint64_t device_id;
	char asic_serial[256];
	uint32_t num_of_compute_units;
} smi_asic_t;

typedef struct {
	char driver_version[256];
} smi_driver_t;

typedef struct {
	uint32_t current_socket_power;
	uint32_t average_socket_power;
} smi_power_t;

typedef struct {
	uint32_t bit_rate;
	int xgmi;
	uint64_t read;  // KB received
	uint64_t write; // KB sent
} smi_link_t;

typedef struct {
	uint32_t num_links;
	smi_link_t links[AMDSMI_MAX_NUM_XGMI_PHYSICAL_LINK];
} smi_links_t;

// smi_open loads path and looks up every function. It returns 0 on
// success, 1 when the library cannot be loaded and 2 when a required
// function is missing; err says which.
int smi_open(const char *path, smi_lib *lib, char *err, size_t errlen);
void smi_close(smi_lib *lib);
const char *smi_fn_name(int fn);
int smi_has(const smi_lib *lib, int fn);

// Wrappers: each returns the library's status, or 0xffffffff when the
// function is missing. Structs are read into padded buffers, so a newer
// library writing a larger struct cannot overrun ours.
amdsmi_status_t smi_init(smi_lib *l, uint64_t flags);
amdsmi_status_t smi_shut_down(smi_lib *l);
// smi_lib_version reads amdsmi_version_t's first four 32-bit words: year,
// major, minor, release up to 24.x; major, minor, release (and padding)
// from 26.x; the Go side tells them apart.
amdsmi_status_t smi_lib_version(smi_lib *l, uint32_t v[4]);
void smi_set_layout(smi_lib *l, int layout, int power_sensor_arg, int short_links);
amdsmi_status_t smi_gpus(smi_lib *l, amdsmi_processor_handle *out, uint32_t *n);
amdsmi_status_t smi_bdf(smi_lib *l, amdsmi_processor_handle h, uint64_t *bdf);
amdsmi_status_t smi_uuid(smi_lib *l, amdsmi_processor_handle h, char *buf, unsigned int len);
amdsmi_status_t smi_asic(smi_lib *l, amdsmi_processor_handle h, smi_asic_t *out);
amdsmi_status_t smi_driver(smi_lib *l, amdsmi_processor_handle h, smi_driver_t *out);
amdsmi_status_t smi_numa(smi_lib *l, amdsmi_processor_handle h, int32_t *node);
amdsmi_status_t smi_mem_total(smi_lib *l, amdsmi_processor_handle h, uint64_t *v);
amdsmi_status_t smi_mem_usage(smi_lib *l, amdsmi_processor_handle h, uint64_t *v);
amdsmi_status_t smi_activity(smi_lib *l, amdsmi_processor_handle h, amdsmi_engine_usage_t *out);
amdsmi_status_t smi_power(smi_lib *l, amdsmi_processor_handle h, smi_power_t *out);
amdsmi_status_t smi_energy(smi_lib *l, amdsmi_processor_handle h, uint64_t *acc, float *resolution);
amdsmi_status_t smi_temp(smi_lib *l, amdsmi_processor_handle h, uint32_t sensor, int64_t *c);
amdsmi_status_t smi_clock(smi_lib *l, amdsmi_processor_handle h, uint32_t clk, amdsmi_clk_info_t *out);
amdsmi_status_t smi_replay(smi_lib *l, amdsmi_processor_handle h, uint64_t *v);
amdsmi_status_t smi_ecc(smi_lib *l, amdsmi_processor_handle h, amdsmi_error_count_t *out);
amdsmi_status_t smi_partition(smi_lib *l, amdsmi_processor_handle h, int memory, char *buf, uint32_t len);
amdsmi_status_t smi_links(smi_lib *l, amdsmi_processor_handle h, smi_links_t *out);

#endif
