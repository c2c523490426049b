/*
 * adamw.cu — the fused AdamW update of one parameter: one pass reads p, g, m, v and writes p, m, v,
 * with the element formula the CPU backend uses (mt_adamw_elem, core/numeric.h: PyTorch's order of float
 * operations).
 * The master weights, moments and gradients are f32 in every precision mode. adamw_clip reads the
 * clipping scale's input (the squared global norm) from device memory, so the host never waits for it.
 */
#include "common.cuh"

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2,
                             float eps, float wd, float step_size, float sqrt_bc2, float grad_scale) {
    MT_GRID_STRIDE(i, n) {
        mt_adamw_elem(&p[i], g[i], &m[i], &v[i], lr, b1, b2, eps, wd, step_size, sqrt_bc2, grad_scale);
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

__global__ void adamw_clip_kernel(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                                  float b2, float eps, float wd, float step_size, float sqrt_bc2, const float *ss,
                                  double clip) {
    float scale = mt_clip_scale(*ss, clip);
    if (isnan(scale)) return; /* non-finite norm: no update */
    MT_GRID_STRIDE(i, n) {
        mt_adamw_elem(&p[i], g[i], &m[i], &v[i], lr, b1, b2, eps, wd, step_size, sqrt_bc2, scale);
    }
}

extern "C" mt_status mt_cuda_adamw_clip(mt_exec *ex, float *p, const float *g, float *m, float *v, int64_t n,
                                        float lr, float b1, float b2, float eps, float wd, float bc1, float bc2,
                                        const float *ss, double clip_norm) {
    MT_CUDA_ENTER(ex, cx);
    if (n <= 0) return MT_OK;
    adamw_clip_kernel<<<mt_blocks(n, MT_THREADS), MT_THREADS, 0, cx->stream>>>(p, g, m, v, n, lr, b1, b2, eps, wd,
                                                                               lr / bc1, sqrtf(bc2), ss, clip_norm);
    MT_LAUNCHED();
    return MT_OK;
}
