/*
 * adamw.cu — the fused AdamW update of one parameter: one pass reads p, g, m, v and writes p, m, v,
 * in the CPU backend's (and PyTorch's) order of float operations:
 *   g *= grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   p = p (1 - lr wd);  p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
 * The master weights, moments and gradients are f32 in every precision mode.
 */
#include "common.cuh"

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2,
                             float eps, float wd, float step_size, float sqrt_bc2, float grad_scale) {
    MT_GRID_STRIDE(i, n) {
        float gi = g[i] * grad_scale;
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float pi = p[i] * (1.0f - lr * wd);
        p[i] = pi - step_size * (mi / (sqrtf(vi) / sqrt_bc2 + eps));
    }
}

extern "C" mt_status mt_cuda_adamw(mt_exec *ex, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                                   float b1, float b2, float eps, float wd, float bc1, float bc2, float grad_scale) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    adamw_kernel<<<mt_blocks(n, MT_THREADS), MT_THREADS, 0, cx->stream>>>(p, g, m, v, n, lr, b1, b2, eps, wd, lr / bc1,
                                                                          sqrtf(bc2), grad_scale);
    MT_LAUNCHED();
    return MT_OK;
}
