/*
 * tok_models.c — the tokenizer models: BPE (merges applied lowest rank first, leftmost first among equal ranks, as
 * `tokenizers` does; unknown characters to [UNK], optionally fused, or to <0xXX> byte tokens) and
 * word-level (one id per piece, [UNK] otherwise), behind a sharded, locked cache piece -> ids that
 * makes encoding a corpus cost one hash lookup per word once the words have been seen.
 */
#include <limits.h>
#include <string.h>

#include "text/tok_internal.h"
#include "text/unicode.h"

void mt_tok_cache_init(mt_tokenizer *tok) {
    for (int i = 0; i < MT_TOK_CACHE_SHARDS; i++) {
        mt_tok_cache_shard *s = &tok->cache[i];
        pthread_mutex_init(&s->mu, NULL);
        s->ready = 0; /* the map is allocated on first insert */
    }
}

void mt_tok_cache_free(mt_tokenizer *tok) {
    for (int i = 0; i < MT_TOK_CACHE_SHARDS; i++) {
        mt_tok_cache_shard *s = &tok->cache[i];
        if (s->ready) mt_strmap_free(&s->map);
        mt_ids_free(&s->ids);
        pthread_mutex_destroy(&s->mu);
    }
}

static int cache_get(const mt_tokenizer *tok, const char *p, size_t n, uint64_t h, mt_ids *out, int *hit) {
    mt_tok_cache_shard *s = (mt_tok_cache_shard *)&tok->cache[h >> 58];
    *hit = 0;
    pthread_mutex_lock(&s->mu);
    int ok = 1;
    if (s->ready) {
        int64_t i = mt_strmap_find_h(&s->map, p, n, h);
        if (i >= 0) {
            int64_t v = s->map.ents[i].val;
            size_t off = (size_t)(v >> 16), cnt = (size_t)(v & 0xFFFF);
            if (mt_ids_reserve(out, cnt) == MT_OK) {
                memcpy(out->v + out->n, s->ids.v + off, cnt * sizeof(int32_t));
                out->n += cnt;
                *hit = 1;
            } else {
                ok = 0;
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static void cache_put(const mt_tokenizer *tok, const char *p, size_t n, uint64_t h, const int32_t *ids, size_t cnt) {
    mt_tok_cache_shard *s = (mt_tok_cache_shard *)&tok->cache[h >> 58];
    if (cnt > 0xFFFF) return;
    pthread_mutex_lock(&s->mu);
    if (!s->ready && mt_strmap_init(&s->map, 1024) == MT_OK) s->ready = 1;
    if (s->ready && s->map.n < MT_TOK_CACHE_MAX_PER_SHARD) {
        size_t idx = 0;
        int added = 0;
        size_t off = s->ids.n;
        if (mt_ids_reserve(&s->ids, cnt) == MT_OK &&
            mt_strmap_upsert_h(&s->map, p, n, h, 0, &idx, &added) == MT_OK && added) {
            memcpy(s->ids.v + off, ids, cnt * sizeof(int32_t));
            s->ids.n += cnt;
            s->map.ents[idx].val = ((int64_t)off << 16) | (int64_t)cnt;
        }
    }
    pthread_mutex_unlock(&s->mu);
    /* A failed insert only costs speed: the caller already has the ids. */
    mt_error_clear();
}

static mt_status sym_reserve(mt_tok_encoder *e, size_t n) {
    if (n <= e->sym_cap) return MT_OK;
    size_t nc = e->sym_cap ? e->sym_cap : 64;
    while (nc < n) nc *= 2;
    int32_t *a = mt_sys_realloc(e->sym, nc * sizeof *a);
    if (!a) return mt_error(MT_ERR_NOMEM, "bpe: out of memory");
    e->sym = a;
    int32_t *b = mt_sys_realloc(e->rank, nc * sizeof *b);
    if (!b) return mt_error(MT_ERR_NOMEM, "bpe: out of memory");
    e->rank = b;
    e->sym_cap = nc;
    return MT_OK;
}

static int32_t vocab_id(const mt_tokenizer *tok, const char *s, size_t n) {
    int64_t i = mt_strmap_find(&tok->vocab, s, n);
    return i < 0 ? -1 : (int32_t)tok->vocab.ents[i].val;
}

static inline int32_t pair_rank(const mt_tokenizer *tok, int32_t a, int32_t b) {
    const int64_t *v = mt_u64map_get(&tok->merges, ((uint64_t)(uint32_t)a << 32) | (uint32_t)b);
    return v ? (int32_t)(*v >> 32) : INT32_MAX;
}

/* The initial symbols of a word: one per character (with the continuing-subword prefix and the
 * end-of-word suffix where the model has them), unknown characters as byte tokens or [UNK]. */
static mt_status bpe_symbols(const mt_tokenizer *tok, mt_tok_encoder *e, const char *p, size_t n, size_t *count) {
    MT_TRY(sym_reserve(e, n + 1));
    size_t ns = 0;
    int pending_unk = 0;
    for (size_t i = 0; i < n;) {
        size_t k = mt_utf8_len((unsigned char)p[i]);
        if (k > n - i) k = n - i;
        int32_t id = 0;
        if (!tok->cont_prefix && !tok->eow_suffix) {
            id = vocab_id(tok, p + i, k);
        } else {
            mt_buf *t = &e->tmp;
            mt_buf_clear(t);
            if (i > 0 && tok->cont_prefix) MT_TRY(mt_buf_append(t, tok->cont_prefix, strlen(tok->cont_prefix)));
            MT_TRY(mt_buf_append(t, p + i, k));
            if (i + k == n && tok->eow_suffix) MT_TRY(mt_buf_append(t, tok->eow_suffix, strlen(tok->eow_suffix)));
            id = vocab_id(tok, t->p, t->n);
        }
        if (id >= 0) {
            if (pending_unk) e->sym[ns++] = tok->unk_id;
            pending_unk = 0;
            e->sym[ns++] = id;
        } else {
            int done = 0;
            if (tok->byte_fallback) {
                int all = 1;
                for (size_t q = 0; q < k; q++) all &= tok->byte_ids[(unsigned char)p[i + q]] >= 0;
                if (all) {
                    /* Like `tokenizers`, byte tokens do not flush a pending unknown first. */
                    for (size_t q = 0; q < k; q++) e->sym[ns++] = tok->byte_ids[(unsigned char)p[i + q]];
                    done = 1;
                }
            }
            if (!done && tok->unk_token) {
                if (tok->unk_id < 0)
                    return mt_error(MT_ERR_INVALID_ARG, "bpe: the unknown token \"%s\" is not in the vocabulary", tok->unk_token);
                if (pending_unk && !tok->fuse_unk) e->sym[ns++] = tok->unk_id;
                pending_unk = 1;
            }
            /* no unk_token: the character is dropped, as `tokenizers` does */
        }
        if (ns + 4 > e->sym_cap) MT_TRY(sym_reserve(e, ns + n + 8));
        i += k;
    }
    if (pending_unk) e->sym[ns++] = tok->unk_id;
    *count = ns;
    return MT_OK;
}

static mt_status bpe_word(const mt_tokenizer *tok, mt_tok_encoder *e, const char *p, size_t n, mt_ids *out) {
    size_t ns = 0;
    MT_TRY(bpe_symbols(tok, e, p, n, &ns));
    int32_t *sym = e->sym, *rank = e->rank;
    if (ns >= 2) {
        for (size_t i = 0; i + 1 < ns; i++) rank[i] = pair_rank(tok, sym[i], sym[i + 1]);
        for (;;) {
            size_t best = 0;
            int32_t br = INT32_MAX;
            for (size_t i = 0; i + 1 < ns; i++)
                if (rank[i] < br) {
                    br = rank[i];
                    best = i;
                }
            if (br == INT32_MAX) break;
            const int64_t *v = mt_u64map_get(&tok->merges, ((uint64_t)(uint32_t)sym[best] << 32) | (uint32_t)sym[best + 1]);
            sym[best] = (int32_t)(*v & 0xFFFFFFFF);
            memmove(sym + best + 1, sym + best + 2, (ns - best - 2) * sizeof *sym);
            if (best + 2 < ns) memmove(rank + best + 1, rank + best + 2, (ns - best - 2) * sizeof *rank);
            ns--;
            if (best > 0) rank[best - 1] = pair_rank(tok, sym[best - 1], sym[best]);
            if (best + 1 < ns) rank[best] = pair_rank(tok, sym[best], sym[best + 1]);
        }
    }
    MT_TRY(mt_ids_reserve(out, ns));
    memcpy(out->v + out->n, sym, ns * sizeof *sym);
    out->n += ns;
    return MT_OK;
}

mt_status mt_model_encode_piece(const mt_tokenizer *tok, mt_tok_encoder *e, const char *p, size_t n, mt_ids *out) {
    if (tok->kind == MT_TOK_WORDLEVEL) {
        int32_t id = vocab_id(tok, p, n);
        if (id < 0) id = tok->unk_id;
        if (id < 0)
            return mt_error(MT_ERR_INVALID_ARG, "word-level: \"%.*s\" is not in the vocabulary and the tokenizer has no unknown token",
                            (int)(n > 64 ? 64 : n), p);
        return mt_ids_push(out, id);
    }
    if (tok->ignore_merges) {
        int32_t id = vocab_id(tok, p, n);
        if (id >= 0) return mt_ids_push(out, id);
    }
    if (n > MT_TOK_CACHE_MAX_PIECE) return bpe_word(tok, e, p, n, out);
    uint64_t h = mt_hash_bytes(p, n);
    int hit = 0;
    if (!cache_get(tok, p, n, h, out, &hit)) return mt_error(MT_ERR_NOMEM, "bpe: out of memory");
    if (hit) return MT_OK;
    size_t before = out->n;
    MT_TRY(bpe_word(tok, e, p, n, out));
    cache_put(tok, p, n, h, out->v + before, out->n - before);
    return MT_OK;
}
