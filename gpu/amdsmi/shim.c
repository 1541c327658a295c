#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "shim.h"

static const char *const fns[FN_COUNT] = {
	[FN_INIT] = "amdsmi_init",
	[FN_SHUT_DOWN] = "amdsmi_shut_down",
	[FN_LIB_VERSION] = "amdsmi_get_lib_version",
	[FN_SOCKETS] = "amdsmi_get_socket_handles",
	[FN_PROCESSORS] = "amdsmi_get_processor_handles",
	[FN_BDF] = "amdsmi_get_gpu_device_bdf",
	[FN_UUID] = "amdsmi_get_gpu_device_uuid",
	[FN_ASIC] = "amdsmi_get_gpu_asic_info",
	[FN_DRIVER] = "amdsmi_get_gpu_driver_info",
	[FN_NUMA] = "amdsmi_get_gpu_topo_numa_affinity",
	[FN_MEM_TOTAL] = "amdsmi_get_gpu_memory_total",
	[FN_MEM_USAGE] = "amdsmi_get_gpu_memory_usage",
	[FN_ACTIVITY] = "amdsmi_get_gpu_activity",
	[FN_POWER] = "amdsmi_get_power_info",
	[FN_ENERGY] = "amdsmi_get_energy_count",
	[FN_TEMP] = "amdsmi_get_temp_metric",
	[FN_CLOCK] = "amdsmi_get_clock_info",
	[FN_REPLAY] = "amdsmi_get_gpu_pci_replay_counter",
	[FN_ECC] = "amdsmi_get_gpu_total_ecc_count",
	[FN_COMPUTE_PARTITION] = "amdsmi_get_gpu_compute_partition",
	[FN_MEMORY_PARTITION] = "amdsmi_get_gpu_memory_partition",
	[FN_LINK_METRICS] = "amdsmi_get_link_metrics",
};

const char *smi_fn_name(int fn) { return fn >= 0 && fn < FN_COUNT ? fns[fn] : "?"; }

int smi_has(const smi_lib *lib, int fn) { return fn >= 0 && fn < FN_COUNT && lib->fn[fn] != NULL; }

int smi_open(const char *path, smi_lib *lib, char *err, size_t errlen) {
	memset(lib, 0, sizeof(*lib));
	dlerror();
	lib->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (lib->handle == NULL) {
		const char *e = dlerror();
		snprintf(err, errlen, "%s", e ? e : "dlopen failed");
		return 1;
	}
	for (int i = 0; i < FN_COUNT; i++) {
		lib->fn[i] = dlsym(lib->handle, fns[i]);
		if (lib->fn[i] == NULL && i < FN_REQUIRED) {
			snprintf(err, errlen, "%s lacks %s", path, fns[i]);
			dlclose(lib->handle);
			memset(lib, 0, sizeof(*lib));
			return 2;
		}
	}
	return 0;
}

void smi_close(smi_lib *lib) {
	if (lib->handle != NULL) {
		dlclose(lib->handle);
	}
	memset(lib, 0, sizeof(*lib));
}

#define MISSING 0xffffffffu
#define CALL(l, id, type, ...) ((l)->fn[id] == NULL ? MISSING : ((type)(l)->fn[id])(__VA_ARGS__))
// PADDED reads a struct through a buffer 4 KiB larger than our declaration.
#define PADDED(type, name) union { type v; char pad[sizeof(type) + 4096]; } name; memset(&name, 0, sizeof(name))

amdsmi_status_t smi_init(smi_lib *l, uint64_t flags) {
	return CALL(l, FN_INIT, amdsmi_status_t (*)(uint64_t), flags);
}

amdsmi_status_t smi_shut_down(smi_lib *l) { return CALL(l, FN_SHUT_DOWN, amdsmi_status_t (*)(void)); }

amdsmi_status_t smi_lib_version(smi_lib *l, uint32_t v[4]) {
	PADDED(amdsmi_version_t, u);
	amdsmi_status_t st = CALL(l, FN_LIB_VERSION, amdsmi_status_t (*)(amdsmi_version_t *), &u.v);
	memcpy(v, &u.v, 4 * sizeof(uint32_t));
	return st;
}

void smi_set_layout(smi_lib *l, int layout, int power_sensor_arg, int short_links) {
	l->layout = layout;
	l->power_sensor_arg = power_sensor_arg;
	l->short_links = short_links;
}

// copy_str copies a NUL-padded string field into dst (256 bytes).
static void copy_str(char dst[256], const char *src, size_t n) {
	memset(dst, 0, 256);
	memcpy(dst, src, n < 255 ? n : 255);
}

// smi_gpus lists the processors of every socket into out (room for *n);
// *n is set to the number found, which may exceed the room.
amdsmi_status_t smi_gpus(smi_lib *l, amdsmi_processor_handle *out, uint32_t *n) {
	typedef amdsmi_status_t (*sockets_fn)(uint32_t *, amdsmi_socket_handle *);
	typedef amdsmi_status_t (*procs_fn)(amdsmi_socket_handle, uint32_t *, amdsmi_processor_handle *);
	amdsmi_socket_handle sockets[64];
	uint32_t ns = 0;
	amdsmi_status_t st = CALL(l, FN_SOCKETS, sockets_fn, &ns, NULL);
	if (st != AMDSMI_STATUS_SUCCESS) {
		return st;
	}
	if (ns > 64) {
		ns = 64;
	}
	st = CALL(l, FN_SOCKETS, sockets_fn, &ns, sockets);
	if (st != AMDSMI_STATUS_SUCCESS) {
		return st;
	}
	uint32_t room = *n, total = 0;
	for (uint32_t s = 0; s < ns && s < 64; s++) {
		uint32_t np = 0;
		st = CALL(l, FN_PROCESSORS, procs_fn, sockets[s], &np, NULL);
		if (st != AMDSMI_STATUS_SUCCESS) {
			return st;
		}
		amdsmi_processor_handle procs[64];
		if (np > 64) {
			np = 64;
		}
		st = CALL(l, FN_PROCESSORS, procs_fn, sockets[s], &np, procs);
		if (st != AMDSMI_STATUS_SUCCESS) {
			return st;
		}
		for (uint32_t p = 0; p < np && p < 64; p++, total++) {
			if (total < room) {
				out[total] = procs[p];
			}
		}
	}
	*n = total;
	return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t smi_bdf(smi_lib *l, amdsmi_processor_handle h, uint64_t *bdf) {
	PADDED(amdsmi_bdf_t, u);
	amdsmi_status_t st = CALL(l, FN_BDF, amdsmi_status_t (*)(amdsmi_processor_handle, amdsmi_bdf_t *), h, &u.v);
	*bdf = u.v.as_uint;
	return st;
}

amdsmi_status_t smi_uuid(smi_lib *l, amdsmi_processor_handle h, char *buf, unsigned int len) {
	unsigned int n = len - 1;
	memset(buf, 0, len);
	return CALL(l, FN_UUID, amdsmi_status_t (*)(amdsmi_processor_handle, unsigned int *, char *), h, &n, buf);
}

#define STRUCT_CALL(fn_id, type)                                                                 \
	PADDED(type, u);                                                                             \
	amdsmi_status_t st = CALL(l, fn_id, amdsmi_status_t (*)(amdsmi_processor_handle, type *), h, &u.v); \
	*out = u.v;                                                                                  \
	return st

// RAW_CALL reads a struct of the given type into a padded buffer u.
#define RAW_CALL(fn_id, type)                                                                  \
	PADDED(type, u);                                                                           \
	amdsmi_status_t st = CALL(l, fn_id, amdsmi_status_t (*)(amdsmi_processor_handle, type *), h, &u.v)

amdsmi_status_t smi_asic(smi_lib *l, amdsmi_processor_handle h, smi_asic_t *out) {
	memset(out, 0, sizeof(*out));
	if (l->layout >= LAYOUT_25) {
		RAW_CALL(FN_ASIC, amdsmi_asic_info_v26_t);
		copy_str(out->market_name, u.v.market_name, sizeof(u.v.market_name));
		copy_str(out->asic_serial, u.v.asic_serial, sizeof(u.v.asic_serial));
		out->vendor_id = u.v.vendor_id, out->device_id = u.v.device_id;
		out->num_of_compute_units = u.v.num_of_compute_units;
		return st;
	}
	RAW_CALL(FN_ASIC, amdsmi_asic_info_t);
	copy_str(out->market_name, u.v.market_name, sizeof(u.v.market_name));
	copy_str(out->asic_serial, u.v.asic_serial, sizeof(u.v.asic_serial));
	out->vendor_id = u.v.vendor_id, out->device_id = u.v.device_id;
	out->num_of_compute_units = u.v.num_of_compute_units;
	return st;
}

amdsmi_status_t smi_driver(smi_lib *l, amdsmi_processor_handle h, smi_driver_t *out) {
	if (l->layout >= LAYOUT_25) {
		RAW_CALL(FN_DRIVER, amdsmi_driver_info_v26_t);
		copy_str(out->driver_version, u.v.driver_version, sizeof(u.v.driver_version));
		return st;
	}
	RAW_CALL(FN_DRIVER, amdsmi_driver_info_t);
	copy_str(out->driver_version, u.v.driver_version, sizeof(u.v.driver_version));
	return st;
}
amdsmi_status_t smi_activity(smi_lib *l, amdsmi_processor_handle h, amdsmi_engine_usage_t *out) {
	STRUCT_CALL(FN_ACTIVITY, amdsmi_engine_usage_t);
}
amdsmi_status_t smi_power(smi_lib *l, amdsmi_processor_handle h, smi_power_t *out) {
	if (l->layout >= LAYOUT_25) {
		PADDED(amdsmi_power_info_v26_t, u);
		amdsmi_status_t st;
		if (l->power_sensor_arg) { // 25.2: (handle, sensor index, info)
			st = CALL(l, FN_POWER, amdsmi_status_t (*)(amdsmi_processor_handle, uint32_t, amdsmi_power_info_v26_t *), h, 0, &u.v);
		} else {
			st = CALL(l, FN_POWER, amdsmi_status_t (*)(amdsmi_processor_handle, amdsmi_power_info_v26_t *), h, &u.v);
		}
		out->current_socket_power = u.v.current_socket_power, out->average_socket_power = u.v.average_socket_power;
		return st;
	}
	RAW_CALL(FN_POWER, amdsmi_power_info_t);
	out->current_socket_power = u.v.current_socket_power, out->average_socket_power = u.v.average_socket_power;
	return st;
}
amdsmi_status_t smi_ecc(smi_lib *l, amdsmi_processor_handle h, amdsmi_error_count_t *out) {
	STRUCT_CALL(FN_ECC, amdsmi_error_count_t);
}
// LINKS converts a link metrics struct u.v of either layout into out. A
// link type outside the enums' 0-4 (or 0xffffffff, amdsmi_io_link_type_t's
// SIZE) means the entries are not where we read them: that is
// AMDSMI_STATUS_UNEXPECTED_DATA (43), not links.
#define LINKS(xgmi_type)                                                                       \
	memset(out, 0, sizeof(*out));                                                              \
	if (st != AMDSMI_STATUS_SUCCESS) return st;                                                \
	out->num_links = u.v.num_links;                                                            \
	for (uint32_t i = 0; i < u.v.num_links && i < AMDSMI_MAX_NUM_XGMI_PHYSICAL_LINK; i++) {     \
		if (u.v.links[i].link_type > 4) {                                                      \
			memset(out, 0, sizeof(*out));                                                      \
			return 43;                                                                         \
		}                                                                                      \
		out->links[i].bit_rate = u.v.links[i].bit_rate;                                        \
		out->links[i].xgmi = u.v.links[i].link_type == (xgmi_type);                            \
		out->links[i].read = u.v.links[i].read, out->links[i].write = u.v.links[i].write;      \
	}                                                                                          \
	return st

amdsmi_status_t smi_links(smi_lib *l, amdsmi_processor_handle h, smi_links_t *out) {
	if (l->short_links) {
		RAW_CALL(FN_LINK_METRICS, amdsmi_link_metrics_v261_t);
		LINKS(AMDSMI_LINK_TYPE_XGMI_V25);
	}
	// 24.7's struct; 25.x and 26.0 lay their links out the same.
	RAW_CALL(FN_LINK_METRICS, amdsmi_link_metrics_t);
	LINKS(l->layout >= LAYOUT_25 ? AMDSMI_LINK_TYPE_XGMI_V25 : AMDSMI_LINK_TYPE_XGMI);
}

amdsmi_status_t smi_numa(smi_lib *l, amdsmi_processor_handle h, int32_t *node) {
	return CALL(l, FN_NUMA, amdsmi_status_t (*)(amdsmi_processor_handle, int32_t *), h, node);
}

amdsmi_status_t smi_mem_total(smi_lib *l, amdsmi_processor_handle h, uint64_t *v) {
	return CALL(l, FN_MEM_TOTAL, amdsmi_status_t (*)(amdsmi_processor_handle, uint32_t, uint64_t *), h, AMDSMI_MEM_TYPE_VRAM, v);
}

amdsmi_status_t smi_mem_usage(smi_lib *l, amdsmi_processor_handle h, uint64_t *v) {
	return CALL(l, FN_MEM_USAGE, amdsmi_status_t (*)(amdsmi_processor_handle, uint32_t, uint64_t *), h, AMDSMI_MEM_TYPE_VRAM, v);
}

amdsmi_status_t smi_energy(smi_lib *l, amdsmi_processor_handle h, uint64_t *acc, float *resolution) {
	uint64_t ts = 0;
	return CALL(l, FN_ENERGY, amdsmi_status_t (*)(amdsmi_processor_handle, uint64_t *, float *, uint64_t *), h, acc, resolution, &ts);
}

amdsmi_status_t smi_temp(smi_lib *l, amdsmi_processor_handle h, uint32_t sensor, int64_t *c) {
	return CALL(l, FN_TEMP, amdsmi_status_t (*)(amdsmi_processor_handle, uint32_t, uint32_t, int64_t *), h, sensor, AMDSMI_TEMP_CURRENT, c);
}

amdsmi_status_t smi_clock(smi_lib *l, amdsmi_processor_handle h, uint32_t clk, amdsmi_clk_info_t *out) {
	PADDED(amdsmi_clk_info_t, u);
	amdsmi_status_t st = CALL(l, FN_CLOCK, amdsmi_status_t (*)(amdsmi_processor_handle, uint32_t, amdsmi_clk_info_t *), h, clk, &u.v);
	*out = u.v;
	return st;
}

amdsmi_status_t smi_replay(smi_lib *l, amdsmi_processor_handle h, uint64_t *v) {
	return CALL(l, FN_REPLAY, amdsmi_status_t (*)(amdsmi_processor_handle, uint64_t *), h, v);
}

amdsmi_status_t smi_partition(smi_lib *l, amdsmi_processor_handle h, int memory, char *buf, uint32_t len) {
	memset(buf, 0, len);
	int id = memory ? FN_MEMORY_PARTITION : FN_COMPUTE_PARTITION;
	return CALL(l, id, amdsmi_status_t (*)(amdsmi_processor_handle, char *, uint32_t), h, buf, len - 1);
}
