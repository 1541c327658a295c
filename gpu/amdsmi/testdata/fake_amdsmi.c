/* A stand-in libamd_smi.so for tests: two MI300X GPUs on two sockets with
 * canned values. FAKE_LAYOUT picks the library it stands in for, with its
 * own structs and version numbering:
 *   FAKE_LAYOUT=24      AMD SMI 24.7 (ROCm 6.3), the default: year.major...
 *   FAKE_LAYOUT=25      AMD SMI 25.x (ROCm 6.4): 256-byte strings, the
 *                       year member kept but unused, XGMI links of type 2;
 *                       FAKE_MINOR=2 (ROCm 6.4.0) takes a sensor index in
 *                       amdsmi_get_power_info
 *   FAKE_LAYOUT=26      AMD SMI 26.x (ROCm 7.x): as 25.x, no year member;
 *                       from FAKE_MINOR=1 (ROCm 7.1) one reserved u64 less
 *                       per link
 * Its 25.x/26.x structs are declared here, apart from the shim's, from the
 * public amdsmi.h (26.1.0) and AMD's amdsmi docs for ROCm 6.4 and 7.0. Build-time switches make the faults the tests
 * need:
 *   FAKE_YEAR=n         (24) amdsmi_get_lib_version reports year n
 *   FAKE_MAJOR=n        ... and major version n (25, 26: the major)
 *   FAKE_MINOR=n        (25, 26) the minor version
 *   FAKE_LONG_LINKS     (26.1 on) 26.0's longer link entries
 *   OMIT_PROCESSORS     amdsmi_get_processor_handles is not exported
 *   OMIT_LINKS          amdsmi_get_link_metrics is not exported
 *   INIT_STATUS=n       amdsmi_init returns n
 *   FAIL_GPU=i          GPU i fails its activity call (no permission) and
 *                       does not support ECC counts
 *   BIG_STRUCTS         struct-filling calls write 2 KiB past our structs,
 *                       as a newer library with larger structs would
 * Each call also counts, so tests can see the shim did call it. */
#include <string.h>
#include "../amdsmi_types.h"

#ifndef FAKE_LAYOUT
#define FAKE_LAYOUT 24
#endif
#ifndef FAKE_YEAR
#define FAKE_YEAR 24
#endif
#ifndef FAKE_MAJOR
#if FAKE_LAYOUT == 24
#define FAKE_MAJOR 7
#else
#define FAKE_MAJOR FAKE_LAYOUT
#endif
#endif
#ifndef FAKE_MINOR
#define FAKE_MINOR 3
#endif

#if FAKE_LAYOUT >= 25
/* amdsmi.h 25.x/26.x (AMDSMI_MAX_STRING_LENGTH 256). */
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
} asic_info_t;
typedef struct {
	char driver_version[256];
	char driver_date[256];
	char driver_name[256];
} driver_info_t;
#if FAKE_LAYOUT == 25
/* ROCm 6.4's: u32 voltages, two reserved words. */
typedef struct {
	uint64_t socket_power;
	uint32_t current_socket_power;
	uint32_t average_socket_power;
	uint32_t gfx_voltage, soc_voltage, mem_voltage;
	uint32_t power_limit;
	uint32_t reserved[2];
} power_info_t;
#else
typedef struct {
	uint64_t socket_power;
	uint32_t current_socket_power;
	uint32_t average_socket_power;
	uint64_t gfx_voltage, soc_voltage, mem_voltage;
	uint32_t power_limit;
	uint64_t reserved[18];
} power_info_t;
#endif
typedef struct {
	uint32_t num_links;
	struct {
		amdsmi_bdf_t bdf;
		uint32_t bit_rate, max_bandwidth;
		uint32_t link_type; /* amdsmi_io_link_type_t (25.x), amdsmi_link_type_t (26.x): PCIe 1, XGMI 2 */
		uint64_t read, write;
#if FAKE_LAYOUT == 26 && FAKE_MINOR >= 1 && !defined(FAKE_LONG_LINKS)
		uint64_t reserved[1]; /* 26.1 on */
#else
		uint64_t reserved[2];
#endif
	} links[64];
	uint64_t reserved[7];
} link_metrics_t;
#define LINK_PCIE 1
#define LINK_XGMI 2
#else
typedef amdsmi_asic_info_t asic_info_t;
typedef amdsmi_driver_info_t driver_info_t;
typedef amdsmi_power_info_t power_info_t;
typedef amdsmi_link_metrics_t link_metrics_t;
#define LINK_PCIE 0
#define LINK_XGMI AMDSMI_LINK_TYPE_XGMI
#endif
#ifndef INIT_STATUS
#define INIT_STATUS 0
#endif
#ifndef FAIL_GPU
#define FAIL_GPU -1
#endif

struct gpu { int index; uint64_t bdf; int numa; };
static struct gpu gpus[2] __attribute__((unused)) = {{0, (0x15ull << 8), 0}, {1, (0x85ull << 8) | (1ull << 16), 1}};
static int sockets[2];
static int initialised;
static uint64_t energy_calls;

static int idx(amdsmi_processor_handle h) {
	return ((struct gpu *)h)->index;
}

#ifdef BIG_STRUCTS
#define FILL(p) memset((char *)(p) + sizeof(*(p)), 0x41, 2048)
#else
#define FILL(p) (void)0
#endif

amdsmi_status_t amdsmi_init(uint64_t flags) {
	if (!(flags & AMDSMI_INIT_AMD_GPUS)) return 1;
	initialised = INIT_STATUS == 0;
	return INIT_STATUS;
}

amdsmi_status_t amdsmi_shut_down(void) {
	initialised = 0;
	return 0;
}

#if FAKE_LAYOUT == 24
amdsmi_status_t amdsmi_get_lib_version(amdsmi_version_t *v) {
	v->year = FAKE_YEAR, v->major = FAKE_MAJOR, v->minor = 0, v->release = 1, v->build = "24.7.0.1";
	return 0;
}
#elif FAKE_LAYOUT == 25
/* ROCm 6.4: numbered major.minor.release, the year member still there. */
typedef struct { uint32_t year, major, minor, release; const char *build; } version_t;
amdsmi_status_t amdsmi_get_lib_version(version_t *v) {
	v->year = 0, v->major = FAKE_MAJOR, v->minor = FAKE_MINOR, v->release = 0, v->build = "25.x";
	return 0;
}
#else
typedef struct { uint32_t major, minor, release; const char *build; } version_t;
amdsmi_status_t amdsmi_get_lib_version(version_t *v) {
	v->major = FAKE_MAJOR, v->minor = FAKE_MINOR, v->release = 0, v->build = "26.x";
	return 0;
}
#endif

amdsmi_status_t amdsmi_get_socket_handles(uint32_t *n, amdsmi_socket_handle *out) {
	if (!initialised) return 32;
	if (out != NULL) {
		for (uint32_t i = 0; i < *n && i < 2; i++) out[i] = &sockets[i];
	}
	*n = 2;
	return 0;
}

#ifndef OMIT_PROCESSORS
amdsmi_status_t amdsmi_get_processor_handles(amdsmi_socket_handle s, uint32_t *n, amdsmi_processor_handle *out) {
	int k = (int *)s - sockets;
	if (k < 0 || k > 1) return 1;
	if (out != NULL && *n >= 1) out[0] = &gpus[k];
	*n = 1;
	return 0;
}
#endif

amdsmi_status_t amdsmi_get_gpu_device_bdf(amdsmi_processor_handle h, amdsmi_bdf_t *b) {
	b->as_uint = ((struct gpu *)h)->bdf;
	return 0;
}

amdsmi_status_t amdsmi_get_gpu_device_uuid(amdsmi_processor_handle h, unsigned int *len, char *uuid) {
	const char *u = idx(h) == 0 ? "a1ff74a1-0000-1000-8000-fa48d93f5452" : "b2ff74a1-0000-1000-8000-7061a8a42be9";
	if (*len < strlen(u) + 1) return 1;
	strcpy(uuid, u);
	return 0;
}

amdsmi_status_t amdsmi_get_gpu_asic_info(amdsmi_processor_handle h, asic_info_t *a) {
	memset(a, 0, sizeof(*a));
	strcpy(a->market_name, "AMD Instinct MI300X");
	a->vendor_id = 0x1002, a->device_id = 0x74a1, a->num_of_compute_units = 304;
	strcpy(a->asic_serial, idx(h) == 0 ? "0x1234" : "0x5678");
	FILL(a);
	return 0;
}

amdsmi_status_t amdsmi_get_gpu_driver_info(amdsmi_processor_handle h, driver_info_t *d) {
	(void)h;
	memset(d, 0, sizeof(*d));
	strcpy(d->driver_version, "6.10.5");
	strcpy(d->driver_name, "amdgpu");
	FILL(d);
	return 0;
}

amdsmi_status_t amdsmi_get_gpu_topo_numa_affinity(amdsmi_processor_handle h, int32_t *n) {
	*n = ((struct gpu *)h)->numa;
	return 0;
}

amdsmi_status_t amdsmi_get_gpu_memory_total(amdsmi_processor_handle h, uint32_t type, uint64_t *v) {
	(void)h;
	if (type != AMDSMI_MEM_TYPE_VRAM) return 1;
	*v = 206141652992ull;
	return 0;
}

amdsmi_status_t amdsmi_get_gpu_memory_usage(amdsmi_processor_handle h, uint32_t type, uint64_t *v) {
	if (type != AMDSMI_MEM_TYPE_VRAM) return 1;
	*v = idx(h) == 0 ? 100ull << 30 : 50ull << 30;
	return 0;
}

amdsmi_status_t amdsmi_get_gpu_activity(amdsmi_processor_handle h, amdsmi_engine_usage_t *u) {
	if (idx(h) == FAIL_GPU) return AMDSMI_STATUS_NO_PERM;
	memset(u, 0, sizeof(*u));
	u->gfx_activity = 87, u->umc_activity = 30, u->mm_activity = 0xffffffff;
	FILL(u);
	return 0;
}

#if FAKE_LAYOUT == 25 && FAKE_MINOR == 2
amdsmi_status_t amdsmi_get_power_info(amdsmi_processor_handle h, uint32_t sensor, power_info_t *p) {
	if (sensor != 0) return 1;
#else
amdsmi_status_t amdsmi_get_power_info(amdsmi_processor_handle h, power_info_t *p) {
#endif
	(void)h;
	memset(p, 0xff, sizeof(*p));
	p->current_socket_power = 612, p->power_limit = 750;
	FILL(p);
	return 0;
}

amdsmi_status_t amdsmi_get_energy_count(amdsmi_processor_handle h, uint64_t *acc, float *res, uint64_t *ts) {
	(void)h;
	energy_calls++;
	/* 15.259 uJ units: 65536 units = 1 J, plus 1 J per call. */
	*acc = 65536ull * (1000 + energy_calls), *res = 15.2587890625f, *ts = energy_calls;
	return 0;
}

amdsmi_status_t amdsmi_get_temp_metric(amdsmi_processor_handle h, uint32_t sensor, uint32_t metric, int64_t *c) {
	(void)h;
	if (metric != AMDSMI_TEMP_CURRENT) return 1;
	switch (sensor) {
	case AMDSMI_TEMPERATURE_TYPE_EDGE: return AMDSMI_STATUS_NOT_SUPPORTED; /* MI300X has none */
	case AMDSMI_TEMPERATURE_TYPE_HOTSPOT: *c = 61; return 0;
	case AMDSMI_TEMPERATURE_TYPE_VRAM: *c = 53; return 0;
	}
	return 1;
}

amdsmi_status_t amdsmi_get_clock_info(amdsmi_processor_handle h, uint32_t clk, amdsmi_clk_info_t *ci) {
	(void)h;
	memset(ci, 0, sizeof(*ci));
	switch (clk) {
	case AMDSMI_CLK_TYPE_GFX: ci->clk = 1420; break;
	case AMDSMI_CLK_TYPE_MEM: ci->clk = 1300; break;
	default: return 1;
	}
	FILL(ci);
	return 0;
}

amdsmi_status_t amdsmi_get_gpu_pci_replay_counter(amdsmi_processor_handle h, uint64_t *v) {
	*v = idx(h) + 2;
	return 0;
}

amdsmi_status_t amdsmi_get_gpu_total_ecc_count(amdsmi_processor_handle h, amdsmi_error_count_t *e) {
	if (idx(h) == FAIL_GPU) return AMDSMI_STATUS_NOT_SUPPORTED;
	memset(e, 0, sizeof(*e));
	e->correctable_count = 12, e->uncorrectable_count = 1;
	FILL(e);
	return 0;
}

amdsmi_status_t amdsmi_get_gpu_compute_partition(amdsmi_processor_handle h, char *buf, uint32_t len) {
	(void)h;
	if (len < 4) return 1;
	strcpy(buf, "SPX");
	return 0;
}

amdsmi_status_t amdsmi_get_gpu_memory_partition(amdsmi_processor_handle h, char *buf, uint32_t len) {
	(void)h;
	if (len < 5) return 1;
	strcpy(buf, "NPS1");
	return 0;
}

#ifndef OMIT_LINKS
amdsmi_status_t amdsmi_get_link_metrics(amdsmi_processor_handle h, link_metrics_t *m) {
	memset(m, 0, sizeof(*m));
	/* Link 0 is PCIe to the host, then seven XGMI links to peers. */
	m->num_links = 8;
	m->links[0].link_type = LINK_PCIE;
	for (int l = 1; l < 8; l++) {
		m->links[l].link_type = LINK_XGMI;
		m->links[l].bit_rate = 32;
		m->links[l].read = 1000ull * l + idx(h);
		m->links[l].write = 2000ull * l;
	}
	FILL(m);
	return 0;
}
#endif
