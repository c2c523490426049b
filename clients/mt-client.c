/*
 * mt-client.c — the command-line client of mt-server (protocol: proto/README.md).
 *
 *   mt-client translate "hello"                 one request, one line out per text
 *   mt-client translate -f book.en.txt          a file (or stdin) line by line: batched requests,
 *                                               pipelined (a window of requests in flight), answers
 *                                               put back in order, progress on stderr
 *   mt-client train start --config cfg.json | status | stop | save [PATH] | promote PATH | watch
 *   mt-client health | stats
 *
 * Exit codes are listed in usage(); scripts rely on them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "mtc.h"

enum {
    EXIT_OK_ = 0,
    EXIT_SERVER = 1,   /* the server answered with an error */
    EXIT_USAGE = 2,
    EXIT_CONNECT = 3,  /* cannot connect, TLS failure, connection lost */
    EXIT_AUTH = 4,     /* token refused, or admin needed */
    EXIT_PROTOCOL = 5  /* timeout, or an answer that makes no sense */
};

typedef struct opts {
    const char *server;
    mtc_tls tls;
    const char *token_file;
    char *token;
    int timeout_ms;
    uint32_t beam, n_best;
    float length_penalty, max_len_ratio;
    bool has_length_penalty;   /* else the server's default */
    const char *prefix;        /* target prefix of every text, or NULL */
    bool stream;
    int scores;
    uint32_t batch, window;
    int quiet;
    const char *file;
    const char *config;
    uint32_t min_nodes;        /* train start: a cluster job over this many nodes (0: the server alone) */
} opts;

static void usage(FILE *to) {
    fprintf(to,
            "usage: mt-client [options] <command> [args]\n"
            "\n"
            "commands:\n"
            "  translate TEXT...             translate the texts (one output line each)\n"
            "  translate [-f FILE]           translate FILE (default stdin) line by line, in order\n"
            "  train start --config FILE [--min-nodes N]\n"
            "                                start training on the server with FILE's JSON config; with\n"
            "                                --min-nodes, over every node of its cluster once N joined\n"
            "  train status | stop | watch   training state; ask it to stop; stream its progress\n"
            "  train save [PATH]             write a checkpoint (PATH inside the server's --data-root)\n"
            "  train promote PATH            serve the model/checkpoint at PATH (inside --data-root)\n"
            "  health | stats                the server's state and counters\n"
            "\n"
            "options:\n"
            "  --server HOST:PORT   server address (default $MT_SERVER, else 127.0.0.1:7700)\n"
            "  --tls                use TLS;  --ca FILE  trust FILE's CA;  --server-name NAME  verify NAME\n"
            "  --token-file FILE    read the token from FILE (default: $MT_TOKEN)\n"
            "  --timeout S          seconds to wait for an answer (default 600)\n"
            "  --beam N             beam size (1 = greedy, the default)\n"
            "  --length-penalty A   GNMT length penalty alpha (default: the engine's, 0.6)\n"
            "  --max-len-ratio R    output length limit / source length (default: the engine's, 1.5)\n"
            "  --n-best K           K hypotheses per text, best first, one line each (K <= beam size)\n"
            "  --prefix TEXT        every translation starts with TEXT (target prefix)\n"
            "  --stream             print translations as their words arrive (translate TEXT...)\n"
            "  --scores             print each translation's log-probability before it (TAB-separated)\n"
            "  --batch N            sentences per request when reading a file (default 32)\n"
            "  --window N           requests in flight when reading a file (default 16)\n"
            "  --quiet              no progress on stderr\n"
            "  --help, --version\n"
            "\n"
            "exit status: 0 ok; 1 the server answered with an error; 2 bad usage; 3 cannot connect,\n"
            "TLS failure or connection lost; 4 token refused or admin token needed; 5 timeout or\n"
            "protocol error. `train watch` exits 0 when the run ends done or cancelled, 1 if it failed.\n");
}

static int die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mt-client: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return code;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int exit_for_error(int code) {
    if (code == MT__V1__ERROR_CODE__ERR_AUTH_FAILED || code == MT__V1__ERROR_CODE__ERR_PERMISSION_DENIED ||
        code == MT__V1__ERROR_CODE__ERR_NOT_AUTHENTICATED)
        return EXIT_AUTH;
    if (code >= 1 && code <= 6) return EXIT_PROTOCOL;
    return EXIT_SERVER;
}

static int exit_for_io(int rc) { return rc == MTC_TIMEOUT ? EXIT_PROTOCOL : EXIT_CONNECT; }

/* Connects and says Hello; returns 0 or an exit code. */
static int open_session(const opts *o, mtc_conn **out, mt_frame **hello_ok) {
    char err[512];
    int rc = mtc_connect(o->server, &o->tls, o->timeout_ms < 30000 ? o->timeout_ms : 30000, out, err, sizeof err);
    if (rc != MTC_OK) return die(exit_for_io(rc), "%s", err);
    char client[64];
    snprintf(client, sizeof client, "mt-client %s", MT_NET_VERSION);
    rc = mtc_hello(*out, o->token, client, o->timeout_ms, hello_ok, err, sizeof err);
    if (rc != 0) {
        mtc_close(*out);
        *out = NULL;
        return die(rc < 0 ? EXIT_CONNECT : exit_for_error(rc), "%s", err);
    }
    return 0;
}

/* Receives the answer to id (skipping nothing else: callers have one request in flight). */
static int recv_answer(mtc_conn *c, const opts *o, uint64_t id, mt_frame **out) {
    for (;;) {
        mt_frame *f = NULL;
        int rc = mtc_recv(c, o->timeout_ms, &f);
        if (rc != MTC_OK) return die(exit_for_io(rc), "%s", mtc_error(c));
        if (f->body_case == MT__V1__FRAME__BODY_ERROR && (f->id == id || f->id == 0)) {
            int code = exit_for_error((int)f->error->code);
            die(code, "%s: %s", mt_error_code_name((int)f->error->code), f->error->message);
            mt_frame_free(f);
            return code;
        }
        if (f->id == id) {
            *out = f;
            return 0;
        }
        mt_frame_free(f);
    }
}

static int simple_request(const opts *o, mt_frame *req, mt_frame **answer) {
    mtc_conn *c = NULL;
    int rc = open_session(o, &c, NULL);
    if (rc) return rc;
    req->id = 2;
    if ((rc = mtc_send(c, req, o->timeout_ms)) != MTC_OK) {
        rc = die(exit_for_io(rc), "%s", mtc_error(c));
    } else {
        rc = recv_answer(c, o, 2, answer);
    }
    mtc_close(c);
    return rc;
}

/* ---- translate ---- */

/* prefixes: room for n pointers (filled with o->prefix when there is one). */
static void fill_translate(const opts *o, Mt__V1__TranslateRequest *t, char **texts, size_t n, char **prefixes) {
    mt__v1__translate_request__init(t);
    t->n_texts = n;
    t->texts = texts;
    t->beam_size = o->beam;
    if (o->has_length_penalty) {
        t->length_penalty_set_case = MT__V1__TRANSLATE_REQUEST__LENGTH_PENALTY_SET_LENGTH_PENALTY;
        t->length_penalty = o->length_penalty;
    }
    t->max_len_ratio = o->max_len_ratio;
    t->want_scores = o->scores;
    t->n_best = o->n_best;
    if (o->prefix && prefixes) {
        for (size_t i = 0; i < n; i++) prefixes[i] = (char *)o->prefix;
        t->n_target_prefixes = n;
        t->target_prefixes = prefixes;
    }
}

/* Text i's hypotheses, one line each. */
static void print_result(const opts *o, const Mt__V1__TranslateResponse *r, size_t i) {
    size_t nb = r->n_best ? r->n_best : 1;
    for (size_t k = i * nb; k < (i + 1) * nb && k < r->n_texts; k++) {
        if (o->scores) printf("%.4f\t", k < r->n_scores ? (double)r->scores[k] : 0.0);
        printf("%s\n", r->texts[k]);
    }
}

/* The answer holds n_best hypotheses for each of n texts. */
static bool answer_fits(const Mt__V1__TranslateResponse *r, size_t n) {
    size_t nb = r->n_best ? r->n_best : 1;
    return r->n_texts == n * nb;
}

/* --stream: partial answers print the growing translation of the first text not yet done (the rest
 * are printed when their turn comes, from their latest partial or the final answer). */
typedef struct stream_view {
    size_t n, cur;
    char **latest;     /* (n) the latest partial text of each */
    size_t printed;    /* bytes of text cur already printed */
} stream_view;

static void stream_show(stream_view *v, size_t i, const char *text) {
    if (i != v->cur || strncmp(text, v->latest[i] ? v->latest[i] : "", v->printed) != 0) return;
    size_t len = strlen(text);
    if (len > v->printed) {
        fwrite(text + v->printed, 1, len - v->printed, stdout);
        fflush(stdout);
        v->printed = len;
    }
}

static int translate_streaming(const opts *o, mt_frame *f, size_t n) {
    mtc_conn *c = NULL;
    int rc = open_session(o, &c, NULL);
    if (rc) return rc;
    stream_view v = {.n = n, .latest = calloc(n, sizeof(char *))};
    f->id = 2;
    if (!v.latest) rc = die(EXIT_CONNECT, "out of memory");
    else if ((rc = mtc_send(c, f, o->timeout_ms)) != MTC_OK) rc = die(exit_for_io(rc), "%s", mtc_error(c));
    while (rc == 0) {
        mt_frame *a = NULL;
        if ((rc = recv_answer(c, o, 2, &a)) != 0) break;
        const Mt__V1__TranslateResponse *r = a->body_case == MT__V1__FRAME__BODY_TRANSLATE_OK ? a->translate_ok : NULL;
        if (r && !r->final && r->n_texts == 1 && r->index < n) {
            stream_show(&v, r->index, r->texts[0]);
            free(v.latest[r->index]);
            v.latest[r->index] = strdup(r->texts[0]);
            mt_frame_free(a);
            continue;
        }
        if (!r || !answer_fits(r, n)) {
            rc = die(EXIT_PROTOCOL, "unexpected answer to translate");
        } else {
            size_t nb = r->n_best ? r->n_best : 1;
            for (; v.cur < n; v.cur++, v.printed = 0) {
                const char *best = r->texts[v.cur * nb];
                /* What was shown is kept when the final text continues it; else the line starts over. */
                if (v.printed && strncmp(best, v.latest[v.cur], v.printed) != 0) {
                    printf("\n");
                    v.printed = 0;
                }
                if (o->scores || nb > 1) {
                    if (v.printed) printf("\n");
                    print_result(o, r, v.cur);
                } else {
                    printf("%s\n", best + v.printed);
                }
            }
        }
        mt_frame_free(a);
        break;
    }
    for (size_t i = 0; v.latest && i < n; i++) free(v.latest[i]);
    free(v.latest);
    mtc_close(c);
    return rc;
}

static int translate_args(const opts *o, char **texts, size_t n) {
    Mt__V1__TranslateRequest t;
    char **prefixes = calloc(n ? n : 1, sizeof *prefixes);
    if (!prefixes) return die(EXIT_CONNECT, "out of memory");
    fill_translate(o, &t, texts, n, prefixes);
    t.stream = o->stream;
    mt_frame f = MT__V1__FRAME__INIT;
    f.body_case = MT__V1__FRAME__BODY_TRANSLATE;
    f.translate = &t;
    if (o->stream) {
        int rc = translate_streaming(o, &f, n);
        free(prefixes);
        return rc;
    }
    mt_frame *a = NULL;
    int rc = simple_request(o, &f, &a);
    free(prefixes);
    if (rc) return rc;
    if (a->body_case != MT__V1__FRAME__BODY_TRANSLATE_OK || !answer_fits(a->translate_ok, n)) {
        mt_frame_free(a);
        return die(EXIT_PROTOCOL, "unexpected answer to translate");
    }
    for (size_t i = 0; i < n; i++) print_result(o, a->translate_ok, i);
    mt_frame_free(a);
    return 0;
}

typedef struct chunk {
    char **lines;
    size_t n;
    size_t first_line;  /* 1-based line number of lines[0] */
    mt_frame *answer;
    int retries;
} chunk;

static void free_chunk(chunk *k) {
    for (size_t i = 0; i < k->n; i++) free(k->lines[i]);
    free(k->lines);
    mt_frame_free(k->answer);
    memset(k, 0, sizeof *k);
}

/* Reads up to max lines; returns the count (0 at EOF), -1 on error. */
static long read_chunk(FILE *in, size_t max, chunk *k, size_t *lineno) {
    k->lines = calloc(max, sizeof *k->lines);
    if (!k->lines) return -1;
    k->n = 0;
    k->first_line = *lineno + 1;
    char *line = NULL;
    size_t cap = 0;
    while (k->n < max) {
        ssize_t len = getline(&line, &cap, in);
        if (len < 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        k->lines[k->n++] = strdup(line);
        (*lineno)++;
    }
    free(line);
    if (ferror(in)) return -1;
    return (long)k->n;
}

static int send_chunk(mtc_conn *c, const opts *o, uint64_t id, chunk *k) {
    Mt__V1__TranslateRequest t;
    char **prefixes = calloc(k->n ? k->n : 1, sizeof *prefixes);
    if (!prefixes) return die(EXIT_CONNECT, "out of memory");
    fill_translate(o, &t, k->lines, k->n, prefixes);
    mt_frame f = MT__V1__FRAME__INIT;
    f.id = id;
    f.body_case = MT__V1__FRAME__BODY_TRANSLATE;
    f.translate = &t;
    int rc = mtc_send(c, &f, o->timeout_ms);
    free(prefixes);
    return rc == MTC_OK ? 0 : die(exit_for_io(rc), "%s", mtc_error(c));
}

static int translate_stream(const opts *o, FILE *in) {
    mtc_conn *c = NULL;
    mt_frame *hello = NULL;
    int rc = open_session(o, &c, &hello);
    if (rc) return rc;
    const Mt__V1__Limits *L = hello->hello_ok->limits;
    uint32_t batch = o->batch, window = o->window;
    uint32_t max_chars = L && L->max_chars ? L->max_chars : UINT32_MAX;
    if (L && L->max_sentences && batch > L->max_sentences) batch = L->max_sentences;
    if (L && L->max_inflight && window > L->max_inflight) window = L->max_inflight;
    if (window < 1) window = 1;
    mt_frame_free(hello);

    /* Ring of `window` chunks; chunk seq s travels as request id s + 2 (id 1 was Hello). */
    chunk *ring = calloc(window, sizeof *ring);
    if (!ring) {
        mtc_close(c);
        return die(EXIT_CONNECT, "out of memory");
    }
    uint64_t next_send = 0, next_print = 0;
    size_t lineno = 0, done_sent = 0;
    bool eof = false;
    int tty = isatty(STDERR_FILENO);
    double t0 = now_s(), last_prog = t0;
    rc = 0;
    while (!rc) {
        /* Fill the window. */
        while (!eof && next_send - next_print < window) {
            chunk *k = &ring[next_send % window];
            long n = read_chunk(in, batch, k, &lineno);
            if (n < 0) {
                rc = die(EXIT_USAGE, "reading input: %s", strerror(errno));
                break;
            }
            if (n == 0) {
                free_chunk(k);
                eof = true;
                break;
            }
            for (size_t i = 0; i < k->n; i++) {
                long cc = mt_utf8_count(k->lines[i], (long)max_chars);
                if (cc < 0) rc = die(EXIT_USAGE, "line %zu is not valid UTF-8", k->first_line + i);
                else if (cc > (long)max_chars)
                    rc = die(EXIT_USAGE, "line %zu is longer than the server's limit of %u characters",
                             k->first_line + i, max_chars);
                if (rc) break;
            }
            if (rc || (rc = send_chunk(c, o, next_send + 2, k))) break;
            next_send++;
        }
        if (rc || next_print == next_send) break;
        /* One answer. */
        mt_frame *f = NULL;
        int r = mtc_recv(c, o->timeout_ms, &f);
        if (r != MTC_OK) {
            rc = die(exit_for_io(r), "%s", mtc_error(c));
            break;
        }
        if (f->id < next_print + 2 || f->id >= next_send + 2) {
            if (f->body_case == MT__V1__FRAME__BODY_ERROR)
                rc = die(exit_for_error((int)f->error->code), "%s: %s", mt_error_code_name((int)f->error->code),
                         f->error->message);
            mt_frame_free(f);
            continue;
        }
        chunk *k = &ring[(f->id - 2) % window];
        if (f->body_case == MT__V1__FRAME__BODY_ERROR) {
            int code = (int)f->error->code;
            if ((code == MT__V1__ERROR_CODE__ERR_QUEUE_FULL || code == MT__V1__ERROR_CODE__ERR_TOO_MANY_INFLIGHT) &&
                k->retries < 100) {
                k->retries++;
                uint64_t id = f->id;
                mt_frame_free(f);
                usleep(20000u * (unsigned)(k->retries < 10 ? k->retries : 10));
                rc = send_chunk(c, o, id, k);
                continue;
            }
            rc = die(exit_for_error(code), "lines %zu-%zu: %s: %s", k->first_line, k->first_line + k->n - 1,
                     mt_error_code_name(code), f->error->message);
            mt_frame_free(f);
            break;
        }
        if (f->body_case != MT__V1__FRAME__BODY_TRANSLATE_OK || !answer_fits(f->translate_ok, k->n)) {
            mt_frame_free(f);
            rc = die(EXIT_PROTOCOL, "unexpected answer to translate");
            break;
        }
        k->answer = f;
        /* Print every chunk that is now complete, in order. */
        while (next_print < next_send && ring[next_print % window].answer) {
            chunk *p = &ring[next_print % window];
            for (size_t i = 0; i < p->n; i++) print_result(o, p->answer->translate_ok, i);
            done_sent += p->n;
            free_chunk(p);
            next_print++;
        }
        double t = now_s();
        if (!o->quiet && t - last_prog >= (tty ? 0.2 : 5.0)) {
            fprintf(stderr, tty ? "\rmt-client: %zu sentences translated (%.0f/s)" : "mt-client: %zu sentences translated (%.0f/s)\n",
                    done_sent, (double)done_sent / (t - t0));
            last_prog = t;
        }
    }
    fflush(stdout);
    if (!o->quiet && !rc) {
        double t = now_s() - t0;
        fprintf(stderr, "%smt-client: %zu sentences translated in %.2f s (%.0f/s)\n", tty ? "\r" : "", done_sent, t,
                t > 0 ? (double)done_sent / t : 0.0);
    }
    for (uint32_t i = 0; i < window; i++) free_chunk(&ring[i]);
    free(ring);
    mtc_close(c);
    return rc;
}

/* ---- service and training ---- */

static const char *enum_name(const ProtobufCEnumDescriptor *d, int v) {
    const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(d, v);
    return e ? e->name : "?";
}

static int cmd_health(const opts *o) {
    mt_frame f = MT__V1__FRAME__INIT;
    Mt__V1__HealthRequest h = MT__V1__HEALTH_REQUEST__INIT;
    f.body_case = MT__V1__FRAME__BODY_HEALTH;
    f.health = &h;
    mt_frame *a = NULL;
    int rc = simple_request(o, &f, &a);
    if (rc) return rc;
    if (a->body_case != MT__V1__FRAME__BODY_HEALTH_OK) {
        mt_frame_free(a);
        return die(EXIT_PROTOCOL, "unexpected answer to health");
    }
    const Mt__V1__HealthResponse *r = a->health_ok;
    printf("state: %s\nmodel: %s\nmodel_generation: %" PRIu64 "\nuptime_s: %" PRIu64 "\ntraining: %s\nworkers: %u\n",
           enum_name(&mt__v1__serving_state__descriptor, r->state), *r->model_path ? r->model_path : "(none)",
           r->model_generation, r->uptime_s, r->training ? "yes" : "no", r->workers);
    int code = r->state == MT__V1__SERVING_STATE__SERVING_OK ? 0 : EXIT_SERVER;
    mt_frame_free(a);
    return code;
}

static int cmd_stats(const opts *o) {
    mt_frame f = MT__V1__FRAME__INIT;
    Mt__V1__StatsRequest s = MT__V1__STATS_REQUEST__INIT;
    f.body_case = MT__V1__FRAME__BODY_STATS;
    f.stats = &s;
    mt_frame *a = NULL;
    int rc = simple_request(o, &f, &a);
    if (rc) return rc;
    if (a->body_case != MT__V1__FRAME__BODY_STATS_OK) {
        mt_frame_free(a);
        return die(EXIT_PROTOCOL, "unexpected answer to stats");
    }
    const Mt__V1__StatsResponse *r = a->stats_ok;
    printf("connections: %u\nconnections_total: %" PRIu64 "\nrequests_total: %" PRIu64 "\nsentences_total: %" PRIu64
           "\nbatches_total: %" PRIu64 "\nmean_batch_sentences: %.2f\nerrors_total: %" PRIu64
           "\nlimit_hits_total: %" PRIu64 "\nqueue_depth: %u\ninflight: %u\nlatency_p50_ms: %.1f\nlatency_p99_ms: %.1f\n"
           "train_step: %" PRId64 "\ntrain_loss: %.4f\nmodel_generation: %" PRIu64 "\n",
           r->connections, r->connections_total, r->requests_total, r->sentences_total, r->batches_total,
           r->mean_batch_sentences, r->errors_total, r->limit_hits_total, r->queue_depth, r->inflight,
           r->latency_p50_ms, r->latency_p99_ms, r->train_step, r->train_loss, r->model_generation);
    mt_frame_free(a);
    return 0;
}

static void print_train_status(const Mt__V1__TrainStatus *s) {
    printf("state: %s\nstep: %" PRId64 "\nloss: %.4f\ntokens_per_s: %.1f\n",
           enum_name(&mt__v1__train_state__descriptor, s->state), s->step, s->loss, s->tokens_per_s);
    if (*s->status_json) printf("status: %s\n", s->status_json);
    if (*s->cluster_state || s->n_nodes)
        printf("cluster: %s (world %u, %u restart%s)\n", s->cluster_state, s->world_size, s->restarts,
               s->restarts == 1 ? "" : "s");
    for (size_t i = 0; i < s->n_nodes; i++) {
        const Mt__V1__ClusterNode *n = s->nodes[i];
        printf("node %s %s ranks ", n->name, n->address);
        for (size_t r = 0; r < n->n_ranks; r++) printf("%s%u", r ? "," : "", n->ranks[r]);
        printf("%s state %s step %" PRId64 " tokens_per_s %.1f heartbeat_age_s %.1f weights %s%s%s\n",
               n->n_ranks ? "" : "-", n->state, n->step, n->tokens_per_s, n->heartbeat_age_s,
               *n->weights_sha256 ? n->weights_sha256 : "-", *n->message ? " message " : "", n->message);
    }
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (n < cap - 1) break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) {
            free(buf);
            buf = NULL;
        } else {
            buf = nb;
        }
    }
    fclose(f);
    if (buf) buf[n] = 0;
    return buf;
}

static int cmd_train(const opts *o, int argc, char **argv) {
    if (argc < 1) return die(EXIT_USAGE, "train needs a subcommand: start, status, stop, save, promote, watch");
    const char *sub = argv[0];
    mt_frame f = MT__V1__FRAME__INIT;
    Mt__V1__TrainStart start = MT__V1__TRAIN_START__INIT;
    Mt__V1__TrainStatusRequest status = MT__V1__TRAIN_STATUS_REQUEST__INIT;
    Mt__V1__TrainStop stop = MT__V1__TRAIN_STOP__INIT;
    Mt__V1__TrainSave save = MT__V1__TRAIN_SAVE__INIT;
    Mt__V1__ModelPromote promote = MT__V1__MODEL_PROMOTE__INIT;
    Mt__V1__TrainSubscribe sub_ = MT__V1__TRAIN_SUBSCRIBE__INIT;
    char *config = NULL;
    if (!strcmp(sub, "start")) {
        if (!o->config) return die(EXIT_USAGE, "train start needs --config FILE");
        config = read_file(o->config);
        if (!config) return die(EXIT_USAGE, "cannot read %s: %s", o->config, strerror(errno));
        start.config_json = config;
        start.min_nodes = o->min_nodes;
        f.body_case = MT__V1__FRAME__BODY_TRAIN_START;
        f.train_start = &start;
    } else if (!strcmp(sub, "status")) {
        f.body_case = MT__V1__FRAME__BODY_TRAIN_STATUS;
        f.train_status = &status;
    } else if (!strcmp(sub, "stop")) {
        f.body_case = MT__V1__FRAME__BODY_TRAIN_STOP;
        f.train_stop = &stop;
    } else if (!strcmp(sub, "save")) {
        save.path = argc > 1 ? argv[1] : "";
        f.body_case = MT__V1__FRAME__BODY_TRAIN_SAVE;
        f.train_save = &save;
    } else if (!strcmp(sub, "promote")) {
        if (argc < 2) return die(EXIT_USAGE, "train promote needs a PATH");
        promote.path = argv[1];
        f.body_case = MT__V1__FRAME__BODY_MODEL_PROMOTE;
        f.model_promote = &promote;
    } else if (!strcmp(sub, "watch")) {
        f.body_case = MT__V1__FRAME__BODY_TRAIN_SUBSCRIBE;
        f.train_subscribe = &sub_;
    } else {
        return die(EXIT_USAGE, "unknown train subcommand '%s'", sub);
    }

    if (f.body_case != MT__V1__FRAME__BODY_TRAIN_SUBSCRIBE) {
        mt_frame *a = NULL;
        int rc = simple_request(o, &f, &a);
        free(config);
        if (rc) return rc;
        switch (a->body_case) {
        case MT__V1__FRAME__BODY_TRAIN_STATUS_OK: print_train_status(a->train_status_ok); break;
        case MT__V1__FRAME__BODY_TRAIN_SAVED: printf("saved: %s\n", a->train_saved->path); break;
        case MT__V1__FRAME__BODY_MODEL_PROMOTED:
            printf("serving: %s\nmodel_generation: %" PRIu64 "\n", a->model_promoted->path,
                   a->model_promoted->model_generation);
            if (*a->model_promoted->model_info_json) printf("model: %s\n", a->model_promoted->model_info_json);
            break;
        default:
            mt_frame_free(a);
            return die(EXIT_PROTOCOL, "unexpected answer to train %s", sub);
        }
        mt_frame_free(a);
        return 0;
    }

    /* watch: the status, then every event until the run ends. */
    mtc_conn *c = NULL;
    int rc = open_session(o, &c, NULL);
    if (rc) return rc;
    f.id = 2;
    if ((rc = mtc_send(c, &f, o->timeout_ms)) != MTC_OK) {
        rc = die(exit_for_io(rc), "%s", mtc_error(c));
        mtc_close(c);
        return rc;
    }
    for (;;) {
        mt_frame *a = NULL;
        int r = mtc_recv(c, -1, &a);
        if (r != MTC_OK) {
            rc = die(exit_for_io(r), "%s", mtc_error(c));
            break;
        }
        if (a->body_case == MT__V1__FRAME__BODY_ERROR) {
            rc = die(exit_for_error((int)a->error->code), "%s: %s", mt_error_code_name((int)a->error->code),
                     a->error->message);
            mt_frame_free(a);
            break;
        }
        if (a->body_case == MT__V1__FRAME__BODY_TRAIN_STATUS_OK) {
            const Mt__V1__TrainStatus *s = a->train_status_ok;
            fprintf(stderr, "mt-client: training %s at step %" PRId64 "\n",
                    enum_name(&mt__v1__train_state__descriptor, s->state), s->step);
        } else if (a->body_case == MT__V1__FRAME__BODY_TRAIN_EVENT) {
            printf("%s\n", a->train_event->event_json);
            fflush(stdout);
            if (a->train_event->final) {
                rc = strstr(a->train_event->event_json, "\"state\":\"failed\"") ? EXIT_SERVER : 0;
                mt_frame_free(a);
                break;
            }
        }
        mt_frame_free(a);
    }
    mtc_close(c);
    return rc;
}

/* ---- main ---- */

static int need_value(int argc, char **argv, int i) {
    if (i + 1 >= argc) {
        fprintf(stderr, "mt-client: %s needs a value\n", argv[i]);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    opts o;
    memset(&o, 0, sizeof o);
    o.server = getenv("MT_SERVER") && *getenv("MT_SERVER") ? getenv("MT_SERVER") : "127.0.0.1:7700";
    o.timeout_ms = 600000;
    o.batch = 32;
    o.window = 16;
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    int npos = 0;
    bool only_pos = false;
    if (!pos) return EXIT_CONNECT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || !strcmp(a, "-")) {
            pos[npos++] = argv[i];
            continue;
        }
#define VAL() (need_value(argc, argv, i) ? argv[++i] : NULL)
        if (!strcmp(a, "--")) only_pos = true;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(pos);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("mt-client %s\n", MT_NET_VERSION);
            free(pos);
            return 0;
        } else if (!strcmp(a, "--server")) {
            if (!(o.server = VAL())) goto bad;
        } else if (!strcmp(a, "--tls")) o.tls.enabled = true;
        else if (!strcmp(a, "--ca")) {
            if (!(o.tls.ca_file = VAL())) goto bad;
            o.tls.enabled = true;
        } else if (!strcmp(a, "--server-name")) {
            if (!(o.tls.server_name = VAL())) goto bad;
        } else if (!strcmp(a, "--token-file")) {
            if (!(o.token_file = VAL())) goto bad;
        } else if (!strcmp(a, "--timeout")) {
            const char *v = VAL();
            if (!v || atof(v) <= 0) goto bad;
            o.timeout_ms = (int)(atof(v) * 1000);
        } else if (!strcmp(a, "--beam")) {
            const char *v = VAL();
            if (!v) goto bad;
            o.beam = (uint32_t)atoi(v);
        } else if (!strcmp(a, "--length-penalty")) {
            const char *v = VAL();
            if (!v) goto bad;
            o.length_penalty = (float)atof(v);
            o.has_length_penalty = true;
        } else if (!strcmp(a, "--max-len-ratio")) {
            const char *v = VAL();
            if (!v) goto bad;
            o.max_len_ratio = (float)atof(v);
        } else if (!strcmp(a, "--n-best")) {
            const char *v = VAL();
            if (!v || atoi(v) < 1) goto bad;
            o.n_best = (uint32_t)atoi(v);
        } else if (!strcmp(a, "--prefix")) {
            if (!(o.prefix = VAL())) goto bad;
        } else if (!strcmp(a, "--stream")) o.stream = true;
        else if (!strcmp(a, "--scores")) o.scores = 1;
        else if (!strcmp(a, "--batch")) {
            const char *v = VAL();
            if (!v || atoi(v) < 1) goto bad;
            o.batch = (uint32_t)atoi(v);
        } else if (!strcmp(a, "--window")) {
            const char *v = VAL();
            if (!v || atoi(v) < 1) goto bad;
            o.window = (uint32_t)atoi(v);
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) o.quiet = 1;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!(o.file = VAL())) goto bad;
        } else if (!strcmp(a, "--config")) {
            if (!(o.config = VAL())) goto bad;
        } else if (!strcmp(a, "--min-nodes")) {
            const char *v = VAL();
            if (!v || atoi(v) < 1 || atoi(v) > 1025) goto bad;
            o.min_nodes = (uint32_t)atoi(v);
        } else {
            fprintf(stderr, "mt-client: unknown option %s (see --help)\n", a);
            goto bad;
        }
#undef VAL
    }
    if (npos < 1) {
        usage(stderr);
        goto bad;
    }
    if (o.token_file) {
        char err[512];
        o.token = mt_token_file_read(o.token_file, NULL, err, sizeof err);
        if (!o.token) {
            fprintf(stderr, "mt-client: %s\n", err);
            goto bad;
        }
    } else if (getenv("MT_TOKEN")) {
        o.token = strdup(getenv("MT_TOKEN"));
    }

    int rc;
    const char *cmd = pos[0];
    if (!strcmp(cmd, "translate")) {
        if (npos > 1 && !o.file) {
            rc = translate_args(&o, pos + 1, (size_t)(npos - 1));
        } else {
            FILE *in = stdin;
            if (o.file && strcmp(o.file, "-") != 0 && !(in = fopen(o.file, "r"))) {
                rc = die(EXIT_USAGE, "cannot open %s: %s", o.file, strerror(errno));
            } else {
                rc = translate_stream(&o, in);
                if (in != stdin) fclose(in);
            }
        }
    } else if (!strcmp(cmd, "health")) {
        rc = cmd_health(&o);
    } else if (!strcmp(cmd, "stats")) {
        rc = cmd_stats(&o);
    } else if (!strcmp(cmd, "train")) {
        rc = cmd_train(&o, npos - 1, pos + 1);
    } else if (!strcmp(cmd, "promote")) {
        char *args[3] = {"promote", npos > 1 ? pos[1] : NULL, NULL};
        rc = npos > 1 ? cmd_train(&o, 2, args) : die(EXIT_USAGE, "promote needs a PATH");
    } else {
        rc = die(EXIT_USAGE, "unknown command '%s' (see --help)", cmd);
    }
    free(o.token);
    free(pos);
    return rc;
bad:
    free(o.token);
    free(pos);
    return EXIT_USAGE;
}
