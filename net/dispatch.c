/*
 * dispatch.c — one decoded frame to its handler, on the loop thread.
 *
 * Before Hello only Hello is accepted (anything else: ERR_NOT_AUTHENTICATED, fatal). Hello checks
 * the protocol version and the token (auth.c) and answers HelloOk with the connection's role and
 * limits. After it: translate (translate.c), health, stats, bye, training and model control
 * (train.c, admin role only) and the cluster bodies (cluster_coord.c; a connection with the cluster
 * token's role may send nothing else).
 */
#include "server.h"

#include <stdio.h>
#include <string.h>

#include "cluster.h"
#include "log.h"

static void send_hello_ok(mt_conn *c, uint64_t id) {
    mt_server *s = c->srv;
    const mt_srv_limits *L = &s->opt->limits;
    char version[160];
    snprintf(version, sizeof version, "mt-server %s (engine %s: %s)", MT_NET_VERSION,
             s->eng->name, s->eng->version ? s->eng->version() : "?");
    char *caps[5];
    size_t ncaps = 0;
    caps[ncaps++] = "translate";
    caps[ncaps++] = "train";
    if (s->ssl) caps[ncaps++] = "tls";
    if (mt_cluster_accepts_joins(s)) caps[ncaps++] = "cluster";
    Mt__V1__Limits lim = MT__V1__LIMITS__INIT;
    lim.max_frame_bytes = L->max_frame_bytes;
    lim.max_inflight = L->max_inflight;
    lim.max_sentences = L->max_sentences;
    lim.max_chars = L->max_chars;
    lim.idle_timeout_s = L->idle_timeout_s;
    Mt__V1__HelloOk ok = MT__V1__HELLO_OK__INIT;
    ok.protocol_version = MT_PROTOCOL_VERSION;
    ok.server_version = version;
    ok.n_capabilities = ncaps;
    ok.capabilities = caps;
    ok.role = c->role;
    ok.limits = &lim;
    mt_srv_model *m = mt_srv_model_get(s);
    ok.model_loaded = m != NULL;
    mt_srv_model_put(s, m);
    mt_frame f = MT__V1__FRAME__INIT;
    f.id = id;
    f.body_case = MT__V1__FRAME__BODY_HELLO_OK;
    f.hello_ok = &ok;
    mt_conn_send(c, &f);
}

static void handle_hello(mt_conn *c, mt_frame *f) {
    mt_server *s = c->srv;
    Mt__V1__Hello *h = f->hello;
    mt_metric_inc(&s->metrics.requests[MT_REQ_HELLO]);
    if (h->protocol_version != MT_PROTOCOL_VERSION) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_VERSION_UNSUPPORTED, true, 0,
                           "protocol version %u; this server speaks %d", h->protocol_version, MT_PROTOCOL_VERSION);
        return;
    }
    Mt__V1__Role role = mt_auth_check(&s->auth, h->token);
    if (role == MT__V1__ROLE__ROLE_NONE) {
        mt_metric_inc(&s->metrics.auth_failures);
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_AUTH_FAILED, true, 0,
                           *h->token ? "the token is not valid" : "this server needs a token");
        return;
    }
    c->role = role;
    mt_conn_hello_done(c);
    MT_LOGD("conn %llu (%s): hello from '%s', role %s", (unsigned long long)c->serial, c->peer, h->client,
            role == MT__V1__ROLE__ROLE_ADMIN ? "admin" : role == MT__V1__ROLE__ROLE_CLUSTER ? "cluster" : "user");
    send_hello_ok(c, f->id);
}

Mt__V1__ServingState mt_serving_state(mt_server *s) {
    if (s->draining) return MT__V1__SERVING_STATE__SERVING_DRAINING;
    mt_srv_model *m = mt_srv_model_get(s);
    bool loaded = m != NULL;
    mt_srv_model_put(s, m);
    return loaded ? MT__V1__SERVING_STATE__SERVING_OK : MT__V1__SERVING_STATE__SERVING_NO_MODEL;
}

static void handle_health(mt_conn *c, mt_frame *f) {
    mt_server *s = c->srv;
    Mt__V1__HealthResponse r = MT__V1__HEALTH_RESPONSE__INIT;
    r.state = mt_serving_state(s);
    mt_srv_model *m = mt_srv_model_get(s);
    r.model_path = m && m->path ? m->path : "";
    r.model_generation = m ? m->generation : 0;
    r.uptime_s = (mt_now_us() - s->start_us) / 1000000u;
    int training = 0;
    mt_srv_train_gauges(s, &training, NULL, NULL, NULL);
    r.training = training;
    r.workers = s->n_workers;
    mt_frame out = MT__V1__FRAME__INIT;
    out.id = f->id;
    out.body_case = MT__V1__FRAME__BODY_HEALTH_OK;
    out.health_ok = &r;
    mt_conn_send(c, &out);
    mt_srv_model_put(s, m);
}

static void handle_stats(mt_conn *c, mt_frame *f) {
    mt_server *s = c->srv;
    const mt_metrics *M = &s->metrics;
    Mt__V1__StatsResponse r = MT__V1__STATS_RESPONSE__INIT;
    r.connections = s->n_conns;
    r.connections_total = mt_metric_get(&M->connections_total);
    for (int i = 0; i < MT_REQ__COUNT; i++) r.requests_total += mt_metric_get(&M->requests[i]);
    r.sentences_total = mt_metric_get(&M->sentences_total);
    r.batches_total = mt_metric_get(&M->batches_total);
    r.errors_total = mt_metrics_errors_total(M);
    r.limit_hits_total = mt_metrics_limit_hits_total(M);
    r.queue_depth = (uint32_t)mt_srv_batcher_depth(s->batcher);
    r.inflight = (uint32_t)atomic_load(&M->inflight);
    r.mean_batch_sentences = r.batches_total ? (double)mt_metric_get(&M->batch_sentences.sum_micro) / 1e6 /
                                                   (double)r.batches_total
                                             : 0;
    r.latency_p50_ms = mt_histo_quantile(&M->latency, 0.5) * 1e3;
    r.latency_p99_ms = mt_histo_quantile(&M->latency, 0.99) * 1e3;
    mt_srv_train_gauges(s, NULL, &r.train_step, &r.train_loss, NULL);
    mt_srv_model *m = mt_srv_model_get(s);
    r.model_generation = m ? m->generation : 0;
    mt_srv_model_put(s, m);
    mt_frame out = MT__V1__FRAME__INIT;
    out.id = f->id;
    out.body_case = MT__V1__FRAME__BODY_STATS_OK;
    out.stats_ok = &r;
    mt_conn_send(c, &out);
}

void mt_dispatch(mt_conn *c, mt_frame *f) {
    mt_server *s = c->srv;
    c->last_active_us = mt_now_us();
    const char *why = NULL;
    int code = mt_frame_check_envelope(f, &why);
    if (!c->hello_done) {
        if (f->body_case != MT__V1__FRAME__BODY_HELLO)
            mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_NOT_AUTHENTICATED, true, 0,
                               "the first frame must be Hello");
        else if (code)
            mt_conn_send_error(c, 0, code, true, 0, "%s", why);
        else
            handle_hello(c, f);
        mt_frame_free(f);
        return;
    }
    if (code) {
        mt_conn_send_error(c, f->id, code, true, 0, "%s", why);
        mt_frame_free(f);
        return;
    }
    if (c->role == MT__V1__ROLE__ROLE_CLUSTER && f->body_case != MT__V1__FRAME__BODY_BYE &&
        f->body_case != MT__V1__FRAME__BODY_CLUSTER_JOIN && f->body_case != MT__V1__FRAME__BODY_CLUSTER_HEARTBEAT &&
        f->body_case != MT__V1__FRAME__BODY_CLUSTER_FETCH && f->body_case != MT__V1__FRAME__BODY_HELLO) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_PERMISSION_DENIED, false, 0,
                           "the cluster token grants cluster frames only");
        mt_frame_free(f);
        return;
    }
    switch (f->body_case) {
    case MT__V1__FRAME__BODY_HELLO:
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_BAD_FRAME, true, 0, "Hello twice");
        break;
    case MT__V1__FRAME__BODY_BYE:
        mt_metric_inc(&s->metrics.requests[MT_REQ_BYE]);
        mt_conn_bye(c);
        break;
    case MT__V1__FRAME__BODY_HEALTH:
        mt_metric_inc(&s->metrics.requests[MT_REQ_HEALTH]);
        handle_health(c, f);
        break;
    case MT__V1__FRAME__BODY_STATS:
        mt_metric_inc(&s->metrics.requests[MT_REQ_STATS]);
        handle_stats(c, f);
        break;
    case MT__V1__FRAME__BODY_TRANSLATE:
        mt_metric_inc(&s->metrics.requests[MT_REQ_TRANSLATE]);
        mt_translate_submit(c, f);
        return;
    case MT__V1__FRAME__BODY_TRAIN_START:
    case MT__V1__FRAME__BODY_TRAIN_STATUS:
    case MT__V1__FRAME__BODY_TRAIN_STOP:
    case MT__V1__FRAME__BODY_TRAIN_SAVE:
    case MT__V1__FRAME__BODY_MODEL_PROMOTE:
    case MT__V1__FRAME__BODY_TRAIN_SUBSCRIBE:
        if (c->role != MT__V1__ROLE__ROLE_ADMIN) {
            mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_PERMISSION_DENIED, false, 0,
                               "training and model control need the admin token");
            break;
        }
        mt_srv_train_handle(c, f);
        return;
    case MT__V1__FRAME__BODY_CLUSTER_JOIN:
    case MT__V1__FRAME__BODY_CLUSTER_HEARTBEAT:
    case MT__V1__FRAME__BODY_CLUSTER_FETCH:
        mt_cluster_handle(c, f);
        return;
    default:
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_BAD_FRAME, true, 0, "unexpected body");
        break;
    }
    mt_frame_free(f);
}
