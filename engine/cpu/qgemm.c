/*
 * qgemm.c — the CPU int8 linear layer: y = x W^T (+ b) with W (n, k) quantized per output channel
 * (core/quant.h) and each row of x quantized at run time, the products in oneDNN's
 * dnnl_gemm_u8s8s32 (JIT kernels for the CPU's ISA: VPDPBUSD where it has VNNI), rescaled in f32:
 *
 *   x[r, :] ~ sx[r] qx[r, :]      W[i, :] ~ sw[i] qw[i, :]
 *   y[r, i] = sx[r] sw[i] sum_j qx[r, j] qw[i, j] + b[i]
 *
 * oneDNN's int8 GEMM takes unsigned activations: it gets u = qx + off (off = 128), and the offset
 * comes back out through its per-column C offset, -off * sum_j qw[i, j] (qweight.qsum).
 *
 * At most QGEMV_MAX_ROWS rows (decoding at batch 1) on a CPU with AVX-512 VNNI, gemv_vnni replaces
 * oneDNN (same exact int32 sums, without oneDNN's per-call packing of the weight).
 *
 * Saturation: without VNNI, x86 multiplies u8 x s8 pairs with VPMADDUBSW, which saturates a pair sum
 * at 32767 (255 * 127 * 2 would overflow). There the activations use 7 bits (qmax 63, off 64, so a
 * pair is at most 127 * 127 * 2 = 32258): exact again, at the cost of one bit of activation precision.
 *
 * Threads: one OpenMP region per product (each region costs a fork/join, dear on a busy machine):
 * the rows are quantized first on the calling thread (R x K, small next to the product), then each
 * thread multiplies and rescales a slice of whole tiles of output columns with a single-threaded
 * oneDNN call (inside a parallel region oneDNN runs on the calling thread). Exact int32 sums: the
 * result does not depend on the thread count.
 */
#include <math.h>
#include <immintrin.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include "core/error.h"
#include "core/quant.h"
#include "cpu/cpu.h"

/* The activations' qmax: 127 where the CPU multiplies u8 x s8 without saturating (VNNI), else 63. */
static int act_qmax(void) {
    static int q;
    if (!q) {
        dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
        int vnni = (isa & dnnl_cpu_isa_avx512_core_vnni) == dnnl_cpu_isa_avx512_core_vnni ||
                   (isa & dnnl_cpu_isa_avx2_vnni) == dnnl_cpu_isa_avx2_vnni;
        q = vnni ? 127 : 63;
    }
    return q;
}

int mt_cpu_qlinear_act_qmax(void) { return act_qmax(); }

/* Below this many multiply-adds a product runs on one thread; column slices are multiples of this. */
#define QGEMM_PAR_MIN (1 << 18)
#define QGEMM_ALIGN 64

/* Up to this many rows, a CPU with AVX-512 VNNI runs the product in gemv_vnni below. */
#define QGEMV_MAX_ROWS 4

static int has_avx512_vnni(void) {
    static int v = -1;
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vnni");
    }
    return v;
}

/* c[r, i] = sum_j u[r, j] q[i, j] + co[i] for rows r < R <= QGEMV_MAX_ROWS and columns n0..n1: each
 * weight row is read once from memory and used for every activation row (VPDPBUSD, 64 bytes a step,
 * the tail of K masked). oneDNN's int8 GEMM packs the whole weight into its own layout on every call,
 * which is most of the time of a decoding step's small-M products (the output projection at batch 1:
 * 8000 x 256 bytes packed to produce 8000 numbers). */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void gemv_vnni(int64_t R, int64_t K, int64_t N,
                                                                             int64_t n0, int64_t n1,
                                                                             const uint8_t *u, const int8_t *q,
                                                                             const int32_t *co, int32_t *c) {
    __mmask64 tail = (K % 64) ? (~(__mmask64)0 >> (64 - K % 64)) : ~(__mmask64)0;
    int64_t kfull = K - (K % 64 ? K % 64 : 64);
    for (int64_t i = n0; i < n1; i++) {
        const int8_t *w = q + i * K;
        __m512i acc[QGEMV_MAX_ROWS];
        for (int64_t r = 0; r < R; r++) acc[r] = _mm512_setzero_si512();
        for (int64_t j = 0; j < kfull; j += 64) {
            __m512i wv = _mm512_loadu_si512((const void *)(w + j));
            for (int64_t r = 0; r < R; r++)
                acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_loadu_si512((const void *)(u + r * K + j)), wv);
        }
        __m512i wv = _mm512_maskz_loadu_epi8(tail, w + kfull);
        for (int64_t r = 0; r < R; r++) {
            acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_maskz_loadu_epi8(tail, u + r * K + kfull), wv);
            c[r * N + i] = _mm512_reduce_add_epi32(acc[r]) + co[i];
        }
    }
}

/* Output columns n0..n1 of y: the int8 product on the calling thread, then the rescaling. */
static dnnl_status_t qlinear_cols(int64_t R, int64_t K, int64_t N, int64_t n0, int64_t n1, const uint8_t *u,
                                  const float *sx, const mt_qweight *w, const float *bias, int32_t *c, int32_t *co,
                                  float *y) {
    int64_t n = n1 - n0;
    if (R <= QGEMV_MAX_ROWS && has_avx512_vnni()) {
        gemv_vnni(R, K, N, n0, n1, u, w->q, co, c);
    } else {
        dnnl_status_t s = dnnl_gemm_u8s8s32('N', 'T', 'R', R, n, K, 1.0f, u, K, 0, w->q + n0 * K, K, 0, 0.0f, c + n0,
                                            N, co + n0);
        if (s != dnnl_success) return s;
    }
    for (int64_t r = 0; r < R; r++) {
        float a = sx[r];
        const int32_t *cr = c + r * N;
        float *yr = y + r * N;
        for (int64_t i = n0; i < n1; i++) yr[i] = (float)cr[i] * a * w->scale[i] + (bias ? bias[i] : 0.0f);
    }
    return dnnl_success;
}

mt_status mt_cpu_qlinear(mt_exec *ex, int64_t R, const float *x, const mt_qweight *w, const float *bias, float *y,
                         void *work) {
    int64_t N = w->n, K = w->k;
    int qmax = act_qmax(), off = qmax + 1;
    uint8_t *u = work;
    float *sx = (float *)((char *)work + (((size_t)(R * K) + 63) & ~(size_t)63));
    int32_t *c = (int32_t *)(sx + R), *co = c + R * N;
    /* The rows' quantization (R x K, small next to the product) on this thread. */
    for (int64_t r = 0; r < R; r++) {
        int8_t *q = (int8_t *)(u + r * K);
        sx[r] = mt_quantize_row(x + r * K, K, qmax, q);
        for (int64_t j = 0; j < K; j++) u[r * K + j] = (uint8_t)(q[j] + off);
    }
    for (int64_t i = 0; i < N; i++) co[i] = -off * w->qsum[i];
    /* One parallel region: each thread a slice of whole tiles of output columns (as gemm.c). */
    int nt = mt_cpu_threads(ex);
    int64_t tiles = (N + QGEMM_ALIGN - 1) / QGEMM_ALIGN;
    if (R * N * K < QGEMM_PAR_MIN) nt = 1;
    if (tiles < nt) nt = (int)tiles;
    dnnl_status_t err = dnnl_success;
    if (nt <= 1 && !omp_in_parallel()) {
        int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        err = qlinear_cols(R, K, N, 0, N, u, sx, w, bias, c, co, y);
        omp_set_num_threads(saved);
    } else if (nt <= 1) {
        err = qlinear_cols(R, K, N, 0, N, u, sx, w, bias, c, co, y);
    } else {
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), n = omp_get_num_threads();
            int64_t n0 = tiles * t / n * QGEMM_ALIGN, n1 = tiles * (t + 1) / n * QGEMM_ALIGN;
            if (n1 > N) n1 = N;
            dnnl_status_t s = n1 > n0 ? qlinear_cols(R, K, N, n0, n1, u, sx, w, bias, c, co, y) : dnnl_success;
            if (s != dnnl_success) {
#pragma omp atomic write
                err = s;
            }
        }
    }
    if (err != dnnl_success)
        return mt_error(err == dnnl_out_of_memory ? MT_ERR_NOMEM : MT_ERR_INTERNAL,
                        "qlinear: dnnl_gemm_u8s8s32(M=%lld, N=%lld, K=%lld) failed with oneDNN status %d",
                        (long long)R, (long long)N, (long long)K, (int)err);
    return MT_OK;
}
