/*
 * quant.h — symmetric int8 quantization, the one copy used by the weights (per output channel, when a
 * model is quantized or an int8 file is written) and by the activations (per row, at run time, in
 * the CPU int8 GEMM of cpu/qgemm.c).
 *
 * A row x[0..k) becomes q[j] = round_half_even(x[j] / s), s = max_j |x[j]| / qmax, clamped to
 * [-qmax, qmax], so that x[j] ~ s * q[j] with |x[j] - s q[j]| <= s / 2. An all-zero row has s = 0 and
 * q = 0 (it dequantizes to zeros exactly). Weights use qmax = 127; activations 127 where the CPU has
 * VNNI and 63 elsewhere (see cpu/qgemm.c).
 */
#ifndef MT_CORE_QUANT_H
#define MT_CORE_QUANT_H

#include <stdint.h>

#include "microtensor.h"

/* A linear layer's weight W (n, k) in int8, per output channel: W[i, :] ~ scale[i] * q[i, :]. One
 * allocation (mt_sys_free releases it), owned by the weight tensor it belongs to (mt_tensor.qw). */
typedef struct mt_qweight {
    int64_t n, k;
    int8_t *q;     /* (n, k) row-major */
    float *scale;  /* (n) */
    int32_t *qsum; /* (n) sum_j q[i, j]: folds the unsigned activations' offset out of the product */
    int8_t *qp;    /* q again in the layout of cpu/qgemm.c's VNNI kernel (below) */
    int64_t kg;    /* groups of 4 along k: ceil(k / 4) */
} mt_qweight;

/* The packed layout qp: panels of MT_QPANEL output channels; in panel p, for each group g of 4 along
 * k, the 4 bytes of each of the panel's channels in turn (what one VPDPBUSD step multiplies):
 *   qp[((p * kg + g) * MT_QPANEL + c) * 4 + e] = q[p * MT_QPANEL + c, 4 g + e]   (0 past n and k)
 * so the kernel reads a panel's weights once, sequentially, for a block of activation rows. Sixteen
 * groups of sixteen channels, rows 256 bytes apart, are also an AMX tile of B for TDPBUSD as they lie. */
#define MT_QPANEL 64

/* Scratch bytes of the backend's qlinear for x (R, k) and W (n, k): the quantized rows (each padded
 * to MT_QLINEAR_LDU(k) bytes, a whole number of the packed layout's groups of 4; room for R rounded up
 * to 16 rows, the row count of an AMX tile), their scales, the int32 products and the per-channel
 * offsets. */
#define MT_QLINEAR_LDU(k) ((((int64_t)(k) + 3) / 4) * 4)
#define MT_QLINEAR_UROWS(R) ((((size_t)(R) + 15) / 16) * 16)
#define MT_QLINEAR_WORK(R, n, k)                                                                      \
    (((MT_QLINEAR_UROWS(R) * (size_t)MT_QLINEAR_LDU(k) + 63) & ~(size_t)63) +                         \
     4 * ((size_t)(R) + (size_t)(R) * (size_t)(n) + (size_t)(n)))

/* Quantizes x[0..k) into q; returns the scale s (0 for an all-zero row). */
float mt_quantize_row(const float *x, int64_t k, int qmax, int8_t *q);

/* The int8 form of a host f32 matrix w (n, k): every row quantized with qmax 127. */
mt_status mt_qweight_create(const float *w, int64_t n, int64_t k, mt_qweight **out);
/* The same from int8 rows q (n, k) and their scales as stored (an int8 model file). */
mt_status mt_qweight_from_int8(const int8_t *q, const float *scale, int64_t n, int64_t k, mt_qweight **out);

#endif
