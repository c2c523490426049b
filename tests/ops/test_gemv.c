/*
 * test_gemv.c — the CPU backend's kernel for products of at most MT_GEMM_SMALL_M rows against a weight
 * stored (N, K) (engine/cpu/gemv.c), reached through mt_cpu_gemm as the op layer calls it.
 *
 * Against a double-precision reference within the f32 rounding bound, on every row count, column
 * counts around the kernel's blocks and the thread split (1, 3, 4, 5, 17, 63, 64, 257, 8000), K around
 * the vector width (1, 7, 8, 15, 16, 17, 256, 1000), leading dimensions wider than the rows, alpha
 * and beta (beta 0 must not read C: it is NaN there), the AVX-512 and the AVX2 kernels (the first
 * where the CPU has it); one and two threads give the same bits; rows not written stay untouched.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cpu/cpu.h"

static uint32_t g_seed = 777;
static float rnd(void) {
    g_seed = g_seed * 1664525u + 1013904223u;
    return (float)((g_seed >> 8) & 0xffff) / 32768.0f - 1.0f;
}

typedef struct prod {
    int64_t M, N, K, lda, ldb, ldc;
    float alpha, beta;
    float *A, *B, *C0; /* C0: C before the product */
} prod;

static prod make(int64_t M, int64_t N, int64_t K, int pad, float alpha, float beta) {
    prod p = {M, N, K, K + pad, K + pad, N + pad, alpha, beta, NULL, NULL, NULL};
    p.A = malloc(sizeof(float) * (size_t)(M * p.lda));
    p.B = malloc(sizeof(float) * (size_t)(N * p.ldb));
    p.C0 = malloc(sizeof(float) * (size_t)(M * p.ldc));
    for (int64_t i = 0; i < M * p.lda; i++) p.A[i] = rnd();
    for (int64_t i = 0; i < N * p.ldb; i++) p.B[i] = rnd();
    for (int64_t i = 0; i < M * p.ldc; i++) p.C0[i] = beta != 0.0f ? rnd() : NAN;
    return p;
}

static void release(prod *p) {
    free(p->A);
    free(p->B);
    free(p->C0);
}

/* C through mt_cpu_gemm (ta = 0, tb = 1, one item) with the given threads; returns a malloc'd copy. */
static float *run(const prod *p, int threads) {
    float *C = malloc(sizeof(float) * (size_t)(p->M * p->ldc));
    memcpy(C, p->C0, sizeof(float) * (size_t)(p->M * p->ldc));
    mt_exec ex = {.backend = &mt_cpu_backend, .device = MT_DEVICE_CPU, .n_threads = threads};
    assert_int_equal(mt_cpu_gemm(&ex, 0, 1, p->M, p->N, p->K, p->alpha, p->A, p->lda, 0, p->B, p->ldb, 0, p->beta, C,
                                 p->ldc, 0, 1),
                     MT_OK);
    return C;
}

static void check(const prod *p, const float *C, const char *path) {
    for (int64_t m = 0; m < p->M; m++) {
        for (int64_t n = 0; n < p->ldc; n++) {
            float got = C[m * p->ldc + n];
            if (n >= p->N) { /* the padding of a row is never written */
                float was = p->C0[m * p->ldc + n];
                if (!(got == was || (isnan(got) && isnan(was))))
                    fail_msg("%s: %lldx%lldx%lld: C[%lld][%lld] (padding) written", path, (long long)p->M,
                             (long long)p->N, (long long)p->K, (long long)m, (long long)n);
                continue;
            }
            double ref = 0, mag = 0;
            for (int64_t k = 0; k < p->K; k++) {
                double t = (double)p->A[m * p->lda + k] * p->B[n * p->ldb + k];
                ref += t;
                mag += fabs(t);
            }
            ref *= p->alpha;
            mag *= fabs(p->alpha);
            if (p->beta != 0.0f) {
                ref += (double)p->beta * p->C0[m * p->ldc + n];
                mag += fabs((double)p->beta * p->C0[m * p->ldc + n]);
            }
            double tol = 1e-6 * (double)(p->K + 2) * mag + 1e-30;
            if (!(fabs(got - ref) <= tol))
                fail_msg("%s: %lldx%lldx%lld alpha %g beta %g: C[%lld][%lld] = %.9g, reference %.9g (tolerance %.3g)",
                         path, (long long)p->M, (long long)p->N, (long long)p->K, p->alpha, p->beta, (long long)m,
                         (long long)n, got, ref, tol);
        }
    }
}

static void sweep(const char *path) {
    static const int64_t Ns[] = {1, 3, 4, 5, 17, 63, 64, 257, 8000};
    static const int64_t Ks[] = {1, 7, 8, 15, 16, 17, 256, 1000};
    for (int64_t M = 1; M <= MT_GEMM_SMALL_M; M++)
        for (size_t i = 0; i < sizeof Ns / sizeof Ns[0]; i++)
            for (size_t j = 0; j < sizeof Ks / sizeof Ks[0]; j++) {
                int64_t N = Ns[i], K = Ks[j];
                if (N * K > 600000 && M > 1 && K != 256) continue; /* the large weights once per K */
                int variant = (int)((M + i + j) % 3);
                float alpha = variant == 2 ? 0.5f : 1.0f, beta = variant == 0 ? 0.0f : (variant == 1 ? 1.0f : -2.0f);
                prod p = make(M, N, K, (int)(j % 2) * 3, alpha, beta);
                float *c1 = run(&p, 1), *c2 = run(&p, 2);
                check(&p, c1, path);
                if (memcmp(c1, c2, sizeof(float) * (size_t)(M * p.ldc)) != 0) {
                    for (int64_t e = 0; e < M * p.ldc; e++)
                        if (memcmp(&c1[e], &c2[e], sizeof(float)) != 0)
                            fail_msg("%s: %lldx%lldx%lld: one thread and two differ at element %lld (%.9g vs %.9g)",
                                     path, (long long)M, (long long)N, (long long)K, (long long)e, c1[e], c2[e]);
                }
                free(c1);
                free(c2);
                release(&p);
            }
}

static void test_avx2(void **state) {
    (void)state;
    int saved = mt_cpu_gemv_avx512;
    mt_cpu_gemv_avx512 = 0;
    sweep("avx2");
    mt_cpu_gemv_avx512 = saved;
}

static void test_native(void **state) {
    (void)state;
    mt_cpu_gemv_avx512 = 1; /* what the CPU reports */
    sweep(__builtin_cpu_supports("avx512f") ? "avx512" : "avx2 (no AVX-512 on this CPU)");
}

/* Rows beyond MT_GEMM_SMALL_M and transposed A take oneDNN's path: the same results within rounding. */
static void test_routing(void **state) {
    (void)state;
    for (int64_t M = MT_GEMM_SMALL_M; M <= MT_GEMM_SMALL_M + 1; M++) {
        prod p = make(M, 300, 256, 0, 1.0f, 0.0f);
        float *c = run(&p, 2);
        check(&p, c, M > MT_GEMM_SMALL_M ? "onednn" : "gemv");
        free(c);
        release(&p);
    }
    mt_exec ex = {.backend = &mt_cpu_backend, .device = MT_DEVICE_CPU, .n_threads = 1};
    float a = 1, b = 1, c = 0;
    assert_int_not_equal(mt_cpu_gemv(&ex, MT_GEMM_SMALL_M + 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1), MT_OK);
    assert_int_not_equal(mt_cpu_gemv(&ex, 0, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1), MT_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_native), cmocka_unit_test(test_avx2),
                                       cmocka_unit_test(test_routing)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
