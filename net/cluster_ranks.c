/*
 * cluster_ranks.c — the trainer thread of one rank of a cluster job on this node (every rank but the
 * coordinator's rank 0, which is train.c's trainer): create the trainer from the rank's config
 * (paths beneath --data-root), run it, and post MT_POST_RANK_ENDED with its status and the SHA-256 of
 * the weights it ended with. The MT_POST_RANK_ENDED message is allocated before the thread starts,
 * so the end of a rank is never lost.
 */
#include "cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

char *mt_rank_config(const char *config, int rank, int device) {
    json_t *cfg = json_loads(config, 0, NULL);
    if (!cfg) return NULL;
    json_object_set_new(cfg, "rank", json_integer(rank));
    if (device >= 0) json_object_set_new(cfg, "device", json_integer(device));
    char *s = json_dumps(cfg, JSON_COMPACT);
    json_decref(cfg);
    return s;
}

static void *rank_main(void *arg) {
    mt_rank_run *r = arg;
    mt_server *s = r->s;
    void *tr = NULL;
    mt_eng_err err = {0};
    int rc = s->eng->trainer_create(r->config, s->data_root, &tr, &err);
    if (rc == 0) {
        pthread_mutex_lock(&r->mu);
        r->tr = tr;
        bool cancel = r->cancel;
        pthread_mutex_unlock(&r->mu);
        if (cancel) s->eng->trainer_cancel(tr);
        memset(&err, 0, sizeof err);
        rc = s->eng->trainer_run(tr, &err);
        char *js = s->eng->trainer_status_json(tr);
        json_t *o = js ? json_loads(js, 0, NULL) : NULL;
        const char *w = json_string_value(json_object_get(o, "weights_sha256"));
        snprintf(r->weights_sha, sizeof r->weights_sha, "%s", w ? w : "");
        json_decref(o);
        free(js);
    }
    r->status = rc;
    snprintf(r->msg, sizeof r->msg, "%s", err.msg);
    mt_post_msg *m = r->ended;
    r->ended = NULL;
    m->kind = MT_POST_RANK_ENDED;
    m->status = rc;
    m->ptr = r;
    mt_post(s, m);
    return NULL;
}

int mt_rank_run_start(mt_server *s, mt_rank_run *r, uint64_t job, int rank, const char *config) {
    memset(r, 0, sizeof *r);
    r->s = s;
    r->job = job;
    r->rank = rank;
    r->config = strdup(config);
    r->ended = calloc(1, sizeof *r->ended);
    pthread_mutex_init(&r->mu, NULL);
    if (!r->config || !r->ended || mt_srv_thread_start(&r->th, rank_main, r) != 0) {
        free(r->config);
        free(r->ended);
        pthread_mutex_destroy(&r->mu);
        memset(r, 0, sizeof *r);
        return -1;
    }
    r->live = true;
    return 0;
}

void mt_rank_run_cancel(mt_rank_run *r) {
    if (!r->live) return;
    pthread_mutex_lock(&r->mu);
    r->cancel = true;
    if (r->tr) r->s->eng->trainer_cancel(r->tr);
    pthread_mutex_unlock(&r->mu);
}

void mt_rank_run_progress(mt_rank_run *r, int64_t *step, double *tps) {
    *step = 0;
    *tps = 0;
    if (!r->live) return;
    pthread_mutex_lock(&r->mu);
    if (r->tr) {
        int state = 0;
        double loss = 0;
        r->s->eng->trainer_status(r->tr, &state, step, &loss, tps);
    }
    pthread_mutex_unlock(&r->mu);
}

void mt_rank_run_join(mt_rank_run *r) {
    if (!r->live) return;
    pthread_join(r->th, NULL);
    r->live = false;
    if (r->tr) r->s->eng->trainer_free(r->tr);
    r->tr = NULL;
    free(r->config);
    r->config = NULL;
    free(r->ended); /* NULL once posted */
    r->ended = NULL;
    pthread_mutex_destroy(&r->mu);
}
