/*
 * attention.c — fused scaled-dot-product attention (see mt_attn_desc in core/backend.h).
 */
#include "ops/ops_internal.h"

/* Forward FLOPs: scores q k^T (2 D per query-key pair) and the weighted sum of values (2 Dv). The
 * backward does twice that (dq, dk from the score gradients; dv, and the score gradients from dout). */
static uint64_t attention_flops(const mt_attn_desc *ad) {
    return 2 * (uint64_t)ad->B * (uint64_t)ad->H * (uint64_t)ad->Tq * (uint64_t)ad->Tk * (uint64_t)(ad->D + ad->Dv);
}

static mt_status attention_backward(mt_context *ctx, mt_node *n) {
    mt_tensor *q = n->in[0], *k = n->in[1], *v = n->in[2], *g;
    float *dq = NULL, *dk = NULL, *dv = NULL;
    if (mt_tensor_requires_grad(q)) {
        if (!(g = mt_grad_of(ctx, q))) return ctx->status;
        dq = mt_f32(g);
    }
    if (mt_tensor_requires_grad(k)) {
        if (!(g = mt_grad_of(ctx, k))) return ctx->status;
        dk = mt_f32(g);
    }
    if (mt_tensor_requires_grad(v)) {
        if (!(g = mt_grad_of(ctx, v))) return ctx->status;
        dv = mt_f32(g);
    }
    ctx->ex.flops += 2 * attention_flops((const mt_attn_desc *)n->p);
    return MT_BE(ctx)->attention_bwd(&ctx->ex, dq, dk, dv, mt_f32(n->out->grad), mt_f32(n->out), mt_f32(n->saved[0]),
                                     mt_f32(q), mt_f32(k), mt_f32(v), (const mt_attn_desc *)n->p);
}

/* Both ops: rows NULL (contiguous keys) or the paged form's table. */
static mt_tensor *attention(mt_context *ctx, mt_tensor *q, mt_tensor *k, mt_tensor *v, mt_tensor *rows,
                            mt_tensor *mask, int causal, float scale) {
    if (!mt_check_f32(ctx, "attention", q) || !mt_check_f32(ctx, "attention", k) || !mt_check_f32(ctx, "attention", v))
        return NULL;
    if (mask && !mt_check_f32(ctx, "attention", mask)) return NULL;
    char sq[MT_SHAPE_STR], sk[MT_SHAPE_STR], sv[MT_SHAPE_STR];
    mt_shape_str(sq, q->shape, q->ndim);
    mt_shape_str(sk, k->shape, k->ndim);
    mt_shape_str(sv, v->shape, v->ndim);
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4)
        return mt_fail(ctx, MT_ERR_SHAPE, "attention: q %s, k %s, v %s must be 4-D (B, H, T, D)", sq, sk, sv);
    mt_attn_desc ad = {.B = q->shape[0], .H = q->shape[1], .Hk = k->shape[1], .Tq = q->shape[2], .Tk = k->shape[2],
                       .D = q->shape[3], .Dv = v->shape[3], .scale = scale, .causal = causal != 0};
    if (rows) {
        char sr[MT_SHAPE_STR];
        mt_shape_str(sr, rows->shape, rows->ndim);
        mt_tensor *in[3] = {q, k, v};
        if (mt_needs_grad(ctx, in, 3))
            return mt_fail(ctx, MT_ERR_UNSUPPORTED, "attention (paged): inference only, no gradient");
        if (rows->dtype != MT_DTYPE_I32 || rows->device != q->device || rows->ndim != 2 || rows->shape[0] != ad.B ||
            rows->shape[1] < 1 || rows->shape[1] > k->shape[2] || v->shape[0] != k->shape[0] ||
            v->shape[2] != k->shape[2] || k->shape[3] != ad.D || v->shape[1] != ad.Hk || ad.H % ad.Hk != 0)
            return mt_fail(ctx, MT_ERR_SHAPE,
                           "attention (paged): q %s, k %s, v %s, rows %s do not fit (B, H, Tq, D), (P, Hk, C, D), "
                           "(P, Hk, C, Dv), I32 (B, Tk <= C) with Hk dividing H",
                           sq, sk, sv, sr);
        if (rows->device == MT_DEVICE_CPU)
            for (int64_t i = 0; i < rows->numel; i++)
                if (mt_i32(rows)[i] < 0 || mt_i32(rows)[i] >= k->shape[0])
                    return mt_fail(ctx, MT_ERR_INVALID_ARG, "attention (paged): rows[%lld] = %d is not a block of k %s",
                                   (long long)i, (int)mt_i32(rows)[i], sk);
        ad.kv_cap = k->shape[2];
        ad.Tk = rows->shape[1];
        ad.kv_rows = mt_i32(rows);
    } else if (k->shape[0] != ad.B || v->shape[0] != ad.B || k->shape[3] != ad.D || v->shape[1] != ad.Hk ||
               v->shape[2] != ad.Tk || ad.H % ad.Hk != 0) {
        return mt_fail(ctx, MT_ERR_SHAPE,
                       "attention: q %s, k %s, v %s do not fit (B, H, Tq, D), (B, Hk, Tk, D), (B, Hk, Tk, Dv) with Hk "
                       "dividing H",
                       sq, sk, sv);
    }
    if (mask) {
        char sm[MT_SHAPE_STR];
        int64_t want[4] = {ad.B, ad.H, ad.Tq, ad.Tk}, ms[4] = {1, 1, 1, 1}, str[4];
        int ok = mask->ndim <= 4 && mask->ndim >= 1;
        for (int d = 0; ok && d < mask->ndim; d++) ms[4 - mask->ndim + d] = mask->shape[d];
        for (int d = 0; ok && d < 4; d++) ok = ms[d] == want[d] || (ms[d] == 1 && d < 3);
        if (!ok)
            return mt_fail(ctx, MT_ERR_SHAPE, "attention: mask %s does not broadcast to (B, H, Tq, Tk) = (%lld,%lld,%lld,%lld)"
                           " with its last dim Tk", mt_shape_str(sm, mask->shape, mask->ndim), (long long)ad.B,
                           (long long)ad.H, (long long)ad.Tq, (long long)ad.Tk);
        mt_contig_strides(ms, 4, str);
        ad.mask = mt_f32(mask);
        ad.mask_sb = ms[0] == 1 ? 0 : str[0];
        ad.mask_sh = ms[1] == 1 ? 0 : str[1];
        ad.mask_si = ms[2] == 1 ? 0 : str[2];
    }
    int64_t oshape[4] = {ad.B, ad.H, ad.Tq, ad.Dv}, lshape[3] = {ad.B, ad.H, ad.Tq};
    mt_tensor *y = mt_new(ctx, MT_DTYPE_F32, 4, oshape), *lse = mt_new(ctx, MT_DTYPE_F32, 3, lshape);
    if (!y || !lse) return NULL;
    ctx->ex.flops += attention_flops(&ad);
    MT_KERNEL(ctx, MT_BE(ctx)->attention_fwd(&ctx->ex, mt_f32(y), mt_f32(lse), mt_f32(q), mt_f32(k), mt_f32(v), &ad));
    mt_tensor *in[3] = {q, k, v};
    if (mt_needs_grad(ctx, in, 3)) {
        mt_node *n = mt_tape_push(ctx, "attention", attention_backward, y);
        if (!n) return NULL;
        n->in[0] = q;
        n->in[1] = k;
        n->in[2] = v;
        n->in[3] = mask;
        n->saved[0] = lse;
        if (!(n->p = mt_ctx_keep(ctx, &ad, sizeof ad))) return NULL;
    }
    return y;
}

mt_tensor *mt_attention(mt_context *ctx, mt_tensor *q, mt_tensor *k, mt_tensor *v, mt_tensor *mask, int causal,
                        float scale) {
    return attention(ctx, q, k, v, NULL, mask, causal, scale);
}

mt_tensor *mt_attention_paged(mt_context *ctx, mt_tensor *q, mt_tensor *k, mt_tensor *v, mt_tensor *rows,
                              mt_tensor *mask, int causal, float scale) {
    if (!rows) return mt_fail(ctx, MT_ERR_INVALID_ARG, "attention (paged): rows is NULL");
    return attention(ctx, q, k, v, rows, mask, causal, scale);
}
