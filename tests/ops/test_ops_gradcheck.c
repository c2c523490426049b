/*
 * test_ops_gradcheck.c — the gradient of every differentiable op against central finite differences
 * of the engine's own forward (double accumulation; see fd.h), over the inputs and upstream
 * gradients of every golden case (random shapes, size-1 dims, broadcasting on either side), plus
 * dropout with a fixed seed. PyTorch's results are not used here: this checks backward against
 * forward.
 *
 * Tolerance: |analytic - numeric| <= atol + rtol |numeric|. The numeric derivative carries the f32
 * rounding of the outputs divided by the step (about 1e-7 * |y| / 1e-3 per output touched), so
 * atol grows with how many outputs one input reaches (reductions, norms, attention).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fd.h"

typedef struct fd_tol {
    const char *op;
    double atol, rtol;
} fd_tol;

static const fd_tol k_tols[] = {
    {"*", 2e-3, 2e-3},
    {"sum", 5e-3, 2e-3},   {"mean", 2e-3, 2e-3},      {"matmul", 5e-3, 2e-3},    {"linear", 5e-3, 2e-3},
    {"layer_norm", 5e-3, 5e-3}, {"rms_norm", 5e-3, 5e-3}, {"attention", 5e-3, 5e-3},
    {"cross_entropy", 1e-3, 5e-3}, {"softmax", 2e-3, 5e-3}, {"log_softmax", 5e-3, 5e-3},
};

static const fd_tol *tol_of(const char *op) {
    for (size_t i = 1; i < sizeof k_tols / sizeof k_tols[0]; i++)
        if (strcmp(k_tols[i].op, op) == 0) return &k_tols[i];
    return &k_tols[0];
}

static int64_t g_checked;

static mt_tensor *run_golden(mt_context *ctx, mt_tensor **xs, int n, void *user) {
    return mt_run_case(ctx, (const mt_gcase *)user, xs, n);
}

static void test_fd_file(void **state) {
    const char *path = *state;
    mt_gfile gf;
    char err[512];
    if (mt_gfile_load(path, &gf, err, sizeof err) != 0) fail_msg("%s", err);
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    double worst = 0;
    int failures = 0, checked_cases = 0;
    for (int ci = 0; ci < gf.n_cases; ci++) {
        const mt_gcase *c = &gf.cases[ci];
        if (!mt_gcase_has_grads(c)) continue;
        int n = mt_gcase_n_inputs(c), diff[MT_G_MAX_TENSORS] = {0};
        mt_gtensor xs[MT_G_MAX_TENSORS];
        char key[16];
        for (int i = 0; i < n; i++) {
            snprintf(key, sizeof key, "x%d", i);
            xs[i] = *mt_gget(c, key);
            snprintf(key, sizeof key, "gx%d", i);
            diff[i] = mt_gget(c, key) != NULL;
        }
        const fd_tol *tl = tol_of(c->op);
        mt_fd_result r = mt_fd_check(ctx, xs, diff, n, mt_gget(c, "gy"), run_golden, (void *)c, 1e-3, tl->atol, tl->rtol,
                                     0x1234);
        if (r.failed) fail_msg("%s case %d (%s): the op or its backward failed: %s", gf.name, ci, c->op, mt_last_error());
        g_checked += r.checked;
        checked_cases++;
        if (r.worst > worst) worst = r.worst;
        if (r.worst > 1.0) {
            failures++;
            print_error("%s case %d (%s): d/d input %d element %lld: backward %.7g, finite differences %.7g "
                        "(%.2fx tolerance)\n",
                        gf.name, ci, c->op, r.input, (long long)r.index, r.analytic, r.numeric, r.worst);
        }
    }
    print_message("fd %-14s %3d cases  worst %.3f of tolerance\n", gf.name, checked_cases, worst);
    mt_context_free(ctx);
    mt_gfile_free(&gf);
    if (failures) fail_msg("%s: %d cases out of tolerance", path, failures);
}

/* Dropout: inverted dropout with a fixed seed is linear in x, so its gradient is the mask / (1-p). */
typedef struct dropout_args {
    float p;
} dropout_args;

static mt_tensor *run_dropout(mt_context *ctx, mt_tensor **xs, int n, void *user) {
    (void)n;
    const dropout_args *a = user;
    /* A nonlinear consumer so the check is not only of a linear map. */
    return mt_tanh(ctx, mt_dropout(ctx, xs[0], a->p, 1));
}

static void test_fd_dropout(void **state) {
    (void)state;
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    float xv[3 * 37], gv[3 * 37];
    for (int i = 0; i < 3 * 37; i++) {
        xv[i] = (float)(0.1 + 0.9 * ((i * 37) % 101) / 101.0) * (i % 3 ? 1.0f : -1.0f);
        gv[i] = (float)(0.2 + ((i * 53) % 89) / 89.0);
    }
    mt_gtensor x = {.key = "x0", .dtype = MT_DTYPE_F32, .ndim = 2, .shape = {3, 37}, .numel = 3 * 37, .data = xv};
    mt_gtensor gy = {.key = "gy", .dtype = MT_DTYPE_F32, .ndim = 2, .shape = {3, 37}, .numel = 3 * 37, .data = gv};
    int diff = 1;
    float ps[] = {0.1f, 0.5f, 0.9f};
    for (int k = 0; k < 3; k++) {
        dropout_args a = {ps[k]};
        mt_fd_result r = mt_fd_check(ctx, &x, &diff, 1, &gy, run_dropout, &a, 1e-3, 2e-3, 2e-3, 777 + (uint64_t)k);
        assert_false(r.failed);
        g_checked += r.checked;
        if (r.worst > 1.0)
            fail_msg("dropout p=%g: element %lld: backward %.7g, finite differences %.7g", ps[k], (long long)r.index,
                     r.analytic, r.numeric);
    }
    mt_context_free(ctx);
}

int main(int argc, char **argv) {
    const char *dir = mt_gdir_default(argc, argv);
    char **paths;
    int n = mt_gdir_list(dir, &paths);
    if (n <= 0) {
        fprintf(stderr, "test_ops_gradcheck: no golden files in %s\n", dir);
        return 1;
    }
    struct CMUnitTest *tests = calloc((size_t)n + 1, sizeof *tests);
    for (int i = 0; i < n; i++) {
        tests[i].name = strrchr(paths[i], '/') ? strrchr(paths[i], '/') + 1 : paths[i];
        tests[i].test_func = test_fd_file;
        tests[i].initial_state = paths[i];
    }
    tests[n].name = "dropout";
    tests[n].test_func = test_fd_dropout;
    int rc = _cmocka_run_group_tests("ops_gradcheck", tests, (size_t)n + 1, NULL, NULL);
    printf("test_ops_gradcheck: %lld derivatives compared with central finite differences\n", (long long)g_checked);
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
    free(tests);
    return rc;
}
