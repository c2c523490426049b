/*
 * api_translate.c — mt_translator_* and mt_translate: a translator shares the model's weights and the
 * absorbed projections read-only, and hands each call a decoding workspace of its pool, so calls on
 * one translator run concurrently.
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

mt_status mt_translate(mt_translator_t *tr, const char *const *texts, size_t n, int beam_size, float length_penalty,
                       float max_len_ratio, char ***out_texts, float **out_scores) {
    if (!tr || (n && !texts) || !out_texts) return mt_error(MT_ERR_INVALID_ARG, "mt_translate: NULL argument");
    if (beam_size < 1 || beam_size > 64)
        return mt_error(MT_ERR_INVALID_ARG, "mt_translate: beam_size %d not in 1..64", beam_size);
    if (!isfinite(length_penalty) || length_penalty < 0)
        return mt_error(MT_ERR_INVALID_ARG, "mt_translate: length_penalty %g must be >= 0", length_penalty);
    if (!isfinite(max_len_ratio)) return mt_error(MT_ERR_INVALID_ARG, "mt_translate: max_len_ratio is not finite");
    mt_decode_ws *ws;
    MT_TRY(mt_translator_take(tr, &ws));
    mt_decode_opts o = {.beam = beam_size, .length_penalty = length_penalty,
                        .max_len_ratio = max_len_ratio > 0 ? max_len_ratio : 1.5f, .cached = 1};
    char **texts_out = NULL;
    float *scores = NULL;
    mt_status st = mt_translate_texts(ws, tr->tf, tr->abs, tr->tok, texts, n, &o, &texts_out, out_scores ? &scores : NULL);
    mt_translator_give(tr, ws);
    if (st != MT_OK) return st;
    *out_texts = texts_out;
    if (out_scores) *out_scores = scores;
    return MT_OK;
}

void mt_translator_free(mt_translator_t *tr) {
    if (!tr) return;
    mt_translator_destroy(tr);
    mt_sys_free(tr);
}
