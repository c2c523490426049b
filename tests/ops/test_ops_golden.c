/*
 * test_ops_golden.c — every op against PyTorch: forward values and the gradients of every float input
 * (PyTorch autograd, float64) from the golden files of tests/reference/golden (or the directory given
 * as argv[1] / $MT_GOLDEN_DIR, which the regeneration test uses for freshly made files).
 *
 * $MT_TEST_DEVICE selects the device (default the CPU; 0 = cuda:0, how the `gpu` label runs it, exit
 * 77 when that device is absent), so a backend is checked against PyTorch op by op; results are
 * copied to the host before comparing.
 *
 * One CMocka test per golden file. A value passes when |engine - torch| <= atol + rtol * |torch|, with
 * (atol, rtol) per op: f32 rounding of the op's own arithmetic, looser only where the op sums many
 * terms. The table prints the worst error of each file as a fraction of its tolerance.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "golden.h"

typedef struct tol {
    const char *op;
    double fa, fr; /* forward atol, rtol */
    double ga, gr; /* gradient atol, rtol */
} tol;

/* Default for anything not listed: a few ulp of f32. */
static const tol k_tols[] = {
    {"*", 1e-6, 1e-5, 1e-6, 1e-5},
    /* sums of up to a few hundred terms */
    {"sum", 1e-5, 1e-5, 1e-6, 1e-5},
    {"mean", 1e-6, 1e-5, 1e-7, 1e-5},
    {"matmul", 1e-5, 1e-5, 1e-5, 1e-5},
    {"linear", 1e-5, 1e-5, 1e-5, 1e-5},
    {"layer_norm", 1e-5, 1e-5, 1e-5, 1e-4},
    {"rms_norm", 1e-5, 1e-5, 1e-5, 1e-4},
    {"softmax", 1e-6, 1e-5, 1e-6, 1e-4},
    {"log_softmax", 1e-5, 1e-5, 1e-5, 1e-4},
    {"cross_entropy", 1e-5, 1e-5, 1e-6, 1e-4},
    {"attention", 1e-5, 1e-5, 1e-5, 1e-4},
    /* pow through powf of x^(s-1) */
    {"pow", 1e-6, 2e-5, 1e-6, 2e-5},
    /* angles up to ~20 rad in f32 */
    {"rope", 1e-5, 1e-5, 1e-5, 1e-5},
};

static const tol *tol_of(const char *op) {
    for (size_t i = 1; i < sizeof k_tols / sizeof k_tols[0]; i++)
        if (strcmp(k_tols[i].op, op) == 0) return &k_tols[i];
    return &k_tols[0];
}

static int64_t g_checked_values, g_cases;
static int g_device = MT_DEVICE_CPU;

/* A host copy of t's elements (malloc'd). */
static void *host_copy(mt_context *ctx, const mt_tensor *t) {
    size_t bytes = (size_t)t->numel * mt_dtype_size(t->dtype);
    void *h = malloc(bytes ? bytes : 1);
    if (mt_copy_to_host(ctx, t, h, bytes) != MT_OK) fail_msg("copy to host: %s", mt_last_error());
    return h;
}

/* Worst |got - want| / (atol + rtol |want|) over n values; exact match required for I32. idx gets the
 * worst element. Non-finite reference values must be matched exactly. */
static double worst_ratio(const void *got, const mt_gtensor *want, double atol, double rtol, int64_t *idx) {
    double worst = 0.0;
    *idx = -1;
    if (want->dtype == MT_DTYPE_I32) {
        for (int64_t i = 0; i < want->numel; i++)
            if (((const int32_t *)got)[i] != ((const int32_t *)want->data)[i]) {
                *idx = i;
                return INFINITY;
            }
        return 0.0;
    }
    for (int64_t i = 0; i < want->numel; i++) {
        double g = ((const float *)got)[i], w = ((const float *)want->data)[i];
        double r;
        if (!isfinite(w)) r = (g == w) ? 0.0 : INFINITY;
        else if (!isfinite(g)) r = INFINITY;
        else r = fabs(g - w) / (atol + rtol * fabs(w));
        if (r > worst || *idx < 0) {
            worst = r > worst ? r : worst;
            if (r >= worst) *idx = i;
        }
    }
    return worst;
}

static int same_shape(const mt_tensor *t, const mt_gtensor *g) {
    if (t->ndim != g->ndim || t->dtype != g->dtype) return 0;
    for (int d = 0; d < g->ndim; d++)
        if (t->shape[d] != g->shape[d]) return 0;
    return 1;
}

static void test_golden_file(void **state) {
    const char *path = *state;
    mt_gfile gf;
    char err[512];
    if (mt_gfile_load(path, &gf, err, sizeof err) != 0) fail_msg("%s", err);
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, g_device, 0), MT_OK);
    double worst_f = 0, worst_g = 0;
    int failures = 0;
    for (int ci = 0; ci < gf.n_cases; ci++) {
        const mt_gcase *c = &gf.cases[ci];
        const tol *tl = tol_of(c->op);
        assert_int_equal(mt_context_reset(ctx), MT_OK);
        int n = mt_gcase_n_inputs(c);
        mt_tensor *xs[MT_G_MAX_TENSORS] = {0};
        char key[16];
        for (int i = 0; i < n; i++) {
            snprintf(key, sizeof key, "x%d", i);
            xs[i] = mt_gtensor_make(ctx, mt_gget(c, key));
            assert_non_null(xs[i]);
            snprintf(key, sizeof key, "gx%d", i);
            if (mt_gget(c, key)) xs[i]->flags |= MT_TENSOR_REQUIRES_GRAD;
        }
        mt_tensor *y = mt_run_case(ctx, c, xs, n);
        if (!y) fail_msg("%s case %d (%s): the op failed: %s", gf.name, ci, c->op, mt_last_error());
        const mt_gtensor *wy = mt_gget(c, "y");
        if (!same_shape(y, wy)) fail_msg("%s case %d (%s): output shape/dtype differs from PyTorch", gf.name, ci, c->op);
        int64_t idx;
        void *hy = host_copy(ctx, y);
        double r = worst_ratio(hy, wy, tl->fa, tl->fr, &idx);
        g_checked_values += wy->numel;
        if (r > worst_f) worst_f = r;
        if (r > 1.0) {
            failures++;
            print_error("%s case %d (%s): forward element %lld: engine %.9g, torch %.9g (%.2fx tolerance)\n", gf.name,
                        ci, c->op, (long long)idx,
                        wy->dtype == MT_DTYPE_I32 ? (double)((int32_t *)hy)[idx] : (double)((float *)hy)[idx],
                        wy->dtype == MT_DTYPE_I32 ? (double)((int32_t *)wy->data)[idx] : (double)((float *)wy->data)[idx],
                        r);
        }
        free(hy);
        if (mt_gcase_has_grads(c)) {
            mt_tensor *gy = mt_gtensor_make(ctx, mt_gget(c, "gy"));
            assert_non_null(gy);
            mt_status st = mt_backward(ctx, y, gy);
            if (st != MT_OK) fail_msg("%s case %d (%s): backward failed: %s", gf.name, ci, c->op, mt_last_error());
            for (int i = 0; i < n; i++) {
                snprintf(key, sizeof key, "gx%d", i);
                const mt_gtensor *wg = mt_gget(c, key);
                if (!wg) continue;
                if (!xs[i]->grad) fail_msg("%s case %d (%s): no gradient reached input %d", gf.name, ci, c->op, i);
                float *hg = host_copy(ctx, xs[i]->grad);
                r = worst_ratio(hg, wg, tl->ga, tl->gr, &idx);
                g_checked_values += wg->numel;
                if (r > worst_g) worst_g = r;
                if (r > 1.0) {
                    failures++;
                    print_error("%s case %d (%s): gradient of input %d, element %lld: engine %.9g, torch %.9g "
                                "(%.2fx tolerance)\n",
                                gf.name, ci, c->op, i, (long long)idx, (double)hg[idx], (double)((float *)wg->data)[idx],
                                r);
                }
                free(hg);
            }
        }
        g_cases++;
    }
    print_message("golden %-14s %3d cases  worst forward %.3f  worst gradient %.3f (fraction of tolerance)\n",
                  gf.name, gf.n_cases, worst_f, worst_g);
    mt_context_free(ctx);
    mt_gfile_free(&gf);
    if (failures) fail_msg("%s: %d comparisons out of tolerance", path, failures);
}

int main(int argc, char **argv) {
    const char *dev = getenv("MT_TEST_DEVICE");
    if (dev && *dev) {
        g_device = atoi(dev);
        mt_context *probe = NULL;
        mt_status st = mt_context_init(&probe, g_device, 0);
        if (st == MT_ERR_NO_DEVICE) {
            printf("test_ops_golden: skipped: %s\n", mt_last_error());
            return 77;
        }
        if (st != MT_OK) {
            fprintf(stderr, "test_ops_golden: device %d: %s\n", g_device, mt_last_error());
            return 1;
        }
        mt_context_free(probe);
    }
    const char *dir = mt_gdir_default(argc, argv);
    char **paths;
    int n = mt_gdir_list(dir, &paths);
    if (n <= 0) {
        fprintf(stderr, "test_ops_golden: no golden files in %s\n", dir);
        return 1;
    }
    struct CMUnitTest *tests = calloc((size_t)n, sizeof *tests);
    for (int i = 0; i < n; i++) {
        tests[i].name = strrchr(paths[i], '/') ? strrchr(paths[i], '/') + 1 : paths[i];
        tests[i].test_func = test_golden_file;
        tests[i].initial_state = paths[i];
    }
    int rc = _cmocka_run_group_tests("ops_golden", tests, (size_t)n, NULL, NULL);
    printf("test_ops_golden: %lld cases, %lld values compared with PyTorch from %s on %s\n", (long long)g_cases,
           (long long)g_checked_values, dir, g_device == MT_DEVICE_CPU ? "the CPU" : "a CUDA device");
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
    free(tests);
    return rc;
}
