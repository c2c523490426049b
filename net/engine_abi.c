/*
 * engine_abi.c — the server's engine interface (engine.h) over abi/microtensor.h: the only file of
 * mt-server that calls the engine. Linked into mt-server only (the test servers use a fake).
 */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(mt_status st, mt_eng_err *err) {
    if (err) {
        err->status = (int)st;
        snprintf(err->msg, sizeof err->msg, "%s", mt_last_error());
        if (!err->msg[0]) snprintf(err->msg, sizeof err->msg, "%s", mt_status_str(st));
    }
    return (int)st;
}

static const char *abi_version(void) { return mt_version_string(); }
static const char *abi_status_str(int st) { return mt_status_str((mt_status)st); }

static int abi_device_count(void) {
    int n = 0;
    return mt_device_count(&n) == MT_OK ? n : 0;
}

static void (*g_log_fn)(int, const char *);
static void log_bridge(mt_log_level level, const char *message, void *user) {
    (void)user;
    if (g_log_fn) g_log_fn((int)level, message);
}
static void abi_set_log(void (*fn)(int level, const char *msg)) {
    g_log_fn = fn;
    mt_log_set_callback(fn ? log_bridge : NULL, NULL);
}

static int abi_model_load(const char *path, int device, void **model, mt_eng_err *err) {
    mt_model_t *m = NULL;
    mt_status st = mt_model_load(path, device, &m);
    if (st != MT_OK) return fail(st, err);
    *model = m;
    return 0;
}

static void abi_model_free(void *model) { mt_model_free(model); }

static char *abi_model_info(void *model) {
    char *json = NULL;
    if (mt_model_info_json(model, &json) != MT_OK || !json) return NULL;
    char *copy = strdup(json);
    mt_free(json);
    return copy;
}

static int abi_count_tokens(void *model, const char *text, uint32_t *n, mt_eng_err *err) {
    const mt_tokenizer_t *tok = mt_model_tokenizer(model);
    if (!tok) return fail(MT_ERR_INVALID_ARG, err);
    int32_t ids[512];
    size_t count = 0;
    mt_status st = mt_tokenizer_encode(tok, text, ids, sizeof ids / sizeof ids[0], &count);
    if (st != MT_OK && st != MT_ERR_BUFFER_TOO_SMALL) return fail(st, err);
    *n = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
    return 0;
}

static int abi_translator_create(void *model, int n_threads, void **tr, mt_eng_err *err) {
    mt_translator_t *t = NULL;
    mt_status st = mt_translator_create(model, n_threads, &t);
    if (st != MT_OK) return fail(st, err);
    *tr = t;
    return 0;
}

static void abi_translator_free(void *tr) { mt_translator_free(tr); }

static int abi_translate(void *tr, const char *const *texts, const char *const *prefixes, size_t n,
                         const mt_xlate_opts *o, mt_translate_stream_fn stream, void *stream_user, char **outs,
                         float *scores, mt_eng_err *err) {
    char **res = NULL;
    float *sc = NULL;
    mt_translate_options_t *opts = NULL;
    mt_status st = mt_translate_options_create(&opts);
    if (st == MT_OK) st = mt_translate_options_set(opts, MT_TRANSLATE_BEAM_SIZE, o->beam ? o->beam : 1);
    if (st == MT_OK && o->length_penalty >= 0)
        st = mt_translate_options_set(opts, MT_TRANSLATE_LENGTH_PENALTY, o->length_penalty);
    if (st == MT_OK && o->max_len_ratio > 0)
        st = mt_translate_options_set(opts, MT_TRANSLATE_MAX_LEN_RATIO, o->max_len_ratio);
    if (st == MT_OK) st = mt_translate_options_set(opts, MT_TRANSLATE_N_BEST, o->n_best ? o->n_best : 1);
    if (st == MT_OK) st = mt_translate_options_set_stream(opts, stream, stream_user);
    if (st == MT_OK) st = mt_translate_with(tr, opts, texts, prefixes, n, &res, &sc);
    mt_translate_options_free(opts);
    if (st != MT_OK) return fail(st, err);
    size_t nh = n * (o->n_best ? o->n_best : 1);
    for (size_t i = 0; i < nh; i++) {
        outs[i] = strdup(res[i] ? res[i] : "");
        scores[i] = sc ? sc[i] : 0.0f;
        if (!outs[i]) {
            for (size_t j = 0; j < i; j++) free(outs[j]);
            mt_free(res);
            mt_free(sc);
            return fail(MT_ERR_NOMEM, err);
        }
    }
    mt_free(res);
    mt_free(sc);
    return 0;
}

static int abi_trainer_create(const char *config_json, const char *root, void **tr, mt_eng_err *err) {
    mt_trainer_t *t = NULL;
    mt_status st = mt_trainer_create(config_json, root, &t);
    if (st != MT_OK) return fail(st, err);
    *tr = t;
    return 0;
}

static int abi_trainer_set_progress(void *tr, mt_eng_progress_fn fn, void *user, mt_eng_err *err) {
    mt_status st = mt_trainer_set_progress_callback(tr, fn, user);
    return st == MT_OK ? 0 : fail(st, err);
}

static int abi_trainer_run(void *tr, mt_eng_err *err) {
    mt_status st = mt_trainer_run(tr);
    return st == MT_OK ? 0 : fail(st, err);
}

static int abi_trainer_cancel(void *tr) { return (int)mt_trainer_cancel(tr); }

static int abi_trainer_save(void *tr, const char *path, char **out_path, mt_eng_err *err) {
    char *p = NULL;
    mt_status st = mt_trainer_save_checkpoint(tr, path, &p);
    if (st != MT_OK) return fail(st, err);
    *out_path = p ? strdup(p) : NULL;
    mt_free(p);
    return 0;
}

static int abi_trainer_status(void *tr, int *state, int64_t *step, double *loss, double *tps) {
    mt_train_state s = MT_TRAIN_IDLE;
    mt_status st = mt_trainer_status(tr, &s, step, loss, tps);
    if (state) *state = (int)s;
    return (int)st;
}

static char *abi_trainer_status_json(void *tr) {
    char *json = NULL;
    if (mt_trainer_status_json(tr, &json) != MT_OK || !json) return NULL;
    char *copy = strdup(json);
    mt_free(json);
    return copy;
}

static void abi_trainer_free(void *tr) { mt_trainer_free(tr); }

const mt_engine mt_engine_abi = {
    .name = "microtensor",
    .version = abi_version,
    .status_str = abi_status_str,
    .device_count = abi_device_count,
    .set_log = abi_set_log,
    .model_load = abi_model_load,
    .model_free = abi_model_free,
    .model_info = abi_model_info,
    .count_tokens = abi_count_tokens,
    .translator_create = abi_translator_create,
    .translator_free = abi_translator_free,
    .translate = abi_translate,
    .trainer_create = abi_trainer_create,
    .trainer_set_progress = abi_trainer_set_progress,
    .trainer_run = abi_trainer_run,
    .trainer_cancel = abi_trainer_cancel,
    .trainer_save = abi_trainer_save,
    .trainer_status = abi_trainer_status,
    .trainer_status_json = abi_trainer_status_json,
    .trainer_free = abi_trainer_free,
};
