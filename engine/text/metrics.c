/*
 * metrics.c — BLEU and chrF computed exactly as sacrebleu 2.x computes them, CER and WER as
 * torchmetrics does. "Exactly" down to the details that move scores: 13a's regexes applied as
 * Python's re.sub applies them (left to right, non-overlapping), Python's definition of whitespace
 * for split()/rstrip(), code points (not bytes) as characters, sacrebleu's zero-count rules.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "text/metrics.h"
#include "text/unicode.h"

/* ---- helpers ---- */

static mt_status check_utf8(const char *what, size_t index, const char *s, size_t n) {
    size_t bad = 0;
    if (!mt_utf8_valid(s, n, &bad))
        return mt_error(MT_ERR_UTF8, "%s %zu: invalid UTF-8 at byte %zu", what, index, bad);
    return MT_OK;
}

static int py_space_at(const char *s, size_t n, size_t i, size_t *k) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) {
        *k = 1;
        return (mt_uc_ascii_flags[c] & MT_UC_PYSPACE) != 0;
    }
    uint32_t cp = 0;
    *k = mt_utf8_decode(s + i, n - i, &cp);
    if (!*k) {
        *k = 1;
        return 0;
    }
    return (mt_uc_flags(cp) & MT_UC_PYSPACE) != 0;
}

size_t mt_py_rstrip_len(const char *s, size_t len) {
    while (len) {
        size_t b = len - 1;
        while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
        size_t k = 0;
        if (!py_space_at(s, len, b, &k) || b + k != len) break;
        len = b;
    }
    return len;
}

/* Tokens of s split on Python whitespace: (offset, length) pairs appended to v. */
typedef struct span {
    uint32_t off, len;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static mt_status split_py(const char *s, size_t n, spans *out) {
    out->n = 0;
    size_t i = 0;
    while (i < n) {
        size_t k = 0;
        while (i < n && py_space_at(s, n, i, &k)) i += k;
        if (i >= n) break;
        size_t a = i;
        while (i < n && !py_space_at(s, n, i, &k)) i += k;
        if (out->n == out->cap) {
            size_t nc = out->cap ? out->cap * 2 : 64;
            span *nv = mt_sys_realloc(out->v, nc * sizeof *nv);
            if (!nv) return mt_error(MT_ERR_NOMEM, "metrics: out of memory");
            out->v = nv;
            out->cap = nc;
        }
        out->v[out->n].off = (uint32_t)a;
        out->v[out->n].len = (uint32_t)(i - a);
        out->n++;
    }
    return MT_OK;
}

/* ---- 13a ---- */

static int in_13a_class(unsigned char c) {
    /* [\{-\~\[-\` -\&\(-\+\:-\@\/] */
    return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') || (c >= '(' && c <= '+') ||
           (c >= ':' && c <= '@') || c == '/';
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

mt_status mt_bleu_tokenize_13a(const char *line, size_t len, mt_buf *out) {
    mt_buf a = {0}, b = {0};
    mt_status st = MT_OK;
    /* language-independent part, in sacrebleu's order */
    static const char *const lit[][2] = {{"<skipped>", ""}, {"-\n", ""}, {"\n", " "}};
    static const char *const ent[][2] = {{"&quot;", "\""}, {"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}};
    st = mt_buf_append(&a, line, len);
    for (size_t k = 0; k < 3 && st == MT_OK; k++) {
        mt_buf_clear(&b);
        st = mt_buf_append_replaced(&b, a.p, a.n, lit[k][0], strlen(lit[k][0]), lit[k][1], strlen(lit[k][1]));
        mt_buf t = a;
        a = b;
        b = t;
    }
    if (st == MT_OK && memchr(a.p, '&', a.n)) {
        for (size_t k = 0; k < 4 && st == MT_OK; k++) {
            mt_buf_clear(&b);
            st = mt_buf_append_replaced(&b, a.p, a.n, ent[k][0], strlen(ent[k][0]), ent[k][1], strlen(ent[k][1]));
            mt_buf t = a;
            a = b;
            b = t;
        }
    }
    /* f' {line} ' and the four regexes, each a left-to-right non-overlapping re.sub. The classes
     * are ASCII except [^0-9], which any other byte satisfies; on UTF-8 that gives the same output
     * as on code points (a multi-byte character is never split, only copied around the inserts). */
    if (st == MT_OK) {
        mt_buf_clear(&b);
        st = mt_buf_putc(&b, ' ');
        for (size_t i = 0; i < a.n && st == MT_OK; i++) {
            unsigned char c = (unsigned char)a.p[i];
            if (in_13a_class(c)) {
                char t[3] = {' ', (char)c, ' '};
                st = mt_buf_append(&b, t, 3);
            } else {
                st = mt_buf_putc(&b, (char)c);
            }
        }
        if (st == MT_OK) st = mt_buf_putc(&b, ' ');
        /* the padding spaces are in the class too: ' ' -> '   ' around them changes nothing after
         * the final split, exactly as in Python */
    }
    if (st == MT_OK) { /* ([^0-9])([\.,]) -> \1 \2 */
        mt_buf_clear(&a);
        size_t i = 0;
        while (i < b.n && st == MT_OK) {
            unsigned char c = (unsigned char)b.p[i];
            if (i + 1 < b.n && !is_digit(c) && (b.p[i + 1] == '.' || b.p[i + 1] == ',')) {
                char t[4] = {(char)c, ' ', b.p[i + 1], ' '};
                st = mt_buf_append(&a, t, 4);
                i += 2;
            } else {
                st = mt_buf_putc(&a, (char)c);
                i++;
            }
        }
    }
    if (st == MT_OK) { /* ([\.,])([^0-9]) -> ' \1 \2' */
        mt_buf_clear(&b);
        size_t i = 0;
        while (i < a.n && st == MT_OK) {
            unsigned char c = (unsigned char)a.p[i];
            if (i + 1 < a.n && (c == '.' || c == ',') && !is_digit((unsigned char)a.p[i + 1])) {
                char t[4] = {' ', (char)c, ' ', a.p[i + 1]};
                st = mt_buf_append(&b, t, 4);
                i += 2;
            } else {
                st = mt_buf_putc(&b, (char)c);
                i++;
            }
        }
    }
    if (st == MT_OK) { /* ([0-9])(-) -> \1 \2 */
        mt_buf_clear(&a);
        size_t i = 0;
        while (i < b.n && st == MT_OK) {
            unsigned char c = (unsigned char)b.p[i];
            if (i + 1 < b.n && is_digit(c) && b.p[i + 1] == '-') {
                char t[4] = {(char)c, ' ', '-', ' '};
                st = mt_buf_append(&a, t, 4);
                i += 2;
            } else {
                st = mt_buf_putc(&a, (char)c);
                i++;
            }
        }
    }
    /* ' '.join(line.split()) */
    spans sp = {0};
    if (st == MT_OK) st = split_py(a.p, a.n, &sp);
    if (st == MT_OK) {
        mt_buf_clear(out);
        st = mt_buf_reserve(out, a.n);
        for (size_t k = 0; k < sp.n && st == MT_OK; k++) {
            if (k) st = mt_buf_putc(out, ' ');
            if (st == MT_OK) st = mt_buf_append(out, a.p + sp.v[k].off, sp.v[k].len);
        }
    }
    mt_sys_free(sp.v);
    mt_buf_free(&a);
    mt_buf_free(&b);
    return st;
}

/* ---- n-gram matching over id sequences ---- */

typedef struct ngram_ctx {
    const uint32_t *seq;
    size_t n;
} ngram_ctx;

static int ngram_cmp(const void *pa, const void *pb, void *arg) {
    const ngram_ctx *c = arg;
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    for (size_t k = 0; k < c->n; k++) {
        uint32_t x = c->seq[a + k], y = c->seq[b + k];
        if (x != y) return x < y ? -1 : 1;
    }
    return 0;
}

/* Clipped matches of the order-n n-grams of h (length hn) against r (length rn): sum over distinct
 * n-grams of min(count in h, count in r). seq holds h then r; pos is scratch of hn + rn entries. */
static uint64_t clipped_matches(const uint32_t *seq, size_t hn, size_t rn, size_t n, uint32_t *pos) {
    if (hn < n || rn < n) return 0;
    size_t hc = hn - n + 1, rc = rn - n + 1;
    uint32_t *hp = pos, *rp = pos + hc;
    for (size_t i = 0; i < hc; i++) hp[i] = (uint32_t)i;
    for (size_t i = 0; i < rc; i++) rp[i] = (uint32_t)(hn + i);
    ngram_ctx c = {seq, n};
    qsort_r(hp, hc, sizeof *hp, ngram_cmp, &c);
    qsort_r(rp, rc, sizeof *rp, ngram_cmp, &c);
    uint64_t m = 0;
    size_t i = 0, j = 0;
    while (i < hc && j < rc) {
        int d = ngram_cmp(&hp[i], &rp[j], &c);
        if (d < 0) {
            i++;
        } else if (d > 0) {
            j++;
        } else {
            size_t i2 = i + 1, j2 = j + 1;
            while (i2 < hc && ngram_cmp(&hp[i], &hp[i2], &c) == 0) i2++;
            while (j2 < rc && ngram_cmp(&rp[j], &rp[j2], &c) == 0) j2++;
            m += (i2 - i) < (j2 - j) ? (i2 - i) : (j2 - j);
            i = i2;
            j = j2;
        }
    }
    return m;
}

typedef struct tokref {
    const char *p;
    uint32_t len;
    uint32_t slot;
} tokref;

static int tokref_cmp(const void *pa, const void *pb) {
    const tokref *a = pa, *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->p, b->p, n);
    if (c) return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

mt_status mt_bleu_add(mt_bleu_stats *acc, const char *hyp, const char *ref) {
    if (!acc || !hyp || !ref) return mt_error(MT_ERR_INVALID_ARG, "bleu: NULL argument");
    mt_buf th = {0}, tr = {0};
    spans sh = {0}, sr = {0};
    tokref *all = NULL;
    uint32_t *seq = NULL, *pos = NULL;
    mt_status st = MT_OK;
    size_t hl = strlen(hyp), rl = strlen(ref);
    st = mt_bleu_tokenize_13a(hyp, mt_py_rstrip_len(hyp, hl), &th);
    if (st == MT_OK) st = mt_bleu_tokenize_13a(ref, mt_py_rstrip_len(ref, rl), &tr);
    if (st == MT_OK) st = split_py(th.p, th.n, &sh);
    if (st == MT_OK) st = split_py(tr.p, tr.n, &sr);
    size_t hn = sh.n, rn = sr.n, tn = hn + rn;
    if (st == MT_OK) {
        all = mt_sys_malloc((tn + 1) * sizeof *all);
        seq = mt_sys_malloc((tn + 1) * sizeof *seq);
        pos = mt_sys_malloc((tn + 1) * sizeof *pos);
        if (!all || !seq || !pos) st = mt_error(MT_ERR_NOMEM, "bleu: out of memory");
    }
    if (st == MT_OK) {
        /* intern the tokens: equal strings get equal ids */
        for (size_t i = 0; i < hn; i++) all[i] = (tokref){th.p + sh.v[i].off, sh.v[i].len, (uint32_t)i};
        for (size_t i = 0; i < rn; i++) all[hn + i] = (tokref){tr.p + sr.v[i].off, sr.v[i].len, (uint32_t)(hn + i)};
        qsort(all, tn, sizeof *all, tokref_cmp);
        uint32_t id = 0;
        for (size_t i = 0; i < tn; i++) {
            if (i && tokref_cmp(&all[i - 1], &all[i]) != 0) id++;
            seq[all[i].slot] = id;
        }
        acc->sys_len += hn;
        acc->ref_len += rn;
        for (size_t n = 1; n <= MT_BLEU_ORDER; n++) {
            acc->total[n - 1] += hn >= n ? hn - n + 1 : 0;
            acc->correct[n - 1] += clipped_matches(seq, hn, rn, n, pos);
        }
    }
    mt_buf_free(&th);
    mt_buf_free(&tr);
    mt_sys_free(sh.v);
    mt_sys_free(sr.v);
    mt_sys_free(all);
    mt_sys_free(seq);
    mt_sys_free(pos);
    return st;
}

static double my_log(double x) { return x == 0.0 ? -9999999999.0 : log(x); }

void mt_bleu_compute(const mt_bleu_stats *st, mt_bleu_score *out) {
    memset(out, 0, sizeof *out);
    out->stats = *st;
    double sys = (double)st->sys_len, ref = (double)st->ref_len;
    out->bp = 1.0;
    if (sys < ref) out->bp = sys > 0 ? exp(1.0 - ref / sys) : 0.0;
    out->ratio = st->ref_len ? sys / ref : 0.0;
    int any = 0;
    for (int n = 0; n < MT_BLEU_ORDER; n++) any |= st->correct[n] != 0;
    if (!any) return; /* sacrebleu: no match at all scores 0 with zero precisions */
    double smooth = 1.0;
    for (int n = 0; n < MT_BLEU_ORDER; n++) {
        if (st->total[n] == 0) break;
        if (st->correct[n] == 0) {
            smooth *= 2.0;
            out->precisions[n] = 100.0 / (smooth * (double)st->total[n]);
        } else {
            out->precisions[n] = 100.0 * (double)st->correct[n] / (double)st->total[n];
        }
    }
    double s = 0.0;
    for (int n = 0; n < MT_BLEU_ORDER; n++) s += my_log(out->precisions[n]);
    out->score = out->bp * exp(s / MT_BLEU_ORDER);
}

/* ---- chrF ---- */

mt_status mt_chrf_add(mt_chrf_stats *acc, const char *hyp, const char *ref) {
    if (!acc || !hyp || !ref) return mt_error(MT_ERR_INVALID_ARG, "chrf: NULL argument");
    size_t hl = strlen(hyp), rl = strlen(ref);
    uint32_t *seq = mt_sys_malloc((hl + rl + 1) * sizeof *seq);
    uint32_t *pos = mt_sys_malloc((hl + rl + 1) * sizeof *pos);
    if (!seq || !pos) {
        mt_sys_free(seq);
        mt_sys_free(pos);
        return mt_error(MT_ERR_NOMEM, "chrf: out of memory");
    }
    /* code points with whitespace removed (''.join(line.split())) */
    size_t hn = 0, rn = 0;
    const char *src[2] = {hyp, ref};
    size_t len[2] = {hl, rl};
    for (int s = 0; s < 2; s++) {
        size_t k = 0;
        for (size_t i = 0; i < len[s];) {
            uint32_t cp = 0;
            size_t l = mt_utf8_decode(src[s] + i, len[s] - i, &cp);
            if (!l) l = 1, cp = 0xFFFD;
            if (!(mt_uc_flags(cp) & MT_UC_PYSPACE)) seq[(s ? hn : 0) + k++] = cp;
            i += l;
        }
        if (s == 0) hn = k;
        else rn = k;
    }
    for (size_t n = 1; n <= MT_CHRF_ORDER; n++) {
        uint64_t hc = hn >= n ? hn - n + 1 : 0, rc = rn >= n ? rn - n + 1 : 0;
        acc->hyp[n - 1] += rc ? hc : 0; /* sacrebleu counts hypothesis n-grams only when the reference has some */
        acc->ref[n - 1] += rc;
        acc->match[n - 1] += clipped_matches(seq, hn, rn, n, pos);
    }
    mt_sys_free(seq);
    mt_sys_free(pos);
    return MT_OK;
}

double mt_chrf_compute(const mt_chrf_stats *st) {
    const double eps = 1e-16, factor = 4.0; /* beta = 2 */
    double avg_p = 0.0, avg_r = 0.0;
    int eff = 0;
    for (int i = 0; i < MT_CHRF_ORDER; i++) {
        double p = st->hyp[i] ? (double)st->match[i] / (double)st->hyp[i] : eps;
        double r = st->ref[i] ? (double)st->match[i] / (double)st->ref[i] : eps;
        if (st->hyp[i] && st->ref[i]) {
            avg_p += p;
            avg_r += r;
            eff++;
        }
    }
    if (eff == 0) {
        avg_p = avg_r = 0.0;
    } else {
        avg_p /= eff;
        avg_r /= eff;
    }
    if (avg_p + avg_r == 0.0) return 0.0;
    return 100.0 * (1.0 + factor) * avg_p * avg_r / (factor * avg_p + avg_r);
}

/* ---- CER / WER ---- */

static uint64_t levenshtein(const uint32_t *a, size_t n, const uint32_t *b, size_t m, uint32_t *row) {
    /* one row of m+1 cells */
    for (size_t j = 0; j <= m; j++) row[j] = (uint32_t)j;
    for (size_t i = 1; i <= n; i++) {
        uint32_t diag = row[0];
        row[0] = (uint32_t)i;
        for (size_t j = 1; j <= m; j++) {
            uint32_t up = row[j];
            uint32_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[m];
}

mt_status mt_cer_add(mt_edit_stats *acc, const char *hyp, const char *ref) {
    if (!acc || !hyp || !ref) return mt_error(MT_ERR_INVALID_ARG, "cer: NULL argument");
    size_t hl = strlen(hyp), rl = strlen(ref);
    uint32_t *h = mt_sys_malloc((hl + 1) * sizeof *h), *r = mt_sys_malloc((rl + 1) * sizeof *r);
    uint32_t *row = mt_sys_malloc((rl + 2) * sizeof *row);
    mt_status st = MT_OK;
    if (!h || !r || !row) st = mt_error(MT_ERR_NOMEM, "cer: out of memory");
    if (st == MT_OK) {
        size_t hn = mt_utf8_to_cps(hyp, hl, h), rn = mt_utf8_to_cps(ref, rl, r);
        acc->errors += levenshtein(h, hn, r, rn, row);
        acc->ref_len += rn;
    }
    mt_sys_free(h);
    mt_sys_free(r);
    mt_sys_free(row);
    return st;
}

mt_status mt_wer_add(mt_edit_stats *acc, const char *hyp, const char *ref) {
    if (!acc || !hyp || !ref) return mt_error(MT_ERR_INVALID_ARG, "wer: NULL argument");
    size_t hl = strlen(hyp), rl = strlen(ref);
    spans sh = {0}, sr = {0};
    tokref *all = NULL;
    uint32_t *seq = NULL, *row = NULL;
    mt_status st = split_py(hyp, hl, &sh);
    if (st == MT_OK) st = split_py(ref, rl, &sr);
    size_t hn = sh.n, rn = sr.n, tn = hn + rn;
    if (st == MT_OK) {
        all = mt_sys_malloc((tn + 1) * sizeof *all);
        seq = mt_sys_malloc((tn + 1) * sizeof *seq);
        row = mt_sys_malloc((rn + 2) * sizeof *row);
        if (!all || !seq || !row) st = mt_error(MT_ERR_NOMEM, "wer: out of memory");
    }
    if (st == MT_OK) {
        for (size_t i = 0; i < hn; i++) all[i] = (tokref){hyp + sh.v[i].off, sh.v[i].len, (uint32_t)i};
        for (size_t i = 0; i < rn; i++) all[hn + i] = (tokref){ref + sr.v[i].off, sr.v[i].len, (uint32_t)(hn + i)};
        qsort(all, tn, sizeof *all, tokref_cmp);
        uint32_t id = 0;
        for (size_t i = 0; i < tn; i++) {
            if (i && tokref_cmp(&all[i - 1], &all[i]) != 0) id++;
            seq[all[i].slot] = id;
        }
        acc->errors += levenshtein(seq, hn, seq + hn, rn, row);
        acc->ref_len += rn;
    }
    mt_sys_free(sh.v);
    mt_sys_free(sr.v);
    mt_sys_free(all);
    mt_sys_free(seq);
    mt_sys_free(row);
    return st;
}

double mt_edit_rate(const mt_edit_stats *st) { return (double)st->errors / (double)st->ref_len; }

/* ---- corpora ---- */

static mt_status check_lists(const char *what, const char *const *hyps, const char *const *refs, size_t n) {
    if (n && (!hyps || !refs)) return mt_error(MT_ERR_INVALID_ARG, "%s: NULL hypothesis or reference list", what);
    for (size_t i = 0; i < n; i++) {
        if (!hyps[i] || !refs[i]) return mt_error(MT_ERR_INVALID_ARG, "%s: sentence %zu is NULL", what, i);
        MT_TRY(check_utf8("hypothesis", i, hyps[i], strlen(hyps[i])));
        MT_TRY(check_utf8("reference", i, refs[i], strlen(refs[i])));
    }
    return MT_OK;
}

mt_status mt_bleu_corpus(const char *const *hyps, const char *const *refs, size_t n, mt_bleu_score *out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "bleu: NULL out");
    MT_TRY(check_lists("bleu", hyps, refs, n));
    mt_bleu_stats st;
    memset(&st, 0, sizeof st);
    for (size_t i = 0; i < n; i++) MT_TRY(mt_bleu_add(&st, hyps[i], refs[i]));
    mt_bleu_compute(&st, out);
    return MT_OK;
}

mt_status mt_chrf_corpus(const char *const *hyps, const char *const *refs, size_t n, double *out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "chrf: NULL out");
    MT_TRY(check_lists("chrf", hyps, refs, n));
    mt_chrf_stats st;
    memset(&st, 0, sizeof st);
    for (size_t i = 0; i < n; i++) MT_TRY(mt_chrf_add(&st, hyps[i], refs[i]));
    *out = mt_chrf_compute(&st);
    return MT_OK;
}

mt_status mt_cer_corpus(const char *const *hyps, const char *const *refs, size_t n, double *out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "cer: NULL out");
    MT_TRY(check_lists("cer", hyps, refs, n));
    mt_edit_stats st = {0, 0};
    for (size_t i = 0; i < n; i++) MT_TRY(mt_cer_add(&st, hyps[i], refs[i]));
    *out = mt_edit_rate(&st);
    return MT_OK;
}

mt_status mt_wer_corpus(const char *const *hyps, const char *const *refs, size_t n, double *out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "wer: NULL out");
    MT_TRY(check_lists("wer", hyps, refs, n));
    mt_edit_stats st = {0, 0};
    for (size_t i = 0; i < n; i++) MT_TRY(mt_wer_add(&st, hyps[i], refs[i]));
    *out = mt_edit_rate(&st);
    return MT_OK;
}
