/*
 * context.c — contexts: creation on a device, the step arenas, failures, random offsets, and the
 * allocation of arena tensors.
 */
#include "core/context.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/autograd.h"
#include "core/log.h"

/* Device arenas get their blocks from the backend (cudaMalloc on a GPU); user is the context. */
static void *device_block_alloc(void *user, size_t bytes) {
    mt_context *ctx = user;
    void *p = NULL;
    if (ctx->ex.backend->alloc(ctx->device, &p, bytes) != MT_OK) return NULL;
    return p;
}

static void device_block_free(void *user, void *ptr) {
    mt_context *ctx = user;
    ctx->ex.backend->free(ctx->device, ptr);
}

/* Epochs are unique in the process (not per context), so an epoch alone names one context between two
 * resets: a tensor can keep "valid in epoch e" without a pointer to the context (mt_tensor.lowp). */
static uint64_t g_epoch;
static uint64_t next_epoch(void) { return __atomic_add_fetch(&g_epoch, 1, __ATOMIC_RELAXED); }

mt_status mt_context_init(mt_context **out, int device, int n_threads) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "context: out is NULL");
    const mt_backend *be;
    MT_TRY(mt_backend_get(device, &be));
    mt_context *ctx = mt_sys_calloc(1, sizeof *ctx);
    if (!ctx) return mt_error(MT_ERR_NOMEM, "context: out of host memory");
    ctx->device = device;
    ctx->epoch = next_epoch();
    ctx->ex.backend = be;
    ctx->ex.device = device;
    ctx->ex.n_threads = n_threads;
    mt_status st = be->exec_init(&ctx->ex, device);
    if (st != MT_OK) {
        mt_sys_free(ctx);
        return st;
    }
    mt_arena_init(&ctx->host, 1u << 18, NULL);
    if (device == MT_DEVICE_CPU) {
        mt_arena_init(&ctx->data, 1u << 22, NULL);
    } else {
        mt_block_allocator ba = {device_block_alloc, device_block_free, ctx};
        mt_arena_init(&ctx->data, 1u << 24, &ba);
    }
    mt_pool_init(&ctx->grads, &ctx->data.ba);
    ctx->grad_enabled = 1;
    ctx->seed = 0x5eed;
    st = mt_context_join(ctx); /* weights other contexts are still writing */
    if (st != MT_OK) {
        mt_context_free(ctx);
        return st;
    }
    *out = ctx;
    return MT_OK;
}

mt_status mt_context_publish(mt_context *ctx) {
    return ctx->ex.backend->publish ? ctx->ex.backend->publish(&ctx->ex) : MT_OK;
}

mt_status mt_context_join(mt_context *ctx) {
    return ctx->ex.backend->join ? ctx->ex.backend->join(&ctx->ex) : MT_OK;
}

mt_status mt_context_create(int device, mt_context_t **out) { return mt_context_init(out, device, 0); }

void mt_context_free(mt_context *ctx) {
    if (!ctx) return;
    /* Work still queued on a GPU stream may write the arenas: let it finish before they go. */
    (void)ctx->ex.backend->sync(&ctx->ex);
    mt_arena_free(&ctx->host);
    mt_arena_free(&ctx->data);
    mt_pool_free(&ctx->grads);
    mt_sys_free(ctx->tape);
    ctx->ex.backend->exec_free(&ctx->ex);
    mt_sys_free(ctx->ex.scratch);
    mt_sys_free(ctx);
}

mt_status mt_context_reset(mt_context *ctx) {
    if (!ctx) return mt_error(MT_ERR_INVALID_ARG, "mt_context_reset: ctx is NULL");
    /* No host wait: kernels still queued on a GPU stream over arena memory run before anything the
     * next step queues on the same stream, and the host never touches device arena memory. What this
     * context queued is published to the other contexts of the device, and what they published is
     * waited for (on the device) before this context's next step. */
    mt_status st = mt_context_publish(ctx);
    if (st == MT_OK) st = mt_context_join(ctx);
    /* Except when the arena is about to replace its blocks by one (warm-up: the step grew): the old
     * blocks are freed, and a backend whose block allocator frees at once needs the work done. */
    if (st == MT_OK && ctx->data.head && ctx->data.head->next) st = ctx->ex.backend->sync(&ctx->ex);
    mt_arena_reset(&ctx->host);
    mt_arena_reset(&ctx->data);
    mt_pool_reset(&ctx->grads);
    ctx->n_nodes = 0;
    ctx->status = MT_OK;
    ctx->epoch = next_epoch();
    return st;
}

mt_status mt_context_set_grad_enabled(mt_context *ctx, int enabled) {
    if (!ctx) return mt_error(MT_ERR_INVALID_ARG, "mt_context_set_grad_enabled: ctx is NULL");
    ctx->grad_enabled = enabled != 0;
    return MT_OK;
}

mt_status mt_context_seed(mt_context *ctx, uint64_t seed) {
    if (!ctx) return mt_error(MT_ERR_INVALID_ARG, "mt_context_seed: ctx is NULL");
    ctx->seed = seed;
    ctx->rng_offset = 0;
    return MT_OK;
}

void *mt_fail(mt_context *ctx, mt_status status, const char *fmt, ...) {
    if (ctx->status == MT_OK) {
        char msg[MT_ERROR_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        mt_error(status, "%s", msg);
        ctx->status = status;
    }
    return NULL;
}

void *mt_fail_status(mt_context *ctx, mt_status status) {
    if (ctx->status == MT_OK) ctx->status = status;
    return NULL;
}

uint64_t mt_rng_take(mt_context *ctx, uint64_t n) {
    uint64_t off = ctx->rng_offset;
    ctx->rng_offset += (n + 3) & ~(uint64_t)3;
    return off;
}

mt_tensor *mt_context_keep(mt_context *ctx, mt_arena_mark mark, mt_tensor *x) {
    if (!x || ctx->grad_enabled || ctx->ex.backend != &mt_cpu_backend ||
        (x->flags & (MT_TENSOR_PERSISTENT | MT_TENSOR_VIEW)))
        return x;
    size_t bytes = mt_tensor_bytes(x);
    mt_arena_rewind(&ctx->data, mark);
    void *dst = mt_ctx_alloc_data(ctx, bytes); /* at the mark, or in a later block: x may overlap it */
    if (!dst) return NULL;
    memmove(dst, x->data, bytes);
    x->data = dst;
    return x;
}

void *mt_ctx_alloc_data(mt_context *ctx, size_t bytes) {
    void *p = mt_arena_alloc(&ctx->data, bytes, 256);
    if (!p) return mt_fail(ctx, MT_ERR_NOMEM, "out of %s memory (asked %zu bytes)", ctx->ex.backend->name, bytes);
    return p;
}

static mt_tensor *new_struct(mt_context *ctx, mt_dtype dtype, int ndim, const int64_t *shape, int64_t numel) {
    mt_tensor *t = mt_arena_alloc(&ctx->host, sizeof *t, 16);
    if (!t) return mt_fail(ctx, MT_ERR_NOMEM, "out of host memory for a tensor");
    memset(t, 0, offsetof(mt_tensor, name) + 1);
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    t->numel = numel;
    t->dtype = dtype;
    t->device = ctx->device;
    t->ctx = ctx;
    t->node = -1;
    t->epoch = ctx->epoch;
    return t;
}

mt_tensor *mt_new(mt_context *ctx, mt_dtype dtype, int ndim, const int64_t *shape) {
    int64_t numel;
    mt_status st = mt_shape_check("tensor", ndim, shape, &numel);
    if (st != MT_OK) return mt_fail_status(ctx, st);
    if (mt_dtype_size(dtype) == 0) return mt_fail(ctx, MT_ERR_DTYPE, "tensor: unknown dtype %d", (int)dtype);
    mt_tensor *t = new_struct(ctx, dtype, ndim, shape, numel);
    if (!t) return NULL;
    t->data = mt_ctx_alloc_data(ctx, mt_tensor_bytes(t));
    return t->data ? t : NULL;
}

mt_tensor *mt_new_at(mt_context *ctx, mt_dtype dtype, int ndim, const int64_t *shape, void *data) {
    int64_t numel;
    mt_status st = mt_shape_check("tensor", ndim, shape, &numel);
    if (st != MT_OK) return mt_fail_status(ctx, st);
    mt_tensor *t = new_struct(ctx, dtype, ndim, shape, numel);
    if (t) t->data = data;
    return t;
}

mt_tensor *mt_new_like(mt_context *ctx, const mt_tensor *t) { return mt_new(ctx, t->dtype, t->ndim, t->shape); }

mt_tensor *mt_view(mt_context *ctx, const mt_tensor *t, int ndim, const int64_t *shape) {
    int64_t numel;
    mt_status st = mt_shape_check("view", ndim, shape, &numel);
    if (st != MT_OK) return mt_fail_status(ctx, st);
    if (numel != t->numel) {
        char a[MT_SHAPE_STR], b[MT_SHAPE_STR];
        return mt_fail(ctx, MT_ERR_SHAPE, "reshape: %s -> %s: element counts differ (%lld vs %lld)",
                       mt_shape_str(a, t->shape, t->ndim), mt_shape_str(b, shape, ndim), (long long)t->numel,
                       (long long)numel);
    }
    mt_tensor *v = new_struct(ctx, t->dtype, ndim, shape, numel);
    if (!v) return NULL;
    v->data = t->data;
    v->flags = MT_TENSOR_VIEW;
    return v;
}

static const char *device_name(char *buf, size_t n, int device) {
    if (device == MT_DEVICE_CPU) snprintf(buf, n, "cpu");
    else snprintf(buf, n, "cuda:%d", device);
    return buf;
}

int mt_check_input(mt_context *ctx, const char *op, const mt_tensor *t) {
    if (!t) {
        if (ctx->status == MT_OK) mt_fail(ctx, MT_ERR_INVALID_ARG, "%s: an input tensor is NULL", op);
        return 0;
    }
    char d[MT_SHAPE_STR + 8], a[24], b[24];
    if (t->device != ctx->device) {
        mt_fail(ctx, MT_ERR_DEVICE, "%s: operand %s is on %s, the context on %s", op, mt_tensor_desc(d, t),
                device_name(a, sizeof a, t->device), device_name(b, sizeof b, ctx->device));
        return 0;
    }
    if (t->ctx && (t->ctx != ctx || t->epoch != ctx->epoch)) {
        mt_fail(ctx, MT_ERR_STATE, "%s: operand %s belongs to %s", op, mt_tensor_desc(d, t),
                t->ctx != ctx ? "another context" : "a step before the last mt_context_reset (stale)");
        return 0;
    }
    if (t->flags & MT_TENSOR_OVERWRITTEN) {
        mt_fail(ctx, MT_ERR_STATE, "%s: operand %s was overwritten by its gradient (a fused loss read it)", op,
                mt_tensor_desc(d, t));
        return 0;
    }
    return 1;
}
