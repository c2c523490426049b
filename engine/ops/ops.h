/*
 * ops.h — the device-agnostic op layer: what the model, the trainer and the decoder are written in.
 *
 * Every op checks its operands (device, dtype, shapes; the message names the op and the shapes),
 * allocates its result in the context's step arena, runs one backend kernel and, when an input
 * requires a gradient and grad is enabled, records a tape node with its backward.
 * On failure an op returns NULL and records the status in ctx->status; an op given a NULL input
 * returns NULL (so errors propagate through straight-line code, checked once at the end).
 * Shapes are passed as (ndim, const int64_t *shape); MT_DIMS(2, 3) builds one inline.
 */
#ifndef MT_OPS_OPS_H
#define MT_OPS_OPS_H

#include "core/autograd.h"
#include "core/context.h"

#define MT_DIMS(...) (sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), ((const int64_t[]){__VA_ARGS__})

/* ---- creation (arena tensors, F32 unless said) ---- */
mt_tensor *mt_zeros(mt_context *ctx, int ndim, const int64_t *shape);
mt_tensor *mt_ones(mt_context *ctx, int ndim, const int64_t *shape);
mt_tensor *mt_full(mt_context *ctx, int ndim, const int64_t *shape, float value);
mt_tensor *mt_arange(mt_context *ctx, double start, double step, int64_t n);
/* Copies host data of dtype (F32 or I32 on every backend). */
mt_tensor *mt_from_data(mt_context *ctx, mt_dtype dtype, int ndim, const int64_t *shape, const void *host);
/* Several host arrays as device tensors with one host-to-device copy (a training batch's ids, mask and
 * targets: one launch instead of one per array): each item's t is a tensor of its dtype and shape over
 * its slice (256-byte aligned) of one arena buffer. 0 + failure recorded (the t's left NULL). */
typedef struct mt_upload {
    mt_dtype dtype;
    int ndim;
    int64_t shape[MT_MAX_DIMS];
    const void *host;
    mt_tensor *t; /* out */
} mt_upload;
int mt_from_data_packed(mt_context *ctx, mt_upload *items, int n);
mt_tensor *mt_uniform(mt_context *ctx, int ndim, const int64_t *shape, float low, float high);
mt_tensor *mt_normal(mt_context *ctx, int ndim, const int64_t *shape, float mean, float std);
/* A copy of t (same device), not recorded. */
mt_tensor *mt_clone(mt_context *ctx, const mt_tensor *t);
/* The same data as a leaf that does not require grad. */
mt_tensor *mt_detach(mt_context *ctx, mt_tensor *t);
/* Element conversion (no gradient). */
mt_tensor *mt_cast(mt_context *ctx, mt_tensor *x, mt_dtype dtype);

/* In-place initialisation of any F32 tensor (parameters), drawn from ctx's generator. */
mt_status mt_fill(mt_context *ctx, mt_tensor *t, float value);
mt_status mt_fill_uniform(mt_context *ctx, mt_tensor *t, float low, float high);
mt_status mt_fill_normal(mt_context *ctx, mt_tensor *t, float mean, float std);
/* Host <-> tensor copies of all elements (bytes must be numel * dtype size). */
mt_status mt_copy_from_host(mt_context *ctx, mt_tensor *t, const void *src, size_t bytes);
mt_status mt_copy_to_host(mt_context *ctx, const mt_tensor *t, void *dst, size_t bytes);
/* dst <- src elements (same numel and dtype, any devices of ctx's backend). */
mt_status mt_copy_tensor(mt_context *ctx, mt_tensor *dst, const mt_tensor *src);

/* ---- elementwise (NumPy broadcasting for binary ops) ---- */
mt_tensor *mt_binary(mt_context *ctx, mt_binary_op op, mt_tensor *a, mt_tensor *b);
mt_tensor *mt_add(mt_context *ctx, mt_tensor *a, mt_tensor *b);
mt_tensor *mt_sub(mt_context *ctx, mt_tensor *a, mt_tensor *b);
mt_tensor *mt_mul(mt_context *ctx, mt_tensor *a, mt_tensor *b);
mt_tensor *mt_div(mt_context *ctx, mt_tensor *a, mt_tensor *b);
mt_tensor *mt_scalar(mt_context *ctx, mt_scalar_op op, mt_tensor *x, float s);
mt_tensor *mt_add_scalar(mt_context *ctx, mt_tensor *x, float s);
mt_tensor *mt_mul_scalar(mt_context *ctx, mt_tensor *x, float s);
mt_tensor *mt_pow(mt_context *ctx, mt_tensor *x, float exponent);
mt_tensor *mt_unary(mt_context *ctx, mt_unary_op op, mt_tensor *x);
mt_tensor *mt_neg(mt_context *ctx, mt_tensor *x);
mt_tensor *mt_exp(mt_context *ctx, mt_tensor *x);
mt_tensor *mt_ln(mt_context *ctx, mt_tensor *x); /* natural log (mt_log is the logger) */
mt_tensor *mt_tanh(mt_context *ctx, mt_tensor *x);
mt_tensor *mt_sigmoid(mt_context *ctx, mt_tensor *x);
mt_tensor *mt_relu(mt_context *ctx, mt_tensor *x);
mt_tensor *mt_gelu(mt_context *ctx, mt_tensor *x); /* exact (erf), as PyTorch's default */
mt_tensor *mt_silu(mt_context *ctx, mt_tensor *x);
/* x where mask == 0, value where mask != 0; mask F32, broadcast to x. */
mt_tensor *mt_masked_fill(mt_context *ctx, mt_tensor *x, mt_tensor *mask, float value);
/* Inverted dropout with probability p; identity (the same tensor) when !training or p == 0. */
mt_tensor *mt_dropout(mt_context *ctx, mt_tensor *x, float p, int training);
/* r + mt_dropout(x, p, training) in one pass (the residual connection): the same values and random
 * numbers as the two ops; r and x of one shape (otherwise it is those two ops). */
mt_tensor *mt_add_dropout(mt_context *ctx, mt_tensor *r, mt_tensor *x, float p, int training);

/* ---- reductions: axes may be negative; n_axes == 0 reduces over every axis ---- */
mt_tensor *mt_reduce(mt_context *ctx, mt_reduce_op op, mt_tensor *x, const int *axes, int n_axes, int keepdim);
mt_tensor *mt_sum(mt_context *ctx, mt_tensor *x, const int *axes, int n_axes, int keepdim);
mt_tensor *mt_mean(mt_context *ctx, mt_tensor *x, const int *axes, int n_axes, int keepdim);
mt_tensor *mt_max(mt_context *ctx, mt_tensor *x, const int *axes, int n_axes, int keepdim);
/* I32 indices of the maximum along axis (no gradient). */
mt_tensor *mt_argmax(mt_context *ctx, mt_tensor *x, int axis, int keepdim);

/* ---- products ---- */
/* op(a) @ op(b): a (..., M, K), b (..., K, N) after the optional transposes of the last two axes;
 * batch dims broadcast; a 1-D operand is not accepted (reshape it). */
mt_tensor *mt_matmul(mt_context *ctx, mt_tensor *a, mt_tensor *b, int trans_a, int trans_b);
/* x (..., K) @ w^T (N, K) + bias (N) (bias may be NULL): the nn.Linear layout. */
mt_tensor *mt_linear(mt_context *ctx, mt_tensor *x, mt_tensor *w, mt_tensor *bias);
/* act(mt_linear(x, w, bias)) (a feed-forward layer's first projection). ReLU with a bias in bf16/f16
 * mixed precision on a backend with gemm_lowp_bias runs in the GEMM's epilogue (one launch, the same
 * values); anything else is mt_linear then mt_unary. */
mt_tensor *mt_linear_act(mt_context *ctx, mt_tensor *x, mt_tensor *w, mt_tensor *bias, mt_unary_op act);
/* As mt_linear with w's int8 form w->qw (core/quant.h): rows of x quantized per row at run time,
 * int32 accumulation (the backend's qlinear). Inference only: no gradient (MT_ERR_UNSUPPORTED when
 * one is needed, or on a backend without int8 GEMM). */
mt_tensor *mt_linear_q8(mt_context *ctx, mt_tensor *x, mt_tensor *w, mt_tensor *bias);

/* ---- layout ---- */
mt_tensor *mt_reshape(mt_context *ctx, mt_tensor *x, int ndim, const int64_t *shape); /* one dim may be -1 */
mt_tensor *mt_permute(mt_context *ctx, mt_tensor *x, const int *perm);
mt_tensor *mt_transpose(mt_context *ctx, mt_tensor *x, int axis0, int axis1);
mt_tensor *mt_narrow(mt_context *ctx, mt_tensor *x, int axis, int64_t start, int64_t length);
mt_tensor *mt_concat(mt_context *ctx, mt_tensor *const *xs, int n, int axis);
/* Attention heads (B, H, T, sum D_i) from parts laid side by side along the last axis: a 3-D part
 * (B, T, H*D_i) is split into its H heads, a 4-D part (B, H, T, D_i) taken as it is and a 4-D part
 * (B, 1, T, D_i) read by every head (stride 0; its gradient sums the heads'). One strided copy per
 * part: concat(split_heads(x), ...) and H copies of a shared part without the intermediates. */
mt_tensor *mt_concat_heads(mt_context *ctx, mt_tensor *const *xs, int n, int64_t H);

/* ---- fused nn ops ---- */
mt_tensor *mt_softmax(mt_context *ctx, mt_tensor *x, int axis);
mt_tensor *mt_log_softmax(mt_context *ctx, mt_tensor *x, int axis);
mt_tensor *mt_layer_norm(mt_context *ctx, mt_tensor *x, mt_tensor *w, mt_tensor *b, float eps);
mt_tensor *mt_rms_norm(mt_context *ctx, mt_tensor *x, mt_tensor *w, float eps);
/* table (V, C) rows gathered by I32 ids of any shape -> (ids..., C). Ids out of range are an error. */
mt_tensor *mt_embedding(mt_context *ctx, mt_tensor *table, mt_tensor *ids);
/* scale * mt_embedding(table, ids) as one op (one kernel forward and backward; the model's embedding
 * times sqrt(d_model)): the same values as the two ops, the gradient within rounding. */
mt_tensor *mt_embedding_scaled(mt_context *ctx, mt_tensor *table, mt_tensor *ids, float scale);
/* Rows of x (N, ...) picked by I32 ids (M) -> (M, ...): beam reordering; no gradient. */
mt_tensor *mt_index_rows(mt_context *ctx, mt_tensor *x, mt_tensor *ids);
/* Scalar mean label-smoothed cross-entropy of logits (N, V) against I32 targets (N). */
mt_tensor *mt_cross_entropy(mt_context *ctx, mt_tensor *logits, mt_tensor *targets, float label_smoothing,
                            int ignore_index);
/* The same loss as the training loss of a backward pass from it with grad_root dloss (an F32 scalar
 * tensor of ctx's device, already holding its value): where the backend has a fused classifier and
 * the logits are the last op's fresh output, the logits' gradient is computed with the loss and
 * written over the logits, which must then have no other reader (their values are gone; a later op
 * that records a use of them makes the backward fail). Otherwise mt_cross_entropy. Either way the
 * caller runs mt_backward(ctx, loss, dloss). */
mt_tensor *mt_cross_entropy_fused(mt_context *ctx, mt_tensor *logits, mt_tensor *targets, float label_smoothing,
                                  int ignore_index, mt_tensor *dloss);
/* Fused scaled-dot-product attention, see mt_attn_desc: q (B,H,Tq,D), k (B,Hk,Tk,D), v (B,Hk,Tk,Dv);
 * mask (additive F32, broadcastable to (B,H,Tq,Tk)) may be NULL. */
mt_tensor *mt_attention(mt_context *ctx, mt_tensor *q, mt_tensor *k, mt_tensor *v, mt_tensor *mask, int causal,
                        float scale);
/* The same against a decoding cache (mt_attn_desc's paged keys): k (P,Hk,C,D), v (P,Hk,C,Dv), and
 * rows (B,Tk) I32 (Tk <= C, every entry in [0, P)): key/value j of batch row b is position j of block
 * rows[b, j]. Inference only (MT_ERR_UNSUPPORTED when a gradient is needed). */
mt_tensor *mt_attention_paged(mt_context *ctx, mt_tensor *q, mt_tensor *k, mt_tensor *v, mt_tensor *rows,
                              mt_tensor *mask, int causal, float scale);
/* Rotary embedding of x (..., T, D) with positions pos0 + t (pairs (2i, 2i+1), base^(-2i/D)). */
mt_tensor *mt_rope(mt_context *ctx, mt_tensor *x, int64_t pos0, float base);

/* ---- precision of matrix products (precision.c) ---- */
/* F32 (default), TF32, or mixed precision BF16 / F16: matmul and linear round their operands to
 * bf16/f16 and accumulate in f32; every other op, the weights and the gradients stay f32.
 * MT_ERR_UNSUPPORTED for BF16/F16 on a backend without a low-precision GEMM (the CPU). */
mt_status mt_context_set_precision(mt_context *ctx, mt_precision p);
mt_precision mt_context_precision(const mt_context *ctx);
/* The GEMM operands of weights cast once per step: every 2-D F32 tensor of ts rounded to the context's
 * low precision (bf16/f16) in one launch, into the step arena; matmul and linear then use that copy
 * instead of casting the weight at each use. Valid until the context's next reset; nothing to do (MT_OK)
 * in f32/TF32 or on a backend without cast_multi. */
mt_status mt_cast_weights(mt_context *ctx, mt_tensor *const *ts, int n);
/* t's copy from mt_cast_weights when it is valid for ctx now, else NULL. */
mt_tensor *mt_weight_lowp(const mt_context *ctx, const mt_tensor *t);
/* Forgets t's copy (t is about to change). */
void mt_weight_lowp_drop(mt_tensor *t);

#endif
