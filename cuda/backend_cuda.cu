/*
 * backend_cuda.cu — the CUDA backend's table (mt_cuda_backend) and its execution state: per context a
 * non-blocking stream, a cuBLAS handle bound to it with its own workspace, a growable device scratch
 * for kernels' temporaries, and a pinned host staging ring for small host<->device copies.
 *
 * Copies: to_device of up to MT_STAGE_MAX bytes (token ids, masks, a batch) goes through the pinned
 * ring: the host data is copied into the ring and an asynchronous DMA is queued on the stream, so
 * the host goes on preparing the next batch while the GPU works. A ring region is reused only after
 * the event recorded behind its copy has fired. Larger copies go straight from pageable memory.
 * to_host waits for the stream (it is one of the two synchronising entry points, with sync).
 *
 * Ordering between contexts: the live contexts form a list; publish records the context's event on
 * its stream, join makes its stream wait for the last published event of every other live context of
 * the device (cudaStreamWaitEvent: the device waits, the host does not).
 */
#include <pthread.h>
#include <string.h>

#include "common.cuh"

#define MT_BLAS_WS_BYTES ((size_t)32 << 20)
#define MT_STAGE_MAX ((size_t)4 << 20)  /* largest copy staged through the pinned ring */
#define MT_STAGE_CAP ((size_t)16 << 20) /* ring size */

static pthread_mutex_t g_live_lock = PTHREAD_MUTEX_INITIALIZER;
static mt_cuda_exec *g_live;

static void live_remove(mt_cuda_exec *cx) {
    pthread_mutex_lock(&g_live_lock);
    for (mt_cuda_exec **pp = &g_live; *pp; pp = &(*pp)->live_next)
        if (*pp == cx) {
            *pp = cx->live_next;
            break;
        }
    pthread_mutex_unlock(&g_live_lock);
}

int mt_cuda_live_streams(int device, cudaStream_t *out, int cap) {
    int n = 0;
    pthread_mutex_lock(&g_live_lock);
    for (mt_cuda_exec *c = g_live; c && n < cap; c = c->live_next)
        if (c->device == device) out[n++] = c->stream;
    pthread_mutex_unlock(&g_live_lock);
    return n;
}

static void exec_release(mt_cuda_exec *cx) {
    live_remove(cx);
    if (cx->stream) (void)mt_cuda_host_wait(cudaStreamSynchronize(cx->stream));
    if (cx->published) (void)cudaEventDestroy(cx->published);
    for (int i = 0; i < MT_STAGE_SLOTS; i++)
        if (cx->slots[i].done) (void)cudaEventDestroy(cx->slots[i].done);
    if (cx->blas) (void)cublasDestroy(cx->blas);
    if (cx->blaslt) (void)cublasLtDestroy(cx->blaslt);
    mt_cuda_free(cx->device, cx->blas_ws);
    mt_cuda_free(cx->device, cx->scratch);
    mt_cuda_host_free(cx->stage);
    if (cx->stream) (void)cudaStreamDestroy(cx->stream);
    (void)cudaGetLastError();
    mt_sys_free(cx);
}

static mt_status exec_setup(mt_cuda_exec *cx) {
    cudaDeviceProp prop;
    MT_CK(cudaGetDeviceProperties(&prop, cx->device));
    cx->n_sm = prop.multiProcessorCount;
    cx->smem_optin = prop.sharedMemPerBlockOptin;
    cx->cc_major = prop.major;
    MT_CK(cudaStreamCreateWithFlags(&cx->stream, cudaStreamNonBlocking));
    MT_CK(cublasCreate(&cx->blas));
    MT_CK(cublasSetStream(cx->blas, cx->stream));
    MT_TRY(mt_cuda_malloc(cx->device, &cx->blas_ws, MT_BLAS_WS_BYTES));
    cx->blas_ws_bytes = MT_BLAS_WS_BYTES;
    MT_CK(cublasSetWorkspace(cx->blas, cx->blas_ws, cx->blas_ws_bytes));
    MT_CK(cublasSetPointerMode(cx->blas, CUBLAS_POINTER_MODE_HOST));
    MT_CK(cublasLtCreate(&cx->blaslt));
    for (int i = 0; i < MT_STAGE_SLOTS; i++) MT_CK(cudaEventCreateWithFlags(&cx->slots[i].done, cudaEventDisableTiming));
    MT_CK(cudaEventCreateWithFlags(&cx->published, cudaEventDisableTiming));
    void *stage = NULL;
    MT_TRY(mt_cuda_host_alloc(&stage, MT_STAGE_CAP));
    cx->stage = (unsigned char *)stage;
    cx->stage_cap = MT_STAGE_CAP;
    return MT_OK;
}

static mt_status cuda_exec_init(mt_exec *ex, int device) {
    if (!ex) return mt_error(MT_ERR_INVALID_ARG, "cuda exec_init: ex is NULL");
    ex->priv = NULL;
    MT_TRY(mt_cuda_set_device(device, NULL));
    mt_cuda_exec *cx = (mt_cuda_exec *)mt_sys_calloc(1, sizeof *cx);
    if (!cx) return mt_error(MT_ERR_NOMEM, "cuda:%d: out of host memory for the execution state", device);
    cx->device = device;
    mt_status st = exec_setup(cx);
    if (st != MT_OK) {
        exec_release(cx);
        return mt_error_prefix(st, "cuda:%d: creating the execution state: ", device);
    }
    pthread_mutex_lock(&g_live_lock);
    cx->live_next = g_live;
    g_live = cx;
    pthread_mutex_unlock(&g_live_lock);
    ex->priv = cx;
    ex->device = device;
    return MT_OK;
}

static void cuda_exec_free(mt_exec *ex) {
    if (!ex || !ex->priv) return;
    mt_cuda_exec *cx = (mt_cuda_exec *)ex->priv;
    int device = cx->device, prev = -1; /* read before exec_release frees cx */
    int switched = mt_cuda_set_device(device, &prev) == MT_OK;
    exec_release(cx); /* also when the device is gone: the host state must not leak */
    if (switched && prev >= 0 && prev != device) (void)cudaSetDevice(prev);
    ex->priv = NULL;
}

mt_status mt_cuda_scratch(mt_cuda_exec *cx, size_t bytes, void **out) {
    if (bytes > cx->scratch_bytes) {
        /* Kernels queued on this stream may still read the old buffer: the allocator's pending list
         * keeps it from being reused before the device has finished with it. */
        size_t want = bytes + bytes / 4;
        void *p = NULL;
        MT_TRY(mt_cuda_malloc(cx->device, &p, want));
        mt_cuda_free(cx->device, cx->scratch);
        cx->scratch = p;
        cx->scratch_bytes = want;
    }
    *out = cx->scratch;
    return MT_OK;
}

static mt_status cuda_alloc(int device, void **ptr, size_t bytes) { return mt_cuda_malloc(device, ptr, bytes); }

static void cuda_free(int device, void *ptr) { mt_cuda_free(device, ptr); }

/* A region of n bytes of the staging ring no in-flight copy reads. */
static mt_status stage_reserve(mt_cuda_exec *cx, size_t n, size_t *start) {
    for (;;) {
        size_t s = cx->stage_head + n <= cx->stage_cap ? cx->stage_head : 0;
        int clash = -1, oldest = -1, free_slot = -1;
        for (int i = 0; i < MT_STAGE_SLOTS; i++) {
            mt_stage_slot *sl = &cx->slots[i];
            if (!sl->live) {
                if (free_slot < 0) free_slot = i;
                continue;
            }
            if (sl->start < s + n && s < sl->end) {
                /* Overlaps: retire it if its copy is done, else remember to wait for it. */
                cudaError_t q = cudaEventQuery(sl->done);
                if (q == cudaSuccess) {
                    sl->live = 0;
                    if (free_slot < 0) free_slot = i;
                } else if (q == cudaErrorNotReady) {
                    (void)cudaGetLastError();
                    clash = i;
                } else {
                    MT_CK(q);
                }
            } else if (oldest < 0) {
                oldest = i;
            }
        }
        if (clash >= 0) {
            MT_CK(mt_cuda_host_wait(cudaEventSynchronize(cx->slots[clash].done)));
            cx->slots[clash].live = 0;
            continue;
        }
        if (free_slot < 0) { /* every slot in flight: wait for one */
            MT_CK(mt_cuda_host_wait(cudaEventSynchronize(cx->slots[oldest].done)));
            cx->slots[oldest].live = 0;
            continue;
        }
        *start = s;
        return MT_OK;
    }
}

static mt_status stage_commit(mt_cuda_exec *cx, size_t start, size_t n) {
    for (int i = 0; i < MT_STAGE_SLOTS; i++) {
        mt_stage_slot *sl = &cx->slots[i];
        if (sl->live) continue;
        MT_CK(cudaEventRecord(sl->done, cx->stream));
        sl->start = start;
        sl->end = start + n;
        sl->live = 1;
        cx->stage_head = start + n;
        return MT_OK;
    }
    return mt_error(MT_ERR_INTERNAL, "cuda staging: no free slot after reserve");
}

static mt_status cuda_to_device(mt_exec *ex, void *dst, const void *src, size_t bytes) {
    MT_CUDA_ENTER(ex, cx);
    if (!bytes) return MT_OK;
    if (bytes <= MT_STAGE_MAX) {
        size_t s;
        MT_TRY(stage_reserve(cx, bytes, &s));
        memcpy(cx->stage + s, src, bytes);
        MT_CK(cudaMemcpyAsync(dst, cx->stage + s, bytes, cudaMemcpyHostToDevice, cx->stream));
        mt_cuda_count_launches(1);
        return stage_commit(cx, s, bytes);
    }
    /* Pageable source: the runtime has consumed it when the call returns. */
    MT_CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cx->stream));
    mt_cuda_count_launches(1);
    return MT_OK;
}

static mt_status cuda_to_host(mt_exec *ex, void *dst, const void *src, size_t bytes) {
    MT_CUDA_ENTER(ex, cx);
    if (bytes && bytes <= MT_STAGE_MAX) {
        size_t s;
        MT_TRY(stage_reserve(cx, bytes, &s));
        MT_CK(cudaMemcpyAsync(cx->stage + s, src, bytes, cudaMemcpyDeviceToHost, cx->stream));
        MT_CK(mt_cuda_host_wait(cudaStreamSynchronize(cx->stream)));
        memcpy(dst, cx->stage + s, bytes);
        return MT_OK;
    }
    MT_CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cx->stream));
    MT_CK(mt_cuda_host_wait(cudaStreamSynchronize(cx->stream)));
    return MT_OK;
}

static mt_status cuda_copy(mt_exec *ex, void *dst, const void *src, size_t bytes) {
    MT_CUDA_ENTER(ex, cx);
    if (!bytes || dst == src) return MT_OK;
    MT_CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cx->stream));
    mt_cuda_count_launches(1);
    return MT_OK;
}

static mt_status cuda_zero(mt_exec *ex, void *dst, size_t bytes) {
    MT_CUDA_ENTER(ex, cx);
    if (!bytes) return MT_OK;
    MT_CK(cudaMemsetAsync(dst, 0, bytes, cx->stream));
    mt_cuda_count_launches(1);
    return MT_OK;
}

static mt_status cuda_sync(mt_exec *ex) {
    MT_CUDA_ENTER(ex, cx);
    MT_CK(mt_cuda_host_wait(cudaStreamSynchronize(cx->stream)));
    return MT_OK;
}

static mt_status cuda_publish(mt_exec *ex) {
    MT_CUDA_ENTER(ex, cx);
    pthread_mutex_lock(&g_live_lock);
    cudaError_t e = cudaEventRecord(cx->published, cx->stream);
    if (e == cudaSuccess) cx->has_published = 1;
    pthread_mutex_unlock(&g_live_lock);
    MT_CK(e);
    return MT_OK;
}

static mt_status cuda_join(mt_exec *ex) {
    MT_CUDA_ENTER(ex, cx);
    cudaError_t e = cudaSuccess;
    pthread_mutex_lock(&g_live_lock);
    for (mt_cuda_exec *o = g_live; o && e == cudaSuccess; o = o->live_next)
        if (o != cx && o->device == cx->device && o->has_published)
            e = cudaStreamWaitEvent(cx->stream, o->published, 0);
    pthread_mutex_unlock(&g_live_lock);
    MT_CK(e);
    return MT_OK;
}

extern "C" const mt_backend mt_cuda_backend = {
    .name = "cuda",
    .exec_init = cuda_exec_init,
    .exec_free = cuda_exec_free,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .to_host = cuda_to_host,
    .to_device = cuda_to_device,
    .copy = cuda_copy,
    .zero = cuda_zero,
    .sync = cuda_sync,
    .fill = mt_cuda_fill,
    .arange = mt_cuda_arange,
    .random = mt_cuda_random,
    .cast = mt_cuda_cast,
    .unary_fwd = mt_cuda_unary_fwd,
    .unary_bwd = mt_cuda_unary_bwd,
    .scalar_fwd = mt_cuda_scalar_fwd,
    .scalar_bwd = mt_cuda_scalar_bwd,
    .binary_fwd = mt_cuda_binary_fwd,
    .binary_bwd = mt_cuda_binary_bwd,
    .masked_fill_fwd = mt_cuda_masked_fill_fwd,
    .masked_fill_bwd = mt_cuda_masked_fill_bwd,
    .dropout_fwd = mt_cuda_dropout_fwd,
    .dropout_bwd = mt_cuda_dropout_bwd,
    .reduce_fwd = mt_cuda_reduce_fwd,
    .reduce_bwd = mt_cuda_reduce_bwd,
    .argmax = mt_cuda_argmax,
    .sumsq = mt_cuda_sumsq,
    .copy_strided = mt_cuda_copy_strided,
    .gemm = mt_cuda_gemm,
    .softmax_fwd = mt_cuda_softmax_fwd,
    .softmax_bwd = mt_cuda_softmax_bwd,
    .layernorm_fwd = mt_cuda_layernorm_fwd,
    .layernorm_bwd = mt_cuda_layernorm_bwd,
    .rmsnorm_fwd = mt_cuda_rmsnorm_fwd,
    .rmsnorm_bwd = mt_cuda_rmsnorm_bwd,
    .embedding_fwd = mt_cuda_embedding_fwd,
    .embedding_bwd = mt_cuda_embedding_bwd,
    .cross_entropy_fwd = mt_cuda_cross_entropy_fwd,
    .cross_entropy_bwd = mt_cuda_cross_entropy_bwd,
    .attention_fwd = mt_cuda_attention_fwd,
    .attention_bwd = mt_cuda_attention_bwd,
    .rope = mt_cuda_rope,
    .adamw = mt_cuda_adamw,
    .gemm_lowp = mt_cuda_gemm_lowp,
    .publish = cuda_publish,
    .join = cuda_join,
    .adamw_clip = mt_cuda_adamw_clip,
    .sumsq_multi = mt_cuda_sumsq_multi,
    .adamw_multi = mt_cuda_adamw_multi,
    .device_count = mt_cuda_probe,
    .qlinear = NULL, /* an int8 model runs its dequantized f32 weights on a GPU */
    .cast_multi = mt_cuda_cast_multi,
    .gemm_lowp_bias = mt_cuda_gemm_lowp_bias,
    .cross_entropy_fused = mt_cuda_cross_entropy_fused,
};
