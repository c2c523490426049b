/*
 * translate.c — texts in, texts out (see translate.h), and the translator's workspace pool.
 */
#include "decode/translate.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

typedef struct text_stream {
    const mt_tokenizer *tok;
    mt_text_stream_fn fn;
    void *user;
} text_stream;

/* mt_decode's stream, turned into text. */
static void on_ids(void *user, int64_t i, const int32_t *ids, int64_t len, int final) {
    text_stream *ts = user;
    mt_buf b = {0};
    if (mt_tok_decode(ts->tok, ids, (size_t)len, &b) == MT_OK && mt_buf_append(&b, "", 1) == MT_OK)
        ts->fn(ts->user, (size_t)i, b.p, final);
    else if (final)
        ts->fn(ts->user, (size_t)i, "", final); /* out of memory: the final call still comes */
    mt_buf_free(&b);
}

mt_status mt_translate_texts(mt_decode_ws *ws, const mt_transformer *m, const mt_absorbed *abs,
                             const mt_tokenizer *tok, const char *const *texts, const char *const *prefixes, size_t n,
                             const mt_decode_opts *opt, mt_text_stream_fn stream, void *stream_user, char ***out_texts,
                             float **out_scores) {
    if (!ws || !m || !tok || (n && !texts) || !opt || !out_texts)
        return mt_error(MT_ERR_INVALID_ARG, "translate: NULL argument");
    size_t n1 = n ? n : 1;
    mt_ids *ids = mt_sys_calloc(n1, sizeof *ids), *pids = mt_sys_calloc(n1, sizeof *pids);
    const int32_t **src = mt_sys_calloc(n1, sizeof *src), **pre = mt_sys_calloc(n1, sizeof *pre);
    int64_t *len = mt_sys_calloc(n1, sizeof *len), *plen = mt_sys_calloc(n1, sizeof *plen);
    mt_status st = (!ids || !pids || !src || !pre || !len || !plen) ? mt_error(MT_ERR_NOMEM, "translate: out of memory")
                                                                    : MT_OK;
    for (size_t i = 0; st == MT_OK && i < n; i++) {
        if (!texts[i]) {
            st = mt_error(MT_ERR_INVALID_ARG, "translate: text %zu is NULL", i);
            break;
        }
        st = mt_tok_encode(tok, texts[i], strlen(texts[i]), &ids[i]);
        if (st != MT_OK) st = mt_error_prefix(st, "translate: sentence %zu: ", i);
        src[i] = ids[i].v;
        len[i] = (int64_t)ids[i].n;
        if (st == MT_OK && prefixes && prefixes[i] && prefixes[i][0]) {
            st = mt_tok_encode(tok, prefixes[i], strlen(prefixes[i]), &pids[i]);
            if (st != MT_OK) st = mt_error_prefix(st, "translate: the target prefix of sentence %zu: ", i);
            pre[i] = pids[i].v;
            plen[i] = (int64_t)pids[i].n;
        }
    }
    mt_decode_opts o = *opt;
    text_stream ts = {tok, stream, stream_user};
    if (stream) {
        o.stream = on_ids;
        o.stream_user = &ts;
    }
    mt_decode_result r = {0};
    if (st == MT_OK) st = mt_decode(ws, m, abs, src, len, prefixes ? pre : NULL, plen, (int64_t)n, &o, &r);
    size_t nh = n * (size_t)o.n_best;
    mt_buf *outs = st == MT_OK ? mt_sys_calloc(nh ? nh : 1, sizeof *outs) : NULL;
    if (st == MT_OK && !outs) st = mt_error(MT_ERR_NOMEM, "translate: out of memory");
    size_t total = 0;
    for (size_t i = 0; st == MT_OK && i < nh; i++) {
        st = mt_tok_decode(tok, r.ids[i], (size_t)r.len[i], &outs[i]);
        total += outs[i].n + 1;
    }
    if (st == MT_OK) {
        /* One block: the pointers, then the strings. */
        char **blk = malloc(sizeof(char *) * nh + total + 1);
        float *sc = out_scores ? malloc(sizeof(float) * (nh ? nh : 1)) : NULL;
        if (!blk || (out_scores && !sc)) {
            free(blk);
            free(sc);
            st = mt_error(MT_ERR_NOMEM, "translate: out of memory");
        } else {
            char *p = (char *)(blk + nh);
            for (size_t i = 0; i < nh; i++) {
                blk[i] = p;
                if (outs[i].n) memcpy(p, outs[i].p, outs[i].n);
                p[outs[i].n] = 0;
                p += outs[i].n + 1;
                if (sc) sc[i] = r.score[i];
            }
            *out_texts = blk;
            if (out_scores) *out_scores = sc;
        }
    }
    for (size_t i = 0; outs && i < nh; i++) mt_buf_free(&outs[i]);
    for (size_t i = 0; i < n; i++) {
        if (ids) mt_ids_free(&ids[i]);
        if (pids) mt_ids_free(&pids[i]);
    }
    mt_sys_free(outs);
    mt_sys_free(ids);
    mt_sys_free(pids);
    mt_sys_free(src);
    mt_sys_free(pre);
    mt_sys_free(len);
    mt_sys_free(plen);
    mt_decode_result_free(&r);
    return st;
}

mt_status mt_translator_init(struct mt_translator *tr, const struct mt_model *model, const mt_transformer *tf,
                             const mt_tokenizer *tok, int n_threads) {
    memset(tr, 0, sizeof *tr);
    tr->model = model;
    tr->tf = tf;
    tr->tok = tok;
    tr->n_threads = n_threads;
    if (pthread_mutex_init(&tr->mu, NULL) != 0) return mt_error(MT_ERR_NOMEM, "translator: cannot create a mutex");
    mt_status st = mt_absorbed_create(tf, &tr->abs);
    if (st != MT_OK) pthread_mutex_destroy(&tr->mu);
    return st;
}

void mt_translator_destroy(struct mt_translator *tr) {
    for (int i = 0; i < tr->n_free; i++) mt_decode_ws_free(tr->free_ws[i]);
    mt_sys_free(tr->free_ws);
    mt_absorbed_free(tr->abs);
    pthread_mutex_destroy(&tr->mu);
}

mt_status mt_translator_take(struct mt_translator *tr, mt_decode_ws **out) {
    pthread_mutex_lock(&tr->mu);
    mt_decode_ws *ws = tr->n_free ? tr->free_ws[--tr->n_free] : NULL;
    pthread_mutex_unlock(&tr->mu);
    if (!ws) MT_TRY(mt_decode_ws_create(tr->tf->device, tr->n_threads, &ws));
    *out = ws;
    return MT_OK;
}

void mt_translator_give(struct mt_translator *tr, mt_decode_ws *ws) {
    pthread_mutex_lock(&tr->mu);
    if (tr->n_free == tr->cap_free) {
        int cap = tr->cap_free ? tr->cap_free * 2 : 4;
        mt_decode_ws **p = mt_sys_realloc(tr->free_ws, sizeof *p * (size_t)cap);
        if (!p) {
            pthread_mutex_unlock(&tr->mu);
            mt_decode_ws_free(ws); /* cannot keep it: a later call makes a new one */
            return;
        }
        tr->free_ws = p;
        tr->cap_free = cap;
    }
    tr->free_ws[tr->n_free++] = ws;
    pthread_mutex_unlock(&tr->mu);
}
