/*
 * optim.c — AdamW, the schedule, clipping and the accumulated training step (see optim.h).
 */
#include "train/optim.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

void mt_adamw_hparams_default(mt_adamw_hparams *h) {
    h->lr = 1e-3;
    h->beta1 = 0.9;
    h->beta2 = 0.98;
    h->eps = 1e-9;
    h->weight_decay = 0.01;
    h->warmup_steps = 1000;
    h->clip_norm = 1.0;
    h->label_smoothing = 0.1;
}

double mt_lr_at(const mt_adamw_hparams *h, int64_t step) {
    if (step < 1) step = 1;
    if (h->warmup_steps <= 0) return h->lr;
    double w = (double)h->warmup_steps, s = (double)step;
    return h->lr * fmin(s / w, sqrt(w / s));
}

void mt_optimizer_free(mt_optimizer *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) {
        if (o->m) mt_tensor_free(o->m[i]);
        if (o->v) mt_tensor_free(o->v[i]);
    }
    mt_tensor_free(o->acc);
    mt_sys_free(o->m);
    mt_sys_free(o->v);
    mt_sys_free(o->decay);
    mt_sys_free(o->slots);
    mt_sys_free(o);
}

mt_status mt_optimizer_create(const mt_transformer *model, mt_context *ctx, mt_optimizer **out) {
    mt_optimizer *o = mt_sys_calloc(1, sizeof *o);
    if (!o) return mt_error(MT_ERR_NOMEM, "optimizer: out of memory");
    o->model = model;
    o->n = model->n_params;
    o->m = mt_sys_calloc((size_t)o->n, sizeof *o->m);
    o->v = mt_sys_calloc((size_t)o->n, sizeof *o->v);
    o->decay = mt_sys_calloc((size_t)o->n, sizeof *o->decay);
    o->slots = mt_sys_calloc((size_t)o->n + 1, sizeof *o->slots);
    mt_status st =
        (!o->m || !o->v || !o->decay || !o->slots) ? mt_error(MT_ERR_NOMEM, "optimizer: out of memory") : MT_OK;
    for (int i = 0; st == MT_OK && i < o->n; i++) {
        const mt_tensor *p = model->params[i];
        o->decay[i] = p->ndim == 2;
        st = mt_tensor_new_persistent(p->device, MT_DTYPE_F32, p->ndim, p->shape, NULL, &o->m[i]);
        if (st == MT_OK) st = mt_tensor_new_persistent(p->device, MT_DTYPE_F32, p->ndim, p->shape, NULL, &o->v[i]);
        if (st == MT_OK) st = mt_fill(ctx, o->m[i], 0.0f);
        if (st == MT_OK) st = mt_fill(ctx, o->v[i], 0.0f);
    }
    int64_t four = 4;
    if (st == MT_OK) st = mt_tensor_new_persistent(model->device, MT_DTYPE_F32, 1, &four, NULL, &o->acc);
    if (st == MT_OK) st = mt_fill(ctx, o->acc, 0.0f);
    if (st != MT_OK) {
        mt_optimizer_free(o);
        return st;
    }
    *out = o;
    return MT_OK;
}

mt_status mt_optimizer_read(mt_optimizer *o, mt_context *ctx, double *loss, double *grad_norm) {
    float acc[4];
    MT_TRY(mt_copy_to_host(ctx, o->acc, acc, sizeof acc));
    int64_t steps = o->unread;
    double norm = sqrt((double)acc[0]);
    if (grad_norm) *grad_norm = norm;
    if (loss) *loss = steps > 0 ? (double)acc[1] / (double)steps : 0.0;
    o->unread = 0;
    MT_TRY(ctx->ex.backend->zero(&ctx->ex, mt_f32(o->acc) + 1, 3 * sizeof(float)));
    if (!isfinite(acc[1]))
        return mt_error(MT_ERR_STATE, "training: the loss is %g over the last %lld steps (diverged)", (double)acc[1],
                        (long long)steps);
    if (!isfinite(acc[2]) || !isfinite(norm))
        return mt_error(MT_ERR_STATE, "training: the gradient norm was not finite in the last %lld steps (the loss "
                        "diverged; those steps did not update the weights); lower lr or enable clip_norm",
                        (long long)(steps > 0 ? steps : 1));
    return MT_OK;
}

/* The update without a host read, every parameter together (multi-tensor kernels): the global norm is
 * summed into acc[0] on the device, the AdamW kernel reads it there (clipping on the device), acc[2]
 * collects it for the next read's check; with zero_grad the kernel also zeroes the gradients. */
static mt_status optimizer_update(mt_optimizer *o, mt_context *ctx, const mt_adamw_hparams *h, int zero_grad) {
    const mt_backend *be = ctx->ex.backend;
    const mt_transformer *model = o->model;
    float *acc = mt_f32(o->acc);
    int k = 0;
    for (int i = 0; i < o->n; i++) {
        mt_tensor *p = model->params[i];
        mt_weight_lowp_drop(p); /* the step's bf16 copy no longer matches */
        if (!p->grad) continue;
        o->slots[k++] = (mt_adamw_slot){.p = mt_f32(p), .g = mt_f32(p->grad), .m = mt_f32(o->m[i]),
                                        .v = mt_f32(o->v[i]), .n = p->numel,
                                        .wd = o->decay[i] ? (float)h->weight_decay : 0.0f};
    }
    MT_TRY(be->sumsq_multi(&ctx->ex, acc, o->slots, k, 0));
    MT_TRY(be->scalar_bwd(&ctx->ex, MT_SCALAR_MUL, acc + 2, acc, NULL, 1.0f, 1)); /* acc[2] += acc[0] */
    o->step++;
    double lr = mt_lr_at(h, o->step);
    float bc1 = (float)(1.0 - pow(h->beta1, (double)o->step)), bc2 = (float)(1.0 - pow(h->beta2, (double)o->step));
    return be->adamw_multi(&ctx->ex, o->slots, k, (float)lr, (float)h->beta1, (float)h->beta2, (float)h->eps, bc1, bc2,
                           acc, h->clip_norm, zero_grad);
}

mt_status mt_optimizer_step(mt_optimizer *o, mt_context *ctx, const mt_adamw_hparams *h, double *grad_norm) {
    MT_TRY(optimizer_update(o, ctx, h, 0));
    if (!grad_norm) return MT_OK;
    float acc[4];
    MT_TRY(mt_copy_to_host(ctx, o->acc, acc, sizeof acc));
    double norm = sqrt((double)acc[0]);
    *grad_norm = norm;
    if (!isfinite(norm))
        return mt_error(MT_ERR_STATE, "training: the gradient norm is %g (the loss diverged; the weights were not "
                        "updated); lower lr or enable clip_norm", norm);
    return MT_OK;
}

mt_status mt_train_step(mt_context *ctx, mt_transformer *model, mt_optimizer *o, const mt_adamw_hparams *h,
                        const mt_seq_batch *micro, int n_micro, double *loss, double *grad_norm) {
    int64_t total = 0;
    for (int i = 0; i < n_micro; i++) total += micro[i].tgt_tokens;
    if (total <= 0) return mt_error(MT_ERR_INVALID_ARG, "training step: no target tokens");
    const mt_backend *be = ctx->ex.backend;
    for (int i = 0; i < n_micro; i++) {
        MT_TRY(mt_context_reset(ctx));
        /* In bf16/f16, every weight's GEMM operand in one launch instead of one cast per use. */
        MT_TRY(mt_cast_weights(ctx, model->params, model->n_params));
        float w = (float)((double)micro[i].tgt_tokens / (double)total);
        mt_tensor *gr = mt_full(ctx, 0, NULL, w);
        mt_tensor *l = mt_transformer_loss(ctx, model, &micro[i], (float)h->label_smoothing, 1, gr, NULL);
        if (ctx->status != MT_OK || !l || !gr) return ctx->status != MT_OK ? ctx->status : MT_ERR_INTERNAL;
        /* The loss stays on the device: acc[1] += w * loss (read by mt_optimizer_read). */
        MT_TRY(be->scalar_bwd(&ctx->ex, MT_SCALAR_MUL, mt_f32(o->acc) + 1, mt_f32(l), NULL, w, 1));
        MT_TRY(mt_backward(ctx, l, gr));
    }
    MT_TRY(mt_context_reset(ctx));
    MT_TRY(optimizer_update(o, ctx, h, 1)); /* also zeroes the gradients */
    o->unread++;
    /* The update is still queued on a GPU stream: contexts that read the weights next (a save, a
     * decoder) wait for it on the device through this publish (core/backend.h). */
    MT_TRY(mt_context_publish(ctx));
    if (loss || grad_norm) return mt_optimizer_read(o, ctx, loss, grad_norm);
    return MT_OK;
}

mt_status mt_eval_loss(mt_context *ctx, const mt_transformer *model, const mt_seq_batch *batches, int n, float ls,
                       double *loss, int64_t *tokens) {
    int saved = mt_no_grad_begin(ctx);
    double sum = 0.0;
    int64_t tok = 0;
    mt_status st = MT_OK;
    for (int i = 0; st == MT_OK && i < n; i++) {
        st = mt_context_reset(ctx);
        if (st != MT_OK) break;
        mt_tensor *l = mt_transformer_loss(ctx, model, &batches[i], ls, 0, NULL, NULL);
        if (ctx->status != MT_OK || !l) {
            st = ctx->status != MT_OK ? ctx->status : MT_ERR_INTERNAL;
            break;
        }
        float lv;
        st = mt_copy_to_host(ctx, l, &lv, sizeof lv);
        sum += (double)lv * (double)batches[i].tgt_tokens;
        tok += batches[i].tgt_tokens;
    }
    mt_no_grad_end(ctx, saved);
    if (st == MT_OK) st = mt_context_reset(ctx);
    if (loss) *loss = tok ? sum / (double)tok : 0.0;
    if (tokens) *tokens = tok;
    return st;
}
