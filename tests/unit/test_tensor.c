/*
 * test_tensor.c — tensors themselves: creation functions, persistent tensors, views, the layout ops
 * on non-f32 dtypes, dtype conversion (f32, i32, bf16, f16, i8), clone/copy, row gathering, the
 * random generator (seeded, reproducible, independent of how a draw is split), 0-dim tensors.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/rng.h"
#include "ops/ops.h"

static mt_context *new_ctx(void) {
    mt_context *ctx = NULL;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    return ctx;
}

static void test_constants_and_views(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    mt_tensor *z = mt_zeros(ctx, MT_DIMS(3, 1, 5)), *o = mt_ones(ctx, MT_DIMS(4)), *f = mt_full(ctx, 0, NULL, -3.5f);
    assert_non_null(z);
    assert_non_null(o);
    assert_non_null(f);
    for (int i = 0; i < 15; i++) assert_true(mt_f32(z)[i] == 0.0f);
    for (int i = 0; i < 4; i++) assert_true(mt_f32(o)[i] == 1.0f);
    assert_int_equal(f->ndim, 0);
    assert_int_equal(f->numel, 1);
    assert_true(mt_f32(f)[0] == -3.5f);
    /* A reshape is a view (same storage); a clone is a copy. */
    mt_tensor *v = mt_reshape(ctx, z, MT_DIMS(5, -1));
    assert_ptr_equal(v->data, z->data);
    assert_int_equal(v->shape[1], 3);
    mt_tensor *c = mt_clone(ctx, o);
    assert_ptr_not_equal(c->data, o->data);
    mt_f32(c)[0] = 9.0f;
    assert_true(mt_f32(o)[0] == 1.0f);
    /* A scalar reshapes to (1,1,1) and back. */
    mt_tensor *s = mt_reshape(ctx, mt_reshape(ctx, f, MT_DIMS(1, 1, 1)), 0, NULL);
    assert_non_null(s);
    assert_int_equal(s->ndim, 0);
    /* Host copies check sizes. */
    float buf[4];
    assert_int_equal(mt_copy_to_host(ctx, o, buf, sizeof buf), MT_OK);
    assert_int_equal(mt_copy_to_host(ctx, o, buf, 3 * sizeof(float)), MT_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(mt_copy_from_host(ctx, o, buf, 3 * sizeof(float)), MT_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(mt_copy_tensor(ctx, c, o), MT_OK);
    assert_true(mt_f32(c)[0] == 1.0f);
    assert_int_equal(mt_copy_tensor(ctx, z, o), MT_ERR_SHAPE);
    mt_context_free(ctx);
}

static void test_persistent(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    mt_tensor *p;
    assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, MT_DIMS(2, 3), "encoder.w", &p), MT_OK);
    assert_string_equal(p->name, "encoder.w");
    assert_true(p->flags & MT_TENSOR_PERSISTENT);
    assert_null(p->ctx);
    assert_int_equal(mt_fill_normal(ctx, p, 0.0f, 1.0f), MT_OK);
    float before[6];
    memcpy(before, p->data, sizeof before);
    for (int i = 0; i < 5; i++) {
        mt_tensor *big = mt_full(ctx, MT_DIMS(1 << 16), 7.0f); /* churn the arena */
        assert_non_null(big);
        assert_int_equal(mt_context_reset(ctx), MT_OK);
    }
    assert_memory_equal(before, p->data, sizeof before);
    mt_tensor *bad = NULL;
    assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, MT_DIMS(2, -1), NULL, &bad), MT_ERR_SHAPE);
    assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, (mt_dtype)9, MT_DIMS(2), NULL, &bad), MT_ERR_DTYPE);
    assert_int_equal(mt_tensor_new_persistent(99, MT_DTYPE_F32, MT_DIMS(2), NULL, &bad), MT_ERR_NO_DEVICE);
    assert_null(bad);
    mt_tensor_free(p);
    mt_context_free(ctx);
}

static void test_layout_other_dtypes(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    int32_t v[2 * 3 * 4];
    for (int i = 0; i < 24; i++) v[i] = 100 + i;
    mt_tensor *x = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(2, 3, 4), v);
    mt_tensor *p = mt_permute(ctx, x, (const int[]){2, 0, 1}); /* (4,2,3) */
    assert_non_null(p);
    assert_int_equal(p->dtype, MT_DTYPE_I32);
    for (int k = 0; k < 4; k++)
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 3; b++) assert_int_equal(mt_i32(p)[(k * 2 + a) * 3 + b], v[(a * 3 + b) * 4 + k]);
    mt_tensor *n = mt_narrow(ctx, x, 1, 1, 2); /* (2,2,4) */
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            for (int k = 0; k < 4; k++) assert_int_equal(mt_i32(n)[(a * 2 + b) * 4 + k], v[(a * 3 + b + 1) * 4 + k]);
    mt_tensor *c = mt_concat(ctx, (mt_tensor *[]){n, x}, 2, 1); /* (2,5,4) */
    assert_int_equal(c->shape[1], 5);
    assert_int_equal(mt_i32(c)[(1 * 5 + 2) * 4 + 3], v[(1 * 3 + 0) * 4 + 3]);
    /* bf16 tensors go through the same strided copies (2-byte elements). */
    mt_tensor *h = mt_cast(ctx, mt_cast(ctx, x, MT_DTYPE_F32), MT_DTYPE_BF16);
    mt_tensor *ht = mt_transpose(ctx, h, 0, 2);
    assert_non_null(ht);
    mt_tensor *back = mt_cast(ctx, ht, MT_DTYPE_I32);
    for (int k = 0; k < 4; k++)
        for (int b = 0; b < 3; b++)
            for (int a = 0; a < 2; a++) /* integers up to 256 are exact in bf16 */
                assert_int_equal(mt_i32(back)[(k * 3 + b) * 2 + a], v[(a * 3 + b) * 4 + k]);
    /* Row gather (beam reordering) on i32 and f32 rows. */
    mt_tensor *ids = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(3), (const int32_t[]){1, 1, 0});
    mt_tensor *g = mt_index_rows(ctx, x, ids);
    assert_int_equal(g->shape[0], 3);
    assert_memory_equal(mt_i32(g), v + 12, 12 * sizeof(int32_t));
    assert_memory_equal(mt_i32(g) + 24, v, 12 * sizeof(int32_t));
    mt_context_free(ctx);
}

static void test_casts(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    const float src[8] = {1.5f, -2.5f, 0.1f, 65504.0f, 1e-7f, -3.75f, 2.5f, 300.7f};
    mt_tensor *x = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(8), src);
    mt_tensor *i = mt_cast(ctx, x, MT_DTYPE_I32);
    const int32_t want_i[8] = {2, -2, 0, 65504, 0, -4, 2, 301}; /* round half to even */
    assert_memory_equal(mt_i32(i), want_i, sizeof want_i);
    mt_tensor *h = mt_cast(ctx, mt_cast(ctx, x, MT_DTYPE_F16), MT_DTYPE_F32);
    mt_tensor *b = mt_cast(ctx, mt_cast(ctx, x, MT_DTYPE_BF16), MT_DTYPE_F32);
    for (int k = 0; k < 8; k++) {
        /* f16: 11 significant bits (subnormals below 6e-5); bf16: 8. */
        double tol_h = fmax(fabs(src[k]) * 0x1p-11, 0x1p-25), tol_b = fabs(src[k]) * 0x1p-8;
        if (fabs(mt_f32(h)[k] - src[k]) > tol_h) fail_msg("f16 round trip of %g gave %g", src[k], mt_f32(h)[k]);
        if (fabs(mt_f32(b)[k] - src[k]) > tol_b) fail_msg("bf16 round trip of %g gave %g", src[k], mt_f32(b)[k]);
    }
    assert_true(mt_f32(h)[0] == 1.5f && mt_f32(h)[5] == -3.75f); /* exactly representable */
    mt_tensor *q = mt_cast(ctx, mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(3), (const float[]){-200.0f, 3.4f, 127.6f}),
                           MT_DTYPE_I8);
    const int8_t want_q[3] = {-128, 3, 127}; /* saturating */
    assert_memory_equal(q->data, want_q, 3);
    mt_context_free(ctx);
}

/* Element i of a draw is a pure function of (seed, offset + i): the same numbers whether drawn at once
 * or in pieces, reproducible after reseeding, different for another seed. */
static void test_random_streams(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    mt_context_seed(ctx, 42);
    mt_tensor *all = mt_uniform(ctx, MT_DIMS(64), 0.0f, 1.0f);
    mt_context_seed(ctx, 42);
    mt_tensor *p1 = mt_uniform(ctx, MT_DIMS(32), 0.0f, 1.0f), *p2 = mt_uniform(ctx, MT_DIMS(32), 0.0f, 1.0f);
    assert_memory_equal(mt_f32(all), mt_f32(p1), 32 * sizeof(float));
    assert_memory_equal(mt_f32(all) + 32, mt_f32(p2), 32 * sizeof(float));
    for (int i = 0; i < 64; i++) assert_true(mt_f32(all)[i] == mt_rng_uniform(42, (uint64_t)i));
    mt_context_seed(ctx, 43);
    mt_tensor *other = mt_uniform(ctx, MT_DIMS(64), 0.0f, 1.0f);
    int same = 0;
    for (int i = 0; i < 64; i++) same += mt_f32(other)[i] == mt_f32(all)[i];
    assert_true(same < 4);
    /* Normal draws: moments of a large sample. */
    mt_context_seed(ctx, 7);
    mt_tensor *n = mt_normal(ctx, MT_DIMS(100000), -1.0f, 0.5f);
    double m = 0, v = 0;
    for (int i = 0; i < 100000; i++) m += mt_f32(n)[i];
    m /= 100000;
    for (int i = 0; i < 100000; i++) v += (mt_f32(n)[i] - m) * (mt_f32(n)[i] - m);
    assert_true(fabs(m + 1.0) < 0.01);
    assert_true(fabs(sqrt(v / 100000) - 0.5) < 0.01);
    /* Dropout draws from the same stream: reseeding reproduces the mask. */
    mt_tensor *x = mt_ones(ctx, MT_DIMS(1000));
    mt_context_seed(ctx, 5);
    mt_tensor *d1 = mt_dropout(ctx, x, 0.5f, 1);
    mt_context_seed(ctx, 5);
    mt_tensor *d2 = mt_dropout(ctx, x, 0.5f, 1);
    assert_memory_equal(mt_f32(d1), mt_f32(d2), 1000 * sizeof(float));
    assert_ptr_equal(mt_dropout(ctx, x, 0.5f, 0), x); /* eval: identity, no copy */
    mt_context_free(ctx);
}


/* Stability where the golden inputs (all O(1)) do not look: logits around 1e4, a large common offset
 * under layer norm, exp/sigmoid/gelu at large |x|. Expected values in double, shifted as a careful
 * implementation must. */
static void test_numerical_stability(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    const float big[6] = {10000.0f, 10001.0f, 10003.0f, -10000.0f, 9999.5f, 10002.0f};
    mt_tensor *x = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(1, 6), big);
    mt_tensor *sm = mt_softmax(ctx, x, -1), *lsm = mt_log_softmax(ctx, x, -1);
    double mx = 10003.0, den = 0;
    for (int j = 0; j < 6; j++) den += exp((double)big[j] - mx);
    for (int j = 0; j < 6; j++) {
        double ls = (double)big[j] - mx - log(den);
        if (fabs(mt_f32(sm)[j] - exp(ls)) > 1e-6) fail_msg("softmax[%d] = %g, want %g", j, mt_f32(sm)[j], exp(ls));
        if (fabs(mt_f32(lsm)[j] - ls) > 1e-3 * (1 + fabs(ls))) fail_msg("log_softmax[%d] = %g, want %g", j, mt_f32(lsm)[j], ls);
    }
    mt_tensor *t = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(1), (const int32_t[]){1});
    mt_tensor *ce = mt_cross_entropy(ctx, x, t, 0.0f, -100);
    assert_true(isfinite(mt_f32(ce)[0]));
    assert_true(fabs(mt_f32(ce)[0] - (mx + log(den) - 10001.0)) < 1e-3);
    /* layer norm of 1e4 + small values: the variance must come from the deviations, not E[x^2]-E[x]^2 */
    float off[8];
    for (int j = 0; j < 8; j++) off[j] = 10000.0f + 0.125f * (float)j;
    mt_tensor *w = mt_ones(ctx, MT_DIMS(8));
    mt_tensor *ln = mt_layer_norm(ctx, mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(1, 8), off), w, NULL, 1e-5f);
    double mu = 10000.0 + 0.125 * 3.5, var = 0;
    for (int j = 0; j < 8; j++) var += (off[j] - mu) * (off[j] - mu) / 8;
    for (int j = 0; j < 8; j++) {
        double want = (off[j] - mu) / sqrt(var + 1e-5);
        if (fabs(mt_f32(ln)[j] - want) > 1e-3) fail_msg("layer_norm[%d] = %g, want %g", j, mt_f32(ln)[j], want);
    }
    /* exp under/overflow, saturating sigmoid/gelu/silu, NaN propagation */
    const float e[7] = {-200.0f, -88.0f, 80.0f, 200.0f, -60.0f, 60.0f, NAN};
    mt_tensor *ev = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(7), e);
    mt_tensor *ex = mt_exp(ctx, ev), *sg = mt_sigmoid(ctx, ev), *ge = mt_gelu(ctx, ev), *si = mt_silu(ctx, ev);
    assert_true(mt_f32(ex)[0] == 0.0f && mt_f32(ex)[1] == 0.0f);
    assert_true(fabs(mt_f32(ex)[2] / exp(80.0) - 1.0) < 1e-6);
    assert_true(isinf(mt_f32(ex)[3]));
    assert_true(mt_f32(sg)[4] >= 0.0f && mt_f32(sg)[4] < 1e-25f && mt_f32(sg)[5] == 1.0f);
    assert_true(fabs(mt_f32(ge)[4]) < 1e-30f && mt_f32(ge)[5] == 60.0f);
    assert_true(fabs(mt_f32(si)[4]) < 1e-20f && mt_f32(si)[5] == 60.0f);
    assert_true(isnan(mt_f32(ex)[6]) && isnan(mt_f32(sg)[6]) && isnan(mt_f32(ge)[6]));
    mt_context_free(ctx);
}

/* mt_from_data_packed: the arrays' values, in one buffer at 256-byte aligned slices; bad input refused. */
static void test_from_data_packed(void **state) {
    (void)state;
    mt_context *ctx = new_ctx();
    int32_t a[6] = {1, -2, 3, 4, 5, 600000};
    float b[4] = {0.5f, -1.0f, 1e30f, -0.0f};
    int32_t c[65];
    for (int i = 0; i < 65; i++) c[i] = 7 * i - 3;
    mt_upload up[3] = {{MT_DTYPE_I32, 2, {2, 3}, a, NULL}, {MT_DTYPE_F32, 1, {4}, b, NULL},
                       {MT_DTYPE_I32, 1, {65}, c, NULL}};
    assert_int_equal(mt_from_data_packed(ctx, up, 3), 1);
    assert_int_equal(up[0].t->ndim, 2);
    assert_int_equal(up[0].t->shape[1], 3);
    assert_int_equal(up[1].t->dtype, MT_DTYPE_F32);
    assert_int_equal(up[2].t->numel, 65);
    assert_memory_equal(up[0].t->data, a, sizeof a);
    assert_memory_equal(up[1].t->data, b, sizeof b);
    assert_memory_equal(up[2].t->data, c, sizeof c);
    assert_ptr_equal((char *)up[1].t->data, (char *)up[0].t->data + 256);
    assert_ptr_equal((char *)up[2].t->data, (char *)up[0].t->data + 512);
    /* usable by ops: a gather of the first rows by the packed ids */
    mt_tensor *rows = mt_index_rows(ctx, up[1].t, mt_from_data(ctx, MT_DTYPE_I32, 1, (int64_t[]){2}, (int32_t[]){3, 0}));
    assert_non_null(rows);
    assert_true(mt_f32(rows)[1] == 0.5f);
    mt_upload bad[1] = {{MT_DTYPE_I32, 1, {3}, NULL, NULL}};
    assert_int_equal(mt_from_data_packed(ctx, bad, 1), 0);
    assert_int_equal(ctx->status, MT_ERR_INVALID_ARG);
    assert_null(bad[0].t);
    mt_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constants_and_views), cmocka_unit_test(test_persistent),
        cmocka_unit_test(test_layout_other_dtypes), cmocka_unit_test(test_casts),
        cmocka_unit_test(test_random_streams), cmocka_unit_test(test_numerical_stability),
        cmocka_unit_test(test_from_data_packed),
    };
    return cmocka_run_group_tests_name("tensor", tests, NULL, NULL);
}
