/*
 * options.c — mt-server's settings: one table describes every key (type, range, default, help), and
 * the command line (`--key value`, `--key=value`) and the config file (`key = value`) both go through
 * it, so the two can never disagree. Sizes take K/M/G suffixes (binary).
 */
#include "options.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

enum { T_STR, T_U32, T_U64, T_BYTES, T_BOOL, T_GPUS, T_LEVEL };

typedef struct optdesc {
    const char *name;
    int type;
    size_t off;
    uint64_t min, max;
    const char *arg;
    const char *help;
} optdesc;

#define OFF(f) offsetof(mt_srv_options, f)
#define LIM(f) offsetof(mt_srv_options, limits.f)

static const optdesc g_opts[] = {
    {"listen", T_STR, OFF(listen), 0, 0, "HOST:PORT", "protocol listener (port 0: any free port)"},
    {"http", T_STR, OFF(http), 0, 0, "HOST:PORT", "/healthz and /metrics listener, or \"off\""},
    {"gpus", T_GPUS, 0, 0, 0, "LIST", "CUDA devices, one engine worker each (\"0,1\"); CPU when absent"},
    {"model", T_STR, OFF(model), 0, 0, "FILE", "model to serve from startup (.mt or .mt.zst)"},
    {"threads", T_U32, OFF(threads), 1, 256, "N", "CPU engine workers when no --gpus"},
    {"max-batch-tokens", T_U32, OFF(max_batch_tokens), 1, 1u << 24, "N",
     "batch budget in padded tokens (sentences x longest); 1 = no batching"},
    {"max-batch-sentences", T_U32, OFF(max_batch_sentences), 1, 65536, "N", "sentences per batch"},
    {"max-wait-ms", T_U32, OFF(max_wait_ms), 0, 10000, "MS", "longest wait for a batch to fill (from arrival, or from a busy worker becoming free)"},
    {"tls-cert", T_STR, OFF(tls_cert), 0, 0, "FILE", "TLS certificate chain (PEM); with --tls-key"},
    {"tls-key", T_STR, OFF(tls_key), 0, 0, "FILE", "TLS private key (PEM)"},
    {"token-file", T_STR, OFF(token_file), 0, 0, "FILE", "bearer token for translation (first line)"},
    {"admin-token-file", T_STR, OFF(admin_token_file), 0, 0, "FILE", "bearer token for training/model control"},
    {"data-root", T_STR, OFF(data_root), 0, 0, "DIR", "paths named by clients must stay inside (default: cwd)"},
    {"insecure", T_BOOL, OFF(insecure), 0, 0, NULL, "allow a non-loopback listener without a token"},
    {"log-level", T_LEVEL, OFF(log_level), 0, 0, "LEVEL", "debug | info | warn | error"},
    {"port-file", T_STR, OFF(port_file), 0, 0, "FILE", "write the bound addresses here once listening"},
    {"cluster-token-file", T_STR, OFF(cluster_token_file), 0, 0, "FILE",
     "cluster mode: the token worker nodes join with (it grants nothing else)"},
    {"join", T_STR, OFF(join), 0, 0, "HOST:PORT", "be a worker node of the coordinator at HOST:PORT (needs --cluster-token-file)"},
    {"node-name", T_STR, OFF(node_name), 0, 0, "NAME", "this node's name in the cluster (default: the host name)"},
    {"max-nodes", T_U32, OFF(max_nodes), 1, 1024, "N", "coordinator: worker nodes that may join"},
    {"heartbeat-s", T_U32, OFF(heartbeat_s), 1, 3600, "S", "cluster heartbeat period; a node is lost after 3 missed"},
    {"join-timeout-s", T_U32, OFF(join_timeout_s), 1, 86400, "S", "coordinator: how long train start waits for --min-nodes"},
    {"cluster-port", T_U32, OFF(cluster_port), 0, 65535, "PORT",
     "coordinator: port of rank 0's rendezvous store (0: a free one per job)"},
    {"max-frame-bytes", T_BYTES, LIM(max_frame_bytes), 64, 1ull << 31, "BYTES", "frame length limit"},
    {"max-discard-bytes", T_BYTES, LIM(max_discard_bytes), 0, 1ull << 40, "BYTES",
     "oversized frames up to this are skipped, larger ones close the connection"},
    {"max-hello-bytes", T_BYTES, LIM(max_hello_bytes), 64, 1ull << 24, "BYTES", "frame length limit before Hello"},
    {"max-connections", T_U32, LIM(max_connections), 1, 1u << 20, "N", "open client connections"},
    {"max-inflight", T_U32, LIM(max_inflight), 1, 1u << 16, "N", "unanswered requests per connection"},
    {"max-sentences", T_U32, LIM(max_sentences), 1, 1u << 20, "N", "sentences per translate request"},
    {"max-chars", T_U32, LIM(max_chars), 1, 1u << 24, "N", "code points per sentence"},
    {"idle-timeout-s", T_U32, LIM(idle_timeout_s), 0, 1u << 24, "S", "close idle connections (0 = never)"},
    {"hello-timeout-s", T_U32, LIM(hello_timeout_s), 1, 3600, "S", "time allowed from accept to Hello"},
    {"requests-per-event", T_U32, LIM(requests_per_event), 1, 1u << 16, "N",
     "frames handled per read event before other connections get a turn"},
    {"max-queue-sentences", T_U32, LIM(max_queue_sentences), 1, 1u << 26, "N",
     "sentences waiting for a batch, all connections together"},
    {"max-conn-queue-sentences", T_U32, LIM(max_conn_queue_sentences), 1, 1u << 26, "N",
     "one connection's share of the queue: its sentences not yet answered"},
    {"http-max-connections", T_U32, LIM(http_max_connections), 1, 1u << 16, "N", "open connections on the --http port"},
    {"http-timeout-s", T_U32, LIM(http_timeout_s), 1, 3600, "S",
     "an HTTP request must arrive whole within this from accept (slow senders are closed)"},
    {"output-high-water", T_BYTES, LIM(output_high_water), 4096, 1ull << 34, "BYTES",
     "unsent output above which a connection's input is paused"},
    {"drain-timeout-s", T_U32, LIM(drain_timeout_s), 1, 86400, "S", "longest SIGTERM drain"},
};
#define N_OPTS (sizeof g_opts / sizeof g_opts[0])

void mt_srv_options_init(mt_srv_options *o) {
    memset(o, 0, sizeof *o);
    o->listen = strdup("127.0.0.1:7700");
    o->http = strdup("127.0.0.1:7701");
    o->threads = 1;
    o->max_batch_tokens = 4096;
    o->max_batch_sentences = 256;
    o->max_wait_ms = 5;
    o->log_level = MT_NLOG_INFO;
    o->max_nodes = 16;
    o->heartbeat_s = 2;
    o->join_timeout_s = 60;
    mt_srv_limits *l = &o->limits;
    l->max_frame_bytes = 16u << 20;
    l->max_discard_bytes = 256u << 20;
    l->max_hello_bytes = 4096;
    l->max_connections = 1024;
    l->max_inflight = 64;
    l->max_sentences = 1024;
    l->max_chars = 4096;
    l->idle_timeout_s = 300;
    l->hello_timeout_s = 10;
    l->requests_per_event = 32;
    l->max_queue_sentences = 65536;
    l->max_conn_queue_sentences = 16384;
    l->http_max_connections = 64;
    l->http_timeout_s = 5;
    l->output_high_water = 8u << 20;
    l->drain_timeout_s = 60;
}

void mt_srv_options_free(mt_srv_options *o) {
    for (size_t i = 0; i < N_OPTS; i++)
        if (g_opts[i].type == T_STR) {
            char **p = (char **)((char *)o + g_opts[i].off);
            free(*p);
            *p = NULL;
        }
    free(o->config);
    o->config = NULL;
}

static const optdesc *find_opt(const char *name) {
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(g_opts[i].name, name) == 0) return &g_opts[i];
    return NULL;
}

static int parse_u64(const char *s, bool sized, uint64_t *out) {
    if (!*s || *s == '-') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return -1;
    uint64_t mult = 1;
    if (sized && *end) {
        switch (*end) {
        case 'k': case 'K': mult = 1ull << 10; break;
        case 'm': case 'M': mult = 1ull << 20; break;
        case 'g': case 'G': mult = 1ull << 30; break;
        default: return -1;
        }
        end++;
        if (*end == 'i' || *end == 'I') end++;
        if (*end == 'b' || *end == 'B') end++;
    }
    if (*end) return -1;
    if (v > UINT64_MAX / mult) return -1;
    *out = v * mult;
    return 0;
}

static int parse_bool(const char *s, bool *out) {
    if (!strcasecmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on")) {
        *out = true;
        return 0;
    }
    if (!strcasecmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off")) {
        *out = false;
        return 0;
    }
    return -1;
}

static int parse_gpus(mt_srv_options *o, const char *s) {
    int n = 0;
    const char *p = s;
    if (!*s) {
        o->n_gpus = 0;
        return 0;
    }
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > 1023 || n >= MT_SRV_MAX_GPUS) return -1;
        for (int i = 0; i < n; i++)
            if (o->gpus[i] == (int)v) return -1;
        o->gpus[n++] = (int)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) return -1;
    }
    o->n_gpus = n;
    return 0;
}

int mt_srv_options_set(mt_srv_options *o, const char *key, const char *value, char *err, size_t errlen) {
    const optdesc *d = find_opt(key);
    if (!d) {
        snprintf(err, errlen, "unknown option '%s'", key);
        return -1;
    }
    void *p = (char *)o + d->off;
    uint64_t v;
    switch (d->type) {
    case T_STR:
        free(*(char **)p);
        *(char **)p = strdup(value);
        return 0;
    case T_BOOL:
        if (parse_bool(value, (bool *)p) == 0) return 0;
        snprintf(err, errlen, "option '%s': '%s' is not a boolean (true/false)", key, value);
        return -1;
    case T_GPUS:
        if (parse_gpus(o, value) == 0) return 0;
        snprintf(err, errlen, "option 'gpus': '%s' is not a list of distinct device ids (\"0,1\")", value);
        return -1;
    case T_LEVEL: {
        int l = mt_nlog_parse_level(value);
        if (l >= 0) {
            *(int *)p = l;
            return 0;
        }
        snprintf(err, errlen, "option 'log-level': '%s' is not debug, info, warn or error", value);
        return -1;
    }
    default:
        if (parse_u64(value, d->type == T_BYTES, &v) != 0 || v < d->min || v > d->max) {
            snprintf(err, errlen, "option '%s': '%s' is not %s in %" PRIu64 "..%" PRIu64, key, value,
                     d->type == T_BYTES ? "a size" : "a number", d->min, d->max);
            return -1;
        }
        if (d->type == T_U32) *(uint32_t *)p = (uint32_t)v;
        else *(uint64_t *)p = v;
        return 0;
    }
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) s[--n] = 0;
    return s;
}

int mt_srv_options_load_file(mt_srv_options *o, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "config %s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "config %s:%d: expected 'key = value'", path, lineno);
            rc = -1;
            break;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
            val[vl - 1] = 0;
            val++;
        }
        if (strcmp(key, "config") == 0) {
            snprintf(err, errlen, "config %s:%d: 'config' cannot be nested", path, lineno);
            rc = -1;
            break;
        }
        char e2[512];
        if (mt_srv_options_set(o, key, val, e2, sizeof e2) != 0) {
            snprintf(err, errlen, "config %s:%d: %s", path, lineno, e2);
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

void mt_srv_options_usage(const char *prog) {
    mt_srv_options d;
    mt_srv_options_init(&d);
    printf("usage: %s [--config FILE] [options]\n\n"
           "The MicroTensor translation server (protocol: proto/README.md). Every option can also be\n"
           "set in the --config file as `key = value` (the command line wins). Sizes take K/M/G.\n\n",
           prog);
    for (size_t i = 0; i < N_OPTS; i++) {
        const optdesc *o = &g_opts[i];
        char def[64] = "";
        void *p = (char *)&d + o->off;
        switch (o->type) {
        case T_STR: snprintf(def, sizeof def, "%s", *(char **)p ? *(char **)p : ""); break;
        case T_U32: snprintf(def, sizeof def, "%u", *(uint32_t *)p); break;
        case T_U64:
        case T_BYTES: {
            uint64_t v = *(uint64_t *)p;
            if (v && v % (1u << 20) == 0) snprintf(def, sizeof def, "%" PRIu64 "M", v >> 20);
            else if (v && v % 1024 == 0) snprintf(def, sizeof def, "%" PRIu64 "K", v >> 10);
            else snprintf(def, sizeof def, "%" PRIu64, v);
            break;
        }
        case T_BOOL: snprintf(def, sizeof def, "false"); break;
        case T_LEVEL: snprintf(def, sizeof def, "%s", mt_nlog_level_name(*(int *)p)); break;
        default: break;
        }
        char lhs[64];
        snprintf(lhs, sizeof lhs, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        printf("  %-32s %s%s%s%s\n", lhs, o->help, def[0] ? " [" : "", def, def[0] ? "]" : "");
    }
    printf("  %-32s %s\n  %-32s %s\n  %-32s %s\n", "--config FILE", "read settings from FILE",
           "--version", "print the version", "--help", "this text");
    printf("\nSIGTERM/SIGINT drain: stop accepting, finish in-flight work, stop training (it saves a\n"
           "checkpoint), exit 0. Exit status: 0 ok, 1 runtime failure, 2 bad options.\n");
    mt_srv_options_free(&d);
}

int mt_srv_options_parse(mt_srv_options *o, int argc, char **argv, char *err, size_t errlen) {
    /* First pass: --help/--version and --config, so the file is applied before the command line. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            mt_srv_options_usage(argv[0]);
            return 1;
        }
        if (!strcmp(argv[i], "--version")) return 2;
        if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9)) {
            const char *v = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) {
                snprintf(err, errlen, "option 'config' needs a value");
                return -1;
            }
            free(o->config);
            o->config = strdup(v);
        }
    }
    if (o->config && mt_srv_options_load_file(o, o->config, err, errlen) != 0) return -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (options start with --)", a);
            return -1;
        }
        char key[128];
        const char *val = NULL;
        const char *eq = strchr(a + 2, '=');
        size_t kl = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        if (kl >= sizeof key) kl = sizeof key - 1;
        memcpy(key, a + 2, kl);
        key[kl] = 0;
        if (!strcmp(key, "config")) {
            if (!eq) i++;
            continue;
        }
        const optdesc *d = find_opt(key);
        if (!d) {
            snprintf(err, errlen, "unknown option '--%s' (see --help)", key);
            return -1;
        }
        if (eq) val = eq + 1;
        else if (d->type == T_BOOL) val = "true";
        else if (i + 1 < argc) val = argv[++i];
        else {
            snprintf(err, errlen, "option '--%s' needs a value", key);
            return -1;
        }
        if (mt_srv_options_set(o, key, val, err, errlen) != 0) return -1;
    }
    return mt_srv_options_check(o, err, errlen);
}

int mt_srv_options_check(const mt_srv_options *o, char *err, size_t errlen) {
    if (!o->listen || !*o->listen) {
        snprintf(err, errlen, "option 'listen' is empty");
        return -1;
    }
    if ((o->tls_cert && *o->tls_cert) != (o->tls_key && *o->tls_key)) {
        snprintf(err, errlen, "options 'tls-cert' and 'tls-key' go together");
        return -1;
    }
    if (o->join && *o->join && !(o->cluster_token_file && *o->cluster_token_file)) {
        snprintf(err, errlen, "option 'join' needs 'cluster-token-file' (the token the coordinator accepts)");
        return -1;
    }
    if (o->limits.max_hello_bytes > o->limits.max_frame_bytes) {
        snprintf(err, errlen, "option 'max-hello-bytes' exceeds 'max-frame-bytes'");
        return -1;
    }
    if (o->limits.max_discard_bytes && o->limits.max_discard_bytes < o->limits.max_frame_bytes) {
        snprintf(err, errlen, "option 'max-discard-bytes' must be 0 or at least 'max-frame-bytes'");
        return -1;
    }
    return 0;
}
