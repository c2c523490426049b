/*
 * comm.c — the communicator (see comm.h) over Gloo: rendezvous and handshake through the store, a
 * FIFO of operations served by one thread per communicator (Gloo's ops are synchronous), failures
 * turned into messages that name the operation and the lost rank.
 */
#include "comm/comm.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "comm/gloo_shim.h"
#include "comm/nccl.h"
#include "comm/store.h"
#include "core/error.h"
#include "core/numeric.h"

/* NCCL (cuda/comm_nccl.cu) is linked only in CUDA builds with NCCL, and not into the programs that
 * link the engine's objects without the CUDA ones (the kernel emulator's tests): weak references,
 * NULL where it is absent. */
#pragma weak mt_nccl_unique_id
#pragma weak mt_nccl_create
#pragma weak mt_nccl_allreduce
#pragma weak mt_nccl_broadcast
#pragma weak mt_nccl_allgather
#pragma weak mt_nccl_barrier
#pragma weak mt_nccl_abort
#pragma weak mt_nccl_free

enum { OP_ALLREDUCE, OP_BROADCAST, OP_ALLGATHER, OP_BARRIER };
static const char *const op_names[] = {"all-reduce", "broadcast", "all-gather", "barrier"};

struct mt_comm_work {
    mt_comm *c;
    int kind;
    void *buf;
    const void *in;
    size_t n;          /* elements (all-reduce) or bytes */
    mt_dtype dtype;
    mt_comm_op op;
    int root;
    uint32_t seq;
    int done;
    mt_status st;
    char msg[MT_ERROR_MAX];
    mt_comm_work *next;
};

struct mt_comm {
    int rank, world;
    double timeout_s;
    mt_store_server *server;   /* rank 0 */
    mt_store *store;
    mt_gloo *gloo;             /* CPU ranks */
    mt_nccl *nccl;             /* GPU ranks (buffers are device memory) */
    pthread_t th;
    int th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mt_comm_work *head, *tail; /* queued, not started */
    int busy;                  /* the thread is inside an operation */
    int stopping;
    mt_status failed;          /* first failure (sticky) */
    char fail_msg[MT_ERROR_MAX];
    uint32_t seq;
    double busy_s;             /* seconds spent inside operations */
};

static void abs_deadline(struct timespec *ts, double from_now) {
    clock_gettime(CLOCK_REALTIME, ts);
    double t = (double)ts->tv_sec + 1e-9 * (double)ts->tv_nsec + from_now;
    ts->tv_sec = (time_t)t;
    ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
}

/* ---- reductions Gloo calls back ------------------------------------------------------------------ */

static void sum_f32(void *out, const void *a, const void *b, size_t n) {
    float *o = out;
    const float *x = a, *y = b;
    for (size_t i = 0; i < n; i++) o[i] = x[i] + y[i];
}

static void sum_bf16(void *out, const void *a, const void *b, size_t n) {
    uint16_t *o = out;
    const uint16_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++) o[i] = mt_f32_to_bf16(mt_bf16_to_f32(x[i]) + mt_bf16_to_f32(y[i]));
}

/* ---- the store as Gloo's Store --------------------------------------------------------------------- */

static int store_set(void *user, const char *key, const void *val, size_t len) {
    return mt_store_set(user, key, val, len) != MT_OK;
}

static int store_get(void *user, const char *key, int timeout_ms, void **val, size_t *len) {
    return mt_store_get(user, key, timeout_ms / 1000.0, val, len) != MT_OK;
}

/* ---- the operation thread ---------------------------------------------------------------------- */

/* The message of a failed operation: what, then who was lost (asked of the store), then Gloo's words. */
static void describe_failure(mt_comm *c, const mt_comm_work *w, const char *gloo_msg, char *out, size_t cap) {
    char lost[512] = "";
    for (int tries = 0; tries < 6; tries++) { /* the store may learn of a death a moment after Gloo */
        if (mt_store_diagnose(c->store, lost, sizeof lost) >= 0 || lost[0]) break;
        struct timespec ts = {0, 500 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    char size[64] = "";
    if (w->kind == OP_ALLREDUCE) snprintf(size, sizeof size, " of %zu %s", w->n, w->dtype == MT_DTYPE_BF16 ? "bf16" : "f32");
    else if (w->kind != OP_BARRIER) snprintf(size, sizeof size, " of %zu bytes", w->n);
    snprintf(out, cap, "%s #%u%s on rank %d of %d failed: %s (%s: %s)", op_names[w->kind], w->seq, size, c->rank,
             c->world, lost[0] ? lost : "a peer failed or the network dropped", c->nccl ? "nccl" : "gloo", gloo_msg);
}

static int run_nccl(mt_comm *c, mt_comm_work *w, char *err, size_t cap) {
    switch (w->kind) {
    case OP_ALLREDUCE:
        return mt_nccl_allreduce(c->nccl, w->buf, w->n, w->dtype == MT_DTYPE_BF16, w->op == MT_COMM_AVG, err, cap);
    case OP_BROADCAST: return mt_nccl_broadcast(c->nccl, w->buf, w->n, w->root, err, cap);
    case OP_ALLGATHER: return mt_nccl_allgather(c->nccl, w->in, w->buf, w->n, err, cap);
    default: return mt_nccl_barrier(c->nccl, err, cap);
    }
}

static void run_work(mt_comm *c, mt_comm_work *w) {
    char err[MT_ERROR_MAX] = "";
    int rc = 0;
    if (c->nccl) {
        rc = run_nccl(c, w, err, sizeof err);
        if (rc != 0) {
            w->st = rc == MT_NCCL_NO_DEVICE ? MT_ERR_NO_DEVICE : MT_ERR_NCCL;
            describe_failure(c, w, err, w->msg, sizeof w->msg);
        }
        return;
    }
    switch (w->kind) {
    case OP_ALLREDUCE: {
        int bf = w->dtype == MT_DTYPE_BF16;
        rc = mt_gloo_allreduce(c->gloo, w->buf, w->n, bf ? 2 : 4, bf ? sum_bf16 : sum_f32, w->seq, err, sizeof err);
        if (rc == 0 && w->op == MT_COMM_AVG) {
            float inv = 1.0f / (float)c->world;
            if (bf) {
                uint16_t *p = w->buf;
                for (size_t i = 0; i < w->n; i++) p[i] = mt_f32_to_bf16(mt_bf16_to_f32(p[i]) * inv);
            } else {
                float *p = w->buf;
                for (size_t i = 0; i < w->n; i++) p[i] *= inv;
            }
        }
        break;
    }
    case OP_BROADCAST: rc = mt_gloo_broadcast(c->gloo, w->buf, w->n, w->root, w->seq, err, sizeof err); break;
    case OP_ALLGATHER: rc = mt_gloo_allgather(c->gloo, w->in, w->buf, w->n, w->seq, err, sizeof err); break;
    case OP_BARRIER: rc = mt_gloo_barrier(c->gloo, w->seq, err, sizeof err); break;
    }
    if (rc != 0) {
        w->st = MT_ERR_NETWORK;
        describe_failure(c, w, err, w->msg, sizeof w->msg);
    }
}

static void *comm_main(void *arg) {
    mt_comm *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->head && !c->stopping) pthread_cond_wait(&c->cv, &c->mu);
        if (!c->head) break;
        mt_comm_work *w = c->head;
        c->head = w->next;
        if (!c->head) c->tail = NULL;
        if (c->failed != MT_OK) {
            w->st = c->failed;
            snprintf(w->msg, sizeof w->msg, "%s #%u not run: %.900s", op_names[w->kind], w->seq, c->fail_msg);
        } else {
            c->busy = 1;
            pthread_mutex_unlock(&c->mu);
            double t0 = mt_now_s();
            run_work(c, w);
            pthread_mutex_lock(&c->mu);
            c->busy_s += mt_now_s() - t0;
            c->busy = 0;
            if (w->st != MT_OK && c->failed == MT_OK) {
                c->failed = w->st;
                snprintf(c->fail_msg, sizeof c->fail_msg, "%s", w->msg);
            }
        }
        w->done = 1;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static mt_status submit(mt_comm *c, mt_comm_work *w, mt_comm_work **out) {
    if (!c) {
        free(w);
        return mt_error(MT_ERR_INVALID_ARG, "communicator is NULL");
    }
    w->c = c;
    pthread_mutex_lock(&c->mu);
    w->seq = ++c->seq;
    if (c->failed != MT_OK) {
        mt_status st = c->failed;
        char msg[MT_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", c->fail_msg);
        pthread_mutex_unlock(&c->mu);
        free(w);
        return mt_error(st, "%s", msg);
    }
    if (c->tail) c->tail->next = w;
    else c->head = w;
    c->tail = w;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (out) {
        *out = w;
        return MT_OK;
    }
    return mt_comm_wait(w);
}

static mt_comm_work *work_new(int kind) {
    mt_comm_work *w = calloc(1, sizeof *w);
    if (w) w->kind = kind;
    return w;
}

mt_status mt_comm_allreduce(mt_comm *c, void *buf, size_t n, mt_dtype dtype, mt_comm_op op, mt_comm_work **work) {
    if (dtype != MT_DTYPE_F32 && dtype != MT_DTYPE_BF16)
        return mt_error(MT_ERR_DTYPE, "all-reduce: dtype must be f32 or bf16");
    if (!buf && n) return mt_error(MT_ERR_INVALID_ARG, "all-reduce: buffer is NULL");
    mt_comm_work *w = work_new(OP_ALLREDUCE);
    if (!w) return mt_error(MT_ERR_NOMEM, "all-reduce: out of memory");
    w->buf = buf;
    w->n = n;
    w->dtype = dtype;
    w->op = op;
    return submit(c, w, work);
}

mt_status mt_comm_broadcast(mt_comm *c, void *buf, size_t bytes, int root, mt_comm_work **work) {
    if (c && (root < 0 || root >= c->world))
        return mt_error(MT_ERR_INVALID_ARG, "broadcast: root %d outside a world of %d", root, c->world);
    mt_comm_work *w = work_new(OP_BROADCAST);
    if (!w) return mt_error(MT_ERR_NOMEM, "broadcast: out of memory");
    w->buf = buf;
    w->n = bytes;
    w->root = root;
    return submit(c, w, work);
}

mt_status mt_comm_allgather(mt_comm *c, const void *in, void *out, size_t bytes, mt_comm_work **work) {
    mt_comm_work *w = work_new(OP_ALLGATHER);
    if (!w) return mt_error(MT_ERR_NOMEM, "all-gather: out of memory");
    w->in = in;
    w->buf = out;
    w->n = bytes;
    return submit(c, w, work);
}

mt_status mt_comm_barrier(mt_comm *c) {
    mt_comm_work *w = work_new(OP_BARRIER);
    if (!w) return mt_error(MT_ERR_NOMEM, "barrier: out of memory");
    return submit(c, w, NULL);
}

mt_status mt_comm_test(mt_comm_work *w, int *done) {
    mt_comm *c = w->c;
    pthread_mutex_lock(&c->mu);
    *done = w->done;
    mt_status st = w->done ? w->st : MT_OK;
    if (st != MT_OK) mt_error(st, "%s", w->msg);
    pthread_mutex_unlock(&c->mu);
    return st;
}

mt_status mt_comm_wait(mt_comm_work *w) {
    mt_comm *c = w->c;
    /* Gloo bounds each op by timeout_s; the ops queued before this one add theirs. */
    double limit = mt_now_s() + 2 * c->timeout_s + 10.0;
    pthread_mutex_lock(&c->mu);
    while (!w->done && mt_now_s() < limit) {
        struct timespec ts;
        abs_deadline(&ts, 0.5);
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    if (!w->done) {
        /* Still queued or running past every bound: fail it and everything after it. */
        if (c->failed == MT_OK) {
            c->failed = MT_ERR_NETWORK;
            snprintf(c->fail_msg, sizeof c->fail_msg, "%s #%u on rank %d did not finish within %.0f s", op_names[w->kind],
                     w->seq, c->rank, 2 * c->timeout_s + 10.0);
        }
        char msg[MT_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", c->fail_msg);
        pthread_mutex_unlock(&c->mu);
        return mt_error(MT_ERR_NETWORK, "%s", msg); /* w stays owned by the queue/thread */
    }
    mt_status st = w->st;
    char msg[MT_ERROR_MAX];
    snprintf(msg, sizeof msg, "%s", w->msg);
    pthread_mutex_unlock(&c->mu);
    free(w);
    return st == MT_OK ? MT_OK : mt_error(st, "%s", msg);
}

mt_status mt_comm_error(mt_comm *c) {
    pthread_mutex_lock(&c->mu);
    mt_status st = c->failed;
    if (st != MT_OK) mt_error(st, "%s", c->fail_msg);
    pthread_mutex_unlock(&c->mu);
    return st;
}

double mt_comm_busy_seconds(mt_comm *c) {
    pthread_mutex_lock(&c->mu);
    double s = c->busy_s;
    pthread_mutex_unlock(&c->mu);
    return s;
}

int mt_comm_rank(const mt_comm *c) { return c->rank; }
int mt_comm_world(const mt_comm *c) { return c->world; }

/* ---- creation ------------------------------------------------------------------------------------ */

static mt_status handshake(mt_comm *c, const mt_comm_options *o) {
    const char *mine = o && o->handshake ? o->handshake : "";
    char key[64];
    snprintf(key, sizeof key, "hs/%d", c->rank);
    MT_TRY(mt_store_set(c->store, key, mine, strlen(mine)));
    char verdict[MT_ERROR_MAX] = "";
    if (c->rank != 0) {
        void *v;
        size_t n;
        MT_TRY(mt_store_get(c->store, "hs/0", c->timeout_s, &v, &n));
        char *r0 = malloc(n + 1);
        if (!r0) {
            free(v);
            return mt_error(MT_ERR_NOMEM, "rendezvous: out of memory");
        }
        memcpy(r0, v, n);
        r0[n] = 0;
        free(v);
        if (strcmp(r0, mine) != 0) {
            char d[MT_ERROR_MAX - 64] = "the handshake differs";
            if (o && o->diff) o->diff(mine, r0, d, sizeof d);
            snprintf(verdict, sizeof verdict, "rank %d differs from rank 0: %s", c->rank, d);
        }
        free(r0);
        snprintf(key, sizeof key, "verdict/%d", c->rank);
        MT_TRY(mt_store_set(c->store, key, verdict, strlen(verdict)));
    } else {
        /* Rank 0 collects every verdict and announces the outcome. */
        for (int r = 1; r < c->world; r++) {
            void *v;
            size_t n;
            snprintf(key, sizeof key, "verdict/%d", r);
            mt_status st = mt_store_get(c->store, key, c->timeout_s, &v, &n);
            if (st == MT_ERR_CONFIG) return st; /* the store refused a rank: every GET says so */
            if (st != MT_OK) {
                /* Rank r never came: say so to those who did. */
                char msg[MT_ERROR_MAX];
                snprintf(msg, sizeof msg, "rank %d did not join within %.0f s: %s", r, c->timeout_s, mt_last_error());
                snprintf(verdict, sizeof verdict, "%s", msg);
                break;
            }
            if (n && !verdict[0]) snprintf(verdict, sizeof verdict, "%.*s", (int)n, (const char *)v);
            free(v);
        }
        MT_TRY(mt_store_set(c->store, "verdict", verdict, strlen(verdict)));
    }
    void *v;
    size_t n;
    MT_TRY(mt_store_get(c->store, "verdict", c->timeout_s, &v, &n));
    mt_status st = MT_OK;
    if (n) st = mt_error(MT_ERR_CONFIG, "rendezvous refused (rank %d of %d): %.*s", c->rank, c->world, (int)n, (const char *)v);
    free(v);
    if (st == MT_OK) return MT_OK;
    /* A refusal: rank 0 keeps the store up until every rank has read it (or a short while). */
    char msg[MT_ERROR_MAX];
    snprintf(msg, sizeof msg, "%s", mt_last_error());
    if (c->rank != 0) {
        snprintf(key, sizeof key, "ack/%d", c->rank);
        mt_store_set(c->store, key, "", 0);
    } else {
        double wait = c->timeout_s < 10 ? c->timeout_s : 10;
        for (int r = 1; r < c->world; r++) {
            snprintf(key, sizeof key, "ack/%d", r);
            if (mt_store_get(c->store, key, wait, &v, &n) != MT_OK) break;
            free(v);
        }
    }
    return mt_error(st, "%s", msg);
}

/* GPU ranks: rank 0's NCCL unique id through the store, then a nonblocking NCCL communicator. */
static mt_status nccl_connect(mt_comm *c, int device) {
    if (!mt_nccl_create)
        return mt_error(MT_ERR_NO_DEVICE, "communicator: rank %d asks for NCCL on cuda:%d, but this build of "
                        "MicroTensor has no NCCL", c->rank, device);
    char id[MT_NCCL_ID_BYTES], err[MT_ERROR_MAX] = "";
    int rc = MT_NCCL_OK;
    if (c->rank == 0) {
        rc = mt_nccl_unique_id(device, id, err, sizeof err);
        /* The others learn of a failure here through an empty id instead of waiting for the timeout. */
        MT_TRY(mt_store_set(c->store, "nccl/id", id, rc == MT_NCCL_OK ? sizeof id : 0));
    } else {
        void *v;
        size_t n;
        MT_TRY(mt_store_get(c->store, "nccl/id", c->timeout_s, &v, &n));
        if (n == sizeof id) memcpy(id, v, sizeof id);
        free(v);
        if (n != sizeof id) return mt_error(MT_ERR_NCCL, "communicator: rank 0 could not create an NCCL id");
    }
    if (rc == MT_NCCL_OK) rc = mt_nccl_create(device, c->rank, c->world, id, c->timeout_s, &c->nccl, err, sizeof err);
    if (rc != MT_NCCL_OK)
        return mt_error(rc == MT_NCCL_NO_DEVICE ? MT_ERR_NO_DEVICE : MT_ERR_NCCL, "communicator: rank %d of %d on cuda:%d: %s",
                        c->rank, c->world, device, err);
    return MT_OK;
}

mt_status mt_comm_create(int rank, int world, const char *rendezvous, const mt_comm_options *o, mt_comm **out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "mt_comm_create: out is NULL");
    if (world < 1 || world > MT_STORE_MAX_WORLD || rank < 0 || rank >= world)
        return mt_error(MT_ERR_INVALID_ARG, "communicator: rank %d of world %d is out of range", rank, world);
    char host[256];
    int port;
    MT_TRY(mt_store_parse_addr(rendezvous, host, sizeof host, &port));
    mt_comm *c = calloc(1, sizeof *c);
    if (!c) return mt_error(MT_ERR_NOMEM, "communicator: out of memory");
    c->rank = rank;
    c->world = world;
    c->timeout_s = o && o->timeout_s > 0 ? o->timeout_s : 60.0;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    mt_status st = MT_OK;
    if (rank == 0) st = mt_store_server_start(host, port, world, &c->server, NULL);
    if (st == MT_OK) st = mt_store_connect(host, port, rank, world, c->timeout_s, &c->store);
    if (st == MT_OK) st = handshake(c, o);
    char local[256];
    int nccl = o && o->use_nccl;
    if (st == MT_OK && nccl) st = nccl_connect(c, o->device);
    if (st == MT_OK && !nccl) st = mt_store_local_addr(host, port, local, sizeof local);
    if (st == MT_OK && !nccl) {
        char err[MT_ERROR_MAX] = "";
        mt_gloo_store gs = {store_set, store_get, c->store};
        if (mt_gloo_create(rank, world, local, &gs, (int)(c->timeout_s * 1000), &c->gloo, err, sizeof err) != 0) {
            char lost[512] = "";
            mt_store_diagnose(c->store, lost, sizeof lost);
            st = mt_error(MT_ERR_NETWORK, "communicator: rank %d of %d cannot connect to its peers at %s: %s%s%s", rank,
                          world, local, err, lost[0] ? "; " : "", lost);
        }
    }
    if (st == MT_OK) {
        if (pthread_create(&c->th, NULL, comm_main, c) != 0) st = mt_error(MT_ERR_INTERNAL, "communicator: no thread");
        else c->th_started = 1;
    }
    if (st != MT_OK) {
        char msg[MT_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", mt_last_error());
        mt_comm_abort(c);
        mt_comm_free(c);
        return mt_error(st, "%s", msg);
    }
    *out = c;
    return MT_OK;
}

void mt_comm_abort(mt_comm *c) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    if (c->failed == MT_OK) {
        c->failed = MT_ERR_CANCELLED;
        snprintf(c->fail_msg, sizeof c->fail_msg, "communicator of rank %d aborted", c->rank);
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void mt_comm_free(mt_comm *c) {
    if (!c) return;
    int abandoned = 0;
    if (c->th_started) {
        pthread_mutex_lock(&c->mu);
        c->stopping = 1;
        pthread_cond_broadcast(&c->cv);
        double limit = mt_now_s() + c->timeout_s + 5.0;
        while ((c->busy || c->head) && mt_now_s() < limit) {
            struct timespec ts;
            abs_deadline(&ts, 0.5);
            pthread_cond_timedwait(&c->cv, &c->mu, &ts);
        }
        abandoned = c->busy;
        pthread_mutex_unlock(&c->mu);
        if (abandoned) pthread_detach(c->th);
        else pthread_join(c->th, NULL);
    }
    if (abandoned) return; /* its thread still uses it; the process is about to report the failure */
    if (c->failed != MT_OK) mt_store_server_linger(c->server, c->timeout_s < 10 ? c->timeout_s : 10);
    if (c->store && c->failed == MT_OK) mt_store_close(c->store);
    else mt_store_drop(c->store);
    mt_gloo_free(c->gloo);
    if (c->nccl && c->failed != MT_OK) mt_nccl_abort(c->nccl); /* ncclCommDestroy could wait on a gone peer */
    else if (c->nccl) mt_nccl_free(c->nccl);
    mt_store_server_stop(c->server);
    while (c->head) {
        mt_comm_work *w = c->head;
        c->head = w->next;
        free(w);
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
