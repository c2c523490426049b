/*
 * optim.h — AdamW over the backend's multi-tensor kernels, the learning-rate schedule (linear warm-up, then
 * inverse-square-root decay), gradient clipping by global norm (summed and applied on the device), and the
 * training step with gradient accumulation over micro-batches.
 *
 * Weight decay applies to matrices (embeddings and projections), not to norms and biases, as is
 * usual for Transformers; tests/reference/model.py uses the same parameter groups.
 */
#ifndef MT_TRAIN_OPTIM_H
#define MT_TRAIN_OPTIM_H

#include "nn/model.h"

typedef struct mt_adamw_hparams {
    double lr;            /* peak learning rate */
    double beta1, beta2, eps;
    double weight_decay;
    int64_t warmup_steps; /* 0: constant lr */
    double clip_norm;     /* <= 0: no clipping */
    double label_smoothing;
} mt_adamw_hparams;

void mt_adamw_hparams_default(mt_adamw_hparams *h);

/* lr at optimizer step `step` (1-based): lr * min(step / warmup, sqrt(warmup / step)). */
double mt_lr_at(const mt_adamw_hparams *h, int64_t step);

typedef struct mt_optimizer {
    const mt_transformer *model;
    int n;
    mt_tensor **m, **v;   /* (n) first and second moments, persistent, zero at start */
    int *decay;           /* (n) 1: weight decay applies */
    int64_t step;         /* optimizer steps taken */
    mt_tensor *acc;       /* (4) device scalars: [0] this step's squared global norm, [1] the sum of the
                           * unread steps' losses, [2] the sum of their squared norms (a check), [3] spare */
    int64_t unread;       /* steps since the last mt_optimizer_read */
    mt_adamw_slot *slots; /* (n) host table of the multi-tensor kernels, rebuilt every step */
} mt_optimizer;

mt_status mt_optimizer_create(const mt_transformer *model, mt_context *ctx, mt_optimizer **out);
void mt_optimizer_free(mt_optimizer *o);

/* Clips the gradients to clip_norm (global L2 norm) and applies one AdamW step at mt_lr_at(step+1),
 * the norm and the clipping computed on the device. *grad_norm (may be NULL: no host wait) receives
 * the norm before clipping; a non-finite norm leaves the weights as they were (MT_ERR_STATE when read).
 * Gradients are left as they were (the caller zeroes them). */
mt_status mt_optimizer_step(mt_optimizer *o, mt_context *ctx, const mt_adamw_hparams *h, double *grad_norm);

/* One training step over micro-batches (gradient accumulation): each micro-batch's mean token loss
 * is weighted by its share of the step's target tokens, so the step's gradient is that of the mean
 * over all its tokens. Resets ctx before each micro-batch. On a GPU nothing waits for the device:
 * the loss and the norm stay there. With loss and grad_norm NULL the step is not read; otherwise
 * it ends with mt_optimizer_read (one host wait). */
mt_status mt_train_step(mt_context *ctx, mt_transformer *model, mt_optimizer *o, const mt_adamw_hparams *h,
                        const mt_seq_batch *micro, int n_micro, double *loss, double *grad_norm);

/* Reads what the steps since the last read left on the device (one host wait): *loss the mean token
 * loss over those steps, *grad_norm the last step's norm before clipping (either may be NULL).
 * MT_ERR_STATE when a loss or a norm among them was not finite (diverged). */
mt_status mt_optimizer_read(mt_optimizer *o, mt_context *ctx, double *loss, double *grad_norm);

/* Mean token loss (label smoothing ls) over batches without gradients or dropout; *tokens receives
 * the number of target tokens. */
mt_status mt_eval_loss(mt_context *ctx, const mt_transformer *model, const mt_seq_batch *batches, int n, float ls,
                       double *loss, int64_t *tokens);

#endif
