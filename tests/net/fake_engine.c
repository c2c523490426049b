/*
 * fake_engine.c — the deterministic fake engine of the server tests (see fake_engine.h).
 */
#include "fake_engine.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic long g_batches, g_sentences, g_max_batch;

void mt_fake_get_stats(mt_fake_stats *out) {
    out->batches = atomic_load(&g_batches);
    out->sentences = atomic_load(&g_sentences);
    out->max_batch = atomic_load(&g_max_batch);
}

static void sleep_ms(double ms) {
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(((long long)(ms * 1e6)) % 1000000000LL)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int set_err(mt_eng_err *err, int st, const char *fmt, const char *arg) {
    if (err) {
        err->status = st;
        snprintf(err->msg, sizeof err->msg, fmt, arg ? arg : "");
    }
    return st;
}

static const char *fake_version(void) { return "fake-1"; }

static const char *fake_status_str(int st) {
    static const char *names[] = {"MT_OK", "MT_ERR_INVALID_ARG", "MT_ERR_SHAPE", "MT_ERR_DTYPE", "MT_ERR_DEVICE",
                                  "MT_ERR_AXIS", "MT_ERR_NOMEM", "MT_ERR_IO", "MT_ERR_FORMAT", "MT_ERR_CHECKSUM",
                                  "MT_ERR_CONFIG", "MT_ERR_UTF8", "MT_ERR_BUFFER_TOO_SMALL", "MT_ERR_NO_DEVICE",
                                  "MT_ERR_CUDA", "MT_ERR_UNSUPPORTED", "MT_ERR_CANCELLED", "MT_ERR_STATE",
                                  "MT_ERR_INTERNAL", "MT_ERR_NCCL", "MT_ERR_NETWORK", "MT_ERR_PERMISSION",
                                  "MT_ERR_NOT_FOUND"};
    return st >= 0 && st < (int)(sizeof names / sizeof names[0]) ? names[st] : "MT_ERR_?";
}

static int fake_device_count(void) {
    const char *e = getenv("MT_FAKE_GPUS");
    return e ? atoi(e) : 0;
}

/* ---- models ---- */

typedef struct fake_model {
    char prefix[128];
    int device;
    int max_len;      /* "max_len=N" in the file: longer sources are logged as truncated, like the engine */
} fake_model;

static void (*g_fake_log)(int level, const char *msg);
static void fake_set_log(void (*fn)(int level, const char *msg)) { g_fake_log = fn; }

int mt_fake_write_model(const char *path, const char *prefix, int load_ms) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "FAKE-MT 1\nprefix=%s\nload_ms=%d\n", prefix ? prefix : "", load_ms);
    return fclose(f) == 0 ? 0 : -1;
}

static int fake_model_load(const char *path, int device, void **model, mt_eng_err *err) {
    FILE *f = fopen(path, "r");
    if (!f) return set_err(err, errno == ENOENT ? MT_ERR_NOT_FOUND : MT_ERR_IO, "%s: cannot open", path);
    char line[256];
    if (!fgets(line, sizeof line, f) || strncmp(line, "FAKE-MT 1", 9) != 0) {
        fclose(f);
        return set_err(err, MT_ERR_FORMAT, "%s: not a model file (bad magic)", path);
    }
    fake_model *m = calloc(1, sizeof *m);
    m->device = device;
    int load_ms = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "prefix=", 7)) snprintf(m->prefix, sizeof m->prefix, "%.120s", line + 7);
        else if (!strncmp(line, "load_ms=", 8)) load_ms = atoi(line + 8);
        else if (!strncmp(line, "max_len=", 8)) m->max_len = atoi(line + 8);
    }
    fclose(f);
    sleep_ms(load_ms);
    *model = m;
    return 0;
}

static void fake_model_free(void *m) { free(m); }

static char *fake_model_info(void *model) {
    fake_model *m = model;
    char buf[256];
    snprintf(buf, sizeof buf, "{\"engine\":\"fake\",\"prefix\":\"%s\",\"device\":%d,\"max_len\":%d}", m->prefix,
             m->device, m->max_len);
    return strdup(buf);
}

static int fake_count_tokens(void *model, const char *text, uint32_t *n, mt_eng_err *err) {
    (void)model;
    (void)err;
    uint32_t c = 0;
    int in = 0;
    for (const char *p = text; *p; p++) {
        if (isspace((unsigned char)*p)) in = 0;
        else if (!in) {
            in = 1;
            c++;
        }
    }
    *n = c;
    return 0;
}

/* ---- translation ---- */

typedef struct fake_tr {
    fake_model *m;
} fake_tr;

static int fake_translator_create(void *model, int n_threads, void **tr, mt_eng_err *err) {
    (void)n_threads;
    (void)err;
    fake_tr *t = calloc(1, sizeof *t);
    t->m = model;
    *tr = t;
    return 0;
}

static void fake_translator_free(void *tr) { free(tr); }

static double env_ms(const char *name, double def) {
    const char *e = getenv(name);
    return e ? atof(e) : def;
}

static int fake_translate(void *tr, const char *const *texts, const char *const *prefixes, size_t n,
                          const mt_xlate_opts *o, mt_translate_stream_fn stream, void *stream_user, char **outs,
                          float *scores, mt_eng_err *err) {
    fake_tr *t = tr;
    double extra = 0;
    uint32_t nb = o->n_best ? o->n_best : 1;
    for (size_t i = 0; i < n; i++) {
        const char *s = strstr(texts[i], "@sleep=");
        if (s && atof(s + 7) > extra) extra = atof(s + 7);
        if (strstr(texts[i], "@fail")) return set_err(err, MT_ERR_INTERNAL, "fake engine: asked to fail%s", "");
    }
    sleep_ms(env_ms("MT_FAKE_BATCH_MS", 2) + env_ms("MT_FAKE_SENTENCE_MS", 0.2) * (double)n + extra);
    for (size_t i = 0; i < n && t->m->max_len; i++) { /* the engine's warning, once per sentence */
        uint32_t ntok = 0;
        fake_count_tokens(t->m, texts[i], &ntok, err);
        char msg[160];
        snprintf(msg, sizeof msg, "decode: sentence %zu has %u tokens, more than max_len - 1 = %d: truncated", i,
                 ntok + 1, t->m->max_len - 1);
        if (ntok + 1 > (uint32_t)t->m->max_len - 1 && g_fake_log) g_fake_log(MT_LOG_WARN, msg);
    }
    /* "<PREFIX><TEXT UPPER-CASED>" (+ "/bN" for beam N, "#j" for hypothesis j > 0); a stream sees the
     * text grow one character at a time with greedy search and one hypothesis, else only the final
     * text, as the engine's. */
    for (size_t i = 0; i < n; i++) {
        const char *pre = prefixes && prefixes[i] ? prefixes[i] : "";
        size_t len = strlen(texts[i]);
        size_t cap = strlen(t->m->prefix) + strlen(pre) + len + 48;
        for (uint32_t j = 0; j < nb; j++) {
            char *out = malloc(cap);
            size_t k = (size_t)snprintf(out, cap, "%s%s<", t->m->prefix, pre);
            for (size_t c = 0; c < len; c++) out[k++] = (char)toupper((unsigned char)texts[i][c]);
            out[k++] = '>';
            out[k] = 0;
            if (o->beam > 1) k += (size_t)snprintf(out + k, cap - k, "/b%u", o->beam);
            if (j > 0) snprintf(out + k, cap - k, "#%u", j);
            outs[i * nb + j] = out;
            scores[i * nb + j] = -(float)len / 10.0f - (float)j;
        }
        if (stream) {
            const char *full = outs[i * nb];
            size_t fl = strlen(full);
            char *part = malloc(fl + 1);
            for (size_t c = 1; o->beam <= 1 && nb == 1 && c < fl; c++) {
                memcpy(part, full, c);
                part[c] = 0;
                stream(stream_user, i, part, 0);
            }
            free(part);
            stream(stream_user, i, full, 1);
        }
    }
    atomic_fetch_add(&g_batches, 1);
    atomic_fetch_add(&g_sentences, (long)n);
    long mx = atomic_load(&g_max_batch);
    while ((long)n > mx && !atomic_compare_exchange_weak(&g_max_batch, &mx, (long)n)) {
    }
    return 0;
}

/* ---- training ---- */

typedef struct fake_trainer {
    pthread_mutex_t mu;
    int steps, step_ms, fail_at;
    char ckdir[PATH_MAX];
    _Atomic int cancel;
    _Atomic int state;
    _Atomic long step;
    double loss;
    char last_ckpt[PATH_MAX * 2];
    char error[256];
    mt_eng_progress_fn fn;
    void *user;
} fake_trainer;

static int json_int(const char *json, const char *key, int def) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(json, pat);
    if (!p) return def;
    p = strchr(p + strlen(pat), ':');
    return p ? atoi(p + 1) : def;
}

static int json_str(const char *json, const char *key, char *out, size_t n) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(json, pat);
    if (!p || !(p = strchr(p + strlen(pat), ':')) || !(p = strchr(p, '"'))) return 0;
    const char *e = strchr(p + 1, '"');
    if (!e || (size_t)(e - p - 1) >= n) return 0;
    memcpy(out, p + 1, (size_t)(e - p - 1));
    out[e - p - 1] = 0;
    return 1;
}

_Thread_local int mt_fake_oom;

static int fake_trainer_create(const char *cfg, const char *root, void **out, mt_eng_err *err) {
    if (!strchr(cfg, '{')) return set_err(err, MT_ERR_FORMAT, "config: line 1 column 1: not a JSON object%s", "");
    if (strstr(cfg, "\"bad_key\"")) return set_err(err, MT_ERR_CONFIG, "config: unknown key '%s'", "bad_key");
    fake_trainer *t = calloc(1, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    t->steps = json_int(cfg, "steps", 20);
    t->step_ms = json_int(cfg, "step_ms", 20);
    t->fail_at = json_int(cfg, "fail_at", 0);
    char dir[PATH_MAX] = ".", joined[PATH_MAX * 2];
    json_str(cfg, "checkpoint_dir", dir, sizeof dir);
    if (dir[0] == '/') snprintf(joined, sizeof joined, "%s", dir);
    else snprintf(joined, sizeof joined, "%s/%s", root ? root : ".", dir);
    if (!realpath(joined, t->ckdir)) {
        free(t);
        return set_err(err, MT_ERR_NOT_FOUND, "checkpoint_dir %s does not exist", dir);
    }
    if (root && strncmp(t->ckdir, root, strlen(root)) != 0) {
        free(t);
        return set_err(err, MT_ERR_PERMISSION, "checkpoint_dir %s is outside the allowed root", dir);
    }
    sleep_ms(json_int(cfg, "create_ms", 0));
    t->state = MT_TRAIN_IDLE;
    if (json_int(cfg, "oom", 0)) mt_fake_oom = 1; /* this thread runs the trainer: no memory from here on */
    *out = t;
    return 0;
}

static int fake_trainer_set_progress(void *tr, mt_eng_progress_fn fn, void *user, mt_eng_err *err) {
    (void)err;
    fake_trainer *t = tr;
    t->fn = fn;
    t->user = user;
    return 0;
}

static int write_ckpt(fake_trainer *t, const char *path, char *written, size_t n) {
    char p[PATH_MAX * 2], prefix[64];
    if (path) snprintf(p, sizeof p, "%s", path);
    else snprintf(p, sizeof p, "%s/ckpt-%ld.mt", t->ckdir, (long)t->step);
    snprintf(prefix, sizeof prefix, "ckpt%ld:", (long)t->step);
    if (mt_fake_write_model(p, prefix, 0) != 0) return MT_ERR_IO;
    snprintf(written, n, "%s", p);
    snprintf(t->last_ckpt, sizeof t->last_ckpt, "%s", p);
    return 0;
}

static int fake_trainer_run(void *tr, mt_eng_err *err) {
    fake_trainer *t = tr;
    if (t->state == MT_TRAIN_RUNNING) return set_err(err, MT_ERR_STATE, "already running%s", "");
    t->state = MT_TRAIN_RUNNING;
    char written[PATH_MAX * 2];
    for (int i = 1; i <= t->steps; i++) {
        if (atomic_load(&t->cancel)) {
            pthread_mutex_lock(&t->mu);
            write_ckpt(t, NULL, written, sizeof written);
            pthread_mutex_unlock(&t->mu);
            t->state = MT_TRAIN_CANCELLED;
            return set_err(err, MT_ERR_CANCELLED, "cancelled; checkpoint %.400s", written);
        }
        sleep_ms(t->step_ms);
        pthread_mutex_lock(&t->mu);
        t->step = i;
        t->loss = 10.0 / (double)(i + 1);
        double loss = t->loss;
        pthread_mutex_unlock(&t->mu);
        if (t->fail_at && i == t->fail_at) {
            snprintf(t->error, sizeof t->error, "fake failure at step %d", i);
            t->state = MT_TRAIN_FAILED;
            return set_err(err, MT_ERR_IO, "%s", t->error);
        }
        if (t->fn) {
            char ev[200];
            snprintf(ev, sizeof ev, "{\"event\":\"step\",\"step\":%d,\"loss\":%.4f,\"lr\":0.001,\"tokens_per_s\":1000}", i,
                     loss);
            t->fn(ev, t->user);
        }
    }
    pthread_mutex_lock(&t->mu);
    write_ckpt(t, NULL, written, sizeof written);
    pthread_mutex_unlock(&t->mu);
    if (t->fn) {
        char ev[PATH_MAX * 2 + 64];
        snprintf(ev, sizeof ev, "{\"event\":\"checkpoint\",\"path\":\"%s\"}", written);
        t->fn(ev, t->user);
    }
    t->state = MT_TRAIN_DONE;
    return 0;
}

static int fake_trainer_cancel(void *tr) {
    fake_trainer *t = tr;
    atomic_store(&t->cancel, 1);
    return 0;
}

static int fake_trainer_save(void *tr, const char *path, char **out_path, mt_eng_err *err) {
    fake_trainer *t = tr;
    if (t->state == MT_TRAIN_FAILED) return set_err(err, MT_ERR_STATE, "the trainer failed%s", "");
    if (t->state == MT_TRAIN_RUNNING) sleep_ms(t->step_ms); /* the next step boundary */
    char written[PATH_MAX * 2];
    pthread_mutex_lock(&t->mu);
    int rc = write_ckpt(t, path, written, sizeof written);
    pthread_mutex_unlock(&t->mu);
    if (rc) return set_err(err, rc, "cannot write %.400s", path ? path : t->ckdir);
    *out_path = strdup(written);
    return 0;
}

static int fake_trainer_status(void *tr, int *state, int64_t *step, double *loss, double *tps) {
    fake_trainer *t = tr;
    pthread_mutex_lock(&t->mu);
    if (state) *state = t->state;
    if (step) *step = t->step;
    if (loss) *loss = t->loss;
    if (tps) *tps = t->state == MT_TRAIN_RUNNING ? 1000.0 : 0.0;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

static char *fake_trainer_status_json(void *tr) {
    fake_trainer *t = tr;
    static const char *names[] = {"idle", "running", "done", "cancelled", "failed"};
    char buf[PATH_MAX * 2 + 512];
    pthread_mutex_lock(&t->mu);
    snprintf(buf, sizeof buf,
             "{\"state\":\"%s\",\"step\":%ld,\"max_steps\":%d,\"loss\":%.4f,\"last_checkpoint\":\"%s\",\"error\":\"%s\"}",
             names[t->state], (long)t->step, t->steps, t->loss, t->last_ckpt, t->error);
    pthread_mutex_unlock(&t->mu);
    return strdup(buf);
}

static void fake_trainer_free(void *tr) {
    fake_trainer *t = tr;
    if (!t) return;
    pthread_mutex_destroy(&t->mu);
    free(t);
}

const mt_engine mt_fake_engine = {
    .name = "fake",
    .version = fake_version,
    .status_str = fake_status_str,
    .device_count = fake_device_count,
    .set_log = fake_set_log,
    .model_load = fake_model_load,
    .model_free = fake_model_free,
    .model_info = fake_model_info,
    .count_tokens = fake_count_tokens,
    .translator_create = fake_translator_create,
    .translator_free = fake_translator_free,
    .translate = fake_translate,
    .trainer_create = fake_trainer_create,
    .trainer_set_progress = fake_trainer_set_progress,
    .trainer_run = fake_trainer_run,
    .trainer_cancel = fake_trainer_cancel,
    .trainer_save = fake_trainer_save,
    .trainer_status = fake_trainer_status,
    .trainer_status_json = fake_trainer_status_json,
    .trainer_free = fake_trainer_free,
};
