/*
 * options.h — every setting of mt-server: command-line options and the same keys in a config file
 * (`--config FILE`, lines `key = value`), with their defaults. The limits are here too, explicit and
 * documented in net/README.md; every one of them is counted in /metrics when hit.
 */
#ifndef MT_NET_OPTIONS_H
#define MT_NET_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MT_SRV_MAX_GPUS 16

typedef struct mt_srv_limits {
    uint64_t max_frame_bytes;     /* frame length limit after Hello (16 MiB) */
    uint64_t max_discard_bytes;   /* an oversized frame up to this is skipped, above it the conn closes (256 MiB) */
    uint64_t max_hello_bytes;     /* frame length limit before Hello (4 KiB) */
    uint32_t max_connections;     /* open client connections (1024) */
    uint32_t max_inflight;        /* unanswered requests per connection (64) */
    uint32_t max_sentences;       /* sentences per TranslateRequest (1024) */
    uint32_t max_chars;           /* code points per sentence (4096) */
    uint32_t idle_timeout_s;      /* no request and nothing in flight (300 s; 0 = never) */
    uint32_t hello_timeout_s;     /* from accept to Hello (10 s) */
    uint32_t requests_per_event;  /* frames handled per read event before yielding (32) */
    uint32_t max_queue_sentences; /* sentences waiting for a batch, all connections (65536) */
    uint32_t max_conn_queue_sentences; /* one connection's share of it: its sentences not yet answered (16384) */
    uint32_t http_max_connections;     /* open connections on the --http port (64) */
    uint32_t http_timeout_s;           /* an HTTP request must arrive whole within this, from accept (5 s) */
    uint64_t output_high_water;   /* a connection's unsent output above which reading pauses (8 MiB) */
    uint32_t drain_timeout_s;     /* SIGTERM: the longest wait for in-flight work (60 s) */
} mt_srv_limits;

typedef struct mt_srv_options {
    char *config;             /* the config file read, if any */
    char *listen;             /* host:port (127.0.0.1:7700) */
    char *http;               /* host:port of /healthz and /metrics (127.0.0.1:7701), "off" = none */
    int gpus[MT_SRV_MAX_GPUS];
    int n_gpus;               /* 0 = CPU */
    char *model;              /* served from startup (optional: a model can be promoted later) */
    uint32_t threads;         /* CPU engine workers when no --gpus (1) */
    uint32_t max_batch_tokens;    /* padded tokens per batch: sentences x longest (4096); 1 = no batching */
    uint32_t max_batch_sentences; /* sentences per batch (256) */
    uint32_t max_wait_ms;     /* longest a sentence waits for its batch to fill (5) */
    char *tls_cert, *tls_key;
    char *token_file, *admin_token_file;
    char *data_root;          /* client-named paths must stay inside (default: the working directory) */
    bool insecure;            /* allow a non-loopback listener without a token */
    int log_level;            /* MT_NLOG_* (info) */
    char *port_file;          /* written once listening: "listen=HOST:PORT\nhttp=HOST:PORT\n" */
    /* cluster mode (cluster.h) */
    char *cluster_token_file; /* the token of worker nodes' links (coordinator and worker) */
    char *join;               /* worker: the coordinator's host:port */
    char *node_name;          /* this node's name (default: the host name) */
    uint32_t max_nodes;       /* coordinator: worker nodes joined at once (16) */
    uint32_t heartbeat_s;     /* heartbeat period (2 s); a node is lost after 3 missed */
    uint32_t join_timeout_s;  /* coordinator: train start waits this long for --min-nodes (60 s) */
    uint32_t cluster_port;    /* coordinator: rank 0's rendezvous port (0: a free one per job) */
    mt_srv_limits limits;
} mt_srv_options;

/* Defaults for everything. */
void mt_srv_options_init(mt_srv_options *o);
void mt_srv_options_free(mt_srv_options *o);

/* Parses argv (and the --config file it names; the command line wins over the file).
 * Returns 0 on success, 1 when --help was printed, 2 when --version was asked (the caller prints it),
 * -1 on error (err filled). */
int mt_srv_options_parse(mt_srv_options *o, int argc, char **argv, char *err, size_t errlen);

/* Reads one config file (key = value lines, # comments). Returns 0 or -1 (err names file:line). */
int mt_srv_options_load_file(mt_srv_options *o, const char *path, char *err, size_t errlen);

/* Sets one key from text, as on the command line. Returns 0 or -1. */
int mt_srv_options_set(mt_srv_options *o, const char *key, const char *value, char *err, size_t errlen);

/* Checks the combination (both TLS files, --max-batch-tokens >= 1, ...). Returns 0 or -1. */
int mt_srv_options_check(const mt_srv_options *o, char *err, size_t errlen);

/* Prints --help to stdout. */
void mt_srv_options_usage(const char *prog);

#endif
