/*
 * bench_dist.c — `mt-bench dist`: data-parallel training on this machine, every figure a ratio
 * against an anchor measured in the same run:
 *
 *   1. all-reduce bus bandwidth of the communicator (Gloo, 2 ranks as processes on loopback) for 1,
 *      16 and 128 MB of f32, against raw TCP throughput over loopback (one stream, 1 MB writes);
 *      bus bandwidth = size / time * 2 (W - 1) / W (NCCL's convention), goal >= 0.7 of TCP; beside
 *      it the same connection carrying data both ways at once (what each rank of a 2-rank ring does:
 *      it sends and receives every byte), and the cores each figure kept busy (CPU seconds of every
 *      process involved / wall seconds), which shows when the 2 cores, not the protocol, are the limit;
 *   2. scaling: 2 ranks x 1 thread against 1 rank x 1 thread on the same global batch (the model and
 *      batch of `mt-bench train`), tokens/s ratio, goal >= 1.8;
 *   3. overlap: the share of the gradient all-reduce time hidden behind the backward pass, 1 -
 *      (time the step waited for the all-reduces after its backward) / (time they took), goal >= 0.5,
 *      with the default buckets (bucket_mb 0: an eighth of the 30 MB of gradients) and with DDP's
 *      fixed 25 MB (a second 2-rank run: a 1 MB first bucket and one of 29 MB);
 *   4. peak RSS of each rank against the PyTorch reference's training on the same global batch.
 *
 *   mt-bench dist [--steps 3] [--warmup 1] [--len 24] [--max-tokens 4096] [--bucket-mb 0] [--no-torch]
 *                 [--bandwidth-only]   (part 1 alone)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "bench.h"
#include "bench_model.h"
#include "comm/comm.h"
#include "comm/store.h"
#include "core/error.h"
#include "format/modelfile.h"
#include "train/dist.h"

typedef struct dist_opts {
    int steps, warmup, len, max_tokens, torch, bandwidth_only;
    double bucket_mb;
} dist_opts;

typedef struct rank_arg {
    int rank, world, port;
    double bucket_mb;
    const char *model;
    const mt_seq_batch *b;
    const dist_opts *o;
} rank_arg;

/* Runs fn as ranks 0..world-1 in parallel children; results (and peak RSS) in out[rank]. */
static int run_ranks(int (*fn)(void *, int), rank_arg *args, int world, mtb_child *out) {
    pid_t pid[8];
    int fds[8];
    fflush(NULL);
    for (int r = 0; r < world; r++) {
        int p[2];
        if (pipe(p) != 0) return -1;
        pid[r] = fork();
        if (pid[r] == 0) {
            close(p[0]);
            _exit(fn(&args[r], p[1]));
        }
        close(p[1]);
        fds[r] = p[0];
    }
    int bad = 0;
    for (int r = 0; r < world; r++) {
        char buf[8192];
        size_t n = 0;
        ssize_t k;
        while ((k = read(fds[r], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)k;
        buf[n] = 0;
        close(fds[r]);
        int st;
        struct rusage ru;
        out[r] = (mtb_child){NULL, 0, 0, -1};
        if (wait4(pid[r], &st, 0, &ru) == pid[r]) {
            out[r].status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
            out[r].maxrss_mb = (double)ru.ru_maxrss / 1024.0;
        }
        out[r].result = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
        if (out[r].status != 0 || !out[r].result) bad = 1;
    }
    return bad ? -1 : 0;
}

static mt_status join(const rank_arg *a, mt_comm **c) {
    char rdv[64];
    snprintf(rdv, sizeof rdv, "127.0.0.1:%d", a->port);
    mt_comm_options o = {.timeout_s = 60};
    return mt_comm_create(a->rank, a->world, rdv, &o, c);
}

/* 1. all-reduce bus bandwidth for 1, 16, 128 MB. */
static const int sizes_mb[3] = {1, 16, 128};

/* CPU seconds (user + system) this process has used. */
static double cpu_self_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

static int allreduce_rank(void *argp, int fd) {
    rank_arg *a = argp;
    mt_comm *c;
    if (join(a, &c) != MT_OK) {
        fprintf(stderr, "rank %d: %s\n", a->rank, mt_last_error());
        return 1;
    }
    size_t max_n = (size_t)sizes_mb[2] * 1000000 / sizeof(float);
    float *buf = malloc(max_n * sizeof(float));
    if (!buf) return 1;
    for (size_t i = 0; i < max_n; i++) buf[i] = 1e-3f * (float)(i % 1000);
    dprintf(fd, "{");
    for (int s = 0; s < 3; s++) {
        size_t n = (size_t)sizes_mb[s] * 1000000 / sizeof(float);
        int iters = sizes_mb[s] >= 128 ? 3 : sizes_mb[s] >= 16 ? 8 : 40;
        if (mt_comm_allreduce(c, buf, n, MT_DTYPE_F32, MT_COMM_SUM, NULL) != MT_OK) return 1; /* warm-up */
        if (mt_comm_barrier(c) != MT_OK) return 1;
        double t0 = mt_bench_now(), c0 = cpu_self_s();
        for (int i = 0; i < iters; i++)
            if (mt_comm_allreduce(c, buf, n, MT_DTYPE_F32, MT_COMM_SUM, NULL) != MT_OK) return 1;
        double t = (mt_bench_now() - t0) / iters, cpu = (cpu_self_s() - c0) / iters;
        double bus = (double)n * sizeof(float) / t * 2.0 * (a->world - 1) / a->world;
        dprintf(fd, "%s\"bus_%d\": %.1f, \"cores_%d\": %.3f", s ? ", " : "", sizes_mb[s], bus / 1e6, sizes_mb[s], cpu / t);
    }
    dprintf(fd, "}\n");
    free(buf);
    mt_comm_free(c);
    return 0;
}

typedef struct tcp_io {
    int fd, send;
    size_t total, chunk;
    int ok;
} tcp_io;

static void *tcp_io_run(void *p) {
    tcp_io *io = p;
    char *buf = calloc(1, io->chunk);
    size_t done = 0;
    while (buf && done < io->total) {
        size_t want = io->total - done < io->chunk ? io->total - done : io->chunk;
        ssize_t k = io->send ? write(io->fd, buf, want) : read(io->fd, buf, want);
        if (k <= 0) break;
        done += (size_t)k;
    }
    free(buf);
    io->ok = done == io->total;
    if (io->send) shutdown(io->fd, SHUT_WR);
    return NULL;
}

/* Moves `total` bytes over one loopback TCP connection in 1 MB writes, one way (both = 0: the
 * anchor), or both ways at once (both = 1: what each rank of a 2-rank all-reduce does, every byte
 * sent and every byte received, over Gloo's one connection per peer). MB/s per direction. */
static double tcp_loopback_mb_s(size_t total, int both, double *cores) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &l) != 0)
        return 0;
    size_t chunk = 1 << 20;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) _exit(1);
        tcp_io tx = {fd, 1, total, chunk, 0}, rx = {fd, 0, total, chunk, 0};
        pthread_t th;
        if (both && pthread_create(&th, NULL, tcp_io_run, &rx) != 0) _exit(1);
        tcp_io_run(&tx);
        if (both) pthread_join(th, NULL);
        _exit(tx.ok && (!both || rx.ok) ? 0 : 1);
    }
    int fd = accept(lfd, NULL, NULL);
    tcp_io rx = {fd, 0, total, chunk, 0}, tx = {fd, 1, total, chunk, 0};
    double t0 = mt_bench_now(), c0 = cpu_self_s();
    pthread_t th;
    int threaded = both && fd >= 0 && pthread_create(&th, NULL, tcp_io_run, &tx) == 0;
    if (fd >= 0) tcp_io_run(&rx);
    if (threaded) pthread_join(th, NULL);
    double t = mt_bench_now() - t0, cpu = cpu_self_s() - c0;
    close(fd);
    close(lfd);
    int st = 1;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) == pid)
        cpu += (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
               1e-6 * (double)ru.ru_stime.tv_usec;
    *cores = cpu / t;
    return rx.ok && (!both || tx.ok) && st == 0 ? (double)total / t / 1e6 : 0;
}

/* 2-4. training steps of one rank on its shard of the global batch (world 1: mt_train_step). */
static int train_rank(void *argp, int fd) {
    rank_arg *a = argp;
    omp_set_num_threads(1);
    mt_modelfile mf;
    mt_context *ctx;
    mt_optimizer *opt;
    if (mt_modelfile_load(a->model, MT_DEVICE_CPU, 0, &mf) != MT_OK || mt_context_init(&ctx, MT_DEVICE_CPU, 1) != MT_OK ||
        mt_optimizer_create(mf.model, ctx, &opt) != MT_OK) {
        fprintf(stderr, "rank %d: %s\n", a->rank, mt_last_error());
        return 1;
    }
    mt_context_seed(ctx, 1);
    mt_dist *d = NULL;
    if (a->world > 1) {
        mt_train_config tc;
        mt_train_config_default(&tc);
        tc.world_size = a->world;
        tc.rank = a->rank;
        tc.bucket_mb = a->bucket_mb;
        snprintf(tc.rendezvous, sizeof tc.rendezvous, "127.0.0.1:%d", a->port);
        json_t *cfg = json_object();
        mt_status st = mt_dist_create(&tc, cfg, "bench: every rank loads the same model file", mf.model, ctx, &d);
        json_decref(cfg);
        if (st != MT_OK) {
            fprintf(stderr, "rank %d: %s\n", a->rank, mt_last_error());
            return 1;
        }
    }
    mt_adamw_hparams h = {.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.98, .eps = 1e-9, .weight_decay = 0.01,
                          .warmup_steps = 0, .clip_norm = 1.0, .label_smoothing = 0.1};
    double loss = 0, t0 = 0;
    mt_dist_stats s0 = {0};
    for (int i = 0; i < a->o->warmup + a->o->steps; i++) {
        if (i == a->o->warmup) {
            t0 = mt_bench_now();
            if (d) s0 = mt_dist_get_stats(d);
        }
        mt_status st = d ? mt_dist_train_step(d, ctx, mf.model, opt, &h, a->b, 1, i + 1, &loss, NULL)
                         : mt_train_step(ctx, mf.model, opt, &h, a->b, 1, &loss, NULL);
        if (st != MT_OK) {
            fprintf(stderr, "rank %d: %s\n", a->rank, mt_last_error());
            return 1;
        }
    }
    double dt = (mt_bench_now() - t0) / a->o->steps;
    double tokens = (double)(a->b->src_tokens + a->b->tgt_tokens);
    double comm = 0, exposed = 0, backward = 0, bucket_mb = 0;
    int n_buckets = 0;
    if (d) {
        mt_dist_stats s1 = mt_dist_get_stats(d);
        n_buckets = s1.n_buckets;
        bucket_mb = (double)s1.bucket_bytes / 1e6;
        comm = s1.comm_s - s0.comm_s;
        exposed = s1.exposed_s - s0.exposed_s;
        backward = s1.backward_s - s0.backward_s;
        mt_dist_finish(d);
        mt_dist_free(d);
    }
    dprintf(fd, "{\"tokens_per_s\": %.3f, \"step_s\": %.6f, \"loss\": %.6f, \"comm_s\": %.6f, \"exposed_s\": %.6f, "
                "\"backward_s\": %.6f, \"buckets\": %d, \"bucket_mb\": %.3f}\n", tokens / dt, dt, loss, comm, exposed,
            backward, n_buckets, bucket_mb);
    return 0;
}

int mt_bench_dist(int argc, char **argv) {
    dist_opts o = {.steps = 3, .warmup = 1, .len = 24, .max_tokens = 4096, .torch = 1, .bucket_mb = 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--steps")) o.steps = atoi(v), i++;
        else if (!strcmp(a, "--warmup")) o.warmup = atoi(v), i++;
        else if (!strcmp(a, "--len")) o.len = atoi(v), i++;
        else if (!strcmp(a, "--max-tokens")) o.max_tokens = atoi(v), i++;
        else if (!strcmp(a, "--bucket-mb")) o.bucket_mb = atof(v), i++;
        else if (!strcmp(a, "--no-torch")) o.torch = 0;
        else if (!strcmp(a, "--bandwidth-only")) o.bandwidth_only = 1;
        else {
            fprintf(stderr, "usage: mt-bench dist [--steps N] [--warmup N] [--len L] [--max-tokens N] [--bucket-mb X] "
                            "[--no-torch] [--bandwidth-only]\n");
            return 2;
        }
    }
    if (o.steps < 1 || o.warmup < 0 || o.len < 6 || o.bucket_mb < 0) return 2;
    signal(SIGPIPE, SIG_IGN);
    mt_model_config c = mtb_config(MT_ATTN_MLA);
    char dir[512], model[700], batch_path[700], thr[16];
    if (mtb_tmpdir(dir, sizeof dir, "dist") != 0) return 1;
    snprintf(model, sizeof model, "%s/model.mt", dir);
    snprintf(batch_path, sizeof batch_path, "%s/batch.safetensors", dir);
    mtb_set_threads(1, thr);
    mt_transformer *m;
    mt_context *ctx;
    if (mt_transformer_create(&c, MT_DEVICE_CPU, &m) != MT_OK || mt_context_init(&ctx, MT_DEVICE_CPU, 1) != MT_OK ||
        mt_transformer_init_weights(m, ctx) != MT_OK || mt_modelfile_save(model, m, ctx, NULL, NULL) != MT_OK) {
        fprintf(stderr, "mt-bench dist: %s\n", mt_last_error());
        return 1;
    }
    double params_mb = (double)mt_transformer_numel(m) * 4 / 1e6;
    mt_transformer_free(m);
    mt_context_free(ctx);
    mt_seq_batch b = mtb_batch(&c, o.len, o.max_tokens);
    printf("mt-bench dist: Gloo over loopback; model of mt-bench train (%.1f MB of f32 gradients, bucket_mb %g); "
           "global batch %lld pairs, %lld tokens\n", params_mb, o.bucket_mb, (long long)b.B,
           (long long)(b.src_tokens + b.tgt_tokens));
    mtb_print_conditions();

    /* 1. bandwidth */
    double tcp_cores = 0, both_cores = 0;
    double tcp = tcp_loopback_mb_s((size_t)2 << 30, 0, &tcp_cores), tcp_both = tcp_loopback_mb_s((size_t)1 << 30, 1, &both_cores);
    rank_arg ra[2];
    mtb_child rc[2];
    int port = mt_store_free_port();
    for (int r = 0; r < 2; r++) ra[r] = (rank_arg){r, 2, port, o.bucket_mb, model, &b, &o};
    if (run_ranks(allreduce_rank, ra, 2, rc) != 0 || tcp <= 0 || tcp_both <= 0) {
        fprintf(stderr, "mt-bench dist: the all-reduce run failed\n");
        return 1;
    }
    double bus[3], worst_bw = 1e9;
    /* cores: CPU seconds of every process involved per wall second; CPU s/GB: per GB of the figure
     * (the anchor: moved one way; both ways: moved in each direction; all-reduce: of the buffer). */
    printf("\n  %-36s %12s %10s %8s %9s\n", "all-reduce, 2 ranks", "bus MB/s", "/ TCP", "cores", "CPU s/GB");
    printf("  %-36s %12.0f %10s %8.2f %9.3f\n", "raw TCP over loopback (anchor)", tcp, "1.00", tcp_cores,
           tcp_cores / tcp * 1e3);
    printf("  %-36s %12.0f %10.2f %8.2f %9.3f   (each side sends and receives: the 2-rank ceiling)\n",
           "raw TCP both ways at once", tcp_both, tcp_both / tcp, both_cores, both_cores / tcp_both * 1e3);
    for (int s = 0; s < 3; s++) {
        char key[16], what[48];
        snprintf(key, sizeof key, "bus_%d", sizes_mb[s]);
        bus[s] = mtb_num(&rc[0], key);
        if (bus[s] / tcp < worst_bw) worst_bw = bus[s] / tcp;
        snprintf(what, sizeof what, "%d MB f32", sizes_mb[s]);
        snprintf(key, sizeof key, "cores_%d", sizes_mb[s]);
        double cores = mtb_num(&rc[0], key) + mtb_num(&rc[1], key);
        printf("  %-36s %12.0f %10.2f %8.2f %9.3f\n", what, bus[s], bus[s] / tcp, cores, cores / bus[s] * 1e3);
    }
    json_decref(rc[0].result);
    json_decref(rc[1].result);
    if (o.bandwidth_only) {
        printf("{\"bench\": \"dist\", \"tcp_mb_s\": %.0f, \"tcp_both_ways_mb_s\": %.0f, \"allreduce_bus_mb_s\": {\"1\": %.0f, "
               "\"16\": %.0f, \"128\": %.0f}, \"min_bus_over_tcp\": %.3f}\n", tcp, tcp_both, bus[0], bus[1], bus[2], worst_bw);
        free(b.src);
        free(b.tgt_in);
        free(b.tgt_out);
        mtb_rmrf(dir);
        return 0;
    }

    /* 2-4. training */
    rank_arg one = {0, 1, 0, o.bucket_mb, model, &b, &o};
    mtb_child c1;
    if (run_ranks(train_rank, &one, 1, &c1) != 0) {
        fprintf(stderr, "mt-bench dist: the 1-rank run failed\n");
        return 1;
    }
    mtb_child c2[2], c4[2];
    for (int k = 0; k < 2; k++) {
        port = mt_store_free_port();
        for (int r = 0; r < 2; r++) ra[r] = (rank_arg){r, 2, port, k ? 25.0 : o.bucket_mb, model, &b, &o};
        if (run_ranks(train_rank, ra, 2, k ? c4 : c2) != 0) {
            fprintf(stderr, "mt-bench dist: the 2-rank run failed\n");
            return 1;
        }
    }
    double t1 = mtb_num(&c1, "tokens_per_s"), t2 = mtb_num(&c2[0], "tokens_per_s"), t4 = mtb_num(&c4[0], "tokens_per_s");
    double comm = mtb_num(&c2[0], "comm_s"), exposed = mtb_num(&c2[0], "exposed_s");
    double comm4 = mtb_num(&c4[0], "comm_s"), exposed4 = mtb_num(&c4[0], "exposed_s");
    double overlap = comm > 0 ? 1.0 - exposed / comm : 0.0, overlap4 = comm4 > 0 ? 1.0 - exposed4 / comm4 : 0.0;
    if (overlap < 0) overlap = 0;
    if (overlap4 < 0) overlap4 = 0;
    double rss_torch = 0;
    const char *py = o.torch ? mtb_python() : NULL;
    if (py && mtb_write_batch(batch_path, &b) == 0) {
        char script[700], steps[16], warm[16];
        mtb_script(script, sizeof script, "bench.py");
        snprintf(steps, sizeof steps, "%d", o.steps);
        snprintf(warm, sizeof warm, "%d", o.warmup);
        char *args[] = {(char *)py, script, "train", "--model", model, "--batch", batch_path, "--threads", thr, "--steps",
                        steps, "--warmup", warm, NULL};
        mtb_child t = mtb_exec(args);
        if (t.status == 0) rss_torch = t.maxrss_mb;
        json_decref(t.result);
    }
    int nb = (int)mtb_num(&c2[0], "buckets"), nb25 = (int)mtb_num(&c4[0], "buckets");
    double bmb = mtb_num(&c2[0], "bucket_mb");
    char what[64], dflt[48];
    if (o.bucket_mb > 0) snprintf(dflt, sizeof dflt, "%g MB buckets (%d)", o.bucket_mb, nb);
    else snprintf(dflt, sizeof dflt, "auto buckets: %.2f MB (%d)", bmb, nb);
    printf("\n  %-36s %12s %10s\n", "training, 1 thread per rank", "tokens/s", "ratio");
    printf("  %-36s %12.0f %10s\n", "1 rank (anchor)", t1, "1.00");
    snprintf(what, sizeof what, "2 ranks, %s", dflt);
    printf("  %-36s %12.0f %10.2f   (goal >= 1.8)\n", what, t2, t2 / t1);
    snprintf(what, sizeof what, "2 ranks, 25 MB buckets (%d)", nb25);
    printf("  %-36s %12.0f %10.2f\n", what, t4, t4 / t1);
    snprintf(what, sizeof what, "overlap, %s", dflt);
    printf("  %-36s %12.2f %10s   (goal >= 0.5; all-reduce %.3f s/step, %.3f s/step exposed)\n", what, overlap, "",
           comm / o.steps, exposed / o.steps);
    printf("  %-36s %12.2f %10s   (all-reduce %.3f s/step, %.3f s/step exposed)\n", "overlap, 25 MB buckets", overlap4,
           "", comm4 / o.steps, exposed4 / o.steps);
    printf("\n  %-36s %12s %10s\n", "peak RSS", "MB", "/ PyTorch");
    printf("  %-36s %12.0f %10s\n", "PyTorch reference, global batch", rss_torch, rss_torch > 0 ? "1.00" : "n/a");
    printf("  %-36s %12.0f %10.2f\n", "engine, 1 rank, global batch", c1.maxrss_mb, rss_torch > 0 ? c1.maxrss_mb / rss_torch : 0);
    for (int r = 0; r < 2; r++) {
        snprintf(what, sizeof what, "engine, rank %d of 2 (half batch)", r);
        printf("  %-36s %12.0f %10.2f\n", what, c2[r].maxrss_mb, rss_torch > 0 ? c2[r].maxrss_mb / rss_torch : 0);
    }
    printf("{\"bench\": \"dist\", \"tcp_mb_s\": %.0f, \"tcp_both_ways_mb_s\": %.0f, \"allreduce_bus_mb_s\": {\"1\": %.0f, \"16\": %.0f, \"128\": %.0f}, "
           "\"min_bus_over_tcp\": %.3f, \"tokens_per_s_1rank\": %.1f, \"tokens_per_s_2ranks\": %.1f, \"scaling\": %.3f, "
           "\"bucket_mb\": %.3f, \"buckets\": %d, \"overlap\": %.3f, \"scaling_25mb\": %.3f, \"overlap_25mb\": %.3f, \"peak_rss_mb\": {\"torch\": %.0f, \"engine_1rank\": %.0f, \"rank0\": %.0f, \"rank1\": %.0f}, "
           "\"rank_rss_over_torch\": %.3f}\n",
           tcp, tcp_both, bus[0], bus[1], bus[2], worst_bw, t1, t2, t2 / t1, bmb, nb, overlap, t4 / t1, overlap4, rss_torch, c1.maxrss_mb, c2[0].maxrss_mb,
           c2[1].maxrss_mb, rss_torch > 0 ? (c2[0].maxrss_mb > c2[1].maxrss_mb ? c2[0].maxrss_mb : c2[1].maxrss_mb) / rss_torch : 0);
    json_decref(c1.result);
    json_decref(c2[0].result);
    json_decref(c2[1].result);
    json_decref(c4[0].result);
    json_decref(c4[1].result);
    free(b.src);
    free(b.tgt_in);
    free(b.tgt_out);
    mtb_rmrf(dir);
    return 0;
}
