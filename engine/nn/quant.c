/*
 * quant.c — dynamic int8 quantization of a model (see model.h): which parameters are linear weights,
 * and their int8 forms (core/quant.h) for mt_layer_linear.
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

mt_status mt_transformer_quantize(mt_transformer *m) {
    m->int8 = 1;
    if (m->device != MT_DEVICE_CPU) return MT_OK;
    for (int i = 0; i < m->n_params; i++) {
        mt_tensor *p = m->params[i];
        if (mt_param_is_linear(m, p) || (p == m->embed && !m->out_proj)) MT_TRY(mt_weight_quantize(p));
    }
    return MT_OK;
}
