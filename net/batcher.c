/*
 * batcher.c — the dynamic batcher (policy in batcher.h).
 *
 * A group per distinct decoding options; their number is small (clients use a handful of settings),
 * so groups live in a list. Inside a group, a lane per owner (connection) with sentences queued, in
 * round-robin order: a batch is filled one sentence per lane in turn, and the lanes are then rotated
 * so that the next batch starts with the lane after the last one served. Lanes and groups are freed
 * when they empty.
 */
#include "batcher.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct lane {
    struct lane *next;
    uint64_t owner;
    mt_bitem *head, *tail;
    const mt_bitem *cur;     /* scratch cursor of group_full's walk */
} lane;

typedef struct group {
    struct group *next;
    mt_xlate_opts opts;
    lane *lanes;             /* round-robin order: the next batch starts with the first */
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

static void group_free(group *g) {
    lane *l = g->lanes;
    while (l) {
        lane *n = l->next;
        free(l);
        l = n;
    }
    free(g);
}

void mt_srv_batcher_free(mt_srv_batcher *b) {
    if (!b) return;
    group *g = b->groups;
    while (g) {
        group *n = g->next;
        group_free(g);
        g = n;
    }
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* The group of opts and its lane of owner, made when missing (appended: a new owner waits for one
 * round at most). NULL when out of memory. */
static lane *find_lane(mt_srv_batcher *b, const mt_xlate_opts *opts, uint64_t owner, group **gout) {
    group *g = b->groups, *glast = NULL;
    while (g && !opts_eq(&g->opts, opts)) {
        glast = g;
        g = g->next;
    }
    if (!g) {
        if (!(g = calloc(1, sizeof *g))) return NULL;
        g->opts = *opts;
        if (glast) glast->next = g;
        else b->groups = g;
    }
    *gout = g;
    lane *l = g->lanes, *llast = NULL;
    while (l && l->owner != owner) {
        llast = l;
        l = l->next;
    }
    if (!l) {
        if (!(l = calloc(1, sizeof *l))) return NULL; /* an empty group is harmless: pick skips it */
        l->owner = owner;
        if (llast) llast->next = l;
        else g->lanes = l;
    }
    return l;
}

int mt_srv_batcher_push(mt_srv_batcher *b, mt_bitem *const *items, uint32_t n) {
    pthread_mutex_lock(&b->mu);
    /* First every lane the items need, so that a failure queues nothing. */
    for (uint32_t i = 0; i < n; i++) {
        group *g;
        if (!find_lane(b, &items[i]->opts, items[i]->owner, &g)) {
            pthread_mutex_unlock(&b->mu);
            return -1;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        mt_bitem *it = items[i];
        it->next = NULL;
        if (it->ntok == 0) it->ntok = 1;
        group *g;
        lane *l = find_lane(b, &it->opts, it->owner, &g);
        if (l->tail) l->tail->next = it;
        else l->head = it;
        l->tail = it;
        g->n++;
    }
    b->depth += n;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

/* The group's oldest sentence: the oldest lane head (each lane is FIFO). */
static const mt_bitem *group_oldest(const group *g) {
    const mt_bitem *o = NULL;
    for (const lane *l = g->lanes; l; l = l->next)
        if (l->head && (!o || l->head->enq_us < o->enq_us)) o = l->head;
    return o;
}

/* Would the group's next batch be full, i.e. could no further sentence join it? Walks the lanes as
 * the pick takes them, one sentence each in turn. (0 live items counts as ready: only drops to hand
 * back.) */
static bool group_full(const mt_srv_batcher *b, group *g) {
    uint32_t count = 0, maxtok = 0;
    for (lane *l = g->lanes; l; l = l->next) l->cur = l->head;
    for (bool more = true; more;) {
        more = false;
        for (lane *l = g->lanes; l; l = l->next) {
            while (l->cur && is_cancelled(l->cur)) l->cur = l->cur->next;
            if (!l->cur) continue;
            uint32_t nm = l->cur->ntok > maxtok ? l->cur->ntok : maxtok;
            if (count > 0 && (uint64_t)(count + 1) * nm > b->max_tokens) return true;
            count++;
            maxtok = nm;
            if (count >= b->max_sentences) return true;
            l->cur = l->cur->next;
            more = true;
        }
    }
    return count == 0 || (uint64_t)(count + 1) * maxtok > b->max_tokens;
}

/* Moves the cancelled items at the head of lane l to the dropped list. */
static void drop_cancelled(lane *l, group *g, mt_batch *out, mt_bitem ***dtail) {
    while (l->head && is_cancelled(l->head)) {
        mt_bitem *it = l->head;
        l->head = it->next;
        if (!l->head) l->tail = NULL;
        g->n--;
        **dtail = it;
        *dtail = &it->next;
        out->n_dropped++;
    }
}

int mt_srv_batcher_pick(mt_srv_batcher *b, uint64_t now_us, uint64_t free_us, mt_batch *out, uint64_t *deadline_us) {
    *deadline_us = UINT64_MAX;
    group *best = NULL;
    const mt_bitem *best_oldest = NULL;
    for (group *g = b->groups; g; g = g->next) {
        const mt_bitem *oldest = group_oldest(g);
        if (!oldest) continue;
        uint64_t since = oldest->enq_us > free_us ? oldest->enq_us : free_us;
        uint64_t due = since + b->max_wait_us;
        bool ready = b->flush || b->closed || now_us >= due || group_full(b, g);
        if (ready) {
            if (!best || oldest->enq_us < best_oldest->enq_us) {
                best = g;
                best_oldest = oldest;
            }
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
    out->oldest_us = best_oldest->enq_us;
    mt_bitem **dtail = &out->dropped;
    uint32_t cap = out->cap < b->max_sentences ? out->cap : b->max_sentences;
    lane *last = NULL; /* the last lane served */
    for (bool more = true, full = false; more && !full;) {
        more = false;
        for (lane *l = best->lanes; l && !full; l = l->next) {
            drop_cancelled(l, best, out, &dtail);
            if (!l->head) continue;
            mt_bitem *it = l->head;
            uint32_t nm = it->ntok > out->max_tok ? it->ntok : out->max_tok;
            if (out->n > 0 && ((uint64_t)(out->n + 1) * nm > b->max_tokens || out->n >= cap)) {
                full = true;
                break;
            }
            l->head = it->next;
            if (!l->head) l->tail = NULL;
            best->n--;
            it->next = NULL;
            out->items[out->n++] = it;
            out->max_tok = nm;
            last = l;
            more = true;
        }
    }
    for (lane *l = best->lanes; l; l = l->next) drop_cancelled(l, best, out, &dtail);
    *dtail = NULL;
    out->padded_tokens = (uint64_t)out->n * out->max_tok;
    b->depth -= out->n + out->n_dropped;
    /* Round robin: the lane after the last one served goes first next time. */
    if (last && last->next) {
        lane *tail = last->next;
        while (tail->next) tail = tail->next;
        tail->next = best->lanes;
        best->lanes = last->next;
        last->next = NULL;
    }
    for (lane **pp = &best->lanes; *pp;) { /* free the empty lanes */
        lane *l = *pp;
        if (l->head) {
            pp = &l->next;
        } else {
            *pp = l->next;
            free(l);
        }
    }
    if (!best->lanes) { /* unlink the empty group */
        group **pp = &b->groups;
        while (*pp != best) pp = &(*pp)->next;
        *pp = best->next;
        group_free(best);
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
