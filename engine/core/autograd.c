/*
 * autograd.c — the tape and the reverse pass (see autograd.h).
 */
#include "core/autograd.h"

#include <string.h>

int mt_needs_grad(const mt_context *ctx, mt_tensor *const *inputs, int n) {
    if (!ctx->grad_enabled) return 0;
    for (int i = 0; i < n; i++)
        if (inputs[i] && (inputs[i]->flags & MT_TENSOR_REQUIRES_GRAD)) return 1;
    return 0;
}

mt_node *mt_tape_push(mt_context *ctx, const char *op, mt_backward_fn backward, mt_tensor *out) {
    if (ctx->n_nodes == ctx->cap_nodes) {
        int32_t cap = ctx->cap_nodes ? ctx->cap_nodes * 2 : 1024;
        mt_node *nt = mt_sys_realloc(ctx->tape, sizeof(mt_node) * (size_t)cap);
        if (!nt) return mt_fail(ctx, MT_ERR_NOMEM, "%s: out of memory growing the tape", op);
        ctx->tape = nt;
        ctx->cap_nodes = cap;
    }
    mt_node *n = &ctx->tape[ctx->n_nodes];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = backward;
    n->out = out;
    out->node = ctx->n_nodes++;
    out->flags |= MT_TENSOR_REQUIRES_GRAD;
    return n;
}

/* t is the result of an op on ctx's tape (not a leaf, not persistent). */
static int is_op_result(const mt_context *ctx, const mt_tensor *t) {
    return !(t->flags & MT_TENSOR_PERSISTENT) && t->node >= 0 && t->node < ctx->n_nodes && ctx->tape[t->node].out == t;
}

int mt_view_grad_aliased(mt_context *ctx, mt_node *n) {
    mt_tensor *x = n->in[0];
    if (!n->alias_in0 || !n->grad_mem || !is_op_result(ctx, x) || ctx->tape[x->node].grad_mem != n->grad_mem)
        return 0;
    return mt_grad_of(ctx, x) != NULL; /* the shared memory, already holding the contributions */
}

int mt_residual_grad_aliased(mt_context *ctx, mt_node *n) {
    if (!n->grad_shares_in0 || !n->out->grad) return 0;
    mt_tensor *g = mt_grad_of(ctx, n->in[0]); /* in[0]'s gradient, holding out's: marked present */
    return g && g->data == n->out->grad->data;
}

int mt_grad_in_place(mt_context *ctx, mt_tensor *t) {
    if (!is_op_result(ctx, t) || t->node != ctx->n_nodes - 1 || ctx->tape[t->node].alias_in0 ||
        t->dtype != MT_DTYPE_F32)
        return 0;
    ctx->tape[t->node].grad_in_place = 1;
    return 1;
}

/* mt_grad_of, and mt_grad_for_write when fresh is not NULL: then a new buffer is not zeroed and
 * *fresh says so. */
static mt_tensor *grad_get(mt_context *ctx, mt_tensor *t, int *fresh) {
    if (fresh) *fresh = 0;
    if (t->grad) return t->grad;
    mt_tensor *g;
    int op_result = is_op_result(ctx, t);
    if (op_result && ctx->tape[t->node].grad_mem) {
        /* Reserved and zeroed by mt_backward (GPU), or t's own memory (mt_grad_in_place). */
        g = mt_new_at(ctx, MT_DTYPE_F32, t->ndim, t->shape, ctx->tape[t->node].grad_mem);
        if (!g) return NULL;
        t->grad = g;
        return g;
    }
    if (t->flags & MT_TENSOR_PERSISTENT) {
        mt_status st = mt_tensor_new_persistent(t->device, MT_DTYPE_F32, t->ndim, t->shape, NULL, &g);
        if (st != MT_OK) return mt_fail_status(ctx, st);
    } else if (op_result) { /* CPU: from the pool, given back once the op's backward has run */
        size_t bytes = (size_t)t->numel * sizeof(float);
        void *mem = mt_pool_alloc(&ctx->grads, bytes);
        if (!mem)
            return mt_fail(ctx, MT_ERR_NOMEM, "out of %s memory for a gradient (%zu bytes)", ctx->ex.backend->name, bytes);
        if (!(g = mt_new_at(ctx, MT_DTYPE_F32, t->ndim, t->shape, mem))) {
            mt_pool_release(&ctx->grads, mem);
            return NULL;
        }
    } else {
        g = mt_new(ctx, MT_DTYPE_F32, t->ndim, t->shape);
        if (!g) return NULL;
    }
    if (fresh) {
        *fresh = 1;
        t->grad = g;
        return g;
    }
    mt_status st = ctx->ex.backend->zero(&ctx->ex, g->data, mt_tensor_bytes(g));
    if (st != MT_OK) {
        if (t->flags & MT_TENSOR_PERSISTENT) mt_tensor_free(g);
        return mt_fail_status(ctx, st);
    }
    t->grad = g;
    return g;
}

mt_tensor *mt_grad_of(mt_context *ctx, mt_tensor *t) { return grad_get(ctx, t, NULL); }

mt_tensor *mt_grad_for_write(mt_context *ctx, mt_tensor *t, int *fresh) { return grad_get(ctx, t, fresh); }

/* Node i's output is a view of an op result (reshape): its gradient is its input's memory. */
static int is_grad_view(const mt_context *ctx, int32_t i) {
    const mt_node *n = &ctx->tape[i];
    return n->alias_in0 && is_op_result(ctx, n->in[0]) && n->in[0]->node < i;
}

/* Node i's output gradient is in[0]'s memory (a view, or a residual add planned by plan_shared_grads). */
static int shares_grad(const mt_context *ctx, int32_t i) {
    return is_grad_view(ctx, i) || ctx->tape[i].grad_shares_in0;
}

/* Which residual adds (pass_in0) of the pass up to node last share their input r's gradient memory
 * (GPU backends: every gradient has a reserved region). Sound when n is the last reader of r in tape
 * order: the pass runs n's backward after those of all of out's readers (they follow n) and before
 * those of r's other readers (they precede n), so the memory holds out's gradient until n's backward
 * has read it, and only then receives r's other terms, on top of r's share (out's gradient itself).
 * The readers of a view of r write into r's gradient too, so they count as readers of r; r must be an
 * op result with its own region (not a view, not a gradient in place), and out not a gradient in place.
 * A residual stream of such adds thus keeps one gradient buffer from the top of the stack down. */
static mt_status plan_shared_grads(mt_context *ctx, int32_t last) {
    size_t bytes = sizeof(int32_t) * (size_t)(last + 1);
    int32_t *owner = mt_arena_alloc(&ctx->host, bytes, 16), *reader = mt_arena_alloc(&ctx->host, bytes, 16);
    if (!owner || !reader) return mt_error(MT_ERR_NOMEM, "backward: out of host memory planning the gradients");
    /* owner[i]: the node whose output's gradient memory node i's output uses through views; reader[o]:
     * the last node reading an output whose owner is o (-1: none). */
    for (int32_t i = 0; i <= last; i++) {
        const mt_node *n = &ctx->tape[i];
        owner[i] = is_grad_view(ctx, i) ? owner[n->in[0]->node] : i;
        reader[i] = -1;
        for (int k = 0; k < MT_NODE_MAX_IN; k++)
            if (n->in[k] && is_op_result(ctx, n->in[k]) && n->in[k]->node < i) reader[owner[n->in[k]->node]] = i;
    }
    for (int32_t i = 0; i <= last; i++) {
        mt_node *n = &ctx->tape[i];
        const mt_tensor *r = n->in[0];
        if (!n->pass_in0 || n->grad_in_place || !r || !is_op_result(ctx, r) || r->node >= i) continue;
        int32_t o = r->node;
        if (owner[o] != o || ctx->tape[o].grad_in_place || reader[o] != i || !mt_same_shape(r, n->out)) continue;
        int other = 0; /* r (or a view of it) also as another input of n */
        for (int k = 1; k < MT_NODE_MAX_IN; k++)
            other |= n->in[k] && is_op_result(ctx, n->in[k]) && n->in[k]->node < i && owner[n->in[k]->node] == o;
        n->grad_shares_in0 = !other;
    }
    return MT_OK;
}

/* Bytes of t's F32 gradient in the reserved region (arena alignment). */
static size_t grad_bytes(const mt_tensor *t) { return ((size_t)t->numel * sizeof(float) + 255) & ~(size_t)255; }

mt_status mt_backward(mt_context *ctx, mt_tensor *root, const mt_tensor *grad_root) {
    if (ctx->status != MT_OK)
        return mt_error(ctx->status, "backward: an earlier op failed (%s); reset the context", mt_status_str(ctx->status));
    if (!mt_check_input(ctx, "backward", root)) return ctx->status;
    if (!(root->flags & MT_TENSOR_REQUIRES_GRAD))
        return mt_error(MT_ERR_STATE, "backward: the root tensor does not require a gradient");
    if (grad_root) {
        if (!mt_check_input(ctx, "backward", grad_root)) return ctx->status;
        if (!mt_same_shape(root, grad_root) || grad_root->dtype != MT_DTYPE_F32) {
            char a[MT_SHAPE_STR + 8], b[MT_SHAPE_STR + 8];
            return mt_error(MT_ERR_SHAPE, "backward: gradient %s does not match root %s", mt_tensor_desc(a, grad_root),
                            mt_tensor_desc(b, root));
        }
    } else if (root->numel != 1) {
        char a[MT_SHAPE_STR];
        return mt_error(MT_ERR_SHAPE, "backward: root %s is not a scalar; pass its gradient",
                        mt_shape_str(a, root->shape, root->ndim));
    }
    for (int32_t i = 0; i <= root->node; i++) {
        const mt_node *n = &ctx->tape[i];
        if (n->seed && (i != root->node || grad_root != n->seed))
            return mt_error(MT_ERR_STATE, "backward: %s computed its gradient in the forward for the root gradient "
                            "it was given; start the pass from its output with that tensor", n->op);
    }
    /* Each pass propagates only its own root's gradient: the gradients of non-leaf tensors left by an
     * earlier pass over this tape are dropped (their memory goes back to the pool), otherwise a
     * second backward would push the first one's gradients through the graph again. Leaves keep
     * theirs: they accumulate across passes, as PyTorch's .grad does. */
    for (int32_t i = 0; i < ctx->n_nodes; i++) {
        mt_node *n = &ctx->tape[i];
        if (n->out->grad && !n->grad_mem) mt_pool_release(&ctx->grads, n->out->grad->data);
        n->out->grad = NULL;
        n->grad_mem = NULL;
        n->grad_shares_in0 = 0;
    }
    /* Where the gradients of op results live. On a GPU backend, every one this pass may reach is reserved as
     * one arena region, zeroed by one memset: one launch instead of one per tensor, and device memory
     * is not what limits there. On the CPU each is taken from the pool when first needed and given
     * back as soon as the op's backward has run (below), so the pass holds only the gradients still
     * to be propagated: the peak memory of a training step is what limits there. */
    size_t total = 0;
    int one_region = ctx->ex.backend != &mt_cpu_backend; /* the backend decides (the emulator runs CUDA's) */
    if (one_region) {
        MT_TRY(plan_shared_grads(ctx, root->node));
        for (int32_t i = 0; i <= root->node; i++)
            if (!ctx->tape[i].grad_in_place && !shares_grad(ctx, i)) total += grad_bytes(ctx->tape[i].out);
    }
    if (total) {
        unsigned char *mem = mt_ctx_alloc_data(ctx, total);
        if (!mem) return ctx->status;
        MT_TRY(ctx->ex.backend->zero(&ctx->ex, mem, total));
        for (int32_t i = 0; i <= root->node; i++) {
            mt_node *n = &ctx->tape[i];
            if (shares_grad(ctx, i)) {
                /* A view (reshape) shares its input's gradient: its consumers add straight into it. A
                 * residual add whose input's last reader it is shares that input's (plan_shared_grads). */
                n->grad_mem = ctx->tape[n->in[0]->node].grad_mem;
                continue;
            }
            if (n->grad_in_place) continue;
            n->grad_mem = mem;
            mem += grad_bytes(n->out);
        }
    }
    /* A gradient written into its tensor's memory by a fused consumer, on every backend (so the CPU's
     * pool never takes it back). */
    for (int32_t i = 0; i <= root->node; i++)
        if (ctx->tape[i].grad_in_place) ctx->tape[i].grad_mem = ctx->tape[i].out->data;
    const mt_backend *be = ctx->ex.backend;
    mt_tensor *g = mt_grad_of(ctx, root);
    if (!g) return ctx->status;
    mt_bcast same = {.ndim = 1, .shape = {g->numel}, .sa = {1}, .sb = {1}, .numel = g->numel, .na = g->numel,
                     .nb = g->numel};
    if (ctx->tape[root->node].seed) {
        /* The root's own backward does not read its gradient (computed in the forward): no seeding. */
    } else if (grad_root) {
        MT_TRY(be->binary_fwd(&ctx->ex, MT_BINARY_ADD, mt_f32(g), mt_f32(g), mt_f32(grad_root), &same));
    } else {
        MT_TRY(be->scalar_fwd(&ctx->ex, MT_SCALAR_ADD, mt_f32(g), mt_f32(g), 1.0f, 1));
    }
    for (int32_t i = root->node; i >= 0; i--) {
        mt_node *n = &ctx->tape[i];
        if (n->out->grad) {
            mt_status st = n->backward(ctx, n);
            if (st != MT_OK) {
                if (ctx->status == MT_OK) ctx->status = st;
                return mt_error_prefix(st, "backward of %s: ", n->op);
            }
            if (ctx->status != MT_OK) return mt_error_prefix(ctx->status, "backward of %s: ", n->op);
            /* Nothing reads an op result's gradient after that op's backward (PyTorch frees them
             * likewise): a pooled one goes back to the pool. */
            if (!n->grad_mem) mt_pool_release(&ctx->grads, n->out->grad->data);
            n->out->grad = NULL;
        }
        if (ctx->backward_hook) MT_TRY(ctx->backward_hook(ctx, i, ctx->backward_hook_user));
    }
    return MT_OK;
}

mt_status mt_requires_grad(mt_tensor *t, int requires_grad) {
    if (!t) return mt_error(MT_ERR_INVALID_ARG, "requires_grad: tensor is NULL");
    if (t->node >= 0) {
        if (requires_grad) return MT_OK;
        return mt_error(MT_ERR_STATE, "requires_grad: the result of an op cannot stop requiring a gradient; "
                                      "detach it");
    }
    if (requires_grad && t->dtype != MT_DTYPE_F32) {
        char d[MT_SHAPE_STR + 8];
        return mt_error(MT_ERR_DTYPE, "requires_grad: %s: only f32 tensors have gradients", mt_tensor_desc(d, t));
    }
    if (requires_grad) t->flags |= MT_TENSOR_REQUIRES_GRAD;
    else t->flags &= ~(uint32_t)MT_TENSOR_REQUIRES_GRAD;
    return MT_OK;
}

mt_status mt_zero_grad(mt_exec *ex, mt_tensor *t) {
    if (!t) return mt_error(MT_ERR_INVALID_ARG, "zero_grad: tensor is NULL");
    if (!t->grad) return MT_OK;
    return ex->backend->zero(ex, t->grad->data, mt_tensor_bytes(t->grad));
}
