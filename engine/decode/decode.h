/*
 * decode.h — decoding token ids, batched over sentences of different lengths: the decoding options
 * (one struct, one default initializer), the per-thread workspace and mt_decode.
 *
 * The parts (engine/decode/README.md): state.c runs the model one step at a time through
 * mt_transformer_decode with a cache (per layer only the latents, or MHA keys/values) or without one
 * (the whole prefix again: tests and benchmarks); search.c holds the searches — greedy, beam and
 * sampling — that drive that step; decode.c validates, sorts and chunks the sentences and gathers the
 * results.
 */
#ifndef MT_DECODE_DECODE_H
#define MT_DECODE_DECODE_H

#include "nn/model.h"

/* The largest beam: the ABI's (the wire protocol's MT_PROTOCOL_MAX_BEAM is checked against it). */
#define MT_DECODE_MAX_BEAM MT_TRANSLATE_MAX_BEAM
/* Output limit: floor(max_len_ratio x source tokens) + MT_DECODE_LEN_EXTRA, capped by max_len - 1. */
#define MT_DECODE_LEN_EXTRA 10

/* Called as a sentence's hypothesis grows: ids (len) of sentence i (its index in the caller's
 * arrays) so far, final = 1 once it is done. Greedy search and sampling with n_best = 1 report
 * every step; otherwise only the final best hypothesis is reported. From the decoding thread. */
typedef void (*mt_decode_stream_fn)(void *user, int64_t i, const int32_t *ids, int64_t len, int final);

typedef struct mt_decode_opts {
    int beam;                   /* 1: greedy or sampling; 2..MT_DECODE_MAX_BEAM: beam search */
    int n_best;                 /* hypotheses per sentence: 1..beam; with sampling, independent samples */
    float length_penalty;       /* GNMT alpha of beam search: score / ((5 + len) / 6)^alpha; 0 = none */
    float max_len_ratio;        /* the output limit above, > 0 */
    int sampling_topk;          /* 1: no sampling; 0: sample from the whole vocabulary; k > 1: the k best */
    float sampling_topp;        /* nucleus: the smallest set of best tokens holding this much, (0, 1] */
    float sampling_temperature; /* > 0: log-probabilities divided by it before sampling */
    uint64_t seed;              /* sampling: sentence i's draws depend only on (seed, i, its sample) */
    int cached;                 /* 1: latent cache; 0: the whole prefix again every step */
    mt_decode_stream_fn stream; /* NULL: none */
    void *stream_user;
} mt_decode_opts;

/* The defaults, the one place they are written: beam 1 (greedy), n_best 1, length_penalty 0.6,
 * max_len_ratio 1.5, no sampling (topk 1, topp 1, temperature 1, seed 0), cached, no stream. */
mt_decode_opts mt_decode_opts_default(void);
/* MT_ERR_INVALID_ARG naming the field that is out of range. */
mt_status mt_decode_opts_check(const mt_decode_opts *o);

/* Per-thread decoding state: a context whose arena is reset every step, and the cache buffers. */
typedef struct mt_decode_ws mt_decode_ws;

mt_status mt_decode_ws_create(int device, int n_threads, mt_decode_ws **out);
void mt_decode_ws_free(mt_decode_ws *ws);

/* The result for n sentences, n_best hypotheses each: hypothesis j of sentence i is at
 * k = i * n_best + j, best first: ids[k][0..len[k]) without [SOS]/[EOS] (the target prefix
 * included), score[k] its log-probability (sum over its tokens, [EOS] included); a hypothesis the
 * search could not fill (fewer candidates than n_best) is empty with score -INFINITY. One allocation:
 * mt_decode_result_free. */
typedef struct mt_decode_result {
    int64_t n, n_best;
    int32_t **ids;
    int64_t *len;
    float *score;
    int64_t steps;  /* decoder steps run (all sentences) */
} mt_decode_result;

void mt_decode_result_free(mt_decode_result *r);

/* Decodes n sentences (src[i] of src_len[i] ids, without [EOS]; they are truncated to max_len - 1
 * with a warning, and an empty source gives an empty output without touching the model). prefix
 * (NULL, or per sentence NULL / prefix_len[i] ids): the output starts with those tokens (forced; their
 * log-probabilities count in the score). abs is needed when cached and the model is MLA. */
mt_status mt_decode(mt_decode_ws *ws, const mt_transformer *m, const mt_absorbed *abs, const int32_t *const *src,
                    const int64_t *src_len, const int32_t *const *prefix, const int64_t *prefix_len, int64_t n,
                    const mt_decode_opts *opt, mt_decode_result *out);

#endif
