/*
 * batch.h — from pairs to training batches: a dataset of encoded, framed and length-filtered pairs,
 * and a batcher that groups pairs of similar length under a token budget, shuffles by seed per
 * epoch, gives each of N ranks its own shard of every global batch, and can be positioned exactly
 * (epoch, batch) so that a resumed run sees the same batches as an uninterrupted one.
 *
 * Shapes: a batch holds src (B, S) and tgt (B, T) int32 row-major host arrays, padded with [PAD];
 * tgt rows are [SOS] y1 .. yk [EOS] (so the decoder input is tgt[:, :-1] and the labels tgt[:, 1:]);
 * src rows are x1 .. xm, framed with [SOS]/[EOS] as the dataset options say.
 */
#ifndef MT_TEXT_BATCH_H
#define MT_TEXT_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "text/corpus.h"
#include "text/tokenizer.h"

/* ---- dataset ---------------------------------------------------------------------------------- */

typedef struct mt_dataset_options {
    size_t max_src_len; /* longest source kept, in tokens with its framing (0: no limit) */
    size_t max_tgt_len; /* longest target kept, in tokens with [SOS] and [EOS] (0: no limit) */
    int src_sos;        /* frame the source with [SOS] in front (default 1) */
    int src_eos;        /* and [EOS] at the end (default 1), like the original MicroTensor */
    int threads;        /* encoding threads (0: OpenMP's default) */
} mt_dataset_options;

void mt_dataset_options_default(mt_dataset_options *o);

typedef struct mt_dataset {
    size_t n;             /* examples kept */
    int32_t *ids;         /* every framed sequence, back to back */
    uint64_t *src_off;    /* (n,) offset of example i's source in ids */
    uint64_t *tgt_off;    /* (n,) */
    uint32_t *src_len;    /* (n,) framed source length */
    uint32_t *tgt_len;    /* (n,) framed target length */
    uint64_t *pair_index; /* (n,) index of the example's pair in the mt_pairs it came from */
    size_t n_filtered;    /* pairs dropped for length (or encoding to nothing) */
    size_t src_tokens, tgt_tokens; /* totals over the kept examples, framing included */
    int32_t pad_id, sos_id, eos_id;
} mt_dataset;

/* Encodes every pair (both sides, in parallel over threads; the result does not depend on the
 * thread count), frames them and drops those longer than the limits. The tokenizer must have
 * [PAD], [SOS] and [EOS] (MT_ERR_INVALID_ARG otherwise). */
mt_status mt_dataset_build(const mt_tokenizer *tok, const mt_pairs *pairs, const mt_dataset_options *opt,
                           mt_dataset **out);
void mt_dataset_free(mt_dataset *d);

/* ---- batcher ---------------------------------------------------------------------------------- */

typedef struct mt_batcher_options {
    size_t max_tokens;    /* budget of a global batch: B * (S + T), padding included (required) */
    size_t max_sentences; /* at most this many pairs in a global batch (0: no limit) */
    uint64_t seed;
    int shuffle;          /* 1 (default): ties in length and the batch order are shuffled per epoch */
    int n_ranks;          /* shards per global batch (default 1) */
    int rank;             /* the shard this batcher hands out, 0..n_ranks-1 */
} mt_batcher_options;

void mt_batcher_options_default(mt_batcher_options *o);

/* Where the data stands: the next batch is batch `batch` of epoch `epoch`. A checkpoint stores it. */
typedef struct mt_data_pos {
    uint64_t epoch;
    uint64_t batch;
} mt_data_pos;

typedef struct mt_batch {
    int B, S, T;       /* this shard: rows, source width, target width */
    int32_t *src;      /* (B, S) */
    int32_t *tgt;      /* (B, T) */
    int32_t *src_len;  /* (B,) tokens before the padding */
    int32_t *tgt_len;  /* (B,) */
    uint64_t *example; /* (B,) dataset example index of each row */
    size_t src_tokens, tgt_tokens;               /* non-pad tokens of this shard */
    int global_B;                                /* rows of the whole global batch */
    size_t global_src_tokens, global_tgt_tokens; /* non-pad tokens of the whole global batch */
    mt_data_pos pos;   /* the position this batch was taken from */
    size_t cap_rows, cap_cells;                  /* allocated sizes (internal) */
} mt_batch;

typedef struct mt_batcher mt_batcher;

/* The dataset is borrowed and must outlive the batcher. MT_ERR_CONFIG when max_tokens is 0 or
 * smaller than the longest example (naming it), or the rank is out of range. */
mt_status mt_batcher_new(const mt_dataset *d, const mt_batcher_options *opt, mt_batcher **out);
void mt_batcher_free(mt_batcher *b);
/* Global batches per epoch (the same for every epoch). */
size_t mt_batcher_batches_per_epoch(const mt_batcher *b);
/* The position of the next batch, and moving there (any epoch; batch < batches per epoch). */
mt_data_pos mt_batcher_tell(const mt_batcher *b);
mt_status mt_batcher_seek(mt_batcher *b, mt_data_pos pos);
/* This rank's shard of the next global batch into *batch (its arrays reused between calls; zero
 * the struct before the first call), then advances; after the last batch of an epoch comes batch
 * 0 of the next. A shard may have B == 0 when the global batch has fewer rows than ranks. */
mt_status mt_batcher_next(mt_batcher *b, mt_batch *batch);
/* The dataset example indices of global batch pos (all ranks), valid until the next call. */
mt_status mt_batcher_global(mt_batcher *b, mt_data_pos pos, const uint64_t **examples, size_t *n);
void mt_batch_free(mt_batch *batch);

#endif
