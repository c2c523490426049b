/*
 * decoders.c — ids back to text: special tokens dropped, then the decoder chain of the tokenizer
 * (Metaspace, ByteLevel, BPEDecoder, WordPiece, Replace, Strip, Fuse, ByteFallback), each with the
 * semantics of its `tokenizers` namesake, over a list of token strings; the list is finally joined.
 */
#include <pthread.h>
#include <string.h>

#include "text/tok_internal.h"
#include "text/unicode.h"

typedef struct toklist {
    mt_buf b;
    size_t *off, *len;
    size_t n, cap;
} toklist;

static mt_status tl_push(toklist *t, const char *s, size_t n) {
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        size_t *o = mt_sys_realloc(t->off, nc * sizeof *o);
        if (!o) return mt_error(MT_ERR_NOMEM, "decode: out of memory");
        t->off = o;
        size_t *l = mt_sys_realloc(t->len, nc * sizeof *l);
        if (!l) return mt_error(MT_ERR_NOMEM, "decode: out of memory");
        t->len = l;
        t->cap = nc;
    }
    t->off[t->n] = t->b.n;
    t->len[t->n] = n;
    t->n++;
    return mt_buf_append(&t->b, s, n);
}

/* Appends to the last token (which must be the last thing in the buffer). */
static mt_status tl_extend(toklist *t, const char *s, size_t n) {
    t->len[t->n - 1] += n;
    return mt_buf_append(&t->b, s, n);
}

static void tl_reset(toklist *t) {
    mt_buf_clear(&t->b);
    t->n = 0;
}

static void tl_free(toklist *t) {
    mt_buf_free(&t->b);
    mt_sys_free(t->off);
    mt_sys_free(t->len);
}

/* String::from_utf8_lossy: each maximal ill-formed subsequence becomes one U+FFFD. */
static mt_status lossy_utf8(const unsigned char *s, size_t n, mt_buf *out) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c < 0x80) {
            MT_TRY(mt_buf_putc(out, (char)c));
            i++;
            continue;
        }
        size_t need = 0;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        }
        size_t k = 1;
        if (need) {
            if (i + 1 < n && s[i + 1] >= lo && s[i + 1] <= hi) {
                k = 2;
                while (k <= need && i + k < n && (s[i + k] & 0xC0) == 0x80) k++;
            }
        }
        if (need && k == need + 1) {
            MT_TRY(mt_buf_append(out, s + i, k));
        } else {
            MT_TRY(mt_buf_append(out, "\xEF\xBF\xBD", 3));
        }
        i += k; /* a truncated sequence is replaced as one unit */
    }
    return MT_OK;
}

static int32_t b2u_inv[324];
static pthread_once_t b2u_once = PTHREAD_ONCE_INIT;

static void b2u_init(void) {
    for (int i = 0; i < 324; i++) b2u_inv[i] = -1;
    for (int b = 0; b < 256; b++) b2u_inv[mt_bytelevel_b2u[b]] = b;
}

/* The byte a ByteLevel character stands for, -1 for other characters. */
static int32_t b2u_inverse(uint32_t cp) {
    pthread_once(&b2u_once, b2u_init);
    return cp < 324 ? b2u_inv[cp] : -1;
}

static mt_status dec_step(const mt_dec_step *d, const toklist *in, toklist *out, mt_buf *tmp) {
    tl_reset(out);
    switch (d->kind) {
    case MT_DEC_METASPACE:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = in->b.p + in->off[i];
            size_t n = in->len[i];
            MT_TRY(tl_push(out, "", 0));
            size_t a = 0;
            for (size_t j = 0; j + d->repl_len <= n;) {
                if (memcmp(s + j, d->repl, d->repl_len) == 0) {
                    MT_TRY(tl_extend(out, s + a, j - a));
                    /* In the first token every replacement character goes (the prepended one). */
                    if (!(i == 0 && d->prepend != MT_PREPEND_NEVER)) MT_TRY(tl_extend(out, " ", 1));
                    j += d->repl_len;
                    a = j;
                } else {
                    j++;
                }
            }
            MT_TRY(tl_extend(out, s + a, n - a));
        }
        return MT_OK;
    case MT_DEC_BYTELEVEL: {
        mt_buf_clear(tmp);
        for (size_t i = 0; i < in->n; i++) {
            const char *s = in->b.p + in->off[i];
            size_t n = in->len[i], start = tmp->n;
            int all = 1;
            for (size_t j = 0; j < n;) {
                uint32_t cp = 0;
                size_t k = mt_utf8_decode(s + j, n - j, &cp);
                int32_t b = k ? b2u_inverse(cp) : -1;
                if (b < 0) {
                    all = 0;
                    break;
                }
                MT_TRY(mt_buf_putc(tmp, (char)b));
                j += k;
            }
            if (!all) { /* a token with a character outside the byte alphabet keeps its own bytes */
                tmp->n = start;
                MT_TRY(mt_buf_append(tmp, s, n));
            }
        }
        MT_TRY(tl_push(out, "", 0));
        mt_buf lossy = {0};
        mt_status st = lossy_utf8((const unsigned char *)tmp->p, tmp->n, &lossy);
        if (st == MT_OK) st = tl_extend(out, lossy.p ? lossy.p : "", lossy.n);
        mt_buf_free(&lossy);
        return st;
    }
    case MT_DEC_BPE:
        for (size_t i = 0; i < in->n; i++) {
            mt_buf_clear(tmp);
            int last = i + 1 == in->n;
            MT_TRY(mt_buf_append_replaced(tmp, in->b.p + in->off[i], in->len[i], d->a, d->a_len, last ? "" : " ",
                                          last ? 0 : 1));
            MT_TRY(tl_push(out, tmp->p, tmp->n));
        }
        return MT_OK;
    case MT_DEC_WORDPIECE:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = in->b.p + in->off[i];
            size_t n = in->len[i];
            mt_buf_clear(tmp);
            if (i != 0) {
                if (n >= d->a_len && memcmp(s, d->a, d->a_len) == 0) {
                    s += d->a_len;
                    n -= d->a_len;
                } else {
                    MT_TRY(mt_buf_putc(tmp, ' '));
                }
            }
            MT_TRY(mt_buf_append(tmp, s, n));
            if (d->cleanup) {
                static const char *const rules[][2] = {
                    {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
                    {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
                };
                for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
                    mt_buf t2 = {0};
                    mt_status st = mt_buf_append_replaced(&t2, tmp->p, tmp->n, rules[r][0], strlen(rules[r][0]),
                                                          rules[r][1], strlen(rules[r][1]));
                    if (st != MT_OK) {
                        mt_buf_free(&t2);
                        return st;
                    }
                    mt_buf_clear(tmp);
                    st = mt_buf_append(tmp, t2.p ? t2.p : "", t2.n);
                    mt_buf_free(&t2);
                    MT_TRY(st);
                }
            }
            MT_TRY(tl_push(out, tmp->p ? tmp->p : "", tmp->n));
        }
        return MT_OK;
    case MT_DEC_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            mt_buf_clear(tmp);
            MT_TRY(mt_buf_append_replaced(tmp, in->b.p + in->off[i], in->len[i], d->a, d->a_len, d->b, d->b_len));
            MT_TRY(tl_push(out, tmp->p ? tmp->p : "", tmp->n));
        }
        return MT_OK;
    case MT_DEC_STRIP:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = in->b.p + in->off[i];
            size_t n = in->len[i], a = 0, b = n;
            for (int c = 0; c < d->start && b - a >= d->a_len && d->a_len && memcmp(s + a, d->a, d->a_len) == 0; c++)
                a += d->a_len;
            for (int c = 0; c < d->stop && b - a >= d->a_len && d->a_len && memcmp(s + b - d->a_len, d->a, d->a_len) == 0; c++)
                b -= d->a_len;
            MT_TRY(tl_push(out, s + a, b - a));
        }
        return MT_OK;
    case MT_DEC_FUSE:
        MT_TRY(tl_push(out, "", 0));
        for (size_t i = 0; i < in->n; i++) MT_TRY(tl_extend(out, in->b.p + in->off[i], in->len[i]));
        return MT_OK;
    case MT_DEC_BYTE_FALLBACK: {
        mt_buf_clear(tmp); /* pending bytes */
        for (size_t i = 0; i <= in->n; i++) {
            const char *s = i < in->n ? in->b.p + in->off[i] : "";
            size_t n = i < in->n ? in->len[i] : 0;
            int byte = -1;
            if (i < in->n && n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>') {
                int v = 0, ok = 1;
                for (int q = 3; q < 5; q++) {
                    char c = s[q];
                    int x = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                    if (x < 0) ok = 0;
                    v = v * 16 + x;
                }
                if (ok) byte = v;
            }
            if (byte >= 0) {
                MT_TRY(mt_buf_putc(tmp, (char)byte));
                continue;
            }
            if (tmp->n) {
                if (mt_utf8_valid(tmp->p, tmp->n, NULL)) {
                    MT_TRY(tl_push(out, tmp->p, tmp->n));
                } else {
                    for (size_t q = 0; q < tmp->n; q++) MT_TRY(tl_push(out, "\xEF\xBF\xBD", 3));
                }
                mt_buf_clear(tmp);
            }
            if (i < in->n) MT_TRY(tl_push(out, s, n));
        }
        return MT_OK;
    }
    }
    return mt_error(MT_ERR_INTERNAL, "decode: unknown decoder %d", (int)d->kind);
}

mt_status mt_dec_run(const mt_tokenizer *tok, const int32_t *ids, size_t n, mt_buf *out) {
    mt_buf_clear(out);
    MT_TRY(mt_buf_reserve(out, 0));
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= tok->vocab_size || tok->tok_off[ids[i]] < 0)
            return mt_error(MT_ERR_INVALID_ARG, "decode: id %d at position %zu is out of range (vocabulary of %zu)",
                            (int)ids[i], i, tok->vocab_size);
    /* The default pipeline (one Metaspace decoder) goes straight to the output. */
    if (tok->n_dec == 1 && tok->dec[0].kind == MT_DEC_METASPACE) {
        const mt_dec_step *d = &tok->dec[0];
        size_t t = 0;
        for (size_t i = 0; i < n; i++) {
            if (tok->is_special[ids[i]]) continue;
            const char *s = tok->tok_pool + tok->tok_off[ids[i]];
            size_t len = tok->tok_len[ids[i]], a = 0;
            for (size_t j = 0; j + d->repl_len <= len;) {
                if (memcmp(s + j, d->repl, d->repl_len) == 0) {
                    MT_TRY(mt_buf_append(out, s + a, j - a));
                    if (!(t == 0 && d->prepend != MT_PREPEND_NEVER)) MT_TRY(mt_buf_putc(out, ' '));
                    j += d->repl_len;
                    a = j;
                } else {
                    j++;
                }
            }
            MT_TRY(mt_buf_append(out, s + a, len - a));
            t++;
        }
        return MT_OK;
    }
    toklist a = {0}, b = {0};
    mt_buf tmp = {0};
    mt_status st = MT_OK;
    for (size_t i = 0; i < n && st == MT_OK; i++)
        if (!tok->is_special[ids[i]]) st = tl_push(&a, tok->tok_pool + tok->tok_off[ids[i]], tok->tok_len[ids[i]]);
    if (st == MT_OK && !tok->has_decoder) {
        for (size_t i = 0; i < a.n && st == MT_OK; i++) {
            if (i) st = mt_buf_putc(out, ' ');
            if (st == MT_OK) st = mt_buf_append(out, a.b.p + a.off[i], a.len[i]);
        }
    } else if (st == MT_OK) {
        toklist *cur = &a, *nxt = &b;
        for (size_t k = 0; k < tok->n_dec && st == MT_OK; k++) {
            st = dec_step(&tok->dec[k], cur, nxt, &tmp);
            toklist *sw = cur;
            cur = nxt;
            nxt = sw;
        }
        for (size_t i = 0; i < cur->n && st == MT_OK; i++) st = mt_buf_append(out, cur->b.p + cur->off[i], cur->len[i]);
    }
    tl_free(&a);
    tl_free(&b);
    mt_buf_free(&tmp);
    return st;
}
