/*
 * gemm_libs.c — the machine's GEMM libraries as benchmark anchors (see gemm_libs.h).
 */
#include "gemm_libs.h"

#include <dlfcn.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* CBLAS's enumerators, fixed by the CBLAS standard (both OpenBLAS and BLIS export cblas_sgemm). */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
typedef void (*cblas_sgemm_fn)(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                               const float *B, int ldb, float beta, float *C, int ldc);

typedef enum { LIB_ONEDNN, LIB_OPENBLAS, LIB_BLIS } lib_kind;

typedef struct gemm_lib {
    lib_kind kind;
    char name[128];
    const char *key;
    cblas_sgemm_fn sgemm;         /* OpenBLAS, BLIS */
    void (*set_threads)(int n);   /* OpenBLAS: openblas_set_num_threads */
    void (*set_threads64)(int64_t n); /* BLIS: bli_thread_set_num_threads (dim_t) */
} gemm_lib;

static gemm_lib libs[MTB_GEMM_LIBS_MAX];
static int n_libs = -1;

static void add_openblas(void) {
    void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!h) return;
    gemm_lib *l = &libs[n_libs];
    l->sgemm = (cblas_sgemm_fn)dlsym(h, "cblas_sgemm");
    l->set_threads = (void (*)(int))dlsym(h, "openblas_set_num_threads");
    char *(*core)(void) = (char *(*)(void))dlsym(h, "openblas_get_corename");
    char *(*config)(void) = (char *(*)(void))dlsym(h, "openblas_get_config");
    if (!l->sgemm || !l->set_threads) return;
    snprintf(l->name, sizeof l->name, "OpenBLAS (%s; core %s)", config ? config() : "?", core ? core() : "?");
    l->kind = LIB_OPENBLAS;
    l->key = "openblas";
    n_libs++;
}

static void add_blis(void) {
    void *h = dlopen("libblis.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) return;
    gemm_lib *l = &libs[n_libs];
    l->sgemm = (cblas_sgemm_fn)dlsym(h, "cblas_sgemm");
    l->set_threads64 = (void (*)(int64_t))dlsym(h, "bli_thread_set_num_threads");
    const char *(*ver)(void) = (const char *(*)(void))dlsym(h, "bli_info_get_version_str");
    int (*arch_id)(void) = (int (*)(void))dlsym(h, "bli_arch_query_id");
    const char *(*arch_str)(int) = (const char *(*)(int))dlsym(h, "bli_arch_string");
    if (!l->sgemm || !l->set_threads64) return;
    snprintf(l->name, sizeof l->name, "BLIS %s (kernels %s)", ver ? ver() : "?",
             arch_id && arch_str ? arch_str(arch_id()) : "?");
    l->kind = LIB_BLIS;
    l->key = "blis";
    n_libs++;
}

int mtb_gemm_libs(void) {
    if (n_libs >= 0) return n_libs;
    n_libs = 0;
    const dnnl_version_t *v = dnnl_version();
    gemm_lib *l = &libs[n_libs++];
    l->kind = LIB_ONEDNN;
    l->key = "onednn";
    snprintf(l->name, sizeof l->name, "oneDNN %d.%d.%d (JIT, ISA by cpuid)", v->major, v->minor, v->patch);
    add_openblas();
    add_blis();
    return n_libs;
}

const char *mtb_gemm_lib_name(int i) { return libs[i].name; }
const char *mtb_gemm_lib_key(int i) { return libs[i].key; }

void mtb_gemm_lib_run(int i, int threads, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float *C, int64_t ldc) {
    gemm_lib *l = &libs[i];
    switch (l->kind) {
    case LIB_ONEDNN: {
        int saved = omp_get_max_threads();
        omp_set_num_threads(threads);
        dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
        omp_set_num_threads(saved);
        break;
    }
    case LIB_OPENBLAS:
    case LIB_BLIS:
        if (l->set_threads) l->set_threads(threads);
        else l->set_threads64(threads);
        l->sgemm(CBLAS_ROW_MAJOR, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, tb ? CBLAS_TRANS : CBLAS_NO_TRANS, (int)M, (int)N,
                 (int)K, 1.0f, A, (int)lda, B, (int)ldb, 0.0f, C, (int)ldc);
        break;
    }
}

double mtb_gemm_peak(int threads, double seconds, int *lib) {
    const int64_t n = 2048;
    float *A = malloc(sizeof(float) * (size_t)(n * n)), *B = malloc(sizeof(float) * (size_t)(n * n));
    float *C = malloc(sizeof(float) * (size_t)(n * n));
    if (!A || !B || !C) {
        free(A), free(B), free(C);
        return 0;
    }
    for (int64_t i = 0; i < n * n; i++) A[i] = (float)(i % 17) * 0.01f, B[i] = (float)(i % 13) * 0.01f;
    int k = mtb_gemm_libs();
    double best[MTB_GEMM_LIBS_MAX];
    for (int i = 0; i < k; i++) {
        mtb_gemm_lib_run(i, threads, 0, 0, n, n, n, A, n, B, n, C, n); /* warm */
        best[i] = 1e30;
    }
    /* Interleaved, fastest call of each: on a shared machine the fastest is the one that had the cores. */
    double start = mt_bench_now();
    for (int calls = 0; calls < 2 || mt_bench_now() - start < seconds; calls++)
        for (int i = 0; i < k; i++) {
            double t0 = mt_bench_now();
            mtb_gemm_lib_run(i, threads, 0, 0, n, n, n, A, n, B, n, C, n);
            double dt = mt_bench_now() - t0;
            if (dt < best[i]) best[i] = dt;
        }
    int bi = 0;
    for (int i = 1; i < k; i++)
        if (best[i] < best[bi]) bi = i;
    if (lib) *lib = bi;
    free(A), free(B), free(C);
    return 2.0 * (double)n * (double)n * (double)n / best[bi] * 1e-9;
}
