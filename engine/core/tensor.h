/*
 * tensor.h — the tensor: dtype, device, up to 6 dims, contiguous storage, and its autograd fields.
 *
 * Storage is always contiguous and row-major. A tensor either owns its data (persistent tensors:
 * parameters, optimizer state, anything made with persistent=1) or borrows it from its context's
 * step arena (every op result and every non-persistent creation). reshape() is a view: a new tensor
 * struct over the same data. Everything else that changes the layout (permute, narrow, concat) copies.
 *
 * Shape letters used across the engine: B batch, T time (sequence), C channels, H heads, D head dim,
 * V vocabulary, N rows (any flattened leading dims), M/K/N of a GEMM.
 */
#ifndef MT_CORE_TENSOR_H
#define MT_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

struct mt_context;

enum {
    MT_TENSOR_PERSISTENT = 1u << 0,    /* owns its data; lives until mt_tensor_free */
    MT_TENSOR_REQUIRES_GRAD = 1u << 1, /* backward computes its gradient */
    MT_TENSOR_VIEW = 1u << 2,          /* borrows another tensor's data (reshape) */
    MT_TENSOR_OVERWRITTEN = 1u << 3,   /* its data became its gradient (mt_cross_entropy_fused): no op
                                        * takes it as an input any more */
};

struct mt_tensor {
    int ndim;                      /* 0 (scalar) .. MT_MAX_DIMS */
    int64_t shape[MT_MAX_DIMS];    /* shape[0..ndim) >= 1 */
    int64_t numel;                 /* product of shape (1 for a scalar) */
    mt_dtype dtype;
    int device;                    /* MT_DEVICE_CPU or a CUDA device index */
    void *data;                    /* numel elements of dtype, on device */
    struct mt_tensor *grad;        /* same shape, F32; NULL until backward reaches it */
    struct mt_context *ctx;        /* the context whose arena holds it; NULL for persistent tensors */
    uint32_t flags;                /* MT_TENSOR_* */
    int32_t node;                  /* index of the producing node on ctx's tape; -1 for a leaf */
    uint64_t epoch;                /* ctx->epoch when made: detects use after mt_context_reset */
    struct mt_qweight *qw;         /* a weight's int8 form (core/quant.h) when the model is quantized, used
                                      by inference's linear layers; owned (freed with the tensor); or NULL */
    struct mt_tensor *lowp;        /* a weight's bf16/f16 GEMM operand for the current step (arena memory of
                                      the context whose epoch is lowp_epoch; ops/precision.c) */
    uint64_t lowp_epoch;           /* lowp is valid only while that context's epoch is this (0: none) */
    float *wt;                     /* a CPU linear weight (n, k)'s transposed f32 copy (k, n) for inference
                                      (mt_weight_pack, nn/quant.c), which mt_linear multiplies by without
                                      a transposition when no gradient is needed; owned; or NULL */
    char name[64];                 /* parameters: their name in the model file (last: arena tensors
                                      clear the fields before it) */
};
typedef struct mt_tensor mt_tensor;

size_t mt_dtype_size(mt_dtype dt);
const char *mt_dtype_name(mt_dtype dt);

/* Checks ndim and shape values and computes numel. op names the caller for the error message. */
mt_status mt_shape_check(const char *op, int ndim, const int64_t *shape, int64_t *out_numel);

static inline size_t mt_tensor_bytes(const mt_tensor *t) { return (size_t)t->numel * mt_dtype_size(t->dtype); }
static inline int mt_tensor_requires_grad(const mt_tensor *t) {
    return t && (t->flags & MT_TENSOR_REQUIRES_GRAD);
}
static inline float *mt_f32(const mt_tensor *t) { return (float *)t->data; }
static inline int32_t *mt_i32(const mt_tensor *t) { return (int32_t *)t->data; }
/* Normalises a possibly negative axis; -1 if out of range. */
static inline int mt_axis(int axis, int ndim) {
    if (axis < 0) axis += ndim;
    return (axis >= 0 && axis < ndim) ? axis : -1;
}
int mt_same_shape(const mt_tensor *a, const mt_tensor *b);
/* "(2,3) f32" style description for error messages. */
char *mt_tensor_desc(char *buf, const mt_tensor *t);

/* A persistent tensor (parameter, optimizer state) on device, uninitialised; named (may be NULL).
 * Its data is allocated directly (not from an arena). */
mt_status mt_tensor_new_persistent(int device, mt_dtype dtype, int ndim, const int64_t *shape, const char *name,
                                   mt_tensor **out);
/* mt_tensor_free (microtensor.h) frees a persistent tensor and its gradient; no-op for arena tensors. */

#endif
