/*
 * backend.c — finding the backend of a device, and the per-context scratch buffer.
 */
#include "core/backend.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "core/error.h"

const mt_backend *mt_device_backend(void) {
    for (int i = 0; mt_backends[i]; i++)
        if (mt_backends[i]->device_count) return mt_backends[i];
    return NULL;
}

int mt_device_backend_count(char *why, size_t cap) {
    const mt_backend *be = mt_device_backend();
    if (!be) {
        if (why && cap) snprintf(why, cap, "this build of MicroTensor has no CUDA backend");
        return 0;
    }
    return be->device_count(why, cap);
}

mt_status mt_backend_get(int device, const mt_backend **out) {
    if (device == MT_DEVICE_CPU) {
        *out = &mt_cpu_backend;
        return MT_OK;
    }
    if (device < 0) return mt_error(MT_ERR_DEVICE, "device %d: not a device id (-1 is the CPU)", device);
    const mt_backend *be = mt_device_backend();
    if (!be) return mt_error(MT_ERR_NO_DEVICE, "cuda:%d: this build of MicroTensor has no CUDA backend", device);
    char why[160];
    int n = be->device_count(why, sizeof why);
    if (n == 0)
        return mt_error(MT_ERR_NO_DEVICE, "%s:%d: no CUDA device is present (cudaGetDeviceCount: %s)", be->name, device,
                        why);
    if (device >= n)
        return mt_error(MT_ERR_NO_DEVICE, "%s:%d: no such device (%d CUDA device%s present)", be->name, device, n,
                        n == 1 ? "" : "s");
    *out = be;
    return MT_OK;
}

void *mt_exec_scratch(mt_exec *ex, size_t bytes) {
    if (bytes <= ex->scratch_bytes) return ex->scratch;
    size_t want = bytes + bytes / 4;
    void *p = NULL;
    if (posix_memalign(&p, 64, want) != 0) return NULL;
    mt_sys_alloc_count_add(1);
    free(ex->scratch);
    ex->scratch = p;
    ex->scratch_bytes = want;
    return p;
}

static _Atomic int mt_default_threads;

void mt_threads_set_default(int n) { atomic_store(&mt_default_threads, n); }
int mt_threads_default(void) { return atomic_load(&mt_default_threads); }
