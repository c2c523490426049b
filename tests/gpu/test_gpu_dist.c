/*
 * test_gpu_dist.c — data-parallel training on GPU ranks: engine/train/dist.c with its gradient
 * buckets in device memory, all-reduced by the NCCL communicator (cuda/comm_nccl.cu).
 *
 *   1 rank   world 1 on cuda:0 through mt_dist_train_step (buckets copied out of the gradients,
 *            all-reduced by NCCL, copied back; the scalar sums staged from host memory) against
 *            mt_train_step on the CPU, same weights and batches
 *   2 ranks  with two devices: ranks on cuda:0 and cuda:1 (processes), each on its half of the
 *            global batch, against the same CPU run; and the two ranks' weights bitwise equal (the
 *            same all-reduced gradients and the same AdamW on each)
 *
 * Tolerances: f32 GEMMs on both sides (a fresh context's precision), so losses and gradient norms
 * agree to 1e-3 relative (summation order only; a bucket lost or reduced twice changes the norm by
 * far more); weights within 2 * lr * steps, the most AdamW can move one element apart per step,
 * reached only when rounding flips the sign of a near-zero gradient.
 *
 * Exit 77 (skip) with a message without a CUDA device or without NCCL in the build. CUDA is touched
 * only in forked children: a child of a process that initialised CUDA cannot use it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "comm/store.h"
#include "core/backend.h"
#include "core/context.h"
#include "core/error.h"
#include "format/modelfile.h"
#include "model/testutil.h"
#include "train/dist.h"
#include "train/optim.h"

#define STEPS 3
#define SKIP 77

static int n_fail;
#define CHECK(cond, ...)                  \
    do {                                  \
        if (!(cond)) {                    \
            printf("FAIL: " __VA_ARGS__); \
            printf("\n");                 \
            n_fail++;                     \
        }                                 \
    } while (0)

static const mt_adamw_hparams H = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.98, .eps = 1e-9, .weight_decay = 0.01,
                                   .warmup_steps = 0, .clip_norm = 1.0, .label_smoothing = 0.1};

/* What one run gives: the losses and norms of its steps and its final weights (every parameter, in
 * order). */
typedef struct run_out {
    double loss[STEPS], norm[STEPS];
    float *w;
    size_t n;
} run_out;

static int write_all(int fd, const void *p, size_t n) {
    for (size_t done = 0; done < n;) {
        ssize_t k = write(fd, (const char *)p + done, n - done);
        if (k <= 0) return -1;
        done += (size_t)k;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n) {
    for (size_t done = 0; done < n;) {
        ssize_t k = read(fd, (char *)p + done, n - done);
        if (k <= 0) return -1;
        done += (size_t)k;
    }
    return 0;
}

/* Trains STEPS steps of the model in `path` on `device` (MT_DEVICE_CPU: mt_train_step; a GPU:
 * rank of world through mt_dist_train_step) and writes the run_out to fd. Returns the exit status:
 * 0, SKIP (no device / no NCCL, message printed) or 1. */
static int train(const char *path, const mt_seq_batch *b, int device, int rank, int world, int port, int fd) {
    mt_modelfile mf;
    mt_context *ctx = NULL;
    mt_optimizer *o = NULL;
    mt_dist *d = NULL;
    mt_status st = mt_modelfile_load(path, device, 0, &mf);
    if (st == MT_OK) st = mt_context_init(&ctx, device, 1);
    if (st == MT_OK) st = mt_optimizer_create(mf.model, ctx, &o);
    if (st == MT_OK && device >= 0) {
        mt_train_config tc;
        mt_train_config_default(&tc);
        tc.world_size = world;
        tc.rank = rank;
        tc.comm_timeout_s = 60;
        snprintf(tc.rendezvous, sizeof tc.rendezvous, "127.0.0.1:%d", port);
        json_t *cfg = json_object();
        st = mt_dist_create(&tc, cfg, "test: every rank loads the same model file", mf.model, ctx, &d);
        json_decref(cfg);
    }
    if (st == MT_ERR_NO_DEVICE) {
        printf("skip: rank %d on cuda:%d: %s\n", rank, device, mt_last_error());
        return SKIP;
    }
    run_out r = {0};
    for (int i = 0; st == MT_OK && i < STEPS; i++)
        st = d ? mt_dist_train_step(d, ctx, mf.model, o, &H, b, 1, i + 1, &r.loss[i], &r.norm[i])
               : mt_train_step(ctx, mf.model, o, &H, b, 1, &r.loss[i], &r.norm[i]);
    if (st == MT_OK && d) st = mt_dist_finish(d); /* before the pipe, which the parent reads rank by rank */
    if (st != MT_OK) {
        printf("FAIL: rank %d of %d on device %d: %s\n", rank, world, device, mt_last_error());
        return 1;
    }
    int rc = write_all(fd, r.loss, sizeof r.loss) || write_all(fd, r.norm, sizeof r.norm);
    for (int i = 0; !rc && i < mf.model->n_params; i++) {
        const mt_tensor *p = mf.model->params[i];
        float *x = malloc(mt_tensor_bytes(p));
        rc = !x || mt_copy_to_host(ctx, p, x, mt_tensor_bytes(p)) != MT_OK || write_all(fd, x, mt_tensor_bytes(p));
        free(x);
    }
    mt_dist_free(d);
    mt_optimizer_free(o);
    mt_context_free(ctx);
    mt_modelfile_clear(&mf);
    return rc ? 1 : 0;
}

/* The CUDA devices present (0 without a device or without CUDA in the build), asked in a child so
 * that this process never initialises CUDA; why receives the reason when there are none. */
static int device_count(char *why, size_t cap) {
    int p[2];
    if (pipe(p) != 0) return 0;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        char w[256] = "";
        int n = mt_device_backend_count(w, sizeof w);
        dprintf(p[1], "%d %s", n, w);
        _exit(0);
    }
    close(p[1]);
    char buf[300] = "";
    ssize_t k = read(p[0], buf, sizeof buf - 1);
    close(p[0]);
    waitpid(pid, NULL, 0);
    int n = 0, off = 0;
    if (k <= 0 || sscanf(buf, "%d %n", &n, &off) < 1) return 0;
    snprintf(why, cap, "%s", buf + off);
    return n;
}

/* Runs `world` ranks (GPU k on cuda:k) or, for world 0, the CPU reference, as children; out[r]. Returns
 * 0, SKIP or 1. */
static int run(const char *path, const mt_seq_batch *b, size_t n, int world, run_out *out) {
    int ranks = world ? world : 1, port = world ? mt_store_free_port() : 0;
    pid_t pid[2];
    int fds[2], rc = 0;
    fflush(NULL);
    for (int r = 0; r < ranks; r++) {
        int p[2];
        if (pipe(p) != 0) return 1;
        pid[r] = fork();
        if (pid[r] == 0) {
            close(p[0]);
            _exit(train(path, b, world ? r : MT_DEVICE_CPU, r, ranks, port, p[1]));
        }
        close(p[1]);
        fds[r] = p[0];
    }
    for (int r = 0; r < ranks; r++) {
        out[r].n = n;
        out[r].w = malloc(n * sizeof(float));
        int ok = out[r].w && !read_all(fds[r], out[r].loss, sizeof out[r].loss) &&
                 !read_all(fds[r], out[r].norm, sizeof out[r].norm) && !read_all(fds[r], out[r].w, n * sizeof(float));
        close(fds[r]);
        int st = 0;
        waitpid(pid[r], &st, 0);
        int code = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
        if (code == SKIP && rc == 0) rc = SKIP;
        else if (code != 0 || !ok) rc = 1;
    }
    return rc;
}

static void compare(const char *what, const run_out *ref, const run_out *got) {
    double bound = 2 * H.lr * STEPS, worst = 0;
    for (int i = 0; i < STEPS; i++) {
        CHECK(fabs(got->loss[i] - ref->loss[i]) <= 1e-3 * fabs(ref->loss[i]), "%s: step %d loss %.7f, CPU %.7f", what,
              i + 1, got->loss[i], ref->loss[i]);
        CHECK(fabs(got->norm[i] - ref->norm[i]) <= 1e-3 * fabs(ref->norm[i]), "%s: step %d gradient norm %.7f, CPU %.7f",
              what, i + 1, got->norm[i], ref->norm[i]);
    }
    for (size_t k = 0; k < ref->n; k++) {
        double e = fabs((double)got->w[k] - (double)ref->w[k]);
        if (!(e <= worst)) worst = e; /* NaN too */
    }
    CHECK(worst <= bound, "%s: weights differ from the CPU's by %.3g (bound %.3g)", what, worst, bound);
    printf("%s: losses and norms within 1e-3 of the CPU's, weights within %.3g (bound %.3g)\n", what, worst, bound);
}

int main(void) {
    mt_model_config c = tu_tiny_config(MT_ATTN_MLA);
    mt_seq_batch b = tu_batch(&c, 6, 7, 8, 3);
    char dir[] = "/tmp/mt_gpu_dist_XXXXXX", path[64];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/model.mt", dir);
    mt_transformer *m = NULL;
    mt_context *ctx = NULL;
    if (mt_transformer_create(&c, MT_DEVICE_CPU, &m) != MT_OK || mt_context_init(&ctx, MT_DEVICE_CPU, 1) != MT_OK ||
        mt_context_seed(ctx, 5) != MT_OK || mt_transformer_init_weights(m, ctx) != MT_OK ||
        mt_modelfile_save(path, m, ctx, NULL, NULL) != MT_OK) {
        printf("FAIL: setup: %s\n", mt_last_error());
        tu_batch_free(&b);
        return 1;
    }
    size_t n = (size_t)mt_transformer_numel(m);
    mt_transformer_free(m);
    mt_context_free(ctx);

    char why[300] = "";
    int devices = device_count(why, sizeof why);
    if (devices < 1) {
        printf("skip: no CUDA device (%s)\n", why[0] ? why : "this build has no CUDA backend");
        unlink(path);
        rmdir(dir);
        tu_batch_free(&b);
        return SKIP;
    }
    run_out cpu, one, two[2];
    memset(&cpu, 0, sizeof cpu);
    memset(&one, 0, sizeof one);
    memset(two, 0, sizeof two);
    int rc = run(path, &b, n, 0, &cpu);
    CHECK(rc == 0, "the CPU reference run failed");
    if (rc == 0) rc = run(path, &b, n, 1, &one);
    if (rc == SKIP) {
        free(cpu.w);
        free(one.w);
        unlink(path);
        rmdir(dir);
        tu_batch_free(&b);
        return SKIP;
    }
    CHECK(rc == 0, "the 1-rank GPU run failed");
    if (rc == 0) compare("1 GPU rank (NCCL)", &cpu, &one);
    if (devices < 2) {
        printf("2 GPU ranks: skipped (%d device; they need two)\n", devices);
    } else {
        rc = run(path, &b, n, 2, two);
        CHECK(rc == 0, "the 2-rank GPU run failed");
        if (rc == 0) {
            compare("2 GPU ranks (NCCL)", &cpu, &two[0]);
            CHECK(memcmp(two[0].w, two[1].w, n * sizeof(float)) == 0, "2 GPU ranks: rank 1's weights differ from rank 0's");
        }
    }
    free(cpu.w);
    free(one.w);
    if (devices >= 2) {
        free(two[0].w);
        free(two[1].w);
    }
    unlink(path);
    rmdir(dir);
    tu_batch_free(&b);
    printf("%s\n", n_fail ? "FAILED" : "test_gpu_dist: passed");
    return n_fail ? 1 : 0;
}
