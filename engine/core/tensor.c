/*
 * tensor.c — dtype facts, shape checks, descriptions, and persistent tensors (owned storage).
 */
#include "core/tensor.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/backend.h"

size_t mt_dtype_size(mt_dtype dt) {
    switch (dt) {
    case MT_DTYPE_F32: return 4;
    case MT_DTYPE_BF16: return 2;
    case MT_DTYPE_F16: return 2;
    case MT_DTYPE_I32: return 4;
    case MT_DTYPE_I8: return 1;
    }
    return 0;
}

const char *mt_dtype_name(mt_dtype dt) {
    switch (dt) {
    case MT_DTYPE_F32: return "f32";
    case MT_DTYPE_BF16: return "bf16";
    case MT_DTYPE_F16: return "f16";
    case MT_DTYPE_I32: return "i32";
    case MT_DTYPE_I8: return "i8";
    }
    return "?";
}

mt_status mt_shape_check(const char *op, int ndim, const int64_t *shape, int64_t *out_numel) {
    if (ndim < 0 || ndim > MT_MAX_DIMS)
        return mt_error(MT_ERR_SHAPE, "%s: %d dims (at most %d)", op, ndim, MT_MAX_DIMS);
    if (ndim > 0 && !shape) return mt_error(MT_ERR_INVALID_ARG, "%s: shape is NULL", op);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1) {
            char buf[MT_SHAPE_STR];
            return mt_error(MT_ERR_SHAPE, "%s: shape %s has a dim < 1 at axis %d", op, mt_shape_str(buf, shape, ndim),
                            i);
        }
        if (n > INT64_MAX / shape[i] / 16) return mt_error(MT_ERR_SHAPE, "%s: shape too large", op);
        n *= shape[i];
    }
    *out_numel = n;
    return MT_OK;
}

int mt_same_shape(const mt_tensor *a, const mt_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

char *mt_tensor_desc(char *buf, const mt_tensor *t) {
    char s[MT_SHAPE_STR];
    snprintf(buf, MT_SHAPE_STR + 8, "%s %s", mt_shape_str(s, t->shape, t->ndim), mt_dtype_name(t->dtype));
    return buf;
}

mt_status mt_tensor_new_persistent(int device, mt_dtype dtype, int ndim, const int64_t *shape, const char *name,
                                   mt_tensor **out) {
    int64_t numel;
    MT_TRY(mt_shape_check("tensor", ndim, shape, &numel));
    if (mt_dtype_size(dtype) == 0) return mt_error(MT_ERR_DTYPE, "tensor: unknown dtype %d", (int)dtype);
    const mt_backend *be;
    MT_TRY(mt_backend_get(device, &be));
    mt_tensor *t = mt_sys_calloc(1, sizeof *t);
    if (!t) return mt_error(MT_ERR_NOMEM, "tensor: out of host memory");
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    t->numel = numel;
    t->dtype = dtype;
    t->device = device;
    t->flags = MT_TENSOR_PERSISTENT;
    t->node = -1;
    if (name) snprintf(t->name, sizeof t->name, "%s", name);
    mt_status st = be->alloc(device, &t->data, mt_tensor_bytes(t));
    if (st != MT_OK) {
        mt_sys_free(t);
        return st;
    }
    *out = t;
    return MT_OK;
}

void mt_tensor_free(mt_tensor *t) {
    if (!t || !(t->flags & MT_TENSOR_PERSISTENT)) return;
    const mt_backend *be;
    if (mt_backend_get(t->device, &be) == MT_OK) {
        if (!(t->flags & MT_TENSOR_VIEW)) be->free(t->device, t->data);
    }
    mt_tensor_free(t->grad);
    mt_sys_free(t->qw);
    mt_sys_free(t->wt);
    mt_sys_free(t);
}
