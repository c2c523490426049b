/*
 * tok_internal.h — the tokenizer's insides, shared by the files of engine/text that implement it
 * (pipeline.c: normalizers and pre-tokenizers; tok_models.c: BPE/word-level; decoders.c; tokjson.c;
 * tokenizer.c; tok_train.c). Not for use outside engine/text.
 */
#ifndef MT_TEXT_TOK_INTERNAL_H
#define MT_TEXT_TOK_INTERNAL_H

#include <jansson.h>
#include <pthread.h>

#include "text/buf.h"
#include "text/hash.h"
#include "text/tokenizer.h"

/* ---- normalizers ---- */
typedef enum mt_norm_kind {
    MT_NORM_NFC, MT_NORM_NFD, MT_NORM_NFKC, MT_NORM_NFKD, MT_NORM_LOWERCASE, MT_NORM_STRIP,
    MT_NORM_STRIP_ACCENTS, MT_NORM_REPLACE, MT_NORM_PREPEND
} mt_norm_kind;

typedef struct mt_norm_step {
    mt_norm_kind kind;
    int left, right;    /* STRIP */
    char *pattern;      /* REPLACE: literal pattern */
    size_t pattern_len;
    char *content;      /* REPLACE: replacement; PREPEND: prefix */
    size_t content_len;
} mt_norm_step;

/* ---- pre-tokenizers ---- */
typedef enum mt_pt_kind {
    MT_PT_WHITESPACE, MT_PT_WHITESPACE_SPLIT, MT_PT_METASPACE, MT_PT_BYTELEVEL, MT_PT_DIGITS,
    MT_PT_PUNCTUATION, MT_PT_SPLIT, MT_PT_BERT, MT_PT_CHAR_DELIMITER
} mt_pt_kind;

typedef enum mt_split_behavior {
    MT_SPLIT_REMOVED, MT_SPLIT_ISOLATED, MT_SPLIT_MERGED_PREV, MT_SPLIT_MERGED_NEXT, MT_SPLIT_CONTIGUOUS
} mt_split_behavior;

typedef enum mt_prepend_scheme { MT_PREPEND_ALWAYS, MT_PREPEND_NEVER, MT_PREPEND_FIRST } mt_prepend_scheme;

typedef struct mt_pt_step {
    mt_pt_kind kind;
    mt_split_behavior behavior; /* PUNCTUATION, SPLIT */
    int invert;                 /* SPLIT */
    int individual_digits;      /* DIGITS */
    char repl[8];               /* METASPACE: the replacement character's UTF-8 */
    size_t repl_len;
    mt_prepend_scheme prepend;  /* METASPACE */
    int split;                  /* METASPACE */
    int add_prefix_space;       /* BYTELEVEL */
    int use_regex;              /* BYTELEVEL */
    char *pattern;              /* SPLIT: literal pattern; CHAR_DELIMITER: the delimiter's UTF-8 */
    size_t pattern_len;
} mt_pt_step;

/* ---- decoders ---- */
typedef enum mt_dec_kind {
    MT_DEC_METASPACE, MT_DEC_BYTELEVEL, MT_DEC_BPE, MT_DEC_WORDPIECE, MT_DEC_REPLACE, MT_DEC_STRIP, MT_DEC_FUSE,
    MT_DEC_BYTE_FALLBACK
} mt_dec_kind;

typedef struct mt_dec_step {
    mt_dec_kind kind;
    char repl[8];              /* METASPACE replacement */
    size_t repl_len;
    mt_prepend_scheme prepend; /* METASPACE */
    char *a;                   /* BPE suffix, WORDPIECE prefix, REPLACE pattern, STRIP content */
    size_t a_len;
    char *b;                   /* REPLACE content */
    size_t b_len;
    int cleanup;               /* WORDPIECE */
    int start, stop;           /* STRIP */
} mt_dec_step;

/* ---- added tokens ---- */
typedef struct mt_added_token {
    int32_t id;
    char *content;
    size_t len;
    int single_word, lstrip, rstrip, normalized, special;
} mt_added_token;

/* ---- encode cache: piece -> ids, sharded, one lock per shard ---- */
#define MT_TOK_CACHE_SHARDS 64
#define MT_TOK_CACHE_MAX_PER_SHARD 16384 /* 1M words in all: bounded memory for any input */
#define MT_TOK_CACHE_MAX_PIECE 128

typedef struct mt_tok_cache_shard {
    pthread_mutex_t mu;
    mt_strmap map; /* val: (offset into ids << 16) | count */
    mt_ids ids;
    int ready;
} mt_tok_cache_shard;

struct mt_tokenizer {
    mt_tok_model kind;
    size_t vocab_size;
    /* id -> token: strings in tok_pool (NUL-terminated), offset -1 for ids without a token */
    int64_t *tok_off;         /* (vocab_size,) */
    uint32_t *tok_len;        /* (vocab_size,) */
    unsigned char *is_special; /* (vocab_size,) */
    char *tok_pool;
    size_t tok_pool_len;
    mt_strmap vocab;          /* model vocabulary: token -> id */
    size_t model_vocab_n;     /* entries in the model's vocabulary */

    /* BPE */
    mt_u64map merges;         /* (a << 32 | b) -> (rank << 32 | new id) */
    char **merge_a, **merge_b; /* (n_merges,) the merges as written, for saving */
    size_t n_merges;
    int32_t unk_id;           /* model's unknown token id, -1 none */
    char *unk_token;
    int fuse_unk, byte_fallback, ignore_merges;
    char *cont_prefix;        /* continuing_subword_prefix, NULL none */
    char *eow_suffix;         /* end_of_word_suffix, NULL none */
    int32_t byte_ids[256];    /* byte_fallback: id of "<0xXX>", -1 absent */

    mt_added_token *added;
    size_t n_added;
    uint8_t added_first[256]; /* first bytes of added tokens, for a quick skip */
    int any_added_normalized;

    mt_norm_step *norm;
    size_t n_norm;
    mt_pt_step *pt;
    size_t n_pt;
    mt_dec_step *dec;
    size_t n_dec;
    int has_decoder;

    mt_tok_specials specials;

    /* The JSON sections kept as loaded/built, written back verbatim on save. */
    json_t *j_truncation, *j_padding, *j_normalizer, *j_pre_tokenizer, *j_post_processor, *j_decoder;

    mt_tok_cache_shard cache[MT_TOK_CACHE_SHARDS];
};

/* ---- scratch for one encode ---- */
typedef struct mt_piece {
    uint32_t off, len; /* in the current piece buffer */
    uint8_t first;     /* starts at the beginning of the input (Metaspace prepend_scheme "first") */
} mt_piece;

typedef struct mt_pieces {
    mt_piece *v;
    size_t n, cap;
} mt_pieces;

typedef struct mt_pt_scratch {
    mt_buf buf[2];
    mt_pieces pcs[2];
    int cur;
    /* split events */
    uint32_t *ev;      /* (start, end, is_match) triples */
    size_t ev_n, ev_cap;
} mt_pt_scratch;

struct mt_tok_encoder {
    const mt_tokenizer *tok;
    mt_buf norm, tmp;
    int32_t *u32;      /* normalization scratch */
    size_t u32_cap;
    mt_pt_scratch pt;
    int32_t *sym;      /* BPE symbols */
    int32_t *rank;
    size_t sym_cap;
    mt_ids word;       /* ids of one piece */
};

void mt_encoder_init(mt_tok_encoder *e, const mt_tokenizer *tok);
void mt_encoder_release(mt_tok_encoder *e);

/* pipeline.c */
mt_status mt_norm_run(const mt_tokenizer *tok, mt_tok_encoder *e, const char *in, size_t len, mt_buf *out);
/* Pre-tokenizes s (normalized text) into e->pt: pieces in e->pt.pcs[e->pt.cur] over e->pt.buf[cur]. */
mt_status mt_pt_run(const mt_tokenizer *tok, mt_tok_encoder *e, const char *s, size_t len, int first);
void mt_pt_scratch_free(mt_pt_scratch *s);
extern const uint32_t mt_bytelevel_b2u[256];

/* tok_models.c: appends the ids of one pre-tokenized piece */
mt_status mt_model_encode_piece(const mt_tokenizer *tok, mt_tok_encoder *e, const char *p, size_t n, mt_ids *out);
void mt_tok_cache_init(mt_tokenizer *tok);
void mt_tok_cache_free(mt_tokenizer *tok);

/* decoders.c */
mt_status mt_dec_run(const mt_tokenizer *tok, const int32_t *ids, size_t n, mt_buf *out);

/* tokenizer.c: building a tokenizer (used by the loader and the trainer) */
mt_status mt_tok_alloc(mt_tokenizer **out);
/* Sets the id -> token table from the model vocabulary and the added tokens; computes specials. */
mt_status mt_tok_finalize(mt_tokenizer *tok, const char *where);
/* Compiles the pipeline sections (j_normalizer, j_pre_tokenizer, j_decoder) into steps. */
mt_status mt_tok_compile_pipeline(mt_tokenizer *tok, const char *where);

#endif
