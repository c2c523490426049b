/*
 * nn.c — the fused nn ops: softmax / log_softmax, layer and RMS norm, embedding and row gathering,
 * label-smoothed cross-entropy, rotary embedding.
 */
#include "ops/ops_internal.h"

static mt_status softmax_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *gx = mt_grad_of(ctx, n->in[0]);
    if (!gx) return ctx->status;
    int64_t C = n->i[0];
    return MT_BE(ctx)->softmax_bwd(&ctx->ex, mt_f32(gx), mt_f32(n->out->grad), mt_f32(n->out), gx->numel / C, C,
                                   (int)n->i[1]);
}

static mt_tensor *softmax_any(mt_context *ctx, mt_tensor *x, int axis, int log) {
    const char *name = log ? "log_softmax" : "softmax";
    if (!mt_check_f32(ctx, name, x)) return NULL;
    if (x->ndim == 0) return mt_fail(ctx, MT_ERR_SHAPE, "%s: needs at least one dim", name);
    int a = mt_axis(axis, x->ndim);
    if (a < 0) {
        char s[MT_SHAPE_STR];
        return mt_fail(ctx, MT_ERR_AXIS, "%s: axis %d out of range for %s", name, axis, mt_shape_str(s, x->shape, x->ndim));
    }
    if (a != x->ndim - 1) { /* move the axis last, normalise, move it back */
        mt_tensor *t = mt_transpose(ctx, x, a, x->ndim - 1);
        return mt_transpose(ctx, softmax_any(ctx, t, -1, log), a, x->ndim - 1);
    }
    int64_t C = x->shape[a];
    mt_tensor *y = mt_new_like(ctx, x);
    if (!y) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->softmax_fwd(&ctx->ex, mt_f32(y), mt_f32(x), x->numel / C, C, log));
    if (mt_needs_grad(ctx, &x, 1)) {
        mt_node *n = mt_tape_push(ctx, name, softmax_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        n->i[0] = C;
        n->i[1] = log;
    }
    return y;
}

mt_tensor *mt_softmax(mt_context *ctx, mt_tensor *x, int axis) { return softmax_any(ctx, x, axis, 0); }
mt_tensor *mt_log_softmax(mt_context *ctx, mt_tensor *x, int axis) { return softmax_any(ctx, x, axis, 1); }

/* Checks a norm's weight (and bias) against x's last dim C. */
static int check_norm(mt_context *ctx, const char *op, mt_tensor *x, mt_tensor *w, mt_tensor *b) {
    if (!mt_check_f32(ctx, op, x) || !mt_check_f32(ctx, op, w) || (b && !mt_check_f32(ctx, op, b))) return 0;
    char sx[MT_SHAPE_STR], sw[MT_SHAPE_STR];
    if (x->ndim < 1) {
        mt_fail(ctx, MT_ERR_SHAPE, "%s: x needs at least one dim", op);
        return 0;
    }
    int64_t C = x->shape[x->ndim - 1];
    if (w->ndim != 1 || w->shape[0] != C || (b && (b->ndim != 1 || b->shape[0] != C))) {
        mt_fail(ctx, MT_ERR_SHAPE, "%s: x %s needs weight%s of shape (%lld), got %s", op,
                mt_shape_str(sx, x->shape, x->ndim), b ? " and bias" : "", (long long)C,
                mt_shape_str(sw, (w->ndim != 1 || w->shape[0] != C) ? w->shape : b->shape,
                             (w->ndim != 1 || w->shape[0] != C) ? w->ndim : b->ndim));
        return 0;
    }
    return 1;
}

static mt_status layer_norm_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    float *gx = NULL, *gw = NULL, *gb = NULL;
    mt_tensor *g;
    if (mt_tensor_requires_grad(x)) {
        if (!(g = mt_grad_of(ctx, x))) return ctx->status;
        gx = mt_f32(g);
    }
    if (mt_tensor_requires_grad(w)) {
        if (!(g = mt_grad_of(ctx, w))) return ctx->status;
        gw = mt_f32(g);
    }
    if (b && mt_tensor_requires_grad(b)) {
        if (!(g = mt_grad_of(ctx, b))) return ctx->status;
        gb = mt_f32(g);
    }
    int64_t C = w->shape[0];
    return MT_BE(ctx)->layernorm_bwd(&ctx->ex, gx, gw, gb, mt_f32(n->out->grad), mt_f32(x), mt_f32(w),
                                     mt_f32(n->saved[0]), mt_f32(n->saved[1]), x->numel / C, C);
}

mt_tensor *mt_layer_norm(mt_context *ctx, mt_tensor *x, mt_tensor *w, mt_tensor *b, float eps) {
    if (!check_norm(ctx, "layer_norm", x, w, b)) return NULL;
    int64_t C = w->shape[0], N = x->numel / C;
    mt_tensor *y = mt_new_like(ctx, x), *mean = mt_new(ctx, MT_DTYPE_F32, 1, &N), *rstd = mt_new(ctx, MT_DTYPE_F32, 1, &N);
    if (!y || !mean || !rstd) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->layernorm_fwd(&ctx->ex, mt_f32(y), mt_f32(mean), mt_f32(rstd), mt_f32(x), mt_f32(w),
                                             b ? mt_f32(b) : NULL, N, C, eps, mt_lowp_side_output(ctx, y)));
    mt_tensor *in[3] = {x, w, b};
    if (mt_needs_grad(ctx, in, 3)) {
        mt_node *n = mt_tape_push(ctx, "layer_norm", layer_norm_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        n->in[1] = w;
        n->in[2] = b;
        n->saved[0] = mean;
        n->saved[1] = rstd;
    }
    return y;
}

static mt_status rms_norm_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *x = n->in[0], *w = n->in[1], *g;
    float *gx = NULL, *gw = NULL;
    if (mt_tensor_requires_grad(x)) {
        if (!(g = mt_grad_of(ctx, x))) return ctx->status;
        gx = mt_f32(g);
    }
    if (mt_tensor_requires_grad(w)) {
        if (!(g = mt_grad_of(ctx, w))) return ctx->status;
        gw = mt_f32(g);
    }
    int64_t C = w->shape[0];
    return MT_BE(ctx)->rmsnorm_bwd(&ctx->ex, gx, gw, mt_f32(n->out->grad), mt_f32(x), mt_f32(w), mt_f32(n->saved[0]),
                                   x->numel / C, C);
}

mt_tensor *mt_rms_norm(mt_context *ctx, mt_tensor *x, mt_tensor *w, float eps) {
    if (!check_norm(ctx, "rms_norm", x, w, NULL)) return NULL;
    int64_t C = w->shape[0], N = x->numel / C;
    mt_tensor *y = mt_new_like(ctx, x), *rstd = mt_new(ctx, MT_DTYPE_F32, 1, &N);
    if (!y || !rstd) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->rmsnorm_fwd(&ctx->ex, mt_f32(y), mt_f32(rstd), mt_f32(x), mt_f32(w), N, C, eps,
                                           mt_lowp_side_output(ctx, y)));
    mt_tensor *in[2] = {x, w};
    if (mt_needs_grad(ctx, in, 2)) {
        mt_node *n = mt_tape_push(ctx, "rms_norm", rms_norm_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        n->in[1] = w;
        n->saved[0] = rstd;
    }
    return y;
}

/* Host-side range check of I32 ids (CPU tensors; a GPU kernel clamps instead of reading outside).
 * allow points at one extra accepted value (the ignored target id) or is NULL. */
static int check_ids(mt_context *ctx, const char *op, const mt_tensor *ids, int64_t limit, const int *allow) {
    if (ids->dtype != MT_DTYPE_I32) {
        char d[MT_SHAPE_STR + 8];
        mt_fail(ctx, MT_ERR_DTYPE, "%s: ids %s must be i32", op, mt_tensor_desc(d, ids));
        return 0;
    }
    if (ids->device != MT_DEVICE_CPU) return 1;
    const int32_t *p = mt_i32(ids);
    for (int64_t i = 0; i < ids->numel; i++) {
        if ((p[i] < 0 || p[i] >= limit) && !(allow && p[i] == *allow)) {
            mt_fail(ctx, MT_ERR_INVALID_ARG, "%s: id %d at position %lld is outside [0, %lld)", op, p[i], (long long)i,
                    (long long)limit);
            return 0;
        }
    }
    return 1;
}

static mt_status embedding_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *g = mt_grad_of(ctx, n->in[0]);
    if (!g) return ctx->status;
    int64_t C = n->in[0]->shape[1];
    return MT_BE(ctx)->embedding_bwd(&ctx->ex, mt_f32(g), mt_f32(n->out->grad), mt_i32(n->in[1]), n->in[1]->numel, C,
                                     n->f[0]);
}

mt_tensor *mt_embedding(mt_context *ctx, mt_tensor *table, mt_tensor *ids) {
    return mt_embedding_scaled(ctx, table, ids, 1.0f);
}

mt_tensor *mt_embedding_scaled(mt_context *ctx, mt_tensor *table, mt_tensor *ids, float scale) {
    if (!mt_check_f32(ctx, "embedding", table) || !mt_check_input(ctx, "embedding", ids)) return NULL;
    char st[MT_SHAPE_STR];
    if (table->ndim != 2) return mt_fail(ctx, MT_ERR_SHAPE, "embedding: table %s must be (V, C)", mt_shape_str(st, table->shape, table->ndim));
    if (ids->ndim + 1 > MT_MAX_DIMS) return mt_fail(ctx, MT_ERR_SHAPE, "embedding: ids have too many dims");
    if (!check_ids(ctx, "embedding", ids, table->shape[0], NULL)) return NULL;
    int64_t shape[MT_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
    shape[ids->ndim] = table->shape[1];
    mt_tensor *y = mt_new(ctx, MT_DTYPE_F32, ids->ndim + 1, shape);
    if (!y) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->embedding_fwd(&ctx->ex, mt_f32(y), mt_f32(table), mt_i32(ids), ids->numel, table->shape[1],
                                             scale));
    if (mt_needs_grad(ctx, &table, 1)) {
        mt_node *n = mt_tape_push(ctx, "embedding", embedding_backward, y);
        if (!n) return NULL;
        n->in[0] = table;
        n->in[1] = ids;
        n->f[0] = scale;
    }
    return y;
}

mt_tensor *mt_index_rows(mt_context *ctx, mt_tensor *x, mt_tensor *ids) {
    if (!mt_check_input(ctx, "index_rows", x) || !mt_check_input(ctx, "index_rows", ids)) return NULL;
    if (x->ndim < 1 || ids->ndim != 1 || mt_dtype_size(x->dtype) != 4)
        return mt_fail(ctx, MT_ERR_SHAPE, "index_rows: needs x (N, ...) of 4-byte elements and ids (M)");
    if (!check_ids(ctx, "index_rows", ids, x->shape[0], NULL)) return NULL;
    int64_t shape[MT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    shape[0] = ids->shape[0];
    mt_tensor *y = mt_new(ctx, x->dtype, x->ndim, shape);
    if (!y) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->embedding_fwd(&ctx->ex, (float *)y->data, (const float *)x->data, mt_i32(ids),
                                             ids->numel, x->numel / x->shape[0], 1.0f));
    return y;
}

static mt_status cross_entropy_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *logits = n->in[0], *targets = n->in[1];
    mt_tensor *g = mt_grad_of(ctx, logits);
    if (!g) return ctx->status;
    int64_t N = logits->shape[0], V = logits->shape[1];
    return MT_BE(ctx)->cross_entropy_bwd(&ctx->ex, mt_f32(g), mt_f32(n->out->grad), mt_f32(n->saved[1]),
                                         mt_f32(n->saved[0]), mt_f32(logits), mt_i32(targets), N, V, n->f[0],
                                         (int)n->i[0]);
}

static int check_cross_entropy(mt_context *ctx, mt_tensor *logits, mt_tensor *targets, float eps, int ignore_index) {
    if (!mt_check_f32(ctx, "cross_entropy", logits) || !mt_check_input(ctx, "cross_entropy", targets)) return 0;
    char sl[MT_SHAPE_STR], stg[MT_SHAPE_STR];
    if (logits->ndim != 2 || targets->ndim != 1 || targets->shape[0] != logits->shape[0]) {
        mt_fail(ctx, MT_ERR_SHAPE, "cross_entropy: logits %s and targets %s: need (N, V) and (N)",
                mt_shape_str(sl, logits->shape, logits->ndim), mt_shape_str(stg, targets->shape, targets->ndim));
        return 0;
    }
    if (!(eps >= 0.0f && eps < 1.0f)) {
        mt_fail(ctx, MT_ERR_INVALID_ARG, "cross_entropy: label_smoothing %g must be in [0, 1)", eps);
        return 0;
    }
    return check_ids(ctx, "cross_entropy", targets, logits->shape[1], &ignore_index);
}

mt_tensor *mt_cross_entropy(mt_context *ctx, mt_tensor *logits, mt_tensor *targets, float eps, int ignore_index) {
    if (!check_cross_entropy(ctx, logits, targets, eps, ignore_index)) return NULL;
    int64_t N = logits->shape[0], V = logits->shape[1], one = 1;
    mt_tensor *loss = mt_new(ctx, MT_DTYPE_F32, 0, NULL), *count = mt_new(ctx, MT_DTYPE_F32, 1, &one);
    mt_tensor *lse = mt_new(ctx, MT_DTYPE_F32, 1, &N);
    if (!loss || !count || !lse) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->cross_entropy_fwd(&ctx->ex, mt_f32(loss), mt_f32(count), mt_f32(lse), mt_f32(logits),
                                                 mt_i32(targets), N, V, eps, ignore_index));
    if (mt_needs_grad(ctx, &logits, 1)) {
        mt_node *n = mt_tape_push(ctx, "cross_entropy", cross_entropy_backward, loss);
        if (!n) return NULL;
        n->in[0] = logits;
        n->in[1] = targets;
        n->saved[0] = lse;
        n->saved[1] = count;
        n->f[0] = eps;
        n->i[0] = ignore_index;
    }
    return loss;
}

/* The logits' gradient is already in their memory (the forward wrote it): the backward only makes it
 * present for the op that produced them, and fails if another consumer added to it first. */
static mt_status cross_entropy_fused_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *logits = n->in[0];
    if (logits->grad)
        return mt_error(MT_ERR_STATE, "cross_entropy (fused): the logits it overwrote with their gradient have "
                        "another consumer; use mt_cross_entropy");
    return mt_grad_of(ctx, logits) ? MT_OK : ctx->status;
}

mt_tensor *mt_cross_entropy_fused(mt_context *ctx, mt_tensor *logits, mt_tensor *targets, float eps, int ignore_index,
                                  mt_tensor *dloss) {
    if (!check_cross_entropy(ctx, logits, targets, eps, ignore_index) || !mt_check_f32(ctx, "cross_entropy", dloss))
        return NULL;
    if (dloss->numel != 1)
        return mt_fail(ctx, MT_ERR_SHAPE, "cross_entropy (fused): dloss has %lld elements, not 1",
                       (long long)dloss->numel);
    if (!MT_BE(ctx)->cross_entropy_fused || !mt_needs_grad(ctx, &logits, 1) || !mt_grad_in_place(ctx, logits))
        return mt_cross_entropy(ctx, logits, targets, eps, ignore_index);
    int64_t N = logits->shape[0], V = logits->shape[1], one = 1;
    mt_tensor *loss = mt_new(ctx, MT_DTYPE_F32, 0, NULL), *count = mt_new(ctx, MT_DTYPE_F32, 1, &one);
    if (!loss || !count) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->cross_entropy_fused(&ctx->ex, mt_f32(loss), mt_f32(count), mt_f32(logits),
                                                   mt_i32(targets), mt_f32(dloss), N, V, eps, ignore_index));
    logits->flags |= MT_TENSOR_OVERWRITTEN;
    mt_node *n = mt_tape_push(ctx, "cross_entropy (fused)", cross_entropy_fused_backward, loss);
    if (!n) return NULL;
    n->in[0] = logits;
    n->in[1] = targets;
    n->in[2] = dloss;
    n->seed = dloss;
    return loss;
}

static mt_status rope_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *x = n->in[0];
    mt_tensor *gx = mt_grad_of(ctx, x);
    if (!gx) return ctx->status;
    int64_t T = n->i[0], D = n->i[1];
    return MT_BE(ctx)->rope(&ctx->ex, mt_f32(gx), mt_f32(n->out->grad), x->numel / (T * D), T, D, n->i[2], n->f[0],
                            -1.0f, 1);
}

mt_tensor *mt_rope(mt_context *ctx, mt_tensor *x, int64_t pos0, float base) {
    if (!mt_check_f32(ctx, "rope", x)) return NULL;
    char s[MT_SHAPE_STR];
    if (x->ndim < 2 || x->shape[x->ndim - 1] % 2 != 0)
        return mt_fail(ctx, MT_ERR_SHAPE, "rope: x %s must be (..., T, D) with D even", mt_shape_str(s, x->shape, x->ndim));
    if (pos0 < 0 || !(base > 1.0f)) return mt_fail(ctx, MT_ERR_INVALID_ARG, "rope: pos0 %lld / base %g out of range", (long long)pos0, base);
    int64_t T = x->shape[x->ndim - 2], D = x->shape[x->ndim - 1];
    mt_tensor *y = mt_new_like(ctx, x);
    if (!y) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->rope(&ctx->ex, mt_f32(y), mt_f32(x), x->numel / (T * D), T, D, pos0, base, 1.0f, 0));
    if (mt_needs_grad(ctx, &x, 1)) {
        mt_node *n = mt_tape_push(ctx, "rope", rope_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        n->i[0] = T;
        n->i[1] = D;
        n->i[2] = pos0;
        n->f[0] = base;
    }
    return y;
}
