/*
 * quant.c — symmetric int8 quantization of rows and of linear weights (see quant.h).
 */
#include "core/quant.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

float mt_quantize_row(const float *x, int64_t k, int qmax, int8_t *q) {
    float amax = 0.0f;
    for (int64_t j = 0; j < k; j++) {
        float a = fabsf(x[j]);
        if (a > amax) amax = a; /* NaN compares false: it never becomes the scale */
    }
    if (!(amax > 0.0f) || !isfinite(amax)) {
        for (int64_t j = 0; j < k; j++) q[j] = 0;
        return 0.0f;
    }
    float s = amax / (float)qmax, lim = (float)qmax;
    for (int64_t j = 0; j < k; j++) {
        float r = rintf(x[j] / s);
        q[j] = (int8_t)(r > lim ? lim : (r < -lim ? -lim : (r == r ? r : 0.0f)));
    }
    return s;
}

static mt_status qweight_alloc(int64_t n, int64_t k, mt_qweight **out) {
    *out = NULL;
    if (n < 1 || k < 1) return mt_error(MT_ERR_INVALID_ARG, "quantize: empty weight (%lld, %lld)", (long long)n,
                                        (long long)k);
    size_t head = (sizeof(mt_qweight) + 63) & ~(size_t)63, qb = ((size_t)(n * k) + 63) & ~(size_t)63;
    int64_t kg = (k + 3) / 4, panels = (n + MT_QPANEL - 1) / MT_QPANEL;
    size_t pb = (size_t)(panels * kg * MT_QPANEL * 4);
    char *p = mt_sys_malloc(head + qb + pb + sizeof(float) * (size_t)n + sizeof(int32_t) * (size_t)n);
    if (!p) return mt_error(MT_ERR_NOMEM, "quantize: out of memory for a (%lld, %lld) weight", (long long)n,
                            (long long)k);
    mt_qweight *qw = (mt_qweight *)p;
    qw->n = n;
    qw->k = k;
    qw->q = (int8_t *)(p + head);
    qw->qp = (int8_t *)(p + head + qb);
    qw->kg = kg;
    qw->scale = (float *)(p + head + qb + pb);
    qw->qsum = (int32_t *)(qw->scale + n);
    *out = qw;
    return MT_OK;
}

/* The channel sums and the packed copy of q (quant.h). */
static void qweight_finish(mt_qweight *qw) {
    int64_t n = qw->n, k = qw->k, kg = qw->kg, panels = (n + MT_QPANEL - 1) / MT_QPANEL;
    for (int64_t i = 0; i < n; i++) {
        int32_t s = 0;
        for (int64_t j = 0; j < k; j++) s += qw->q[i * k + j];
        qw->qsum[i] = s;
    }
    memset(qw->qp, 0, (size_t)(panels * kg * MT_QPANEL * 4));
    for (int64_t i = 0; i < n; i++) {
        int64_t p = i / MT_QPANEL, c = i % MT_QPANEL;
        for (int64_t j = 0; j < k; j++) qw->qp[((p * kg + j / 4) * MT_QPANEL + c) * 4 + j % 4] = qw->q[i * k + j];
    }
}

mt_status mt_qweight_create(const float *w, int64_t n, int64_t k, mt_qweight **out) {
    MT_TRY(qweight_alloc(n, k, out));
    mt_qweight *qw = *out;
    for (int64_t i = 0; i < n; i++) qw->scale[i] = mt_quantize_row(w + i * k, k, 127, qw->q + i * k);
    qweight_finish(qw);
    return MT_OK;
}

mt_status mt_qweight_from_int8(const int8_t *q, const float *scale, int64_t n, int64_t k, mt_qweight **out) {
    MT_TRY(qweight_alloc(n, k, out));
    mt_qweight *qw = *out;
    memcpy(qw->q, q, (size_t)(n * k));
    memcpy(qw->scale, scale, sizeof(float) * (size_t)n);
    qweight_finish(qw);
    return MT_OK;
}
