/*
 * drain.c — SIGTERM / SIGINT. The first signal drains: stop accepting, answer every request already
 * received (the batcher stops waiting for batches to fill), ask a running trainer to stop (it saves
 * a checkpoint), let save/promote jobs finish, flush and close every connection, and leave the loop:
 * exit status 0. New translate requests meanwhile get ERR_SHUTTING_DOWN. If the drain takes longer
 * than drain-timeout-s the server gives up and exits 1 at once, as does a second signal: neither
 * waits for threads that may be deep in a batch or a training step.
 */
#include "server.h"
#include "cluster.h"

#include <signal.h>
#include <unistd.h>

#include <event2/listener.h>

#include "log.h"

int mt_srv_thread_start(pthread_t *th, void *(*fn)(void *), void *arg) {
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = pthread_create(th, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static void signal_cb(evutil_socket_t sig, short what, void *arg) {
    (void)what;
    mt_server *s = arg;
    if (s->draining) {
        /* The operator insists: no joining of threads that may be deep in a batch or a step. */
        MT_LOGW("second signal %d: leaving now, without waiting for in-flight work", (int)sig);
        _exit(1);
    }
    mt_drain_begin(s, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    mt_server *s = arg;
    if (mt_now_us() >= s->drain_deadline_us) {
        MT_LOGW("drain: timed out after %u s with %llu requests in flight%s; leaving", s->opt->limits.drain_timeout_s,
                (unsigned long long)s->inflight, mt_srv_train_busy(s) ? " and training still running" : "");
        _exit(1);
    }
    mt_drain_check(s);
}

int mt_drain_init(mt_server *s) {
    s->sig_term = evsignal_new(s->base, SIGTERM, signal_cb, s);
    s->sig_int = evsignal_new(s->base, SIGINT, signal_cb, s);
    s->drain_tick = event_new(s->base, -1, EV_PERSIST, tick_cb, s);
    if (!s->sig_term || !s->sig_int || !s->drain_tick) return -1;
    evsignal_add(s->sig_term, NULL);
    evsignal_add(s->sig_int, NULL);
    return 0;
}

void mt_drain_begin(mt_server *s, const char *why) {
    if (s->draining) return;
    s->draining = true;
    MT_LOGI("%s: draining (%llu requests in flight, %u connections)", why, (unsigned long long)s->inflight,
            s->n_conns);
    if (s->listener) evconnlistener_disable(s->listener);
    mt_srv_batcher_set_flush(s->batcher, true);
    mt_srv_train_begin_drain(s);
    s->drain_deadline_us = mt_now_us() + (uint64_t)s->opt->limits.drain_timeout_s * 1000000u;
    struct timeval tv = {0, 50000};
    event_add(s->drain_tick, &tv);
    mt_drain_check(s);
}

void mt_drain_check(mt_server *s) {
    if (!s->draining || s->stopped) return;
    if (s->inflight > 0 || mt_srv_train_busy(s) || mt_cluster_busy(s)) return;
    /* Everything answered: close the connections once their output is flushed. */
    for (mt_conn *c = s->conns; c; c = c->next)
        if (!c->closing) mt_conn_close_after_flush(c);
    if (s->conns) return;
    MT_LOGI("drain: done");
    s->stopped = true;
    event_base_loopexit(s->base, NULL);
}

void mt_drain_free(mt_server *s) {
    if (s->sig_term) event_free(s->sig_term);
    if (s->sig_int) event_free(s->sig_int);
    if (s->drain_tick) event_free(s->drain_tick);
    s->sig_term = s->sig_int = s->drain_tick = NULL;
}
