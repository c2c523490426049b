/*
 * result_queue.c — the one way other threads talk to the loop thread (results, training events): a mutex-protected FIFO of messages
 * and an event made active (event_active is thread-safe once evthread_use_pthreads() ran). The loop
 * takes the whole list at once, so a burst of batches costs one wake-up.
 */
#include "server.h"
#include "cluster.h"

#include <stdlib.h>

static void post_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    mt_post_run(arg);
}

int mt_post_init(mt_server *s) {
    pthread_mutex_init(&s->post_mu, NULL);
    s->post_ev = event_new(s->base, -1, 0, post_cb, s);
    return s->post_ev ? 0 : -1;
}

void mt_post(mt_server *s, mt_post_msg *m) {
    m->next = NULL;
    pthread_mutex_lock(&s->post_mu);
    if (s->post_tail) s->post_tail->next = m;
    else s->post_head = m;
    s->post_tail = m;
    pthread_mutex_unlock(&s->post_mu);
    if (s->post_ev) event_active(s->post_ev, EV_READ, 0);
}

void mt_post_run(mt_server *s) {
    pthread_mutex_lock(&s->post_mu);
    mt_post_msg *m = s->post_head;
    s->post_head = s->post_tail = NULL;
    pthread_mutex_unlock(&s->post_mu);
    while (m) {
        mt_post_msg *next = m->next;
        if (m->kind == MT_POST_BATCH) mt_translate_on_batch(s, m);
        else if (m->kind == MT_POST_PARTIAL) mt_translate_on_partial(s, m);
        else if (m->kind == MT_POST_RANK_ENDED) mt_cluster_on_post(s, m);
        else mt_srv_train_on_post(s, m);
        free(m->items);
        free(m->text);
        free(m);
        m = next;
    }
}

void mt_post_free(mt_server *s) {
    if (s->post_ev) event_free(s->post_ev);
    s->post_ev = NULL;
    pthread_mutex_destroy(&s->post_mu);
}
