/*
 * batcher.h — the dynamic batcher: queued sentences grouped into engine batches.
 *
 * Sentences are queued per decoding options (only sentences with equal beam size, length penalty,
 * length ratio and n-best share a batch). A group becomes a batch when it is full — the next sentence would push
 * the padded token count (sentences x longest) over max_tokens, or the sentence count to
 * max_sentences — or when its oldest sentence has waited max_wait, counted from when it could first run:
 * its arrival, or when the worker asking became free if that is later (a sentence queued behind a busy
 * worker still gets max_wait of company, so under load the requests the last batch answered, resent by
 * their clients, join the next batch instead of leaving half of it behind). Among ready groups the one with
 * the oldest sentence goes first. Within a group every owner (a connection) has a FIFO lane of its
 * own, and a batch takes one sentence from each lane in turn, the next batch starting with the lane
 * after the last one served: a connection with 60,000 sentences queued cannot hold back another's
 * single sentence for more than a batch. A sentence longer than the budget alone makes a batch of
 * one. Items whose request was cancelled (its connection closed) are handed back untranslated.
 *
 * The policy (mt_srv_batcher_pick) is a pure function of the queue and a time the caller passes, so the
 * tests drive it deterministically; mt_srv_batcher_take is the blocking wrapper the worker threads use.
 */
#ifndef MT_NET_BATCHER_H
#define MT_NET_BATCHER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct mt_xlate_opts {
    uint32_t beam;           /* 1 = greedy */
    float length_penalty;    /* < 0 = engine default */
    float max_len_ratio;     /* 0 = engine default */
    uint32_t n_best;         /* hypotheses per sentence, >= 1 */
} mt_xlate_opts;

typedef struct mt_bitem {
    struct mt_bitem *next;
    void *req;                      /* the owner's request; opaque here */
    const _Atomic bool *cancelled;  /* set when nobody wants the answer any more; may be NULL */
    const char *text;
    const char *prefix;             /* target prefix, or NULL */
    bool stream;                    /* post partial translations to the loop as they grow */
    uint32_t index;                 /* position in its request */
    uint32_t ntok;                  /* source tokens, >= 1 */
    uint64_t enq_us;                /* when it was queued (the caller's clock) */
    uint64_t owner;                 /* who queued it (a connection): batches serve owners in turn */
    mt_xlate_opts opts;
    /* filled by the worker: opts.n_best hypotheses, best first (a malloc'd array of malloc'd strings) */
    char **out;
    float *score;
} mt_bitem;

typedef struct mt_batch {
    mt_bitem **items;        /* (n) in queue order */
    uint32_t n, cap;
    mt_bitem *dropped;       /* cancelled items taken out of the queue, not to translate */
    uint32_t n_dropped;
    mt_xlate_opts opts;
    uint32_t max_tok;
    uint64_t padded_tokens;  /* n x max_tok */
    uint64_t oldest_us;
} mt_batch;

typedef struct mt_srv_batcher mt_srv_batcher;

mt_srv_batcher *mt_srv_batcher_new(uint32_t max_tokens, uint32_t max_sentences, uint32_t max_wait_ms);
void mt_srv_batcher_free(mt_srv_batcher *b);

/* Queues n items (each with enq_us, opts, ntok, owner set). Thread-safe. Returns 0, or -1 when out of
 * memory (for a new option group or owner lane): then nothing was queued. */
int mt_srv_batcher_push(mt_srv_batcher *b, mt_bitem *const *items, uint32_t n);

/* The policy. With the lock held (or single-threaded): forms at most one batch from the queue as it
 * stands at now_us, for a worker free since free_us (0: the sentences' own age alone counts). Returns 1 with *out filled (out->items must have room for max_sentences), or 0
 * and *deadline_us = when the earliest group becomes ready by age (UINT64_MAX when the queue is empty). */
int mt_srv_batcher_pick(mt_srv_batcher *b, uint64_t now_us, uint64_t free_us, mt_batch *out, uint64_t *deadline_us);

/* Blocks until a batch is ready (the caller is free from the moment it calls): returns 1 with *out; 0 (nothing taken) when mt_srv_batcher_kick was
 * called since the caller last saw it — *seen_kick is the caller's record, updated here, so a kick
 * while the caller was busy is not missed; -1 once the batcher is closed and empty. Thread-safe. */
int mt_srv_batcher_take(mt_srv_batcher *b, mt_batch *out, uint64_t *seen_kick);

/* Drain mode: groups are ready at once, nothing waits for its batch to fill. */
void mt_srv_batcher_set_flush(mt_srv_batcher *b, bool flush);
/* Wakes every waiting worker once (take returns 0), e.g. after a model promotion. */
void mt_srv_batcher_kick(mt_srv_batcher *b);
/* No more pushes; workers empty the queue (in flush mode) and then take returns -1. */
void mt_srv_batcher_close(mt_srv_batcher *b);

uint64_t mt_srv_batcher_depth(mt_srv_batcher *b);

/* Batch storage for one worker. */
int mt_srv_batch_init(mt_batch *bt, uint32_t cap);
void mt_srv_batch_free(mt_batch *bt);

/* The clock the server uses for enq_us (CLOCK_MONOTONIC, microseconds). */
uint64_t mt_now_us(void);

#endif
