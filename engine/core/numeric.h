/*
 * numeric.h — element conversions between f32 and the 16-bit float formats, shared by the CPU and
 * CUDA backends (MT_HD) so a cast gives the same bits on both: round to nearest even, NaN stays NaN,
 * overflow goes to infinity, f16 subnormals handled. Also the other per-element formulas both backends
 * must agree on: loading any dtype as f32, one AdamW update, one rotary pair.
 */
#ifndef MT_CORE_NUMERIC_H
#define MT_CORE_NUMERIC_H

#include <math.h>
#include <stdint.h>

#include "core/hostdev.h"
#include "microtensor.h" /* mt_dtype */

MT_HD uint32_t mt_f32_bits(float f) {
    union {
        float f;
        uint32_t u;
    } v;
    v.f = f;
    return v.u;
}

MT_HD float mt_bits_f32(uint32_t u) {
    union {
        uint32_t u;
        float f;
    } v;
    v.u = u;
    return v.f;
}

MT_HD uint16_t mt_f32_to_bf16(float f) {
    uint32_t u = mt_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

MT_HD float mt_bf16_to_f32(uint16_t h) { return mt_bits_f32((uint32_t)h << 16); }

MT_HD float mt_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400u)) {
                man <<= 1;
                exp--;
            }
            u = sign | (exp << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    return mt_bits_f32(u);
}

MT_HD uint16_t mt_f32_to_f16(float f) {
    uint32_t u = mt_f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xffu) - 127 + 15;
    uint32_t man = u & 0x7fffffu;
    if (((u >> 23) & 0xffu) == 0xffu) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)h;
}

/* Element i of a buffer of dtype dt, as f32 (the source side of every cast). */
MT_HD float mt_load_as_f32(const void *in, mt_dtype dt, int64_t i) {
    switch (dt) {
    case MT_DTYPE_F32: return ((const float *)in)[i];
    case MT_DTYPE_BF16: return mt_bf16_to_f32(((const uint16_t *)in)[i]);
    case MT_DTYPE_F16: return mt_f16_to_f32(((const uint16_t *)in)[i]);
    case MT_DTYPE_I32: return (float)((const int32_t *)in)[i];
    case MT_DTYPE_I8: return (float)((const int8_t *)in)[i];
    }
    return 0.0f;
}

/* One AdamW element, PyTorch's order of float operations: the moments, the decoupled decay, then
 * p -= step_size * m / (sqrt(v) / sqrt_bc2 + eps), with step_size = lr / (1 - b1^t) and
 * sqrt_bc2 = sqrt(1 - b2^t). g is the raw gradient, scaled by grad_scale (clipping, loss scaling). */
MT_HD void mt_adamw_elem(float *p, float g, float *m, float *v, float lr, float b1, float b2, float eps, float wd,
                         float step_size, float sqrt_bc2, float grad_scale) {
    float gi = g * grad_scale;
    float mi = b1 * *m + (1.0f - b1) * gi;
    float vi = b2 * *v + (1.0f - b2) * gi * gi;
    *m = mi;
    *v = vi;
    float pi = *p * (1.0f - lr * wd);
    *p = pi - step_size * (mi / (sqrtf(vi) / sqrt_bc2 + eps));
}

/* The gradient scale of clipping by global norm from the squared norm ss (torch.nn.utils.
 * clip_grad_norm_: clip / (norm + 1e-6) clamped to 1; 1 when clip <= 0), in double like the host
 * computed it before it moved to the device. NaN when the norm is not finite: the update is skipped. */
MT_HD float mt_clip_scale(float ss, double clip) {
    double norm = sqrt((double)ss);
    if (!isfinite(norm)) return NAN;
    if (clip <= 0) return 1.0f;
    double coef = clip / (norm + 1e-6);
    return coef < 1.0 ? (float)coef : 1.0f;
}

/* One rotary pair (x0, x1) turned by the angle whose cosine and sine are c, s, written to o[0..1] or
 * added to them (the backward turns by -angle: s negated). */
MT_HD void mt_rope_pair(float x0, float x1, float c, float s, float *o, int accumulate) {
    float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
    if (accumulate) {
        o[0] += y0;
        o[1] += y1;
    } else {
        o[0] = y0;
        o[1] = y1;
    }
}

#endif
