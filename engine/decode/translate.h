/*
 * translate.h — translation of texts: tokenize, decode (decode.h), detokenize; and the translator
 * behind mt_translator_* (a model, its absorbed projections, and a pool of decoding workspaces so
 * that any number of threads translate with one translator at once).
 */
#ifndef MT_DECODE_TRANSLATE_H
#define MT_DECODE_TRANSLATE_H

#include <pthread.h>

#include "decode/decode.h"
#include "text/tokenizer.h"

/* Called as a translation grows: the text of sentence i so far (the whole of it, not the new part),
 * final = 1 once it is done (see mt_decode_stream_fn for when). */
typedef void (*mt_text_stream_fn)(void *user, size_t i, const char *text, int final);

/* Translates n texts; prefixes (NULL, or per text NULL / "") are target prefixes the translations
 * start with. *out_texts: one malloc'd block (free() / mt_free releases it) holding the n x n_best
 * pointers and the strings, hypothesis j of text i at i * n_best + j; *out_scores (when out_scores is
 * not NULL): their log-probabilities, malloc'd. stream (optional) replaces opt->stream. Invalid UTF-8
 * is MT_ERR_UTF8 naming the sentence. */
mt_status mt_translate_texts(mt_decode_ws *ws, const mt_transformer *m, const mt_absorbed *abs,
                             const mt_tokenizer *tok, const char *const *texts, const char *const *prefixes, size_t n,
                             const mt_decode_opts *opt, mt_text_stream_fn stream, void *stream_user, char ***out_texts,
                             float **out_scores);

/* The translator: shared read-only state and a pool of workspaces. */
struct mt_translator {
    const struct mt_model *model;
    const mt_transformer *tf;
    const mt_tokenizer *tok;
    mt_absorbed *abs;
    int n_threads;
    pthread_mutex_t mu;
    mt_decode_ws **free_ws; /* idle workspaces */
    int n_free, cap_free;
};

mt_status mt_translator_init(struct mt_translator *tr, const struct mt_model *model, const mt_transformer *tf,
                             const mt_tokenizer *tok, int n_threads);
void mt_translator_destroy(struct mt_translator *tr);
/* Takes an idle workspace (or makes one) and gives it back. */
mt_status mt_translator_take(struct mt_translator *tr, mt_decode_ws **out);
void mt_translator_give(struct mt_translator *tr, mt_decode_ws *ws);

#endif
