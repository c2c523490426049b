/*
 * corpus.h — parallel corpora: reading (TSV, two aligned text files, JSONL in the Hugging Face
 * opus_books shape; any of them `.zst`-compressed, decompressed on the fly), an in-memory set of
 * pairs, and a deterministic train/valid/test split.
 *
 * A corpus is named by a spec string:
 *   "data.tsv[.zst]"                 TSV: source<TAB>target on each line
 *   "books.jsonl[.zst]"              JSONL: {"translation": {"en": "...", "it": "..."}} per line
 *                                    (also .json; the language keys are options)
 *   "train.en[.zst]|train.it[.zst]"  two aligned files, line i of one translates line i of the other
 * A path of another extension is read as TSV. Each side is trimmed of ASCII spaces, tabs and CR at
 * both ends. A bad line — invalid UTF-8, a missing/extra column or JSON key, an empty side, a NUL
 * byte, unparsable JSON, a file of a parallel pair that ends before the other — is an error naming
 * the file and line (MT_ERR_FORMAT, or MT_ERR_UTF8 for invalid UTF-8), or, with skip_bad_lines,
 * skipped and counted in the summary.
 */
#ifndef MT_TEXT_CORPUS_H
#define MT_TEXT_CORPUS_H

#include <stddef.h>
#include <stdint.h>

#include "microtensor.h"

typedef enum mt_corpus_format {
    MT_CORPUS_AUTO = 0, /* from the spec, as above */
    MT_CORPUS_TSV = 1,
    MT_CORPUS_JSONL = 2,
    MT_CORPUS_PARALLEL = 3
} mt_corpus_format;

typedef struct mt_corpus_options {
    mt_corpus_format format;
    const char *src_key; /* JSONL: key of the source side in "translation"; NULL means "en" */
    const char *tgt_key; /* NULL means "it" */
    int skip_bad_lines;  /* 0: the first bad line is an error; 1: skip it and count it */
} mt_corpus_options;

typedef struct mt_corpus_summary {
    uint64_t lines;          /* lines read (a line of a parallel pair counts once) */
    uint64_t pairs;          /* pairs delivered */
    uint64_t skipped;        /* lines skipped, the sum of the reasons below */
    uint64_t bad_utf8;       /* invalid UTF-8 (or a NUL byte) */
    uint64_t missing_column; /* TSV: no tab or more than one; JSONL: a missing key or a non-string */
    uint64_t empty_side;     /* a side empty after trimming */
    uint64_t bad_json;       /* JSONL: a line that does not parse or is not an object */
    uint64_t misaligned;     /* parallel files: lines of the longer file past the end of the other */
    char first_bad[320];     /* "file:line: reason" of the first skipped line, "" when none */
} mt_corpus_summary;

/* One pair. The strings are NUL-terminated, valid UTF-8, non-empty, and valid until the next call. */
typedef struct mt_pair {
    const char *src;
    size_t src_len;
    const char *tgt;
    size_t tgt_len;
    const char *file; /* the file the pair came from (the source file for parallel specs) */
    uint64_t line;    /* 1-based line number in it */
} mt_pair;

typedef struct mt_corpus mt_corpus;

/* opt may be NULL (defaults). MT_ERR_NOT_FOUND / MT_ERR_IO when a file cannot be opened. */
mt_status mt_corpus_open(const char *spec, const mt_corpus_options *opt, mt_corpus **out);
/* The next pair into *pair; *got = 0 at the end. Errors name file:line. */
mt_status mt_corpus_next(mt_corpus *c, mt_pair *pair, int *got);
/* Counts so far (complete after mt_corpus_next reported the end). */
const mt_corpus_summary *mt_corpus_get_summary(const mt_corpus *c);
void mt_corpus_close(mt_corpus *c);

/* Adds b's counts to a (first_bad kept from a when set). */
void mt_corpus_summary_add(mt_corpus_summary *a, const mt_corpus_summary *b);
/* One human line: "1000 pairs from 1003 lines, 3 skipped (2 invalid UTF-8, 1 empty side)". */
void mt_corpus_summary_str(const mt_corpus_summary *s, char *buf, size_t cap);

/* ---- pairs in memory ------------------------------------------------------------------------- */

typedef struct mt_pairs {
    size_t n;          /* number of pairs */
    char *text;        /* every side, NUL-terminated, back to back */
    size_t text_len, text_cap;
    uint64_t *src_off; /* (n,) offset of pair i's source in text */
    uint64_t *tgt_off; /* (n,) */
    uint32_t *src_len; /* (n,) bytes, without the NUL */
    uint32_t *tgt_len; /* (n,) */
    size_t cap;
} mt_pairs;

static inline const char *mt_pairs_src(const mt_pairs *p, size_t i) { return p->text + p->src_off[i]; }
static inline const char *mt_pairs_tgt(const mt_pairs *p, size_t i) { return p->text + p->tgt_off[i]; }

mt_status mt_pairs_new(mt_pairs **out);
mt_status mt_pairs_append(mt_pairs *p, const char *src, size_t src_len, const char *tgt, size_t tgt_len);
void mt_pairs_free(mt_pairs *p);

/* Reads every pair of the specs, in order. summary (may be NULL) receives the totals over all specs.
 * opt may be NULL. */
mt_status mt_pairs_read(const char *const *specs, size_t n_specs, const mt_corpus_options *opt, mt_pairs **out,
                        mt_corpus_summary *summary);

/* Deterministic split: the pairs are permuted by seed; the first `test` of the permutation go to
 * test, the next `valid` to valid, the rest to train; each part keeps the corpus order. valid and
 * test below 1.0 are fractions of the corpus (rounded to the nearest pair), from 1.0 up counts.
 * The same corpus and seed always give the same parts. Any out pointer may be NULL (that part is
 * not built). MT_ERR_INVALID_ARG when the parts do not fit in the corpus. */
typedef struct mt_split_options {
    double valid;
    double test;
    uint64_t seed;
} mt_split_options;

mt_status mt_pairs_split(const mt_pairs *all, const mt_split_options *opt, mt_pairs **train, mt_pairs **valid,
                         mt_pairs **test);

#endif
