/*
 * autograd.h — the tape (Wengert list) and the reverse pass.
 *
 * A differentiable op whose inputs require a gradient (with grad enabled) appends one node: the op's
 * name, its output, its inputs, tensors it saved for the backward (mean/rstd, lse, argmax indices) and
 * scalar arguments, and the backward function. Nodes are appended in execution order, so walking the
 * tape backwards visits every node after all of its consumers: a valid topological order by
 * construction. Gradients accumulate (+=) into zero-initialised buffers, so a tensor used twice
 * receives the sum.
 */
#ifndef MT_CORE_AUTOGRAD_H
#define MT_CORE_AUTOGRAD_H

#include "core/context.h"

#define MT_NODE_MAX_IN 4

typedef struct mt_node mt_node;
/* Computes the inputs' gradients from node->out->grad (kernels accumulate into mt_grad_of(input)). */
typedef mt_status (*mt_backward_fn)(mt_context *ctx, mt_node *node);

struct mt_node {
    const char *op;                   /* name for error messages */
    mt_backward_fn backward;
    mt_tensor *out;
    mt_tensor *in[MT_NODE_MAX_IN];    /* inputs (NULL where absent) */
    mt_tensor *saved[MT_NODE_MAX_IN]; /* extra saved tensors */
    float f[4];                       /* scalar arguments */
    int64_t i[8];                     /* integer arguments */
    const void *p;                    /* op-specific descriptor in the host arena (mt_bcast, ...) */
    void *grad_mem;                   /* out's gradient memory, reserved and zeroed by mt_backward */
    int alias_in0;                    /* out is a view of in[0] (reshape): on a GPU backend its gradient
                                       * is in[0]'s own memory, so the backward adds nothing (view_grad) */
    int grad_in_place;                /* out's gradient is out's own memory: its one consumer (a fused
                                       * loss) overwrote out with it (mt_grad_in_place) */
    int pass_in0;                     /* set by the op: out has in[0]'s shape and in[0]'s gradient is
                                       * out's gradient plus other inputs' terms (a residual add), so the two
                                       * may share memory (mt_residual_grad_aliased) */
    int grad_shares_in0;              /* set by mt_backward: out's gradient is in[0]'s gradient memory */
    const mt_tensor *seed;            /* the op computed its inputs' gradients in the forward for this
                                       * root gradient: a pass must start here with exactly this tensor */
};

/* True when an op over these inputs must be recorded (grad enabled and an input requires grad).
 * NULL entries are ignored. */
int mt_needs_grad(const mt_context *ctx, mt_tensor *const *inputs, int n);

/* Appends a node producing out (which becomes requires_grad) and returns it for the op to fill in.
 * NULL + failure recorded if the tape cannot grow. */
mt_node *mt_tape_push(mt_context *ctx, const char *op, mt_backward_fn backward, mt_tensor *out);

/* The backward of a view (alias_in0): 1 when mt_backward gave n->out's gradient in[0]'s memory, so the
 * contributions already sit in in[0]'s gradient (which this marks as present); 0 when the caller must
 * add them itself (the CPU, or in[0] is a leaf). */
int mt_view_grad_aliased(mt_context *ctx, mt_node *n);

/* The backward of a residual add (pass_in0): 1 when mt_backward gave n->out's gradient in[0]'s memory, so
 * in[0]'s share (out's gradient itself) already sits in in[0]'s gradient (which this marks as present) and
 * the backward must add nothing to it; 0 when the caller adds it itself. mt_backward shares the memory
 * on a GPU backend when n is the last reader of in[0] in tape order (counting the readers of views of
 * in[0]) and in[0] is an op result with its own gradient region: every other reader of in[0] comes before
 * n, so its backward runs after n's has read out's gradient, and adds to in[0]'s on top of it. */
int mt_residual_grad_aliased(mt_context *ctx, mt_node *n);

/* Gives t's gradient t's own memory, for a consumer that overwrites t with its gradient in the
 * forward (the fused classifier): 1 when t is the output of the tape's last node and not a view, so
 * nothing recorded so far reads it; 0 (nothing changed) otherwise, and the caller takes its unfused
 * path. The consumer's backward must find t's gradient absent (no other consumer recorded after it). */
int mt_grad_in_place(mt_context *ctx, mt_tensor *t);

/* The gradient buffer of t, allocated and zeroed on first use (in the arena for arena tensors, in
 * persistent memory for persistent tensors). NULL + failure recorded on allocation failure. */
mt_tensor *mt_grad_of(mt_context *ctx, mt_tensor *t);
/* mt_grad_of for a kernel that can overwrite instead of add: *fresh = 1 when the buffer is new and
 * holds nothing yet (not zeroed: the caller writes every element, e.g. a GEMM with beta 0); 0 when
 * it already exists or was reserved zeroed (add to it). Saves zeroing, then reading, a buffer as large
 * as the activations. */
mt_tensor *mt_grad_for_write(mt_context *ctx, mt_tensor *t, int *fresh);

/* Marks a leaf tensor (not the result of a recorded op) as requiring a gradient, or not. F32 only.
 * Turning it off on an op result is MT_ERR_STATE (detach it instead). */
mt_status mt_requires_grad(mt_tensor *t, int requires_grad);

/* Sets t's gradient (if it has one) to zeros, on the execution state ex (the one of t's device). */
mt_status mt_zero_grad(mt_exec *ex, mt_tensor *t);

/* The reverse pass from root: grad_root (same shape as root) or, when NULL, ones (root must then be a
 * scalar or a one-element tensor). Gradients of leaves (parameters, inputs) accumulate over passes;
 * those of op results are recomputed by each pass, so calling it twice over one tape gives the leaves
 * twice the gradient (PyTorch's retain_graph semantics). A node with a seed (a fused loss) must be the
 * root and grad_root that seed, else MT_ERR_STATE before anything runs. Returns the first failing
 * status. */
mt_status mt_backward(mt_context *ctx, mt_tensor *root, const mt_tensor *grad_root);

#endif
