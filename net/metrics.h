/*
 * metrics.h — the server's counters, gauges and histograms, updated lock-free (relaxed atomics) from
 * the loop and worker threads, rendered in the Prometheus text format for GET /metrics and summarised
 * in StatsResponse. Every limit has its own labelled counter of hits.
 */
#ifndef MT_NET_METRICS_H
#define MT_NET_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef enum mt_limit_kind {
    MT_LIM_FRAME_SIZE = 0,     /* a frame over max-frame-bytes (skipped or fatal) */
    MT_LIM_HELLO_SIZE,         /* a frame over max-hello-bytes before Hello (fatal) */
    MT_LIM_CONNECTIONS,        /* a connection over max-connections (refused) */
    MT_LIM_INFLIGHT,           /* a request over max-inflight */
    MT_LIM_SENTENCES,          /* a request with more than max-sentences texts */
    MT_LIM_CHARS,              /* a sentence longer than max-chars */
    MT_LIM_IDLE,               /* idle-timeout-s closed a connection */
    MT_LIM_HELLO_TIMEOUT,      /* hello-timeout-s closed a connection */
    MT_LIM_REQUESTS_PER_EVENT, /* a read event yielded after requests-per-event frames */
    MT_LIM_QUEUE,              /* max-queue-sentences refused a request */
    MT_LIM_OUTPUT,             /* output-high-water paused a connection's input */
    MT_LIM_EVENT_DROP,         /* a training event not sent to a subscriber over output-high-water */
    MT_LIM_CONN_QUEUE,         /* max-conn-queue-sentences refused a request */
    MT_LIM_HTTP_CONNECTIONS,   /* an HTTP connection over http-max-connections (closed) */
    MT_LIM_HTTP_TIMEOUT,       /* an HTTP request not whole within http-timeout-s (closed) */
    MT_LIM_OOM_DROP,           /* a training progress event lost to out-of-memory */
    MT_LIM__COUNT
} mt_limit_kind;

typedef enum mt_req_kind {
    MT_REQ_HELLO = 0, MT_REQ_TRANSLATE, MT_REQ_HEALTH, MT_REQ_STATS, MT_REQ_TRAIN_START, MT_REQ_TRAIN_STATUS,
    MT_REQ_TRAIN_STOP, MT_REQ_TRAIN_SAVE, MT_REQ_MODEL_PROMOTE, MT_REQ_TRAIN_SUBSCRIBE, MT_REQ_BYE,
    MT_REQ_CLUSTER, MT_REQ__COUNT
} mt_req_kind;

#define MT_HISTO_MAX_BUCKETS 20
#define MT_METRICS_MAX_CODE 64

typedef struct mt_histo {
    const char *name, *help;
    int n;                                    /* finite buckets */
    double bounds[MT_HISTO_MAX_BUCKETS];      /* upper bounds, increasing; +Inf implied */
    _Atomic uint64_t counts[MT_HISTO_MAX_BUCKETS + 1];
    _Atomic uint64_t sum_micro;               /* sum of observations x 1e6 */
    _Atomic uint64_t total;
} mt_histo;

typedef struct mt_metrics {
    _Atomic uint64_t requests[MT_REQ__COUNT];
    _Atomic uint64_t errors[MT_METRICS_MAX_CODE];
    _Atomic uint64_t limit_hits[MT_LIM__COUNT];
    _Atomic uint64_t connections_total, sentences_total, batches_total, auth_failures, tls_failures,
        protocol_violations, train_events, model_promotions;
    _Atomic uint64_t sentences_truncated;   /* sources over the model's max_len (the engine cuts them) */
    _Atomic uint64_t engine_log_suppressed; /* engine warnings over the log rate limit, not shown */
    _Atomic int64_t connections, inflight, busy_workers;
    mt_histo latency;           /* seconds, request decoded -> answer queued */
    mt_histo batch_sentences;
    mt_histo batch_tokens;      /* padded tokens */
} mt_metrics;

void mt_metrics_init(mt_metrics *m);
void mt_histo_observe(mt_histo *h, double v);
/* The upper bound of the bucket holding quantile q (0..1); 0 when empty. */
double mt_histo_quantile(const mt_histo *h, double q);

static inline void mt_metric_inc(_Atomic uint64_t *c) { atomic_fetch_add_explicit(c, 1, memory_order_relaxed); }
static inline void mt_metric_add(_Atomic uint64_t *c, uint64_t v) {
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}
static inline uint64_t mt_metric_get(const _Atomic uint64_t *c) {
    return atomic_load_explicit(c, memory_order_relaxed);
}
void mt_metrics_limit_hit(mt_metrics *m, mt_limit_kind k);
void mt_metrics_error(mt_metrics *m, int code);
uint64_t mt_metrics_limit_hits_total(const mt_metrics *m);
uint64_t mt_metrics_errors_total(const mt_metrics *m);

/* Gauges the owner reads at render time. */
typedef struct mt_metrics_gauges {
    uint64_t queue_depth;
    uint64_t model_generation;
    int model_loaded, draining, training;
    int64_t train_step;
    double train_loss, train_tokens_per_s;
    uint32_t workers;
    double uptime_s;
} mt_metrics_gauges;

/* Prometheus text exposition (format 0.0.4) into a malloc'd string. */
char *mt_metrics_render(const mt_metrics *m, const mt_metrics_gauges *g);

#endif
