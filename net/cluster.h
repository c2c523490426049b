/*
 * cluster.h — cluster mode: data-parallel training over the ranks of several mt-server nodes
 * (net/README.md "Cluster mode"; the frames are in proto/README.md).
 *
 *   cluster.c         the lifecycle of both roles: setup, the 0.5 s tick, posts, drain, teardown
 *   cluster_coord.c   the coordinator: joins, heartbeats, the node table, the job (wait for
 *                     --min-nodes, assign ranks, ship files, start, restart after a lost node)
 *   cluster_worker.c  a worker node (--join): its link to the coordinator, assignments, fetching,
 *                     heartbeats, reconnecting
 *   cluster_ranks.c   the trainer threads of a node's ranks (all but the coordinator's rank 0, which
 *                     is train.c's trainer)
 *   cluster_ship.c    files between nodes: names confined to the data root, zstd chunks, the
 *                     receiver's resumable .part files verified by SHA-256
 *
 * Everything here runs on the loop thread, except the rank trainer threads, which report back
 * through result_queue.c (MT_POST_RANK_ENDED).
 */
#ifndef MT_NET_CLUSTER_H
#define MT_NET_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server.h"

#define MT_CLUSTER_CHUNK_BYTES (1u << 20)   /* raw bytes per CheckpointChunk */
#define MT_CLUSTER_WINDOW_BYTES (8u << 20)  /* the most one ClusterFetch gets before the next one */
#define MT_CLUSTER_MAX_FILES 64             /* files of one job (corpora parts, tokenizer, checkpoint) */
#define MT_CLUSTER_NAME_MAX 1024
#define MT_CLUSTER_MAX_RANKS_PER_NODE MT_SRV_MAX_GPUS

/* Receiver: one file being fetched into root/name (through .name.SHA.part beside it). */
typedef struct mt_ship_rx {
    char name[MT_CLUSTER_NAME_MAX + 1];
    char sha256[65];
    uint64_t size;
    uint64_t offset;          /* bytes of the .part file known good */
    uint64_t asked_end;       /* the end of the bytes asked for so far */
    uint64_t ask_off, ask_len; /* MT_SHIP_ASK: the ClusterFetch to send */
    int fd;                   /* the .part file */
    void *md;                 /* EVP_MD_CTX: SHA-256 of the bytes [0, offset) written so far */
    int dir_fd;               /* its directory */
    char part[MT_CLUSTER_NAME_MAX + 96];
    int attempts;             /* whole-file verifications failed */
    uint64_t received, corrupt; /* chunk counts */
    uint64_t wire;            /* compressed bytes received (the zstd ratio: size / wire) */
} mt_ship_rx;

/* Seconds on the monotonic clock of batcher.h. */
static inline double mt_cluster_now(void) { return (double)mt_now_us() / 1e6; }

/* ---- the state of both roles ---- */

typedef struct mt_cfile {
    char name[MT_CLUSTER_NAME_MAX + 1];
    char sha256[65];
    uint64_t size;
} mt_cfile;

typedef struct mt_rank_run mt_rank_run;

/* A node as the coordinator sees it; nodes[0] is the coordinator itself. */
typedef struct mt_node {
    bool used, lost;
    char name[64];
    char address[128];
    uint64_t serial;              /* its link (an mt_conn); 0 for the coordinator */
    int gpus[MT_SRV_MAX_GPUS];
    int n_gpus;                   /* 0: one CPU rank */
    double last_hb;               /* mt_now_s of its last heartbeat */
    /* what it reported */
    uint64_t job;
    char state[16];
    int64_t step;
    double tps;
    char message[256];
    char weights[65];
    /* its part of the current job */
    bool in_job;
    int first_rank, n_ranks;
} mt_node;

enum { MT_JOB_NONE = 0, MT_JOB_WAITING, MT_JOB_PREPARING, MT_JOB_RUNNING, MT_JOB_RECOVERING, MT_JOB_ENDED };

typedef struct mt_cluster {
    mt_server *s;
    struct event *tick;
    bool coordinator;             /* accepts joins (--cluster-token-file without --join) */
    /* the trainer threads of this node's ranks (a worker's, or the coordinator's beyond rank 0) */
    mt_rank_run *ranks;           /* MT_CLUSTER_MAX_RANKS_PER_NODE */
    int n_ranks;

    /* ---- coordinator (cluster_coord.c) ---- */
    mt_node *nodes;               /* 1 + max_nodes */
    uint32_t n_nodes;             /* entries used (lost ones included until rejoined) */
    int phase;                    /* MT_JOB_* */
    uint64_t job;
    uint32_t min_nodes, world, restarts;
    char *config;                 /* the user's config */
    char *job_config;             /* the current job's config: paths relative, world and rendezvous set */
    mt_cfile *files;              /* MT_CLUSTER_MAX_FILES */
    int n_files;
    char resume[MT_CLUSTER_NAME_MAX + 1]; /* the checkpoint the job starts from ("" = fresh) */
    char resume_sha[65];
    char rendezvous[128];
    double deadline;              /* WAITING/PREPARING/RECOVERING: when to give up */
    bool rank0_ended;             /* RECOVERING: train.c's trainer is gone */
    bool stop_asked;              /* train stop or a drain here: a cancelled rank 0 ends the job */
    char lost[256];               /* names of the nodes lost by the current job */
    double lost_at;               /* when the first of them was found lost */
    char state_text[160];
    char *status_buf;             /* mt_cluster_status_fill's arrays */

    /* ---- worker (cluster_worker.c) ---- */
    struct bufferevent *link;
    mt_framer fr;
    char join_host[256];
    int join_port;
    char *token;
    bool up, joined;
    double last_ack, last_hb_sent, next_connect, backoff, interval;
    uint64_t seq;
    uint64_t w_job;               /* the assignment being worked on */
    uint32_t w_world;
    uint32_t w_ranks[MT_CLUSTER_MAX_RANKS_PER_NODE];
    int w_nranks;
    char *w_config;
    mt_cfile *w_files;
    int w_nfiles, w_file;
    mt_ship_rx rx;
    bool w_fetching, w_ready, w_start_pending;
    char w_state[16];
    char w_message[256];
    char w_weights[65];
} mt_cluster;

/* ---- lifecycle (server.c, conn.c, dispatch.c) ---- */

int mt_cluster_init(mt_server *s, char *err, size_t errlen); /* after the listeners: starts the --join link */
void mt_cluster_begin_drain(mt_server *s);                   /* stop the job / the node's ranks */
bool mt_cluster_busy(mt_server *s);                          /* rank threads still running */
void mt_cluster_shutdown(mt_server *s);                      /* cancels and joins rank threads */
void mt_cluster_free(mt_server *s);
void mt_cluster_handle(mt_conn *c, mt_frame *f);             /* coordinator: a worker link's frame; takes f */
void mt_cluster_conn_closed(mt_conn *c);                     /* coordinator: a worker link is going */
void mt_cluster_on_post(mt_server *s, mt_post_msg *m);       /* MT_POST_RANK_ENDED */
bool mt_cluster_accepts_joins(const mt_server *s);

/* ---- the coordinator's job, with train.c ---- */

/* TrainStart with min_nodes > 0: the job controller takes it (train.c answers). Returns 0, or an
 * Mt__V1__ErrorCode with msg. */
int mt_cluster_train_start(mt_server *s, const char *config_json, uint32_t min_nodes, char *msg, size_t cap);
/* train.c's rank 0 trainer ended: true when the job goes on (a restart is being prepared), so the
 * end is not final; false when the job ends with it. */
bool mt_cluster_rank0_ended(mt_server *s, int status, const char *msg);
/* train.c's rank 0 trainer could not be created (its error is final): the job ends. */
void mt_cluster_rank0_create_failed(mt_server *s, const char *msg);
/* train stop / drain: a job still waiting or shipping ends cancelled; a running one stops with its
 * rank 0 (train.c cancels it). Returns true when the job was waiting (train.c has no trainer). */
bool mt_cluster_stop(mt_server *s, const char *why);
/* The node table into a TrainStatus (its arrays live until the next call). */
void mt_cluster_status_fill(mt_server *s, Mt__V1__TrainStatus *st);
/* A step event of rank 0: adds "node_tokens_per_s" (every node's tokens/s). malloc'd, or NULL. */
char *mt_cluster_decorate_event(mt_server *s, const char *event_json);

/* ---- coordinator and worker internals (cluster.c calls them) ---- */

void mt_coord_tick(mt_cluster *cl);
void mt_coord_rank_ended(mt_cluster *cl, mt_rank_run *r);
void mt_worker_tick(mt_cluster *cl);
void mt_worker_rank_ended(mt_cluster *cl, mt_rank_run *r);
int mt_worker_start(mt_cluster *cl, char *err, size_t errlen);
void mt_worker_stop(mt_cluster *cl);
/* Cancels every live rank of this node. */
void mt_cluster_cancel_ranks(mt_cluster *cl);
bool mt_cluster_ranks_live(const mt_cluster *cl);

/* ---- rank trainer threads (cluster_ranks.c) ---- */

struct mt_rank_run {
    mt_server *s;
    pthread_t th;
    bool live;                 /* thread started, not joined */
    uint64_t job;
    int rank;
    char *config;
    mt_post_msg *ended;        /* allocated before the thread starts */
    pthread_mutex_t mu;
    void *tr;                  /* under mu: the trainer once created */
    bool cancel;               /* under mu: asked before the trainer existed */
    /* written by the thread before it posts */
    int status;
    char msg[512];
    char weights_sha[65];
};

/* A job's config (JSON text) with this rank's "rank" and, for a GPU rank (device >= 0), "device"
 * set. malloc'd, or NULL. */
char *mt_rank_config(const char *config, int rank, int device);
int mt_rank_run_start(mt_server *s, mt_rank_run *r, uint64_t job, int rank, const char *config);
void mt_rank_run_cancel(mt_rank_run *r);
/* Polls the rank's trainer: step and tokens/s (0 when it has none yet). */
void mt_rank_run_progress(mt_rank_run *r, int64_t *step, double *tps);
void mt_rank_run_join(mt_rank_run *r);   /* after its MT_POST_RANK_ENDED, or at shutdown */

/* ---- files (cluster_ship.c) ---- */

/* A ClusterFile.name: relative, no "." or ".." component, no empty component, printable, at most
 * MT_CLUSTER_NAME_MAX bytes. Returns true, or false with *why. */
bool mt_ship_name_ok(const char *name, const char **why);
/* SHA-256 hex of root/name, reading it through descriptors opened beneath root without following
 * links. Returns 0, or -1 with msg. */
int mt_ship_file_sha256(const char *root, const char *name, char hex[65], uint64_t *size, char *msg, size_t cap);
/* A regular file path inside root -> its name relative to root. Returns 0 or -1 with msg. */
int mt_ship_relative(const char *root, const char *path, char *name, size_t cap, char *msg, size_t msgcap);

/* Sender: answers one ClusterFetch on c with the chunks of [offset, offset + min(length, window)). */
void mt_ship_send(mt_conn *c, uint64_t id, const char *root, const Mt__V1__ClusterFetch *req, const char *sha256,
                  uint64_t size);

enum { MT_SHIP_MORE = 0, MT_SHIP_ASK, MT_SHIP_DONE, MT_SHIP_FAILED };

/* Opens (or resumes) the .part file; MT_SHIP_DONE when root/name already has the wanted SHA-256. */
int mt_ship_rx_begin(mt_ship_rx *rx, const char *root, const char *name, const char *sha256, uint64_t size, char *msg,
                     size_t cap);
/* One chunk: MT_SHIP_MORE (keep reading), MT_SHIP_ASK (send a ClusterFetch of rx->ask_len bytes from
 * rx->ask_off: the next window, asked for when half of the last one is in so that the two sides
 * overlap, or the window again from a chunk that was corrupt), MT_SHIP_DONE (verified and renamed into place),
 * MT_SHIP_FAILED (msg says why). */
int mt_ship_rx_chunk(mt_ship_rx *rx, const Mt__V1__CheckpointChunk *ch, char *msg, size_t cap);
void mt_ship_rx_close(mt_ship_rx *rx);

#endif
