/*
 * backend.h — the function table a backend (cpu, cuda) fills in, and the execution state it runs on.
 *
 * The op layer (engine/ops) checks shapes, broadcasts, allocates outputs and records the tape; it then
 * calls one kernel of this table with raw device pointers and sizes. Kernels come in forward/backward
 * pairs, outputs first, sizes last (llm.c style). A backward kernel ACCUMULATES into its gradient
 * outputs (dx += ...), so a tensor used twice gets the sum; gradients start zeroed.
 *
 * Every kernel returns mt_status; CPU kernels only fail on internal errors, CUDA ones when a launch or
 * a library call fails. All float pointers are F32 device memory unless the signature says otherwise;
 * every tensor is contiguous.
 */
#ifndef MT_CORE_BACKEND_H
#define MT_CORE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "microtensor.h"

struct mt_backend;
struct mt_qweight;

/* A product of at most this many rows with B stored (N, K) (tb) is one the CPU backend computes with
 * its own kernel, reading B's rows as stored (engine/cpu/gemv.c): the op layer passes such products
 * the weight itself, not the transposed copy it keeps for larger ones (mt_tensor.wt). */
#define MT_GEMM_SMALL_M 4

/* The precision of a context's matrix products (mt_context_set_precision). F32 is exact f32; TF32
 * lets the backend use TF32 tensor cores (f32 storage, 10-bit mantissa products); BF16 / F16 are mixed
 * precision: GEMM operands are rounded to bf16 / f16 and accumulated in f32 (in BF16 a backend may do the
 * same inside its fused attention: the CUDA backend's tensor-core kernels), everything else (weights,
 * gradients, optimizer state, norms, softmax, losses) stays f32. Values are only ever appended. */
typedef enum mt_precision {
    MT_PRECISION_F32 = 0,
    MT_PRECISION_TF32 = 1,
    MT_PRECISION_BF16 = 2,
    MT_PRECISION_F16 = 3
} mt_precision;

/* Per-context execution state: which backend and device, CPU threads, and backend-private state
 * (CUDA stream, cuBLAS handles, workspace). */
typedef struct mt_exec {
    const struct mt_backend *backend;
    int device;          /* MT_DEVICE_CPU or CUDA index */
    int n_threads;       /* CPU kernels: threads to use */
    void *priv;          /* backend-private (cuda: stream, handles, workspace) */
    void *scratch;       /* reusable host scratch for kernels that need it (attention scores) */
    size_t scratch_bytes;
    mt_precision precision; /* GEMM precision (0 = F32 in a zeroed context) */
    uint64_t flops;      /* multiply-add work issued through GEMMs and fused attention, 2 per
                          * multiply-add (ops/precision.c, ops/attention.c): what benchmarks call
                          * model FLOPs; never reset by the engine */
} mt_exec;

/* The process-wide default thread count of new CPU contexts (0 = OpenMP's default); set by
 * mt_set_num_threads. */
void mt_threads_set_default(int n);
int mt_threads_default(void);

/* Grows ex->scratch to at least bytes (a system allocation only when it grows). NULL on failure. */
void *mt_exec_scratch(mt_exec *ex, size_t bytes);

/* Broadcast of two operands to the output shape, after merging dims that can be merged.
 * sa/sb are element strides of a and b per output dim; 0 where that operand is broadcast. */
typedef struct mt_bcast {
    int ndim;
    int64_t shape[MT_MAX_DIMS]; /* output shape */
    int64_t sa[MT_MAX_DIMS];
    int64_t sb[MT_MAX_DIMS];
    int64_t numel;              /* output elements */
    int64_t na, nb;             /* elements of a and of b */
} mt_bcast;

/* A reduction of x (shape, collapsed) over the axes whose bit is set; the output has the kept axes
 * in order (contiguous). */
typedef struct mt_reduce_desc {
    int ndim;
    int64_t shape[MT_MAX_DIMS];
    uint32_t axes;   /* bit i set: axis i is reduced */
    int64_t n_out;   /* output elements */
    int64_t n_red;   /* elements reduced into each output */
} mt_reduce_desc;

/* Attention sizes. q (B,H,Tq,D), k (B,Hk,Tk,D), v (B,Hk,Tk,Dv), out (B,H,Tq,Dv), lse (B,H,Tq); head h
 * reads key/value head h / (H / Hk) (Hk == H: standard; Hk == 1: MLA's shared latent). The additive
 * mask, when not NULL, is read at b*mask_sb + h*mask_sh + i*mask_si + j (its last axis contiguous;
 * strides 0 where broadcast). causal masks key j > i + (Tk - Tq) (aligned to the end, so a single
 * query at decoding step t sees keys 0..t).
 * Paged keys (a decoding cache, forward only): with kv_rows (B, Tk) int32 not NULL, k and v are
 * caches (P, Hk, kv_cap, D) and (P, Hk, kv_cap, Dv), and key/value j of (b, hk) is row j of block
 * (kv_rows[b, j], hk): each hypothesis reads its history wherever it was written, so a beam search
 * reorders the small table, never the cache. */
typedef struct mt_attn_desc {
    int64_t B, H, Hk, Tq, Tk, D, Dv;
    float scale;
    int causal;
    const float *mask;
    int64_t mask_sb, mask_sh, mask_si;
    const int32_t *kv_rows;
    int64_t kv_cap;
} mt_attn_desc;

/* Row of key/value j of (b, hk) in k (rows of D floats) or v (rows of Dv), see mt_attn_desc. */
static inline int64_t mt_attn_kv_row(const mt_attn_desc *ad, int64_t b, int64_t hk, int64_t j) {
    if (!ad->kv_rows) return (b * ad->Hk + hk) * ad->Tk + j;
    return ((int64_t)ad->kv_rows[b * ad->Tk + j] * ad->Hk + hk) * ad->kv_cap + j;
}

typedef enum mt_scalar_op {
    MT_SCALAR_ADD = 0, /* x + s */
    MT_SCALAR_SUB = 1, /* x - s */
    MT_SCALAR_MUL = 2, /* x * s */
    MT_SCALAR_DIV = 3, /* x / s */
    MT_SCALAR_RSUB = 4,/* s - x */
    MT_SCALAR_RDIV = 5,/* s / x */
    MT_SCALAR_POW = 6  /* x ** s */
} mt_scalar_op;

typedef enum mt_random_dist { MT_RANDOM_UNIFORM = 0, MT_RANDOM_NORMAL = 1 } mt_random_dist;

/* One parameter of a multi-tensor optimizer step (sumsq_multi, adamw_multi): every pointer (n) F32. */
typedef struct mt_adamw_slot {
    float *p, *g, *m, *v; /* parameter, gradient, first and second moments */
    int64_t n;
    float wd;             /* this parameter's weight decay */
} mt_adamw_slot;

/* One tensor of a multi-tensor cast (cast_multi): n F32 elements of src into dst's bf16/f16 ones. */
typedef struct mt_cast_slot {
    const float *src;
    void *dst;
    int64_t n;
} mt_cast_slot;

typedef struct mt_backend {
    const char *name;

    /* ---- execution state and memory ---- */
    mt_status (*exec_init)(mt_exec *ex, int device);
    void (*exec_free)(mt_exec *ex);
    mt_status (*alloc)(int device, void **ptr, size_t bytes);
    void (*free)(int device, void *ptr);
    mt_status (*to_host)(mt_exec *ex, void *dst, const void *src, size_t bytes);   /* blocks until done */
    mt_status (*to_device)(mt_exec *ex, void *dst, const void *src, size_t bytes); /* src is host */
    mt_status (*copy)(mt_exec *ex, void *dst, const void *src, size_t bytes);      /* device to device */
    mt_status (*zero)(mt_exec *ex, void *dst, size_t bytes);
    mt_status (*sync)(mt_exec *ex);

    /* ---- creation ---- */
    mt_status (*fill)(mt_exec *ex, float *out, int64_t n, float value);
    mt_status (*arange)(mt_exec *ex, float *out, int64_t n, double start, double step);
    /* out[i] = dist(seed, offset + i): uniform in [a, b) or normal(mean a, std b). */
    mt_status (*random)(mt_exec *ex, float *out, int64_t n, mt_random_dist dist, float a, float b, uint64_t seed,
                        uint64_t offset);
    /* Element conversion between F32, BF16, F16, I32 (I32 <-> F32 rounds to nearest). */
    mt_status (*cast)(mt_exec *ex, void *out, mt_dtype out_dtype, const void *in, mt_dtype in_dtype, int64_t n);

    /* ---- elementwise ---- */
    mt_status (*unary_fwd)(mt_exec *ex, mt_unary_op op, float *out, const float *x, int64_t n);
    /* dx += dy * f'(x); y = f(x) is passed for ops whose derivative is cheaper from it. */
    mt_status (*unary_bwd)(mt_exec *ex, mt_unary_op op, float *dx, const float *dy, const float *x, const float *y,
                           int64_t n);
    mt_status (*scalar_fwd)(mt_exec *ex, mt_scalar_op op, float *out, const float *x, float s, int64_t n);
    mt_status (*scalar_bwd)(mt_exec *ex, mt_scalar_op op, float *dx, const float *dy, const float *x, float s,
                            int64_t n);
    mt_status (*binary_fwd)(mt_exec *ex, mt_binary_op op, float *out, const float *a, const float *b,
                            const mt_bcast *bc);
    /* da += sum over a's broadcast axes of dy * d(out)/da; same for db. da or db may be NULL. */
    mt_status (*binary_bwd)(mt_exec *ex, mt_binary_op op, float *da, float *db, const float *dy, const float *a,
                            const float *b, const mt_bcast *bc);
    /* out = mask != 0 ? value : x, mask (F32) broadcast through bc (a = x, b = mask). */
    mt_status (*masked_fill_fwd)(mt_exec *ex, float *out, const float *x, const float *mask, float value,
                                 const mt_bcast *bc);
    mt_status (*masked_fill_bwd)(mt_exec *ex, float *dx, const float *dy, const float *mask, const mt_bcast *bc);
    /* Element i is kept (and scaled by 1/(1-p)) iff mt_rng_uniform(seed, offset + i) >= p; with a
     * residual (may be NULL) out[i] = residual[i] + that (the residual connection, one pass). */
    mt_status (*dropout_fwd)(mt_exec *ex, float *out, const float *x, int64_t n, float p, uint64_t seed,
                             uint64_t offset, const float *residual);
    mt_status (*dropout_bwd)(mt_exec *ex, float *dx, const float *dy, int64_t n, float p, uint64_t seed,
                             uint64_t offset);

    /* ---- reductions ---- */
    /* out (= or += when accumulate) sum / max of x over rd->axes. For max, argidx (may be NULL) receives
     * the flat index into x of the first maximum. */
    mt_status (*reduce_fwd)(mt_exec *ex, mt_reduce_op op, float *out, int32_t *argidx, const float *x,
                            const mt_reduce_desc *rd, int accumulate);
    /* sum: dx += dy broadcast back over the reduced axes (scaled by `scale`, 1/n for a mean);
     * max: dx[argidx[o]] += dy[o]. */
    mt_status (*reduce_bwd)(mt_exec *ex, mt_reduce_op op, float *dx, const float *dy, const int32_t *argidx,
                            const mt_reduce_desc *rd, float scale);
    /* Index of the first maximum over the middle axis of x viewed as (outer, n, inner). */
    mt_status (*argmax)(mt_exec *ex, int32_t *out, const float *x, int64_t outer, int64_t n, int64_t inner);
    /* out[0] (= or += when accumulate) sum of x[i]^2 (grad-norm clipping). */
    mt_status (*sumsq)(mt_exec *ex, float *out, const float *x, int64_t n, int accumulate);

    /* ---- layout ---- */
    /* out[o] (= or +=) in[i] for every index of shape, o = sum idx*ostride, i = sum idx*istride.
     * elem_size 2 or 4; accumulate only for F32. Serves permute, narrow, concat and their backward. */
    mt_status (*copy_strided)(mt_exec *ex, void *out, const int64_t *ostride, const void *in, const int64_t *istride,
                              const int64_t *shape, int ndim, size_t elem_size, int accumulate);

    /* ---- matrix products ---- */
    /* C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b] for b < batch, row-major; op = transpose when ta/tb.
     * op(A) is M x K, op(B) is K x N, C is M x N; strides between batch items (0 = shared).
     * The op layer never passes stride_c == 0 with batch > 1 (a gradient summed over items is issued
     * one GEMM per item instead), so the items may run concurrently (strided-batched GEMM).
     * In a context of precision BF16 / F16 (only backends with gemm_lowp are) A and B are rounded to
     * that type first and the products accumulated in f32, as cuBLAS's _FAST_16BF / _16F compute types
     * do: the backward of a mixed-precision product relies on it instead of casting its operands. */
    mt_status (*gemm)(mt_exec *ex, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b, float beta,
                      float *C, int64_t ldc, int64_t stride_c, int64_t batch);

    /* ---- fused nn kernels ---- */
    /* Softmax over the last axis of x (N, C); log = 1 gives log_softmax. */
    mt_status (*softmax_fwd)(mt_exec *ex, float *out, const float *x, int64_t N, int64_t C, int log);
    mt_status (*softmax_bwd)(mt_exec *ex, float *dx, const float *dy, const float *y, int64_t N, int64_t C, int log);
    /* Layer norm over C: out (N,C), mean (N), rstd (N); w (C), b (C) (b may be NULL). out_bf16 (may be
     * NULL): out rounded to bf16 as well, in the same pass (the next GEMM's operand in bf16 mixed
     * precision, so it needs no cast launch); likewise for rmsnorm_fwd. */
    mt_status (*layernorm_fwd)(mt_exec *ex, float *out, float *mean, float *rstd, const float *x, const float *w,
                               const float *b, int64_t N, int64_t C, float eps, uint16_t *out_bf16);
    /* dx, dw, db accumulate; any may be NULL. */
    mt_status (*layernorm_bwd)(mt_exec *ex, float *dx, float *dw, float *db, const float *dout, const float *x,
                               const float *w, const float *mean, const float *rstd, int64_t N, int64_t C);
    mt_status (*rmsnorm_fwd)(mt_exec *ex, float *out, float *rstd, const float *x, const float *w, int64_t N,
                             int64_t C, float eps, uint16_t *out_bf16);
    mt_status (*rmsnorm_bwd)(mt_exec *ex, float *dx, float *dw, const float *dout, const float *x, const float *w,
                             const float *rstd, int64_t N, int64_t C);
    /* out (N, C) = scale * table[ids[n]] rows; ids (N) I32 in [0, V). Scale 1: the rows' 32-bit words
     * copied as they are (the row gather of beam search and index_rows, any 4-byte dtype); another scale:
     * f32 rows times scale (the model's sqrt(d_model)-scaled embedding, one launch instead of two). */
    mt_status (*embedding_fwd)(mt_exec *ex, float *out, const float *table, const int32_t *ids, int64_t N,
                               int64_t C, float scale);
    /* dtable[ids[n]] += scale * dout[n] (scatter-add; ids may repeat). */
    mt_status (*embedding_bwd)(mt_exec *ex, float *dtable, const float *dout, const int32_t *ids, int64_t N,
                               int64_t C, float scale);
    /* Mean over rows whose target != ignore_index of the label-smoothed cross-entropy
     *   loss_n = (1-eps) * (lse_n - x[n,t_n]) + eps * (lse_n - mean_v x[n,v])
     * (PyTorch's F.cross_entropy(label_smoothing=eps, ignore_index=...)). loss and count are device
     * scalars; lse (N) is saved for the backward. count == 0 gives loss 0. */
    mt_status (*cross_entropy_fwd)(mt_exec *ex, float *loss, float *count, float *lse, const float *logits,
                                   const int32_t *targets, int64_t N, int64_t V, float eps, int ignore_index);
    /* dlogits += dloss/count * (softmax - smoothed one-hot), rows with the ignored target untouched. */
    mt_status (*cross_entropy_bwd)(mt_exec *ex, float *dlogits, const float *dloss, const float *count,
                                   const float *lse, const float *logits, const int32_t *targets, int64_t N,
                                   int64_t V, float eps, int ignore_index);
    /* Fused attention (see mt_attn_desc); scores never leave the kernel's working memory. A query row
     * whose keys are all masked gives zeros (and lse = -inf). */
    mt_status (*attention_fwd)(mt_exec *ex, float *out, float *lse, const float *q, const float *k, const float *v,
                               const mt_attn_desc *ad);
    /* dq, dk, dv accumulate (dk/dv summed over the heads that share them); any may be NULL. */
    mt_status (*attention_bwd)(mt_exec *ex, float *dq, float *dk, float *dv, const float *dout, const float *out,
                               const float *lse, const float *q, const float *k, const float *v,
                               const mt_attn_desc *ad);
    /* Rotary embedding on x (R, T, D), D even: pair (x[2i], x[2i+1]) at position pos0 + t is rotated by
     * sign * (pos0 + t) * base^(-2i/D), written (=) or, with accumulate, added (+=) to out. The backward
     * is the same kernel with sign = -1, accumulating into the input's gradient. */
    mt_status (*rope)(mt_exec *ex, float *out, const float *x, int64_t R, int64_t T, int64_t D, int64_t pos0,
                      float base, float sign, int accumulate);
    /* AdamW on one parameter: g is scaled by grad_scale first (clipping);
     *   m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (m/bc1 / (sqrt(v/bc2) + eps) + wd p). */
    mt_status (*adamw)(mt_exec *ex, float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                       float b2, float eps, float wd, float bc1, float bc2, float grad_scale);

    /* ---- appended: mixed precision (may be NULL: the backend has no low-precision GEMM) ---- */
    /* As gemm, with A and B of dtype ab (MT_DTYPE_BF16 or MT_DTYPE_F16), C F32, products accumulated in
     * f32 (alpha, beta f32). Serves bf16 mixed-precision training and bf16/f16 inference. */
    mt_status (*gemm_lowp)(mt_exec *ex, mt_dtype ab, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                           const void *A, int64_t lda, int64_t stride_a, const void *B, int64_t ldb,
                           int64_t stride_b, float beta, float *C, int64_t ldc, int64_t stride_c, int64_t batch);

    /* ---- appended: ordering between contexts (NULL: the backend's work is done when a call returns) ----
     * A GPU context's kernels run later on its own stream, so a context that reads persistent tensors
     * (weights) another context has just queued writes to must wait for them. publish marks how far
     * the context's queued work has got; join makes the context's later work wait, on the device and
     * not on the host, for the last publish of every other context of the same device. The context
     * layer joins at creation and at every reset, and publishes at every reset and at the end of a
     * training step (core/context.c, train/optim.c). */
    mt_status (*publish)(mt_exec *ex);
    mt_status (*join)(mt_exec *ex);

    /* ---- appended: clipping on the device ---- */
    /* adamw with grad_scale = mt_clip_scale(*ss, clip_norm) (core/numeric.h) read on the device from
     * ss, the squared global norm (a device scalar sumsq wrote): no host read between the norm and
     * the update. A non-finite norm leaves p, m, v untouched (the caller reads the norm later). */
    mt_status (*adamw_clip)(mt_exec *ex, float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                            float b2, float eps, float wd, float bc1, float bc2, const float *ss, double clip_norm);

    /* ---- appended: multi-tensor optimizer step (a few launches for every parameter together) ---- */
    /* out[0] (= or +=) the sum over every slot's gradient of g^2 (the squared global norm), summed in
     * an order that does not depend on scheduling. slots is host memory. */
    mt_status (*sumsq_multi)(mt_exec *ex, float *out, const mt_adamw_slot *slots, int n_slots, int accumulate);
    /* adamw_clip over every slot (each with its own wd); with zero_grad each gradient is zeroed after
     * use (also when a non-finite norm skips the update), which replaces a zero launch per parameter. */
    mt_status (*adamw_multi)(mt_exec *ex, const mt_adamw_slot *slots, int n_slots, float lr, float b1, float b2,
                             float eps, float bc1, float bc2, const float *ss, double clip_norm, int zero_grad);

    /* ---- appended: devices ---- */
    /* A device backend (NULL for the CPU's): the number of its devices, 0 without any (never fails);
     * why (may be NULL) receives the reason in words (the driver's status), for error messages. */
    int (*device_count)(char *why, size_t cap);

    /* ---- appended: int8 inference (may be NULL: the backend has no int8 GEMM) ---- */
    /* y (R, w->n) = x (R, w->k) W^T (+ bias): each row of x quantized to int8 on the fly (core/quant.h),
     * int8 products accumulated in int32, rescaled by the row's and the output channel's scales. work:
     * MT_QLINEAR_WORK(R, n, k) bytes of scratch on the device, 64-byte aligned. */
    mt_status (*qlinear)(mt_exec *ex, int64_t R, const float *x, const struct mt_qweight *w, const float *bias,
                         float *y, void *work);

    /* ---- appended: the step's low-precision weights (may be NULL: the backend has no gemm_lowp) ----
     * Every slot's src (F32) rounded into dst (dt: MT_DTYPE_BF16 or MT_DTYPE_F16) in one launch: the
     * weights' GEMM operands cast once per step (ops/precision.c, mt_cast_weights). slots is host
     * memory. */
    mt_status (*cast_multi)(mt_exec *ex, const mt_cast_slot *slots, int n_slots, mt_dtype dt);

    /* ---- appended: GEMM epilogues (may be NULL: the op layer adds the bias itself) ----
     * C (M, N) = op(A) op(B) + bias, the bias (N, F32) added to every row in the GEMM's epilogue; A and
     * B of dtype ab (MT_DTYPE_BF16 / F16), C F32 (=, not +=), f32 accumulation: a linear layer with a
     * bias in one launch instead of a broadcast copy and a GEMM accumulating onto it. With relu, C is
     * then max(0, C) (the CPU's ReLU: x > 0 ? x : 0) in the same epilogue: a feed-forward layer's
     * first projection and its activation in one launch (mt_linear_act). */
    mt_status (*gemm_lowp_bias)(mt_exec *ex, mt_dtype ab, int ta, int tb, int64_t M, int64_t N, int64_t K,
                                const void *A, int64_t lda, const void *B, int64_t ldb, const float *bias, float *C,
                                int64_t ldc, int relu);

    /* ---- appended: the fused classifier (may be NULL: the op layer runs cross_entropy_fwd/_bwd) ----
     * cross_entropy_fwd's loss and count, and in the same pass the logits overwritten by the gradient
     * of *dloss times the loss (what cross_entropy_bwd would add to a zeroed dlogits): row n becomes
     * *dloss/count * (softmax - smoothed one-hot), zeros where the target is ignore_index (or outside
     * [0, V)). dloss is a device scalar read by the kernel: the logits' gradient exists before the
     * backward starts and needs no buffer of its own. */
    mt_status (*cross_entropy_fused)(mt_exec *ex, float *loss, float *count, float *logits, const int32_t *targets,
                                     const float *dloss, int64_t N, int64_t V, float eps, int ignore_index);
} mt_backend;

/* The backend of a device: the CPU backend, or the device backend of the build's table when the
 * device exists. MT_ERR_NO_DEVICE (with a message) otherwise. */
mt_status mt_backend_get(int device, const mt_backend **out);

/* The backends this build has, NULL-terminated: the CPU's first, then the device backend if any
 * (engine/core/backends_cpu.c or cuda/backends.c). The engine reaches devices only through it. */
extern const mt_backend *const mt_backends[];
/* The device backend of the build (NULL without one) and its device count (0 without a device or
 * backend); why (may be NULL) receives the reason. */
const mt_backend *mt_device_backend(void);
int mt_device_backend_count(char *why, size_t cap);

extern const mt_backend mt_cpu_backend;
#ifdef MT_WITH_CUDA
/* Defined in cuda/ (the tests and benchmarks use it directly); NULL-free: the table is complete. */
extern const mt_backend mt_cuda_backend;
int mt_cuda_device_count(void);
int mt_cuda_probe(char *why, size_t cap);
#endif

/* Device selection for --gpus: parses "0,1" (comma-separated CUDA device indices; "cpu" or "" means
 * none) into ids[0..*n). Every id must exist: a missing device is MT_ERR_NO_DEVICE naming it and the
 * number present; a malformed list or a repeated id is MT_ERR_INVALID_ARG. */
mt_status mt_devices_parse(const char *spec, int *ids, int cap, int *n);
/* The one device of a single-device program (mt-train, mt-translate): --gpus with one index, or
 * MT_DEVICE_CPU for "" / "cpu". Several indices are MT_ERR_UNSUPPORTED naming the program (training
 * over several GPUs is the distributed trainer's job). */
mt_status mt_device_single(const char *program, const char *spec, int *device);

#endif
