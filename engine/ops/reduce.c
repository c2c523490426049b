/*
 * reduce.c — sum, mean and max over any set of axes (with keepdim), argmax.
 */
#include "ops/ops_internal.h"

static mt_status reduce_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *gx = mt_grad_of(ctx, n->in[0]);
    if (!gx) return ctx->status;
    const mt_reduce_desc *rd = n->p;
    mt_reduce_op op = (mt_reduce_op)n->i[0];
    float scale = op == MT_REDUCE_MEAN ? 1.0f / (float)rd->n_red : 1.0f;
    return MT_BE(ctx)->reduce_bwd(&ctx->ex, op == MT_REDUCE_MAX ? MT_REDUCE_MAX : MT_REDUCE_SUM, mt_f32(gx),
                                  mt_f32(n->out->grad), n->saved[0] ? mt_i32(n->saved[0]) : NULL, rd, scale);
}

mt_tensor *mt_reduce(mt_context *ctx, mt_reduce_op op, mt_tensor *x, const int *axes, int n_axes, int keepdim) {
    static const char *names[] = {"sum", "mean", "max"};
    if ((unsigned)op > MT_REDUCE_MAX) return mt_fail(ctx, MT_ERR_INVALID_ARG, "reduce: unknown op %d", (int)op);
    const char *name = names[op];
    if (!mt_check_f32(ctx, name, x)) return NULL;
    if (n_axes < 0 || (n_axes > 0 && !axes)) return mt_fail(ctx, MT_ERR_INVALID_ARG, "%s: bad axes list", name);
    mt_reduce_desc rd = {.ndim = x->ndim, .axes = 0, .n_out = 1, .n_red = 1};
    for (int d = 0; d < x->ndim; d++) rd.shape[d] = x->shape[d];
    if (n_axes == 0) {
        rd.axes = (1u << x->ndim) - 1;
    } else {
        for (int i = 0; i < n_axes; i++) {
            int a = mt_axis(axes[i], x->ndim);
            char s[MT_SHAPE_STR];
            if (a < 0)
                return mt_fail(ctx, MT_ERR_AXIS, "%s: axis %d out of range for %s", name, axes[i],
                               mt_shape_str(s, x->shape, x->ndim));
            if (rd.axes & (1u << a))
                return mt_fail(ctx, MT_ERR_AXIS, "%s: axis %d listed twice for %s", name, axes[i],
                               mt_shape_str(s, x->shape, x->ndim));
            rd.axes |= 1u << a;
        }
    }
    int ond = 0;
    int64_t oshape[MT_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) {
        if (rd.axes & (1u << d)) {
            rd.n_red *= x->shape[d];
            if (keepdim) oshape[ond++] = 1;
        } else {
            rd.n_out *= x->shape[d];
            oshape[ond++] = x->shape[d];
        }
    }
    mt_tensor *y = mt_new(ctx, MT_DTYPE_F32, ond, oshape);
    if (!y) return NULL;
    mt_tensor *arg = NULL;
    if (op == MT_REDUCE_MAX) {
        arg = mt_new(ctx, MT_DTYPE_I32, 1, &rd.n_out);
        if (!arg) return NULL;
    }
    MT_KERNEL(ctx, MT_BE(ctx)->reduce_fwd(&ctx->ex, op == MT_REDUCE_MAX ? MT_REDUCE_MAX : MT_REDUCE_SUM, mt_f32(y),
                                          arg ? mt_i32(arg) : NULL, mt_f32(x), &rd, 0));
    if (op == MT_REDUCE_MEAN)
        MT_KERNEL(ctx, MT_BE(ctx)->scalar_fwd(&ctx->ex, MT_SCALAR_MUL, mt_f32(y), mt_f32(y), 1.0f / (float)rd.n_red,
                                              y->numel));
    if (mt_needs_grad(ctx, &x, 1)) {
        mt_node *n = mt_tape_push(ctx, name, reduce_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        n->saved[0] = arg;
        n->i[0] = op;
        if (!(n->p = mt_ctx_keep(ctx, &rd, sizeof rd))) return NULL;
    }
    return y;
}

mt_tensor *mt_sum(mt_context *ctx, mt_tensor *x, const int *axes, int n, int keepdim) {
    return mt_reduce(ctx, MT_REDUCE_SUM, x, axes, n, keepdim);
}
mt_tensor *mt_mean(mt_context *ctx, mt_tensor *x, const int *axes, int n, int keepdim) {
    return mt_reduce(ctx, MT_REDUCE_MEAN, x, axes, n, keepdim);
}
mt_tensor *mt_max(mt_context *ctx, mt_tensor *x, const int *axes, int n, int keepdim) {
    return mt_reduce(ctx, MT_REDUCE_MAX, x, axes, n, keepdim);
}

mt_tensor *mt_argmax(mt_context *ctx, mt_tensor *x, int axis, int keepdim) {
    if (!mt_check_f32(ctx, "argmax", x)) return NULL;
    int a = mt_axis(axis, x->ndim);
    if (a < 0) {
        char s[MT_SHAPE_STR];
        return mt_fail(ctx, MT_ERR_AXIS, "argmax: axis %d out of range for %s", axis, mt_shape_str(s, x->shape, x->ndim));
    }
    int64_t outer = 1, inner = 1, oshape[MT_MAX_DIMS];
    int ond = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (d < a) outer *= x->shape[d];
        if (d > a) inner *= x->shape[d];
        if (d != a) oshape[ond++] = x->shape[d];
        else if (keepdim) oshape[ond++] = 1;
    }
    mt_tensor *y = mt_new(ctx, MT_DTYPE_I32, ond, oshape);
    if (!y) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->argmax(&ctx->ex, mt_i32(y), mt_f32(x), outer, x->shape[a], inner));
    return y;
}
