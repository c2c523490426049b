/*
 * batcher.c — the dynamic batcher (policy in batcher.h).
 *
 * A group per distinct decoding options; their number is small (clients use a handful of settings),
 * so groups live in a list. Groups are freed when they empty.
 */
#include "batcher.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct group {
    struct group *next;
    mt_xlate_opts opts;
    mt_bitem *head, *tail;
    uint32_t n;
} group;

struct mt_srv_batcher {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    group *groups;
    uint64_t depth;
    uint32_t max_tokens, max_sentences;
    uint64_t max_wait_us;
    bool flush, closed;
    uint64_t kick_seq;
};

uint64_t mt_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static bool opts_eq(const mt_xlate_opts *a, const mt_xlate_opts *b) {
    return a->beam == b->beam && memcmp(&a->length_penalty, &b->length_penalty, sizeof(float)) == 0 &&
           memcmp(&a->max_len_ratio, &b->max_len_ratio, sizeof(float)) == 0 && a->n_best == b->n_best;
}

static bool is_cancelled(const mt_bitem *it) {
    return it->cancelled && atomic_load_explicit(it->cancelled, memory_order_relaxed);
}

mt_srv_batcher *mt_srv_batcher_new(uint32_t max_tokens, uint32_t max_sentences, uint32_t max_wait_ms) {
    mt_srv_batcher *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    b->max_tokens = max_tokens ? max_tokens : 1;
    b->max_sentences = max_sentences ? max_sentences : 1;
    b->max_wait_us = (uint64_t)max_wait_ms * 1000u;
    return b;
}

void mt_srv_batcher_free(mt_srv_batcher *b) {
    if (!b) return;
    group *g = b->groups;
    while (g) {
        group *n = g->next;
        free(g);
        g = n;
    }
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

void mt_srv_batcher_push(mt_srv_batcher *b, mt_bitem *const *items, uint32_t n) {
    pthread_mutex_lock(&b->mu);
    for (uint32_t i = 0; i < n; i++) {
        mt_bitem *it = items[i];
        it->next = NULL;
        if (it->ntok == 0) it->ntok = 1;
        group *g = b->groups, *last = NULL;
        while (g && !opts_eq(&g->opts, &it->opts)) {
            last = g;
            g = g->next;
        }
        if (!g) {
            g = calloc(1, sizeof *g);
            if (!g) abort(); /* a few bytes; nothing sensible to do without them */
            g->opts = it->opts;
            if (last) last->next = g;
            else b->groups = g;
        }
        if (g->tail) g->tail->next = it;
        else g->head = it;
        g->tail = it;
        g->n++;
    }
    b->depth += n;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Would the group's next batch be full, i.e. could no further sentence join it? (0 live items
 * counts as ready: only drops to hand back.) */
static bool group_full(const mt_srv_batcher *b, const group *g) {
    uint32_t count = 0, maxtok = 0;
    for (const mt_bitem *it = g->head; it; it = it->next) {
        if (is_cancelled(it)) continue;
        uint32_t nm = it->ntok > maxtok ? it->ntok : maxtok;
        if (count > 0 && (uint64_t)(count + 1) * nm > b->max_tokens) return true;
        count++;
        maxtok = nm;
        if (count >= b->max_sentences) return true;
    }
    return count == 0 || (uint64_t)(count + 1) * maxtok > b->max_tokens;
}

int mt_srv_batcher_pick(mt_srv_batcher *b, uint64_t now_us, uint64_t free_us, mt_batch *out, uint64_t *deadline_us) {
    *deadline_us = UINT64_MAX;
    group *best = NULL;
    for (group *g = b->groups; g; g = g->next) {
        if (!g->head) continue;
        uint64_t since = g->head->enq_us > free_us ? g->head->enq_us : free_us;
        uint64_t due = since + b->max_wait_us;
        bool ready = b->flush || b->closed || now_us >= due || group_full(b, g);
        if (ready) {
            if (!best || g->head->enq_us < best->head->enq_us) best = g;
        } else if (due < *deadline_us) {
            *deadline_us = due;
        }
    }
    if (!best) return 0;

    out->n = 0;
    out->dropped = NULL;
    out->n_dropped = 0;
    out->opts = best->opts;
    out->max_tok = 0;
    out->oldest_us = best->head->enq_us;
    mt_bitem **dtail = &out->dropped;
    uint32_t cap = out->cap < b->max_sentences ? out->cap : b->max_sentences;
    while (best->head) {
        mt_bitem *it = best->head;
        if (!is_cancelled(it)) {
            uint32_t nm = it->ntok > out->max_tok ? it->ntok : out->max_tok;
            if (out->n > 0 && ((uint64_t)(out->n + 1) * nm > b->max_tokens || out->n >= cap)) break;
            out->items[out->n++] = it;
            out->max_tok = nm;
        } else {
            *dtail = it;
            dtail = &it->next;
            out->n_dropped++;
        }
        best->head = it->next;
        best->n--;
        if (!best->head) best->tail = NULL;
    }
    *dtail = NULL;
    for (uint32_t i = 0; i < out->n; i++) out->items[i]->next = NULL;
    out->padded_tokens = (uint64_t)out->n * out->max_tok;
    b->depth -= out->n + out->n_dropped;
    if (!best->head) { /* unlink the empty group */
        group **pp = &b->groups;
        while (*pp != best) pp = &(*pp)->next;
        *pp = best->next;
        free(best);
    }
    return 1;
}

int mt_srv_batcher_take(mt_srv_batcher *b, mt_batch *out, uint64_t *seen_kick) {
    uint64_t free_us = mt_now_us();
    pthread_mutex_lock(&b->mu);
    int rc;
    for (;;) {
        if (b->kick_seq != *seen_kick) {
            *seen_kick = b->kick_seq;
            rc = 0;
            break;
        }
        uint64_t deadline;
        if (mt_srv_batcher_pick(b, mt_now_us(), free_us, out, &deadline)) {
            if (b->depth) pthread_cond_signal(&b->cv);
            rc = 1;
            break;
        }
        if (b->closed && b->depth == 0) {
            rc = -1;
            break;
        }
        if (deadline == UINT64_MAX) {
            pthread_cond_wait(&b->cv, &b->mu);
        } else {
            struct timespec ts = {(time_t)(deadline / 1000000u), (long)(deadline % 1000000u) * 1000};
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        }
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void mt_srv_batcher_set_flush(mt_srv_batcher *b, bool flush) {
    pthread_mutex_lock(&b->mu);
    b->flush = flush;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void mt_srv_batcher_kick(mt_srv_batcher *b) {
    pthread_mutex_lock(&b->mu);
    b->kick_seq++;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void mt_srv_batcher_close(mt_srv_batcher *b) {
    pthread_mutex_lock(&b->mu);
    b->closed = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

uint64_t mt_srv_batcher_depth(mt_srv_batcher *b) {
    pthread_mutex_lock(&b->mu);
    uint64_t d = b->depth;
    pthread_mutex_unlock(&b->mu);
    return d;
}


int mt_srv_batch_init(mt_batch *bt, uint32_t cap) {
    memset(bt, 0, sizeof *bt);
    bt->items = calloc(cap ? cap : 1, sizeof *bt->items);
    bt->cap = cap;
    return bt->items ? 0 : -1;
}

void mt_srv_batch_free(mt_batch *bt) {
    free(bt->items);
    bt->items = NULL;
}
