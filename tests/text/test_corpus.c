/*
 * test_corpus.c — corpus reading (TSV, JSONL, aligned files; .zst; every kind of bad line as an
 * error naming file:line or skipped and counted), the deterministic split, the encoded dataset
 * (framing, length filter, independence from the thread count) and the batcher (token budget,
 * every example once per epoch, N-rank shards covering each global batch exactly once, seeds,
 * resuming from a stored position).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <zstd.h>

#include "core/alloc.h"
#include "text/batch.h"
#include "text/corpus.h"
#include "text/tokenizer.h"
#include "text_test.h"

static char dir[512];

static void file_in(char *path, const char *name, const char *text) {
    tt_path(path, 1024, dir, name);
    assert_int_equal(tt_write_str(path, text), 0);
}

static void zst_in(char *path, const char *name, const char *text) {
    tt_path(path, 1024, dir, name);
    size_t n = strlen(text), cap = ZSTD_compressBound(n);
    void *c = malloc(cap);
    size_t k = ZSTD_compress(c, cap, text, n, 3);
    assert_int_equal(tt_write(path, c, k), 0);
    free(c);
}

/* All pairs of a spec as "src=>tgt@line;" */
static mt_status read_all(const char *spec, const mt_corpus_options *o, char *out, size_t cap, mt_corpus_summary *sum) {
    mt_corpus *c = NULL;
    mt_status st = mt_corpus_open(spec, o, &c);
    if (st != MT_OK) return st;
    out[0] = '\0';
    for (;;) {
        mt_pair p;
        int got = 0;
        st = mt_corpus_next(c, &p, &got);
        if (st != MT_OK || !got) break;
        assert_int_equal(strlen(p.src), p.src_len);
        assert_int_equal(strlen(p.tgt), p.tgt_len);
        char e[512];
        snprintf(e, sizeof e, "%s=>%s@%llu;", p.src, p.tgt, (unsigned long long)p.line);
        strncat(out, e, cap - strlen(out) - 1);
    }
    if (sum) *sum = *mt_corpus_get_summary(c);
    mt_corpus_close(c);
    return st;
}

static void expect_error(const char *spec, const mt_corpus_options *o, mt_status want, const char *needle) {
    char out[4096];
    assert_int_equal(read_all(spec, o, out, sizeof out, NULL), want);
    if (!strstr(mt_last_error(), needle)) fprintf(stderr, "message: %s\n", mt_last_error());
    assert_non_null(strstr(mt_last_error(), needle));
}

static void test_tsv(void **state) {
    (void)state;
    const char *text = "Hello .\t Ciao .\r\nA  cat\tUn gatto\n\xC3\x88 vero\t\xC3\x88 vero \nlast\tultimo";
    char p[1024], z[1024], out[4096];
    file_in(p, "ok.tsv", text);
    zst_in(z, "ok.tsv.zst", text);
    const char *want = "Hello .=>Ciao .@1;A  cat=>Un gatto@2;\xC3\x88 vero=>\xC3\x88 vero@3;last=>ultimo@4;";
    mt_corpus_summary s;
    assert_int_equal(read_all(p, NULL, out, sizeof out, &s), MT_OK);
    assert_string_equal(out, want);
    assert_int_equal(s.pairs, 4);
    assert_int_equal(s.lines, 4);
    assert_int_equal(s.skipped, 0);
    assert_int_equal(read_all(z, NULL, out, sizeof out, NULL), MT_OK);
    assert_string_equal(out, want);
}

static void test_tsv_bad_lines(void **state) {
    (void)state;
    char p[1024];
    file_in(p, "bad1.tsv", "a\tb\nno tab here\nc\td\n");
    expect_error(p, NULL, MT_ERR_FORMAT, "bad1.tsv:2: missing tab");
    file_in(p, "bad2.tsv", "a\tb\tc\n");
    expect_error(p, NULL, MT_ERR_FORMAT, "bad2.tsv:1: more than two");
    file_in(p, "bad3.tsv", "a\tb\nc\td\n  \tx\n");
    expect_error(p, NULL, MT_ERR_FORMAT, "bad3.tsv:3: empty source side");
    file_in(p, "bad4.tsv", "a\tb\ncaf\xC3\tx\n");
    expect_error(p, NULL, MT_ERR_UTF8, "bad4.tsv:2: invalid UTF-8 at byte 4");
    char z[1024];
    zst_in(z, "bad5.tsv.zst", "a\tb\nc\t\n");
    expect_error(z, NULL, MT_ERR_FORMAT, "bad5.tsv.zst:2: empty target side");
    /* skipping: every kind counted, the good pairs delivered with their line numbers */
    file_in(p, "mixed.tsv", "a\tb\nno tab\nx\ty\tz\n\t\nbad\xFF\tq\nc\td\n\n");
    mt_corpus_options o = {MT_CORPUS_AUTO, NULL, NULL, 1};
    char out[4096];
    mt_corpus_summary s;
    assert_int_equal(read_all(p, &o, out, sizeof out, &s), MT_OK);
    assert_string_equal(out, "a=>b@1;c=>d@6;");
    assert_int_equal(s.lines, 7);
    assert_int_equal(s.pairs, 2);
    assert_int_equal(s.skipped, 5);
    assert_int_equal(s.missing_column, 3); /* no tab, three columns, the empty line */
    assert_int_equal(s.empty_side, 1);
    assert_int_equal(s.bad_utf8, 1);
    assert_non_null(strstr(s.first_bad, "mixed.tsv:2: missing tab"));
    char line[512];
    mt_corpus_summary_str(&s, line, sizeof line);
    assert_string_equal(line, "2 pairs from 7 lines, 5 skipped (1 invalid UTF-8, 3 missing column, 1 empty side)");
}

static void test_jsonl(void **state) {
    (void)state;
    char p[1024], z[1024], out[4096];
    const char *text =
        "{\"id\": \"0\", \"translation\": {\"en\": \"Hello \\\"you\\\"\", \"it\": \"Ciao \\u00e8\"}}\n"
        "{\"translation\": {\"it\": \"Gatto\", \"en\": \"Cat\", \"fr\": \"Chat\"}}\n";
    file_in(p, "books.jsonl", text);
    zst_in(z, "books.jsonl.zst", text);
    assert_int_equal(read_all(p, NULL, out, sizeof out, NULL), MT_OK);
    assert_string_equal(out, "Hello \"you\"=>Ciao \xC3\xA8@1;Cat=>Gatto@2;");
    assert_int_equal(read_all(z, NULL, out, sizeof out, NULL), MT_OK);
    assert_string_equal(out, "Hello \"you\"=>Ciao \xC3\xA8@1;Cat=>Gatto@2;");
    mt_corpus_options o = {MT_CORPUS_AUTO, "fr", "en", 0};
    expect_error(p, &o, MT_ERR_FORMAT, "books.jsonl:1: missing string key \"translation.fr\"");
    file_in(p, "bad.jsonl", "{\"translation\": {\"en\": \"a\", \"it\": \"b\"}}\n{\"translation\": {\"en\": \"a\", \"it\": }}\n");
    expect_error(p, NULL, MT_ERR_FORMAT, "bad.jsonl:2: invalid JSON");
    file_in(p, "bad2.jsonl", "{\"transl\": {}}\n");
    expect_error(p, NULL, MT_ERR_FORMAT, "bad2.jsonl:1: missing key \"translation\"");
    file_in(p, "bad3.jsonl", "{\"translation\": {\"en\": \"a\", \"it\": 3}}\n");
    expect_error(p, NULL, MT_ERR_FORMAT, "bad3.jsonl:1: missing string key \"translation.it\"");
    file_in(p, "bad4.jsonl", "{\"translation\": {\"en\": \" \", \"it\": \"b\"}}\n");
    expect_error(p, NULL, MT_ERR_FORMAT, "bad4.jsonl:1: empty en side");
    file_in(p, "mixed.jsonl",
            "[1]\n{\"translation\": {\"en\": \"a\", \"it\": \"b\"}}\nnot json\n{\"translation\": {\"en\": \"a\"}}\n");
    mt_corpus_options sk = {MT_CORPUS_AUTO, NULL, NULL, 1};
    mt_corpus_summary s;
    assert_int_equal(read_all(p, &sk, out, sizeof out, &s), MT_OK);
    assert_string_equal(out, "a=>b@2;");
    assert_int_equal(s.skipped, 3);
    assert_int_equal(s.bad_json, 2);
    assert_int_equal(s.missing_column, 1);
}

static void test_parallel(void **state) {
    (void)state;
    char a[1024], b[1024], spec[2100], out[4096];
    file_in(a, "p.en", "one\ntwo\nthree\n");
    zst_in(b, "p.it.zst", "uno\ndue\ntre\n");
    snprintf(spec, sizeof spec, "%s|%s", a, b);
    assert_int_equal(read_all(spec, NULL, out, sizeof out, NULL), MT_OK);
    assert_string_equal(out, "one=>uno@1;two=>due@2;three=>tre@3;");
    file_in(b, "short.it", "uno\ndue\n");
    snprintf(spec, sizeof spec, "%s|%s", a, b);
    expect_error(spec, NULL, MT_ERR_FORMAT, "p.en:3: misaligned files");
    assert_non_null(strstr(mt_last_error(), "short.it ends after 2 lines"));
    file_in(b, "long.it", "uno\n\ntre\nquattro\ncinque\n");
    snprintf(spec, sizeof spec, "%s|%s", a, b);
    expect_error(spec, NULL, MT_ERR_FORMAT, "long.it:2: empty target line");
    mt_corpus_options sk = {MT_CORPUS_AUTO, NULL, NULL, 1};
    mt_corpus_summary s;
    assert_int_equal(read_all(spec, &sk, out, sizeof out, &s), MT_OK);
    assert_string_equal(out, "one=>uno@1;three=>tre@3;");
    assert_int_equal(s.empty_side, 1);
    assert_int_equal(s.misaligned, 2);
    assert_int_equal(s.skipped, 3);
    assert_int_equal(s.lines, 5);
    expect_error("only-one-file|", NULL, MT_ERR_INVALID_ARG, "source-file|target-file");
}

static mt_pairs *make_pairs(size_t n) {
    static const char *const words[] = {"the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away"};
    static const char *const parole[] = {"il", "gatto", "era", "su", "un", "tappeto", "cane", "corse", "via", "lontano"};
    mt_pairs *p = NULL;
    assert_int_equal(mt_pairs_new(&p), MT_OK);
    for (size_t i = 0; i < n; i++) {
        char s[512] = "", t[512] = "";
        size_t ls = 1 + (i * 7) % 23, lt = 1 + (i * 11 + 3) % 19;
        for (size_t k = 0; k < ls; k++) {
            strcat(s, k ? " " : "");
            strcat(s, words[(i + k * 3) % 10]);
        }
        for (size_t k = 0; k < lt; k++) {
            strcat(t, k ? " " : "");
            strcat(t, parole[(i * 5 + k) % 10]);
        }
        assert_int_equal(mt_pairs_append(p, s, strlen(s), t, strlen(t)), MT_OK);
    }
    return p;
}

static void test_split(void **state) {
    (void)state;
    mt_pairs *all = make_pairs(1000);
    mt_split_options o = {0.1, 50, 42};
    mt_pairs *tr = NULL, *va = NULL, *te = NULL;
    assert_int_equal(mt_pairs_split(all, &o, &tr, &va, &te), MT_OK);
    assert_int_equal(va->n, 100);
    assert_int_equal(te->n, 50);
    assert_int_equal(tr->n, 850);
    /* every pair in exactly one part: pairs are distinct by (src, tgt) here, so match by text */
    char *seen = calloc(all->n, 1);
    mt_pairs *parts[3] = {tr, va, te};
    for (int k = 0; k < 3; k++) {
        size_t last = 0;
        for (size_t i = 0; i < parts[k]->n; i++) {
            size_t j = last;
            /* parts keep the corpus order, so the match is found scanning forward */
            while (j < all->n && (strcmp(mt_pairs_src(all, j), mt_pairs_src(parts[k], i)) ||
                                  strcmp(mt_pairs_tgt(all, j), mt_pairs_tgt(parts[k], i))))
                j++;
            assert_true(j < all->n);
            assert_int_equal(seen[j], 0);
            seen[j] = 1;
            last = j + 1;
        }
    }
    for (size_t i = 0; i < all->n; i++) assert_int_equal(seen[i], 1);
    free(seen);
    /* the same seed gives the same parts, another seed other ones */
    mt_pairs *te2 = NULL, *te3 = NULL;
    assert_int_equal(mt_pairs_split(all, &o, NULL, NULL, &te2), MT_OK);
    o.seed = 43;
    assert_int_equal(mt_pairs_split(all, &o, NULL, NULL, &te3), MT_OK);
    assert_int_equal(te2->text_len, te->text_len);
    assert_memory_equal(te2->text, te->text, te->text_len);
    assert_true(te3->text_len != te->text_len || memcmp(te3->text, te->text, te->text_len) != 0);
    o.valid = 900;
    o.test = 200;
    assert_int_equal(mt_pairs_split(all, &o, NULL, NULL, NULL), MT_ERR_INVALID_ARG);
    assert_non_null(strstr(mt_last_error(), "do not fit"));
    mt_pairs_free(tr);
    mt_pairs_free(va);
    mt_pairs_free(te);
    mt_pairs_free(te2);
    mt_pairs_free(te3);
    mt_pairs_free(all);
}

static mt_tokenizer *wordlevel_for(const mt_pairs *p) {
    mt_tok_train_options o;
    mt_tok_train_options_default(&o, MT_TOK_WORDLEVEL);
    o.min_frequency = 1;
    mt_tok_trainer *t = NULL;
    assert_int_equal(mt_tok_trainer_new(&o, &t), MT_OK);
    for (size_t i = 0; i < p->n; i++) {
        assert_int_equal(mt_tok_trainer_feed(t, mt_pairs_src(p, i), p->src_len[i]), MT_OK);
        assert_int_equal(mt_tok_trainer_feed(t, mt_pairs_tgt(p, i), p->tgt_len[i]), MT_OK);
    }
    mt_tokenizer *tok = NULL;
    assert_int_equal(mt_tok_trainer_finish(t, &tok), MT_OK);
    return tok;
}

static void test_dataset(void **state) {
    (void)state;
    mt_pairs *p = make_pairs(3000);
    mt_tokenizer *tok = wordlevel_for(p);
    mt_dataset_options o;
    mt_dataset_options_default(&o);
    o.threads = 1;
    mt_dataset *d1 = NULL, *d4 = NULL;
    assert_int_equal(mt_dataset_build(tok, p, &o, &d1), MT_OK);
    o.threads = 4;
    assert_int_equal(mt_dataset_build(tok, p, &o, &d4), MT_OK);
    assert_int_equal(d1->n, 3000);
    assert_int_equal(d1->n_filtered, 0);
    assert_int_equal(d4->n, d1->n);
    assert_int_equal(d4->src_tokens + d4->tgt_tokens, d1->src_tokens + d1->tgt_tokens);
    assert_memory_equal(d4->ids, d1->ids, (d1->src_tokens + d1->tgt_tokens) * sizeof(int32_t));
    /* framing: pair 5 has 1 + 35 % 23 = 13 source words and 1 + 58 % 19 = 2 target words */
    assert_int_equal(d1->src_len[5], 13 + 2);
    assert_int_equal(d1->tgt_len[5], 2 + 2);
    const int32_t *s = d1->ids + d1->src_off[5], *t = d1->ids + d1->tgt_off[5];
    assert_int_equal(s[0], 2);
    assert_int_equal(s[14], 3);
    assert_int_equal(t[0], 2);
    assert_int_equal(t[3], 3);
    mt_ids ids = {0};
    assert_int_equal(mt_tok_encode(tok, mt_pairs_tgt(p, 5), p->tgt_len[5], &ids), MT_OK);
    assert_memory_equal(t + 1, ids.v, 2 * sizeof(int32_t));
    mt_ids_free(&ids);
    /* length filter: a source of at most 12 tokens with its framing keeps sources of <= 10 words */
    mt_dataset *df = NULL;
    o.max_src_len = 12;
    o.src_sos = 0; /* then 11 words + [EOS] */
    assert_int_equal(mt_dataset_build(tok, p, &o, &df), MT_OK);
    size_t keep = 0;
    for (size_t i = 0; i < 3000; i++) keep += 1 + (i * 7) % 23 <= 11;
    assert_int_equal(df->n, keep);
    assert_int_equal(df->n_filtered, 3000 - keep);
    for (size_t i = 0; i < df->n; i++) {
        assert_true(df->src_len[i] <= 12);
        assert_int_not_equal(df->ids[df->src_off[i]], 2); /* no [SOS] on the source */
        assert_int_equal(df->ids[df->src_off[i] + df->src_len[i] - 1], 3);
        size_t pi = df->pair_index[i];
        assert_int_equal(df->src_len[i], 1 + (1 + (pi * 7) % 23));
    }
    mt_dataset_free(d1);
    mt_dataset_free(d4);
    mt_dataset_free(df);
    mt_tok_free(tok);
    mt_pairs_free(p);
}

typedef struct fixture {
    mt_pairs *p;
    mt_tokenizer *tok;
    mt_dataset *d;
} fixture;

static fixture make_fixture(size_t n) {
    fixture f;
    f.p = make_pairs(n);
    f.tok = wordlevel_for(f.p);
    assert_int_equal(mt_dataset_build(f.tok, f.p, NULL, &f.d), MT_OK);
    return f;
}

static void free_fixture(fixture *f) {
    mt_dataset_free(f->d);
    mt_tok_free(f->tok);
    mt_pairs_free(f->p);
}

static void test_batcher_epoch(void **state) {
    (void)state;
    fixture f = make_fixture(2000);
    mt_batcher_options o;
    mt_batcher_options_default(&o);
    o.max_tokens = 600;
    o.max_sentences = 40;
    o.seed = 7;
    mt_batcher *b = NULL;
    assert_int_equal(mt_batcher_new(f.d, &o, &b), MT_OK);
    size_t nb = mt_batcher_batches_per_epoch(b);
    assert_true(nb > 20);
    int *count = calloc(f.d->n, sizeof *count);
    mt_batch bt;
    memset(&bt, 0, sizeof bt);
    size_t cells = 0, pads = 0;
    for (size_t k = 0; k < nb; k++) {
        assert_int_equal(mt_batcher_next(b, &bt), MT_OK);
        assert_int_equal(bt.pos.epoch, 0);
        assert_int_equal(bt.pos.batch, k);
        assert_true(bt.B >= 1 && bt.B <= 40);
        assert_true((size_t)bt.B * (size_t)(bt.S + bt.T) <= 600);
        assert_int_equal(bt.global_B, bt.B);
        size_t st = 0, tt = 0;
        for (int r = 0; r < bt.B; r++) {
            uint64_t e = bt.example[r];
            count[e]++;
            assert_int_equal(bt.src_len[r], f.d->src_len[e]);
            assert_int_equal(bt.tgt_len[r], f.d->tgt_len[e]);
            const int32_t *srow = bt.src + (size_t)r * bt.S, *trow = bt.tgt + (size_t)r * bt.T;
            assert_memory_equal(srow, f.d->ids + f.d->src_off[e], f.d->src_len[e] * sizeof(int32_t));
            for (int j = bt.src_len[r]; j < bt.S; j++) assert_int_equal(srow[j], 0);
            assert_int_equal(trow[0], 2);
            assert_int_equal(trow[bt.tgt_len[r] - 1], 3);
            for (int j = bt.tgt_len[r]; j < bt.T; j++) assert_int_equal(trow[j], 0);
            st += (size_t)bt.src_len[r];
            tt += (size_t)bt.tgt_len[r];
        }
        assert_int_equal(bt.src_tokens, st);
        assert_int_equal(bt.tgt_tokens, tt);
        cells += (size_t)bt.B * (size_t)(bt.S + bt.T);
        pads += (size_t)bt.B * (size_t)(bt.S + bt.T) - st - tt;
    }
    for (size_t i = 0; i < f.d->n; i++) assert_int_equal(count[i], 1);
    /* grouping by length keeps padding low (random batches of this corpus pad ~40%) */
    assert_true((double)pads / (double)cells < 0.15);
    /* the next batch is the first of epoch 1 */
    assert_int_equal(mt_batcher_next(b, &bt), MT_OK);
    assert_int_equal(bt.pos.epoch, 1);
    assert_int_equal(bt.pos.batch, 0);
    /* too small a budget names the example */
    mt_batcher *bad = NULL;
    o.max_tokens = 10;
    assert_int_equal(mt_batcher_new(f.d, &o, &bad), MT_ERR_CONFIG);
    assert_non_null(strstr(mt_last_error(), "max_tokens 10"));
    o.max_tokens = 600;
    o.n_ranks = 2;
    o.rank = 2;
    assert_int_equal(mt_batcher_new(f.d, &o, &bad), MT_ERR_CONFIG);
    assert_non_null(strstr(mt_last_error(), "rank 2"));
    free(count);
    mt_batch_free(&bt);
    mt_batcher_free(b);
    free_fixture(&f);
}

static void test_batcher_shards(void **state) {
    (void)state;
    fixture f = make_fixture(1500);
    enum { N = 3 };
    mt_batcher_options o;
    mt_batcher_options_default(&o);
    o.max_tokens = 900;
    o.seed = 11;
    o.n_ranks = N;
    mt_batcher *ranks[N], *global = NULL;
    for (int r = 0; r < N; r++) {
        o.rank = r;
        assert_int_equal(mt_batcher_new(f.d, &o, &ranks[r]), MT_OK);
    }
    o.n_ranks = 1;
    o.rank = 0;
    assert_int_equal(mt_batcher_new(f.d, &o, &global), MT_OK);
    size_t nb = mt_batcher_batches_per_epoch(global);
    mt_batch g, sh[N];
    memset(&g, 0, sizeof g);
    memset(sh, 0, sizeof sh);
    int *mark = calloc(f.d->n, sizeof *mark);
    for (size_t k = 0; k < 2 * nb; k++) { /* two epochs */
        assert_int_equal(mt_batcher_next(global, &g), MT_OK);
        for (int r = 0; r < N; r++) assert_int_equal(mt_batcher_next(ranks[r], &sh[r]), MT_OK);
        /* the shards of the N ranks cover the global batch exactly once */
        for (int i = 0; i < g.B; i++) mark[g.example[i]] = 1;
        int total = 0;
        for (int r = 0; r < N; r++) {
            assert_int_equal(sh[r].pos.epoch, g.pos.epoch);
            assert_int_equal(sh[r].pos.batch, g.pos.batch);
            assert_int_equal(sh[r].global_B, g.B);
            assert_int_equal(sh[r].global_src_tokens, g.src_tokens);
            assert_int_equal(sh[r].global_tgt_tokens, g.tgt_tokens);
            assert_true(sh[r].B == g.B / N || sh[r].B == g.B / N + 1);
            for (int i = 0; i < sh[r].B; i++) {
                assert_int_equal(mark[sh[r].example[i]], 1); /* in the global batch, not seen yet */
                mark[sh[r].example[i]] = 2;
                total++;
            }
            assert_true(sh[r].S <= g.S && sh[r].T <= g.T);
        }
        assert_int_equal(total, g.B);
        for (int i = 0; i < g.B; i++) {
            assert_int_equal(mark[g.example[i]], 2);
            mark[g.example[i]] = 0;
        }
    }
    free(mark);
    mt_batch_free(&g);
    for (int r = 0; r < N; r++) {
        mt_batch_free(&sh[r]);
        mt_batcher_free(ranks[r]);
    }
    mt_batcher_free(global);
    free_fixture(&f);
}

/* The example sequence of the next k batches. */
static void take(mt_batcher *b, size_t k, uint64_t *out, size_t *n) {
    mt_batch bt;
    memset(&bt, 0, sizeof bt);
    *n = 0;
    for (size_t i = 0; i < k; i++) {
        assert_int_equal(mt_batcher_next(b, &bt), MT_OK);
        for (int r = 0; r < bt.B; r++) out[(*n)++] = bt.example[r];
        out[(*n)++] = UINT64_MAX; /* batch boundary */
    }
    mt_batch_free(&bt);
}

static void test_batcher_seeds_and_resume(void **state) {
    (void)state;
    fixture f = make_fixture(1200);
    mt_batcher_options o;
    mt_batcher_options_default(&o);
    o.max_tokens = 500;
    o.seed = 3;
    mt_batcher *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(mt_batcher_new(f.d, &o, &a), MT_OK);
    assert_int_equal(mt_batcher_new(f.d, &o, &b), MT_OK);
    o.seed = 4;
    assert_int_equal(mt_batcher_new(f.d, &o, &c), MT_OK);
    size_t nb = mt_batcher_batches_per_epoch(a);
    assert_int_equal(mt_batcher_batches_per_epoch(c), nb); /* cut points depend on lengths only */
    size_t cap = 2 * (f.d->n + nb) + 16, na = 0, nbb = 0, nc = 0;
    uint64_t *ea = malloc(cap * sizeof *ea), *eb = malloc(cap * sizeof *eb), *ec = malloc(cap * sizeof *ec);
    take(a, nb, ea, &na);
    take(b, nb, eb, &nbb);
    take(c, nb, ec, &nc);
    assert_int_equal(na, nbb);
    assert_memory_equal(ea, eb, na * sizeof *ea); /* same seed, same epoch */
    assert_true(na != nc || memcmp(ea, ec, na * sizeof *ea) != 0);
    /* epoch 1 differs from epoch 0 */
    uint64_t *e1 = malloc(cap * sizeof *e1);
    size_t n1 = 0;
    take(a, nb, e1, &n1);
    assert_true(n1 != na || memcmp(e1, ea, na * sizeof *ea) != 0);
    /* resume: store a's position in the middle of epoch 1... */
    mt_batcher *r1 = NULL, *r2 = NULL;
    o.seed = 3;
    assert_int_equal(mt_batcher_new(f.d, &o, &r1), MT_OK);
    size_t tmp_n;
    take(r1, nb + nb / 2, e1, &tmp_n);
    mt_data_pos pos = mt_batcher_tell(r1);
    assert_int_equal(pos.epoch, 1);
    assert_int_equal(pos.batch, nb / 2);
    /* ...a new batcher moved there continues exactly like the uninterrupted one, across the epoch end */
    assert_int_equal(mt_batcher_new(f.d, &o, &r2), MT_OK);
    assert_int_equal(mt_batcher_seek(r2, pos), MT_OK);
    size_t x = 0, y = 0;
    take(r1, nb, ea, &x);
    take(r2, nb, eb, &y);
    assert_int_equal(x, y);
    assert_memory_equal(ea, eb, x * sizeof *ea);
    pos.batch = nb;
    assert_int_equal(mt_batcher_seek(r2, pos), MT_ERR_INVALID_ARG);
    free(ea);
    free(eb);
    free(ec);
    free(e1);
    mt_batcher_free(a);
    mt_batcher_free(b);
    mt_batcher_free(c);
    mt_batcher_free(r1);
    mt_batcher_free(r2);
    free_fixture(&f);
}

static int setup(void **state) {
    (void)state;
    return tt_mkdtemp(dir, sizeof dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tt_rmdir(dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tsv),        cmocka_unit_test(test_tsv_bad_lines),  cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_parallel),   cmocka_unit_test(test_split),          cmocka_unit_test(test_dataset),
        cmocka_unit_test(test_batcher_epoch), cmocka_unit_test(test_batcher_shards),
        cmocka_unit_test(test_batcher_seeds_and_resume),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
