/*
 * pipeline.c — running the normalizers and pre-tokenizers of a tokenizer, with the semantics of the
 * Hugging Face `tokenizers` components of the same names (split behaviours, Metaspace prepending,
 * the GPT-2 regex of ByteLevel written out by hand, \w over Unicode categories), so that a
 * tokenizer.json made by either side gives the same pieces here and there.
 */
#include <pthread.h>
#include <string.h>
#include <utf8proc.h>

#include "text/tok_internal.h"
#include "text/unicode.h"

/* ================================ normalizers ================================================= */

/* unstable[form][cp] for cp < 0x300: 1 when the form changes the character on its own. Below U+0300
 * nothing combines with a following character of that range, so a string made only of stable
 * characters below U+0300 is already in that form (the fast path for Latin text). */
enum { NF_NFC, NF_NFD, NF_NFKC, NF_NFKD, NF_COUNT };
static uint8_t nf_unstable[NF_COUNT][0x300];
static pthread_once_t nf_once = PTHREAD_ONCE_INIT;

static utf8proc_option_t nf_options(int form) {
    switch (form) {
    case NF_NFC: return UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    case NF_NFD: return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    case NF_NFKC: return UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    default: return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    }
}

static void nf_init(void) {
    for (int f = 0; f < NF_COUNT; f++) {
        for (uint32_t cp = 0; cp < 0x300; cp++) {
            utf8proc_int32_t buf[32];
            utf8proc_uint8_t s[4];
            utf8proc_ssize_t sl = utf8proc_encode_char((utf8proc_int32_t)cp, s);
            utf8proc_ssize_t n = utf8proc_decompose(s, sl, buf, 32, nf_options(f));
            int stable = 0;
            if (n > 0 && n <= 32) {
                utf8proc_ssize_t m = utf8proc_normalize_utf32(buf, n, nf_options(f));
                stable = m == 1 && (uint32_t)buf[0] == cp;
            }
            nf_unstable[f][cp] = (uint8_t)!stable;
        }
    }
}

static int nf_is_stable(int form, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        if (c < 0x80) {
            i++;
            continue; /* ASCII is stable in every form (checked in nf_init all the same) */
        }
        uint32_t cp = 0;
        size_t k = mt_utf8_decode(s + i, n - i, &cp);
        if (!k || cp >= 0x300 || nf_unstable[form][cp]) return 0;
        i += k;
    }
    return 1;
}

/* Code points that `tokenizers` leaves alone under NFKC/NFKD although Unicode (13, 14) gave them
 * compatibility decompositions: its normalization tables are older than utf8proc's. Kept as they
 * are, so both sides normalize every assigned code point the same (test_text_hf_tokenizers). */
static const uint32_t compat_newer[][2] = {
    {0x32FF, 0x32FF},   {0xA7F2, 0xA7F4},   {0xAB69, 0xAB69}, {0x10781, 0x10785}, {0x10787, 0x107B0},
    {0x107B2, 0x107BA}, {0x1F16C, 0x1F16C}, {0x1FBF0, 0x1FBF9},
};

static int is_compat_newer(uint32_t cp) {
    if (cp < 0x32FF) return 0;
    for (size_t i = 0; i < sizeof compat_newer / sizeof compat_newer[0]; i++)
        if (cp >= compat_newer[i][0] && cp <= compat_newer[i][1]) return 1;
    return 0;
}

static mt_status nf_core(mt_tok_encoder *e, utf8proc_option_t opt, const char *in, size_t n, mt_buf *out) {
    for (;;) {
        utf8proc_ssize_t k = utf8proc_decompose((const utf8proc_uint8_t *)in, (utf8proc_ssize_t)n,
                                                (utf8proc_int32_t *)e->u32, (utf8proc_ssize_t)e->u32_cap, opt);
        if (k < 0) return mt_error(MT_ERR_UTF8, "normalizer: %s", utf8proc_errmsg(k));
        if ((size_t)k <= e->u32_cap && e->u32) {
            utf8proc_ssize_t bytes = utf8proc_reencode((utf8proc_int32_t *)e->u32, k, opt);
            if (bytes < 0) return mt_error(MT_ERR_UTF8, "normalizer: %s", utf8proc_errmsg(bytes));
            return mt_buf_append(out, e->u32, (size_t)bytes);
        }
        size_t nc = (size_t)k + 64;
        int32_t *nb = mt_sys_realloc(e->u32, nc * sizeof *nb);
        if (!nb) return mt_error(MT_ERR_NOMEM, "normalizer: out of memory");
        e->u32 = nb;
        e->u32_cap = nc;
    }
}

static mt_status nf_apply(mt_tok_encoder *e, int form, const char *in, size_t n, mt_buf *out) {
    if (nf_is_stable(form, in, n)) return mt_buf_append(out, in, n);
    utf8proc_option_t opt = nf_options(form);
    if (form == NF_NFC || form == NF_NFD) return nf_core(e, opt, in, n, out);
    size_t a = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t k = mt_utf8_decode(in + i, n - i, &cp);
        if (!k) return mt_error(MT_ERR_UTF8, "normalizer: invalid UTF-8");
        if (k == 4 || (k == 3 && (unsigned char)in[i] >= 0xE3)) {
            if (is_compat_newer(cp)) {
                if (i > a) MT_TRY(nf_core(e, opt, in + a, i - a, out));
                MT_TRY(mt_buf_append(out, in + i, k));
                a = i + k;
            }
        }
        i += k;
    }
    return a < n ? nf_core(e, opt, in + a, n - a, out) : MT_OK;
}

static mt_status lowercase_apply(const char *in, size_t n, mt_buf *out) {
    mt_status st = mt_buf_reserve(out, n);
    if (st != MT_OK) return st;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x80) {
            MT_TRY(mt_buf_reserve(out, 1));
            out->p[out->n++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            i++;
            continue;
        }
        uint32_t cp = 0;
        size_t k = mt_utf8_decode(in + i, n - i, &cp);
        if (!k) return mt_error(MT_ERR_UTF8, "lowercase: invalid UTF-8");
        i += k;
        char enc[8];
        size_t el = 0;
        if (cp == 0x130) { /* the one unconditional multi-character lowercase mapping (SpecialCasing) */
            memcpy(enc, "i\xCC\x87", 3);
            el = 3;
        } else {
            el = mt_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), enc);
        }
        MT_TRY(mt_buf_reserve(out, el));
        memcpy(out->p + out->n, enc, el);
        out->n += el;
    }
    out->p[out->n] = '\0';
    return MT_OK;
}

static mt_status strip_apply(const char *in, size_t n, int left, int right, mt_buf *out) {
    size_t a = 0, b = n;
    uint32_t cp = 0;
    while (left && a < b) {
        size_t k = mt_utf8_decode(in + a, b - a, &cp);
        if (!k || !(mt_uc_flags(cp) & MT_UC_SPACE)) break;
        a += k;
    }
    while (right && b > a) {
        size_t s = b - 1;
        while (s > a && ((unsigned char)in[s] & 0xC0) == 0x80) s--;
        size_t k = mt_utf8_decode(in + s, b - s, &cp);
        if (!k || !(mt_uc_flags(cp) & MT_UC_SPACE)) break;
        b = s;
    }
    return mt_buf_append(out, in + a, b - a);
}

static mt_status strip_accents_apply(const char *in, size_t n, mt_buf *out) {
    MT_TRY(mt_buf_reserve(out, n));
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t k = mt_utf8_decode(in + i, n - i, &cp);
        if (!k) return mt_error(MT_ERR_UTF8, "strip accents: invalid UTF-8");
        if (!(mt_uc_flags(cp) & MT_UC_MN)) {
            memcpy(out->p + out->n, in + i, k);
            out->n += k;
        }
        i += k;
    }
    out->p[out->n] = '\0';
    return MT_OK;
}

static mt_status replace_apply(const mt_norm_step *s, const char *in, size_t n, mt_buf *out) {
    if (!s->pattern_len) return mt_buf_append(out, in, n);
    size_t i = 0;
    while (i < n) {
        const char *m = n - i >= s->pattern_len ? memmem(in + i, n - i, s->pattern, s->pattern_len) : NULL;
        if (!m) break;
        size_t at = (size_t)(m - in);
        MT_TRY(mt_buf_append(out, in + i, at - i));
        MT_TRY(mt_buf_append(out, s->content, s->content_len));
        i = at + s->pattern_len;
    }
    return mt_buf_append(out, in + i, n - i);
}

mt_status mt_norm_run(const mt_tokenizer *tok, mt_tok_encoder *e, const char *in, size_t len, mt_buf *out) {
    pthread_once(&nf_once, nf_init);
    mt_buf_clear(out);
    MT_TRY(mt_buf_append(out, in, len));
    for (size_t k = 0; k < tok->n_norm; k++) {
        const mt_norm_step *s = &tok->norm[k];
        mt_buf *t = &e->tmp;
        mt_buf_clear(t);
        mt_status st = MT_OK;
        switch (s->kind) {
        case MT_NORM_NFC: st = nf_apply(e, NF_NFC, out->p, out->n, t); break;
        case MT_NORM_NFD: st = nf_apply(e, NF_NFD, out->p, out->n, t); break;
        case MT_NORM_NFKC: st = nf_apply(e, NF_NFKC, out->p, out->n, t); break;
        case MT_NORM_NFKD: st = nf_apply(e, NF_NFKD, out->p, out->n, t); break;
        case MT_NORM_LOWERCASE: st = lowercase_apply(out->p, out->n, t); break;
        case MT_NORM_STRIP: st = strip_apply(out->p, out->n, s->left, s->right, t); break;
        case MT_NORM_STRIP_ACCENTS: st = strip_accents_apply(out->p, out->n, t); break;
        case MT_NORM_REPLACE: st = replace_apply(s, out->p, out->n, t); break;
        case MT_NORM_PREPEND:
            if (out->n) st = mt_buf_append(t, s->content, s->content_len);
            if (st == MT_OK) st = mt_buf_append(t, out->p, out->n);
            break;
        }
        if (st != MT_OK) return st;
        mt_buf swap = *out;
        *out = *t;
        *t = swap;
    }
    if (!out->p) MT_TRY(mt_buf_reserve(out, 0));
    return MT_OK;
}

/* ================================ pre-tokenizers ============================================== */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others map to
 * U+0100 onwards in byte order. */
const uint32_t mt_bytelevel_b2u[256] = {
    256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271,
    272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287,
    288, 33,  34,  35,  36,  37,  38,  39,  40,  41,  42,  43,  44,  45,  46,  47,
    48,  49,  50,  51,  52,  53,  54,  55,  56,  57,  58,  59,  60,  61,  62,  63,
    64,  65,  66,  67,  68,  69,  70,  71,  72,  73,  74,  75,  76,  77,  78,  79,
    80,  81,  82,  83,  84,  85,  86,  87,  88,  89,  90,  91,  92,  93,  94,  95,
    96,  97,  98,  99,  100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 289,
    290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305,
    306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321,
    322, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 323, 174, 175,
    176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
    192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207,
    208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223,
    224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
    240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255,
};

void mt_pt_scratch_free(mt_pt_scratch *s) {
    for (int i = 0; i < 2; i++) {
        mt_buf_free(&s->buf[i]);
        mt_sys_free(s->pcs[i].v);
        s->pcs[i].v = NULL;
        s->pcs[i].n = s->pcs[i].cap = 0;
    }
    mt_sys_free(s->ev);
    s->ev = NULL;
    s->ev_n = s->ev_cap = 0;
}

/* Output side of a step: pieces are appended to buf[1-cur] / pcs[1-cur]. */
static mt_status emit(mt_pt_scratch *S, const char *src, size_t n, int first) {
    if (!n) return MT_OK; /* `tokenizers` drops empty pieces */
    mt_buf *b = &S->buf[1 - S->cur];
    mt_pieces *p = &S->pcs[1 - S->cur];
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 64;
        mt_piece *nv = mt_sys_realloc(p->v, nc * sizeof *nv);
        if (!nv) return mt_error(MT_ERR_NOMEM, "pre-tokenizer: out of memory");
        p->v = nv;
        p->cap = nc;
    }
    if (b->n + n > UINT32_MAX) return mt_error(MT_ERR_INVALID_ARG, "pre-tokenizer: text longer than 4 GiB");
    mt_piece *pc = &p->v[p->n++];
    pc->off = (uint32_t)b->n;
    pc->len = (uint32_t)n;
    pc->first = (uint8_t)first;
    return mt_buf_append(b, src, n);
}

static mt_status ev_push(mt_pt_scratch *S, size_t a, size_t b, int match) {
    if (a == b) return MT_OK;
    if (S->ev_n + 3 > S->ev_cap) {
        size_t nc = S->ev_cap ? S->ev_cap * 2 : 192;
        uint32_t *nv = mt_sys_realloc(S->ev, nc * sizeof *nv);
        if (!nv) return mt_error(MT_ERR_NOMEM, "pre-tokenizer: out of memory");
        S->ev = nv;
        S->ev_cap = nc;
    }
    S->ev[S->ev_n++] = (uint32_t)a;
    S->ev[S->ev_n++] = (uint32_t)b;
    S->ev[S->ev_n++] = (uint32_t)match;
    return MT_OK;
}

/* Applies a split behaviour to the events (start, end, is_match) of one piece, the way
 * NormalizedString::split folds them, and emits the resulting pieces. */
static mt_status split_emit(mt_pt_scratch *S, const char *s, int first, mt_split_behavior beh, int invert) {
    uint32_t *ev = S->ev;
    size_t ne = S->ev_n / 3;
    if (invert)
        for (size_t i = 0; i < ne; i++) ev[3 * i + 2] ^= 1;
    /* Fold in place into ranges: ev[3k] start, ev[3k+1] end, ev[3k+2] "remove". */
    size_t nr = 0;
    int prev = 0;
    switch (beh) {
    case MT_SPLIT_ISOLATED:
        for (size_t i = 0; i < ne; i++) ev[3 * i + 2] = 0;
        nr = ne;
        break;
    case MT_SPLIT_REMOVED: nr = ne; break;
    case MT_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < ne; i++) {
            int m = (int)ev[3 * i + 2];
            if (m == prev && nr) {
                ev[3 * (nr - 1) + 1] = ev[3 * i + 1];
            } else {
                ev[3 * nr] = ev[3 * i];
                ev[3 * nr + 1] = ev[3 * i + 1];
                ev[3 * nr + 2] = 0;
                nr++;
            }
            prev = m;
        }
        break;
    case MT_SPLIT_MERGED_PREV:
        for (size_t i = 0; i < ne; i++) {
            int m = (int)ev[3 * i + 2];
            if (m && !prev && nr) {
                ev[3 * (nr - 1) + 1] = ev[3 * i + 1];
            } else {
                ev[3 * nr] = ev[3 * i];
                ev[3 * nr + 1] = ev[3 * i + 1];
                ev[3 * nr + 2] = 0;
                nr++;
            }
            prev = m;
        }
        break;
    case MT_SPLIT_MERGED_NEXT: {
        /* Right to left, packed at the end of the array, then the ranges read forward. */
        size_t w = ne; /* next free range slot counting down */
        for (size_t i = ne; i-- > 0;) {
            int m = (int)ev[3 * i + 2];
            uint32_t a = ev[3 * i], b = ev[3 * i + 1];
            if (m && !prev && w < ne) {
                ev[3 * w] = a;
            } else {
                w--;
                ev[3 * w] = a;
                ev[3 * w + 1] = b;
                ev[3 * w + 2] = 0;
            }
            prev = m;
        }
        for (size_t i = w; i < ne; i++) {
            uint32_t a = ev[3 * i], b = ev[3 * i + 1];
            MT_TRY(emit(S, s + a, b - a, first && a == 0));
        }
        S->ev_n = 0;
        return MT_OK;
    }
    }
    for (size_t i = 0; i < nr; i++) {
        if (ev[3 * i + 2]) continue;
        uint32_t a = ev[3 * i], b = ev[3 * i + 1];
        MT_TRY(emit(S, s + a, b - a, first && a == 0));
    }
    S->ev_n = 0;
    return MT_OK;
}

/* Events of a per-character predicate: each matching character alone, the runs between. */
static mt_status events_chars(mt_pt_scratch *S, const char *s, size_t n, unsigned mask, uint32_t eq_cp) {
    size_t last = 0;
    S->ev_n = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t k = mt_utf8_decode(s + i, n - i, &cp);
        if (!k) return mt_error(MT_ERR_UTF8, "pre-tokenizer: invalid UTF-8");
        int m = mask ? (mt_uc_flags(cp) & mask) != 0 : cp == eq_cp;
        if (m) {
            MT_TRY(ev_push(S, last, i, 0));
            MT_TRY(ev_push(S, i, i + k, 1));
            last = i + k;
        }
        i += k;
    }
    return ev_push(S, last, n, 0);
}

/* Events of a literal pattern: its non-overlapping occurrences, left to right, and the gaps. */
static mt_status events_literal(mt_pt_scratch *S, const char *s, size_t n, const char *pat, size_t pl) {
    S->ev_n = 0;
    size_t i = 0;
    while (pl && i + pl <= n) {
        const char *m = memmem(s + i, n - i, pat, pl);
        if (!m) break;
        size_t at = (size_t)(m - s);
        MT_TRY(ev_push(S, i, at, 0));
        MT_TRY(ev_push(S, at, at + pl, 1));
        i = at + pl;
    }
    return ev_push(S, i, n, 0);
}

/* Whitespace: the matches of \w+|[^\w\s]+ are the pieces; whitespace goes. */
static mt_status pt_whitespace(mt_pt_scratch *S, const char *s, size_t n, int first) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp = 0;
        size_t k = mt_utf8_decode(s + i, n - i, &cp);
        if (!k) return mt_error(MT_ERR_UTF8, "pre-tokenizer: invalid UTF-8");
        unsigned f = mt_uc_flags(cp);
        if (f & MT_UC_WORD) {
            size_t j = i + k;
            while (j < n) {
                size_t l = mt_utf8_decode(s + j, n - j, &cp);
                if (!l || !(mt_uc_flags(cp) & MT_UC_WORD)) break;
                j += l;
            }
            MT_TRY(emit(S, s + i, j - i, first && i == 0));
            i = j;
        } else if (!(f & MT_UC_SPACE)) {
            size_t j = i + k;
            while (j < n) {
                size_t l = mt_utf8_decode(s + j, n - j, &cp);
                if (!l || (mt_uc_flags(cp) & (MT_UC_WORD | MT_UC_SPACE))) break;
                j += l;
            }
            MT_TRY(emit(S, s + i, j - i, first && i == 0));
            i = j;
        } else {
            i += k;
        }
    }
    return MT_OK;
}

/* Class of a code point for the GPT-2 regex: letter, number, space or other. */
enum { BL_L, BL_N, BL_S, BL_O };
static int bl_class(const char *s, size_t n, size_t i, size_t *k) {
    uint32_t cp = 0;
    *k = mt_utf8_decode(s + i, n - i, &cp);
    if (!*k) {
        *k = 1;
        return BL_O;
    }
    unsigned f = mt_uc_flags(cp);
    if (f & MT_UC_SPACE) return BL_S;
    if (f & MT_UC_LETTER) return BL_L;
    if (f & MT_UC_NUMERIC) return BL_N;
    return BL_O;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ — ByteLevel's regex. */
static size_t bl_match(const char *s, size_t n, size_t i) {
    if (s[i] == '\'' && i + 1 < n) {
        char c = s[i + 1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd') return 2;
        if (i + 2 < n && ((c == 'r' && s[i + 2] == 'e') || (c == 'v' && s[i + 2] == 'e') || (c == 'l' && s[i + 2] == 'l')))
            return 3;
    }
    size_t k = 0;
    int cls = bl_class(s, n, i, &k);
    size_t start = i;
    if (s[i] == ' ' && i + 1 < n) {
        size_t k2 = 0;
        int c2 = bl_class(s, n, i + 1, &k2);
        if (c2 != BL_S) { /* " ?X+" with the space */
            cls = c2;
            i += 1;
            k = k2;
        }
    }
    if (cls != BL_S) {
        size_t j = i + k;
        while (j < n) {
            size_t l = 0;
            if (bl_class(s, n, j, &l) != cls) break;
            j += l;
        }
        return j - start;
    }
    /* whitespace run [i, j) */
    size_t j = i, last = i, chars = 0;
    while (j < n) {
        size_t l = 0;
        if (bl_class(s, n, j, &l) != BL_S) break;
        last = j;
        j += l;
        chars++;
    }
    if (j == n || chars < 2) return j - i; /* \s+ at the end, or \s+ after (?!\S) failed */
    return last - i;                      /* \s+(?!\S): leave the last space to the next token */
}

static mt_status pt_bytelevel(mt_pt_scratch *S, const mt_pt_step *st, const char *s, size_t n, int first,
                              mt_buf *tmp) {
    mt_buf_clear(tmp);
    if (st->add_prefix_space && (n == 0 || s[0] != ' ')) MT_TRY(mt_buf_putc(tmp, ' '));
    MT_TRY(mt_buf_append(tmp, s, n));
    const char *t = tmp->p;
    size_t tn = tmp->n;
    size_t i = 0;
    char enc[1024];
    while (i < tn) {
        size_t m = st->use_regex ? bl_match(t, tn, i) : tn - i;
        /* map every byte of the piece to its stand-in character */
        mt_buf *b = &S->buf[1 - S->cur];
        size_t before = b->n;
        size_t done = 0;
        while (done < m) {
            size_t chunk = m - done > 256 ? 256 : m - done, el = 0;
            for (size_t q = 0; q < chunk; q++) el += mt_utf8_encode(mt_bytelevel_b2u[(unsigned char)t[i + done + q]], enc + el);
            MT_TRY(mt_buf_append(b, enc, el));
            done += chunk;
        }
        /* register the piece over the bytes just written */
        size_t len = b->n - before;
        mt_pieces *p = &S->pcs[1 - S->cur];
        if (p->n == p->cap) {
            size_t nc = p->cap ? p->cap * 2 : 64;
            mt_piece *nv = mt_sys_realloc(p->v, nc * sizeof *nv);
            if (!nv) return mt_error(MT_ERR_NOMEM, "pre-tokenizer: out of memory");
            p->v = nv;
            p->cap = nc;
        }
        p->v[p->n].off = (uint32_t)before;
        p->v[p->n].len = (uint32_t)len;
        p->v[p->n].first = (uint8_t)(first && i == 0);
        p->n++;
        i += m;
    }
    return MT_OK;
}

static mt_status pt_metaspace(mt_pt_scratch *S, const mt_pt_step *st, const char *s, size_t n, int first,
                              mt_buf *tmp) {
    mt_buf_clear(tmp);
    int starts = n >= st->repl_len && memcmp(s, st->repl, st->repl_len) == 0;
    if (!starts && n && s[0] == ' ') starts = 1; /* the space becomes the replacement below */
    if (n && !starts && (st->prepend == MT_PREPEND_ALWAYS || (st->prepend == MT_PREPEND_FIRST && first)))
        MT_TRY(mt_buf_append(tmp, st->repl, st->repl_len));
    for (size_t i = 0; i < n;) {
        const char *sp = memchr(s + i, ' ', n - i);
        size_t end = sp ? (size_t)(sp - s) : n;
        MT_TRY(mt_buf_append(tmp, s + i, end - i));
        if (!sp) break;
        MT_TRY(mt_buf_append(tmp, st->repl, st->repl_len));
        i = end + 1;
    }
    const char *t = tmp->p;
    size_t tn = tmp->n;
    if (!st->split) return emit(S, t, tn, first);
    /* MergedWithNext on the replacement character: a cut before each occurrence. */
    size_t a = 0;
    for (size_t i = 0; i + st->repl_len <= tn;) {
        if (memcmp(t + i, st->repl, st->repl_len) == 0) {
            if (i > a) MT_TRY(emit(S, t + a, i - a, first && a == 0));
            a = i;
            i += st->repl_len;
        } else {
            i++;
        }
    }
    return emit(S, t + a, tn - a, first && a == 0);
}

static mt_status pt_step(const mt_pt_step *st, mt_tok_encoder *e, const char *s, size_t n, int first) {
    mt_pt_scratch *S = &e->pt;
    switch (st->kind) {
    case MT_PT_WHITESPACE: return pt_whitespace(S, s, n, first);
    case MT_PT_WHITESPACE_SPLIT:
        MT_TRY(events_chars(S, s, n, MT_UC_SPACE, 0));
        return split_emit(S, s, first, MT_SPLIT_REMOVED, 0);
    case MT_PT_CHAR_DELIMITER: {
        uint32_t cp = 0;
        mt_utf8_decode(st->pattern, st->pattern_len, &cp);
        MT_TRY(events_chars(S, s, n, 0, cp));
        return split_emit(S, s, first, MT_SPLIT_REMOVED, 0);
    }
    case MT_PT_DIGITS:
        MT_TRY(events_chars(S, s, n, MT_UC_NUMERIC, 0));
        return split_emit(S, s, first, st->individual_digits ? MT_SPLIT_ISOLATED : MT_SPLIT_CONTIGUOUS, 0);
    case MT_PT_PUNCTUATION:
        MT_TRY(events_chars(S, s, n, MT_UC_PUNCT, 0));
        return split_emit(S, s, first, st->behavior, 0);
    case MT_PT_SPLIT:
        MT_TRY(events_literal(S, s, n, st->pattern, st->pattern_len));
        return split_emit(S, s, first, st->behavior, st->invert);
    case MT_PT_BERT: {
        /* whitespace removed, then punctuation isolated: done in one pass over the characters */
        S->ev_n = 0;
        size_t last = 0;
        for (size_t i = 0; i < n;) {
            uint32_t cp = 0;
            size_t k = mt_utf8_decode(s + i, n - i, &cp);
            if (!k) return mt_error(MT_ERR_UTF8, "pre-tokenizer: invalid UTF-8");
            unsigned f = mt_uc_flags(cp);
            if (f & (MT_UC_SPACE | MT_UC_PUNCT)) {
                if (i > last) MT_TRY(emit(S, s + last, i - last, first && last == 0));
                if (!(f & MT_UC_SPACE)) MT_TRY(emit(S, s + i, k, first && i == 0));
                last = i + k;
            }
            i += k;
        }
        return emit(S, s + last, n - last, first && last == 0);
    }
    case MT_PT_METASPACE: return pt_metaspace(S, st, s, n, first, &e->tmp);
    case MT_PT_BYTELEVEL: return pt_bytelevel(S, st, s, n, first, &e->tmp);
    }
    return mt_error(MT_ERR_INTERNAL, "pre-tokenizer: unknown step %d", (int)st->kind);
}

mt_status mt_pt_run(const mt_tokenizer *tok, mt_tok_encoder *e, const char *s, size_t len, int first) {
    mt_pt_scratch *S = &e->pt;
    S->cur = 0;
    mt_buf_clear(&S->buf[0]);
    S->pcs[0].n = 0;
    S->cur = 1; /* emit() writes to buf[1 - cur] */
    MT_TRY(emit(S, s, len, first));
    S->cur = 0;
    for (size_t k = 0; k < tok->n_pt; k++) {
        mt_pieces *in = &S->pcs[S->cur];
        mt_buf_clear(&S->buf[1 - S->cur]);
        S->pcs[1 - S->cur].n = 0;
        for (size_t i = 0; i < in->n; i++) {
            const mt_piece pc = in->v[i];
            MT_TRY(pt_step(&tok->pt[k], e, S->buf[S->cur].p + pc.off, pc.len, pc.first));
        }
        S->cur = 1 - S->cur;
    }
    return MT_OK;
}
