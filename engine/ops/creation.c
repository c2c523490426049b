/*
 * creation.c — tensors made from nothing: constants, ranges, host data, random draws; copies,
 * detach, dtype conversion, and in-place initialisers for parameters.
 */
#include "ops/ops_internal.h"

mt_tensor *mt_full(mt_context *ctx, int ndim, const int64_t *shape, float value) {
    mt_tensor *t = mt_new(ctx, MT_DTYPE_F32, ndim, shape);
    if (!t) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->fill(&ctx->ex, mt_f32(t), t->numel, value));
    return t;
}

mt_tensor *mt_zeros(mt_context *ctx, int ndim, const int64_t *shape) { return mt_full(ctx, ndim, shape, 0.0f); }
mt_tensor *mt_ones(mt_context *ctx, int ndim, const int64_t *shape) { return mt_full(ctx, ndim, shape, 1.0f); }

mt_tensor *mt_arange(mt_context *ctx, double start, double step, int64_t n) {
    if (n < 1) return mt_fail(ctx, MT_ERR_SHAPE, "arange: n = %lld must be >= 1", (long long)n);
    mt_tensor *t = mt_new(ctx, MT_DTYPE_F32, 1, &n);
    if (!t) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->arange(&ctx->ex, mt_f32(t), n, start, step));
    return t;
}

mt_tensor *mt_from_data(mt_context *ctx, mt_dtype dtype, int ndim, const int64_t *shape, const void *host) {
    if (!host) return mt_fail(ctx, MT_ERR_INVALID_ARG, "from_data: data is NULL");
    mt_tensor *t = mt_new(ctx, dtype, ndim, shape);
    if (!t) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->to_device(&ctx->ex, t->data, host, mt_tensor_bytes(t)));
    return t;
}

int mt_from_data_packed(mt_context *ctx, mt_upload *items, int n) {
    size_t off[16], total = 0;
    if (n < 1 || n > (int)(sizeof off / sizeof off[0])) {
        mt_fail(ctx, MT_ERR_INVALID_ARG, "from_data_packed: %d arrays (1..16)", n);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        items[i].t = NULL;
        int64_t numel;
        if (!items[i].host) {
            mt_fail(ctx, MT_ERR_INVALID_ARG, "from_data_packed: array %d: data is NULL", i);
            return 0;
        }
        mt_status st = mt_shape_check("from_data_packed", items[i].ndim, items[i].shape, &numel);
        if (st != MT_OK) {
            mt_fail_status(ctx, st);
            return 0;
        }
        off[i] = total;
        total += ((size_t)numel * mt_dtype_size(items[i].dtype) + 255) & ~(size_t)255;
    }
    unsigned char *host = mt_arena_alloc(&ctx->host, total ? total : 1, 256);
    unsigned char *dev = mt_ctx_alloc_data(ctx, total ? total : 1);
    if (!host) mt_fail(ctx, MT_ERR_NOMEM, "from_data_packed: out of host memory (%zu bytes)", total);
    if (!host || !dev) return 0;
    mt_tensor *t[16];
    for (int i = 0; i < n; i++) {
        if (!(t[i] = mt_new_at(ctx, items[i].dtype, items[i].ndim, items[i].shape, dev + off[i]))) return 0;
        size_t bytes = mt_tensor_bytes(t[i]), end = i + 1 < n ? off[i + 1] : total;
        memcpy(host + off[i], items[i].host, bytes);
        memset(host + off[i] + bytes, 0, end - off[i] - bytes); /* the alignment padding: defined bytes */
    }
    mt_status st = MT_BE(ctx)->to_device(&ctx->ex, dev, host, total);
    if (st != MT_OK) {
        mt_fail_status(ctx, st);
        return 0;
    }
    for (int i = 0; i < n; i++) items[i].t = t[i];
    return 1;
}

mt_tensor *mt_uniform(mt_context *ctx, int ndim, const int64_t *shape, float low, float high) {
    mt_tensor *t = mt_new(ctx, MT_DTYPE_F32, ndim, shape);
    if (!t) return NULL;
    return mt_fill_uniform(ctx, t, low, high) == MT_OK ? t : NULL;
}

mt_tensor *mt_normal(mt_context *ctx, int ndim, const int64_t *shape, float mean, float std) {
    mt_tensor *t = mt_new(ctx, MT_DTYPE_F32, ndim, shape);
    if (!t) return NULL;
    return mt_fill_normal(ctx, t, mean, std) == MT_OK ? t : NULL;
}

mt_tensor *mt_clone(mt_context *ctx, const mt_tensor *t) {
    if (!mt_check_input(ctx, "clone", t)) return NULL;
    mt_tensor *c = mt_new_like(ctx, t);
    if (!c) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->copy(&ctx->ex, c->data, t->data, mt_tensor_bytes(t)));
    return c;
}

mt_tensor *mt_detach(mt_context *ctx, mt_tensor *t) {
    if (!mt_check_input(ctx, "detach", t)) return NULL;
    return mt_view(ctx, t, t->ndim, t->shape);
}

mt_tensor *mt_cast(mt_context *ctx, mt_tensor *x, mt_dtype dtype) {
    if (!mt_check_input(ctx, "cast", x)) return NULL;
    mt_tensor *y = mt_new(ctx, dtype, x->ndim, x->shape);
    if (!y) return NULL;
    MT_KERNEL(ctx, MT_BE(ctx)->cast(&ctx->ex, y->data, dtype, x->data, x->dtype, x->numel));
    return y;
}

static mt_status check_fill(mt_context *ctx, const char *op, mt_tensor *t) {
    if (!t) return mt_error(MT_ERR_INVALID_ARG, "%s: tensor is NULL", op);
    if (t->device != ctx->device) return mt_error(MT_ERR_DEVICE, "%s: tensor and context on different devices", op);
    if (t->dtype != MT_DTYPE_F32) return mt_error(MT_ERR_DTYPE, "%s: tensor must be f32", op);
    return MT_OK;
}

mt_status mt_fill(mt_context *ctx, mt_tensor *t, float value) {
    MT_TRY(check_fill(ctx, "fill", t));
    mt_weight_lowp_drop(t);
    return MT_BE(ctx)->fill(&ctx->ex, mt_f32(t), t->numel, value);
}

mt_status mt_fill_uniform(mt_context *ctx, mt_tensor *t, float low, float high) {
    MT_TRY(check_fill(ctx, "uniform", t));
    mt_weight_lowp_drop(t);
    uint64_t off = mt_rng_take(ctx, (uint64_t)t->numel);
    return MT_BE(ctx)->random(&ctx->ex, mt_f32(t), t->numel, MT_RANDOM_UNIFORM, low, high, ctx->seed, off);
}

mt_status mt_fill_normal(mt_context *ctx, mt_tensor *t, float mean, float std) {
    MT_TRY(check_fill(ctx, "normal", t));
    mt_weight_lowp_drop(t);
    uint64_t off = mt_rng_take(ctx, (uint64_t)t->numel);
    return MT_BE(ctx)->random(&ctx->ex, mt_f32(t), t->numel, MT_RANDOM_NORMAL, mean, std, ctx->seed, off);
}

mt_status mt_copy_from_host(mt_context *ctx, mt_tensor *t, const void *src, size_t bytes) {
    if (!t || !src) return mt_error(MT_ERR_INVALID_ARG, "copy_from_host: NULL argument");
    if (bytes != mt_tensor_bytes(t))
        return mt_error(MT_ERR_BUFFER_TOO_SMALL, "copy_from_host: %zu bytes given, tensor holds %zu", bytes,
                        mt_tensor_bytes(t));
    mt_weight_lowp_drop(t);
    return MT_BE(ctx)->to_device(&ctx->ex, t->data, src, bytes);
}

mt_status mt_copy_to_host(mt_context *ctx, const mt_tensor *t, void *dst, size_t bytes) {
    if (!t || !dst) return mt_error(MT_ERR_INVALID_ARG, "copy_to_host: NULL argument");
    if (bytes < mt_tensor_bytes(t))
        return mt_error(MT_ERR_BUFFER_TOO_SMALL, "copy_to_host: buffer of %zu bytes, tensor holds %zu", bytes,
                        mt_tensor_bytes(t));
    return MT_BE(ctx)->to_host(&ctx->ex, dst, t->data, mt_tensor_bytes(t));
}

mt_status mt_copy_tensor(mt_context *ctx, mt_tensor *dst, const mt_tensor *src) {
    if (!dst || !src) return mt_error(MT_ERR_INVALID_ARG, "copy: NULL tensor");
    if (dst->numel != src->numel || dst->dtype != src->dtype) {
        char a[MT_SHAPE_STR + 8], b[MT_SHAPE_STR + 8];
        return mt_error(MT_ERR_SHAPE, "copy: %s into %s", mt_tensor_desc(a, src), mt_tensor_desc(b, dst));
    }
    mt_weight_lowp_drop(dst);
    return MT_BE(ctx)->copy(&ctx->ex, dst->data, src->data, mt_tensor_bytes(src));
}
