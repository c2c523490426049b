/*
 * common.cuh — what every file of the CUDA backend shares: the engine's C headers, the one status
 * macro (a CUDA or cuBLAS status becomes an mt_status with a message naming the call and file:line),
 * the per-context execution state, launch helpers, warp/block reductions, and dtype conversions that
 * are bit-identical to the CPU backend's.
 *
 * Launchers (mt_cuda_*) have C linkage and the signatures of the backend table (core/backend.h);
 * they run on the context's stream and never synchronise the host (only to_host and sync do).
 */
#ifndef MT_CUDA_COMMON_CUH
#define MT_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "core/alloc.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/log.h"
}
#include "core/numeric.h" /* __host__ __device__ under nvcc */
#include "core/rng.h"
#include "mt_cuda.h"

/* ---------------------------------------------------------------------------------------------
 * Status: one macro for every CUDA runtime and cuBLAS call.
 * ------------------------------------------------------------------------------------------- */

static inline bool mt_cuda_ok(cudaError_t e) { return e == cudaSuccess; }
static inline bool mt_cuda_ok(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; }
/* Record the failure of `call` at file:line as the last error and return its mt_status
 * (MT_ERR_NO_DEVICE for a missing device or driver, MT_ERR_NOMEM for out of memory, else MT_ERR_CUDA). */
mt_status mt_cuda_fail(cudaError_t e, const char *call, const char *file, int line);
mt_status mt_cuda_fail(cublasStatus_t s, const char *call, const char *file, int line);

#define MT_CK(call)                                                                   \
    do {                                                                              \
        auto mt_ck_s_ = (call);                                                       \
        if (!mt_cuda_ok(mt_ck_s_)) return mt_cuda_fail(mt_ck_s_, #call, __FILE__, __LINE__); \
    } while (0)

/* Process-wide counters (mt_cuda_counters_get): every launch the backend makes (kernels, cuBLAS
 * calls, device memsets and copies) and every host wait (stream/event/device synchronisation). */
void mt_cuda_count_launches(uint64_t n);
void mt_cuda_count_host_waits(uint64_t n);
/* Wraps a synchronising call: counts it, returns its status. */
template <typename E>
static inline E mt_cuda_host_wait(E e) {
    mt_cuda_count_host_waits(1);
    return e;
}

/* After a kernel launch: counted; a bad configuration shows up in cudaGetLastError. */
#define MT_LAUNCHED()              \
    do {                           \
        mt_cuda_count_launches(1); \
        MT_CK(cudaGetLastError()); \
    } while (0)

/* ---------------------------------------------------------------------------------------------
 * Execution state (mt_exec.priv) of a CUDA context.
 * ------------------------------------------------------------------------------------------- */

#define MT_STAGE_SLOTS 64 /* in-flight host->device copies through the pinned staging ring */

typedef struct mt_stage_slot {
    size_t start, end; /* bytes [start, end) of the ring this copy reads */
    cudaEvent_t done;  /* recorded after the copy */
    int live;
} mt_stage_slot;

typedef struct mt_cuda_exec {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t blaslt; /* cuBLASLt, for GEMMs with an epilogue (bias); shares the workspace */
    void *blas_ws;          /* cuBLAS workspace (device) */
    size_t blas_ws_bytes;
    void *scratch;          /* device scratch for kernels' temporaries; grows, never shrinks */
    size_t scratch_bytes;
    unsigned char *stage;   /* pinned host staging ring for small transfers */
    size_t stage_cap, stage_head;
    mt_stage_slot slots[MT_STAGE_SLOTS];
    int n_sm;               /* streaming multiprocessors */
    size_t smem_optin;      /* largest dynamic shared memory a block may opt in to */
    int cc_major;           /* compute capability */
    cudaEvent_t published;  /* recorded by publish: how far this context's queued work has got */
    int has_published;
    struct mt_cuda_exec *live_next; /* the live contexts (backend_cuda.cu), guarded by its lock */
} mt_cuda_exec;

/* The streams of the live contexts of device (at most cap); the allocator records an event on each
 * when a block is freed (any of them may still use it). Called with no lock held. */
int mt_cuda_live_streams(int device, cudaStream_t *out, int cap);

/* The context's state with its device made current on this thread; MT_ERR_NO_DEVICE when the exec has
 * none (no GPU, or exec_init failed). fn names the caller in the message. */
mt_status mt_cuda_enter(mt_exec *ex, mt_cuda_exec **out, const char *fn);
#define MT_CUDA_ENTER(ex, cx) \
    mt_cuda_exec *cx = NULL;  \
    MT_TRY(mt_cuda_enter((ex), &cx, __func__))

/* Device scratch of at least bytes (grown through the caching allocator; the old buffer is released
 * stream-safely). Valid until the next call on the same context. */
mt_status mt_cuda_scratch(mt_cuda_exec *cx, size_t bytes, void **out);
/* out[0] (= or, with accumulate, +=) the sum of the n doubles of part, by one block on cx's stream: the
 * second pass of the sums of squares (reduce.cu; adamw.cu's multi-tensor norm). Defined in reduce.cu. */
mt_status mt_cuda_sum_partials(mt_cuda_exec *cx, float *out, const double *part, int n, int accumulate);

/* Makes device current on this thread, returning the previous one in *prev (-1 if none). */
mt_status mt_cuda_set_device(int device, int *prev);

/* ---------------------------------------------------------------------------------------------
 * Launch helpers and reductions.
 * ------------------------------------------------------------------------------------------- */

#define MT_THREADS 256

/* Cap of grid-stride launches (the CPU emulator of tests/gpu/emu lowers it to keep its fibers few). */
#ifndef MT_MAX_GRID_BLOCKS
#define MT_MAX_GRID_BLOCKS (1 << 20)
#endif

/* Blocks for a grid-stride loop over n items at `threads` per block. */
static inline unsigned mt_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > MT_MAX_GRID_BLOCKS) b = MT_MAX_GRID_BLOCKS;
    return (unsigned)b;
}

/* Blocks for kernels that give each block (or each of its `per` warps) one row, without a
 * grid-stride loop: every row gets its block. Beyond the grid limit the launch fails (reported). */
static inline unsigned mt_grid_rows(int64_t rows, int per) {
    int64_t b = (rows + per - 1) / per;
    return b > 0x7fffffffLL ? 0u : (unsigned)b;
}

#define MT_GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

__device__ __forceinline__ float mt_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double mt_warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* The sum of v over the block (blockDim.x a multiple of 32, at most 1024), in double, summed in an
 * order that does not depend on scheduling; the result is valid in thread 0. sh is the kernel's
 * __shared__ double[32]. Every thread of the block calls it (it synchronises the block). */
__device__ __forceinline__ double mt_block_sum_d(double v, double *sh) {
    v = mt_warp_sum_d(v);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = 0.0;
    if (w == 0) {
        v = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0.0;
        v = mt_warp_sum_d(v);
    }
    return v;
}

/* max that keeps the first operand on NaN, like the CPU's `x > m ? x : m` scans. */
__device__ __forceinline__ float mt_fmax_keep(float m, float x) { return x > m ? x : m; }

__device__ __forceinline__ float mt_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = mt_fmax_keep(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Block-wide sum / max returned to every thread. blockDim.x is a multiple of 32; sh holds 32 floats.
 * Safe to call repeatedly with the same sh. */
__device__ __forceinline__ float mt_block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = mt_warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return mt_warp_sum(v);
}

__device__ __forceinline__ float mt_block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = mt_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return mt_warp_max(v);
}

/* Row-wise kernels (softmax, norms, losses) give a row to a warp when it is short and to a whole
 * block when it is long. ROW_GROUP sets row (the row index), t (this thread's rank in the group) and
 * nt (the group's size); grp_sum / grp_max reduce over the group (sh: 32 floats of shared memory). */
#define ROW_GROUP(BLOCK)                                                                    \
    const int64_t row = (BLOCK) ? (int64_t)blockIdx.x                                       \
                                : (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); \
    const int t = (BLOCK) ? (int)threadIdx.x : (int)(threadIdx.x & 31);                     \
    const int nt = (BLOCK) ? (int)blockDim.x : 32;                                          \
    (void)t;                                                                                \
    (void)nt

template <bool BLOCK>
__device__ __forceinline__ float grp_sum(float v, float *sh) {
    return BLOCK ? mt_block_sum(v, sh) : mt_warp_sum(v);
}

template <bool BLOCK>
__device__ __forceinline__ float grp_max(float v, float *sh) {
    return BLOCK ? mt_block_max(v, sh) : mt_warp_max(v);
}

/* Rows of C elements up to this length go to a warp (8 rows per 256-thread block). */
#define MT_WARP_ROW_MAX 1024

/* dtype conversions: core/numeric.h (shared with the CPU backend, so casts give the same bits). */

/* Reductions for other kernels' use (reduce.cu): scratch bytes a reduction of rd needs, and the
 * reduction itself with that scratch supplied by the caller (so a caller that also needs scratch
 * takes one buffer for both). */
size_t mt_cuda_reduce_scratch_bytes(const mt_cuda_exec *cx, mt_reduce_op op, const mt_reduce_desc *rd);
mt_status mt_cuda_reduce_run(mt_cuda_exec *cx, mt_reduce_op op, float *out, int32_t *argidx, const float *x,
                             const mt_reduce_desc *rd, int accumulate, void *scratch);

/* ---------------------------------------------------------------------------------------------
 * Launchers (C linkage), one group per file.
 * ------------------------------------------------------------------------------------------- */

extern "C" {
/* alloc.cu */
mt_status mt_cuda_malloc(int device, void **ptr, size_t bytes);
void mt_cuda_free(int device, void *ptr);
/* Bytes from p to the end of the live device allocation containing it; -1 if the allocator did not
 * hand it out. */
int64_t mt_cuda_alloc_extent(int device, const void *p);
mt_status mt_cuda_host_alloc(void **ptr, size_t bytes);
void mt_cuda_host_free(void *ptr);

/* elementwise.cu */
mt_status mt_cuda_fill(mt_exec *ex, float *out, int64_t n, float value);
mt_status mt_cuda_arange(mt_exec *ex, float *out, int64_t n, double start, double step);
mt_status mt_cuda_random(mt_exec *ex, float *out, int64_t n, mt_random_dist dist, float a, float b, uint64_t seed,
                         uint64_t offset);
mt_status mt_cuda_cast(mt_exec *ex, void *out, mt_dtype out_dtype, const void *in, mt_dtype in_dtype, int64_t n);
mt_status mt_cuda_unary_fwd(mt_exec *ex, mt_unary_op op, float *out, const float *x, int64_t n);
mt_status mt_cuda_unary_bwd(mt_exec *ex, mt_unary_op op, float *dx, const float *dy, const float *x, const float *y,
                            int64_t n);
mt_status mt_cuda_scalar_fwd(mt_exec *ex, mt_scalar_op op, float *out, const float *x, float s, int64_t n);
mt_status mt_cuda_scalar_bwd(mt_exec *ex, mt_scalar_op op, float *dx, const float *dy, const float *x, float s,
                             int64_t n);
mt_status mt_cuda_binary_fwd(mt_exec *ex, mt_binary_op op, float *out, const float *a, const float *b,
                             const mt_bcast *bc);
mt_status mt_cuda_binary_bwd(mt_exec *ex, mt_binary_op op, float *da, float *db, const float *dy, const float *a,
                             const float *b, const mt_bcast *bc);
mt_status mt_cuda_masked_fill_fwd(mt_exec *ex, float *out, const float *x, const float *mask, float value,
                                  const mt_bcast *bc);
mt_status mt_cuda_masked_fill_bwd(mt_exec *ex, float *dx, const float *dy, const float *mask, const mt_bcast *bc);
mt_status mt_cuda_dropout_fwd(mt_exec *ex, float *out, const float *x, int64_t n, float p, uint64_t seed,
                              uint64_t offset, const float *residual);
mt_status mt_cuda_dropout_bwd(mt_exec *ex, float *dx, const float *dy, int64_t n, float p, uint64_t seed,
                              uint64_t offset);
mt_status mt_cuda_copy_strided(mt_exec *ex, void *out, const int64_t *ostride, const void *in,
                               const int64_t *istride, const int64_t *shape, int ndim, size_t elem_size,
                               int accumulate);

/* reduce.cu */
mt_status mt_cuda_reduce_fwd(mt_exec *ex, mt_reduce_op op, float *out, int32_t *argidx, const float *x,
                             const mt_reduce_desc *rd, int accumulate);
mt_status mt_cuda_reduce_bwd(mt_exec *ex, mt_reduce_op op, float *dx, const float *dy, const int32_t *argidx,
                             const mt_reduce_desc *rd, float scale);
mt_status mt_cuda_argmax(mt_exec *ex, int32_t *out, const float *x, int64_t outer, int64_t n, int64_t inner);
mt_status mt_cuda_sumsq(mt_exec *ex, float *out, const float *x, int64_t n, int accumulate);

/* gemm.cu */
mt_status mt_cuda_gemm(mt_exec *ex, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b, float beta,
                       float *C, int64_t ldc, int64_t stride_c, int64_t batch);
mt_status mt_cuda_gemm_lowp(mt_exec *ex, mt_dtype ab, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                            const void *A, int64_t lda, int64_t stride_a, const void *B, int64_t ldb,
                            int64_t stride_b, float beta, float *C, int64_t ldc, int64_t stride_c, int64_t batch);
mt_status mt_cuda_gemm_lowp_bias(mt_exec *ex, mt_dtype ab, int ta, int tb, int64_t M, int64_t N, int64_t K,
                                 const void *A, int64_t lda, const void *B, int64_t ldb, const float *bias, float *C,
                                 int64_t ldc, int relu);

/* softmax.cu */
mt_status mt_cuda_softmax_fwd(mt_exec *ex, float *out, const float *x, int64_t N, int64_t C, int log);
mt_status mt_cuda_softmax_bwd(mt_exec *ex, float *dx, const float *dy, const float *y, int64_t N, int64_t C,
                              int log);

/* norm.cu */
mt_status mt_cuda_layernorm_fwd(mt_exec *ex, float *out, float *mean, float *rstd, const float *x, const float *w,
                                const float *b, int64_t N, int64_t C, float eps,
    uint16_t *out_bf16);
mt_status mt_cuda_layernorm_bwd(mt_exec *ex, float *dx, float *dw, float *db, const float *dout, const float *x,
                                const float *w, const float *mean, const float *rstd, int64_t N, int64_t C);
mt_status mt_cuda_rmsnorm_fwd(mt_exec *ex, float *out, float *rstd, const float *x, const float *w, int64_t N,
                              int64_t C, float eps,
    uint16_t *out_bf16);
mt_status mt_cuda_rmsnorm_bwd(mt_exec *ex, float *dx, float *dw, const float *dout, const float *x, const float *w,
                              const float *rstd, int64_t N, int64_t C);

/* embedding.cu */
mt_status mt_cuda_embedding_fwd(mt_exec *ex, float *out, const float *table, const int32_t *ids, int64_t N,
                                int64_t C, float scale);
mt_status mt_cuda_embedding_bwd(mt_exec *ex, float *dtable, const float *dout, const int32_t *ids, int64_t N,
                                int64_t C, float scale);

/* loss.cu */
mt_status mt_cuda_cross_entropy_fwd(mt_exec *ex, float *loss, float *count, float *lse, const float *logits,
                                    const int32_t *targets, int64_t N, int64_t V, float eps, int ignore_index);
mt_status mt_cuda_cross_entropy_bwd(mt_exec *ex, float *dlogits, const float *dloss, const float *count,
                                    const float *lse, const float *logits, const int32_t *targets, int64_t N,
                                    int64_t V, float eps, int ignore_index);
mt_status mt_cuda_cross_entropy_fused(mt_exec *ex, float *loss, float *count, float *logits, const int32_t *targets,
                                      const float *dloss, int64_t N, int64_t V, float eps, int ignore_index);

/* attention.cu */
mt_status mt_cuda_attention_fwd(mt_exec *ex, float *out, float *lse, const float *q, const float *k, const float *v,
                                const mt_attn_desc *ad);
mt_status mt_cuda_attention_bwd(mt_exec *ex, float *dq, float *dk, float *dv, const float *dout, const float *out,
                                const float *lse, const float *q, const float *k, const float *v,
                                const mt_attn_desc *ad);

/* rope.cu */
mt_status mt_cuda_rope(mt_exec *ex, float *out, const float *x, int64_t R, int64_t T, int64_t D, int64_t pos0,
                       float base, float sign, int accumulate);

/* adamw.cu */
mt_status mt_cuda_adamw(mt_exec *ex, float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                        float b2, float eps, float wd, float bc1, float bc2, float grad_scale);
mt_status mt_cuda_adamw_clip(mt_exec *ex, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                             float b1, float b2, float eps, float wd, float bc1, float bc2, const float *ss,
                             double clip_norm);
mt_status mt_cuda_sumsq_multi(mt_exec *ex, float *out, const mt_adamw_slot *slots, int n_slots, int accumulate);
mt_status mt_cuda_adamw_multi(mt_exec *ex, const mt_adamw_slot *slots, int n_slots, float lr, float b1, float b2,
                              float eps, float bc1, float bc2, const float *ss, double clip_norm, int zero_grad);
mt_status mt_cuda_cast_multi(mt_exec *ex, const mt_cast_slot *slots, int n_slots, mt_dtype to);
}

#endif
