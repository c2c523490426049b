/*
 * reduce.c — CPU sum/max reductions over any set of axes, their backward, argmax, sum of squares.
 *
 * A reduction is first collapsed: size-1 axes dropped, neighbouring axes of the same kind merged.
 * With one reduced group it is (outer, R, inner) and runs as vector loops; with several groups
 * (rare: e.g. axes {0, 2} of a 3-D tensor) a plain index walk does it.
 */
#include <float.h>
#include <stdlib.h>

#include "core/error.h"
#include "cpu/cpu.h"

typedef struct reduce3 {
    int simple;                  /* 1: one reduced group -> (outer, R, inner) */
    int64_t outer, R, inner;
    int ndim;                    /* collapsed description for the general walk */
    int64_t shape[MT_MAX_DIMS];
    int red[MT_MAX_DIMS];
} reduce3;

static reduce3 collapse(const mt_reduce_desc *rd) {
    reduce3 c = {0};
    for (int d = 0; d < rd->ndim; d++) {
        if (rd->shape[d] == 1) continue;
        int r = (rd->axes >> d) & 1u;
        if (c.ndim > 0 && c.red[c.ndim - 1] == r) {
            c.shape[c.ndim - 1] *= rd->shape[d];
        } else {
            c.shape[c.ndim] = rd->shape[d];
            c.red[c.ndim] = r;
            c.ndim++;
        }
    }
    int groups = 0;
    for (int d = 0; d < c.ndim; d++) groups += c.red[d];
    c.outer = c.R = c.inner = 1;
    if (groups <= 1) {
        c.simple = 1;
        int seen = 0;
        for (int d = 0; d < c.ndim; d++) {
            if (c.red[d]) {
                c.R = c.shape[d];
                seen = 1;
            } else if (!seen) {
                c.outer *= c.shape[d];
            } else {
                c.inner *= c.shape[d];
            }
        }
    }
    return c;
}

/* Output index of x's flat index i in the general walk. */
static int64_t general_out_index(const reduce3 *c, int64_t i) {
    int64_t o = 0, mult = 1;
    for (int d = c->ndim - 1; d >= 0; d--) {
        int64_t idx = i % c->shape[d];
        i /= c->shape[d];
        if (!c->red[d]) {
            o += idx * mult;
            mult *= c->shape[d];
        }
    }
    return o;
}

static inline float sum_run(const float *x, int64_t n) {
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) acc[k] += x[j + k];
    float s = 0.0f;
    for (; j < n; j++) s += x[j];
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

mt_status mt_cpu_reduce_fwd(mt_exec *ex, mt_reduce_op op, float *out, int32_t *argidx, const float *x,
                            const mt_reduce_desc *rd, int accumulate) {
    int nt = mt_cpu_threads(ex);
    reduce3 c = collapse(rd);
    int64_t n_out = rd->n_out;
    int is_max = op == MT_REDUCE_MAX;
    if (!c.simple) {
        int64_t n_in = rd->n_out * rd->n_red;
        float *tmp = mt_exec_scratch(ex, (size_t)n_out * sizeof(float));
        if (!tmp) return mt_error(MT_ERR_NOMEM, "reduce: out of memory");
        for (int64_t o = 0; o < n_out; o++) {
            tmp[o] = is_max ? -INFINITY : 0.0f;
            if (is_max && argidx) argidx[o] = -1;
        }
        for (int64_t i = 0; i < n_in; i++) {
            int64_t o = general_out_index(&c, i);
            if (!is_max) {
                tmp[o] += x[i];
            } else if (x[i] > tmp[o] || (argidx && argidx[o] < 0)) {
                tmp[o] = x[i];
                if (argidx) argidx[o] = (int32_t)i;
            }
        }
        for (int64_t o = 0; o < n_out; o++) out[o] = accumulate ? out[o] + tmp[o] : tmp[o];
        return MT_OK;
    }
    int64_t outer = c.outer, R = c.R, inner = c.inner;
    if (inner == 1) {
#pragma omp parallel for num_threads(nt) if (outer * R > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t o = 0; o < outer; o++) {
            const float *row = x + o * R;
            float v;
            if (is_max) {
                int64_t best = 0;
                for (int64_t r = 1; r < R; r++)
                    if (row[r] > row[best]) best = r;
                v = row[best];
                if (argidx) argidx[o] = (int32_t)(o * R + best);
            } else {
                v = sum_run(row, R);
            }
            out[o] = accumulate ? out[o] + v : v;
        }
        return MT_OK;
    }
    /* inner > 1: accumulate whole inner rows (vectorised over the inner axis). When outer is small,
     * split the inner axis across threads instead. */
    int64_t chunks = outer >= nt ? 1 : (inner + 255) / 256;
#pragma omp parallel for num_threads(nt) if (outer * R * inner > MT_CPU_PAR_MIN) schedule(static) collapse(2)
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t ch = 0; ch < chunks; ch++) {
            int64_t i0 = ch * 256, i1 = chunks == 1 ? inner : (i0 + 256 < inner ? i0 + 256 : inner);
            float *dst = out + o * inner;
            const float *src = x + o * R * inner;
            if (is_max) {
                for (int64_t i = i0; i < i1; i++) {
                    float best = src[i];
                    int64_t bi = 0;
                    for (int64_t r = 1; r < R; r++)
                        if (src[r * inner + i] > best) {
                            best = src[r * inner + i];
                            bi = r;
                        }
                    dst[i] = accumulate ? dst[i] + best : best;
                    if (argidx) argidx[o * inner + i] = (int32_t)((o * R + bi) * inner + i);
                }
            } else {
                if (!accumulate)
                    for (int64_t i = i0; i < i1; i++) dst[i] = 0.0f;
                for (int64_t r = 0; r < R; r++) {
                    const float *s = src + r * inner;
                    for (int64_t i = i0; i < i1; i++) dst[i] += s[i];
                }
            }
        }
    }
    return MT_OK;
}

mt_status mt_cpu_reduce_bwd(mt_exec *ex, mt_reduce_op op, float *dx, const float *dy, const int32_t *argidx,
                            const mt_reduce_desc *rd, float scale) {
    int nt = mt_cpu_threads(ex);
    if (op == MT_REDUCE_MAX) {
        for (int64_t o = 0; o < rd->n_out; o++) dx[argidx[o]] += dy[o] * scale;
        return MT_OK;
    }
    reduce3 c = collapse(rd);
    if (!c.simple) {
        int64_t n_in = rd->n_out * rd->n_red;
        for (int64_t i = 0; i < n_in; i++) dx[i] += dy[general_out_index(&c, i)] * scale;
        return MT_OK;
    }
    int64_t outer = c.outer, R = c.R, inner = c.inner;
#pragma omp parallel for num_threads(nt) if (outer * R * inner > MT_CPU_PAR_MIN) schedule(static) collapse(2)
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t r = 0; r < R; r++) {
            float *d = dx + (o * R + r) * inner;
            const float *g = dy + o * inner;
            for (int64_t i = 0; i < inner; i++) d[i] += g[i] * scale;
        }
    }
    return MT_OK;
}

mt_status mt_cpu_argmax(mt_exec *ex, int32_t *out, const float *x, int64_t outer, int64_t n, int64_t inner) {
    int nt = mt_cpu_threads(ex);
#pragma omp parallel for num_threads(nt) if (outer * n * inner > MT_CPU_PAR_MIN) schedule(static) collapse(2)
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++) {
            const float *p = x + o * n * inner + i;
            int64_t best = 0;
            for (int64_t r = 1; r < n; r++)
                if (p[r * inner] > p[best * inner]) best = r;
            out[o * inner + i] = (int32_t)best;
        }
    }
    return MT_OK;
}

mt_status mt_cpu_sumsq(mt_exec *ex, float *out, const float *x, int64_t n, int accumulate) {
    int nt = mt_cpu_threads(ex);
    double acc = 0.0;
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static) reduction(+ : acc)
    for (int64_t i = 0; i < n; i++) acc += (double)x[i] * (double)x[i];
    *out = accumulate ? *out + (float)acc : (float)acc;
    return MT_OK;
}
