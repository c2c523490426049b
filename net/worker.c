/*
 * worker.c — engine worker threads: one per GPU of --gpus, or --threads of them on the CPU. Each owns
 * a translator on the current model generation, takes batches from the batcher, translates them and
 * posts the results to the loop. A worker notices a promote (the batcher kicks it) between batches.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* Makes the worker's translator match the current generation. */
static void sync_model(mt_worker *w) {
    mt_server *s = w->srv;
    mt_srv_model *g = mt_srv_model_get(s);
    if (g == w->gen) {
        mt_srv_model_put(s, g);
        return;
    }
    if (w->tr) s->eng->translator_free(w->tr);
    w->tr = NULL;
    mt_srv_model_put(s, w->gen);
    w->gen = g;
    if (!g) return;
    mt_eng_err err = {0};
    int idx = w->handle_idx < g->n ? w->handle_idx : 0;
    if (s->eng->translator_create(g->handles[idx], s->kernel_threads, &w->tr, &err) != 0) {
        MT_LOGE("worker %d: cannot make a translator on model generation %llu: %s", w->idx,
                (unsigned long long)g->generation, err.msg);
        w->tr = NULL;
    } else {
        MT_LOGD("worker %d: translator on model generation %llu", w->idx, (unsigned long long)g->generation);
    }
}

/* The engine's stream callback: a streaming request's partial translation, posted to the loop (the
 * final text comes with the batch). Lost when out of memory: the answer still comes. */
typedef struct stream_ctx {
    mt_server *s;
    mt_batch *b;
} stream_ctx;

static void on_stream(void *user, size_t i, const char *text, int final) {
    stream_ctx *sc = user;
    if (final || i >= sc->b->n) return;
    mt_bitem *it = sc->b->items[i];
    if (!it->stream || (it->cancelled && atomic_load_explicit(it->cancelled, memory_order_relaxed))) return;
    mt_post_msg *m = calloc(1, sizeof *m);
    char *t = m ? strdup(text) : NULL;
    if (!t) {
        free(m);
        return;
    }
    m->kind = MT_POST_PARTIAL;
    m->ptr = it;
    m->text = t;
    mt_post(sc->s, m);
}

static void run_batch(mt_worker *w, mt_post_msg *m) {
    mt_server *s = w->srv;
    mt_batch *b = &w->batch;
    uint32_t n = b->n, nb = b->opts.n_best ? b->opts.n_best : 1;
    if (!w->tr) {
        m->status = -(w->gen ? MT__V1__ERROR_CODE__ERR_ENGINE : MT__V1__ERROR_CODE__ERR_NO_MODEL);
        m->text = strdup(w->gen ? "the engine could not make a translator for this model" : "no model is loaded");
        return;
    }
    const char **texts = malloc(n * sizeof *texts), **prefixes = calloc(n, sizeof *prefixes);
    char **outs = calloc((size_t)n * nb, sizeof *outs);
    float *scores = calloc((size_t)n * nb, sizeof *scores);
    bool any_prefix = false, any_stream = false;
    if (!texts || !prefixes || !outs || !scores) {
        m->status = -MT__V1__ERROR_CODE__ERR_INTERNAL;
        m->text = strdup("out of memory");
    } else {
        for (uint32_t i = 0; i < n; i++) {
            texts[i] = b->items[i]->text;
            prefixes[i] = b->items[i]->prefix;
            any_prefix |= prefixes[i] != NULL;
            any_stream |= b->items[i]->stream;
        }
        mt_eng_err err = {0};
        stream_ctx sc = {s, b};
        atomic_fetch_add(&s->metrics.busy_workers, 1);
        int rc = s->eng->translate(w->tr, texts, any_prefix ? prefixes : NULL, n, &b->opts,
                                   any_stream ? on_stream : NULL, &sc, outs, scores, &err);
        atomic_fetch_sub(&s->metrics.busy_workers, 1);
        for (uint32_t i = 0; rc == 0 && i < n; i++) {
            mt_bitem *it = b->items[i];
            it->out = malloc(nb * sizeof *it->out);
            it->score = malloc(nb * sizeof *it->score);
            if (!it->out || !it->score) {
                rc = -MT__V1__ERROR_CODE__ERR_INTERNAL;
                snprintf(err.msg, sizeof err.msg, "out of memory");
                break;
            }
            memcpy(it->out, outs + (size_t)i * nb, nb * sizeof *it->out);
            memcpy(it->score, scores + (size_t)i * nb, nb * sizeof *it->score);
        }
        if (rc != 0) {
            m->status = rc;
            m->text = strdup(err.msg[0] ? err.msg : "translation failed");
            for (uint32_t i = 0; i < n; i++) {
                free(b->items[i]->out);
                free(b->items[i]->score);
                b->items[i]->out = NULL;
                b->items[i]->score = NULL;
            }
            for (size_t i = 0; i < (size_t)n * nb; i++) free(outs[i]);
        }
    }
    free(texts);
    free(prefixes);
    free(outs);
    free(scores);
    mt_metric_inc(&s->metrics.batches_total);
    mt_histo_observe(&s->metrics.batch_sentences, n);
    mt_histo_observe(&s->metrics.batch_tokens, (double)b->padded_tokens);
}

static void *worker_main(void *arg) {
    mt_worker *w = arg;
    mt_server *s = w->srv;
    uint64_t seen_kick = 0;
    for (;;) {
        /* The memory to post a batch's results is held before the batch is taken (net/README.md, out
         * of memory): without it the sentences stay queued and the worker tries again shortly. */
        mt_post_msg *m = calloc(1, sizeof *m);
        mt_bitem **items = malloc((w->batch.cap ? w->batch.cap : 1) * sizeof *items);
        if (!m || !items) {
            free(m);
            free(items);
            mt_metrics_limit_hit(&s->metrics, MT_LIM_OOM_DROP);
            MT_LOGE("worker %d: out of memory; the queue waits", w->idx);
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        int r = mt_srv_batcher_take(s->batcher, &w->batch, &seen_kick);
        if (r <= 0) {
            free(m);
            free(items);
        }
        if (r < 0) break;
        sync_model(w);
        if (r == 0) continue;
        m->kind = MT_POST_BATCH;
        m->batch_start_us = mt_now_us();
        if (w->batch.n) {
            run_batch(w, m);
            memcpy(items, w->batch.items, w->batch.n * sizeof *items);
        }
        m->items = items;
        m->n = w->batch.n;
        m->dropped = w->batch.dropped;
        mt_post(s, m);
    }
    if (w->tr) s->eng->translator_free(w->tr);
    w->tr = NULL;
    mt_srv_model_put(s, w->gen);
    w->gen = NULL;
    return NULL;
}

int mt_workers_start(mt_server *s) {
    s->workers = calloc(s->n_workers, sizeof *s->workers);
    if (!s->workers) return -1;
    for (uint32_t i = 0; i < s->n_workers; i++) {
        mt_worker *w = &s->workers[i];
        w->srv = s;
        w->idx = (int)i;
        w->handle_idx = s->opt->n_gpus > 0 ? (int)i : 0;
        if (mt_srv_batch_init(&w->batch, s->opt->max_batch_sentences) != 0) return -1;
        if (mt_srv_thread_start(&w->th, worker_main, w) != 0) return -1;
        w->started = true;
    }
    return 0;
}

void mt_workers_stop(mt_server *s) {
    if (!s->workers) return;
    mt_srv_batcher_set_flush(s->batcher, true);
    mt_srv_batcher_close(s->batcher);
    for (uint32_t i = 0; i < s->n_workers; i++) {
        if (s->workers[i].started) pthread_join(s->workers[i].th, NULL);
        mt_srv_batch_free(&s->workers[i].batch);
    }
    free(s->workers);
    s->workers = NULL;
}
