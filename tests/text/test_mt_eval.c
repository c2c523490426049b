/*
 * test_mt_eval.c — the mt-eval program: its text and JSON output carry the scores of the metric
 * functions, a line-count mismatch is an error naming both counts, bad usage exits 2, .zst inputs
 * work; and where sacrebleu is installed, its command line prints the same BLEU and chrF lines
 * (text and JSON) as ours, the version field aside.
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
#include "text/metrics.h"
#include "text_test.h"

static char dir[512], bin[1024], ref[1024], hyp[1024];

static const char *REFS[] = {
    "Il gatto \xC3\xA8 sul tappeto.", "\xC2\xAB" "Ciao\xC2\xBB, disse l'uomo.", "Ho 12 anni, e tu?",
    "La stazione \xC3\xA8 lontana - circa 3,5 km.", "Perch\xC3\xA9 no?", "Non lo so.", "Buongiorno a tutti!",
    "Il treno parte alle 10.30.",
};
static const char *HYPS[] = {
    "Il gatto \xC3\xA8 sul tappeto.", "\xE2\x80\x9C" "Ciao\xE2\x80\x9D, ha detto l'uomo.", "Ho dodici anni, e tu?   ",
    "La stazione \xC3\xA8 lontano circa 3,5 km", "", "Non so.", "Buongiorno a tutti voi!", "Il treno parte alle 10:30",
};
#define N (sizeof REFS / sizeof REFS[0])

static char *slurp(const char *path) {
    char *d = NULL;
    size_t n = 0;
    assert_int_equal(mt_file_read_all(path, &d, &n), MT_OK);
    return d;
}

static void test_text_output(void **state) {
    (void)state;
    char out[1024];
    tt_path(out, sizeof out, dir, "out.txt");
    assert_int_equal(tt_system("'%s' --ref '%s' < '%s' > '%s'", bin, ref, hyp, out), 0);
    char *text = slurp(out);
    /* the values of the library functions, as printed (trailing spaces stripped like sacrebleu) */
    const char *h[N];
    char stripped[N][256];
    for (size_t i = 0; i < N; i++) {
        snprintf(stripped[i], sizeof stripped[i], "%.*s", (int)mt_py_rstrip_len(HYPS[i], strlen(HYPS[i])), HYPS[i]);
        h[i] = stripped[i];
    }
    mt_bleu_score b;
    double chrf = 0, cer = 0, wer = 0;
    assert_int_equal(mt_bleu_corpus(h, REFS, N, &b), MT_OK);
    assert_int_equal(mt_chrf_corpus(h, REFS, N, &chrf), MT_OK);
    assert_int_equal(mt_cer_corpus(h, REFS, N, &cer), MT_OK);
    assert_int_equal(mt_wer_corpus(h, REFS, N, &wer), MT_OK);
    char want[512];
    snprintf(want, sizeof want, "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:mt-%s = %.1f %.1f/%.1f/%.1f/%.1f (BP = %.3f",
             mt_version_string(), b.score, b.precisions[0], b.precisions[1], b.precisions[2], b.precisions[3], b.bp);
    if (!strstr(text, want)) printf("output:\n%s\nwanted: %s\n", text, want);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "chrF2|nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:mt-%s = %.1f", mt_version_string(), chrf);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "CER = %.4f\n", cer);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "WER = %.4f\n", wer);
    assert_non_null(strstr(text, want));
    assert_true(b.score > 10 && b.score < 90);
    mt_sys_free(text);

    /* JSON, hypotheses from a .zst file through --hyp */
    char hz[1024];
    tt_path(hz, sizeof hz, dir, "hyp.txt.zst");
    char *ht = slurp(hyp);
    assert_int_equal(mt_file_write_atomic(hz, ht, strlen(ht)), MT_OK);
    mt_sys_free(ht);
    assert_int_equal(tt_system("'%s' --ref '%s' --hyp '%s' --json --width 2 > '%s'", bin, ref, hz, out), 0);
    json_error_t err;
    json_t *arr = json_load_file(out, 0, &err);
    assert_non_null(arr);
    assert_int_equal(json_array_size(arr), 4);
    static const char *const names[] = {"BLEU", "chrF2", "CER", "WER"};
    double vals[] = {round(b.score * 100) / 100, round(chrf * 100) / 100, round(cer * 1e5) / 1e5, round(wer * 1e5) / 1e5};
    for (size_t i = 0; i < 4; i++) {
        json_t *o = json_array_get(arr, i);
        assert_string_equal(json_string_value(json_object_get(o, "name")), names[i]);
        assert_true(fabs(json_number_value(json_object_get(o, "score")) - vals[i]) < 1e-9);
    }
    json_decref(arr);
}

static void test_errors(void **state) {
    (void)state;
    char extra[1024], err[1024];
    tt_path(extra, sizeof extra, dir, "extra.txt");
    tt_path(err, sizeof err, dir, "err.txt");
    assert_int_equal(tt_write_str(extra, "a\nb\nc\n"), 0);
    assert_int_equal(tt_system("'%s' --ref '%s' < '%s' > /dev/null 2> '%s'", bin, ref, extra, err), 1);
    char *msg = slurp(err);
    char want[1200];
    snprintf(want, sizeof want, "has 3 lines but the reference (%s) has %zu", ref, N);
    assert_non_null(strstr(msg, want));
    mt_sys_free(msg);
    assert_int_equal(tt_system("'%s' < '%s' > /dev/null 2>&1", bin, hyp), 2);
    assert_int_equal(tt_system("'%s' --ref '%s' --bogus < '%s' > /dev/null 2>&1", bin, ref, hyp), 2);
    assert_int_equal(tt_system("'%s' --ref '%s/missing.txt' < '%s' > /dev/null 2> '%s'", bin, dir, hyp, err), 1);
    msg = slurp(err);
    assert_non_null(strstr(msg, "missing.txt"));
    mt_sys_free(msg);
    char bad[1024];
    tt_path(bad, sizeof bad, dir, "bad.txt");
    assert_int_equal(tt_write_str(bad, "ok\nnot \xFF ok\n"), 0);
    assert_int_equal(tt_system("'%s' --ref '%s' < '%s' > /dev/null 2> '%s'", bin, bad, bad, err), 1);
    msg = slurp(err);
    assert_non_null(strstr(msg, "bad.txt:2: invalid UTF-8"));
    mt_sys_free(msg);
}

/* Replaces "version:mt-X.Y.Z" (and "version": "mt-X.Y.Z") by sacrebleu's version. */
static void normalize_version(char *s, const char *sbv) {
    char tag[32];
    snprintf(tag, sizeof tag, "mt-%s", mt_version_string());
    char *p;
    while ((p = strstr(s, tag))) {
        size_t tl = strlen(tag), vl = strlen(sbv);
        memmove(p + vl, p + tl, strlen(p + tl) + 1);
        memcpy(p, sbv, vl);
    }
}

static void test_same_as_sacrebleu_cli(void **state) {
    (void)state;
    const char *py = tt_python_with("sacrebleu");
    if (!py) {
        printf("sacrebleu not importable: the comparison with its command line is skipped\n");
        skip();
    }
    char ours[1024], theirs[1024], ver[1024];
    tt_path(ours, sizeof ours, dir, "ours.txt");
    tt_path(theirs, sizeof theirs, dir, "theirs.txt");
    tt_path(ver, sizeof ver, dir, "version.txt");
    assert_int_equal(tt_system("'%s' -c 'import sacrebleu; print(sacrebleu.__version__, end=\"\")' > '%s'", py, ver), 0);
    char *sbv = slurp(ver);
    const char *fmts[][2] = {{"", "-f text"}, {"--json", ""}};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(tt_system("'%s' --ref '%s' --metrics bleu,chrf %s < '%s' > '%s'", bin, ref, fmts[k][0], hyp, ours), 0);
        assert_int_equal(tt_system("'%s' -m sacrebleu '%s' -i '%s' -m bleu chrf %s > '%s'", py, ref, hyp, fmts[k][1], theirs), 0);
        char *a = slurp(ours), *b = slurp(theirs);
        char *a2 = malloc(strlen(a) + 64);
        strcpy(a2, a);
        normalize_version(a2, sbv);
        if (strcmp(a2, b) != 0) printf("ours:\n%s\nsacrebleu:\n%s\n", a2, b);
        assert_string_equal(a2, b);
        free(a2);
        mt_sys_free(a);
        mt_sys_free(b);
    }
    mt_sys_free(sbv);
}

int main(void) {
    snprintf(bin, sizeof bin, "%s/bin/mt-eval", tt_build_dir());
    if (access(bin, X_OK) != 0) {
        printf("mt-eval is not built at %s (MT_BUILD_DIR)\n", bin);
        return 1;
    }
    if (!tt_mkdtemp(dir, sizeof dir)) return 1;
    tt_path(ref, sizeof ref, dir, "ref.txt");
    tt_path(hyp, sizeof hyp, dir, "hyp.txt");
    FILE *fr = fopen(ref, "w"), *fh = fopen(hyp, "w");
    for (size_t i = 0; i < N; i++) {
        fprintf(fr, "%s\n", REFS[i]);
        fprintf(fh, "%s\n", HYPS[i]);
    }
    fclose(fr);
    fclose(fh);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_text_output), cmocka_unit_test(test_errors),
                                       cmocka_unit_test(test_same_as_sacrebleu_cli)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tt_rmdir(dir);
    return rc;
}
