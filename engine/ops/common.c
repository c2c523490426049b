/*
 * common.c — the op layer's shared helpers (see ops_internal.h).
 */
#include "ops/ops_internal.h"

#include <stdio.h>

int mt_check_f32(mt_context *ctx, const char *op, const mt_tensor *t) {
    if (!mt_check_input(ctx, op, t)) return 0;
    if (t->dtype != MT_DTYPE_F32) {
        char d[MT_SHAPE_STR + 8];
        mt_fail(ctx, MT_ERR_DTYPE, "%s: operand %s must be f32", op, mt_tensor_desc(d, t));
        return 0;
    }
    return 1;
}

void mt_contig_strides(const int64_t *shape, int ndim, int64_t *strides) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        strides[d] = s;
        s *= shape[d];
    }
}

int mt_make_bcast(mt_context *ctx, const char *op, const mt_tensor *a, const mt_tensor *b, mt_bcast *bc,
                  int *out_ndim, int64_t *out_shape) {
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t as[MT_MAX_DIMS], bs[MT_MAX_DIMS], sa[MT_MAX_DIMS], sb[MT_MAX_DIMS];
    int64_t ca[MT_MAX_DIMS], cb[MT_MAX_DIMS];
    mt_contig_strides(a->shape, a->ndim, ca);
    mt_contig_strides(b->shape, b->ndim, cb);
    for (int d = 0; d < nd; d++) {
        int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
        as[d] = da >= 0 ? a->shape[da] : 1;
        bs[d] = db >= 0 ? b->shape[db] : 1;
        if (as[d] != bs[d] && as[d] != 1 && bs[d] != 1) {
            char x[MT_SHAPE_STR], y[MT_SHAPE_STR];
            mt_fail(ctx, MT_ERR_SHAPE, "%s: shapes %s and %s do not broadcast (axis %d: %lld vs %lld)", op,
                    mt_shape_str(x, a->shape, a->ndim), mt_shape_str(y, b->shape, b->ndim), d, (long long)as[d],
                    (long long)bs[d]);
            return 0;
        }
        out_shape[d] = as[d] > bs[d] ? as[d] : bs[d];
        sa[d] = (da >= 0 && as[d] == out_shape[d]) ? ca[da] : 0;
        sb[d] = (db >= 0 && bs[d] == out_shape[d]) ? cb[db] : 0;
    }
    *out_ndim = nd;
    /* Collapse: drop size-1 output dims, merge neighbours that are contiguous for both operands. */
    memset(bc, 0, sizeof *bc);
    bc->numel = 1;
    for (int d = 0; d < nd; d++) {
        bc->numel *= out_shape[d];
        if (out_shape[d] == 1) continue;
        int k = bc->ndim;
        if (k > 0 && bc->sa[k - 1] == sa[d] * out_shape[d] && bc->sb[k - 1] == sb[d] * out_shape[d]) {
            bc->shape[k - 1] *= out_shape[d];
            bc->sa[k - 1] = sa[d];
            bc->sb[k - 1] = sb[d];
        } else {
            bc->shape[k] = out_shape[d];
            bc->sa[k] = sa[d];
            bc->sb[k] = sb[d];
            bc->ndim++;
        }
    }
    if (bc->ndim == 0) {
        bc->ndim = 1;
        bc->shape[0] = 1;
        bc->sa[0] = bc->sb[0] = 0;
    }
    bc->na = a->numel;
    bc->nb = b->numel;
    return 1;
}

void *mt_ctx_keep(mt_context *ctx, const void *desc, size_t bytes) {
    void *p = mt_arena_alloc(&ctx->host, bytes, 16);
    if (!p) return mt_fail(ctx, MT_ERR_NOMEM, "out of host memory for a tape descriptor");
    memcpy(p, desc, bytes);
    return p;
}

mt_status mt_accumulate(mt_context *ctx, float *dst, const float *src, int64_t n) {
    mt_bcast same = {.ndim = 1, .shape = {n}, .sa = {1}, .sb = {1}, .numel = n, .na = n, .nb = n};
    return MT_BE(ctx)->binary_fwd(&ctx->ex, MT_BINARY_ADD, dst, dst, src, &same);
}
