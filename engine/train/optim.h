/*
 * optim.h — AdamW over the backend's fused kernel, the learning-rate schedule (linear warm-up, then
 * inverse-square-root decay), gradient clipping by global norm (the backend's sumsq), and the
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
    mt_tensor *acc;       /* (1) device scratch of the squared-norm sum */
} mt_optimizer;

mt_status mt_optimizer_create(const mt_transformer *model, mt_context *ctx, mt_optimizer **out);
void mt_optimizer_free(mt_optimizer *o);

/* Clips the gradients to clip_norm (global L2 norm) and applies one AdamW step at mt_lr_at(step+1);
 * *grad_norm (may be NULL) receives the norm before clipping. Gradients are left as they were (the
 * caller zeroes them). */
mt_status mt_optimizer_step(mt_optimizer *o, mt_context *ctx, const mt_adamw_hparams *h, double *grad_norm);

/* One training step over micro-batches (gradient accumulation): each micro-batch's mean token loss
 * is weighted by its share of the step's target tokens, so the step's gradient is that of the mean
 * over all its tokens. Resets ctx before each micro-batch. *loss receives the mean token loss. */
mt_status mt_train_step(mt_context *ctx, mt_transformer *model, mt_optimizer *o, const mt_adamw_hparams *h,
                        const mt_seq_batch *micro, int n_micro, double *loss, double *grad_norm);

/* Mean token loss (label smoothing ls) over batches without gradients or dropout; *tokens receives
 * the number of target tokens. */
mt_status mt_eval_loss(mt_context *ctx, const mt_transformer *model, const mt_seq_batch *batches, int n, float ls,
                       double *loss, int64_t *tokens);

#endif
