/*
 * rope.cu — rotary position embedding on x (R, T, D), D even, pairs (x[2i], x[2i+1]) at position
 * pos0 + t rotated by sign * (pos0 + t) * base^(-2i/D), written or added to out; the backward is the
 * same kernel with sign = -1, adding into the input's gradient (no temporary, no second launch). The float arithmetic is the CPU backend's (and the PyTorch reference's):
 * inv_freq = 1 / base^(2i/D) in f32, angle = pos * inv_freq, then cos / sin.
 */
#include "common.cuh"

__global__ void rope_kernel(float *out, const float *x, int64_t R, int64_t T, int64_t D, int64_t pos0, float base,
                            float sign, int accumulate) {
    int64_t half = D / 2, n = R * T * half;
    MT_GRID_STRIDE(e, n) {
        int64_t i = e % half, rt = e / half, t = rt % T;
        float inv_freq = 1.0f / powf(base, (float)(2 * i) / (float)D);
        float ang = (float)(pos0 + t) * inv_freq;
        float c = cosf(ang), s = sign * sinf(ang);
        const float *xp = x + rt * D;
        float x0 = xp[2 * i], x1 = xp[2 * i + 1];
        mt_rope_pair(x0, x1, c, s, out + rt * D + 2 * i, accumulate);
    }
}

extern "C" mt_status mt_cuda_rope(mt_exec *ex, float *out, const float *x, int64_t R, int64_t T, int64_t D,
                                  int64_t pos0, float base, float sign, int accumulate) {
    MT_CUDA_ENTER(ex, cx);
    if (D % 2 != 0) return mt_error(MT_ERR_INTERNAL, "cuda rope: D = %lld is odd", (long long)D);
    int64_t n = R * T * (D / 2);
    if (n <= 0) return MT_OK;
    rope_kernel<<<mt_blocks(n, MT_THREADS), MT_THREADS, 0, cx->stream>>>(out, x, R, T, D, pos0, base, sign,
                                                                               accumulate);
    MT_LAUNCHED();
    return MT_OK;
}
