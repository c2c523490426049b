/*
 * elementwise.c — CPU kernels for unary, scalar and broadcast binary ops, masked_fill and dropout.
 *
 * Broadcast ops walk the output row by row (a row = the innermost dim of the collapsed mt_bcast);
 * each row's operand offsets come from its outer index, so rows are independent and split across
 * threads. A broadcast operand's gradient is a reduction: it is computed as a full-size temporary
 * and summed over the broadcast axes by the reduce kernel.
 */
#include "core/error.h"
#include "core/rng.h"
#include "cpu/cpu.h"

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

mt_status mt_cpu_unary_fwd(mt_exec *ex, mt_unary_op op, float *out, const float *x, int64_t n) {
    int nt = mt_cpu_threads(ex);
    switch (op) {
    case MT_UNARY_NEG:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) out[i] = -x[i];
        break;
    case MT_UNARY_EXP:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) out[i] = mt_expf(x[i]);
        break;
    case MT_UNARY_LOG:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) out[i] = logf(x[i]);
        break;
    case MT_UNARY_SQRT:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) out[i] = sqrtf(x[i]);
        break;
    case MT_UNARY_TANH:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) out[i] = tanhf(x[i]);
        break;
    case MT_UNARY_SIGMOID:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) out[i] = 1.0f / (1.0f + mt_expf(-x[i]));
        break;
    case MT_UNARY_RELU:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) out[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case MT_UNARY_GELU:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + mt_erff(x[i] * 0.70710678118654752f));
        break;
    case MT_UNARY_SILU:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) out[i] = x[i] / (1.0f + mt_expf(-x[i]));
        break;
    default: return mt_error(MT_ERR_INTERNAL, "cpu unary: unknown op %d", (int)op);
    }
    return MT_OK;
}

mt_status mt_cpu_unary_bwd(mt_exec *ex, mt_unary_op op, float *dx, const float *dy, const float *x, const float *y,
                           int64_t n) {
    int nt = mt_cpu_threads(ex);
    switch (op) {
    case MT_UNARY_NEG:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) dx[i] -= dy[i];
        break;
    case MT_UNARY_EXP:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * y[i];
        break;
    case MT_UNARY_LOG:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) dx[i] += dy[i] / x[i];
        break;
    case MT_UNARY_SQRT:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * 0.5f / y[i];
        break;
    case MT_UNARY_TANH:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * (1.0f - y[i] * y[i]);
        break;
    case MT_UNARY_SIGMOID:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * y[i] * (1.0f - y[i]);
        break;
    case MT_UNARY_RELU:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? dy[i] : 0.0f;
        break;
    case MT_UNARY_GELU:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float cdf = 0.5f * (1.0f + mt_erff(x[i] * 0.70710678118654752f));
            float pdf = 0.39894228040143268f * mt_expf(-0.5f * x[i] * x[i]);
            dx[i] += dy[i] * (cdf + x[i] * pdf);
        }
        break;
    case MT_UNARY_SILU:
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float s = 1.0f / (1.0f + mt_expf(-x[i]));
            dx[i] += dy[i] * (s + x[i] * s * (1.0f - s));
        }
        break;
    default: return mt_error(MT_ERR_INTERNAL, "cpu unary backward: unknown op %d", (int)op);
    }
    return MT_OK;
}

mt_status mt_cpu_scalar_fwd(mt_exec *ex, mt_scalar_op op, float *out, const float *x, float s, int64_t n) {
    int nt = mt_cpu_threads(ex);
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i], r;
        switch (op) {
        case MT_SCALAR_ADD: r = v + s; break;
        case MT_SCALAR_SUB: r = v - s; break;
        case MT_SCALAR_MUL: r = v * s; break;
        case MT_SCALAR_DIV: r = v / s; break;
        case MT_SCALAR_RSUB: r = s - v; break;
        case MT_SCALAR_RDIV: r = s / v; break;
        default: r = powf(v, s); break;
        }
        out[i] = r;
    }
    return MT_OK;
}

mt_status mt_cpu_scalar_bwd(mt_exec *ex, mt_scalar_op op, float *dx, const float *dy, const float *x, float s,
                            int64_t n) {
    int nt = mt_cpu_threads(ex);
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g;
        switch (op) {
        case MT_SCALAR_ADD:
        case MT_SCALAR_SUB: g = dy[i]; break;
        case MT_SCALAR_MUL: g = dy[i] * s; break;
        case MT_SCALAR_DIV: g = dy[i] / s; break;
        case MT_SCALAR_RSUB: g = -dy[i]; break;
        case MT_SCALAR_RDIV: g = -dy[i] * s / (x[i] * x[i]); break;
        default: g = s == 0.0f ? 0.0f : dy[i] * s * powf(x[i], s - 1.0f); break;
        }
        dx[i] += g;
    }
    return MT_OK;
}

static inline float binop(mt_binary_op op, float a, float b) {
    switch (op) {
    case MT_BINARY_ADD: return a + b;
    case MT_BINARY_SUB: return a - b;
    case MT_BINARY_MUL: return a * b;
    default: return a / b;
    }
}

mt_status mt_cpu_binary_fwd(mt_exec *ex, mt_binary_op op, float *out, const float *a, const float *b,
                            const mt_bcast *bc) {
    int nt = mt_cpu_threads(ex);
    int64_t inner = bc->shape[bc->ndim - 1], rows = bc->numel / inner;
    int64_t sa = bc->sa[bc->ndim - 1], sb = bc->sb[bc->ndim - 1];
#pragma omp parallel for num_threads(nt) if (bc->numel > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t ia, ib;
        bcast_row(bc, r, &ia, &ib);
        float *o = out + r * inner;
        const float *pa = a + ia, *pb = b + ib;
        /* Three row shapes: both operands along the row, or one of them a broadcast scalar. */
        if (sa == 1 && sb == 1) {
            switch (op) {
            case MT_BINARY_ADD: for (int64_t j = 0; j < inner; j++) o[j] = pa[j] + pb[j]; break;
            case MT_BINARY_SUB: for (int64_t j = 0; j < inner; j++) o[j] = pa[j] - pb[j]; break;
            case MT_BINARY_MUL: for (int64_t j = 0; j < inner; j++) o[j] = pa[j] * pb[j]; break;
            default: for (int64_t j = 0; j < inner; j++) o[j] = pa[j] / pb[j]; break;
            }
        } else if (sa == 1) {
            float vb = pb[0];
            for (int64_t j = 0; j < inner; j++) o[j] = binop(op, pa[j], vb);
        } else if (sb == 1) {
            float va = pa[0];
            for (int64_t j = 0; j < inner; j++) o[j] = binop(op, va, pb[j]);
        } else {
            for (int64_t j = 0; j < inner; j++) o[j] = binop(op, pa[j * sa], pb[j * sb]);
        }
    }
    return MT_OK;
}

/* The reduction that sums a full-size gradient g (bc->shape) down to an operand whose strides are s
 * (0 on its broadcast axes). */
static mt_reduce_desc bcast_reduce_desc(const mt_bcast *bc, const int64_t *s) {
    mt_reduce_desc rd = {.ndim = bc->ndim, .axes = 0, .n_out = 1, .n_red = 1};
    for (int d = 0; d < bc->ndim; d++) {
        rd.shape[d] = bc->shape[d];
        if (s[d] == 0 && bc->shape[d] > 1) {
            rd.axes |= 1u << d;
            rd.n_red *= bc->shape[d];
        } else {
            rd.n_out *= bc->shape[d];
        }
    }
    return rd;
}

/* d(out)/d(side) * dy at output element (ia, ib): side 0 = a, 1 = b. */
static inline float binop_grad(mt_binary_op op, int side, float dy, float a, float b) {
    switch (op) {
    case MT_BINARY_ADD: return dy;
    case MT_BINARY_SUB: return side == 0 ? dy : -dy;
    case MT_BINARY_MUL: return side == 0 ? dy * b : dy * a;
    default: return side == 0 ? dy / b : -dy * a / (b * b);
    }
}

static mt_status binary_bwd_side(mt_exec *ex, mt_binary_op op, int side, float *d, const float *dy, const float *a,
                                 const float *b, const mt_bcast *bc) {
    int nt = mt_cpu_threads(ex);
    int64_t n_side = side == 0 ? bc->na : bc->nb;
    int64_t inner = bc->shape[bc->ndim - 1], rows = bc->numel / inner;
    int64_t sa = bc->sa[bc->ndim - 1], sb = bc->sb[bc->ndim - 1];
    int broadcast = n_side != bc->numel;
    float *g = d;
    if (broadcast) {
        if (op == MT_BINARY_ADD || (op == MT_BINARY_SUB && side == 0)) {
            mt_reduce_desc rd = bcast_reduce_desc(bc, side == 0 ? bc->sa : bc->sb);
            return mt_cpu_reduce_fwd(ex, MT_REDUCE_SUM, d, NULL, dy, &rd, 1);
        }
        g = mt_exec_scratch(ex, (size_t)bc->numel * sizeof(float));
        if (!g) return mt_error(MT_ERR_NOMEM, "binary backward: out of memory for a %lld-element temporary",
                                (long long)bc->numel);
    }
    /* Without broadcasting on this side its elements are laid out like the output: index r*inner + j. */
#pragma omp parallel for num_threads(nt) if (bc->numel > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t ia, ib;
        bcast_row(bc, r, &ia, &ib);
        float *gr = g + r * inner;
        const float *dr = dy + r * inner;
        if (broadcast) {
            for (int64_t j = 0; j < inner; j++) gr[j] = binop_grad(op, side, dr[j], a[ia + j * sa], b[ib + j * sb]);
        } else if (sa == 1 && sb == 1 && op == MT_BINARY_MUL) {
            const float *other = side == 0 ? b + ib : a + ia;
            for (int64_t j = 0; j < inner; j++) gr[j] += dr[j] * other[j];
        } else {
            for (int64_t j = 0; j < inner; j++) gr[j] += binop_grad(op, side, dr[j], a[ia + j * sa], b[ib + j * sb]);
        }
    }
    if (broadcast) {
        mt_reduce_desc rd = bcast_reduce_desc(bc, side == 0 ? bc->sa : bc->sb);
        return mt_cpu_reduce_fwd(ex, MT_REDUCE_SUM, d, NULL, g, &rd, 1);
    }
    return MT_OK;
}

mt_status mt_cpu_binary_bwd(mt_exec *ex, mt_binary_op op, float *da, float *db, const float *dy, const float *a,
                            const float *b, const mt_bcast *bc) {
    if (da) MT_TRY(binary_bwd_side(ex, op, 0, da, dy, a, b, bc));
    if (db) MT_TRY(binary_bwd_side(ex, op, 1, db, dy, a, b, bc));
    return MT_OK;
}

mt_status mt_cpu_masked_fill_fwd(mt_exec *ex, float *out, const float *x, const float *mask, float value,
                                 const mt_bcast *bc) {
    int nt = mt_cpu_threads(ex);
    int64_t inner = bc->shape[bc->ndim - 1], rows = bc->numel / inner;
    int64_t sa = bc->sa[bc->ndim - 1], sb = bc->sb[bc->ndim - 1];
#pragma omp parallel for num_threads(nt) if (bc->numel > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t ia, ib;
        bcast_row(bc, r, &ia, &ib);
        for (int64_t j = 0; j < inner; j++) out[r * inner + j] = mask[ib + j * sb] != 0.0f ? value : x[ia + j * sa];
    }
    return MT_OK;
}

mt_status mt_cpu_masked_fill_bwd(mt_exec *ex, float *dx, const float *dy, const float *mask, const mt_bcast *bc) {
    int nt = mt_cpu_threads(ex);
    int64_t inner = bc->shape[bc->ndim - 1], rows = bc->numel / inner;
    int64_t sb = bc->sb[bc->ndim - 1];
#pragma omp parallel for num_threads(nt) if (bc->numel > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t ia, ib;
        bcast_row(bc, r, &ia, &ib);
        for (int64_t j = 0; j < inner; j++)
            if (mask[ib + j * sb] == 0.0f) dx[r * inner + j] += dy[r * inner + j];
    }
    return MT_OK;
}

/* Dropout draws element i from lane (offset + i) % 4 of Philox block (offset + i) / 4 (mt_rng_uniform);
 * one block serves four elements, so each block is computed once. */
static inline void dropout_keep4(float keep[4], uint64_t seed, uint64_t block, float p) {
    mt_philox_out o = mt_philox4x32((uint32_t)block, (uint32_t)(block >> 32), 0u, 0u, (uint32_t)seed,
                                    (uint32_t)(seed >> 32));
    for (int l = 0; l < 4; l++) keep[l] = (float)(o.v[l] >> 8) * (1.0f / 16777216.0f) >= p ? 1.0f : 0.0f;
}

mt_status mt_cpu_dropout_fwd(mt_exec *ex, float *out, const float *x, int64_t n, float p, uint64_t seed,
                             uint64_t offset) {
    int nt = mt_cpu_threads(ex);
    float scale = 1.0f / (1.0f - p);
    uint64_t first = offset >> 2, last = (offset + (uint64_t)n + 3) >> 2;
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN / 4) schedule(static)
    for (uint64_t b = first; b < last; b++) {
        float keep[4];
        dropout_keep4(keep, seed, b, p);
        for (int l = 0; l < 4; l++) {
            int64_t i = (int64_t)(b * 4 + (uint64_t)l - offset);
            if (i >= 0 && i < n) out[i] = keep[l] != 0.0f ? x[i] * scale : 0.0f;
        }
    }
    return MT_OK;
}

mt_status mt_cpu_dropout_bwd(mt_exec *ex, float *dx, const float *dy, int64_t n, float p, uint64_t seed,
                             uint64_t offset) {
    int nt = mt_cpu_threads(ex);
    float scale = 1.0f / (1.0f - p);
    uint64_t first = offset >> 2, last = (offset + (uint64_t)n + 3) >> 2;
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN / 4) schedule(static)
    for (uint64_t b = first; b < last; b++) {
        float keep[4];
        dropout_keep4(keep, seed, b, p);
        for (int l = 0; l < 4; l++) {
            int64_t i = (int64_t)(b * 4 + (uint64_t)l - offset);
            if (i >= 0 && i < n && keep[l] != 0.0f) dx[i] += dy[i] * scale;
        }
    }
    return MT_OK;
}
