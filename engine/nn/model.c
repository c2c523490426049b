/*
 * model.c — the Transformer's parameters (creation, names, initialisation) and its forward pass
 * (see model.h for the equations). Every forward function is straight-line op code: a failing op
 * returns NULL, NULLs propagate, and the caller checks ctx->status once.
 */
#include "nn/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/io.h"

/* ---- parameters ---------------------------------------------------------------------------------- */

typedef struct param_builder {
    mt_transformer *m;
    int cap;
    mt_status st;
} param_builder;

static mt_tensor *add_param(param_builder *pb, mt_param_init init, int ndim, int64_t d0, int64_t d1,
                            const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static mt_tensor *add_param(param_builder *pb, mt_param_init init, int ndim, int64_t d0, int64_t d1,
                            const char *fmt, ...) {
    if (pb->st != MT_OK) return NULL;
    mt_transformer *m = pb->m;
    if (m->n_params == pb->cap) {
        int cap = pb->cap ? pb->cap * 2 : 64;
        mt_tensor **p = mt_sys_realloc(m->params, sizeof *p * (size_t)cap);
        if (!p) {
            pb->st = mt_error(MT_ERR_NOMEM, "model: out of memory for the parameter list");
            return NULL;
        }
        m->params = p;
        mt_param_init *in = mt_sys_realloc(m->init, sizeof *in * (size_t)cap);
        if (!in) {
            pb->st = mt_error(MT_ERR_NOMEM, "model: out of memory for the parameter list");
            return NULL;
        }
        m->init = in;
        pb->cap = cap;
    }
    char name[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int64_t shape[2] = {d0, d1};
    mt_tensor *t = NULL;
    pb->st = mt_tensor_new_persistent(m->device, MT_DTYPE_F32, ndim, shape, name, &t);
    if (pb->st != MT_OK) return NULL;
    t->flags |= MT_TENSOR_REQUIRES_GRAD;
    m->params[m->n_params] = t;
    m->init[m->n_params] = init;
    m->n_params++;
    return t;
}

static void add_norm(param_builder *pb, mt_norm_params *n, int64_t d, const char *prefix) {
    n->w = add_param(pb, MT_INIT_ONES, 1, d, 0, "%s.weight", prefix);
    n->b = add_param(pb, MT_INIT_ZEROS, 1, d, 0, "%s.bias", prefix);
}

static void add_attn(param_builder *pb, const mt_model_config *c, mt_attn_params *a, const char *prefix) {
    int64_t d = c->d_model, H = c->heads, dh = mt_model_d_head(c);
    if (c->attention == MT_ATTN_MLA) {
        a->w_dq = add_param(pb, MT_INIT_XAVIER, 2, c->d_cq, d, "%s.w_dq.weight", prefix);
        a->q_norm = add_param(pb, MT_INIT_ONES, 1, c->d_cq, 0, "%s.q_norm.weight", prefix);
        a->w_uq = add_param(pb, MT_INIT_XAVIER, 2, H * dh, c->d_cq, "%s.w_uq.weight", prefix);
        a->w_qr = add_param(pb, MT_INIT_XAVIER, 2, H * c->d_rope, c->d_cq, "%s.w_qr.weight", prefix);
        a->w_dkv = add_param(pb, MT_INIT_XAVIER, 2, c->d_c, d, "%s.w_dkv.weight", prefix);
        a->kv_norm = add_param(pb, MT_INIT_ONES, 1, c->d_c, 0, "%s.kv_norm.weight", prefix);
        a->w_uk = add_param(pb, MT_INIT_XAVIER, 2, H * dh, c->d_c, "%s.w_uk.weight", prefix);
        a->w_uv = add_param(pb, MT_INIT_XAVIER, 2, H * dh, c->d_c, "%s.w_uv.weight", prefix);
        a->w_kr = add_param(pb, MT_INIT_XAVIER, 2, c->d_rope, d, "%s.w_kr.weight", prefix);
    } else {
        a->w_q = add_param(pb, MT_INIT_XAVIER, 2, d, d, "%s.w_q.weight", prefix);
        a->w_k = add_param(pb, MT_INIT_XAVIER, 2, d, d, "%s.w_k.weight", prefix);
        a->w_v = add_param(pb, MT_INIT_XAVIER, 2, d, d, "%s.w_v.weight", prefix);
    }
    a->w_o = add_param(pb, MT_INIT_XAVIER, 2, d, H * dh, "%s.w_o.weight", prefix);
}

static void add_ffn(param_builder *pb, const mt_model_config *c, mt_ffn_params *f, const char *prefix) {
    f->w1 = add_param(pb, MT_INIT_XAVIER, 2, c->d_ff, c->d_model, "%s.fc1.weight", prefix);
    f->b1 = add_param(pb, MT_INIT_ZEROS, 1, c->d_ff, 0, "%s.fc1.bias", prefix);
    f->w2 = add_param(pb, MT_INIT_XAVIER, 2, c->d_model, c->d_ff, "%s.fc2.weight", prefix);
    f->b2 = add_param(pb, MT_INIT_ZEROS, 1, c->d_model, 0, "%s.fc2.bias", prefix);
}

mt_status mt_transformer_create(const mt_model_config *cfg, int device, mt_transformer **out) {
    if (!cfg || !out) return mt_error(MT_ERR_INVALID_ARG, "model: NULL argument");
    MT_TRY(mt_model_config_validate(cfg, 1));
    mt_transformer *m = mt_sys_calloc(1, sizeof *m);
    if (!m) return mt_error(MT_ERR_NOMEM, "model: out of memory");
    m->cfg = *cfg;
    m->device = device;
    m->enc = mt_sys_calloc((size_t)cfg->layers_enc, sizeof *m->enc);
    m->dec = mt_sys_calloc((size_t)cfg->layers_dec, sizeof *m->dec);
    if (!m->enc || !m->dec) {
        mt_transformer_free(m);
        return mt_error(MT_ERR_NOMEM, "model: out of memory");
    }
    param_builder pb = {.m = m};
    int64_t d = cfg->d_model;
    char p[64];
    m->embed = add_param(&pb, MT_INIT_XAVIER, 2, cfg->vocab_size, d, "embed.weight");
    for (int64_t l = 0; l < cfg->layers_enc; l++) {
        mt_layer_params *L = &m->enc[l];
        snprintf(p, sizeof p, "encoder.layers.%lld.norm1", (long long)l);
        add_norm(&pb, &L->norm1, d, p);
        snprintf(p, sizeof p, "encoder.layers.%lld.self_attn", (long long)l);
        add_attn(&pb, cfg, &L->self_attn, p);
        snprintf(p, sizeof p, "encoder.layers.%lld.norm2", (long long)l);
        add_norm(&pb, &L->norm2, d, p);
        snprintf(p, sizeof p, "encoder.layers.%lld.ffn", (long long)l);
        add_ffn(&pb, cfg, &L->ffn, p);
    }
    add_norm(&pb, &m->enc_norm, d, "encoder.norm");
    for (int64_t l = 0; l < cfg->layers_dec; l++) {
        mt_layer_params *L = &m->dec[l];
        snprintf(p, sizeof p, "decoder.layers.%lld.norm1", (long long)l);
        add_norm(&pb, &L->norm1, d, p);
        snprintf(p, sizeof p, "decoder.layers.%lld.self_attn", (long long)l);
        add_attn(&pb, cfg, &L->self_attn, p);
        snprintf(p, sizeof p, "decoder.layers.%lld.norm2", (long long)l);
        add_norm(&pb, &L->norm2, d, p);
        snprintf(p, sizeof p, "decoder.layers.%lld.cross_attn", (long long)l);
        add_attn(&pb, cfg, &L->cross_attn, p);
        snprintf(p, sizeof p, "decoder.layers.%lld.norm3", (long long)l);
        add_norm(&pb, &L->norm3, d, p);
        snprintf(p, sizeof p, "decoder.layers.%lld.ffn", (long long)l);
        add_ffn(&pb, cfg, &L->ffn, p);
    }
    add_norm(&pb, &m->dec_norm, d, "decoder.norm");
    if (!cfg->tie_embeddings) m->out_proj = add_param(&pb, MT_INIT_XAVIER, 2, cfg->vocab_size, d, "out_proj.weight");
    if (pb.st != MT_OK) {
        mt_transformer_free(m);
        return pb.st;
    }
    *out = m;
    return MT_OK;
}

void mt_transformer_free(mt_transformer *m) {
    if (!m) return;
    for (int i = 0; i < m->n_params; i++) mt_tensor_free(m->params[i]);
    mt_sys_free(m->params);
    mt_sys_free(m->init);
    mt_sys_free(m->enc);
    mt_sys_free(m->dec);
    mt_sys_free(m);
}

mt_status mt_transformer_init_weights(mt_transformer *m, mt_context *ctx) {
    for (int i = 0; i < m->n_params; i++) {
        mt_tensor *t = m->params[i];
        switch (m->init[i]) {
        case MT_INIT_XAVIER: {
            /* Glorot & Bengio: U(-a, a), a = sqrt(6 / (fan_in + fan_out)). */
            float a = sqrtf(6.0f / (float)(t->shape[0] + t->shape[1]));
            MT_TRY(mt_fill_uniform(ctx, t, -a, a));
            break;
        }
        case MT_INIT_ONES: MT_TRY(mt_fill(ctx, t, 1.0f)); break;
        case MT_INIT_ZEROS: MT_TRY(mt_fill(ctx, t, 0.0f)); break;
        }
    }
    return MT_OK;
}

mt_tensor *mt_transformer_param(const mt_transformer *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i]->name, name) == 0) return m->params[i];
    return NULL;
}

int64_t mt_transformer_numel(const mt_transformer *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) n += m->params[i]->numel;
    return n;
}

mt_status mt_transformer_zero_grad(mt_transformer *m, mt_context *ctx) {
    for (int i = 0; i < m->n_params; i++) {
        mt_tensor *g = m->params[i]->grad;
        if (g) MT_TRY(ctx->ex.backend->zero(&ctx->ex, g->data, mt_tensor_bytes(g)));
    }
    return MT_OK;
}

/* ---- forward ------------------------------------------------------------------------------------- */

/* The source mask's values on the host (step arena): MT_MASK_NEG at padding, else 0. */
static float *src_mask_host(mt_context *ctx, const mt_transformer *m, const int32_t *src, int64_t B, int64_t S) {
    float *host = mt_arena_alloc(&ctx->host, sizeof(float) * (size_t)(B * S), 16);
    if (!host) return mt_fail(ctx, MT_ERR_NOMEM, "src_mask: out of host memory");
    for (int64_t i = 0; i < B * S; i++) host[i] = src[i] == (int32_t)m->cfg.pad_id ? MT_MASK_NEG : 0.0f;
    return host;
}

mt_tensor *mt_transformer_src_mask(mt_context *ctx, const mt_transformer *m, const int32_t *src, int64_t B, int64_t S) {
    float *host = src_mask_host(ctx, m, src, B, S);
    return host ? mt_from_data(ctx, MT_DTYPE_F32, 4, (const int64_t[]){B, 1, 1, S}, host) : NULL;
}

mt_tensor *mt_layer_linear(mt_context *ctx, mt_tensor *x, mt_tensor *w, mt_tensor *b) {
    if (w && w->qw) return mt_linear_q8(ctx, x, w, b);
    return mt_linear(ctx, x, w, b);
}

/* (B, T, H*D) -> (B, H, T, D) */
static mt_tensor *split_heads(mt_context *ctx, mt_tensor *x, int64_t H) {
    if (!x) return NULL;
    int64_t B = x->shape[0], T = x->shape[1], D = x->shape[2] / H;
    static const int perm[4] = {0, 2, 1, 3};
    mt_tensor *y = mt_reshape(ctx, x, 4, (const int64_t[]){B, T, H, D});
    return T == 1 ? mt_reshape(ctx, y, 4, (const int64_t[]){B, H, 1, D}) : mt_permute(ctx, y, perm);
}

/* (B, H, T, D) -> (B, T, H*D) */
static mt_tensor *merge_heads(mt_context *ctx, mt_tensor *x) {
    if (!x) return NULL;
    int64_t B = x->shape[0], H = x->shape[1], T = x->shape[2], D = x->shape[3];
    static const int perm[4] = {0, 2, 1, 3};
    if (T == 1) return mt_reshape(ctx, x, 3, (const int64_t[]){B, 1, H * D});
    return mt_reshape(ctx, mt_permute(ctx, x, perm), 3, (const int64_t[]){B, T, H * D});
}

/* x (..., T, D) at positions pos0.. rotated by RoPE, or x itself when rope is 0 (a cross-attention of a
 * model with cross_rope false). */
static mt_tensor *rotate(mt_context *ctx, const mt_model_config *c, mt_tensor *x, int64_t pos0, int rope) {
    return rope ? mt_rope(ctx, x, pos0, (float)c->rope_base) : x;
}

/* MLA latents of key rows m (B,S,d) at positions pos0..: c_kv (B,S,dc) and the rotary key (B,1,S,dr). */
static void mla_latents(mt_context *ctx, const mt_model_config *c, const mt_attn_params *a, mt_tensor *m, int64_t pos0,
                        int rope, mt_tensor **ckv, mt_tensor **kr) {
    int64_t B = m ? m->shape[0] : 1, S = m ? m->shape[1] : 1;
    *ckv = mt_rms_norm(ctx, mt_layer_linear(ctx, m, a->w_dkv, NULL), a->kv_norm, MT_LATENT_NORM_EPS);
    *kr = rotate(ctx, c, mt_reshape(ctx, mt_layer_linear(ctx, m, a->w_kr, NULL), 4, (const int64_t[]){B, 1, S, c->d_rope}),
                 pos0, rope);
}

void mt_attention_kv(mt_context *ctx, const mt_model_config *c, const mt_attn_params *a, mt_tensor *m, int64_t pos0,
                     int rope, mt_tensor **k, mt_tensor **v) {
    *k = *v = NULL;
    if (!m) return;
    int64_t B = m->shape[0], S = m->shape[1], H = c->heads;
    if (c->attention == MT_ATTN_MLA) {
        mt_tensor *ckv, *kr;
        mla_latents(ctx, c, a, m, pos0, rope, &ckv, &kr);
        mt_tensor *parts[2] = {mt_reshape(ctx, ckv, 4, (const int64_t[]){B, 1, S, c->d_c}), kr};
        *k = mt_concat(ctx, parts, 2, 3);
    } else {
        *k = rotate(ctx, c, split_heads(ctx, mt_layer_linear(ctx, m, a->w_k, NULL), H), pos0, rope);
        *v = split_heads(ctx, mt_layer_linear(ctx, m, a->w_v, NULL), H);
    }
}

/* MLA attention of queries h (B,T,d) at positions pos0.. to the keys of mem (B,S,d) or, when kv is
 * given, to latent rows kv (B,1,S,dc+dr) (mt_attention_kv's form, which needs ab), or with rows to a
 * cache of them read through rows (mt_attention_paged). With ab the
 * queries move to latent space ([aq c_q, q_r]) and attend to the latents with one key/value head;
 * without it the latents are expanded per head by W_uk and W_uv (training). */
static mt_tensor *mla_block(mt_context *ctx, const mt_model_config *c, const mt_attn_params *a,
                            const mt_absorbed_attn *ab, mt_tensor *h, mt_tensor *mem, mt_tensor *kv, mt_tensor *rows,
                            mt_tensor *mask, int causal, int64_t pos0, int rope) {
    if (!h || (!mem && !kv)) return NULL;
    int64_t H = c->heads, dh = mt_model_d_head(c), dr = c->d_rope, dc = c->d_c, B = h->shape[0];
    float scale = 1.0f / sqrtf((float)(dh + dr));
    mt_tensor *cq = mt_rms_norm(ctx, mt_layer_linear(ctx, h, a->w_dq, NULL), a->q_norm, MT_LATENT_NORM_EPS);
    mt_tensor *qr = rotate(ctx, c, split_heads(ctx, mt_layer_linear(ctx, cq, a->w_qr, NULL), H), pos0,
                           rope);                                                 /* (B,H,T,dr) */
    if (ab) {
        mt_tensor *ckv = NULL, *kr = NULL;
        if (!kv) {
            mla_latents(ctx, c, a, mem, 0, rope, &ckv, &kr);
            int64_t S = mem->shape[1];
            mt_tensor *parts[2] = {mt_reshape(ctx, ckv, 4, (const int64_t[]){B, 1, S, dc}), kr};
            kv = mt_concat(ctx, parts, 2, 3);                                      /* (B,1,S,dc+dr) */
        }
        mt_tensor *qparts[2] = {mt_layer_linear(ctx, cq, ab->aq, NULL), qr};
        mt_tensor *q = mt_concat_heads(ctx, qparts, 2, H);                        /* (B,H,T,dc+dr) */
        mt_tensor *o = rows ? mt_attention_paged(ctx, q, kv, kv, rows, mask, causal, scale)
                            : mt_attention(ctx, q, kv, kv, mask, causal, scale); /* (B,H,T,dc+dr) */
        return mt_layer_linear(ctx, merge_heads(ctx, o), ab->ao, NULL);
    }
    if (kv) return mt_fail(ctx, MT_ERR_INVALID_ARG, "mla attention: cached latents need the absorbed projections");
    mt_tensor *ckv, *kr;
    mla_latents(ctx, c, a, mem, 0, rope, &ckv, &kr);
    mt_tensor *qparts[2] = {mt_layer_linear(ctx, cq, a->w_uq, NULL), qr};
    mt_tensor *q = mt_concat_heads(ctx, qparts, 2, H);                            /* (B,H,T,dh+dr) */
    mt_tensor *kn = mt_layer_linear(ctx, ckv, a->w_uk, NULL);                    /* (B,S,H*dh) */
    mt_tensor *v = split_heads(ctx, mt_layer_linear(ctx, ckv, a->w_uv, NULL), H);  /* (B,H,S,dh) */
    /* Each head's key: its own part and the shared rotary key kr (B,1,S,dr), read by stride (the
     * backward sums the heads' gradients of kr). */
    mt_tensor *kparts[2] = {kn, kr};
    mt_tensor *k = mt_concat_heads(ctx, kparts, 2, H);                            /* (B,H,S,dh+dr) */
    mt_tensor *o = mt_attention(ctx, q, k, v, mask, causal, scale);
    return mt_layer_linear(ctx, merge_heads(ctx, o), a->w_o, NULL);
}

/* MHA attention of h (B,T,d) at positions pos0.. to the keys of mem (B,S,d), or to cached rows k, v
 * (mt_attention_kv's form; with rows a cache of them read through rows). */
static mt_tensor *mha_block(mt_context *ctx, const mt_model_config *c, const mt_attn_params *a, mt_tensor *h,
                            mt_tensor *mem, mt_tensor *k, mt_tensor *v, mt_tensor *rows, mt_tensor *mask, int causal,
                            int64_t pos0, int rope) {
    if (!h || (!mem && !k)) return NULL;
    int64_t dh = mt_model_d_head(c);
    mt_tensor *q = rotate(ctx, c, split_heads(ctx, mt_layer_linear(ctx, h, a->w_q, NULL), c->heads), pos0, rope);
    if (!k) mt_attention_kv(ctx, c, a, mem, 0, rope, &k, &v);
    float scale = 1.0f / sqrtf((float)dh);
    mt_tensor *o = rows ? mt_attention_paged(ctx, q, k, v, rows, mask, causal, scale)
                        : mt_attention(ctx, q, k, v, mask, causal, scale);
    return mt_layer_linear(ctx, merge_heads(ctx, o), a->w_o, NULL);
}

/* One attention of h at positions pos0.. to mem (or to cached rows k, v; with rows (B, Tk) a cache
 * read through them); rope 0: no rotary positions. */
static mt_tensor *attention_block(mt_context *ctx, const mt_model_config *c, const mt_attn_params *a,
                                  const mt_absorbed_attn *ab, mt_tensor *h, mt_tensor *mem, mt_tensor *k, mt_tensor *v,
                                  mt_tensor *rows, mt_tensor *mask, int causal, int64_t pos0, int rope) {
    return c->attention == MT_ATTN_MLA ? mla_block(ctx, c, a, ab, h, mem, k, rows, mask, causal, pos0, rope)
                                       : mha_block(ctx, c, a, h, mem, k, v, rows, mask, causal, pos0, rope);
}

mt_tensor *mt_ffn_block(mt_context *ctx, const mt_model_config *cfg, const mt_ffn_params *f, mt_tensor *h) {
    mt_unary_op act = cfg->activation == MT_ACT_GELU ? MT_UNARY_GELU : MT_UNARY_RELU;
    mt_tensor *u = f->w1->qw ? mt_unary(ctx, act, mt_linear_q8(ctx, h, f->w1, f->b1))
                             : mt_linear_act(ctx, h, f->w1, f->b1, act); /* ReLU in the GEMM's epilogue */
    return mt_layer_linear(ctx, u, f->w2, f->b2);
}

static mt_tensor *embed(mt_context *ctx, const mt_transformer *m, mt_tensor *ids, int training) {
    mt_tensor *x = mt_embedding_scaled(ctx, m->embed, ids, sqrtf((float)m->cfg.d_model));
    return mt_dropout(ctx, x, (float)m->cfg.dropout, training);
}

static mt_tensor *norm(mt_context *ctx, const mt_model_config *c, const mt_norm_params *n, mt_tensor *x) {
    return mt_layer_norm(ctx, x, n->w, n->b, (float)c->norm_eps);
}

mt_tensor *mt_transformer_encode(mt_context *ctx, const mt_transformer *m, mt_tensor *src, mt_tensor *src_mask,
                                 int training) {
    const mt_model_config *c = &m->cfg;
    float p = (float)c->dropout;
    mt_tensor *x = embed(ctx, m, src, training);
    for (int64_t l = 0; l < c->layers_enc; l++) {
        const mt_layer_params *L = &m->enc[l];
        mt_arena_mark mark = mt_arena_get_mark(&ctx->data);
        mt_tensor *h = norm(ctx, c, &L->norm1, x);
        mt_tensor *a = attention_block(ctx, c, &L->self_attn, NULL, h, h, NULL, NULL, NULL, src_mask, 0, 0, 1);
        x = mt_add_dropout(ctx, x, a, p, training);
        h = norm(ctx, c, &L->norm2, x);
        x = mt_add_dropout(ctx, x, mt_ffn_block(ctx, c, &L->ffn, h), p, training);
        x = mt_context_keep(ctx, mark, x); /* inference: the layer's temporaries go */
    }
    return norm(ctx, c, &m->enc_norm, x);
}

mt_tensor *mt_decoder_layer(mt_context *ctx, const mt_transformer *m, int64_t l, mt_tensor *y, mt_tensor *memory,
                            mt_tensor *src_mask, int64_t pos0, const mt_absorbed *abs, const mt_decoder_cache *cache,
                            int training) {
    const mt_model_config *c = &m->cfg;
    const mt_layer_params *L = &m->dec[l];
    float p = (float)c->dropout;
    if (!y) return NULL;
    int64_t T = y->shape[1];
    if (pos0 > 0 && (!cache || T != 1))
        return mt_fail(ctx, MT_ERR_INVALID_ARG, "decoder layer %lld: position %lld > 0 needs a cache and one position, "
                       "not %lld", (long long)l, (long long)pos0, (long long)T);
    const mt_absorbed_attn *sab = abs ? &abs->self_attn[l] : NULL, *xab = abs ? &abs->cross_attn[l] : NULL;
    mt_tensor *h = norm(ctx, c, &L->norm1, y), *a;
    if (cache) {
        mt_tensor *k, *v;
        mt_attention_kv(ctx, c, &L->self_attn, h, pos0, 1, &k, &v);
        k = cache->append(cache->user, l, 0, k, pos0);
        if (v) v = cache->append(cache->user, l, 1, v, pos0);
        a = attention_block(ctx, c, &L->self_attn, sab, h, NULL, k, v, cache->rows, NULL, T > 1, pos0, 1);
    } else {
        a = attention_block(ctx, c, &L->self_attn, sab, h, h, NULL, NULL, NULL, NULL, 1, 0, 1);
    }
    y = mt_add_dropout(ctx, y, a, p, training);
    h = norm(ctx, c, &L->norm2, y);
    if (cache) {
        mt_tensor *xv = cache->cross_v ? cache->cross_v[l] : NULL;
        a = attention_block(ctx, c, &L->cross_attn, xab, h, NULL, cache->cross_k[l], xv, cache->cross_rows, src_mask,
                            0, pos0, c->cross_rope);
    } else {
        a = attention_block(ctx, c, &L->cross_attn, xab, h, memory, NULL, NULL, NULL, src_mask, 0, pos0,
                            c->cross_rope);
    }
    y = mt_add_dropout(ctx, y, a, p, training);
    h = norm(ctx, c, &L->norm3, y);
    return mt_add_dropout(ctx, y, mt_ffn_block(ctx, c, &L->ffn, h), p, training);
}

mt_tensor *mt_transformer_decode(mt_context *ctx, const mt_transformer *m, mt_tensor *tgt, int64_t pos0,
                                 mt_tensor *memory, mt_tensor *src_mask, const mt_absorbed *abs,
                                 const mt_decoder_cache *cache, int training) {
    mt_tensor *y = embed(ctx, m, tgt, training);
    for (int64_t l = 0; l < m->cfg.layers_dec; l++)
        y = mt_decoder_layer(ctx, m, l, y, memory, src_mask, pos0, abs, cache, training);
    return norm(ctx, &m->cfg, &m->dec_norm, y);
}

mt_tensor *mt_transformer_logits(mt_context *ctx, const mt_transformer *m, mt_tensor *h) {
    return mt_layer_linear(ctx, h, mt_transformer_out_weight(m), NULL);
}

mt_tensor *mt_transformer_loss(mt_context *ctx, const mt_transformer *m, const mt_seq_batch *b, float label_smoothing,
                               int training, mt_tensor *dloss, mt_tensor **all_logits) {
    int64_t B = b->B, S = b->S, T = b->T, d = m->cfg.d_model;
    int32_t pad = (int32_t)m->cfg.pad_id;
    float *mask_host = src_mask_host(ctx, m, b->src, B, S);
    if (!mask_host) return NULL;
    /* The batch goes to the device in one copy: ids, mask, and the targets (with all_logits every
     * position's; else the rows whose target is a token, gathered before the classifier, and theirs). */
    mt_upload up[5] = {{MT_DTYPE_I32, 2, {B, S}, b->src, NULL},
                       {MT_DTYPE_I32, 2, {B, T}, b->tgt_in, NULL},
                       {MT_DTYPE_F32, 4, {B, 1, 1, S}, mask_host, NULL},
                       {MT_DTYPE_I32, 1, {B * T}, b->tgt_out, NULL}};
    int n_up = 4;
    if (!all_logits) {
        int32_t *rows = mt_arena_alloc(&ctx->host, sizeof(int32_t) * (size_t)(B * T), 16);
        int32_t *tg = mt_arena_alloc(&ctx->host, sizeof(int32_t) * (size_t)(B * T), 16);
        if (!rows || !tg) return mt_fail(ctx, MT_ERR_NOMEM, "loss: out of host memory");
        int64_t n = 0;
        for (int64_t i = 0; i < B * T; i++)
            if (b->tgt_out[i] != pad) {
                rows[n] = (int32_t)i;
                tg[n++] = b->tgt_out[i];
            }
        if (n == 0) return mt_fail(ctx, MT_ERR_INVALID_ARG, "loss: the batch has no target token");
        up[3] = (mt_upload){MT_DTYPE_I32, 1, {n}, tg, NULL};
        up[4] = (mt_upload){MT_DTYPE_I32, 1, {n}, rows, NULL};
        n_up = 5;
    }
    if (!mt_from_data_packed(ctx, up, n_up)) return NULL;
    mt_tensor *src = up[0].t, *tgt = up[1].t, *mask = up[2].t, *targets = up[3].t;
    mt_tensor *mem = mt_transformer_encode(ctx, m, src, mask, training);
    mt_tensor *h = mt_transformer_decode(ctx, m, tgt, 0, mem, mask, NULL, NULL, training);
    if (all_logits) {
        mt_tensor *logits = mt_transformer_logits(ctx, m, h);
        *all_logits = logits;
        return mt_cross_entropy(ctx, mt_reshape(ctx, logits, 2, (const int64_t[]){B * T, m->cfg.vocab_size}), targets,
                                label_smoothing, pad);
    }
    /* Project only the rows whose target is a token: gather them (the gather's backward scatters). */
    mt_tensor *hs = mt_embedding(ctx, mt_reshape(ctx, h, 2, (const int64_t[]){B * T, d}), up[4].t); /* (n, d) */
    mt_tensor *logits = mt_transformer_logits(ctx, m, hs);
    return dloss ? mt_cross_entropy_fused(ctx, logits, targets, label_smoothing, pad, dloss)
                 : mt_cross_entropy(ctx, logits, targets, label_smoothing, pad);
}

mt_status mt_transformer_weights_sha256(const mt_transformer *m, mt_context *ctx, char hex[65]) {
    mt_sha256_ctx *h;
    MT_TRY(mt_sha256_init(&h));
    mt_status st = MT_OK;
    for (int i = 0; st == MT_OK && i < m->n_params; i++) {
        const mt_tensor *p = m->params[i];
        size_t bytes = mt_tensor_bytes(p);
        void *buf = mt_sys_malloc(bytes ? bytes : 1);
        if (!buf) st = mt_error(MT_ERR_NOMEM, "weights sha256: out of memory");
        if (st == MT_OK) st = mt_copy_to_host(ctx, p, buf, bytes);
        if (st == MT_OK) st = mt_sha256_update(h, buf, bytes);
        mt_sys_free(buf);
    }
    uint8_t d[MT_SHA256_LEN];
    if (st == MT_OK) st = mt_sha256_final(h, d); /* frees h */
    else mt_sha256_free(h);
    if (st == MT_OK) mt_sha256_hex(d, hex);
    return st;
}
