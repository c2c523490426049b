/*
 * test_metrics.c — BLEU, chrF, CER and WER on cases worked out by hand (n-gram counts, brevity
 * penalty, exp smoothing, chrF's effective orders, edit distances), 13a tokenization rules, and the
 * edge cases: empty hypothesis, empty corpus, a hypothesis longer than its reference, non-ASCII
 * punctuation and whitespace, invalid input.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "microtensor.h"
#include "text/metrics.h"

#define NEAR(a, b) assert_true(fabs((a) - (b)) < 1e-9)

static void test_13a(void **state) {
    (void)state;
    static const char *const cases[][2] = {
        {"the cat sat on the mat.", "the cat sat on the mat ."},
        /* non-ASCII punctuation is not in 13a's classes: it stays on its word */
        {"\xC2\xAB" "Ciao\xC2\xBB, disse\xE2\x80\xA6 l'uomo.", "\xC2\xAB" "Ciao\xC2\xBB , disse\xE2\x80\xA6 l'uomo ."},
        /* numbers keep their separators; a dash after a digit is split */
        {"3.5, 1,000 and 2-3 (really?)", "3.5 , 1,000 and 2 - 3 ( really ? )"},
        {"A&amp;B &lt;tag&gt; &quot;q&quot;", "A & B < tag > \" q \""},
        {"x<skipped>y  end-\nof line", "xy endof line"},
        {"  Mr. Smith's e-mail: a@b.com/x  ", "Mr . Smith's e-mail : a @ b . com / x"},
        {"", ""},
    };
    mt_buf b = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(mt_bleu_tokenize_13a(cases[i][0], strlen(cases[i][0]), &b), MT_OK);
        assert_string_equal(b.p, cases[i][1]);
    }
    mt_buf_free(&b);
}

static void test_bleu_by_hand(void **state) {
    (void)state;
    /* sentence 1: 7 hyp tokens, 1-4 gram matches 6/7 4/6 2/5 1/4; sentence 2: "hello" vs
     * "hello world": 1/1 and no longer n-grams. sys_len 8, ref_len 9. */
    const char *hyps[] = {"the cat sat on a mat .", "hello"};
    const char *refs[] = {"the cat sat on the mat .", "hello world"};
    mt_bleu_score s;
    assert_int_equal(mt_bleu_corpus(hyps, refs, 2, &s), MT_OK);
    uint64_t c[] = {7, 4, 2, 1}, t[] = {8, 6, 5, 4};
    for (int n = 0; n < 4; n++) {
        assert_int_equal(s.stats.correct[n], c[n]);
        assert_int_equal(s.stats.total[n], t[n]);
    }
    assert_int_equal(s.stats.sys_len, 8);
    assert_int_equal(s.stats.ref_len, 9);
    double bp = exp(1.0 - 9.0 / 8.0);
    double want = 100.0 * bp * pow((7.0 / 8) * (4.0 / 6) * (2.0 / 5) * (1.0 / 4), 0.25);
    NEAR(s.score, want);
    NEAR(s.bp, bp);
    NEAR(s.ratio, 8.0 / 9.0);
    NEAR(s.precisions[0], 87.5);
    double abi = 0;
    assert_int_equal(mt_metric_bleu(hyps, refs, 2, &abi), MT_OK);
    NEAR(abi, want);
    /* identical: 100 */
    const char *same[] = {"Il gatto \xC3\xA8 sul tappeto."};
    assert_int_equal(mt_bleu_corpus(same, same, 1, &s), MT_OK);
    NEAR(s.score, 100.0);
}

static void test_bleu_smoothing_and_lengths(void **state) {
    (void)state;
    /* no 3-gram or 4-gram match: exp smoothing gives 100/(2*2) and 100/(4*1) */
    const char *h1[] = {"a b c x"}, *r1[] = {"a b y c"};
    mt_bleu_score s;
    assert_int_equal(mt_bleu_corpus(h1, r1, 1, &s), MT_OK);
    NEAR(s.precisions[2], 25.0);
    NEAR(s.precisions[3], 25.0);
    NEAR(s.score, pow(75.0 * (100.0 / 3.0) * 25.0 * 25.0, 0.25));
    /* a hypothesis longer than its reference: no brevity penalty */
    const char *h2[] = {"a b c d e f"}, *r2[] = {"a b c d"};
    assert_int_equal(mt_bleu_corpus(h2, r2, 1, &s), MT_OK);
    NEAR(s.bp, 1.0);
    NEAR(s.ratio, 1.5);
    NEAR(s.score, 100.0 * pow((4.0 / 6) * (3.0 / 5) * (2.0 / 4) * (1.0 / 3), 0.25));
    /* empty hypothesis: nothing matches, BLEU 0 and brevity penalty 0 */
    const char *h3[] = {""}, *r3[] = {"a b c"};
    assert_int_equal(mt_bleu_corpus(h3, r3, 1, &s), MT_OK);
    NEAR(s.score, 0.0);
    NEAR(s.bp, 0.0);
    assert_int_equal(s.stats.sys_len, 0);
    /* a one-word hypothesis that matches: no 2-grams at all, the score is ~0 (log floor) */
    const char *h4[] = {"a"}, *r4[] = {"a"};
    assert_int_equal(mt_bleu_corpus(h4, r4, 1, &s), MT_OK);
    assert_true(s.score < 1e-100);
    NEAR(s.precisions[0], 100.0);
    /* trailing whitespace (any Unicode space Python strips) does not count */
    const char *h5[] = {"a b c d\xE3\x80\x80 \t"}, *r5[] = {"a b c d"};
    assert_int_equal(mt_bleu_corpus(h5, r5, 1, &s), MT_OK);
    NEAR(s.score, 100.0);
    /* empty corpus */
    assert_int_equal(mt_bleu_corpus(NULL, NULL, 0, &s), MT_OK);
    NEAR(s.score, 0.0);
}

static void test_chrf_by_hand(void **state) {
    (void)state;
    /* "ab" vs "abc": orders 1 and 2 count (prec 1, 1; rec 2/3, 1/2), order 3 has no hypothesis
     * n-gram, 4..6 no reference n-gram. F2 of the averages. */
    double p = 1.0, r = (2.0 / 3.0 + 0.5) / 2.0, want = 100.0 * 5.0 * p * r / (4.0 * p + r);
    const char *h[] = {"ab"}, *rf[] = {"abc"};
    double v = 0;
    assert_int_equal(mt_chrf_corpus(h, rf, 1, &v), MT_OK);
    NEAR(v, want);
    /* whitespace is ignored (Python's split: the ideographic space too) */
    const char *h2[] = {"a b"}, *r2[] = {"ab\xE3\x80\x80" "c"};
    assert_int_equal(mt_chrf_corpus(h2, r2, 1, &v), MT_OK);
    NEAR(v, want);
    /* characters are code points: "è" is one character */
    const char *h3[] = {"\xC3\xA8"}, *r3[] = {"\xC3\xA8"};
    assert_int_equal(mt_chrf_corpus(h3, r3, 1, &v), MT_OK);
    NEAR(v, 100.0);
    const char *h4[] = {""}, *r4[] = {"abc"};
    assert_int_equal(mt_chrf_corpus(h4, r4, 1, &v), MT_OK);
    NEAR(v, 0.0);
    /* corpus statistics are sums: two sentences differ from the mean of two scores */
    const char *h5[] = {"ab", "xyz"}, *r5[] = {"abc", "xyz"};
    mt_chrf_stats st;
    memset(&st, 0, sizeof st);
    assert_int_equal(mt_chrf_add(&st, h5[0], r5[0]), MT_OK);
    assert_int_equal(mt_chrf_add(&st, h5[1], r5[1]), MT_OK);
    /* order 1: 2+3 hyp, 3+3 ref, 2+3 match; order 2: 1+2, 2+2, 1+2; order 3: 0+1 hyp (the first
     * has none), 1+1 ref, 0+1 match; orders 4-6: no hypothesis n-grams */
    assert_int_equal(st.hyp[0], 5);
    assert_int_equal(st.ref[0], 6);
    assert_int_equal(st.match[0], 5);
    assert_int_equal(st.hyp[2], 1);
    assert_int_equal(st.ref[2], 2);
    double ap = (1.0 + 1.0 + 1.0) / 3.0, ar = (5.0 / 6.0 + 3.0 / 4.0 + 1.0 / 2.0) / 3.0;
    NEAR(mt_chrf_compute(&st), 100.0 * 5.0 * ap * ar / (4.0 * ap + ar));
    assert_int_equal(mt_metric_chrf(h5, r5, 2, &v), MT_OK);
    NEAR(v, 100.0 * 5.0 * ap * ar / (4.0 * ap + ar));
    assert_int_equal(mt_chrf_corpus(NULL, NULL, 0, &v), MT_OK);
    NEAR(v, 0.0);
}

static void test_cer_wer_by_hand(void **state) {
    (void)state;
    double v = 0;
    const char *h1[] = {"kitten", "caff\xC3\xA8"}, *r1[] = {"sitting", "caffe"};
    assert_int_equal(mt_cer_corpus(h1, r1, 1, &v), MT_OK);
    NEAR(v, 3.0 / 7.0);
    assert_int_equal(mt_cer_corpus(h1, r1, 2, &v), MT_OK);
    NEAR(v, 4.0 / 12.0); /* sums of distances over sums of lengths; è is one character */
    assert_int_equal(mt_metric_cer(h1, r1, 2, &v), MT_OK);
    NEAR(v, 4.0 / 12.0);
    const char *h2[] = {"the cat sat", "a b c", "a b c d"}, *r2[] = {"the cat sat down", "c b a", "x"};
    assert_int_equal(mt_wer_corpus(h2, r2, 1, &v), MT_OK);
    NEAR(v, 1.0 / 4.0);
    assert_int_equal(mt_wer_corpus(h2 + 1, r2 + 1, 1, &v), MT_OK);
    NEAR(v, 2.0 / 3.0);
    assert_int_equal(mt_wer_corpus(h2 + 2, r2 + 2, 1, &v), MT_OK); /* longer than the reference: > 1 */
    NEAR(v, 4.0);
    assert_int_equal(mt_metric_wer(h2, r2, 3, &v), MT_OK);
    NEAR(v, (1.0 + 2.0 + 4.0) / (4.0 + 3.0 + 1.0));
    const char *h3[] = {"abcdef"}, *r3[] = {"abc"};
    assert_int_equal(mt_cer_corpus(h3, r3, 1, &v), MT_OK);
    NEAR(v, 1.0);
    /* Unicode whitespace separates words; a zero-width space does not */
    const char *h4[] = {"a\xE2\x80\x83" "b", "a\xE2\x80\x8B" "b"}, *r4[] = {"a b", "a b"};
    assert_int_equal(mt_wer_corpus(h4, r4, 1, &v), MT_OK);
    NEAR(v, 0.0);
    assert_int_equal(mt_wer_corpus(h4 + 1, r4 + 1, 1, &v), MT_OK);
    NEAR(v, 1.0);
    /* empty hypothesis: every reference unit is an error */
    const char *h5[] = {""}, *r5[] = {"abc"};
    assert_int_equal(mt_cer_corpus(h5, r5, 1, &v), MT_OK);
    NEAR(v, 1.0);
    /* no reference text: torchmetrics' division gives NaN (0/0) or inf (x/0) */
    const char *e[] = {""};
    assert_int_equal(mt_cer_corpus(e, e, 1, &v), MT_OK);
    assert_true(isnan(v));
    assert_int_equal(mt_wer_corpus(h3, e, 1, &v), MT_OK);
    assert_true(isinf(v));
    assert_int_equal(mt_cer_corpus(NULL, NULL, 0, &v), MT_OK);
    assert_true(isnan(v));
}

static void test_bad_input(void **state) {
    (void)state;
    double v = 0;
    const char *h[] = {"ok", "bad \xFF"}, *r[] = {"ok", "ok"};
    assert_int_equal(mt_metric_bleu(h, r, 2, &v), MT_ERR_UTF8);
    assert_non_null(strstr(mt_last_error(), "hypothesis 1"));
    assert_int_equal(mt_metric_chrf(r, h, 2, &v), MT_ERR_UTF8);
    assert_non_null(strstr(mt_last_error(), "reference 1"));
    const char *n[] = {"ok", NULL};
    assert_int_equal(mt_metric_wer(n, r, 2, &v), MT_ERR_INVALID_ARG);
    assert_non_null(strstr(mt_last_error(), "sentence 1"));
    assert_int_equal(mt_metric_cer(h, r, 1, NULL), MT_ERR_INVALID_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_13a),          cmocka_unit_test(test_bleu_by_hand),
        cmocka_unit_test(test_bleu_smoothing_and_lengths), cmocka_unit_test(test_chrf_by_hand),
        cmocka_unit_test(test_cer_wer_by_hand), cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
