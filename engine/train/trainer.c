/*
 * trainer.c — the training run (see trainer.h): config, data, model, the loop, validation,
 * checkpoints and exact resume, and the thread protocol of mt_trainer_*.
 *
 * Exact resume: everything a step depends on is in the checkpoint — weights, AdamW moments and step,
 * the batcher's (epoch, batch) position, the context's random generator (seed, offset) that dropout
 * draws from, and the early-stopping counters — and the data pipeline is a pure function of the
 * config (deterministic split, tokenizer stored in the checkpoint, batches shuffled by seed). CPU
 * kernels are deterministic for a given thread count, so a resumed run repeats the losses bit for bit.
 *
 * Files: out_dir and out_dir/checkpoints are opened once, as directory descriptors (with a path_root,
 * component by component beneath it, never through a symbolic link), and every file the run creates,
 * renames or deletes is named relative to them (O_NOFOLLOW, renameat, unlinkat): a link planted
 * under out_dir cannot send a write or a delete outside the root. Temporary files a crash left are
 * removed when a run starts or resumes, and metrics.jsonl is cut back to the resumed checkpoint's step.
 */
#include "train/trainer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "decode/translate.h"
#include "format/modelfile.h"
#include "io/io.h"
#include "text/batch.h"
#include "text/corpus.h"
#include "text/metrics.h"
#include "text/tokenizer.h"
#include "train/dist.h"

/* ---- the trainer --------------------------------------------------------------------------------- */

struct mt_trainer {
    mt_model_config mc;
    mt_train_config tc;
    mt_adamw_hparams hp;
    json_t *config;             /* the full resolved config, for status and checkpoints */
    char root[PATH_MAX];        /* path_root (resolved), "" when none */
    char out_dir[PATH_MAX], ckpt_dir[PATH_MAX], metrics_path[PATH_MAX], model_path[PATH_MAX], best_path[PATH_MAX];
    /* data */
    mt_pairs *train, *valid, *test;
    size_t valid_end[MT_CFG_LIST_MAX], test_end[MT_CFG_LIST_MAX]; /* per corpus: end of its part */
    mt_tokenizer *tok;
    char *tok_json;
    mt_dataset *train_ds, *valid_ds;
    mt_batcher *batcher, *valid_batcher;
    mt_batch *bb;               /* (accum_steps) batcher output */
    mt_seq_batch *micro;        /* (accum_steps) the same as model batches */
    /* model */
    mt_context *ctx;
    mt_transformer *model;
    mt_optimizer *opt;
    mt_decode_ws *dws;
    struct mt_dist *dist;       /* data parallel (world_size > 1): train/dist.h; rank 0 alone writes files */
    int64_t resumed_world;      /* world_size of the run a resumed checkpoint came from */
    FILE *metrics;
    int out_fd, ckpt_fd;        /* out_dir and out_dir/checkpoints (see the top of this file) */
    /* progress (guarded by mu for readers in other threads) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mt_train_state state;
    int64_t step;
    double loss_ema, last_loss, tok_per_s, elapsed, lr_now;
    double valid_loss, bleu, chrf, best_valid;
    int64_t bad_valids;
    int have_valid;
    char last_ckpt[PATH_MAX];
    char weights_sha[MT_SHA256_HEX_LEN]; /* SHA-256 of the weights at the end of the last run ("" before) */
    char error[MT_ERROR_MAX];
    int saving;                 /* a save outside a run reads the weights: a run starting waits for it */
    int64_t ckpt_failures;      /* periodic checkpoints failed in a row */
    int failed_whole;           /* failed on checkpoint writes: the weights are whole, save still works */
    /* requests from other threads */
    atomic_int cancel;
    int64_t save_req, save_done;
    char *save_path;
    mt_status save_status;
    char save_written[PATH_MAX];
    mt_progress_fn cb;
    void *cb_user;
    json_t *start_ev;           /* emitted when the first run starts (the callback is set by then) */
    /* interval accounting */
    double iv_loss;
    int64_t iv_steps, iv_tokens;
    double iv_start;
    double iv_rank_tokens;      /* data parallel: this rank's shard tokens at the last log */
};
typedef struct mt_trainer mt_trainer;

/* The GEMM precision of training: bf16 with f32 master weights on a GPU unless the config says
 * otherwise; always f32 on the CPU (validated with the config). */
static mt_precision training_precision(const mt_train_config *c) {
    static const mt_precision map[] = {MT_PRECISION_F32, MT_PRECISION_F32, MT_PRECISION_TF32, MT_PRECISION_BF16};
    if (c->precision == 0) return c->device >= 0 ? MT_PRECISION_BF16 : MT_PRECISION_F32;
    return map[c->precision];
}

/* snprintf into a path buffer; MT_ERR_INVALID_ARG when it does not fit. */
static mt_status pathf(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static mt_status pathf(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) return mt_error(MT_ERR_INVALID_ARG, "path too long: %.80s...", buf);
    return MT_OK;
}

/* ---- paths --------------------------------------------------------------------------------------- */

/* The absolute, normalised form of path (which need not exist): realpath of its deepest existing
 * ancestor, then the missing components appended ("." or ".." among them is refused). */
static mt_status normalise(const char *path, char out[PATH_MAX]) {
    char head[PATH_MAX], tail[PATH_MAX] = "";
    if (snprintf(head, sizeof head, "%s", path) >= (int)sizeof head) return mt_error(MT_ERR_INVALID_ARG, "path too long");
    size_t hl = strlen(head);
    while (hl > 1 && head[hl - 1] == '/') head[--hl] = 0;
    for (;;) {
        char r[PATH_MAX];
        if (realpath(head, r)) {
            int n = snprintf(out, PATH_MAX, "%s%s%s", strcmp(r, "/") == 0 && tail[0] ? "" : r, tail[0] ? "/" : "", tail);
            if (n >= PATH_MAX) return mt_error(MT_ERR_INVALID_ARG, "path too long");
            return MT_OK;
        }
        char *slash = strrchr(head, '/');
        const char *last = slash ? slash + 1 : head;
        if (strcmp(last, "..") == 0 || strcmp(last, ".") == 0 || !last[0])
            return mt_error(MT_ERR_PERMISSION, "path '%s': '%s' below a directory that does not exist", path, last);
        char nt[PATH_MAX];
        if (snprintf(nt, sizeof nt, "%s%s%s", last, tail[0] ? "/" : "", tail) >= (int)sizeof nt)
            return mt_error(MT_ERR_INVALID_ARG, "path too long");
        memcpy(tail, nt, sizeof tail);
        if (!slash) snprintf(head, sizeof head, ".");
        else if (slash == head) head[1] = 0;
        else *slash = 0;
    }
}

/* Resolves one path of config key `key` in place: relative to root when there is one, and then it
 * must stay inside root (MT_ERR_PERMISSION naming the key). */
static mt_status resolve_path(const mt_trainer *tr, const char *key, char *p, size_t cap) {
    if (!p[0] || !tr->root[0]) return MT_OK;
    char joined[PATH_MAX], norm[PATH_MAX];
    if (p[0] == '/') snprintf(joined, sizeof joined, "%s", p);
    else MT_TRY(pathf(joined, sizeof joined, "%s/%s", tr->root, p));
    mt_status st = normalise(joined, norm);
    if (st != MT_OK) return mt_error(MT_ERR_PERMISSION, "config key '%s': %s", key, mt_last_error());
    size_t rl = strlen(tr->root);
    if (strncmp(norm, tr->root, rl) != 0 || (norm[rl] != 0 && norm[rl] != '/' && strcmp(tr->root, "/") != 0))
        return mt_error(MT_ERR_PERMISSION, "config key '%s': path '%s' is outside the allowed root %s", key, p, tr->root);
    if (strlen(norm) >= cap) return mt_error(MT_ERR_INVALID_ARG, "config key '%s': path too long", key);
    memcpy(p, norm, strlen(norm) + 1);
    return MT_OK;
}

/* A corpus spec may be "a|b" (two aligned files): each part is resolved. */
static mt_status resolve_spec(const mt_trainer *tr, const char *key, char *spec) {
    char out[MT_CFG_STR_MAX] = "", part[MT_CFG_STR_MAX];
    const char *p = spec;
    while (1) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        memcpy(part, p, n);
        part[n] = 0;
        static const char var[] = "$MT_DATA_DIR/";
        if (strncmp(part, var, sizeof var - 1) == 0) { /* the real corpora's directory (io.h) */
            char full[MT_CFG_STR_MAX];
            if (snprintf(full, sizeof full, "%s/%s", mt_data_dir(), part + sizeof var - 1) >= (int)sizeof full)
                return mt_error(MT_ERR_CONFIG, "config key '%s': %s: path too long", key, part);
            memcpy(part, full, strlen(full) + 1);
        }
        MT_TRY(resolve_path(tr, key, part, sizeof part));
        if (strlen(out) + strlen(part) + 2 >= sizeof out) return mt_error(MT_ERR_CONFIG, "config key '%s': too long", key);
        strcat(out, part);
        if (!bar) break;
        strcat(out, "|");
        p = bar + 1;
    }
    memcpy(spec, out, strlen(out) + 1);
    return MT_OK;
}

static mt_status mkdirs(const char *dir) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return mt_error(MT_ERR_IO, "mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return mt_error(MT_ERR_IO, "mkdir %s: %s", buf, strerror(errno));
    return MT_OK;
}

/* Opens the directory abs (an absolute, normalised path: resolve_path's output) as a descriptor,
 * creating missing components when create. With a root, abs lies inside it and is walked component
 * by component from the root with O_NOFOLLOW, so no symbolic link is followed on the way (a link is
 * MT_ERR_PERMISSION naming key); without one it is opened as it stands. */
static mt_status open_dir(const mt_trainer *tr, const char *key, const char *abs, int create, int *out) {
    *out = -1;
    if (!tr->root[0]) {
        if (create) MT_TRY(mkdirs(abs));
        int fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return mt_error(MT_ERR_IO, "%s %s: %s", key, abs, strerror(errno));
        *out = fd;
        return MT_OK;
    }
    size_t rl = strcmp(tr->root, "/") == 0 ? 0 : strlen(tr->root);
    if (strncmp(abs, tr->root, rl) != 0 || (abs[rl] != 0 && abs[rl] != '/'))
        return mt_error(MT_ERR_PERMISSION, "%s %s: outside the allowed root %s", key, abs, tr->root);
    int fd = open(tr->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return mt_error(MT_ERR_IO, "path_root %s: %s", tr->root, strerror(errno));
    char rest[PATH_MAX];
    snprintf(rest, sizeof rest, "%s", abs + rl);
    char *save = NULL;
    for (char *c = strtok_r(rest, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (create && mkdirat(fd, c, 0777) != 0 && errno != EEXIST) {
            mt_status st = mt_error(MT_ERR_IO, "%s %s: mkdir %s: %s", key, abs, c, strerror(errno));
            close(fd);
            return st;
        }
        int next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        close(fd);
        if (next < 0)
            return mt_error(e == ELOOP || e == ENOTDIR ? MT_ERR_PERMISSION : MT_ERR_IO,
                            "%s %s: '%s' %s", key, abs, c,
                            e == ELOOP || e == ENOTDIR ? "is a symbolic link or not a directory" : strerror(e));
        fd = next;
    }
    *out = fd;
    return MT_OK;
}

/* With a root, the files of a run are never opened through a link. */
static int nofollow(const mt_trainer *tr) { return tr->root[0] ? O_NOFOLLOW : 0; }

/* Is name a temporary file of ours that a crash left: "<a name we write>.tmp.XXXXXX"? */
static int ckpt_step_of(const char *name, int64_t *step);
static int is_stale_tmp(const char *name) {
    const char *t = strstr(name, ".tmp.");
    if (!t || strlen(t + 5) != 6) return 0;
    for (const char *c = t + 5; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z'))) return 0;
    char base[256];
    size_t n = (size_t)(t - name);
    if (n >= sizeof base) return 0;
    memcpy(base, name, n);
    base[n] = 0;
    int64_t s;
    return ckpt_step_of(base, &s) || !strcmp(base, "model.mt") || !strcmp(base, "best.mt") ||
           !strcmp(base, "tokenizer.json");
}

/* A listing of the directory dirfd (closedir it), from its start; NULL on failure. */
static DIR *list_dir(int dirfd) {
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return NULL;
    }
    rewinddir(d); /* a dup shares the directory's offset with the last listing */
    return d;
}

/* Removes the temporary files a crash during a write left in the directory dirfd (shown as dir). */
static void remove_stale_tmp(int dirfd, const char *dir) {
    DIR *d = list_dir(dirfd);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_stale_tmp(e->d_name)) continue;
        if (unlinkat(dirfd, e->d_name, 0) == 0)
            mt_log(MT_LOG_WARN, "removed %s/%s, left by an interrupted write", dir, e->d_name);
    }
    closedir(d);
}

/* ---- events -------------------------------------------------------------------------------------- */

/* Writes the event (consumed) to the metrics file and the callback. */
static void emit(mt_trainer *tr, json_t *ev) {
    if (!ev) return;
    char *s = json_dumps(ev, JSON_COMPACT | JSON_REAL_PRECISION(17) | JSON_PRESERVE_ORDER);
    json_decref(ev);
    if (!s) return;
    if (tr->metrics) {
        fputs(s, tr->metrics);
        fputc('\n', tr->metrics);
        fflush(tr->metrics);
    }
    if (tr->cb) tr->cb(s, tr->cb_user);
    free(s);
}

static json_t *event(const char *name, int64_t step) {
    json_t *e = json_object();
    json_object_set_new(e, "event", json_string(name));
    json_object_set_new(e, "step", json_integer(step));
    return e;
}

/* ---- data ---------------------------------------------------------------------------------------- */

static mt_status append_all(mt_pairs *dst, const mt_pairs *src) {
    for (size_t i = 0; src && i < src->n; i++)
        MT_TRY(mt_pairs_append(dst, mt_pairs_src(src, i), src->src_len[i], mt_pairs_tgt(src, i), src->tgt_len[i]));
    return MT_OK;
}

static mt_status load_data(mt_trainer *tr) {
    mt_train_config *c = &tr->tc;
    mt_corpus_options copt = {.skip_bad_lines = c->skip_bad_lines};
    MT_TRY(mt_pairs_new(&tr->train));
    MT_TRY(mt_pairs_new(&tr->valid));
    MT_TRY(mt_pairs_new(&tr->test));
    for (int i = 0; i < c->corpora.n; i++) {
        const char *spec = c->corpora.item[i];
        mt_pairs *all = NULL, *tp = NULL, *vp = NULL, *sp = NULL;
        mt_corpus_summary sum;
        MT_TRY(mt_pairs_read(&spec, 1, &copt, &all, &sum));
        if (sum.skipped)
            mt_log(MT_LOG_WARN, "%s: %" PRIu64 " bad lines skipped (first: %s)", spec, sum.skipped, sum.first_bad);
        mt_split_options so = {.valid = c->valid.n ? 0.0 : c->valid_size, .test = c->test.n ? 0.0 : c->test_size,
                               .seed = (uint64_t)c->split_seed};
        mt_status st = mt_pairs_split(all, &so, &tp, &vp, &sp);
        if (st != MT_OK) st = mt_error_prefix(st, "splitting %s: ", spec);
        if (st == MT_OK) st = append_all(tr->train, tp);
        if (st == MT_OK) st = append_all(tr->valid, vp);
        if (st == MT_OK) st = append_all(tr->test, sp);
        tr->valid_end[i] = tr->valid->n;
        tr->test_end[i] = tr->test->n;
        mt_pairs_free(all);
        mt_pairs_free(tp);
        mt_pairs_free(vp);
        mt_pairs_free(sp);
        MT_TRY(st);
    }
    for (int k = 0; k < 2; k++) {
        const mt_cfg_strlist *l = k == 0 ? &c->valid : &c->test;
        for (int i = 0; i < l->n; i++) {
            const char *spec = l->item[i];
            mt_pairs *p = NULL;
            MT_TRY(mt_pairs_read(&spec, 1, &copt, &p, NULL));
            mt_status st = append_all(k == 0 ? tr->valid : tr->test, p);
            mt_pairs_free(p);
            MT_TRY(st);
        }
    }
    if (tr->train->n == 0) return mt_error(MT_ERR_CONFIG, "config key 'corpora': no training pair left after the split");
    return MT_OK;
}

static mt_status prepare_tokenizer(mt_trainer *tr, const char *ckpt_tok_json) {
    mt_train_config *c = &tr->tc;
    if (ckpt_tok_json && ckpt_tok_json[0]) {
        MT_TRY(mt_tok_load_json(ckpt_tok_json, strlen(ckpt_tok_json), "checkpoint: __metadata__.tokenizer", &tr->tok));
    } else if (c->tokenizer[0] && access(c->tokenizer, F_OK) == 0) {
        MT_TRY(mt_tok_load_file(c->tokenizer, &tr->tok));
    } else {
        mt_tok_train_options o;
        mt_tok_train_options_default(&o, c->tokenizer_model == 1 ? MT_TOK_WORDLEVEL : MT_TOK_BPE);
        o.vocab_size = (size_t)(tr->mc.vocab_size > 0 ? tr->mc.vocab_size : c->tokenizer_vocab);
        o.min_frequency = (uint64_t)c->tokenizer_min_frequency;
        mt_tok_trainer *tt;
        MT_TRY(mt_tok_trainer_new(&o, &tt));
        mt_status st = MT_OK;
        for (size_t i = 0; st == MT_OK && i < tr->train->n; i++) {
            st = mt_tok_trainer_feed(tt, mt_pairs_src(tr->train, i), tr->train->src_len[i]);
            if (st == MT_OK) st = mt_tok_trainer_feed(tt, mt_pairs_tgt(tr->train, i), tr->train->tgt_len[i]);
        }
        if (st != MT_OK) {
            mt_tok_trainer_free(tt);
            return st;
        }
        MT_TRY(mt_tok_trainer_finish(tt, &tr->tok));
        /* every rank trains the same one; rank 0 alone writes it */
        if (c->tokenizer[0] && tr->tc.rank == 0) MT_TRY(mt_tok_save_file(tr->tok, c->tokenizer));
    }
    size_t tok_len = 0;
    MT_TRY(mt_tok_to_json(tr->tok, &tr->tok_json, &tok_len));
    /* trained for the run: out_dir/tokenizer.json */
    if (!(ckpt_tok_json && ckpt_tok_json[0]) && !c->tokenizer[0] && tr->tc.rank == 0)
        MT_TRY(mt_file_write_atomic_at(tr->out_fd, "tokenizer.json", tr->tok_json, tok_len));
    mt_tok_specials sp = mt_tok_get_specials(tr->tok);
    if (sp.pad < 0 || sp.sos < 0 || sp.eos < 0)
        return mt_error(MT_ERR_CONFIG, "config key 'tokenizer': the tokenizer needs [PAD], [SOS] and [EOS] tokens");
    int64_t V = (int64_t)mt_tok_vocab_size(tr->tok);
    if (tr->mc.vocab_size != 0 && tr->mc.vocab_size != V)
        return mt_error(MT_ERR_CONFIG, "config key 'vocab_size': %lld, but the tokenizer has %lld tokens",
                        (long long)tr->mc.vocab_size, (long long)V);
    tr->mc.vocab_size = V;
    tr->mc.pad_id = sp.pad;
    tr->mc.sos_id = sp.sos;
    tr->mc.eos_id = sp.eos;
    return mt_model_config_validate(&tr->mc, 1);
}

static mt_status prepare_batches(mt_trainer *tr) {
    mt_dataset_options dopt;
    mt_dataset_options_default(&dopt);
    dopt.max_src_len = (size_t)tr->mc.max_len;
    dopt.max_tgt_len = (size_t)tr->mc.max_len;
    dopt.src_sos = 0; /* the model's source is x1 .. xm [EOS] */
    dopt.src_eos = 1;
    dopt.threads = (int)tr->tc.threads;
    MT_TRY(mt_dataset_build(tr->tok, tr->train, &dopt, &tr->train_ds));
    if (tr->train_ds->n == 0) return mt_error(MT_ERR_CONFIG, "config key 'max_len': every training pair is longer");
    if (tr->train_ds->n_filtered)
        mt_log(MT_LOG_INFO, "%zu training pairs longer than max_len %lld left out", tr->train_ds->n_filtered,
               (long long)tr->mc.max_len);
    mt_batcher_options bo;
    mt_batcher_options_default(&bo);
    bo.max_tokens = (size_t)tr->tc.max_tokens;
    bo.max_sentences = (size_t)tr->tc.max_sentences;
    bo.seed = (uint64_t)tr->tc.seed;
    mt_status st = mt_batcher_new(tr->train_ds, &bo, &tr->batcher);
    if (st != MT_OK) return mt_error_prefix(st, "config key 'max_tokens': ");
    if (tr->valid->n) {
        MT_TRY(mt_dataset_build(tr->tok, tr->valid, &dopt, &tr->valid_ds));
        if (tr->valid_ds->n) {
            bo.shuffle = 0;
            size_t longest = 0;
            for (size_t i = 0; i < tr->valid_ds->n; i++) {
                size_t l = tr->valid_ds->src_len[i] + tr->valid_ds->tgt_len[i];
                if (l > longest) longest = l;
            }
            if (bo.max_tokens < longest) bo.max_tokens = longest;
            MT_TRY(mt_batcher_new(tr->valid_ds, &bo, &tr->valid_batcher));
        }
    }
    int a = (int)tr->tc.accum_steps;
    tr->bb = mt_sys_calloc((size_t)a, sizeof *tr->bb);
    tr->micro = mt_sys_calloc((size_t)a, sizeof *tr->micro);
    if (!tr->bb || !tr->micro) return mt_error(MT_ERR_NOMEM, "trainer: out of memory");
    return MT_OK;
}

/* The training data as encoded (tokenizer, then every kept pair's token ids): ranks on hosts whose
 * corpora paths differ compare this instead of the paths. */
static mt_status data_sha256(const mt_trainer *tr, char hex[MT_SHA256_HEX_LEN]) {
    mt_sha256_ctx *h;
    MT_TRY(mt_sha256_init(&h));
    const mt_dataset *ds = tr->train_ds;
    uint64_t n = ds->n;
    mt_status st = mt_sha256_update(h, tr->tok_json, strlen(tr->tok_json));
    if (st == MT_OK) st = mt_sha256_update(h, &n, sizeof n);
    for (size_t i = 0; st == MT_OK && i < ds->n; i++) {
        st = mt_sha256_update(h, ds->ids + ds->src_off[i], sizeof *ds->ids * ds->src_len[i]);
        if (st == MT_OK) st = mt_sha256_update(h, ds->ids + ds->tgt_off[i], sizeof *ds->ids * ds->tgt_len[i]);
    }
    uint8_t d[MT_SHA256_LEN];
    if (st == MT_OK) st = mt_sha256_final(h, d); /* frees h */
    else mt_sha256_free(h);
    if (st == MT_OK) mt_sha256_hex(d, hex);
    return st;
}

/* Batcher output -> model batch: the decoder reads tgt[:, :-1] and predicts tgt[:, 1:]. */
static mt_status to_seq_batch(const mt_batch *b, mt_seq_batch *s) {
    int64_t B = b->B, S = b->S, T = b->T - 1;
    if (T < 1) return mt_error(MT_ERR_INTERNAL, "trainer: a target of width %d", b->T);
    if (s->B * s->S < B * S || s->B * s->T < B * T || !s->src) {
        mt_sys_free(s->src);
        mt_sys_free(s->tgt_in);
        mt_sys_free(s->tgt_out);
        s->src = mt_sys_malloc(sizeof(int32_t) * (size_t)(B * S));
        s->tgt_in = mt_sys_malloc(sizeof(int32_t) * (size_t)(B * T));
        s->tgt_out = mt_sys_malloc(sizeof(int32_t) * (size_t)(B * T));
        if (!s->src || !s->tgt_in || !s->tgt_out) return mt_error(MT_ERR_NOMEM, "trainer: out of memory");
    }
    s->B = B;
    s->S = S;
    s->T = T;
    memcpy(s->src, b->src, sizeof(int32_t) * (size_t)(B * S));
    s->tgt_tokens = 0;
    for (int64_t i = 0; i < B; i++) {
        memcpy(s->tgt_in + i * T, b->tgt + i * b->T, sizeof(int32_t) * (size_t)T);
        memcpy(s->tgt_out + i * T, b->tgt + i * b->T + 1, sizeof(int32_t) * (size_t)T);
        s->tgt_tokens += b->tgt_len[i] - 1;
    }
    s->src_tokens = (int64_t)b->src_tokens;
    return MT_OK;
}

static void seq_batch_free(mt_seq_batch *s) {
    mt_sys_free(s->src);
    mt_sys_free(s->tgt_in);
    mt_sys_free(s->tgt_out);
    memset(s, 0, sizeof *s);
}

/* ---- checkpoints --------------------------------------------------------------------------------- */

static char *trainer_state_json(mt_trainer *tr) {
    mt_data_pos pos = mt_batcher_tell(tr->batcher);
    json_t *o = json_object();
    json_object_set_new(o, "data_epoch", json_integer((json_int_t)pos.epoch));
    json_object_set_new(o, "data_batch", json_integer((json_int_t)pos.batch));
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, tr->ctx->seed);
    json_object_set_new(o, "rng_seed", json_string(buf));
    snprintf(buf, sizeof buf, "%" PRIu64, tr->ctx->rng_offset);
    json_object_set_new(o, "rng_offset", json_string(buf));
    json_object_set_new(o, "best_valid", json_real(tr->best_valid));
    json_object_set_new(o, "have_valid", json_boolean(tr->have_valid));
    json_object_set_new(o, "bad_valids", json_integer(tr->bad_valids));
    json_object_set_new(o, "elapsed_s", json_real(tr->elapsed));
    json_object_set_new(o, "loss_ema", json_real(tr->loss_ema));
    json_object_set_new(o, "config", json_incref(tr->config));
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(o);
    return s;
}

static int ckpt_step_of(const char *name, int64_t *step) {
    long long s;
    int n = 0;
    if (sscanf(name, "step-%lld.mt%n", &s, &n) == 1 && (name[n] == 0 || strcmp(name + n, ".zst") == 0)) {
        *step = s;
        return 1;
    }
    return 0;
}

/* The newest checkpoint of the run's checkpoint directory into path ("" when none). */
static void latest_checkpoint(const mt_trainer *tr, char path[PATH_MAX]) {
    path[0] = 0;
    DIR *d = list_dir(tr->ckpt_fd);
    if (!d) return;
    int64_t best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s;
        struct stat sb;
        if (ckpt_step_of(e->d_name, &s) && s > best && fstatat(tr->ckpt_fd, e->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(sb.st_mode)) {
            best = s;
            if (pathf(path, PATH_MAX, "%s/%s", tr->ckpt_dir, e->d_name) != MT_OK) path[0] = 0;
        }
    }
    closedir(d);
}

/* Deletes the oldest checkpoints beyond keep_checkpoints. */
static void rotate_checkpoints(const mt_trainer *tr) {
    DIR *d = list_dir(tr->ckpt_fd);
    if (!d) return;
    int64_t steps[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        int64_t s;
        if (ckpt_step_of(e->d_name, &s)) steps[n++] = s;
    }
    closedir(d);
    for (int i = 0; i < n; i++) /* newest first */
        for (int j = i + 1; j < n; j++)
            if (steps[j] > steps[i]) {
                int64_t t = steps[i];
                steps[i] = steps[j];
                steps[j] = t;
            }
    for (int i = (int)tr->tc.keep_checkpoints; i < n; i++) {
        char p[64];
        snprintf(p, sizeof p, "step-%08lld.mt", (long long)steps[i]);
        if (unlinkat(tr->ckpt_fd, p, 0) != 0) {
            snprintf(p, sizeof p, "step-%08lld.mt.zst", (long long)steps[i]);
            unlinkat(tr->ckpt_fd, p, 0);
        }
    }
}

/* Writes a checkpoint to path (NULL: the checkpoint directory, rotated); the path written into out. */
static mt_status save_checkpoint(mt_trainer *tr, const char *path, char out[PATH_MAX]) {
    if (tr->tc.rank != 0) { /* data parallel: rank 0 alone writes */
        out[0] = 0;
        return MT_OK;
    }
    char p[PATH_MAX], name[PATH_MAX];
    int rotate = !path || !path[0];
    int dirfd = tr->ckpt_fd, own = 0;
    if (rotate) {
        snprintf(name, sizeof name, "step-%08lld.mt", (long long)tr->step);
        MT_TRY(pathf(p, sizeof p, "%s/%s", tr->ckpt_dir, name));
    } else {
        snprintf(p, sizeof p, "%s", path);
        if (tr->root[0]) MT_TRY(resolve_path(tr, "path", p, sizeof p));
        /* The file's directory as a descriptor (beneath the root when there is one). */
        char dir[PATH_MAX];
        const char *slash = strrchr(p, '/');
        snprintf(name, sizeof name, "%s", slash ? slash + 1 : p);
        if (!slash) snprintf(dir, sizeof dir, ".");
        else if (slash == p) snprintf(dir, sizeof dir, "/");
        else snprintf(dir, sizeof dir, "%.*s", (int)(slash - p), p);
        if (!name[0]) return mt_error(MT_ERR_INVALID_ARG, "checkpoint path '%s' names no file", path);
        mt_status ost = open_dir(tr, "path", dir, 0, &dirfd);
        if (ost != MT_OK) return mt_error_prefix(ost, "checkpoint %s: ", p);
        own = 1;
    }
    char *state = trainer_state_json(tr);
    mt_status st = state ? MT_OK : mt_error(MT_ERR_NOMEM, "checkpoint: out of memory");
    mt_ckpt_save ck = {.step = tr->step, .trainer_json = state, .opt_m = tr->opt->m, .opt_v = tr->opt->v};
    if (st == MT_OK) st = mt_modelfile_save_at(dirfd, name, tr->model, tr->ctx, tr->tok_json, &ck);
    if (st != MT_OK && rotate) st = mt_error_prefix(st, "%s: ", tr->ckpt_dir);
    free(state);
    if (own) close(dirfd);
    if (st != MT_OK) return st;
    if (rotate) rotate_checkpoints(tr);
    snprintf(out, PATH_MAX, "%s", p);
    pthread_mutex_lock(&tr->mu);
    snprintf(tr->last_ckpt, sizeof tr->last_ckpt, "%s", p);
    pthread_mutex_unlock(&tr->mu);
    json_t *ev = event("checkpoint", tr->step);
    json_object_set_new(ev, "path", json_string(p));
    emit(tr, ev);
    return MT_OK;
}

static const char *const arch_keys[] = {"d_model", "heads", "layers_enc", "layers_dec", "d_ff", "d_c", "d_cq",
                                        "d_rope", "attention", "activation", "max_len", "rope_base",
                                        "tie_embeddings", "norm_eps", NULL};

/* Restores a checkpoint whose model is already tr->model: optimizer, data position, generator. */
static mt_status restore(mt_trainer *tr, mt_modelfile *mf) {
    const char *where = mt_st_where(mf->file);
    /* The checkpoint's architecture must be the config's. */
    json_t *mine = json_object(), *theirs = json_object();
    mt_cfg_to_object(&mt_model_config_table, &tr->mc, mine);
    mt_cfg_to_object(&mt_model_config_table, &tr->model->cfg, theirs); /* the checkpoint's, moved into tr */
    mt_status st = MT_OK;
    for (int i = 0; arch_keys[i] && st == MT_OK; i++) {
        json_t *a = json_object_get(mine, arch_keys[i]), *b = json_object_get(theirs, arch_keys[i]);
        if (!json_equal(a, b)) {
            char *sa = json_dumps(a, JSON_ENCODE_ANY), *sb = json_dumps(b, JSON_ENCODE_ANY);
            st = mt_error(MT_ERR_CONFIG, "resume from %s: config key '%s' is %s in the checkpoint but %s in the config",
                          where, arch_keys[i], sb ? sb : "?", sa ? sa : "?");
            free(sa);
            free(sb);
        }
    }
    json_decref(mine);
    json_decref(theirs);
    MT_TRY(st);
    for (int i = 0; i < tr->model->n_params; i++) {
        char name[96];
        snprintf(name, sizeof name, "optimizer.m.%s", tr->model->params[i]->name);
        MT_TRY(mt_modelfile_read_tensor(mf->file, name, tr->ctx, tr->opt->m[i]));
        snprintf(name, sizeof name, "optimizer.v.%s", tr->model->params[i]->name);
        MT_TRY(mt_modelfile_read_tensor(mf->file, name, tr->ctx, tr->opt->v[i]));
    }
    const char *js = mt_st_meta_get(mf->file, "trainer");
    json_error_t err;
    json_t *o = js ? json_loads(js, 0, &err) : NULL;
    if (!o) return mt_error(MT_ERR_FORMAT, "%s: __metadata__.trainer is missing or does not parse", where);
    mt_data_pos pos = {(uint64_t)json_integer_value(json_object_get(o, "data_epoch")),
                       (uint64_t)json_integer_value(json_object_get(o, "data_batch"))};
    const char *seed = json_string_value(json_object_get(o, "rng_seed"));
    const char *off = json_string_value(json_object_get(o, "rng_offset"));
    if (!seed || !off) st = mt_error(MT_ERR_FORMAT, "%s: __metadata__.trainer lacks the generator state", where);
    if (st == MT_OK) st = mt_batcher_seek(tr->batcher, pos);
    if (st == MT_OK) {
        tr->ctx->seed = strtoull(seed, NULL, 10);
        tr->ctx->rng_offset = strtoull(off, NULL, 10);
        tr->best_valid = json_number_value(json_object_get(o, "best_valid"));
        tr->have_valid = json_is_true(json_object_get(o, "have_valid"));
        tr->bad_valids = (int64_t)json_integer_value(json_object_get(o, "bad_valids"));
        tr->elapsed = json_number_value(json_object_get(o, "elapsed_s"));
        tr->loss_ema = json_number_value(json_object_get(o, "loss_ema"));
        json_t *w = json_object_get(json_object_get(o, "config"), "world_size");
        tr->resumed_world = w ? (int64_t)json_integer_value(w) : 1;
        tr->step = mf->step;
        tr->opt->step = mf->step;
    }
    json_decref(o);
    return st;
}

/* On a resume from step `step`: cuts the metrics file (fd) after the last record of a step <= step, so
 * the steps the resumed run repeats are not listed twice; a torn last line (a crash mid-write) goes too. */
static mt_status truncate_metrics(int fd, const char *path, int64_t step) {
    struct stat sb;
    if (fstat(fd, &sb) != 0) return mt_error(MT_ERR_IO, "%s: %s", path, strerror(errno));
    size_t n = (size_t)sb.st_size, got = 0;
    char *buf = mt_sys_malloc(n + 1);
    if (!buf) return mt_error(MT_ERR_NOMEM, "%s: out of memory", path);
    while (got < n) {
        ssize_t k = pread(fd, buf + got, n - got, (off_t)got);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            mt_sys_free(buf);
            return mt_error(MT_ERR_IO, "%s: read: %s", path, strerror(errno));
        }
        if (k == 0) break;
        got += (size_t)k;
    }
    size_t keep = 0;
    while (keep < got) {
        char *nl = memchr(buf + keep, '\n', got - keep);
        if (!nl) break;
        *nl = 0;
        json_t *o = json_loads(buf + keep, 0, NULL);
        json_t *js = o ? json_object_get(o, "step") : NULL;
        int later = !o || !json_is_integer(js) || json_integer_value(js) > step;
        json_decref(o);
        if (later) break;
        keep = (size_t)(nl - buf) + 1;
    }
    mt_sys_free(buf);
    if (keep < n && ftruncate(fd, (off_t)keep) != 0) return mt_error(MT_ERR_IO, "%s: truncate: %s", path, strerror(errno));
    return MT_OK;
}

/* ---- creation ------------------------------------------------------------------------------------ */


mt_status mt_trainer_new(const char *json, const char *const *kv, int n_kv, const char *path_root, const char *where,
                         mt_trainer **out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_create: out is NULL");
    mt_trainer *tr = mt_sys_calloc(1, sizeof *tr);
    if (!tr) return mt_error(MT_ERR_NOMEM, "trainer: out of memory");
    pthread_mutex_init(&tr->mu, NULL);
    pthread_cond_init(&tr->cv, NULL);
    tr->state = MT_TRAIN_IDLE;
    tr->out_fd = tr->ckpt_fd = -1;
    mt_modelfile mf = {0};
    mt_status st = mt_train_config_parse(json, kv, n_kv, where ? where : "config", &tr->mc, &tr->tc);
    mt_train_config *c = &tr->tc;
    if (st == MT_OK && path_root) {
        if (!realpath(path_root, tr->root))
            st = mt_error(MT_ERR_NOT_FOUND, "path_root %s: %s", path_root, strerror(errno));
    }
    for (int k = 0; st == MT_OK && k < 3; k++) {
        mt_cfg_strlist *l = k == 0 ? &c->corpora : k == 1 ? &c->valid : &c->test;
        const char *key = k == 0 ? "corpora" : k == 1 ? "valid" : "test";
        for (int i = 0; st == MT_OK && i < l->n; i++) st = resolve_spec(tr, key, l->item[i]);
    }
    if (st == MT_OK) st = resolve_path(tr, "tokenizer", c->tokenizer, sizeof c->tokenizer);
    if (st == MT_OK) st = resolve_path(tr, "out_dir", c->out_dir, sizeof c->out_dir);
    if (st == MT_OK && strcmp(c->resume, "auto") != 0) st = resolve_path(tr, "resume", c->resume, sizeof c->resume);
    if (st == MT_OK) {
        snprintf(tr->out_dir, sizeof tr->out_dir, "%s", c->out_dir);
        snprintf(tr->ckpt_dir, sizeof tr->ckpt_dir, "%s/checkpoints", c->out_dir);
        snprintf(tr->metrics_path, sizeof tr->metrics_path, "%s/metrics.jsonl", c->out_dir);
        snprintf(tr->model_path, sizeof tr->model_path, "%s/model.mt", c->out_dir);
        snprintf(tr->best_path, sizeof tr->best_path, "%s/best.mt", c->out_dir);
        st = open_dir(tr, "out_dir", tr->out_dir, 1, &tr->out_fd);
    }
    if (st == MT_OK) {
        if (mkdirat(tr->out_fd, "checkpoints", 0777) != 0 && errno != EEXIST)
            st = mt_error(MT_ERR_IO, "mkdir %s: %s", tr->ckpt_dir, strerror(errno));
        tr->ckpt_fd = openat(tr->out_fd, "checkpoints", O_RDONLY | O_DIRECTORY | O_CLOEXEC | nofollow(tr));
        if (st == MT_OK && tr->ckpt_fd < 0)
            st = mt_error(errno == ELOOP || errno == ENOTDIR ? MT_ERR_PERMISSION : MT_ERR_IO,
                          "out_dir: %s: %s", tr->ckpt_dir,
                          errno == ELOOP || errno == ENOTDIR ? "a symbolic link or not a directory" : strerror(errno));
    }
    if (st == MT_OK && c->rank == 0) { /* rank 0 alone writes there */
        remove_stale_tmp(tr->out_fd, tr->out_dir);
        remove_stale_tmp(tr->ckpt_fd, tr->ckpt_dir);
    }
    tr->hp = (mt_adamw_hparams){.lr = c->lr, .beta1 = c->beta1, .beta2 = c->beta2, .eps = c->adam_eps,
                                .weight_decay = c->weight_decay, .warmup_steps = c->warmup_steps,
                                .clip_norm = c->clip_norm, .label_smoothing = c->label_smoothing};
    /* The checkpoint to resume from, if any. */
    char ck[PATH_MAX] = "";
    if (st == MT_OK) {
        if (strcmp(c->resume, "auto") == 0) latest_checkpoint(tr, ck);
        else if (c->resume[0]) snprintf(ck, sizeof ck, "%s", c->resume);
        if (ck[0]) st = mt_modelfile_load(ck, (int)c->device, 1, &mf);
        if (st == MT_OK && ck[0] && mf.model->int8)
            st = mt_error(MT_ERR_UNSUPPORTED, "resume %s: an int8 model (mt-quantize) is for inference only; "
                          "training needs an f32 checkpoint", ck);
        if (st == MT_OK && ck[0] && !mf.is_checkpoint)
            st = mt_error(MT_ERR_FORMAT, "resume %s: a model file, not a checkpoint (no optimizer state)", ck);
    }
    if (st == MT_OK) st = load_data(tr);
    if (st == MT_OK) st = prepare_tokenizer(tr, ck[0] ? mf.tokenizer_json : NULL);
    if (st == MT_OK) st = prepare_batches(tr);
    if (st == MT_OK) st = mt_context_init(&tr->ctx, (int)c->device, (int)c->threads);
    if (st == MT_OK) st = mt_context_set_precision(tr->ctx, training_precision(c));
    if (st == MT_OK) {
        mt_context_seed(tr->ctx, (uint64_t)c->seed);
        if (ck[0]) {
            tr->model = mf.model;
            mf.model = NULL;
            tr->model->cfg.dropout = tr->mc.dropout;
        } else {
            st = mt_transformer_create(&tr->mc, (int)c->device, &tr->model);
            if (st == MT_OK) st = mt_transformer_init_weights(tr->model, tr->ctx);
        }
    }
    if (st == MT_OK) st = mt_optimizer_create(tr->model, tr->ctx, &tr->opt);
    if (st == MT_OK && ck[0]) st = restore(tr, &mf);
    if (st == MT_OK) st = mt_decode_ws_create((int)c->device, (int)c->threads, &tr->dws);
    if (st == MT_OK) {
        tr->config = json_object();
        mt_cfg_to_object(&mt_model_config_table, &tr->mc, tr->config);
        mt_cfg_to_object(&mt_train_config_table, &tr->tc, tr->config);
    }
    char data_sha[MT_SHA256_HEX_LEN];
    if (st == MT_OK && c->world_size > 1) st = data_sha256(tr, data_sha);
    if (st == MT_OK && c->world_size > 1)
        st = mt_dist_create(c, tr->config, data_sha, tr->model, tr->ctx, &tr->dist);
    if (st == MT_OK && c->rank == 0) {
        int fd = openat(tr->out_fd, "metrics.jsonl",
                        O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | nofollow(tr) | (ck[0] ? 0 : O_TRUNC), 0666);
        if (fd < 0)
            st = errno == ELOOP ? mt_error(MT_ERR_PERMISSION, "out_dir: %s is a symbolic link", tr->metrics_path)
                                : mt_error(MT_ERR_IO, "open %s: %s", tr->metrics_path, strerror(errno));
        if (st == MT_OK && ck[0]) st = truncate_metrics(fd, tr->metrics_path, tr->step);
        if (st == MT_OK && !(tr->metrics = fdopen(fd, "a")))
            st = mt_error(MT_ERR_IO, "open %s: %s", tr->metrics_path, strerror(errno));
        if (st != MT_OK && fd >= 0 && !tr->metrics) close(fd);
    }
    mt_modelfile_clear(&mf);
    if (st != MT_OK) {
        mt_trainer_free(tr);
        return st;
    }
    json_t *ev = event("start", tr->step);
    json_object_set_new(ev, "resumed_from", ck[0] ? json_string(ck) : json_null());
    json_object_set_new(ev, "world_size", json_integer(c->world_size));
    if (ck[0] && tr->resumed_world != c->world_size) {
        /* Allowed: the optimizer state is replicated, only the shards of each batch change. */
        json_object_set_new(ev, "resumed_world_size", json_integer(tr->resumed_world));
        mt_log(MT_LOG_WARN, "resuming a run of world size %lld with world size %lld: the steps from here differ from "
               "an uninterrupted run only by the order of float additions", (long long)tr->resumed_world,
               (long long)c->world_size);
    }
    json_object_set_new(ev, "params", json_integer(mt_transformer_numel(tr->model)));
    json_object_set_new(ev, "train_pairs", json_integer((json_int_t)tr->train_ds->n));
    json_object_set_new(ev, "valid_pairs", json_integer((json_int_t)tr->valid->n));
    json_object_set_new(ev, "test_pairs", json_integer((json_int_t)tr->test->n));
    json_object_set_new(ev, "vocab_size", json_integer(tr->mc.vocab_size));
    json_object_set_new(ev, "batches_per_epoch", json_integer((json_int_t)mt_batcher_batches_per_epoch(tr->batcher)));
    json_object_set_new(ev, "config", json_incref(tr->config));
    tr->start_ev = ev;
    *out = tr;
    return MT_OK;
}

void mt_trainer_free(mt_trainer_t *tr) {
    if (!tr) return;
    if (tr->metrics) fclose(tr->metrics);
    if (tr->out_fd >= 0) close(tr->out_fd);
    if (tr->ckpt_fd >= 0) close(tr->ckpt_fd);
    mt_dist_free(tr->dist);
    mt_decode_ws_free(tr->dws);
    mt_optimizer_free(tr->opt);
    mt_transformer_free(tr->model);
    mt_context_free(tr->ctx);
    for (int64_t i = 0; tr->bb && i < tr->tc.accum_steps; i++) mt_batch_free(&tr->bb[i]);
    for (int64_t i = 0; tr->micro && i < tr->tc.accum_steps; i++) seq_batch_free(&tr->micro[i]);
    mt_sys_free(tr->bb);
    mt_sys_free(tr->micro);
    mt_batcher_free(tr->batcher);
    mt_batcher_free(tr->valid_batcher);
    mt_dataset_free(tr->train_ds);
    mt_dataset_free(tr->valid_ds);
    mt_tok_free(tr->tok);
    mt_sys_free(tr->tok_json);
    mt_pairs_free(tr->train);
    mt_pairs_free(tr->valid);
    mt_pairs_free(tr->test);
    json_decref(tr->config);
    json_decref(tr->start_ev);
    mt_sys_free(tr->save_path);
    pthread_cond_destroy(&tr->cv);
    pthread_mutex_destroy(&tr->mu);
    mt_sys_free(tr);
}


/* ---- validation ---------------------------------------------------------------------------------- */

static mt_status validate(mt_trainer *tr, int *improved) {
    *improved = 0;
    if (!tr->valid_batcher) return MT_OK;
    double sum = 0.0;
    int64_t tokens = 0;
    MT_TRY(mt_batcher_seek(tr->valid_batcher, (mt_data_pos){0, 0}));
    size_t nb = mt_batcher_batches_per_epoch(tr->valid_batcher);
    mt_batch b = {0};
    mt_seq_batch s = {0};
    mt_status st = MT_OK;
    for (size_t i = 0; st == MT_OK && i < nb; i++) {
        st = mt_batcher_next(tr->valid_batcher, &b);
        if (tr->dist && (int)(i % (size_t)mt_dist_world(tr->dist)) != mt_dist_rank(tr->dist)) continue; /* another rank's */
        if (st == MT_OK && b.B > 0) st = to_seq_batch(&b, &s);
        double l;
        int64_t t;
        if (st == MT_OK && b.B > 0) st = mt_eval_loss(tr->ctx, tr->model, &s, 1, 0.0f, &l, &t);
        if (st == MT_OK && b.B > 0) {
            sum += l * (double)t;
            tokens += t;
        }
    }
    mt_batch_free(&b);
    seq_batch_free(&s);
    MT_TRY(st);
    if (tr->dist) {
        double v[2] = {sum, (double)tokens};
        MT_TRY(mt_dist_sum(tr->dist, v, 2));
        sum = v[0];
        tokens = (int64_t)v[1];
    }
    double vloss = tokens ? sum / (double)tokens : 0.0;
    double bleu = -1, chrf = -1;
    size_t nv = tr->valid->n < (size_t)tr->tc.valid_sentences ? tr->valid->n : (size_t)tr->tc.valid_sentences;
    if (nv > 0) {
        const char **srcs = mt_sys_malloc(sizeof(char *) * nv), **refs = mt_sys_malloc(sizeof(char *) * nv);
        mt_absorbed *abs = NULL;
        char **hyps = NULL;
        st = (!srcs || !refs) ? mt_error(MT_ERR_NOMEM, "validation: out of memory") : MT_OK;
        for (size_t i = 0; st == MT_OK && i < nv; i++) {
            srcs[i] = mt_pairs_src(tr->valid, i);
            refs[i] = mt_pairs_tgt(tr->valid, i);
        }
        if (st == MT_OK) st = mt_absorbed_create(tr->model, &abs);
        mt_decode_opts o = mt_decode_opts_default();
        o.beam = (int)tr->tc.valid_beam;
        if (st == MT_OK) st = mt_translate_texts(tr->dws, tr->model, abs, tr->tok, srcs, NULL, nv, &o, NULL, NULL, &hyps, NULL);
        mt_bleu_score bs;
        if (st == MT_OK) st = mt_bleu_corpus((const char *const *)hyps, refs, nv, &bs);
        if (st == MT_OK) st = mt_chrf_corpus((const char *const *)hyps, refs, nv, &chrf);
        if (st == MT_OK) bleu = bs.score;
        free(hyps);
        mt_absorbed_free(abs);
        mt_sys_free(srcs);
        mt_sys_free(refs);
        MT_TRY(st);
    }
    if (!tr->have_valid || vloss < tr->best_valid) {
        *improved = 1;
        tr->best_valid = vloss;
        tr->have_valid = 1;
        tr->bad_valids = 0;
    } else {
        tr->bad_valids++;
    }
    pthread_mutex_lock(&tr->mu);
    tr->valid_loss = vloss;
    tr->bleu = bleu;
    tr->chrf = chrf;
    pthread_mutex_unlock(&tr->mu);
    json_t *ev = event("valid", tr->step);
    json_object_set_new(ev, "valid_loss", json_real(vloss));
    json_object_set_new(ev, "valid_ppl", json_real(exp(vloss)));
    json_object_set_new(ev, "valid_tokens", json_integer(tokens));
    if (bleu >= 0) {
        json_object_set_new(ev, "bleu", json_real(bleu));
        json_object_set_new(ev, "chrf", json_real(chrf));
        json_object_set_new(ev, "sentences", json_integer((json_int_t)nv));
    }
    json_object_set_new(ev, "best", json_boolean(*improved));
    emit(tr, ev);
    if (*improved && tr->tc.rank == 0)
        MT_TRY(mt_modelfile_save_at(tr->out_fd, "best.mt", tr->model, tr->ctx, tr->tok_json, NULL));
    return MT_OK;
}

/* ---- the loop ------------------------------------------------------------------------------------ */

/* One optimizer step over accum_steps batches. *epoch_end: the data ran past max_epochs (no step). */
static mt_status one_step(mt_trainer *tr, int *epoch_end) {
    *epoch_end = 0;
    int a = (int)tr->tc.accum_steps;
    if (tr->tc.max_epochs > 0 && mt_batcher_tell(tr->batcher).epoch >= (uint64_t)tr->tc.max_epochs) {
        *epoch_end = 1;
        return MT_OK;
    }
    int64_t tokens = 0;
    for (int i = 0; i < a; i++) {
        MT_TRY(mt_batcher_next(tr->batcher, &tr->bb[i]));
        MT_TRY(to_seq_batch(&tr->bb[i], &tr->micro[i]));
        tokens += tr->micro[i].src_tokens + tr->micro[i].tgt_tokens;
    }
    if (tr->dist) { /* data parallel: the loss is agreed across the ranks on the host every step */
        double loss, gnorm;
        MT_TRY(mt_dist_train_step(tr->dist, tr->ctx, tr->model, tr->opt, &tr->hp, tr->micro, a, tr->step + 1, &loss,
                                  &gnorm));
        tr->iv_loss += loss;
    } else { /* not read: the loss stays on the device until the interval is logged (no host wait per step) */
        MT_TRY(mt_train_step(tr->ctx, tr->model, tr->opt, &tr->hp, tr->micro, a, NULL, NULL));
    }
    pthread_mutex_lock(&tr->mu);
    tr->step++;
    tr->lr_now = mt_lr_at(&tr->hp, tr->step);
    pthread_mutex_unlock(&tr->mu);
    tr->iv_steps++;
    tr->iv_tokens += tokens;
    return MT_OK;
}

/* Adds "rank_tokens_per_s": [r0, r1, ...] to a step event (a collective: every rank calls it at the
 * same step; a failure surfaces at the next step's collective). */
static void dist_rank_rates(mt_trainer *tr, json_t *ev, double dt) {
    int W = mt_dist_world(tr->dist), R = mt_dist_rank(tr->dist);
    double *v = mt_sys_calloc((size_t)W, sizeof *v);
    if (!v) return;
    double tok = mt_dist_get_stats(tr->dist).tokens;
    v[R] = dt > 0 ? (tok - tr->iv_rank_tokens) / dt : 0.0;
    tr->iv_rank_tokens = tok;
    if (mt_dist_sum(tr->dist, v, W) == MT_OK) {
        json_t *a = json_array();
        for (int r = 0; r < W; r++) json_array_append_new(a, json_real(v[r]));
        json_object_set_new(ev, "rank_tokens_per_s", a);
    }
    mt_sys_free(v);
}

/* Reads the interval's mean loss (on one device: from the device, the one host wait of the interval;
 * data parallel: the mean of the agreed per-step losses) and logs it; last_loss and loss_ema follow the
 * logged steps. A diverged loss is reported here. */
static mt_status log_interval(mt_trainer *tr, double run_start, int64_t run_steps, int64_t target_steps) {
    double loss;
    if (tr->dist) loss = tr->iv_steps > 0 ? tr->iv_loss / (double)tr->iv_steps : 0.0;
    else MT_TRY(mt_optimizer_read(tr->opt, tr->ctx, &loss, NULL));
    pthread_mutex_lock(&tr->mu);
    tr->last_loss = loss;
    tr->loss_ema = tr->loss_ema == 0 ? loss : 0.95 * tr->loss_ema + 0.05 * loss;
    pthread_mutex_unlock(&tr->mu);
    double t = mt_now_s(), dt = t - tr->iv_start;
    double tps = dt > 0 ? (double)tr->iv_tokens / dt : 0.0;
    pthread_mutex_lock(&tr->mu);
    tr->tok_per_s = tps;
    pthread_mutex_unlock(&tr->mu);
    json_t *ev = event("step", tr->step);
    json_object_set_new(ev, "loss", json_real(loss));
    json_object_set_new(ev, "lr", json_real(tr->lr_now));
    json_object_set_new(ev, "tokens_per_s", json_real(tps));
    json_object_set_new(ev, "epoch", json_integer((json_int_t)mt_batcher_tell(tr->batcher).epoch));
    json_object_set_new(ev, "elapsed_s", json_real(tr->elapsed));
    double per = run_steps > 0 ? (t - run_start) / (double)run_steps : 0.0;
    double eta = per * (double)(target_steps - tr->step);
    if (tr->tc.max_time > 0 && tr->tc.max_time - tr->elapsed < eta) eta = tr->tc.max_time - tr->elapsed;
    json_object_set_new(ev, "max_steps", json_integer(target_steps));
    json_object_set_new(ev, "eta_s", json_real(eta > 0 ? eta : 0));
    if (tr->dist) dist_rank_rates(tr, ev, dt); /* tokens/s of every rank's shards */
    emit(tr, ev);
    tr->iv_loss = 0;
    tr->iv_steps = 0;
    tr->iv_tokens = 0;
    tr->iv_start = t;
    return MT_OK;
}

/* A checkpoint into the checkpoint directory, in the loop. A failure (disk full, permission) is
 * reported — a warning and a "checkpoint_failed" event — and training goes on, the next interval
 * trying again; only max_checkpoint_failures failures in a row fail the run, and then its weights are
 * whole (failed_whole: an explicit save still works). */
static mt_status loop_checkpoint(mt_trainer *tr) {
    char w[PATH_MAX];
    mt_status st = save_checkpoint(tr, NULL, w);
    if (st == MT_OK) {
        tr->ckpt_failures = 0;
        return MT_OK;
    }
    char msg[MT_ERROR_MAX];
    snprintf(msg, sizeof msg, "%s", mt_last_error());
    tr->ckpt_failures++;
    mt_log(MT_LOG_WARN, "checkpoint at step %lld failed (%lld in a row; the run fails at %lld): %s", (long long)tr->step,
           (long long)tr->ckpt_failures, (long long)tr->tc.max_checkpoint_failures, msg);
    json_t *ev = event("checkpoint_failed", tr->step);
    json_object_set_new(ev, "message", json_string(msg));
    json_object_set_new(ev, "failures", json_integer(tr->ckpt_failures));
    emit(tr, ev);
    if (tr->ckpt_failures < tr->tc.max_checkpoint_failures) return MT_OK;
    tr->failed_whole = 1;
    return mt_error(st, "%lld checkpoints in a row failed; the last: %s", (long long)tr->ckpt_failures, msg);
}

/* Serves a save request of another thread at a step boundary. */
static void serve_save(mt_trainer *tr) {
    pthread_mutex_lock(&tr->mu);
    if (tr->save_req == tr->save_done) {
        pthread_mutex_unlock(&tr->mu);
        return;
    }
    int64_t req = tr->save_req;
    char *path = tr->save_path;
    tr->save_path = NULL;
    pthread_mutex_unlock(&tr->mu);
    char written[PATH_MAX] = "";
    mt_status st = save_checkpoint(tr, path, written);
    mt_sys_free(path);
    pthread_mutex_lock(&tr->mu);
    tr->save_status = st;
    snprintf(tr->save_written, sizeof tr->save_written, "%s", written);
    if (st != MT_OK) snprintf(tr->error, sizeof tr->error, "%s", mt_last_error());
    tr->save_done = req;
    pthread_cond_broadcast(&tr->cv);
    pthread_mutex_unlock(&tr->mu);
}

static void set_state(mt_trainer *tr, mt_train_state s) {
    pthread_mutex_lock(&tr->mu);
    tr->state = s;
    pthread_cond_broadcast(&tr->cv);
    pthread_mutex_unlock(&tr->mu);
}

/* The loop. full: mt_trainer_run (to max_steps / time / epochs / early stopping, final save);
 * otherwise n steps (mt_trainer_step). */
mt_status mt_trainer_loop(mt_trainer *tr, int full, int64_t n) {
    pthread_mutex_lock(&tr->mu);
    while (tr->saving) pthread_cond_wait(&tr->cv, &tr->mu); /* a save of the idle trainer finishes first */
    if (tr->state == MT_TRAIN_RUNNING) {
        pthread_mutex_unlock(&tr->mu);
        return mt_error(MT_ERR_STATE, "trainer: already running");
    }
    if (tr->state == MT_TRAIN_FAILED) {
        pthread_mutex_unlock(&tr->mu);
        return mt_error(MT_ERR_STATE, "trainer: failed earlier (%s)", tr->error);
    }
    tr->state = MT_TRAIN_RUNNING;
    pthread_mutex_unlock(&tr->mu);
    emit(tr, tr->start_ev);
    tr->start_ev = NULL;
    int64_t target = full ? tr->tc.max_steps : tr->step + n;
    double run_start = mt_now_s(), last = run_start;
    int64_t run_steps = 0;
    tr->iv_start = run_start;
    tr->iv_loss = 0;
    tr->iv_steps = tr->iv_tokens = 0;
    const char *reason = "max_steps";
    mt_status st = MT_OK;
    int cancelled = 0;
    while (tr->step < target) {
        /* A cancel asked before the run started (a server's stop racing its start) counts too: it
         * stays pending until a run observes it here. */
        int cancel_now = atomic_exchange(&tr->cancel, 0);
        if (tr->dist) { /* every rank stops at the same step: rank 0's clock, anyone's cancel */
            st = mt_dist_agree(tr->dist, &tr->elapsed, &cancel_now);
            if (st != MT_OK) break;
        }
        if (cancel_now) {
            cancelled = 1;
            break;
        }
        if (full && tr->tc.max_time > 0 && tr->elapsed >= tr->tc.max_time) {
            reason = "max_time";
            break;
        }
        int epoch_end;
        st = one_step(tr, &epoch_end);
        if (st != MT_OK) break;
        if (epoch_end) {
            reason = "max_epochs";
            break;
        }
        double t = mt_now_s();
        tr->elapsed += t - last;
        last = t;
        run_steps++;
        if (tr->step % tr->tc.log_every == 0) {
            st = log_interval(tr, run_start, run_steps, target);
            if (st != MT_OK) break;
        }
        int stop = 0;
        if (tr->tc.valid_every > 0 && tr->step % tr->tc.valid_every == 0) {
            int improved;
            st = validate(tr, &improved);
            if (st != MT_OK) break;
            if (tr->tc.patience > 0 && tr->bad_valids >= tr->tc.patience) {
                reason = "early_stopping";
                stop = 1;
            }
            last = mt_now_s(); /* validation time is not training time */
        }
        if (tr->tc.save_every > 0 && tr->step % tr->tc.save_every == 0) {
            st = loop_checkpoint(tr);
            if (st != MT_OK) break;
            last = mt_now_s();
        }
        serve_save(tr);
        if (stop) break;
    }
    if (tr->iv_steps > 0 && st == MT_OK) st = log_interval(tr, run_start, run_steps, target);
    if (st == MT_OK && (cancelled || full)) {
        if (full && !cancelled && (tr->tc.valid_every == 0 || tr->step % tr->tc.valid_every != 0) && tr->valid_batcher) {
            int improved;
            st = validate(tr, &improved);
        }
        if (st == MT_OK && (tr->tc.save_every == 0 || tr->step % tr->tc.save_every != 0 || cancelled))
            st = loop_checkpoint(tr);
        if (st == MT_OK && full && !cancelled && tr->tc.rank == 0)
            st = mt_modelfile_save_at(tr->out_fd, "model.mt", tr->model, tr->ctx, tr->tok_json, NULL);
    }
    if (st == MT_OK && tr->dist) st = mt_dist_finish(tr->dist);
    if (st == MT_OK) { /* the weights this rank ends with: the ranks of a data-parallel run compare them */
        char hex[MT_SHA256_HEX_LEN];
        mt_status hs = mt_transformer_weights_sha256(tr->model, tr->ctx, hex);
        pthread_mutex_lock(&tr->mu);
        snprintf(tr->weights_sha, sizeof tr->weights_sha, "%s", hs == MT_OK ? hex : "");
        pthread_mutex_unlock(&tr->mu);
    }
    serve_save(tr);
    if (st != MT_OK) {
        pthread_mutex_lock(&tr->mu);
        snprintf(tr->error, sizeof tr->error, "%s", mt_last_error());
        pthread_mutex_unlock(&tr->mu);
        json_t *ev = event("error", tr->step);
        json_object_set_new(ev, "message", json_string(tr->error));
        /* Checkpoints kept failing but the weights are whole: write what can be written, the model
         * without the optimizer state (a third of a checkpoint). */
        if (tr->failed_whole && tr->tc.rank == 0 &&
            mt_modelfile_save_at(tr->out_fd, "model.mt", tr->model, tr->ctx, tr->tok_json, NULL) == MT_OK)
            json_object_set_new(ev, "model", json_string(tr->model_path));
        emit(tr, ev);
        /* A failed trainer never runs again, and tearing its communicator down waits for the other
         * ranks (rank 0's rendezvous store lingers up to 10 s after a failure, so that they learn of
         * it): do it here, on the thread that ran the loop, not in mt_trainer_free, which a server
         * calls from its event loop (a 10 s stall there cost a cluster its workers' heartbeats). */
        mt_dist_free(tr->dist);
        tr->dist = NULL;
        set_state(tr, MT_TRAIN_FAILED);
        mt_error(st, "%s", tr->error);
        return st;
    }
    json_t *ev = event(cancelled ? "cancelled" : full ? "done" : "paused", tr->step);
    json_object_set_new(ev, "reason", json_string(cancelled ? "cancelled" : reason));
    json_object_set_new(ev, "loss", json_real(tr->loss_ema));
    if (tr->have_valid) json_object_set_new(ev, "best_valid_loss", json_real(tr->best_valid));
    if (tr->bleu >= 0 && tr->have_valid) {
        json_object_set_new(ev, "bleu", json_real(tr->bleu));
        json_object_set_new(ev, "chrf", json_real(tr->chrf));
    }
    json_object_set_new(ev, "elapsed_s", json_real(tr->elapsed));
    json_object_set_new(ev, "checkpoint", json_string(tr->last_ckpt));
    json_object_set_new(ev, "weights_sha256", json_string(tr->weights_sha));
    if (full && !cancelled) {
        json_object_set_new(ev, "model", json_string(tr->model_path));
        if (tr->have_valid) json_object_set_new(ev, "best_model", json_string(tr->best_path));
    }
    emit(tr, ev);
    set_state(tr, cancelled ? MT_TRAIN_CANCELLED : full ? MT_TRAIN_DONE : MT_TRAIN_IDLE);
    if (cancelled) return mt_error(MT_ERR_CANCELLED, "training cancelled at step %lld (checkpoint %s)",
                                   (long long)tr->step, tr->last_ckpt);
    return MT_OK;
}

/* ---- the thread protocol ------------------------------------------------------------------------- */

/* Only an atomic store once tr is checked: mt-train calls it from its signal handler. */
mt_status mt_trainer_cancel(mt_trainer_t *tr) {
    if (!tr) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_cancel: trainer is NULL");
    atomic_store(&tr->cancel, 1);
    return MT_OK;
}

mt_status mt_trainer_set_progress_callback(mt_trainer_t *tr, mt_progress_fn fn, void *user) {
    if (!tr) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_set_progress_callback: trainer is NULL");
    pthread_mutex_lock(&tr->mu);
    tr->cb = fn;
    tr->cb_user = user;
    pthread_mutex_unlock(&tr->mu);
    return MT_OK;
}

mt_status mt_trainer_save(mt_trainer *tr, const char *path, char *written, size_t cap) {
    pthread_mutex_lock(&tr->mu);
    while (tr->saving) pthread_cond_wait(&tr->cv, &tr->mu);
    if (tr->state == MT_TRAIN_FAILED && !tr->failed_whole) {
        pthread_mutex_unlock(&tr->mu);
        return mt_error(MT_ERR_STATE, "trainer: failed earlier (%s)", tr->error);
    }
    if (tr->state == MT_TRAIN_RUNNING) {
        mt_sys_free(tr->save_path);
        tr->save_path = path ? mt_sys_strdup(path) : NULL;
        int64_t my = ++tr->save_req;
        while (tr->save_done < my && tr->state == MT_TRAIN_RUNNING) pthread_cond_wait(&tr->cv, &tr->mu);
        if (tr->save_done >= my) {
            mt_status st = tr->save_status;
            if (written) snprintf(written, cap, "%s", tr->save_written);
            if (st != MT_OK) mt_error(st, "%s", tr->error);
            pthread_mutex_unlock(&tr->mu);
            return st;
        }
        /* The run ended before the boundary: save now, below. */
        tr->save_done = tr->save_req;
    }
    /* Not running: save directly. A run asked meanwhile waits for it (saving), instead of failing
     * "already running" as it did when the save marked the trainer running. */
    char w[PATH_MAX] = "";
    tr->saving = 1;
    pthread_mutex_unlock(&tr->mu);
    mt_status st = save_checkpoint(tr, path, w);
    pthread_mutex_lock(&tr->mu);
    tr->saving = 0;
    pthread_cond_broadcast(&tr->cv);
    pthread_mutex_unlock(&tr->mu);
    if (st == MT_OK && written) snprintf(written, cap, "%s", w);
    return st;
}

mt_status mt_trainer_status(const mt_trainer_t *trc, mt_train_state *state, int64_t *step, double *loss,
                            double *tps) {
    if (!trc) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_status: trainer is NULL");
    mt_trainer *tr = (mt_trainer *)trc;
    pthread_mutex_lock(&tr->mu);
    if (state) *state = tr->state;
    if (step) *step = tr->step;
    if (loss) *loss = tr->loss_ema;
    if (tps) *tps = tr->tok_per_s;
    pthread_mutex_unlock(&tr->mu);
    return MT_OK;
}

mt_status mt_trainer_status_json(const mt_trainer_t *trc, char **out_json) {
    if (!trc || !out_json) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_status_json: NULL argument");
    mt_trainer *tr = (mt_trainer *)trc;
    static const char *names[] = {"idle", "running", "done", "cancelled", "failed"};
    pthread_mutex_lock(&tr->mu);
    json_t *o = json_object();
    json_object_set_new(o, "state", json_string(names[tr->state]));
    json_object_set_new(o, "step", json_integer(tr->step));
    json_object_set_new(o, "max_steps", json_integer(tr->tc.max_steps));
    json_object_set_new(o, "loss", json_real(tr->loss_ema));
    json_object_set_new(o, "lr", json_real(tr->lr_now));
    json_object_set_new(o, "tokens_per_s", json_real(tr->tok_per_s));
    json_object_set_new(o, "elapsed_s", json_real(tr->elapsed));
    json_object_set_new(o, "valid_loss", tr->have_valid ? json_real(tr->valid_loss) : json_null());
    json_object_set_new(o, "bleu", tr->have_valid && tr->bleu >= 0 ? json_real(tr->bleu) : json_null());
    json_object_set_new(o, "chrf", tr->have_valid && tr->chrf >= 0 ? json_real(tr->chrf) : json_null());
    json_object_set_new(o, "last_checkpoint", tr->last_ckpt[0] ? json_string(tr->last_ckpt) : json_null());
    json_object_set_new(o, "out_dir", json_string(tr->out_dir));
    json_object_set_new(o, "error", tr->error[0] ? json_string(tr->error) : json_null());
    json_object_set_new(o, "weights_sha256", tr->weights_sha[0] ? json_string(tr->weights_sha) : json_null());
    pthread_mutex_unlock(&tr->mu);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s) return mt_error(MT_ERR_NOMEM, "mt_trainer_status_json: out of memory");
    *out_json = s;
    return MT_OK;
}

/* ---- split dump ---------------------------------------------------------------------------------- */

static mt_status dump_pairs(const mt_pairs *p, const char *path) {
    mt_writer *w;
    MT_TRY(mt_writer_open(path, NULL, &w));
    mt_status st = MT_OK;
    for (size_t i = 0; st == MT_OK && i < p->n; i++) {
        st = mt_writer_write(w, mt_pairs_src(p, i), p->src_len[i]);
        if (st == MT_OK) st = mt_writer_write(w, "\t", 1);
        if (st == MT_OK) st = mt_writer_write(w, mt_pairs_tgt(p, i), p->tgt_len[i]);
        if (st == MT_OK) st = mt_writer_write(w, "\n", 1);
    }
    if (st != MT_OK) {
        mt_writer_abort(w);
        return st;
    }
    return mt_writer_commit(w);
}

/* Pairs [from, to) of p into a new set. */
static mt_status pairs_range(const mt_pairs *p, size_t from, size_t to, mt_pairs **out) {
    MT_TRY(mt_pairs_new(out));
    for (size_t i = from; i < to; i++)
        MT_TRY(mt_pairs_append(*out, mt_pairs_src(p, i), p->src_len[i], mt_pairs_tgt(p, i), p->tgt_len[i]));
    return MT_OK;
}

mt_status mt_trainer_dump_split(mt_trainer *tr, const char *dir) {
    MT_TRY(mkdirs(dir));
    /* Each corpus' own held-out parts too (valid.0.tsv, test.0.tsv, ...): scores per corpus. */
    for (int k = 0; k < 2; k++) {
        const mt_pairs *all = k == 0 ? tr->valid : tr->test;
        const size_t *end = k == 0 ? tr->valid_end : tr->test_end;
        if ((k == 0 ? tr->tc.valid.n : tr->tc.test.n) > 0) continue;
        for (int i = 0; i < tr->tc.corpora.n; i++) {
            mt_pairs *part = NULL;
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s.%d.tsv", dir, k == 0 ? "valid" : "test", i);
            mt_status st = pairs_range(all, i ? end[i - 1] : 0, end[i], &part);
            if (st == MT_OK) st = dump_pairs(part, p);
            mt_pairs_free(part);
            MT_TRY(st);
        }
    }
    const mt_pairs *parts[3] = {tr->train, tr->valid, tr->test};
    const char *names[3] = {"train.tsv", "valid.tsv", "test.tsv"};
    for (int i = 0; i < 3; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        MT_TRY(dump_pairs(parts[i], p));
    }
    char p[PATH_MAX];
    MT_TRY(pathf(p, sizeof p, "%s/config.json", dir));
    char *cfg = json_dumps(tr->config, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    if (!cfg) return mt_error(MT_ERR_NOMEM, "dump: out of memory");
    mt_status st = mt_file_write_atomic(p, cfg, strlen(cfg));
    free(cfg);
    MT_TRY(st);
    MT_TRY(pathf(p, sizeof p, "%s/tokenizer.json", dir));
    return mt_tok_save_file(tr->tok, p);
}
