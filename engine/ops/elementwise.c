/*
 * elementwise.c — unary, scalar and broadcast binary ops, masked_fill and dropout, with their
 * backward functions.
 */
#include "ops/ops_internal.h"

static const char *unary_name(mt_unary_op op) {
    static const char *names[] = {"neg", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu", "silu"};
    return (unsigned)op < sizeof names / sizeof names[0] ? names[op] : "unary";
}

mt_status mt_unary_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *x = n->in[0];
    mt_tensor *gx = mt_grad_of(ctx, x);
    if (!gx) return ctx->status;
    return MT_BE(ctx)->unary_bwd(&ctx->ex, (mt_unary_op)n->i[0], mt_f32(gx), mt_f32(n->out->grad), mt_f32(x),
                                 mt_f32(n->out), x->numel);
}

mt_tensor *mt_unary(mt_context *ctx, mt_unary_op op, mt_tensor *x) {
    const char *name = unary_name(op);
    if ((unsigned)op > MT_UNARY_SILU) return mt_fail(ctx, MT_ERR_INVALID_ARG, "unary: unknown op %d", (int)op);
    if (!mt_check_f32(ctx, name, x)) return NULL;
    mt_tensor *y = mt_new_like(ctx, x);
    if (!y) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->unary_fwd(&ctx->ex, op, mt_f32(y), mt_f32(x), x->numel));
    if (mt_needs_grad(ctx, &x, 1)) {
        mt_node *n = mt_tape_push(ctx, name, mt_unary_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        n->i[0] = op;
    }
    return y;
}

mt_tensor *mt_neg(mt_context *ctx, mt_tensor *x) { return mt_unary(ctx, MT_UNARY_NEG, x); }
mt_tensor *mt_exp(mt_context *ctx, mt_tensor *x) { return mt_unary(ctx, MT_UNARY_EXP, x); }
mt_tensor *mt_ln(mt_context *ctx, mt_tensor *x) { return mt_unary(ctx, MT_UNARY_LOG, x); }
mt_tensor *mt_tanh(mt_context *ctx, mt_tensor *x) { return mt_unary(ctx, MT_UNARY_TANH, x); }
mt_tensor *mt_sigmoid(mt_context *ctx, mt_tensor *x) { return mt_unary(ctx, MT_UNARY_SIGMOID, x); }
mt_tensor *mt_relu(mt_context *ctx, mt_tensor *x) { return mt_unary(ctx, MT_UNARY_RELU, x); }
mt_tensor *mt_gelu(mt_context *ctx, mt_tensor *x) { return mt_unary(ctx, MT_UNARY_GELU, x); }
mt_tensor *mt_silu(mt_context *ctx, mt_tensor *x) { return mt_unary(ctx, MT_UNARY_SILU, x); }

static mt_status scalar_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *x = n->in[0];
    mt_tensor *gx = mt_grad_of(ctx, x);
    if (!gx) return ctx->status;
    return MT_BE(ctx)->scalar_bwd(&ctx->ex, (mt_scalar_op)n->i[0], mt_f32(gx), mt_f32(n->out->grad), mt_f32(x),
                                  n->f[0], x->numel);
}

mt_tensor *mt_scalar(mt_context *ctx, mt_scalar_op op, mt_tensor *x, float s) {
    static const char *names[] = {"add_scalar", "sub_scalar", "mul_scalar", "div_scalar",
                                  "rsub_scalar", "rdiv_scalar", "pow"};
    if ((unsigned)op > MT_SCALAR_POW) return mt_fail(ctx, MT_ERR_INVALID_ARG, "scalar: unknown op %d", (int)op);
    if (!mt_check_f32(ctx, names[op], x)) return NULL;
    mt_tensor *y = mt_new_like(ctx, x);
    if (!y) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->scalar_fwd(&ctx->ex, op, mt_f32(y), mt_f32(x), s, x->numel));
    if (mt_needs_grad(ctx, &x, 1)) {
        mt_node *n = mt_tape_push(ctx, names[op], scalar_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        n->i[0] = op;
        n->f[0] = s;
    }
    return y;
}

mt_tensor *mt_add_scalar(mt_context *ctx, mt_tensor *x, float s) { return mt_scalar(ctx, MT_SCALAR_ADD, x, s); }
mt_tensor *mt_mul_scalar(mt_context *ctx, mt_tensor *x, float s) { return mt_scalar(ctx, MT_SCALAR_MUL, x, s); }
mt_tensor *mt_pow(mt_context *ctx, mt_tensor *x, float e) { return mt_scalar(ctx, MT_SCALAR_POW, x, e); }

static mt_status binary_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *a = n->in[0], *b = n->in[1];
    float *ga = NULL, *gb = NULL;
    if (mt_tensor_requires_grad(a)) {
        mt_tensor *g = mt_grad_of(ctx, a);
        if (!g) return ctx->status;
        ga = mt_f32(g);
    }
    if (mt_tensor_requires_grad(b)) {
        mt_tensor *g = mt_grad_of(ctx, b);
        if (!g) return ctx->status;
        gb = mt_f32(g);
    }
    return MT_BE(ctx)->binary_bwd(&ctx->ex, (mt_binary_op)n->i[0], ga, gb, mt_f32(n->out->grad), mt_f32(a), mt_f32(b),
                                  (const mt_bcast *)n->p);
}

mt_tensor *mt_binary(mt_context *ctx, mt_binary_op op, mt_tensor *a, mt_tensor *b) {
    static const char *names[] = {"add", "sub", "mul", "div"};
    if ((unsigned)op > MT_BINARY_DIV) return mt_fail(ctx, MT_ERR_INVALID_ARG, "binary: unknown op %d", (int)op);
    if (!mt_check_f32(ctx, names[op], a) || !mt_check_f32(ctx, names[op], b)) return NULL;
    mt_bcast bc;
    int nd;
    int64_t shape[MT_MAX_DIMS];
    if (!mt_make_bcast(ctx, names[op], a, b, &bc, &nd, shape)) return NULL;
    mt_tensor *y = mt_new(ctx, MT_DTYPE_F32, nd, shape);
    if (!y) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->binary_fwd(&ctx->ex, op, mt_f32(y), mt_f32(a), mt_f32(b), &bc));
    mt_tensor *in[2] = {a, b};
    if (mt_needs_grad(ctx, in, 2)) {
        mt_node *n = mt_tape_push(ctx, names[op], binary_backward, y);
        if (!n) return NULL;
        n->in[0] = a;
        n->in[1] = b;
        n->i[0] = op;
        if (!(n->p = mt_ctx_keep(ctx, &bc, sizeof bc))) return NULL;
    }
    return y;
}

mt_tensor *mt_add(mt_context *ctx, mt_tensor *a, mt_tensor *b) { return mt_binary(ctx, MT_BINARY_ADD, a, b); }
mt_tensor *mt_sub(mt_context *ctx, mt_tensor *a, mt_tensor *b) { return mt_binary(ctx, MT_BINARY_SUB, a, b); }
mt_tensor *mt_mul(mt_context *ctx, mt_tensor *a, mt_tensor *b) { return mt_binary(ctx, MT_BINARY_MUL, a, b); }
mt_tensor *mt_div(mt_context *ctx, mt_tensor *a, mt_tensor *b) { return mt_binary(ctx, MT_BINARY_DIV, a, b); }

static mt_status masked_fill_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *gx = mt_grad_of(ctx, n->in[0]);
    if (!gx) return ctx->status;
    return MT_BE(ctx)->masked_fill_bwd(&ctx->ex, mt_f32(gx), mt_f32(n->out->grad), mt_f32(n->in[1]),
                                       (const mt_bcast *)n->p);
}

mt_tensor *mt_masked_fill(mt_context *ctx, mt_tensor *x, mt_tensor *mask, float value) {
    if (!mt_check_f32(ctx, "masked_fill", x) || !mt_check_f32(ctx, "masked_fill", mask)) return NULL;
    mt_bcast bc;
    int nd;
    int64_t shape[MT_MAX_DIMS];
    if (!mt_make_bcast(ctx, "masked_fill", x, mask, &bc, &nd, shape)) return NULL;
    if (nd != x->ndim || memcmp(shape, x->shape, sizeof(int64_t) * (size_t)nd) != 0) {
        char a[MT_SHAPE_STR], b[MT_SHAPE_STR];
        return mt_fail(ctx, MT_ERR_SHAPE, "masked_fill: mask %s does not broadcast to x %s",
                       mt_shape_str(a, mask->shape, mask->ndim), mt_shape_str(b, x->shape, x->ndim));
    }
    mt_tensor *y = mt_new_like(ctx, x);
    if (!y) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->masked_fill_fwd(&ctx->ex, mt_f32(y), mt_f32(x), mt_f32(mask), value, &bc));
    if (mt_needs_grad(ctx, &x, 1)) {
        mt_node *n = mt_tape_push(ctx, "masked_fill", masked_fill_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        n->in[1] = mask;
        if (!(n->p = mt_ctx_keep(ctx, &bc, sizeof bc))) return NULL;
    }
    return y;
}

static mt_status dropout_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *gx = mt_grad_of(ctx, n->in[0]);
    if (!gx) return ctx->status;
    return MT_BE(ctx)->dropout_bwd(&ctx->ex, mt_f32(gx), mt_f32(n->out->grad), gx->numel, n->f[0],
                                   (uint64_t)n->i[0], (uint64_t)n->i[1]);
}

mt_tensor *mt_dropout(mt_context *ctx, mt_tensor *x, float p, int training) {
    if (!mt_check_f32(ctx, "dropout", x)) return NULL;
    if (!(p >= 0.0f && p < 1.0f)) return mt_fail(ctx, MT_ERR_INVALID_ARG, "dropout: p = %g must be in [0, 1)", p);
    if (!training || p == 0.0f) return x;
    mt_tensor *y = mt_new_like(ctx, x);
    if (!y) return NULL;
    uint64_t off = mt_rng_take(ctx, (uint64_t)x->numel);
    MT_KERNEL(ctx, MT_BE(ctx)->dropout_fwd(&ctx->ex, mt_f32(y), mt_f32(x), x->numel, p, ctx->seed, off, NULL));
    if (mt_needs_grad(ctx, &x, 1)) {
        mt_node *n = mt_tape_push(ctx, "dropout", dropout_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        n->f[0] = p;
        n->i[0] = (int64_t)ctx->seed;
        n->i[1] = (int64_t)off;
    }
    return y;
}

/* add_dropout: in[0] the residual, in[1] the dropped input. On a GPU backend the residual's gradient is
 * usually dy's own memory (core/autograd.h, mt_residual_grad_aliased): one launch fewer per add. */
static mt_status add_dropout_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *r = n->in[0], *x = n->in[1], *g;
    const float *dy = mt_f32(n->out->grad);
    if (mt_residual_grad_aliased(ctx, n)) {
        /* r's gradient is dy's memory (mt_backward's plan): r's share is already there. */
    } else if (mt_tensor_requires_grad(r)) {
        if (!(g = mt_grad_of(ctx, r))) return ctx->status;
        MT_TRY(mt_accumulate(ctx, mt_f32(g), dy, g->numel));
    }
    if (mt_tensor_requires_grad(x)) {
        if (!(g = mt_grad_of(ctx, x))) return ctx->status;
        MT_TRY(MT_BE(ctx)->dropout_bwd(&ctx->ex, mt_f32(g), dy, g->numel, n->f[0], (uint64_t)n->i[0],
                                       (uint64_t)n->i[1]));
    }
    return MT_OK;
}

mt_tensor *mt_add_dropout(mt_context *ctx, mt_tensor *r, mt_tensor *x, float p, int training) {
    if (!mt_check_f32(ctx, "add_dropout", r) || !mt_check_f32(ctx, "add_dropout", x)) return NULL;
    if (!(p >= 0.0f && p < 1.0f)) return mt_fail(ctx, MT_ERR_INVALID_ARG, "add_dropout: p = %g must be in [0, 1)", p);
    if (!training || p == 0.0f || !mt_same_shape(r, x)) return mt_add(ctx, r, mt_dropout(ctx, x, p, training));
    mt_tensor *y = mt_new_like(ctx, x);
    if (!y) return NULL;
    uint64_t off = mt_rng_take(ctx, (uint64_t)x->numel); /* the numbers mt_dropout would draw */
    MT_KERNEL(ctx, MT_BE(ctx)->dropout_fwd(&ctx->ex, mt_f32(y), mt_f32(x), x->numel, p, ctx->seed, off, mt_f32(r)));
    mt_tensor *in[2] = {r, x};
    if (mt_needs_grad(ctx, in, 2)) {
        mt_node *n = mt_tape_push(ctx, "add_dropout", add_dropout_backward, y);
        if (!n) return NULL;
        n->pass_in0 = 1; /* dr = dy: r's gradient may be dy's memory */
        n->in[0] = r;
        n->in[1] = x;
        n->f[0] = p;
        n->i[0] = (int64_t)ctx->seed;
        n->i[1] = (int64_t)off;
    }
    return y;
}
