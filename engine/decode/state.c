/*
 * state.c — the model side of decoding a chunk (see state.h): the workspace's device buffers, the
 * encoder pass that fills the memory side, the decoder step through mt_transformer_decode (with the
 * cache, or the whole prefix again), and the row gathers that keep a subset of the rows.
 *
 * Device-agnostic: the caches live in persistent device buffers; appending a token's rows is one
 * strided copy, dropping finished rows gathers the memory side, and reordering beams only the host
 * table of which cache block each row reads at each position.
 */
#include "decode/state.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

struct mt_dbuf {
    mt_tensor *t;   /* persistent 1-D storage of cap elements (4 bytes each) */
    int64_t cap;
    mt_tensor view; /* a persistent view of t reshaped for the op at hand */
};
typedef struct mt_dbuf dbuf;

/* Buffers per decoder layer: self-attention keys (and values, MHA), the encoder side's keys (and
 * values), each of these with a spare for gathers. */
enum { B_SK, B_SV, B_XK, B_XV, B_PER_LAYER };
/* Global buffers after the layers' ones. */
enum { G_MASK0, G_MASK1, G_MEM0, G_MEM1, G_COUNT };

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
    mt_context_free(ws->ctx);
    mt_sys_free(ws);
}

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
    MT_TRY(ctx->ex.backend->embedding_fwd(&ctx->ex, mt_f32(dst->t), mt_f32(src->t), mt_i32(ids), n, per_row, 1.0f));
    *cur = !*cur;
    return MT_OK;
}

/* Writes rows (R, Hk, T, D) of positions pos0.. into block r < R of the cache b (P, Hk, C, D) and
 * returns its view. Position t of row r goes to block r: no row has written position t before, so
 * nothing a hypothesis still reads is overwritten (state.h). */
static mt_tensor *cache_write(mt_decode_ws *ws, dbuf *b, int64_t P, int64_t C, mt_tensor *rows, int64_t pos0) {
    mt_context *ctx = ws->ctx;
    if (!rows) return NULL;
    int64_t R = rows->shape[0], Hk = rows->shape[1], T = rows->shape[2], D = rows->shape[3];
    if (R > P || pos0 + T > C)
        return mt_fail(ctx, MT_ERR_INTERNAL, "decode: cache of %lld rows x %lld positions written at row %lld, "
                       "position %lld", (long long)P, (long long)C, (long long)R, (long long)(pos0 + T));
    mt_status st = MT_OK;
    if (pos0 == 0) st = dbuf_reserve(ws, b, P * Hk * C * D); /* the first position: sized for the chunk */
    else if (b->cap < P * Hk * C * D) st = mt_error(MT_ERR_INTERNAL, "decode: cache written before its first position");
    if (st == MT_OK) {
        int64_t shape[2] = {R * Hk, T * D}, os[2] = {C * D, 1}, is[2] = {T * D, 1};
        st = ctx->ex.backend->copy_strided(&ctx->ex, mt_f32(b->t) + pos0 * D, os, rows->data, is, shape, 2, 4, 0);
    }
    if (st != MT_OK) return mt_fail_status(ctx, st);
    return dbuf_view(b, MT_DTYPE_F32, 4, (const int64_t[]){P, Hk, C, D});
}

/* ---- the decoding state of one chunk ------------------------------------------------------------- */

static dbuf *lbuf(mt_dstate *s, int64_t l, int which) { return &s->ws->bufs[l * B_PER_LAYER + which]; }
static dbuf *gbuf(mt_dstate *s, int which) { return &s->ws->bufs[s->m->cfg.layers_dec * B_PER_LAYER + which]; }

mt_status mt_dstate_init(mt_dstate *s, mt_decode_ws *ws, const mt_transformer *m, const mt_absorbed *abs, int cached,
                         int64_t R0, int64_t tcap) {
    const mt_model_config *c = &m->cfg;
    memset(s, 0, sizeof *s);
    s->ws = ws;
    s->m = m;
    s->abs = abs;
    s->cached = cached;
    s->tcap = tcap;
    MT_TRY(ws_bufs(ws, (int)(c->layers_dec * B_PER_LAYER + G_COUNT)));
    s->R0 = R0;
    s->cross = mt_sys_calloc((size_t)(2 * c->layers_dec), sizeof(mt_tensor *));
    if (!cached) {
        s->prefix = mt_sys_malloc(sizeof(int32_t) * (size_t)(R0 * tcap));
    } else {
        s->blocks = mt_sys_malloc(sizeof(int32_t) * (size_t)(2 * R0 * tcap));
        s->xsent = mt_sys_malloc(sizeof(int32_t) * (size_t)(2 * R0));
    }
    if (!s->cross || (!cached && !s->prefix) || (cached && (!s->blocks || !s->xsent))) {
        mt_dstate_free(s);
        return mt_error(MT_ERR_NOMEM, "decode: out of memory");
    }
    return MT_OK;
}

void mt_dstate_free(mt_dstate *s) {
    mt_sys_free(s->blocks);
    mt_sys_free(s->xsent);
    mt_sys_free(s->cross);
    mt_sys_free(s->prefix);
    memset(s, 0, sizeof *s);
}

mt_status mt_dstate_encode(mt_dstate *s, const int32_t *src, int64_t B, int64_t S, int rows_per_sentence) {
    mt_context *ctx = s->ws->ctx;
    const mt_transformer *m = s->m;
    const mt_model_config *c = &m->cfg;
    MT_TRY(mt_context_reset(ctx));
    s->S = S;
    s->B = B;
    s->R = B * rows_per_sentence;
    s->xcur = 0;
    int32_t *rows = mt_arena_alloc(&ctx->host, sizeof(int32_t) * (size_t)s->R, 16);
    if (!rows) return mt_error(MT_ERR_NOMEM, "decode: out of host memory");
    for (int64_t r = 0; r < s->R; r++) rows[r] = (int32_t)(r / rows_per_sentence);
    mt_tensor *rid = mt_from_data(ctx, MT_DTYPE_I32, 1, &s->R, rows);
    mt_tensor *srcT = mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){B, S}, src);
    mt_tensor *mask = mt_transformer_src_mask(ctx, m, src, B, S);
    mt_tensor *mem = mt_transformer_encode(ctx, m, srcT, mask, 0);
    stash(s->ws, gbuf(s, G_MASK0), mt_index_rows(ctx, mask, rid));
    if (!s->cached) {
        stash(s->ws, gbuf(s, G_MEM0), mt_index_rows(ctx, mem, rid));
    } else {
        for (int64_t r = 0; r < s->R; r++) s->xsent[r] = rows[r];
        for (int64_t l = 0; l < c->layers_dec; l++) {
            mt_tensor *k, *v;
            mt_attention_kv(ctx, c, &m->dec[l].cross_attn, mem, 0, c->cross_rope, &k, &v);
            stash(s->ws, lbuf(s, l, B_XK), k);
            if (v) stash(s->ws, lbuf(s, l, B_XV), v);
        }
    }
    return ctx->status;
}

/* mt_decoder_cache's append: the self-attention cache of layer l (which 0: keys/latents, 1: values). */
static mt_tensor *self_append(void *user, int64_t l, int which, mt_tensor *rows, int64_t pos0) {
    mt_dstate *s = user;
    return cache_write(s->ws, lbuf(s, l, which ? B_SV : B_SK), s->R0, s->tcap, rows, pos0);
}

/* Logits (R, V) of the next token after tokens (R) at position t, with the cache. */
static mt_tensor *step_cached(mt_dstate *s, const int32_t *tokens, int64_t t) {
    mt_context *ctx = s->ws->ctx;
    const mt_transformer *m = s->m;
    const mt_model_config *c = &m->cfg;
    int64_t R = s->R, S = s->S, L = c->layers_dec;
    int mla = c->attention == MT_ATTN_MLA;
    int64_t D = mla ? c->d_c + c->d_rope : mt_model_d_head(c), Hk = mla ? 1 : c->heads;
    for (int64_t l = 0; l < L; l++) {
        s->cross[l] = dbuf_view(lbuf(s, l, B_XK), MT_DTYPE_F32, 4, (const int64_t[]){s->B, Hk, S, D});
        s->cross[L + l] = mla ? NULL : dbuf_view(lbuf(s, l, B_XV), MT_DTYPE_F32, 4, (const int64_t[]){s->B, Hk, S, D});
    }
    /* Position t of each row is written to its own block; positions before t are read where the row's
     * history was written (blocks). */
    if (t >= s->tcap) return mt_fail(ctx, MT_ERR_INTERNAL, "decode: position %lld past the chunk's %lld",
                                     (long long)t, (long long)s->tcap);
    int32_t *rows = mt_arena_alloc(&ctx->host, sizeof(int32_t) * (size_t)(R * (t + 1)), 16);
    int32_t *xrows = mt_arena_alloc(&ctx->host, sizeof(int32_t) * (size_t)(R * S), 16);
    if (!rows || !xrows) return mt_fail(ctx, MT_ERR_NOMEM, "decode: out of host memory");
    for (int64_t r = 0; r < R; r++) {
        s->blocks[r * s->tcap + t] = (int32_t)r;
        memcpy(rows + r * (t + 1), s->blocks + r * s->tcap, sizeof(int32_t) * (size_t)(t + 1));
        for (int64_t j = 0; j < S; j++) xrows[r * S + j] = s->xsent[r];
    }
    mt_decoder_cache cache = {.append = self_append,
                              .user = s,
                              .rows = mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){R, t + 1}, rows),
                              .cross_k = s->cross,
                              .cross_v = s->cross + L,
                              .cross_rows = mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){R, S}, xrows)};
    if (!cache.rows || !cache.cross_rows) return NULL;
    mt_tensor *ids = mt_from_data(ctx, MT_DTYPE_I32, 2, (const int64_t[]){R, 1}, tokens);
    mt_tensor *mask = dbuf_view(gbuf(s, G_MASK0 + s->xcur), MT_DTYPE_F32, 4, (const int64_t[]){R, 1, 1, S});
    mt_tensor *h = mt_transformer_decode(ctx, m, ids, t, NULL, mask, s->abs, &cache, 0); /* (R, 1, d) */
    return mt_reshape(ctx, mt_transformer_logits(ctx, m, h), 2, (const int64_t[]){R, c->vocab_size});
}

/* The same from the whole prefix (prefix rows hold [SOS] and the tokens before, tokens is the last). */
static mt_tensor *step_uncached(mt_dstate *s, const int32_t *tokens, int64_t t) {
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
    mt_tensor *h = mt_transformer_decode(ctx, m, tgt, 0, mem, mask, NULL, NULL, 0);
    h = mt_narrow(ctx, h, 1, t, 1);
    return mt_reshape(ctx, mt_transformer_logits(ctx, m, h), 2, (const int64_t[]){R, m->cfg.vocab_size});
}

mt_tensor *mt_dstate_step(void *user, const int32_t *tokens, int64_t t) {
    mt_dstate *s = user;
    mt_context *ctx = s->ws->ctx;
    const mt_model_config *c = &s->m->cfg;
    mt_tensor *logits = s->cached ? step_cached(s, tokens, t) : step_uncached(s, tokens, t);
    /* [PAD] and [SOS] columns set to -inf in place (the logits are this step's own tensor): two strided
     * writes of R values instead of a masked copy of all R x V. */
    mt_tensor *ninf = mt_from_data(ctx, MT_DTYPE_F32, 1, (const int64_t[]){1}, (const float[]){-INFINITY});
    if (!logits || !ninf) return NULL;
    const int64_t ids[2] = {c->pad_id, c->sos_id}, os[1] = {c->vocab_size}, is[1] = {0}, shape[1] = {s->R};
    for (int i = 0; i < 2; i++) {
        mt_status st = ctx->ex.backend->copy_strided(&ctx->ex, mt_f32(logits) + ids[i], os, ninf->data, is, shape, 1,
                                                     4, 0);
        if (st != MT_OK) return mt_fail_status(ctx, st);
    }
    return mt_log_softmax(ctx, logits, -1);
}

mt_status mt_dstate_reorder(void *user, const int32_t *parents, int64_t n, int64_t t_done, int memory_changed) {
    mt_dstate *s = user;
    mt_context *ctx = s->ws->ctx;
    const mt_model_config *c = &s->m->cfg;
    int identity = n == s->R;
    for (int64_t i = 0; identity && i < n; i++) identity = parents[i] == i;
    if (!identity) {
        mt_tensor *ids = mt_from_data(ctx, MT_DTYPE_I32, 1, &n, parents);
        if (!ids) return ctx->status;
        if (s->cached) {
            /* The self-attention caches stay; each kept row takes its parent's table of blocks. */
            int32_t *nb = s->blocks + s->R0 * s->tcap;
            for (int64_t i = 0; i < n; i++)
                memcpy(nb + i * s->tcap, s->blocks + parents[i] * s->tcap, sizeof(int32_t) * (size_t)t_done);
            memcpy(s->blocks, nb, sizeof(int32_t) * (size_t)(n * s->tcap));
            /* The cross caches stay too: each kept row reads its parent's sentence. */
            int32_t *ns = s->xsent + s->R0;
            for (int64_t i = 0; i < n; i++) ns[i] = s->xsent[parents[i]];
            memcpy(s->xsent, ns, sizeof(int32_t) * (size_t)n);
        } else {
            int32_t *np = mt_sys_malloc(sizeof(int32_t) * (size_t)(n * s->tcap));
            if (!np) return mt_error(MT_ERR_NOMEM, "decode: out of memory");
            for (int64_t i = 0; i < n; i++)
                memcpy(np + i * s->tcap, s->prefix + parents[i] * s->tcap, sizeof(int32_t) * (size_t)s->tcap);
            memcpy(s->prefix, np, sizeof(int32_t) * (size_t)(n * s->tcap));
            mt_sys_free(np);
            if (memory_changed) {
                int xc = s->xcur;
                MT_TRY(gather_pair(s->ws, gbuf(s, G_MEM0), &xc, s->S * c->d_model, ids));
            }
        }
        if (memory_changed) {
            int xc = s->xcur;
            MT_TRY(gather_pair(s->ws, gbuf(s, G_MASK0), &xc, s->S, ids));
            s->xcur = !s->xcur;
        }
    }
    s->R = n;
    return MT_OK;
}
