/*
 * metrics.h — translation metrics over hypothesis/reference sentence pairs:
 *   BLEU  identical to sacrebleu's default corpus BLEU: 13a tokenization, n-grams 1..4, exp
 *         smoothing, brevity penalty, no effective order (score 0..100);
 *   chrF  identical to sacrebleu's CHRF() default (chrF2): character n-grams 1..6 with whitespace
 *         removed, beta 2, averaged precision/recall over the orders present;
 *   CER   sum of character (code point) edit distances / sum of reference lengths, as torchmetrics;
 *   WER   the same over whitespace-separated words.
 * Every function takes NUL-terminated UTF-8 (MT_ERR_UTF8 otherwise, naming the sentence index).
 * Stats are sums, so corpora can be scored in parts (and across ranks) and combined by adding.
 */
#ifndef MT_TEXT_METRICS_H
#define MT_TEXT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "microtensor.h"
#include "text/buf.h"

#define MT_BLEU_ORDER 4
#define MT_CHRF_ORDER 6

typedef struct mt_bleu_stats {
    uint64_t correct[MT_BLEU_ORDER]; /* clipped n-gram matches */
    uint64_t total[MT_BLEU_ORDER];   /* hypothesis n-grams */
    uint64_t sys_len, ref_len;       /* tokens */
} mt_bleu_stats;

typedef struct mt_bleu_score {
    double score;                        /* 0..100 */
    double precisions[MT_BLEU_ORDER];    /* 0..100, smoothed as sacrebleu does */
    double bp;                           /* brevity penalty */
    double ratio;                        /* sys_len / ref_len (0 when ref_len is 0) */
    mt_bleu_stats stats;
} mt_bleu_score;

typedef struct mt_chrf_stats {
    uint64_t hyp[MT_CHRF_ORDER], ref[MT_CHRF_ORDER], match[MT_CHRF_ORDER];
} mt_chrf_stats;

typedef struct mt_edit_stats {
    uint64_t errors;  /* edit operations */
    uint64_t ref_len; /* reference characters or words */
} mt_edit_stats;

/* sacrebleu's 13a tokenization of one line (the tokens joined by single spaces) into out. */
mt_status mt_bleu_tokenize_13a(const char *line, size_t len, mt_buf *out);

/* Adds one sentence pair's statistics to acc. */
mt_status mt_bleu_add(mt_bleu_stats *acc, const char *hyp, const char *ref);
mt_status mt_chrf_add(mt_chrf_stats *acc, const char *hyp, const char *ref);
mt_status mt_cer_add(mt_edit_stats *acc, const char *hyp, const char *ref);
mt_status mt_wer_add(mt_edit_stats *acc, const char *hyp, const char *ref);

void mt_bleu_compute(const mt_bleu_stats *st, mt_bleu_score *out);
double mt_chrf_compute(const mt_chrf_stats *st);
/* errors / ref_len with IEEE semantics, as torchmetrics' tensor division: NaN for 0/0, +inf for
 * x/0 (no reference text at all). */
double mt_edit_rate(const mt_edit_stats *st);

/* Whole corpora (n pairs; n == 0 gives the score of no statistics: BLEU 0, chrF 0, CER/WER NaN). */
mt_status mt_bleu_corpus(const char *const *hyps, const char *const *refs, size_t n, mt_bleu_score *out);
mt_status mt_chrf_corpus(const char *const *hyps, const char *const *refs, size_t n, double *out);
mt_status mt_cer_corpus(const char *const *hyps, const char *const *refs, size_t n, double *out);
mt_status mt_wer_corpus(const char *const *hyps, const char *const *refs, size_t n, double *out);

/* Length of s without trailing whitespace as Python's str.rstrip() sees it (the sacrebleu command
 * line strips every line so). */
size_t mt_py_rstrip_len(const char *s, size_t len);

#endif
