/*
 * conn.c — one state machine per client connection (like memcached's conn / Redis's client).
 *
 *   accepted --Hello ok--> ready --Bye/EOF, nothing in flight--> closing --output flushed--> freed
 *       \--timeout / violation / refused----------------------> closing
 *
 * Input: the framer (frame.c) says how many contiguous bytes it needs; the bufferevent's read high
 * watermark is raised only to a length already checked against the limit, so nothing larger is ever
 * buffered. At most requests-per-event frames are handled per read event, then the connection yields
 * (its `resume` event is activated behind the others). Output: above output-high-water the
 * connection stops reading until its output drains (back-pressure). Closing never frees
 * synchronously: it stops reading and lets `resume` / the write callback free once output is flushed
 * (or the linger timer expires), so no caller ever touches a freed connection.
 */
#include "server.h"
#include "cluster.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "log.h"

#define READ_HWM_BASE (64u * 1024u)
/* Before Hello a peer may make the server buffer no more than one Hello-sized frame. */
#define BASE_HWM(c) ((c)->hello_done ? (size_t)READ_HWM_BASE : (size_t)(c)->srv->opt->limits.max_hello_bytes + 4)
#define LINGER_S 5
#define MAX_REJECTING 64

static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);
static void timer_cb(evutil_socket_t fd, short what, void *arg);
static void resume_cb(evutil_socket_t fd, short what, void *arg);

static void arm_timer(mt_conn *c, uint64_t us) {
    struct timeval tv = {(time_t)(us / 1000000u), (suseconds_t)(us % 1000000u)};
    evtimer_add(c->timer, &tv);
}

void mt_conn_accept(mt_server *s, int fd, const struct sockaddr *sa, int salen) {
    (void)salen;
    const mt_srv_limits *L = &s->opt->limits;
    bool reject = s->n_conns >= L->max_connections;
    if (reject) {
        mt_metrics_limit_hit(&s->metrics, MT_LIM_CONNECTIONS);
        if (s->n_rejecting >= MAX_REJECTING) {
            evutil_closesocket(fd);
            return;
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    mt_conn *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->srv = s;
    c->serial = ++s->conn_seq;
    c->rejecting = reject;
    mt_addr_format(sa, c->peer, sizeof c->peer);
    int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
    if (s->ssl) {
        SSL *ssl = SSL_new(s->ssl);
        if (ssl) c->bev = bufferevent_openssl_socket_new(s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, opts);
        if (!c->bev && ssl) SSL_free(ssl);
    } else {
        c->bev = bufferevent_socket_new(s->base, fd, opts);
    }
    c->timer = evtimer_new(s->base, timer_cb, c);
    c->resume = event_new(s->base, -1, 0, resume_cb, c);
    c->pending = calloc(L->max_inflight ? L->max_inflight : 1, sizeof *c->pending);
    if (!c->bev || !c->timer || !c->resume || !c->pending) {
        MT_LOGE("out of memory accepting %s", c->peer);
        if (c->bev) bufferevent_free(c->bev);
        else evutil_closesocket(fd);
        if (c->timer) event_free(c->timer);
        if (c->resume) event_free(c->resume);
        free(c->pending);
        free(c);
        return;
    }
    c->accepted_us = c->last_active_us = mt_now_us();
    c->role = MT__V1__ROLE__ROLE_NONE;
    mt_framer_init(&c->fr, L->max_hello_bytes, 0);
    c->read_hwm = BASE_HWM(c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, c->read_hwm);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);

    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    if (reject) {
        s->n_rejecting++;
        MT_LOGW("refusing %s: %u connections open (max-connections)", c->peer, s->n_conns);
        mt_conn_send_error(c, 0, MT__V1__ERROR_CODE__ERR_TOO_MANY_CONNECTIONS, true, 0,
                           "the server has %u connections open, its limit", L->max_connections);
        return;
    }
    s->n_conns++;
    mt_metric_inc(&s->metrics.connections_total);
    atomic_fetch_add(&s->metrics.connections, 1);
    MT_LOGD("conn %llu: accepted %s%s", (unsigned long long)c->serial, c->peer, s->ssl ? " (TLS)" : "");
    arm_timer(c, (uint64_t)L->hello_timeout_s * 1000000u);
}

static void conn_free(mt_conn *c) {
    mt_server *s = c->srv;
    MT_LOGD("conn %llu: closed %s", (unsigned long long)c->serial, c->peer);
    mt_translate_orphan(c);
    if (c->role == MT__V1__ROLE__ROLE_CLUSTER) mt_cluster_conn_closed(c);
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->rejecting) {
        s->n_rejecting--;
    } else {
        s->n_conns--;
        atomic_fetch_sub(&s->metrics.connections, 1);
    }
    if (s->ssl) { /* close_notify, so TLS peers see a clean end rather than a truncation */
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        if (ssl && SSL_is_init_finished(ssl)) SSL_shutdown(ssl);
        ERR_clear_error();
    }
    bufferevent_free(c->bev);
    event_free(c->timer);
    event_free(c->resume);
    free(c->pending);
    free(c);
    if (s->draining) mt_drain_check(s);
}

void mt_conn_free_all(mt_server *s) {
    while (s->conns) conn_free(s->conns);
}

mt_conn *mt_conn_find(mt_server *s, uint64_t serial) {
    for (mt_conn *c = s->conns; c; c = c->next)
        if (c->serial == serial) return c;
    return NULL;
}

uint64_t mt_conn_output_len(const mt_conn *c) {
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

void mt_conn_close_after_flush(mt_conn *c) {
    if (c->closing) return;
    c->closing = true;
    bufferevent_disable(c->bev, EV_READ);
    evtimer_del(c->timer);
    arm_timer(c, LINGER_S * 1000000u);
    event_active(c->resume, EV_READ, 0);
}

void mt_conn_send(mt_conn *c, const mt_frame *f) {
    size_t n;
    uint8_t *buf = mt_frame_encode(f, &n);
    if (!buf) {
        MT_LOGE("conn %llu: cannot encode an answer (out of memory)", (unsigned long long)c->serial);
        mt_conn_close_after_flush(c);
        return;
    }
    bufferevent_write(c->bev, buf, n);
    free(buf);
    const mt_srv_limits *L = &c->srv->opt->limits;
    if (!c->paused_out && mt_conn_output_len(c) > L->output_high_water) {
        c->paused_out = true;
        bufferevent_disable(c->bev, EV_READ);
        mt_metrics_limit_hit(&c->srv->metrics, MT_LIM_OUTPUT);
        MT_LOGD("conn %llu: output over %llu bytes, input paused", (unsigned long long)c->serial,
                (unsigned long long)L->output_high_water);
    }
}

void mt_conn_send_error(mt_conn *c, uint64_t id, int code, bool fatal, int engine_status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Mt__V1__Error e = MT__V1__ERROR__INIT;
    e.code = (Mt__V1__ErrorCode)code;
    e.message = msg;
    e.fatal = fatal;
    e.engine_status = engine_status;
    mt_frame f = MT__V1__FRAME__INIT;
    f.id = id;
    f.body_case = MT__V1__FRAME__BODY_ERROR;
    f.error = &e;
    mt_metrics_error(&c->srv->metrics, code);
    if (code >= 1 && code <= 6) mt_metric_inc(&c->srv->metrics.protocol_violations);
    mt_nlog(fatal ? MT_NLOG_INFO : MT_NLOG_DEBUG, "conn %llu (%s): %s%s: %s", (unsigned long long)c->serial,
            c->peer, fatal ? "closing on " : "", mt_error_code_name(code), msg);
    mt_conn_send(c, &f);
    if (fatal) mt_conn_close_after_flush(c);
}

bool mt_conn_has_pending(const mt_conn *c, uint64_t id) {
    for (uint32_t i = 0; i < c->n_pending; i++)
        if (c->pending[i] == id) return true;
    return false;
}

void mt_conn_add_pending(mt_conn *c, uint64_t id) {
    if (c->n_pending < c->srv->opt->limits.max_inflight) c->pending[c->n_pending++] = id;
}

/* After Bye, or once the peer half-closed and every complete frame was handled: close when nothing
 * is in flight any more. */
static void check_finished(mt_conn *c) {
    if (c->closing || c->n_pending > 0 || c->paused_out) return;
    if (c->bye || c->read_eof) mt_conn_close_after_flush(c);
}

void mt_conn_request_done(mt_conn *c, uint64_t id) {
    for (uint32_t i = 0; i < c->n_pending; i++)
        if (c->pending[i] == id) {
            c->pending[i] = c->pending[--c->n_pending];
            break;
        }
    if (c->read_eof && !c->closing && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        event_active(c->resume, EV_READ, 0);
    else
        check_finished(c);
}

/* Handles what the input buffer holds, up to requests-per-event frames. */
static void conn_process(mt_conn *c) {
    mt_server *s = c->srv;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    uint32_t budget = s->opt->limits.requests_per_event;
    while (!c->closing && !c->paused_out && !c->bye) {
        size_t avail = evbuffer_get_length(in);
        mt_fr_event ev;
        if (mt_framer_skipping(&c->fr)) {
            size_t used = mt_framer_feed(&c->fr, NULL, avail, &ev);
            evbuffer_drain(in, used);
        } else {
            size_t need = mt_framer_need(&c->fr);
            if (avail < need) {
                /* A body we accepted may be larger than the base watermark: let it in, no more. */
                size_t want = need > BASE_HWM(c) ? need : BASE_HWM(c);
                if (want != c->read_hwm) {
                    c->read_hwm = want;
                    bufferevent_setwatermark(c->bev, EV_READ, 0, want);
                }
                break;
            }
            const uint8_t *p = need ? evbuffer_pullup(in, (ev_ssize_t)need) : NULL;
            if (need && !p) {
                MT_LOGE("conn %llu: out of memory reading a frame", (unsigned long long)c->serial);
                mt_conn_close_after_flush(c);
                return;
            }
            size_t used = mt_framer_feed(&c->fr, p, need, &ev);
            evbuffer_drain(in, used);
        }
        switch (ev.kind) {
        case MT_FR_NEED:
            goto out;
        case MT_FR_CONTINUE:
            continue;
        case MT_FR_OVERSIZE:
            mt_metrics_limit_hit(&s->metrics, MT_LIM_FRAME_SIZE);
            mt_conn_send_error(c, ev.id, MT__V1__ERROR_CODE__ERR_FRAME_TOO_LARGE, false, 0,
                               "frame of %llu bytes over the limit of %llu; skipped",
                               (unsigned long long)ev.length, (unsigned long long)c->fr.max_frame);
            continue;
        case MT_FR_VIOLATION:
            if (ev.code == MT__V1__ERROR_CODE__ERR_FRAME_TOO_LARGE)
                mt_metrics_limit_hit(&s->metrics, c->hello_done ? MT_LIM_FRAME_SIZE : MT_LIM_HELLO_SIZE);
            mt_conn_send_error(c, 0, ev.code, true, 0, "%s (length %llu)", ev.why, (unsigned long long)ev.length);
            return;
        case MT_FR_FRAME:
            mt_dispatch(c, ev.frame);
            if (c->read_hwm != BASE_HWM(c)) {
                c->read_hwm = BASE_HWM(c);
                bufferevent_setwatermark(c->bev, EV_READ, 0, c->read_hwm);
            }
            if (--budget == 0 && evbuffer_get_length(in) > 0 && !c->closing && !c->bye) {
                mt_metrics_limit_hit(&s->metrics, MT_LIM_REQUESTS_PER_EVENT);
                event_active(c->resume, EV_READ, 0);
                return;
            }
            continue;
        }
    }
out:
    if (c->bye) evbuffer_drain(in, evbuffer_get_length(in));
    check_finished(c);
}

static void read_cb(struct bufferevent *bev, void *arg) {
    (void)bev;
    conn_process(arg);
}

static void write_cb(struct bufferevent *bev, void *arg) {
    mt_conn *c = arg;
    (void)bev;
    if (c->closing) {
        if (mt_conn_output_len(c) == 0) conn_free(c);
        return;
    }
    if (c->paused_out && mt_conn_output_len(c) <= c->srv->opt->limits.output_high_water / 2) {
        c->paused_out = false;
        if (!c->bye && !c->read_eof) bufferevent_enable(c->bev, EV_READ);
        event_active(c->resume, EV_READ, 0);
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg) {
    mt_conn *c = arg;
    (void)bev;
    if (what & BEV_EVENT_ERROR) {
        unsigned long e;
        int tls = 0;
        while (c->srv->ssl && (e = bufferevent_get_openssl_error(c->bev))) {
            char buf[256];
            ERR_error_string_n(e, buf, sizeof buf);
            MT_LOGI("conn %llu (%s): TLS: %s", (unsigned long long)c->serial, c->peer, buf);
            tls = 1;
        }
        if (tls) mt_metric_inc(&c->srv->metrics.tls_failures);
        conn_free(c);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* The peer half-closed: answer what is in flight and what is still buffered, then close. */
        c->read_eof = true;
        bufferevent_disable(c->bev, EV_READ);
        if (c->closing) {
            if (mt_conn_output_len(c) == 0) conn_free(c);
            return;
        }
        event_active(c->resume, EV_READ, 0);
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    mt_conn *c = arg;
    mt_server *s = c->srv;
    const mt_srv_limits *L = &s->opt->limits;
    if (c->closing) { /* linger expired: the peer does not read */
        conn_free(c);
        return;
    }
    if (!c->hello_done) {
        mt_metrics_limit_hit(&s->metrics, MT_LIM_HELLO_TIMEOUT);
        mt_conn_send_error(c, 0, MT__V1__ERROR_CODE__ERR_HELLO_TIMEOUT, true, 0,
                           "no Hello within %u s", L->hello_timeout_s);
        return;
    }
    if (!L->idle_timeout_s) return;
    uint64_t idle_us = (uint64_t)L->idle_timeout_s * 1000000u, now = mt_now_us();
    if (c->n_pending > 0 || c->subscribed) {
        arm_timer(c, idle_us);
        return;
    }
    if (now - c->last_active_us >= idle_us) {
        mt_metrics_limit_hit(&s->metrics, MT_LIM_IDLE);
        mt_conn_send_error(c, 0, MT__V1__ERROR_CODE__ERR_IDLE_TIMEOUT, true, 0, "idle for %u s",
                           L->idle_timeout_s);
        return;
    }
    arm_timer(c, idle_us - (now - c->last_active_us));
}

void mt_conn_hello_done(mt_conn *c) {
    const mt_srv_limits *L = &c->srv->opt->limits;
    c->hello_done = true;
    mt_framer_set_limits(&c->fr, L->max_frame_bytes, L->max_discard_bytes);
    evtimer_del(c->timer);
    if (L->idle_timeout_s) arm_timer(c, (uint64_t)L->idle_timeout_s * 1000000u);
}

void mt_conn_bye(mt_conn *c) {
    c->bye = true;
    bufferevent_disable(c->bev, EV_READ);
    check_finished(c);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    mt_conn *c = arg;
    if (c->closing) {
        if (mt_conn_output_len(c) == 0) conn_free(c);
        return;
    }
    conn_process(c);
}
