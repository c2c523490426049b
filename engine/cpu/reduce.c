/*
 * reduce.c — CPU sum/max reductions over any set of axes, their backward, argmax, sum of squares.
 *
 * A reduction is first collapsed: size-1 axes dropped, neighbouring axes of the same kind merged.
 * With one reduced group it is (outer, R, inner) and runs as vector loops; with several groups
 * (rare: e.g. axes {0, 2} of a 3-D tensor) a gather per output does it.
 */
#include <float.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/reduce_plan.h"
#include "cpu/cpu.h"

/* The general walk (several reduced groups) as a gather: output o is made of its kept-axis indices,
 * and its inputs are visited in increasing flat index (reduced axes, last fastest), so "first
 * maximum" means the same as in the simple paths. Outputs are independent: no scratch, and threads
 * split them. (The scratch must stay free here: binary backward holds it as this kernel's input.) */
typedef struct gather_plan {
    int nk, nr;                       /* kept / reduced groups */
    int64_t ksize[MT_MAX_DIMS], kstr[MT_MAX_DIMS];
    int64_t rsize[MT_MAX_DIMS], rstr[MT_MAX_DIMS];
} gather_plan;

static gather_plan make_gather(const mt_reduce_plan *c) {
    gather_plan g = {0};
    int64_t stride = 1, str[MT_MAX_DIMS];
    for (int d = c->ndim - 1; d >= 0; d--) {
        str[d] = stride;
        stride *= c->shape[d];
    }
    for (int d = 0; d < c->ndim; d++) {
        if (c->red[d]) {
            g.rsize[g.nr] = c->shape[d];
            g.rstr[g.nr++] = str[d];
        } else {
            g.ksize[g.nk] = c->shape[d];
            g.kstr[g.nk++] = str[d];
        }
    }
    return g;
}

static inline int64_t gather_base(const gather_plan *g, int64_t o) {
    int64_t off = 0;
    for (int d = g->nk - 1; d >= 0; d--) {
        off += (o % g->ksize[d]) * g->kstr[d];
        o /= g->ksize[d];
    }
    return off;
}

static inline int64_t gather_red(const gather_plan *g, int64_t r) {
    int64_t off = 0;
    for (int d = g->nr - 1; d >= 0; d--) {
        off += (r % g->rsize[d]) * g->rstr[d];
        r /= g->rsize[d];
    }
    return off;
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
    mt_reduce_plan c = mt_reduce_plan_make(rd);
    int64_t n_out = rd->n_out;
    int is_max = op == MT_REDUCE_MAX;
    if (!c.simple) {
        gather_plan g = make_gather(&c);
        int64_t R = rd->n_red;
#pragma omp parallel for num_threads(nt) if (n_out * R > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t o = 0; o < n_out; o++) {
            int64_t base = gather_base(&g, o), best = base;
            float v = is_max ? x[base] : 0.0f;
            for (int64_t r = is_max ? 1 : 0; r < R; r++) {
                int64_t i = base + gather_red(&g, r);
                if (!is_max) v += x[i];
                else if (x[i] > v) {
                    v = x[i];
                    best = i;
                }
            }
            out[o] = accumulate ? out[o] + v : v;
            if (is_max && argidx) argidx[o] = (int32_t)best;
        }
        return MT_OK;
    }
    int64_t outer = c.outer, R = c.R, inner = c.inner;
    if (inner == 1) {
#pragma omp parallel for num_threads(nt) if (outer * R > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t o = 0; o < outer; o++) {
            const float *row = x + o * R;
            float v;
            if (is_max) {
                int64_t best = mt_cpu_row_argmax(row, R);
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
    mt_reduce_plan c = mt_reduce_plan_make(rd);
    if (!c.simple) {
        gather_plan g = make_gather(&c);
        int64_t n_out = rd->n_out, R = rd->n_red;
#pragma omp parallel for num_threads(nt) if (n_out * R > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t o = 0; o < n_out; o++) {
            int64_t base = gather_base(&g, o);
            float v = dy[o] * scale;
            for (int64_t r = 0; r < R; r++) dx[base + gather_red(&g, r)] += v;
        }
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
    if (inner == 1) { /* rows (the decoder's argmax over the vocabulary) */
#pragma omp parallel for num_threads(nt) if (outer * n > MT_CPU_PAR_MIN) schedule(static)
        for (int64_t o = 0; o < outer; o++) out[o] = (int32_t)mt_cpu_row_argmax(x + o * n, n);
        return MT_OK;
    }
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
    if (n <= MT_CPU_PAR_MIN) nt = 1;
    double part[64], acc = 0.0; /* a slice per thread (those of `omp for schedule(static)`), added in order */
    if (nt > 64) nt = 64;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int64_t q = n / T, r = n % T, i0 = q * t + (t < r ? t : r);
        part[t] = mt_sumsq_range(x, i0, i0 + q + (t < r));
#pragma omp barrier
#pragma omp single
        for (int k = 0; k < T; k++) acc += part[k];
    }
    *out = accumulate ? *out + (float)acc : (float)acc;
    return MT_OK;
}
