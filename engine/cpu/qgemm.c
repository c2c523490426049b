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
 * On a CPU with AVX-512 VNNI the product is the engine's own kernel (qkernel) on the weight packed
 * once when it was quantized (mt_qweight.qp), with the rescaling fused per panel of 64 columns; the
 * same exact int32 sums as oneDNN, without its per-call packing of the whole weight, which made most
 * of the time of a decoding step's products with few rows. On a CPU with AMX (Intel Sapphire Rapids
 * and later) products of MT_QAMX_MIN_ROWS rows or more run on its tile unit instead (qlinear_amx:
 * TDPBUSD multiplies a 16 x 64 tile of activations by 64 x 16 weights in one instruction, sixteen
 * times VPDPBUSD's work), on the same packed weight, which is already in the tile layout. Elsewhere
 * dnnl_gemm_u8s8s32.
 *
 * Saturation: without VNNI, x86 multiplies u8 x s8 pairs with VPMADDUBSW, which saturates a pair sum
 * at 32767 (255 * 127 * 2 would overflow). There the activations use 7 bits (qmax 63, off 64, so a
 * pair is at most 127 * 127 * 2 = 32258): exact again, at the cost of one bit of activation precision.
 *
 * Threads: one OpenMP region per product (each region costs a fork/join, dear on a busy machine):
 * the threads quantize slices of the rows, then each multiplies and rescales a slice of whole panels
 * of output columns (oneDNN: a single-threaded call; inside a parallel region oneDNN runs on the
 * calling thread). Exact int32 sums: the result does not depend on the thread count or the kernel.
 */
#include <cpuid.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <immintrin.h>
#include <omp.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
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

int mt_cpu_qlinear_portable;

/* Below this many multiply-adds (about 10 us on one core of the VNNI kernel, ~190 GMAC/s) a product
 * runs on one thread, for the reason of gemm.c's GEMM_PAR_MIN. At 2M instead of 16M the int8 cells of
 * `mt-bench decode --ct2` at batch 32 went from 3.89x to 4.38x CTranslate2 (greedy) and from 1.91x to
 * 2.10x (beam 4) on the quiet 2-core Zen 4; on the loaded test machine 32 x 256 x 256 had taken 13 us
 * on one thread and 58 us on two. */
#define QGEMM_PAR_MIN (1 << 21)
/* From this many rows a product runs on the AMX tile unit where there is one: a tile holds 16 rows,
 * so fewer waste most of its work, and the VNNI kernel is as fast there. */
#define MT_QAMX_MIN_ROWS 8
/* Column slices of the threads are whole panels of the packed weight. */
#define QGEMM_ALIGN MT_QPANEL

static int has_avx512_vnni(void) {
    static int v = -1;
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    }
    return v;
}

/* The VNNI kernel: rows r0..r0+MR of c (ldc) for the MT_QPANEL columns of panel p of the packed
 * weight (core/quant.h), c[r, i] = sum_j u[r, j] q[i, j] + co[i]. MR x 64 int32 sums live in MR x 4
 * registers; each step broadcasts 4 bytes of a row and multiplies them with the next 256 bytes of the
 * panel (VPDPBUSD), so the panel's weights are read once per block of MR rows, sequentially, and never
 * re-laid out (oneDNN's dnnl_gemm_u8s8s32 packs the whole weight into its own layout on every call:
 * most of a decoding step's small-M products). u rows have ldu >= 4 kg bytes (zero padded). */
#define QK_MR 6
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline void
qkernel(int MR, int64_t kg, const uint8_t *u, int64_t ldu, const int8_t *panel, const int32_t *co, int32_t *c,
        int64_t ldc, int64_t ncols) {
    __m512i acc[QK_MR][4];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
        for (int b = 0; b < 4; b++) acc[r][b] = _mm512_setzero_si512();
    for (int64_t g = 0; g < kg; g++) {
        const int8_t *w = panel + g * (MT_QPANEL * 4);
        __m512i w0 = _mm512_loadu_si512((const void *)w), w1 = _mm512_loadu_si512((const void *)(w + 64));
        __m512i w2 = _mm512_loadu_si512((const void *)(w + 128)), w3 = _mm512_loadu_si512((const void *)(w + 192));
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            int32_t a;
            memcpy(&a, u + r * ldu + 4 * g, 4);
            __m512i av = _mm512_set1_epi32(a);
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, w0);
            acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, w1);
            acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], av, w2);
            acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], av, w3);
        }
    }
    for (int b = 0; b < 4; b++) {
        int64_t left = ncols - 16 * b;
        if (left <= 0) break;
        __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        __m512i cv = _mm512_maskz_loadu_epi32(m, co + 16 * b);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++)
            _mm512_mask_storeu_epi32(c + r * ldc + 16 * b, m, _mm512_add_epi32(acc[r][b], cv));
    }
}

/* One output from its int32 sum: the row scale a, the channel scale, the bias (every path's). */
static inline float rescale1(int32_t sum, float a, float scale, float bias) { return (float)sum * a * scale + bias; }

/* y[i] from the sums s[i] + co[i] for n columns: one row of the AMX path. */
__attribute__((target("avx512f"))) static void rescale_row(const int32_t *s, const int32_t *co, float a,
                                                           const float *scale, const float *bias, int64_t n,
                                                           float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = rescale1(s[i] + co[i], a, scale[i], bias ? bias[i] : 0.0f);
}

/* y[r, i] for columns n0..n1 from the int32 sums c: the row and channel scales, the bias. */
static inline void rescale(int64_t R, int64_t N, int64_t n0, int64_t n1, const float *sx, const mt_qweight *w,
                           const float *bias, const int32_t *c, float *y) {
    for (int64_t r = 0; r < R; r++) {
        float a = sx[r];
        const int32_t *cr = c + r * N;
        float *yr = y + r * N;
        for (int64_t i = n0; i < n1; i++) yr[i] = rescale1(cr[i], a, w->scale[i], bias ? bias[i] : 0.0f);
    }
}

/* Panels p0..p1 of y (columns p0 * 64 .. min(N, p1 * 64)), panel by panel: the sums of every row
 * block, then the panel's rescaling while its sums are still in cache. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void qlinear_vnni(int64_t R, int64_t N, int64_t p0,
                                                                                int64_t p1, const uint8_t *u,
                                                                                int64_t ldu, const float *sx,
                                                                                const mt_qweight *w, const float *bias,
                                                                                const int32_t *co, int32_t *c,
                                                                                float *y) {
    for (int64_t p = p0; p < p1; p++) {
        const int8_t *panel = w->qp + p * w->kg * (MT_QPANEL * 4);
        int64_t n0 = p * MT_QPANEL, ncols = N - n0 < MT_QPANEL ? N - n0 : MT_QPANEL;
        int64_t r = 0;
        for (; r + QK_MR <= R; r += QK_MR)
            qkernel(QK_MR, w->kg, u + r * ldu, ldu, panel, co + n0, c + r * N + n0, N, ncols);
        switch (R - r) {
        case 5: qkernel(5, w->kg, u + r * ldu, ldu, panel, co + n0, c + r * N + n0, N, ncols); break;
        case 4: qkernel(4, w->kg, u + r * ldu, ldu, panel, co + n0, c + r * N + n0, N, ncols); break;
        case 3: qkernel(3, w->kg, u + r * ldu, ldu, panel, co + n0, c + r * N + n0, N, ncols); break;
        case 2: qkernel(2, w->kg, u + r * ldu, ldu, panel, co + n0, c + r * N + n0, N, ncols); break;
        case 1: qkernel(1, w->kg, u + r * ldu, ldu, panel, co + n0, c + r * N + n0, N, ncols); break;
        default: break;
        }
        rescale(R, N, n0, n0 + ncols, sx, w, bias, c, y);
    }
}

/* ---- AMX ----
 * Linux hands a process the tiles' 8 KB of register state only when asked (arch_prctl
 * ARCH_REQ_XCOMP_PERM for XTILEDATA), once per process; the CPU says whether it has the unit (CPUID
 * leaf 7: AMX-TILE, AMX-INT8). Either missing: the VNNI kernel. */
#define AMX_XTILEDATA 18
#define AMX_REQ_XCOMP_PERM 0x1023
static int amx_ok;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_probe(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 25))) return;
#if defined(__linux__)
    amx_ok = syscall(SYS_arch_prctl, AMX_REQ_XCOMP_PERM, AMX_XTILEDATA) == 0;
#endif
}

int mt_cpu_qlinear_amx = 1; /* where the CPU and the OS allow it; tests set 0 to run the VNNI kernel */

static int use_amx(int64_t R, int64_t K) {
    if (!mt_cpu_qlinear_amx || R < MT_QAMX_MIN_ROWS || K % 64) return 0;
    pthread_once(&amx_once, amx_probe);
    return amx_ok;
}

/* The product's kernel, chosen once per call: the tile unit (which needs AVX-512 too, for the
 * rescaling), the VNNI kernel, or oneDNN (also what mt_cpu_qlinear_portable asks for). */
typedef enum { QK_DNNL, QK_VNNI, QK_AMX } qkernel_kind;

static qkernel_kind choose_kernel(int64_t R, int64_t K) {
    if (mt_cpu_qlinear_portable || !has_avx512_vnni()) return QK_DNNL;
    return use_amx(R, K) ? QK_AMX : QK_VNNI;
}

/* The tile configuration (palette 1): tiles 0-3 the int32 sums of 16 rows x 16 channels each (a panel
 * of 64), tile 4 16 rows x 64 activation bytes, tiles 5-7 16 groups of 4 along k x 16 channels. */
typedef struct amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

/* qlinear_vnni's work on the tile unit: panels p0..p1, blocks of 16 rows (u holds whole blocks; rows
 * past R are computed and dropped), k in steps of 64 (K % 64 == 0: whole tiles). The sums go through
 * a 16 x 64 buffer, rescaled from there into y. */
__attribute__((target("amx-tile,amx-int8"))) static void qlinear_amx(int64_t R, int64_t N, int64_t p0, int64_t p1,
                                                                     const uint8_t *u, int64_t ldu, const float *sx,
                                                                     const mt_qweight *w, const float *bias,
                                                                     const int32_t *co, float *y) {
    amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    int32_t sums[16 * MT_QPANEL];
    for (int64_t p = p0; p < p1; p++) {
        const int8_t *panel = w->qp + p * w->kg * (MT_QPANEL * 4);
        int64_t n0 = p * MT_QPANEL, ncols = N - n0 < MT_QPANEL ? N - n0 : MT_QPANEL;
        for (int64_t r0 = 0; r0 < R; r0 += 16) {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t g = 0; g < w->kg; g += 16) {
                const int8_t *b = panel + g * (MT_QPANEL * 4);
                _tile_loadd(4, u + r0 * ldu + 4 * g, ldu);
                _tile_loadd(5, b, MT_QPANEL * 4);
                _tile_loadd(6, b + 64, MT_QPANEL * 4);
                _tile_dpbusd(0, 4, 5);
                _tile_loadd(7, b + 128, MT_QPANEL * 4);
                _tile_dpbusd(1, 4, 6);
                _tile_loadd(5, b + 192, MT_QPANEL * 4);
                _tile_dpbusd(2, 4, 7);
                _tile_dpbusd(3, 4, 5);
            }
            _tile_stored(0, sums, MT_QPANEL * 4);
            _tile_stored(1, sums + 16, MT_QPANEL * 4);
            _tile_stored(2, sums + 32, MT_QPANEL * 4);
            _tile_stored(3, sums + 48, MT_QPANEL * 4);
            int64_t rows = R - r0 < 16 ? R - r0 : 16;
            for (int64_t r = 0; r < rows; r++)
                rescale_row(sums + r * MT_QPANEL, co + n0, sx[r0 + r], w->scale + n0, bias ? bias + n0 : NULL,
                            ncols, y + (r0 + r) * N + n0);
        }
    }
    _tile_release();
}

/* Output columns n0..n1 of y (whole panels but the last) on the calling thread. */
static dnnl_status_t qlinear_cols(qkernel_kind kind, int64_t R, int64_t K, int64_t N, int64_t n0, int64_t n1,
                                  const uint8_t *u, int64_t ldu, const float *sx, const mt_qweight *w,
                                  const float *bias, int32_t *c, const int32_t *co, float *y) {
    if (kind == QK_AMX) {
        qlinear_amx(R, N, n0 / MT_QPANEL, (n1 + MT_QPANEL - 1) / MT_QPANEL, u, ldu, sx, w, bias, co, y);
        return dnnl_success;
    }
    if (kind == QK_VNNI) {
        qlinear_vnni(R, N, n0 / MT_QPANEL, (n1 + MT_QPANEL - 1) / MT_QPANEL, u, ldu, sx, w, bias, co, c, y);
        return dnnl_success;
    }
    dnnl_status_t s = dnnl_gemm_u8s8s32('N', 'T', 'R', R, n1 - n0, K, 1.0f, u, ldu, 0, w->q + n0 * K, K, 0, 0.0f,
                                        c + n0, N, co + n0);
    if (s != dnnl_success) return s;
    rescale(R, N, n0, n1, sx, w, bias, c, y);
    return dnnl_success;
}

/* mt_quantize_row (core/quant.h) of x[0..K) with the offset added, written as unsigned bytes: the
 * same values (x / s, then round half even, clamp; NaN gives 0), 16 at a time. Returns the scale. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static float quantize_row_avx512(const float *x, int64_t K,
                                                                                    int qmax, uint8_t *u) {
    __m512 amax = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= K; j += 16) amax = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + j)), amax);
    if (j < K) {
        __mmask16 m = (__mmask16)((1u << (K - j)) - 1);
        amax = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + j)), amax); /* NaN: keeps amax */
    }
    float a = _mm512_reduce_max_ps(amax);
    if (!(a > 0.0f) || !isfinite(a)) {
        memset(u, qmax + 1, (size_t)K);
        return 0.0f;
    }
    float s = a / (float)qmax;
    __m512 sv = _mm512_set1_ps(s), hi = _mm512_set1_ps((float)qmax), lo = _mm512_set1_ps((float)-qmax);
    __m512i off = _mm512_set1_epi32(qmax + 1);
    for (j = 0; j < K; j += 16) {
        __mmask16 m = K - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - j)) - 1);
        __m512 r = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(m, x + j), sv),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __mmask16 ord = _mm512_cmp_ps_mask(r, r, _CMP_ORD_Q);
        r = _mm512_maskz_mov_ps(ord, _mm512_min_ps(_mm512_max_ps(r, lo), hi));
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(r), off);
        _mm_mask_storeu_epi8(u + j, m, _mm512_cvtepi32_epi8(q));
    }
    return s;
}

/* Rows r0..r1 of x quantized into u (offset to unsigned, zero padded to ldu) and their scales; with
 * AVX-512 for the engine's kernels, the scalar reference for oneDNN's (the portable path). */
static void quantize_rows(qkernel_kind kind, int64_t r0, int64_t r1, int64_t K, int64_t ldu, const float *x,
                          int qmax, uint8_t *u, float *sx) {
    int off = qmax + 1, avx512 = kind != QK_DNNL;
    for (int64_t r = r0; r < r1; r++) {
        uint8_t *ur = u + r * ldu;
        if (avx512) {
            sx[r] = quantize_row_avx512(x + r * K, K, qmax, ur);
        } else {
            sx[r] = mt_quantize_row(x + r * K, K, qmax, (int8_t *)ur);
            for (int64_t j = 0; j < K; j++) ur[j] = (uint8_t)((int8_t)ur[j] + off);
        }
        for (int64_t j = K; j < ldu; j++) ur[j] = 0;
    }
}

mt_status mt_cpu_qlinear(mt_exec *ex, int64_t R, const float *x, const mt_qweight *w, const float *bias, float *y,
                         void *work) {
    int64_t N = w->n, K = w->k, ldu = MT_QLINEAR_LDU(K);
    int qmax = act_qmax(), off = qmax + 1;
    uint8_t *u = work;
    float *sx = (float *)((char *)work + ((MT_QLINEAR_UROWS(R) * (size_t)ldu + 63) & ~(size_t)63));
    int32_t *c = (int32_t *)(sx + R), *co = c + R * N;
    qkernel_kind kind = choose_kernel(R, K);
    if (kind == QK_AMX) /* the last tile's rows past R: read, their sums dropped */
        memset(u + R * ldu, 0, (MT_QLINEAR_UROWS(R) - (size_t)R) * (size_t)ldu);
    for (int64_t i = 0; i < N; i++) co[i] = -off * w->qsum[i];
    /* One parallel region: the threads quantize slices of the rows, then each multiplies and rescales
     * a slice of whole panels of output columns (as gemm.c). */
    int nt = mt_cpu_threads(ex);
    int64_t tiles = (N + QGEMM_ALIGN - 1) / QGEMM_ALIGN;
    if (R * N * K < QGEMM_PAR_MIN) nt = 1;
    if (tiles < nt) nt = (int)tiles;
    dnnl_status_t err = dnnl_success;
    if (nt <= 1 && !omp_in_parallel()) {
        int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        quantize_rows(kind, 0, R, K, ldu, x, qmax, u, sx);
        err = qlinear_cols(kind, R, K, N, 0, N, u, ldu, sx, w, bias, c, co, y);
        omp_set_num_threads(saved);
    } else if (nt <= 1) {
        quantize_rows(kind, 0, R, K, ldu, x, qmax, u, sx);
        err = qlinear_cols(kind, R, K, N, 0, N, u, ldu, sx, w, bias, c, co, y);
    } else {
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), n = omp_get_num_threads();
            quantize_rows(kind, R * t / n, R * (t + 1) / n, K, ldu, x, qmax, u, sx);
#pragma omp barrier
            int64_t n0 = tiles * t / n * QGEMM_ALIGN, n1 = tiles * (t + 1) / n * QGEMM_ALIGN;
            if (n1 > N) n1 = N;
            dnnl_status_t s =
                n1 > n0 ? qlinear_cols(kind, R, K, N, n0, n1, u, ldu, sx, w, bias, c, co, y) : dnnl_success;
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
