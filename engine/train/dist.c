/*
 * dist.c — data-parallel training (see dist.h): the handshake, the per-rank shard of a global
 * batch, gradient buckets launched from the backward pass, and scalar sums in rank order.
 *
 * The buckets live where the model does: host memory on a CPU rank (Gloo), device memory on a GPU
 * rank (NCCL). Gradients go in and out through the backend's copy and zero, so one path serves
 * both; a GPU rank waits for its stream before a bucket is handed to the communicator, whose NCCL
 * stream must not read the bucket before the copies into it are done.
 */
#include "train/dist.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "comm/comm.h"
#include "core/alloc.h"
#include "core/autograd.h"
#include "core/backend.h"
#include "core/context.h"
#include "core/error.h"
#include "io/io.h"

#define MT_DIST_AGREE_MAX 64

typedef struct bucket {
    int first, last;        /* params[first..last] (indices into the model's params; first >= last: reversed) */
    size_t off, n;          /* elements of flat */
    int32_t ready_at;       /* tape node after which every gradient of the bucket is final (-1: at the end) */
    mt_comm_work *work;
} bucket;

struct mt_dist {
    mt_comm *comm;
    int rank, world;
    uint64_t seed;
    const mt_transformer *model;
    const struct mt_backend *backend; /* the model's: flat lives on its device */
    int device;
    float *flat;            /* every gradient, bucket after bucket (reused every step), on device */
    size_t *param_off;      /* (n_params) offset of each param in flat */
    int n_buckets;
    size_t bucket_cap;      /* elements per bucket (mt_dist_bucket_elems) */
    bucket *buckets;
    int next;               /* the next bucket to launch (buckets launch in order on every rank) */
    double *meta, *meta_all;/* (n_params + 1) this rank's presence flags and loss; (world x that) */
    const mt_tensor **sorted; /* params sorted by address, for the tape scan */
    int *sorted_idx;
    mt_seq_batch shard;
    mt_dist_stats stats;
};

/* ---- handshake ----------------------------------------------------------------------------------- */

/* Keys that may differ between the ranks of one run: the per-rank ones, and the paths, which each
 * host resolves under its own root (the content they name is compared instead: "data", "weights"). */
static const char *const per_rank_keys[] = {"rank", "rendezvous", "threads", "device", "corpora", "valid",
                                            "test", "tokenizer", "out_dir", "resume", NULL};

static void diff_handshake(const char *mine, const char *rank0, char *msg, size_t cap) {
    json_t *a = json_loads(mine, 0, NULL), *b = json_loads(rank0, 0, NULL);
    snprintf(msg, cap, "the handshake differs");
    if (a && b) {
        json_t *ca = json_object_get(a, "config"), *cb = json_object_get(b, "config");
        const char *k;
        json_t *va;
        int found = 0;
        json_object_foreach(ca, k, va) {
            json_t *vb = json_object_get(cb, k);
            if (!json_equal(va, vb)) {
                char *sa = json_dumps(va, JSON_ENCODE_ANY | JSON_REAL_PRECISION(10));
                char *sb = vb ? json_dumps(vb, JSON_ENCODE_ANY | JSON_REAL_PRECISION(10)) : NULL;
                snprintf(msg, cap, "config key '%s' is %.200s here but %.200s on rank 0", k, sa ? sa : "?",
                         sb ? sb : "absent");
                free(sa);
                free(sb);
                found = 1;
                break;
            }
        }
        if (!found) {
            json_object_foreach(cb, k, va) if (!json_object_get(ca, k)) {
                snprintf(msg, cap, "config key '%s' is absent here but set on rank 0", k);
                found = 1;
                break;
            }
        }
        const char *da = json_string_value(json_object_get(a, "data"));
        const char *db = json_string_value(json_object_get(b, "data"));
        const char *wa = json_string_value(json_object_get(a, "weights"));
        const char *wb = json_string_value(json_object_get(b, "weights"));
        if (!found && da && db && strcmp(da, db) != 0) {
            snprintf(msg, cap, "the training data differ (tokenizer and encoded pairs: sha256 %.16s... here, "
                     "%.16s... on rank 0)", da, db);
            found = 1;
        }
        if (!found && wa && wb && strcmp(wa, wb) != 0)
            snprintf(msg, cap, "the starting weights differ (sha256 %.16s... here, %.16s... on rank 0)", wa, wb);
    }
    json_decref(a);
    json_decref(b);
}

/* ---- creation ------------------------------------------------------------------------------------ */

size_t mt_dist_bucket_elems(double bucket_mb, int64_t n_grad) {
    double mb = bucket_mb;
    if (mb <= 0) {
        /* Auto: an eighth of the gradients, between 1 MB and DDP's 25 MB. A fixed 25 MB makes one or two
         * buckets of a model under 50 MB, and the last bucket, launched only when the backward pass
         * ends, then holds most of the all-reduce: nothing of it overlaps the pass. */
        mb = (double)n_grad * sizeof(float) / 8 / 1e6;
        mb = mb < 1 ? 1 : mb > 25 ? 25 : mb;
    }
    size_t n = (size_t)(mb * 1e6 / sizeof(float));
    return n ? n : 1;
}

static int cmp_ptr(const void *a, const void *b) {
    const mt_tensor *x = *(const mt_tensor *const *)a, *y = *(const mt_tensor *const *)b;
    return x < y ? -1 : x > y;
}

mt_status mt_dist_create(const mt_train_config *tc, const json_t *config, const char *data_sha,
                         const mt_transformer *m, mt_context *ctx, mt_dist **out) {
    mt_dist *d = mt_sys_calloc(1, sizeof *d);
    if (!d) return mt_error(MT_ERR_NOMEM, "data parallel: out of memory");
    d->rank = (int)tc->rank;
    d->world = (int)tc->world_size;
    d->seed = (uint64_t)tc->seed;
    d->model = m;
    d->backend = ctx->ex.backend;
    d->device = m->device;
    int n = m->n_params;
    mt_status st = MT_OK;
    d->param_off = mt_sys_calloc((size_t)n, sizeof *d->param_off);
    d->buckets = mt_sys_calloc((size_t)n, sizeof *d->buckets);
    d->meta = mt_sys_calloc((size_t)n + 1, sizeof *d->meta);
    d->meta_all = mt_sys_calloc(((size_t)n + 1) * (size_t)d->world, sizeof *d->meta_all);
    d->sorted = mt_sys_calloc((size_t)n, sizeof *d->sorted);
    d->sorted_idx = mt_sys_calloc((size_t)n, sizeof *d->sorted_idx);
    if (!d->param_off || !d->buckets || !d->meta || !d->meta_all || !d->sorted || !d->sorted_idx)
        st = mt_error(MT_ERR_NOMEM, "data parallel: out of memory");
    /* Buckets in reverse parameter order (the output side's gradients are final first), each at
     * least the bucket size (the last one what is left), except the first: at most 1 MB, as PyTorch's
     * DDP does, so that communication starts early in the backward pass. */
    size_t cap = mt_dist_bucket_elems(tc->bucket_mb, mt_transformer_numel(m)), first_cap = (size_t)(1e6 / sizeof(float));
    if (first_cap > cap) first_cap = cap;
    d->bucket_cap = cap;
    size_t off = 0;
    for (int i = n - 1; st == MT_OK && i >= 0; i--) {
        bucket *b = &d->buckets[d->n_buckets];
        if (b->n == 0) {
            b->first = i;
            b->off = off;
        }
        b->last = i;
        d->param_off[i] = off;
        b->n += (size_t)m->params[i]->numel;
        off += (size_t)m->params[i]->numel;
        if (b->n >= (d->n_buckets == 0 ? first_cap : cap) || i == 0) d->n_buckets++;
    }
    if (st == MT_OK) {
        void *flat = NULL;
        st = d->backend->alloc(d->device, &flat, sizeof(float) * (off ? off : 1));
        d->flat = flat;
        if (st != MT_OK) st = mt_error(st, "data parallel: no memory for the gradient buckets (%zu elements): %s", off,
                                       mt_last_error());
    }
    if (st == MT_OK) {
        for (int i = 0; i < n; i++) d->sorted[i] = m->params[i];
        qsort(d->sorted, (size_t)n, sizeof *d->sorted, cmp_ptr);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                if (d->sorted[i] == m->params[j]) d->sorted_idx[i] = j;
    }
    /* The handshake: config without the per-rank keys and paths, the data, the starting weights. */
    char hex[MT_SHA256_HEX_LEN];
    if (st == MT_OK) st = mt_transformer_weights_sha256(m, ctx, hex);
    char *hs = NULL;
    if (st == MT_OK) {
        json_t *c = json_deep_copy(config);
        for (int i = 0; per_rank_keys[i]; i++) json_object_del(c, per_rank_keys[i]);
        json_t *o = json_object();
        json_object_set_new(o, "config", c);
        json_object_set_new(o, "weights", json_string(hex));
        json_object_set_new(o, "data", json_string(data_sha));
        hs = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
        json_decref(o);
        if (!hs) st = mt_error(MT_ERR_NOMEM, "data parallel: out of memory");
    }
    if (st == MT_OK) {
        mt_comm_options co = {.timeout_s = tc->comm_timeout_s, .handshake = hs, .diff = diff_handshake,
                              .use_nccl = d->device >= 0, .device = d->device};
        st = mt_comm_create(d->rank, d->world, tc->rendezvous, &co, &d->comm);
    }
    free(hs);
    if (st != MT_OK) {
        mt_dist_free(d);
        return st;
    }
    *out = d;
    return MT_OK;
}

void mt_dist_free(mt_dist *d) {
    if (!d) return;
    mt_comm_free(d->comm);
    if (d->flat) d->backend->free(d->device, d->flat);
    mt_sys_free(d->param_off);
    mt_sys_free(d->buckets);
    mt_sys_free(d->meta);
    mt_sys_free(d->meta_all);
    mt_sys_free(d->sorted);
    mt_sys_free(d->sorted_idx);
    mt_sys_free(d->shard.src);
    mt_sys_free(d->shard.tgt_in);
    mt_sys_free(d->shard.tgt_out);
    mt_sys_free(d);
}

int mt_dist_rank(const mt_dist *d) { return d->rank; }
int mt_dist_world(const mt_dist *d) { return d->world; }
mt_dist_stats mt_dist_get_stats(const mt_dist *d) {
    mt_dist_stats s = d->stats;
    s.n_buckets = d->n_buckets;
    s.bucket_bytes = d->bucket_cap * sizeof(float);
    s.comm_s = mt_comm_busy_seconds(d->comm);
    return s;
}

mt_status mt_dist_finish(mt_dist *d) { return mt_comm_barrier(d->comm); }

mt_status mt_dist_sum(mt_dist *d, double *vals, int n) {
    double *all = mt_sys_malloc(sizeof(double) * (size_t)n * (size_t)d->world);
    if (!all) return mt_error(MT_ERR_NOMEM, "data parallel: out of memory");
    mt_status st = mt_comm_allgather(d->comm, vals, all, sizeof(double) * (size_t)n, NULL);
    if (st == MT_OK)
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int r = 0; r < d->world; r++) s += all[(size_t)r * (size_t)n + (size_t)i];
            vals[i] = s;
        }
    mt_sys_free(all);
    return st;
}

mt_status mt_dist_agree(mt_dist *d, double *elapsed, int *cancel) {
    double mine[2] = {*elapsed, *cancel ? 1.0 : 0.0}, all[2 * MT_DIST_AGREE_MAX];
    double *buf = d->world <= MT_DIST_AGREE_MAX ? all : mt_sys_malloc(sizeof(double) * 2 * (size_t)d->world);
    if (!buf) return mt_error(MT_ERR_NOMEM, "data parallel: out of memory");
    mt_status st = mt_comm_allgather(d->comm, mine, buf, sizeof mine, NULL);
    if (st == MT_OK) {
        *elapsed = buf[0];
        for (int r = 0; r < d->world; r++) *cancel |= buf[2 * r + 1] != 0;
    }
    if (buf != all) mt_sys_free(buf);
    return st;
}

/* ---- the shard ----------------------------------------------------------------------------------- */

/* Rows [B*r/W, B*(r+1)/W) of g into d->shard; its token counts counted (padding is pad). */
static mt_status take_shard(mt_dist *d, const mt_seq_batch *g, int32_t pad) {
    int64_t lo = g->B * d->rank / d->world, hi = g->B * (d->rank + 1) / d->world, B = hi - lo;
    mt_seq_batch *s = &d->shard;
    if (s->B * s->S < B * g->S || s->B * s->T < B * g->T || !s->src) {
        mt_sys_free(s->src);
        mt_sys_free(s->tgt_in);
        mt_sys_free(s->tgt_out);
        size_t ns = (size_t)(B * g->S) + 1, nt = (size_t)(B * g->T) + 1;
        s->src = mt_sys_malloc(sizeof(int32_t) * ns);
        s->tgt_in = mt_sys_malloc(sizeof(int32_t) * nt);
        s->tgt_out = mt_sys_malloc(sizeof(int32_t) * nt);
        if (!s->src || !s->tgt_in || !s->tgt_out) return mt_error(MT_ERR_NOMEM, "data parallel: out of memory");
    }
    s->B = B;
    s->S = g->S;
    s->T = g->T;
    memcpy(s->src, g->src + lo * g->S, sizeof(int32_t) * (size_t)(B * g->S));
    memcpy(s->tgt_in, g->tgt_in + lo * g->T, sizeof(int32_t) * (size_t)(B * g->T));
    memcpy(s->tgt_out, g->tgt_out + lo * g->T, sizeof(int32_t) * (size_t)(B * g->T));
    s->src_tokens = s->tgt_tokens = 0;
    for (int64_t i = 0; i < B * g->S; i++) s->src_tokens += s->src[i] != pad;
    for (int64_t i = 0; i < B * g->T; i++) s->tgt_tokens += s->tgt_out[i] != pad;
    return MT_OK;
}

/* ---- buckets ------------------------------------------------------------------------------------- */

static int param_index(const mt_dist *d, const mt_tensor *t) {
    int lo = 0, hi = d->model->n_params - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (d->sorted[mid] == t) return d->sorted_idx[mid];
        if ((const void *)d->sorted[mid] < (const void *)t) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* From the tape of the last micro-batch: the node after which each bucket's gradients are final
 * (the first node, in tape order, that reads any of its parameters). */
static void plan_buckets(mt_dist *d, const mt_context *ctx) {
    int n = d->model->n_params;
    int32_t *first_use = mt_sys_malloc(sizeof(int32_t) * (size_t)n);
    if (!first_use) { /* plan nothing: every bucket goes after the backward pass */
        for (int b = 0; b < d->n_buckets; b++) d->buckets[b].ready_at = -1;
        return;
    }
    for (int i = 0; i < n; i++) first_use[i] = INT32_MAX;
    for (int32_t j = ctx->n_nodes - 1; j >= 0; j--)
        for (int k = 0; k < 4; k++) {
            const mt_tensor *t = ctx->tape[j].in[k];
            if (!t || !(t->flags & MT_TENSOR_PERSISTENT)) continue;
            int p = param_index(d, t);
            if (p >= 0) first_use[p] = j;
        }
    for (int b = 0; b < d->n_buckets; b++) {
        bucket *bk = &d->buckets[b];
        int32_t r = INT32_MAX;
        for (int i = bk->first; i >= bk->last; i--) r = first_use[i] < r ? first_use[i] : r;
        bk->ready_at = r == INT32_MAX ? -1 : r; /* a parameter no node reads: after the pass */
    }
    mt_sys_free(first_use);
}

static mt_status launch(mt_dist *d, mt_context *ctx, int b) {
    bucket *bk = &d->buckets[b];
    const mt_transformer *m = d->model;
    mt_exec *ex = &ctx->ex;
    for (int i = bk->first; i >= bk->last; i--) {
        const mt_tensor *p = m->params[i];
        float *dst = d->flat + d->param_off[i];
        size_t bytes = sizeof(float) * (size_t)p->numel;
        MT_TRY(p->grad ? d->backend->copy(ex, dst, mt_f32(p->grad), bytes) : d->backend->zero(ex, dst, bytes));
        d->meta[i] = p->grad != NULL;
    }
    if (d->device >= 0) MT_TRY(d->backend->sync(ex)); /* the NCCL stream reads the bucket next */
    return mt_comm_allreduce(d->comm, d->flat + bk->off, bk->n, MT_DTYPE_F32, MT_COMM_SUM, &bk->work);
}

static mt_status backward_hook(mt_context *ctx, int32_t node, void *user) {
    mt_dist *d = user;
    while (d->next < d->n_buckets && d->buckets[d->next].ready_at >= node) MT_TRY(launch(d, ctx, d->next++));
    return MT_OK;
}

/* Waits for every launched bucket (all of them are waited on, even after a failure). */
static mt_status wait_all(mt_dist *d) {
    mt_status st = MT_OK;
    for (int b = 0; b < d->n_buckets; b++) {
        if (!d->buckets[b].work) continue;
        mt_status s = mt_comm_wait(d->buckets[b].work);
        d->buckets[b].work = NULL;
        if (st == MT_OK) st = s;
    }
    return st;
}

/* ---- the step ------------------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

mt_status mt_dist_train_step(mt_dist *d, mt_context *ctx, mt_transformer *m, mt_optimizer *o, const mt_adamw_hparams *h,
                             const mt_seq_batch *micro, int n_micro, int64_t step, double *loss, double *grad_norm) {
    int64_t total = 0;
    for (int i = 0; i < n_micro; i++) total += micro[i].tgt_tokens;
    if (total <= 0) return mt_error(MT_ERR_INVALID_ARG, "training step: no target tokens");
    /* Dropout: a stream of its own per (rank, step), so resume repeats it exactly. */
    ctx->seed = mix64(d->seed * 0x9E3779B97F4A7C15ULL + (uint64_t)d->rank + 1);
    ctx->rng_offset = (uint64_t)step << 40;
    int32_t pad = (int32_t)m->cfg.pad_id;
    int last = -1; /* the last micro-batch this rank has rows of: its backward launches the buckets */
    for (int i = 0; i < n_micro; i++) {
        int64_t lo = micro[i].B * d->rank / d->world, hi = micro[i].B * (d->rank + 1) / d->world;
        if (hi > lo) last = i;
    }
    double sum = 0.0;
    d->next = 0;
    mt_status st = MT_OK;
    for (int i = 0; i <= last && st == MT_OK; i++) {
        st = take_shard(d, &micro[i], pad);
        if (st != MT_OK || d->shard.B == 0 || d->shard.tgt_tokens == 0) continue;
        st = mt_context_reset(ctx);
        if (st != MT_OK) break;
        d->stats.tokens += (double)(d->shard.src_tokens + d->shard.tgt_tokens);
        float w = (float)((double)d->shard.tgt_tokens / (double)total);
        mt_tensor *gr = mt_full(ctx, 0, NULL, w);
        mt_tensor *l = mt_transformer_loss(ctx, m, &d->shard, (float)h->label_smoothing, 1, gr, NULL);
        if (ctx->status != MT_OK || !l || !gr) {
            st = ctx->status != MT_OK ? ctx->status : MT_ERR_INTERNAL;
            break;
        }
        float lv = 0.0f;
        st = mt_copy_to_host(ctx, l, &lv, sizeof lv);
        if (st != MT_OK) break;
        sum += (double)lv * (double)w;
        if (i == last) {
            plan_buckets(d, ctx);
            ctx->backward_hook = backward_hook;
            ctx->backward_hook_user = d;
        }
        double t0 = mt_now_s();
        st = mt_backward(ctx, l, gr);
        ctx->backward_hook = NULL;
        ctx->backward_hook_user = NULL;
        if (i == last) d->stats.backward_s += mt_now_s() - t0;
    }
    /* Whatever was not launched during the pass (or everything, for a rank without rows). */
    while (st == MT_OK && d->next < d->n_buckets) st = launch(d, ctx, d->next++);
    double t0 = mt_now_s();
    mt_status ws = wait_all(d);
    if (st == MT_OK) st = ws;
    d->meta[m->n_params] = sum;
    if (st == MT_OK) st = mt_comm_allgather(d->comm, d->meta, d->meta_all, sizeof(double) * ((size_t)m->n_params + 1), NULL);
    d->stats.exposed_s += mt_now_s() - t0;
    if (st == MT_OK) st = mt_context_reset(ctx);
    MT_TRY(st);
    /* Gradients back, for every parameter some rank has a gradient of. */
    double gsum = 0.0;
    for (int r = 0; r < d->world; r++) gsum += d->meta_all[(size_t)r * ((size_t)m->n_params + 1) + (size_t)m->n_params];
    for (int i = 0; i < m->n_params; i++) {
        int any = 0;
        for (int r = 0; r < d->world; r++) any |= d->meta_all[(size_t)r * ((size_t)m->n_params + 1) + (size_t)i] != 0;
        if (!any) continue;
        mt_tensor *p = m->params[i];
        if (!p->grad && !mt_grad_of(ctx, p)) return ctx->status;
        MT_TRY(d->backend->copy(&ctx->ex, mt_f32(p->grad), d->flat + d->param_off[i], sizeof(float) * (size_t)p->numel));
    }
    d->stats.steps++;
    if (loss) *loss = gsum;
    if (!isfinite(gsum)) return mt_error(MT_ERR_STATE, "training: the loss is %g (diverged)", gsum);
    MT_TRY(mt_optimizer_step(o, ctx, h, grad_norm));
    return mt_transformer_zero_grad(m, ctx);
}
