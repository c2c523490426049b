/*
 * api_tensor.c — the low-level tensor part of the ABI (mt_tensor_* in abi/microtensor.h): thin
 * wrappers over the op layer (engine/ops/ops.h).
 *
 * The op layer reports a failure as NULL + ctx->status, and keeps the first failure of a step sticky
 * so straight-line model code can check once. An ABI call instead answers for itself: each wrapper
 * clears the context's status, runs the op, turns NULL into the op's status, and puts back the
 * status the context had before. So a failing ABI call neither poisons the context for later calls
 * nor hides its own error behind an earlier one. Results go through out pointers, which are written
 * only on success. NULL handles and pointers are MT_ERR_INVALID_ARG before anything runs.
 */
#include <string.h>

#include "core/autograd.h"
#include "core/backend.h"
#include "core/error.h"
#include "ops/ops.h"

/* A call of an op that returns a tensor: run, map, restore. */
#define MT_API_OP(ctx, out, expr)                                                        \
    do {                                                                                 \
        mt_status saved_ = (ctx)->status;                                                \
        (ctx)->status = MT_OK;                                                           \
        mt_tensor *r_ = (expr);                                                          \
        mt_status st_ = r_ ? MT_OK : ((ctx)->status != MT_OK ? (ctx)->status : MT_ERR_INTERNAL); \
        (ctx)->status = saved_;                                                          \
        if (st_ == MT_OK) *(out) = r_;                                                   \
        return st_;                                                                      \
    } while (0)

#define MT_NEED(cond, what)                                                                    \
    do {                                                                                       \
        if (!(cond)) return mt_error(MT_ERR_INVALID_ARG, "%s: %s is NULL", __func__, what); \
    } while (0)

/* Tensors handed in as const are read-only to the op, but the tape keeps them (and backward writes
 * their .grad), so the op layer takes them mutable. */
static inline mt_tensor *mut(const mt_tensor *t) { return (mt_tensor *)t; }

/* ------------------------------------------------------------------------------------------------
 * creation
 * ---------------------------------------------------------------------------------------------- */

/* A tensor of ctx's device: arena (until mt_context_reset) or persistent (until mt_tensor_free). */
static mt_status make(mt_context *ctx, mt_dtype dtype, int ndim, const int64_t *shape, int persistent,
                      mt_tensor **out) {
    if (ndim > 0 && !shape) return mt_error(MT_ERR_INVALID_ARG, "tensor: shape is NULL");
    if (persistent) return mt_tensor_new_persistent(ctx->device, dtype, ndim, shape, NULL, out);
    MT_API_OP(ctx, out, mt_new(ctx, dtype, ndim, shape));
}

mt_status mt_tensor_empty(mt_context_t *ctx, mt_dtype dtype, int ndim, const int64_t *shape, int persistent,
                          mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(out, "out");
    return make(ctx, dtype, ndim, shape, persistent, out);
}

/* Creates a persistent or arena F32 tensor and runs init(ctx, t) on it; frees it on failure. */
static mt_status make_init(mt_context *ctx, int ndim, const int64_t *shape, int persistent, mt_tensor **out,
                           mt_status (*init)(mt_context *, mt_tensor *, const float *), const float *args) {
    mt_tensor *t = NULL;
    MT_TRY(make(ctx, MT_DTYPE_F32, ndim, shape, persistent, &t));
    mt_status st = init(ctx, t, args);
    if (st != MT_OK) {
        mt_tensor_free(t); /* no-op for arena tensors: their memory goes back at reset */
        return st;
    }
    *out = t;
    return MT_OK;
}

static mt_status init_full(mt_context *ctx, mt_tensor *t, const float *a) { return mt_fill(ctx, t, a[0]); }
static mt_status init_uniform(mt_context *ctx, mt_tensor *t, const float *a) {
    return mt_fill_uniform(ctx, t, a[0], a[1]);
}
static mt_status init_normal(mt_context *ctx, mt_tensor *t, const float *a) {
    return mt_fill_normal(ctx, t, a[0], a[1]);
}

mt_status mt_tensor_full(mt_context_t *ctx, int ndim, const int64_t *shape, float value, int persistent,
                         mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(out, "out");
    return make_init(ctx, ndim, shape, persistent, out, init_full, (const float[]){value});
}

mt_status mt_tensor_arange(mt_context_t *ctx, double start, double step, int64_t n, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_arange(ctx, start, step, n));
}

mt_status mt_tensor_from_data(mt_context_t *ctx, mt_dtype dtype, int ndim, const int64_t *shape, const void *data,
                              int persistent, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(data, "data");
    MT_NEED(out, "out");
    mt_tensor *t = NULL;
    MT_TRY(make(ctx, dtype, ndim, shape, persistent, &t));
    mt_status st = ctx->ex.backend->to_device(&ctx->ex, t->data, data, mt_tensor_bytes(t));
    if (st != MT_OK) {
        mt_tensor_free(t);
        return st;
    }
    *out = t;
    return MT_OK;
}

mt_status mt_tensor_uniform(mt_context_t *ctx, int ndim, const int64_t *shape, float low, float high, int persistent,
                            mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(out, "out");
    if (!(low <= high)) return mt_error(MT_ERR_INVALID_ARG, "uniform: low %g > high %g", low, high);
    return make_init(ctx, ndim, shape, persistent, out, init_uniform, (const float[]){low, high});
}

mt_status mt_tensor_normal(mt_context_t *ctx, int ndim, const int64_t *shape, float mean, float std, int persistent,
                           mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(out, "out");
    if (!(std >= 0.0f)) return mt_error(MT_ERR_INVALID_ARG, "normal: std %g is negative", std);
    return make_init(ctx, ndim, shape, persistent, out, init_normal, (const float[]){mean, std});
}

/* mt_tensor_free is in core/tensor.c. */

/* ------------------------------------------------------------------------------------------------
 * inspection and host copies
 * ---------------------------------------------------------------------------------------------- */

int mt_tensor_ndim(const mt_tensor_t *t) { return t ? t->ndim : -1; }

int64_t mt_tensor_dim(const mt_tensor_t *t, int axis) {
    if (!t) return -1;
    int a = mt_axis(axis, t->ndim);
    return a < 0 ? -1 : t->shape[a];
}

int64_t mt_tensor_numel(const mt_tensor_t *t) { return t ? t->numel : 0; }

mt_dtype mt_tensor_dtype(const mt_tensor_t *t) { return t ? t->dtype : (mt_dtype)-1; }

/* The execution state a copy of t runs on: its context's, or (persistent tensors) a temporary one of
 * its device. Arena tensors from before a reset are refused. */
static mt_status exec_of(const mt_tensor *t, const char *op, mt_exec *tmp, mt_exec **ex) {
    if (t->ctx) {
        if (t->epoch != t->ctx->epoch)
            return mt_error(MT_ERR_STATE, "%s: the tensor is from a step before the last mt_context_reset", op);
        *ex = &t->ctx->ex;
        return MT_OK;
    }
    const mt_backend *be;
    MT_TRY(mt_backend_get(t->device, &be));
    memset(tmp, 0, sizeof *tmp);
    tmp->backend = be;
    tmp->device = t->device;
    MT_TRY(be->exec_init(tmp, t->device));
    *ex = tmp;
    return MT_OK;
}

static void exec_done(mt_exec *tmp, mt_exec *ex) {
    if (ex == tmp) tmp->backend->exec_free(tmp);
}

mt_status mt_tensor_read(const mt_tensor_t *t, void *dst, size_t bytes) {
    MT_NEED(t, "t");
    MT_NEED(dst, "dst");
    size_t need = mt_tensor_bytes(t);
    if (bytes < need)
        return mt_error(MT_ERR_BUFFER_TOO_SMALL, "mt_tensor_read: buffer of %zu bytes, the tensor holds %zu", bytes,
                        need);
    mt_exec tmp, *ex = NULL;
    MT_TRY(exec_of(t, "mt_tensor_read", &tmp, &ex));
    mt_status st = ex->backend->to_host(ex, dst, t->data, need);
    exec_done(&tmp, ex);
    return st;
}

mt_status mt_tensor_write(mt_tensor_t *t, const void *src, size_t bytes) {
    MT_NEED(t, "t");
    MT_NEED(src, "src");
    size_t need = mt_tensor_bytes(t);
    if (bytes < need)
        return mt_error(MT_ERR_BUFFER_TOO_SMALL, "mt_tensor_write: %zu bytes given, the tensor holds %zu", bytes, need);
    if (bytes > need)
        return mt_error(MT_ERR_INVALID_ARG, "mt_tensor_write: %zu bytes given, the tensor holds %zu", bytes, need);
    mt_exec tmp, *ex = NULL;
    MT_TRY(exec_of(t, "mt_tensor_write", &tmp, &ex));
    mt_status st = ex->backend->to_device(ex, t->data, src, need);
    exec_done(&tmp, ex);
    return st;
}

/* ------------------------------------------------------------------------------------------------
 * autograd
 * ---------------------------------------------------------------------------------------------- */

mt_status mt_tensor_set_requires_grad(mt_tensor_t *t, int requires_grad) {
    MT_NEED(t, "t");
    return mt_requires_grad(t, requires_grad);
}

mt_status mt_tensor_grad(const mt_tensor_t *t, mt_tensor_t **out_grad) {
    MT_NEED(t, "t");
    MT_NEED(out_grad, "out_grad");
    *out_grad = t->grad;
    return MT_OK;
}

mt_status mt_tensor_zero_grad(mt_tensor_t *t) {
    MT_NEED(t, "t");
    if (!t->grad) return MT_OK;
    mt_exec tmp, *ex = NULL;
    MT_TRY(exec_of(t, "mt_tensor_zero_grad", &tmp, &ex));
    mt_status st = mt_zero_grad(ex, t);
    exec_done(&tmp, ex);
    return st;
}

mt_status mt_tensor_detach(mt_context_t *ctx, const mt_tensor_t *t, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(t, "t");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_detach(ctx, mut(t)));
}

mt_status mt_tensor_backward(mt_context_t *ctx, mt_tensor_t *root, const mt_tensor_t *grad_root) {
    MT_NEED(ctx, "ctx");
    MT_NEED(root, "root");
    mt_status saved = ctx->status;
    ctx->status = MT_OK;
    mt_status st = mt_backward(ctx, root, grad_root);
    ctx->status = saved;
    return st;
}

/* ------------------------------------------------------------------------------------------------
 * ops
 * ---------------------------------------------------------------------------------------------- */

mt_status mt_tensor_unary(mt_context_t *ctx, mt_unary_op op, const mt_tensor_t *x, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_unary(ctx, op, mut(x)));
}

mt_status mt_tensor_binary(mt_context_t *ctx, mt_binary_op op, const mt_tensor_t *a, const mt_tensor_t *b,
                           mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(a, "a");
    MT_NEED(b, "b");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_binary(ctx, op, mut(a), mut(b)));
}

mt_status mt_tensor_scalar(mt_context_t *ctx, mt_binary_op op, const mt_tensor_t *x, float s, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(out, "out");
    /* mt_binary_op and the first four mt_scalar_op values coincide (x op s). */
    if ((unsigned)op > MT_BINARY_DIV) return mt_error(MT_ERR_INVALID_ARG, "mt_tensor_scalar: unknown op %d", (int)op);
    MT_API_OP(ctx, out, mt_scalar(ctx, (mt_scalar_op)op, mut(x), s));
}

mt_status mt_tensor_pow(mt_context_t *ctx, const mt_tensor_t *x, float exponent, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_pow(ctx, mut(x), exponent));
}

mt_status mt_tensor_reduce(mt_context_t *ctx, mt_reduce_op op, const mt_tensor_t *x, const int *axes, int n_axes,
                           int keepdim, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(out, "out");
    if (n_axes > 0) MT_NEED(axes, "axes");
    MT_API_OP(ctx, out, mt_reduce(ctx, op, mut(x), axes, n_axes, keepdim));
}

mt_status mt_tensor_argmax(mt_context_t *ctx, const mt_tensor_t *x, int axis, int keepdim, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_argmax(ctx, mut(x), axis, keepdim));
}

mt_status mt_tensor_matmul(mt_context_t *ctx, const mt_tensor_t *a, const mt_tensor_t *b, int trans_a, int trans_b,
                           mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(a, "a");
    MT_NEED(b, "b");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_matmul(ctx, mut(a), mut(b), trans_a, trans_b));
}

mt_status mt_tensor_softmax(mt_context_t *ctx, const mt_tensor_t *x, int axis, int log, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, log ? mt_log_softmax(ctx, mut(x), axis) : mt_softmax(ctx, mut(x), axis));
}

mt_status mt_tensor_reshape(mt_context_t *ctx, const mt_tensor_t *x, int ndim, const int64_t *shape,
                            mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(out, "out");
    if (ndim > 0) MT_NEED(shape, "shape");
    MT_API_OP(ctx, out, mt_reshape(ctx, mut(x), ndim, shape));
}

mt_status mt_tensor_permute(mt_context_t *ctx, const mt_tensor_t *x, const int *perm, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(out, "out");
    if (x->ndim > 0) MT_NEED(perm, "perm");
    MT_API_OP(ctx, out, mt_permute(ctx, mut(x), perm));
}

mt_status mt_tensor_narrow(mt_context_t *ctx, const mt_tensor_t *x, int axis, int64_t start, int64_t length,
                           mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_narrow(ctx, mut(x), axis, start, length));
}

mt_status mt_tensor_concat(mt_context_t *ctx, const mt_tensor_t *const *xs, int n, int axis, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(xs, "xs");
    MT_NEED(out, "out");
    if (n < 1) return mt_error(MT_ERR_INVALID_ARG, "mt_tensor_concat: n = %d, need at least one tensor", n);
    for (int i = 0; i < n; i++)
        if (!xs[i]) return mt_error(MT_ERR_INVALID_ARG, "mt_tensor_concat: xs[%d] is NULL", i);
    MT_API_OP(ctx, out, mt_concat(ctx, (mt_tensor *const *)xs, n, axis));
}

mt_status mt_tensor_layer_norm(mt_context_t *ctx, const mt_tensor_t *x, const mt_tensor_t *w, const mt_tensor_t *b,
                               float eps, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(w, "w");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_layer_norm(ctx, mut(x), mut(w), mut(b), eps));
}

mt_status mt_tensor_rms_norm(mt_context_t *ctx, const mt_tensor_t *x, const mt_tensor_t *w, float eps,
                             mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(w, "w");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_rms_norm(ctx, mut(x), mut(w), eps));
}

mt_status mt_tensor_embedding(mt_context_t *ctx, const mt_tensor_t *table, const mt_tensor_t *ids, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(table, "table");
    MT_NEED(ids, "ids");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_embedding(ctx, mut(table), mut(ids)));
}

mt_status mt_tensor_masked_fill(mt_context_t *ctx, const mt_tensor_t *x, const mt_tensor_t *mask, float value,
                                mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(mask, "mask");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_masked_fill(ctx, mut(x), mut(mask), value));
}

mt_status mt_tensor_dropout(mt_context_t *ctx, const mt_tensor_t *x, float p, int training, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(x, "x");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_dropout(ctx, mut(x), p, training));
}

mt_status mt_tensor_cross_entropy(mt_context_t *ctx, const mt_tensor_t *logits, const mt_tensor_t *targets,
                                  float label_smoothing, int ignore_index, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(logits, "logits");
    MT_NEED(targets, "targets");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_cross_entropy(ctx, mut(logits), mut(targets), label_smoothing, ignore_index));
}

mt_status mt_tensor_attention(mt_context_t *ctx, const mt_tensor_t *q, const mt_tensor_t *k, const mt_tensor_t *v,
                              const mt_tensor_t *mask, int causal, float scale, mt_tensor_t **out) {
    MT_NEED(ctx, "ctx");
    MT_NEED(q, "q");
    MT_NEED(k, "k");
    MT_NEED(v, "v");
    MT_NEED(out, "out");
    MT_API_OP(ctx, out, mt_attention(ctx, mut(q), mut(k), mut(v), mut(mask), causal, scale));
}
