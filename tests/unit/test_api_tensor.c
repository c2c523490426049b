/*
 * test_api_tensor.c — the low-level tensor ABI (mt_tensor_*, mt_context_*) used through the public
 * header only, linked against libmicrotensor.so: so it also proves every function is exported.
 *
 * Expected values are computed here in double from the inputs; statuses, messages and the rule that
 * out pointers stay untouched on failure are checked for each error class.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "microtensor.h"

#define SHAPE(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), ((const int64_t[]){__VA_ARGS__})

/* A pointer no call may write into *out on failure. */
static mt_tensor_t *const SENTINEL = (mt_tensor_t *)(uintptr_t)0x5e5e5e5e;

static void fill(float *v, int n, uint32_t seed, float lo, float hi) {
    uint32_t s = seed * 2654435761u + 7u;
    for (int i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        float m = lo + (hi - lo) * (float)(s >> 8) / 16777216.0f;
        v[i] = (i % 3 == 1) ? -m : m;
    }
}

static mt_tensor_t *from(mt_context_t *ctx, int ndim, const int64_t *shape, const float *data, int rg) {
    mt_tensor_t *t = NULL;
    assert_int_equal(mt_tensor_from_data(ctx, MT_DTYPE_F32, ndim, shape, data, 0, &t), MT_OK);
    if (rg) assert_int_equal(mt_tensor_set_requires_grad(t, 1), MT_OK);
    return t;
}

static void read_all(const mt_tensor_t *t, float *dst, int n) {
    assert_int_equal(mt_tensor_numel(t), n);
    assert_int_equal(mt_tensor_read(t, dst, sizeof(float) * (size_t)n), MT_OK);
}

static void close_to(double got, double want, double tol, const char *what, int i) {
    if (fabs(got - want) > tol * (1.0 + fabs(want))) fail_msg("%s[%d]: got %.8g, want %.8g", what, i, got, want);
}

static mt_context_t *ctx_new(void) {
    mt_context_t *ctx = NULL;
    assert_int_equal(mt_context_create(MT_DEVICE_CPU, &ctx), MT_OK);
    assert_int_equal(mt_context_seed(ctx, 99), MT_OK);
    return ctx;
}

static void test_creation_and_inspection(void **state) {
    (void)state;
    mt_context_t *ctx = ctx_new();
    mt_tensor_t *t = SENTINEL;
    assert_int_equal(mt_tensor_empty(ctx, MT_DTYPE_I32, SHAPE(2, 3, 4), 0, &t), MT_OK);
    assert_int_equal(mt_tensor_ndim(t), 3);
    assert_int_equal(mt_tensor_dim(t, 1), 3);
    assert_int_equal(mt_tensor_dim(t, -1), 4);
    assert_int_equal(mt_tensor_dim(t, 3), -1);
    assert_int_equal(mt_tensor_numel(t), 24);
    assert_int_equal(mt_tensor_dtype(t), MT_DTYPE_I32);
    assert_int_equal(mt_tensor_ndim(NULL), -1);
    assert_int_equal(mt_tensor_numel(NULL), 0);

    float v[6];
    mt_tensor_t *f = NULL;
    assert_int_equal(mt_tensor_full(ctx, SHAPE(2, 3), 2.5f, 0, &f), MT_OK);
    read_all(f, v, 6);
    for (int i = 0; i < 6; i++) assert_true(v[i] == 2.5f);
    assert_int_equal(mt_tensor_read(f, v, 5 * sizeof(float)), MT_ERR_BUFFER_TOO_SMALL);
    assert_non_null(strstr(mt_last_error(), "24"));

    mt_tensor_t *r = NULL;
    assert_int_equal(mt_tensor_arange(ctx, -1.0, 0.5, 6, &r), MT_OK);
    read_all(r, v, 6);
    for (int i = 0; i < 6; i++) close_to(v[i], -1.0 + 0.5 * i, 0, "arange", i);

    const int32_t ids[4] = {3, -1, 7, 2};
    int32_t back[4];
    mt_tensor_t *it = NULL;
    assert_int_equal(mt_tensor_from_data(ctx, MT_DTYPE_I32, SHAPE(4), ids, 0, &it), MT_OK);
    assert_int_equal(mt_tensor_read(it, back, sizeof back), MT_OK);
    assert_memory_equal(back, ids, sizeof ids);
    const int32_t ids2[4] = {9, 8, 7, 6};
    assert_int_equal(mt_tensor_write(it, ids2, sizeof ids2), MT_OK);
    assert_int_equal(mt_tensor_read(it, back, sizeof back), MT_OK);
    assert_memory_equal(back, ids2, sizeof ids2);
    assert_int_equal(mt_tensor_write(it, ids2, 3 * sizeof(int32_t)), MT_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(mt_tensor_write(it, ids2, 5 * sizeof(int32_t)), MT_ERR_INVALID_ARG);

    /* Seeded random draws: in range, plausible moments, reproducible from the seed. */
    enum { N = 20000 };
    static float u[N], u2[N];
    mt_tensor_t *ut = NULL, *nt = NULL;
    assert_int_equal(mt_tensor_uniform(ctx, SHAPE(N), -2.0f, 3.0f, 0, &ut), MT_OK);
    read_all(ut, u, N);
    double mean = 0;
    for (int i = 0; i < N; i++) {
        assert_true(u[i] >= -2.0f && u[i] < 3.0f);
        mean += u[i];
    }
    close_to(mean / N, 0.5, 0.03, "uniform mean", 0);
    assert_int_equal(mt_tensor_normal(ctx, SHAPE(N), 1.0f, 2.0f, 1, &nt), MT_OK);
    read_all(nt, u2, N);
    double m = 0, s2 = 0;
    for (int i = 0; i < N; i++) m += u2[i];
    m /= N;
    for (int i = 0; i < N; i++) s2 += (u2[i] - m) * (u2[i] - m);
    close_to(m, 1.0, 0.05, "normal mean", 0);
    close_to(sqrt(s2 / N), 2.0, 0.03, "normal std", 0);
    assert_int_equal(mt_context_seed(ctx, 99), MT_OK);
    mt_tensor_t *again = NULL;
    assert_int_equal(mt_tensor_uniform(ctx, SHAPE(N), -2.0f, 3.0f, 0, &again), MT_OK);
    read_all(again, u2, N);
    assert_memory_equal(u, u2, sizeof u);

    /* Persistent tensors outlive a reset; arena ones become stale. */
    assert_int_equal(mt_context_reset(ctx), MT_OK);
    read_all(nt, u2, N);
    assert_int_equal(mt_tensor_read(f, v, sizeof v), MT_ERR_STATE);
    mt_tensor_free(nt);
    mt_tensor_free(NULL);

    /* Bad arguments: a status, a message, *out untouched. */
    t = SENTINEL;
    assert_int_equal(mt_tensor_empty(ctx, MT_DTYPE_F32, SHAPE(2, 0), 0, &t), MT_ERR_SHAPE);
    assert_ptr_equal(t, SENTINEL);
    assert_int_equal(mt_tensor_empty(ctx, (mt_dtype)77, SHAPE(2), 0, &t), MT_ERR_DTYPE);
    assert_int_equal(mt_tensor_full(NULL, SHAPE(2), 1.0f, 0, &t), MT_ERR_INVALID_ARG);
    assert_int_equal(mt_tensor_from_data(ctx, MT_DTYPE_F32, SHAPE(2), NULL, 0, &t), MT_ERR_INVALID_ARG);
    assert_int_equal(mt_tensor_arange(ctx, 0, 1, 0, &t), MT_ERR_SHAPE);
    assert_int_equal(mt_tensor_normal(ctx, SHAPE(2), 0.0f, -1.0f, 0, &t), MT_ERR_INVALID_ARG);
    assert_ptr_equal(t, SENTINEL);
    assert_int_equal(mt_context_create(-5, NULL), MT_ERR_INVALID_ARG);
    mt_context_t *bad = NULL;
    assert_int_equal(mt_context_create(99, &bad), MT_ERR_NO_DEVICE); /* no GPU 99 */
    assert_null(bad);
    mt_context_free(ctx);
    mt_context_free(NULL);
}

/* L = sum(gelu(x) * w + x^2 / 2 - x * 3): dL/dx = gelu'(x) w + x - 3, dL/dw = gelu(x) (summed over rows). */
static void test_elementwise_and_backward(void **state) {
    (void)state;
    mt_context_t *ctx = ctx_new();
    float xv[12], wv[4];
    fill(xv, 12, 1, 0.1f, 2.0f);
    fill(wv, 4, 2, 0.5f, 1.5f);
    mt_tensor_t *x = from(ctx, SHAPE(3, 4), xv, 1), *w = from(ctx, SHAPE(4), wv, 1);
    mt_tensor_t *g, *p, *sq, *h, *l1, *l2, *loss;
    assert_int_equal(mt_tensor_unary(ctx, MT_UNARY_GELU, x, &g), MT_OK);
    assert_int_equal(mt_tensor_binary(ctx, MT_BINARY_MUL, g, w, &p), MT_OK); /* w broadcast over rows */
    assert_int_equal(mt_tensor_pow(ctx, x, 2.0f, &sq), MT_OK);
    assert_int_equal(mt_tensor_scalar(ctx, MT_BINARY_DIV, sq, 2.0f, &h), MT_OK);
    assert_int_equal(mt_tensor_binary(ctx, MT_BINARY_ADD, p, h, &l1), MT_OK);
    mt_tensor_t *x3;
    assert_int_equal(mt_tensor_scalar(ctx, MT_BINARY_MUL, x, 3.0f, &x3), MT_OK);
    assert_int_equal(mt_tensor_binary(ctx, MT_BINARY_SUB, l1, x3, &l2), MT_OK);
    assert_int_equal(mt_tensor_reduce(ctx, MT_REDUCE_SUM, l2, NULL, 0, 0, &loss), MT_OK);
    assert_int_equal(mt_tensor_ndim(loss), 0);
    assert_int_equal(mt_tensor_backward(ctx, loss, NULL), MT_OK);
    mt_tensor_t *gx = NULL, *gw = NULL;
    assert_int_equal(mt_tensor_grad(x, &gx), MT_OK);
    assert_int_equal(mt_tensor_grad(w, &gw), MT_OK);
    assert_non_null(gx);
    float dx[12], dw[4], lv;
    read_all(gx, dx, 12);
    read_all(gw, dw, 4);
    read_all(loss, &lv, 1);
    double want_l = 0, want_dw[4] = {0};
    for (int i = 0; i < 12; i++) {
        double xi = xv[i], cdf = 0.5 * (1 + erf(xi / sqrt(2.0))), pdf = exp(-0.5 * xi * xi) / sqrt(2 * M_PI);
        double gel = xi * cdf;
        want_l += gel * wv[i % 4] + xi * xi / 2 - 3 * xi;
        want_dw[i % 4] += gel;
        close_to(dx[i], (cdf + xi * pdf) * wv[i % 4] + xi - 3, 1e-5, "dx", i);
    }
    close_to(lv, want_l, 1e-5, "loss", 0);
    for (int j = 0; j < 4; j++) close_to(dw[j], want_dw[j], 1e-5, "dw", j);
    /* zero_grad, then no_grad: nothing recorded, backward refused; detach shares values. */
    assert_int_equal(mt_tensor_zero_grad(x), MT_OK);
    read_all(gx, dx, 12);
    for (int i = 0; i < 12; i++) assert_true(dx[i] == 0.0f);
    assert_int_equal(mt_context_set_grad_enabled(ctx, 0), MT_OK);
    mt_tensor_t *e, *es;
    assert_int_equal(mt_tensor_unary(ctx, MT_UNARY_EXP, x, &e), MT_OK);
    assert_int_equal(mt_tensor_reduce(ctx, MT_REDUCE_SUM, e, NULL, 0, 0, &es), MT_OK);
    assert_int_equal(mt_tensor_backward(ctx, es, NULL), MT_ERR_STATE);
    assert_int_equal(mt_context_set_grad_enabled(ctx, 1), MT_OK);
    mt_tensor_t *d;
    assert_int_equal(mt_tensor_detach(ctx, g, &d), MT_OK);
    float gv[12], dv[12];
    read_all(g, gv, 12);
    read_all(d, dv, 12);
    assert_memory_equal(gv, dv, sizeof gv);
    assert_int_equal(mt_tensor_set_requires_grad(l2, 0), MT_ERR_STATE); /* not a leaf */
    mt_context_free(ctx);
}

static void test_products_layout_reductions(void **state) {
    (void)state;
    mt_context_t *ctx = ctx_new();
    float av[2 * 3 * 4], bv[2 * 5 * 4];
    fill(av, 24, 3, 0.1f, 1.0f);
    fill(bv, 40, 4, 0.1f, 1.0f);
    mt_tensor_t *a = from(ctx, SHAPE(2, 3, 4), av, 0), *b = from(ctx, SHAPE(2, 5, 4), bv, 0), *c;
    assert_int_equal(mt_tensor_matmul(ctx, a, b, 0, 1, &c), MT_OK); /* (2,3,4) @ (2,5,4)^T = (2,3,5) */
    assert_int_equal(mt_tensor_dim(c, 2), 5);
    float cv[30];
    read_all(c, cv, 30);
    for (int z = 0; z < 2; z++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 5; j++) {
                double s = 0;
                for (int k = 0; k < 4; k++) s += (double)av[z * 12 + i * 4 + k] * bv[z * 20 + j * 4 + k];
                close_to(cv[z * 15 + i * 5 + j], s, 1e-5, "matmul", z * 15 + i * 5 + j);
            }
    /* softmax / log_softmax over axis 1 of (2,3,5) */
    mt_tensor_t *sm, *lsm;
    assert_int_equal(mt_tensor_softmax(ctx, c, 1, 0, &sm), MT_OK);
    assert_int_equal(mt_tensor_softmax(ctx, c, 1, 1, &lsm), MT_OK);
    float smv[30], lsv[30];
    read_all(sm, smv, 30);
    read_all(lsm, lsv, 30);
    for (int z = 0; z < 2; z++)
        for (int j = 0; j < 5; j++) {
            double den = 0;
            for (int i = 0; i < 3; i++) den += exp(cv[z * 15 + i * 5 + j]);
            for (int i = 0; i < 3; i++) {
                int o = z * 15 + i * 5 + j;
                close_to(smv[o], exp(cv[o]) / den, 1e-5, "softmax", o);
                close_to(lsv[o], cv[o] - log(den), 1e-5, "log_softmax", o);
            }
        }
    /* permute, reshape, narrow, concat, max over two axes, argmax */
    mt_tensor_t *p, *rs, *nw, *cc, *mx, *am;
    assert_int_equal(mt_tensor_permute(ctx, a, (const int[]){2, 0, 1}, &p), MT_OK); /* (4,2,3) */
    assert_int_equal(mt_tensor_reshape(ctx, p, SHAPE(4, -1), &rs), MT_OK);          /* (4,6) */
    assert_int_equal(mt_tensor_dim(rs, 1), 6);
    assert_int_equal(mt_tensor_narrow(ctx, rs, 1, 2, 3, &nw), MT_OK);               /* (4,3) */
    const mt_tensor_t *parts[2] = {nw, rs};
    assert_int_equal(mt_tensor_concat(ctx, parts, 2, 1, &cc), MT_OK);              /* (4,9) */
    float ccv[36];
    read_all(cc, ccv, 36);
    for (int k = 0; k < 4; k++)
        for (int q = 0; q < 9; q++) {
            int col = q < 3 ? q + 2 : q - 3; /* column of rs */
            int z = col / 3, i = col % 3;
            close_to(ccv[k * 9 + q], av[z * 12 + i * 4 + k], 0, "permute/reshape/narrow/concat", k * 9 + q);
        }
    assert_int_equal(mt_tensor_reduce(ctx, MT_REDUCE_MAX, a, (const int[]){0, -1}, 2, 1, &mx), MT_OK); /* (1,3,1) */
    assert_int_equal(mt_tensor_ndim(mx), 3);
    assert_int_equal(mt_tensor_argmax(ctx, a, -1, 0, &am), MT_OK);                                     /* (2,3) */
    float mxv[3];
    int32_t amv[6];
    read_all(mx, mxv, 3);
    assert_int_equal(mt_tensor_read(am, amv, sizeof amv), MT_OK);
    for (int i = 0; i < 3; i++) {
        float best = -INFINITY;
        for (int z = 0; z < 2; z++)
            for (int k = 0; k < 4; k++) best = fmaxf(best, av[z * 12 + i * 4 + k]);
        close_to(mxv[i], best, 0, "max", i);
    }
    for (int r = 0; r < 6; r++) {
        int bk = 0;
        for (int k = 1; k < 4; k++)
            if (av[r * 4 + k] > av[r * 4 + bk]) bk = k;
        assert_int_equal(amv[r], bk);
    }
    mt_context_free(ctx);
}

static void test_nn_ops(void **state) {
    (void)state;
    mt_context_t *ctx = ctx_new();
    enum { N = 4, C = 6, V = 5 };
    float xv[N * C], wv[C], bv[C], tab[V * C];
    fill(xv, N * C, 5, 0.1f, 2.0f);
    fill(wv, C, 6, 0.5f, 1.5f);
    fill(bv, C, 7, 0.1f, 0.5f);
    fill(tab, V * C, 8, 0.1f, 1.0f);
    mt_tensor_t *x = from(ctx, SHAPE(N, C), xv, 0), *w = from(ctx, SHAPE(C), wv, 0), *b = from(ctx, SHAPE(C), bv, 0);
    mt_tensor_t *ln, *rn;
    assert_int_equal(mt_tensor_layer_norm(ctx, x, w, b, 1e-5f, &ln), MT_OK);
    assert_int_equal(mt_tensor_rms_norm(ctx, x, w, 1e-6f, &rn), MT_OK);
    float lnv[N * C], rnv[N * C];
    read_all(ln, lnv, N * C);
    read_all(rn, rnv, N * C);
    for (int n = 0; n < N; n++) {
        double mu = 0, var = 0, ms = 0;
        for (int c = 0; c < C; c++) mu += xv[n * C + c] / C;
        for (int c = 0; c < C; c++) {
            var += (xv[n * C + c] - mu) * (xv[n * C + c] - mu) / C;
            ms += (double)xv[n * C + c] * xv[n * C + c] / C;
        }
        for (int c = 0; c < C; c++) {
            close_to(lnv[n * C + c], (xv[n * C + c] - mu) / sqrt(var + 1e-5) * wv[c] + bv[c], 1e-5, "layer_norm", n * C + c);
            close_to(rnv[n * C + c], xv[n * C + c] / sqrt(ms + 1e-6) * wv[c], 1e-5, "rms_norm", n * C + c);
        }
    }
    /* embedding with repeated ids: the table's gradient is a scatter-add */
    mt_tensor_t *table = from(ctx, SHAPE(V, C), tab, 1), *ids, *e, *es;
    const int32_t idv[2 * 3] = {1, 4, 1, 0, 1, 3};
    assert_int_equal(mt_tensor_from_data(ctx, MT_DTYPE_I32, SHAPE(2, 3), idv, 0, &ids), MT_OK);
    assert_int_equal(mt_tensor_embedding(ctx, table, ids, &e), MT_OK);
    assert_int_equal(mt_tensor_ndim(e), 3);
    assert_int_equal(mt_tensor_reduce(ctx, MT_REDUCE_SUM, e, NULL, 0, 0, &es), MT_OK);
    assert_int_equal(mt_tensor_backward(ctx, es, NULL), MT_OK);
    mt_tensor_t *gt;
    float gtv[V * C];
    assert_int_equal(mt_tensor_grad(table, &gt), MT_OK);
    read_all(gt, gtv, V * C);
    const int uses[V] = {1, 3, 0, 1, 1};
    for (int i = 0; i < V * C; i++) close_to(gtv[i], uses[i / C], 0, "embedding grad", i);
    /* masked_fill with a broadcast mask */
    float maskv[C] = {0, 1, 0, 0, 1, 0};
    mt_tensor_t *mask = from(ctx, SHAPE(1, C), maskv, 0), *mf;
    assert_int_equal(mt_tensor_masked_fill(ctx, x, mask, -7.0f, &mf), MT_OK);
    float mfv[N * C];
    read_all(mf, mfv, N * C);
    for (int i = 0; i < N * C; i++) close_to(mfv[i], maskv[i % C] != 0 ? -7.0 : xv[i], 0, "masked_fill", i);
    /* dropout: identity in eval; in training about p zeroed and the rest scaled by 1/(1-p) */
    mt_tensor_t *big, *dr, *ev;
    assert_int_equal(mt_tensor_full(ctx, SHAPE(10000), 1.0f, 0, &big), MT_OK);
    assert_int_equal(mt_tensor_dropout(ctx, big, 0.3f, 0, &ev), MT_OK);
    assert_int_equal(mt_tensor_dropout(ctx, big, 0.3f, 1, &dr), MT_OK);
    static float drv[10000];
    read_all(ev, drv, 10000);
    for (int i = 0; i < 10000; i++) assert_true(drv[i] == 1.0f);
    read_all(dr, drv, 10000);
    int zeros = 0;
    for (int i = 0; i < 10000; i++) {
        if (drv[i] == 0.0f) zeros++;
        else close_to(drv[i], 1.0 / 0.7, 1e-6, "dropout scale", i);
    }
    assert_true(zeros > 2800 && zeros < 3200);
    /* cross-entropy with label smoothing and an ignored (padding) id */
    float lg[N * V];
    fill(lg, N * V, 9, 0.1f, 2.0f);
    const int32_t tv[N] = {2, 0, 4, 0}; /* 0 is the padding id */
    mt_tensor_t *logits = from(ctx, SHAPE(N, V), lg, 1), *tg, *ce;
    assert_int_equal(mt_tensor_from_data(ctx, MT_DTYPE_I32, SHAPE(N), tv, 0, &tg), MT_OK);
    assert_int_equal(mt_tensor_cross_entropy(ctx, logits, tg, 0.1f, 0, &ce), MT_OK);
    float cev;
    read_all(ce, &cev, 1);
    double want = 0;
    int cnt = 0;
    for (int n = 0; n < N; n++) {
        if (tv[n] == 0) continue;
        double mx = -1e30, s = 0, mean = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, lg[n * V + v]);
        for (int v = 0; v < V; v++) {
            s += exp(lg[n * V + v] - mx);
            mean += lg[n * V + v] / V;
        }
        double lse = mx + log(s);
        want += 0.9 * (lse - lg[n * V + tv[n]]) + 0.1 * (lse - mean);
        cnt++;
    }
    close_to(cev, want / cnt, 1e-5, "cross_entropy", 0);
    /* attention (causal, scaled) against the naive formula */
    enum { Bq = 1, Hq = 2, T = 3, D = 4 };
    float qv[Bq * Hq * T * D], kv[Bq * Hq * T * D], vv[Bq * Hq * T * D];
    fill(qv, 24, 10, 0.1f, 1.0f);
    fill(kv, 24, 11, 0.1f, 1.0f);
    fill(vv, 24, 12, 0.1f, 1.0f);
    mt_tensor_t *q = from(ctx, SHAPE(Bq, Hq, T, D), qv, 0), *k = from(ctx, SHAPE(Bq, Hq, T, D), kv, 0);
    mt_tensor_t *v = from(ctx, SHAPE(Bq, Hq, T, D), vv, 0), *att;
    assert_int_equal(mt_tensor_attention(ctx, q, k, v, NULL, 1, 0.5f, &att), MT_OK);
    float av[24];
    read_all(att, av, 24);
    for (int h = 0; h < Hq; h++)
        for (int i = 0; i < T; i++) {
            double sc[T], mx = -1e30, den = 0;
            for (int j = 0; j <= i; j++) {
                sc[j] = 0;
                for (int d = 0; d < D; d++) sc[j] += 0.5 * qv[(h * T + i) * D + d] * kv[(h * T + j) * D + d];
                mx = fmax(mx, sc[j]);
            }
            for (int j = 0; j <= i; j++) den += exp(sc[j] - mx);
            for (int d = 0; d < D; d++) {
                double o = 0;
                for (int j = 0; j <= i; j++) o += exp(sc[j] - mx) / den * vv[(h * T + j) * D + d];
                close_to(av[(h * T + i) * D + d], o, 1e-5, "attention", (h * T + i) * D + d);
            }
        }
    mt_context_free(ctx);
}

/* Each error class through the ABI: status, message with op and shapes, *out untouched; a failed call
 * does not stop the context from working. */
static void test_errors(void **state) {
    (void)state;
    mt_context_t *ctx = ctx_new();
    float v[20];
    fill(v, 20, 13, 0.5f, 1.0f);
    mt_tensor_t *a = from(ctx, SHAPE(2, 3), v, 1), *b = from(ctx, SHAPE(4, 5), v, 0), *out = SENTINEL, *ids;
    const int32_t iv[2] = {0, 1};
    assert_int_equal(mt_tensor_from_data(ctx, MT_DTYPE_I32, SHAPE(2), iv, 0, &ids), MT_OK);
    assert_int_equal(mt_tensor_binary(ctx, MT_BINARY_ADD, a, b, &out), MT_ERR_SHAPE);
    assert_non_null(strstr(mt_last_error(), "add"));
    assert_non_null(strstr(mt_last_error(), "(2,3)"));
    assert_non_null(strstr(mt_last_error(), "(4,5)"));
    assert_int_equal(mt_tensor_matmul(ctx, a, b, 0, 0, &out), MT_ERR_SHAPE);
    assert_non_null(strstr(mt_last_error(), "matmul: (2,3) @ (4,5)"));
    assert_int_equal(mt_tensor_unary(ctx, MT_UNARY_EXP, ids, &out), MT_ERR_DTYPE);
    assert_non_null(strstr(mt_last_error(), "(2) i32"));
    assert_int_equal(mt_tensor_reduce(ctx, MT_REDUCE_SUM, a, (const int[]){2}, 1, 0, &out), MT_ERR_AXIS);
    assert_non_null(strstr(mt_last_error(), "axis 2"));
    assert_int_equal(mt_tensor_softmax(ctx, a, 5, 0, &out), MT_ERR_AXIS);
    assert_int_equal(mt_tensor_reshape(ctx, a, SHAPE(4, 2), &out), MT_ERR_SHAPE);
    assert_int_equal(mt_tensor_embedding(ctx, b, a, &out), MT_ERR_DTYPE);
    assert_int_equal(mt_tensor_unary(ctx, MT_UNARY_EXP, NULL, &out), MT_ERR_INVALID_ARG);
    assert_int_equal(mt_tensor_unary(ctx, MT_UNARY_EXP, a, NULL), MT_ERR_INVALID_ARG);
    assert_int_equal(mt_tensor_unary(NULL, MT_UNARY_EXP, a, &out), MT_ERR_INVALID_ARG);
    assert_int_equal(mt_tensor_concat(ctx, (const mt_tensor_t *const[]){a, NULL}, 2, 0, &out), MT_ERR_INVALID_ARG);
    assert_int_equal(mt_tensor_scalar(ctx, (mt_binary_op)9, a, 1.0f, &out), MT_ERR_INVALID_ARG);
    assert_ptr_equal(out, SENTINEL);
    /* The context still works: forward and backward after the failures. */
    mt_tensor_t *e, *s, *g;
    assert_int_equal(mt_tensor_unary(ctx, MT_UNARY_EXP, a, &e), MT_OK);
    assert_int_equal(mt_tensor_reduce(ctx, MT_REDUCE_SUM, e, NULL, 0, 0, &s), MT_OK);
    assert_int_equal(mt_tensor_backward(ctx, s, NULL), MT_OK);
    assert_int_equal(mt_tensor_grad(a, &g), MT_OK);
    float gv[6];
    read_all(g, gv, 6);
    for (int i = 0; i < 6; i++) close_to(gv[i], exp(v[i]), 1e-6, "d exp", i);
    /* Stale after reset. */
    assert_int_equal(mt_context_reset(ctx), MT_OK);
    assert_int_equal(mt_tensor_unary(ctx, MT_UNARY_NEG, a, &out), MT_ERR_STATE);
    assert_non_null(strstr(mt_last_error(), "mt_context_reset"));
    assert_ptr_equal(out, SENTINEL);
    mt_context_free(ctx);
}

/* A least-squares fit driven through the ABI alone: forward, backward, read the gradient, write the
 * updated weights back into a persistent tensor. */
static void test_training_loop(void **state) {
    (void)state;
    mt_context_t *ctx = ctx_new();
    enum { N = 16, K = 3 };
    float xv[N * K], yv[N];
    const float true_w[K] = {1.5f, -2.0f, 0.5f};
    fill(xv, N * K, 14, 0.2f, 1.0f);
    for (int n = 0; n < N; n++) {
        yv[n] = 0.25f;
        for (int k = 0; k < K; k++) yv[n] += xv[n * K + k] * true_w[k];
    }
    mt_tensor_t *w;
    assert_int_equal(mt_tensor_full(ctx, SHAPE(K, 1), 0.1f, 1, &w), MT_OK);
    assert_int_equal(mt_tensor_set_requires_grad(w, 1), MT_OK);
    float first = 0, last = 0;
    for (int step = 0; step < 300; step++) {
        mt_tensor_t *x = from(ctx, SHAPE(N, K), xv, 0), *y = from(ctx, SHAPE(N, 1), yv, 0);
        mt_tensor_t *p, *d, *sq, *loss, *g;
        assert_int_equal(mt_tensor_matmul(ctx, x, w, 0, 0, &p), MT_OK);
        assert_int_equal(mt_tensor_binary(ctx, MT_BINARY_SUB, p, y, &d), MT_OK);
        assert_int_equal(mt_tensor_binary(ctx, MT_BINARY_MUL, d, d, &sq), MT_OK);
        assert_int_equal(mt_tensor_reduce(ctx, MT_REDUCE_MEAN, sq, NULL, 0, 0, &loss), MT_OK);
        assert_int_equal(mt_tensor_zero_grad(w), MT_OK);
        assert_int_equal(mt_tensor_backward(ctx, loss, NULL), MT_OK);
        float lv, wv[K], gv[K];
        read_all(loss, &lv, 1);
        assert_int_equal(mt_tensor_grad(w, &g), MT_OK);
        read_all(g, gv, K);
        read_all(w, wv, K);
        for (int k = 0; k < K; k++) wv[k] -= 0.5f * gv[k];
        assert_int_equal(mt_tensor_write(w, wv, sizeof wv), MT_OK);
        assert_int_equal(mt_context_reset(ctx), MT_OK);
        if (step == 0) first = lv;
        last = lv;
    }
    assert_true(last < 0.05f * first);
    mt_tensor_free(w);
    mt_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_creation_and_inspection),
        cmocka_unit_test(test_elementwise_and_backward),
        cmocka_unit_test(test_products_layout_reductions),
        cmocka_unit_test(test_nn_ops),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_training_loop),
    };
    return cmocka_run_group_tests_name("api_tensor", tests, NULL, NULL);
}
