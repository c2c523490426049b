/*
 * testutil.h — helpers shared by the model tests: tiny configs, seeded models, random batches,
 * temporary directories, and running the PyTorch reference.
 */
#ifndef MT_TESTS_MODEL_TESTUTIL_H
#define MT_TESTS_MODEL_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/model.h"

/* A small model config (fast on 2 cores) of the given attention kind. */
static inline mt_model_config tu_tiny_config(int attention) {
    mt_model_config c;
    mt_model_config_default(&c);
    c.vocab_size = 61;
    c.d_model = 32;
    c.heads = 4;
    c.layers_enc = 2;
    c.layers_dec = 2;
    c.d_ff = 64;
    c.d_c = 16;
    c.d_cq = 24;
    c.d_rope = 4;
    c.attention = attention;
    c.dropout = 0.0;
    c.max_len = 64;
    return c;
}

/* A model with Xavier weights from seed; NULL on failure (the message is printed). */
static inline mt_transformer *tu_model(const mt_model_config *c, uint64_t seed) {
    mt_transformer *m = NULL;
    mt_context *ctx = NULL;
    if (mt_transformer_create(c, MT_DEVICE_CPU, &m) != MT_OK || mt_context_init(&ctx, MT_DEVICE_CPU, 0) != MT_OK) {
        fprintf(stderr, "model: %s\n", mt_last_error());
        mt_transformer_free(m);
        return NULL;
    }
    mt_context_seed(ctx, seed);
    if (mt_transformer_init_weights(m, ctx) != MT_OK) {
        fprintf(stderr, "init: %s\n", mt_last_error());
        mt_transformer_free(m);
        m = NULL;
    }
    mt_context_free(ctx);
    return m;
}

/* Deterministic pseudo-random ids in [4, V) (xorshift). */
static inline int32_t tu_rand_id(uint64_t *s, int64_t V) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (int32_t)(4 + *s % (uint64_t)(V - 4));
}

/* A random batch of B pairs with source lengths in [1, S-1] and target lengths in [1, T-1]
 * (the last position of each side holds [EOS] or padding). Free with tu_batch_free. */
static inline mt_seq_batch tu_batch(const mt_model_config *c, int64_t B, int64_t S, int64_t T, uint64_t seed) {
    mt_seq_batch b = {.B = B, .S = S, .T = T};
    b.src = calloc((size_t)(B * S), sizeof(int32_t));
    b.tgt_in = calloc((size_t)(B * T), sizeof(int32_t));
    b.tgt_out = calloc((size_t)(B * T), sizeof(int32_t));
    uint64_t s = seed * 2654435761u + 1;
    for (int64_t i = 0; i < B; i++) {
        int64_t ls = i == 0 ? S - 1 : 1 + (int64_t)(tu_rand_id(&s, 1000) % (S - 1));
        int64_t lt = i == 0 ? T - 1 : 1 + (int64_t)(tu_rand_id(&s, 1000) % (T - 1));
        for (int64_t j = 0; j < S; j++)
            b.src[i * S + j] = (int32_t)(j < ls ? tu_rand_id(&s, c->vocab_size) : j == ls ? c->eos_id : c->pad_id);
        int32_t prev = (int32_t)c->sos_id;
        for (int64_t j = 0; j < T; j++) {
            int32_t y = (int32_t)(j < lt ? tu_rand_id(&s, c->vocab_size) : j == lt ? c->eos_id : c->pad_id);
            b.tgt_in[i * T + j] = j <= lt ? prev : (int32_t)c->pad_id;
            b.tgt_out[i * T + j] = y;
            prev = y;
        }
        b.src_tokens += ls + 1;
        b.tgt_tokens += lt + 1;
    }
    return b;
}

static inline void tu_batch_free(mt_seq_batch *b) {
    free(b->src);
    free(b->tgt_in);
    free(b->tgt_out);
}

/* A fresh temporary directory under $TMPDIR (or /tmp); the path is written into buf. */
static inline int tu_tmpdir(char *buf, size_t cap, const char *tag) {
    const char *base = getenv("TMPDIR");
    snprintf(buf, cap, "%s/mt-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    return mkdtemp(buf) ? 0 : -1;
}

static inline void tu_rmrf(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

#endif
