/*
 * corpus.c — reading parallel corpora (TSV, two aligned files, opus_books JSONL; `.zst` through the
 * streaming reader), with every bad line either an error naming file:line or skipped and counted;
 * pairs in memory; the deterministic train/valid/test split.
 */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/rng.h"
#include "io/io.h"
#include "text/buf.h"
#include "text/corpus.h"
#include "text/unicode.h"

struct mt_corpus {
    mt_corpus_format fmt;
    mt_reader *r;  /* TSV / JSONL / parallel source */
    mt_reader *r2; /* parallel target */
    char *src_key, *tgt_key;
    int skip;
    mt_corpus_summary sum;
    mt_buf a, b; /* the sides of the current pair */
    int done;
};

enum { BAD_UTF8, BAD_COLUMN, BAD_EMPTY, BAD_JSON, BAD_MISALIGNED };

/* A bad line: an error, or counted and skipped (returns MT_OK then). */
static mt_status bad_line(mt_corpus *c, const char *file, uint64_t line, int kind, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static mt_status bad_line(mt_corpus *c, const char *file, uint64_t line, int kind, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!c->skip)
        return mt_error(kind == BAD_UTF8 ? MT_ERR_UTF8 : MT_ERR_FORMAT, "%s:%llu: %s", file, (unsigned long long)line, msg);
    mt_corpus_summary *s = &c->sum;
    s->skipped++;
    switch (kind) {
    case BAD_UTF8: s->bad_utf8++; break;
    case BAD_COLUMN: s->missing_column++; break;
    case BAD_EMPTY: s->empty_side++; break;
    case BAD_JSON: s->bad_json++; break;
    default: s->misaligned++; break;
    }
    if (!s->first_bad[0]) snprintf(s->first_bad, sizeof s->first_bad, "%s:%llu: %s", file, (unsigned long long)line, msg);
    return MT_OK;
}

static int ends_with(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

mt_status mt_corpus_open(const char *spec, const mt_corpus_options *opt, mt_corpus **out) {
    if (!spec || !out || !*spec) return mt_error(MT_ERR_INVALID_ARG, "mt_corpus_open: NULL or empty corpus spec");
    mt_corpus_options o = {MT_CORPUS_AUTO, NULL, NULL, 0};
    if (opt) o = *opt;
    mt_corpus *c = mt_sys_calloc(1, sizeof *c);
    if (!c) return mt_error(MT_ERR_NOMEM, "%s: out of memory", spec);
    c->skip = o.skip_bad_lines;
    c->src_key = mt_sys_strdup(o.src_key ? o.src_key : "en");
    c->tgt_key = mt_sys_strdup(o.tgt_key ? o.tgt_key : "it");
    mt_status st = (c->src_key && c->tgt_key) ? MT_OK : mt_error(MT_ERR_NOMEM, "%s: out of memory", spec);
    const char *bar = strchr(spec, '|');
    mt_corpus_format f = o.format;
    if (f == MT_CORPUS_AUTO) {
        size_t n = strlen(spec);
        if (bar) f = MT_CORPUS_PARALLEL;
        else {
            if (ends_with(spec, n, ".zst")) n -= 4;
            f = ends_with(spec, n, ".jsonl") || ends_with(spec, n, ".json") ? MT_CORPUS_JSONL : MT_CORPUS_TSV;
        }
    }
    c->fmt = f;
    if (st == MT_OK && f == MT_CORPUS_PARALLEL) {
        if (!bar || bar == spec || !bar[1] || strchr(bar + 1, '|')) {
            st = mt_error(MT_ERR_INVALID_ARG, "%s: two aligned files are given as \"source-file|target-file\"", spec);
        } else {
            char *first = mt_sys_malloc((size_t)(bar - spec) + 1);
            if (!first) st = mt_error(MT_ERR_NOMEM, "%s: out of memory", spec);
            else {
                memcpy(first, spec, (size_t)(bar - spec));
                first[bar - spec] = '\0';
                st = mt_reader_open(first, &c->r);
                mt_sys_free(first);
                if (st == MT_OK) st = mt_reader_open(bar + 1, &c->r2);
            }
        }
    } else if (st == MT_OK) {
        st = mt_reader_open(spec, &c->r);
    }
    if (st != MT_OK) {
        mt_corpus_close(c);
        return st;
    }
    *out = c;
    return MT_OK;
}

static void trim(const char **s, size_t *n) {
    const char *p = *s;
    size_t k = *n;
    while (k && (*p == ' ' || *p == '\t' || *p == '\r')) p++, k--;
    while (k && (p[k - 1] == ' ' || p[k - 1] == '\t' || p[k - 1] == '\r')) k--;
    *s = p;
    *n = k;
}

/* Checks a line's bytes: UTF-8 and no NUL. 0 when bad (then reported). */
static int check_text(mt_corpus *c, const char *file, uint64_t line, const char *s, size_t n, mt_status *st) {
    size_t bad = 0;
    if (!mt_utf8_valid(s, n, &bad)) {
        *st = bad_line(c, file, line, BAD_UTF8, "invalid UTF-8 at byte %zu", bad + 1);
        return 0;
    }
    const char *z = memchr(s, '\0', n);
    if (z) {
        *st = bad_line(c, file, line, BAD_UTF8, "NUL byte at byte %zu", (size_t)(z - s) + 1);
        return 0;
    }
    return 1;
}

static mt_status set_sides(mt_corpus *c, const char *s, size_t sn, const char *t, size_t tn) {
    mt_buf_clear(&c->a);
    mt_buf_clear(&c->b);
    MT_TRY(mt_buf_append(&c->a, s, sn));
    return mt_buf_append(&c->b, t, tn);
}

/* 1: a pair is ready; 0: the line was skipped; errors as status. */
static mt_status line_tsv(mt_corpus *c, const char *line, size_t n, int *ok) {
    const char *file = mt_reader_path(c->r);
    uint64_t ln = mt_reader_lineno(c->r);
    mt_status st = MT_OK;
    *ok = 0;
    if (!check_text(c, file, ln, line, n, &st)) return st;
    const char *tab = memchr(line, '\t', n);
    if (!tab) return bad_line(c, file, ln, BAD_COLUMN, "missing tab: expected source<TAB>target");
    const char *s = line, *t = tab + 1;
    size_t sn = (size_t)(tab - line), tn = n - sn - 1;
    if (memchr(t, '\t', tn)) return bad_line(c, file, ln, BAD_COLUMN, "more than two tab-separated columns");
    trim(&s, &sn);
    trim(&t, &tn);
    if (!sn || !tn) return bad_line(c, file, ln, BAD_EMPTY, "empty %s side", !sn ? "source" : "target");
    MT_TRY(set_sides(c, s, sn, t, tn));
    *ok = 1;
    return MT_OK;
}

static mt_status line_jsonl(mt_corpus *c, const char *line, size_t n, int *ok) {
    const char *file = mt_reader_path(c->r);
    uint64_t ln = mt_reader_lineno(c->r);
    mt_status st = MT_OK;
    *ok = 0;
    if (!check_text(c, file, ln, line, n, &st)) return st;
    json_error_t err;
    json_t *root = json_loadb(line, n, 0, &err);
    if (!root) return bad_line(c, file, ln, BAD_JSON, "invalid JSON at column %d: %s", err.column, err.text);
    json_t *tr = json_object_get(root, "translation");
    json_t *js = json_object_get(tr, c->src_key), *jt = json_object_get(tr, c->tgt_key);
    if (!json_is_object(root)) st = bad_line(c, file, ln, BAD_JSON, "expected a JSON object");
    else if (!json_is_object(tr)) st = bad_line(c, file, ln, BAD_COLUMN, "missing key \"translation\" (an object)");
    else if (!json_is_string(js)) st = bad_line(c, file, ln, BAD_COLUMN, "missing string key \"translation.%s\"", c->src_key);
    else if (!json_is_string(jt)) st = bad_line(c, file, ln, BAD_COLUMN, "missing string key \"translation.%s\"", c->tgt_key);
    else {
        const char *s = json_string_value(js), *t = json_string_value(jt);
        size_t sn = json_string_length(js), tn = json_string_length(jt);
        trim(&s, &sn);
        trim(&t, &tn);
        if (memchr(s, '\0', sn) || memchr(t, '\0', tn)) st = bad_line(c, file, ln, BAD_UTF8, "NUL character in a side");
        else if (!sn || !tn) st = bad_line(c, file, ln, BAD_EMPTY, "empty %s side", !sn ? c->src_key : c->tgt_key);
        else if ((st = set_sides(c, s, sn, t, tn)) == MT_OK) *ok = 1;
    }
    json_decref(root);
    return st;
}

/* Skipping mode, one file ended early: the rest of the other one cannot be paired. */
static mt_status drain_unpaired(mt_corpus *c, mt_reader *longer, const char *shorter_path, uint64_t short_lines) {
    const char *file = mt_reader_path(longer);
    for (;;) {
        const char *l = NULL;
        size_t n = 0;
        MT_TRY(mt_reader_line(longer, &l, &n));
        if (!l) return MT_OK;
        c->sum.lines++;
        MT_TRY(bad_line(c, file, mt_reader_lineno(longer), BAD_MISALIGNED, "no matching line: %s has only %llu lines",
                        shorter_path, (unsigned long long)short_lines));
    }
}

static mt_status next_parallel(mt_corpus *c, int *ok) {
    const char *ls = NULL, *lt = NULL;
    size_t ns = 0, nt = 0;
    *ok = 0;
    MT_TRY(mt_reader_line(c->r, &ls, &ns));
    MT_TRY(mt_reader_line(c->r2, &lt, &nt));
    const char *fs = mt_reader_path(c->r), *ft = mt_reader_path(c->r2);
    if (!ls && !lt) {
        c->done = 1;
        return MT_OK;
    }
    if (!ls || !lt) {
        mt_reader *longer = ls ? c->r : c->r2;
        const char *shorter = ls ? ft : fs;
        uint64_t short_lines = mt_reader_lineno(ls ? c->r2 : c->r);
        c->done = 1;
        if (!c->skip)
            return mt_error(MT_ERR_FORMAT, "%s:%llu: misaligned files: %s ends after %llu lines", mt_reader_path(longer),
                            (unsigned long long)mt_reader_lineno(longer), shorter, (unsigned long long)short_lines);
        c->sum.lines++;
        MT_TRY(bad_line(c, mt_reader_path(longer), mt_reader_lineno(longer), BAD_MISALIGNED,
                        "no matching line: %s has only %llu lines", shorter, (unsigned long long)short_lines));
        return drain_unpaired(c, longer, shorter, short_lines);
    }
    c->sum.lines++;
    uint64_t ln = mt_reader_lineno(c->r);
    mt_status st = MT_OK;
    if (!check_text(c, fs, ln, ls, ns, &st)) return st;
    if (!check_text(c, ft, ln, lt, nt, &st)) return st;
    trim(&ls, &ns);
    trim(&lt, &nt);
    if (!ns) return bad_line(c, fs, ln, BAD_EMPTY, "empty source line (target: %s)", ft);
    if (!nt) return bad_line(c, ft, ln, BAD_EMPTY, "empty target line (source: %s)", fs);
    MT_TRY(set_sides(c, ls, ns, lt, nt));
    *ok = 1;
    return MT_OK;
}

mt_status mt_corpus_next(mt_corpus *c, mt_pair *pair, int *got) {
    if (!c || !pair || !got) return mt_error(MT_ERR_INVALID_ARG, "mt_corpus_next: NULL argument");
    *got = 0;
    while (!c->done) {
        int ok = 0;
        if (c->fmt == MT_CORPUS_PARALLEL) {
            MT_TRY(next_parallel(c, &ok));
        } else {
            const char *l = NULL;
            size_t n = 0;
            MT_TRY(mt_reader_line(c->r, &l, &n));
            if (!l) {
                c->done = 1;
                break;
            }
            c->sum.lines++;
            MT_TRY(c->fmt == MT_CORPUS_JSONL ? line_jsonl(c, l, n, &ok) : line_tsv(c, l, n, &ok));
        }
        if (!ok) continue;
        c->sum.pairs++;
        pair->src = c->a.p;
        pair->src_len = c->a.n;
        pair->tgt = c->b.p;
        pair->tgt_len = c->b.n;
        pair->file = mt_reader_path(c->r);
        pair->line = mt_reader_lineno(c->r);
        *got = 1;
        return MT_OK;
    }
    return MT_OK;
}

const mt_corpus_summary *mt_corpus_get_summary(const mt_corpus *c) { return &c->sum; }

void mt_corpus_close(mt_corpus *c) {
    if (!c) return;
    mt_reader_close(c->r);
    mt_reader_close(c->r2);
    mt_sys_free(c->src_key);
    mt_sys_free(c->tgt_key);
    mt_buf_free(&c->a);
    mt_buf_free(&c->b);
    mt_sys_free(c);
}

void mt_corpus_summary_add(mt_corpus_summary *a, const mt_corpus_summary *b) {
    a->lines += b->lines;
    a->pairs += b->pairs;
    a->skipped += b->skipped;
    a->bad_utf8 += b->bad_utf8;
    a->missing_column += b->missing_column;
    a->empty_side += b->empty_side;
    a->bad_json += b->bad_json;
    a->misaligned += b->misaligned;
    if (!a->first_bad[0]) memcpy(a->first_bad, b->first_bad, sizeof a->first_bad);
}

void mt_corpus_summary_str(const mt_corpus_summary *s, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "%llu pairs from %llu lines, %llu skipped", (unsigned long long)s->pairs,
                     (unsigned long long)s->lines, (unsigned long long)s->skipped);
    if (!s->skipped || n < 0 || (size_t)n >= cap) return;
    const char *names[] = {"invalid UTF-8", "missing column", "empty side", "invalid JSON", "misaligned"};
    uint64_t v[] = {s->bad_utf8, s->missing_column, s->empty_side, s->bad_json, s->misaligned};
    const char *sep = " (";
    for (int i = 0; i < 5; i++) {
        if (!v[i]) continue;
        int k = snprintf(buf + n, cap - (size_t)n, "%s%llu %s", sep, (unsigned long long)v[i], names[i]);
        if (k < 0 || (size_t)(n + k) >= cap) return;
        n += k;
        sep = ", ";
    }
    snprintf(buf + n, cap - (size_t)n, ")");
}

/* ---- pairs ---- */

mt_status mt_pairs_new(mt_pairs **out) {
    mt_pairs *p = mt_sys_calloc(1, sizeof *p);
    if (!p) return mt_error(MT_ERR_NOMEM, "pairs: out of memory");
    *out = p;
    return MT_OK;
}

void mt_pairs_free(mt_pairs *p) {
    if (!p) return;
    mt_sys_free(p->text);
    mt_sys_free(p->src_off);
    mt_sys_free(p->tgt_off);
    mt_sys_free(p->src_len);
    mt_sys_free(p->tgt_len);
    mt_sys_free(p);
}

mt_status mt_pairs_append(mt_pairs *p, const char *src, size_t src_len, const char *tgt, size_t tgt_len) {
    if (!p || !src || !tgt) return mt_error(MT_ERR_INVALID_ARG, "mt_pairs_append: NULL argument");
    if (src_len > UINT32_MAX || tgt_len > UINT32_MAX) return mt_error(MT_ERR_INVALID_ARG, "pairs: a side longer than 4 GiB");
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 1024;
        uint64_t *so = mt_sys_realloc(p->src_off, nc * sizeof *so);
        if (so) p->src_off = so;
        uint64_t *to = mt_sys_realloc(p->tgt_off, nc * sizeof *to);
        if (to) p->tgt_off = to;
        uint32_t *sl = mt_sys_realloc(p->src_len, nc * sizeof *sl);
        if (sl) p->src_len = sl;
        uint32_t *tl = mt_sys_realloc(p->tgt_len, nc * sizeof *tl);
        if (tl) p->tgt_len = tl;
        if (!so || !to || !sl || !tl) return mt_error(MT_ERR_NOMEM, "pairs: out of memory");
        p->cap = nc;
    }
    size_t need = p->text_len + src_len + tgt_len + 2;
    if (need > p->text_cap) {
        size_t nc = p->text_cap ? p->text_cap * 2 : (1u << 16);
        while (nc < need) nc *= 2;
        char *nt = mt_sys_realloc(p->text, nc);
        if (!nt) return mt_error(MT_ERR_NOMEM, "pairs: out of memory (%zu bytes of text)", nc);
        p->text = nt;
        p->text_cap = nc;
    }
    p->src_off[p->n] = p->text_len;
    memcpy(p->text + p->text_len, src, src_len);
    p->text[p->text_len + src_len] = '\0';
    p->text_len += src_len + 1;
    p->tgt_off[p->n] = p->text_len;
    memcpy(p->text + p->text_len, tgt, tgt_len);
    p->text[p->text_len + tgt_len] = '\0';
    p->text_len += tgt_len + 1;
    p->src_len[p->n] = (uint32_t)src_len;
    p->tgt_len[p->n] = (uint32_t)tgt_len;
    p->n++;
    return MT_OK;
}

mt_status mt_pairs_read(const char *const *specs, size_t n_specs, const mt_corpus_options *opt, mt_pairs **out,
                        mt_corpus_summary *summary) {
    if (!specs || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_pairs_read: NULL argument");
    mt_pairs *p = NULL;
    MT_TRY(mt_pairs_new(&p));
    mt_corpus_summary total;
    memset(&total, 0, sizeof total);
    mt_status st = MT_OK;
    for (size_t i = 0; i < n_specs && st == MT_OK; i++) {
        mt_corpus *c = NULL;
        if ((st = mt_corpus_open(specs[i], opt, &c)) != MT_OK) break;
        for (;;) {
            mt_pair pr;
            int got = 0;
            if ((st = mt_corpus_next(c, &pr, &got)) != MT_OK || !got) break;
            if ((st = mt_pairs_append(p, pr.src, pr.src_len, pr.tgt, pr.tgt_len)) != MT_OK) break;
        }
        mt_corpus_summary_add(&total, mt_corpus_get_summary(c));
        mt_corpus_close(c);
    }
    if (summary) *summary = total;
    if (st != MT_OK) {
        mt_pairs_free(p);
        return st;
    }
    *out = p;
    return MT_OK;
}

/* Uniform integer in [0, bound) from two 32-bit draws of the counter-based generator. */
static uint64_t rand_below(uint64_t seed, uint64_t *ctr, uint64_t bound) {
    uint64_t hi = mt_rng_bits(seed, (*ctr)++), lo = mt_rng_bits(seed, (*ctr)++);
    uint64_t r = (hi << 32) | lo;
    return (uint64_t)(((unsigned __int128)r * bound) >> 64);
}

static size_t part_size(double v, size_t n) {
    if (v <= 0) return 0;
    if (v < 1.0) return (size_t)llround(v * (double)n);
    return (size_t)v;
}

mt_status mt_pairs_split(const mt_pairs *all, const mt_split_options *opt, mt_pairs **train, mt_pairs **valid,
                         mt_pairs **test) {
    if (!all || !opt) return mt_error(MT_ERR_INVALID_ARG, "mt_pairs_split: NULL argument");
    if (!(opt->valid >= 0) || !(opt->test >= 0)) return mt_error(MT_ERR_INVALID_ARG, "split: negative valid/test size");
    size_t n = all->n, nt = part_size(opt->test, n), nv = part_size(opt->valid, n);
    if (nt > n || nv > n - nt)
        return mt_error(MT_ERR_INVALID_ARG, "split: %zu test + %zu valid pairs do not fit in a corpus of %zu", nt, nv, n);
    uint32_t *perm = mt_sys_malloc((n + 1) * sizeof *perm);
    uint8_t *part = mt_sys_malloc(n + 1);
    if (!perm || !part) {
        mt_sys_free(perm);
        mt_sys_free(part);
        return mt_error(MT_ERR_NOMEM, "split: out of memory");
    }
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    uint64_t ctr = 0;
    for (size_t i = n; i > 1; i--) { /* Fisher-Yates */
        size_t j = (size_t)rand_below(opt->seed, &ctr, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    for (size_t i = 0; i < n; i++) part[perm[i]] = i < nt ? 2 : i < nt + nv ? 1 : 0;
    mt_sys_free(perm);
    mt_pairs *parts[3] = {NULL, NULL, NULL};
    mt_pairs **outs[3] = {train, valid, test};
    mt_status st = MT_OK;
    for (int k = 0; k < 3 && st == MT_OK; k++)
        if (outs[k]) st = mt_pairs_new(&parts[k]);
    for (size_t i = 0; i < n && st == MT_OK; i++) {
        mt_pairs *dst = parts[part[i]];
        if (dst) st = mt_pairs_append(dst, mt_pairs_src(all, i), all->src_len[i], mt_pairs_tgt(all, i), all->tgt_len[i]);
    }
    mt_sys_free(part);
    if (st != MT_OK) {
        for (int k = 0; k < 3; k++) mt_pairs_free(parts[k]);
        return st;
    }
    for (int k = 0; k < 3; k++)
        if (outs[k]) *outs[k] = parts[k];
    return MT_OK;
}
