/*
 * bench_model.h — helpers of the model benchmarks (bench_train.c, bench_decode.c): the benchmark
 * config, child processes (the engine and the PyTorch reference each run in their own process, so that
 * each one's peak RSS is its own) returning one JSON line, and temporary files.
 */
#ifndef MT_BENCH_MODEL_H
#define MT_BENCH_MODEL_H

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_python.h"
#include "nn/config.h"
#include "format/safetensors.h"
#include "nn/model.h"

/* The configuration of the figures: d_model 256, 4 heads, 3+3 layers, d_ff 1024, 8k vocab. */
static inline mt_model_config mtb_config(int attention) {
    mt_model_config c;
    mt_model_config_default(&c);
    c.vocab_size = 8000;
    c.attention = attention;
    return c;
}

/* The synthetic token-budget batch of the model benchmarks: pairs of similar length (sources of
 * L-3..L tokens with [EOS], decoder inputs of L-4..L+2 with [SOS]), as many as fit max_tokens with
 * padding; the same every run. Free its three arrays with free(). */
static inline mt_seq_batch mtb_batch(const mt_model_config *c, int L, int max_tokens) {
    int64_t S = L, T = L + 2;
    mt_seq_batch b = {.S = S, .T = T};
    b.B = max_tokens / (S + T);
    b.src = calloc((size_t)(b.B * S), sizeof(int32_t));
    b.tgt_in = calloc((size_t)(b.B * T), sizeof(int32_t));
    b.tgt_out = calloc((size_t)(b.B * T), sizeof(int32_t));
    uint64_t s = 88172645463325252ull;
    for (int64_t i = 0; i < b.B; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        int64_t ls = L - 1 - (int64_t)(s % 4), lt = L - 3 + (int64_t)((s >> 8) % 5); /* tokens before [EOS] */
        for (int64_t j = 0; j < S; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            b.src[i * S + j] = (int32_t)(j < ls ? 4 + (int64_t)(s % (uint64_t)(c->vocab_size - 4))
                                                : j == ls ? c->eos_id : c->pad_id);
        }
        int32_t prev = (int32_t)c->sos_id;
        for (int64_t j = 0; j < T; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            int32_t y = (int32_t)(j < lt ? 4 + (int64_t)(s % (uint64_t)(c->vocab_size - 4)) : j == lt ? c->eos_id : c->pad_id);
            b.tgt_in[i * T + j] = j <= lt ? prev : (int32_t)c->pad_id;
            b.tgt_out[i * T + j] = y;
            prev = y;
        }
        b.src_tokens += ls + 1;
        b.tgt_tokens += lt + 1;
    }
    return b;
}

/* The batch as safetensors (src, tgt_in, tgt_out), for the PyTorch reference (tests/reference/bench.py). */
static inline int mtb_write_batch(const char *path, const mt_seq_batch *b) {
    mt_st_tensor t[3] = {
        {.name = "src", .dtype = MT_DTYPE_I32, .ndim = 2, .shape = {b->B, b->S}, .data = b->src,
         .bytes = sizeof(int32_t) * (size_t)(b->B * b->S)},
        {.name = "tgt_in", .dtype = MT_DTYPE_I32, .ndim = 2, .shape = {b->B, b->T}, .data = b->tgt_in,
         .bytes = sizeof(int32_t) * (size_t)(b->B * b->T)},
        {.name = "tgt_out", .dtype = MT_DTYPE_I32, .ndim = 2, .shape = {b->B, b->T}, .data = b->tgt_out,
         .bytes = sizeof(int32_t) * (size_t)(b->B * b->T)},
    };
    return mt_st_write(path, t, 3, NULL, 0, 0) == MT_OK ? 0 : -1;
}

typedef struct mtb_child {
    json_t *result;    /* the last JSON object line the child printed, NULL when none */
    double maxrss_mb;  /* the child's peak resident set */
    double cpu_s;      /* its user + system CPU time */
    int status;        /* exit status (-1: killed) */
} mtb_child;

/* Niceness of the benchmark's children (--nice; 0: unchanged). On a machine shared with busy
 * processes a negative value (root only) gives both sides the cores about as a quiet machine would;
 * it is applied to the engine and the PyTorch child alike. */
static int mtb_nice_value;

/* Runs fn(arg, fd) in a forked child, which writes one JSON line to fd. */
/* Both sides' kernel threads: OpenBLAS and OpenMP in this process and its children (the engine and
 * the PyTorch reference). thr gets the count as text, for the reference's --threads. */
static inline void mtb_set_threads(int n, char thr[16]) {
    snprintf(thr, 16, "%d", n);
    setenv("OPENBLAS_NUM_THREADS", thr, 1);
    setenv("OMP_NUM_THREADS", thr, 1);
}

static inline mtb_child mtb_fork(int (*fn)(void *arg, int fd), void *arg) {
    mtb_child r = {NULL, 0, 0, -1};
    int p[2];
    if (pipe(p) != 0) return r;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        if (mtb_nice_value && setpriority(PRIO_PROCESS, 0, mtb_nice_value) != 0)
            fprintf(stderr, "mt-bench: setpriority(%d): %s\n", mtb_nice_value, strerror(errno));
        _exit(fn(arg, p[1]));
    }
    close(p[1]);
    char buf[65536];
    size_t n = 0;
    ssize_t k;
    while ((k = read(p[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)k;
    buf[n] = 0;
    close(p[0]);
    int st;
    struct rusage ru;
    if (pid > 0 && wait4(pid, &st, 0, &ru) == pid) {
        r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        r.maxrss_mb = (double)ru.ru_maxrss / 1024.0;
        r.cpu_s = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
                  1e-6 * (double)ru.ru_stime.tv_usec;
    }
    char *line = strrchr(buf, '{');
    while (line && line > buf && line[-1] != '\n') line = memrchr(buf, '{', (size_t)(line - buf));
    if (line) r.result = json_loads(line, JSON_DISABLE_EOF_CHECK, NULL);
    return r;
}

typedef struct mtb_exec_arg {
    char *const *argv;
} mtb_exec_arg;

static inline int mtb_exec_fn(void *arg, int fd) {
    mtb_exec_arg *a = arg;
    dup2(fd, 1);
    execv(a->argv[0], a->argv);
    fprintf(stderr, "exec %s: %s\n", a->argv[0], strerror(errno));
    return 127;
}

/* Runs a program (argv[0] a path) whose stdout's last JSON line is the result. */
static inline mtb_child mtb_exec(char *const *argv) {
    mtb_exec_arg a = {argv};
    return mtb_fork(mtb_exec_fn, &a);
}

/* A line about the conditions of the run: load average, niceness. */
static inline void mtb_print_conditions(void) {
    double la[3] = {0, 0, 0};
    if (getloadavg(la, 3) < 0) la[0] = la[1] = la[2] = -1;
    printf("  conditions: load average %.2f %.2f %.2f on %ld CPUs", la[0], la[1], la[2], sysconf(_SC_NPROCESSORS_ONLN));
    if (mtb_nice_value) printf(", children at nice %d", mtb_nice_value);
    printf("\n");
}

static inline double mtb_num(const mtb_child *c, const char *key) {
    return c->result ? json_number_value(json_object_get(c->result, key)) : 0.0;
}

/* The PyTorch interpreter (bench_python.h) that imports torch and safetensors, or NULL. The version
 * used is printed by each benchmark (its child reports torch.__version__). */
static inline const char *mtb_python(void) { return mtb_python_where("import torch, safetensors", NULL, 0); }

/* tests/reference/<script> of the source tree ($MT_SOURCE_DIR, else the current directory). */
static inline void mtb_script(char *buf, size_t cap, const char *script) {
    const char *src = getenv("MT_SOURCE_DIR");
    snprintf(buf, cap, "%s/tests/reference/%s", src && *src ? src : ".", script);
}

static inline int mtb_tmpdir(char *buf, size_t cap, const char *tag) {
    const char *base = getenv("TMPDIR");
    snprintf(buf, cap, "%s/mt-bench-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    return mkdtemp(buf) ? 0 : -1;
}

static inline void mtb_rmrf(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

#endif
