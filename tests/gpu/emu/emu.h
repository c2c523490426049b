/*
 * emu.h — a CPU emulator of the CUDA execution model, for testing the kernels of cuda/ on machines
 * without a GPU. Test-only: nothing of it is in the library.
 *
 * The sources of cuda/ are compiled as C++ against this header (through the fake cuda_runtime.h and
 * cublas_v2.h beside it) after tests/gpu/emu/transform.py rewrote the two constructs C++ does not
 * have (kernel<<<grid, block, smem, stream>>>(args) and extern __shared__). Each launched block runs
 * its threads as fibers (one stack per CUDA thread) on one OS thread: __syncthreads() parks a thread
 * until every live thread of its block has arrived, and a warp collective (__shfl_*_sync, __any_sync)
 * parks a lane until all 32 lanes of its warp have posted their value — the semantics the kernels rely
 * on (and the tensor-core mma of cuda/mma.cuh, computed from the fragments the lanes exchange), so
 * missing barriers in the wrong place, wrong shuffle partners, index arithmetic, shared-memory
 * layouts and launch geometry are all exercised. Blocks run one after another, so __shared__ variables
 * are plain statics; dynamic shared memory is filled with NaN bytes before each block (a read before a
 * write shows up); blocks run in a shuffled order. The runtime is lazy: work queued on a stream runs
 * only when the host or another stream waits for it (emu.cpp), so a missing cross-stream wait reads
 * stale data every time. cuBLAS is a plain triple loop, queued like a kernel. What it cannot show:
 * data races between threads of a block (they run interleaved only at sync points), the memory
 * model, performance.
 */
#ifndef MT_EMU_H
#define MT_EMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <memory>
#include <tuple>
#include <utility>

/* ---- qualifiers ---- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};
/* The vector types of the 128-bit accesses (cuda/vec.cuh), aligned like CUDA's: a misaligned access
 * through them is undefined here too (UBSan reports it; g++ may emit aligned SSE moves). */
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};

/* The running thread's coordinates (set by the scheduler before a fiber resumes). */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

/* ---- runtime types ---- */
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoDevice = 100,
    cudaErrorInsufficientDriver = 35,
    cudaErrorDevicesUnavailable = 46,
    cudaErrorCompatNotSupportedOnDevice = 804,
    cudaErrorNotReady = 600,
    cudaErrorLaunchFailure = 719
} cudaError_t;

typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3
} cudaMemcpyKind;
typedef enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 } cudaFuncAttribute;

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int multiProcessorCount;
    size_t sharedMemPerBlockOptin;
    int major, minor;
};

#define cudaStreamNonBlocking 0x01
#define cudaEventDisableTiming 0x02
#define cudaHostAllocPortable 0x01

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaMalloc(void **p, size_t bytes);
template <typename T>
static inline cudaError_t cudaMalloc(T **p, size_t bytes) {
    return cudaMalloc((void **)p, bytes);
}
cudaError_t cudaFree(void *p);
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemsetAsync(void *dst, int v, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaFuncSetAttribute(const void *f, cudaFuncAttribute a, int v);

/* ---- device intrinsics ---- */
static inline uint32_t __float_as_uint(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float __uint_as_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline int __float2int_rn(float f) { return (int)nearbyintf(f); }
static inline float atomicAdd(float *p, float v) {
    float old = *p;
    *p = old + v;
    return old;
}

void __syncthreads(void);
/* Posts this lane's 64-bit value, waits for the 32 lanes of the warp, returns lane src's value. */
uint64_t emu_warp_exchange(uint64_t mine, int src_lane);
/* The same, returning the OR of all lanes' predicates. */
int emu_warp_any(int pred);

template <typename T>
static inline T __shfl_sync(unsigned mask, T v, int src) {
    (void)mask;
    uint64_t u = 0;
    memcpy(&u, &v, sizeof(T));
    uint64_t r = emu_warp_exchange(u, src & 31);
    T out;
    memcpy(&out, &r, sizeof(T));
    return out;
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    return __shfl_sync(mask, v, (int)((threadIdx.x & 31) ^ (unsigned)lane_mask));
}
static inline int __any_sync(unsigned mask, int pred) {
    (void)mask;
    return emu_warp_any(pred);
}
/* Posts this lane's n (<= 8) words, waits for the 32 lanes of the warp, copies every lane's words to
 * all[lane * n ...]: the exchange behind the emulated tensor-core instruction. */
void emu_warp_gather(const uint32_t *mine, int n, uint32_t *all);
/* mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (cuda/mma.cuh): d += a . b with the PTX ISA's
 * fragment layout, computed in f32 from the fragments the 32 lanes hold. */
void emu_mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]);

/* ---- launching ---- */
/* Runs body (one call per CUDA thread) over the grid, block by block; smem: dynamic shared bytes. */
cudaError_t emu_run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body);
/* A bad launch configuration is reported at launch (cudaGetLastError), as on a GPU. */
cudaError_t emu_check_config(dim3 grid, dim3 block, size_t smem);
/* Queues op on stream s (0: runs everything queued, then op, now). */
cudaError_t emu_enqueue(cudaStream_t s, std::function<cudaError_t()> op);
void *emu_dynamic_smem(void);

/* The arguments are copied when the kernel is launched (as a GPU copies them into its parameter
 * buffer); the grid runs when the stream gets to it. */
template <typename... P, typename... A>
static inline void emu_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                              A &&...args) {
    if (emu_check_config(grid, block, smem) != cudaSuccess) return;
    auto params = std::make_shared<std::tuple<P...>>(std::forward<A>(args)...);
    emu_enqueue(s, [=]() { return emu_run_grid(grid, block, smem, [&]() { std::apply(kernel, *params); }); });
}

#endif
