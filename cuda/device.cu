/*
 * device.cu — CUDA device discovery and selection, and the translation of CUDA / cuBLAS statuses into
 * mt_status with a message.
 *
 * The only answer without a GPU is "0 devices": the status of cudaGetDeviceCount is checked, never
 * assumed (no driver, no device, insufficient driver all mean 0), and kept so tests and tools can say
 * why. The count cannot change within a process (CUDA_VISIBLE_DEVICES is read once), so it is probed
 * once and cached.
 */
#include <stdio.h>
#include <string.h>

#include "common.cuh"

static int g_count = -1;           /* cached device count; -1 before the first probe */
static char g_why[160] = "not probed";

static int probe_once(void) {
    int n = __atomic_load_n(&g_count, __ATOMIC_ACQUIRE);
    if (n >= 0) return n;
    n = 0;
    cudaError_t st = cudaGetDeviceCount(&n);
    char why[sizeof g_why];
    if (st != cudaSuccess) {
        snprintf(why, sizeof why, "%s: %s", cudaGetErrorName(st), cudaGetErrorString(st));
        (void)cudaGetLastError(); /* clear the error so later calls start clean */
        n = 0;
    } else {
        snprintf(why, sizeof why, "cudaSuccess: %d device%s", n, n == 1 ? "" : "s");
    }
    /* Two threads probing at once write the same text. */
    memcpy(g_why, why, sizeof why);
    __atomic_store_n(&g_count, n, __ATOMIC_RELEASE);
    return n;
}

extern "C" int mt_cuda_device_count(void) { return probe_once(); }

static uint64_t g_launches, g_host_waits, g_vector_launches;

void mt_cuda_count_launches(uint64_t n) { __atomic_add_fetch(&g_launches, n, __ATOMIC_RELAXED); }
void mt_cuda_count_host_waits(uint64_t n) { __atomic_add_fetch(&g_host_waits, n, __ATOMIC_RELAXED); }
void mt_cuda_count_vector_launches(uint64_t n) { __atomic_add_fetch(&g_vector_launches, n, __ATOMIC_RELAXED); }

extern "C" void mt_cuda_counters_get(mt_cuda_counters *out) {
    out->launches = __atomic_load_n(&g_launches, __ATOMIC_RELAXED);
    out->host_waits = __atomic_load_n(&g_host_waits, __ATOMIC_RELAXED);
    out->vector_launches = __atomic_load_n(&g_vector_launches, __ATOMIC_RELAXED);
}

extern "C" int mt_cuda_probe(char *why, size_t cap) {
    int n = probe_once();
    if (why && cap) snprintf(why, cap, "%s", g_why);
    return n;
}

static mt_status no_device(int device, const char *fn) {
    int n = probe_once();
    if (n == 0)
        return mt_error(MT_ERR_NO_DEVICE, "cuda:%d: %s: no CUDA device is present (cudaGetDeviceCount: %s)", device, fn,
                        g_why);
    return mt_error(MT_ERR_NO_DEVICE, "cuda:%d: %s: no such device (%d CUDA device%s present)", device, fn, n,
                    n == 1 ? "" : "s");
}

extern "C" mt_status mt_cuda_device_describe(int device, char *buf, size_t cap) {
    if (device < 0 || device >= probe_once()) return no_device(device, "describe");
    cudaDeviceProp p;
    MT_CK(cudaGetDeviceProperties(&p, device));
    snprintf(buf, cap, "%s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor, p.multiProcessorCount,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return MT_OK;
}

mt_status mt_cuda_set_device(int device, int *prev) {
    if (device < 0 || device >= probe_once()) return no_device(device, "select");
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess) {
        (void)cudaGetLastError();
        cur = -1;
    }
    if (prev) *prev = cur;
    if (cur != device) MT_CK(cudaSetDevice(device));
    return MT_OK;
}

mt_status mt_cuda_enter(mt_exec *ex, mt_cuda_exec **out, const char *fn) {
    if (!ex || !ex->priv)
        return mt_error(MT_ERR_NO_DEVICE, "cuda %s: no CUDA execution state (no device present, or exec_init failed)",
                        fn);
    mt_cuda_exec *cx = (mt_cuda_exec *)ex->priv;
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess || cur != cx->device) MT_CK(cudaSetDevice(cx->device));
    *out = cx;
    return MT_OK;
}

static mt_status status_of(cudaError_t e) {
    switch (e) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorCompatNotSupportedOnDevice: return MT_ERR_NO_DEVICE;
    case cudaErrorMemoryAllocation: return MT_ERR_NOMEM;
    default: return MT_ERR_CUDA;
    }
}

mt_status mt_cuda_fail(cudaError_t e, const char *call, const char *file, int line) {
    /* A non-sticky error stays in the runtime until read: read it so the next call starts clean. */
    (void)cudaGetLastError();
    return mt_error(status_of(e), "cuda: %s failed at %s:%d: %s (%s)", call, file, line, cudaGetErrorString(e),
                    cudaGetErrorName(e));
}

static const char *blas_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

mt_status mt_cuda_fail(cublasStatus_t s, const char *call, const char *file, int line) {
    mt_status st = s == CUBLAS_STATUS_ALLOC_FAILED ? MT_ERR_NOMEM
                   : s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_ARCH_MISMATCH ? MT_ERR_UNSUPPORTED
                                                                                           : MT_ERR_CUDA;
    return mt_error(st, "cublas: %s failed at %s:%d: %s", call, file, line, blas_name(s));
}
