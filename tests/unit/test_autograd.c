/*
 * test_autograd.c — the tape's semantics: a tensor used several times, a broadcast operand, a chain of
 * more than 20 ops (against finite differences), no_grad scopes, detach, zero_grad, backward with a
 * given output gradient, two backward passes over one tape, persistent parameters across steps, the
 * attention-heads concat with a part shared by every head, the residual add fused with dropout, the
 * fused classifier against cross-entropy and its backward, a new gradient buffer overwritten (not read).
 *
 * Expected gradients are computed here in double from the inputs (closed forms), never taken from
 * the engine.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../ops/fd.h"
#include "core/alloc.h"

/* Deterministic test data in [lo, hi), never 0 when lo > 0, with a random sign when signed_. */
static void fill_data(float *v, int64_t n, uint32_t seed, float lo, float hi, int signed_) {
    uint32_t s = seed * 2654435761u + 12345u;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        float u = (float)(s >> 8) / 16777216.0f;
        float m = lo + (hi - lo) * u;
        s = s * 1664525u + 1013904223u;
        v[i] = signed_ && (s >> 31) ? -m : m;
    }
}

static mt_context *new_ctx(void) {
    mt_context *ctx = NULL;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    return ctx;
}

static mt_tensor *leaf(mt_context *ctx, int ndim, const int64_t *shape, uint32_t seed) {
    float buf[4096];
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    assert_true(n <= 4096);
    fill_data(buf, n, seed, 0.2f, 1.5f, 1);
    mt_tensor *t = mt_from_data(ctx, MT_DTYPE_F32, ndim, shape, buf);
    assert_non_null(t);
    assert_int_equal(mt_requires_grad(t, 1), MT_OK);
    return t;
}

static void assert_close(double got, double want, double tol, const char *what, int64_t i) {
    if (fabs(got - want) > tol * (1.0 + fabs(want)))
        fail_msg("%s[%lld]: got %.9g, want %.9g", what, (long long)i, got, want);
}

/* y = x*x + x + x*x: x feeds five uses; dL/dx = g * (4x + 1). Also add(x, x): 2g. */
static void test_tensor_used_many_times(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    mt_tensor *x = leaf(ctx, MT_DIMS(3, 4), 1), *g = leaf(ctx, MT_DIMS(3, 4), 2);
    g->flags = 0;
    mt_tensor *y = mt_add(ctx, mt_add(ctx, mt_mul(ctx, x, x), x), mt_mul(ctx, x, x));
    assert_non_null(y);
    assert_int_equal(mt_backward(ctx, y, g), MT_OK);
    for (int64_t i = 0; i < 12; i++)
        assert_close(mt_f32(x->grad)[i], mt_f32(g)[i] * (4.0 * mt_f32(x)[i] + 1.0), 1e-6, "dx", i);

    mt_tensor *x2 = leaf(ctx, MT_DIMS(5), 3);
    mt_tensor *s = mt_sum(ctx, mt_add(ctx, x2, x2), NULL, 0, 0);
    assert_int_equal(mt_backward(ctx, s, NULL), MT_OK);
    for (int64_t i = 0; i < 5; i++) assert_close(mt_f32(x2->grad)[i], 2.0, 0, "d(x+x)", i);
    mt_context_free(ctx);
}

/* y = a * b + c with a (4,5), b (5) and c (4,1): db sums over rows, dc over columns. */
static void test_broadcast_operand(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    mt_tensor *a = leaf(ctx, MT_DIMS(4, 5), 4), *b = leaf(ctx, MT_DIMS(5), 5), *c = leaf(ctx, MT_DIMS(4, 1), 6);
    mt_tensor *g = leaf(ctx, MT_DIMS(4, 5), 7);
    g->flags = 0;
    mt_tensor *y = mt_add(ctx, mt_mul(ctx, a, b), c);
    assert_non_null(y);
    assert_int_equal(y->ndim, 2);
    assert_int_equal(y->shape[0], 4);
    assert_int_equal(y->shape[1], 5);
    assert_int_equal(mt_backward(ctx, y, g), MT_OK);
    const float *A = mt_f32(a), *B = mt_f32(b), *G = mt_f32(g);
    for (int i = 0; i < 4; i++) {
        double dc = 0;
        for (int j = 0; j < 5; j++) {
            assert_close(mt_f32(a->grad)[i * 5 + j], (double)G[i * 5 + j] * B[j], 1e-6, "da", i * 5 + j);
            dc += G[i * 5 + j];
        }
        assert_close(mt_f32(c->grad)[i], dc, 1e-6, "dc", i);
    }
    for (int j = 0; j < 5; j++) {
        double db = 0;
        for (int i = 0; i < 4; i++) db += (double)G[i * 5 + j] * A[i * 5 + j];
        assert_close(mt_f32(b->grad)[j], db, 1e-6, "db", j);
    }
    mt_context_free(ctx);
}

/* A chain of 24 recorded ops over two inputs (x used again in the middle); checked against central
 * finite differences of the same chain. */
static mt_tensor *chain(mt_context *ctx, mt_tensor **in, int n, void *user) {
    (void)n;
    (void)user;
    mt_tensor *x = in[0], *w = in[1], *bias = in[2], *gamma = in[3];
    mt_tensor *h = mt_matmul(ctx, x, w, 0, 0);               /*  1 (3,5) */
    h = mt_add(ctx, h, bias);                                /*  2 broadcast (5) */
    h = mt_tanh(ctx, h);                                     /*  3 */
    h = mt_mul(ctx, h, x);                                   /*  4 x again */
    h = mt_layer_norm(ctx, h, gamma, bias, 1e-5f);           /*  5 */
    h = mt_gelu(ctx, h);                                     /*  6 */
    h = mt_transpose(ctx, h, 0, 1);                          /*  7 (5,3) */
    h = mt_softmax(ctx, h, 0);                               /*  8 */
    h = mt_add_scalar(ctx, h, 1.0f);                         /*  9 */
    h = mt_ln(ctx, h);                                       /* 10 */
    h = mt_reshape(ctx, h, MT_DIMS(15));                     /* 11 */
    h = mt_narrow(ctx, h, 0, 1, 12);                         /* 12 */
    h = mt_reshape(ctx, h, MT_DIMS(3, 4));                   /* 13 */
    h = mt_sigmoid(ctx, h);                                  /* 14 */
    h = mt_pow(ctx, h, 1.5f);                                /* 15 */
    mt_tensor *m = mt_mean(ctx, x, (const int[]){1}, 1, 1);  /* 16 (3,1) */
    h = mt_div(ctx, h, mt_add_scalar(ctx, mt_exp(ctx, m), 0.5f)); /* 17, 18, 19 */
    h = mt_silu(ctx, h);                                     /* 20 */
    mt_tensor *mx = mt_max(ctx, h, (const int[]){1}, 1, 1);  /* 21 */
    h = mt_sub(ctx, h, mx);                                  /* 22 */
    h = mt_mul(ctx, h, h);                                   /* 23 */
    return mt_sum(ctx, h, NULL, 0, 0);                       /* 24 */
}

static void test_chain_of_ops(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    float xv[15], wv[25], bv[5], gv[5];
    fill_data(xv, 15, 11, 0.2f, 1.2f, 1);
    fill_data(wv, 25, 12, 0.1f, 1.0f, 1);
    fill_data(bv, 5, 13, 0.1f, 0.5f, 1);
    fill_data(gv, 5, 14, 0.5f, 1.5f, 0);
    mt_gtensor xs[4] = {
        {.key = "x", .dtype = MT_DTYPE_F32, .ndim = 2, .shape = {3, 5}, .numel = 15, .data = xv},
        {.key = "w", .dtype = MT_DTYPE_F32, .ndim = 2, .shape = {5, 5}, .numel = 25, .data = wv},
        {.key = "b", .dtype = MT_DTYPE_F32, .ndim = 1, .shape = {5}, .numel = 5, .data = bv},
        {.key = "g", .dtype = MT_DTYPE_F32, .ndim = 1, .shape = {5}, .numel = 5, .data = gv},
    };
    int diff[4] = {1, 1, 1, 1};
    /* The chain records 24 nodes. */
    mt_context_reset(ctx);
    mt_tensor *t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = mt_gtensor_make(ctx, &xs[i]);
        mt_requires_grad(t[i], 1);
    }
    assert_non_null(chain(ctx, t, 4, NULL));
    assert_true(ctx->n_nodes >= 24);
    mt_fd_result r = mt_fd_check(ctx, xs, diff, 4, NULL, chain, NULL, 1e-3, 2e-5, 2e-3, 1);
    assert_false(r.failed);
    if (r.worst > 1.0)
        fail_msg("chain: d/d input %d [%lld]: backward %.7g, finite differences %.7g", r.input, (long long)r.index,
                 r.analytic, r.numeric);
    print_message("chain: %lld derivatives, worst %.3f of tolerance\n", (long long)r.checked, r.worst);
    assert_int_equal(r.checked, 15 + 25 + 5 + 5);
    mt_context_free(ctx);
}

static void test_no_grad(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    mt_tensor *x = leaf(ctx, MT_DIMS(2, 3), 21);
    int saved = mt_no_grad_begin(ctx);
    int32_t before = ctx->n_nodes;
    mt_tensor *y = mt_sum(ctx, mt_exp(ctx, x), NULL, 0, 0);
    assert_non_null(y);
    assert_int_equal(ctx->n_nodes, before); /* nothing recorded */
    assert_false(mt_tensor_requires_grad(y));
    assert_int_equal(mt_backward(ctx, y, NULL), MT_ERR_STATE);
    assert_non_null(strstr(mt_last_error(), "does not require a gradient"));
    mt_no_grad_end(ctx, saved);
    assert_int_equal(ctx->grad_enabled, 1);
    /* Recording resumes after the scope. */
    y = mt_sum(ctx, mt_exp(ctx, x), NULL, 0, 0);
    assert_int_equal(ctx->n_nodes, before + 2);
    assert_int_equal(mt_backward(ctx, y, NULL), MT_OK);
    for (int i = 0; i < 6; i++) assert_close(mt_f32(x->grad)[i], exp(mt_f32(x)[i]), 1e-6, "dexp", i);
    /* Nested scopes restore the outer state. */
    int s1 = mt_no_grad_begin(ctx), s2 = mt_no_grad_begin(ctx);
    mt_no_grad_end(ctx, s2);
    assert_int_equal(ctx->grad_enabled, 0);
    mt_no_grad_end(ctx, s1);
    assert_int_equal(ctx->grad_enabled, 1);
    mt_context_free(ctx);
}

/* y = detach(x) * x: only the second factor carries a gradient, dL/dx = g * x. */
static void test_detach(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    mt_tensor *x = leaf(ctx, MT_DIMS(7), 31), *g = leaf(ctx, MT_DIMS(7), 32);
    g->flags = 0;
    mt_tensor *e = mt_exp(ctx, x);
    mt_tensor *d = mt_detach(ctx, e);
    assert_non_null(d);
    assert_false(mt_tensor_requires_grad(d));
    assert_ptr_equal(d->data, e->data); /* same storage, no copy */
    mt_tensor *y = mt_mul(ctx, d, x);
    assert_int_equal(mt_backward(ctx, y, g), MT_OK);
    for (int i = 0; i < 7; i++)
        assert_close(mt_f32(x->grad)[i], (double)mt_f32(g)[i] * exp(mt_f32(x)[i]), 1e-6, "d(detach(e)*x)", i);
    assert_null(e->grad); /* the detached branch was not reached */
    mt_context_free(ctx);
}

/* Persistent parameters keep their gradient across steps (accumulating) until zero_grad. */
static void test_zero_grad_and_accumulation(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    mt_tensor *p;
    assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, MT_DIMS(4), "p", &p), MT_OK);
    assert_int_equal(mt_fill_uniform(ctx, p, 0.5f, 1.5f), MT_OK);
    assert_int_equal(mt_requires_grad(p, 1), MT_OK);
    float av[4] = {0.5f, -1.0f, 2.0f, 0.25f}, bv[4] = {1.5f, 0.75f, -0.5f, 3.0f};
    for (int step = 0; step < 2; step++) {
        mt_tensor *a = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(4), step ? bv : av);
        mt_tensor *l = mt_sum(ctx, mt_mul(ctx, p, a), NULL, 0, 0);
        assert_int_equal(mt_backward(ctx, l, NULL), MT_OK);
        assert_int_equal(mt_context_reset(ctx), MT_OK);
    }
    assert_non_null(p->grad);
    assert_true(p->grad->flags & MT_TENSOR_PERSISTENT); /* survives the resets */
    for (int i = 0; i < 4; i++) assert_close(mt_f32(p->grad)[i], (double)av[i] + bv[i], 1e-7, "accumulated", i);
    assert_int_equal(mt_zero_grad(&ctx->ex, p), MT_OK);
    for (int i = 0; i < 4; i++) assert_true(mt_f32(p->grad)[i] == 0.0f);
    mt_tensor *a = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(4), av);
    assert_int_equal(mt_backward(ctx, mt_sum(ctx, mt_mul(ctx, p, a), NULL, 0, 0), NULL), MT_OK);
    for (int i = 0; i < 4; i++) assert_close(mt_f32(p->grad)[i], av[i], 1e-7, "after zero_grad", i);
    mt_tensor_free(p);
    mt_context_free(ctx);
}

/* A non-scalar root needs its gradient; the given one flows through: d tanh(x) = g (1 - tanh^2). */
static void test_backward_with_output_gradient(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    mt_tensor *x = leaf(ctx, MT_DIMS(2, 3, 2), 41), *g = leaf(ctx, MT_DIMS(2, 3, 2), 42);
    g->flags = 0;
    mt_tensor *y = mt_tanh(ctx, x);
    assert_int_equal(mt_backward(ctx, y, NULL), MT_ERR_SHAPE); /* not a scalar, no gradient given */
    assert_non_null(strstr(mt_last_error(), "(2,3,2)"));
    mt_tensor *bad = mt_ones(ctx, MT_DIMS(3, 2, 2));
    assert_int_equal(mt_backward(ctx, y, bad), MT_ERR_SHAPE);
    assert_non_null(strstr(mt_last_error(), "(3,2,2)"));
    assert_null(x->grad); /* failed calls left nothing behind */
    assert_int_equal(mt_backward(ctx, y, g), MT_OK);
    for (int i = 0; i < 12; i++) {
        double t = tanh(mt_f32(x)[i]);
        assert_close(mt_f32(x->grad)[i], mt_f32(g)[i] * (1.0 - t * t), 1e-6, "dtanh", i);
    }
    mt_context_free(ctx);
}

/* Two passes over one tape: the leaves get exactly twice the gradient. */
static void test_two_backward_passes(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    mt_tensor *x = leaf(ctx, MT_DIMS(6), 51);
    mt_tensor *y = mt_sum(ctx, mt_mul_scalar(ctx, mt_exp(ctx, mt_mul(ctx, x, x)), 2.0f), NULL, 0, 0);
    assert_int_equal(mt_backward(ctx, y, NULL), MT_OK);
    double once[6];
    for (int i = 0; i < 6; i++) {
        double xi = mt_f32(x)[i];
        once[i] = mt_f32(x->grad)[i];
        assert_close(once[i], 4.0 * xi * exp(xi * xi), 1e-6, "first pass", i);
    }
    assert_int_equal(mt_backward(ctx, y, NULL), MT_OK);
    for (int i = 0; i < 6; i++) assert_close(mt_f32(x->grad)[i], 2.0 * once[i], 1e-6, "second pass", i);
    mt_context_free(ctx);
}

/* Gradients flow through views (reshape of a leaf) and into a leaf that is a view's base. */
static void test_views_and_leaves(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    mt_tensor *x = leaf(ctx, MT_DIMS(2, 6), 61);
    mt_tensor *v = mt_reshape(ctx, x, MT_DIMS(3, -1));
    assert_non_null(v);
    assert_int_equal(v->shape[1], 4);
    assert_ptr_equal(v->data, x->data);
    mt_tensor *y = mt_sum(ctx, mt_mul(ctx, v, v), (const int[]){-1}, 1, 0);
    mt_tensor *g = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(3), (const float[]){1.0f, -2.0f, 0.5f});
    assert_int_equal(mt_backward(ctx, y, g), MT_OK);
    for (int i = 0; i < 12; i++)
        assert_close(mt_f32(x->grad)[i], 2.0 * mt_f32(x)[i] * mt_f32(g)[i / 4], 1e-6, "d(view)", i);
    /* Ops over tensors that need no gradient record nothing. */
    int32_t before = ctx->n_nodes;
    mt_tensor *c = mt_ones(ctx, MT_DIMS(3));
    assert_non_null(mt_exp(ctx, mt_add(ctx, c, c)));
    assert_int_equal(ctx->n_nodes, before);
    /* requires_grad is for leaves: an op result cannot turn it off, an i32 tensor cannot turn it on. */
    assert_int_equal(mt_requires_grad(y, 0), MT_ERR_STATE);
    mt_tensor *ids = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(2), (const int32_t[]){1, 2});
    assert_int_equal(mt_requires_grad(ids, 1), MT_ERR_DTYPE);
    mt_context_free(ctx);
}

/* concat_heads: y[b,h,t] = [a[b,t,h-th D1 slice], r[b,0,t] (every head), p[b,h,t]]; the backward
 * splits gy back, summing the heads' gradients for the shared part r (in head order). */
static void test_concat_heads(void **state) {
    (void)state;
    enum { B = 2, H = 3, T = 4, D1 = 2, D2 = 3, D3 = 1, D = D1 + D2 + D3 };
    mt_context *ctx = new_ctx();
    mt_tensor *a = leaf(ctx, MT_DIMS(B, T, H * D1), 71), *r = leaf(ctx, MT_DIMS(B, 1, T, D2), 72);
    mt_tensor *p = leaf(ctx, MT_DIMS(B, H, T, D3), 73);
    mt_tensor *y = mt_concat_heads(ctx, (mt_tensor *[]){a, r, p}, 3, H);
    assert_non_null(y);
    assert_int_equal(y->ndim, 4);
    assert_true(y->shape[0] == B && y->shape[1] == H && y->shape[2] == T && y->shape[3] == D);
    float gyv[B * H * T * D];
    fill_data(gyv, B * H * T * D, 74, 0.1f, 2.0f, 1);
    mt_tensor *gy = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(B, H, T, D), gyv);
    assert_int_equal(mt_backward(ctx, y, gy), MT_OK);
    const float *yv = mt_f32(y);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++)
                for (int j = 0; j < D; j++) {
                    int64_t i = ((b * H + h) * T + t) * D + j;
                    double want = j < D1 ? mt_f32(a)[(b * T + t) * H * D1 + h * D1 + j]
                                  : j < D1 + D2 ? mt_f32(r)[(b * T + t) * D2 + j - D1]
                                                : mt_f32(p)[((b * H + h) * T + t) * D3 + j - D1 - D2];
                    assert_close(yv[i], want, 0, "concat_heads", i);
                    if (j < D1) assert_close(mt_f32(a->grad)[(b * T + t) * H * D1 + h * D1 + j], gyv[i], 0, "d a", i);
                    else if (j >= D1 + D2)
                        assert_close(mt_f32(p->grad)[((b * H + h) * T + t) * D3 + j - D1 - D2], gyv[i], 0, "d p", i);
                }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int j = 0; j < D2; j++) {
                double want = 0;
                for (int h = 0; h < H; h++) want += gyv[((b * H + h) * T + t) * D + D1 + j];
                assert_close(mt_f32(r->grad)[(b * T + t) * D2 + j], want, 1e-6, "d r (summed over heads)", j);
            }
    /* A part that fits neither form is refused with its shape. */
    assert_null(mt_concat_heads(ctx, (mt_tensor *[]){a, leaf(ctx, MT_DIMS(B, 2, T, D2), 75)}, 2, H));
    assert_int_equal(ctx->status, MT_ERR_SHAPE);
    mt_context_free(ctx);
}

/* add_dropout(r, x) = add(r, dropout(x)): the same values, gradients and random numbers, bit for bit. */
static void test_add_dropout(void **state) {
    (void)state;
    enum { N = 3, C = 37 };
    float y[2][N * C], gr[2][N * C], gx[2][N * C], gyv[N * C];
    fill_data(gyv, N * C, 81, 0.1f, 2.0f, 1);
    for (int fused = 0; fused < 2; fused++) {
        mt_context *ctx = new_ctx();
        ctx->seed = 1234;
        ctx->rng_offset = 0;
        mt_tensor *r = leaf(ctx, MT_DIMS(N, C), 82), *x = leaf(ctx, MT_DIMS(N, C), 83);
        mt_tensor *out = fused ? mt_add_dropout(ctx, r, x, 0.3f, 1) : mt_add(ctx, r, mt_dropout(ctx, x, 0.3f, 1));
        assert_non_null(out);
        assert_int_equal(ctx->rng_offset, (N * C + 3) / 4 * 4); /* what one dropout of N*C draws */
        mt_tensor *g = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(N, C), gyv);
        assert_int_equal(mt_backward(ctx, out, g), MT_OK);
        memcpy(y[fused], mt_f32(out), sizeof y[0]);
        memcpy(gr[fused], mt_f32(r->grad), sizeof gr[0]);
        memcpy(gx[fused], mt_f32(x->grad), sizeof gx[0]);
        if (fused) { /* not training: r + x */
            mt_tensor *e = mt_add_dropout(ctx, r, x, 0.3f, 0);
            for (int i = 0; i < N * C; i++) assert_true(mt_f32(e)[i] == mt_f32(r)[i] + mt_f32(x)[i]);
        }
        mt_context_free(ctx);
    }
    int dropped = 0;
    for (int i = 0; i < N * C; i++) {
        assert_true(y[1][i] == y[0][i]);
        assert_true(gr[1][i] == gr[0][i]);
        assert_true(gx[1][i] == gx[0][i]);
        dropped += gx[1][i] == 0.0f;
    }
    assert_true(dropped > 0 && dropped < N * C); /* p = 0.3 dropped some, not all */
}

/* embedding_scaled(table, ids, s) = mul_scalar(embedding(table, ids), s): the same values, and the table's
 * gradient within rounding (scale folded into the scatter), over repeated ids; scale 1 is mt_embedding. */
static void test_embedding_scaled(void **state) {
    (void)state;
    enum { V = 11, C = 37, N = 23 };
    const float s = sqrtf(512.0f);
    int32_t idv[N];
    for (int i = 0; i < N; i++) idv[i] = (i * 7) % 5 + (i > 15 ? 6 : 0); /* repeats */
    float y[2][N * C], gt[2][V * C], gyv[N * C];
    fill_data(gyv, N * C, 91, 0.1f, 2.0f, 1);
    for (int fused = 0; fused < 2; fused++) {
        mt_context *ctx = new_ctx();
        mt_tensor *table = leaf(ctx, MT_DIMS(V, C), 92);
        mt_tensor *ids = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(N), idv);
        mt_tensor *out = fused ? mt_embedding_scaled(ctx, table, ids, s) : mt_mul_scalar(ctx, mt_embedding(ctx, table, ids), s);
        assert_non_null(out);
        assert_int_equal(ctx->n_nodes, fused ? 1 : 2);
        mt_tensor *g = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(N, C), gyv);
        assert_int_equal(mt_backward(ctx, out, g), MT_OK);
        memcpy(y[fused], mt_f32(out), sizeof y[0]);
        memcpy(gt[fused], mt_f32(table->grad), sizeof gt[0]);
        if (fused) { /* scale 1: the plain op's rows */
            mt_tensor *e = mt_embedding_scaled(ctx, table, ids, 1.0f), *p = mt_embedding(ctx, table, ids);
            assert_memory_equal(mt_f32(e), mt_f32(p), sizeof(float) * N * C);
        }
        mt_context_free(ctx);
    }
    double worst = 0, big = 0;
    for (int i = 0; i < N * C; i++) assert_true(y[1][i] == y[0][i]);
    for (int i = 0; i < V * C; i++) {
        worst = fmax(worst, fabs((double)gt[1][i] - gt[0][i]));
        big = fmax(big, fabs((double)gt[0][i]));
    }
    assert_true(big > 0 && worst <= 1e-6 * big);
}

/* The fused classifier (the logits overwritten by their gradient in the forward) against
 * cross_entropy + backward with the same output gradient: the same loss, count and input gradients,
 * bit for bit, with label smoothing and ignored rows, over enough logits that the rows are split
 * across threads; every row ignored gives loss 0 and zero gradients; an op reading the logits after
 * the loss fails with a message instead of reading their gradient. */
static void test_fused_classifier(void **state) {
    (void)state;
    enum { N = 41, K = 4, V = 1000, PAD = 3 };
    int32_t tv[N];
    for (int i = 0; i < N; i++) tv[i] = i % 6 == 5 ? PAD : (i * 389) % V;
    const float dl = 2.5f;
    float loss[2], gx[2][N * K], gw[2][V * K];
    for (int fused = 0; fused < 2; fused++) {
        mt_context *ctx = new_ctx();
        mt_tensor *x = leaf(ctx, MT_DIMS(N, K), 101), *w = leaf(ctx, MT_DIMS(V, K), 102);
        mt_tensor *tgt = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(N), tv);
        mt_tensor *dloss = mt_from_data(ctx, MT_DTYPE_F32, 0, NULL, &dl);
        mt_tensor *logits = mt_linear(ctx, x, w, NULL);
        mt_tensor *ce = fused ? mt_cross_entropy_fused(ctx, logits, tgt, 0.1f, PAD, dloss)
                              : mt_cross_entropy(ctx, logits, tgt, 0.1f, PAD);
        assert_non_null(ce);
        assert_true((ctx->tape[ce->node].seed == dloss) == fused); /* the CPU has the fused kernel */
        assert_int_equal(mt_backward(ctx, ce, dloss), MT_OK);
        loss[fused] = mt_f32(ce)[0];
        memcpy(gx[fused], mt_f32(x->grad), sizeof gx[0]);
        memcpy(gw[fused], mt_f32(w->grad), sizeof gw[0]);
        mt_context_free(ctx);
    }
    assert_true(loss[0] > 0 && loss[1] == loss[0]);
    assert_memory_equal(gx[1], gx[0], sizeof gx[0]);
    assert_memory_equal(gw[1], gw[0], sizeof gw[0]);

    mt_context *ctx = new_ctx();
    mt_tensor *x = leaf(ctx, MT_DIMS(N, K), 101), *w = leaf(ctx, MT_DIMS(V, K), 102);
    int32_t pads[N];
    for (int i = 0; i < N; i++) pads[i] = PAD;
    mt_tensor *dloss = mt_from_data(ctx, MT_DTYPE_F32, 0, NULL, &dl);
    mt_tensor *ce = mt_cross_entropy_fused(ctx, mt_linear(ctx, x, w, NULL), mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(N), pads),
                                           0.1f, PAD, dloss);
    assert_non_null(ce);
    assert_int_equal(mt_backward(ctx, ce, dloss), MT_OK);
    assert_true(mt_f32(ce)[0] == 0.0f);
    for (int i = 0; i < V * K; i++) assert_true(mt_f32(w->grad)[i] == 0.0f);
    assert_int_equal(mt_context_reset(ctx), MT_OK);

    /* A reader after the loss: the fused op has overwritten what it would read. */
    x = leaf(ctx, MT_DIMS(N, K), 101), w = leaf(ctx, MT_DIMS(V, K), 102);
    dloss = mt_from_data(ctx, MT_DTYPE_F32, 0, NULL, &dl);
    mt_tensor *logits = mt_linear(ctx, x, w, NULL);
    assert_non_null(mt_cross_entropy_fused(ctx, logits, mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(N), tv), 0.1f, PAD, dloss));
    assert_null(mt_sum(ctx, logits, NULL, 0, 0));
    assert_non_null(strstr(mt_last_error(), "overwritten by its gradient"));
    mt_context_free(ctx);
}

/* A linear layer's input gradient is written, not added, when its buffer is new (mt_grad_for_write:
 * no zeroing, a GEMM with beta 0): a step whose gradients were NaN leaves NaN in the pool's buffers,
 * and the next step, which gets the same buffers, must not read them. Its gradients are checked
 * against closed forms. */
static void test_fresh_gradient_overwritten(void **state) {
    (void)state;
    enum { R = 37, K = 24, N = 45 };
    mt_context *ctx = new_ctx();
    float gv[R * N], gn[R * N];
    fill_data(gv, R * N, 77, 0.1f, 1.0f, 1);
    for (int i = 0; i < R * N; i++) gn[i] = NAN;
    for (int pass = 0; pass < 2; pass++) {
        mt_tensor *x = leaf(ctx, MT_DIMS(R, K), 78), *w = leaf(ctx, MT_DIMS(N, K), 79);
        mt_tensor *h = mt_mul_scalar(ctx, x, 2.0f); /* an op result: its gradient comes from the pool */
        mt_tensor *y = mt_linear(ctx, h, w, NULL);
        mt_tensor *g = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(R, N), pass ? gv : gn);
        assert_non_null(y);
        assert_int_equal(mt_backward(ctx, y, g), MT_OK);
        if (pass) {
            const float *xv = mt_f32(x), *wv = mt_f32(w), *dx = mt_f32(x->grad), *dw = mt_f32(w->grad);
            for (int r = 0; r < R; r++)
                for (int k = 0; k < K; k++) {
                    double want = 0;
                    for (int n = 0; n < N; n++) want += 2.0 * gv[r * N + n] * wv[n * K + k];
                    assert_true(fabs(dx[r * K + k] - want) <= 1e-4 * (1 + fabs(want)));
                }
            for (int n = 0; n < N; n++)
                for (int k = 0; k < K; k++) {
                    double want = 0;
                    for (int r = 0; r < R; r++) want += gv[r * N + n] * 2.0 * xv[r * K + k];
                    assert_true(fabs(dw[n * K + k] - want) <= 1e-4 * (1 + fabs(want)));
                }
        }
        assert_int_equal(mt_context_reset(ctx), MT_OK);
    }
    mt_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensor_used_many_times),
        cmocka_unit_test(test_broadcast_operand),
        cmocka_unit_test(test_chain_of_ops),
        cmocka_unit_test(test_no_grad),
        cmocka_unit_test(test_detach),
        cmocka_unit_test(test_zero_grad_and_accumulation),
        cmocka_unit_test(test_backward_with_output_gradient),
        cmocka_unit_test(test_two_backward_passes),
        cmocka_unit_test(test_views_and_leaves),
        cmocka_unit_test(test_concat_heads),
        cmocka_unit_test(test_add_dropout),
        cmocka_unit_test(test_embedding_scaled),
        cmocka_unit_test(test_fused_classifier),
        cmocka_unit_test(test_fresh_gradient_overwritten),
    };
    return cmocka_run_group_tests_name("autograd", tests, NULL, NULL);
}
