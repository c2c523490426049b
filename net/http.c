/*
 * http.c — the health and metrics port (--http): GET /healthz (JSON; 200 while serving or waiting for
 * a model, 503 while draining) and GET /metrics (Prometheus text format). It never needs a token (it
 * exposes counters, no data) and is not TLS.
 *
 * A small HTTP/1.x responder on the loop thread, one request per connection (Connection: close),
 * with every limit explicit: --http-max-connections open at once (one more is closed at accept), a
 * request head of at most 8 KiB, and a deadline, --http-timeout-s from accept, for the whole exchange
 * — a client sending one byte a second is closed when it passes, however busy it keeps the socket.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "log.h"

#define HTTP_MAX_HEAD 8192

typedef struct mt_http_conn {
    struct mt_http_conn *prev, *next;
    mt_server *s;
    struct bufferevent *bev;
    struct event *deadline;
    bool replied;              /* the answer is written: free once it is flushed */
} mt_http_conn;

void mt_metrics_gauges_fill(mt_server *s, mt_metrics_gauges *g) {
    memset(g, 0, sizeof *g);
    g->queue_depth = s->batcher ? mt_srv_batcher_depth(s->batcher) : 0;
    mt_srv_model *m = mt_srv_model_get(s);
    g->model_loaded = m != NULL;
    g->model_generation = m ? m->generation : 0;
    mt_srv_model_put(s, m);
    g->draining = s->draining;
    mt_srv_train_gauges(s, &g->training, &g->train_step, &g->train_loss, &g->train_tokens_per_s);
    g->workers = s->n_workers;
    g->uptime_s = (double)(mt_now_us() - s->start_us) / 1e6;
}

static void http_conn_free(mt_http_conn *h) {
    mt_server *s = h->s;
    if (h->prev) h->prev->next = h->next;
    else s->http_conns = h->next;
    if (h->next) h->next->prev = h->prev;
    s->n_http_conns--;
    if (h->deadline) event_free(h->deadline);
    if (h->bev) bufferevent_free(h->bev);
    free(h);
}

/* Writes the whole answer and stops reading; the connection is freed once it is flushed. */
static void reply(mt_http_conn *h, int code, const char *reason, const char *type, const char *body, bool head) {
    struct evbuffer *out = bufferevent_get_output(h->bev);
    size_t n = body ? strlen(body) : 0;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
                        "Connection: close\r\n\r\n",
                        code, reason, type, n);
    if (!head && n) evbuffer_add(out, body, n);
    h->replied = true;
    bufferevent_disable(h->bev, EV_READ);
    if (evbuffer_get_length(out) == 0) http_conn_free(h);
}

static void healthz(mt_http_conn *h, bool head) {
    mt_server *s = h->s;
    mt_metrics_gauges g;
    mt_metrics_gauges_fill(s, &g);
    const char *state = s->draining ? "draining" : g.model_loaded ? "ok" : "no_model";
    char body[512];
    snprintf(body, sizeof body,
             "{\"status\":\"%s\",\"model_loaded\":%s,\"model_generation\":%llu,\"training\":%s,"
             "\"connections\":%u,\"queue_depth\":%llu,\"uptime_s\":%.0f}\n",
             state, g.model_loaded ? "true" : "false", (unsigned long long)g.model_generation,
             g.training ? "true" : "false", s->n_conns, (unsigned long long)g.queue_depth, g.uptime_s);
    reply(h, s->draining ? 503 : 200, s->draining ? "Service Unavailable" : "OK", "application/json", body, head);
}

static void metrics(mt_http_conn *h, bool head) {
    mt_metrics_gauges g;
    mt_metrics_gauges_fill(h->s, &g);
    char *text = mt_metrics_render(&h->s->metrics, &g);
    if (!text) return reply(h, 500, "Internal Server Error", "text/plain", "out of memory\n", head);
    reply(h, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, head);
    free(text);
}

/* Answers the request whose head (NUL-terminated, the request line first) is complete. */
static void answer(mt_http_conn *h, char *head_text) {
    char method[16], target[1024], version[16];
    if (sscanf(head_text, "%15s %1023s %15s", method, target, version) != 3 || strncmp(version, "HTTP/1.", 7) != 0)
        return reply(h, 400, "Bad Request", "text/plain", "bad request line\n", false);
    bool is_head = !strcmp(method, "HEAD");
    if (strcmp(method, "GET") != 0 && !is_head)
        return reply(h, 405, "Method Not Allowed", "text/plain", "only GET and HEAD\n", false);
    target[strcspn(target, "?#")] = 0;
    if (!strcmp(target, "/healthz")) return healthz(h, is_head);
    if (!strcmp(target, "/metrics")) return metrics(h, is_head);
    reply(h, 404, "Not Found", "text/plain", "not found: try /healthz or /metrics\n", is_head);
}

static void read_cb(struct bufferevent *bev, void *arg) {
    mt_http_conn *h = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (h->replied) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) end = evbuffer_search(in, "\n\n", 2, NULL);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > HTTP_MAX_HEAD)
            reply(h, 431, "Request Header Fields Too Large", "text/plain", "request head over 8 KiB\n", false);
        return;
    }
    if (end.pos > HTTP_MAX_HEAD)
        return reply(h, 431, "Request Header Fields Too Large", "text/plain", "request head over 8 KiB\n", false);
    char head_text[HTTP_MAX_HEAD + 1];
    size_t n = (size_t)end.pos;
    evbuffer_remove(in, head_text, n);
    head_text[n] = 0;
    answer(h, head_text);
}

static void write_cb(struct bufferevent *bev, void *arg) {
    mt_http_conn *h = arg;
    if (h->replied && evbuffer_get_length(bufferevent_get_output(bev)) == 0) http_conn_free(h);
}

static void event_cb(struct bufferevent *bev, short what, void *arg) {
    mt_http_conn *h = arg;
    /* A client that half-closes after its request still gets the answer queued for it. */
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && h->replied &&
        evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) http_conn_free(h);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    mt_http_conn *h = arg;
    mt_metrics_limit_hit(&h->s->metrics, MT_LIM_HTTP_TIMEOUT);
    MT_LOGD("http: a connection passed --http-timeout-s; closed");
    http_conn_free(h);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg) {
    (void)l;
    (void)sa;
    (void)salen;
    mt_server *s = arg;
    const mt_srv_limits *L = &s->opt->limits;
    if (s->n_http_conns >= L->http_max_connections) {
        mt_metrics_limit_hit(&s->metrics, MT_LIM_HTTP_CONNECTIONS);
        evutil_closesocket(fd);
        return;
    }
    mt_http_conn *h = calloc(1, sizeof *h);
    if (h) h->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (h && h->bev) h->deadline = evtimer_new(s->base, deadline_cb, h);
    if (!h || !h->bev || !h->deadline) {
        if (h && h->bev) bufferevent_free(h->bev);
        else evutil_closesocket(fd);
        free(h);
        mt_metrics_limit_hit(&s->metrics, MT_LIM_OOM_DROP);
        return;
    }
    h->s = s;
    h->next = s->http_conns;
    if (s->http_conns) s->http_conns->prev = h;
    s->http_conns = h;
    s->n_http_conns++;
    struct timeval tv = {(time_t)L->http_timeout_s, 0};
    evtimer_add(h->deadline, &tv);
    bufferevent_setwatermark(h->bev, EV_READ, 0, HTTP_MAX_HEAD + 1);
    bufferevent_setcb(h->bev, read_cb, write_cb, event_cb, h);
    bufferevent_enable(h->bev, EV_READ | EV_WRITE);
}

int mt_http_start(mt_server *s, char *err, size_t errlen) {
    const char *hp = s->opt->http;
    if (!hp || !*hp || !strcmp(hp, "off")) return 0;
    struct sockaddr_storage ss;
    int sslen;
    if (mt_resolve_hostport(hp, &ss, &sslen, err, errlen) != 0) return -1;
    s->http_listener = evconnlistener_new_bind(s->base, accept_cb, s,
                                               LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
                                               (struct sockaddr *)&ss, sslen);
    if (!s->http_listener) {
        snprintf(err, errlen, "cannot listen on %s (--http): %s", hp, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    getsockname(evconnlistener_get_fd(s->http_listener), (struct sockaddr *)&bound, &bl);
    mt_addr_format((struct sockaddr *)&bound, s->http_addr, sizeof s->http_addr);
    return 0;
}

void mt_http_stop(mt_server *s) {
    if (s->http_listener) evconnlistener_free(s->http_listener);
    s->http_listener = NULL;
    while (s->http_conns) http_conn_free(s->http_conns);
}
