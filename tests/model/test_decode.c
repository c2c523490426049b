/*
 * test_decode.c — decoding invariants: the latent cache with absorbed projections gives the same
 * tokens as recomputing the prefix (greedy and beam, MLA and MHA); a batch of sentences of different
 * lengths gives what each sentence gives alone; beam 1 equals greedy; empty and overlong inputs.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "decode/decode.h"
#include "testutil.h"

#define NSENT 7

typedef struct fixture {
    mt_transformer *m;
    mt_absorbed *abs;
    mt_decode_ws *ws;
    int32_t *src[NSENT];
    int64_t len[NSENT];
} fixture;

static int setup_kind(void **state, int kind) {
    fixture *f = calloc(1, sizeof *f);
    mt_model_config c = tu_tiny_config(kind);
    f->m = tu_model(&c, 11);
    if (!f->m || mt_absorbed_create(f->m, &f->abs) != MT_OK || mt_decode_ws_create(MT_DEVICE_CPU, 0, &f->ws) != MT_OK)
        return -1;
    uint64_t s = 99;
    for (int i = 0; i < NSENT; i++) {
        f->len[i] = 1 + (i * 5) % 13;
        f->src[i] = malloc(sizeof(int32_t) * (size_t)f->len[i]);
        for (int64_t j = 0; j < f->len[i]; j++) f->src[i][j] = tu_rand_id(&s, c.vocab_size);
    }
    *state = f;
    return 0;
}
static int setup_mla(void **state) { return setup_kind(state, MT_ATTN_MLA); }
static int setup_mha(void **state) { return setup_kind(state, MT_ATTN_MHA); }

static int teardown(void **state) {
    fixture *f = *state;
    for (int i = 0; i < NSENT; i++) free(f->src[i]);
    mt_decode_ws_free(f->ws);
    mt_absorbed_free(f->abs);
    mt_transformer_free(f->m);
    free(f);
    return 0;
}

static void run(fixture *f, int beam, int cached, int64_t first, int64_t n, mt_decode_result *r) {
    mt_decode_opts o = {.beam = beam, .length_penalty = 0.6f, .max_len_ratio = 1.5f, .cached = cached};
    mt_status st = mt_decode(f->ws, f->m, f->abs, (const int32_t *const *)f->src + first, f->len + first, n, &o, r);
    if (st != MT_OK) fail_msg("decode: %s", mt_last_error());
}

static void assert_same(const mt_decode_result *a, int64_t ia, const mt_decode_result *b, int64_t ib, float tol) {
    assert_int_equal(a->len[ia], b->len[ib]);
    for (int64_t j = 0; j < a->len[ia]; j++) assert_int_equal(a->ids[ia][j], b->ids[ib][j]);
    if (!(fabsf(a->score[ia] - b->score[ib]) <= tol * (1.0f + fabsf(b->score[ib]))))
        fail_msg("scores differ: %g vs %g", a->score[ia], b->score[ib]);
}

static void cached_equals_uncached(void **state, int beam) {
    fixture *f = *state;
    mt_decode_result a, b;
    run(f, beam, 1, 0, NSENT, &a);
    run(f, beam, 0, 0, NSENT, &b);
    int64_t total = 0;
    for (int i = 0; i < NSENT; i++) {
        assert_same(&a, i, &b, i, 1e-4f);
        total += a.len[i];
    }
    assert_true(total > NSENT); /* the test means something only if tokens were produced */
    mt_decode_result_free(&a);
    mt_decode_result_free(&b);
}

static void test_cached_greedy(void **state) { cached_equals_uncached(state, 1); }
static void test_cached_beam(void **state) { cached_equals_uncached(state, 3); }

static void batch_equals_single(void **state, int beam) {
    fixture *f = *state;
    mt_decode_result all;
    run(f, beam, 1, 0, NSENT, &all);
    for (int i = 0; i < NSENT; i++) {
        mt_decode_result one;
        run(f, beam, 1, i, 1, &one);
        assert_same(&all, i, &one, 0, 1e-4f);
        mt_decode_result_free(&one);
    }
    mt_decode_result_free(&all);
}

static void test_batch_greedy(void **state) { batch_equals_single(state, 1); }
static void test_batch_beam(void **state) { batch_equals_single(state, 4); }

static void test_beam1_is_greedy(void **state) {
    fixture *f = *state;
    mt_decode_result a, b;
    run(f, 1, 1, 0, NSENT, &a);
    mt_decode_opts o = {.beam = 1, .length_penalty = 1.0f, .cached = 1};
    assert_int_equal(mt_decode(f->ws, f->m, f->abs, (const int32_t *const *)f->src, f->len, NSENT, &o, &b), MT_OK);
    for (int i = 0; i < NSENT; i++) assert_same(&a, i, &b, i, 1e-6f);
    mt_decode_result_free(&a);
    mt_decode_result_free(&b);
}

static void test_limits(void **state) {
    fixture *f = *state;
    /* An empty source gives an empty output; the output respects ratio * len + 10. */
    int32_t dummy = 5;
    const int32_t *src[2] = {&dummy, f->src[3]};
    int64_t len[2] = {0, f->len[3]};
    mt_decode_opts o = {.beam = 2, .max_len_ratio = 0.5f, .cached = 1};
    mt_decode_result r;
    assert_int_equal(mt_decode(f->ws, f->m, f->abs, src, len, 2, &o, &r), MT_OK);
    assert_int_equal(r.len[0], 0);
    assert_true(r.len[1] <= (int64_t)(0.5 * (double)len[1]) + 10);
    mt_decode_result_free(&r);
    /* A source longer than max_len is truncated (with a warning), not an error. */
    int64_t L = f->m->cfg.max_len * 2;
    int32_t *longsrc = malloc(sizeof(int32_t) * (size_t)L);
    for (int64_t j = 0; j < L; j++) longsrc[j] = 4 + (int32_t)(j % 50);
    const int32_t *ls[1] = {longsrc};
    mt_decode_opts g = {.beam = 1, .cached = 1};
    assert_int_equal(mt_decode(f->ws, f->m, f->abs, ls, &L, 1, &g, &r), MT_OK);
    assert_true(r.len[0] <= f->m->cfg.max_len - 1);
    mt_decode_result_free(&r);
    free(longsrc);
    /* An id outside the vocabulary is an error, not a crash. */
    int32_t bad = 1000;
    const int32_t *bs[1] = {&bad};
    int64_t one = 1;
    assert_int_equal(mt_decode(f->ws, f->m, f->abs, bs, &one, 1, &g, &r), MT_ERR_INVALID_ARG);
}

int main(void) {
    mt_log_set_level(MT_LOG_ERROR);
    const struct CMUnitTest mla[] = {
        cmocka_unit_test(test_cached_greedy), cmocka_unit_test(test_cached_beam),
        cmocka_unit_test(test_batch_greedy),  cmocka_unit_test(test_batch_beam),
        cmocka_unit_test(test_beam1_is_greedy), cmocka_unit_test(test_limits),
    };
    const struct CMUnitTest mha[] = {
        cmocka_unit_test(test_cached_greedy), cmocka_unit_test(test_cached_beam),
        cmocka_unit_test(test_batch_greedy),  cmocka_unit_test(test_batch_beam),
    };
    int fails = cmocka_run_group_tests_name("decode (MLA)", mla, setup_mla, teardown);
    fails += cmocka_run_group_tests_name("decode (MHA)", mha, setup_mha, teardown);
    return fails ? 1 : 0;
}
