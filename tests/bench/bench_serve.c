/*
 * bench_serve.c — `mt-bench serve`: a load generator against a running mt-server.
 *
 *   mt-bench serve --connections N --requests M [--sentences-per-request K] [--server HOST:PORT]
 *                  [--input FILE] [--tls --ca FILE] [--token-file FILE] [--beam B]
 *                  [--anchor-sps X] [--timeout S]
 *
 * N connections, one thread each, every one sending M requests one after the other (closed loop:
 * the next request leaves when the previous answer is in), each request K sentences taken in turn
 * from FILE's lines (or a built-in list). Prints served sentences/s, p50/p95/p99 request latency,
 * errors and lost requests, and as its last line one JSON object; --anchor-sps (e.g. mt-translate's
 * sentences/s on the same input, measured by the caller) adds the ratio to it. Exit status 0 when
 * every request got its answer without error.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "mtc.h"

static const char *const g_builtin[] = {
    "Hello, how are you?",
    "The weather is nice today.",
    "I would like a cup of coffee, please.",
    "Where is the train station?",
    "This book was written a long time ago.",
    "We are going to the sea tomorrow morning.",
    "Can you help me find my keys?",
    "The museum opens at nine o'clock.",
    "She speaks three languages fluently.",
    "Thank you very much for your help.",
    "The children are playing in the garden.",
    "I have never seen such a beautiful city.",
};

typedef struct cfg {
    const char *server;
    mtc_tls tls;
    char *token;
    int connections, requests, per_request;
    uint32_t beam;
    int timeout_ms;
    char **lines;
    size_t n_lines;
} cfg;

typedef struct worker {
    const cfg *c;
    int idx;
    pthread_t th;
    double *lat;      /* (requests) seconds; NaN when not answered */
    int ok, errors, lost;
    char first_error[256];
    pthread_barrier_t *start;
} worker;

static void note_error(worker *w, const char *fmt, const char *a, const char *b) {
    if (!w->first_error[0]) snprintf(w->first_error, sizeof w->first_error, fmt, a, b);
}

static void *run_worker(void *arg) {
    worker *w = arg;
    const cfg *c = w->c;
    for (int i = 0; i < c->requests; i++) w->lat[i] = NAN;
    mtc_conn *conn = NULL;
    char err[512];
    int rc = mtc_connect(c->server, &c->tls, c->timeout_ms, &conn, err, sizeof err);
    if (rc == MTC_OK && mtc_hello(conn, c->token, "mt-bench serve", c->timeout_ms, NULL, err, sizeof err) != 0)
        rc = MTC_ERR;
    pthread_barrier_wait(w->start);
    if (rc != MTC_OK) {
        note_error(w, "connect: %.200s%s", err, "");
        w->lost = c->requests;
        mtc_close(conn);
        return NULL;
    }
    char **texts = calloc((size_t)c->per_request, sizeof *texts);
    size_t next = (size_t)w->idx * 7919u;
    for (int i = 0; i < c->requests; i++) {
        for (int k = 0; k < c->per_request; k++) texts[k] = c->lines[next++ % c->n_lines];
        Mt__V1__TranslateRequest t = MT__V1__TRANSLATE_REQUEST__INIT;
        t.n_texts = (size_t)c->per_request;
        t.texts = texts;
        t.beam_size = c->beam;
        mt_frame f = MT__V1__FRAME__INIT;
        f.id = (uint64_t)i + 2;
        f.body_case = MT__V1__FRAME__BODY_TRANSLATE;
        f.translate = &t;
        double t0 = mt_bench_now();
        if (mtc_send(conn, &f, c->timeout_ms) != MTC_OK) {
            note_error(w, "send: %.200s%s", mtc_error(conn), "");
            w->lost += c->requests - i;
            break;
        }
        mt_frame *a = NULL;
        if (mtc_recv(conn, c->timeout_ms, &a) != MTC_OK) {
            note_error(w, "receive: %.200s%s", mtc_error(conn), "");
            w->lost += c->requests - i;
            break;
        }
        double dt = mt_bench_now() - t0;
        if (a->body_case == MT__V1__FRAME__BODY_TRANSLATE_OK && a->id == f.id &&
            a->translate_ok->n_texts == (size_t)c->per_request) {
            w->ok++;
            w->lat[i] = dt;
        } else {
            w->errors++;
            if (a->body_case == MT__V1__FRAME__BODY_ERROR)
                note_error(w, "%.40s: %.200s", mt_error_code_name((int)a->error->code), a->error->message);
            else
                note_error(w, "unexpected answer%s%s", "", "");
        }
        mt_frame_free(a);
    }
    free(texts);
    mtc_close(conn);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double q) {
    if (!n) return 0;
    size_t i = (size_t)ceil(q * (double)n);
    if (i < 1) i = 1;
    if (i > n) i = n;
    return v[i - 1];
}

static void usage(void) {
    fprintf(stderr, "usage: mt-bench serve --connections N --requests M [--sentences-per-request K]\n"
                    "       [--server HOST:PORT] [--input FILE] [--tls] [--ca FILE] [--token-file FILE]\n"
                    "       [--beam B] [--anchor-sps X] [--timeout S]\n");
}

int mt_bench_serve(int argc, char **argv) {
    cfg c;
    memset(&c, 0, sizeof c);
    c.server = getenv("MT_SERVER") && *getenv("MT_SERVER") ? getenv("MT_SERVER") : "127.0.0.1:7700";
    c.connections = 64;
    c.requests = 100;
    c.per_request = 1;
    c.timeout_ms = 120000;
    const char *input = NULL, *token_file = NULL;
    double anchor = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tls")) {
            c.tls.enabled = true;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        if (!strcmp(a, "--server")) c.server = v;
        else if (!strcmp(a, "--connections")) c.connections = atoi(v);
        else if (!strcmp(a, "--requests")) c.requests = atoi(v);
        else if (!strcmp(a, "--sentences-per-request")) c.per_request = atoi(v);
        else if (!strcmp(a, "--input")) input = v;
        else if (!strcmp(a, "--ca")) {
            c.tls.enabled = true;
            c.tls.ca_file = v;
        } else if (!strcmp(a, "--token-file")) token_file = v;
        else if (!strcmp(a, "--beam")) c.beam = (uint32_t)atoi(v);
        else if (!strcmp(a, "--anchor-sps")) anchor = atof(v);
        else if (!strcmp(a, "--timeout")) c.timeout_ms = (int)(atof(v) * 1000);
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (c.connections < 1 || c.requests < 1 || c.per_request < 1 || c.connections > 10000) {
        usage();
        return 2;
    }
    char err[512];
    if (token_file) {
        if (!(c.token = mt_token_file_read(token_file, NULL, err, sizeof err))) {
            fprintf(stderr, "mt-bench serve: %s\n", err);
            return 2;
        }
    } else if (getenv("MT_TOKEN")) {
        c.token = strdup(getenv("MT_TOKEN"));
    }
    if (input) {
        FILE *f = fopen(input, "r");
        if (!f) {
            fprintf(stderr, "mt-bench serve: %s: %s\n", input, strerror(errno));
            free(c.token);
            return 2;
        }
        char *line = NULL;
        size_t cap = 0, lcap = 0;
        ssize_t len;
        while ((len = getline(&line, &cap, f)) >= 0) {
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
            if (!len) continue;
            if (c.n_lines == lcap) c.lines = realloc(c.lines, (lcap = lcap ? lcap * 2 : 1024) * sizeof *c.lines);
            c.lines[c.n_lines++] = strdup(line);
        }
        free(line);
        fclose(f);
    }
    if (!c.n_lines) {
        c.n_lines = sizeof g_builtin / sizeof g_builtin[0];
        c.lines = malloc(c.n_lines * sizeof *c.lines);
        for (size_t i = 0; i < c.n_lines; i++) c.lines[i] = strdup(g_builtin[i]);
    }

    worker *ws = calloc((size_t)c.connections, sizeof *ws);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)c.connections + 1);
    for (int i = 0; i < c.connections; i++) {
        ws[i].c = &c;
        ws[i].idx = i;
        ws[i].start = &start;
        ws[i].lat = malloc((size_t)c.requests * sizeof(double));
        if (pthread_create(&ws[i].th, NULL, run_worker, &ws[i]) != 0) {
            fprintf(stderr, "mt-bench serve: cannot start thread %d\n", i);
            return 1;
        }
    }
    pthread_barrier_wait(&start);
    double t0 = mt_bench_now();
    for (int i = 0; i < c.connections; i++) pthread_join(ws[i].th, NULL);
    double secs = mt_bench_now() - t0;
    pthread_barrier_destroy(&start);

    long ok = 0, errors = 0, lost = 0, total = (long)c.connections * c.requests;
    size_t nl = 0;
    double *all = malloc((size_t)total * sizeof *all);
    const char *first_error = NULL;
    for (int i = 0; i < c.connections; i++) {
        ok += ws[i].ok;
        errors += ws[i].errors;
        lost += ws[i].lost;
        if (!first_error && ws[i].first_error[0]) first_error = ws[i].first_error;
        for (int r = 0; r < c.requests; r++)
            if (!isnan(ws[i].lat[r])) all[nl++] = ws[i].lat[r];
    }
    qsort(all, nl, sizeof *all, cmp_double);
    double sps = secs > 0 ? (double)ok * c.per_request / secs : 0;
    double p50 = pct(all, nl, 0.50) * 1e3, p95 = pct(all, nl, 0.95) * 1e3, p99 = pct(all, nl, 0.99) * 1e3;
    printf("mt-bench serve: %d connections x %d requests x %d sentences against %s\n", c.connections, c.requests,
           c.per_request, c.server);
    printf("  %-28s %ld of %ld\n", "requests answered", ok, total);
    printf("  %-28s %ld\n", "errors", errors);
    printf("  %-28s %ld\n", "lost (no answer)", lost);
    printf("  %-28s %.2f\n", "seconds", secs);
    printf("  %-28s %.1f\n", "sentences/s", sps);
    printf("  %-28s %.2f / %.2f / %.2f\n", "latency p50/p95/p99 (ms)", p50, p95, p99);
    if (anchor > 0) printf("  %-28s %.3f\n", "sentences/s / anchor", sps / anchor);
    if (first_error) printf("  first error: %s\n", first_error);
    printf("{\"bench\":\"serve\",\"connections\":%d,\"requests\":%d,\"sentences_per_request\":%d,\"answered\":%ld,"
           "\"errors\":%ld,\"lost\":%ld,\"seconds\":%.3f,\"sentences_per_s\":%.2f,\"p50_ms\":%.3f,\"p95_ms\":%.3f,"
           "\"p99_ms\":%.3f",
           c.connections, c.requests, c.per_request, ok, errors, lost, secs, sps, p50, p95, p99);
    if (anchor > 0) printf(",\"anchor_sps\":%.2f,\"ratio_to_anchor\":%.4f", anchor, sps / anchor);
    printf("}\n");
    fflush(stdout);

    for (int i = 0; i < c.connections; i++) free(ws[i].lat);
    free(ws);
    free(all);
    for (size_t i = 0; i < c.n_lines; i++) free(c.lines[i]);
    free(c.lines);
    free(c.token);
    return ok == total && errors == 0 ? 0 : 1;
}
