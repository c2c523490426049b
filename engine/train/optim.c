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
    mt_status st = (!o->m || !o->v || !o->decay) ? mt_error(MT_ERR_NOMEM, "optimizer: out of memory") : MT_OK;
    for (int i = 0; st == MT_OK && i < o->n; i++) {
        const mt_tensor *p = model->params[i];
        o->decay[i] = p->ndim == 2;
        st = mt_tensor_new_persistent(p->device, MT_DTYPE_F32, p->ndim, p->shape, NULL, &o->m[i]);
        if (st == MT_OK) st = mt_tensor_new_persistent(p->device, MT_DTYPE_F32, p->ndim, p->shape, NULL, &o->v[i]);
        if (st == MT_OK) st = mt_fill(ctx, o->m[i], 0.0f);
        if (st == MT_OK) st = mt_fill(ctx, o->v[i], 0.0f);
    }
    int64_t one = 1;
    if (st == MT_OK) st = mt_tensor_new_persistent(model->device, MT_DTYPE_F32, 1, &one, NULL, &o->acc);
    if (st != MT_OK) {
        mt_optimizer_free(o);
        return st;
    }
    *out = o;
    return MT_OK;
}

mt_status mt_optimizer_step(mt_optimizer *o, mt_context *ctx, const mt_adamw_hparams *h, double *grad_norm) {
    const mt_backend *be = ctx->ex.backend;
    const mt_transformer *model = o->model;
    /* Global norm: one device accumulator over every gradient, then one host copy. */
    int first = 1;
    for (int i = 0; i < o->n; i++) {
        const mt_tensor *g = model->params[i]->grad;
        if (!g) continue;
        MT_TRY(be->sumsq(&ctx->ex, mt_f32(o->acc), mt_f32(g), g->numel, !first));
        first = 0;
    }
    float ss = 0.0f;
    if (!first) MT_TRY(mt_copy_to_host(ctx, o->acc, &ss, sizeof ss));
    double norm = sqrt((double)ss);
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm))
        return mt_error(MT_ERR_STATE, "training: the gradient norm is %g (the loss diverged); lower lr or enable "
                        "clip_norm", norm);
    /* torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), clamped to 1. */
    float scale = 1.0f;
    if (h->clip_norm > 0) {
        double coef = h->clip_norm / (norm + 1e-6);
        if (coef < 1.0) scale = (float)coef;
    }
    o->step++;
    double lr = mt_lr_at(h, o->step);
    float bc1 = (float)(1.0 - pow(h->beta1, (double)o->step)), bc2 = (float)(1.0 - pow(h->beta2, (double)o->step));
    for (int i = 0; i < o->n; i++) {
        mt_tensor *p = model->params[i];
        if (!p->grad) continue;
        MT_TRY(be->adamw(&ctx->ex, mt_f32(p), mt_f32(p->grad), mt_f32(o->m[i]), mt_f32(o->v[i]), p->numel, (float)lr,
                         (float)h->beta1, (float)h->beta2, (float)h->eps, o->decay[i] ? (float)h->weight_decay : 0.0f,
                         bc1, bc2, scale));
    }
    return MT_OK;
}

mt_status mt_train_step(mt_context *ctx, mt_transformer *model, mt_optimizer *o, const mt_adamw_hparams *h,
                        const mt_seq_batch *micro, int n_micro, double *loss, double *grad_norm) {
    int64_t total = 0;
    for (int i = 0; i < n_micro; i++) total += micro[i].tgt_tokens;
    if (total <= 0) return mt_error(MT_ERR_INVALID_ARG, "training step: no target tokens");
    double sum = 0.0;
    for (int i = 0; i < n_micro; i++) {
        MT_TRY(mt_context_reset(ctx));
        float w = (float)((double)micro[i].tgt_tokens / (double)total);
        mt_tensor *l = mt_transformer_loss(ctx, model, &micro[i], (float)h->label_smoothing, 1, NULL);
        mt_tensor *gr = mt_full(ctx, 0, NULL, w);
        if (ctx->status != MT_OK || !l || !gr) return ctx->status != MT_OK ? ctx->status : MT_ERR_INTERNAL;
        float lv = 0.0f;
        MT_TRY(mt_copy_to_host(ctx, l, &lv, sizeof lv));
        sum += (double)lv * (double)w;
        MT_TRY(mt_backward(ctx, l, gr));
    }
    MT_TRY(mt_context_reset(ctx));
    if (loss) *loss = sum;
    if (!isfinite(sum)) return mt_error(MT_ERR_STATE, "training: the loss is %g (diverged)", sum);
    MT_TRY(mt_optimizer_step(o, ctx, h, grad_norm));
    return mt_transformer_zero_grad(model, ctx);
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
        mt_tensor *l = mt_transformer_loss(ctx, model, &batches[i], ls, 0, NULL);
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
