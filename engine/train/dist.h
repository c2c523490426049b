/*
 * dist.h — data-parallel training over the communicator (comm/comm.h): every rank holds the whole
 * model and trains on its own shard of every global batch; gradients are summed in buckets launched
 * during the backward pass as soon as a bucket's gradients are final; every rank applies the same
 * AdamW step to the same summed gradients (so the global norm is every rank's norm).
 *
 * The global batch is the one a single process would train on (the batcher is a pure function of
 * the config, run identically on every rank). Rank r of W takes rows [B*r/W, B*(r+1)/W) of each
 * micro-batch and weights its mean token loss by its share of the step's global target tokens, so
 * the sum over ranks of the gradients is the single-process gradient of the mean over all tokens,
 * up to the order of float additions. Dropout draws from (seed, rank, step), so a resumed run
 * repeats the uninterrupted one bit for bit on the same world size.
 */
#ifndef MT_TRAIN_DIST_H
#define MT_TRAIN_DIST_H

#include <jansson.h>

#include "train/optim.h"
#include "train/trainer.h"

typedef struct mt_dist mt_dist;

typedef struct mt_dist_stats {
    int64_t steps;
    double comm_s;      /* time the communicator spent in gradient all-reduces */
    double exposed_s;   /* time the training thread waited for them after the backward pass */
    double backward_s;  /* time of the last micro-batch's backward passes */
    double tokens;      /* source + target tokens of this rank's shards */
    int n_buckets;      /* gradient buckets of a step */
    size_t bucket_bytes;/* bytes per bucket (the first at most 1 MB, the last what is left) */
} mt_dist_stats;

/* Elements per gradient bucket: bucket_mb, or for bucket_mb <= 0 an eighth of the n_grad gradient
 * elements, clamped to 1..25 MB, so a small model still gets several buckets to overlap. */
size_t mt_dist_bucket_elems(double bucket_mb, int64_t n_grad);

/* Joins the world of tc (world_size, rank, rendezvous, comm_timeout_s, bucket_mb) with the model's
 * starting weights: the handshake carries the config (without the per-rank keys and the paths, which
 * each host resolves under its own root), data_sha (a SHA-256 of the training data as the trainer
 * encoded it) and a SHA-256 of the weights; a rank that differs from rank 0 is refused naming the
 * config key, the data or the weights. config: the resolved config. */
mt_status mt_dist_create(const mt_train_config *tc, const json_t *config, const char *data_sha,
                         const mt_transformer *m, mt_context *ctx, mt_dist **out);
void mt_dist_free(mt_dist *d);
int mt_dist_rank(const mt_dist *d);
int mt_dist_world(const mt_dist *d);

/* mt_train_step for one rank of the world: micro are the global micro-batches of optimizer step
 * `step` (1-based); *loss receives the global mean token loss. */
mt_status mt_dist_train_step(mt_dist *d, mt_context *ctx, mt_transformer *m, mt_optimizer *o, const mt_adamw_hparams *h,
                             const mt_seq_batch *micro, int n_micro, int64_t step, double *loss, double *grad_norm);

/* Sums n doubles over the ranks, in rank order (the same result on every rank). */
mt_status mt_dist_sum(mt_dist *d, double *vals, int n);

/* Agrees on the loop's stop conditions before a step: *elapsed becomes rank 0's, *cancel is set
 * when any rank was cancelled. */
mt_status mt_dist_agree(mt_dist *d, double *elapsed, int *cancel);

/* Ends a run: a barrier, so rank 0's last files are written before the others leave. */
mt_status mt_dist_finish(mt_dist *d);

mt_dist_stats mt_dist_get_stats(const mt_dist *d);

#endif
