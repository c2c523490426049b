/*
 * test_search.c — beam search's early end (engine/decode/search.c, beam_settled) on a synthetic model:
 * a sentence that stops once its n_best finished hypotheses outrank anything a live one can reach
 * returns exactly what the exhaustive search (every sentence until beam hypotheses have finished)
 * returns — the same ids, lengths and scores of every one of its n_best — at length penalties 0, 0.6
 * and 1, n_best 1 and 2, beams 2, 4 and 6, and it takes fewer decoder steps.
 *
 * The model: a row's next-token log-probabilities are a fixed function of its whole history (a hash),
 * [EOS] growing likelier with the position at a rate of the sentence's own, [PAD] and [SOS] never.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/context.h"
#include "decode/search.h"
#include "ops/ops.h"

enum { V = 11, PAD = 0, SOS = 1, EOS = 2, B = 7, MAXR = 64 };

typedef struct synth {
    mt_context *ctx;
    uint64_t h[MAXR], nh[MAXR]; /* each row's history hash */
    int sent[MAXR], nsent[MAXR]; /* each row's sentence (for its [EOS] rate) */
    int k;
} synth;

static uint64_t mix(uint64_t x) {
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    return x ^ (x >> 32);
}

static mt_tensor *step(void *user, const int32_t *tokens, int64_t t) {
    synth *s = user;
    int64_t R = 0;
    while (R < MAXR && s->sent[R] >= 0) R++;
    mt_tensor *lp = mt_new(s->ctx, MT_DTYPE_F32, 2, (const int64_t[]){R, V});
    if (!lp) return NULL;
    float *p = mt_f32(lp);
    for (int64_t r = 0; r < R; r++) {
        s->h[r] = mix(s->h[r] ^ (uint64_t)(tokens[r] + 1) * 0x100000001b3ull);
        double z[V], mx = -INFINITY, sum = 0;
        for (int v = 0; v < V; v++) {
            z[v] = (double)(mix(s->h[r] + (uint64_t)v) % 1000) / 250.0; /* 0 .. 4 */
            if (v == EOS) z[v] += -3.0 + 0.35 * (double)t * (1 + s->sent[r] % 3);
            if (v == PAD || v == SOS) z[v] = -INFINITY;
            if (z[v] > mx) mx = z[v];
        }
        for (int v = 0; v < V; v++) sum += exp(z[v] - mx);
        for (int v = 0; v < V; v++) p[r * V + v] = (float)(z[v] - mx - log(sum));
    }
    return lp;
}

static mt_status reorder(void *user, const int32_t *parents, int64_t n, int64_t t_done, int changed) {
    (void)t_done;
    (void)changed;
    synth *s = user;
    for (int64_t i = 0; i < n; i++) {
        s->nh[i] = s->h[parents[i]];
        s->nsent[i] = s->sent[parents[i]];
    }
    for (int64_t i = 0; i < MAXR; i++) {
        s->h[i] = i < n ? s->nh[i] : 0;
        s->sent[i] = i < n ? s->nsent[i] : -1;
    }
    return MT_OK;
}

typedef struct run_out {
    mt_search_sent s[B];
    mt_hyp hyps[B * 8];
    int64_t steps;
} run_out;

static void run(mt_context *ctx, int beam, int n_best, float alpha, int exhaustive, run_out *out) {
    synth sy = {.ctx = ctx, .k = beam};
    for (int r = 0; r < MAXR; r++) sy.sent[r] = r < B * beam ? r / beam : -1;
    memset(out, 0, sizeof *out);
    for (int b = 0; b < B; b++) {
        out->s[b].index = b;
        out->s[b].maxo = 6 + 3 * b;
        out->s[b].hyps = out->hyps + b * 8;
        out->s[b].cap = beam;
    }
    mt_decode_opts o = mt_decode_opts_default();
    o.beam = beam;
    o.n_best = n_best;
    o.length_penalty = alpha;
    mt_search_model m = {.user = &sy, .ctx = ctx, .step = step, .reorder = reorder, .V = V, .sos = SOS, .eos = EOS};
    mt_search_exhaustive = exhaustive;
    assert_int_equal(mt_search(&m, &o, out->s, B, &out->steps), MT_OK);
    mt_search_exhaustive = 0;
}

static void release(run_out *r) {
    for (int i = 0; i < B * 8; i++) free(r->hyps[i].ids);
}

static void test_early_end_is_exact(void **state) {
    (void)state;
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 1), MT_OK);
    mt_context_set_grad_enabled(ctx, 0);
    static const float alphas[] = {0.0f, 0.6f, 1.0f};
    int64_t saved = 0;
    for (int beam = 2; beam <= 6; beam += 2)
        for (int n_best = 1; n_best <= 2; n_best++)
            for (int a = 0; a < 3; a++) {
                run_out full, early;
                run(ctx, beam, n_best, alphas[a], 1, &full);
                run(ctx, beam, n_best, alphas[a], 0, &early);
                assert_true(early.steps <= full.steps);
                saved += full.steps - early.steps;
                for (int b = 0; b < B; b++) {
                    assert_true(early.s[b].nhyps >= n_best);
                    for (int i = 0; i < n_best; i++) {
                        const mt_hyp *x = &full.s[b].hyps[i], *y = &early.s[b].hyps[i];
                        if (x->len != y->len || x->score != y->score ||
                            memcmp(x->ids, y->ids, sizeof(int32_t) * (size_t)x->len) != 0)
                            fail_msg("beam %d, n_best %d, alpha %.1f: sentence %d, hypothesis %d: early end gives "
                                     "length %lld score %.9g, exhaustive search length %lld score %.9g",
                                     beam, n_best, (double)alphas[a], b, i, (long long)y->len, y->score,
                                     (long long)x->len, x->score);
                    }
                }
                release(&full);
                release(&early);
            }
    assert_true(saved > 0); /* the early end did end some sentences early */
    mt_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_early_end_is_exact)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
