/*
 * cluster_coord.c — the coordinator of cluster mode (cluster.h; net/README.md "Cluster mode").
 *
 * Nodes: a worker's link (a connection that said Hello with the cluster token) sends ClusterJoin
 * (checked: protocol and engine versions, devices, a unique name, --max-nodes) and then a heartbeat
 * every --heartbeat-s; a node whose link closes or that misses three heartbeats is lost. nodes[0] is
 * the coordinator itself, which always holds rank 0.
 *
 * The job (`train start --min-nodes N`): WAITING until N nodes (the coordinator counted) are joined,
 * at most --join-timeout-s; PREPARING: ranks assigned over every device of every joined node, the
 * config rewritten with paths relative to the data root, every file it reads hashed, and a
 * ClusterAssign sent to each worker, which fetches what it lacks (cluster_ship.c) and reports ready;
 * RUNNING: ClusterControl START to the workers, rank 0 started through train.c. A node lost while
 * RUNNING aborts the job on every node (RECOVERING); once rank 0's trainer has ended the job is
 * planned again on the nodes that remain, from the newest checkpoint of out_dir, or it fails naming
 * the lost node when fewer than N remain. Rank 0 failing with every node alive ends the job with rank
 * 0's error (after three heartbeats, the time a lost node takes to show).
 */
#include "cluster.h"

#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/bufferevent.h>
#include <jansson.h>
#include <netinet/in.h>

#include "log.h"

static double hb_s(const mt_cluster *cl) { return (double)cl->s->opt->heartbeat_s; }

static mt_node *node_by_serial(mt_cluster *cl, uint64_t serial) {
    for (uint32_t i = 1; i < cl->n_nodes; i++)
        if (cl->nodes[i].used && !cl->nodes[i].lost && cl->nodes[i].serial == serial) return &cl->nodes[i];
    return NULL;
}

static int alive_nodes(const mt_cluster *cl) {
    int n = 0;
    for (uint32_t i = 0; i < cl->n_nodes; i++) n += cl->nodes[i].used && !cl->nodes[i].lost;
    return n;
}

static void send_control(mt_cluster *cl, mt_node *n, int action, const char *reason) {
    mt_conn *c = mt_conn_find(cl->s, n->serial);
    if (!c) return;
    Mt__V1__ClusterControl ctl = MT__V1__CLUSTER_CONTROL__INIT;
    ctl.job = cl->job;
    ctl.action = action;
    ctl.reason = (char *)(reason ? reason : "");
    mt_frame f = MT__V1__FRAME__INIT;
    f.body_case = MT__V1__FRAME__BODY_CLUSTER_CONTROL;
    f.cluster_control = &ctl;
    mt_conn_send(c, &f);
}

/* Every worker of the job stops its ranks; so do the coordinator's own beyond rank 0. */
static void abort_job(mt_cluster *cl, const char *reason) {
    for (uint32_t i = 1; i < cl->n_nodes; i++)
        if (cl->nodes[i].in_job && !cl->nodes[i].lost) send_control(cl, &cl->nodes[i], MT__V1__CLUSTER_ACTION__CLUSTER_ABORT, reason);
    mt_cluster_cancel_ranks(cl);
}

static void end_job(mt_cluster *cl) {
    cl->phase = MT_JOB_ENDED;
    for (uint32_t i = 0; i < cl->n_nodes; i++) cl->nodes[i].in_job = false;
    snprintf(cl->state_text, sizeof cl->state_text, "ended");
}

static void fail_job(mt_cluster *cl, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_job(mt_cluster *cl, int status, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    abort_job(cl, msg);
    end_job(cl);
    if (status == MT_ERR_CANCELLED) MT_LOGI("cluster: job %llu: %s", (unsigned long long)cl->job, msg);
    else MT_LOGW("cluster: job %llu failed: %s", (unsigned long long)cl->job, msg);
    mt_srv_train_finish(cl->s, status, msg);
}

/* ---- the job's config and files ---- */

static int add_file(mt_cluster *cl, const char *path, char *name_out, size_t cap, char *msg, size_t msgcap) {
    char name[MT_CLUSTER_NAME_MAX + 1];
    if (mt_ship_relative(cl->s->data_root, path, name, sizeof name, msg, msgcap) != 0) return -1;
    snprintf(name_out, cap, "%s", name);
    for (int i = 0; i < cl->n_files; i++)
        if (!strcmp(cl->files[i].name, name)) return 0;
    if (cl->n_files >= MT_CLUSTER_MAX_FILES) {
        snprintf(msg, msgcap, "more than %d files", MT_CLUSTER_MAX_FILES);
        return -1;
    }
    mt_cfile *f = &cl->files[cl->n_files];
    if (mt_ship_file_sha256(cl->s->data_root, name, f->sha256, &f->size, msg, msgcap) != 0) return -1;
    snprintf(f->name, sizeof f->name, "%s", name);
    cl->n_files++;
    return 0;
}

/* A corpus spec "a" or "a|b": each part made relative to the data root and added to the files. */
static json_t *corpus_spec(mt_cluster *cl, const char *key, const char *spec, char *msg, size_t cap) {
    char out[4 * (MT_CLUSTER_NAME_MAX + 1)] = "", part[MT_CLUSTER_NAME_MAX + 1], name[MT_CLUSTER_NAME_MAX + 1];
    const char *p = spec;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n > MT_CLUSTER_NAME_MAX) n = MT_CLUSTER_NAME_MAX;
        memcpy(part, p, n);
        part[n] = 0;
        if (!strncmp(part, "$MT_DATA_DIR/", 13)) {
            snprintf(msg, cap, "config key '%s': %.200s: a cluster run reads its corpora inside --data-root (every node "
                     "receives them there), not under $MT_DATA_DIR", key, part);
            return NULL;
        }
        char m2[400];
        if (add_file(cl, part, name, sizeof name, m2, sizeof m2) != 0) {
            snprintf(msg, cap, "config key '%s': %s", key, m2);
            return NULL;
        }
        size_t l = strlen(out);
        snprintf(out + l, sizeof out - l, "%s%s", l ? "|" : "", name);
        if (!bar) break;
        p = bar + 1;
    }
    return json_string(out);
}

/* The newest step-*.mt of out_dir/checkpoints (out_dir relative to the data root, or absolute inside
 * it), as a name relative to the root; "" if none. */
static void newest_checkpoint(mt_cluster *cl, const char *out_dir, char *name, size_t cap) {
    name[0] = 0;
    char dir[PATH_MAX + MT_CLUSTER_NAME_MAX];
    if (out_dir[0] == '/') snprintf(dir, sizeof dir, "%s/checkpoints", out_dir);
    else snprintf(dir, sizeof dir, "%s/%s/checkpoints", cl->s->data_root, out_dir);
    DIR *d = opendir(dir);
    if (!d) return;
    char best[256] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 8 && !strncmp(e->d_name, "step-", 5) && !strcmp(e->d_name + l - 3, ".mt") && strcmp(e->d_name, best) > 0 &&
            l < sizeof best)
            snprintf(best, sizeof best, "%s", e->d_name);
    }
    closedir(d);
    char path[sizeof dir + 256], msg[300];
    if (best[0] && snprintf(path, sizeof path, "%s/%s", dir, best) < (int)sizeof path &&
        mt_ship_relative(cl->s->data_root, path, name, cap, msg, sizeof msg) != 0)
        name[0] = 0;
}

/* Sends a progress event built as JSON (names and paths escaped); takes o. */
static void send_event(mt_cluster *cl, json_t *o) {
    char *t = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (t) mt_srv_train_event(cl->s, t);
    free(t);
    json_decref(o);
}

static const char *config_out_dir(json_t *cfg) {
    const char *o = json_string_value(json_object_get(cfg, "out_dir"));
    return o && *o ? o : "run";
}

/* cl->config -> cl->job_config (paths relative, files hashed, world and rendezvous set). */
static int prepare_config(mt_cluster *cl, char *msg, size_t cap) {
    json_error_t je;
    json_t *cfg = json_loads(cl->config, 0, &je);
    if (!json_is_object(cfg)) {
        snprintf(msg, cap, "the config is not a JSON object (line %d: %s)", je.line, je.text);
        json_decref(cfg);
        return -1;
    }
    cl->n_files = 0;
    static const char *const lists[] = {"corpora", "valid", "test"};
    for (int k = 0; k < 3; k++) {
        json_t *v = json_object_get(cfg, lists[k]);
        if (!v) continue;
        json_t *arr = json_array();
        size_t i;
        json_t *it;
        if (json_is_string(v)) {
            json_t *s = corpus_spec(cl, lists[k], json_string_value(v), msg, cap);
            if (!s) goto bad_arr;
            json_array_append_new(arr, s);
        } else if (json_is_array(v)) {
            json_array_foreach(v, i, it) {
                json_t *s = json_is_string(it) ? corpus_spec(cl, lists[k], json_string_value(it), msg, cap) : NULL;
                if (!s) {
                    if (!json_is_string(it)) snprintf(msg, cap, "config key '%s': item %zu is not a string", lists[k], i);
                    goto bad_arr;
                }
                json_array_append_new(arr, s);
            }
        } else {
            snprintf(msg, cap, "config key '%s': a string or a list of strings", lists[k]);
            goto bad_arr;
        }
        json_object_set_new(cfg, lists[k], arr);
        continue;
    bad_arr:
        json_decref(arr);
        json_decref(cfg);
        return -1;
    }
    const char *tok = json_string_value(json_object_get(cfg, "tokenizer"));
    char name[MT_CLUSTER_NAME_MAX + 1], m2[400];
    if (tok && *tok && add_file(cl, tok, name, sizeof name, m2, sizeof m2) == 0)
        json_object_set_new(cfg, "tokenizer", json_string(name));
    /* else: the tokenizer is trained from the corpora, identically on every rank */
    cl->resume_sha[0] = 0;
    if (cl->resume[0]) {
        char full[PATH_MAX + MT_CLUSTER_NAME_MAX];
        if (snprintf(full, sizeof full, "%s/%s", cl->s->data_root, cl->resume) >= (int)sizeof full) full[0] = 0;
        if (add_file(cl, full, name, sizeof name, m2, sizeof m2) != 0) {
            snprintf(msg, cap, "config key 'resume': %s", m2);
            json_decref(cfg);
            return -1;
        }
        for (int i = 0; i < cl->n_files; i++)
            if (!strcmp(cl->files[i].name, name)) snprintf(cl->resume_sha, sizeof cl->resume_sha, "%s", cl->files[i].sha256);
    }
    json_object_set_new(cfg, "resume", json_string(cl->resume));
    json_object_set_new(cfg, "world_size", json_integer(cl->world));
    json_object_set_new(cfg, "rendezvous", json_string(cl->rendezvous));
    json_object_del(cfg, "rank");
    json_object_del(cfg, "device");
    free(cl->job_config);
    cl->job_config = json_dumps(cfg, JSON_COMPACT);
    json_decref(cfg);
    if (!cl->job_config) {
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    return 0;
}


/* host:port of rank 0's store: the coordinator's address on a worker's link (where that worker
 * reached it), and --cluster-port or a port free a moment ago. */
static int pick_rendezvous(mt_cluster *cl, mt_node *w, char *msg, size_t cap) {
    mt_conn *c = mt_conn_find(cl->s, w->serial);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (!c || getsockname(bufferevent_getfd(c->bev), (struct sockaddr *)&ss, &sl) != 0) {
        snprintf(msg, cap, "cannot read the local address of %s's link", w->name);
        return -1;
    }
    char host[INET6_ADDRSTRLEN];
    if (getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, NULL, 0, NI_NUMERICHOST) != 0) {
        snprintf(msg, cap, "getnameinfo failed");
        return -1;
    }
    int port = (int)cl->s->opt->cluster_port;
    if (port == 0) {
        int fd = socket(ss.ss_family, SOCK_STREAM, 0);
        if (ss.ss_family == AF_INET) ((struct sockaddr_in *)&ss)->sin_port = 0;
        else ((struct sockaddr_in6 *)&ss)->sin6_port = 0;
        if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) != 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
            snprintf(msg, cap, "no free port for the rendezvous store: %s", strerror(errno));
            if (fd >= 0) close(fd);
            return -1;
        }
        port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
        close(fd);
    }
    snprintf(cl->rendezvous, sizeof cl->rendezvous, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
    return 0;
}

static void send_assign(mt_cluster *cl, mt_node *n) {
    mt_conn *c = mt_conn_find(cl->s, n->serial);
    if (!c) return;
    uint32_t ranks[MT_CLUSTER_MAX_RANKS_PER_NODE];
    Mt__V1__ClusterFile fs[MT_CLUSTER_MAX_FILES], *fp[MT_CLUSTER_MAX_FILES];
    for (int i = 0; i < n->n_ranks; i++) ranks[i] = (uint32_t)(n->first_rank + i);
    for (int i = 0; i < cl->n_files; i++) {
        mt__v1__cluster_file__init(&fs[i]);
        fs[i].name = cl->files[i].name;
        fs[i].sha256 = cl->files[i].sha256;
        fs[i].size = cl->files[i].size;
        fp[i] = &fs[i];
    }
    Mt__V1__ClusterAssign a = MT__V1__CLUSTER_ASSIGN__INIT;
    a.world_size = cl->world;
    a.n_ranks = (size_t)n->n_ranks;
    a.ranks = ranks;
    a.checkpoint_sha256 = cl->resume_sha;
    a.config_json = cl->job_config;
    a.job = cl->job;
    a.rendezvous = cl->rendezvous;
    a.n_files = (size_t)cl->n_files;
    a.files = fp;
    mt_frame f = MT__V1__FRAME__INIT;
    f.body_case = MT__V1__FRAME__BODY_CLUSTER_ASSIGN;
    f.cluster_assign = &a;
    mt_conn_send(c, &f);
}

static void start_job(mt_cluster *cl);

/* Ranks over every device of every live node (the coordinator's first), then the assignments. */
static void plan(mt_cluster *cl) {
    mt_server *s = cl->s;
    char msg[600];
    cl->job++;
    cl->world = 0;
    mt_node *first_worker = NULL;
    for (uint32_t i = 0; i < cl->n_nodes; i++) {
        mt_node *n = &cl->nodes[i];
        n->in_job = n->used && !n->lost;
        if (!n->in_job) continue;
        n->first_rank = (int)cl->world;
        n->n_ranks = n->n_gpus > 0 ? n->n_gpus : 1;
        cl->world += (uint32_t)n->n_ranks;
        if (i > 0 && !first_worker) first_worker = n;
    }
    cl->rendezvous[0] = 0;
    if (first_worker && pick_rendezvous(cl, first_worker, msg, sizeof msg) != 0) {
        fail_job(cl, MT_ERR_NETWORK, "%s", msg);
        return;
    }
    if (prepare_config(cl, msg, sizeof msg) != 0) {
        fail_job(cl, MT_ERR_CONFIG, "%s", msg);
        return;
    }
    uint64_t bytes = 0;
    for (int i = 0; i < cl->n_files; i++) bytes += cl->files[i].size;
    /* Preparing may take the files' transfer at 10 MB/s on top of the join timeout. */
    cl->deadline = mt_cluster_now() + s->opt->join_timeout_s + (double)bytes / 10e6;
    cl->rank0_ended = false;
    MT_LOGI("cluster: job %llu: %u ranks on %d nodes, rendezvous %s, %d files (%.1f MB)%s%s",
            (unsigned long long)cl->job, cl->world, alive_nodes(cl), cl->rendezvous[0] ? cl->rendezvous : "-",
            cl->n_files, (double)bytes / 1e6, cl->resume[0] ? ", from " : "", cl->resume);
    if (!first_worker) { /* the coordinator alone */
        start_job(cl);
        return;
    }
    cl->phase = MT_JOB_PREPARING;
    snprintf(cl->state_text, sizeof cl->state_text, "job %llu: nodes fetching files", (unsigned long long)cl->job);
    for (uint32_t i = 1; i < cl->n_nodes; i++)
        if (cl->nodes[i].in_job) send_assign(cl, &cl->nodes[i]);
}

static void start_job(mt_cluster *cl) {
    mt_server *s = cl->s;
    mt_node *self = &cl->nodes[0];
    char *c0 = mt_rank_config(cl->job_config, 0, self->n_gpus ? self->gpus[0] : -1);
    if (!c0 || mt_srv_train_launch(s, c0) != 0) {
        free(c0);
        fail_job(cl, MT_ERR_INTERNAL, "cannot start rank 0's trainer");
        return;
    }
    free(c0);
    for (uint32_t i = 1; i < cl->n_nodes; i++)
        if (cl->nodes[i].in_job) send_control(cl, &cl->nodes[i], MT__V1__CLUSTER_ACTION__CLUSTER_START, "");
    cl->n_ranks = 0; /* joined when they ended */
    for (int r = 1; r < self->n_ranks; r++) {
        char *cr = mt_rank_config(cl->job_config, r, self->gpus[r]);
        if (!cr || mt_rank_run_start(s, &cl->ranks[cl->n_ranks], cl->job, r, cr) != 0) {
            free(cr);
            abort_job(cl, "cannot start a rank thread");
            break;
        }
        cl->n_ranks++;
        free(cr);
    }
    cl->phase = MT_JOB_RUNNING;
    snprintf(cl->state_text, sizeof cl->state_text, "job %llu: training on %u ranks", (unsigned long long)cl->job,
             cl->world);
    json_t *ev = json_pack("{s:s, s:I, s:i, s:i}", "event", "cluster_start", "job", (json_int_t)cl->job, "world_size",
                           (int)cl->world, "restarts", (int)cl->restarts);
    json_t *names = json_array();
    for (uint32_t i = 0; i < cl->n_nodes; i++)
        if (cl->nodes[i].in_job) json_array_append_new(names, json_string(cl->nodes[i].name));
    json_object_set_new(ev, "nodes", names);
    if (cl->lost_at > 0) json_object_set_new(ev, "since_node_lost_s", json_real(mt_cluster_now() - cl->lost_at));
    send_event(cl, ev);
    MT_LOGI("cluster: job %llu started (%u ranks)", (unsigned long long)cl->job, cl->world);
}

/* After a lost node: plan again on the nodes that remain, from the newest checkpoint. */
static void restart(mt_cluster *cl) {
    json_t *cfg = json_loads(cl->config, 0, NULL);
    newest_checkpoint(cl, config_out_dir(cfg), cl->resume, sizeof cl->resume);
    json_decref(cfg);
    int alive = alive_nodes(cl);
    if (alive < (int)cl->min_nodes) {
        fail_job(cl, MT_ERR_NETWORK, "lost node(s) %s; %d node(s) left, fewer than --min-nodes %u", cl->lost, alive,
                 cl->min_nodes);
        return;
    }
    cl->restarts++;
    send_event(cl, json_pack("{s:s, s:s, s:i, s:s, s:i}", "event", "restart", "lost", cl->lost, "nodes", alive,
                             "from_checkpoint", cl->resume, "restarts", (int)cl->restarts));
    MT_LOGW("cluster: restarting the job on %d nodes without %s, from %s", alive, cl->lost,
            cl->resume[0] ? cl->resume : "fresh weights (no checkpoint yet)");
    cl->lost[0] = 0;
    plan(cl);
}

/* ---- nodes ---- */

static void node_lost(mt_cluster *cl, mt_node *n, const char *why) {
    if (n->lost) return;
    n->lost = true;
    n->serial = 0;
    snprintf(n->state, sizeof n->state, "lost");
    snprintf(n->message, sizeof n->message, "%s", why);
    MT_LOGW("cluster: node '%s' lost: %s", n->name, why);
    if (!n->in_job) return;
    size_t l = strlen(cl->lost);
    snprintf(cl->lost + l, sizeof cl->lost - l, "%s%s", l ? "," : "", n->name);
    if (cl->lost_at == 0) cl->lost_at = mt_cluster_now();
    send_event(cl, json_pack("{s:s, s:s, s:s}", "event", "node_lost", "node", n->name, "why", why));
    switch (cl->phase) {
    case MT_JOB_PREPARING:
        abort_job(cl, "a node was lost");
        if (alive_nodes(cl) >= (int)cl->min_nodes) {
            cl->lost[0] = 0;
            plan(cl);
        } else {
            cl->phase = MT_JOB_WAITING;
            cl->deadline = mt_cluster_now() + cl->s->opt->join_timeout_s;
            snprintf(cl->state_text, sizeof cl->state_text, "waiting for %u nodes", cl->min_nodes);
        }
        break;
    case MT_JOB_RUNNING:
        cl->phase = MT_JOB_RECOVERING;
        cl->deadline = mt_cluster_now() + 3 * hb_s(cl) + 2;
        snprintf(cl->state_text, sizeof cl->state_text, "job %llu: node %s lost, stopping the ranks",
                 (unsigned long long)cl->job, n->name);
        abort_job(cl, "a node was lost");
        break;
    default:
        break;
    }
}

void mt_cluster_conn_closed(mt_conn *c) {
    mt_cluster *cl = c->srv->cluster;
    if (!cl || !cl->coordinator) return;
    mt_node *n = node_by_serial(cl, c->serial);
    if (n) node_lost(cl, n, "its link closed");
}

static bool printable(const char *s, size_t max) {
    size_t n = strlen(s);
    if (n == 0 || n > max) return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f || *s == '"' || *s == '\\' || *s == ',') return false;
    return true;
}

/* The answer to a join or a heartbeat: the period the worker is to keep, and the current job. */
static void send_ack(mt_cluster *cl, mt_conn *c, uint64_t id, uint64_t seq) {
    Mt__V1__ClusterHeartbeat ack = MT__V1__CLUSTER_HEARTBEAT__INIT;
    ack.seq = seq;
    ack.interval_s = hb_s(cl);
    ack.job = cl->job;
    mt_frame out = MT__V1__FRAME__INIT;
    out.id = id;
    out.body_case = MT__V1__FRAME__BODY_CLUSTER_HEARTBEAT;
    out.cluster_heartbeat = &ack;
    mt_conn_send(c, &out);
}

static void handle_join(mt_conn *c, mt_frame *f) {
    mt_server *s = c->srv;
    mt_cluster *cl = s->cluster;
    const Mt__V1__ClusterJoin *j = f->cluster_join;
    const char *ev = s->eng->version ? s->eng->version() : "?";
    if (node_by_serial(cl, c->serial)) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, false, 0, "this link already joined");
        return;
    }
    if (j->protocol_version != MT_PROTOCOL_VERSION) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_VERSION_UNSUPPORTED, true, 0,
                           "join refused: ClusterJoin.protocol_version %u, the coordinator speaks %d", j->protocol_version,
                           MT_PROTOCOL_VERSION);
        return;
    }
    if (strcmp(j->engine_version, ev) != 0) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_VERSION_UNSUPPORTED, true, 0,
                           "join refused: engine version '%.60s', the coordinator runs '%s' (ranks must run the same engine)",
                           j->engine_version, ev);
        return;
    }
    if (!printable(j->node_name, 63)) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, true, 0,
                           "join refused: ClusterJoin.node_name must be 1-63 printable characters without spaces, "
                           "quotes, backslashes or commas");
        return;
    }
    if (j->n_gpus > MT_CLUSTER_MAX_RANKS_PER_NODE) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, true, 0,
                           "join refused: %zu devices offered, at most %d", j->n_gpus, MT_CLUSTER_MAX_RANKS_PER_NODE);
        return;
    }
    for (size_t i = 0; i < j->n_gpus; i++) {
        bool dup = false;
        for (size_t k = 0; k < i; k++) dup |= j->gpus[k] == j->gpus[i];
        if (j->gpus[i] < 0 || (uint32_t)j->gpus[i] >= j->device_count || dup) {
            mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, true, 0,
                               "join refused: device %d %s (the node sees %u CUDA device%s)", j->gpus[i],
                               dup ? "offered twice" : "does not exist", j->device_count, j->device_count == 1 ? "" : "s");
            return;
        }
    }
    mt_node *n = NULL;
    uint32_t live = 0;
    for (uint32_t i = 1; i < cl->n_nodes; i++) {
        mt_node *x = &cl->nodes[i];
        if (!x->used) continue;
        if (!strcmp(x->name, j->node_name)) {
            if (!x->lost) {
                mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, true, 0,
                                   "join refused: a node named '%s' is already joined (from %s)", x->name, x->address);
                return;
            }
            n = x; /* a lost node rejoins */
        }
        live += !x->lost;
    }
    if (!strcmp(j->node_name, cl->nodes[0].name)) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, true, 0,
                           "join refused: '%s' is the coordinator's own name", j->node_name);
        return;
    }
    if (live >= s->opt->max_nodes) {
        mt_metrics_limit_hit(&s->metrics, MT_LIM_CONNECTIONS);
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_TOO_MANY_CONNECTIONS, true, 0,
                           "join refused: %u worker nodes joined, --max-nodes %u", live, s->opt->max_nodes);
        return;
    }
    if (!n) {
        for (uint32_t i = 1; i <= s->opt->max_nodes && !n; i++)
            if (!cl->nodes[i].used || (cl->nodes[i].lost && !cl->nodes[i].in_job)) n = &cl->nodes[i];
        if (!n) {
            mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_TOO_MANY_CONNECTIONS, true, 0,
                               "join refused: no free node slot (--max-nodes %u)", s->opt->max_nodes);
            return;
        }
        if ((uint32_t)(n - cl->nodes) >= cl->n_nodes) cl->n_nodes = (uint32_t)(n - cl->nodes) + 1;
    }
    memset(n, 0, sizeof *n); /* a rejoining node is taken in at the next plan */
    n->used = true;
    snprintf(n->name, sizeof n->name, "%s", j->node_name);
    snprintf(n->address, sizeof n->address, "%s", c->peer);
    n->serial = c->serial;
    n->n_gpus = (int)j->n_gpus;
    for (size_t i = 0; i < j->n_gpus; i++) n->gpus[i] = j->gpus[i];
    n->last_hb = mt_cluster_now();
    snprintf(n->state, sizeof n->state, "idle");
    MT_LOGI("cluster: node '%s' joined from %s with %s", n->name, c->peer,
            n->n_gpus ? "GPUs" : "one CPU rank");
    send_ack(cl, c, f->id, 0);
    if (cl->phase == MT_JOB_WAITING) mt_coord_tick(cl);
}

static void handle_heartbeat(mt_conn *c, mt_frame *f) {
    mt_cluster *cl = c->srv->cluster;
    mt_node *n = node_by_serial(cl, c->serial);
    if (!n) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, false, 0, "heartbeat before ClusterJoin");
        return;
    }
    const Mt__V1__ClusterHeartbeat *h = f->cluster_heartbeat;
    n->last_hb = mt_cluster_now();
    n->job = h->job;
    snprintf(n->state, sizeof n->state, "%s", h->state);
    n->step = h->step;
    n->tps = h->tokens_per_s;
    snprintf(n->message, sizeof n->message, "%s", h->message);
    snprintf(n->weights, sizeof n->weights, "%s", h->weights_sha256);
    send_ack(cl, c, f->id, h->seq);
    if (cl->phase == MT_JOB_PREPARING) mt_coord_tick(cl);
}

static void handle_fetch(mt_conn *c, mt_frame *f) {
    mt_cluster *cl = c->srv->cluster;
    const Mt__V1__ClusterFetch *q = f->cluster_fetch;
    const char *why;
    if (!node_by_serial(cl, c->serial)) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, false, 0, "fetch before ClusterJoin");
        return;
    }
    if (!mt_ship_name_ok(q->name, &why)) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_PATH_OUTSIDE_ROOT, false, 0,
                           "ClusterFetch.name '%.200s' refused: %s", q->name, why);
        return;
    }
    for (int i = 0; i < cl->n_files; i++)
        if (!strcmp(cl->files[i].name, q->name)) {
            mt_ship_send(c, f->id, c->srv->data_root, q, cl->files[i].sha256, cl->files[i].size);
            return;
        }
    mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_NOT_FOUND, false, 0,
                       "ClusterFetch.name '%.200s' is not a file of job %llu", q->name, (unsigned long long)cl->job);
}

void mt_cluster_handle(mt_conn *c, mt_frame *f) {
    mt_server *s = c->srv;
    mt_metric_inc(&s->metrics.requests[MT_REQ_CLUSTER]);
    if (!mt_cluster_accepts_joins(s)) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_UNSUPPORTED, false, 0,
                           s->cluster ? "this server is a worker node, not a coordinator"
                                      : "this server does not run in cluster mode (no --cluster-token-file)");
    } else if (c->role != MT__V1__ROLE__ROLE_CLUSTER) {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_PERMISSION_DENIED, false, 0,
                           "cluster frames need the cluster token (--cluster-token-file)");
    } else if (f->body_case == MT__V1__FRAME__BODY_CLUSTER_JOIN) {
        handle_join(c, f);
    } else if (f->body_case == MT__V1__FRAME__BODY_CLUSTER_HEARTBEAT) {
        handle_heartbeat(c, f);
    } else if (f->body_case == MT__V1__FRAME__BODY_CLUSTER_FETCH) {
        handle_fetch(c, f);
    } else {
        mt_conn_send_error(c, f->id, MT__V1__ERROR_CODE__ERR_BAD_FRAME, true, 0, "a body only the coordinator sends");
    }
    mt_frame_free(f);
}

/* ---- the tick ---- */

void mt_coord_tick(mt_cluster *cl) {
    mt_server *s = cl->s;
    double now = mt_cluster_now();
    for (uint32_t i = 1; i < cl->n_nodes; i++) {
        mt_node *n = &cl->nodes[i];
        if (!n->used || n->lost || now - n->last_hb <= 3 * hb_s(cl)) continue;
        char why[96];
        snprintf(why, sizeof why, "no heartbeat for %.1f s", now - n->last_hb);
        mt_conn *c = mt_conn_find(s, n->serial);
        node_lost(cl, n, why);
        if (c) mt_conn_close_after_flush(c);
    }
    switch (cl->phase) {
    case MT_JOB_WAITING:
        if (alive_nodes(cl) >= (int)cl->min_nodes) plan(cl);
        else if (now > cl->deadline) {
            char names[400] = "";
            for (uint32_t i = 0; i < cl->n_nodes; i++)
                if (cl->nodes[i].used && !cl->nodes[i].lost) {
                    size_t l = strlen(names);
                    snprintf(names + l, sizeof names - l, "%s%s", l ? ", " : "", cl->nodes[i].name);
                }
            fail_job(cl, MT_ERR_NETWORK, "only %d of --min-nodes %u nodes joined within --join-timeout-s %u (%s)",
                     alive_nodes(cl), cl->min_nodes, s->opt->join_timeout_s, names);
        }
        break;
    case MT_JOB_PREPARING: {
        bool all = true;
        for (uint32_t i = 1; i < cl->n_nodes; i++) {
            mt_node *n = &cl->nodes[i];
            if (!n->in_job) continue;
            if (n->job == cl->job && !strcmp(n->state, "failed")) {
                fail_job(cl, MT_ERR_IO, "node %s cannot take job %llu: %s", n->name, (unsigned long long)cl->job,
                         n->message);
                return;
            }
            all &= n->job == cl->job && !strcmp(n->state, "ready");
        }
        if (all) start_job(cl);
        else if (now > cl->deadline) fail_job(cl, MT_ERR_NETWORK, "the nodes were not ready within the deadline");
        break;
    }
    case MT_JOB_RECOVERING:
        if (!cl->rank0_ended || mt_cluster_ranks_live(cl)) break;
        if (cl->lost[0]) restart(cl);
        else if (now > cl->deadline) {
            char *js = mt_srv_train_status_json(s);
            json_t *o = js ? json_loads(js, 0, NULL) : NULL;
            const char *e = json_string_value(json_object_get(o, "error"));
            const char *st = json_string_value(json_object_get(o, "state"));
            if (st && !strcmp(st, "cancelled"))
                fail_job(cl, MT_ERR_CANCELLED, "the ranks of a node stopped the job, and every node is still here");
            else
                fail_job(cl, MT_ERR_NETWORK, "rank 0 failed with every node alive: %s", e ? e : "?");
            json_decref(o);
            free(js);
        }
        break;
    default:
        break;
    }
}

void mt_coord_rank_ended(mt_cluster *cl, mt_rank_run *r) {
    if (r->status != 0 && r->status != MT_ERR_CANCELLED)
        MT_LOGW("cluster: local rank %d of job %llu failed: %s", r->rank, (unsigned long long)r->job, r->msg);
    mt_rank_run_join(r);
    if (cl->phase == MT_JOB_RECOVERING) mt_coord_tick(cl);
}

/* ---- with train.c ---- */

int mt_cluster_train_start(mt_server *s, const char *config_json, uint32_t min_nodes, char *msg, size_t cap) {
    mt_cluster *cl = s->cluster;
    if (!mt_cluster_accepts_joins(s)) {
        snprintf(msg, cap, "TrainStart.min_nodes %u: this server is not a cluster coordinator (start it with "
                 "--cluster-token-file and without --join)", min_nodes);
        return MT__V1__ERROR_CODE__ERR_UNSUPPORTED;
    }
    if (min_nodes > s->opt->max_nodes + 1) {
        snprintf(msg, cap, "TrainStart.min_nodes %u: at most --max-nodes %u workers and the coordinator can join",
                 min_nodes, s->opt->max_nodes);
        return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
    }
    json_error_t je;
    json_t *cfg = json_loads(config_json, 0, &je);
    if (!json_is_object(cfg)) {
        snprintf(msg, cap, "the config is not a JSON object (line %d: %s)", je.line, je.text);
        json_decref(cfg);
        return MT__V1__ERROR_CODE__ERR_CONFIG;
    }
    const char *resume = json_string_value(json_object_get(cfg, "resume"));
    char name[MT_CLUSTER_NAME_MAX + 1] = "";
    if (resume && !strcmp(resume, "auto")) {
        newest_checkpoint(cl, config_out_dir(cfg), name, sizeof name);
    } else if (resume && *resume) {
        char m2[400];
        if (mt_ship_relative(s->data_root, resume, name, sizeof name, m2, sizeof m2) != 0) {
            snprintf(msg, cap, "config key 'resume': %s", m2);
            json_decref(cfg);
            return MT__V1__ERROR_CODE__ERR_CONFIG;
        }
    }
    json_decref(cfg);
    char *copy = strdup(config_json);
    if (!copy) {
        snprintf(msg, cap, "out of memory");
        return MT__V1__ERROR_CODE__ERR_INTERNAL;
    }
    free(cl->config);
    cl->config = copy;
    snprintf(cl->resume, sizeof cl->resume, "%s", name);
    cl->min_nodes = min_nodes;
    cl->stop_asked = false;
    cl->restarts = 0;
    cl->lost[0] = 0;
    cl->lost_at = 0;
    cl->phase = MT_JOB_WAITING;
    cl->deadline = mt_cluster_now() + s->opt->join_timeout_s;
    snprintf(cl->state_text, sizeof cl->state_text, "waiting for %u nodes", min_nodes);
    MT_LOGI("cluster: train start: waiting for %u nodes (%d joined)", min_nodes, alive_nodes(cl));
    return 0;
}

bool mt_cluster_rank0_ended(mt_server *s, int status, const char *msg) {
    mt_cluster *cl = s->cluster;
    if (!cl || !cl->coordinator || (cl->phase != MT_JOB_RUNNING && cl->phase != MT_JOB_RECOVERING)) {
        if (cl && cl->coordinator && cl->phase == MT_JOB_ENDED) abort_job(cl, "the job ended");
        return false;
    }
    if (status == MT_OK || (status == MT_ERR_CANCELLED && cl->stop_asked)) {
        if (status == MT_ERR_CANCELLED) abort_job(cl, "the job was stopped");
        end_job(cl);
        return false;
    }
    /* Failed, or cancelled by another node's ranks (the ranks agree on any rank's cancel: a worker
     * shutting down): a lost node is looked for, as after a failure. */
    MT_LOGW("cluster: job %llu: rank 0 %s: %s", (unsigned long long)cl->job,
            status == MT_ERR_CANCELLED ? "stopped by another node's ranks" : "failed", msg ? msg : "?");
    cl->rank0_ended = true;
    if (cl->phase == MT_JOB_RUNNING) {
        cl->phase = MT_JOB_RECOVERING;
        cl->deadline = mt_cluster_now() + 3 * hb_s(cl) + 2;
        snprintf(cl->state_text, sizeof cl->state_text, "job %llu: rank 0 failed, looking for a lost node",
                 (unsigned long long)cl->job);
        abort_job(cl, "rank 0 failed");
    }
    mt_coord_tick(cl);
    return cl->phase != MT_JOB_ENDED;
}

void mt_cluster_rank0_create_failed(mt_server *s, const char *msg) {
    mt_cluster *cl = s->cluster;
    if (!cl || !cl->coordinator || cl->phase != MT_JOB_RUNNING) return;
    abort_job(cl, msg);
    end_job(cl);
}

bool mt_cluster_stop(mt_server *s, const char *why) {
    mt_cluster *cl = s->cluster;
    if (!cl || !cl->coordinator) return false;
    cl->stop_asked = true;
    switch (cl->phase) {
    case MT_JOB_WAITING:
    case MT_JOB_PREPARING:
        fail_job(cl, MT_ERR_CANCELLED, "%s", why);
        return true;
    case MT_JOB_RECOVERING:
        if (cl->rank0_ended) {
            fail_job(cl, MT_ERR_CANCELLED, "%s", why);
            return true;
        }
        abort_job(cl, why);
        end_job(cl);
        return false;
    default:
        return false;
    }
}

void mt_cluster_status_fill(mt_server *s, Mt__V1__TrainStatus *st) {
    mt_cluster *cl = s->cluster;
    if (!cl || !cl->coordinator) return;
    free(cl->status_buf);
    size_t n = cl->n_nodes;
    size_t bytes = n * (sizeof(Mt__V1__ClusterNode) + sizeof(Mt__V1__ClusterNode *) +
                        MT_CLUSTER_MAX_RANKS_PER_NODE * (sizeof(uint32_t) + sizeof(int32_t)));
    cl->status_buf = calloc(1, bytes ? bytes : 1);
    if (!cl->status_buf) return;
    Mt__V1__ClusterNode *nodes = (Mt__V1__ClusterNode *)cl->status_buf;
    Mt__V1__ClusterNode **ptrs = (Mt__V1__ClusterNode **)(nodes + n);
    uint32_t *ranks = (uint32_t *)(ptrs + n);
    int32_t *gpus = (int32_t *)(ranks + n * MT_CLUSTER_MAX_RANKS_PER_NODE);
    double now = mt_cluster_now();
    size_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        mt_node *x = &cl->nodes[i];
        if (!x->used) continue;
        Mt__V1__ClusterNode *o = &nodes[k];
        mt__v1__cluster_node__init(o);
        o->name = x->name;
        o->address = x->address;
        if (x->in_job) {
            o->ranks = ranks + i * MT_CLUSTER_MAX_RANKS_PER_NODE;
            o->n_ranks = (size_t)x->n_ranks;
            for (int r = 0; r < x->n_ranks; r++) o->ranks[r] = (uint32_t)(x->first_rank + r);
        }
        o->gpus = gpus + i * MT_CLUSTER_MAX_RANKS_PER_NODE;
        o->n_gpus = (size_t)x->n_gpus;
        for (int g = 0; g < x->n_gpus; g++) o->gpus[g] = x->gpus[g];
        if (i == 0) { /* the coordinator: its rank 0 is train.c's trainer */
            int training = 0;
            mt_srv_train_gauges(s, &training, &x->step, NULL, &x->tps);
            snprintf(x->state, sizeof x->state, "%s",
                     cl->phase == MT_JOB_RUNNING ? "training" : cl->phase == MT_JOB_PREPARING ? "ready" : "idle");
            char *js = mt_srv_train_status_json(s);
            json_t *jo = js ? json_loads(js, 0, NULL) : NULL;
            const char *w = json_string_value(json_object_get(jo, "weights_sha256"));
            snprintf(x->weights, sizeof x->weights, "%s", w ? w : "");
            json_decref(jo);
            free(js);
            o->heartbeat_age_s = 0;
        } else {
            o->heartbeat_age_s = now - x->last_hb;
        }
        o->state = x->state;
        o->step = x->step;
        o->tokens_per_s = x->tps;
        o->message = x->message;
        o->weights_sha256 = x->weights;
        ptrs[k++] = o;
    }
    st->nodes = ptrs;
    st->n_nodes = k;
    st->cluster_state = cl->state_text;
    st->world_size = cl->world;
    st->restarts = cl->restarts;
}

char *mt_cluster_decorate_event(mt_server *s, const char *event_json) {
    mt_cluster *cl = s->cluster;
    if (!cl || !cl->coordinator || cl->phase != MT_JOB_RUNNING) return NULL;
    json_t *o = json_loads(event_json, 0, NULL);
    json_t *rates = json_object_get(o, "rank_tokens_per_s");
    if (!json_is_array(rates)) {
        json_decref(o);
        return NULL;
    }
    json_t *per = json_object();
    for (uint32_t i = 0; i < cl->n_nodes; i++) {
        mt_node *n = &cl->nodes[i];
        if (!n->in_job) continue;
        double sum = 0;
        for (int r = 0; r < n->n_ranks; r++) sum += json_number_value(json_array_get(rates, (size_t)(n->first_rank + r)));
        json_object_set_new(per, n->name, json_real(sum));
    }
    json_object_set_new(o, "node_tokens_per_s", per);
    char *out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return out;
}
