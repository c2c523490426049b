/*
 * batch.c — the encoded dataset (parallel encoding with per-thread encoders, results placed in
 * pair order so the thread count never changes them) and the length-bucketing batcher.
 *
 * An epoch's plan: the examples are permuted by (seed, epoch), stably sorted by (source length,
 * target length), and cut greedily into global batches whose B * (max S + max T) stays within the
 * budget; the batches are then permuted by (seed, epoch). The cut points depend only on the sorted
 * lengths, so every epoch has the same number of batches; which pairs of equal lengths share a
 * batch, and the order of the batches, change with the epoch. Shard r of a global batch of B rows
 * is rows [r*B/N, (r+1)*B/N) of it: neighbours in length, so shards pad little.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "text/batch.h"

void mt_dataset_options_default(mt_dataset_options *o) {
    memset(o, 0, sizeof *o);
    o->src_sos = 1;
    o->src_eos = 1;
}

void mt_dataset_free(mt_dataset *d) {
    if (!d) return;
    mt_sys_free(d->ids);
    mt_sys_free(d->src_off);
    mt_sys_free(d->tgt_off);
    mt_sys_free(d->src_len);
    mt_sys_free(d->tgt_len);
    mt_sys_free(d->pair_index);
    mt_sys_free(d);
}

typedef struct enc_chunk {
    mt_ids ids;        /* the chunk's framed sequences */
    mt_status st;
    char err[MT_ERROR_MAX];
} enc_chunk;

mt_status mt_dataset_build(const mt_tokenizer *tok, const mt_pairs *pairs, const mt_dataset_options *opt,
                           mt_dataset **out) {
    if (!tok || !pairs || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_dataset_build: NULL argument");
    mt_dataset_options o;
    if (opt) o = *opt;
    else mt_dataset_options_default(&o);
    mt_tok_specials sp = mt_tok_get_specials(tok);
    if (sp.pad < 0 || sp.sos < 0 || sp.eos < 0)
        return mt_error(MT_ERR_INVALID_ARG, "dataset: the tokenizer lacks [PAD], [SOS] or [EOS] (ids %d, %d, %d)", sp.pad,
                        sp.sos, sp.eos);
    size_t n = pairs->n;
    int nt = o.threads > 0 ? o.threads : omp_get_max_threads();
    if ((size_t)nt > n / 512 + 1) nt = (int)(n / 512 + 1);
    if (nt < 1) nt = 1;
    uint32_t *slen = mt_sys_malloc((n + 1) * sizeof *slen), *tlen = mt_sys_malloc((n + 1) * sizeof *tlen);
    enc_chunk *ch = mt_sys_calloc((size_t)nt, sizeof *ch);
    if (!slen || !tlen || !ch) {
        mt_sys_free(slen);
        mt_sys_free(tlen);
        mt_sys_free(ch);
        return mt_error(MT_ERR_NOMEM, "dataset: out of memory");
    }
    int src_extra = (o.src_sos ? 1 : 0) + (o.src_eos ? 1 : 0);
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        size_t lo = n * (size_t)t / (size_t)nt, hi = n * (size_t)(t + 1) / (size_t)nt;
        enc_chunk *c = &ch[t];
        mt_tok_encoder *e = NULL;
        c->st = mt_tok_encoder_new(tok, &e);
        for (size_t i = lo; i < hi && c->st == MT_OK; i++) {
            size_t before = c->ids.n;
            if (o.src_sos) c->st = mt_ids_push(&c->ids, sp.sos);
            if (c->st == MT_OK) c->st = mt_tok_encoder_encode(e, mt_pairs_src(pairs, i), pairs->src_len[i], &c->ids);
            if (c->st == MT_OK && o.src_eos) c->st = mt_ids_push(&c->ids, sp.eos);
            slen[i] = (uint32_t)(c->ids.n - before);
            before = c->ids.n;
            if (c->st == MT_OK) c->st = mt_ids_push(&c->ids, sp.sos);
            if (c->st == MT_OK) c->st = mt_tok_encoder_encode(e, mt_pairs_tgt(pairs, i), pairs->tgt_len[i], &c->ids);
            if (c->st == MT_OK) c->st = mt_ids_push(&c->ids, sp.eos);
            tlen[i] = (uint32_t)(c->ids.n - before);
            if (c->st != MT_OK) snprintf(c->err, sizeof c->err, "dataset: pair %zu: %s", i, mt_last_error());
        }
        mt_tok_encoder_free(e);
    }
    mt_status st = MT_OK;
    for (int t = 0; t < nt && st == MT_OK; t++)
        if (ch[t].st != MT_OK) st = mt_error(ch[t].st, "%s", ch[t].err);
    mt_dataset *d = NULL;
    size_t total = 0;
    for (int t = 0; t < nt; t++) total += ch[t].ids.n;
    if (st == MT_OK) {
        d = mt_sys_calloc(1, sizeof *d);
        if (d) {
            d->ids = mt_sys_malloc((total + 1) * sizeof *d->ids);
            d->src_off = mt_sys_malloc((n + 1) * sizeof *d->src_off);
            d->tgt_off = mt_sys_malloc((n + 1) * sizeof *d->tgt_off);
            d->src_len = mt_sys_malloc((n + 1) * sizeof *d->src_len);
            d->tgt_len = mt_sys_malloc((n + 1) * sizeof *d->tgt_len);
            d->pair_index = mt_sys_malloc((n + 1) * sizeof *d->pair_index);
        }
        if (!d || !d->ids || !d->src_off || !d->tgt_off || !d->src_len || !d->tgt_len || !d->pair_index)
            st = mt_error(MT_ERR_NOMEM, "dataset: out of memory");
    }
    if (st == MT_OK) {
        d->pad_id = sp.pad;
        d->sos_id = sp.sos;
        d->eos_id = sp.eos;
        size_t w = 0;
        for (int t = 0; t < nt; t++) {
            size_t lo = n * (size_t)t / (size_t)nt, hi = n * (size_t)(t + 1) / (size_t)nt, r = 0;
            for (size_t i = lo; i < hi; i++) {
                const int32_t *s = ch[t].ids.v + r;
                r += slen[i] + tlen[i];
                int keep = (size_t)slen[i] > (size_t)src_extra && tlen[i] > 2 &&
                           (!o.max_src_len || slen[i] <= o.max_src_len) && (!o.max_tgt_len || tlen[i] <= o.max_tgt_len);
                if (!keep) {
                    d->n_filtered++;
                    continue;
                }
                size_t k = d->n++;
                d->src_off[k] = w;
                d->src_len[k] = slen[i];
                memcpy(d->ids + w, s, slen[i] * sizeof *s);
                w += slen[i];
                d->tgt_off[k] = w;
                d->tgt_len[k] = tlen[i];
                memcpy(d->ids + w, s + slen[i], tlen[i] * sizeof *s);
                w += tlen[i];
                d->pair_index[k] = i;
                d->src_tokens += slen[i];
                d->tgt_tokens += tlen[i];
            }
        }
    }
    for (int t = 0; t < nt; t++) mt_ids_free(&ch[t].ids);
    mt_sys_free(ch);
    mt_sys_free(slen);
    mt_sys_free(tlen);
    if (st != MT_OK) {
        mt_dataset_free(d);
        return st;
    }
    *out = d;
    return MT_OK;
}

/* ---- batcher ---- */

struct mt_batcher {
    const mt_dataset *d;
    mt_batcher_options o;
    size_t n_batches;
    uint64_t *order;   /* (n,) the plan's example order */
    size_t *start;     /* (n_batches + 1,) batch k is order[start[k] .. start[k+1]) in sorted order */
    uint32_t *bperm;   /* (n_batches,) the epoch's batch order */
    uint64_t plan_epoch;
    int have_plan;
    mt_data_pos pos;
};

void mt_batcher_options_default(mt_batcher_options *o) {
    memset(o, 0, sizeof *o);
    o->shuffle = 1;
    o->n_ranks = 1;
}

typedef struct sort_item {
    uint32_t s, t;
    uint64_t r; /* position in the epoch's permutation: ties keep it */
    uint64_t idx;
} sort_item;

static int sort_cmp(const void *pa, const void *pb) {
    const sort_item *a = pa, *b = pb;
    if (a->s != b->s) return a->s < b->s ? -1 : 1;
    if (a->t != b->t) return a->t < b->t ? -1 : 1;
    return a->r < b->r ? -1 : a->r > b->r;
}

static uint64_t rand_below(uint64_t seed, uint64_t *ctr, uint64_t bound) {
    uint64_t hi = mt_rng_bits(seed, (*ctr)++), lo = mt_rng_bits(seed, (*ctr)++);
    return (uint64_t)(((unsigned __int128)((hi << 32) | lo) * bound) >> 64);
}

/* Seeds of an epoch's two permutations, derived so that epochs and streams never share a stream. */
static uint64_t epoch_seed(uint64_t seed, uint64_t epoch, uint64_t stream) {
    uint64_t x = seed ^ (0x9E3779B97F4A7C15ull * (epoch + 1)) ^ (0xD1B54A32D192ED03ull * (stream + 1));
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return x;
}

static mt_status make_plan(mt_batcher *b, uint64_t epoch) {
    const mt_dataset *d = b->d;
    size_t n = d->n;
    sort_item *it = mt_sys_malloc((n + 1) * sizeof *it);
    if (!it) return mt_error(MT_ERR_NOMEM, "batcher: out of memory");
    for (size_t i = 0; i < n; i++) it[i] = (sort_item){d->src_len[i], d->tgt_len[i], i, i};
    if (b->o.shuffle) {
        uint64_t seed = epoch_seed(b->o.seed, epoch, 0), ctr = 0;
        uint64_t *perm = b->order; /* scratch: a permutation of 0..n-1 */
        for (size_t i = 0; i < n; i++) perm[i] = i;
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)rand_below(seed, &ctr, i);
            uint64_t t = perm[i - 1];
            perm[i - 1] = perm[j];
            perm[j] = t;
        }
        for (size_t i = 0; i < n; i++) it[perm[i]].r = i;
    }
    qsort(it, n, sizeof *it, sort_cmp);
    size_t nb = 0;
    uint32_t ms = 0, mtl = 0, cnt = 0;
    b->start[0] = 0;
    for (size_t i = 0; i < n; i++) {
        b->order[i] = it[i].idx;
        uint32_t s = it[i].s > ms ? it[i].s : ms, t = it[i].t > mtl ? it[i].t : mtl;
        if (cnt > 0 && ((uint64_t)(cnt + 1) * (s + t) > b->o.max_tokens ||
                        (b->o.max_sentences && cnt + 1 > b->o.max_sentences))) {
            b->start[++nb] = i; /* close the batch before example i */
            cnt = 0;
            s = it[i].s;
            t = it[i].t;
        }
        ms = s;
        mtl = t;
        cnt++;
    }
    if (n) b->start[++nb] = n;
    mt_sys_free(it);
    b->n_batches = nb;
    for (size_t k = 0; k < nb; k++) b->bperm[k] = (uint32_t)k;
    if (b->o.shuffle) {
        uint64_t seed = epoch_seed(b->o.seed, epoch, 1), ctr = 0;
        for (size_t i = nb; i > 1; i--) {
            size_t j = (size_t)rand_below(seed, &ctr, i);
            uint32_t t = b->bperm[i - 1];
            b->bperm[i - 1] = b->bperm[j];
            b->bperm[j] = t;
        }
    }
    b->plan_epoch = epoch;
    b->have_plan = 1;
    return MT_OK;
}

mt_status mt_batcher_new(const mt_dataset *d, const mt_batcher_options *opt, mt_batcher **out) {
    if (!d || !opt || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_batcher_new: NULL argument");
    if (!opt->max_tokens) return mt_error(MT_ERR_CONFIG, "batcher: max_tokens must be > 0");
    int nr = opt->n_ranks > 0 ? opt->n_ranks : 1;
    if (opt->rank < 0 || opt->rank >= nr)
        return mt_error(MT_ERR_CONFIG, "batcher: rank %d is out of range for %d ranks", opt->rank, nr);
    if (!d->n) return mt_error(MT_ERR_CONFIG, "batcher: the dataset is empty");
    for (size_t i = 0; i < d->n; i++)
        if ((size_t)d->src_len[i] + d->tgt_len[i] > opt->max_tokens)
            return mt_error(MT_ERR_CONFIG,
                            "batcher: max_tokens %zu is smaller than example %zu alone (%u source + %u target tokens); "
                            "raise max_tokens or lower the dataset's max lengths",
                            opt->max_tokens, i, d->src_len[i], d->tgt_len[i]);
    mt_batcher *b = mt_sys_calloc(1, sizeof *b);
    if (!b) return mt_error(MT_ERR_NOMEM, "batcher: out of memory");
    b->d = d;
    b->o = *opt;
    b->o.n_ranks = nr;
    b->order = mt_sys_malloc((d->n + 1) * sizeof *b->order);
    b->start = mt_sys_malloc((d->n + 2) * sizeof *b->start);
    b->bperm = mt_sys_malloc((d->n + 1) * sizeof *b->bperm);
    mt_status st = (b->order && b->start && b->bperm) ? make_plan(b, 0) : mt_error(MT_ERR_NOMEM, "batcher: out of memory");
    if (st != MT_OK) {
        mt_batcher_free(b);
        return st;
    }
    *out = b;
    return MT_OK;
}

void mt_batcher_free(mt_batcher *b) {
    if (!b) return;
    mt_sys_free(b->order);
    mt_sys_free(b->start);
    mt_sys_free(b->bperm);
    mt_sys_free(b);
}

size_t mt_batcher_batches_per_epoch(const mt_batcher *b) { return b->n_batches; }
mt_data_pos mt_batcher_tell(const mt_batcher *b) { return b->pos; }

mt_status mt_batcher_seek(mt_batcher *b, mt_data_pos pos) {
    if (!b) return mt_error(MT_ERR_INVALID_ARG, "mt_batcher_seek: NULL batcher");
    if (pos.batch >= b->n_batches)
        return mt_error(MT_ERR_INVALID_ARG, "batcher: batch %llu is out of range (%zu batches per epoch)",
                        (unsigned long long)pos.batch, b->n_batches);
    b->pos = pos;
    return MT_OK;
}

mt_status mt_batcher_global(mt_batcher *b, mt_data_pos pos, const uint64_t **examples, size_t *n) {
    if (!b || !examples || !n) return mt_error(MT_ERR_INVALID_ARG, "mt_batcher_global: NULL argument");
    if (pos.batch >= b->n_batches)
        return mt_error(MT_ERR_INVALID_ARG, "batcher: batch %llu is out of range (%zu batches per epoch)",
                        (unsigned long long)pos.batch, b->n_batches);
    if (!b->have_plan || b->plan_epoch != pos.epoch) MT_TRY(make_plan(b, pos.epoch));
    size_t k = b->bperm[pos.batch];
    *examples = b->order + b->start[k];
    *n = b->start[k + 1] - b->start[k];
    return MT_OK;
}

static mt_status batch_reserve(mt_batch *bt, size_t rows, size_t src_cells, size_t tgt_cells) {
    size_t cells = src_cells > tgt_cells ? src_cells : tgt_cells;
    if (rows > bt->cap_rows) {
        int32_t *a = mt_sys_realloc(bt->src_len, rows * sizeof *a);
        if (a) bt->src_len = a;
        int32_t *c = mt_sys_realloc(bt->tgt_len, rows * sizeof *c);
        if (c) bt->tgt_len = c;
        uint64_t *e = mt_sys_realloc(bt->example, rows * sizeof *e);
        if (e) bt->example = e;
        if (!a || !c || !e) return mt_error(MT_ERR_NOMEM, "batch: out of memory");
        bt->cap_rows = rows;
    }
    if (cells > bt->cap_cells) {
        int32_t *s = mt_sys_realloc(bt->src, cells * sizeof *s);
        if (s) bt->src = s;
        int32_t *t = mt_sys_realloc(bt->tgt, cells * sizeof *t);
        if (t) bt->tgt = t;
        if (!s || !t) return mt_error(MT_ERR_NOMEM, "batch: out of memory");
        bt->cap_cells = cells;
    }
    return MT_OK;
}

mt_status mt_batcher_next(mt_batcher *b, mt_batch *bt) {
    if (!b || !bt) return mt_error(MT_ERR_INVALID_ARG, "mt_batcher_next: NULL argument");
    const mt_dataset *d = b->d;
    const uint64_t *ex;
    size_t gn = 0;
    MT_TRY(mt_batcher_global(b, b->pos, &ex, &gn));
    size_t nr = (size_t)b->o.n_ranks, r = (size_t)b->o.rank;
    size_t lo = gn * r / nr, hi = gn * (r + 1) / nr, rows = hi - lo;
    size_t S = 0, T = 0, gs = 0, gt = 0;
    for (size_t i = 0; i < gn; i++) {
        gs += d->src_len[ex[i]];
        gt += d->tgt_len[ex[i]];
    }
    for (size_t i = lo; i < hi; i++) {
        if (d->src_len[ex[i]] > S) S = d->src_len[ex[i]];
        if (d->tgt_len[ex[i]] > T) T = d->tgt_len[ex[i]];
    }
    MT_TRY(batch_reserve(bt, rows ? rows : 1, rows * S, rows * T));
    bt->B = (int)rows;
    bt->S = (int)S;
    bt->T = (int)T;
    bt->src_tokens = bt->tgt_tokens = 0;
    for (size_t k = 0; k < rows; k++) {
        uint64_t e = ex[lo + k];
        uint32_t sl = d->src_len[e], tl = d->tgt_len[e];
        int32_t *srow = bt->src + k * S, *trow = bt->tgt + k * T;
        memcpy(srow, d->ids + d->src_off[e], sl * sizeof *srow);
        for (size_t j = sl; j < S; j++) srow[j] = d->pad_id;
        memcpy(trow, d->ids + d->tgt_off[e], tl * sizeof *trow);
        for (size_t j = tl; j < T; j++) trow[j] = d->pad_id;
        bt->src_len[k] = (int32_t)sl;
        bt->tgt_len[k] = (int32_t)tl;
        bt->example[k] = e;
        bt->src_tokens += sl;
        bt->tgt_tokens += tl;
    }
    bt->global_B = (int)gn;
    bt->global_src_tokens = gs;
    bt->global_tgt_tokens = gt;
    bt->pos = b->pos;
    if (++b->pos.batch >= b->n_batches) {
        b->pos.batch = 0;
        b->pos.epoch++;
    }
    return MT_OK;
}

void mt_batch_free(mt_batch *bt) {
    if (!bt) return;
    mt_sys_free(bt->src);
    mt_sys_free(bt->tgt);
    mt_sys_free(bt->src_len);
    mt_sys_free(bt->tgt_len);
    mt_sys_free(bt->example);
    memset(bt, 0, sizeof *bt);
}
