/*
 * test_gpu_precision.c — the op layer's mixed-precision GEMM dispatch (engine/ops/precision.c,
 * matmul.c), checked on the CPU so it runs on every machine: a copy of the CPU backend's table gets a
 * reference gemm_lowp (operands converted back to f32, then sgemm) standing in for cuBLAS.
 *
 * In bf16 mode a product must equal the f32 product of the bf16-rounded operands (products of bf16
 * values are exact in f32; only the accumulation could differ, and here it is the same sgemm), in the
 * forward and in the backward (where the output gradient is rounded too: the test picks gradients
 * that bf16 represents exactly). Also: the casts are kept on the tape, bf16 weights work in any
 * precision, f16 likewise, contexts that cannot do it say so, and the weights cast once per step
 * (mt_cast_weights) give the same products as a cast per use.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "core/autograd.h"
#include "ops/ops_internal.h"

static mt_backend g_lowp_backend;

/* Elements of an operand span: batch items at stride (0 = one shared matrix) of rows x ld. */
static int64_t span(int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t batch) {
    int64_t one = (rows - 1) * ld + cols;
    return stride == 0 ? one : (batch - 1) * stride + one;
}

static mt_status ref_gemm_lowp(mt_exec *ex, mt_dtype ab, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                               const void *A, int64_t lda, int64_t stride_a, const void *B, int64_t ldb,
                               int64_t stride_b, float beta, float *C, int64_t ldc, int64_t stride_c, int64_t batch) {
    if (ab != MT_DTYPE_BF16 && ab != MT_DTYPE_F16) return mt_error(MT_ERR_DTYPE, "ref gemm_lowp: dtype %d", (int)ab);
    int64_t na = span(ta ? K : M, ta ? M : K, lda, stride_a, batch), nb = span(tb ? N : K, tb ? K : N, ldb, stride_b, batch);
    float *a = malloc(sizeof(float) * (size_t)na), *b = malloc(sizeof(float) * (size_t)nb);
    if (!a || !b) return MT_ERR_NOMEM;
    mt_cpu_backend.cast(ex, a, MT_DTYPE_F32, A, ab, na);
    mt_cpu_backend.cast(ex, b, MT_DTYPE_F32, B, ab, nb);
    mt_status st = mt_cpu_backend.gemm(ex, ta, tb, M, N, K, alpha, a, lda, stride_a, b, ldb, stride_b, beta, C, ldc,
                                       stride_c, batch);
    free(a);
    free(b);
    return st;
}

/* Per-tensor casts made through the table (counted), and the reference multi-tensor cast. */
static int g_casts, g_cast_multis;

static mt_status counting_cast(mt_exec *ex, void *out, mt_dtype to, const void *in, mt_dtype from, int64_t n) {
    g_casts++;
    return mt_cpu_backend.cast(ex, out, to, in, from, n);
}

static mt_status ref_cast_multi(mt_exec *ex, const mt_cast_slot *slots, int n, mt_dtype dt) {
    g_cast_multis++;
    for (int i = 0; i < n; i++) MT_TRY(mt_cpu_backend.cast(ex, slots[i].dst, dt, slots[i].src, MT_DTYPE_F32, slots[i].n));
    return MT_OK;
}

/* The f32 entry in a bf16/f16 context rounds its operands first (core/backend.h; cuBLAS's _FAST_16BF). */
static mt_status ref_gemm(mt_exec *ex, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                          int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b, float beta,
                          float *C, int64_t ldc, int64_t stride_c, int64_t batch) {
    mt_dtype dt = ex->precision == MT_PRECISION_BF16 ? MT_DTYPE_BF16 : ex->precision == MT_PRECISION_F16 ? MT_DTYPE_F16
                                                                                                           : MT_DTYPE_F32;
    if (dt == MT_DTYPE_F32)
        return mt_cpu_backend.gemm(ex, ta, tb, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc,
                                   stride_c, batch);
    int64_t na = span(ta ? K : M, ta ? M : K, lda, stride_a, batch), nb = span(tb ? N : K, tb ? K : N, ldb, stride_b, batch);
    uint16_t *a = malloc(2 * (size_t)na), *b = malloc(2 * (size_t)nb);
    if (!a || !b) return MT_ERR_NOMEM;
    mt_cpu_backend.cast(ex, a, dt, A, MT_DTYPE_F32, na);
    mt_cpu_backend.cast(ex, b, dt, B, MT_DTYPE_F32, nb);
    mt_status st = ref_gemm_lowp(ex, dt, ta, tb, M, N, K, alpha, a, lda, stride_a, b, ldb, stride_b, beta, C, ldc,
                                 stride_c, batch);
    free(a);
    free(b);
    return st;
}

static mt_context *lowp_ctx(void) {
    mt_context *ctx = NULL;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 2), MT_OK);
    g_lowp_backend = mt_cpu_backend;
    g_lowp_backend.name = "cpu+reference-lowp";
    g_lowp_backend.gemm_lowp = ref_gemm_lowp;
    g_lowp_backend.gemm = ref_gemm;
    g_lowp_backend.cast = counting_cast;
    g_lowp_backend.cast_multi = ref_cast_multi;
    ctx->ex.backend = &g_lowp_backend;
    return ctx;
}

static uint64_t rs = 12345;
static float frand(void) {
    rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rs >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

static float *randv(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

/* x rounded to dt and back (the CPU backend's conversion). */
static void round_to(float *x, int64_t n, mt_dtype dt) {
    uint16_t *h = malloc(2 * (size_t)n);
    mt_exec ex = {0};
    ex.n_threads = 1;
    mt_cpu_backend.cast(&ex, h, dt, x, MT_DTYPE_F32, n);
    mt_cpu_backend.cast(&ex, x, MT_DTYPE_F32, h, dt, n);
    free(h);
}

static void expect_close(const float *got, const float *want, int64_t n, double tol, const char *what) {
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (d > tol * (1.0 + fabs((double)want[i]))) {
            fail_msg("%s: element %lld: %.9g vs %.9g", what, (long long)i, got[i], want[i]);
        }
    }
}

static mt_tensor *leaf(mt_context *ctx, int ndim, const int64_t *shape, const float *data) {
    mt_tensor *t = mt_from_data(ctx, MT_DTYPE_F32, ndim, shape, data);
    assert_non_null(t);
    t->flags |= MT_TENSOR_REQUIRES_GRAD;
    return t;
}

static void read_all(mt_context *ctx, const mt_tensor *t, float *out) {
    assert_non_null(t);
    assert_int_equal(mt_copy_to_host(ctx, t, out, mt_tensor_bytes(t)), MT_OK);
}

/* y = linear(x, w, b); loss = sum(y * c) with c exact in bf16: returns y, dx, dw, db. */
static void run_linear(mt_context *ctx, const float *x, const float *w, const float *b, const float *c, int64_t R,
                       int64_t K, int64_t N, float *y, float *dx, float *dw, float *db) {
    mt_tensor *tx = leaf(ctx, 2, (int64_t[]){R, K}, x), *tw = leaf(ctx, 2, (int64_t[]){N, K}, w);
    mt_tensor *tb = leaf(ctx, 1, (int64_t[]){N}, b), *tc = mt_from_data(ctx, MT_DTYPE_F32, 2, (int64_t[]){R, N}, c);
    mt_tensor *ty = mt_linear(ctx, tx, tw, tb);
    mt_tensor *loss = mt_sum(ctx, mt_mul(ctx, ty, tc), NULL, 0, 0);
    assert_non_null(loss);
    assert_int_equal(mt_backward(ctx, loss, NULL), MT_OK);
    read_all(ctx, ty, y);
    read_all(ctx, tx->grad, dx);
    read_all(ctx, tw->grad, dw);
    read_all(ctx, tb->grad, db);
}

static void test_cpu_refuses_lowp(void **state) {
    (void)state;
    mt_context *ctx = NULL;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 1), MT_OK);
    assert_int_equal(mt_context_set_precision(ctx, MT_PRECISION_BF16), MT_ERR_UNSUPPORTED);
    assert_non_null(strstr(mt_last_error(), "CUDA"));
    assert_int_equal(mt_context_set_precision(ctx, MT_PRECISION_F16), MT_ERR_UNSUPPORTED);
    assert_int_equal(mt_context_set_precision(ctx, MT_PRECISION_TF32), MT_OK);
    assert_int_equal(mt_context_precision(ctx), MT_PRECISION_TF32);
    assert_int_equal(mt_context_set_precision(ctx, (mt_precision)9), MT_ERR_INVALID_ARG);
    assert_int_equal(mt_context_set_precision(ctx, MT_PRECISION_F32), MT_OK);
    /* A bf16 operand on a backend without gemm_lowp is a dtype error naming the op. */
    float d[6] = {1, 2, 3, 4, 5, 6};
    mt_tensor *a = mt_from_data(ctx, MT_DTYPE_F32, 2, (int64_t[]){2, 3}, d);
    mt_tensor *ab = mt_cast(ctx, a, MT_DTYPE_BF16);
    assert_non_null(ab);
    assert_null(mt_matmul(ctx, a, ab, 0, 1));
    assert_int_equal(ctx->status, MT_ERR_DTYPE);
    assert_non_null(strstr(mt_last_error(), "matmul"));
    mt_context_free(ctx);
}

static void linear_case(mt_dtype dt, int64_t R, int64_t K, int64_t N) {
    float *x = randv(R * K), *w = randv(N * K), *b = randv(N), *c = randv(R * N);
    for (int64_t i = 0; i < R * N; i++) c[i] = roundf(c[i] * 8.0f) / 8.0f; /* exact in bf16 and f16 */
    float *y = malloc(4 * (size_t)(R * N)), *dx = malloc(4 * (size_t)(R * K)), *dw = malloc(4 * (size_t)(N * K)),
          *db = malloc(4 * (size_t)N);
    float *ry = malloc(4 * (size_t)(R * N)), *rdx = malloc(4 * (size_t)(R * K)), *rdw = malloc(4 * (size_t)(N * K)),
          *rdb = malloc(4 * (size_t)N);
    /* mixed precision */
    mt_context *ctx = lowp_ctx();
    assert_int_equal(mt_context_set_precision(ctx, dt == MT_DTYPE_BF16 ? MT_PRECISION_BF16 : MT_PRECISION_F16), MT_OK);
    run_linear(ctx, x, w, b, c, R, K, N, y, dx, dw, db);
    /* the tape kept the low-precision casts of x and w */
    mt_node *lin = NULL;
    for (int32_t i = 0; i < ctx->n_nodes; i++)
        if (strcmp(ctx->tape[i].op, "linear") == 0) lin = &ctx->tape[i];
    assert_non_null(lin);
    assert_non_null(lin->saved[0]);
    assert_non_null(lin->saved[1]);
    assert_int_equal(lin->saved[0]->dtype, dt);
    assert_int_equal(lin->saved[1]->dtype, dt);
    mt_context_free(ctx);
    /* reference: f32 on the rounded operands */
    float *xr = malloc(4 * (size_t)(R * K)), *wr = malloc(4 * (size_t)(N * K));
    memcpy(xr, x, 4 * (size_t)(R * K));
    memcpy(wr, w, 4 * (size_t)(N * K));
    round_to(xr, R * K, dt);
    round_to(wr, N * K, dt);
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 2), MT_OK);
    run_linear(ctx, xr, wr, b, c, R, K, N, ry, rdx, rdw, rdb);
    mt_context_free(ctx);
    expect_close(y, ry, R * N, 1e-5, "linear y");
    expect_close(dx, rdx, R * K, 1e-5, "linear dx");
    expect_close(dw, rdw, N * K, 1e-5, "linear dw");
    expect_close(db, rdb, N, 1e-5, "linear db");
    /* and it is a bf16 computation: far from exact f32 on the unrounded operands */
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 2), MT_OK);
    run_linear(ctx, x, w, b, c, R, K, N, ry, rdx, rdw, rdb);
    mt_context_free(ctx);
    double diff = 0;
    for (int64_t i = 0; i < R * N; i++) diff = fmax(diff, fabs(y[i] - ry[i]));
    if (K >= 16) assert_true(diff > 1e-5);
    assert_true(diff < (dt == MT_DTYPE_BF16 ? 0.1 : 0.01) * sqrt((double)K));
    free(x), free(w), free(b), free(c), free(y), free(dx), free(dw), free(db);
    free(ry), free(rdx), free(rdw), free(rdb), free(xr), free(wr);
}

static void test_linear_bf16(void **state) {
    (void)state;
    linear_case(MT_DTYPE_BF16, 1, 1, 1);
    linear_case(MT_DTYPE_BF16, 37, 64, 19);
    linear_case(MT_DTYPE_BF16, 128, 33, 130);
}

static void test_linear_f16(void **state) {
    (void)state;
    linear_case(MT_DTYPE_F16, 29, 48, 17);
}

/* Batched matmul with broadcast batch dims and transposes, forward and backward. */
static void matmul_run(mt_context *ctx, const float *a, const float *b, int ta, int tb, float *y, float *da, float *db,
                       const float *c) {
    mt_tensor *A = leaf(ctx, 4, (int64_t[]){2, 3, ta ? 9 : 5, ta ? 5 : 9}, a);
    mt_tensor *B = leaf(ctx, 3, (int64_t[]){1, tb ? 7 : 9, tb ? 9 : 7}, b);
    mt_tensor *Y = mt_matmul(ctx, A, B, ta, tb);
    mt_tensor *C = mt_from_data(ctx, MT_DTYPE_F32, 4, (int64_t[]){2, 3, 5, 7}, c);
    mt_tensor *loss = mt_sum(ctx, mt_mul(ctx, Y, C), NULL, 0, 0);
    assert_non_null(loss);
    assert_int_equal(mt_backward(ctx, loss, NULL), MT_OK);
    read_all(ctx, Y, y);
    read_all(ctx, A->grad, da);
    read_all(ctx, B->grad, db);
}

static void test_matmul_bf16(void **state) {
    (void)state;
    for (int t = 0; t < 4; t++) {
        int ta = t & 1, tb = t >> 1;
        int64_t na = 2 * 3 * 5 * 9, nb = 9 * 7, ny = 2 * 3 * 5 * 7;
        float *a = randv(na), *b = randv(nb), *c = randv(ny);
        for (int64_t i = 0; i < ny; i++) c[i] = roundf(c[i] * 4.0f) / 4.0f;
        float y[210], da[270], db[63], ry[210], rda[270], rdb[63];
        mt_context *ctx = lowp_ctx();
        assert_int_equal(mt_context_set_precision(ctx, MT_PRECISION_BF16), MT_OK);
        matmul_run(ctx, a, b, ta, tb, y, da, db, c);
        mt_context_free(ctx);
        round_to(a, na, MT_DTYPE_BF16);
        round_to(b, nb, MT_DTYPE_BF16);
        assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 2), MT_OK);
        matmul_run(ctx, a, b, ta, tb, ry, rda, rdb, c);
        mt_context_free(ctx);
        expect_close(y, ry, ny, 1e-5, "matmul y");
        expect_close(da, rda, na, 1e-5, "matmul da");
        expect_close(db, rdb, nb, 1e-5, "matmul db");
        free(a), free(b), free(c);
    }
}

/* A bf16 weight (inference) in an f32-precision context: x is cast to the weight's dtype. */
static void test_bf16_weight(void **state) {
    (void)state;
    int64_t R = 6, K = 40, N = 11;
    float *x = randv(R * K), *w = randv(N * K), y[66], ry[66];
    mt_context *ctx = lowp_ctx();
    mt_tensor *tw = mt_from_data(ctx, MT_DTYPE_F32, 2, (int64_t[]){N, K}, w);
    mt_tensor *wb = mt_cast(ctx, tw, MT_DTYPE_BF16);
    mt_tensor *tx = mt_from_data(ctx, MT_DTYPE_F32, 2, (int64_t[]){R, K}, x);
    read_all(ctx, mt_linear(ctx, tx, wb, NULL), y);
    /* mixed low-precision dtypes are refused */
    mt_tensor *xh = mt_cast(ctx, tx, MT_DTYPE_F16);
    assert_null(mt_linear(ctx, xh, wb, NULL));
    assert_int_equal(ctx->status, MT_ERR_DTYPE);
    mt_context_free(ctx);
    round_to(x, R * K, MT_DTYPE_BF16);
    round_to(w, N * K, MT_DTYPE_BF16);
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 2), MT_OK);
    tw = mt_from_data(ctx, MT_DTYPE_F32, 2, (int64_t[]){N, K}, w);
    tx = mt_from_data(ctx, MT_DTYPE_F32, 2, (int64_t[]){R, K}, x);
    read_all(ctx, mt_linear(ctx, tx, tw, NULL), ry);
    mt_context_free(ctx);
    expect_close(y, ry, R * N, 1e-5, "bf16 weight");
    free(x), free(w);
}

/* F32 precision through the lowp-capable backend is still plain f32 (no cast on the tape). */
static void test_f32_unchanged(void **state) {
    (void)state;
    mt_context *ctx = lowp_ctx();
    float x[12], w[6];
    for (int i = 0; i < 12; i++) x[i] = frand();
    for (int i = 0; i < 6; i++) w[i] = frand();
    mt_tensor *tx = leaf(ctx, 2, (int64_t[]){4, 3}, x), *tw = leaf(ctx, 2, (int64_t[]){2, 3}, w);
    assert_non_null(mt_linear(ctx, tx, tw, NULL));
    assert_int_equal(ctx->n_nodes, 1);
    assert_null(ctx->tape[0].saved[0]);
    assert_null(ctx->tape[0].saved[1]);
    assert_int_equal(ctx->tape[0].i[3], MT_DTYPE_F32);
    mt_context_free(ctx);
}

/* The weights cast once per step (mt_cast_weights) and an input read by two products cast once: the
 * same products as casting at every use, one multi-tensor launch and one activation cast instead of
 * four casts; the copies are dropped when a weight is written and at the next reset. */
static void test_weights_cast_once(void **state) {
    (void)state;
    enum { R = 5, K = 6, N = 4 };
    float x[R * K], w[2][N * K], want[2][R * N], got[R * N];
    for (int i = 0; i < R * K; i++) x[i] = frand();
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < N * K; i++) w[j][i] = frand();
    mt_tensor *tw[2];
    for (int pass = 0; pass < 2; pass++) { /* 0: a cast per use (the reference), 1: the weights cast once */
        mt_context *ctx = lowp_ctx();
        assert_int_equal(mt_context_set_precision(ctx, MT_PRECISION_BF16), MT_OK);
        for (int j = 0; j < 2; j++) {
            assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, 2, (int64_t[]){N, K}, "w", &tw[j]),
                             MT_OK);
            assert_int_equal(mt_copy_from_host(ctx, tw[j], w[j], sizeof w[j]), MT_OK);
            tw[j]->flags |= MT_TENSOR_REQUIRES_GRAD;
        }
        g_casts = g_cast_multis = 0;
        if (pass == 1) {
            assert_int_equal(mt_cast_weights(ctx, tw, 2), MT_OK);
            assert_int_equal(g_cast_multis, 1);
            assert_non_null(mt_weight_lowp(ctx, tw[0]));
            assert_int_equal(mt_weight_lowp(ctx, tw[1])->dtype, MT_DTYPE_BF16);
        }
        mt_tensor *h = mt_relu(ctx, leaf(ctx, 2, (int64_t[]){R, K}, x)); /* an op result read twice */
        for (int j = 0; j < 2; j++) {
            mt_tensor *y = mt_linear(ctx, h, tw[j], NULL);
            read_all(ctx, y, pass ? got : want[j]);
            if (pass) {
                for (int i = 0; i < R * N; i++) assert_true(got[i] == want[j][i]); /* the same bits */
                assert_ptr_equal(ctx->tape[ctx->n_nodes - 1].saved[1], mt_weight_lowp(ctx, tw[j]));
            }
        }
        assert_int_equal(g_casts, pass ? 1 : 3); /* h once, and the weights once each without the copies */
        if (pass) {
            assert_int_equal(mt_fill(ctx, tw[0], 0.5f), MT_OK); /* a write drops the copy */
            assert_null(mt_weight_lowp(ctx, tw[0]));
            assert_non_null(mt_weight_lowp(ctx, tw[1]));
            assert_int_equal(mt_context_reset(ctx), MT_OK); /* so does a reset */
            assert_null(mt_weight_lowp(ctx, tw[1]));
        }
        for (int j = 0; j < 2; j++) mt_tensor_free(tw[j]);
        mt_context_free(ctx);
    }
    /* f32: nothing to cast. */
    mt_context *ctx = lowp_ctx();
    g_cast_multis = 0;
    mt_tensor *none[2] = {NULL, NULL};
    assert_int_equal(mt_cast_weights(ctx, none, 2), MT_OK);
    assert_int_equal(g_cast_multis, 0);
    mt_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_refuses_lowp), cmocka_unit_test(test_linear_bf16), cmocka_unit_test(test_linear_f16),
        cmocka_unit_test(test_matmul_bf16),      cmocka_unit_test(test_bf16_weight), cmocka_unit_test(test_f32_unchanged),
        cmocka_unit_test(test_weights_cast_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
