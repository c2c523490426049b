/*
 * search.h — the searches of decoding: greedy, beam and sampling. Each drives a model through two
 * callbacks — step(tokens, t) -> the next-token log-probabilities of every row, and reorder(parents)
 * to keep a subset of the rows — so it knows nothing of layers or caches (state.h provides them).
 *
 * A row is one hypothesis of one sentence. Greedy takes the argmax. Sampling draws from the
 * log-probabilities divided by the temperature, restricted to the top-k tokens and then to the
 * smallest set holding top-p of the probability; n_best samples per sentence are independent rows.
 * Beam search keeps `beam` hypotheses per sentence, expands each by its 2 x beam best tokens, retires
 * a hypothesis on [EOS] with the GNMT score log P / ((5 + len) / 6)^alpha (len counts [EOS]), and
 * ends a sentence when `beam` hypotheses are finished, when its n_best best finished ones outrank
 * anything a live one can still reach (exact: the result is the same), or at its length limit, where
 * the live hypotheses compete too. A target prefix forces a sentence's first tokens in every search.
 */
#ifndef MT_DECODE_SEARCH_H
#define MT_DECODE_SEARCH_H

#include "decode/decode.h"

typedef struct mt_search_model {
    void *user;
    mt_context *ctx;  /* where step's tensors live; reset before every step */
    /* Log-probabilities (R, V) of each row's next token after tokens (R) at position t. */
    mt_tensor *(*step)(void *user, const int32_t *tokens, int64_t t);
    /* Keeps rows parents (n), in that order; memory_changed: rows moved between sentences. */
    mt_status (*reorder)(void *user, const int32_t *parents, int64_t n, int64_t t_done, int memory_changed);
    int64_t V;
    int32_t sos, eos;
} mt_search_model;

typedef struct mt_hyp {
    int32_t *ids;  /* without [SOS] / [EOS] */
    int64_t len;
    double score;  /* log-probability */
    double norm;   /* what hypotheses are ranked by (beam: length-normalised) */
} mt_hyp;

typedef struct mt_search_sent {
    int64_t index;          /* in the caller's arrays: the stream's i, the sampling stream */
    int64_t maxo;           /* output token limit ([EOS] included) */
    const int32_t *prefix;  /* forced first output tokens (prefix_len of them) */
    int64_t prefix_len;
    mt_hyp *hyps;           /* finished hypotheses (up to cap), best first once it is done */
    int nhyps, cap;
} mt_search_sent;

/* Nonzero: beam search ends a sentence only when beam hypotheses have finished or at its limit, never
 * earlier (tests compare the two). */
extern int mt_search_exhaustive;

/* Rows per sentence the search of o needs (the state is encoded with that many). */
int mt_search_rows(const mt_decode_opts *o);
/* Searches sentences s (B) of a state just encoded, by o's search. steps counts the decoder steps. */
mt_status mt_search(const mt_search_model *m, const mt_decode_opts *o, mt_search_sent *s, int64_t B, int64_t *steps);
/* Adds a finished hypothesis; when the sentence already has cap, it replaces the worst if better. */
mt_status mt_search_add_hyp(mt_search_sent *se, const int32_t *ids, int64_t len, double score, double norm);
/* A sentence is done: its hypotheses ranked, the stream told (decode.c calls it for empty sources). */
void mt_search_sent_done(const mt_decode_opts *o, mt_search_sent *se);

#endif
