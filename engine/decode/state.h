/*
 * state.h — the model side of decoding one chunk of sentences: the encoder pass, one decoder step
 * for every row (a row is one hypothesis of one sentence), and keeping a subset of the rows. The
 * searches (search.h) drive it through mt_dstate_step and mt_dstate_reorder.
 *
 * Cached (the default): per decoder layer the self-attention rows of every position so far (MLA:
 * the latents [c_kv, k_rope], d_c + d_rope floats per token; MHA: keys and values of every head)
 * live in a persistent device buffer of R0 blocks x tcap positions, sized once per chunk (kept
 * across chunks while it fits). At step t row r writes position t of block r in place; no row ever
 * wrote position t before, so nothing is overwritten that a hypothesis still reads. A host table
 * (blocks) says for each row which block holds its position j < t, and attention reads through it
 * (mt_attention_paged): a beam search reorders or drops rows by copying table rows (R x t ints),
 * never the cache. The memory side's rows, computed once per chunk, live in ping-pong pairs: dropping
 * a finished sentence's rows is one row gather into the other buffer. Uncached: the whole prefix goes
 * through the decoder again at every step.
 */
#ifndef MT_DECODE_STATE_H
#define MT_DECODE_STATE_H

#include "decode/decode.h"

typedef struct mt_dbuf mt_dbuf;

struct mt_decode_ws {
    mt_context *ctx;
    int device;
    mt_dbuf *bufs;
    int n_bufs;
};

typedef struct mt_dstate {
    mt_decode_ws *ws;
    const mt_transformer *m;
    const mt_absorbed *abs;
    int cached;
    int64_t R;            /* rows now */
    int64_t R0;           /* rows at most (the blocks of the self caches) */
    int64_t S;            /* source length (padded, [EOS] included) */
    int32_t *blocks;      /* cached: (R0, tcap) the cache block of each row's position j, then as much
                           * again as room for reordering */
    int64_t B;            /* sentences of the chunk (the blocks of the cross caches) */
    int xcur;             /* selector of the memory-side buffers (all layers alike) */
    mt_tensor **cross;    /* (2 * layers) the memory-side views of this step (keys, then values) */
    int32_t *xsent;       /* cached: (R0) the sentence each row is of: the block of the cross caches,
                           * which hold each sentence once, that its cross-attention reads */
    int32_t *prefix;      /* uncached: (R, tcap) tokens fed so far, [SOS] first */
    int64_t tcap;         /* positions at most */
} mt_dstate;

/* For up to R0 rows and outputs of up to tcap - 1 tokens. */
mt_status mt_dstate_init(mt_dstate *s, mt_decode_ws *ws, const mt_transformer *m, const mt_absorbed *abs, int cached,
                         int64_t R0, int64_t tcap);
void mt_dstate_free(mt_dstate *s);
/* Encodes src (B, S) (ids, [EOS], padding) and fills the memory side: the mask (and, uncached, the
 * memory) replicated rows_per_sentence times; cached, the cross-attention keys and values once per
 * sentence, read by each of its rows through xsent. */
mt_status mt_dstate_encode(mt_dstate *s, const int32_t *src, int64_t B, int64_t S, int rows_per_sentence);
/* Log-probabilities (R, V) of each row's next token after tokens (R) at position t, [PAD] and [SOS]
 * excluded (-inf), in the workspace context's arena; NULL with ctx->status set on failure. */
mt_tensor *mt_dstate_step(void *s, const int32_t *tokens, int64_t t);
/* Keeps rows parents (n) in that order; t_done positions are cached; memory_changed: the rows no
 * longer map to the same sentences (the mask, and uncached the memory, are gathered too; cached, the
 * rows only take their parents' sentences). */
mt_status mt_dstate_reorder(void *s, const int32_t *parents, int64_t n, int64_t t_done, int memory_changed);

#endif
