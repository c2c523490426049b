/*
 * elementwise.c — CPU kernels for unary, scalar and broadcast binary ops, masked_fill and dropout.
 *
 * Broadcast ops walk the output row by row (a row = the innermost dim of the collapsed mt_bcast);
 * each row's operand offsets come from its outer index, so rows are independent. Threads split the
 * work in tiles of (row, column range): with fewer rows than threads (same-shape operands collapse to
 * one row) a row is cut into column ranges, so every thread streams its share. Op switches sit
 * outside the loops so each loop vectorises. A broadcast operand's gradient is a reduction: it is
 * computed as a full-size temporary and summed over the broadcast axes by the reduce kernel.
 */
#include "core/error.h"
#include "core/reduce_plan.h"
#include "core/rng.h"
#include "cpu/cpu.h"

/* Column ranges of at least this many floats per tile (below, forking costs more than it saves). */
#define MT_TILE_MIN 4096

typedef struct tiles {
    int64_t rows, inner; /* rows of the collapsed broadcast, floats per row */
    int64_t chunk;       /* columns per tile */
    int64_t per_row;     /* tiles per row */
    int64_t n;           /* tiles */
} tiles;

static tiles make_tiles(const mt_bcast *bc, int nt) {
    tiles t;
    t.inner = bc->shape[bc->ndim - 1];
    t.rows = bc->numel / t.inner;
    t.chunk = t.inner;
    if (t.rows < 4 * (int64_t)nt) { /* aim at >= 4 tiles per thread */
        int64_t want = (4 * (int64_t)nt + t.rows - 1) / t.rows;
        int64_t c = (t.inner + want - 1) / want;
        c = c < MT_TILE_MIN ? MT_TILE_MIN : (c + 15) & ~(int64_t)15;
        t.chunk = c < t.inner ? c : t.inner;
    }
    t.per_row = (t.inner + t.chunk - 1) / t.chunk;
    t.n = t.rows * t.per_row;
    return t;
}

/* Tile k: its row r and column range [j0, j1). */
static inline void tile_range(const tiles *t, int64_t k, int64_t *r, int64_t *j0, int64_t *j1) {
    *r = k / t->per_row;
    *j0 = (k % t->per_row) * t->chunk;
    *j1 = *j0 + t->chunk < t->inner ? *j0 + t->chunk : t->inner;
}

/* Offsets into a and b of the first element of output row `row`. */
static inline void bcast_row(const mt_bcast *bc, int64_t row, int64_t *ia, int64_t *ib) {
    int64_t oa = 0, ob = 0;
    for (int d = bc->ndim - 2; d >= 0; d--) {
        int64_t idx = row % bc->shape[d];
        row /= bc->shape[d];
        oa += idx * bc->sa[d];
        ob += idx * bc->sb[d];
    }
    *ia = oa;
    *ib = ob;
}

/* out[0..n) = op(x[0..n)), one loop per op (each vectorises). */
MT_CPU_CLONES static void unary_run(mt_unary_op op, float *out, const float *x, int64_t n) {
    switch (op) {
    case MT_UNARY_NEG: for (int64_t i = 0; i < n; i++) out[i] = -x[i]; break;
    case MT_UNARY_EXP: for (int64_t i = 0; i < n; i++) out[i] = mt_expf(x[i]); break;
    case MT_UNARY_LOG: for (int64_t i = 0; i < n; i++) out[i] = logf(x[i]); break;
    case MT_UNARY_SQRT: for (int64_t i = 0; i < n; i++) out[i] = sqrtf(x[i]); break;
    case MT_UNARY_TANH: for (int64_t i = 0; i < n; i++) out[i] = tanhf(x[i]); break;
    case MT_UNARY_SIGMOID: for (int64_t i = 0; i < n; i++) out[i] = 1.0f / (1.0f + mt_expf(-x[i])); break;
    case MT_UNARY_RELU: for (int64_t i = 0; i < n; i++) out[i] = x[i] > 0.0f ? x[i] : 0.0f; break;
    case MT_UNARY_GELU:
        for (int64_t i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + mt_erff(x[i] * 0.70710678118654752f));
        break;
    default: for (int64_t i = 0; i < n; i++) out[i] = x[i] / (1.0f + mt_expf(-x[i])); break; /* silu */
    }
}

/* out[0..n) = x[0..n) op s. */
static void scalar_run(mt_scalar_op op, float *out, const float *x, float s, int64_t n) {
    switch (op) {
    case MT_SCALAR_ADD: for (int64_t i = 0; i < n; i++) out[i] = x[i] + s; break;
    case MT_SCALAR_SUB: for (int64_t i = 0; i < n; i++) out[i] = x[i] - s; break;
    case MT_SCALAR_MUL: for (int64_t i = 0; i < n; i++) out[i] = x[i] * s; break;
    case MT_SCALAR_DIV: for (int64_t i = 0; i < n; i++) out[i] = x[i] / s; break;
    case MT_SCALAR_RSUB: for (int64_t i = 0; i < n; i++) out[i] = s - x[i]; break;
    case MT_SCALAR_RDIV: for (int64_t i = 0; i < n; i++) out[i] = s / x[i]; break;
    default: for (int64_t i = 0; i < n; i++) out[i] = powf(x[i], s); break;
    }
}

/* Runs an elementwise forward over chunks: threads split the chunks; an output of MT_CPU_STREAM_MIN
 * bytes or more is computed chunk by chunk into an L1 buffer and streamed out. */
#define ELEMENTWISE_CHUNKS(nt, n, out, RUN)                                                       \
    do {                                                                                          \
        int stream_ = (n) * (int64_t)sizeof(float) >= MT_CPU_STREAM_MIN;                          \
        int64_t chunks_ = ((n) + MT_CPU_CHUNK - 1) / MT_CPU_CHUNK;                                \
        _Pragma("omp parallel num_threads(nt) if ((n) > MT_CPU_PAR_MIN)")                          \
        {                                                                                         \
            float buf_[MT_CPU_CHUNK] __attribute__((aligned(64)));                                \
            _Pragma("omp for schedule(static)")                                                   \
            for (int64_t c_ = 0; c_ < chunks_; c_++) {                                            \
                int64_t j0 = c_ * MT_CPU_CHUNK;                                                   \
                int64_t len = (n) - j0 < MT_CPU_CHUNK ? (n) - j0 : MT_CPU_CHUNK;                  \
                float *dst = stream_ ? buf_ : (out) + j0;                                          \
                RUN;                                                                              \
                if (stream_) mt_stream_copy((out) + j0, buf_, len);                               \
            }                                                                                     \
            if (stream_) mt_stream_fence();                                                       \
        }                                                                                         \
    } while (0)

mt_status mt_cpu_unary_fwd(mt_exec *ex, mt_unary_op op, float *out, const float *x, int64_t n) {
    int nt = mt_cpu_threads(ex);
    if ((unsigned)op > MT_UNARY_SILU) return mt_error(MT_ERR_INTERNAL, "cpu unary: unknown op %d", (int)op);
    ELEMENTWISE_CHUNKS(nt, n, out, unary_run(op, dst, x + j0, len));
    return MT_OK;
}

/* dx[0..n) += dy * f'(x), one loop per op; y = f(x) where the derivative is cheaper from it. */
MT_CPU_CLONES static void unary_bwd_run(mt_unary_op op, float *dx, const float *dy, const float *x, const float *y,
                                        int64_t n) {
    switch (op) {
    case MT_UNARY_NEG: for (int64_t i = 0; i < n; i++) dx[i] -= dy[i]; break;
    case MT_UNARY_EXP: for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * y[i]; break;
    case MT_UNARY_LOG: for (int64_t i = 0; i < n; i++) dx[i] += dy[i] / x[i]; break;
    case MT_UNARY_SQRT: for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * 0.5f / y[i]; break;
    case MT_UNARY_TANH: for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * (1.0f - y[i] * y[i]); break;
    case MT_UNARY_SIGMOID: for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * y[i] * (1.0f - y[i]); break;
    case MT_UNARY_RELU: for (int64_t i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? dy[i] : 0.0f; break;
    case MT_UNARY_GELU:
        for (int64_t i = 0; i < n; i++) {
            float pdf, cdf = mt_normal_cdf_pdf(x[i], &pdf);
            dx[i] += dy[i] * (cdf + x[i] * pdf);
        }
        break;
    default: /* silu */
        for (int64_t i = 0; i < n; i++) {
            float s = 1.0f / (1.0f + mt_expf(-x[i]));
            dx[i] += dy[i] * (s + x[i] * s * (1.0f - s));
        }
        break;
    }
}

mt_status mt_cpu_unary_bwd(mt_exec *ex, mt_unary_op op, float *dx, const float *dy, const float *x, const float *y,
                           int64_t n) {
    int nt = mt_cpu_threads(ex);
    if ((unsigned)op > MT_UNARY_SILU) return mt_error(MT_ERR_INTERNAL, "cpu unary backward: unknown op %d", (int)op);
    int64_t chunks = (n + MT_CPU_CHUNK - 1) / MT_CPU_CHUNK;
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t j0 = c * MT_CPU_CHUNK, len = n - j0 < MT_CPU_CHUNK ? n - j0 : MT_CPU_CHUNK;
        unary_bwd_run(op, dx + j0, dy + j0, x + j0, y + j0, len);
    }
    return MT_OK;
}

mt_status mt_cpu_scalar_fwd(mt_exec *ex, mt_scalar_op op, float *out, const float *x, float s, int64_t n) {
    int nt = mt_cpu_threads(ex);
    if ((unsigned)op > MT_SCALAR_POW) return mt_error(MT_ERR_INTERNAL, "cpu scalar: unknown op %d", (int)op);
    ELEMENTWISE_CHUNKS(nt, n, out, scalar_run(op, dst, x + j0, s, len));
    return MT_OK;
}

mt_status mt_cpu_scalar_bwd(mt_exec *ex, mt_scalar_op op, float *dx, const float *dy, const float *x, float s,
                            int64_t n) {
    int nt = mt_cpu_threads(ex);
#define SCALAR_BWD(EXPR)                                                        \
    _Pragma("omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)") \
    for (int64_t i = 0; i < n; i++) {                                           \
        float g = dy[i];                                                        \
        dx[i] += (EXPR);                                                        \
    }                                                                           \
    break
    switch (op) {
    case MT_SCALAR_ADD:
    case MT_SCALAR_SUB: SCALAR_BWD(g);
    case MT_SCALAR_MUL: SCALAR_BWD(g * s);
    case MT_SCALAR_DIV: SCALAR_BWD(g / s);
    case MT_SCALAR_RSUB: SCALAR_BWD(-g);
    case MT_SCALAR_RDIV: SCALAR_BWD(-g * s / (x[i] * x[i]));
    case MT_SCALAR_POW:
        if (s == 0.0f) return MT_OK; /* x^0 is constant (and 0 * x^-1 would be NaN at x = 0) */
        SCALAR_BWD(g * s * powf(x[i], s - 1.0f));
    default: return mt_error(MT_ERR_INTERNAL, "cpu scalar backward: unknown op %d", (int)op);
    }
#undef SCALAR_BWD
    return MT_OK;
}

/* o[j] = A op B for j in [0, n) of a piece of one output row; A, B read with row strides sa, sb (1
 * along the row, 0 where that operand is broadcast along it). */
#define ROW_LOOP(EXPR)                                                                   \
    do {                                                                                 \
        if (sa == 1 && sb == 1) {                                                        \
            for (int64_t j = 0; j < n; j++) {                                            \
                float A = pa[j], B = pb[j];                                              \
                o[j] = (EXPR);                                                           \
            }                                                                            \
        } else if (sa == 1 && sb == 0) {                                                 \
            float B = pb[0];                                                             \
            for (int64_t j = 0; j < n; j++) {                                            \
                float A = pa[j];                                                         \
                o[j] = (EXPR);                                                           \
            }                                                                            \
        } else if (sa == 0 && sb == 1) {                                                 \
            float A = pa[0];                                                             \
            for (int64_t j = 0; j < n; j++) {                                            \
                float B = pb[j];                                                         \
                o[j] = (EXPR);                                                           \
            }                                                                            \
        } else {                                                                         \
            for (int64_t j = 0; j < n; j++) {                                            \
                float A = pa[j * sa], B = pb[j * sb];                                    \
                o[j] = (EXPR);                                                           \
            }                                                                            \
        }                                                                                \
    } while (0)

static inline void binary_row(mt_binary_op op, float *o, const float *pa, int64_t sa, const float *pb, int64_t sb,
                              int64_t n) {
    switch (op) {
    case MT_BINARY_ADD: ROW_LOOP(A + B); break;
    case MT_BINARY_SUB: ROW_LOOP(A - B); break;
    case MT_BINARY_MUL: ROW_LOOP(A * B); break;
    default: ROW_LOOP(A / B); break;
    }
}

mt_status mt_cpu_binary_fwd(mt_exec *ex, mt_binary_op op, float *out, const float *a, const float *b,
                            const mt_bcast *bc) {
    int nt = mt_cpu_threads(ex);
    tiles t = make_tiles(bc, nt);
    int64_t sa = bc->sa[bc->ndim - 1], sb = bc->sb[bc->ndim - 1];
    int stream = bc->numel * (int64_t)sizeof(float) >= MT_CPU_STREAM_MIN;
#pragma omp parallel num_threads(nt) if (bc->numel > MT_CPU_PAR_MIN)
    {
        float buf[MT_CPU_CHUNK] __attribute__((aligned(64)));
#pragma omp for schedule(static)
        for (int64_t k = 0; k < t.n; k++) {
            int64_t r, j0, j1, ia, ib;
            tile_range(&t, k, &r, &j0, &j1);
            bcast_row(bc, r, &ia, &ib);
            float *o = out + r * t.inner;
            if (!stream) {
                binary_row(op, o + j0, a + ia + j0 * sa, sa, b + ib + j0 * sb, sb, j1 - j0);
                continue;
            }
            for (int64_t c0 = j0; c0 < j1; c0 += MT_CPU_CHUNK) {
                int64_t len = j1 - c0 < MT_CPU_CHUNK ? j1 - c0 : MT_CPU_CHUNK;
                binary_row(op, buf, a + ia + c0 * sa, sa, b + ib + c0 * sb, sb, len);
                mt_stream_copy(o + c0, buf, len);
            }
        }
        if (stream) mt_stream_fence();
    }
    return MT_OK;
}

/* Neither operand broadcast: a, b, dy, da, db share the output's layout; one pass over dy updates
 * both gradients (either may be NULL). */
static void binary_bwd_same(int nt, mt_binary_op op, float *da, float *db, const float *dy, const float *a,
                            const float *b, int64_t n) {
#define SAME_LOOP(BODY)                                                         \
    _Pragma("omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)") \
    for (int64_t i = 0; i < n; i++) {                                           \
        float g = dy[i];                                                        \
        BODY;                                                                   \
    }
    switch (op) {
    case MT_BINARY_ADD:
        if (da && db) SAME_LOOP(da[i] += g; db[i] += g)
        else if (da) SAME_LOOP(da[i] += g)
        else SAME_LOOP(db[i] += g)
        break;
    case MT_BINARY_SUB:
        if (da && db) SAME_LOOP(da[i] += g; db[i] -= g)
        else if (da) SAME_LOOP(da[i] += g)
        else SAME_LOOP(db[i] -= g)
        break;
    case MT_BINARY_MUL:
        if (da && db) SAME_LOOP(da[i] += g * b[i]; db[i] += g * a[i])
        else if (da) SAME_LOOP(da[i] += g * b[i])
        else SAME_LOOP(db[i] += g * a[i])
        break;
    default:
        if (da && db) SAME_LOOP(float q = g / b[i]; da[i] += q; db[i] -= q * a[i] / b[i])
        else if (da) SAME_LOOP(da[i] += g / b[i])
        else SAME_LOOP(db[i] -= g * a[i] / (b[i] * b[i]))
        break;
    }
#undef SAME_LOOP
}

/* d(out)/d(side) * dy at one element: side 0 = a, 1 = b. */
static inline float binop_grad(mt_binary_op op, int side, float dy, float a, float b) {
    switch (op) {
    case MT_BINARY_ADD: return dy;
    case MT_BINARY_SUB: return side == 0 ? dy : -dy;
    case MT_BINARY_MUL: return side == 0 ? dy * b : dy * a;
    default: return side == 0 ? dy / b : -dy * a / (b * b);
    }
}

/* The gradient of one side through a broadcast: written (=) into g laid out like the output when that
 * side is broadcast (then reduced), accumulated (+=) into d when it is not. */
static mt_status binary_bwd_side(mt_exec *ex, mt_binary_op op, int side, float *d, const float *dy, const float *a,
                                 const float *b, const mt_bcast *bc) {
    int nt = mt_cpu_threads(ex);
    int64_t n_side = side == 0 ? bc->na : bc->nb;
    int broadcast = n_side != bc->numel;
    const int64_t *strides = side == 0 ? bc->sa : bc->sb;
    if (broadcast && (op == MT_BINARY_ADD || (op == MT_BINARY_SUB && side == 0))) {
        mt_reduce_desc rd = mt_bcast_reduce_desc(bc, strides);
        return mt_cpu_reduce_fwd(ex, MT_REDUCE_SUM, d, NULL, dy, &rd, 1);
    }
    float *g = d;
    if (broadcast) {
        g = mt_exec_scratch(ex, (size_t)bc->numel * sizeof(float));
        if (!g) return mt_error(MT_ERR_NOMEM, "binary backward: out of memory for a %lld-element temporary",
                                (long long)bc->numel);
    }
    tiles t = make_tiles(bc, nt);
    int64_t sa = bc->sa[bc->ndim - 1], sb = bc->sb[bc->ndim - 1];
    /* Without broadcasting on this side its elements are laid out like the output: index r*inner + j. */
#pragma omp parallel for num_threads(nt) if (bc->numel > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t k = 0; k < t.n; k++) {
        int64_t r, j0, j1, ia, ib;
        tile_range(&t, k, &r, &j0, &j1);
        bcast_row(bc, r, &ia, &ib);
        float *gr = g + r * t.inner;
        const float *dr = dy + r * t.inner, *pa = a + ia, *pb = b + ib;
        if (broadcast) {
            for (int64_t j = j0; j < j1; j++) gr[j] = binop_grad(op, side, dr[j], pa[j * sa], pb[j * sb]);
        } else {
            for (int64_t j = j0; j < j1; j++) gr[j] += binop_grad(op, side, dr[j], pa[j * sa], pb[j * sb]);
        }
    }
    if (broadcast) {
        mt_reduce_desc rd = mt_bcast_reduce_desc(bc, strides);
        return mt_cpu_reduce_fwd(ex, MT_REDUCE_SUM, d, NULL, g, &rd, 1);
    }
    return MT_OK;
}

mt_status mt_cpu_binary_bwd(mt_exec *ex, mt_binary_op op, float *da, float *db, const float *dy, const float *a,
                            const float *b, const mt_bcast *bc) {
    if (bc->na == bc->numel && bc->nb == bc->numel) {
        if (da || db) binary_bwd_same(mt_cpu_threads(ex), op, da, db, dy, a, b, bc->numel);
        return MT_OK;
    }
    if (da) MT_TRY(binary_bwd_side(ex, op, 0, da, dy, a, b, bc));
    if (db) MT_TRY(binary_bwd_side(ex, op, 1, db, dy, a, b, bc));
    return MT_OK;
}

mt_status mt_cpu_masked_fill_fwd(mt_exec *ex, float *out, const float *x, const float *mask, float value,
                                 const mt_bcast *bc) {
    int nt = mt_cpu_threads(ex);
    tiles t = make_tiles(bc, nt);
    int64_t sa = bc->sa[bc->ndim - 1], sb = bc->sb[bc->ndim - 1];
#pragma omp parallel for num_threads(nt) if (bc->numel > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t k = 0; k < t.n; k++) {
        int64_t r, j0, j1, ia, ib;
        tile_range(&t, k, &r, &j0, &j1);
        bcast_row(bc, r, &ia, &ib);
        float *o = out + r * t.inner;
        const float *px = x + ia, *pm = mask + ib;
        for (int64_t j = j0; j < j1; j++) o[j] = pm[j * sb] != 0.0f ? value : px[j * sa];
    }
    return MT_OK;
}

mt_status mt_cpu_masked_fill_bwd(mt_exec *ex, float *dx, const float *dy, const float *mask, const mt_bcast *bc) {
    int nt = mt_cpu_threads(ex);
    tiles t = make_tiles(bc, nt);
    int64_t sb = bc->sb[bc->ndim - 1];
#pragma omp parallel for num_threads(nt) if (bc->numel > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t k = 0; k < t.n; k++) {
        int64_t r, j0, j1, ia, ib;
        tile_range(&t, k, &r, &j0, &j1);
        bcast_row(bc, r, &ia, &ib);
        float *d = dx + r * t.inner;
        const float *g = dy + r * t.inner, *pm = mask + ib;
        for (int64_t j = j0; j < j1; j++) d[j] += pm[j * sb] == 0.0f ? g[j] : 0.0f;
    }
    return MT_OK;
}

/* Dropout draws element i from lane (offset + i) % 4 of Philox block (offset + i) / 4 (mt_rng_uniform).
 * The kernels fill a chunk's random words first (philox_words), then apply them in one vectorised
 * loop. philox_words runs eight blocks at a time in AVX2 lanes: Philox's 32x32 -> 64-bit products
 * are vpmuludq on the even lanes and on the odd lanes shifted down, so the words are those of
 * mt_philox4x32, bit for bit (test_ops_threads compares them with mt_rng_uniform). */
#if defined(__AVX2__)
/* hi and lo 32 bits of a * m in each 32-bit lane (m the same in every lane). */
static inline void mulhilo8(__m256i a, __m256i m, __m256i *hi, __m256i *lo) {
    __m256i pe = _mm256_mul_epu32(a, m);                        /* lanes 0, 2, 4, 6: 64-bit products */
    __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m); /* lanes 1, 3, 5, 7 */
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
    *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
}
#endif

/* Sixteen blocks at a time in AVX-512 lanes: the same rounds as the AVX2 path, twice as wide, then a
 * 4 x 16 transpose to block-major order (words of blocks 0-3, 4-7, 8-11, 12-15 in four vectors).
 * Returns the blocks done (a multiple of 16). */
__attribute__((target("avx512f"))) static int64_t philox_words16(uint32_t *words, uint64_t block0, int64_t nblk,
                                                                uint64_t seed) {
    const __m512i m0 = _mm512_set1_epi32((int)0xD2511F53u), m1 = _mm512_set1_epi32((int)0xCD9E8D57u);
    int64_t k = 0;
    for (; k + 16 <= nblk; k += 16) {
        uint32_t lo32[16], hi32[16];
        for (int l = 0; l < 16; l++) {
            uint64_t b = block0 + (uint64_t)k + (uint64_t)l;
            lo32[l] = (uint32_t)b;
            hi32[l] = (uint32_t)(b >> 32);
        }
        __m512i c0 = _mm512_loadu_si512(lo32), c1 = _mm512_loadu_si512(hi32);
        __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
        uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
        for (int r = 0; r < 10; r++) {
            __m512i pe0 = _mm512_mul_epu32(c0, m0), po0 = _mm512_mul_epu32(_mm512_srli_epi64(c0, 32), m0);
            __m512i pe1 = _mm512_mul_epu32(c2, m1), po1 = _mm512_mul_epu32(_mm512_srli_epi64(c2, 32), m1);
            __m512i hi0 = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe0, 32), po0);
            __m512i lo0 = _mm512_mask_blend_epi32(0xAAAA, pe0, _mm512_slli_epi64(po0, 32));
            __m512i hi1 = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe1, 32), po1);
            __m512i lo1 = _mm512_mask_blend_epi32(0xAAAA, pe1, _mm512_slli_epi64(po1, 32));
            __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32((int)k0));
            __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32((int)k1));
            c1 = lo1;
            c3 = lo0;
            c0 = n0;
            c2 = n2;
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        __m512i t0 = _mm512_unpacklo_epi32(c0, c1), t1 = _mm512_unpackhi_epi32(c0, c1);
        __m512i t2 = _mm512_unpacklo_epi32(c2, c3), t3 = _mm512_unpackhi_epi32(c2, c3);
        __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2); /* blocks 0,4,8,12 | 1,5,9,13 */
        __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3); /* blocks 2,6,10,14 | 3,7,11,15 */
        __m512i v0 = _mm512_shuffle_i32x4(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)); /* blocks 0, 8, 1, 9 */
        __m512i v1 = _mm512_shuffle_i32x4(u0, u1, _MM_SHUFFLE(3, 1, 3, 1)); /* 4, 12, 5, 13 */
        __m512i v2 = _mm512_shuffle_i32x4(u2, u3, _MM_SHUFFLE(2, 0, 2, 0)); /* 2, 10, 3, 11 */
        __m512i v3 = _mm512_shuffle_i32x4(u2, u3, _MM_SHUFFLE(3, 1, 3, 1)); /* 6, 14, 7, 15 */
        uint32_t *w = words + 4 * k;
        _mm512_storeu_si512(w, _mm512_shuffle_i32x4(v0, v2, _MM_SHUFFLE(2, 0, 2, 0)));
        _mm512_storeu_si512(w + 16, _mm512_shuffle_i32x4(v1, v3, _MM_SHUFFLE(2, 0, 2, 0)));
        _mm512_storeu_si512(w + 32, _mm512_shuffle_i32x4(v0, v2, _MM_SHUFFLE(3, 1, 3, 1)));
        _mm512_storeu_si512(w + 48, _mm512_shuffle_i32x4(v1, v3, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    return k;
}

int mt_cpu_philox_avx512 = 1; /* where the CPU has AVX-512; tests set 0 to run the AVX2 path */

/* words[4k + l] = word l of Philox block (block0 + k) under seed, k in [0, nblk). words has room for
 * nblk rounded up to 8 blocks. */
static void philox_words(uint32_t *words, uint64_t block0, int64_t nblk, uint64_t seed) {
    int64_t k = 0;
    if (mt_cpu_philox_avx512 && __builtin_cpu_supports("avx512f")) k = philox_words16(words, block0, nblk, seed);
#if defined(__AVX2__)
    const __m256i m0 = _mm256_set1_epi32((int)0xD2511F53u), m1 = _mm256_set1_epi32((int)0xCD9E8D57u);
    for (; k < nblk; k += 8) {
        uint32_t lo32[8], hi32[8];
        for (int l = 0; l < 8; l++) {
            uint64_t b = block0 + (uint64_t)k + (uint64_t)l;
            lo32[l] = (uint32_t)b;
            hi32[l] = (uint32_t)(b >> 32);
        }
        __m256i c0 = _mm256_loadu_si256((const __m256i *)lo32), c1 = _mm256_loadu_si256((const __m256i *)hi32);
        __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
        uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
        for (int r = 0; r < 10; r++) {
            __m256i hi0, lo0, hi1, lo1;
            mulhilo8(c0, m0, &hi0, &lo0);
            mulhilo8(c2, m1, &hi1, &lo1);
            __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32((int)k0));
            __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32((int)k1));
            c1 = lo1;
            c3 = lo0;
            c0 = n0;
            c2 = n2;
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        /* Lane l of c0..c3 is block k + l: transpose to block-major order. */
        __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
        __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
        __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2); /* blocks 0|4, 1|5 */
        __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3); /* blocks 2|6, 3|7 */
        __m256i *w = (__m256i *)(words + 4 * k);
        _mm256_storeu_si256(w + 0, _mm256_permute2x128_si256(u0, u1, 0x20));
        _mm256_storeu_si256(w + 1, _mm256_permute2x128_si256(u2, u3, 0x20));
        _mm256_storeu_si256(w + 2, _mm256_permute2x128_si256(u0, u1, 0x31));
        _mm256_storeu_si256(w + 3, _mm256_permute2x128_si256(u2, u3, 0x31));
    }
#endif
    for (; k < nblk; k++) {
        uint64_t b = block0 + (uint64_t)k;
        mt_philox_out o = mt_philox4x32((uint32_t)b, (uint32_t)(b >> 32), 0u, 0u, (uint32_t)seed, (uint32_t)(seed >> 32));
        for (int l = 0; l < 4; l++) words[4 * k + l] = o.v[l];
    }
}

/* The random words of elements [i0, i0 + len) of a draw at offset (len <= MT_CPU_CHUNK): returns a
 * pointer to the word of element i0 inside buf. */
#define DROPOUT_WORDS (MT_CPU_CHUNK + 40)
static inline const uint32_t *dropout_words(uint32_t *buf, uint64_t offset, int64_t i0, int64_t len, uint64_t seed) {
    uint64_t first = (offset + (uint64_t)i0) >> 2, last = (offset + (uint64_t)(i0 + len) - 1) >> 2;
    philox_words(buf, first, (int64_t)(last - first + 1), seed);
    return buf + (offset + (uint64_t)i0 - 4 * first);
}

static inline int dropout_keep(uint32_t w, float p) { return (float)(w >> 8) * (1.0f / 16777216.0f) >= p; }

mt_status mt_cpu_dropout_fwd(mt_exec *ex, float *out, const float *x, int64_t n, float p, uint64_t seed,
                             uint64_t offset, const float *residual) {
    int nt = mt_cpu_threads(ex);
    float scale = 1.0f / (1.0f - p);
    int64_t chunks = (n + MT_CPU_CHUNK - 1) / MT_CPU_CHUNK;
#pragma omp parallel num_threads(nt) if (n > MT_CPU_PAR_MIN / 4)
    {
        uint32_t buf[DROPOUT_WORDS] __attribute__((aligned(64)));
#pragma omp for schedule(static)
        for (int64_t c = 0; c < chunks; c++) {
            int64_t i0 = c * MT_CPU_CHUNK, len = n - i0 < MT_CPU_CHUNK ? n - i0 : MT_CPU_CHUNK;
            const uint32_t *w = dropout_words(buf, offset, i0, len, seed);
            const float *xc = x + i0;
            float *o = out + i0;
            if (residual) {
                const float *rc = residual + i0;
                for (int64_t j = 0; j < len; j++) o[j] = rc[j] + (dropout_keep(w[j], p) ? xc[j] * scale : 0.0f);
            } else {
                for (int64_t j = 0; j < len; j++) o[j] = dropout_keep(w[j], p) ? xc[j] * scale : 0.0f;
            }
        }
    }
    return MT_OK;
}

mt_status mt_cpu_dropout_bwd(mt_exec *ex, float *dx, const float *dy, int64_t n, float p, uint64_t seed,
                             uint64_t offset) {
    int nt = mt_cpu_threads(ex);
    float scale = 1.0f / (1.0f - p);
    int64_t chunks = (n + MT_CPU_CHUNK - 1) / MT_CPU_CHUNK;
#pragma omp parallel num_threads(nt) if (n > MT_CPU_PAR_MIN / 4)
    {
        uint32_t buf[DROPOUT_WORDS] __attribute__((aligned(64)));
#pragma omp for schedule(static)
        for (int64_t c = 0; c < chunks; c++) {
            int64_t i0 = c * MT_CPU_CHUNK, len = n - i0 < MT_CPU_CHUNK ? n - i0 : MT_CPU_CHUNK;
            const uint32_t *w = dropout_words(buf, offset, i0, len, seed);
            const float *g = dy + i0;
            float *d = dx + i0;
            for (int64_t j = 0; j < len; j++) d[j] = dropout_keep(w[j], p) ? d[j] + g[j] * scale : d[j];
        }
    }
    return MT_OK;
}
