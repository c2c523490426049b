/*
 * decode.h — greedy and beam-search decoding of token ids, batched over sentences of different
 * lengths.
 *
 * Two step functions produce the next-token log-probabilities:
 *  - cached (the default): per layer only the latents are kept per target token — MLA caches
 *    [c_kv, k_rope] (d_c + d_rope floats) and attends with the absorbed projections: the query of head
 *    h is [W_uk_h^T W_uq_h c_q, q_rope_h], the keys and the values are the cached latents themselves
 *    (one key/value head shared by all heads: the attention kernel's Hk = 1), and W_o_h W_uv_h maps
 *    each head's latent output to the model width. The encoder side's latents are computed once.
 *    MHA caches the rotated keys and the values of every head.
 *  - uncached: the whole target prefix goes through the decoder again at every step (what the
 *    original MicroTensor did); it gives the same tokens and exists for tests and benchmarks.
 *
 * Sentences that finish leave the batch (their rows are dropped from every cache), so a batch of
 * short and long sentences does not pay for the long ones on the short ones' rows.
 *
 * Beam search keeps `beam` hypotheses per sentence, expands each by the best tokens, retires a
 * hypothesis when it emits [EOS] with the GNMT length-normalised score log P / ((5 + len) / 6)^alpha
 * (len counts the [EOS]), and stops a sentence when `beam` hypotheses are finished or its length limit
 * is reached. Greedy (beam 1) takes the argmax; no length penalty applies.
 */
#ifndef MT_DECODE_DECODE_H
#define MT_DECODE_DECODE_H

#include "nn/model.h"

/* Projections absorbed for cached decoding, computed once per model (read-only, shared by every
 * decoding thread). Per decoder layer, for self- and cross-attention (MLA):
 *   aq (H*dc, dcq)        rows h*dc.. = W_uk_h^T W_uq_h: c_q -> the latent query of head h
 *   ao (d, H*(dc+dr))     columns h*(dc+dr).. = [W_o_h W_uv_h, 0]: head outputs -> model width
 * (the zero columns drop the rotary part, since the cached latent doubles as the value). */
typedef struct mt_absorbed_attn {
    mt_tensor *aq, *ao;
} mt_absorbed_attn;

typedef struct mt_absorbed {
    int64_t layers;
    mt_absorbed_attn *self_attn, *cross_attn; /* (layers) */
} mt_absorbed;

/* NULL *out for MHA models (nothing to absorb). */
mt_status mt_absorbed_create(const mt_transformer *m, mt_absorbed **out);
void mt_absorbed_free(mt_absorbed *a);

typedef struct mt_decode_opts {
    int beam;             /* 1: greedy */
    float length_penalty; /* GNMT alpha (beam only) */
    float max_len_ratio;  /* output limit: ratio * source tokens + 10, capped by max_len - 1; <= 0: 1.5 */
    int cached;           /* 1: latent cache (default), 0: recompute the prefix every step */
} mt_decode_opts;

/* Per-thread decoding state: a context whose arena is reset every step, and the cache buffers. */
typedef struct mt_decode_ws mt_decode_ws;

mt_status mt_decode_ws_create(int device, int n_threads, mt_decode_ws **out);
void mt_decode_ws_free(mt_decode_ws *ws);
mt_context *mt_decode_ws_context(mt_decode_ws *ws);

/* The result for n sentences: ids[i][0..len[i]) without [SOS]/[EOS]; score[i] = the hypothesis'
 * log-probability (sum over its tokens, [EOS] included). One allocation: mt_sys_free(res->ids) frees
 * ids, len and score together (see mt_decode_result_free). */
typedef struct mt_decode_result {
    int32_t **ids;
    int64_t *len;
    float *score;
    int64_t steps;  /* decoder steps run (all sentences) */
} mt_decode_result;

void mt_decode_result_free(mt_decode_result *r);

/* Decodes n sentences (src[i] of src_len[i] ids, without [EOS]; they are truncated to max_len - 1
 * with a warning, and an empty source gives an empty output without touching the model). abs is
 * needed when cached and the model is MLA. */
mt_status mt_decode(mt_decode_ws *ws, const mt_transformer *m, const mt_absorbed *abs, const int32_t *const *src,
                    const int64_t *src_len, int64_t n, const mt_decode_opts *opt, mt_decode_result *out);

#endif
