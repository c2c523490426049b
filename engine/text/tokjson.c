/*
 * tokjson.c — Hugging Face tokenizer.json: loading (models BPE and WordLevel; the normalizers,
 * pre-tokenizers and decoders that `tokenizers` writes for them), compiling the pipeline sections
 * into steps, and saving in the layout `tokenizers` 0.2x writes (merges as pairs, vocab by id).
 * Components we do not implement are MT_ERR_UNSUPPORTED naming the type and its JSON path; the
 * sections are kept as parsed and written back verbatim, so load + save round-trips them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "text/tok_internal.h"
#include "text/unicode.h"

#define PATHMAX 160

static char *dupn(const char *s, size_t n) {
    char *d = mt_sys_malloc(n + 1);
    if (d) {
        if (n) memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int jbool(json_t *o, const char *key, int dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static mt_status jstr(const char *where, const char *path, json_t *o, const char *key, const char **s, size_t *n,
                      int required) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return mt_error(MT_ERR_FORMAT, "%s: %s.%s: missing", where, path, key);
        *s = NULL;
        *n = 0;
        return MT_OK;
    }
    if (!json_is_string(v)) return mt_error(MT_ERR_FORMAT, "%s: %s.%s: expected a string", where, path, key);
    *s = json_string_value(v);
    *n = json_string_length(v);
    return MT_OK;
}

static mt_status behavior_of(const char *where, const char *path, json_t *o, mt_split_behavior *b) {
    const char *s = NULL;
    size_t n = 0;
    MT_TRY(jstr(where, path, o, "behavior", &s, &n, 0));
    if (!s || !strcmp(s, "Isolated")) *b = MT_SPLIT_ISOLATED;
    else if (!strcmp(s, "Removed")) *b = MT_SPLIT_REMOVED;
    else if (!strcmp(s, "MergedWithPrevious")) *b = MT_SPLIT_MERGED_PREV;
    else if (!strcmp(s, "MergedWithNext")) *b = MT_SPLIT_MERGED_NEXT;
    else if (!strcmp(s, "Contiguous")) *b = MT_SPLIT_CONTIGUOUS;
    else return mt_error(MT_ERR_FORMAT, "%s: %s.behavior: unknown value \"%s\"", where, path, s);
    return MT_OK;
}

/* {"String": "..."} patterns; {"Regex": ...} needs a regex engine, which we do not carry. */
static mt_status pattern_of(const char *where, const char *path, json_t *o, char **pat, size_t *n) {
    json_t *p = json_object_get(o, "pattern");
    json_t *s = json_object_get(p, "String");
    if (json_is_string(s)) {
        *n = json_string_length(s);
        *pat = dupn(json_string_value(s), *n);
        return *pat ? MT_OK : mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
    }
    if (json_object_get(p, "Regex"))
        return mt_error(MT_ERR_UNSUPPORTED, "%s: %s.pattern: Regex patterns are not supported (only String)", where, path);
    return mt_error(MT_ERR_FORMAT, "%s: %s.pattern: expected {\"String\": ...}", where, path);
}

static mt_status prepend_of(const char *where, const char *path, json_t *o, mt_prepend_scheme *p) {
    const char *s = NULL;
    size_t n = 0;
    MT_TRY(jstr(where, path, o, "prepend_scheme", &s, &n, 0));
    if (s) {
        if (!strcmp(s, "always")) *p = MT_PREPEND_ALWAYS;
        else if (!strcmp(s, "never")) *p = MT_PREPEND_NEVER;
        else if (!strcmp(s, "first")) *p = MT_PREPEND_FIRST;
        else return mt_error(MT_ERR_FORMAT, "%s: %s.prepend_scheme: unknown value \"%s\"", where, path, s);
    } else {
        *p = jbool(o, "add_prefix_space", 1) ? MT_PREPEND_ALWAYS : MT_PREPEND_NEVER; /* before 0.14 */
    }
    return MT_OK;
}

static mt_status replacement_of(const char *where, const char *path, json_t *o, char *repl, size_t *len) {
    const char *s = NULL;
    size_t n = 0;
    MT_TRY(jstr(where, path, o, "replacement", &s, &n, 0));
    if (!s) s = "\xE2\x96\x81", n = 3; /* ▁ */
    uint32_t cp = 0;
    if (n == 0 || n > 4 || mt_utf8_decode(s, n, &cp) != n)
        return mt_error(MT_ERR_FORMAT, "%s: %s.replacement: expected one character", where, path);
    memcpy(repl, s, n);
    *len = n;
    return MT_OK;
}

/* ---- normalizer ---- */

static mt_status add_norm(mt_tokenizer *tok, mt_norm_step st, const char *where) {
    mt_norm_step *v = mt_sys_realloc(tok->norm, (tok->n_norm + 1) * sizeof *v);
    if (!v) return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
    tok->norm = v;
    v[tok->n_norm++] = st;
    return MT_OK;
}

static mt_status compile_norm(mt_tokenizer *tok, json_t *j, const char *where, const char *path) {
    if (!j || json_is_null(j)) return MT_OK;
    const char *type = NULL;
    size_t tn = 0;
    if (!json_is_object(j)) return mt_error(MT_ERR_FORMAT, "%s: %s: expected an object", where, path);
    MT_TRY(jstr(where, path, j, "type", &type, &tn, 1));
    mt_norm_step st;
    memset(&st, 0, sizeof st);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(j, "normalizers");
        if (!json_is_array(arr)) return mt_error(MT_ERR_FORMAT, "%s: %s.normalizers: expected an array", where, path);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char sub[PATHMAX];
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", path, i);
            MT_TRY(compile_norm(tok, json_array_get(arr, i), where, sub));
        }
        return MT_OK;
    }
    if (!strcmp(type, "NFC")) st.kind = MT_NORM_NFC;
    else if (!strcmp(type, "NFD")) st.kind = MT_NORM_NFD;
    else if (!strcmp(type, "NFKC")) st.kind = MT_NORM_NFKC;
    else if (!strcmp(type, "NFKD")) st.kind = MT_NORM_NFKD;
    else if (!strcmp(type, "Lowercase")) st.kind = MT_NORM_LOWERCASE;
    else if (!strcmp(type, "StripAccents")) st.kind = MT_NORM_STRIP_ACCENTS;
    else if (!strcmp(type, "Strip")) {
        st.kind = MT_NORM_STRIP;
        st.left = jbool(j, "strip_left", 1);
        st.right = jbool(j, "strip_right", 1);
    } else if (!strcmp(type, "Replace")) {
        st.kind = MT_NORM_REPLACE;
        MT_TRY(pattern_of(where, path, j, &st.pattern, &st.pattern_len));
        const char *c = NULL;
        size_t cn = 0;
        mt_status s2 = jstr(where, path, j, "content", &c, &cn, 1);
        if (s2 == MT_OK && !(st.content = dupn(c, cn))) s2 = mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
        st.content_len = cn;
        if (s2 != MT_OK) {
            mt_sys_free(st.pattern);
            return s2;
        }
    } else if (!strcmp(type, "Prepend")) {
        st.kind = MT_NORM_PREPEND;
        const char *c = NULL;
        size_t cn = 0;
        MT_TRY(jstr(where, path, j, "prepend", &c, &cn, 1));
        if (!(st.content = dupn(c, cn))) return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
        st.content_len = cn;
    } else {
        return mt_error(MT_ERR_UNSUPPORTED, "%s: %s: normalizer type \"%s\" is not supported", where, path, type);
    }
    mt_status s3 = add_norm(tok, st, where);
    if (s3 != MT_OK) {
        mt_sys_free(st.pattern);
        mt_sys_free(st.content);
    }
    return s3;
}

/* ---- pre-tokenizer ---- */

static mt_status add_pt(mt_tokenizer *tok, mt_pt_step st, const char *where) {
    mt_pt_step *v = mt_sys_realloc(tok->pt, (tok->n_pt + 1) * sizeof *v);
    if (!v) {
        mt_sys_free(st.pattern);
        return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
    }
    tok->pt = v;
    v[tok->n_pt++] = st;
    return MT_OK;
}

static mt_status compile_pt(mt_tokenizer *tok, json_t *j, const char *where, const char *path) {
    if (!j || json_is_null(j)) return MT_OK;
    if (!json_is_object(j)) return mt_error(MT_ERR_FORMAT, "%s: %s: expected an object", where, path);
    const char *type = NULL;
    size_t tn = 0;
    MT_TRY(jstr(where, path, j, "type", &type, &tn, 1));
    mt_pt_step st;
    memset(&st, 0, sizeof st);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(j, "pretokenizers");
        if (!json_is_array(arr)) return mt_error(MT_ERR_FORMAT, "%s: %s.pretokenizers: expected an array", where, path);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char sub[PATHMAX];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", path, i);
            MT_TRY(compile_pt(tok, json_array_get(arr, i), where, sub));
        }
        return MT_OK;
    }
    if (!strcmp(type, "Whitespace")) st.kind = MT_PT_WHITESPACE;
    else if (!strcmp(type, "WhitespaceSplit")) st.kind = MT_PT_WHITESPACE_SPLIT;
    else if (!strcmp(type, "BertPreTokenizer")) st.kind = MT_PT_BERT;
    else if (!strcmp(type, "Digits")) {
        st.kind = MT_PT_DIGITS;
        st.individual_digits = jbool(j, "individual_digits", 0);
    } else if (!strcmp(type, "Punctuation")) {
        st.kind = MT_PT_PUNCTUATION;
        MT_TRY(behavior_of(where, path, j, &st.behavior));
    } else if (!strcmp(type, "Metaspace")) {
        st.kind = MT_PT_METASPACE;
        MT_TRY(replacement_of(where, path, j, st.repl, &st.repl_len));
        MT_TRY(prepend_of(where, path, j, &st.prepend));
        st.split = jbool(j, "split", 1);
    } else if (!strcmp(type, "ByteLevel")) {
        st.kind = MT_PT_BYTELEVEL;
        st.add_prefix_space = jbool(j, "add_prefix_space", 1);
        st.use_regex = jbool(j, "use_regex", 1);
    } else if (!strcmp(type, "CharDelimiterSplit")) {
        st.kind = MT_PT_CHAR_DELIMITER;
        const char *d = NULL;
        size_t dn = 0;
        uint32_t cp = 0;
        MT_TRY(jstr(where, path, j, "delimiter", &d, &dn, 1));
        if (!dn || mt_utf8_decode(d, dn, &cp) != dn)
            return mt_error(MT_ERR_FORMAT, "%s: %s.delimiter: expected one character", where, path);
        if (!(st.pattern = dupn(d, dn))) return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
        st.pattern_len = dn;
    } else if (!strcmp(type, "Split")) {
        st.kind = MT_PT_SPLIT;
        MT_TRY(behavior_of(where, path, j, &st.behavior));
        st.invert = jbool(j, "invert", 0);
        MT_TRY(pattern_of(where, path, j, &st.pattern, &st.pattern_len));
    } else {
        return mt_error(MT_ERR_UNSUPPORTED, "%s: %s: pre-tokenizer type \"%s\" is not supported", where, path, type);
    }
    return add_pt(tok, st, where);
}

/* ---- decoder ---- */

static mt_status add_dec(mt_tokenizer *tok, mt_dec_step st, const char *where) {
    mt_dec_step *v = mt_sys_realloc(tok->dec, (tok->n_dec + 1) * sizeof *v);
    if (!v) {
        mt_sys_free(st.a);
        mt_sys_free(st.b);
        return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
    }
    tok->dec = v;
    v[tok->n_dec++] = st;
    return MT_OK;
}

static mt_status compile_dec(mt_tokenizer *tok, json_t *j, const char *where, const char *path) {
    if (!j || json_is_null(j)) return MT_OK;
    if (!json_is_object(j)) return mt_error(MT_ERR_FORMAT, "%s: %s: expected an object", where, path);
    tok->has_decoder = 1;
    const char *type = NULL;
    size_t tn = 0;
    MT_TRY(jstr(where, path, j, "type", &type, &tn, 1));
    mt_dec_step st;
    memset(&st, 0, sizeof st);
    const char *s = NULL;
    size_t n = 0;
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(j, "decoders");
        if (!json_is_array(arr)) return mt_error(MT_ERR_FORMAT, "%s: %s.decoders: expected an array", where, path);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char sub[PATHMAX];
            snprintf(sub, sizeof sub, "%s.decoders[%zu]", path, i);
            MT_TRY(compile_dec(tok, json_array_get(arr, i), where, sub));
        }
        return MT_OK;
    }
    if (!strcmp(type, "Metaspace")) {
        st.kind = MT_DEC_METASPACE;
        MT_TRY(replacement_of(where, path, j, st.repl, &st.repl_len));
        MT_TRY(prepend_of(where, path, j, &st.prepend));
    } else if (!strcmp(type, "ByteLevel")) {
        st.kind = MT_DEC_BYTELEVEL;
    } else if (!strcmp(type, "Fuse")) {
        st.kind = MT_DEC_FUSE;
    } else if (!strcmp(type, "ByteFallback")) {
        st.kind = MT_DEC_BYTE_FALLBACK;
    } else if (!strcmp(type, "BPEDecoder")) {
        st.kind = MT_DEC_BPE;
        MT_TRY(jstr(where, path, j, "suffix", &s, &n, 0));
        if (!s) s = "</w>", n = 4;
        if (!(st.a = dupn(s, n))) return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
        st.a_len = n;
    } else if (!strcmp(type, "WordPiece")) {
        st.kind = MT_DEC_WORDPIECE;
        MT_TRY(jstr(where, path, j, "prefix", &s, &n, 0));
        if (!s) s = "##", n = 2;
        if (!(st.a = dupn(s, n))) return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
        st.a_len = n;
        st.cleanup = jbool(j, "cleanup", 1);
    } else if (!strcmp(type, "Replace")) {
        st.kind = MT_DEC_REPLACE;
        MT_TRY(pattern_of(where, path, j, &st.a, &st.a_len));
        mt_status s2 = jstr(where, path, j, "content", &s, &n, 1);
        if (s2 == MT_OK && !(st.b = dupn(s, n))) s2 = mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
        st.b_len = n;
        if (s2 != MT_OK) {
            mt_sys_free(st.a);
            return s2;
        }
    } else if (!strcmp(type, "Strip")) {
        st.kind = MT_DEC_STRIP;
        MT_TRY(jstr(where, path, j, "content", &s, &n, 1));
        uint32_t cp = 0;
        if (!n || mt_utf8_decode(s, n, &cp) != n)
            return mt_error(MT_ERR_FORMAT, "%s: %s.content: expected one character", where, path);
        if (!(st.a = dupn(s, n))) return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
        st.a_len = n;
        st.start = (int)json_integer_value(json_object_get(j, "start"));
        st.stop = (int)json_integer_value(json_object_get(j, "stop"));
    } else {
        return mt_error(MT_ERR_UNSUPPORTED, "%s: %s: decoder type \"%s\" is not supported", where, path, type);
    }
    return add_dec(tok, st, where);
}

mt_status mt_tok_compile_pipeline(mt_tokenizer *tok, const char *where) {
    MT_TRY(compile_norm(tok, tok->j_normalizer, where, "normalizer"));
    MT_TRY(compile_pt(tok, tok->j_pre_tokenizer, where, "pre_tokenizer"));
    MT_TRY(compile_dec(tok, tok->j_decoder, where, "decoder"));
    return MT_OK;
}

/* ---- model ---- */

static mt_status load_vocab(mt_tokenizer *tok, json_t *vocab, const char *where) {
    if (!json_is_object(vocab)) return mt_error(MT_ERR_FORMAT, "%s: model.vocab: expected an object", where);
    MT_TRY(mt_strmap_init(&tok->vocab, json_object_size(vocab) + 16));
    const char *key = NULL;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) > INT32_MAX - 1)
            return mt_error(MT_ERR_FORMAT, "%s: model.vocab[\"%s\"]: expected an id >= 0", where, key);
        size_t idx = 0;
        int added = 0;
        /* jansson keys are NUL-terminated; a token with a NUL inside is not representable there */
        MT_TRY(mt_strmap_upsert(&tok->vocab, key, strlen(key), json_integer_value(val), &idx, &added));
        tok->vocab.ents[idx].val = json_integer_value(val);
    }
    tok->model_vocab_n = tok->vocab.n;
    return MT_OK;
}

static mt_status token_id(mt_tokenizer *tok, const char *s, size_t n, const char *where, size_t rank, int32_t *id) {
    int64_t i = mt_strmap_find(&tok->vocab, s, n);
    if (i < 0) return mt_error(MT_ERR_FORMAT, "%s: model.merges[%zu]: token \"%.*s\" is not in the vocabulary", where, rank, (int)n, s);
    *id = (int32_t)tok->vocab.ents[i].val;
    return MT_OK;
}

static mt_status load_merges(mt_tokenizer *tok, json_t *merges, const char *where) {
    if (!merges || json_is_null(merges)) merges = NULL;
    else if (!json_is_array(merges)) return mt_error(MT_ERR_FORMAT, "%s: model.merges: expected an array", where);
    size_t n = merges ? json_array_size(merges) : 0;
    MT_TRY(mt_u64map_init(&tok->merges, n + 16));
    tok->merge_a = mt_sys_calloc(n + 1, sizeof(char *));
    tok->merge_b = mt_sys_calloc(n + 1, sizeof(char *));
    if (!tok->merge_a || !tok->merge_b) return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
    size_t plen = tok->cont_prefix ? strlen(tok->cont_prefix) : 0;
    mt_buf joined = {0};
    mt_status st = MT_OK;
    for (size_t r = 0; r < n && st == MT_OK; r++) {
        json_t *m = json_array_get(merges, r);
        const char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        if (json_is_string(m)) {
            /* "a b": exactly one space, as `tokenizers` requires */
            const char *s = json_string_value(m), *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                st = mt_error(MT_ERR_FORMAT, "%s: model.merges[%zu]: expected \"a b\"", where, r);
                break;
            }
            a = s, al = (size_t)(sp - s), b = sp + 1, bl = strlen(sp + 1);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0)), al = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1)), bl = json_string_length(json_array_get(m, 1));
        } else {
            st = mt_error(MT_ERR_FORMAT, "%s: model.merges[%zu]: expected [\"a\", \"b\"] or \"a b\"", where, r);
            break;
        }
        int32_t ia = 0, ib = 0, in = 0;
        if ((st = token_id(tok, a, al, where, r, &ia)) != MT_OK) break;
        if ((st = token_id(tok, b, bl, where, r, &ib)) != MT_OK) break;
        mt_buf_clear(&joined);
        st = mt_buf_append(&joined, a, al);
        size_t skip = plen && bl >= plen && memcmp(b, tok->cont_prefix, plen) == 0 ? plen : 0;
        if (st == MT_OK) st = mt_buf_append(&joined, b + skip, bl - skip);
        if (st != MT_OK) break;
        if ((st = token_id(tok, joined.p, joined.n, where, r, &in)) != MT_OK) break;
        int64_t *v = mt_u64map_upsert(&tok->merges, ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib, 0, NULL);
        if (!v) {
            st = mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
            break;
        }
        *v = ((int64_t)r << 32) | (uint32_t)in; /* a repeated pair keeps its last rank, like a HashMap collect */
        tok->merge_a[r] = dupn(a, al);
        tok->merge_b[r] = dupn(b, bl);
        tok->n_merges = r + 1;
        if (!tok->merge_a[r] || !tok->merge_b[r]) st = mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
    }
    mt_buf_free(&joined);
    return st;
}

static mt_status opt_string(json_t *o, const char *key, char **dst, const char *where) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return MT_OK;
    if (!json_is_string(v)) return mt_error(MT_ERR_FORMAT, "%s: model.%s: expected a string or null", where, key);
    *dst = dupn(json_string_value(v), json_string_length(v));
    return *dst ? MT_OK : mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
}

static mt_status load_model(mt_tokenizer *tok, json_t *model, const char *where) {
    if (!json_is_object(model)) return mt_error(MT_ERR_FORMAT, "%s: model: expected an object", where);
    json_t *jt = json_object_get(model, "type");
    const char *type = json_string_value(jt);
    if (!type) { /* files written before the "type" tag: tell the models apart by their fields */
        if (json_object_get(model, "merges")) type = "BPE";
        else if (json_is_object(json_object_get(model, "vocab")) && json_object_get(model, "unk_token")) type = "WordLevel";
        else return mt_error(MT_ERR_FORMAT, "%s: model.type: missing", where);
    }
    if (!strcmp(type, "BPE")) {
        tok->kind = MT_TOK_BPE;
        json_t *d = json_object_get(model, "dropout");
        if (d && !json_is_null(d) && json_number_value(d) > 0.0)
            return mt_error(MT_ERR_UNSUPPORTED, "%s: model.dropout: BPE dropout (%g) is not supported; set it to null",
                            where, json_number_value(d));
        MT_TRY(opt_string(model, "unk_token", &tok->unk_token, where));
        MT_TRY(opt_string(model, "continuing_subword_prefix", &tok->cont_prefix, where));
        MT_TRY(opt_string(model, "end_of_word_suffix", &tok->eow_suffix, where));
        tok->fuse_unk = jbool(model, "fuse_unk", 0);
        tok->byte_fallback = jbool(model, "byte_fallback", 0);
        tok->ignore_merges = jbool(model, "ignore_merges", 0);
        MT_TRY(load_vocab(tok, json_object_get(model, "vocab"), where));
        MT_TRY(load_merges(tok, json_object_get(model, "merges"), where));
    } else if (!strcmp(type, "WordLevel")) {
        tok->kind = MT_TOK_WORDLEVEL;
        MT_TRY(opt_string(model, "unk_token", &tok->unk_token, where));
        MT_TRY(load_vocab(tok, json_object_get(model, "vocab"), where));
        MT_TRY(mt_u64map_init(&tok->merges, 16));
    } else {
        return mt_error(MT_ERR_UNSUPPORTED, "%s: model.type: model \"%s\" is not supported (BPE and WordLevel are)", where, type);
    }
    tok->unk_id = -1;
    if (tok->unk_token) {
        int64_t i = mt_strmap_find(&tok->vocab, tok->unk_token, strlen(tok->unk_token));
        if (i >= 0) tok->unk_id = (int32_t)tok->vocab.ents[i].val;
    }
    return MT_OK;
}

static mt_status load_added(mt_tokenizer *tok, json_t *arr, const char *where) {
    if (!arr || json_is_null(arr)) return MT_OK;
    if (!json_is_array(arr)) return mt_error(MT_ERR_FORMAT, "%s: added_tokens: expected an array", where);
    size_t n = json_array_size(arr);
    tok->added = mt_sys_calloc(n + 1, sizeof *tok->added);
    if (!tok->added) return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        json_t *id = json_object_get(o, "id"), *c = json_object_get(o, "content");
        if (!json_is_object(o) || !json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > INT32_MAX - 1 ||
            !json_is_string(c) || json_string_length(c) == 0)
            return mt_error(MT_ERR_FORMAT, "%s: added_tokens[%zu]: expected {\"id\": n, \"content\": \"...\", ...}", where, i);
        mt_added_token *a = &tok->added[tok->n_added];
        a->id = (int32_t)json_integer_value(id);
        a->len = json_string_length(c);
        a->content = dupn(json_string_value(c), a->len);
        if (!a->content) return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
        a->single_word = jbool(o, "single_word", 0);
        a->lstrip = jbool(o, "lstrip", 0);
        a->rstrip = jbool(o, "rstrip", 0);
        a->special = jbool(o, "special", 0);
        a->normalized = jbool(o, "normalized", !a->special);
        tok->n_added++;
    }
    return MT_OK;
}

static json_t *keep(json_t *root, const char *key) {
    json_t *v = json_object_get(root, key);
    return v ? json_incref(v) : json_null();
}

mt_status mt_tok_load_json(const char *json, size_t len, const char *where, mt_tokenizer **out) {
    if (!json || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_tok_load_json: NULL argument");
    if (!where) where = "tokenizer.json";
    json_error_t err;
    json_t *root = json_loadb(json, len, 0, &err);
    if (!root) return mt_error(MT_ERR_FORMAT, "%s: line %d, column %d: %s", where, err.line, err.column, err.text);
    mt_tokenizer *tok = NULL;
    mt_status st = MT_OK;
    if (!json_is_object(root)) st = mt_error(MT_ERR_FORMAT, "%s: expected a JSON object", where);
    if (st == MT_OK) st = mt_tok_alloc(&tok);
    if (st == MT_OK) {
        tok->j_truncation = keep(root, "truncation");
        tok->j_padding = keep(root, "padding");
        tok->j_normalizer = keep(root, "normalizer");
        tok->j_pre_tokenizer = keep(root, "pre_tokenizer");
        tok->j_post_processor = keep(root, "post_processor");
        tok->j_decoder = keep(root, "decoder");
        json_t *model = json_object_get(root, "model");
        if (!model) st = mt_error(MT_ERR_FORMAT, "%s: model: missing", where);
    }
    if (st == MT_OK) st = load_model(tok, json_object_get(root, "model"), where);
    if (st == MT_OK) st = load_added(tok, json_object_get(root, "added_tokens"), where);
    if (st == MT_OK) st = mt_tok_compile_pipeline(tok, where);
    if (st == MT_OK) st = mt_tok_finalize(tok, where);
    json_decref(root);
    if (st != MT_OK) {
        mt_tok_free(tok);
        return st;
    }
    *out = tok;
    return MT_OK;
}

mt_status mt_tok_load_file(const char *path, mt_tokenizer **out) {
    if (!path || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_tok_load_file: NULL argument");
    char *data = NULL;
    size_t len = 0;
    MT_TRY(mt_file_read_all(path, &data, &len));
    mt_status st = mt_tok_load_json(data, len, path, out);
    mt_sys_free(data);
    return st;
}

/* ---- save ---- */

static json_t *jstrn(const char *s, size_t n) { return json_stringn(s, n); }

mt_status mt_tok_to_json(const mt_tokenizer *tok, char **out, size_t *out_len) {
    if (!tok || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_tok_to_json: NULL argument");
    json_t *root = json_object();
    json_t *added = json_array();
    json_t *model = json_object();
    json_t *vocab = json_object();
    int ok = root && added && model && vocab;
    for (size_t i = 0; ok && i < tok->n_added; i++) {
        const mt_added_token *a = &tok->added[i];
        json_t *o = json_object();
        ok = o && !json_object_set_new(o, "id", json_integer(a->id)) &&
             !json_object_set_new(o, "content", jstrn(a->content, a->len)) &&
             !json_object_set_new(o, "single_word", json_boolean(a->single_word)) &&
             !json_object_set_new(o, "lstrip", json_boolean(a->lstrip)) &&
             !json_object_set_new(o, "rstrip", json_boolean(a->rstrip)) &&
             !json_object_set_new(o, "normalized", json_boolean(a->normalized)) &&
             !json_object_set_new(o, "special", json_boolean(a->special)) && !json_array_append_new(added, o);
    }
    /* the model vocabulary in id order, as `tokenizers` writes it */
    size_t nv = tok->vocab.n;
    size_t *order = mt_sys_malloc((nv + 1) * sizeof *order);
    ok = ok && order;
    if (ok) {
        /* counting sort by id over the id range */
        size_t maxid = 0;
        for (size_t i = 0; i < nv; i++)
            if ((size_t)tok->vocab.ents[i].val > maxid) maxid = (size_t)tok->vocab.ents[i].val;
        size_t *first = mt_sys_malloc((maxid + 2) * sizeof *first);
        ok = first != NULL;
        if (ok) {
            memset(first, 0, (maxid + 2) * sizeof *first);
            for (size_t i = 0; i < nv; i++) first[tok->vocab.ents[i].val + 1]++;
            for (size_t i = 1; i <= maxid + 1; i++) first[i] += first[i - 1];
            for (size_t i = 0; i < nv; i++) order[first[tok->vocab.ents[i].val]++] = i;
            mt_sys_free(first);
        }
    }
    for (size_t k = 0; ok && k < nv; k++) {
        const mt_strmap_entry *e = &tok->vocab.ents[order[k]];
        /* jansson keys stop at a NUL; such tokens cannot be written (they cannot be trained here) */
        ok = !json_object_setn_new(vocab, tok->vocab.pool + e->off, e->len, json_integer(e->val));
    }
    mt_sys_free(order);
    if (ok && tok->kind == MT_TOK_BPE) {
        json_t *merges = json_array();
        ok = merges != NULL;
        for (size_t r = 0; ok && r < tok->n_merges; r++) {
            json_t *pair = json_pack("[ss]", tok->merge_a[r], tok->merge_b[r]);
            ok = pair && !json_array_append_new(merges, pair);
        }
        ok = ok && !json_object_set_new(model, "type", json_string("BPE")) &&
             !json_object_set_new(model, "dropout", json_null()) &&
             !json_object_set_new(model, "unk_token", tok->unk_token ? json_string(tok->unk_token) : json_null()) &&
             !json_object_set_new(model, "continuing_subword_prefix", tok->cont_prefix ? json_string(tok->cont_prefix) : json_null()) &&
             !json_object_set_new(model, "end_of_word_suffix", tok->eow_suffix ? json_string(tok->eow_suffix) : json_null()) &&
             !json_object_set_new(model, "fuse_unk", json_boolean(tok->fuse_unk)) &&
             !json_object_set_new(model, "byte_fallback", json_boolean(tok->byte_fallback)) &&
             !json_object_set_new(model, "ignore_merges", json_boolean(tok->ignore_merges)) &&
             !json_object_set(model, "vocab", vocab) && !json_object_set_new(model, "merges", merges);
        if (!ok && merges && !json_object_get(model, "merges")) json_decref(merges);
    } else if (ok) {
        ok = !json_object_set_new(model, "type", json_string("WordLevel")) && !json_object_set(model, "vocab", vocab) &&
             !json_object_set_new(model, "unk_token", tok->unk_token ? json_string(tok->unk_token) : json_null());
    }
    ok = ok && !json_object_set_new(root, "version", json_string("1.0")) &&
         !json_object_set(root, "truncation", tok->j_truncation ? tok->j_truncation : json_null()) &&
         !json_object_set(root, "padding", tok->j_padding ? tok->j_padding : json_null()) &&
         !json_object_set(root, "added_tokens", added) &&
         !json_object_set(root, "normalizer", tok->j_normalizer ? tok->j_normalizer : json_null()) &&
         !json_object_set(root, "pre_tokenizer", tok->j_pre_tokenizer ? tok->j_pre_tokenizer : json_null()) &&
         !json_object_set(root, "post_processor", tok->j_post_processor ? tok->j_post_processor : json_null()) &&
         !json_object_set(root, "decoder", tok->j_decoder ? tok->j_decoder : json_null()) &&
         !json_object_set(root, "model", model);
    char *text = ok ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(added);
    json_decref(vocab);
    json_decref(model);
    json_decref(root);
    if (!text) return mt_error(MT_ERR_NOMEM, "tokenizer.json: out of memory while writing");
    size_t n = strlen(text);
    char *copy = mt_sys_malloc(n + 2);
    if (!copy) {
        free(text);
        return mt_error(MT_ERR_NOMEM, "tokenizer.json: out of memory while writing");
    }
    memcpy(copy, text, n);
    free(text); /* json_dumps allocates with malloc */
    copy[n] = '\0';
    *out = copy;
    if (out_len) *out_len = n;
    return MT_OK;
}

mt_status mt_tok_save_file(const mt_tokenizer *tok, const char *path) {
    if (!tok || !path) return mt_error(MT_ERR_INVALID_ARG, "mt_tok_save_file: NULL argument");
    char *text = NULL;
    size_t n = 0;
    MT_TRY(mt_tok_to_json(tok, &text, &n));
    mt_status st = mt_file_write_atomic(path, text, n);
    mt_sys_free(text);
    return st;
}
