/*
 * train.c — training and model control, for admin connections.
 *
 * `train start` runs mt_trainer_create + mt_trainer_run in a trainer thread of its own, so
 * translation goes on meanwhile; the start is answered once the trainer exists (or failed). The
 * trainer's progress callback posts each JSON event to the loop, which fans it out to subscribed
 * connections (a subscriber whose output is over output-high-water misses events rather than
 * growing without bound). Save and promote can block (a save waits for a step boundary, a promote
 * loads a model), so they run in admin threads, one for saves and one for promotes, one job at a time
 * each: a slow save never holds a promote back, nor the other way round. A promote installs the new
 * model generation when it is loaded (model.c). Only this file calls the trainer functions.
 *
 * Out of memory (net/README.md): the messages that carry a state change back to the loop — the
 * trainer created or failed, the run ended, a job done — are allocated here on the loop thread when
 * the work is admitted (a failure is answered at once and nothing starts), so posting them never
 * fails; a progress event that cannot be allocated is dropped and counted.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "log.h"

enum { PH_NONE = 0, PH_STARTING, PH_RUNNING, PH_ENDED };
enum { JOB_SAVE = 0, JOB_PROMOTE };

typedef struct mt_jobq {
    struct mt_srv_train_ctl *t;
    pthread_t th;
    bool live;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct mt_job *head, *tail;
    bool stop;
} mt_jobq;

typedef struct mt_job {
    struct mt_job *next;
    mt_post_msg *done;        /* JOB_DONE, allocated when the job was admitted */
    int kind;
    char *path;               /* resolved; NULL = the trainer's checkpoint dir */
    uint64_t serial, id;      /* who asked */
    void *trainer;
    int status;
    mt_eng_err err;
    char *out_path;
    mt_srv_model *model;
} mt_job;

struct mt_srv_train_ctl {
    mt_server *s;
    /* loop thread */
    int phase;
    void *trainer;            /* published by the CREATED post */
    bool thread_live;
    pthread_t th;
    uint64_t start_serial, start_id;
    int end_status;
    char end_msg[512];
    int jobs_pending;
    bool save_pending, promote_pending;
    char *config;
    mt_post_msg *created_msg, *ended_msg; /* the trainer thread's two posts, allocated by handle_start */
    /* shared with the trainer thread */
    pthread_mutex_t mu;
    bool stop_requested;
    void *shared_tr;
    /* admin jobs: a queue and a thread for saves, another for promotes */
    mt_jobq jq[2];
};

int mt_map_engine_status(int st, bool config) {
    switch (st) {
    case MT_ERR_INVALID_ARG:
    case MT_ERR_UTF8: return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
    case MT_ERR_PERMISSION: return MT__V1__ERROR_CODE__ERR_PATH_OUTSIDE_ROOT;
    case MT_ERR_NOT_FOUND: return MT__V1__ERROR_CODE__ERR_NOT_FOUND;
    case MT_ERR_CONFIG: return MT__V1__ERROR_CODE__ERR_CONFIG;
    case MT_ERR_FORMAT: return config ? MT__V1__ERROR_CODE__ERR_CONFIG : MT__V1__ERROR_CODE__ERR_ENGINE;
    case MT_ERR_UNSUPPORTED: return MT__V1__ERROR_CODE__ERR_UNSUPPORTED;
    case MT_ERR_STATE: return MT__V1__ERROR_CODE__ERR_TRAINING_STATE;
    default: return MT__V1__ERROR_CODE__ERR_ENGINE;
    }
}

static const char *status_name(mt_server *s, int st) {
    return s->eng->status_str ? s->eng->status_str(st) : "?";
}

/* ---- JSON text for the events the server makes itself ---- */

static void json_escape(const char *in, char *out, size_t cap) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 7 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            out[o++] = '\\';
            out[o++] = (char)*p;
        } else if (*p < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", *p);
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = 0;
}

/* ---- the trainer thread ---- */

static void progress_cb(const char *event_json, void *user) {
    mt_srv_train_ctl *t = user;
    mt_post_msg *m = calloc(1, sizeof *m);
    if (m && !(m->text = strdup(event_json ? event_json : "{}"))) {
        free(m);
        m = NULL;
    }
    if (!m) { /* a progress event, not a state change: dropped, counted */
        mt_metrics_limit_hit(&t->s->metrics, MT_LIM_OOM_DROP);
        return;
    }
    m->kind = MT_POST_TRAIN_EVENT;
    mt_post(t->s, m);
}

static void *train_main(void *arg) {
    mt_srv_train_ctl *t = arg;
    mt_server *s = t->s;
    void *tr = NULL;
    mt_eng_err err = {0};
    int rc = s->eng->trainer_create(t->config, s->data_root, &tr, &err);
    /* Both messages were allocated by handle_start: a state change is never lost (text may be). */
    mt_post_msg *m = t->created_msg, *end = t->ended_msg;
    t->created_msg = t->ended_msg = NULL;
    m->kind = MT_POST_TRAIN_CREATED;
    m->status = rc;
    m->ptr = rc == 0 ? tr : NULL;
    m->text = rc ? strdup(err.msg) : NULL;
    mt_post(s, m);
    if (rc != 0) {
        free(end);
        return NULL;
    }
    pthread_mutex_lock(&t->mu);
    t->shared_tr = tr;
    bool stop = t->stop_requested;
    pthread_mutex_unlock(&t->mu);
    memset(&err, 0, sizeof err);
    if (s->eng->trainer_set_progress(tr, progress_cb, t, &err) != 0)
        MT_LOGW("training: no progress events (%s)", err.msg);
    /* A stop asked before the trainer existed: the run sees the cancel at once, saves its checkpoint
     * and ends cancelled (its state says so, not "failed"). */
    if (stop) s->eng->trainer_cancel(tr);
    memset(&err, 0, sizeof err);
    rc = s->eng->trainer_run(tr, &err);
    end->kind = MT_POST_TRAIN_ENDED;
    end->status = rc;
    end->text = strdup(err.msg);
    mt_post(s, end);
    return NULL;
}

/* ---- the admin jobs thread ---- */

static void *admin_main(void *arg) {
    mt_jobq *q = arg;
    mt_server *s = q->t->s;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->head && !q->stop) pthread_cond_wait(&q->cv, &q->mu);
        if (!q->head) {
            pthread_mutex_unlock(&q->mu);
            break;
        }
        mt_job *j = q->head;
        q->head = j->next;
        if (!q->head) q->tail = NULL;
        pthread_mutex_unlock(&q->mu);

        if (j->kind == JOB_SAVE) {
            j->status = s->eng->trainer_save(j->trainer, j->path, &j->out_path, &j->err);
        } else {
            j->model = mt_srv_model_load_all(s, j->path, &j->err);
            j->status = j->model ? 0 : (j->err.status ? j->err.status : MT_ERR_INTERNAL);
        }
        mt_post_msg *m = j->done;
        j->done = NULL;
        m->kind = MT_POST_JOB_DONE;
        m->ptr = j;
        mt_post(s, m);
    }
    return NULL;
}

static void job_free(mt_job *j) {
    free(j->done);
    free(j->path);
    free(j->out_path);
    free(j);
}

int mt_srv_train_init(mt_server *s) {
    mt_srv_train_ctl *t = calloc(1, sizeof *t);
    if (!t) return -1;
    t->s = s;
    pthread_mutex_init(&t->mu, NULL);
    s->train = t;
    for (int k = 0; k < 2; k++) {
        mt_jobq *q = &t->jq[k];
        q->t = t;
        pthread_mutex_init(&q->mu, NULL);
        pthread_cond_init(&q->cv, NULL);
        if (mt_srv_thread_start(&q->th, admin_main, q) != 0) return -1;
        q->live = true;
    }
    return 0;
}

/* ---- status and events ---- */

static Mt__V1__TrainState snapshot(mt_srv_train_ctl *t, Mt__V1__TrainStatus *st, char **json) {
    mt_server *s = t->s;
    *json = NULL;
    st->state = MT__V1__TRAIN_STATE__TRAIN_NONE;
    if (t->phase == PH_NONE) return st->state;
    if (t->phase == PH_STARTING || !t->trainer) {
        st->state = t->phase == PH_STARTING              ? MT__V1__TRAIN_STATE__TRAIN_STARTING
                    : t->end_status == MT_ERR_CANCELLED ? MT__V1__TRAIN_STATE__TRAIN_CANCELLED
                                                        : MT__V1__TRAIN_STATE__TRAIN_FAILED;
        if (t->phase != PH_STARTING) {
            char esc[600], buf[800];
            json_escape(t->end_msg, esc, sizeof esc);
            snprintf(buf, sizeof buf, "{\"state\":\"%s\",\"status\":\"%s\",\"error\":\"%s\"}",
                     t->end_status == MT_ERR_CANCELLED ? "cancelled" : "failed", status_name(s, t->end_status), esc);
            *json = strdup(buf);
        }
        return st->state;
    }
    int state = 0;
    s->eng->trainer_status(t->trainer, &state, &st->step, &st->loss, &st->tokens_per_s);
    switch (state) {
    case MT_TRAIN_RUNNING: st->state = MT__V1__TRAIN_STATE__TRAIN_RUNNING; break;
    case MT_TRAIN_DONE: st->state = MT__V1__TRAIN_STATE__TRAIN_DONE; break;
    case MT_TRAIN_CANCELLED: st->state = MT__V1__TRAIN_STATE__TRAIN_CANCELLED; break;
    case MT_TRAIN_FAILED: st->state = MT__V1__TRAIN_STATE__TRAIN_FAILED; break;
    default: /* created, about to run: the trainer thread calls mt_trainer_run next */
        st->state = t->phase != PH_ENDED                    ? MT__V1__TRAIN_STATE__TRAIN_RUNNING
                    : t->end_status == MT_ERR_CANCELLED ? MT__V1__TRAIN_STATE__TRAIN_CANCELLED
                    : t->end_status == MT_OK            ? MT__V1__TRAIN_STATE__TRAIN_DONE
                                                        : MT__V1__TRAIN_STATE__TRAIN_FAILED;
        break;
    }
    *json = s->eng->trainer_status_json(t->trainer);
    return st->state;
}

static void send_status(mt_conn *c, uint64_t id) {
    Mt__V1__TrainStatus st = MT__V1__TRAIN_STATUS__INIT;
    char *json = NULL;
    snapshot(c->srv->train, &st, &json);
    st.status_json = json ? json : "";
    mt_cluster_status_fill(c->srv, &st);
    mt_frame f = MT__V1__FRAME__INIT;
    f.id = id;
    f.body_case = MT__V1__FRAME__BODY_TRAIN_STATUS_OK;
    f.train_status_ok = &st;
    mt_conn_send(c, &f);
    free(json);
}

static void fan_out(mt_server *s, const char *json, bool final) {
    Mt__V1__TrainEvent e = MT__V1__TRAIN_EVENT__INIT;
    e.event_json = (char *)json;
    e.final = final;
    mt_frame f = MT__V1__FRAME__INIT;
    f.body_case = MT__V1__FRAME__BODY_TRAIN_EVENT;
    f.train_event = &e;
    for (mt_conn *c = s->conns; c; c = c->next) {
        if (!c->subscribed || c->closing) continue;
        if (mt_conn_output_len(c) > s->opt->limits.output_high_water) {
            mt_metrics_limit_hit(&s->metrics, MT_LIM_EVENT_DROP);
            continue;
        }
        f.id = c->sub_id;
        mt_conn_send(c, &f);
    }
}

static void fan_out_end(mt_server *s, const char *state, int status, const char *msg) {
    char esc[600], buf[900];
    json_escape(msg ? msg : "", esc, sizeof esc);
    snprintf(buf, sizeof buf, "{\"event\":\"end\",\"state\":\"%s\",\"status\":\"%s\",\"message\":\"%s\"}", state,
             status_name(s, status), esc);
    fan_out(s, buf, true);
}

void mt_srv_train_gauges(mt_server *s, int *training, int64_t *step, double *loss, double *tps) {
    mt_srv_train_ctl *t = s->train;
    if (training) *training = t && (t->phase == PH_STARTING || t->phase == PH_RUNNING);
    int st = 0;
    int64_t sp = 0;
    double l = 0, tp = 0;
    if (t && t->trainer) s->eng->trainer_status(t->trainer, &st, &sp, &l, &tp);
    if (step) *step = sp;
    if (loss) *loss = l;
    if (tps) *tps = tp;
}

/* ---- requests ---- */

static bool admit_async(mt_conn *c, mt_frame *f) {
    const mt_srv_limits *L = &c->srv->opt->limits;
    if (c->n_pending >= L->max_inflight) {
        mt_metrics_limit_hit(&c->srv->metrics, MT_LIM_INFLIGHT);
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_TOO_MANY_INFLIGHT, false, 0,
                           "%u requests in flight on this connection, its limit", L->max_inflight);
        return false;
    }
    if (mt_conn_has_pending(c, f->id)) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, false, 0,
                           "a request with this id is in flight");
        return false;
    }
    return true;
}

static void enqueue_job(mt_srv_train_ctl *t, mt_job *j) {
    mt_jobq *q = &t->jq[j->kind];
    t->jobs_pending++;
    pthread_mutex_lock(&q->mu);
    if (q->tail) q->tail->next = j;
    else q->head = j;
    q->tail = j;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Starts the trainer thread on config (taken); answered to (serial, id) when the trainer exists
 * (serial 0: nobody to answer). Returns 0, or -1 when out of memory or no thread (config freed). */
static int launch(mt_srv_train_ctl *t, char *config, uint64_t serial, uint64_t id) {
    mt_server *s = t->s;
    free(t->created_msg);
    free(t->ended_msg);
    t->created_msg = calloc(1, sizeof *t->created_msg);
    t->ended_msg = calloc(1, sizeof *t->ended_msg);
    if (!t->created_msg || !t->ended_msg || !config) {
        free(config);
        return -1;
    }
    if (t->trainer) s->eng->trainer_free(t->trainer);
    t->trainer = NULL;
    free(t->config);
    t->config = config;
    t->stop_requested = false;
    t->shared_tr = NULL;
    t->end_msg[0] = 0;
    t->end_status = 0;
    t->phase = PH_STARTING;
    t->start_serial = serial;
    t->start_id = id;
    if (mt_srv_thread_start(&t->th, train_main, t) != 0) {
        t->phase = PH_NONE;
        return -1;
    }
    t->thread_live = true;
    return 0;
}

int mt_srv_train_launch(mt_server *s, const char *config) {
    return launch(s->train, strdup(config), 0, 0);
}

void mt_srv_train_set_starting(mt_server *s) {
    mt_srv_train_ctl *t = s->train;
    if (t->trainer) s->eng->trainer_free(t->trainer);
    t->trainer = NULL;
    t->end_msg[0] = 0;
    t->end_status = 0;
    t->stop_requested = false;
    t->phase = PH_STARTING;
}

static void handle_start(mt_conn *c, mt_frame *f) {
    mt_server *s = c->srv;
    mt_srv_train_ctl *t = s->train;
    const char *cfg = f->train_start->config_json;
    uint32_t min_nodes = f->train_start->min_nodes;
    if (s->draining) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_SHUTTING_DOWN, false, 0, "the server is shutting down");
        return;
    }
    if (t->phase == PH_STARTING || t->phase == PH_RUNNING || t->thread_live) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_TRAINING_STATE, false, 0,
                           "training is already running (stop it first)");
        return;
    }
    if (t->jobs_pending) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_TRAINING_STATE, false, 0,
                           "a checkpoint save or a promote is still running");
        return;
    }
    if (!cfg || !*cfg) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, false, 0, "config_json is empty");
        return;
    }
    if (min_nodes > 0) { /* a cluster job: the job controller starts rank 0 when the nodes are ready */
        char msg[600];
        int code = mt_cluster_train_start(s, cfg, min_nodes, msg, sizeof msg);
        if (code) {
            mt_conn_send_error(c, f->id, code, false, 0, "%s", msg);
            return;
        }
        mt_srv_train_set_starting(s);
        MT_LOGI("training: cluster job asked by conn %llu (%s), %u nodes", (unsigned long long)c->serial, c->peer,
                min_nodes);
        send_status(c, f->id);
        fan_out(s, "{\"event\":\"cluster_waiting\"}", false);
        mt_coord_tick(s->cluster);
        return;
    }
    if (!admit_async(c, f)) return;
    if (launch(t, strdup(cfg), c->serial, f->id) != 0) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INTERNAL, false, 0, "cannot start the trainer (out of memory)");
        return;
    }
    mt_conn_add_pending(c, f->id);
    MT_LOGI("training: starting (asked by conn %llu, %s)", (unsigned long long)c->serial, c->peer);
}

static void handle_save(mt_conn *c, mt_frame *f) {
    mt_server *s = c->srv;
    mt_srv_train_ctl *t = s->train;
    if (!t->trainer) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_TRAINING_STATE, false, 0,
                           t->phase == PH_STARTING ? "the trainer is still starting" : "no trainer: start training first");
        return;
    }
    if (t->save_pending) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_TRAINING_STATE, false, 0, "a save is already running");
        return;
    }
    char resolved[PATH_MAX], msg[512];
    const char *path = f->train_save->path;
    if (path && *path) {
        int code = mt_srv_path_resolve(s->data_root, path, false, resolved, sizeof resolved, msg, sizeof msg);
        if (code) {
            mt_conn_send_error(c, f->id, code, false, 0, "%s", msg);
            return;
        }
    }
    if (!admit_async(c, f)) return;
    mt_job *j = calloc(1, sizeof *j);
    if (!j || !(j->done = calloc(1, sizeof *j->done)) || (path && *path && !(j->path = strdup(resolved)))) {
        if (j) job_free(j);
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INTERNAL, false, 0, "out of memory");
        return;
    }
    j->kind = JOB_SAVE;
    j->serial = c->serial;
    j->id = f->id;
    j->trainer = t->trainer;
    t->save_pending = true;
    mt_conn_add_pending(c, f->id);
    enqueue_job(t, j);
}

static void handle_promote(mt_conn *c, mt_frame *f) {
    mt_server *s = c->srv;
    mt_srv_train_ctl *t = s->train;
    const char *path = f->model_promote->path;
    char resolved[PATH_MAX], msg[512];
    if (s->draining) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_SHUTTING_DOWN, false, 0, "the server is shutting down");
        return;
    }
    if (!path || !*path) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, false, 0, "promote needs a path");
        return;
    }
    if (t->promote_pending) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_TRAINING_STATE, false, 0, "a promote is already running");
        return;
    }
    int code = mt_srv_path_resolve(s->data_root, path, true, resolved, sizeof resolved, msg, sizeof msg);
    if (code) {
        mt_conn_send_error(c, f->id, code, false, 0, "%s", msg);
        return;
    }
    if (!admit_async(c, f)) return;
    mt_job *j = calloc(1, sizeof *j);
    if (!j || !(j->done = calloc(1, sizeof *j->done)) || !(j->path = strdup(resolved))) {
        if (j) job_free(j);
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INTERNAL, false, 0, "out of memory");
        return;
    }
    j->kind = JOB_PROMOTE;
    j->serial = c->serial;
    j->id = f->id;
    t->promote_pending = true;
    mt_conn_add_pending(c, f->id);
    MT_LOGI("promote: loading %s (asked by conn %llu)", resolved, (unsigned long long)c->serial);
    enqueue_job(t, j);
}

void mt_srv_train_handle(mt_conn *c, mt_frame *f) {
    mt_server *s = c->srv;
    mt_srv_train_ctl *t = s->train;
    switch (f->body_case) {
    case MT__V1__FRAME__BODY_TRAIN_START:
        mt_metric_inc(&s->metrics.requests[MT_REQ_TRAIN_START]);
        handle_start(c, f);
        break;
    case MT__V1__FRAME__BODY_TRAIN_STATUS:
        mt_metric_inc(&s->metrics.requests[MT_REQ_TRAIN_STATUS]);
        send_status(c, f->id);
        break;
    case MT__V1__FRAME__BODY_TRAIN_STOP:
        mt_metric_inc(&s->metrics.requests[MT_REQ_TRAIN_STOP]);
        if (t->phase != PH_STARTING && t->phase != PH_RUNNING) {
            mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_TRAINING_STATE, false, 0, "no training is running");
            break;
        }
        MT_LOGI("training: stop asked by conn %llu", (unsigned long long)c->serial);
        if (!mt_cluster_stop(s, "stopped by train stop")) {
            pthread_mutex_lock(&t->mu);
            t->stop_requested = true;
            if (t->shared_tr) s->eng->trainer_cancel(t->shared_tr);
            pthread_mutex_unlock(&t->mu);
        }
        send_status(c, f->id);
        break;
    case MT__V1__FRAME__BODY_TRAIN_SAVE:
        mt_metric_inc(&s->metrics.requests[MT_REQ_TRAIN_SAVE]);
        handle_save(c, f);
        break;
    case MT__V1__FRAME__BODY_MODEL_PROMOTE:
        mt_metric_inc(&s->metrics.requests[MT_REQ_MODEL_PROMOTE]);
        handle_promote(c, f);
        break;
    case MT__V1__FRAME__BODY_TRAIN_SUBSCRIBE:
        mt_metric_inc(&s->metrics.requests[MT_REQ_TRAIN_SUBSCRIBE]);
        c->subscribed = true;
        c->sub_id = f->id;
        send_status(c, f->id);
        break;
    default:
        break;
    }
    mt_frame_free(f);
}

/* ---- results from the trainer and admin threads ---- */

static void on_job_done(mt_server *s, mt_job *j) {
    mt_srv_train_ctl *t = s->train;
    t->jobs_pending--;
    mt_conn *c = mt_conn_find(s, j->serial);
    if (j->kind == JOB_SAVE) {
        t->save_pending = false;
        if (c && j->status == 0) {
            Mt__V1__TrainSaved r = MT__V1__TRAIN_SAVED__INIT;
            r.path = j->out_path ? j->out_path : "";
            mt_frame f = MT__V1__FRAME__INIT;
            f.id = j->id;
            f.body_case = MT__V1__FRAME__BODY_TRAIN_SAVED;
            f.train_saved = &r;
            mt_conn_send(c, &f);
        } else if (c) {
            mt_conn_send_error(c, j->id, mt_map_engine_status(j->status, false), false, j->status,
                               "checkpoint save failed: %s", j->err.msg);
        }
        if (j->status == 0) MT_LOGI("training: checkpoint saved to %s", j->out_path ? j->out_path : "?");
    } else {
        t->promote_pending = false;
        if (j->status == 0) {
            mt_srv_model_install(s, j->model);
            mt_metric_inc(&s->metrics.model_promotions);
            if (c) {
                Mt__V1__ModelPromoted r = MT__V1__MODEL_PROMOTED__INIT;
                r.path = j->model->path;
                r.model_generation = j->model->generation;
                r.model_info_json = j->model->info ? j->model->info : "";
                mt_frame f = MT__V1__FRAME__INIT;
                f.id = j->id;
                f.body_case = MT__V1__FRAME__BODY_MODEL_PROMOTED;
                f.model_promoted = &r;
                mt_conn_send(c, &f);
            }
        } else {
            MT_LOGW("promote of %s failed: %s", j->path, j->err.msg);
            if (c)
                mt_conn_send_error(c, j->id, mt_map_engine_status(j->status, false), false, j->status,
                                   "cannot load %s: %s", j->path, j->err.msg);
        }
    }
    if (c) mt_conn_request_done(c, j->id);
    job_free(j);
}

void mt_srv_train_on_post(mt_server *s, mt_post_msg *m) {
    mt_srv_train_ctl *t = s->train;
    switch (m->kind) {
    case MT_POST_TRAIN_CREATED: {
        mt_conn *c = mt_conn_find(s, t->start_serial);
        if (m->status != 0) {
            if (t->thread_live) pthread_join(t->th, NULL);
            t->thread_live = false;
            t->phase = PH_ENDED;
            t->end_status = m->status;
            snprintf(t->end_msg, sizeof t->end_msg, "%s", m->text ? m->text : "");
            MT_LOGW("training: cannot start: %s: %s", status_name(s, m->status), t->end_msg);
            mt_cluster_rank0_create_failed(s, t->end_msg);
            if (c)
                mt_conn_send_error(c, t->start_id, mt_map_engine_status(m->status, true), false, m->status,
                                   "cannot start training: %s", t->end_msg);
            fan_out_end(s, "failed", m->status, t->end_msg);
        } else {
            t->trainer = m->ptr;
            t->phase = PH_RUNNING;
            MT_LOGI("training: running");
            if (c) send_status(c, t->start_id);
            fan_out(s, "{\"event\":\"start\"}", false);
        }
        if (c) mt_conn_request_done(c, t->start_id);
        break;
    }
    case MT_POST_TRAIN_EVENT: {
        mt_metric_inc(&s->metrics.train_events);
        char *dec = m->text ? mt_cluster_decorate_event(s, m->text) : NULL; /* every node's tokens/s */
        fan_out(s, dec ? dec : m->text ? m->text : "{}", false);
        free(dec);
        break;
    }
    case MT_POST_TRAIN_ENDED: {
        if (t->thread_live) pthread_join(t->th, NULL);
        t->thread_live = false;
        pthread_mutex_lock(&t->mu);
        t->shared_tr = NULL;
        pthread_mutex_unlock(&t->mu);
        t->phase = PH_ENDED;
        t->end_status = m->status;
        snprintf(t->end_msg, sizeof t->end_msg, "%s", m->text ? m->text : "");
        if (mt_cluster_rank0_ended(s, m->status, t->end_msg)) { /* the cluster job restarts */
            if (t->phase == PH_ENDED) t->phase = PH_STARTING;
            break;
        }
        const char *state = m->status == MT_OK ? "done" : m->status == MT_ERR_CANCELLED ? "cancelled" : "failed";
        if (m->status == MT_OK || m->status == MT_ERR_CANCELLED)
            MT_LOGI("training: %s", state);
        else
            MT_LOGW("training: failed: %s: %s", status_name(s, m->status), t->end_msg);
        fan_out_end(s, state, m->status, t->end_msg);
        break;
    }
    case MT_POST_JOB_DONE:
        on_job_done(s, m->ptr);
        break;
    default:
        break;
    }
    if (s->draining) mt_drain_check(s);
}

void mt_srv_train_begin_drain(mt_server *s) {
    mt_srv_train_ctl *t = s->train;
    mt_cluster_begin_drain(s);
    if (!t || (t->phase != PH_STARTING && t->phase != PH_RUNNING)) return;
    MT_LOGI("training: asking the trainer to stop (it saves a checkpoint)");
    pthread_mutex_lock(&t->mu);
    t->stop_requested = true;
    if (t->shared_tr) s->eng->trainer_cancel(t->shared_tr);
    pthread_mutex_unlock(&t->mu);
}

bool mt_srv_train_busy(mt_server *s) {
    mt_srv_train_ctl *t = s->train;
    return t && (t->thread_live || t->jobs_pending > 0);
}

void mt_srv_train_shutdown(mt_server *s) {
    mt_srv_train_ctl *t = s->train;
    if (!t) return;
    if (t->thread_live) {
        mt_srv_train_begin_drain(s);
        pthread_join(t->th, NULL);
        t->thread_live = false;
    }
    for (int k = 0; k < 2; k++) {
        mt_jobq *q = &t->jq[k];
        if (!q->live) continue;
        pthread_mutex_lock(&q->mu);
        q->stop = true;
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->th, NULL);
        q->live = false;
    }
}

void mt_srv_train_free(mt_server *s) {
    mt_srv_train_ctl *t = s->train;
    if (!t) return;
    if (t->trainer) s->eng->trainer_free(t->trainer);
    free(t->config);
    free(t->created_msg);
    free(t->ended_msg);
    pthread_mutex_destroy(&t->mu);
    for (int k = 0; k < 2; k++) {
        pthread_mutex_destroy(&t->jq[k].mu);
        pthread_cond_destroy(&t->jq[k].cv);
    }
    free(t);
    s->train = NULL;
}

/* ---- for cluster mode's job controller ---- */

void mt_srv_train_event(mt_server *s, const char *event_json) { fan_out(s, event_json, false); }

void mt_srv_train_finish(mt_server *s, int status, const char *msg) {
    mt_srv_train_ctl *t = s->train;
    if (t->thread_live) return; /* the trainer's own end will be final */
    t->phase = PH_ENDED;
    t->end_status = status;
    snprintf(t->end_msg, sizeof t->end_msg, "%s", msg ? msg : "");
    fan_out_end(s, status == MT_OK ? "done" : status == MT_ERR_CANCELLED ? "cancelled" : "failed", status, t->end_msg);
    if (s->draining) mt_drain_check(s);
}

char *mt_srv_train_status_json(mt_server *s) {
    mt_srv_train_ctl *t = s->train;
    return t && t->trainer ? s->eng->trainer_status_json(t->trainer) : NULL;
}
