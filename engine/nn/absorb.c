/*
 * absorb.c — the absorbed projections of MLA (see mt_absorbed in model.h): per decoder layer and
 * attention, W_uk and W_uq folded into one query map and W_o W_uv into one output map, so that
 * attention runs on the cached latents directly. Computed once per model, read-only afterwards.
 */
#include "core/alloc.h"
#include "core/error.h"
#include "nn/model.h"

void mt_absorbed_free(mt_absorbed *a) {
    if (!a) return;
    for (int64_t l = 0; l < a->layers; l++) {
        if (a->self_attn) {
            mt_tensor_free(a->self_attn[l].aq);
            mt_tensor_free(a->self_attn[l].ao);
        }
        if (a->cross_attn) {
            mt_tensor_free(a->cross_attn[l].aq);
            mt_tensor_free(a->cross_attn[l].ao);
        }
    }
    mt_sys_free(a->self_attn);
    mt_sys_free(a->cross_attn);
    mt_sys_free(a);
}

static mt_status keep(mt_context *ctx, mt_tensor *x, int ndim, const int64_t *shape, mt_tensor **out) {
    if (!x) return ctx->status != MT_OK ? ctx->status : mt_error(MT_ERR_INTERNAL, "absorb: NULL tensor");
    MT_TRY(mt_tensor_new_persistent(ctx->device, MT_DTYPE_F32, ndim, shape, NULL, out));
    return mt_copy_tensor(ctx, *out, x);
}

static mt_status absorb_one(mt_context *ctx, const mt_model_config *c, const mt_attn_params *a, mt_absorbed_attn *o) {
    int64_t H = c->heads, dh = mt_model_d_head(c), dc = c->d_c, dcq = c->d_cq, dr = c->d_rope, d = c->d_model;
    static const int p102[3] = {1, 0, 2};
    /* aq[h] = W_uk_h^T (dc, dh) @ W_uq_h (dh, dcq) */
    mt_tensor *uk = mt_reshape(ctx, a->w_uk, 3, (const int64_t[]){H, dh, dc});
    mt_tensor *uq = mt_reshape(ctx, a->w_uq, 3, (const int64_t[]){H, dh, dcq});
    mt_tensor *aq = mt_matmul(ctx, uk, uq, 1, 0); /* (H, dc, dcq) */
    MT_TRY(keep(ctx, aq, 2, (const int64_t[]){H * dc, dcq}, &o->aq));
    /* ao[:, h] = [W_o_h (d, dh) @ W_uv_h (dh, dc), 0 (d, dr)] */
    mt_tensor *wo = mt_permute(ctx, mt_reshape(ctx, a->w_o, 3, (const int64_t[]){d, H, dh}), p102); /* (H,d,dh) */
    mt_tensor *uv = mt_reshape(ctx, a->w_uv, 3, (const int64_t[]){H, dh, dc});
    mt_tensor *parts[2] = {mt_matmul(ctx, wo, uv, 0, 0), mt_zeros(ctx, 3, (const int64_t[]){H, d, dr})};
    mt_tensor *ao = mt_permute(ctx, mt_concat(ctx, parts, 2, 2), p102); /* (d, H, dc+dr) */
    return keep(ctx, ao, 2, (const int64_t[]){d, H * (dc + dr)}, &o->ao);
}

mt_status mt_absorbed_create(const mt_transformer *m, mt_absorbed **out) {
    *out = NULL;
    if (m->cfg.attention != MT_ATTN_MLA) return MT_OK;
    mt_absorbed *a = mt_sys_calloc(1, sizeof *a);
    if (!a) return mt_error(MT_ERR_NOMEM, "absorb: out of memory");
    a->layers = m->cfg.layers_dec;
    a->self_attn = mt_sys_calloc((size_t)a->layers, sizeof *a->self_attn);
    a->cross_attn = mt_sys_calloc((size_t)a->layers, sizeof *a->cross_attn);
    mt_context *ctx = NULL;
    mt_status st = (!a->self_attn || !a->cross_attn) ? mt_error(MT_ERR_NOMEM, "absorb: out of memory") : MT_OK;
    if (st == MT_OK) st = mt_context_init(&ctx, m->device, 0);
    if (st == MT_OK) ctx->grad_enabled = 0;
    for (int64_t l = 0; st == MT_OK && l < a->layers; l++) {
        st = absorb_one(ctx, &m->cfg, &m->dec[l].self_attn, &a->self_attn[l]);
        if (st == MT_OK) st = absorb_one(ctx, &m->cfg, &m->dec[l].cross_attn, &a->cross_attn[l]);
        if (st == MT_OK) st = mt_context_reset(ctx);
        /* an int8 model's absorbed projections are linear weights too */
        if (st == MT_OK && m->int8 && m->device == MT_DEVICE_CPU) {
            st = mt_weight_quantize(a->self_attn[l].aq);
            if (st == MT_OK) st = mt_weight_quantize(a->self_attn[l].ao);
            if (st == MT_OK) st = mt_weight_quantize(a->cross_attn[l].aq);
            if (st == MT_OK) st = mt_weight_quantize(a->cross_attn[l].ao);
        } else if (st == MT_OK && m->device == MT_DEVICE_CPU) { /* and f32 ones are packed like them */
            st = mt_weight_pack(a->self_attn[l].aq);
            if (st == MT_OK) st = mt_weight_pack(a->self_attn[l].ao);
            if (st == MT_OK) st = mt_weight_pack(a->cross_attn[l].aq);
            if (st == MT_OK) st = mt_weight_pack(a->cross_attn[l].ao);
        }
    }
    mt_context_free(ctx);
    if (st != MT_OK) {
        mt_absorbed_free(a);
        return st;
    }
    *out = a;
    return MT_OK;
}
