/*
 * decode.c — greedy and beam-search decoding (see decode.h): the absorbed projections, the per-step
 * functions (cached latent attention, or the whole prefix again), cache buffers that grow without
 * copying (ping-pong pairs), and the host-side search bookkeeping.
 *
 * Device-agnostic: the caches live in persistent device buffers; appending a token's latents,
 * dropping finished rows and reordering beams are strided copies and row gathers of the backend.
 */
#include "decode/decode.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

/* At most this many rows (sentences x beam) are decoded together; longer inputs are chunked. */
#define MAX_ROWS 128

/* ---- absorbed projections ------------------------------------------------------------------------ */

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
    if (!a) return mt_error(MT_ERR_NOMEM, "decode: out of memory");
    a->layers = m->cfg.layers_dec;
    a->self_attn = mt_sys_calloc((size_t)a->layers, sizeof *a->self_attn);
    a->cross_attn = mt_sys_calloc((size_t)a->layers, sizeof *a->cross_attn);
    mt_context *ctx = NULL;
    mt_status st = (!a->self_attn || !a->cross_attn) ? mt_error(MT_ERR_NOMEM, "decode: out of memory") : MT_OK;
    if (st == MT_OK) st = mt_context_init(&ctx, m->device, 0);
    if (st == MT_OK) ctx->grad_enabled = 0;
    for (int64_t l = 0; st == MT_OK && l < a->layers; l++) {
        st = absorb_one(ctx, &m->cfg, &m->dec[l].self_attn, &a->self_attn[l]);
        if (st == MT_OK) st = absorb_one(ctx, &m->cfg, &m->dec[l].cross_attn, &a->cross_attn[l]);
        if (st == MT_OK) st = mt_context_reset(ctx);
    }
    mt_context_free(ctx);
    if (st != MT_OK) {
        mt_absorbed_free(a);
        return st;
    }
    *out = a;
    return MT_OK;
}

/* ---- workspace and device buffers ---------------------------------------------------------------- */

typedef struct dbuf {
    mt_tensor *t;   /* persistent 1-D storage of cap elements (4 bytes each) */
    int64_t cap;
    mt_tensor view; /* a persistent view of t reshaped for the op at hand */
} dbuf;

/* Buffers per decoder layer: self-attention keys (and values, MHA) as ping-pong pairs, the encoder
 * side's keys (and values), each with a spare for gathers. */
enum { B_SK0, B_SK1, B_SV0, B_SV1, B_XK0, B_XK1, B_XV0, B_XV1, B_PER_LAYER };
/* Global buffers after the layers' ones. */
enum { G_MASK0, G_MASK1, G_MEM0, G_MEM1, G_COUNT };

struct mt_decode_ws {
    mt_context *ctx;
    int device;
    dbuf *bufs;
    int n_bufs;
    float *host;        /* host scratch (beam log-probabilities) */
    size_t host_cap;
};

mt_status mt_decode_ws_create(int device, int n_threads, mt_decode_ws **out) {
    mt_decode_ws *ws = mt_sys_calloc(1, sizeof *ws);
    if (!ws) return mt_error(MT_ERR_NOMEM, "decode: out of memory");
    ws->device = device;
    mt_status st = mt_context_init(&ws->ctx, device, n_threads);
    if (st != MT_OK) {
        mt_sys_free(ws);
        return st;
    }
    ws->ctx->grad_enabled = 0;
    *out = ws;
    return MT_OK;
}

void mt_decode_ws_free(mt_decode_ws *ws) {
    if (!ws) return;
    for (int i = 0; i < ws->n_bufs; i++) mt_tensor_free(ws->bufs[i].t);
    mt_sys_free(ws->bufs);
    mt_sys_free(ws->host);
    mt_context_free(ws->ctx);
    mt_sys_free(ws);
}

mt_context *mt_decode_ws_context(mt_decode_ws *ws) { return ws->ctx; }

static mt_status ws_bufs(mt_decode_ws *ws, int n) {
    if (n <= ws->n_bufs) return MT_OK;
    dbuf *b = mt_sys_realloc(ws->bufs, sizeof *b * (size_t)n);
    if (!b) return mt_error(MT_ERR_NOMEM, "decode: out of memory");
    memset(b + ws->n_bufs, 0, sizeof *b * (size_t)(n - ws->n_bufs));
    ws->bufs = b;
    ws->n_bufs = n;
    return MT_OK;
}

/* Makes b hold at least n elements; the content is lost when it grows. */
static mt_status dbuf_reserve(mt_decode_ws *ws, dbuf *b, int64_t n) {
    if (b->cap >= n) return MT_OK;
    mt_tensor_free(b->t);
    b->t = NULL;
    b->cap = 0;
    int64_t cap = n + n / 4 + 1024;
    MT_TRY(mt_tensor_new_persistent(ws->device, MT_DTYPE_F32, 1, &cap, "decode cache", &b->t));
    b->cap = cap;
    return MT_OK;
}

static mt_tensor *dbuf_view(dbuf *b, mt_dtype dt, int ndim, const int64_t *shape) {
    mt_tensor *v = &b->view;
    *v = *b->t;
    v->flags = MT_TENSOR_PERSISTENT | MT_TENSOR_VIEW;
    v->grad = NULL;
    v->dtype = dt;
    v->ndim = ndim;
    v->numel = 1;
    for (int d = 0; d < ndim; d++) {
        v->shape[d] = shape[d];
        v->numel *= shape[d];
    }
    MT_ASSERT(v->numel <= b->cap);
    return v;
}

/* Copies x (arena) into buffer b and returns b's view of x's shape. */
static mt_tensor *stash(mt_decode_ws *ws, dbuf *b, mt_tensor *x) {
    mt_context *ctx = ws->ctx;
    if (!x) return NULL;
    mt_status st = dbuf_reserve(ws, b, x->numel);
    if (st == MT_OK) st = mt_copy_tensor(ctx, dbuf_view(b, x->dtype, x->ndim, x->shape), x);
    if (st != MT_OK) return mt_fail_status(ctx, st);
    return dbuf_view(b, x->dtype, x->ndim, x->shape);
}

/* Rows of the current content of pair (a, b) (cur selects which holds it, shape rows x per_row)
 * gathered by ids into the other one, which becomes current. */
static mt_status gather_pair(mt_decode_ws *ws, dbuf *pair, int *cur, int64_t per_row, mt_tensor *ids) {
    mt_context *ctx = ws->ctx;
    dbuf *src = &pair[*cur], *dst = &pair[!*cur];
    int64_t n = ids->numel;
    MT_TRY(dbuf_reserve(ws, dst, n * per_row));
    MT_TRY(ctx->ex.backend->embedding_fwd(&ctx->ex, mt_f32(dst->t), mt_f32(src->t), mt_i32(ids), n, per_row));
    *cur = !*cur;
    return MT_OK;
}

/* Appends row (R, Hk, 1, D) to the cache held by pair[*cur] as (R, Hk, t, D); returns the new
 * (R, Hk, t+1, D) view (in the other buffer, which becomes current). */
static mt_tensor *cache_append(mt_decode_ws *ws, dbuf *pair, int *cur, mt_tensor *row, int64_t t) {
    mt_context *ctx = ws->ctx;
    if (!row) return NULL;
    int64_t R = row->shape[0], Hk = row->shape[1], D = row->shape[3];
    dbuf *src = &pair[*cur], *dst = &pair[!*cur];
    mt_status st = dbuf_reserve(ws, dst, R * Hk * (t + 1) * D);
    const mt_backend *be = ctx->ex.backend;
    /* Each (row, head) keeps its t * D floats contiguous: one run per row, then the new D floats. */
    if (st == MT_OK && t > 0) {
        int64_t shape[2] = {R * Hk, t * D}, os[2] = {(t + 1) * D, 1}, is[2] = {t * D, 1};
        st = be->copy_strided(&ctx->ex, dst->t->data, os, src->t->data, is, shape, 2, 4, 0);
    }
    if (st == MT_OK) {
        int64_t shape[2] = {R * Hk, D}, os[2] = {(t + 1) * D, 1}, is[2] = {D, 1};
        st = be->copy_strided(&ctx->ex, mt_f32(dst->t) + t * D, os, row->data, is, shape, 2, 4, 0);
    }
    if (st != MT_OK) return mt_fail_status(ctx, st);
    *cur = !*cur;
    return dbuf_view(dst, MT_DTYPE_F32, 4, (const int64_t[]){R, Hk, t + 1, D});
}

/* ---- the decoding state of one chunk ------------------------------------------------------------- */

typedef struct dstate {
    mt_decode_ws *ws;
    const mt_transformer *m;
    const mt_absorbed *abs;
    int cached;
    int64_t R;          /* rows now */
    int64_t S;          /* source length (padded, [EOS] included) */
    int *cur;           /* (layers) ping-pong selector of the self caches */
    int xcur;           /* selector of the encoder-side buffers (all layers alike) */
    int32_t *prefix;    /* uncached: (R, Tcap) tokens fed so far, [SOS] first */
    int64_t tcap;
} dstate;

static dbuf *lbuf(dstate *s, int64_t l, int which) { return &s->ws->bufs[l * B_PER_LAYER + which]; }
static dbuf *gbuf(dstate *s, int which) { return &s->ws->bufs[s->m->cfg.layers_dec * B_PER_LAYER + which]; }

static mt_tensor *emb_tokens(mt_context *ctx, const mt_transformer *m, mt_tensor *ids) {
    return mt_mul_scalar(ctx, mt_embedding(ctx, m->embed, ids), sqrtf((float)m->cfg.d_model));
}

static mt_tensor *lnorm(mt_context *ctx, const mt_transformer *m, const mt_norm_params *n, mt_tensor *x) {
    return mt_layer_norm(ctx, x, n->w, n->b, (float)m->cfg.norm_eps);
}

/* The latent query [aq c_q, RoPE(W_qr c_q)] of h (R,1,d) at position t: (R, H, 1, dc+dr). */
static mt_tensor *mla_query(mt_context *ctx, const mt_model_config *c, const mt_attn_params *a,
                            const mt_absorbed_attn *ab, mt_tensor *h, int64_t t) {
    int64_t R = h ? h->shape[0] : 1, H = c->heads;
    mt_tensor *cq = mt_rms_norm(ctx, mt_linear(ctx, h, a->w_dq, NULL), a->q_norm, MT_LATENT_NORM_EPS);
    mt_tensor *qa = mt_reshape(ctx, mt_linear(ctx, cq, ab->aq, NULL), 4, (const int64_t[]){R, H, 1, c->d_c});
    mt_tensor *qr = mt_rope(ctx, mt_reshape(ctx, mt_linear(ctx, cq, a->w_qr, NULL), 4, (const int64_t[]){R, H, 1, c->d_rope}),
                            t, (float)c->rope_base);
    mt_tensor *parts[2] = {qa, qr};
    return mt_concat(ctx, parts, 2, 3);
}

/* The latent key/value rows [c_kv, RoPE(W_kr m)] of m (R, S, d) at positions pos0..: (R, 1, S, dc+dr). */
static mt_tensor *mla_latents(mt_context *ctx, const mt_model_config *c, const mt_attn_params *a, mt_tensor *mem,
                              int64_t pos0) {
    int64_t R = mem ? mem->shape[0] : 1, S = mem ? mem->shape[1] : 1;
    mt_tensor *ckv = mt_rms_norm(ctx, mt_linear(ctx, mem, a->w_dkv, NULL), a->kv_norm, MT_LATENT_NORM_EPS);
    mt_tensor *kr = mt_rope(ctx, mt_reshape(ctx, mt_linear(ctx, mem, a->w_kr, NULL), 4, (const int64_t[]){R, 1, S, c->d_rope}),
                            pos0, (float)c->rope_base);
    mt_tensor *parts[2] = {mt_reshape(ctx, ckv, 4, (const int64_t[]){R, 1, S, c->d_c}), kr};
    return mt_concat(ctx, parts, 2, 3);
}

/* (R, S, d) -> rotated keys or values per head (R, H, S, dh). */
static mt_tensor *mha_heads(mt_context *ctx, const mt_model_config *c, mt_tensor *x, mt_tensor *w, int rot, int64_t pos0) {
    if (!x) return NULL;
    int64_t R = x->shape[0], S = x->shape[1], H = c->heads, dh = mt_model_d_head(c);
    static const int perm[4] = {0, 2, 1, 3};
    mt_tensor *y = mt_reshape(ctx, mt_linear(ctx, x, w, NULL), 4, (const int64_t[]){R, S, H, dh});
    y = S == 1 ? mt_reshape(ctx, y, 4, (const int64_t[]){R, H, 1, dh}) : mt_permute(ctx, y, perm);
    return rot ? mt_rope(ctx, y, pos0, (float)c->rope_base) : y;
}

/* Encodes the chunk and fills the encoder-side buffers, rows replicated beam times. */
static mt_status dstate_encode(dstate *s, const int32_t *src, int64_t B, int64_t S, int beam) {
    mt_context *ctx = s->ws->ctx;
    const mt_transformer *m = s->m;
    const mt_model_config *c = &m->cfg;
    MT_TRY(mt_context_reset(ctx));
    s->S = S;
    s->R = B * beam;
    s->xcur = 0;
    int32_t *rows = mt_arena_alloc(&ctx->host, sizeof(int32_t) * (size_t)s->R, 16);
    if (!rows) return mt_error(MT_ERR_NOMEM, "decode: out of host memory");
    for (int64_t r = 0; r < s->R; r++) rows[r] = (int32_t)(r / beam);
    mt_tensor *rid = mt_from_data(ctx, MT_DTYPE_I32, 1, &s->R, rows);
    mt_tensor *srcT = mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){B, S}, src);
    mt_tensor *mask = mt_transformer_src_mask(ctx, m, src, B, S);
    mt_tensor *mem = mt_transformer_encode(ctx, m, srcT, mask, 0);
    stash(s->ws, gbuf(s, G_MASK0), mt_index_rows(ctx, mask, rid));
    if (!s->cached) {
        stash(s->ws, gbuf(s, G_MEM0), mt_index_rows(ctx, mem, rid));
    } else {
        for (int64_t l = 0; l < c->layers_dec; l++) {
            const mt_attn_params *a = &m->dec[l].cross_attn;
            if (c->attention == MT_ATTN_MLA) {
                stash(s->ws, lbuf(s, l, B_XK0), mt_index_rows(ctx, mla_latents(ctx, c, a, mem, 0), rid));
            } else {
                stash(s->ws, lbuf(s, l, B_XK0), mt_index_rows(ctx, mha_heads(ctx, c, mem, a->w_k, 1, 0), rid));
                stash(s->ws, lbuf(s, l, B_XV0), mt_index_rows(ctx, mha_heads(ctx, c, mem, a->w_v, 0, 0), rid));
            }
        }
    }
    return ctx->status;
}

/* Log-probabilities (R, V) of the next token after tokens (R) at position t, cached path. */
static mt_tensor *step_cached(dstate *s, const int32_t *tokens, int64_t t) {
    mt_context *ctx = s->ws->ctx;
    const mt_transformer *m = s->m;
    const mt_model_config *c = &m->cfg;
    int64_t R = s->R, H = c->heads, S = s->S, dh = mt_model_d_head(c);
    int mla = c->attention == MT_ATTN_MLA;
    int64_t D = mla ? c->d_c + c->d_rope : dh;
    int64_t Hk = mla ? 1 : H;
    float scale = mla ? 1.0f / sqrtf((float)(dh + c->d_rope)) : 1.0f / sqrtf((float)dh);
    mt_tensor *ids = mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){R, 1}, tokens);
    mt_tensor *x = emb_tokens(ctx, m, ids); /* (R, 1, d) */
    mt_tensor *mask = dbuf_view(gbuf(s, G_MASK0 + s->xcur), MT_DTYPE_F32, 4, (const int64_t[]){R, 1, 1, S});
    for (int64_t l = 0; l < c->layers_dec; l++) {
        const mt_layer_params *L = &m->dec[l];
        mt_tensor *h = lnorm(ctx, m, &L->norm1, x), *o;
        if (mla) {
            mt_tensor *q = mla_query(ctx, c, &L->self_attn, &s->abs->self_attn[l], h, t);
            mt_tensor *K = cache_append(s->ws, lbuf(s, l, B_SK0), &s->cur[l], mla_latents(ctx, c, &L->self_attn, h, t), t);
            o = mt_attention(ctx, q, K, K, NULL, 0, scale);
            o = mt_linear(ctx, mt_reshape(ctx, o, 3, (const int64_t[]){R, 1, H * D}), s->abs->self_attn[l].ao, NULL);
        } else {
            mt_tensor *q = mha_heads(ctx, c, h, L->self_attn.w_q, 1, t);
            int cur = s->cur[l];
            mt_tensor *K = cache_append(s->ws, lbuf(s, l, B_SK0), &cur, mha_heads(ctx, c, h, L->self_attn.w_k, 1, t), t);
            mt_tensor *V = cache_append(s->ws, lbuf(s, l, B_SV0), &s->cur[l], mha_heads(ctx, c, h, L->self_attn.w_v, 0, t), t);
            o = mt_attention(ctx, q, K, V, NULL, 0, scale);
            o = mt_linear(ctx, mt_reshape(ctx, o, 3, (const int64_t[]){R, 1, H * D}), L->self_attn.w_o, NULL);
        }
        x = mt_add(ctx, x, o);
        h = lnorm(ctx, m, &L->norm2, x);
        mt_tensor *XK = dbuf_view(lbuf(s, l, B_XK0 + s->xcur), MT_DTYPE_F32, 4, (const int64_t[]){R, Hk, S, D});
        if (mla) {
            mt_tensor *q = mla_query(ctx, c, &L->cross_attn, &s->abs->cross_attn[l], h, t);
            o = mt_attention(ctx, q, XK, XK, mask, 0, scale);
            o = mt_linear(ctx, mt_reshape(ctx, o, 3, (const int64_t[]){R, 1, H * D}), s->abs->cross_attn[l].ao, NULL);
        } else {
            mt_tensor *XV = dbuf_view(lbuf(s, l, B_XV0 + s->xcur), MT_DTYPE_F32, 4, (const int64_t[]){R, Hk, S, D});
            mt_tensor *q = mha_heads(ctx, c, h, L->cross_attn.w_q, 1, t);
            o = mt_attention(ctx, q, XK, XV, mask, 0, scale);
            o = mt_linear(ctx, mt_reshape(ctx, o, 3, (const int64_t[]){R, 1, H * D}), L->cross_attn.w_o, NULL);
        }
        x = mt_add(ctx, x, o);
        x = mt_add(ctx, x, mt_ffn_block(ctx, c, &L->ffn, lnorm(ctx, m, &L->norm3, x)));
    }
    x = lnorm(ctx, m, &m->dec_norm, x);
    return mt_reshape(ctx, mt_transformer_logits(ctx, m, x), 2, (const int64_t[]){R, c->vocab_size});
}

/* The same from the whole prefix (prefix rows hold [SOS] and the tokens before, tokens is the last). */
static mt_tensor *step_uncached(dstate *s, const int32_t *tokens, int64_t t) {
    mt_context *ctx = s->ws->ctx;
    const mt_transformer *m = s->m;
    int64_t R = s->R, S = s->S, d = m->cfg.d_model;
    for (int64_t r = 0; r < R; r++) s->prefix[r * s->tcap + t] = tokens[r];
    int32_t *ids = mt_arena_alloc(&ctx->host, sizeof(int32_t) * (size_t)(R * (t + 1)), 16);
    if (!ids) return mt_fail(ctx, MT_ERR_NOMEM, "decode: out of host memory");
    for (int64_t r = 0; r < R; r++) memcpy(ids + r * (t + 1), s->prefix + r * s->tcap, sizeof(int32_t) * (size_t)(t + 1));
    mt_tensor *tgt = mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){R, t + 1}, ids);
    mt_tensor *mem = dbuf_view(gbuf(s, G_MEM0 + s->xcur), MT_DTYPE_F32, 3, (const int64_t[]){R, S, d});
    mt_tensor *mask = dbuf_view(gbuf(s, G_MASK0 + s->xcur), MT_DTYPE_F32, 4, (const int64_t[]){R, 1, 1, S});
    mt_tensor *h = mt_transformer_decode(ctx, m, tgt, mem, mask, 0);
    h = mt_narrow(ctx, h, 1, t, 1);
    return mt_reshape(ctx, mt_transformer_logits(ctx, m, h), 2, (const int64_t[]){R, m->cfg.vocab_size});
}

/* Next-token log-probabilities with [PAD] and [SOS] excluded. */
static mt_tensor *step_logp(dstate *s, const int32_t *tokens, int64_t t, mt_tensor *vmask) {
    mt_context *ctx = s->ws->ctx;
    mt_tensor *logits = s->cached ? step_cached(s, tokens, t) : step_uncached(s, tokens, t);
    return mt_log_softmax(ctx, mt_masked_fill(ctx, logits, vmask, -INFINITY), -1);
}

/* Keeps rows parents (n) of every cache, in that order; sentences_changed: the encoder side too. */
static mt_status dstate_reorder(dstate *s, const int32_t *parents, int64_t n, int64_t t_done, int sentences_changed) {
    mt_context *ctx = s->ws->ctx;
    const mt_model_config *c = &s->m->cfg;
    int identity = n == s->R;
    for (int64_t i = 0; identity && i < n; i++) identity = parents[i] == i;
    if (!identity) {
        mt_tensor *ids = mt_from_data(ctx, MT_DTYPE_I32, 1, &n, parents);
        if (!ids) return ctx->status;
        int mla = c->attention == MT_ATTN_MLA;
        int64_t D = mla ? c->d_c + c->d_rope : mt_model_d_head(c), Hk = mla ? 1 : c->heads, d = c->d_model;
        if (s->cached) {
            for (int64_t l = 0; l < c->layers_dec; l++) {
                int cur = s->cur[l];
                MT_TRY(gather_pair(s->ws, lbuf(s, l, B_SK0), &s->cur[l], Hk * t_done * D, ids));
                if (!mla) MT_TRY(gather_pair(s->ws, lbuf(s, l, B_SV0), &cur, Hk * t_done * D, ids));
                if (sentences_changed) {
                    int xc = s->xcur;
                    MT_TRY(gather_pair(s->ws, lbuf(s, l, B_XK0), &xc, Hk * s->S * D, ids));
                    if (!mla) {
                        xc = s->xcur;
                        MT_TRY(gather_pair(s->ws, lbuf(s, l, B_XV0), &xc, Hk * s->S * D, ids));
                    }
                }
            }
        } else {
            int32_t *np = mt_sys_malloc(sizeof(int32_t) * (size_t)(n * s->tcap));
            if (!np) return mt_error(MT_ERR_NOMEM, "decode: out of memory");
            for (int64_t i = 0; i < n; i++)
                memcpy(np + i * s->tcap, s->prefix + parents[i] * s->tcap, sizeof(int32_t) * (size_t)s->tcap);
            memcpy(s->prefix, np, sizeof(int32_t) * (size_t)(n * s->tcap));
            mt_sys_free(np);
            if (sentences_changed) {
                int xc = s->xcur;
                MT_TRY(gather_pair(s->ws, gbuf(s, G_MEM0), &xc, s->S * d, ids));
            }
        }
        if (sentences_changed) {
            int xc = s->xcur;
            MT_TRY(gather_pair(s->ws, gbuf(s, G_MASK0), &xc, s->S, ids));
            s->xcur = !s->xcur;
        }
    }
    s->R = n;
    return MT_OK;
}

/* ---- search -------------------------------------------------------------------------------------- */

typedef struct hyp {
    int32_t *ids;
    int64_t len;
    double score; /* log-probability */
    double norm;  /* length-normalised score */
} hyp;

typedef struct sent {
    int64_t maxo;   /* output token limit ([EOS] included) */
    int done;
    hyp best;
    hyp *fin;       /* beam: finished hypotheses (up to beam) */
    int nfin;
} sent;

static double gnmt_lp(int64_t len, float alpha) {
    return alpha == 0.0f ? 1.0 : pow((5.0 + (double)len) / 6.0, (double)alpha);
}

static mt_status hyp_set(hyp *h, const int32_t *ids, int64_t len, double score, double norm) {
    int32_t *p = mt_sys_realloc(h->ids, sizeof(int32_t) * (size_t)(len ? len : 1));
    if (!p) return mt_error(MT_ERR_NOMEM, "decode: out of memory");
    h->ids = p;
    if (len) memcpy(p, ids, sizeof(int32_t) * (size_t)len);
    h->len = len;
    h->score = score;
    h->norm = norm;
    return MT_OK;
}

typedef struct cand {
    float score;
    int32_t row, tok;
} cand;

static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->row != y->row) return x->row < y->row ? -1 : 1;
    return x->tok < y->tok ? -1 : (x->tok > y->tok);
}

/* The k best tokens of row lp (V) into top (sorted, descending; ties to the lower id). */
static int topk_row(const float *lp, int64_t V, int k, cand *top, int32_t row, double base) {
    int n = 0;
    for (int64_t v = 0; v < V; v++) {
        float x = lp[v];
        if (x == -INFINITY) continue;
        if (n == k && x <= top[n - 1].score) continue;
        int i = n < k ? n++ : k - 1;
        while (i > 0 && top[i - 1].score < x) {
            top[i] = top[i - 1];
            i--;
        }
        top[i].score = x;
        top[i].tok = (int32_t)v;
        top[i].row = row;
    }
    for (int i = 0; i < n; i++) top[i].score = (float)(base + top[i].score);
    return n;
}

typedef struct chunk {
    int64_t B;           /* sentences */
    const int64_t *idx;  /* their indices in the caller's arrays */
} chunk;

static mt_status decode_chunk(mt_decode_ws *ws, const mt_transformer *m, const mt_absorbed *abs,
                              const int32_t *const *src, const int64_t *slen, const chunk *ch, const mt_decode_opts *o,
                              sent *sents, int64_t *steps) {
    const mt_model_config *c = &m->cfg;
    mt_context *ctx = ws->ctx;
    int k = o->beam;
    int64_t B = ch->B, V = c->vocab_size, S = 0, tcap = 0;
    int32_t eos = (int32_t)c->eos_id, pad = (int32_t)c->pad_id, sos = (int32_t)c->sos_id;
    float ratio = o->max_len_ratio > 0 ? o->max_len_ratio : 1.5f;
    for (int64_t b = 0; b < B; b++) {
        int64_t L = slen[ch->idx[b]];
        if (L + 1 > S) S = L + 1;
        sent *st = &sents[ch->idx[b]];
        st->maxo = (int64_t)floor((double)ratio * (double)L) + 10;
        if (st->maxo > c->max_len - 1) st->maxo = c->max_len - 1;
        if (st->maxo < 1) st->maxo = 1;
        if (st->maxo > tcap) tcap = st->maxo;
    }
    MT_TRY(ws_bufs(ws, (int)(c->layers_dec * B_PER_LAYER + G_COUNT)));
    int64_t R0 = B * k;
    /* Host state: the source matrix, rows' tokens, scores, histories, the active sentences. */
    int32_t *srcm = mt_sys_malloc(sizeof(int32_t) * (size_t)(B * S));
    int32_t *tokens = mt_sys_malloc(sizeof(int32_t) * (size_t)R0);
    int32_t *parents = mt_sys_malloc(sizeof(int32_t) * (size_t)R0);
    int32_t *ntok = mt_sys_malloc(sizeof(int32_t) * (size_t)R0);
    double *score = mt_sys_malloc(sizeof(double) * (size_t)R0), *nscore = mt_sys_malloc(sizeof(double) * (size_t)R0);
    int32_t *hist = mt_sys_malloc(sizeof(int32_t) * (size_t)(R0 * tcap));
    int32_t *nhist = mt_sys_malloc(sizeof(int32_t) * (size_t)(R0 * tcap));
    int64_t *act = mt_sys_malloc(sizeof(int64_t) * (size_t)B), *nact = mt_sys_malloc(sizeof(int64_t) * (size_t)B);
    int *cur = mt_sys_calloc((size_t)c->layers_dec, sizeof(int));
    cand *cands = mt_sys_malloc(sizeof(cand) * (size_t)(k * 2 * k + 1));
    float *vmask_h = mt_sys_calloc((size_t)V, sizeof(float));
    dstate s = {.ws = ws, .m = m, .abs = abs, .cached = o->cached, .cur = cur, .tcap = tcap + 1};
    if (!o->cached) s.prefix = mt_sys_malloc(sizeof(int32_t) * (size_t)(R0 * s.tcap));
    mt_status st = MT_OK;
    if (!srcm || !tokens || !parents || !ntok || !score || !nscore || !hist || !nhist || !act || !nact || !cur ||
        !cands || !vmask_h || (!o->cached && !s.prefix))
        st = mt_error(MT_ERR_NOMEM, "decode: out of memory");
    if (st == MT_OK) {
        for (int64_t b = 0; b < B; b++) {
            int64_t L = slen[ch->idx[b]];
            memcpy(srcm + b * S, src[ch->idx[b]], sizeof(int32_t) * (size_t)L);
            srcm[b * S + L] = eos;
            for (int64_t j = L + 1; j < S; j++) srcm[b * S + j] = pad;
            act[b] = b;
        }
        for (int64_t r = 0; r < R0; r++) {
            tokens[r] = sos;
            score[r] = (r % k == 0) ? 0.0 : -INFINITY;
        }
        vmask_h[pad] = 1.0f;
        vmask_h[sos] = 1.0f;
        st = dstate_encode(&s, srcm, B, S, k);
    }
    int64_t nact_n = B;
    for (int64_t t = 0; st == MT_OK && nact_n > 0; t++) {
        st = mt_context_reset(ctx);
        if (st != MT_OK) break;
        mt_tensor *vmask = mt_from_data(ctx, MT_DTYPE_F32, 1, &V, vmask_h);
        mt_tensor *logp = step_logp(&s, tokens, t, vmask);
        int64_t R = s.R, n_next = 0, nact_next = 0;
        (*steps)++;
        if (k == 1) {
            mt_tensor *am = mt_argmax(ctx, logp, -1, 0);
            mt_tensor *mx = mt_max(ctx, logp, (const int[]){-1}, 1, 0);
            if (ctx->status != MT_OK || !am || !mx) {
                st = ctx->status != MT_OK ? ctx->status : MT_ERR_INTERNAL;
                break;
            }
            float *mxh = (float *)nscore; /* reuse: R floats fit in R doubles */
            st = mt_copy_to_host(ctx, am, ntok, sizeof(int32_t) * (size_t)R);
            if (st == MT_OK) st = mt_copy_to_host(ctx, mx, mxh, sizeof(float) * (size_t)R);
            if (st != MT_OK) break;
            for (int64_t j = 0; j < R; j++) {
                int64_t b = act[j];
                sent *se = &sents[ch->idx[b]];
                int32_t tok = ntok[j];
                score[j] += mxh[j];
                if (tok != eos) hist[b * tcap + t] = tok;
                if (tok == eos || t + 1 >= se->maxo) {
                    st = hyp_set(&se->best, hist + b * tcap, tok == eos ? t : t + 1, score[j], score[j]);
                    se->done = 1;
                } else {
                    parents[n_next] = (int32_t)j;
                    score[n_next] = score[j];
                    tokens[n_next++] = tok;
                    nact[nact_next++] = b;
                }
                if (st != MT_OK) break;
            }
        } else {
            size_t need = (size_t)(R * V);
            if (ws->host_cap < need) {
                float *h = mt_sys_realloc(ws->host, sizeof(float) * need);
                if (!h) {
                    st = mt_error(MT_ERR_NOMEM, "decode: out of memory");
                    break;
                }
                ws->host = h;
                ws->host_cap = need;
            }
            if (ctx->status != MT_OK || !logp) {
                st = ctx->status != MT_OK ? ctx->status : MT_ERR_INTERNAL;
                break;
            }
            st = mt_copy_to_host(ctx, logp, ws->host, sizeof(float) * need);
            if (st != MT_OK) break;
            for (int64_t j = 0; j < R / k && st == MT_OK; j++) {
                int64_t b = act[j];
                sent *se = &sents[ch->idx[b]];
                int nc = 0;
                for (int q = 0; q < k; q++) {
                    int64_t r = j * k + q;
                    if (score[r] == -INFINITY) continue;
                    nc += topk_row(ws->host + r * V, V, 2 * k, cands + nc, (int32_t)r, score[r]);
                }
                qsort(cands, (size_t)nc, sizeof *cands, cand_cmp);
                int nlive = 0;
                int last = t + 1 >= se->maxo;
                for (int ci = 0; ci < nc && nlive < k && st == MT_OK; ci++) {
                    cand *cd = &cands[ci];
                    if (cd->tok == eos) {
                        if (se->nfin < k)
                            st = hyp_set(&se->fin[se->nfin++], hist + cd->row * tcap, t, cd->score,
                                         cd->score / gnmt_lp(t + 1, o->length_penalty));
                        continue;
                    }
                    int64_t nr = n_next + nlive;
                    parents[nr] = cd->row;
                    nscore[nr] = cd->score;
                    ntok[nr] = cd->tok;
                    memcpy(nhist + nr * tcap, hist + cd->row * tcap, sizeof(int32_t) * (size_t)t);
                    nhist[nr * tcap + t] = cd->tok;
                    nlive++;
                }
                if (st != MT_OK) break;
                if (se->nfin >= k || last || nlive == 0) {
                    /* Done: at the length limit the live hypotheses compete too (without [EOS]). */
                    if (last || se->nfin == 0)
                        for (int q = 0; q < nlive; q++) {
                            int64_t nr = n_next + q;
                            hyp tmp = {0};
                            st = hyp_set(&tmp, nhist + nr * tcap, t + 1, nscore[nr],
                                         nscore[nr] / gnmt_lp(t + 1, o->length_penalty));
                            if (st == MT_OK) {
                                if (se->nfin < k) {
                                    mt_sys_free(se->fin[se->nfin].ids);
                                    se->fin[se->nfin++] = tmp;
                                } else {
                                    int worst = 0;
                                    for (int f = 1; f < se->nfin; f++)
                                        if (se->fin[f].norm < se->fin[worst].norm) worst = f;
                                    if (tmp.norm > se->fin[worst].norm) {
                                        mt_sys_free(se->fin[worst].ids);
                                        se->fin[worst] = tmp;
                                    } else {
                                        mt_sys_free(tmp.ids);
                                    }
                                }
                            }
                        }
                    int bi = 0;
                    for (int f = 1; f < se->nfin; f++)
                        if (se->fin[f].norm > se->fin[bi].norm) bi = f;
                    if (st == MT_OK && se->nfin > 0)
                        st = hyp_set(&se->best, se->fin[bi].ids, se->fin[bi].len, se->fin[bi].score, se->fin[bi].norm);
                    se->done = 1;
                    continue;
                }
                for (int q = nlive; q < k; q++) { /* too few candidates: pad with dead copies */
                    int64_t nr = n_next + q;
                    parents[nr] = parents[n_next];
                    nscore[nr] = -INFINITY;
                    ntok[nr] = ntok[n_next];
                    memcpy(nhist + nr * tcap, nhist + n_next * tcap, sizeof(int32_t) * (size_t)(t + 1));
                }
                n_next += k;
                nact[nact_next++] = b;
            }
            if (st != MT_OK) break;
            memcpy(score, nscore, sizeof(double) * (size_t)n_next);
            memcpy(tokens, ntok, sizeof(int32_t) * (size_t)n_next);
            int32_t *th = hist;
            hist = nhist;
            nhist = th;
        }
        if (st != MT_OK) break;
        int changed = nact_next != nact_n;
        memcpy(act, nact, sizeof(int64_t) * (size_t)nact_next);
        nact_n = nact_next;
        if (n_next > 0) st = dstate_reorder(&s, parents, n_next, t + 1, changed);
        if (st == MT_OK && ctx->status != MT_OK) st = ctx->status;
    }
    if (st == MT_OK && ctx->status != MT_OK) st = ctx->status;
    mt_sys_free(srcm);
    mt_sys_free(tokens);
    mt_sys_free(parents);
    mt_sys_free(ntok);
    mt_sys_free(score);
    mt_sys_free(nscore);
    mt_sys_free(hist);
    mt_sys_free(nhist);
    mt_sys_free(act);
    mt_sys_free(nact);
    mt_sys_free(cur);
    mt_sys_free(cands);
    mt_sys_free(vmask_h);
    mt_sys_free(s.prefix);
    return st;
}

void mt_decode_result_free(mt_decode_result *r) {
    if (!r) return;
    mt_sys_free(r->ids);
    memset(r, 0, sizeof *r);
}

static int by_len_desc(const void *a, const void *b) {
    const int64_t *x = a, *y = b; /* pairs (len, index) */
    if (x[0] != y[0]) return x[0] > y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : (x[1] > y[1]);
}

mt_status mt_decode(mt_decode_ws *ws, const mt_transformer *m, const mt_absorbed *abs, const int32_t *const *src,
                    const int64_t *src_len, int64_t n, const mt_decode_opts *opt, mt_decode_result *out) {
    if (!ws || !m || (n && (!src || !src_len)) || !opt || !out) return mt_error(MT_ERR_INVALID_ARG, "decode: NULL argument");
    if (opt->beam < 1 || opt->beam > 64) return mt_error(MT_ERR_INVALID_ARG, "decode: beam size %d not in 1..64", opt->beam);
    if (opt->cached && m->cfg.attention == MT_ATTN_MLA && !abs)
        return mt_error(MT_ERR_INVALID_ARG, "decode: cached MLA decoding needs the absorbed projections");
    memset(out, 0, sizeof *out);
    const mt_model_config *c = &m->cfg;
    int64_t limit = c->max_len - 1;
    sent *sents = mt_sys_calloc((size_t)(n ? n : 1), sizeof *sents);
    int64_t *slen = mt_sys_malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    int64_t *order = mt_sys_malloc(sizeof(int64_t) * 2 * (size_t)(n ? n : 1));
    int64_t *idx = mt_sys_malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    hyp *fins = opt->beam > 1 ? mt_sys_calloc((size_t)((n ? n : 1) * opt->beam), sizeof(hyp)) : NULL;
    mt_status st = (!sents || !slen || !order || !idx || (opt->beam > 1 && !fins))
                       ? mt_error(MT_ERR_NOMEM, "decode: out of memory") : MT_OK;
    int64_t nz = 0;
    for (int64_t i = 0; st == MT_OK && i < n; i++) {
        slen[i] = src_len[i];
        if (slen[i] > limit) {
            mt_log(MT_LOG_WARN, "decode: sentence %lld has %lld tokens, more than max_len - 1 = %lld: truncated",
                   (long long)i, (long long)slen[i], (long long)limit);
            slen[i] = limit;
        }
        for (int64_t j = 0; j < slen[i]; j++)
            if (src[i][j] < 0 || src[i][j] >= c->vocab_size) {
                st = mt_error(MT_ERR_INVALID_ARG, "decode: sentence %lld: id %d at %lld is outside the vocabulary",
                              (long long)i, src[i][j], (long long)j);
                break;
            }
        if (fins) sents[i].fin = fins + i * opt->beam;
        if (slen[i] == 0) {
            sents[i].done = 1;
            continue;
        }
        order[2 * nz] = slen[i];
        order[2 * nz + 1] = i;
        nz++;
    }
    if (st == MT_OK) qsort(order, (size_t)nz, 2 * sizeof(int64_t), by_len_desc);
    for (int64_t i = 0; i < nz; i++) idx[i] = order[2 * i + 1];
    int64_t per = MAX_ROWS / opt->beam > 0 ? MAX_ROWS / opt->beam : 1;
    for (int64_t i = 0; st == MT_OK && i < nz; i += per) {
        chunk ch = {.B = nz - i < per ? nz - i : per, .idx = idx + i};
        st = decode_chunk(ws, m, abs, src, slen, &ch, opt, sents, &out->steps);
    }
    if (st == MT_OK) {
        /* One allocation: pointers, lengths, scores, then the ids. */
        size_t total = 0;
        for (int64_t i = 0; i < n; i++) total += (size_t)sents[i].best.len;
        size_t head = ((sizeof(int32_t *) + sizeof(int64_t) + sizeof(float)) * (size_t)n + 15) & ~(size_t)15;
        char *blk = mt_sys_malloc(head + sizeof(int32_t) * (total ? total : 1));
        if (!blk) {
            st = mt_error(MT_ERR_NOMEM, "decode: out of memory");
        } else {
            out->ids = (int32_t **)blk;
            out->len = (int64_t *)(blk + sizeof(int32_t *) * (size_t)n);
            out->score = (float *)(blk + (sizeof(int32_t *) + sizeof(int64_t)) * (size_t)n);
            int32_t *p = (int32_t *)(blk + head);
            for (int64_t i = 0; i < n; i++) {
                out->ids[i] = p;
                out->len[i] = sents[i].best.len;
                out->score[i] = (float)sents[i].best.score;
                if (sents[i].best.len) memcpy(p, sents[i].best.ids, sizeof(int32_t) * (size_t)sents[i].best.len);
                p += sents[i].best.len;
            }
        }
    }
    for (int64_t i = 0; sents && i < n; i++) {
        mt_sys_free(sents[i].best.ids);
        for (int f = 0; f < sents[i].nfin; f++) mt_sys_free(sents[i].fin[f].ids);
    }
    mt_sys_free(fins);
    mt_sys_free(sents);
    mt_sys_free(slen);
    mt_sys_free(order);
    mt_sys_free(idx);
    return st;
}
