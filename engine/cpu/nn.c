/*
 * nn.c — CPU kernels of the fused nn ops: softmax, layer/RMS norm, embedding, cross-entropy, RoPE,
 * AdamW. Rows are independent and split across threads. Row sums and maxima are `omp simd`
 * reductions: that lets gcc vectorise them (8 partial sums) without -ffast-math's licence to reorder
 * everything else.
 */
#include <string.h>

#include "core/error.h"
#include "core/numeric.h"
#include "cpu/cpu.h"

static inline float row_sum(const float *x, int64_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) s += x[j];
    return s;
}

static inline float row_dot(const float *x, const float *y, int64_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) s += x[j] * y[j];
    return s;
}

/* One row: max, then exp and its sum, then the scaling. With a row buffer e (streamed outputs) the
 * exponentials stay in e and the scaled row is written once with streaming stores; otherwise the
 * row is scaled in place. */
MT_CPU_CLONES static void softmax_row(float *o, const float *xr, float *e, int64_t C, int log, int stream) {
    float m = mt_cpu_row_max(xr, C);
    if (m == -INFINITY) m = 0.0f; /* a fully masked row: exp gives zeros, sum 0 -> NaN as PyTorch */
    float s = 0.0f;
    if (log) {
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < C; j++) s += mt_expf(xr[j] - m);
        float ls = logf(s) + m;
        if (stream) {
            mt_stream_axpb(o, xr, 1.0f, -ls, C);
        } else {
            for (int64_t j = 0; j < C; j++) o[j] = xr[j] - ls;
        }
        return;
    }
    float *dst = e ? e : o;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < C; j++) {
        float v = mt_expf(xr[j] - m);
        dst[j] = v;
        s += v;
    }
    float inv = 1.0f / s;
    if (e) {
        mt_stream_axpb(o, e, inv, 0.0f, C);
    } else {
        for (int64_t j = 0; j < C; j++) o[j] *= inv;
    }
}

/* Streamed outputs (MT_CPU_STREAM_MIN bytes or more) use a per-thread row buffer from the scratch. */
mt_status mt_cpu_softmax_fwd(mt_exec *ex, float *out, const float *x, int64_t N, int64_t C, int log) {
    int nt = mt_cpu_threads(ex);
    if (N * C <= MT_CPU_PAR_MIN) nt = 1;
    int stream = N * C * (int64_t)sizeof(float) >= MT_CPU_STREAM_MIN;
    float *rows = NULL;
    if (stream && !log) {
        rows = mt_exec_scratch(ex, sizeof(float) * (size_t)(C * nt));
        if (!rows) return mt_error(MT_ERR_NOMEM, "softmax: out of memory for %d row buffers", nt);
    }
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *e = rows ? rows + (size_t)C * (size_t)omp_get_thread_num() : NULL;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) softmax_row(out + n * C, x + n * C, e, C, log, stream);
        if (stream) mt_stream_fence();
    }
    return MT_OK;
}

mt_status mt_cpu_softmax_bwd(mt_exec *ex, float *dx, const float *dy, const float *y, int64_t N, int64_t C, int log) {
    int nt = mt_cpu_threads(ex);
#pragma omp parallel for num_threads(nt) if (N * C > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *g = dy + n * C, *yr = y + n * C;
        float *d = dx + n * C;
        if (log) { /* dx = dy - softmax * sum(dy) */
            float s = row_sum(g, C);
            for (int64_t j = 0; j < C; j++) d[j] += g[j] - mt_expf(yr[j]) * s;
        } else { /* dx = y * (dy - sum(dy * y)) */
            float s = row_dot(g, yr, C);
            for (int64_t j = 0; j < C; j++) d[j] += yr[j] * (g[j] - s);
        }
    }
    return MT_OK;
}

/* Outputs of MT_CPU_STREAM_MIN bytes or more are computed in chunks into an L1 buffer and streamed. */
mt_status mt_cpu_layernorm_fwd(mt_exec *ex, float *out, float *mean, float *rstd, const float *x, const float *w,
                               const float *b, int64_t N, int64_t C, float eps, uint16_t *out_bf16) {
    int nt = mt_cpu_threads(ex);
    int stream = N * C * (int64_t)sizeof(float) >= MT_CPU_STREAM_MIN;
#pragma omp parallel num_threads(nt) if (N * C > MT_CPU_PAR_MIN)
    {
        float buf[MT_CPU_CHUNK] __attribute__((aligned(64)));
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * C;
            float *o = out + n * C;
            float m = row_sum(xr, C) / (float)C;
            float v = 0.0f; /* two passes (mean, then squares about it): no cancellation */
#pragma omp simd reduction(+ : v)
            for (int64_t j = 0; j < C; j++) v += (xr[j] - m) * (xr[j] - m);
            float rs = 1.0f / sqrtf(v / (float)C + eps);
            for (int64_t c0 = 0; c0 < C; c0 += MT_CPU_CHUNK) {
                int64_t len = C - c0 < MT_CPU_CHUNK ? C - c0 : MT_CPU_CHUNK;
                float *dst = stream ? buf : o + c0;
                const float *xc = xr + c0, *wc = w + c0;
                if (b) {
                    const float *bc = b + c0;
                    for (int64_t j = 0; j < len; j++) dst[j] = (xc[j] - m) * rs * wc[j] + bc[j];
                } else {
                    for (int64_t j = 0; j < len; j++) dst[j] = (xc[j] - m) * rs * wc[j];
                }
                if (out_bf16)
                    for (int64_t j = 0; j < len; j++) out_bf16[n * C + c0 + j] = mt_f32_to_bf16(dst[j]);
                if (stream) mt_stream_copy(o + c0, buf, len);
            }
            if (mean) mean[n] = m;
            if (rstd) rstd[n] = rs;
        }
        if (stream) mt_stream_fence();
    }
    return MT_OK;
}

/* dw/db are sums over rows: each thread sums its rows into a private slice of scratch, then the
 * slices are added, so no two threads write the same address. */
mt_status mt_cpu_layernorm_bwd(mt_exec *ex, float *dx, float *dw, float *db, const float *dout, const float *x,
                               const float *w, const float *mean, const float *rstd, int64_t N, int64_t C) {
    int nt = mt_cpu_threads(ex);
    if (N * C <= MT_CPU_PAR_MIN) nt = 1;
    float *part = NULL;
    if (dw || db) {
        part = mt_exec_scratch(ex, sizeof(float) * (size_t)(2 * C * nt));
        if (!part) return mt_error(MT_ERR_NOMEM, "layer_norm backward: out of memory");
        memset(part, 0, sizeof(float) * (size_t)(2 * C * nt));
    }
#pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num();
        float *pw = part ? part + (size_t)(2 * C * tid) : NULL, *pb = part ? pw + C : NULL;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * C, *g = dout + n * C;
            float m = mean[n], rs = rstd[n];
            float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
            for (int64_t j = 0; j < C; j++) {
                float gw = g[j] * w[j];
                sum_g += gw;
                sum_gx += gw * (xr[j] - m) * rs;
            }
            if (pw) { /* pb is pw + C */
                for (int64_t j = 0; j < C; j++) {
                    pw[j] += g[j] * (xr[j] - m) * rs;
                    pb[j] += g[j];
                }
            }
            if (dx) {
                float *d = dx + n * C;
                float a = sum_g / (float)C, c = sum_gx / (float)C;
                for (int64_t j = 0; j < C; j++) {
                    float xh = (xr[j] - m) * rs;
                    d[j] += (g[j] * w[j] - a - xh * c) * rs;
                }
            }
        }
    }
    if (part) {
        for (int t = 0; t < nt; t++) {
            const float *pw = part + (size_t)(2 * C * t), *pb = pw + C;
            if (dw)
                for (int64_t j = 0; j < C; j++) dw[j] += pw[j];
            if (db)
                for (int64_t j = 0; j < C; j++) db[j] += pb[j];
        }
    }
    return MT_OK;
}

mt_status mt_cpu_rmsnorm_fwd(mt_exec *ex, float *out, float *rstd, const float *x, const float *w, int64_t N,
                             int64_t C, float eps, uint16_t *out_bf16) {
    int nt = mt_cpu_threads(ex);
    int stream = N * C * (int64_t)sizeof(float) >= MT_CPU_STREAM_MIN;
#pragma omp parallel num_threads(nt) if (N * C > MT_CPU_PAR_MIN)
    {
        float buf[MT_CPU_CHUNK] __attribute__((aligned(64)));
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * C;
            float rs = 1.0f / sqrtf(row_dot(xr, xr, C) / (float)C + eps);
            float *o = out + n * C;
            for (int64_t c0 = 0; c0 < C; c0 += MT_CPU_CHUNK) {
                int64_t len = C - c0 < MT_CPU_CHUNK ? C - c0 : MT_CPU_CHUNK;
                float *dst = stream ? buf : o + c0;
                const float *xc = xr + c0, *wc = w + c0;
                for (int64_t j = 0; j < len; j++) dst[j] = xc[j] * rs * wc[j];
                if (out_bf16)
                    for (int64_t j = 0; j < len; j++) out_bf16[n * C + c0 + j] = mt_f32_to_bf16(dst[j]);
                if (stream) mt_stream_copy(o + c0, buf, len);
            }
            if (rstd) rstd[n] = rs;
        }
        if (stream) mt_stream_fence();
    }
    return MT_OK;
}

mt_status mt_cpu_rmsnorm_bwd(mt_exec *ex, float *dx, float *dw, const float *dout, const float *x, const float *w,
                             const float *rstd, int64_t N, int64_t C) {
    int nt = mt_cpu_threads(ex);
    if (N * C <= MT_CPU_PAR_MIN) nt = 1;
    float *part = NULL;
    if (dw) {
        part = mt_exec_scratch(ex, sizeof(float) * (size_t)(C * nt));
        if (!part) return mt_error(MT_ERR_NOMEM, "rms_norm backward: out of memory");
        memset(part, 0, sizeof(float) * (size_t)(C * nt));
    }
#pragma omp parallel num_threads(nt)
    {
        float *pw = part ? part + (size_t)(C * omp_get_thread_num()) : NULL;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * C, *g = dout + n * C;
            float rs = rstd[n];
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int64_t j = 0; j < C; j++) s += g[j] * w[j] * xr[j];
            if (pw)
                for (int64_t j = 0; j < C; j++) pw[j] += g[j] * xr[j] * rs;
            if (dx) {
                float *d = dx + n * C;
                float c = s * rs * rs * rs / (float)C;
                for (int64_t j = 0; j < C; j++) d[j] += g[j] * w[j] * rs - xr[j] * c;
            }
        }
    }
    if (part)
        for (int t = 0; t < nt; t++)
            for (int64_t j = 0; j < C; j++) dw[j] += part[(size_t)(C * t) + (size_t)j];
    return MT_OK;
}

mt_status mt_cpu_embedding_fwd(mt_exec *ex, float *out, const float *table, const int32_t *ids, int64_t N,
                               int64_t C, float scale) {
    int nt = mt_cpu_threads(ex);
#pragma omp parallel for num_threads(nt) if (N * C > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *src = table + (int64_t)ids[n] * C;
        if (scale == 1.0f) { /* the words as they are (index_rows gathers other 4-byte dtypes too) */
            memcpy(out + n * C, src, sizeof(float) * (size_t)C);
        } else {
            for (int64_t j = 0; j < C; j++) out[n * C + j] = src[j] * scale;
        }
    }
    return MT_OK;
}

/* Rows may repeat, so threads split the columns, not the rows: each owns a column range. */
mt_status mt_cpu_embedding_bwd(mt_exec *ex, float *dtable, const float *dout, const int32_t *ids, int64_t N,
                               int64_t C, float scale) {
    int nt = mt_cpu_threads(ex);
    if (N * C <= MT_CPU_PAR_MIN || C < 64) nt = 1;
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int64_t c0 = C * t / T, c1 = C * (t + 1) / T;
        for (int64_t n = 0; n < N; n++) {
            float *d = dtable + (int64_t)ids[n] * C;
            const float *g = dout + n * C;
            for (int64_t j = c0; j < c1; j++) d[j] += g[j] * scale;
        }
    }
    return MT_OK;
}

/* Cross-entropy's row pieces, shared by the forward, the backward and the fused classifier: the row's
 * log-sum-exp, its smoothed loss for target t, and one logit's gradient (scale = dloss / count). */
static inline float ce_lse(const float *x, int64_t V) {
    float m = mt_cpu_row_max(x, V);
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < V; j++) s += mt_expf(x[j] - m);
    return m + logf(s);
}

static inline float ce_loss(const float *x, int64_t V, float l, int32_t t, float eps) {
    float nll = l - x[t];
    float smooth = eps > 0.0f ? l - row_sum(x, V) / (float)V : 0.0f;
    return (1.0f - eps) * nll + eps * smooth;
}

static inline float ce_grad(float x, float l, float scale, float off) { return scale * (mt_expf(x - l) - off); }

mt_status mt_cpu_cross_entropy_fwd(mt_exec *ex, float *loss, float *count, float *lse, const float *logits,
                                   const int32_t *targets, int64_t N, int64_t V, float eps, int ignore_index) {
    int nt = mt_cpu_threads(ex);
    double total = 0.0;
    int64_t cnt = 0;
#pragma omp parallel for num_threads(nt) if (N * V > MT_CPU_PAR_MIN) schedule(static) reduction(+ : total, cnt)
    for (int64_t n = 0; n < N; n++) {
        const float *x = logits + n * V;
        float l = ce_lse(x, V);
        lse[n] = l;
        int32_t t = targets[n];
        if (t == ignore_index) continue;
        total += (double)ce_loss(x, V, l, t, eps);
        cnt++;
    }
    *count = (float)cnt;
    *loss = cnt ? (float)(total / (double)cnt) : 0.0f;
    return MT_OK;
}

mt_status mt_cpu_cross_entropy_bwd(mt_exec *ex, float *dlogits, const float *dloss, const float *count,
                                   const float *lse, const float *logits, const int32_t *targets, int64_t N,
                                   int64_t V, float eps, int ignore_index) {
    int nt = mt_cpu_threads(ex);
    if (*count == 0.0f) return MT_OK;
    float scale = *dloss / *count, off = eps / (float)V;
#pragma omp parallel for num_threads(nt) if (N * V > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        int32_t t = targets[n];
        if (t == ignore_index) continue;
        const float *x = logits + n * V;
        float *d = dlogits + n * V;
        float l = lse[n];
        for (int64_t j = 0; j < V; j++) d[j] += ce_grad(x[j], l, scale, off);
        d[t] -= scale * (1.0f - eps);
    }
    return MT_OK;
}

/* The fused classifier (backend.h): cross_entropy_fwd's row pass, then the row overwritten by
 * cross_entropy_bwd's expression while it is still in cache: one pass less over the logits (tens of
 * MB a step), no dlogits buffer and no zeroing of one. The counted rows are counted first, so 1/count
 * is known in the row pass; loss, count and every gradient are the bits of the unfused pair. */
mt_status mt_cpu_cross_entropy_fused(mt_exec *ex, float *loss, float *count, float *logits, const int32_t *targets,
                                     const float *dloss, int64_t N, int64_t V, float eps, int ignore_index) {
    int nt = mt_cpu_threads(ex);
    int64_t cnt = 0;
    for (int64_t n = 0; n < N; n++) cnt += targets[n] != ignore_index;
    double total = 0.0;
    float scale = cnt ? *dloss / (float)cnt : 0.0f, off = eps / (float)V, hit = scale * (1.0f - eps);
#pragma omp parallel for num_threads(nt) if (N * V > MT_CPU_PAR_MIN) schedule(static) reduction(+ : total)
    for (int64_t n = 0; n < N; n++) {
        float *x = logits + n * V;
        float l = ce_lse(x, V);
        int32_t t = targets[n];
        if (t == ignore_index) {
            memset(x, 0, sizeof(float) * (size_t)V);
            continue;
        }
        total += (double)ce_loss(x, V, l, t, eps);
        for (int64_t j = 0; j < V; j++) x[j] = ce_grad(x[j], l, scale, off);
        x[t] -= hit;
    }
    *count = (float)cnt;
    *loss = cnt ? (float)(total / (double)cnt) : 0.0f;
    return MT_OK;
}

mt_status mt_cpu_rope(mt_exec *ex, float *out, const float *x, int64_t R, int64_t T, int64_t D, int64_t pos0,
                      float base, float sign, int accumulate) {
    int nt = mt_cpu_threads(ex);
    int64_t half = D / 2;
    /* The angles depend on (t, i) only: one (cos, sin) table for all R rows, computed with the same
     * float32 arithmetic as the PyTorch reference (inv_freq = 1 / base^(2i/D)), so results are the
     * same as computing them per row. */
    float *cs = mt_exec_scratch(ex, sizeof(float) * (size_t)(2 * T * half));
    if (!cs && T * half > 0) return mt_error(MT_ERR_NOMEM, "rope: out of memory for the angle table");
    for (int64_t t = 0; t < T; t++) {
        float pos = (float)(pos0 + t);
        for (int64_t i = 0; i < half; i++) {
            float inv_freq = 1.0f / powf(base, (float)(2 * i) / (float)D);
            float ang = pos * inv_freq;
            cs[2 * (t * half + i)] = cosf(ang);
            cs[2 * (t * half + i) + 1] = sign * sinf(ang);
        }
    }
#pragma omp parallel for num_threads(nt) if (R * T * D > MT_CPU_PAR_MIN) schedule(static) collapse(2)
    for (int64_t r = 0; r < R; r++) {
        for (int64_t t = 0; t < T; t++) {
            const float *xp = x + (r * T + t) * D;
            float *op = out + (r * T + t) * D;
            const float *ct = cs + 2 * t * half;
            for (int64_t i = 0; i < half; i++) {
                float c = ct[2 * i], s = ct[2 * i + 1];
                mt_rope_pair(xp[2 * i], xp[2 * i + 1], c, s, op + 2 * i, accumulate);
            }
        }
    }
    return MT_OK;
}

mt_status mt_cpu_adamw_clip(mt_exec *ex, float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                            float b2, float eps, float wd, float bc1, float bc2, const float *ss, double clip_norm) {
    float scale = mt_clip_scale(*ss, clip_norm);
    if (isnan(scale)) return MT_OK;
    return mt_cpu_adamw(ex, p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, scale);
}

/* The squared norm of every slot's gradient: each slot's sum as mt_cpu_sumsq gives it (in double;
 * above MT_CPU_PAR_MIN elements a slice per thread, added in thread order), the slots' sums added to
 * out in slot order; but one parallel region for them all, the small slots shared out whole among
 * the threads. */
mt_status mt_cpu_sumsq_multi(mt_exec *ex, float *out, const mt_adamw_slot *slots, int n_slots, int accumulate) {
    int nt = mt_cpu_threads(ex);
    if (!accumulate) *out = 0.0f;
    if (n_slots <= 0) return MT_OK;
    double *part = mt_exec_scratch(ex, sizeof(double) * (size_t)nt * (size_t)n_slots);
    if (!part) return mt_error(MT_ERR_NOMEM, "sumsq: out of memory for %d x %d partial sums", nt, n_slots);
    int team = 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        for (int i = 0; i < n_slots; i++) {
            const float *x = slots[i].g;
            int64_t n = slots[i].n, i0 = 0, i1 = n;
            if (n > MT_CPU_PAR_MIN) {
                int64_t q = n / T, r = n % T;
                i0 = q * t + (t < r ? t : r);
                i1 = i0 + q + (t < r);
            } else if (i % T != t) {
                continue;
            }
            part[(size_t)i * (size_t)T + (size_t)t] = mt_sumsq_range(x, i0, i1);
        }
#pragma omp single
        team = T; /* the team's real size */
    }
    float total = *out;
    for (int i = 0; i < n_slots; i++) {
        const double *pi = part + (size_t)i * (size_t)team;
        double sum = pi[slots[i].n > MT_CPU_PAR_MIN ? 0 : i % team];
        if (slots[i].n > MT_CPU_PAR_MIN)
            for (int k = 1; k < team; k++) sum += pi[k];
        total += (float)sum;
    }
    *out = total;
    return MT_OK;
}

/* Every slot in one parallel region: the slots' elements taken end to end are cut into one range per
 * thread, and each thread updates its range (and zeroes those gradients) in one pass. Each element's
 * update depends on that element alone, so the values are those of a call per slot. */
mt_status mt_cpu_adamw_multi(mt_exec *ex, const mt_adamw_slot *slots, int n_slots, float lr, float b1, float b2,
                             float eps, float bc1, float bc2, const float *ss, double clip_norm, int zero_grad) {
    float scale = mt_clip_scale(*ss, clip_norm);
    int update = !isnan(scale);
    float step_size = lr / bc1, sqrt_bc2 = sqrtf(bc2);
    int64_t total = 0;
    for (int i = 0; i < n_slots; i++) total += slots[i].n;
    int nt = mt_cpu_threads(ex);
    if (total <= MT_CPU_PAR_MIN) nt = 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int64_t lo = total * t / T, hi = total * (t + 1) / T, base = 0;
        for (int i = 0; i < n_slots && base < hi; base += slots[i].n, i++) {
            int64_t a = lo > base ? lo - base : 0, b = hi - base < slots[i].n ? hi - base : slots[i].n;
            if (a >= b) continue;
            const mt_adamw_slot *s = &slots[i];
            float *p = s->p, *g = s->g, *m = s->m, *v = s->v, wd = s->wd;
            if (update)
                for (int64_t k = a; k < b; k++)
                    mt_adamw_elem(&p[k], g[k], &m[k], &v[k], lr, b1, b2, eps, wd, step_size, sqrt_bc2, scale);
            if (zero_grad) memset(g + a, 0, sizeof(float) * (size_t)(b - a));
        }
    }
    return MT_OK;
}

mt_status mt_cpu_adamw(mt_exec *ex, float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                       float b2, float eps, float wd, float bc1, float bc2, float grad_scale) {
    int nt = mt_cpu_threads(ex);
    float step_size = lr / bc1, sqrt_bc2 = sqrtf(bc2);
#pragma omp parallel for num_threads(nt) if (n > MT_CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        mt_adamw_elem(&p[i], g[i], &m[i], &v[i], lr, b1, b2, eps, wd, step_size, sqrt_bc2, grad_scale);
    return MT_OK;
}
