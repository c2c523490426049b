/*
 * loss.cu — fused softmax cross-entropy with label smoothing and an ignored target (padding), as
 * PyTorch's F.cross_entropy(label_smoothing=eps, ignore_index=...):
 *   loss_n = (1-eps) * (lse_n - x[n,t_n]) + eps * (lse_n - mean_v x[n,v]),  mean over counted rows.
 *
 * Forward: one block per row computes the log-sum-exp in one pass over the logits (online max/sum),
 * the row sum for the smoothing term, and the row's loss; a one-block kernel then adds the row losses
 * (in double, in row order: deterministic) into the device scalars loss and count. Nothing comes back
 * to the host. Backward: dloss and count are read on the device, so the backward queues behind the
 * forward without a host round trip; every logit's gradient is one fused expression.
 *
 * Fused classifier (cross_entropy_fused): the same row pass, then, in the same kernel while the row
 * is still in cache, the row overwritten by its gradient for the device scalar dloss (llm.c's
 * fused_classifier idea, with the smoothing and ignored rows of this loss): two launches instead of
 * three, one pass less over the logits, and no dlogits buffer (the op layer makes the logits' memory
 * their gradient, ops/nn.c).
 *
 * A target outside [0, V) that is not ignore_index is guarded, never read: its row loss is NaN (so
 * the bad batch shows in the loss) and it gets no gradient.
 */
#include "common.cuh"

/* Row n's log-sum-exp (returned to every thread) and, in thread 0, its (loss_n, counted_n) written to
 * rows: one pass over the logits (online max/sum) and the row sum for the smoothing term. */
__device__ float ce_row(float *rows, const float *x, int32_t t, int64_t n, int64_t V, float eps, int ignore_index,
                        float *sh) {
    float m = -INFINITY, s = 0.0f, sx = 0.0f;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        float v = x[j];
        sx += v;
        if (v == -INFINITY) continue;
        if (v > m) {
            s = s * expf(m - v) + 1.0f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    float M = mt_block_max(m, sh);
    float S = mt_block_sum(m == -INFINITY ? 0.0f : s * expf(m - M), sh);
    float SX = mt_block_sum(sx, sh);
    float l = M + logf(S);
    if (threadIdx.x == 0) {
        float loss = 0.0f, counted = 0.0f;
        if (t != ignore_index) {
            counted = 1.0f;
            if (t < 0 || (int64_t)t >= V) {
                loss = NAN;
            } else {
                float nll = l - x[t];
                float smooth = eps > 0.0f ? l - SX / (float)V : 0.0f;
                loss = (1.0f - eps) * nll + eps * smooth;
            }
        }
        rows[2 * n] = loss;
        rows[2 * n + 1] = counted;
    }
    return l;
}

/* rows: (loss_n, counted_n) per row in scratch. */
__global__ void ce_rows_kernel(float *rows, float *lse, const float *logits, const int32_t *targets, int64_t N,
                               int64_t V, float eps, int ignore_index) {
    __shared__ float sh[32];
    int64_t n = blockIdx.x;
    float l = ce_row(rows, logits + n * V, targets[n], n, V, eps, ignore_index, sh);
    if (threadIdx.x == 0) lse[n] = l;
}

/* The fused classifier: ce_rows_kernel's pass, then the row overwritten by its gradient (the
 * expression of ce_bwd_kernel, so the two paths give the same bits). Every block counts the counted
 * rows itself (N target reads, against 2V logit accesses) so that the gradient's 1/count is known
 * without a second launch. */
__global__ void ce_fused_kernel(float *rows, float *logits, const int32_t *targets, const float *dloss, int64_t N,
                                int64_t V, float eps, int ignore_index) {
    __shared__ float sh[32];
    int64_t n = blockIdx.x;
    float *x = logits + n * V;
    int32_t t = targets[n];
    float l = ce_row(rows, x, t, n, V, eps, ignore_index, sh);
    float cnt = 0.0f;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) cnt += targets[i] != ignore_index ? 1.0f : 0.0f;
    float c = mt_block_sum(cnt, sh); /* synchronises: thread 0 has read x[t] before anything is written */
    int live = c != 0.0f && t != ignore_index && t >= 0 && (int64_t)t < V;
    float scale = live ? *dloss / c : 0.0f, off = eps / (float)V, hit = scale * (1.0f - eps);
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        float g = 0.0f;
        if (live) {
            g = scale * (expf(x[j] - l) - off);
            if (j == t) g -= hit;
        }
        x[j] = g;
    }
}

__global__ void ce_total_kernel(float *loss, float *count, const float *rows, int64_t N) {
    __shared__ double sh_l[32], sh_c[32];
    double tl = 0.0, tc = 0.0;
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
        tl += (double)rows[2 * n];
        tc += (double)rows[2 * n + 1];
    }
    tl = mt_warp_sum_d(tl);
    tc = mt_warp_sum_d(tc);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) {
        sh_l[w] = tl;
        sh_c[w] = tc;
    }
    __syncthreads();
    if (w == 0) {
        int nw = blockDim.x >> 5;
        tl = lane < nw ? sh_l[lane] : 0.0;
        tc = lane < nw ? sh_c[lane] : 0.0;
        tl = mt_warp_sum_d(tl);
        tc = mt_warp_sum_d(tc);
        if (lane == 0) {
            *count = (float)tc;
            *loss = tc > 0.0 ? (float)(tl / tc) : 0.0f;
        }
    }
}

/* grid (N, column chunks of blockDim * 4). */
__global__ void ce_bwd_kernel(float *dlogits, const float *dloss, const float *count, const float *lse,
                              const float *logits, const int32_t *targets, int64_t V, float eps, int ignore_index) {
    float c = *count;
    if (c == 0.0f) return;
    int64_t n = blockIdx.x;
    int32_t t = targets[n];
    if (t == ignore_index || t < 0 || (int64_t)t >= V) return;
    float scale = *dloss / c, off = eps / (float)V, hit = scale * (1.0f - eps), l = lse[n];
    const float *x = logits + n * V;
    float *d = dlogits + n * V;
    int64_t j0 = (int64_t)blockIdx.y * blockDim.x * 4;
    for (int k = 0; k < 4; k++) {
        int64_t j = j0 + k * blockDim.x + threadIdx.x;
        if (j >= V) break;
        float g = scale * (expf(x[j] - l) - off);
        if (j == t) g -= hit;
        d[j] += g;
    }
}

extern "C" mt_status mt_cuda_cross_entropy_fwd(mt_exec *ex, float *loss, float *count, float *lse,
                                               const float *logits, const int32_t *targets, int64_t N, int64_t V,
                                               float eps, int ignore_index) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0) {
        MT_CK(cudaMemsetAsync(loss, 0, sizeof(float), cx->stream));
        MT_CK(cudaMemsetAsync(count, 0, sizeof(float), cx->stream));
        mt_cuda_count_launches(2);
        return MT_OK;
    }
    void *scr = NULL;
    MT_TRY(mt_cuda_scratch(cx, (size_t)N * 2 * sizeof(float), &scr));
    ce_rows_kernel<<<mt_grid_rows(N, 1), 256, 0, cx->stream>>>((float *)scr, lse, logits, targets, N, V, eps,
                                                                ignore_index);
    MT_LAUNCHED();
    ce_total_kernel<<<1, 1024, 0, cx->stream>>>(loss, count, (const float *)scr, N);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_cross_entropy_fused(mt_exec *ex, float *loss, float *count, float *logits,
                                                 const int32_t *targets, const float *dloss, int64_t N, int64_t V,
                                                 float eps, int ignore_index) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0) return mt_cuda_cross_entropy_fwd(ex, loss, count, NULL, logits, targets, N, V, eps, ignore_index);
    void *scr = NULL;
    MT_TRY(mt_cuda_scratch(cx, (size_t)N * 2 * sizeof(float), &scr));
    ce_fused_kernel<<<mt_grid_rows(N, 1), 256, 0, cx->stream>>>((float *)scr, logits, targets, dloss, N, V, eps,
                                                                 ignore_index);
    MT_LAUNCHED();
    ce_total_kernel<<<1, 1024, 0, cx->stream>>>(loss, count, (const float *)scr, N);
    MT_LAUNCHED();
    return MT_OK;
}

extern "C" mt_status mt_cuda_cross_entropy_bwd(mt_exec *ex, float *dlogits, const float *dloss, const float *count,
                                               const float *lse, const float *logits, const int32_t *targets,
                                               int64_t N, int64_t V, float eps, int ignore_index) {
    MT_CUDA_ENTER(ex, cx);
    if (N <= 0 || V <= 0) return MT_OK;
    int64_t chunks = (V + 1023) / 1024;
    if (N > 0x7fffffffLL || chunks > 65535) return mt_error(MT_ERR_UNSUPPORTED, "cuda cross_entropy: (%lld, %lld) too large",
                                                           (long long)N, (long long)V);
    dim3 grid((unsigned)N, (unsigned)chunks);
    ce_bwd_kernel<<<grid, 256, 0, cx->stream>>>(dlogits, dloss, count, lse, logits, targets, V, eps, ignore_index);
    MT_LAUNCHED();
    return MT_OK;
}
