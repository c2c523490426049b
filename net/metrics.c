/*
 * metrics.c — counters and histograms (see metrics.h) and their Prometheus rendering. Names follow
 * the Prometheus conventions: mt_<thing>_total for counters, base units (seconds), one family per
 * labelled set.
 */
#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

static const char *const g_limit_names[MT_LIM__COUNT] = {
    "max_frame_bytes", "max_hello_bytes", "max_connections", "max_inflight", "max_sentences", "max_chars",
    "idle_timeout", "hello_timeout", "requests_per_event", "max_queue_sentences", "output_high_water",
    "event_dropped", "max_conn_queue_sentences", "http_max_connections", "http_timeout", "out_of_memory",
};
static const char *const g_req_names[MT_REQ__COUNT] = {
    "hello", "translate", "health", "stats", "train_start", "train_status", "train_stop", "train_save",
    "model_promote", "train_subscribe", "bye", "cluster",
};


static void histo_init(mt_histo *h, const char *name, const char *help, const double *b, int n) {
    h->name = name;
    h->help = help;
    h->n = n;
    for (int i = 0; i < n; i++) h->bounds[i] = b[i];
}

void mt_metrics_init(mt_metrics *m) {
    memset(m, 0, sizeof *m);
    static const double lat[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120};
    static const double bs[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
    static const double bt[] = {16, 64, 256, 1024, 4096, 16384, 65536};
    histo_init(&m->latency, "mt_request_latency_seconds",
               "Translate request latency, decoded to answer queued", lat, 15);
    histo_init(&m->batch_sentences, "mt_batch_sentences", "Sentences per engine batch", bs, 11);
    histo_init(&m->batch_tokens, "mt_batch_tokens", "Padded tokens (sentences x longest) per engine batch", bt, 7);
}

void mt_histo_observe(mt_histo *h, double v) {
    int i = 0;
    while (i < h->n && v > h->bounds[i]) i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_micro, (uint64_t)(v < 0 ? 0 : v * 1e6), memory_order_relaxed);
}

double mt_histo_quantile(const mt_histo *h, double q) {
    uint64_t total = 0, counts[MT_HISTO_MAX_BUCKETS + 1];
    for (int i = 0; i <= h->n; i++) total += counts[i] = atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    if (!total) return 0;
    uint64_t rank = (uint64_t)(q * (double)total + 0.999999), cum = 0;
    if (rank < 1) rank = 1;
    for (int i = 0; i <= h->n; i++) {
        cum += counts[i];
        if (cum >= rank) return i < h->n ? h->bounds[i] : h->bounds[h->n - 1];
    }
    return h->bounds[h->n - 1];
}

void mt_metrics_limit_hit(mt_metrics *m, mt_limit_kind k) {
    if (k < MT_LIM__COUNT) mt_metric_inc(&m->limit_hits[k]);
}

void mt_metrics_error(mt_metrics *m, int code) {
    if (code >= 0 && code < MT_METRICS_MAX_CODE) mt_metric_inc(&m->errors[code]);
}

uint64_t mt_metrics_limit_hits_total(const mt_metrics *m) {
    uint64_t t = 0;
    for (int i = 0; i < MT_LIM__COUNT; i++) t += mt_metric_get(&m->limit_hits[i]);
    return t;
}

uint64_t mt_metrics_errors_total(const mt_metrics *m) {
    uint64_t t = 0;
    for (int i = 0; i < MT_METRICS_MAX_CODE; i++) t += mt_metric_get(&m->errors[i]);
    return t;
}

typedef struct sb {
    char *p;
    size_t n, cap;
} sb;

static void sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (w < 0) return;
        if (b->p && b->n + (size_t)w < b->cap) {
            b->n += (size_t)w;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 8192;
        while (cap < b->n + (size_t)w + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) return;
        b->p = np;
        b->cap = cap;
    }
}

static void counter(sb *b, const char *name, const char *help, uint64_t v) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}
static void gauge(sb *b, const char *name, const char *help, double v) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

static void histo(sb *b, const mt_histo *h) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
    uint64_t cum = 0;
    for (int i = 0; i <= h->n; i++) {
        cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (i < h->n) sb_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", h->name, h->bounds[i], cum);
        else sb_printf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", h->name, cum);
    }
    sb_printf(b, "%s_sum %.6f\n%s_count %" PRIu64 "\n", h->name,
              (double)atomic_load_explicit(&h->sum_micro, memory_order_relaxed) / 1e6, h->name, cum);
}

char *mt_metrics_render(const mt_metrics *m, const mt_metrics_gauges *g) {
    sb b = {0};
    sb_printf(&b, "# HELP mt_requests_total Requests received, by kind\n# TYPE mt_requests_total counter\n");
    for (int i = 0; i < MT_REQ__COUNT; i++)
        sb_printf(&b, "mt_requests_total{kind=\"%s\"} %" PRIu64 "\n", g_req_names[i], mt_metric_get(&m->requests[i]));
    counter(&b, "mt_sentences_total", "Sentences translated", mt_metric_get(&m->sentences_total));
    counter(&b, "mt_sentences_truncated_total", "Sources longer than the model's max_len (cut by the engine)",
            mt_metric_get(&m->sentences_truncated));
    counter(&b, "mt_engine_log_suppressed_total", "Engine warnings over the log rate limit, not shown",
            mt_metric_get(&m->engine_log_suppressed));
    counter(&b, "mt_batches_total", "Engine batches run", mt_metric_get(&m->batches_total));
    sb_printf(&b, "# HELP mt_errors_total Error frames sent, by code\n# TYPE mt_errors_total counter\n");
    for (int i = 0; i < MT_METRICS_MAX_CODE; i++) {
        uint64_t v = mt_metric_get(&m->errors[i]);
        if (v) sb_printf(&b, "mt_errors_total{code=\"%s\"} %" PRIu64 "\n", mt_error_code_name(i), v);
    }
    sb_printf(&b, "# HELP mt_limit_hits_total Times a limit was hit, by limit\n# TYPE mt_limit_hits_total counter\n");
    for (int i = 0; i < MT_LIM__COUNT; i++)
        sb_printf(&b, "mt_limit_hits_total{limit=\"%s\"} %" PRIu64 "\n", g_limit_names[i], mt_metric_get(&m->limit_hits[i]));
    counter(&b, "mt_connections_total", "Connections accepted", mt_metric_get(&m->connections_total));
    counter(&b, "mt_auth_failures_total", "Hellos refused for their token", mt_metric_get(&m->auth_failures));
    counter(&b, "mt_tls_failures_total", "TLS handshakes or sessions that failed", mt_metric_get(&m->tls_failures));
    counter(&b, "mt_protocol_violations_total", "Connections closed for a protocol violation",
            mt_metric_get(&m->protocol_violations));
    counter(&b, "mt_train_events_total", "Training progress events received", mt_metric_get(&m->train_events));
    counter(&b, "mt_model_promotions_total", "Models promoted to serving", mt_metric_get(&m->model_promotions));
    gauge(&b, "mt_connections", "Open client connections", (double)atomic_load(&m->connections));
    gauge(&b, "mt_inflight_requests", "Translate requests not answered yet", (double)atomic_load(&m->inflight));
    gauge(&b, "mt_busy_workers", "Engine workers running a batch", (double)atomic_load(&m->busy_workers));
    gauge(&b, "mt_queue_depth", "Sentences waiting for a batch", (double)g->queue_depth);
    gauge(&b, "mt_workers", "Engine worker threads", (double)g->workers);
    gauge(&b, "mt_model_loaded", "1 when a model is being served", g->model_loaded);
    gauge(&b, "mt_model_generation", "Serving model generation (+1 per promote)", (double)g->model_generation);
    gauge(&b, "mt_draining", "1 while draining after SIGTERM", g->draining);
    gauge(&b, "mt_training", "1 while a trainer runs", g->training);
    gauge(&b, "mt_train_step", "Training step of the current or last run", (double)g->train_step);
    gauge(&b, "mt_train_loss", "Smoothed training loss of the current or last run", g->train_loss);
    gauge(&b, "mt_train_tokens_per_second", "Training throughput", g->train_tokens_per_s);
    gauge(&b, "mt_uptime_seconds", "Seconds since the server started", g->uptime_s);
    histo(&b, &m->latency);
    histo(&b, &m->batch_sentences);
    histo(&b, &m->batch_tokens);
    return b.p;
}
