/*
 * cluster_worker.c — a worker node (`mt-server --join HOST:PORT --cluster-token-file F`), cluster.h.
 *
 * The link: a connection to the coordinator made from the loop (Hello with the cluster token, then
 * ClusterJoin offering this node's devices), a heartbeat every interval the coordinator asks for
 * (its --heartbeat-s), and reconnecting with a growing delay (1 s to 10 s) after the link drops or
 * the coordinator misses three heartbeat answers; a join the coordinator refuses is logged with its
 * reason and retried the same way.
 *
 * A job: ClusterAssign names the ranks, the config and the files; each file missing under
 * --data-root (or with another SHA-256) is fetched window by window (cluster_ship.c) and the node
 * reports "ready"; ClusterControl START starts one trainer thread per rank (cluster_ranks.c), once
 * the ranks of an earlier job are gone; ABORT, a new assignment or the link dropping cancels them.
 * Heartbeats carry the state (idle, fetching, ready, training, done, failed), the ranks' step and
 * tokens/s, and the SHA-256 of the weights the ranks ended with.
 */
#include "cluster.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <jansson.h>

#include "log.h"
#include "token_file.h"

static void link_down(mt_cluster *cl, const char *why);

/* The wait before the next connect: doubled after each failure, at most 10 s. */
static void grow_backoff(mt_cluster *cl) { cl->backoff = cl->backoff * 2 > 10 ? 10 : cl->backoff * 2; }

static void send_frame(mt_cluster *cl, mt_frame *f) {
    if (!cl->link) return;
    f->id = ++cl->seq;
    size_t n;
    uint8_t *buf = mt_frame_encode(f, &n);
    if (!buf || bufferevent_write(cl->link, buf, n) != 0) MT_LOGW("cluster: cannot send a frame to the coordinator");
    free(buf);
}

static void set_state(mt_cluster *cl, const char *state, const char *msg) {
    snprintf(cl->w_state, sizeof cl->w_state, "%s", state);
    if (msg) snprintf(cl->w_message, sizeof cl->w_message, "%.250s", msg);
}

static void send_heartbeat(mt_cluster *cl) {
    if (!cl->joined) return;
    Mt__V1__ClusterHeartbeat h = MT__V1__CLUSTER_HEARTBEAT__INIT;
    h.seq = cl->seq + 1;
    h.job = cl->w_job;
    h.state = cl->w_state;
    h.message = cl->w_message;
    h.weights_sha256 = cl->w_weights;
    for (int i = 0; i < cl->n_ranks; i++) {
        int64_t step;
        double tps;
        mt_rank_run_progress(&cl->ranks[i], &step, &tps);
        if (step > h.step) h.step = step;
        h.tokens_per_s += tps;
    }
    mt_frame f = MT__V1__FRAME__INIT;
    f.body_case = MT__V1__FRAME__BODY_CLUSTER_HEARTBEAT;
    f.cluster_heartbeat = &h;
    send_frame(cl, &f);
    cl->last_hb_sent = mt_cluster_now();
}

/* ---- the job ---- */

static void fail_assign(mt_cluster *cl, const char *msg) {
    MT_LOGE("cluster: job %llu: %s", (unsigned long long)cl->w_job, msg);
    mt_ship_rx_close(&cl->rx);
    cl->w_ready = cl->w_start_pending = false;
    set_state(cl, "failed", msg);
    send_heartbeat(cl);
}

static void send_fetch(mt_cluster *cl) {
    Mt__V1__ClusterFetch q = MT__V1__CLUSTER_FETCH__INIT;
    q.name = cl->rx.name;
    q.offset = cl->rx.ask_off;
    q.length = cl->rx.ask_len;
    mt_frame f = MT__V1__FRAME__INIT;
    f.body_case = MT__V1__FRAME__BODY_CLUSTER_FETCH;
    f.cluster_fetch = &q;
    send_frame(cl, &f);
}


static void maybe_start(mt_cluster *cl) {
    if (!cl->w_start_pending || !cl->w_ready || mt_cluster_ranks_live(cl)) return;
    mt_server *s = cl->s;
    cl->w_start_pending = false;
    cl->n_ranks = 0;
    cl->w_weights[0] = 0;
    for (int i = 0; i < cl->w_nranks; i++) {
        char *cfg = mt_rank_config(cl->w_config, (int)cl->w_ranks[i], s->opt->n_gpus ? s->opt->gpus[i] : -1);
        if (!cfg || mt_rank_run_start(s, &cl->ranks[cl->n_ranks], cl->w_job, (int)cl->w_ranks[i], cfg) != 0) {
            free(cfg);
            mt_cluster_cancel_ranks(cl);
            fail_assign(cl, "cannot start a rank's trainer thread");
            return;
        }
        free(cfg);
        cl->n_ranks++;
    }
    MT_LOGI("cluster: job %llu: ranks started (%d of world %u)", (unsigned long long)cl->w_job, cl->w_nranks, cl->w_world);
    set_state(cl, "training", "");
    send_heartbeat(cl);
}

static void next_file(mt_cluster *cl) {
    char msg[600];
    while (cl->w_file < cl->w_nfiles) {
        mt_cfile *f = &cl->w_files[cl->w_file];
        msg[0] = 0;
        int r = mt_ship_rx_begin(&cl->rx, cl->s->data_root, f->name, f->sha256, f->size, msg, sizeof msg);
        if (r == MT_SHIP_DONE) {
            cl->w_file++;
            continue;
        }
        if (r == MT_SHIP_FAILED) {
            fail_assign(cl, msg);
            return;
        }
        char what[MT_CLUSTER_NAME_MAX + 64];
        snprintf(what, sizeof what, "fetching %s (%llu bytes)", f->name, (unsigned long long)f->size);
        MT_LOGI("cluster: %s%s", what, cl->rx.offset ? ", resuming" : "");
        set_state(cl, "fetching", what);
        send_fetch(cl);
        return;
    }
    cl->w_ready = true;
    set_state(cl, "ready", "");
    send_heartbeat(cl);
    maybe_start(cl);
}

static void on_assign(mt_cluster *cl, const Mt__V1__ClusterAssign *a) {
    mt_cluster_cancel_ranks(cl); /* an earlier job's ranks, if any */
    mt_ship_rx_close(&cl->rx);
    cl->w_job = a->job;
    cl->w_ready = cl->w_start_pending = false;
    cl->w_weights[0] = 0;
    char msg[400];
    if (a->n_ranks == 0 || a->n_ranks > MT_CLUSTER_MAX_RANKS_PER_NODE ||
        (cl->s->opt->n_gpus && a->n_ranks != (size_t)cl->s->opt->n_gpus) || (!cl->s->opt->n_gpus && a->n_ranks != 1)) {
        snprintf(msg, sizeof msg, "ClusterAssign.ranks: %zu ranks for this node's %d device(s)", a->n_ranks,
                 cl->s->opt->n_gpus ? cl->s->opt->n_gpus : 1);
        fail_assign(cl, msg);
        return;
    }
    if (a->n_files > MT_CLUSTER_MAX_FILES) {
        snprintf(msg, sizeof msg, "ClusterAssign.files: %zu files, at most %d", a->n_files, MT_CLUSTER_MAX_FILES);
        fail_assign(cl, msg);
        return;
    }
    for (size_t i = 0; i < a->n_files; i++) {
        const char *why;
        if (!mt_ship_name_ok(a->files[i]->name, &why)) {
            snprintf(msg, sizeof msg, "ClusterAssign.files: name '%.200s' refused: %s", a->files[i]->name, why);
            fail_assign(cl, msg);
            return;
        }
        mt_cfile *f = &cl->w_files[i];
        snprintf(f->name, sizeof f->name, "%s", a->files[i]->name);
        snprintf(f->sha256, sizeof f->sha256, "%s", a->files[i]->sha256);
        f->size = a->files[i]->size;
    }
    char *cfg = strdup(a->config_json);
    if (!cfg) {
        fail_assign(cl, "out of memory");
        return;
    }
    free(cl->w_config);
    cl->w_config = cfg;
    cl->w_world = a->world_size;
    cl->w_nranks = (int)a->n_ranks;
    for (size_t i = 0; i < a->n_ranks; i++) cl->w_ranks[i] = a->ranks[i];
    cl->w_nfiles = (int)a->n_files;
    cl->w_file = 0;
    MT_LOGI("cluster: job %llu assigned: rank %u of %u, %zu files, rendezvous %s", (unsigned long long)a->job,
            a->ranks[0], a->world_size, a->n_files, a->rendezvous);
    next_file(cl);
}

static void on_chunk(mt_cluster *cl, const Mt__V1__CheckpointChunk *ch) {
    if (cl->rx.fd < 0) return;
    char msg[600] = "";
    switch (mt_ship_rx_chunk(&cl->rx, ch, msg, sizeof msg)) {
    case MT_SHIP_ASK:
        send_fetch(cl);
        break;
    case MT_SHIP_DONE:
        MT_LOGI("cluster: received %s (%llu bytes, %llu on the wire, %llu chunks, %llu corrupt ones sent again), "
                "sha256 verified", cl->rx.name, (unsigned long long)cl->rx.size, (unsigned long long)cl->rx.wire,
                (unsigned long long)cl->rx.received, (unsigned long long)cl->rx.corrupt);
        cl->w_file++;
        next_file(cl);
        break;
    case MT_SHIP_FAILED:
        fail_assign(cl, msg);
        break;
    default:
        break;
    }
}

static void on_control(mt_cluster *cl, const Mt__V1__ClusterControl *c) {
    if (c->job != cl->w_job) return; /* about an earlier job */
    if (c->action == MT__V1__CLUSTER_ACTION__CLUSTER_START) {
        cl->w_start_pending = true;
        maybe_start(cl);
    } else if (c->action == MT__V1__CLUSTER_ACTION__CLUSTER_ABORT) {
        MT_LOGW("cluster: job %llu aborted by the coordinator: %s", (unsigned long long)c->job, c->reason);
        cl->w_start_pending = false;
        mt_cluster_cancel_ranks(cl);
        if (!mt_cluster_ranks_live(cl)) set_state(cl, "idle", c->reason);
    }
}

void mt_worker_rank_ended(mt_cluster *cl, mt_rank_run *r) {
    int st = r->status;
    uint64_t job = r->job;
    bool current = job == cl->w_job; /* else a rank of an earlier job, cancelled by a newer assignment */
    if (st != 0 && st != MT_ERR_CANCELLED)
        MT_LOGW("cluster: rank %d of job %llu failed: %s", r->rank, (unsigned long long)job, r->msg);
    if (current && st == 0) snprintf(cl->w_weights, sizeof cl->w_weights, "%s", r->weights_sha);
    if (current && st != 0 && st != MT_ERR_CANCELLED) set_state(cl, "failed", r->msg);
    mt_rank_run_join(r);
    if (mt_cluster_ranks_live(cl)) return;
    if (current && strcmp(cl->w_state, "training") == 0) set_state(cl, st == 0 ? "done" : "idle", "");
    MT_LOGI("cluster: job %llu: this node's ranks ended (%s)", (unsigned long long)job, current ? cl->w_state : "replaced");
    send_heartbeat(cl);
    maybe_start(cl);
}

/* ---- the link ---- */

static void on_frame(mt_cluster *cl, mt_frame *f) {
    switch (f->body_case) {
    case MT__V1__FRAME__BODY_HELLO_OK:
        if (f->hello_ok->role != MT__V1__ROLE__ROLE_CLUSTER) {
            mt_frame_free(f);
            link_down(cl, "the coordinator did not grant the cluster role (is --cluster-token-file its cluster token?)");
            return;
        }
        break;
    case MT__V1__FRAME__BODY_ERROR:
        MT_LOGE("cluster: the coordinator %s:%d answered: %s: %s", cl->join_host, cl->join_port,
                mt_error_code_name(f->error->code), f->error->message);
        if (f->error->fatal) {
            mt_frame_free(f);
            link_down(cl, "refused");
            return;
        }
        break;
    case MT__V1__FRAME__BODY_CLUSTER_HEARTBEAT:
        cl->last_ack = mt_cluster_now();
        if (f->cluster_heartbeat->interval_s > 0) cl->interval = f->cluster_heartbeat->interval_s;
        if (!cl->joined) {
            cl->joined = true;
            cl->backoff = 1;
            MT_LOGI("cluster: joined the coordinator %s:%d (heartbeat every %.0f s)", cl->join_host, cl->join_port,
                    cl->interval);
            send_heartbeat(cl);
        }
        break;
    case MT__V1__FRAME__BODY_CLUSTER_ASSIGN:
        on_assign(cl, f->cluster_assign);
        break;
    case MT__V1__FRAME__BODY_CLUSTER_CONTROL:
        on_control(cl, f->cluster_control);
        break;
    case MT__V1__FRAME__BODY_CHECKPOINT_CHUNK:
        on_chunk(cl, f->checkpoint_chunk);
        break;
    default:
        break;
    }
    mt_frame_free(f);
}

static void read_cb(struct bufferevent *bev, void *arg) {
    mt_cluster *cl = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (cl->link == bev) {
        size_t avail = evbuffer_get_length(in);
        mt_fr_event ev;
        size_t used;
        if (mt_framer_skipping(&cl->fr)) {
            used = mt_framer_feed(&cl->fr, NULL, avail, &ev);
        } else {
            size_t need = mt_framer_need(&cl->fr);
            if (avail < need) return;
            const uint8_t *p = need ? evbuffer_pullup(in, (ev_ssize_t)need) : NULL;
            if (need && !p) {
                link_down(cl, "out of memory reading a frame");
                return;
            }
            used = mt_framer_feed(&cl->fr, p, need, &ev);
        }
        evbuffer_drain(in, used);
        switch (ev.kind) {
        case MT_FR_NEED:
            return;
        case MT_FR_CONTINUE:
            break;
        case MT_FR_OVERSIZE:
            MT_LOGW("cluster: a frame of %llu bytes from the coordinator over --max-frame-bytes; skipped",
                    (unsigned long long)ev.length);
            break;
        case MT_FR_VIOLATION:
            link_down(cl, ev.why);
            return;
        case MT_FR_FRAME:
            on_frame(cl, ev.frame);
            break;
        }
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg) {
    mt_cluster *cl = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        cl->up = true;
        cl->last_ack = mt_cluster_now();
        mt_server *s = cl->s;
        Mt__V1__Hello h = MT__V1__HELLO__INIT;
        h.protocol_version = MT_PROTOCOL_VERSION;
        h.token = cl->token;
        h.client = "mt-server worker node";
        mt_frame f = MT__V1__FRAME__INIT;
        f.body_case = MT__V1__FRAME__BODY_HELLO;
        f.hello = &h;
        send_frame(cl, &f);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        char addr[96] = "";
        if (getsockname(bufferevent_getfd(bev), (struct sockaddr *)&ss, &sl) == 0)
            mt_addr_format((struct sockaddr *)&ss, addr, sizeof addr);
        int32_t gpus[MT_SRV_MAX_GPUS];
        for (int i = 0; i < s->opt->n_gpus; i++) gpus[i] = s->opt->gpus[i];
        Mt__V1__ClusterJoin j = MT__V1__CLUSTER_JOIN__INIT;
        char name[64];
        if (s->opt->node_name && *s->opt->node_name) snprintf(name, sizeof name, "%s", s->opt->node_name);
        else if (gethostname(name, sizeof name) != 0) snprintf(name, sizeof name, "worker");
        name[sizeof name - 1] = 0;
        j.node_name = name;
        j.n_gpus = (size_t)s->opt->n_gpus;
        j.gpus = gpus;
        j.address = addr;
        j.protocol_version = MT_PROTOCOL_VERSION;
        j.engine_version = (char *)(s->eng->version ? s->eng->version() : "?");
        j.device_count = (uint32_t)(s->eng->device_count ? s->eng->device_count() : 0);
        f.body_case = MT__V1__FRAME__BODY_CLUSTER_JOIN;
        f.cluster_join = &j;
        send_frame(cl, &f);
        MT_LOGI("cluster: connected to the coordinator %s:%d as '%s'", cl->join_host, cl->join_port, name);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        link_down(cl, what & BEV_EVENT_EOF ? "the coordinator closed the link" : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void link_down(mt_cluster *cl, const char *why) {
    if (!cl->link) return;
    bufferevent_free(cl->link);
    cl->link = NULL;
    bool was = cl->joined;
    cl->up = cl->joined = false;
    mt_framer_init(&cl->fr, cl->s->opt->limits.max_frame_bytes, cl->s->opt->limits.max_discard_bytes);
    cl->next_connect = mt_cluster_now() + cl->backoff;
    MT_LOGW("cluster: link to the coordinator %s:%d %s: %s; trying again in %.0f s", cl->join_host, cl->join_port,
            was ? "lost" : "failed", why, cl->backoff);
    grow_backoff(cl);
    /* The coordinator counts this node lost: its ranks stop; a fetch resumes from the .part file. */
    mt_cluster_cancel_ranks(cl);
    mt_ship_rx_close(&cl->rx);
    cl->w_start_pending = cl->w_ready = false;
    if (!mt_cluster_ranks_live(cl) && strcmp(cl->w_state, "failed") != 0) set_state(cl, "idle", "");
}

static void connect_link(mt_cluster *cl) {
    mt_server *s = cl->s;
    char hp[300], err[256];
    snprintf(hp, sizeof hp, "%s", s->opt->join);
    struct sockaddr_storage ss;
    int sl = 0;
    cl->next_connect = mt_cluster_now() + cl->backoff;
    if (mt_resolve_hostport(hp, &ss, &sl, err, sizeof err) != 0) {
        MT_LOGW("cluster: --join %s: %s; trying again in %.0f s", hp, err, cl->backoff);
        grow_backoff(cl);
        return;
    }
    cl->link = bufferevent_socket_new(s->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!cl->link) return;
    bufferevent_setcb(cl->link, read_cb, NULL, event_cb, cl);
    bufferevent_enable(cl->link, EV_READ);
    cl->up = false;
    cl->last_ack = mt_cluster_now();
    if (bufferevent_socket_connect(cl->link, (struct sockaddr *)&ss, sl) != 0) link_down(cl, "connect failed");
}

int mt_worker_start(mt_cluster *cl, char *err, size_t errlen) {
    mt_server *s = cl->s;
    char host[256];
    int port;
    const char *colon = strrchr(s->opt->join, ':');
    if (!colon || colon == s->opt->join || !colon[1] || (port = atoi(colon + 1)) <= 0 || port > 65535) {
        snprintf(err, errlen, "--join '%s': want HOST:PORT", s->opt->join);
        return -1;
    }
    snprintf(host, sizeof host, "%.*s", (int)(colon - s->opt->join), s->opt->join);
    snprintf(cl->join_host, sizeof cl->join_host, "%s", host);
    cl->join_port = port;
    bool loose = false;
    cl->token = mt_token_file_read(s->opt->cluster_token_file, &loose, err, errlen);
    if (!cl->token) return -1;
    cl->w_files = calloc(MT_CLUSTER_MAX_FILES, sizeof *cl->w_files);
    if (!cl->w_files) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    mt_framer_init(&cl->fr, s->opt->limits.max_frame_bytes, s->opt->limits.max_discard_bytes);
    cl->interval = s->opt->heartbeat_s;
    cl->backoff = 1;
    set_state(cl, "idle", "");
    cl->next_connect = 0;
    MT_LOGI("cluster: worker node joining %s", s->opt->join);
    return 0;
}

void mt_worker_tick(mt_cluster *cl) {
    double now = mt_cluster_now();
    if (!cl->link) {
        if (now >= cl->next_connect && !cl->s->draining) connect_link(cl);
        return;
    }
    if (!cl->up) {
        if (now - cl->last_ack > 10) link_down(cl, "no connection within 10 s");
        return;
    }
    if (now - cl->last_ack > 3 * cl->interval + 1) {
        char why[96];
        snprintf(why, sizeof why, "no answer for %.1f s", now - cl->last_ack);
        link_down(cl, why);
        return;
    }
    if (cl->joined && now - cl->last_hb_sent >= cl->interval) send_heartbeat(cl);
}

void mt_worker_stop(mt_cluster *cl) {
    if (cl->link) bufferevent_free(cl->link);
    cl->link = NULL;
}
