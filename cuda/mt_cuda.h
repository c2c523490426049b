/*
 * mt_cuda.h — the CUDA backend's extras beyond the backend table (core/backend.h), for the engine,
 * the GPU tests and benchmarks: the device probe with its reason, allocator statistics and cache
 * control, device names. Plain C with no CUDA header, so C code can include it; only built with CUDA.
 */
#ifndef MT_CUDA_MT_CUDA_H
#define MT_CUDA_MT_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "microtensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The number of CUDA devices (0 without a GPU or driver); when why is not NULL it receives
 * cudaGetDeviceCount's status ("cudaSuccess", "cudaErrorNoDevice: no CUDA-capable device is
 * detected", ...). Never fails. */
int mt_cuda_probe(char *why, size_t cap);

/* "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)" into buf. MT_ERR_NO_DEVICE without the device. */
mt_status mt_cuda_device_describe(int device, char *buf, size_t cap);

/* The caching device allocator of one device (see cuda/alloc.cu). */
typedef struct mt_cuda_alloc_stats {
    uint64_t n_malloc;       /* cudaMalloc calls made (each also counted by mt_sys_alloc_count) */
    uint64_t n_free;         /* cudaFree calls made (cache releases only) */
    uint64_t n_reuse;        /* allocations served from the cache */
    uint64_t n_sync_reuse;   /* device synchronisations made to settle freed blocks (out of memory only) */
    uint64_t bytes_reserved; /* held from the driver (in use + cached) */
    uint64_t bytes_in_use;   /* handed out and not freed */
} mt_cuda_alloc_stats;
mt_status mt_cuda_alloc_stats_get(int device, mt_cuda_alloc_stats *out);
/* Returns every cached (free) block of the device to the driver (waits for the device first). */
mt_status mt_cuda_release_cache(int device);

/* What the backend has asked of the GPU since the process started (all devices): launches counts
 * kernels, cuBLAS calls and device memsets/copies; host_waits counts the calls that made the host
 * wait for the device (stream, event or device synchronisation); vector_launches counts the kernel
 * launches (among launches) that took a 128-bit vectorised path (cuda/vec.cuh). mt-bench-gpu --count
 * divides them by the training steps run. */
typedef struct mt_cuda_counters {
    uint64_t launches;
    uint64_t host_waits;
    uint64_t vector_launches;
} mt_cuda_counters;
void mt_cuda_counters_get(mt_cuda_counters *out);

/* Whether attention on device takes the bf16 tensor-core kernels (cuda/flash_attention.cu) for a
 * context of this precision (an mt_precision) and head dims D, Dv (backward: the backward kernels):
 * 1, or 0 when it runs the f32 kernel; why (may be NULL) receives the reason either way. */
int mt_cuda_flash_attention_supported(int device, int precision, int64_t D, int64_t Dv, int backward, char *why,
                                      size_t cap);

#ifdef __cplusplus
}
#endif

#endif
