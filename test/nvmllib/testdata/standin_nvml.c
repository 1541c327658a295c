/*
 * A stand-in libnvidia-ml.so.1 for a node whose driver sees no GPU: it
 * answers the calls `gpunode-agent inspect` makes when nvmlDeviceGetCount_v2
 * says 0, with the signatures of NVIDIA's nvml.h, and nothing else. A call
 * it lacked would kill the agent with "symbol lookup error", so the test
 * shows the list is complete. LD_DEBUG=bindings on the agent lists them:
 * nvmlInit_v2, nvmlDeviceGetCount_v2 (go-nvml's Init dlsyms the _v2 names
 * and uses them when present; it needs neither v1 name here),
 * nvmlSystemGetDriverVersion, nvmlSystemGetNVMLVersion,
 * nvmlSystemGetCudaDriverVersion (go-nvml calls the unversioned one) and
 * nvmlShutdown. nvmlErrorString is called only to word a failed call
 * (nvmlInit_v2 failing with INIT_RETURN).
 * DRIVER_VERSION (a string) tells the trees' libraries apart.
 */
#include <stdio.h>
#include <string.h>

#ifndef DRIVER_VERSION
#define DRIVER_VERSION "550.54.15"
#endif

typedef int nvmlReturn_t;

enum { NVML_SUCCESS = 0, NVML_ERROR_INVALID_ARGUMENT = 2, NVML_ERROR_INSUFFICIENT_SIZE = 7 };

#ifndef INIT_RETURN
#define INIT_RETURN NVML_SUCCESS
#endif

/* go-nvml picks nvmlInit_v2 and nvmlDeviceGetCount_v2 when dlsym finds them.
 * INIT_RETURN makes it fail: 9 is NVML_ERROR_DRIVER_NOT_LOADED. */
nvmlReturn_t nvmlInit_v2(void) { return INIT_RETURN; }
nvmlReturn_t nvmlShutdown(void) { return NVML_SUCCESS; }

const char *nvmlErrorString(nvmlReturn_t r) {
	static char buf[32];
	snprintf(buf, sizeof buf, "stand-in NVML error %d", r);
	return r == NVML_SUCCESS ? "Success" : buf;
}

static nvmlReturn_t copy(char *dst, unsigned int len, const char *src) {
	if (dst == NULL)
		return NVML_ERROR_INVALID_ARGUMENT;
	if (strlen(src) + 1 > len)
		return NVML_ERROR_INSUFFICIENT_SIZE;
	strcpy(dst, src);
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
	return copy(version, length, DRIVER_VERSION);
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
	return copy(version, length, "12." DRIVER_VERSION);
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) {
	if (v == NULL)
		return NVML_ERROR_INVALID_ARGUMENT;
	*v = 12040;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
	if (count == NULL)
		return NVML_ERROR_INVALID_ARGUMENT;
	*count = 0;
	return NVML_SUCCESS;
}

#ifdef NEEDS_MISSING
/* Linked against a library the test then deletes: dlopen fails on the
 * dependency, not on this file. */
extern int standin_missing_dependency(void);
int standin_uses_dependency(void) { return standin_missing_dependency(); }
#endif
