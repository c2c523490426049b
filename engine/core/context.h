/*
 * context.h — the context: a device, a step arena, the autograd tape, the random generator.
 *
 * Every op takes a context. Its results (and their gradients) are allocated in the context's arenas
 * (host structs in `host`, element data in `data`, which is device memory for a GPU context) and live
 * until mt_context_reset(), which the training loop calls after each optimizer step; the gradients of
 * intermediate results live only until the reverse pass has used them. The tape records
 * one node per differentiable op while grad is enabled; backward walks it in reverse.
 *
 * Ops report failure by returning NULL: the first failure since the last reset is kept in
 * ctx->status (and its message in mt_last_error()), and an op given a NULL input returns NULL, so a
 * forward pass can be written as straight-line code and checked once at the end (ggml style).
 */
#ifndef MT_CORE_CONTEXT_H
#define MT_CORE_CONTEXT_H

#include "core/alloc.h"
#include "core/backend.h"
#include "core/tensor.h"

struct mt_node;

struct mt_context {
    int device;
    mt_exec ex;                 /* backend + device state the kernels run on */
    mt_arena host;              /* tensor structs and other host-side step memory */
    mt_arena data;              /* tensor elements (device memory for a GPU context) */
    mt_pool grads;              /* elements of intermediate tensors' gradients: each given back as soon
                                 * as the backward of the op that made the tensor has run (autograd.c) */
    struct mt_node *tape;       /* nodes[0..n_nodes) in creation order */
    int32_t n_nodes, cap_nodes;
    int grad_enabled;           /* 0 inside a no_grad scope */
    uint64_t seed;              /* random generator: (seed, offset) */
    uint64_t rng_offset;
    mt_status status;           /* first failure since the last reset */
    uint64_t epoch;             /* renewed by every reset; unique in the process */
    /* Called by mt_backward after each tape node it visits (node index, from the root's down), so
     * data-parallel training can send gradients that are final while the pass goes on. NULL: none. */
    mt_status (*backward_hook)(struct mt_context *ctx, int32_t node, void *user);
    void *backward_hook_user;
};
typedef struct mt_context mt_context;

/* Ordering between contexts of one device (backend publish/join, see core/backend.h): publish marks
 * the work this context has queued so far; join makes its later work wait for what every other
 * context of the device published. No host wait; no-ops on the CPU. */
mt_status mt_context_publish(mt_context *ctx);
mt_status mt_context_join(mt_context *ctx);

/* Internal creation with explicit thread count (0 = default). */
mt_status mt_context_init(mt_context **out, int device, int n_threads);

/* Records a failure (the first one sticks in ctx->status) with a formatted message; returns NULL so
 * ops can `return mt_fail(ctx, MT_ERR_SHAPE, "...")`. */
void *mt_fail(mt_context *ctx, mt_status status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Records a kernel's non-OK status (its message is already set); returns NULL. */
void *mt_fail_status(mt_context *ctx, mt_status status);

/* Reserves n random numbers of the context's stream; returns the offset to draw them at. */
uint64_t mt_rng_take(mt_context *ctx, uint64_t n);

/* Step-arena memory for op temporaries (device memory for GPU contexts); NULL + failure recorded. */
void *mt_ctx_alloc_data(mt_context *ctx, size_t bytes);

/* Inference on the CPU, where a stage's temporaries are dead once it returns (a layer of the encoder):
 * moves x's data down to where the data arena stood at mark and rewinds the arena past it, so the
 * next stage reuses the memory (pages already written) instead of growing the step's footprint by
 * every stage's. Every arena tensor made since the mark but x is invalid afterwards. Leaves x where
 * it is when that is not safe: a recording tape, a device context, x persistent or a view. */
mt_tensor *mt_context_keep(mt_context *ctx, mt_arena_mark mark, mt_tensor *x);

/* A new arena tensor (uninitialised) of the context's device. NULL + failure recorded. */
mt_tensor *mt_new(mt_context *ctx, mt_dtype dtype, int ndim, const int64_t *shape);
/* A tensor struct over existing arena memory `data` (at least the tensor's bytes). NULL + failure. */
mt_tensor *mt_new_at(mt_context *ctx, mt_dtype dtype, int ndim, const int64_t *shape, void *data);
/* The same shape and dtype as t. */
mt_tensor *mt_new_like(mt_context *ctx, const mt_tensor *t);
/* A view of t (same data) with another shape of the same numel; no tape node (see mt_reshape). */
mt_tensor *mt_view(mt_context *ctx, const mt_tensor *t, int ndim, const int64_t *shape);

/* Checks that t can be used by an op of ctx: not NULL, on ctx's device, not stale. */
int mt_check_input(mt_context *ctx, const char *op, const mt_tensor *t);

/* A no_grad scope: `int saved = mt_no_grad_begin(ctx); ... mt_no_grad_end(ctx, saved);` */
static inline int mt_no_grad_begin(mt_context *ctx) {
    int s = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    return s;
}
static inline void mt_no_grad_end(mt_context *ctx, int saved) { ctx->grad_enabled = saved; }

#endif
