/*
 * attention.c — CPU fused scaled-dot-product attention, forward and backward.
 *
 * Flash-style per query row: the row's scores live only in a per-thread buffer of Tk floats, the
 * softmax is taken there, and the output row is the weighted sum of value rows. The forward saves
 * only the row's log-sum-exp; the backward recomputes the probabilities from it. The backward splits
 * work by (batch, key/value head) so the heads that share a key/value head (MLA's shared latent,
 * grouped-query attention) accumulate into dk/dv from one thread.
 */
#include <immintrin.h>
#include <math.h>

#include "core/error.h"
#include "cpu/cpu.h"

/* Below this many score multiply-adds the forward runs on one thread (about 6 us of work: a spinning
 * worker wakes in 1-2 us; decoding's attentions at batch 32 are larger, at batch 1 smaller). */
#define ATTN_PAR_MIN (1 << 15)

/* x . y as 8 lanes of fused multiply-adds, then (tail + (l0+l4 + l1+l5)) + (l2+l6 + l3+l7). dot4 is
 * the same sum for four rows at once, its chains interleaved so that their latencies overlap (a
 * query row against its keys is latency-bound), and gives the same bits per row. */
static inline float dot_finish(__m256 acc, float tail) {
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    __m128 u = _mm_add_ps(t, _mm_movehdup_ps(t)); /* (l0+l4 + l1+l5, ., l2+l6 + l3+l7, .) */
    return (tail + _mm_cvtss_f32(u)) + _mm_cvtss_f32(_mm_movehl_ps(u, u));
}

static inline float dot(const float *x, const float *y, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j), acc);
    float s = 0.0f;
    for (; j < n; j++) s = fmaf(x[j], y[j], s);
    return dot_finish(acc, s);
}

static inline void dot4(const float *x, const float *y0, const float *y1, const float *y2, const float *y3, int64_t n,
                        float *out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 xv = _mm256_loadu_ps(x + j);
        a0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y0 + j), a0);
        a1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y1 + j), a1);
        a2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y2 + j), a2);
        a3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y3 + j), a3);
    }
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    for (; j < n; j++) {
        s0 = fmaf(x[j], y0[j], s0);
        s1 = fmaf(x[j], y1[j], s1);
        s2 = fmaf(x[j], y2[j], s2);
        s3 = fmaf(x[j], y3[j], s3);
    }
    out[0] = dot_finish(a0, s0);
    out[1] = dot_finish(a1, s1);
    out[2] = dot_finish(a2, s2);
    out[3] = dot_finish(a3, s3);
}

/* Scores of query row i of (b, h) (key/value head hk) against keys 0..jend of k into s (already
 * scaled and masked); returns the row maximum (-inf when every key is masked). */
static float row_scores(float *s, const float *qi, const float *k, int64_t jend, int64_t b, int64_t h, int64_t hk,
                        int64_t i, const mt_attn_desc *ad) {
    const float *mrow = ad->mask ? ad->mask + b * ad->mask_sb + h * ad->mask_sh + i * ad->mask_si : NULL;
    float m = -INFINITY;
    int64_t j = 0;
    for (; j + 4 <= jend; j += 4) {
        float d4[4];
        dot4(qi, k + mt_attn_kv_row(ad, b, hk, j) * ad->D, k + mt_attn_kv_row(ad, b, hk, j + 1) * ad->D,
             k + mt_attn_kv_row(ad, b, hk, j + 2) * ad->D, k + mt_attn_kv_row(ad, b, hk, j + 3) * ad->D, ad->D, d4);
        for (int u = 0; u < 4; u++) {
            float v = d4[u] * ad->scale;
            if (mrow) v += mrow[j + u];
            s[j + u] = v;
            m = v > m ? v : m;
        }
    }
    for (; j < jend; j++) {
        float v = dot(qi, k + mt_attn_kv_row(ad, b, hk, j) * ad->D, ad->D) * ad->scale;
        if (mrow) v += mrow[j];
        s[j] = v;
        m = v > m ? v : m;
    }
    return m;
}

static inline int64_t causal_end(const mt_attn_desc *ad, int64_t i) {
    if (!ad->causal) return ad->Tk;
    int64_t e = i + (ad->Tk - ad->Tq) + 1;
    return e < 0 ? 0 : (e > ad->Tk ? ad->Tk : e);
}

mt_status mt_cpu_attention_fwd(mt_exec *ex, float *out, float *lse, const float *q, const float *k, const float *v,
                               const mt_attn_desc *ad) {
    int nt = mt_cpu_threads(ex);
    int64_t rows = ad->B * ad->H * ad->Tq;
    if (rows * ad->Tk * ad->D < ATTN_PAR_MIN) nt = 1;
    float *scratch = mt_exec_scratch(ex, sizeof(float) * (size_t)(ad->Tk * nt));
    if (!scratch) return mt_error(MT_ERR_NOMEM, "attention: out of memory for scores");
    int64_t group = ad->H / ad->Hk;
#pragma omp parallel num_threads(nt)
    {
        float *s = scratch + (size_t)(ad->Tk * omp_get_thread_num());
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            int64_t i = r % ad->Tq, bh = r / ad->Tq, h = bh % ad->H, b = bh / ad->H;
            int64_t hk = h / group;
            const float *qi = q + r * ad->D;
            float *o = out + r * ad->Dv;
            int64_t jend = causal_end(ad, i);
            float m = row_scores(s, qi, k, jend, b, h, hk, i, ad);
            for (int64_t d = 0; d < ad->Dv; d++) o[d] = 0.0f;
            if (m == -INFINITY) {
                lse[r] = -INFINITY;
                continue;
            }
            float sum = 0.0f;
            for (int64_t j = 0; j < jend; j++) {
                float p = mt_expf(s[j] - m);
                sum += p;
                if (p == 0.0f) continue;
                const float *vj = v + mt_attn_kv_row(ad, b, hk, j) * ad->Dv;
                for (int64_t d = 0; d < ad->Dv; d++) o[d] += p * vj[d];
            }
            float inv = 1.0f / sum;
            for (int64_t d = 0; d < ad->Dv; d++) o[d] *= inv;
            lse[r] = m + logf(sum);
        }
    }
    return MT_OK;
}

mt_status mt_cpu_attention_bwd(mt_exec *ex, float *dq, float *dk, float *dv, const float *dout, const float *out,
                               const float *lse, const float *q, const float *k, const float *v,
                               const mt_attn_desc *ad) {
    if (ad->kv_rows) return mt_error(MT_ERR_UNSUPPORTED, "attention backward: paged keys (a decoding cache)");
    int nt = mt_cpu_threads(ex);
    int64_t groups = ad->B * ad->Hk, hpg = ad->H / ad->Hk;
    if (ad->B * ad->H * ad->Tq * ad->Tk * ad->D < MT_CPU_PAR_MIN) nt = 1;
    float *scratch = mt_exec_scratch(ex, sizeof(float) * (size_t)(ad->Tk * nt));
    if (!scratch) return mt_error(MT_ERR_NOMEM, "attention backward: out of memory for scores");
#pragma omp parallel num_threads(nt)
    {
        float *s = scratch + (size_t)(ad->Tk * omp_get_thread_num());
#pragma omp for schedule(dynamic, 1)
        for (int64_t gi = 0; gi < groups; gi++) {
            int64_t b = gi / ad->Hk, hk = gi % ad->Hk;
            const float *kbh = k + gi * ad->Tk * ad->D, *vbh = v + gi * ad->Tk * ad->Dv;
            float *dkbh = dk ? dk + gi * ad->Tk * ad->D : NULL, *dvbh = dv ? dv + gi * ad->Tk * ad->Dv : NULL;
            for (int64_t h = hk * hpg; h < (hk + 1) * hpg; h++) {
                for (int64_t i = 0; i < ad->Tq; i++) {
                    int64_t r = (b * ad->H + h) * ad->Tq + i;
                    if (lse[r] == -INFINITY) continue;
                    const float *qi = q + r * ad->D, *gi_ = dout + r * ad->Dv, *oi = out + r * ad->Dv;
                    int64_t jend = causal_end(ad, i);
                    row_scores(s, qi, k, jend, b, h, hk, i, ad);
                    float Di = dot(gi_, oi, ad->Dv);
                    float *dqi = dq ? dq + r * ad->D : NULL;
                    for (int64_t j = 0; j < jend; j++) {
                        float p = mt_expf(s[j] - lse[r]);
                        if (p == 0.0f) continue;
                        if (dvbh) {
                            float *dvj = dvbh + j * ad->Dv;
                            for (int64_t d = 0; d < ad->Dv; d++) dvj[d] += p * gi_[d];
                        }
                        float ds = p * (dot(gi_, vbh + j * ad->Dv, ad->Dv) - Di) * ad->scale;
                        if (dqi) {
                            const float *kj = kbh + j * ad->D;
                            for (int64_t d = 0; d < ad->D; d++) dqi[d] += ds * kj[d];
                        }
                        if (dkbh) {
                            float *dkj = dkbh + j * ad->D;
                            for (int64_t d = 0; d < ad->D; d++) dkj[d] += ds * qi[d];
                        }
                    }
                }
            }
        }
    }
    return MT_OK;
}
