/*
 * test_ops_threads.c — the multi-threaded paths of the CPU kernels. The golden cases are small (below
 * the 32K-element threshold at which kernels fork), so they check the single-thread paths; here the
 * same ops run on large inputs in a 1-thread and a 3-thread context (3: every split is uneven, and
 * more threads than this machine's cores still run), and forward values and every input gradient
 * must agree. Reduction order may differ between the two, hence a tolerance relative to the tensor's
 * largest value; dropout must match exactly (its mask depends only on seed and element index).
 * Each case also runs with streaming (non-temporal) stores forced on for every output (normally only
 * outputs of 16 MB or more stream), which must give bit-identical results to the 3-thread run.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/numeric.h"
#include "core/rng.h"
#include "cpu/cpu.h"
#include "golden.h"

enum { K_NONZERO, K_POSITIVE, K_IDS, K_MASK, K_DISTINCT, K_TARGETS, K_ADDMASK };

typedef struct tcase {
    mt_gcase c;
    int diff[MT_G_MAX_TENSORS];
} tcase;

static uint32_t g_seed = 12345;
static float rnd(void) {
    g_seed = g_seed * 1664525u + 1013904223u;
    return (float)(g_seed >> 8) / 16777216.0f;
}

static void attr(tcase *t, const char *k, double v) {
    snprintf(t->c.attr_key[t->c.n_attrs], 16, "%s", k);
    t->c.attr_val[t->c.n_attrs++] = v;
}

/* Adds input x<i> of the given kind; param: the id range for ids/targets. */
static void input(tcase *t, int ndim, const int64_t *shape, int kind, int param) {
    int i = t->c.n_tensors;
    mt_gtensor *g = &t->c.t[i];
    snprintf(g->key, sizeof g->key, "x%d", i);
    g->ndim = ndim;
    g->numel = 1;
    for (int d = 0; d < ndim; d++) g->numel *= (g->shape[d] = shape[d]);
    g->dtype = (kind == K_IDS || kind == K_TARGETS) ? MT_DTYPE_I32 : MT_DTYPE_F32;
    g->data = malloc((size_t)g->numel * 4);
    for (int64_t k = 0; k < g->numel; k++) {
        float u = rnd();
        switch (kind) {
        case K_NONZERO: ((float *)g->data)[k] = (0.1f + 1.9f * u) * (rnd() < 0.5f ? -1.0f : 1.0f); break;
        case K_POSITIVE: ((float *)g->data)[k] = 0.2f + 2.8f * u; break;
        case K_IDS: ((int32_t *)g->data)[k] = (int32_t)(u * (float)param) % param; break;
        case K_TARGETS: ((int32_t *)g->data)[k] = u < 0.2f ? -100 : (int32_t)(rnd() * (float)param) % param; break;
        case K_MASK: ((float *)g->data)[k] = u < 0.3f ? 1.0f : 0.0f; break;
        case K_ADDMASK: ((float *)g->data)[k] = (k % param) != 0 && u < 0.2f ? -INFINITY : u - 0.5f; break;
        default: ((float *)g->data)[k] = (float)((k * 7919) % g->numel) * 0.01f + 0.001f * u; break; /* distinct */
        }
    }
    t->diff[i] = kind == K_NONZERO || kind == K_POSITIVE || kind == K_DISTINCT;
    t->c.n_tensors++;
}

static tcase *new_case(const char *op) {
    tcase *t = calloc(1, sizeof *t);
    snprintf(t->c.op, sizeof t->c.op, "%s", op);
    return t;
}

static void free_case(tcase *t) {
    for (int i = 0; i < t->c.n_tensors; i++) free(t->c.t[i].data);
    free(t);
}

/* Output and input gradients, copied to host. */
typedef struct run {
    float *y;
    int64_t ny;
    float *g[MT_G_MAX_TENSORS];
} run;

static run run_with(int threads, int stream_all, tcase *t) {
    run r = {0};
    int64_t saved_stream_min = mt_cpu_stream_min;
    if (stream_all) mt_cpu_stream_min = 0;
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, threads), MT_OK);
    mt_context_seed(ctx, 99);
    int n = t->c.n_tensors;
    mt_tensor *xs[MT_G_MAX_TENSORS];
    for (int i = 0; i < n; i++) {
        xs[i] = mt_gtensor_make(ctx, &t->c.t[i]);
        assert_non_null(xs[i]);
        if (t->diff[i]) mt_requires_grad(xs[i], 1);
    }
    mt_tensor *y = mt_run_case(ctx, &t->c, xs, n);
    if (!y) fail_msg("%s: %s", t->c.op, mt_last_error());
    r.ny = y->numel;
    r.y = malloc((size_t)y->numel * 4);
    memcpy(r.y, y->data, (size_t)y->numel * 4);
    if (y->dtype == MT_DTYPE_F32 && mt_tensor_requires_grad(y)) {
        float *gv = malloc((size_t)y->numel * 4);
        uint32_t s = 777;
        for (int64_t k = 0; k < y->numel; k++) {
            s = s * 1664525u + 1013904223u;
            gv[k] = 0.1f + (float)(s >> 8) / 16777216.0f;
        }
        mt_tensor *gy = mt_from_data(ctx, MT_DTYPE_F32, y->ndim, y->shape, gv);
        free(gv);
        assert_int_equal(mt_backward(ctx, y, gy), MT_OK);
        for (int i = 0; i < n; i++) {
            if (!t->diff[i] || !xs[i]->grad) continue;
            r.g[i] = malloc((size_t)xs[i]->numel * 4);
            memcpy(r.g[i], xs[i]->grad->data, (size_t)xs[i]->numel * 4);
        }
    }
    mt_context_free(ctx);
    mt_cpu_stream_min = saved_stream_min;
    return r;
}

static void compare(const char *what, const tcase *t, const float *a, const float *b, int64_t n, int exact,
                    int is_int) {
    double mx = 0;
    if (is_int) {
        for (int64_t k = 0; k < n; k++)
            if (((const int32_t *)a)[k] != ((const int32_t *)b)[k])
                fail_msg("%s %s[%lld]: 1 thread %d, 3 threads %d", t->c.op, what, (long long)k, ((const int32_t *)a)[k],
                         ((const int32_t *)b)[k]);
        return;
    }
    for (int64_t k = 0; k < n; k++)
        if (isfinite(a[k]) && fabs(a[k]) > mx) mx = fabs(a[k]);
    for (int64_t k = 0; k < n; k++) {
        int same = (a[k] == b[k]) || (isnan(a[k]) && isnan(b[k]));
        if (same) continue;
        if (exact || !isfinite(a[k]) || !isfinite(b[k]) || fabs(a[k] - b[k]) > 2e-6 * mx + 1e-6 * fabs(a[k]))
            fail_msg("%s %s[%lld]: 1 thread %.9g, 3 threads %.9g (largest |value| %.3g)", t->c.op, what, (long long)k,
                     (double)a[k], (double)b[k], mx);
    }
}

static void check_case(tcase *t) {
    run r1 = run_with(1, 0, t), r3 = run_with(3, 0, t), rs = run_with(3, 1, t);
    int exact = strcmp(t->c.op, "dropout") == 0;
    int is_int = strcmp(t->c.op, "argmax") == 0;
    assert_int_equal(r1.ny, r3.ny);
    compare("forward", t, r1.y, r3.y, r1.ny, exact, is_int);
    if (memcmp(rs.y, r3.y, (size_t)r3.ny * 4) != 0) fail_msg("%s: streamed forward differs", t->c.op);
    for (int i = 0; i < t->c.n_tensors; i++) {
        if (!r1.g[i] && !r3.g[i]) continue;
        assert_non_null(r1.g[i]);
        assert_non_null(r3.g[i]);
        char what[32];
        snprintf(what, sizeof what, "gradient of input %d", i);
        compare(what, t, r1.g[i], r3.g[i], t->c.t[i].numel, exact, 0);
        if (memcmp(rs.g[i], r3.g[i], (size_t)t->c.t[i].numel * 4) != 0)
            fail_msg("%s: gradient of input %d differs with streamed forward outputs", t->c.op, i);
    }
    free(r1.y);
    free(r3.y);
    free(rs.y);
    for (int i = 0; i < MT_G_MAX_TENSORS; i++) {
        free(r1.g[i]);
        free(r3.g[i]);
        free(rs.g[i]);
    }
    free_case(t);
}

static void test_elementwise(void **state) {
    (void)state;
    static const char *unary[] = {"neg", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu", "silu"};
    for (int i = 0; i < 9; i++) {
        tcase *t = new_case(unary[i]);
        input(t, MT_DIMS(70001), i == 2 || i == 3 ? K_POSITIVE : K_NONZERO, 0);
        check_case(t);
    }
    static const char *scalar[] = {"add_scalar", "mul_scalar", "rdiv_scalar", "pow"};
    for (int i = 0; i < 4; i++) {
        tcase *t = new_case(scalar[i]);
        input(t, MT_DIMS(301, 257), i == 3 ? K_POSITIVE : K_NONZERO, 0);
        attr(t, "s", i == 3 ? 1.7 : -1.25);
        check_case(t);
    }
    /* same shape (one collapsed row, tiled), one side broadcast, both, several reduced groups */
    static const int64_t shapes[][2][4] = {{{301, 257, 1, 1}, {301, 257, 1, 1}}, {{301, 257, 1, 1}, {1, 257, 1, 1}},
                                           {{301, 1, 1, 1}, {301, 257, 1, 1}}, {{7, 1, 513, 1}, {1, 33, 513, 1}},
                                           {{2, 1, 40, 1}, {1, 50, 1, 600}}};
    static const char *binary[] = {"add", "sub", "mul", "div"};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int i = 0; i < 4; i++) {
            tcase *t = new_case(binary[i]);
            input(t, 4, shapes[s][0], K_NONZERO, 0);
            input(t, 4, shapes[s][1], i == 3 ? K_POSITIVE : K_NONZERO, 0);
            check_case(t);
        }
    tcase *t = new_case("masked_fill");
    input(t, MT_DIMS(40, 33, 65), K_NONZERO, 0);
    input(t, MT_DIMS(40, 1, 65), K_MASK, 0);
    attr(t, "value", -3.0);
    check_case(t);
}

static mt_tensor *dropout_op(mt_context *ctx, mt_tensor **xs, int n, void *u) {
    (void)n;
    (void)u;
    return mt_dropout(ctx, xs[0], 0.3f, 1);
}

static void test_dropout(void **state) {
    (void)state;
    /* Not a golden op: run it directly through the same harness by hand. */
    float *x = malloc(sizeof(float) * 100003), *outs[2][2];
    for (int i = 0; i < 100003; i++) x[i] = 0.5f + (float)(i % 13);
    for (int k = 0; k < 2; k++) {
        mt_context *ctx;
        assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, k ? 3 : 1), MT_OK);
        mt_context_seed(ctx, 5);
        mt_tensor *xt = mt_from_data(ctx, MT_DTYPE_F32, MT_DIMS(100003), x);
        mt_requires_grad(xt, 1);
        mt_tensor *y = dropout_op(ctx, &xt, 1, NULL);
        assert_int_equal(mt_backward(ctx, mt_sum(ctx, y, NULL, 0, 0), NULL), MT_OK);
        outs[k][0] = malloc(sizeof(float) * 100003);
        outs[k][1] = malloc(sizeof(float) * 100003);
        memcpy(outs[k][0], y->data, sizeof(float) * 100003);
        memcpy(outs[k][1], xt->grad->data, sizeof(float) * 100003);
        mt_context_free(ctx);
    }
    assert_memory_equal(outs[0][0], outs[1][0], sizeof(float) * 100003);
    assert_memory_equal(outs[0][1], outs[1][1], sizeof(float) * 100003);
    for (int k = 0; k < 2; k++) {
        free(outs[k][0]);
        free(outs[k][1]);
    }
    free(x);
}

/* The dropout kernels against their definition: element i is kept when mt_rng_uniform(seed, offset + i)
 * >= p (the scalar Philox of core/rng.h, which the CUDA backend shares); offsets at every lane of a
 * block, a counter whose low word wraps inside a chunk, a seed with both words set; forward with and
 * without the residual, backward accumulating; 1 and 3 threads; the random words drawn sixteen blocks
 * at a time (AVX-512, where the CPU has it) and eight (AVX2). */
static void test_dropout_stream(void **state) {
    (void)state;
    enum { N = 70001 };
    static const uint64_t offsets[] = {0, 1, 2, 3, 4 * 0xFFFFFFF0ull + 2, 1000003};
    static const uint64_t seeds[] = {5, 0x123456789ABCDEFull};
    float *x = malloc(sizeof(float) * N), *r = malloc(sizeof(float) * N), *out = malloc(sizeof(float) * N);
    float *dx = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) x[i] = 0.5f + (float)(i % 13), r[i] = -0.25f * (float)(i % 7);
    for (int run = 0; run < 4; run++) {
        int th = run & 1 ? 3 : 1;
        mt_cpu_philox_avx512 = run < 2;
        mt_context *ctx;
        assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, th), MT_OK);
        for (size_t si = 0; si < sizeof seeds / sizeof seeds[0]; si++)
            for (size_t oi = 0; oi < sizeof offsets / sizeof offsets[0]; oi++) {
                uint64_t seed = seeds[si], off = offsets[oi];
                float p = 0.3f, scale = 1.0f / (1.0f - p);
                for (int res = 0; res < 2; res++) {
                    assert_int_equal(mt_cpu_dropout_fwd(&ctx->ex, out, x, N, p, seed, off, res ? r : NULL), MT_OK);
                    for (int i = 0; i < N; i++) {
                        float d = mt_rng_uniform(seed, off + (uint64_t)i) >= p ? x[i] * scale : 0.0f;
                        float want = res ? r[i] + d : d;
                        if (out[i] != want)
                            fail_msg("dropout seed %llx offset %llu element %d: %g, want %g", (unsigned long long)seed,
                                     (unsigned long long)off, i, (double)out[i], (double)want);
                    }
                }
                for (int i = 0; i < N; i++) dx[i] = r[i];
                assert_int_equal(mt_cpu_dropout_bwd(&ctx->ex, dx, x, N, p, seed, off), MT_OK);
                for (int i = 0; i < N; i++) {
                    float want = mt_rng_uniform(seed, off + (uint64_t)i) >= p ? r[i] + x[i] * scale : r[i];
                    if (dx[i] != want)
                        fail_msg("dropout backward seed %llx offset %llu element %d: %g, want %g",
                                 (unsigned long long)seed, (unsigned long long)off, i, (double)dx[i], (double)want);
                }
            }
        mt_context_free(ctx);
    }
    mt_cpu_philox_avx512 = 1;
    free(x);
    free(r);
    free(out);
    free(dx);
}

/* The multi-tensor optimizer kernels (one parallel region over every slot, ranges cut across slot
 * boundaries) against one call per slot: AdamW values and the squared norm bit for bit, gradients
 * zeroed. Slots below and above the threading threshold, 1 and 3 threads. */
static void test_optimizer_multi(void **state) {
    (void)state;
    enum { SLOTS = 7 };
    static const int64_t sizes[SLOTS] = {256, 70001, 3, 40000, 1, 100003, 1024};
    for (int th = 1; th <= 3; th += 2) {
        mt_context *ctx;
        assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, th), MT_OK);
        mt_adamw_slot multi[SLOTS], one[SLOTS];
        for (int i = 0; i < SLOTS; i++) {
            mt_adamw_slot *sl[2] = {&multi[i], &one[i]};
            for (int k = 0; k < 2; k++) {
                sl[k]->n = sizes[i];
                sl[k]->wd = i % 2 ? 0.01f : 0.0f;
                float **bufs[4] = {&sl[k]->p, &sl[k]->g, &sl[k]->m, &sl[k]->v};
                for (int b = 0; b < 4; b++) *bufs[b] = malloc(sizeof(float) * (size_t)sizes[i]);
            }
            for (int64_t j = 0; j < sizes[i]; j++) {
                multi[i].p[j] = one[i].p[j] = rnd() - 0.5f;
                multi[i].g[j] = one[i].g[j] = (rnd() - 0.5f) * 0.1f;
                multi[i].m[j] = one[i].m[j] = (rnd() - 0.5f) * 0.01f;
                multi[i].v[j] = one[i].v[j] = rnd() * 1e-4f;
            }
        }
        float ss_multi = 0.5f, ss_one = 0.5f;
        assert_int_equal(mt_cpu_sumsq_multi(&ctx->ex, &ss_multi, multi, SLOTS, 1), MT_OK);
        for (int i = 0; i < SLOTS; i++) assert_int_equal(mt_cpu_sumsq(&ctx->ex, &ss_one, one[i].g, one[i].n, 1), MT_OK);
        assert_true(ss_multi == ss_one); /* the same per-slot sums, added in the same order */
        assert_int_equal(mt_cpu_adamw_multi(&ctx->ex, multi, SLOTS, 1e-3f, 0.9f, 0.98f, 1e-9f, 0.1f, 0.02f, &ss_one,
                                            0.5, 1),
                         MT_OK);
        float scale = mt_clip_scale(ss_one, 0.5);
        for (int i = 0; i < SLOTS; i++) {
            assert_int_equal(mt_cpu_adamw(&ctx->ex, one[i].p, one[i].g, one[i].m, one[i].v, one[i].n, 1e-3f, 0.9f,
                                          0.98f, 1e-9f, one[i].wd, 0.1f, 0.02f, scale),
                             MT_OK);
            size_t bytes = sizeof(float) * (size_t)sizes[i];
            assert_memory_equal(multi[i].p, one[i].p, bytes);
            assert_memory_equal(multi[i].m, one[i].m, bytes);
            assert_memory_equal(multi[i].v, one[i].v, bytes);
            for (int64_t j = 0; j < sizes[i]; j++) assert_true(multi[i].g[j] == 0.0f);
            for (int k = 0; k < 2; k++) {
                mt_adamw_slot *sl = k ? &one[i] : &multi[i];
                free(sl->p), free(sl->g), free(sl->m), free(sl->v);
            }
        }
        mt_context_free(ctx);
    }
}

static void test_reductions(void **state) {
    (void)state;
    static const int axes_sets[][4] = {{0, 0, 0, 0}, {1, 0, 0, 0}, {1, 1, 0, 0}, {1, 2, 0, 0}, {2, 0, 2, 0}, {1, -1, 0, 0}};
    static const char *ops[] = {"sum", "mean", "max"};
    for (int o = 0; o < 3; o++)
        for (size_t a = 0; a < sizeof axes_sets / sizeof axes_sets[0]; a++) {
            tcase *t = new_case(ops[o]);
            input(t, MT_DIMS(64, 33, 40), o == 2 ? K_DISTINCT : K_NONZERO, 0);
            attr(t, "naxes", axes_sets[a][0]);
            attr(t, "ax0", axes_sets[a][1]);
            attr(t, "ax1", axes_sets[a][2]);
            attr(t, "keepdim", a % 2);
            check_case(t);
        }
    for (int axis = 0; axis < 3; axis++) {
        tcase *t = new_case("argmax");
        input(t, MT_DIMS(64, 33, 40), K_DISTINCT, 0);
        attr(t, "axis", axis);
        check_case(t);
    }
}

static void test_nn(void **state) {
    (void)state;
    static const char *sm[] = {"softmax", "log_softmax"};
    for (int i = 0; i < 2; i++)
        for (int axis = 0; axis < 2; axis++) {
            tcase *t = new_case(sm[i]);
            input(t, MT_DIMS(301, 257), K_NONZERO, 0);
            attr(t, "axis", axis);
            check_case(t);
        }
    for (int bias = 0; bias < 2; bias++) {
        tcase *t = new_case("layer_norm");
        input(t, MT_DIMS(301, 257), K_NONZERO, 0);
        input(t, MT_DIMS(257), K_POSITIVE, 0);
        if (bias) input(t, MT_DIMS(257), K_NONZERO, 0);
        attr(t, "eps", 1e-5);
        check_case(t);
    }
    tcase *t = new_case("rms_norm");
    input(t, MT_DIMS(301, 257), K_NONZERO, 0);
    input(t, MT_DIMS(257), K_POSITIVE, 0);
    attr(t, "eps", 1e-6);
    check_case(t);
    t = new_case("embedding");
    input(t, MT_DIMS(500, 129), K_NONZERO, 0);
    input(t, MT_DIMS(40, 50), K_IDS, 500);
    check_case(t);
    t = new_case("cross_entropy");
    input(t, MT_DIMS(500, 301), K_NONZERO, 0);
    input(t, MT_DIMS(500), K_TARGETS, 301);
    attr(t, "eps", 0.1);
    attr(t, "ignore_index", -100);
    check_case(t);
    t = new_case("rope");
    input(t, MT_DIMS(8, 130, 64), K_NONZERO, 0);
    attr(t, "pos0", 3);
    attr(t, "base", 10000);
    check_case(t);
    t = new_case("linear"); /* 10M multiply-adds: above gemm.c's threshold for a second thread */
    input(t, MT_DIMS(300, 257), K_NONZERO, 0);
    input(t, MT_DIMS(130, 257), K_NONZERO, 0);
    input(t, MT_DIMS(130), K_NONZERO, 0);
    check_case(t);
}

static void test_attention(void **state) {
    (void)state;
    for (int variant = 0; variant < 3; variant++) {
        tcase *t = new_case("attention");
        int64_t Hk = variant == 2 ? 1 : 4;
        input(t, MT_DIMS(2, 4, 65, 32), K_NONZERO, 0);
        input(t, 4, (const int64_t[]){2, Hk, 70, 32}, K_NONZERO, 0);
        input(t, 4, (const int64_t[]){2, Hk, 70, 24}, K_NONZERO, 0);
        if (variant == 1) input(t, MT_DIMS(2, 1, 65, 70), K_ADDMASK, 70);
        attr(t, "causal", variant != 1);
        attr(t, "scale", 0.17);
        check_case(t);
    }
}

static void test_layout(void **state) {
    (void)state;
    tcase *t = new_case("permute");
    input(t, MT_DIMS(33, 40, 65), K_NONZERO, 0);
    attr(t, "p0", 2);
    attr(t, "p1", 0);
    attr(t, "p2", 1);
    check_case(t);
    t = new_case("narrow");
    input(t, MT_DIMS(33, 400, 7), K_NONZERO, 0);
    attr(t, "axis", 1);
    attr(t, "start", 17);
    attr(t, "length", 300);
    check_case(t);
    t = new_case("concat");
    input(t, MT_DIMS(130, 200), K_NONZERO, 0);
    input(t, MT_DIMS(130, 77), K_NONZERO, 0);
    attr(t, "axis", 1);
    check_case(t);
}

/* The CPU's row argmax (argmax and max over the last axis) against the scalar definition, first
 * maximum by `x[r] > x[best]`, on adversarial rows: NaN first (it stays) and elsewhere (never wins),
 * ties (the first), -0 and +0 (equal: the first), every value -inf, the maximum in the vector part
 * and in the tail, lengths 1 to 40. */
static void test_argmax_rows(void **state) {
    (void)state;
    enum { ROWS = 400, NMAX = 40 };
    static float x[ROWS * NMAX];
    uint64_t s = 99;
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 1), MT_OK);
    for (int64_t n = 1; n <= NMAX; n++) {
        for (int r = 0; r < ROWS; r++) {
            float *row = x + r * n;
            for (int64_t j = 0; j < n; j++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                row[j] = (float)((s >> 40) % 7) - 3.0f; /* small integers: many ties */
            }
            switch (r % 8) {
            case 1: row[0] = NAN; break;
            case 2: row[(r / 8) % n] = NAN; break;
            case 3: for (int64_t j = 0; j < n; j++) row[j] = (j & 1) ? 0.0f : -0.0f; break;
            case 4: for (int64_t j = 0; j < n; j++) row[j] = -INFINITY; break;
            case 5: row[n - 1] = 9.0f; break;
            default: break;
            }
        }
        int32_t am[ROWS], ai[ROWS];
        float mx[ROWS];
        mt_reduce_desc rd = {.ndim = 2, .shape = {ROWS, n}, .axes = 2u, .n_out = ROWS, .n_red = n};
        assert_int_equal(mt_cpu_argmax(&ctx->ex, am, x, ROWS, n, 1), MT_OK);
        assert_int_equal(mt_cpu_reduce_fwd(&ctx->ex, MT_REDUCE_MAX, mx, ai, x, &rd, 0), MT_OK);
        for (int r = 0; r < ROWS; r++) {
            const float *row = x + r * n;
            int64_t best = 0;
            for (int64_t j = 1; j < n; j++)
                if (row[j] > row[best]) best = j;
            if (am[r] != best || ai[r] != r * n + best || memcmp(&mx[r], &row[best], sizeof(float)))
                fail_msg("row %d of length %lld: argmax %d, max index %d, max %g; want %lld, %g", r, (long long)n,
                         am[r], ai[r], (double)mx[r], (long long)best, (double)row[best]);
        }
    }
    mt_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elementwise), cmocka_unit_test(test_dropout), cmocka_unit_test(test_dropout_stream),
        cmocka_unit_test(test_reductions),  cmocka_unit_test(test_nn),      cmocka_unit_test(test_attention),
        cmocka_unit_test(test_layout),      cmocka_unit_test(test_optimizer_multi), cmocka_unit_test(test_argmax_rows),
    };
    return cmocka_run_group_tests_name("ops_threads", tests, NULL, NULL);
}
