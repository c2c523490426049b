/*
 * test_decode.c — decoding invariants: the latent cache with absorbed projections gives the same
 * tokens as recomputing the prefix (greedy and beam, MLA and MHA); the absorbed projections without a
 * cache give the decoder states of the full ones; a batch of sentences of different lengths gives what
 * each sentence gives alone; beam 1 equals greedy; n-best lists, target prefixes, sampling (seeded,
 * top-k, top-p, temperature) and the stream callback; empty and overlong inputs; the transposed weight
 * copies of inference (mt_transformer_pack) give the same tokens.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
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

static int setup_kind(void **state, int kind, int cross_rope) {
    fixture *f = calloc(1, sizeof *f);
    mt_model_config c = tu_tiny_config(kind);
    c.cross_rope = cross_rope;
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
static int setup_mla(void **state) { return setup_kind(state, MT_ATTN_MLA, 1); }
static int setup_mha(void **state) { return setup_kind(state, MT_ATTN_MHA, 1); }
static int setup_mla_xnorope(void **state) { return setup_kind(state, MT_ATTN_MLA, 0); }
static int setup_mha_xnorope(void **state) { return setup_kind(state, MT_ATTN_MHA, 0); }

static int teardown(void **state) {
    fixture *f = *state;
    for (int i = 0; i < NSENT; i++) free(f->src[i]);
    mt_decode_ws_free(f->ws);
    mt_absorbed_free(f->abs);
    mt_transformer_free(f->m);
    free(f);
    return 0;
}

static void run_opts(fixture *f, const mt_decode_opts *o, int64_t first, int64_t n, const int32_t *const *prefix,
                     const int64_t *prefix_len, mt_decode_result *r) {
    mt_status st = mt_decode(f->ws, f->m, f->abs, (const int32_t *const *)f->src + first, f->len + first, prefix,
                             prefix_len, n, o, r);
    if (st != MT_OK) fail_msg("decode: %s", mt_last_error());
}

static void run(fixture *f, int beam, int cached, int64_t first, int64_t n, mt_decode_result *r) {
    mt_decode_opts o = mt_decode_opts_default();
    o.beam = beam;
    o.cached = cached;
    run_opts(f, &o, first, n, NULL, NULL, r);
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

/* The transposed weight copies of inference (mt_transformer_pack): every linear layer gives what the
 * stored weight gives, so decoding gives the same tokens, greedy and beam; a product that needs a
 * gradient ignores the copy. The copies are dropped again at the end (the fixture is shared). */
static void test_packed(void **state) {
    fixture *f = *state;
    mt_decode_result a[2], b[2];
    run(f, 1, 1, 0, NSENT, &a[0]);
    run(f, 3, 1, 0, NSENT, &a[1]);
    mt_tensor *w = f->m->dec[0].ffn.w1;
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 1), MT_OK);
    int64_t K = w->shape[1], N = w->shape[0];
    float *xs = malloc(sizeof(float) * (size_t)(5 * K));
    for (int64_t i = 0; i < 5 * K; i++) xs[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    mt_tensor *x = mt_from_data(ctx, MT_DTYPE_F32, 2, (const int64_t[]){5, K}, xs);
    free(xs);
    ctx->grad_enabled = 0;
    mt_tensor *y0 = mt_linear(ctx, x, w, f->m->dec[0].ffn.b1);
    assert_int_equal(mt_transformer_pack(f->m), MT_OK);
    assert_non_null(w->wt);
    for (int64_t i = 0; i < N; i += 7) /* the copy is the transpose */
        for (int64_t j = 0; j < K; j += 3) assert_true(w->wt[j * N + i] == mt_f32(w)[i * K + j]);
    mt_tensor *y1 = mt_linear(ctx, x, w, f->m->dec[0].ffn.b1);
    assert_non_null(y0);
    assert_non_null(y1);
    for (int64_t i = 0; i < y0->numel; i++)
        assert_true(fabsf(mt_f32(y0)[i] - mt_f32(y1)[i]) <= 1e-5f * (1 + fabsf(mt_f32(y0)[i])));
    /* with a gradient to compute, the stored weight (a stale copy must never feed training) */
    float keep = w->wt[0];
    w->wt[0] = 1e6f;
    ctx->grad_enabled = 1;
    w->flags |= MT_TENSOR_REQUIRES_GRAD;
    mt_tensor *y2 = mt_linear(ctx, x, w, f->m->dec[0].ffn.b1);
    assert_non_null(y2);
    for (int64_t i = 0; i < y0->numel; i++)
        assert_true(fabsf(mt_f32(y0)[i] - mt_f32(y2)[i]) <= 1e-5f * (1 + fabsf(mt_f32(y0)[i])));
    w->flags &= ~MT_TENSOR_REQUIRES_GRAD;
    w->wt[0] = keep;
    mt_context_free(ctx);
    run(f, 1, 1, 0, NSENT, &b[0]);
    run(f, 3, 1, 0, NSENT, &b[1]);
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < NSENT; i++) assert_same(&a[k], i, &b[k], i, 1e-4f);
        mt_decode_result_free(&a[k]);
        mt_decode_result_free(&b[k]);
    }
    for (int i = 0; i < f->m->n_params; i++) {
        mt_sys_free(f->m->params[i]->wt);
        f->m->params[i]->wt = NULL;
    }
}
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
    mt_decode_opts o = mt_decode_opts_default();
    o.length_penalty = 1.0f;
    assert_int_equal(mt_decode(f->ws, f->m, f->abs, (const int32_t *const *)f->src, f->len, NULL, NULL, NSENT, &o, &b),
                     MT_OK);
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
    mt_decode_opts o = mt_decode_opts_default();
    o.beam = 2;
    o.max_len_ratio = 0.5f;
    mt_decode_result r;
    assert_int_equal(mt_decode(f->ws, f->m, f->abs, src, len, NULL, NULL, 2, &o, &r), MT_OK);
    assert_int_equal(r.len[0], 0);
    assert_true(r.len[1] <= (int64_t)(0.5 * (double)len[1]) + 10);
    mt_decode_result_free(&r);
    /* A source longer than max_len is truncated (with a warning), not an error. */
    int64_t L = f->m->cfg.max_len * 2;
    int32_t *longsrc = malloc(sizeof(int32_t) * (size_t)L);
    for (int64_t j = 0; j < L; j++) longsrc[j] = 4 + (int32_t)(j % 50);
    const int32_t *ls[1] = {longsrc};
    mt_decode_opts g = mt_decode_opts_default();
    assert_int_equal(mt_decode(f->ws, f->m, f->abs, ls, &L, NULL, NULL, 1, &g, &r), MT_OK);
    assert_true(r.len[0] <= f->m->cfg.max_len - 1);
    mt_decode_result_free(&r);
    free(longsrc);
    /* An id outside the vocabulary is an error, not a crash. */
    int32_t bad = 1000;
    const int32_t *bs[1] = {&bad};
    int64_t one = 1;
    assert_int_equal(mt_decode(f->ws, f->m, f->abs, bs, &one, NULL, NULL, 1, &g, &r), MT_ERR_INVALID_ARG);
    /* So are options out of range, each named. */
    mt_decode_opts x = mt_decode_opts_default();
    x.n_best = 2; /* greedy search has one hypothesis */
    assert_int_equal(mt_decode(f->ws, f->m, f->abs, src, len, NULL, NULL, 2, &x, &r), MT_ERR_INVALID_ARG);
    assert_non_null(strstr(mt_last_error(), "n_best"));
    x = mt_decode_opts_default();
    x.beam = MT_DECODE_MAX_BEAM + 1;
    assert_int_equal(mt_decode(f->ws, f->m, f->abs, src, len, NULL, NULL, 2, &x, &r), MT_ERR_INVALID_ARG);
    x = mt_decode_opts_default();
    x.sampling_topk = 5;
    x.beam = 2;
    assert_int_equal(mt_decode(f->ws, f->m, f->abs, src, len, NULL, NULL, 2, &x, &r), MT_ERR_INVALID_ARG);
    x = mt_decode_opts_default();
    x.sampling_topp = 0;
    assert_int_equal(mt_decode(f->ws, f->m, f->abs, src, len, NULL, NULL, 2, &x, &r), MT_ERR_INVALID_ARG);
}

/* The absorbed projections are an option of the same layer: without a cache they give the states of
 * the full projections (MLA). */
static void test_absorbed_uncached(void **state) {
    fixture *f = *state;
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    ctx->grad_enabled = 0;
    int64_t B = 2, S = 5, T = 4;
    int32_t src[10], tgt[8];
    uint64_t s = 7;
    for (int i = 0; i < B * S; i++) src[i] = tu_rand_id(&s, f->m->cfg.vocab_size);
    for (int i = 0; i < B * T; i++) tgt[i] = tu_rand_id(&s, f->m->cfg.vocab_size);
    mt_tensor *mask = mt_transformer_src_mask(ctx, f->m, src, B, S);
    mt_tensor *mem = mt_transformer_encode(ctx, f->m, mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){B, S}, src),
                                           mask, 0);
    mt_tensor *tg = mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){B, T}, tgt);
    mt_tensor *full = mt_transformer_decode(ctx, f->m, tg, 0, mem, mask, NULL, NULL, 0);
    mt_tensor *abs = mt_transformer_decode(ctx, f->m, tg, 0, mem, mask, f->abs, NULL, 0);
    assert_int_equal(ctx->status, MT_OK);
    float a[64 * 8], b[64 * 8];
    int64_t n = full->numel;
    assert_true(n <= 64 * 8);
    assert_int_equal(mt_copy_to_host(ctx, full, a, sizeof(float) * (size_t)n), MT_OK);
    assert_int_equal(mt_copy_to_host(ctx, abs, b, sizeof(float) * (size_t)n), MT_OK);
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(a[i] - b[i]) <= 1e-4f * (1.0f + fabsf(a[i]))))
            fail_msg("state %lld: %g vs %g", (long long)i, a[i], b[i]);
    mt_context_free(ctx);
}

/* N-best: n_best hypotheses per sentence, best first, distinct, the first the 1-best of the same beam. */
static void test_nbest(void **state) {
    fixture *f = *state;
    mt_decode_opts o = mt_decode_opts_default();
    o.beam = 4;
    mt_decode_result one, all;
    run_opts(f, &o, 0, NSENT, NULL, NULL, &one);
    o.n_best = 3;
    run_opts(f, &o, 0, NSENT, NULL, NULL, &all);
    assert_int_equal(all.n_best, 3);
    for (int i = 0; i < NSENT; i++) {
        assert_same(&all, i * 3, &one, i, 1e-6f);
        for (int j = 1; j < 3; j++) {
            int64_t a = i * 3 + j - 1, b = i * 3 + j;
            assert_true(isfinite(all.score[b]));
            int same = all.len[a] == all.len[b];
            for (int64_t t = 0; same && t < all.len[a]; t++) same = all.ids[a][t] == all.ids[b][t];
            assert_false(same);
        }
    }
    mt_decode_result_free(&one);
    mt_decode_result_free(&all);
}

/* A target prefix: the output starts with it; the greedy output's own first tokens as the prefix give
 * the greedy output back; cached and uncached agree. */
static void test_prefix(void **state) {
    fixture *f = *state;
    mt_decode_result g, p, u;
    run(f, 1, 1, 0, NSENT, &g);
    const int32_t *pre[NSENT];
    int64_t plen[NSENT];
    int32_t forced[NSENT][3];
    for (int i = 0; i < NSENT; i++) {
        pre[i] = g.ids[i];
        plen[i] = g.len[i] < 2 ? g.len[i] : 2;
    }
    mt_decode_opts o = mt_decode_opts_default();
    run_opts(f, &o, 0, NSENT, pre, plen, &p);
    for (int i = 0; i < NSENT; i++) assert_same(&p, i, &g, i, 1e-5f);
    mt_decode_result_free(&p);
    for (int i = 0; i < NSENT; i++) {
        for (int j = 0; j < 3; j++) forced[i][j] = 4 + (int32_t)((i * 7 + j * 3) % 40);
        pre[i] = forced[i];
        plen[i] = 1 + i % 3;
    }
    for (int beam = 1; beam <= 3; beam += 2) {
        o.beam = beam;
        o.cached = 1;
        run_opts(f, &o, 0, NSENT, pre, plen, &p);
        o.cached = 0;
        run_opts(f, &o, 0, NSENT, pre, plen, &u);
        for (int i = 0; i < NSENT; i++) {
            assert_true(p.len[i] >= plen[i]);
            for (int64_t j = 0; j < plen[i]; j++) assert_int_equal(p.ids[i][j], forced[i][j]);
            assert_same(&p, i, &u, i, 1e-4f);
        }
        mt_decode_result_free(&p);
        mt_decode_result_free(&u);
    }
    mt_decode_result_free(&g);
}

static int same_tokens(const mt_decode_result *a, const mt_decode_result *b) {
    for (int64_t k = 0; k < a->n * a->n_best; k++) {
        if (a->len[k] != b->len[k]) return 0;
        for (int64_t j = 0; j < a->len[k]; j++)
            if (a->ids[k][j] != b->ids[k][j]) return 0;
    }
    return 1;
}

/* Sampling: the same seed draws the same tokens, another seed others; a tiny temperature or top-p
 * (only the best token left) is greedy; n_best samples are returned per sentence, scores sorted. */
static void test_sampling(void **state) {
    fixture *f = *state;
    mt_decode_result g, a, b;
    run(f, 1, 1, 0, NSENT, &g);
    mt_decode_opts o = mt_decode_opts_default();
    o.sampling_topk = 0;
    o.seed = 42;
    o.n_best = 2;
    run_opts(f, &o, 0, NSENT, NULL, NULL, &a);
    run_opts(f, &o, 0, NSENT, NULL, NULL, &b);
    assert_true(same_tokens(&a, &b));
    for (int i = 0; i < NSENT; i++) assert_true(a.score[2 * i] >= a.score[2 * i + 1]);
    mt_decode_result_free(&b);
    o.seed = 43;
    run_opts(f, &o, 0, NSENT, NULL, NULL, &b);
    assert_false(same_tokens(&a, &b));
    mt_decode_result_free(&a);
    mt_decode_result_free(&b);
    o.n_best = 1;
    o.sampling_temperature = 1e-4f;
    run_opts(f, &o, 0, NSENT, NULL, NULL, &a);
    assert_true(same_tokens(&a, &g));
    mt_decode_result_free(&a);
    o.sampling_temperature = 1.0f;
    o.sampling_topp = 1e-6f;
    run_opts(f, &o, 0, NSENT, NULL, NULL, &a);
    assert_true(same_tokens(&a, &g));
    mt_decode_result_free(&a);
    o.sampling_topp = 1.0f;
    o.sampling_topk = 1000000; /* more than the vocabulary: every token, as 0 */
    run_opts(f, &o, 0, NSENT, NULL, NULL, &a);
    o.sampling_topk = 0;
    run_opts(f, &o, 0, NSENT, NULL, NULL, &b);
    assert_true(same_tokens(&a, &b));
    mt_decode_result_free(&a);
    mt_decode_result_free(&b);
    mt_decode_result_free(&g);
}

typedef struct streamed {
    int64_t calls[NSENT], finals[NSENT], last_len[NSENT];
    int32_t last[NSENT][64];
    int grew; /* every partial call one token longer than the one before */
} streamed;

static void on_stream(void *user, int64_t i, const int32_t *ids, int64_t len, int final) {
    streamed *s = user;
    if (i < 0 || i >= NSENT || len > 64) fail_msg("stream: sentence %lld, %lld tokens", (long long)i, (long long)len);
    if (!final && len != s->last_len[i] + 1) s->grew = 0;
    s->calls[i]++;
    s->finals[i] += final;
    s->last_len[i] = len;
    if (len) memcpy(s->last[i], ids, sizeof(int32_t) * (size_t)len);
}

/* The stream: greedy reports every step and then the final hypothesis, which is the result; beam
 * search reports only the final one. */
static void test_stream(void **state) {
    fixture *f = *state;
    for (int beam = 1; beam <= 3; beam += 2) {
        streamed s = {.grew = 1};
        mt_decode_opts o = mt_decode_opts_default();
        o.beam = beam;
        o.stream = on_stream;
        o.stream_user = &s;
        mt_decode_result r;
        run_opts(f, &o, 0, NSENT, NULL, NULL, &r);
        assert_true(s.grew);
        for (int i = 0; i < NSENT; i++) {
            assert_int_equal(s.finals[i], 1);
            assert_int_equal(s.last_len[i], r.len[i]);
            for (int64_t j = 0; j < r.len[i]; j++) assert_int_equal(s.last[i][j], r.ids[i][j]);
            if (beam > 1) assert_int_equal(s.calls[i], 1);
            else assert_true(s.calls[i] >= r.len[i]);
        }
        mt_decode_result_free(&r);
    }
}

int main(void) {
    mt_log_set_level(MT_LOG_ERROR);
    const struct CMUnitTest mla[] = {
        cmocka_unit_test(test_cached_greedy), cmocka_unit_test(test_cached_beam),
        cmocka_unit_test(test_batch_greedy),  cmocka_unit_test(test_batch_beam),
        cmocka_unit_test(test_beam1_is_greedy), cmocka_unit_test(test_limits),
        cmocka_unit_test(test_absorbed_uncached), cmocka_unit_test(test_nbest),
        cmocka_unit_test(test_prefix), cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_stream), cmocka_unit_test(test_packed),
    };
    const struct CMUnitTest mha[] = {
        cmocka_unit_test(test_cached_greedy), cmocka_unit_test(test_cached_beam),
        cmocka_unit_test(test_batch_greedy),  cmocka_unit_test(test_batch_beam),
        cmocka_unit_test(test_nbest), cmocka_unit_test(test_prefix), cmocka_unit_test(test_packed),
    };
    int fails = cmocka_run_group_tests_name("decode (MLA)", mla, setup_mla, teardown);
    fails += cmocka_run_group_tests_name("decode (MHA)", mha, setup_mha, teardown);
    /* cross_rope false: the cross-attention's cached keys are not rotated; cached and uncached agree. */
    const struct CMUnitTest xnorope[] = {
        cmocka_unit_test(test_cached_greedy), cmocka_unit_test(test_cached_beam),
        cmocka_unit_test(test_batch_beam),
    };
    fails += cmocka_run_group_tests_name("decode (MLA, cross_rope false)", xnorope, setup_mla_xnorope, teardown);
    fails += cmocka_run_group_tests_name("decode (MHA, cross_rope false)", xnorope, setup_mha_xnorope, teardown);
    return fails ? 1 : 0;
}
