/*
 * matmul.c — matrix products: batched matmul with broadcast batch dims and transpose flags, and the
 * nn.Linear product x @ w^T + bias.
 *
 * A product is planned once: when b is shared by every batch item and a is not transposed, a's batch
 * folds into M and the whole product is one GEMM (the common activation @ weight case, forward and
 * backward). Otherwise each batch item is one GEMM over its operands' offsets, issued as a single
 * strided-batched call when the offsets are regular.
 *
 * Precision (precision.c): a product runs in the dtype mt_gemm_dtype picks. In bf16/f16 the operands
 * are cast once in the forward and kept on the tape (saved[0], saved[1]); the backward casts the
 * output gradient once for both of its products.
 */
#include "core/quant.h"
#include "ops/ops_internal.h"

typedef struct mm_plan {
    int ta, tb;
    int64_t M, N, K;        /* per item, after folding */
    int64_t batch;          /* items */
    int64_t a_mat, b_mat;   /* elements of one A / B matrix */
    int64_t nd;             /* batch dims of the output */
    int64_t bshape[MT_MAX_DIMS], sa[MT_MAX_DIMS], sb[MT_MAX_DIMS]; /* batch dims, matrix-index strides */
} mm_plan;

static void item_offsets(const mm_plan *p, int64_t i, int64_t *oa, int64_t *ob) {
    int64_t a = 0, b = 0;
    for (int64_t d = p->nd - 1; d >= 0; d--) {
        int64_t idx = i % p->bshape[d];
        i /= p->bshape[d];
        a += idx * p->sa[d];
        b += idx * p->sb[d];
    }
    *oa = a * p->a_mat;
    *ob = b * p->b_mat;
}

/* 1 when item offsets are i*sa and i*sb for constants sa, sb (set). */
static int regular(const mm_plan *p, int64_t *sa, int64_t *sb) {
    int64_t a1 = 0, b1 = 0;
    if (p->batch > 1) item_offsets(p, 1, &a1, &b1);
    for (int64_t i = 2; i < p->batch; i++) {
        int64_t a, b;
        item_offsets(p, i, &a, &b);
        if (a != i * a1 || b != i * b1) return 0;
    }
    *sa = a1;
    *sb = b1;
    return 1;
}

/* The gradients: one strided-batched GEMM per operand when the items' offsets are regular and every
 * item has its own gradient slice; one GEMM per item, accumulating in order, when an operand is
 * shared by several items (its gradient sums over them: batched items writing one C could race). */
static mt_status mm_backward(mt_context *ctx, mt_node *n) {
    const mm_plan *p = n->p;
    mt_tensor *a = n->in[0], *b = n->in[1];
    mt_dtype dt = mt_backward_dtype(ctx, (mt_dtype)n->i[0], a, b);
    /* Operands in the products' dtype: the casts the forward kept, and the output gradient's (f32:
     * the tensors themselves). */
    int cast = dt != MT_DTYPE_F32;
    const void *ad = cast && n->saved[0] ? n->saved[0]->data : a->data;
    const void *bd = cast && n->saved[1] ? n->saved[1]->data : b->data;
    mt_tensor *dct = mt_gemm_operand(ctx, n->out->grad, dt);
    if (!dct) return ctx->status;
    const void *dc = dct->data;
    int64_t M = p->M, N = p->N, K = p->K, c_mat = M * N;
    /* Leading dims of the stored operands. */
    int64_t lda = p->ta ? M : K, ldb = p->tb ? K : N;
    int64_t ra = 0, rb = 0;
    int reg = regular(p, &ra, &rb);
    if (mt_tensor_requires_grad(a)) {
        mt_tensor *g = mt_grad_of(ctx, a);
        if (!g) return ctx->status;
        int one_call = reg && (ra != 0 || p->batch == 1);
        int64_t items = one_call ? 1 : p->batch, batch = one_call ? p->batch : 1;
        for (int64_t i = 0; i < items; i++) {
            int64_t oa = 0, ob = 0;
            if (!one_call) item_offsets(p, i, &oa, &ob);
            float *ga = mt_f32(g) + oa;
            const void *bb = mt_elem(bd, dt, ob), *dci = mt_elem(dc, dt, i * c_mat);
            if (!p->ta) /* dA (M,K) = dC (M,N) @ op(B)^T */
                MT_TRY(mt_gemm_run(ctx, dt, 0, !p->tb, M, K, N, 1.0f, dci, N, c_mat, bb, ldb, rb, 1.0f, ga, lda, ra, batch));
            else        /* dA (K,M) = op(B) (K,N) @ dC^T */
                MT_TRY(mt_gemm_run(ctx, dt, p->tb, 1, K, M, N, 1.0f, bb, ldb, rb, dci, N, c_mat, 1.0f, ga, lda, ra, batch));
        }
    }
    if (mt_tensor_requires_grad(b)) {
        mt_tensor *g = mt_grad_of(ctx, b);
        if (!g) return ctx->status;
        int one_call = reg && (rb != 0 || p->batch == 1);
        int64_t items = one_call ? 1 : p->batch, batch = one_call ? p->batch : 1;
        for (int64_t i = 0; i < items; i++) {
            int64_t oa = 0, ob = 0;
            if (!one_call) item_offsets(p, i, &oa, &ob);
            float *gb = mt_f32(g) + ob;
            const void *aa = mt_elem(ad, dt, oa), *dci = mt_elem(dc, dt, i * c_mat);
            if (!p->tb) /* dB (K,N) = op(A)^T (K,M) @ dC */
                MT_TRY(mt_gemm_run(ctx, dt, !p->ta, 0, K, N, M, 1.0f, aa, lda, ra, dci, N, c_mat, 1.0f, gb, ldb, rb, batch));
            else        /* dB (N,K) = dC^T (N,M) @ op(A) */
                MT_TRY(mt_gemm_run(ctx, dt, 1, p->ta, N, K, M, 1.0f, dci, N, c_mat, aa, lda, ra, 1.0f, gb, ldb, rb, batch));
        }
    }
    return MT_OK;
}

mt_tensor *mt_matmul(mt_context *ctx, mt_tensor *a, mt_tensor *b, int trans_a, int trans_b) {
    if (!mt_check_gemm_operand(ctx, "matmul", a) || !mt_check_gemm_operand(ctx, "matmul", b)) return NULL;
    mt_dtype dt;
    if (!mt_gemm_dtype(ctx, "matmul", a, b, &dt)) return NULL;
    char sa_[MT_SHAPE_STR], sb_[MT_SHAPE_STR];
    if (a->ndim < 2 || b->ndim < 2)
        return mt_fail(ctx, MT_ERR_SHAPE, "matmul: %s @ %s: operands need at least 2 dims",
                       mt_shape_str(sa_, a->shape, a->ndim), mt_shape_str(sb_, b->shape, b->ndim));
    mm_plan p = {.ta = trans_a != 0, .tb = trans_b != 0};
    int64_t ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int64_t br = b->shape[b->ndim - 2], bcl = b->shape[b->ndim - 1];
    p.M = p.ta ? ac : ar;
    p.K = p.ta ? ar : ac;
    int64_t kb = p.tb ? bcl : br;
    p.N = p.tb ? br : bcl;
    if (p.K != kb)
        return mt_fail(ctx, MT_ERR_SHAPE, "matmul: %s%s @ %s%s: inner dims differ (%lld vs %lld)",
                       mt_shape_str(sa_, a->shape, a->ndim), p.ta ? "^T" : "", mt_shape_str(sb_, b->shape, b->ndim),
                       p.tb ? "^T" : "", (long long)p.K, (long long)kb);
    /* Broadcast the batch dims. */
    int and_ = a->ndim - 2, bnd = b->ndim - 2;
    p.nd = and_ > bnd ? and_ : bnd;
    int64_t oshape[MT_MAX_DIMS], astr = 1, bstr = 1;
    p.batch = 1;
    for (int64_t d = p.nd - 1; d >= 0; d--) {
        int64_t da = d - (p.nd - and_), db = d - (p.nd - bnd);
        int64_t x = da >= 0 ? a->shape[da] : 1, y = db >= 0 ? b->shape[db] : 1;
        if (x != y && x != 1 && y != 1)
            return mt_fail(ctx, MT_ERR_SHAPE, "matmul: %s @ %s: batch dims do not broadcast",
                           mt_shape_str(sa_, a->shape, a->ndim), mt_shape_str(sb_, b->shape, b->ndim));
        p.bshape[d] = x > y ? x : y;
        p.sa[d] = x == p.bshape[d] && x > 1 ? astr : 0;
        p.sb[d] = y == p.bshape[d] && y > 1 ? bstr : 0;
        astr *= x;
        bstr *= y;
        p.batch *= p.bshape[d];
        oshape[d] = p.bshape[d];
    }
    oshape[p.nd] = p.M;
    oshape[p.nd + 1] = p.N;
    mt_tensor *c = mt_new(ctx, MT_DTYPE_F32, (int)p.nd + 2, oshape);
    mt_tensor *al = mt_gemm_input(ctx, a, dt), *bl = mt_gemm_input(ctx, b, dt);
    if (!c || !al || !bl) return NULL;
    /* Fold a's batch into M when b is shared and a is not transposed: one GEMM. */
    if (bstr == 1 && !p.ta && p.batch > 1) {
        p.M *= p.batch;
        p.batch = 1;
        p.nd = 0;
    }
    p.a_mat = p.M * p.K;
    p.b_mat = p.K * p.N;
    int64_t lda = p.ta ? p.M : p.K, ldb = p.tb ? p.K : p.N;
    int64_t ra, rb;
    if (regular(&p, &ra, &rb)) {
        MT_KERNEL(ctx, mt_gemm_run(ctx, dt, p.ta, p.tb, p.M, p.N, p.K, 1.0f, al->data, lda, ra, bl->data, ldb, rb, 0.0f,
                                   mt_f32(c), p.N, p.M * p.N, p.batch));
    } else {
        for (int64_t i = 0; i < p.batch; i++) {
            int64_t oa, ob;
            item_offsets(&p, i, &oa, &ob);
            MT_KERNEL(ctx, mt_gemm_run(ctx, dt, p.ta, p.tb, p.M, p.N, p.K, 1.0f, mt_elem(al->data, dt, oa), lda, 0,
                                       mt_elem(bl->data, dt, ob), ldb, 0, 0.0f, mt_f32(c) + i * p.M * p.N, p.N, 0, 1));
        }
    }
    mt_tensor *in[2] = {a, b};
    if (mt_needs_grad(ctx, in, 2)) {
        mt_node *n = mt_tape_push(ctx, "matmul", mm_backward, c);
        if (!n) return NULL;
        n->in[0] = a;
        n->in[1] = b;
        n->saved[0] = al != a ? al : NULL;
        n->saved[1] = bl != b ? bl : NULL;
        n->i[0] = dt;
        if (!(n->p = mt_ctx_keep(ctx, &p, sizeof p))) return NULL;
    }
    return c;
}

/* linear: y (R, N) = x (R, K) @ w^T + bias, R = all leading dims of x. */
static mt_status linear_backward(mt_context *ctx, mt_node *n) {
    const mt_backend *be = MT_BE(ctx);
    mt_tensor *x = n->in[0], *w = n->in[1], *bias = n->in[2];
    int64_t R = n->i[0], K = n->i[1], N = n->i[2];
    mt_dtype dt = mt_backward_dtype(ctx, (mt_dtype)n->i[3], x, w);
    const float *dy = mt_f32(n->out->grad);
    int cast = dt != MT_DTYPE_F32;
    const void *xd = cast && n->saved[0] ? n->saved[0]->data : x->data;
    const void *wd = cast && n->saved[1] ? n->saved[1]->data : w->data;
    const void *dyl = dy;
    if ((mt_tensor_requires_grad(x) || mt_tensor_requires_grad(w)) && dt != MT_DTYPE_F32) {
        mt_tensor *t = mt_gemm_operand(ctx, n->out->grad, dt);
        if (!t) return ctx->status;
        dyl = t->data;
    }
    int fresh;
    if (mt_tensor_requires_grad(x)) {
        mt_tensor *g = mt_grad_for_write(ctx, x, &fresh);
        if (!g) return ctx->status;
        MT_TRY(mt_gemm_run(ctx, dt, 0, 0, R, K, N, 1.0f, dyl, N, 0, wd, K, 0, fresh ? 0.0f : 1.0f, mt_f32(g), K, 0, 1));
    }
    if (mt_tensor_requires_grad(w)) {
        mt_tensor *g = mt_grad_for_write(ctx, w, &fresh);
        if (!g) return ctx->status;
        MT_TRY(mt_gemm_run(ctx, dt, 1, 0, N, K, R, 1.0f, dyl, N, 0, xd, K, 0, fresh ? 0.0f : 1.0f, mt_f32(g), K, 0, 1));
    }
    if (bias && mt_tensor_requires_grad(bias)) {
        mt_tensor *g = mt_grad_of(ctx, bias);
        if (!g) return ctx->status;
        mt_reduce_desc rd = {.ndim = 2, .shape = {R, N}, .axes = 1u, .n_out = N, .n_red = R};
        MT_TRY(be->reduce_fwd(&ctx->ex, MT_REDUCE_SUM, mt_f32(g), NULL, dy, &rd, 1));
    }
    return MT_OK;
}

mt_tensor *mt_linear_q8(mt_context *ctx, mt_tensor *x, mt_tensor *w, mt_tensor *bias) {
    if (!mt_check_f32(ctx, "linear_q8", x) || (bias && !mt_check_f32(ctx, "linear_q8", bias))) return NULL;
    char sx[MT_SHAPE_STR], sw[MT_SHAPE_STR];
    const mt_qweight *q = w->qw;
    if (!q || w->ndim != 2 || q->n != w->shape[0] || q->k != w->shape[1])
        return mt_fail(ctx, MT_ERR_INVALID_ARG, "linear_q8: weight '%s' %s has no int8 form", w->name,
                       mt_shape_str(sw, w->shape, w->ndim));
    if (!MT_BE(ctx)->qlinear)
        return mt_fail(ctx, MT_ERR_UNSUPPORTED, "linear_q8: the %s backend has no int8 GEMM", MT_BE(ctx)->name);
    if (x->ndim < 1 || x->shape[x->ndim - 1] != q->k)
        return mt_fail(ctx, MT_ERR_SHAPE, "linear_q8: x %s @ w^T with w %s: need x (..., K) and w (N, K)",
                       mt_shape_str(sx, x->shape, x->ndim), mt_shape_str(sw, w->shape, w->ndim));
    int64_t K = q->k, N = q->n, R = x->numel / K;
    if (bias && (bias->ndim != 1 || bias->shape[0] != N))
        return mt_fail(ctx, MT_ERR_SHAPE, "linear_q8: bias %s does not match w %s (want (%lld))",
                       mt_shape_str(sx, bias->shape, bias->ndim), mt_shape_str(sw, w->shape, w->ndim), (long long)N);
    mt_tensor *in[3] = {x, w, bias};
    if (mt_needs_grad(ctx, in, 3))
        return mt_fail(ctx, MT_ERR_UNSUPPORTED, "linear_q8: weight '%s' is int8 (inference only): no gradient",
                       w->name);
    int64_t oshape[MT_MAX_DIMS];
    memcpy(oshape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    oshape[x->ndim - 1] = N;
    mt_tensor *y = mt_new(ctx, MT_DTYPE_F32, x->ndim, oshape);
    void *work = mt_ctx_alloc_data(ctx, MT_QLINEAR_WORK(R, N, K));
    if (!y || !work) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->qlinear(&ctx->ex, R, mt_f32(x), q, bias ? mt_f32(bias) : NULL, mt_f32(y), work));
    return y;
}

/* mt_linear; with relu, where the bias goes into the GEMM's epilogue, the ReLU goes there too and
 * *fused is set: the result then holds relu(x W^T + b) (see mt_linear_act). */
static mt_tensor *linear_impl(mt_context *ctx, mt_tensor *x, mt_tensor *w, mt_tensor *bias, int relu, int *fused) {
    *fused = 0;
    if (!mt_check_gemm_operand(ctx, "linear", x) || !mt_check_gemm_operand(ctx, "linear", w)) return NULL;
    if (bias && !mt_check_f32(ctx, "linear", bias)) return NULL;
    mt_dtype dt;
    if (!mt_gemm_dtype(ctx, "linear", x, w, &dt)) return NULL;
    char sx[MT_SHAPE_STR], sw[MT_SHAPE_STR];
    if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1])
        return mt_fail(ctx, MT_ERR_SHAPE, "linear: x %s @ w^T with w %s: need x (..., K) and w (N, K)",
                       mt_shape_str(sx, x->shape, x->ndim), mt_shape_str(sw, w->shape, w->ndim));
    int64_t K = w->shape[1], N = w->shape[0], R = x->numel / K;
    if (bias && (bias->ndim != 1 || bias->shape[0] != N))
        return mt_fail(ctx, MT_ERR_SHAPE, "linear: bias %s does not match w %s (want (%lld))",
                       mt_shape_str(sx, bias->shape, bias->ndim), mt_shape_str(sw, w->shape, w->ndim), (long long)N);
    int64_t oshape[MT_MAX_DIMS];
    memcpy(oshape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    oshape[x->ndim - 1] = N;
    mt_tensor *y = mt_new(ctx, MT_DTYPE_F32, x->ndim, oshape);
    mt_tensor *xl = mt_gemm_input(ctx, x, dt), *wl = mt_gemm_input(ctx, w, dt);
    if (!y || !xl || !wl) return NULL;
    mt_tensor *in[3] = {x, w, bias};
    int grad = mt_needs_grad(ctx, in, 3);
    if (bias && dt != MT_DTYPE_F32 && MT_BE(ctx)->gemm_lowp_bias) { /* the bias in the GEMM's epilogue */
        ctx->ex.flops += 2 * (uint64_t)R * (uint64_t)N * (uint64_t)K;
        MT_KERNEL(ctx, MT_BE(ctx)->gemm_lowp_bias(&ctx->ex, dt, 0, 1, R, N, K, xl->data, K, wl->data, K, mt_f32(bias),
                                                  mt_f32(y), N, relu));
        *fused = relu;
    } else {
        if (bias) { /* broadcast the bias into every row, then accumulate the product onto it */
            int64_t shape[2] = {R, N}, ostr[2] = {N, 1}, istr[2] = {0, 1};
            MT_KERNEL(ctx, MT_BE(ctx)->copy_strided(&ctx->ex, y->data, ostr, bias->data, istr, shape, 2, 4, 0));
        }
        if (w->wt && dt == MT_DTYPE_F32 && !grad && R > MT_GEMM_SMALL_M) /* inference: the transposed copy (k, n) */
            MT_KERNEL(ctx, mt_gemm_run(ctx, dt, 0, 0, R, N, K, 1.0f, xl->data, K, 0, w->wt, N, 0, bias ? 1.0f : 0.0f,
                                       mt_f32(y), N, 0, 1));
        else
            MT_KERNEL(ctx, mt_gemm_run(ctx, dt, 0, 1, R, N, K, 1.0f, xl->data, K, 0, wl->data, K, 0,
                                       bias ? 1.0f : 0.0f, mt_f32(y), N, 0, 1));
    }
    if (grad) {
        mt_node *n = mt_tape_push(ctx, "linear", linear_backward, y);
        if (!n) return NULL;
        n->in[0] = x;
        n->in[1] = w;
        n->in[2] = bias;
        n->saved[0] = xl != x ? xl : NULL;
        n->saved[1] = wl != w ? wl : NULL;
        n->i[0] = R;
        n->i[1] = K;
        n->i[2] = N;
        n->i[3] = dt;
    }
    return y;
}

mt_tensor *mt_linear(mt_context *ctx, mt_tensor *x, mt_tensor *w, mt_tensor *bias) {
    int fused;
    return linear_impl(ctx, x, w, bias, 0, &fused);
}

mt_tensor *mt_linear_act(mt_context *ctx, mt_tensor *x, mt_tensor *w, mt_tensor *bias, mt_unary_op act) {
    int fused;
    mt_tensor *u = linear_impl(ctx, x, w, bias, act == MT_UNARY_RELU, &fused);
    if (!fused) return mt_unary(ctx, act, u);
    /* The epilogue wrote relu(u) where u would be: the linear's node keeps that memory as its output
     * (its backward reads only the output's gradient), and the ReLU's output is a second header over
     * it. The ReLU's backward reads its derivative from that memory: relu(u) > 0 exactly where u > 0. */
    mt_tensor *y = mt_new_at(ctx, MT_DTYPE_F32, u->ndim, u->shape, u->data);
    if (!y) return NULL;
    if (mt_needs_grad(ctx, &u, 1)) {
        mt_node *n = mt_tape_push(ctx, "relu", mt_unary_backward, y);
        if (!n) return NULL;
        n->in[0] = u;
        n->i[0] = MT_UNARY_RELU;
    }
    return y;
}
