/*
 * http.c — the health and metrics port (--http): GET /healthz (JSON; 200 while serving or waiting for
 * a model, 503 while draining) and GET /metrics (Prometheus text format). It runs on the loop thread
 * through evhttp, with small header/body limits and a timeout of its own; it never needs a token
 * (it exposes counters, no data) and is not TLS.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "log.h"

void mt_metrics_gauges_fill(mt_server *s, mt_metrics_gauges *g) {
    memset(g, 0, sizeof *g);
    g->queue_depth = s->batcher ? mt_srv_batcher_depth(s->batcher) : 0;
    mt_srv_model *m = mt_srv_model_get(s);
    g->model_loaded = m != NULL;
    g->model_generation = m ? m->generation : 0;
    mt_srv_model_put(s, m);
    g->draining = s->draining;
    mt_train_gauges(s, &g->training, &g->train_step, &g->train_loss, &g->train_tokens_per_s);
    g->workers = s->n_workers;
    g->uptime_s = (double)(mt_now_us() - s->start_us) / 1e6;
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type, const char *body) {
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    evbuffer_add(b, body, strlen(body));
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

static void healthz_cb(struct evhttp_request *req, void *arg) {
    mt_server *s = arg;
    mt_metrics_gauges g;
    mt_metrics_gauges_fill(s, &g);
    const char *state = s->draining ? "draining" : g.model_loaded ? "ok" : "no_model";
    char body[512];
    snprintf(body, sizeof body,
             "{\"status\":\"%s\",\"model_loaded\":%s,\"model_generation\":%llu,\"training\":%s,"
             "\"connections\":%u,\"queue_depth\":%llu,\"uptime_s\":%.0f}\n",
             state, g.model_loaded ? "true" : "false", (unsigned long long)g.model_generation,
             g.training ? "true" : "false", s->n_conns, (unsigned long long)g.queue_depth, g.uptime_s);
    reply(req, s->draining ? 503 : 200, s->draining ? "Service Unavailable" : "OK", "application/json", body);
}

static void metrics_cb(struct evhttp_request *req, void *arg) {
    mt_server *s = arg;
    mt_metrics_gauges g;
    mt_metrics_gauges_fill(s, &g);
    char *text = mt_metrics_render(&s->metrics, &g);
    if (!text) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text);
    free(text);
}

static void other_cb(struct evhttp_request *req, void *arg) {
    (void)arg;
    reply(req, 404, "Not Found", "text/plain", "not found: try /healthz or /metrics\n");
}

int mt_http_start(mt_server *s, char *err, size_t errlen) {
    const char *hp = s->opt->http;
    if (!hp || !*hp || !strcmp(hp, "off")) return 0;
    struct sockaddr_storage ss;
    int sslen;
    if (mt_resolve_hostport(hp, &ss, &sslen, err, errlen) != 0) return -1;
    s->http = evhttp_new(s->base);
    if (!s->http) {
        snprintf(err, errlen, "cannot make the HTTP server");
        return -1;
    }
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_max_headers_size(s->http, 8192);
    evhttp_set_max_body_size(s->http, 1024);
    evhttp_set_timeout(s->http, 10);
    evhttp_set_cb(s->http, "/healthz", healthz_cb, s);
    evhttp_set_cb(s->http, "/metrics", metrics_cb, s);
    evhttp_set_gencb(s->http, other_cb, s);
    struct evconnlistener *l = evconnlistener_new_bind(
        s->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
        (struct sockaddr *)&ss, sslen);
    if (!l) {
        snprintf(err, errlen, "cannot listen on %s (--http): %s", hp, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &bl);
    mt_addr_format((struct sockaddr *)&bound, s->http_addr, sizeof s->http_addr);
    if (!evhttp_bind_listener(s->http, l)) {
        evconnlistener_free(l);
        snprintf(err, errlen, "cannot serve HTTP on %s", hp);
        return -1;
    }
    return 0;
}

void mt_http_stop(mt_server *s) {
    if (s->http) evhttp_free(s->http);
    s->http = NULL;
}
