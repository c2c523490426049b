/*
 * api_core.c — the ABI's process-level functions: version, memory release, threads, devices.
 */
#include <omp.h>
#include <stdlib.h>

#include "core/backend.h"
#include "core/error.h"
#include "microtensor.h"

#define MT_STR2(x) #x
#define MT_STR(x) MT_STR2(x)

unsigned mt_version(void) { return MT_VERSION_NUMBER; }

const char *mt_version_string(void) {
    return MT_STR(MT_VERSION_MAJOR) "." MT_STR(MT_VERSION_MINOR) "." MT_STR(MT_VERSION_PATCH);
}

void mt_free(void *ptr) { free(ptr); }

mt_status mt_set_num_threads(int n) {
    if (n < 0) return mt_error(MT_ERR_INVALID_ARG, "mt_set_num_threads: %d is negative", n);
    int t = n == 0 ? omp_get_num_procs() : n;
    /* CPU contexts read the default when they are created, whichever thread creates them. (OpenBLAS
     * stays single-threaded: the CPU backend splits each product over the context's threads.) */
    mt_threads_set_default(t);
    return MT_OK;
}

mt_status mt_device_count(int *out_count) {
    if (!out_count) return mt_error(MT_ERR_INVALID_ARG, "mt_device_count: out_count is NULL");
    *out_count = mt_device_backend_count(NULL, 0);
    return MT_OK;
}
