/*
 * test_optim.c — the optimizer pieces on their own: the learning-rate schedule (linear warm-up, then
 * inverse square root), gradient accumulation (two micro-batches give the gradient and the update of
 * the batch they split), clipping by global norm (the reported norm is the gradients' L2 norm, and a
 * clipped step equals an unclipped step on gradients scaled by clip / norm).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "testutil.h"
#include "train/optim.h"

static void test_schedule(void **state) {
    (void)state;
    mt_adamw_hparams h;
    mt_adamw_hparams_default(&h);
    h.lr = 1e-3;
    h.warmup_steps = 100;
    assert_true(fabs(mt_lr_at(&h, 1) - 1e-5) < 1e-12);
    assert_true(fabs(mt_lr_at(&h, 50) - 5e-4) < 1e-12);
    assert_true(fabs(mt_lr_at(&h, 100) - 1e-3) < 1e-12);
    assert_true(fabs(mt_lr_at(&h, 400) - 5e-4) < 1e-12); /* sqrt(100 / 400) */
    h.warmup_steps = 0;
    assert_true(mt_lr_at(&h, 7) == 1e-3);
}

/* The batch's rows [r0, r1) as a batch of the same widths. */
static mt_seq_batch rows(const mt_seq_batch *b, int64_t r0, int64_t r1) {
    mt_seq_batch s = {.B = r1 - r0, .S = b->S, .T = b->T};
    s.src = b->src + r0 * b->S;
    s.tgt_in = b->tgt_in + r0 * b->T;
    s.tgt_out = b->tgt_out + r0 * b->T;
    for (int64_t i = r0 * b->S; i < r1 * b->S; i++) s.src_tokens += b->src[i] != 0;
    for (int64_t i = r0 * b->T; i < r1 * b->T; i++) s.tgt_tokens += b->tgt_out[i] != 0;
    return s;
}

/* The largest difference of two models' weights, in units of the learning rate (what one AdamW
 * step moves a weight by, at most about). */
static double max_diff_lr(const mt_transformer *a, const mt_transformer *b, double lr) {
    double worst = 0;
    for (int i = 0; i < a->n_params; i++) {
        const float *x = a->params[i]->data, *y = b->params[i]->data;
        for (int64_t j = 0; j < a->params[i]->numel; j++) worst = fmax(worst, fabs((double)x[j] - y[j]));
    }
    return worst / lr;
}

static void test_accumulation(void **state) {
    (void)state;
    mt_model_config c = tu_tiny_config(MT_ATTN_MLA);
    mt_transformer *one = tu_model(&c, 21), *two = tu_model(&c, 21);
    mt_seq_batch b = tu_batch(&c, 6, 9, 10, 5);
    mt_seq_batch parts[2] = {rows(&b, 0, 2), rows(&b, 2, 6)};
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    mt_optimizer *o1, *o2;
    assert_int_equal(mt_optimizer_create(one, ctx, &o1), MT_OK);
    assert_int_equal(mt_optimizer_create(two, ctx, &o2), MT_OK);
    mt_adamw_hparams h;
    mt_adamw_hparams_default(&h);
    h.warmup_steps = 0;
    h.clip_norm = 0;
    h.eps = 1e-3; /* smooth in g: with 1e-9, rounding noise on near-zero gradients flips whole updates */
    for (int s = 0; s < 3; s++) {
        double l1, l2, g1, g2;
        assert_int_equal(mt_train_step(ctx, one, o1, &h, &b, 1, &l1, &g1), MT_OK);
        assert_int_equal(mt_train_step(ctx, two, o2, &h, parts, 2, &l2, &g2), MT_OK);
        if (!(fabs(l1 - l2) <= 1e-5 * fabs(l1) && fabs(g1 - g2) <= 1e-4 * g1))
            fail_msg("step %d: loss %.8g vs %.8g, grad norm %.8g vs %.8g", s, l1, l2, g1, g2);
        double d = max_diff_lr(one, two, h.lr);
        if (!(d < 1e-3)) fail_msg("step %d: weights differ by %g lr", s, d);
    }
    mt_optimizer_free(o1);
    mt_optimizer_free(o2);
    mt_transformer_free(one);
    mt_transformer_free(two);
    tu_batch_free(&b);
    mt_context_free(ctx);
}

static void test_clipping(void **state) {
    (void)state;
    mt_model_config c = tu_tiny_config(MT_ATTN_MHA);
    mt_transformer *a = tu_model(&c, 31), *b = tu_model(&c, 31);
    mt_seq_batch batch = tu_batch(&c, 4, 8, 8, 6);
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    mt_optimizer *oa, *ob;
    assert_int_equal(mt_optimizer_create(a, ctx, &oa), MT_OK);
    assert_int_equal(mt_optimizer_create(b, ctx, &ob), MT_OK);
    /* The gradients of the batch, and their norm computed here. */
    mt_tensor *l = mt_transformer_loss(ctx, a, &batch, 0.0f, 0, NULL, NULL);
    assert_int_equal(mt_backward(ctx, l, NULL), MT_OK);
    double ss = 0;
    for (int i = 0; i < a->n_params; i++)
        for (int64_t j = 0; j < a->params[i]->numel; j++) ss += (double)mt_f32(a->params[i]->grad)[j] * mt_f32(a->params[i]->grad)[j];
    double norm = sqrt(ss);
    assert_int_equal(mt_context_reset(ctx), MT_OK);
    l = mt_transformer_loss(ctx, b, &batch, 0.0f, 0, NULL, NULL);
    assert_int_equal(mt_backward(ctx, l, NULL), MT_OK);
    /* b's gradients scaled by hand to norm 0.05; a clips to 0.05: the same update. */
    double clip = 0.05;
    for (int i = 0; i < b->n_params; i++)
        for (int64_t j = 0; j < b->params[i]->numel; j++) mt_f32(b->params[i]->grad)[j] *= (float)(clip / (norm + 1e-6));
    mt_adamw_hparams h;
    mt_adamw_hparams_default(&h);
    h.warmup_steps = 0;
    h.lr = 1e-2;
    h.clip_norm = clip;
    double ga;
    assert_int_equal(mt_optimizer_step(oa, ctx, &h, &ga), MT_OK);
    assert_true(fabs(ga - norm) <= 1e-4 * norm);
    h.clip_norm = 0;
    assert_int_equal(mt_optimizer_step(ob, ctx, &h, NULL), MT_OK);
    assert_true(max_diff_lr(a, b, 1e-2) < 1e-3);
    mt_optimizer_free(oa);
    mt_optimizer_free(ob);
    mt_transformer_free(a);
    mt_transformer_free(b);
    tu_batch_free(&batch);
    mt_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_accumulation),
        cmocka_unit_test(test_clipping),
    };
    return cmocka_run_group_tests_name("optimizer", tests, NULL, NULL) ? 1 : 0;
}
