/*
 * cluster.c — cluster mode's lifecycle, for both roles (cluster.h): setup from the options (a
 * coordinator accepts joins when it has --cluster-token-file; a worker has --join too), one 0.5 s tick
 * that drives heartbeats, deadlines and reconnects, the rank threads' ends, the drain and teardown.
 */
#include "cluster.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    mt_cluster *cl = arg;
    if (cl->coordinator) mt_coord_tick(cl);
    else mt_worker_tick(cl);
}

bool mt_cluster_accepts_joins(const mt_server *s) { return s->cluster && s->cluster->coordinator; }

int mt_cluster_init(mt_server *s, char *err, size_t errlen) {
    const mt_srv_options *o = s->opt;
    if (!o->cluster_token_file || !*o->cluster_token_file) return 0;
    if (mt_auth_load_cluster(&s->auth, o->cluster_token_file, o->limits.max_hello_bytes, err, errlen) != 0) return -1;
    mt_cluster *cl = calloc(1, sizeof *cl);
    if (!cl) goto oom;
    s->cluster = cl;
    cl->s = s;
    cl->rx.fd = cl->rx.dir_fd = -1;
    cl->coordinator = !(o->join && *o->join);
    cl->ranks = calloc(MT_CLUSTER_MAX_RANKS_PER_NODE, sizeof *cl->ranks);
    cl->tick = event_new(s->base, -1, EV_PERSIST, tick_cb, cl);
    if (!cl->ranks || !cl->tick) goto oom;
    struct timeval tv = {0, 500000};
    event_add(cl->tick, &tv);
    if (cl->coordinator) {
        cl->nodes = calloc(1 + (size_t)o->max_nodes, sizeof *cl->nodes);
        cl->files = calloc(MT_CLUSTER_MAX_FILES, sizeof *cl->files);
        if (!cl->nodes || !cl->files) goto oom;
        mt_node *self = &cl->nodes[0];
        self->used = true;
        if (o->node_name && *o->node_name) snprintf(self->name, sizeof self->name, "%s", o->node_name);
        else if (gethostname(self->name, sizeof self->name) != 0) snprintf(self->name, sizeof self->name, "coordinator");
        self->name[sizeof self->name - 1] = 0;
        snprintf(self->address, sizeof self->address, "%s", s->listen_addr);
        self->n_gpus = o->n_gpus;
        memcpy(self->gpus, o->gpus, sizeof self->gpus);
        snprintf(self->state, sizeof self->state, "idle");
        cl->n_nodes = 1;
        MT_LOGI("cluster: coordinator '%s', up to %u worker nodes, heartbeat %u s", self->name, o->max_nodes,
                o->heartbeat_s);
        return 0;
    }
    return mt_worker_start(cl, err, errlen);
oom:
    snprintf(err, errlen, "cluster: out of memory");
    return -1;
}

void mt_cluster_cancel_ranks(mt_cluster *cl) {
    for (int i = 0; i < cl->n_ranks; i++) mt_rank_run_cancel(&cl->ranks[i]);
}

bool mt_cluster_ranks_live(const mt_cluster *cl) {
    for (int i = 0; i < cl->n_ranks; i++)
        if (cl->ranks[i].live) return true;
    return false;
}

void mt_cluster_on_post(mt_server *s, mt_post_msg *m) {
    mt_cluster *cl = s->cluster;
    mt_rank_run *r = m->ptr;
    if (!cl || !r) return;
    if (cl->coordinator) mt_coord_rank_ended(cl, r);
    else mt_worker_rank_ended(cl, r);
    if (s->draining) mt_drain_check(s);
}

void mt_cluster_begin_drain(mt_server *s) {
    mt_cluster *cl = s->cluster;
    if (!cl) return;
    if (cl->coordinator) mt_cluster_stop(s, "the coordinator is shutting down");
    mt_cluster_cancel_ranks(cl);
}

bool mt_cluster_busy(mt_server *s) { return s->cluster && mt_cluster_ranks_live(s->cluster); }

void mt_cluster_shutdown(mt_server *s) {
    mt_cluster *cl = s->cluster;
    if (!cl) return;
    mt_cluster_cancel_ranks(cl);
    for (int i = 0; i < cl->n_ranks; i++) mt_rank_run_join(&cl->ranks[i]);
    if (!cl->coordinator) mt_worker_stop(cl);
}

void mt_cluster_free(mt_server *s) {
    mt_cluster *cl = s->cluster;
    if (!cl) return;
    if (cl->tick) event_free(cl->tick);
    free(cl->ranks);
    free(cl->nodes);
    free(cl->files);
    free(cl->config);
    free(cl->job_config);
    free(cl->status_buf);
    free(cl->token);
    free(cl->w_config);
    free(cl->w_files);
    mt_ship_rx_close(&cl->rx);
    free(cl);
    s->cluster = NULL;
}
