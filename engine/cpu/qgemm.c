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
 * Saturation: without VNNI, x86 multiplies u8 x s8 pairs with VPMADDUBSW, which saturates a pair sum
 * at 32767 (255 * 127 * 2 would overflow). There the activations use 7 bits (qmax 63, off 64, so a
 * pair is at most 127 * 127 * 2 = 32258): exact again, at the cost of one bit of activation precision.
 *
 * Threads: oneDNN threads the product itself with the context's thread count (as gemm.c's serial
 * case, the OpenMP default is set around the call); the quantization and rescaling loops are split
 * over rows. Deterministic for a thread count (int32 sums are exact).
 */
#include <math.h>
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

mt_status mt_cpu_qlinear(mt_exec *ex, int64_t R, const float *x, const mt_qweight *w, const float *bias, float *y,
                         void *work) {
    int64_t N = w->n, K = w->k;
    int qmax = act_qmax(), off = qmax + 1;
    uint8_t *u = work;
    float *sx = (float *)((char *)work + (((size_t)(R * K) + 63) & ~(size_t)63));
    int32_t *c = (int32_t *)(sx + R), *co = c + R * N;
    int nt = mt_cpu_threads(ex);
    if (nt > 1 && R * K < MT_CPU_PAR_MIN) nt = 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < R; r++) {
        int8_t *q = (int8_t *)(u + r * K);
        sx[r] = mt_quantize_row(x + r * K, K, qmax, q);
        for (int64_t j = 0; j < K; j++) u[r * K + j] = (uint8_t)(q[j] + off);
    }
    for (int64_t i = 0; i < N; i++) co[i] = -off * w->qsum[i];
    int saved = omp_get_max_threads(), tt = mt_cpu_threads(ex);
    if (!omp_in_parallel()) omp_set_num_threads(tt);
    dnnl_status_t s = dnnl_gemm_u8s8s32('N', 'T', 'R', R, N, K, 1.0f, u, K, 0, w->q, K, 0, 0.0f, c, N, co);
    if (!omp_in_parallel()) omp_set_num_threads(saved);
    if (s != dnnl_success)
        return mt_error(s == dnnl_out_of_memory ? MT_ERR_NOMEM : MT_ERR_INTERNAL,
                        "qlinear: dnnl_gemm_u8s8s32(M=%lld, N=%lld, K=%lld) failed with oneDNN status %d",
                        (long long)R, (long long)N, (long long)K, (int)s);
    nt = mt_cpu_threads(ex);
    if (nt > 1 && R * N < MT_CPU_PAR_MIN) nt = 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < R; r++) {
        float a = sx[r];
        const int32_t *cr = c + r * N;
        float *yr = y + r * N;
        for (int64_t i = 0; i < N; i++) yr[i] = (float)cr[i] * a * w->scale[i] + (bias ? bias[i] : 0.0f);
    }
    return MT_OK;
}
