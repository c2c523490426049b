/*
 * tokenizer.c — the tokenizer object: construction helpers shared by the loader and the trainer,
 * the encode pipeline (added tokens, normalizer, pre-tokenizer, model), decode, and accessors.
 */
#include <stdio.h>
#include <string.h>

#include "text/tok_internal.h"
#include "text/unicode.h"

mt_status mt_tok_alloc(mt_tokenizer **out) {
    mt_tokenizer *tok = mt_sys_calloc(1, sizeof *tok);
    if (!tok) return mt_error(MT_ERR_NOMEM, "tokenizer: out of memory");
    tok->unk_id = -1;
    tok->specials.pad = tok->specials.unk = tok->specials.sos = tok->specials.eos = -1;
    for (int i = 0; i < 256; i++) tok->byte_ids[i] = -1;
    mt_tok_cache_init(tok);
    *out = tok;
    return MT_OK;
}

void mt_tok_free(mt_tokenizer *tok) {
    if (!tok) return;
    mt_tok_cache_free(tok);
    mt_sys_free(tok->tok_off);
    mt_sys_free(tok->tok_len);
    mt_sys_free(tok->is_special);
    mt_sys_free(tok->tok_pool);
    mt_strmap_free(&tok->vocab);
    mt_u64map_free(&tok->merges);
    for (size_t i = 0; i < tok->n_merges; i++) {
        mt_sys_free(tok->merge_a[i]);
        mt_sys_free(tok->merge_b[i]);
    }
    mt_sys_free(tok->merge_a);
    mt_sys_free(tok->merge_b);
    mt_sys_free(tok->unk_token);
    mt_sys_free(tok->cont_prefix);
    mt_sys_free(tok->eow_suffix);
    for (size_t i = 0; i < tok->n_added; i++) mt_sys_free(tok->added[i].content);
    mt_sys_free(tok->added);
    for (size_t i = 0; i < tok->n_norm; i++) {
        mt_sys_free(tok->norm[i].pattern);
        mt_sys_free(tok->norm[i].content);
    }
    mt_sys_free(tok->norm);
    for (size_t i = 0; i < tok->n_pt; i++) mt_sys_free(tok->pt[i].pattern);
    mt_sys_free(tok->pt);
    for (size_t i = 0; i < tok->n_dec; i++) {
        mt_sys_free(tok->dec[i].a);
        mt_sys_free(tok->dec[i].b);
    }
    mt_sys_free(tok->dec);
    json_decref(tok->j_truncation);
    json_decref(tok->j_padding);
    json_decref(tok->j_normalizer);
    json_decref(tok->j_pre_tokenizer);
    json_decref(tok->j_post_processor);
    json_decref(tok->j_decoder);
    mt_sys_free(tok);
}

static int32_t lookup_any(const mt_tokenizer *tok, const char *s) {
    int32_t id = mt_tok_token_to_id(tok, s, strlen(s));
    return id;
}

mt_status mt_tok_finalize(mt_tokenizer *tok, const char *where) {
    size_t size = 0;
    for (size_t i = 0; i < tok->vocab.n; i++)
        if ((size_t)tok->vocab.ents[i].val + 1 > size) size = (size_t)tok->vocab.ents[i].val + 1;
    for (size_t i = 0; i < tok->n_added; i++)
        if ((size_t)tok->added[i].id + 1 > size) size = (size_t)tok->added[i].id + 1;
    if (size == 0) return mt_error(MT_ERR_FORMAT, "%s: the vocabulary is empty", where);
    /* ids index dense tables: refuse a file whose ids are mostly holes (e.g. one id of 2e9) */
    size_t entries = tok->vocab.n + tok->n_added;
    if (size > 4 * entries + 1024)
        return mt_error(MT_ERR_FORMAT, "%s: token ids go up to %zu for only %zu tokens", where, size - 1, entries);
    tok->vocab_size = size;
    tok->tok_off = mt_sys_malloc(size * sizeof *tok->tok_off);
    tok->tok_len = mt_sys_calloc(size, sizeof *tok->tok_len);
    tok->is_special = mt_sys_calloc(size, 1);
    size_t pool = tok->vocab.pool_len + 1;
    for (size_t i = 0; i < tok->n_added; i++) pool += tok->added[i].len + 1;
    tok->tok_pool = mt_sys_malloc(pool);
    if (!tok->tok_off || !tok->tok_len || !tok->is_special || !tok->tok_pool)
        return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
    for (size_t i = 0; i < size; i++) tok->tok_off[i] = -1;
    size_t used = 0;
    /* the model's tokens, then the added tokens over them: as in `tokenizers`, an added token wins
     * the id both have (decode looks at the added vocabulary first) */
    for (size_t i = 0; i < tok->vocab.n; i++) {
        const mt_strmap_entry *e = &tok->vocab.ents[i];
        memcpy(tok->tok_pool + used, tok->vocab.pool + e->off, e->len + 1);
        tok->tok_off[e->val] = (int64_t)used;
        tok->tok_len[e->val] = e->len;
        used += e->len + 1;
    }
    for (size_t i = 0; i < tok->n_added; i++) {
        const mt_added_token *a = &tok->added[i];
        memcpy(tok->tok_pool + used, a->content, a->len);
        tok->tok_pool[used + a->len] = '\0';
        tok->tok_off[a->id] = (int64_t)used;
        tok->tok_len[a->id] = (uint32_t)a->len;
        used += a->len + 1;
        if (a->special) tok->is_special[a->id] = 1;
        tok->added_first[(unsigned char)a->content[0]] = 1;
        if (a->normalized) tok->any_added_normalized = 1;
    }
    tok->tok_pool_len = used;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int64_t i = mt_strmap_find(&tok->vocab, name, 6);
        tok->byte_ids[b] = i < 0 ? -1 : (int32_t)tok->vocab.ents[i].val;
    }
    static const char *const pads[] = {"[PAD]", "<pad>"};
    static const char *const unks[] = {"[UNK]", "<unk>"};
    static const char *const soss[] = {"[SOS]", "[BOS]", "<s>"};
    static const char *const eoss[] = {"[EOS]", "</s>"};
    mt_tok_specials *sp = &tok->specials;
    sp->pad = sp->unk = sp->sos = sp->eos = -1;
    for (size_t i = 0; i < 2 && sp->pad < 0; i++) sp->pad = lookup_any(tok, pads[i]);
    sp->unk = tok->unk_id;
    for (size_t i = 0; i < 2 && sp->unk < 0; i++) sp->unk = lookup_any(tok, unks[i]);
    for (size_t i = 0; i < 3 && sp->sos < 0; i++) sp->sos = lookup_any(tok, soss[i]);
    for (size_t i = 0; i < 2 && sp->eos < 0; i++) sp->eos = lookup_any(tok, eoss[i]);
    return MT_OK;
}

/* ---- accessors ---- */

size_t mt_tok_vocab_size(const mt_tokenizer *tok) { return tok ? tok->vocab_size : 0; }
mt_tok_specials mt_tok_get_specials(const mt_tokenizer *tok) { return tok->specials; }

const char *mt_tok_id_to_token(const mt_tokenizer *tok, int32_t id, size_t *len) {
    if (!tok || id < 0 || (size_t)id >= tok->vocab_size || tok->tok_off[id] < 0) return NULL;
    if (len) *len = tok->tok_len[id];
    return tok->tok_pool + tok->tok_off[id];
}

int32_t mt_tok_token_to_id(const mt_tokenizer *tok, const char *token, size_t len) {
    if (!tok || !token) return -1;
    int64_t i = mt_strmap_find(&tok->vocab, token, len);
    if (i >= 0) return (int32_t)tok->vocab.ents[i].val;
    for (size_t k = 0; k < tok->n_added; k++)
        if (tok->added[k].len == len && memcmp(tok->added[k].content, token, len) == 0) return tok->added[k].id;
    return -1;
}

int mt_tok_is_special(const mt_tokenizer *tok, int32_t id) {
    return tok && id >= 0 && (size_t)id < tok->vocab_size && tok->is_special[id];
}

/* ---- encode ---- */

void mt_encoder_init(mt_tok_encoder *e, const mt_tokenizer *tok) {
    memset(e, 0, sizeof *e);
    e->tok = tok;
}

void mt_encoder_release(mt_tok_encoder *e) {
    mt_buf_free(&e->norm);
    mt_buf_free(&e->tmp);
    mt_sys_free(e->u32);
    mt_pt_scratch_free(&e->pt);
    mt_sys_free(e->sym);
    mt_sys_free(e->rank);
    mt_ids_free(&e->word);
    memset(e, 0, sizeof *e);
}

mt_status mt_tok_encoder_new(const mt_tokenizer *tok, mt_tok_encoder **out) {
    if (!tok || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_tok_encoder_new: NULL argument");
    mt_tok_encoder *e = mt_sys_malloc(sizeof *e);
    if (!e) return mt_error(MT_ERR_NOMEM, "tokenizer: out of memory");
    mt_encoder_init(e, tok);
    *out = e;
    return MT_OK;
}

void mt_tok_encoder_free(mt_tok_encoder *e) {
    if (!e) return;
    mt_encoder_release(e);
    mt_sys_free(e);
}

static int is_ws_char_before(const char *s, size_t end, size_t *start) {
    /* the character that ends at `end`, if it is whitespace */
    if (!end) return 0;
    size_t b = end - 1;
    while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
    uint32_t cp = 0;
    if (!mt_utf8_decode(s + b, end - b, &cp) || !(mt_uc_flags(cp) & MT_UC_SPACE)) return 0;
    *start = b;
    return 1;
}

static unsigned char_flags_before(const char *s, size_t end) {
    if (!end) return 0;
    size_t b = end - 1;
    while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
    uint32_t cp = 0;
    return mt_utf8_decode(s + b, end - b, &cp) ? mt_uc_flags(cp) : 0;
}

static unsigned char_flags_at(const char *s, size_t n, size_t i) {
    uint32_t cp = 0;
    return i < n && mt_utf8_decode(s + i, n - i, &cp) ? mt_uc_flags(cp) : 0;
}

/* The added tokens of kind `normalized` found in s[0..n), the way AddedVocabulary::find_matches does
 * (leftmost-longest, single_word / lstrip / rstrip), as (start, end, id) triples in m. */
static mt_status find_added(const mt_tokenizer *tok, const char *s, size_t n, int normalized, mt_ids *m) {
    m->n = 0;
    size_t start_offset = 0;
    for (size_t i = 0; i < n;) {
        if (!tok->added_first[(unsigned char)s[i]]) {
            i++;
            continue;
        }
        const mt_added_token *best = NULL;
        for (size_t k = 0; k < tok->n_added; k++) {
            const mt_added_token *a = &tok->added[k];
            if (a->normalized != normalized || a->len > n - i || (best && a->len <= best->len)) continue;
            if (memcmp(s + i, a->content, a->len) == 0) best = a;
        }
        if (!best) {
            i++;
            continue;
        }
        size_t start = i, stop = i + best->len;
        i = stop;
        if (best->single_word) {
            int start_space = start == 0 || !(char_flags_before(s, start) & MT_UC_ALNUM);
            int stop_space = stop == n || !(char_flags_at(s, n, stop) & MT_UC_ALNUM);
            if (!start_space || !stop_space) continue;
        }
        if (best->lstrip) {
            size_t b, ns = start;
            while (is_ws_char_before(s, ns, &b)) ns = b;
            start = ns > start_offset ? ns : start_offset;
        }
        if (best->rstrip) {
            uint32_t cp = 0;
            size_t k = 0;
            while (stop < n && (k = mt_utf8_decode(s + stop, n - stop, &cp)) && (mt_uc_flags(cp) & MT_UC_SPACE)) stop += k;
        }
        MT_TRY(mt_ids_reserve(m, 3));
        m->v[m->n++] = (int32_t)start;
        m->v[m->n++] = (int32_t)stop;
        m->v[m->n++] = best->id;
        start_offset = stop;
        if (i < stop) i = stop;
    }
    return MT_OK;
}

static mt_status pretok_model(const mt_tokenizer *tok, mt_tok_encoder *e, const char *s, size_t n, int first,
                              mt_ids *out) {
    MT_TRY(mt_pt_run(tok, e, s, n, first));
    const mt_pieces *pc = &e->pt.pcs[e->pt.cur];
    const char *base = e->pt.buf[e->pt.cur].p;
    for (size_t i = 0; i < pc->n; i++) MT_TRY(mt_model_encode_piece(tok, e, base + pc->v[i].off, pc->v[i].len, out));
    return MT_OK;
}

static mt_status encode_segment(const mt_tokenizer *tok, mt_tok_encoder *e, const char *s, size_t n, int first,
                                mt_ids *out) {
    MT_TRY(mt_norm_run(tok, e, s, n, &e->norm));
    if (!tok->any_added_normalized) return pretok_model(tok, e, e->norm.p, e->norm.n, first, out);
    /* added tokens matched on the normalized text: keep the normalized text aside while splitting */
    mt_buf norm = e->norm;
    e->norm = (mt_buf){0};
    mt_ids m = {0};
    mt_status st = find_added(tok, norm.p, norm.n, 1, &m);
    size_t last = 0;
    for (size_t k = 0; st == MT_OK && k < m.n; k += 3) {
        size_t a = (size_t)m.v[k], b = (size_t)m.v[k + 1];
        if (a > last) st = pretok_model(tok, e, norm.p + last, a - last, first && last == 0, out);
        if (st == MT_OK) st = mt_ids_push(out, m.v[k + 2]);
        last = b;
    }
    if (st == MT_OK && last < norm.n) st = pretok_model(tok, e, norm.p + last, norm.n - last, first && last == 0, out);
    mt_ids_free(&m);
    mt_buf_free(&e->norm);
    e->norm = norm;
    return st;
}

mt_status mt_tok_encoder_encode(mt_tok_encoder *e, const char *text, size_t len, mt_ids *out) {
    if (!e || (!text && len) || !out) return mt_error(MT_ERR_INVALID_ARG, "encode: NULL argument");
    const mt_tokenizer *tok = e->tok;
    size_t bad = 0;
    if (!mt_utf8_valid(text, len, &bad)) return mt_error(MT_ERR_UTF8, "encode: invalid UTF-8 at byte %zu", bad);
    if (!tok->n_added) return encode_segment(tok, e, text, len, 1, out);
    mt_ids m = {0};
    mt_status st = find_added(tok, text, len, 0, &m);
    size_t last = 0;
    for (size_t k = 0; st == MT_OK && k < m.n; k += 3) {
        size_t a = (size_t)m.v[k], b = (size_t)m.v[k + 1];
        if (a > last) st = encode_segment(tok, e, text + last, a - last, last == 0, out);
        if (st == MT_OK) st = mt_ids_push(out, m.v[k + 2]);
        last = b;
    }
    if (st == MT_OK && (last < len || len == 0)) st = encode_segment(tok, e, text + last, len - last, last == 0, out);
    mt_ids_free(&m);
    return st;
}

mt_status mt_tok_encode(const mt_tokenizer *tok, const char *text, size_t len, mt_ids *out) {
    if (!tok) return mt_error(MT_ERR_INVALID_ARG, "encode: NULL tokenizer");
    mt_tok_encoder e;
    mt_encoder_init(&e, tok);
    mt_status st = mt_tok_encoder_encode(&e, text, len, out);
    mt_encoder_release(&e);
    return st;
}

mt_status mt_tok_decode(const mt_tokenizer *tok, const int32_t *ids, size_t n, mt_buf *out) {
    if (!tok || (!ids && n) || !out) return mt_error(MT_ERR_INVALID_ARG, "decode: NULL argument");
    return mt_dec_run(tok, ids, n, out);
}

mt_status mt_tok_normalize(const mt_tokenizer *tok, const char *text, size_t len, mt_buf *out) {
    if (!tok || (!text && len) || !out) return mt_error(MT_ERR_INVALID_ARG, "normalize: NULL argument");
    size_t bad = 0;
    if (!mt_utf8_valid(text, len, &bad)) return mt_error(MT_ERR_UTF8, "normalize: invalid UTF-8 at byte %zu", bad);
    mt_tok_encoder e;
    mt_encoder_init(&e, tok);
    mt_status st = mt_norm_run(tok, &e, text, len, &e.norm);
    if (st == MT_OK) {
        mt_buf_clear(out);
        st = mt_buf_append(out, e.norm.p, e.norm.n);
    }
    mt_encoder_release(&e);
    return st;
}

mt_status mt_tok_pre_tokenize(const mt_tokenizer *tok, const char *normalized, size_t len, mt_tok_piece_fn fn,
                              void *user) {
    if (!tok || (!normalized && len) || !fn) return mt_error(MT_ERR_INVALID_ARG, "pre_tokenize: NULL argument");
    size_t bad = 0;
    if (!mt_utf8_valid(normalized, len, &bad)) return mt_error(MT_ERR_UTF8, "pre_tokenize: invalid UTF-8 at byte %zu", bad);
    mt_tok_encoder e;
    mt_encoder_init(&e, tok);
    mt_status st = mt_pt_run(tok, &e, normalized, len, 1);
    if (st == MT_OK) {
        const mt_pieces *pc = &e.pt.pcs[e.pt.cur];
        for (size_t i = 0; i < pc->n; i++) fn(e.pt.buf[e.pt.cur].p + pc->v[i].off, pc->v[i].len, user);
    }
    mt_encoder_release(&e);
    return st;
}
