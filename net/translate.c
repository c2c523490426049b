/*
 * translate.c — translate requests on the loop thread: validation against the limits, token
 * counting, queueing every sentence in the batcher, and, when the workers' batches come back through
 * the post queue, the answer (all sentences, in request order) once the last one is done. A
 * streaming request also gets a partial answer (final = false) each time a sentence grows.
 *
 * A request outlives its connection: when the connection closes first, the request is orphaned
 * (its sentences still queued are dropped by the batcher, those in a running batch finish) and freed
 * when its last sentence comes back.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

_Static_assert(MT_PROTOCOL_MAX_BEAM == MT_TRANSLATE_MAX_BEAM, "the wire's beam limit is the engine's");

struct mt_treq {
    mt_treq *prev, *next;       /* in conn->treqs */
    mt_conn *conn;              /* NULL once orphaned */
    uint64_t id;
    mt_frame *frame;            /* owns the texts */
    uint32_t n, pending, n_best;
    bool want_scores;
    _Atomic bool cancelled;
    int err_code, err_status;
    char *err_msg;
    uint64_t t0_us, t_batch_us;
    char **outs;                /* (n * n_best) */
    float *scores;              /* (n * n_best) */
    mt_bitem items[];
};

static void treq_free(mt_treq *r) {
    for (uint32_t i = 0; i < r->n * r->n_best; i++) free(r->outs[i]);
    free(r->outs);
    free(r->scores);
    free(r->err_msg);
    mt_frame_free(r->frame);
    free(r);
}

static void unlink_from_conn(mt_treq *r) {
    mt_conn *c = r->conn;
    if (!c) return;
    if (r->prev) r->prev->next = r->next;
    else c->treqs = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

void mt_translate_orphan(mt_conn *c) {
    mt_treq *r = c->treqs;
    while (r) {
        mt_treq *n = r->next;
        atomic_store(&r->cancelled, true);
        r->conn = NULL;
        r->prev = r->next = NULL;
        r = n;
    }
    c->treqs = NULL;
}

static void reject(mt_conn *c, mt_frame *f, int code, const char *msg) {
    mt_conn_send_error(c, f->id, code, false, 0, "%s", msg);
    mt_frame_free(f);
}

void mt_translate_submit(mt_conn *c, mt_frame *f) {
    mt_server *s = c->srv;
    const mt_srv_limits *L = &s->opt->limits;
    const Mt__V1__TranslateRequest *t = f->translate;
    char msg[256];
    if (s->draining) return reject(c, f, MT__V1__ERROR_CODE__ERR_SHUTTING_DOWN, "the server is shutting down");
    if (c->n_pending >= L->max_inflight) {
        mt_metrics_limit_hit(&s->metrics, MT_LIM_INFLIGHT);
        snprintf(msg, sizeof msg, "%u requests in flight on this connection, its limit", L->max_inflight);
        return reject(c, f, MT__V1__ERROR_CODE__ERR_TOO_MANY_INFLIGHT, msg);
    }
    if (mt_conn_has_pending(c, f->id))
        return reject(c, f, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, "a request with this id is in flight");
    mt_check_limits cl = {L->max_sentences, L->max_chars};
    int code = mt_frame_check_translate(t, &cl, msg, sizeof msg);
    if (code) {
        if (code == MT__V1__ERROR_CODE__ERR_TOO_MANY_SENTENCES) mt_metrics_limit_hit(&s->metrics, MT_LIM_SENTENCES);
        if (code == MT__V1__ERROR_CODE__ERR_SENTENCE_TOO_LONG) mt_metrics_limit_hit(&s->metrics, MT_LIM_CHARS);
        return reject(c, f, code, msg);
    }
    uint32_t n = (uint32_t)t->n_texts, nb = t->n_best ? t->n_best : 1;
    if (mt_srv_batcher_depth(s->batcher) + n > L->max_queue_sentences) {
        mt_metrics_limit_hit(&s->metrics, MT_LIM_QUEUE);
        snprintf(msg, sizeof msg, "the translation queue is full (%u sentences); retry later",
                 L->max_queue_sentences);
        return reject(c, f, MT__V1__ERROR_CODE__ERR_QUEUE_FULL, msg);
    }
    /* A connection's share: one client pipelining bulk requests cannot take the whole queue. */
    uint32_t share = L->max_conn_queue_sentences < L->max_queue_sentences ? L->max_conn_queue_sentences
                                                                         : L->max_queue_sentences;
    if ((uint64_t)c->queued + n > share) {
        mt_metrics_limit_hit(&s->metrics, MT_LIM_CONN_QUEUE);
        snprintf(msg, sizeof msg, "this connection has %u sentences queued, its share of the queue is %u; retry later",
                 c->queued, share);
        return reject(c, f, MT__V1__ERROR_CODE__ERR_QUEUE_FULL, msg);
    }
    mt_srv_model *m = mt_srv_model_get(s);
    if (!m) return reject(c, f, MT__V1__ERROR_CODE__ERR_NO_MODEL, "no model is loaded (start with --model, or promote one)");

    mt_treq *r = calloc(1, sizeof *r + n * sizeof(mt_bitem));
    mt_bitem **ptrs = r ? malloc(n * sizeof *ptrs) : NULL;
    if (r) {
        r->outs = calloc((size_t)n * nb, sizeof *r->outs);
        r->scores = calloc((size_t)n * nb, sizeof *r->scores);
    }
    if (!r || !ptrs || !r->outs || !r->scores) {
        mt_srv_model_put(s, m);
        if (r) {
            free(r->outs);
            free(r->scores);
        }
        free(r);
        free(ptrs);
        return reject(c, f, MT__V1__ERROR_CODE__ERR_INTERNAL, "out of memory");
    }
    r->conn = c;
    r->id = f->id;
    r->frame = f;
    r->n = r->pending = n;
    r->n_best = nb;
    r->want_scores = t->want_scores;
    r->t0_us = mt_now_us();
    /* An absent length_penalty is the engine's default (-1 here). */
    bool has_lp = t->length_penalty_set_case == MT__V1__TRANSLATE_REQUEST__LENGTH_PENALTY_SET_LENGTH_PENALTY;
    mt_xlate_opts opts = {t->beam_size ? t->beam_size : 1, has_lp ? t->length_penalty : -1.0f, t->max_len_ratio, nb};
    uint32_t truncated = 0;
    for (uint32_t i = 0; i < n; i++) {
        mt_bitem *it = &r->items[i];
        it->req = r;
        it->cancelled = &r->cancelled;
        it->text = t->texts[i];
        it->prefix = t->n_target_prefixes && t->target_prefixes[i][0] ? t->target_prefixes[i] : NULL;
        it->stream = t->stream;
        it->index = i;
        it->opts = opts;
        it->enq_us = r->t0_us;
        it->owner = c->serial;
        mt_eng_err err = {0};
        uint32_t ntok = 0;
        if (s->eng->count_tokens(m->handles[0], it->text, &ntok, &err) != 0)
            ntok = (uint32_t)(strlen(it->text) / 4 + 1); /* the batch budget is an estimate anyway */
        it->ntok = ntok ? ntok : 1;
        /* The engine's source is the tokens and [EOS], at most max_len - 1 of them: it cuts longer
         * ones (and warns, rate-limited by the log bridge); counted here, per sentence. */
        if (m->max_len && (uint64_t)ntok + 1 > (uint64_t)m->max_len - 1) truncated++;
        ptrs[i] = it;
    }
    if (truncated) mt_metric_add(&s->metrics.sentences_truncated, truncated);
    mt_srv_model_put(s, m);
    if (mt_srv_batcher_push(s->batcher, ptrs, n) != 0) {
        free(ptrs);
        r->frame = NULL;
        treq_free(r);
        return reject(c, f, MT__V1__ERROR_CODE__ERR_INTERNAL, "out of memory");
    }
    free(ptrs);

    r->next = c->treqs;
    if (c->treqs) c->treqs->prev = r;
    c->treqs = r;
    mt_conn_add_pending(c, r->id);
    c->queued += n;
    s->inflight++;
    atomic_fetch_add(&s->metrics.inflight, 1);
}

static void complete(mt_server *s, mt_treq *r) {
    mt_conn *c = r->conn;
    uint64_t now = mt_now_us();
    if (c) {
        if (r->err_code) {
            mt_conn_send_error(c, r->id, r->err_code, false, r->err_status, "%s", r->err_msg ? r->err_msg : "");
        } else {
            Mt__V1__TranslateResponse resp = MT__V1__TRANSLATE_RESPONSE__INIT;
            resp.n_texts = (size_t)r->n * r->n_best;
            resp.texts = r->outs;
            if (r->want_scores) {
                resp.n_scores = (size_t)r->n * r->n_best;
                resp.scores = r->scores;
            }
            resp.final = true;
            resp.n_best = r->n_best;
            resp.queue_ms = (float)((double)(r->t_batch_us > r->t0_us ? r->t_batch_us - r->t0_us : 0) / 1e3);
            resp.total_ms = (float)((double)(now - r->t0_us) / 1e3);
            mt_frame f = MT__V1__FRAME__INIT;
            f.id = r->id;
            f.body_case = MT__V1__FRAME__BODY_TRANSLATE_OK;
            f.translate_ok = &resp;
            mt_conn_send(c, &f);
            mt_metric_add(&s->metrics.sentences_total, r->n);
        }
        mt_histo_observe(&s->metrics.latency, (double)(now - r->t0_us) / 1e6);
        unlink_from_conn(r);
        r->conn = NULL;
        mt_conn_request_done(c, r->id);
    }
    s->inflight--;
    atomic_fetch_sub(&s->metrics.inflight, 1);
    treq_free(r);
    if (s->draining) mt_drain_check(s);
}

static void item_done(mt_server *s, mt_bitem *it) {
    mt_treq *r = it->req;
    if (r->conn) r->conn->queued--;
    if (--r->pending == 0) complete(s, r);
}

void mt_translate_on_batch(mt_server *s, mt_post_msg *m) {
    for (uint32_t i = 0; i < m->n; i++) {
        mt_bitem *it = m->items[i];
        mt_treq *r = it->req;
        if (m->status == 0 && it->out) {
            for (uint32_t j = 0; j < r->n_best; j++) {
                r->outs[it->index * r->n_best + j] = it->out[j];
                r->scores[it->index * r->n_best + j] = it->score[j];
            }
        } else {
            if (!r->err_code) {
                r->err_status = m->status > 0 ? m->status : 0;
                r->err_code = m->status > 0   ? mt_map_engine_status(m->status, false)
                              : m->status < 0 ? -m->status
                                              : MT__V1__ERROR_CODE__ERR_INTERNAL;
                r->err_msg = strdup(m->text ? m->text : "the engine returned no text");
            }
        }
        free(it->out);
        free(it->score);
        it->out = NULL;
        it->score = NULL;
        if (m->batch_start_us > r->t_batch_us) r->t_batch_us = m->batch_start_us;
        item_done(s, it);
    }
    mt_bitem *d = m->dropped;
    while (d) {
        mt_bitem *next = d->next;
        item_done(s, d);
        d = next;
    }
}

void mt_translate_on_partial(mt_server *s, mt_post_msg *m) {
    mt_bitem *it = m->ptr;
    mt_treq *r = it->req;
    mt_conn *c = r->conn;
    /* A connection whose output is backed up gets the final answer only. */
    if (!c || r->err_code || mt_conn_output_len(c) > s->opt->limits.output_high_water) return;
    Mt__V1__TranslateResponse resp = MT__V1__TRANSLATE_RESPONSE__INIT;
    resp.n_texts = 1;
    resp.texts = &m->text;
    resp.index = it->index;
    resp.total_ms = (float)((double)(mt_now_us() - r->t0_us) / 1e3);
    mt_frame f = MT__V1__FRAME__INIT;
    f.id = r->id;
    f.body_case = MT__V1__FRAME__BODY_TRANSLATE_OK;
    f.translate_ok = &resp;
    mt_conn_send(c, &f);
}
