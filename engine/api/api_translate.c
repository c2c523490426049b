/*
 * api_translate.c — mt_translator_*, mt_translate and mt_translate_with, and the options handle: a
 * translator shares the model's weights and the absorbed projections read-only, and hands each call
 * a decoding workspace of its pool, so calls on one translator run concurrently. The options handle
 * wraps the engine's mt_decode_opts, so its defaults are mt_decode_opts_default's.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/model_handle.h"
#include "core/alloc.h"
#include "core/error.h"
#include "decode/translate.h"

mt_status mt_translator_create(mt_model_t *model, int n_threads, mt_translator_t **out) {
    if (!model || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_translator_create: NULL argument");
    if (n_threads < 0) return mt_error(MT_ERR_INVALID_ARG, "mt_translator_create: n_threads %d is negative", n_threads);
    if (!model->tok) return mt_error(MT_ERR_INVALID_ARG, "mt_translator_create: the model has no tokenizer");
    struct mt_translator *tr = mt_sys_calloc(1, sizeof *tr);
    if (!tr) return mt_error(MT_ERR_NOMEM, "mt_translator_create: out of memory");
    mt_status st = mt_translator_init(tr, model, model->tf, model->tok, n_threads);
    if (st != MT_OK) {
        mt_sys_free(tr);
        return st;
    }
    *out = tr;
    return MT_OK;
}

/* One call: a workspace from the pool, mt_translate_texts, the workspace back. */
static mt_status translate(mt_translator_t *tr, const mt_decode_opts *o, const char *const *texts,
                           const char *const *prefixes, size_t n, mt_text_stream_fn stream, void *user,
                           char ***out_texts, float **out_scores) {
    mt_decode_ws *ws;
    MT_TRY(mt_translator_take(tr, &ws));
    char **texts_out = NULL;
    float *scores = NULL;
    mt_status st = mt_translate_texts(ws, tr->tf, tr->abs, tr->tok, texts, prefixes, n, o, stream, user, &texts_out,
                                      out_scores ? &scores : NULL);
    mt_translator_give(tr, ws);
    if (st != MT_OK) return st;
    *out_texts = texts_out;
    if (out_scores) *out_scores = scores;
    return MT_OK;
}

mt_status mt_translate(mt_translator_t *tr, const char *const *texts, size_t n, int beam_size, float length_penalty,
                       float max_len_ratio, char ***out_texts, float **out_scores) {
    if (!tr || (n && !texts) || !out_texts) return mt_error(MT_ERR_INVALID_ARG, "mt_translate: NULL argument");
    if (!isfinite(max_len_ratio)) return mt_error(MT_ERR_INVALID_ARG, "mt_translate: max_len_ratio is not finite");
    mt_decode_opts o = mt_decode_opts_default();
    o.beam = beam_size;
    o.length_penalty = length_penalty;
    if (max_len_ratio > 0) o.max_len_ratio = max_len_ratio;
    mt_status st = mt_decode_opts_check(&o);
    if (st != MT_OK) return mt_error_prefix(st, "mt_translate: ");
    return translate(tr, &o, texts, NULL, n, NULL, NULL, out_texts, out_scores);
}

struct mt_translate_options {
    mt_decode_opts o;
    mt_translate_stream_fn stream;
    void *stream_user;
};

mt_status mt_translate_options_create(mt_translate_options_t **out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "mt_translate_options_create: NULL argument");
    mt_translate_options_t *p = mt_sys_calloc(1, sizeof *p);
    if (!p) return mt_error(MT_ERR_NOMEM, "mt_translate_options_create: out of memory");
    p->o = mt_decode_opts_default();
    *out = p;
    return MT_OK;
}

/* Each option: its name, range, whether it is a whole number, and where it lives. */
typedef struct opt_desc {
    const char *name;
    double lo, hi;
    int whole, lo_open;
} opt_desc;

static const opt_desc *opt_find(mt_translate_option k) {
    static const opt_desc d[] = {
        [MT_TRANSLATE_BEAM_SIZE] = {"beam_size", 1, MT_DECODE_MAX_BEAM, 1, 0},
        [MT_TRANSLATE_LENGTH_PENALTY] = {"length_penalty", 0, 1e6, 0, 0},
        [MT_TRANSLATE_MAX_LEN_RATIO] = {"max_len_ratio", 0, 1e6, 0, 1},
        [MT_TRANSLATE_N_BEST] = {"n_best", 1, MT_DECODE_MAX_BEAM, 1, 0},
        [MT_TRANSLATE_SAMPLING_TOPK] = {"sampling_topk", 0, 1 << 30, 1, 0},
        [MT_TRANSLATE_SAMPLING_TOPP] = {"sampling_topp", 0, 1, 0, 1},
        [MT_TRANSLATE_SAMPLING_TEMPERATURE] = {"sampling_temperature", 0, 1e6, 0, 1},
        [MT_TRANSLATE_SEED] = {"seed", 0, 9007199254740992.0, 1, 0},
    };
    if ((int)k < 1 || (size_t)k >= sizeof d / sizeof d[0]) return NULL;
    return &d[k];
}

mt_status mt_translate_options_set(mt_translate_options_t *p, mt_translate_option k, double v) {
    if (!p) return mt_error(MT_ERR_INVALID_ARG, "mt_translate_options_set: NULL options");
    const opt_desc *d = opt_find(k);
    if (!d) return mt_error(MT_ERR_INVALID_ARG, "mt_translate_options_set: unknown option %d", (int)k);
    if (!isfinite(v) || v < d->lo || (d->lo_open && v == d->lo) || v > d->hi || (d->whole && v != floor(v)))
        return mt_error(MT_ERR_INVALID_ARG, "mt_translate_options_set: %s %g is not %s in %s%g, %g]", d->name, v,
                        d->whole ? "a whole number" : "a number", d->lo_open ? "(" : "[", d->lo, d->hi);
    mt_decode_opts *o = &p->o;
    switch (k) {
    case MT_TRANSLATE_BEAM_SIZE: o->beam = (int)v; break;
    case MT_TRANSLATE_LENGTH_PENALTY: o->length_penalty = (float)v; break;
    case MT_TRANSLATE_MAX_LEN_RATIO: o->max_len_ratio = (float)v; break;
    case MT_TRANSLATE_N_BEST: o->n_best = (int)v; break;
    case MT_TRANSLATE_SAMPLING_TOPK: o->sampling_topk = (int)v; break;
    case MT_TRANSLATE_SAMPLING_TOPP: o->sampling_topp = (float)v; break;
    case MT_TRANSLATE_SAMPLING_TEMPERATURE: o->sampling_temperature = (float)v; break;
    case MT_TRANSLATE_SEED: o->seed = (uint64_t)v; break;
    }
    return MT_OK;
}

mt_status mt_translate_options_get(const mt_translate_options_t *p, mt_translate_option k, double *v) {
    if (!p || !v) return mt_error(MT_ERR_INVALID_ARG, "mt_translate_options_get: NULL argument");
    const mt_decode_opts *o = &p->o;
    switch (k) {
    case MT_TRANSLATE_BEAM_SIZE: *v = o->beam; return MT_OK;
    case MT_TRANSLATE_LENGTH_PENALTY: *v = o->length_penalty; return MT_OK;
    case MT_TRANSLATE_MAX_LEN_RATIO: *v = o->max_len_ratio; return MT_OK;
    case MT_TRANSLATE_N_BEST: *v = o->n_best; return MT_OK;
    case MT_TRANSLATE_SAMPLING_TOPK: *v = o->sampling_topk; return MT_OK;
    case MT_TRANSLATE_SAMPLING_TOPP: *v = o->sampling_topp; return MT_OK;
    case MT_TRANSLATE_SAMPLING_TEMPERATURE: *v = o->sampling_temperature; return MT_OK;
    case MT_TRANSLATE_SEED: *v = (double)o->seed; return MT_OK;
    }
    return mt_error(MT_ERR_INVALID_ARG, "mt_translate_options_get: unknown option %d", (int)k);
}

mt_status mt_translate_options_set_stream(mt_translate_options_t *p, mt_translate_stream_fn fn, void *user) {
    if (!p) return mt_error(MT_ERR_INVALID_ARG, "mt_translate_options_set_stream: NULL options");
    p->stream = fn;
    p->stream_user = user;
    return MT_OK;
}

void mt_translate_options_free(mt_translate_options_t *p) { mt_sys_free(p); }

mt_status mt_translate_with(mt_translator_t *tr, const mt_translate_options_t *opts, const char *const *texts,
                            const char *const *target_prefixes, size_t n, char ***out_texts, float **out_scores) {
    if (!tr || (n && !texts) || !out_texts) return mt_error(MT_ERR_INVALID_ARG, "mt_translate_with: NULL argument");
    mt_decode_opts o = opts ? opts->o : mt_decode_opts_default();
    mt_status st = mt_decode_opts_check(&o);
    if (st != MT_OK) return mt_error_prefix(st, "mt_translate_with: ");
    return translate(tr, &o, texts, target_prefixes, n, opts ? opts->stream : NULL,
                     opts ? opts->stream_user : NULL, out_texts, out_scores);
}

void mt_translator_free(mt_translator_t *tr) {
    if (!tr) return;
    mt_translator_destroy(tr);
    mt_sys_free(tr);
}
