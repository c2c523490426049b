/*
 * server.h — mt-server's internal structures, shared by the files of net/ (one file per idea):
 *
 *   server.c    startup, the event loop, teardown (mt_server_main)
 *   listener.c  binding, the protected-mode check, accepting
 *   tls.c       the OpenSSL context
 *   conn.c      the per-connection state machine: framing, watermarks, timers, closing
 *   dispatch.c  one decoded frame -> its handler (Hello/auth, health, stats, bye, cluster)
 *   translate.c translate requests: validation, queueing, completion
 *   worker.c    engine worker threads (one per GPU, or a CPU pool) running batches
 *   model.c     the serving model: generations, reference counts, the swap on promote
 *   result_queue.c  the queue from worker/trainer threads back to the loop (mutex + event_active)
 *   train.c     training control (trainer thread, admin threads for saves and promotes, subscribers)
 *   paths.c     --data-root confinement of client-named paths
 *   http.c      /healthz and /metrics (a small HTTP/1.x responder with a deadline and a connection limit)
 *   drain.c     SIGTERM/SIGINT: the drain
 *   cluster*.c  cluster mode: worker nodes, the distributed training job, file shipping (cluster.h)
 *
 * Threads: the loop thread owns every connection and request; workers touch only batch items and
 * the model under model_mu; the trainer and admin threads talk to the loop only through result_queue.c.
 */
#ifndef MT_NET_SERVER_H
#define MT_NET_SERVER_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <sys/socket.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "auth.h"
#include "batcher.h"
#include "engine.h"
#include "frame.h"
#include "metrics.h"
#include "options.h"

struct bufferevent;
struct evconnlistener;
struct mt_http_conn;

typedef struct mt_server mt_server;
typedef struct mt_conn mt_conn;
typedef struct mt_treq mt_treq;
typedef struct mt_srv_train_ctl mt_srv_train_ctl;
typedef struct mt_cluster mt_cluster;

/* ---- the serving model ---- */

typedef struct mt_srv_model {
    int refs;               /* under mt_server.model_mu */
    uint64_t generation;
    int n;                  /* one handle per device (1 on CPU) */
    void **handles;
    char *path;
    char *info;             /* engine JSON, may be NULL */
    uint32_t max_len;       /* the model's max_len from info (tokens, [SOS]/[EOS] included), 0 unknown */
} mt_srv_model;

mt_srv_model *mt_srv_model_load_all(mt_server *s, const char *path, mt_eng_err *err);
void mt_srv_model_install(mt_server *s, mt_srv_model *m); /* takes the caller's reference */
mt_srv_model *mt_srv_model_get(mt_server *s);             /* +1 reference, or NULL */
void mt_srv_model_put(mt_server *s, mt_srv_model *m);     /* -1; frees at 0 */

/* ---- connections ---- */

struct mt_conn {
    mt_server *srv;
    mt_conn *prev, *next;
    uint64_t serial;               /* unique for the server's life: async answers find the conn by it */
    struct bufferevent *bev;
    struct event *timer;           /* hello / idle / linger */
    struct event *resume;          /* deferred work: yield between frames, closing */
    mt_framer fr;
    char peer[80];
    bool rejecting;                /* over max-connections: an Error, then closed */
    bool hello_done, closing, read_eof, bye, paused_out, subscribed;
    Mt__V1__Role role;
    uint64_t sub_id;
    uint64_t accepted_us, last_active_us;
    size_t read_hwm;
    uint64_t *pending;             /* ids of requests in flight (translate and async admin) */
    uint32_t n_pending;
    mt_treq *treqs;                /* this connection's translate requests */
    uint32_t queued;               /* their sentences not yet answered (max-conn-queue-sentences) */
};

void mt_conn_accept(mt_server *s, int fd, const struct sockaddr *sa, int salen);
void mt_conn_send(mt_conn *c, const mt_frame *f);
void mt_conn_send_error(mt_conn *c, uint64_t id, int code, bool fatal, int engine_status, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Stop reading, flush what is queued, then close (never frees synchronously). */
void mt_conn_close_after_flush(mt_conn *c);
/* A request finished: closes a connection that said Bye or hit EOF once nothing is in flight. */
void mt_conn_request_done(mt_conn *c, uint64_t id);
void mt_conn_hello_done(mt_conn *c);  /* Hello accepted: the post-Hello limits and the idle timer */
void mt_conn_bye(mt_conn *c);         /* Bye: read nothing more, close once the answers are out */
bool mt_conn_has_pending(const mt_conn *c, uint64_t id);
void mt_conn_add_pending(mt_conn *c, uint64_t id);
mt_conn *mt_conn_find(mt_server *s, uint64_t serial);
void mt_conn_free_all(mt_server *s);
uint64_t mt_conn_output_len(const mt_conn *c);

/* ---- dispatch and translation ---- */

void mt_dispatch(mt_conn *c, mt_frame *f); /* takes f */
void mt_translate_submit(mt_conn *c, mt_frame *f); /* takes f */
void mt_translate_orphan(mt_conn *c);      /* the conn is going: its requests finish unanswered */

/* ---- the queue back to the loop ---- */

typedef enum mt_post_kind {
    MT_POST_BATCH = 0,
    MT_POST_TRAIN_CREATED,
    MT_POST_TRAIN_EVENT,
    MT_POST_TRAIN_ENDED,
    MT_POST_JOB_DONE,
    MT_POST_PARTIAL,
    MT_POST_RANK_ENDED      /* cluster.h: a rank trainer thread of this node ended (ptr: its mt_rank_run) */
} mt_post_kind;

typedef struct mt_post_msg {
    struct mt_post_msg *next;
    mt_post_kind kind;
    /* BATCH */
    mt_bitem **items;
    uint32_t n;
    mt_bitem *dropped;
    uint64_t batch_start_us;
    /* all */
    int status;             /* mt_status (> 0), or minus an Mt__V1__ErrorCode for the server's own failures */
    char *text;             /* BATCH/ENDED: error message; EVENT: the event JSON; PARTIAL: the text so far */
    void *ptr;              /* CREATED: the trainer; JOB_DONE: the job; PARTIAL: the mt_bitem */
} mt_post_msg;

int mt_post_init(mt_server *s);
void mt_post(mt_server *s, mt_post_msg *m);
void mt_post_run(mt_server *s);            /* handle everything queued (also used at teardown) */
void mt_post_free(mt_server *s);
void mt_translate_on_batch(mt_server *s, mt_post_msg *m);
void mt_translate_on_partial(mt_server *s, mt_post_msg *m); /* a streaming request's partial answer */

/* ---- workers ---- */

typedef struct mt_worker {
    mt_server *srv;
    int idx;
    int handle_idx;          /* which device's model handle */
    pthread_t th;
    bool started;
    mt_srv_model *gen;       /* the model its translator was made from */
    void *tr;
    mt_batch batch;
} mt_worker;

int mt_workers_start(mt_server *s);
void mt_workers_stop(mt_server *s);        /* closes the batcher, joins */

/* ---- training control ---- */

int mt_srv_train_init(mt_server *s);
void mt_srv_train_handle(mt_conn *c, mt_frame *f); /* takes f; admin role already checked */
void mt_srv_train_on_post(mt_server *s, mt_post_msg *m);
void mt_srv_train_begin_drain(mt_server *s);
bool mt_srv_train_busy(mt_server *s);          /* a trainer thread or an admin job is still running */
void mt_srv_train_shutdown(mt_server *s);      /* cancels and joins the trainer and admin threads */
void mt_srv_train_free(mt_server *s);          /* after the last mt_post_run */
void mt_srv_train_gauges(mt_server *s, int *training, int64_t *step, double *loss, double *tps);
int mt_map_engine_status(int st, bool config);
/* For cluster mode's job controller (cluster_coord.c): start rank 0's trainer with config (no
 * request to answer; returns 0 or -1), mark a job that waits for nodes as starting, send a progress
 * event, end the job for good. */
int mt_srv_train_launch(mt_server *s, const char *config);
void mt_srv_train_set_starting(mt_server *s);
void mt_srv_train_event(mt_server *s, const char *event_json);
void mt_srv_train_finish(mt_server *s, int status, const char *msg);
/* The last status JSON of train.c's trainer (malloc'd), or NULL. */
char *mt_srv_train_status_json(mt_server *s);

/* ---- paths ---- */

/* Resolves path (relative to root, or absolute) and checks it stays inside root after symlinks.
 * must_exist: the file itself must exist; else its directory must. Returns 0 with out filled, or
 * ERR_PATH_OUTSIDE_ROOT / ERR_NOT_FOUND / ERR_INVALID_ARGUMENT with msg. */
int mt_srv_path_resolve(const char *root, const char *path, bool must_exist, char *out, size_t outlen, char *msg,
                    size_t msglen);

/* ---- http, drain, tls ---- */

int mt_http_start(mt_server *s, char *err, size_t errlen);
void mt_http_stop(mt_server *s);
int mt_drain_init(mt_server *s);
void mt_drain_begin(mt_server *s, const char *why);
void mt_drain_check(mt_server *s);         /* call when work finishes; ends the loop when all is done */
void mt_drain_free(mt_server *s);
SSL_CTX *mt_tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen);
int mt_listen_start(mt_server *s, char *err, size_t errlen);
/* "host:port" / "[v6]:port" -> a socket address. Returns 0 or -1 (err filled). */
int mt_resolve_hostport(const char *hostport, struct sockaddr_storage *ss, int *sslen, char *err, size_t errlen);
bool mt_addr_is_loopback(const struct sockaddr *sa);
void mt_addr_format(const struct sockaddr *sa, char *out, size_t n);
void mt_listen_stop(mt_server *s);
void mt_metrics_gauges_fill(mt_server *s, mt_metrics_gauges *g);
Mt__V1__ServingState mt_serving_state(mt_server *s);

/* Starts a thread with SIGTERM, SIGINT and SIGPIPE blocked, so signals reach only the loop thread
 * (drain.c). Returns pthread_create's result. */
int mt_srv_thread_start(pthread_t *th, void *(*fn)(void *), void *arg);

/* ---- the server ---- */

#define MT_MAX_LISTENERS 1

struct mt_server {
    mt_srv_options *opt;
    const mt_engine *eng;
    mt_metrics metrics;
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *listen_retry;  /* re-enables accepting after EMFILE and the like */
    struct evconnlistener *http_listener;  /* --http (http.c) */
    struct mt_http_conn *http_conns;        /* its open connections */
    uint32_t n_http_conns;
    SSL_CTX *ssl;
    mt_auth auth;
    mt_srv_batcher *batcher;
    mt_worker *workers;
    uint32_t n_workers;
    int kernel_threads;      /* per translator (CPU) */
    int n_devices;           /* model handles per generation */
    int devices[MT_SRV_MAX_GPUS];

    pthread_mutex_t model_mu;
    mt_srv_model *model;
    uint64_t model_seq;

    mt_conn *conns;
    uint32_t n_conns, n_rejecting;
    uint64_t conn_seq;

    pthread_mutex_t post_mu;
    mt_post_msg *post_head, *post_tail;
    struct event *post_ev;

    mt_srv_train_ctl *train;
    mt_cluster *cluster;     /* cluster mode (cluster.h); NULL without --cluster-token-file */

    bool draining, stopped;
    struct event *sig_term, *sig_int, *drain_tick;
    uint64_t drain_deadline_us;
    int exit_code;

    uint64_t start_us;
    uint64_t inflight;       /* translate requests alive, answered or orphaned not yet freed */
    char data_root[PATH_MAX];
    char listen_addr[128], http_addr[128];
};

/* Runs the whole server: options, engine, listeners, loop, drain. Returns the process exit code. */
int mt_server_main(int argc, char **argv, const mt_engine *eng);

#endif
