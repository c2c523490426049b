/*
 * api_text.c — the ABI's tokenizer and metric functions over engine/text. The public handle
 * mt_tokenizer_t is engine/text's struct mt_tokenizer itself; results are copied into the caller's
 * buffers (encode/decode) so no library memory crosses the ABI here.
 */
#include <string.h>

#include "core/error.h"
#include "microtensor.h"
#include "text/metrics.h"
#include "text/tokenizer.h"

mt_status mt_tokenizer_load(const char *path, mt_tokenizer_t **out) {
    if (!path || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_tokenizer_load: NULL argument");
    return mt_tok_load_file(path, out);
}

mt_status mt_tokenizer_train(const char *const *corpus_paths, size_t n_paths, const char *options_json,
                             mt_tokenizer_t **out) {
    if (!corpus_paths || !n_paths || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_tokenizer_train: no corpus or NULL out");
    for (size_t i = 0; i < n_paths; i++)
        if (!corpus_paths[i]) return mt_error(MT_ERR_INVALID_ARG, "mt_tokenizer_train: corpus path %zu is NULL", i);
    mt_tok_train_config cfg;
    MT_TRY(mt_tok_train_config_parse(options_json, &cfg));
    return mt_tok_train_corpora(corpus_paths, n_paths, &cfg.tok, &cfg.corpus, out, NULL);
}

mt_status mt_tokenizer_save(const mt_tokenizer_t *tok, const char *path) {
    if (!tok || !path) return mt_error(MT_ERR_INVALID_ARG, "mt_tokenizer_save: NULL argument");
    return mt_tok_save_file(tok, path);
}

mt_status mt_tokenizer_encode(const mt_tokenizer_t *tok, const char *text, int32_t *ids, size_t capacity,
                              size_t *out_n) {
    if (!tok || !text || !out_n || (!ids && capacity))
        return mt_error(MT_ERR_INVALID_ARG, "mt_tokenizer_encode: NULL argument");
    mt_ids v = {0};
    mt_status st = mt_tok_encode(tok, text, strlen(text), &v);
    if (st == MT_OK) {
        *out_n = v.n;
        if (v.n > capacity)
            st = mt_error(MT_ERR_BUFFER_TOO_SMALL, "mt_tokenizer_encode: %zu ids do not fit in %zu", v.n, capacity);
        else if (v.n)
            memcpy(ids, v.v, v.n * sizeof *ids);
    }
    mt_ids_free(&v);
    return st;
}

mt_status mt_tokenizer_decode(const mt_tokenizer_t *tok, const int32_t *ids, size_t n, char *buf, size_t capacity,
                              size_t *out_len) {
    if (!tok || (!ids && n) || !out_len || (!buf && capacity))
        return mt_error(MT_ERR_INVALID_ARG, "mt_tokenizer_decode: NULL argument");
    mt_buf b = {0};
    mt_status st = mt_tok_decode(tok, ids, n, &b);
    if (st == MT_OK) {
        *out_len = b.n;
        if (b.n + 1 > capacity)
            st = mt_error(MT_ERR_BUFFER_TOO_SMALL, "mt_tokenizer_decode: %zu bytes and a NUL do not fit in %zu", b.n, capacity);
        else {
            if (b.n) memcpy(buf, b.p, b.n);
            buf[b.n] = '\0';
        }
    }
    mt_buf_free(&b);
    return st;
}

mt_status mt_tokenizer_vocab_size(const mt_tokenizer_t *tok, size_t *out_size) {
    if (!tok || !out_size) return mt_error(MT_ERR_INVALID_ARG, "mt_tokenizer_vocab_size: NULL argument");
    *out_size = mt_tok_vocab_size(tok);
    return MT_OK;
}

mt_status mt_tokenizer_token_to_id(const mt_tokenizer_t *tok, const char *token, int32_t *out_id) {
    if (!tok || !token || !out_id) return mt_error(MT_ERR_INVALID_ARG, "mt_tokenizer_token_to_id: NULL argument");
    int32_t id = mt_tok_token_to_id(tok, token, strlen(token));
    if (id < 0) return mt_error(MT_ERR_NOT_FOUND, "mt_tokenizer_token_to_id: \"%s\" is not a token", token);
    *out_id = id;
    return MT_OK;
}

void mt_tokenizer_free(mt_tokenizer_t *tok) { mt_tok_free(tok); }

mt_status mt_metric_bleu(const char *const *hyps, const char *const *refs, size_t n, double *out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "mt_metric_bleu: NULL out");
    mt_bleu_score s;
    MT_TRY(mt_bleu_corpus(hyps, refs, n, &s));
    *out = s.score;
    return MT_OK;
}

mt_status mt_metric_chrf(const char *const *hyps, const char *const *refs, size_t n, double *out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "mt_metric_chrf: NULL out");
    double v;
    MT_TRY(mt_chrf_corpus(hyps, refs, n, &v)); /* *out untouched on failure */
    *out = v;
    return MT_OK;
}

mt_status mt_metric_cer(const char *const *hyps, const char *const *refs, size_t n, double *out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "mt_metric_cer: NULL out");
    double v;
    MT_TRY(mt_cer_corpus(hyps, refs, n, &v)); /* *out untouched on failure */
    *out = v;
    return MT_OK;
}

mt_status mt_metric_wer(const char *const *hyps, const char *const *refs, size_t n, double *out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "mt_metric_wer: NULL out");
    double v;
    MT_TRY(mt_wer_corpus(hyps, refs, n, &v)); /* *out untouched on failure */
    *out = v;
    return MT_OK;
}
