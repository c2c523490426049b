/*
 * test_sacrebleu.c — our BLEU, chrF, CER and WER against sacrebleu (and the torchmetrics
 * definitions) on real sentences from $MT_DATA_DIR: a sample of Italian references with
 * hypotheses made from them by fixed edits (copies, dropped and swapped words, halves, the English
 * source, empty lines). Scores must agree to 2 decimals (they agree to rounding error), the 13a
 * tokenization line by line exactly. Skips (77) without the data or without sacrebleu.
 */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "io/io.h"
#include "text/corpus.h"
#include "text/metrics.h"
#include "text_test.h"

static char dir[512];
static const char *python;
static char tatoeba[1024], europarl[1024];

/* A deterministic "system output" for reference r (English source s), by its index. */
static void make_hyp(size_t i, const char *r, const char *s, char *out, size_t cap) {
    char words[128][128];
    size_t n = 0;
    const char *p = r;
    while (*p && n < 128) {
        while (*p == ' ') p++;
        if (!*p) break;
        size_t k = 0;
        while (p[k] && p[k] != ' ') k++;
        snprintf(words[n++], 128, "%.*s", (int)(k < 127 ? k : 127), p);
        p += k;
    }
    out[0] = '\0';
    switch (i % 7) {
    case 0: snprintf(out, cap, "%s", r); return;
    case 3: snprintf(out, cap, "%s", s); return;
    case 6:
        if (i % 14 == 6) return; /* empty hypothesis */
        snprintf(out, cap, "\xC2\xAB%s\xC2\xBB", r);
        return;
    default: break;
    }
    for (size_t k = 0; k < n; k++) {
        size_t w = k;
        if (i % 7 == 1 && k % 3 == 2) continue;          /* drop every third word */
        if (i % 7 == 2) w = (k % 2 == 0 && k + 1 < n) ? k + 1 : (k % 2 ? k - 1 : k); /* swap neighbours */
        if (i % 7 == 4 && k >= (n + 1) / 2) break;        /* first half */
        if (i % 7 == 5 && k == n / 2) {                    /* one word replaced, one repeated */
            strncat(out, out[0] ? " casa" : "casa", cap - strlen(out) - 1);
            continue;
        }
        if (out[0]) strncat(out, " ", cap - strlen(out) - 1);
        strncat(out, words[w], cap - strlen(out) - 1);
        if (i % 7 == 5 && k == 0) {
            strncat(out, " ", cap - strlen(out) - 1);
            strncat(out, words[w], cap - strlen(out) - 1);
        }
    }
}

static void test_against_sacrebleu(void **state) {
    (void)state;
    const char *specs[] = {tatoeba, europarl};
    mt_pairs *all = NULL;
    assert_int_equal(mt_pairs_read(specs, 2, NULL, &all, NULL), MT_OK);
    size_t n = 0, cap = all->n / 19 + 8;
    char **hyps = calloc(cap, sizeof *hyps), **refs = calloc(cap, sizeof *refs);
    char hp[1024], rp[1024], op[1024], tp[1024];
    tt_path(hp, sizeof hp, dir, "hyps.txt");
    tt_path(rp, sizeof rp, dir, "refs.txt");
    tt_path(op, sizeof op, dir, "sacrebleu.json");
    tt_path(tp, sizeof tp, dir, "tok13a.txt");
    FILE *fh = fopen(hp, "w"), *fr = fopen(rp, "w");
    for (size_t i = 0; i < all->n; i += 19) { /* ~4000 pairs of both corpora */
        char h[4096];
        make_hyp(n, mt_pairs_tgt(all, i), mt_pairs_src(all, i), h, sizeof h);
        hyps[n] = strdup(h);
        refs[n] = strdup(mt_pairs_tgt(all, i));
        fprintf(fh, "%s\n", hyps[n]);
        fprintf(fr, "%s\n", refs[n]);
        n++;
    }
    fclose(fh);
    fclose(fr);
    const char *const *H = (const char *const *)hyps, *const *R = (const char *const *)refs;
    mt_bleu_score bleu;
    double chrf = 0, cer = 0, wer = 0;
    assert_int_equal(mt_bleu_corpus(H, R, n, &bleu), MT_OK);
    assert_int_equal(mt_chrf_corpus(H, R, n, &chrf), MT_OK);
    assert_int_equal(mt_cer_corpus(H, R, n, &cer), MT_OK);
    assert_int_equal(mt_wer_corpus(H, R, n, &wer), MT_OK);

    assert_int_equal(tt_system("'%s' '%s/tests/text/sacrebleu_ref.py' '%s' '%s' '%s' '%s'", python, tt_source_dir(), hp, rp,
                               op, tp),
                     0);
    json_error_t err;
    json_t *ref = json_load_file(op, 0, &err);
    assert_non_null(ref);
    double sb = json_number_value(json_object_get(ref, "bleu")), sc = json_number_value(json_object_get(ref, "chrf"));
    double tc = json_number_value(json_object_get(ref, "cer")), tw = json_number_value(json_object_get(ref, "wer"));
    printf("sentences: %zu (every 19th pair of tatoeba + europarl)\n", n);
    printf("BLEU  ours %.6f  sacrebleu %s %.6f  diff %.2e\n", bleu.score, json_string_value(json_object_get(ref, "sacrebleu")),
           sb, fabs(bleu.score - sb));
    printf("chrF2 ours %.6f  sacrebleu %.6f  diff %.2e\n", chrf, sc, fabs(chrf - sc));
    printf("CER   ours %.6f  %s %.6f  diff %.2e\n", cer, json_string_value(json_object_get(ref, "cer_impl")), tc, fabs(cer - tc));
    printf("WER   ours %.6f  %s %.6f  diff %.2e\n", wer, json_string_value(json_object_get(ref, "cer_impl")), tw, fabs(wer - tw));
    assert_true(fabs(bleu.score - sb) < 0.005);
    assert_true(fabs(chrf - sc) < 0.005);
    assert_true(fabs(cer - tc) < 0.00005);
    assert_true(fabs(wer - tw) < 0.00005);
    /* the statistics behind BLEU are integers: they must be equal */
    json_t *counts = json_object_get(ref, "counts"), *totals = json_object_get(ref, "totals");
    for (size_t k = 0; k < 4; k++) {
        assert_int_equal(bleu.stats.correct[k], json_integer_value(json_array_get(counts, k)));
        assert_int_equal(bleu.stats.total[k], json_integer_value(json_array_get(totals, k)));
    }
    assert_int_equal(bleu.stats.sys_len, json_integer_value(json_object_get(ref, "sys_len")));
    assert_int_equal(bleu.stats.ref_len, json_integer_value(json_object_get(ref, "ref_len")));
    json_decref(ref);
    /* 13a, line by line */
    mt_reader *r = NULL;
    assert_int_equal(mt_reader_open(tp, &r), MT_OK);
    mt_buf b = {0};
    size_t mismatches = 0;
    for (size_t k = 0; k < 2 * n; k++) {
        const char *line = NULL;
        size_t len = 0;
        assert_int_equal(mt_reader_line(r, &line, &len), MT_OK);
        assert_non_null(line);
        const char *s = k < n ? hyps[k] : refs[k - n];
        assert_int_equal(mt_bleu_tokenize_13a(s, mt_py_rstrip_len(s, strlen(s)), &b), MT_OK);
        if (b.n != len || memcmp(b.p, line, len) != 0) {
            if (mismatches++ < 5) printf("13a differs:\n  ours %s\n  sacrebleu %s\n", b.p, line);
        }
    }
    mt_reader_close(r);
    mt_buf_free(&b);
    printf("13a tokenization: %zu lines, %zu differ\n", 2 * n, mismatches);
    assert_int_equal(mismatches, 0);
    for (size_t k = 0; k < n; k++) {
        free(hyps[k]);
        free(refs[k]);
    }
    free(hyps);
    free(refs);
    mt_pairs_free(all);
}

int main(void) {
    int have_t = tt_data_file("tatoeba.en-it.tsv.zst", tatoeba, sizeof tatoeba) != NULL;
    int have_e = tt_data_file("europarl-v7-lowercased.en-it.tsv.zst", europarl, sizeof europarl) != NULL;
    if (!have_t || !have_e) {
        printf("SKIP: %s or %s is not here (set MT_DATA_DIR to the corpora's directory)\n", tatoeba, europarl);
        return TT_SKIP;
    }
    if (!(python = tt_python_with("sacrebleu"))) {
        printf("SKIP: no Python with sacrebleu ($MT_TORCH_PYTHON or /usr/bin/python3); run deploy/install-deps.sh\n");
        return TT_SKIP;
    }
    if (!tt_mkdtemp(dir, sizeof dir)) return 1;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_against_sacrebleu)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tt_rmdir(dir);
    return rc;
}
