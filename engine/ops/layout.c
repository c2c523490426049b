/*
 * layout.c — reshape (a view), permute/transpose, narrow, concat and concat_heads (copies), with their
 * backward. Every copy is one call of the backend's strided copy; the backward is the same copy the
 * other way round, accumulating (summing over a broadcast axis).
 */
#include "ops/ops_internal.h"

static mt_status reshape_backward(mt_context *ctx, mt_node *n) {
    if (mt_view_grad_aliased(ctx, n)) return ctx->status;
    mt_tensor *gx = mt_grad_of(ctx, n->in[0]);
    if (!gx) return ctx->status;
    return mt_accumulate(ctx, mt_f32(gx), mt_f32(n->out->grad), gx->numel);
}

mt_tensor *mt_reshape(mt_context *ctx, mt_tensor *x, int ndim, const int64_t *shape) {
    if (!mt_check_input(ctx, "reshape", x)) return NULL;
    if (ndim < 0 || ndim > MT_MAX_DIMS || (ndim > 0 && !shape))
        return mt_fail(ctx, MT_ERR_SHAPE, "reshape: %d dims (at most %d)", ndim, MT_MAX_DIMS);
    int64_t s[MT_MAX_DIMS], known = 1;
    int infer = -1;
    for (int d = 0; d < ndim; d++) {
        s[d] = shape[d];
        if (s[d] == -1 && infer < 0) {
            infer = d;
        } else {
            if (s[d] < 1) {
                char a[MT_SHAPE_STR];
                return mt_fail(ctx, MT_ERR_SHAPE, "reshape: %s -> bad dim %lld at axis %d",
                               mt_shape_str(a, x->shape, x->ndim), (long long)s[d], d);
            }
            known *= s[d];
        }
    }
    if (infer >= 0) {
        if (x->numel % known != 0) {
            char a[MT_SHAPE_STR];
            return mt_fail(ctx, MT_ERR_SHAPE, "reshape: %s has %lld elements, not a multiple of %lld",
                           mt_shape_str(a, x->shape, x->ndim), (long long)x->numel, (long long)known);
        }
        s[infer] = x->numel / known;
    }
    mt_tensor *y = mt_view(ctx, x, ndim, s);
    if (!y) return NULL;
    if (x->dtype == MT_DTYPE_F32 && mt_needs_grad(ctx, &x, 1)) {
        mt_node *n = mt_tape_push(ctx, "reshape", reshape_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        n->alias_in0 = 1;
    }
    return y;
}

typedef struct permute_desc {
    int ndim;
    int64_t shape[MT_MAX_DIMS];   /* output shape */
    int64_t ostr[MT_MAX_DIMS];    /* output (contiguous) strides */
    int64_t istr[MT_MAX_DIMS];    /* input strides, in output axis order */
} permute_desc;

static mt_status permute_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *gx = mt_grad_of(ctx, n->in[0]);
    if (!gx) return ctx->status;
    const permute_desc *p = n->p;
    return MT_BE(ctx)->copy_strided(&ctx->ex, gx->data, p->istr, n->out->grad->data, p->ostr, p->shape, p->ndim, 4, 1);
}

mt_tensor *mt_permute(mt_context *ctx, mt_tensor *x, const int *perm) {
    if (!mt_check_input(ctx, "permute", x)) return NULL;
    if (!perm && x->ndim > 0) return mt_fail(ctx, MT_ERR_INVALID_ARG, "permute: perm is NULL");
    permute_desc p = {.ndim = x->ndim};
    int64_t xstr[MT_MAX_DIMS];
    mt_contig_strides(x->shape, x->ndim, xstr);
    unsigned seen = 0;
    for (int d = 0; d < x->ndim; d++) {
        int a = mt_axis(perm[d], x->ndim);
        if (a < 0 || (seen & (1u << a))) {
            char s[MT_SHAPE_STR];
            return mt_fail(ctx, MT_ERR_AXIS, "permute: entry %d (%d) is not a permutation of the axes of %s", d,
                           perm[d], mt_shape_str(s, x->shape, x->ndim));
        }
        seen |= 1u << a;
        p.shape[d] = x->shape[a];
        p.istr[d] = xstr[a];
    }
    mt_contig_strides(p.shape, p.ndim, p.ostr);
    size_t es = mt_dtype_size(x->dtype);
    if (es != 2 && es != 4) return mt_fail(ctx, MT_ERR_DTYPE, "permute: dtype %s is not supported", mt_dtype_name(x->dtype));
    mt_tensor *y = mt_new(ctx, x->dtype, p.ndim, p.shape);
    if (!y) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->copy_strided(&ctx->ex, y->data, p.ostr, x->data, p.istr, p.shape, p.ndim, es, 0));
    if (x->dtype == MT_DTYPE_F32 && mt_needs_grad(ctx, &x, 1)) {
        mt_node *n = mt_tape_push(ctx, "permute", permute_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        if (!(n->p = mt_ctx_keep(ctx, &p, sizeof p))) return NULL;
    }
    return y;
}

mt_tensor *mt_transpose(mt_context *ctx, mt_tensor *x, int axis0, int axis1) {
    if (!mt_check_input(ctx, "transpose", x)) return NULL;
    int a = mt_axis(axis0, x->ndim), b = mt_axis(axis1, x->ndim);
    if (a < 0 || b < 0) {
        char s[MT_SHAPE_STR];
        return mt_fail(ctx, MT_ERR_AXIS, "transpose: axes (%d, %d) out of range for %s", axis0, axis1,
                       mt_shape_str(s, x->shape, x->ndim));
    }
    int perm[MT_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) perm[d] = d;
    perm[a] = b;
    perm[b] = a;
    return mt_permute(ctx, x, perm);
}

/* A slab of x along one axis: narrow's forward copies it out, its backward adds into it. */
typedef struct slab_desc {
    int ndim;
    int64_t shape[MT_MAX_DIMS];  /* the slab's shape */
    int64_t sstr[MT_MAX_DIMS];   /* strides of the slab's own contiguous layout */
    int64_t bstr[MT_MAX_DIMS];   /* strides of the big tensor */
    int64_t offset;              /* element offset of the slab in the big tensor */
} slab_desc;

static slab_desc make_slab(const mt_tensor *big, int axis, int64_t start, int64_t length) {
    slab_desc s = {.ndim = big->ndim};
    memcpy(s.shape, big->shape, sizeof(int64_t) * (size_t)big->ndim);
    s.shape[axis] = length;
    mt_contig_strides(big->shape, big->ndim, s.bstr);
    mt_contig_strides(s.shape, s.ndim, s.sstr);
    s.offset = start * s.bstr[axis];
    return s;
}

static mt_status narrow_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *gx = mt_grad_of(ctx, n->in[0]);
    if (!gx) return ctx->status;
    const slab_desc *s = n->p;
    return MT_BE(ctx)->copy_strided(&ctx->ex, mt_f32(gx) + s->offset, s->bstr, n->out->grad->data, s->sstr, s->shape,
                                    s->ndim, 4, 1);
}

mt_tensor *mt_narrow(mt_context *ctx, mt_tensor *x, int axis, int64_t start, int64_t length) {
    if (!mt_check_input(ctx, "narrow", x)) return NULL;
    int a = mt_axis(axis, x->ndim);
    char s[MT_SHAPE_STR];
    if (a < 0) return mt_fail(ctx, MT_ERR_AXIS, "narrow: axis %d out of range for %s", axis, mt_shape_str(s, x->shape, x->ndim));
    if (start < 0 || length < 1 || start + length > x->shape[a])
        return mt_fail(ctx, MT_ERR_SHAPE, "narrow: [%lld, %lld) out of range of axis %d of %s", (long long)start,
                       (long long)(start + length), axis, mt_shape_str(s, x->shape, x->ndim));
    size_t es = mt_dtype_size(x->dtype);
    if (es != 2 && es != 4) return mt_fail(ctx, MT_ERR_DTYPE, "narrow: dtype %s is not supported", mt_dtype_name(x->dtype));
    slab_desc sd = make_slab(x, a, start, length);
    mt_tensor *y = mt_new(ctx, x->dtype, sd.ndim, sd.shape);
    if (!y) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->copy_strided(&ctx->ex, y->data, sd.sstr, (char *)x->data + (size_t)sd.offset * es, sd.bstr,
                                            sd.shape, sd.ndim, es, 0));
    if (x->dtype == MT_DTYPE_F32 && mt_needs_grad(ctx, &x, 1)) {
        mt_node *n = mt_tape_push(ctx, "narrow", narrow_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        if (!(n->p = mt_ctx_keep(ctx, &sd, sizeof sd))) return NULL;
    }
    return y;
}

/* concat keeps its inputs in the host arena (there may be more than a node has slots). */
typedef struct concat_desc {
    int n, axis;
    mt_tensor **xs;
} concat_desc;

static mt_status concat_backward(mt_context *ctx, mt_node *nd) {
    const concat_desc *c = nd->p;
    int64_t off = 0;
    for (int i = 0; i < c->n; i++) {
        mt_tensor *x = c->xs[i];
        slab_desc s = make_slab(nd->out, c->axis, off, x->shape[c->axis]);
        off += x->shape[c->axis];
        if (!mt_tensor_requires_grad(x)) continue;
        mt_tensor *gx = mt_grad_of(ctx, x);
        if (!gx) return ctx->status;
        MT_TRY(MT_BE(ctx)->copy_strided(&ctx->ex, gx->data, s.sstr, mt_f32(nd->out->grad) + s.offset, s.bstr, s.shape,
                                        s.ndim, 4, 1));
    }
    return MT_OK;
}

mt_tensor *mt_concat(mt_context *ctx, mt_tensor *const *xs, int n, int axis) {
    if (!xs || n < 1) return mt_fail(ctx, MT_ERR_INVALID_ARG, "concat: no tensors");
    for (int i = 0; i < n; i++)
        if (!mt_check_input(ctx, "concat", xs[i])) return NULL;
    const mt_tensor *x0 = xs[0];
    int a = mt_axis(axis, x0->ndim);
    char s0[MT_SHAPE_STR], si[MT_SHAPE_STR];
    if (a < 0) return mt_fail(ctx, MT_ERR_AXIS, "concat: axis %d out of range for %s", axis, mt_shape_str(s0, x0->shape, x0->ndim));
    int64_t shape[MT_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof(int64_t) * (size_t)x0->ndim);
    shape[a] = 0;
    for (int i = 0; i < n; i++) {
        const mt_tensor *x = xs[i];
        int ok = x->ndim == x0->ndim && x->dtype == x0->dtype;
        for (int d = 0; ok && d < x0->ndim; d++) ok = d == a || x->shape[d] == x0->shape[d];
        if (!ok)
            return mt_fail(ctx, MT_ERR_SHAPE, "concat: tensor %d %s does not fit tensor 0 %s along axis %d", i,
                           mt_shape_str(si, x->shape, x->ndim), mt_shape_str(s0, x0->shape, x0->ndim), axis);
        shape[a] += x->shape[a];
    }
    size_t es = mt_dtype_size(x0->dtype);
    if (es != 2 && es != 4) return mt_fail(ctx, MT_ERR_DTYPE, "concat: dtype %s is not supported", mt_dtype_name(x0->dtype));
    mt_tensor *y = mt_new(ctx, x0->dtype, x0->ndim, shape);
    if (!y) return NULL;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        slab_desc s = make_slab(y, a, off, xs[i]->shape[a]);
        off += xs[i]->shape[a];
        MT_KERNEL(ctx, MT_BE(ctx)->copy_strided(&ctx->ex, (char *)y->data + (size_t)s.offset * es, s.bstr, xs[i]->data,
                                                s.sstr, s.shape, s.ndim, es, 0));
    }
    if (x0->dtype == MT_DTYPE_F32 && mt_needs_grad(ctx, (mt_tensor *const *)xs, n)) {
        mt_node *nd = mt_tape_push(ctx, "concat", concat_backward, y);
        if (!nd) return NULL;
        concat_desc c = {.n = n, .axis = a};
        if (!(c.xs = mt_ctx_keep(ctx, xs, sizeof(mt_tensor *) * (size_t)n))) return NULL;
        if (!(nd->p = mt_ctx_keep(ctx, &c, sizeof c))) return NULL;
    }
    return y;
}

/* concat_heads: each part is copied by one strided copy; the descriptor keeps the parts and H. */
typedef struct heads_desc {
    int n;
    int64_t H;
    mt_tensor **xs;
} heads_desc;

/* The strides of part x read as (B, H, T, D_x): a 3-D (B, T, H*D_x) part is split into heads, a 4-D
 * (B, 1, T, D_x) part has head stride 0 (broadcast). */
static void heads_strides(const mt_tensor *x, int64_t H, int64_t shape[4], int64_t str[4]) {
    int64_t B = x->shape[0];
    if (x->ndim == 3) {
        int64_t T = x->shape[1], D = x->shape[2] / H;
        shape[0] = B, shape[1] = H, shape[2] = T, shape[3] = D;
        str[0] = T * H * D, str[1] = D, str[2] = H * D, str[3] = 1;
    } else {
        int64_t Hx = x->shape[1], T = x->shape[2], D = x->shape[3];
        shape[0] = B, shape[1] = H, shape[2] = T, shape[3] = D;
        str[0] = Hx * T * D, str[1] = Hx == 1 ? 0 : T * D, str[2] = D, str[3] = 1;
    }
}

static mt_status concat_heads_backward(mt_context *ctx, mt_node *nd) {
    const heads_desc *c = nd->p;
    const mt_tensor *y = nd->out;
    int64_t ystr[4], off = 0;
    mt_contig_strides(y->shape, 4, ystr);
    for (int i = 0; i < c->n; i++) {
        mt_tensor *x = c->xs[i];
        int64_t shape[4], xstr[4];
        heads_strides(x, c->H, shape, xstr);
        int64_t o = off;
        off += shape[3];
        if (!mt_tensor_requires_grad(x)) continue;
        mt_tensor *gx = mt_grad_of(ctx, x);
        if (!gx) return ctx->status;
        MT_TRY(MT_BE(ctx)->copy_strided(&ctx->ex, gx->data, xstr, mt_f32(nd->out->grad) + o, ystr, shape, 4, 4, 1));
    }
    return MT_OK;
}

mt_tensor *mt_concat_heads(mt_context *ctx, mt_tensor *const *xs, int n, int64_t H) {
    if (!xs || n < 1 || H < 1) return mt_fail(ctx, MT_ERR_INVALID_ARG, "concat_heads: no tensors or H = %lld", (long long)H);
    for (int i = 0; i < n; i++)
        if (!mt_check_input(ctx, "concat_heads", xs[i])) return NULL;
    const mt_tensor *x0 = xs[0];
    int64_t B = x0->shape[0], T = x0->ndim == 3 ? x0->shape[1] : x0->ndim == 4 ? x0->shape[2] : 0, Dt = 0;
    for (int i = 0; i < n; i++) {
        const mt_tensor *x = xs[i];
        int ok = x->dtype == x0->dtype && x->shape[0] == B;
        if (x->ndim == 3) ok = ok && x->shape[1] == T && x->shape[2] % H == 0;
        else ok = ok && x->ndim == 4 && (x->shape[1] == 1 || x->shape[1] == H) && x->shape[2] == T;
        if (!ok) {
            char s0[MT_SHAPE_STR], si[MT_SHAPE_STR];
            return mt_fail(ctx, MT_ERR_SHAPE, "concat_heads: tensor %d %s does not fit (B, T, H*D) or (B, H|1, T, D) "
                           "with H = %lld and tensor 0 %s", i, mt_shape_str(si, x->shape, x->ndim), (long long)H,
                           mt_shape_str(s0, x0->shape, x0->ndim));
        }
        Dt += x->ndim == 3 ? x->shape[2] / H : x->shape[3];
    }
    size_t es = mt_dtype_size(x0->dtype);
    if (es != 2 && es != 4)
        return mt_fail(ctx, MT_ERR_DTYPE, "concat_heads: dtype %s is not supported", mt_dtype_name(x0->dtype));
    int64_t yshape[4] = {B, H, T, Dt}, ystr[4], off = 0;
    mt_tensor *y = mt_new(ctx, x0->dtype, 4, yshape);
    if (!y) return NULL;
    mt_contig_strides(yshape, 4, ystr);
    for (int i = 0; i < n; i++) {
        int64_t shape[4], xstr[4];
        heads_strides(xs[i], H, shape, xstr);
        MT_KERNEL(ctx, MT_BE(ctx)->copy_strided(&ctx->ex, (char *)y->data + (size_t)off * es, ystr, xs[i]->data, xstr,
                                                shape, 4, es, 0));
        off += shape[3];
    }
    if (x0->dtype == MT_DTYPE_F32 && mt_needs_grad(ctx, (mt_tensor *const *)xs, n)) {
        mt_node *nd = mt_tape_push(ctx, "concat_heads", concat_heads_backward, y);
        if (!nd) return NULL;
        heads_desc c = {.n = n, .H = H};
        if (!(c.xs = mt_ctx_keep(ctx, xs, sizeof(mt_tensor *) * (size_t)n))) return NULL;
        if (!(nd->p = mt_ctx_keep(ctx, &c, sizeof c))) return NULL;
    }
    return y;
}
