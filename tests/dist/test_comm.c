/*
 * test_comm.c — the communicator (engine/comm) with real processes on loopback: every collective on
 * 2 and 3 ranks (f32 and bf16, sum and average, asynchronous work), a world size or handshake that
 * differs refused on every rank, and a rank killed (SIGKILL) or stopped (SIGSTOP) mid-run: the
 * others fail within timeout + 5 s with a message naming the lost rank. Each rank is a forked child
 * that reports its outcome through a pipe. Also the trainer's gradient bucket size (train/dist.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "comm/comm.h"
#include "comm/store.h"
#include "core/context.h"
#include "core/tensor.h"
#include "ops/ops.h"
#include "core/error.h"
#include "core/numeric.h"
#include "train/dist.h"

#define MAXW 4

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct job {
    int world, rank, port;
    int claimed_world;        /* the world size this rank asks for */
    const char *handshake;
    double timeout_s;
    int fail_mode;            /* 0 none, 1 SIGKILL self, 2 SIGSTOP self (after the first barrier) */
    int fail_rank;
} job;

typedef struct outcome {
    int rc;                   /* 0 ok */
    double secs;              /* of the failing op */
    char msg[900];
} outcome;

static void report(int fd, int rc, double secs, const char *msg) {
    outcome o = {.rc = rc, .secs = secs};
    snprintf(o.msg, sizeof o.msg, "%s", msg);
    if (write(fd, &o, sizeof o) != sizeof o) _exit(3);
}

static void diff_fn(const char *mine, const char *r0, char *msg, size_t cap) {
    snprintf(msg, cap, "handshake '%s' vs rank 0's '%s'", mine, r0);
}

/* One rank's life; never returns. */
static void rank_main(const job *j, int out) {
    char rdv[64];
    snprintf(rdv, sizeof rdv, "127.0.0.1:%d", j->port);
    mt_comm_options o = {.timeout_s = j->timeout_s, .handshake = j->handshake, .diff = diff_fn};
    mt_comm *c = NULL;
    double t0 = now_s();
    if (mt_comm_create(j->rank, j->claimed_world, rdv, &o, &c) != MT_OK) {
        report(out, 1, now_s() - t0, mt_last_error());
        _exit(0);
    }
    int W = j->world, R = j->rank;
    char msg[900] = "";
    int bad = 0;
    /* all-reduce sum and average, f32 */
    float v[1000];
    for (int i = 0; i < 1000; i++) v[i] = (float)(R + 1) * (float)i;
    if (mt_comm_allreduce(c, v, 1000, MT_DTYPE_F32, MT_COMM_SUM, NULL) != MT_OK) bad = 1;
    float tri = (float)(W * (W + 1) / 2);
    for (int i = 0; !bad && i < 1000; i++)
        if (v[i] != tri * (float)i) bad = snprintf(msg, sizeof msg, "sum[%d] = %g, want %g", i, v[i], tri * i);
    for (int i = 0; i < 1000; i++) v[i] = (float)R;
    if (!bad && mt_comm_allreduce(c, v, 1000, MT_DTYPE_F32, MT_COMM_AVG, NULL) != MT_OK) bad = 1;
    if (!bad && v[7] != (float)(W - 1) / 2.0f) bad = snprintf(msg, sizeof msg, "avg = %g", v[7]);
    /* bf16: small integers are exact */
    uint16_t h[64];
    for (int i = 0; i < 64; i++) h[i] = mt_f32_to_bf16((float)(R + i % 4));
    if (!bad && mt_comm_allreduce(c, h, 64, MT_DTYPE_BF16, MT_COMM_SUM, NULL) != MT_OK) bad = 1;
    if (!bad && mt_bf16_to_f32(h[5]) != (float)(W * (W - 1) / 2 + W * 1))
        bad = snprintf(msg, sizeof msg, "bf16 sum = %g", mt_bf16_to_f32(h[5]));
    /* broadcast from the last rank, all-gather, barrier */
    int32_t b[3] = {R, R, R};
    if (!bad && mt_comm_broadcast(c, b, sizeof b, W - 1, NULL) != MT_OK) bad = 1;
    if (!bad && b[2] != W - 1) bad = snprintf(msg, sizeof msg, "broadcast gave %d", b[2]);
    int32_t g[MAXW] = {0}, mine = 100 + R;
    if (!bad && mt_comm_allgather(c, &mine, g, sizeof mine, NULL) != MT_OK) bad = 1;
    for (int r = 0; !bad && r < W; r++)
        if (g[r] != 100 + r) bad = snprintf(msg, sizeof msg, "all-gather[%d] = %d", r, g[r]);
    /* asynchronous: three in flight, polled then waited */
    static float big[3][1 << 18];
    mt_comm_work *w[3];
    for (int k = 0; !bad && k < 3; k++) {
        for (int i = 0; i < 1 << 18; i++) big[k][i] = (float)(k + R);
        if (mt_comm_allreduce(c, big[k], 1 << 18, MT_DTYPE_F32, MT_COMM_SUM, &w[k]) != MT_OK) bad = 1;
    }
    int done = 0;
    if (!bad && mt_comm_test(w[0], &done) != MT_OK) bad = 1;
    for (int k = 0; !bad && k < 3; k++)
        if (mt_comm_wait(w[k]) != MT_OK) bad = 1;
    for (int k = 0; !bad && k < 3; k++)
        if (big[k][12345] != (float)(W * k + W * (W - 1) / 2)) bad = snprintf(msg, sizeof msg, "async[%d] wrong", k);
    if (!bad && mt_comm_barrier(c) != MT_OK) bad = 1;
    if (bad && !msg[0]) snprintf(msg, sizeof msg, "%s", mt_last_error());
    if (bad) {
        report(out, 2, 0, msg);
        _exit(0);
    }
    if (j->fail_mode && R == j->fail_rank) {
        report(out, 0, 0, "");
        raise(j->fail_mode == 1 ? SIGKILL : SIGSTOP);
        _exit(0);
    }
    if (j->fail_mode) {
        /* The others keep reducing until the loss shows. */
        double t1 = 0;
        mt_status st = MT_OK;
        for (int k = 0; k < 1000 && st == MT_OK; k++) {
            t1 = now_s();
            st = mt_comm_allreduce(c, v, 1000, MT_DTYPE_F32, MT_COMM_SUM, NULL);
        }
        report(out, st == MT_OK ? 4 : 1, now_s() - t1, st == MT_OK ? "no failure seen" : mt_last_error());
        mt_comm_abort(c);
        mt_comm_free(c);
        _exit(0);
    }
    mt_comm_free(c);
    report(out, 0, 0, "");
    _exit(0);
}

/* Runs the ranks; outcomes in o[rank]. Children still alive after `limit` seconds are killed. */
static void run_world(job *tmpl, int n, outcome *o, double limit) {
    int port = mt_store_free_port();
    pid_t pid[MAXW];
    int fds[MAXW][2];
    for (int r = 0; r < n; r++) {
        assert_int_equal(pipe(fds[r]), 0);
        pid[r] = fork();
        assert_true(pid[r] >= 0);
        if (pid[r] == 0) {
            job j = tmpl[r];
            j.port = port;
            close(fds[r][0]);
            rank_main(&j, fds[r][1]);
        }
        close(fds[r][1]);
    }
    double t0 = now_s();
    for (int r = 0; r < n; r++) {
        memset(&o[r], 0, sizeof o[r]);
        o[r].rc = -1;
        /* Read its outcome (the failing rank writes one before it dies). */
        for (;;) {
            fd_set s;
            FD_ZERO(&s);
            FD_SET(fds[r][0], &s);
            struct timeval tv = {1, 0};
            if (select(fds[r][0] + 1, &s, NULL, NULL, &tv) > 0) {
                if (read(fds[r][0], &o[r], sizeof o[r]) != sizeof o[r]) o[r].rc = -2;
                break;
            }
            if (now_s() - t0 > limit) break;
        }
        close(fds[r][0]);
    }
    for (int r = 0; r < n; r++) {
        kill(pid[r], SIGKILL);
        kill(pid[r], SIGCONT);
        waitpid(pid[r], NULL, 0);
    }
}

static void fill(job *j, int n, int world) {
    for (int r = 0; r < n; r++)
        j[r] = (job){.world = world, .rank = r, .claimed_world = world, .handshake = "same", .timeout_s = 20};
}

static void test_collectives(void **state) {
    (void)state;
    for (int world = 1; world <= 3; world++) {
        job j[MAXW];
        outcome o[MAXW];
        fill(j, world, world);
        run_world(j, world, o, 60);
        for (int r = 0; r < world; r++) {
            if (o[r].rc != 0) fprintf(stderr, "world %d rank %d: rc %d: %s\n", world, r, o[r].rc, o[r].msg);
            assert_int_equal(o[r].rc, 0);
        }
    }
}

static void test_world_mismatch(void **state) {
    (void)state;
    job j[MAXW];
    outcome o[MAXW];
    fill(j, 2, 2);
    j[1].claimed_world = 3;
    j[0].timeout_s = j[1].timeout_s = 10;
    run_world(j, 2, o, 40);
    for (int r = 0; r < 2; r++) {
        fprintf(stderr, "rank %d: %s\n", r, o[r].msg);
        assert_int_equal(o[r].rc, 1);
        assert_non_null(strstr(o[r].msg, "world of 3"));
    }
}

static void test_handshake_mismatch(void **state) {
    (void)state;
    job j[MAXW];
    outcome o[MAXW];
    fill(j, 3, 3);
    j[2].handshake = "other";
    run_world(j, 3, o, 40);
    for (int r = 0; r < 3; r++) {
        fprintf(stderr, "rank %d: %s\n", r, o[r].msg);
        assert_int_equal(o[r].rc, 1);
        assert_non_null(strstr(o[r].msg, "rank 2 differs from rank 0: handshake 'other' vs rank 0's 'same'"));
    }
}

/* mode 1: SIGKILL, 2: SIGSTOP of rank `victim` in a world of 3. */
static void lost_rank(int mode, int victim) {
    job j[MAXW];
    outcome o[MAXW];
    fill(j, 3, 3);
    for (int r = 0; r < 3; r++) {
        j[r].fail_mode = mode;
        j[r].fail_rank = victim;
        j[r].timeout_s = 4;
    }
    run_world(j, 3, o, 60);
    for (int r = 0; r < 3; r++) {
        fprintf(stderr, "mode %d victim %d rank %d: rc %d after %.1f s: %s\n", mode, victim, r, o[r].rc, o[r].secs, o[r].msg);
        if (r == victim) continue;
        assert_int_equal(o[r].rc, 1);
        assert_true(o[r].secs <= 4 + 5);
        char want[64];
        snprintf(want, sizeof want, "rank %d %s", victim, mode == 1 && victim != 0 ? "died" : victim == 0 ? "(the rendezvous host)" : "stopped answering");
        if (mode == 1 && victim == 0) snprintf(want, sizeof want, "rank 0 (the rendezvous host)");
        assert_non_null(strstr(o[r].msg, want));
    }
}

static void test_sigkill(void **state) {
    (void)state;
    lost_rank(1, 2);
    lost_rank(1, 0);
}

static void test_sigstop(void **state) {
    (void)state;
    lost_rank(2, 1);
    lost_rank(2, 0);
}

/* GPU ranks (NCCL): without a device (or without NCCL in the build) creation fails with
 * MT_ERR_NO_DEVICE and says why, and nothing hangs; with a device, one rank reduces device memory. */
static void test_nccl(void **state) {
    (void)state;
    char rdv[64];
    snprintf(rdv, sizeof rdv, "127.0.0.1:%d", mt_store_free_port());
    int n = 0;
    assert_int_equal(mt_device_count(&n), MT_OK);
    mt_comm_options o = {.timeout_s = 10, .use_nccl = 1, .device = 0};
    mt_comm *c = NULL;
    double t0 = now_s();
    mt_status st = mt_comm_create(0, 1, rdv, &o, &c);
#ifdef MT_WITH_NCCL
    int have_nccl = 1;
#else
    int have_nccl = 0;
#endif
    fprintf(stderr, "NCCL in the build: %d, CUDA devices: %d, create: %s%s%s\n", have_nccl, n, mt_status_str(st),
            st ? ": " : "", st ? mt_last_error() : "");
    if (!have_nccl || n == 0) {
        assert_int_equal(st, MT_ERR_NO_DEVICE);
        assert_non_null(strstr(mt_last_error(), have_nccl ? "cuda:0" : "no NCCL"));
        assert_true(now_s() - t0 < 10);
        return;
    }
    assert_int_equal(st, MT_OK);
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, 0, 0), MT_OK);
    mt_tensor *t;
    int64_t len = 1000;
    assert_int_equal(mt_tensor_new_persistent(0, MT_DTYPE_F32, 1, &len, NULL, &t), MT_OK);
    assert_int_equal(mt_fill(ctx, t, 2.5f), MT_OK);
    assert_int_equal(mt_comm_allreduce(c, t->data, 1000, MT_DTYPE_F32, MT_COMM_AVG, NULL), MT_OK);
    float h[1000];
    assert_int_equal(mt_copy_to_host(ctx, t, h, sizeof h), MT_OK);
    assert_true(h[999] == 2.5f);
    assert_int_equal(mt_comm_barrier(c), MT_OK);
    mt_tensor_free(t);
    mt_context_free(ctx);
    mt_comm_free(c);
}

/* bucket_mb 0: an eighth of the gradients, clamped to 1..25 MB; a positive bucket_mb as given. */
static void test_bucket_size(void **state) {
    (void)state;
    const size_t mb = 1000000 / sizeof(float);
    assert_int_equal(mt_dist_bucket_elems(0, 30 * (int64_t)mb), 30 * mb / 8);     /* mt-bench dist's model */
    assert_int_equal(mt_dist_bucket_elems(0, 2 * (int64_t)mb), mb);               /* small: at least 1 MB */
    assert_int_equal(mt_dist_bucket_elems(0, 1000 * (int64_t)mb), 25 * mb);       /* large: DDP's 25 MB */
    assert_int_equal(mt_dist_bucket_elems(4, 30 * (int64_t)mb), 4 * mb);          /* the override */
    assert_int_equal(mt_dist_bucket_elems(1e-9, 30 * (int64_t)mb), 1);            /* never 0 */
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_collectives),
        cmocka_unit_test(test_world_mismatch),
        cmocka_unit_test(test_handshake_mismatch),
        cmocka_unit_test(test_sigkill),
        cmocka_unit_test(test_sigstop),
        cmocka_unit_test(test_nccl),
        cmocka_unit_test(test_bucket_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
