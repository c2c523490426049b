/*
 * test_ops_paged.c — mt_attention_paged (the decoding cache's attention, engine/decode/state.c): key
 * and value j of batch row b read from block rows[b, j] of a cache must give exactly what
 * mt_attention gives on those rows gathered into contiguous keys and values; with one key/value head
 * shared by every query head (MLA) and one per head (MHA), a single query and several (causal), with
 * and without a padding mask. Bad tables and shapes are clear errors, and a gradient is refused.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/autograd.h"
#include "core/context.h"
#include "core/error.h"
#include "ops/ops.h"

static float frand(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 16777216.0f - 0.5f;
}

static mt_tensor *randn(mt_context *ctx, int ndim, const int64_t *shape, uint32_t *s) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    float *h = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) h[i] = frand(s);
    mt_tensor *t = mt_from_data(ctx, MT_DTYPE_F32, ndim, shape, h);
    free(h);
    return t;
}

/* Cache (P, Hk, C, D) gathered through rows (B, Tk) into (B, Hk, Tk, D). */
static mt_tensor *gather(mt_context *ctx, const mt_tensor *cache, const int32_t *rows, int64_t B, int64_t Tk) {
    int64_t Hk = cache->shape[1], C = cache->shape[2], D = cache->shape[3];
    float *h = malloc(sizeof(float) * (size_t)(B * Hk * Tk * D));
    for (int64_t b = 0; b < B; b++)
        for (int64_t hk = 0; hk < Hk; hk++)
            for (int64_t j = 0; j < Tk; j++)
                memcpy(h + ((b * Hk + hk) * Tk + j) * D, mt_f32(cache) + ((rows[b * Tk + j] * Hk + hk) * C + j) * D,
                       sizeof(float) * (size_t)D);
    mt_tensor *t = mt_from_data(ctx, MT_DTYPE_F32, 4, (const int64_t[]){B, Hk, Tk, D}, h);
    free(h);
    return t;
}

static void check(int64_t H, int64_t Hk, int64_t Tq, int masked, int threads) {
    enum { P = 6, C = 9, B = 4, Tk = 7, D = 16, DV = 12 };
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, threads), MT_OK);
    ctx->grad_enabled = 0;
    uint32_t s = 2024u + (uint32_t)(H * 100 + Hk * 10 + Tq);
    mt_tensor *q = randn(ctx, 4, (const int64_t[]){B, H, Tq, D}, &s);
    mt_tensor *k = randn(ctx, 4, (const int64_t[]){P, Hk, C, D}, &s);
    mt_tensor *v = randn(ctx, 4, (const int64_t[]){P, Hk, C, DV}, &s);
    /* every position of every row from some block, rows sharing and crossing blocks as beams do */
    int32_t rows[B * Tk];
    for (int i = 0; i < B * Tk; i++) rows[i] = (int32_t)((i * 7 + i / Tk) % P);
    float mh[B * Tk];
    for (int i = 0; i < B * Tk; i++) mh[i] = (i % Tk) == 2 && i / Tk != 1 ? -1e9f : 0.0f;
    mt_tensor *mask = masked ? mt_from_data(ctx, MT_DTYPE_F32, 4, (const int64_t[]){B, 1, 1, Tk}, mh) : NULL;
    mt_tensor *rt = mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){B, Tk}, rows);
    mt_tensor *kc = gather(ctx, k, rows, B, Tk), *vc = gather(ctx, v, rows, B, Tk);
    int causal = Tq > 1;
    mt_tensor *want = mt_attention(ctx, q, kc, vc, mask, causal, 0.25f);
    mt_tensor *got = mt_attention_paged(ctx, q, k, v, rt, mask, causal, 0.25f);
    if (!want || !got) fail_msg("%s", mt_last_error());
    assert_int_equal(got->numel, B * H * Tq * DV);
    assert_memory_equal(got->data, want->data, sizeof(float) * (size_t)got->numel);
    mt_context_free(ctx);
}

static void test_matches_gathered(void **state) {
    (void)state;
    for (int threads = 1; threads <= 2; threads++) {
        check(4, 1, 1, 1, threads); /* MLA: one shared latent head */
        check(4, 4, 1, 0, threads); /* MHA */
        check(4, 2, 3, 1, threads); /* grouped heads, three causal queries */
    }
}

static void test_errors(void **state) {
    (void)state;
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 1), MT_OK);
    uint32_t s = 1;
    mt_tensor *q = randn(ctx, 4, (const int64_t[]){2, 2, 1, 8}, &s);
    mt_tensor *k = randn(ctx, 4, (const int64_t[]){3, 1, 5, 8}, &s);
    int32_t bad[6] = {0, 1, 3, 0, 0, 0}; /* block 3 of 3 */
    mt_tensor *rows = mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){2, 3}, bad);
    assert_null(mt_attention_paged(ctx, q, k, k, rows, NULL, 0, 1.0f));
    assert_int_equal(ctx->status, MT_ERR_INVALID_ARG);
    assert_non_null(strstr(mt_last_error(), "rows[2] = 3"));
    assert_int_equal(mt_context_reset(ctx), MT_OK);

    int32_t six[12] = {0};
    q = randn(ctx, 4, (const int64_t[]){2, 2, 1, 8}, &s);
    k = randn(ctx, 4, (const int64_t[]){3, 1, 5, 8}, &s);
    rows = mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){2, 6}, six); /* 6 positions, cache holds 5 */
    assert_null(mt_attention_paged(ctx, q, k, k, rows, NULL, 0, 1.0f));
    assert_int_equal(ctx->status, MT_ERR_SHAPE);
    assert_int_equal(mt_context_reset(ctx), MT_OK);

    q = randn(ctx, 4, (const int64_t[]){2, 2, 1, 8}, &s);
    k = randn(ctx, 4, (const int64_t[]){3, 1, 5, 8}, &s);
    rows = mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){2, 3}, six);
    mt_requires_grad(q, 1);
    assert_null(mt_attention_paged(ctx, q, k, k, rows, NULL, 0, 1.0f));
    assert_int_equal(ctx->status, MT_ERR_UNSUPPORTED);
    mt_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_matches_gathered), cmocka_unit_test(test_errors)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
