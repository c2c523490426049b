/*
 * ops_internal.h — helpers shared by the op layer's files: operand checks, broadcasting, strides,
 * and running a kernel with its failure recorded on the context.
 */
#ifndef MT_OPS_INTERNAL_H
#define MT_OPS_INTERNAL_H

#include <string.h>

#include "ops/ops.h"

#define MT_BE(ctx) ((ctx)->ex.backend)

/* Runs a kernel call; on failure records it and makes the enclosing op return NULL. */
#define MT_KERNEL(ctx, call)                                       \
    do {                                                           \
        mt_status mt_k_s_ = (call);                                \
        if (mt_k_s_ != MT_OK) return mt_fail_status((ctx), mt_k_s_); \
    } while (0)

/* Inputs: not NULL, on the context's device, current, and F32. */
int mt_check_f32(mt_context *ctx, const char *op, const mt_tensor *t);
/* Row-major strides of a contiguous shape. */
void mt_contig_strides(const int64_t *shape, int ndim, int64_t *strides);
/* NumPy broadcasting of a and b: the output shape (out_ndim, out_shape) and the collapsed mt_bcast.
 * 0 + failure recorded when the shapes do not broadcast. */
int mt_make_bcast(mt_context *ctx, const char *op, const mt_tensor *a, const mt_tensor *b, mt_bcast *bc,
                  int *out_ndim, int64_t *out_shape);
/* A copy of a descriptor into the host arena, for a tape node to keep. */
void *mt_ctx_keep(mt_context *ctx, const void *desc, size_t bytes);
/* dst += src over n floats (both on ctx's device). */
mt_status mt_accumulate(mt_context *ctx, float *dst, const float *src, int64_t n);

#endif
