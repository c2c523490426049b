/*
 * tok_train.c — training a tokenizer on text: word counts through the tokenizer's own normalizer and
 * pre-tokenizer, then the BPE merge loop or the word-level vocabulary, each written to make exactly
 * the choices `tokenizers`' BpeTrainer / WordLevelTrainer make (same ids, same merges in the same
 * order), so a tokenizer trained here and one trained there on the same text are the same file.
 *
 * BPE, as BpeTrainer::do_train: special tokens get the first ids, then the alphabet sorted by code
 * point; pair counts and the words containing each pair are computed once; a max-heap of (count,
 * pair) entries — highest count first, the smaller pair (left id, then right id) first among equal
 * counts — is popped; an entry whose count is stale is pushed back with the current count; the
 * merge is applied to the words its entry lists; the pairs it creates are pushed with the words
 * that gained them. Stops at vocab_size tokens, or when the best count is below min_frequency.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "text/tok_internal.h"
#include "text/unicode.h"

static const char *const special_tokens[] = {"[PAD]", "[UNK]", "[SOS]", "[EOS]"};
#define N_SPECIAL 4

struct mt_tok_trainer {
    mt_tok_train_options o;
    mt_tokenizer *tok; /* pipeline compiled; model filled by finish */
    mt_tok_encoder enc;
    mt_strmap words;   /* pre-tokenized word -> count */
};

void mt_tok_train_options_default(mt_tok_train_options *o, mt_tok_model model) {
    memset(o, 0, sizeof *o);
    o->model = model;
    o->vocab_size = model == MT_TOK_BPE ? 16000 : 30000;
    o->min_frequency = 2;
    o->normalization = "nfkc";
    o->pre_tokenizer = model == MT_TOK_BPE ? "metaspace" : "whitespace";
}

/* ---- options ---- */

static const char *pick(const char *v, const char *const *allowed) {
    for (size_t i = 0; allowed[i]; i++)
        if (!strcmp(v, allowed[i])) return allowed[i];
    return NULL;
}

mt_status mt_tok_train_config_parse(const char *json, mt_tok_train_config *cfg) {
    if (!cfg) return mt_error(MT_ERR_INVALID_ARG, "tokenizer options: NULL config");
    memset(cfg, 0, sizeof *cfg);
    mt_tok_train_options_default(&cfg->tok, MT_TOK_BPE);
    if (!json || !*json) return MT_OK;
    json_error_t err;
    json_t *root = json_loads(json, 0, &err);
    if (!root) return mt_error(MT_ERR_FORMAT, "tokenizer options: line %d, column %d: %s", err.line, err.column, err.text);
    mt_status st = MT_OK;
    if (!json_is_object(root)) st = mt_error(MT_ERR_CONFIG, "tokenizer options: expected a JSON object");
    /* the model first: the other defaults depend on it */
    json_t *m = json_object_get(root, "model");
    if (st == MT_OK && m) {
        const char *s = json_string_value(m);
        if (s && (!strcmp(s, "bpe") || !strcmp(s, "BPE"))) mt_tok_train_options_default(&cfg->tok, MT_TOK_BPE);
        else if (s && (!strcmp(s, "wordlevel") || !strcmp(s, "WordLevel") || !strcmp(s, "word")))
            mt_tok_train_options_default(&cfg->tok, MT_TOK_WORDLEVEL);
        else st = mt_error(MT_ERR_CONFIG, "tokenizer options: \"model\": expected \"bpe\" or \"wordlevel\"");
    }
    static const char *const norms[] = {"nfkc", "nfc", "nfd", "nfkd", "none", NULL};
    static const char *const pts[] = {"metaspace", "whitespace", "whitespace_split", "bytelevel", NULL};
    static const char *const fmts[] = {"auto", "tsv", "jsonl", "parallel", NULL};
    const char *key = NULL;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (st != MT_OK) break;
        if (!strcmp(key, "model")) continue;
        if (!strcmp(key, "vocab_size") || !strcmp(key, "min_frequency") || !strcmp(key, "limit_alphabet")) {
            if (!json_is_integer(v) || json_integer_value(v) < 0) {
                st = mt_error(MT_ERR_CONFIG, "tokenizer options: \"%s\": expected an integer >= 0", key);
                break;
            }
            json_int_t x = json_integer_value(v);
            if (!strcmp(key, "vocab_size")) {
                if (x < N_SPECIAL + 1 || x > INT32_MAX) {
                    st = mt_error(MT_ERR_CONFIG, "tokenizer options: \"vocab_size\": %lld is out of range (5..2^31-1)", (long long)x);
                    break;
                }
                cfg->tok.vocab_size = (size_t)x;
            } else if (!strcmp(key, "min_frequency")) {
                cfg->tok.min_frequency = (uint64_t)x;
            } else {
                cfg->tok.limit_alphabet = (size_t)x;
            }
        } else if (!strcmp(key, "lowercase") || !strcmp(key, "individual_digits") || !strcmp(key, "skip_bad_lines")) {
            if (!json_is_boolean(v)) {
                st = mt_error(MT_ERR_CONFIG, "tokenizer options: \"%s\": expected true or false", key);
                break;
            }
            int b = json_is_true(v);
            if (!strcmp(key, "lowercase")) cfg->tok.lowercase = b;
            else if (!strcmp(key, "individual_digits")) cfg->tok.individual_digits = b;
            else cfg->corpus.skip_bad_lines = b;
        } else if (!strcmp(key, "normalization") || !strcmp(key, "pre_tokenizer") || !strcmp(key, "format")) {
            const char *s = json_string_value(v);
            const char *const *allowed = !strcmp(key, "normalization") ? norms : !strcmp(key, "pre_tokenizer") ? pts : fmts;
            const char *p = s ? pick(s, allowed) : NULL;
            if (!p) {
                st = mt_error(MT_ERR_CONFIG, "tokenizer options: \"%s\": unknown value%s%s%s", key, s ? " \"" : "", s ? s : "", s ? "\"" : "");
                break;
            }
            if (!strcmp(key, "normalization")) cfg->tok.normalization = p;
            else if (!strcmp(key, "pre_tokenizer")) cfg->tok.pre_tokenizer = p;
            else cfg->corpus.format = (mt_corpus_format)(p == fmts[0] ? MT_CORPUS_AUTO : p == fmts[1] ? MT_CORPUS_TSV
                                                         : p == fmts[2] ? MT_CORPUS_JSONL : MT_CORPUS_PARALLEL);
        } else if (!strcmp(key, "src_lang") || !strcmp(key, "tgt_lang")) {
            const char *s = json_string_value(v);
            char *dst = !strcmp(key, "src_lang") ? cfg->src_key : cfg->tgt_key;
            if (!s || !*s || strlen(s) >= sizeof cfg->src_key) {
                st = mt_error(MT_ERR_CONFIG, "tokenizer options: \"%s\": expected a language key of 1..63 bytes", key);
                break;
            }
            strcpy(dst, s);
        } else {
            st = mt_error(MT_ERR_CONFIG, "tokenizer options: unknown key \"%s\"", key);
        }
    }
    json_decref(root);
    cfg->corpus.src_key = cfg->src_key[0] ? cfg->src_key : NULL;
    cfg->corpus.tgt_key = cfg->tgt_key[0] ? cfg->tgt_key : NULL;
    return st;
}

/* ---- pipeline of a trained tokenizer, as tokenizer.json sections ---- */

static mt_status build_pipeline(mt_tokenizer *tok, const mt_tok_train_options *o) {
    const char *nf = o->normalization ? o->normalization : "nfkc";
    json_t *unicode = NULL;
    if (!strcmp(nf, "nfkc")) unicode = json_pack("{ss}", "type", "NFKC");
    else if (!strcmp(nf, "nfc")) unicode = json_pack("{ss}", "type", "NFC");
    else if (!strcmp(nf, "nfd")) unicode = json_pack("{ss}", "type", "NFD");
    else if (!strcmp(nf, "nfkd")) unicode = json_pack("{ss}", "type", "NFKD");
    else if (strcmp(nf, "none") != 0) return mt_error(MT_ERR_CONFIG, "tokenizer options: \"normalization\": unknown value \"%s\"", nf);
    json_t *lower = o->lowercase ? json_pack("{ss}", "type", "Lowercase") : NULL;
    if (unicode && lower) tok->j_normalizer = json_pack("{ss s[oo]}", "type", "Sequence", "normalizers", unicode, lower);
    else if (unicode) tok->j_normalizer = unicode;
    else if (lower) tok->j_normalizer = lower;
    else tok->j_normalizer = json_null();

    const char *pt = o->pre_tokenizer ? o->pre_tokenizer : (o->model == MT_TOK_BPE ? "metaspace" : "whitespace");
    if (!strcmp(pt, "metaspace")) {
        tok->j_pre_tokenizer = json_pack(
            "{ss s[{ss ss ss sb} {ss ss} {ss sb}]}", "type", "Sequence", "pretokenizers", "type", "Metaspace",
            "replacement", "\xE2\x96\x81", "prepend_scheme", "always", "split", 1, "type", "Punctuation", "behavior",
            "Isolated", "type", "Digits", "individual_digits", o->individual_digits ? 1 : 0);
        tok->j_decoder = json_pack("{ss ss ss sb}", "type", "Metaspace", "replacement", "\xE2\x96\x81", "prepend_scheme",
                                   "always", "split", 1);
    } else if (!strcmp(pt, "bytelevel")) {
        /* no prefix space, so decode gives back the text exactly (no leading space to strip) */
        tok->j_pre_tokenizer = json_pack("{ss sb sb sb}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                                         "use_regex", 1);
        /* the decoder ignores these fields; `tokenizers` writes its defaults there, and so do we */
        tok->j_decoder = json_pack("{ss sb sb sb}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1,
                                   "use_regex", 1);
    } else if (!strcmp(pt, "whitespace")) {
        tok->j_pre_tokenizer = json_pack("{ss}", "type", "Whitespace");
        tok->j_decoder = json_null();
    } else if (!strcmp(pt, "whitespace_split")) {
        tok->j_pre_tokenizer = json_pack("{ss}", "type", "WhitespaceSplit");
        tok->j_decoder = json_null();
    } else {
        return mt_error(MT_ERR_CONFIG, "tokenizer options: \"pre_tokenizer\": unknown value \"%s\"", pt);
    }
    tok->j_truncation = json_null();
    tok->j_padding = json_null();
    tok->j_post_processor = json_null();
    if (!tok->j_normalizer || !tok->j_pre_tokenizer || !tok->j_decoder)
        return mt_error(MT_ERR_NOMEM, "tokenizer: out of memory");
    return mt_tok_compile_pipeline(tok, "trained tokenizer");
}

/* ---- feeding ---- */

mt_status mt_tok_trainer_new(const mt_tok_train_options *o, mt_tok_trainer **out) {
    if (!o || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_tok_trainer_new: NULL argument");
    if (o->vocab_size != 0 && o->vocab_size <= N_SPECIAL)
        return mt_error(MT_ERR_CONFIG, "tokenizer options: vocab_size %zu leaves no room past the %d special tokens",
                        o->vocab_size, N_SPECIAL);
    mt_tok_trainer *t = mt_sys_calloc(1, sizeof *t);
    if (!t) return mt_error(MT_ERR_NOMEM, "tokenizer trainer: out of memory");
    t->o = *o;
    if (!t->o.vocab_size) t->o.vocab_size = o->model == MT_TOK_BPE ? 16000 : 30000;
    mt_status st = mt_tok_alloc(&t->tok);
    if (st == MT_OK) {
        t->tok->kind = o->model;
        st = build_pipeline(t->tok, &t->o);
    }
    if (st == MT_OK) st = mt_strmap_init(&t->words, 1 << 16);
    if (st != MT_OK) {
        mt_tok_trainer_free(t);
        return st;
    }
    mt_encoder_init(&t->enc, t->tok);
    *out = t;
    return MT_OK;
}

void mt_tok_trainer_free(mt_tok_trainer *t) {
    if (!t) return;
    mt_encoder_release(&t->enc);
    mt_strmap_free(&t->words);
    mt_tok_free(t->tok);
    mt_sys_free(t);
}

mt_status mt_tok_trainer_feed(mt_tok_trainer *t, const char *text, size_t len) {
    if (!t || (!text && len)) return mt_error(MT_ERR_INVALID_ARG, "mt_tok_trainer_feed: NULL argument");
    size_t bad = 0;
    if (!mt_utf8_valid(text, len, &bad)) return mt_error(MT_ERR_UTF8, "tokenizer training: invalid UTF-8 at byte %zu", bad);
    mt_tok_encoder *e = &t->enc;
    MT_TRY(mt_norm_run(t->tok, e, text, len, &e->norm));
    MT_TRY(mt_pt_run(t->tok, e, e->norm.p, e->norm.n, 1));
    const mt_pieces *pc = &e->pt.pcs[e->pt.cur];
    const char *base = e->pt.buf[e->pt.cur].p;
    for (size_t i = 0; i < pc->n; i++) {
        size_t idx = 0;
        MT_TRY(mt_strmap_upsert(&t->words, base + pc->v[i].off, pc->v[i].len, 0, &idx, NULL));
        t->words.ents[idx].val++;
    }
    return MT_OK;
}

/* ---- the trained model into the tokenizer ---- */

static mt_status add_specials_as_added(mt_tokenizer *tok) {
    tok->added = mt_sys_calloc(N_SPECIAL, sizeof *tok->added);
    if (!tok->added) return mt_error(MT_ERR_NOMEM, "tokenizer: out of memory");
    for (int i = 0; i < N_SPECIAL; i++) {
        int64_t k = mt_strmap_find(&tok->vocab, special_tokens[i], strlen(special_tokens[i]));
        if (k < 0) continue; /* a vocab_size too small to hold it */
        mt_added_token *a = &tok->added[tok->n_added];
        a->id = (int32_t)tok->vocab.ents[k].val;
        a->len = strlen(special_tokens[i]);
        a->content = mt_sys_strdup(special_tokens[i]);
        if (!a->content) return mt_error(MT_ERR_NOMEM, "tokenizer: out of memory");
        a->special = 1;
        tok->n_added++;
    }
    tok->unk_token = mt_sys_strdup("[UNK]");
    if (!tok->unk_token) return mt_error(MT_ERR_NOMEM, "tokenizer: out of memory");
    int64_t k = mt_strmap_find(&tok->vocab, "[UNK]", 5);
    tok->unk_id = k < 0 ? -1 : (int32_t)tok->vocab.ents[k].val;
    return MT_OK;
}

/* ---- word-level ---- */

typedef struct wc_item {
    const char *s;
    uint32_t len;
    uint64_t count;
} wc_item;

static int wc_cmp(const void *pa, const void *pb) {
    const wc_item *a = pa, *b = pb;
    if (a->count != b->count) return a->count > b->count ? -1 : 1; /* more frequent first */
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->s, b->s, n); /* then by bytes, like Rust's String order */
    if (c) return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static mt_status train_wordlevel(mt_tok_trainer *t) {
    mt_tokenizer *tok = t->tok;
    size_t n = t->words.n;
    wc_item *items = mt_sys_malloc((n + 1) * sizeof *items);
    if (!items) return mt_error(MT_ERR_NOMEM, "tokenizer training: out of memory");
    for (size_t i = 0; i < n; i++) {
        items[i].s = mt_strmap_key(&t->words, i);
        items[i].len = t->words.ents[i].len;
        items[i].count = (uint64_t)t->words.ents[i].val;
    }
    qsort(items, n, sizeof *items, wc_cmp);
    mt_status st = mt_strmap_init(&tok->vocab, t->o.vocab_size + 16);
    size_t next = 0;
    /* ids in order; a word equal to a special token would take a second id: a HashMap collect keeps
     * the last one, and so does the overwrite below */
    for (int i = 0; st == MT_OK && i < N_SPECIAL && next < t->o.vocab_size; i++, next++) {
        size_t idx = 0;
        st = mt_strmap_upsert(&tok->vocab, special_tokens[i], strlen(special_tokens[i]), 0, &idx, NULL);
        if (st == MT_OK) tok->vocab.ents[idx].val = (int64_t)next;
    }
    for (size_t i = 0; st == MT_OK && i < n && next < t->o.vocab_size; i++) {
        if (items[i].count < t->o.min_frequency) continue;
        size_t idx = 0;
        st = mt_strmap_upsert(&tok->vocab, items[i].s, items[i].len, 0, &idx, NULL);
        if (st == MT_OK) tok->vocab.ents[idx].val = (int64_t)next++;
    }
    mt_sys_free(items);
    if (st == MT_OK) st = mt_u64map_init(&tok->merges, 16);
    tok->model_vocab_n = tok->vocab.n;
    return st;
}

/* ---- BPE ---- */

typedef struct posset {
    uint32_t *v;
    uint32_t n, cap;
} posset;

typedef struct heap_ent {
    uint64_t count;
    uint32_t a, b;
    uint32_t pos; /* index of its posset */
} heap_ent;

typedef struct bpe_state {
    /* tokens */
    mt_strmap w2id;     /* token -> id */
    uint64_t *tok_off;  /* id -> offset of its string in w2id's pool */
    uint32_t *tok_len;
    size_t n_tok, cap_tok;
    /* words as symbol arrays */
    int32_t *sym;       /* all words' symbols */
    uint64_t *w_off;    /* (n_words,) */
    uint32_t *w_len;    /* (n_words,) */
    int64_t *w_count;   /* (n_words,) */
    size_t n_words;
    /* pair statistics */
    mt_u64map pair_count; /* pair -> count */
    mt_u64map where;      /* pair -> posset index, during one step */
    uint64_t *where_keys;
    size_t where_n, where_cap;
    posset *ps;
    size_t ps_n, ps_cap;
    uint32_t *ps_free;
    size_t ps_free_n;
    heap_ent *heap;
    size_t heap_n, heap_cap;
    /* merges in order: (a, b, new id) */
    int32_t *mg;
    size_t mg_n, mg_cap;
} bpe_state;

static inline uint64_t pkey(uint32_t a, uint32_t b) { return ((uint64_t)a << 32) | b; }

static int ent_above(const heap_ent *x, const heap_ent *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static mt_status heap_push(bpe_state *s, heap_ent e) {
    if (s->heap_n == s->heap_cap) {
        size_t nc = s->heap_cap ? s->heap_cap * 2 : 1024;
        heap_ent *nh = mt_sys_realloc(s->heap, nc * sizeof *nh);
        if (!nh) return mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
        s->heap = nh;
        s->heap_cap = nc;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ent_above(&e, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
    return MT_OK;
}

static heap_ent heap_pop(bpe_state *s) {
    heap_ent top = s->heap[0];
    heap_ent last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const heap_ent *best = &last;
        if (l < n && ent_above(&s->heap[l], best)) m = l, best = &s->heap[l];
        if (r < n && ent_above(&s->heap[r], best)) m = r;
        if (m == i) break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n) s->heap[i] = last;
    return top;
}

static mt_status ps_new(bpe_state *s, uint32_t *idx) {
    if (s->ps_free_n) {
        *idx = s->ps_free[--s->ps_free_n];
        s->ps[*idx].n = 0;
        return MT_OK;
    }
    if (s->ps_n == s->ps_cap) {
        size_t nc = s->ps_cap ? s->ps_cap * 2 : 1024;
        posset *np = mt_sys_realloc(s->ps, nc * sizeof *np);
        uint32_t *nf = mt_sys_realloc(s->ps_free, nc * sizeof *nf);
        if (np) s->ps = np;
        if (nf) s->ps_free = nf;
        if (!np || !nf) return mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
        memset(s->ps + s->ps_cap, 0, (nc - s->ps_cap) * sizeof *np);
        s->ps_cap = nc;
    }
    *idx = (uint32_t)s->ps_n++;
    s->ps[*idx].n = 0;
    return MT_OK;
}

static void ps_release(bpe_state *s, uint32_t idx) {
    s->ps[idx].n = 0;
    s->ps_free[s->ps_free_n++] = idx;
}

static mt_status ps_add(bpe_state *s, uint32_t idx, uint32_t w) {
    posset *p = &s->ps[idx];
    if (p->n && p->v[p->n - 1] == w) return MT_OK; /* a word's additions come together: set semantics */
    if (p->n == p->cap) {
        uint32_t nc = p->cap ? p->cap * 2 : 4;
        uint32_t *nv = mt_sys_realloc(p->v, nc * sizeof *nv);
        if (!nv) return mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
        p->v = nv;
        p->cap = nc;
    }
    p->v[p->n++] = w;
    return MT_OK;
}

/* Records that word w gained pair (a, b) in this step (where_to_update). */
static mt_status where_add(bpe_state *s, uint64_t key, uint32_t w) {
    int added = 0;
    int64_t *v = mt_u64map_upsert(&s->where, key, -1, &added);
    if (!v) return mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
    if (added) {
        uint32_t idx = 0;
        MT_TRY(ps_new(s, &idx));
        *v = idx;
        if (s->where_n == s->where_cap) {
            size_t nc = s->where_cap ? s->where_cap * 2 : 1024;
            uint64_t *nk = mt_sys_realloc(s->where_keys, nc * sizeof *nk);
            if (!nk) return mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
            s->where_keys = nk;
            s->where_cap = nc;
        }
        s->where_keys[s->where_n++] = key;
    }
    return ps_add(s, (uint32_t)*v, w);
}

static mt_status count_add(bpe_state *s, uint64_t key, int64_t delta) {
    int64_t *c = mt_u64map_upsert(&s->pair_count, key, 0, NULL);
    if (!c) return mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
    *c += delta;
    return MT_OK;
}

/* Pushes an entry per pair recorded in `where` whose count is positive, then empties `where`. */
static mt_status where_drain(bpe_state *s) {
    mt_status st = MT_OK;
    for (size_t i = 0; i < s->where_n; i++) {
        uint64_t key = s->where_keys[i];
        int64_t *slot = mt_u64map_get(&s->where, key);
        uint32_t idx = (uint32_t)*slot;
        s->where_keys[i] = (uint64_t)(slot - s->where.vals); /* remember the slot to clear it below */
        int64_t *c = mt_u64map_get(&s->pair_count, key);
        int64_t cnt = c ? *c : 0;
        if (st == MT_OK && cnt > 0) {
            heap_ent e = {(uint64_t)cnt, (uint32_t)(key >> 32), (uint32_t)key, idx};
            st = heap_push(s, e);
        } else {
            ps_release(s, idx);
        }
    }
    /* Empty the map by clearing the used slots only (all lookups are done, so probe chains no
     * longer matter); a whole-table memset per merge would dominate the training time. */
    for (size_t i = 0; i < s->where_n; i++) s->where.keys[s->where_keys[i]] = MT_U64MAP_EMPTY;
    s->where.n = 0;
    s->where_n = 0;
    return st;
}

static mt_status tok_add(bpe_state *s, const char *str, size_t len, int32_t *id) {
    size_t idx = 0;
    int added = 0;
    MT_TRY(mt_strmap_upsert(&s->w2id, str, len, (int64_t)s->n_tok, &idx, &added));
    if (added) {
        if (s->n_tok == s->cap_tok) {
            size_t nc = s->cap_tok ? s->cap_tok * 2 : 1024;
            uint64_t *no = mt_sys_realloc(s->tok_off, nc * sizeof *no);
            uint32_t *nl = mt_sys_realloc(s->tok_len, nc * sizeof *nl);
            if (no) s->tok_off = no;
            if (nl) s->tok_len = nl;
            if (!no || !nl) return mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
            s->cap_tok = nc;
        }
        s->tok_off[s->n_tok] = s->w2id.ents[idx].off;
        s->tok_len[s->n_tok] = (uint32_t)len;
        s->n_tok++;
    }
    *id = (int32_t)s->w2id.ents[idx].val;
    return MT_OK;
}

typedef struct alpha_item {
    uint32_t cp;
    uint64_t count;
} alpha_item;

static int alpha_by_count(const void *pa, const void *pb) {
    const alpha_item *a = pa, *b = pb;
    if (a->count != b->count) return a->count < b->count ? -1 : 1;
    return a->cp < b->cp ? -1 : a->cp > b->cp;
}

static int alpha_by_cp(const void *pa, const void *pb) {
    const alpha_item *a = pa, *b = pb;
    return a->cp < b->cp ? -1 : a->cp > b->cp;
}

static void bpe_free(bpe_state *s) {
    mt_strmap_free(&s->w2id);
    mt_sys_free(s->tok_off);
    mt_sys_free(s->tok_len);
    mt_sys_free(s->sym);
    mt_sys_free(s->w_off);
    mt_sys_free(s->w_len);
    mt_sys_free(s->w_count);
    mt_u64map_free(&s->pair_count);
    mt_u64map_free(&s->where);
    mt_sys_free(s->where_keys);
    for (size_t i = 0; i < s->ps_n; i++) mt_sys_free(s->ps[i].v);
    mt_sys_free(s->ps);
    mt_sys_free(s->ps_free);
    mt_sys_free(s->heap);
    mt_sys_free(s->mg);
}

/* Merges (a, b) -> r in word w left to right, recording the pair changes (Word::merge). */
static mt_status merge_word(bpe_state *s, uint32_t w, int32_t a, int32_t b, int32_t r) {
    int32_t *sy = s->sym + s->w_off[w];
    uint32_t n = s->w_len[w];
    int64_t cnt = s->w_count[w];
    for (uint32_t i = 0; i < n; i++) {
        if (sy[i] != a || i + 1 >= n || sy[i + 1] != b) continue;
        if (i > 0) {
            MT_TRY(count_add(s, pkey((uint32_t)sy[i - 1], (uint32_t)a), -cnt));
            MT_TRY(count_add(s, pkey((uint32_t)sy[i - 1], (uint32_t)r), cnt));
            MT_TRY(where_add(s, pkey((uint32_t)sy[i - 1], (uint32_t)r), w));
        }
        sy[i] = r;
        memmove(sy + i + 1, sy + i + 2, (n - i - 2) * sizeof *sy);
        n--;
        if (i + 1 < n) {
            MT_TRY(count_add(s, pkey((uint32_t)b, (uint32_t)sy[i + 1]), -cnt));
            MT_TRY(count_add(s, pkey((uint32_t)r, (uint32_t)sy[i + 1]), cnt));
            MT_TRY(where_add(s, pkey((uint32_t)r, (uint32_t)sy[i + 1]), w));
        }
    }
    s->w_len[w] = n;
    return MT_OK;
}

static mt_status train_bpe_core(mt_tok_trainer *t, bpe_state *s) {
    const mt_strmap *words = &t->words;
    size_t nw = words->n;
    MT_TRY(mt_strmap_init(&s->w2id, t->o.vocab_size + 64));
    /* 1. special tokens */
    for (int i = 0; i < N_SPECIAL; i++) {
        int32_t id = 0;
        MT_TRY(tok_add(s, special_tokens[i], strlen(special_tokens[i]), &id));
    }
    /* 2. alphabet: characters with their total counts, ByteLevel's 256 when that is the scheme */
    mt_u64map alpha;
    MT_TRY(mt_u64map_init(&alpha, 1024));
    mt_status st = MT_OK;
    size_t total_syms = 0;
    for (size_t w = 0; w < nw && st == MT_OK; w++) {
        const char *p = mt_strmap_key(words, w);
        size_t n = words->ents[w].len;
        for (size_t i = 0; i < n;) {
            uint32_t cp = 0;
            size_t k = mt_utf8_decode(p + i, n - i, &cp);
            if (!k) k = 1, cp = (unsigned char)p[i];
            int64_t *c = mt_u64map_upsert(&alpha, cp, 0, NULL);
            if (!c) {
                st = mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
                break;
            }
            *c += words->ents[w].val;
            i += k;
            total_syms++;
        }
    }
    if (st == MT_OK && t->o.pre_tokenizer && !strcmp(t->o.pre_tokenizer, "bytelevel")) {
        for (int b = 0; b < 256 && st == MT_OK; b++) {
            int64_t *c = mt_u64map_upsert(&alpha, mt_bytelevel_b2u[b], 0, NULL);
            if (!c) st = mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
            else *c = INT64_MAX; /* initial alphabet: never removed by limit_alphabet */
        }
    }
    alpha_item *al = NULL;
    size_t na = 0;
    if (st == MT_OK) {
        al = mt_sys_malloc((alpha.n + 1) * sizeof *al);
        if (!al) st = mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
    }
    if (st == MT_OK) {
        for (size_t i = 0; i <= alpha.mask; i++)
            if (alpha.keys[i] != MT_U64MAP_EMPTY) al[na++] = (alpha_item){(uint32_t)alpha.keys[i], (uint64_t)alpha.vals[i]};
        size_t keep_from = 0;
        if (t->o.limit_alphabet && na > t->o.limit_alphabet) {
            qsort(al, na, sizeof *al, alpha_by_count);
            keep_from = na - t->o.limit_alphabet;
        }
        qsort(al + keep_from, na - keep_from, sizeof *al, alpha_by_cp);
        for (size_t i = keep_from; i < na && st == MT_OK; i++) {
            char enc[4];
            size_t el = mt_utf8_encode(al[i].cp, enc);
            int32_t id = 0;
            st = tok_add(s, enc, el, &id);
        }
    }
    mt_sys_free(al);
    mt_u64map_free(&alpha);
    MT_TRY(st);

    /* 3. words as symbol arrays (characters outside the alphabet are left out) */
    s->sym = mt_sys_malloc((total_syms + 1) * sizeof *s->sym);
    s->w_off = mt_sys_malloc((nw + 1) * sizeof *s->w_off);
    s->w_len = mt_sys_malloc((nw + 1) * sizeof *s->w_len);
    s->w_count = mt_sys_malloc((nw + 1) * sizeof *s->w_count);
    if (!s->sym || !s->w_off || !s->w_len || !s->w_count) return mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
    size_t used = 0;
    for (size_t w = 0; w < nw; w++) {
        const char *p = mt_strmap_key(words, w);
        size_t n = words->ents[w].len;
        s->w_off[w] = used;
        s->w_count[w] = words->ents[w].val;
        for (size_t i = 0; i < n;) {
            size_t k = mt_utf8_len((unsigned char)p[i]);
            if (k > n - i) k = n - i;
            int64_t id = mt_strmap_find(&s->w2id, p + i, k);
            if (id >= 0) s->sym[used++] = (int32_t)s->w2id.ents[id].val;
            i += k;
        }
        s->w_len[w] = (uint32_t)(used - s->w_off[w]);
    }
    s->n_words = nw;

    /* 4. pair counts and where each pair occurs */
    MT_TRY(mt_u64map_init(&s->pair_count, total_syms / 4 + 1024));
    MT_TRY(mt_u64map_init(&s->where, total_syms / 4 + 1024));
    for (size_t w = 0; w < nw; w++) {
        const int32_t *sy = s->sym + s->w_off[w];
        for (uint32_t i = 0; i + 1 < s->w_len[w]; i++) {
            uint64_t key = pkey((uint32_t)sy[i], (uint32_t)sy[i + 1]);
            MT_TRY(count_add(s, key, s->w_count[w]));
            MT_TRY(where_add(s, key, (uint32_t)w));
        }
    }
    MT_TRY(where_drain(s));
    /* the per-step map only ever holds the pairs of one merge: keep it small from now on */
    mt_u64map_free(&s->where);
    MT_TRY(mt_u64map_init(&s->where, 4096));

    /* 5. merges */
    mt_buf nt = {0};
    while (s->n_tok < t->o.vocab_size && s->heap_n) {
        heap_ent top = heap_pop(s);
        int64_t *c = mt_u64map_get(&s->pair_count, pkey(top.a, top.b));
        uint64_t cur = (uint64_t)(c ? *c : 0);
        if (top.count != cur) {
            top.count = cur;
            if ((st = heap_push(s, top)) != MT_OK) break;
            continue;
        }
        if (top.count < 1 || t->o.min_frequency > top.count) {
            ps_release(s, top.pos);
            break;
        }
        mt_buf_clear(&nt);
        st = mt_buf_append(&nt, s->w2id.pool + s->tok_off[top.a], s->tok_len[top.a]);
        if (st == MT_OK) st = mt_buf_append(&nt, s->w2id.pool + s->tok_off[top.b], s->tok_len[top.b]);
        int32_t nid = 0;
        if (st == MT_OK) st = tok_add(s, nt.p, nt.n, &nid);
        if (st != MT_OK) break;
        if (s->mg_n + 3 > s->mg_cap) {
            size_t ncap = s->mg_cap ? s->mg_cap * 2 : 3 * 4096;
            int32_t *nm = mt_sys_realloc(s->mg, ncap * sizeof *nm);
            if (!nm) {
                st = mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
                break;
            }
            s->mg = nm;
            s->mg_cap = ncap;
        }
        s->mg[s->mg_n++] = (int32_t)top.a;
        s->mg[s->mg_n++] = (int32_t)top.b;
        s->mg[s->mg_n++] = nid;
        /* a copy: merging allocates new position sets, which may move the array */
        const posset p = s->ps[top.pos];
        for (uint32_t k = 0; k < p.n && st == MT_OK; k++)
            st = merge_word(s, p.v[k], (int32_t)top.a, (int32_t)top.b, nid);
        ps_release(s, top.pos);
        if (st == MT_OK) st = where_drain(s);
        if (st != MT_OK) break;
    }
    mt_buf_free(&nt);
    return st;
}

static mt_status train_bpe(mt_tok_trainer *t) {
    bpe_state s;
    memset(&s, 0, sizeof s);
    mt_status st = train_bpe_core(t, &s);
    mt_tokenizer *tok = t->tok;
    /* vocabulary */
    if (st == MT_OK) st = mt_strmap_init(&tok->vocab, s.n_tok + 16);
    for (size_t i = 0; st == MT_OK && i < s.n_tok; i++)
        st = mt_strmap_upsert(&tok->vocab, s.w2id.pool + s.tok_off[i], s.tok_len[i], (int64_t)i, NULL, NULL);
    tok->model_vocab_n = tok->vocab.n;
    /* merges: a pair merged twice keeps its last rank (the model's HashMap does the same) */
    size_t nm = s.mg_n / 3;
    mt_u64map last;
    memset(&last, 0, sizeof last);
    if (st == MT_OK) st = mt_u64map_init(&last, nm + 16);
    for (size_t r = 0; st == MT_OK && r < nm; r++) {
        int64_t *v = mt_u64map_upsert(&last, pkey((uint32_t)s.mg[3 * r], (uint32_t)s.mg[3 * r + 1]), 0, NULL);
        if (!v) st = mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
        else *v = (int64_t)r;
    }
    if (st == MT_OK) st = mt_u64map_init(&tok->merges, nm + 16);
    if (st == MT_OK) {
        tok->merge_a = mt_sys_calloc(nm + 1, sizeof(char *));
        tok->merge_b = mt_sys_calloc(nm + 1, sizeof(char *));
        if (!tok->merge_a || !tok->merge_b) st = mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
    }
    for (size_t r = 0; st == MT_OK && r < nm; r++) {
        uint32_t a = (uint32_t)s.mg[3 * r], b = (uint32_t)s.mg[3 * r + 1];
        if ((size_t)*mt_u64map_get(&last, pkey(a, b)) != r) continue;
        size_t rank = tok->n_merges;
        int64_t *v = mt_u64map_upsert(&tok->merges, pkey(a, b), 0, NULL);
        tok->merge_a[rank] = mt_sys_malloc(s.tok_len[a] + 1);
        tok->merge_b[rank] = mt_sys_malloc(s.tok_len[b] + 1);
        if (!v || !tok->merge_a[rank] || !tok->merge_b[rank]) {
            tok->n_merges = rank + 1;
            st = mt_error(MT_ERR_NOMEM, "bpe training: out of memory");
            break;
        }
        *v = ((int64_t)rank << 32) | (uint32_t)s.mg[3 * r + 2];
        memcpy(tok->merge_a[rank], s.w2id.pool + s.tok_off[a], s.tok_len[a] + 1);
        memcpy(tok->merge_b[rank], s.w2id.pool + s.tok_off[b], s.tok_len[b] + 1);
        tok->n_merges = rank + 1;
    }
    mt_u64map_free(&last);
    bpe_free(&s);
    return st;
}

mt_status mt_tok_trainer_finish(mt_tok_trainer *t, mt_tokenizer **out) {
    if (!t || !out) {
        mt_tok_trainer_free(t);
        return mt_error(MT_ERR_INVALID_ARG, "mt_tok_trainer_finish: NULL argument");
    }
    mt_status st = t->o.model == MT_TOK_BPE ? train_bpe(t) : train_wordlevel(t);
    if (st == MT_OK) st = add_specials_as_added(t->tok);
    if (st == MT_OK) st = mt_tok_finalize(t->tok, "trained tokenizer");
    if (st == MT_OK) {
        *out = t->tok;
        t->tok = NULL;
    }
    mt_tok_trainer_free(t);
    return st;
}

mt_status mt_tok_train_corpora(const char *const *specs, size_t n_specs, const mt_tok_train_options *o,
                               const mt_corpus_options *copt, mt_tokenizer **out, mt_corpus_summary *summary) {
    if (!specs || !n_specs || !o || !out) return mt_error(MT_ERR_INVALID_ARG, "tokenizer training: no corpus given");
    mt_tok_trainer *t = NULL;
    MT_TRY(mt_tok_trainer_new(o, &t));
    mt_corpus_summary total;
    memset(&total, 0, sizeof total);
    mt_status st = MT_OK;
    for (size_t i = 0; i < n_specs && st == MT_OK; i++) {
        mt_corpus *c = NULL;
        if ((st = mt_corpus_open(specs[i], copt, &c)) != MT_OK) break;
        for (;;) {
            mt_pair p;
            int got = 0;
            if ((st = mt_corpus_next(c, &p, &got)) != MT_OK || !got) break;
            if ((st = mt_tok_trainer_feed(t, p.src, p.src_len)) != MT_OK ||
                (st = mt_tok_trainer_feed(t, p.tgt, p.tgt_len)) != MT_OK) {
                mt_error_prefix(st, "%s:%llu: ", p.file, (unsigned long long)p.line);
                break;
            }
        }
        mt_corpus_summary_add(&total, mt_corpus_get_summary(c));
        mt_corpus_close(c);
    }
    if (summary) *summary = total;
    if (st != MT_OK) {
        mt_tok_trainer_free(t);
        return st;
    }
    if (total.skipped) {
        char line[256];
        mt_corpus_summary_str(&total, line, sizeof line);
        mt_log(MT_LOG_WARN, "tokenizer training: %s; first: %s", line, total.first_bad);
    }
    return mt_tok_trainer_finish(t, out);
}
