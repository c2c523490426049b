/*
 * quant.c — the inference forms of a model's linear weights (see model.h): which parameters are linear
 * weights; their int8 forms (core/quant.h) for dynamic quantization; their transposed f32 copies,
 * which the decoder's products of more than MT_GEMM_SMALL_M rows read without the transposition (and
 * the packing that goes with it) dnnl_sgemm does on every call for a weight stored (n, k); products of
 * fewer rows read the weight as stored (engine/cpu/gemv.c).
 */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/quant.h"
#include "nn/model.h"

int mt_param_is_linear(const mt_transformer *m, const mt_tensor *p) {
    return p->ndim == 2 && p != m->embed;
}

mt_status mt_weight_quantize(mt_tensor *w) {
    if (w->device != MT_DEVICE_CPU || w->dtype != MT_DTYPE_F32 || w->ndim != 2)
        return mt_error(MT_ERR_UNSUPPORTED, "quantize: weight '%s' is not a 2-D f32 CPU tensor", w->name);
    mt_qweight *q;
    MT_TRY(mt_qweight_create(mt_f32(w), w->shape[0], w->shape[1], &q));
    mt_sys_free(w->qw);
    w->qw = q;
    return MT_OK;
}

mt_status mt_weight_pack(mt_tensor *w) {
    if (w->device != MT_DEVICE_CPU || w->dtype != MT_DTYPE_F32 || w->ndim != 2)
        return mt_error(MT_ERR_UNSUPPORTED, "pack: weight '%s' is not a 2-D f32 CPU tensor", w->name);
    int64_t n = w->shape[0], k = w->shape[1];
    float *t = mt_sys_malloc(sizeof(float) * (size_t)(n * k));
    if (!t) return mt_error(MT_ERR_NOMEM, "pack: out of memory for the transposed copy of '%s' (%lld x %lld)",
                            w->name, (long long)n, (long long)k);
    const float *src = mt_f32(w);
    enum { TB = 32 }; /* tiles, so that both sides are read and written a cache line at a time */
    for (int64_t i0 = 0; i0 < n; i0 += TB)
        for (int64_t j0 = 0; j0 < k; j0 += TB)
            for (int64_t i = i0; i < n && i < i0 + TB; i++)
                for (int64_t j = j0; j < k && j < j0 + TB; j++) t[j * n + i] = src[i * k + j];
    mt_sys_free(w->wt);
    w->wt = t;
    return MT_OK;
}

mt_status mt_transformer_pack(mt_transformer *m) {
    if (m->device != MT_DEVICE_CPU) return MT_OK;
    for (int i = 0; i < m->n_params; i++) {
        mt_tensor *p = m->params[i];
        if ((mt_param_is_linear(m, p) || (p == m->embed && !m->out_proj)) && !p->qw) MT_TRY(mt_weight_pack(p));
    }
    return MT_OK;
}

mt_status mt_transformer_quantize(mt_transformer *m) {
    m->int8 = 1;
    if (m->device != MT_DEVICE_CPU) return MT_OK;
    for (int i = 0; i < m->n_params; i++) {
        mt_tensor *p = m->params[i];
        if (mt_param_is_linear(m, p) || (p == m->embed && !m->out_proj)) MT_TRY(mt_weight_quantize(p));
    }
    return MT_OK;
}
