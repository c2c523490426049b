/*
 * test_train_alloc.c — after one warm-up step, a training step makes no system allocation.
 *
 * The step is a small pre-norm Transformer block on token ids: embedding, layer norm, fused causal
 * attention over a packed qkv projection (reshape/permute/narrow), residuals, an MLP with GELU and
 * dropout, RMS norm, tied output projection, label-smoothed cross-entropy with padding ignored;
 * backward; AdamW on every persistent parameter through the backend's adamw kernel; zero_grad;
 * mt_context_reset. Every engine allocation is counted (core/alloc.h): after the warm-up step the
 * count must not move over the following steps. The loss must also go down, so the step is a real
 * training step and not a no-op that trivially allocates nothing.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "ops/ops.h"

enum { V = 61, C = 32, H = 4, D = C / H, B = 3, T = 9, F = 4 * C, PAD = 0 };

typedef struct param {
    mt_tensor *p, *m, *v;
} param;

typedef struct model {
    param emb, ln1_w, ln1_b, wqkv, wo, ln2_w, w1, b1, w2, b2, lnf_w;
} model;

#define N_PARAMS (sizeof(model) / sizeof(param))

static void make_param(mt_context *ctx, param *pr, int ndim, const int64_t *shape, float lo, float hi, int ones) {
    assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, ndim, shape, NULL, &pr->p), MT_OK);
    assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, ndim, shape, NULL, &pr->m), MT_OK);
    assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, ndim, shape, NULL, &pr->v), MT_OK);
    assert_int_equal(ones ? mt_fill(ctx, pr->p, 1.0f) : mt_fill_uniform(ctx, pr->p, lo, hi), MT_OK);
    assert_int_equal(mt_fill(ctx, pr->m, 0.0f), MT_OK);
    assert_int_equal(mt_fill(ctx, pr->v, 0.0f), MT_OK);
    assert_int_equal(mt_requires_grad(pr->p, 1), MT_OK);
}

static mt_tensor *forward(mt_context *ctx, model *m, const int32_t *ids, const int32_t *targets) {
    mt_tensor *tid = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(B, T), ids);
    mt_tensor *tgt = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(B * T), targets);
    mt_tensor *x = mt_embedding(ctx, m->emb.p, tid);                                  /* (B,T,C) */
    mt_tensor *h = mt_layer_norm(ctx, x, m->ln1_w.p, m->ln1_b.p, 1e-5f);
    mt_tensor *qkv = mt_linear(ctx, h, m->wqkv.p, NULL);                              /* (B,T,3C) */
    qkv = mt_permute(ctx, mt_reshape(ctx, qkv, MT_DIMS(B, T, 3, H, D)), (const int[]){2, 0, 3, 1, 4});
    mt_tensor *q = mt_reshape(ctx, mt_narrow(ctx, qkv, 0, 0, 1), MT_DIMS(B, H, T, D));
    mt_tensor *k = mt_reshape(ctx, mt_narrow(ctx, qkv, 0, 1, 1), MT_DIMS(B, H, T, D));
    mt_tensor *v = mt_reshape(ctx, mt_narrow(ctx, qkv, 0, 2, 1), MT_DIMS(B, H, T, D));
    mt_tensor *a = mt_attention(ctx, q, k, v, NULL, 1, 1.0f / sqrtf((float)D));      /* (B,H,T,D) */
    a = mt_reshape(ctx, mt_transpose(ctx, a, 1, 2), MT_DIMS(B, T, C));
    x = mt_add(ctx, x, mt_linear(ctx, a, m->wo.p, NULL));
    h = mt_layer_norm(ctx, x, m->ln2_w.p, NULL, 1e-5f);
    h = mt_gelu(ctx, mt_linear(ctx, h, m->w1.p, m->b1.p));
    h = mt_dropout(ctx, mt_linear(ctx, h, m->w2.p, m->b2.p), 0.1f, 1);
    x = mt_add(ctx, x, h);
    x = mt_rms_norm(ctx, x, m->lnf_w.p, 1e-6f);
    mt_tensor *logits = mt_reshape(ctx, mt_linear(ctx, x, m->emb.p, NULL), MT_DIMS(B * T, V)); /* tied */
    return mt_cross_entropy(ctx, logits, tgt, 0.1f, PAD);
}

/* One optimizer step; returns the loss. */
static float train_step(mt_context *ctx, model *m, int step, const int32_t *ids, const int32_t *targets) {
    mt_tensor *loss = forward(ctx, m, ids, targets);
    if (!loss) fail_msg("forward failed: %s", mt_last_error());
    float l = mt_f32(loss)[0];
    assert_int_equal(mt_backward(ctx, loss, NULL), MT_OK);
    const mt_backend *be = ctx->ex.backend;
    float b1 = 0.9f, b2 = 0.99f, lr = 3e-3f;
    float bc1 = 1.0f - powf(b1, (float)(step + 1)), bc2 = 1.0f - powf(b2, (float)(step + 1));
    param *ps = (param *)m;
    for (size_t i = 0; i < N_PARAMS; i++) {
        mt_tensor *p = ps[i].p;
        assert_non_null(p->grad);
        assert_int_equal(be->adamw(&ctx->ex, mt_f32(p), mt_f32(p->grad), mt_f32(ps[i].m), mt_f32(ps[i].v), p->numel, lr,
                                   b1, b2, 1e-8f, 0.01f, bc1, bc2, 1.0f),
                         MT_OK);
        assert_int_equal(mt_zero_grad(&ctx->ex, p), MT_OK);
    }
    assert_int_equal(mt_context_reset(ctx), MT_OK);
    return l;
}

static void test_step_allocates_nothing_after_warmup(void **state) {
    (void)state;
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    mt_context_seed(ctx, 2024);
    model m;
    make_param(ctx, &m.emb, MT_DIMS(V, C), -0.5f, 0.5f, 0);
    make_param(ctx, &m.ln1_w, MT_DIMS(C), 0, 0, 1);
    make_param(ctx, &m.ln1_b, MT_DIMS(C), -0.1f, 0.1f, 0);
    make_param(ctx, &m.wqkv, MT_DIMS(3 * C, C), -0.2f, 0.2f, 0);
    make_param(ctx, &m.wo, MT_DIMS(C, C), -0.2f, 0.2f, 0);
    make_param(ctx, &m.ln2_w, MT_DIMS(C), 0, 0, 1);
    make_param(ctx, &m.w1, MT_DIMS(F, C), -0.2f, 0.2f, 0);
    make_param(ctx, &m.b1, MT_DIMS(F), -0.1f, 0.1f, 0);
    make_param(ctx, &m.w2, MT_DIMS(C, F), -0.1f, 0.1f, 0);
    make_param(ctx, &m.b2, MT_DIMS(C), -0.1f, 0.1f, 0);
    make_param(ctx, &m.lnf_w, MT_DIMS(C), 0, 0, 1);
    /* A learnable task: the target is the next id of a fixed pattern; trailing padding ignored. */
    int32_t ids[B * T], targets[B * T];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            ids[b * T + t] = 1 + (b * 7 + t * 3) % (V - 1);
            targets[b * T + t] = t >= T - b ? PAD : 1 + (b * 7 + (t + 1) * 3) % (V - 1);
        }
    float first = train_step(ctx, &m, 0, ids, targets); /* warm-up: arenas, tape, scratch, grads grow */
    uint64_t count = mt_sys_alloc_count();
    float last = first;
    const int steps = 30;
    for (int s = 1; s <= steps; s++) {
        last = train_step(ctx, &m, s, ids, targets);
        if (mt_sys_alloc_count() != count)
            fail_msg("step %d made %llu system allocations after the warm-up step", s,
                     (unsigned long long)(mt_sys_alloc_count() - count));
    }
    print_message("loss %.4f -> %.4f over %d steps; %llu engine allocations in total, none after warm-up\n", first,
                  last, steps, (unsigned long long)count);
    assert_true(isfinite(last));
    assert_true(last < 0.7f * first);
    param *ps = (param *)&m;
    for (size_t i = 0; i < N_PARAMS; i++) {
        mt_tensor_free(ps[i].p);
        mt_tensor_free(ps[i].m);
        mt_tensor_free(ps[i].v);
    }
    mt_context_free(ctx);
}

/* The arena itself: reset keeps (and merges) its blocks; a same-size step reuses them. */
static void test_arena_reuse(void **state) {
    (void)state;
    mt_arena a;
    mt_arena_init(&a, 1024, NULL);
    for (int round = 0; round < 3; round++) {
        uint64_t before = mt_sys_alloc_count();
        for (int i = 0; i < 10; i++) {
            char *p = mt_arena_alloc(&a, 700, 64);
            assert_non_null(p);
            assert_int_equal((uintptr_t)p % 64, 0);
            memset(p, i, 700);
        }
        uint64_t grew = mt_sys_alloc_count() - before;
        if (round == 0) assert_true(grew > 0);
        else if (round == 2) assert_int_equal(grew, 0); /* after round 0's reset merged the blocks */
        mt_arena_reset(&a);
        assert_int_equal(a.used, 0);
        assert_null(a.head->next);                      /* one block */
    }
    mt_arena_free(&a);
}

/* A host arena's merged block has room for twice the step that made it: a step that grows up to that
 * (decoding a longer chunk) asks the system for nothing, and writes only pages it has written before. */
static void test_arena_slack(void **state) {
    (void)state;
    mt_arena a;
    mt_arena_init(&a, 4096, NULL);
    for (int i = 0; i < 10; i++) assert_non_null(mt_arena_alloc(&a, 4000, 64));
    size_t hw = a.high_water;
    mt_arena_reset(&a);
    assert_null(a.head->next);
    assert_true(a.head->size >= 2 * hw);
    uint64_t before = mt_sys_alloc_count();
    for (int i = 0; i < 19; i++) assert_non_null(mt_arena_alloc(&a, 4000, 64)); /* 1.9x the first step */
    assert_int_equal(mt_sys_alloc_count() - before, 0);
    assert_null(a.head->next);
    mt_arena_reset(&a);
    mt_arena_free(&a);
}

/* mt_context_keep: in inference the kept tensor moves down to the mark with its values and the arena
 * stands just past it; with a recording tape nothing moves. */
static void test_context_keep(void **state) {
    (void)state;
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    float vals[1000];
    for (int i = 0; i < 1000; i++) vals[i] = (float)i * 0.5f - 7.0f;
    mt_tensor *a = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(1000), vals);
    for (int grad = 0; grad <= 1; grad++) {
        assert_int_equal(mt_requires_grad(a, grad), MT_OK);
        int saved = grad ? ctx->grad_enabled : mt_no_grad_begin(ctx);
        mt_arena_mark mark = mt_arena_get_mark(&ctx->data);
        mt_tensor *x = a;
        for (int i = 0; i < 50; i++) x = mt_add(ctx, x, mt_full(ctx, MT_DIMS(1000), 1.0f)); /* 100 temporaries */
        assert_non_null(x);
        void *was = x->data;
        size_t used = ctx->data.used;
        assert_ptr_equal(mt_context_keep(ctx, mark, x), x);
        if (grad) {
            assert_ptr_equal(x->data, was);
            assert_int_equal(ctx->data.used, used);
        } else {
            assert_true(ctx->data.used <= mark.used + 256 + sizeof(float) * 1000);
            assert_true(x->data != was);
        }
        for (int i = 0; i < 1000; i++) assert_float_equal(mt_f32(x)[i], vals[i] + 50.0f, 0);
        if (!grad) mt_no_grad_end(ctx, saved);
        assert_int_equal(mt_context_reset(ctx), MT_OK);
        a = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(1000), vals);
    }
    mt_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_allocates_nothing_after_warmup),
        cmocka_unit_test(test_arena_reuse),
        cmocka_unit_test(test_arena_slack),
        cmocka_unit_test(test_context_keep),
    };
    return cmocka_run_group_tests_name("train_alloc", tests, NULL, NULL);
}
