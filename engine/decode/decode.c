/*
 * decode.c — mt_decode (see decode.h): the options and their one default, validation, sentences
 * sorted by length and decoded in chunks (state.c runs the model, search.c the search), and the
 * results gathered into one allocation.
 */
#include "decode/decode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "decode/search.h"
#include "decode/state.h"

/* At most this many rows (sentences x rows per sentence) are decoded together; longer inputs are chunked. */
#define MAX_ROWS 128

mt_decode_opts mt_decode_opts_default(void) {
    return (mt_decode_opts){.beam = 1,
                            .n_best = 1,
                            .length_penalty = 0.6f,
                            .max_len_ratio = 1.5f,
                            .sampling_topk = 1,
                            .sampling_topp = 1.0f,
                            .sampling_temperature = 1.0f,
                            .seed = 0,
                            .cached = 1};
}

mt_status mt_decode_opts_check(const mt_decode_opts *o) {
    if (o->beam < 1 || o->beam > MT_DECODE_MAX_BEAM)
        return mt_error(MT_ERR_INVALID_ARG, "decode: beam size %d not in 1..%d", o->beam, MT_DECODE_MAX_BEAM);
    if (o->sampling_topk < 0)
        return mt_error(MT_ERR_INVALID_ARG, "decode: sampling_topk %d is negative", o->sampling_topk);
    if (o->sampling_topk != 1 && o->beam > 1)
        return mt_error(MT_ERR_INVALID_ARG, "decode: sampling (sampling_topk %d) needs beam size 1, not %d",
                        o->sampling_topk, o->beam);
    int most = o->beam > 1 ? o->beam : o->sampling_topk != 1 ? MT_DECODE_MAX_BEAM : 1;
    if (o->n_best < 1 || o->n_best > most)
        return mt_error(MT_ERR_INVALID_ARG, "decode: n_best %d not in 1..%d (%s)", o->n_best, most,
                        o->beam > 1 ? "the beam size" : o->sampling_topk != 1 ? "samples" : "greedy search");
    if (!isfinite(o->length_penalty) || o->length_penalty < 0)
        return mt_error(MT_ERR_INVALID_ARG, "decode: length_penalty %g must be >= 0", (double)o->length_penalty);
    if (!isfinite(o->max_len_ratio) || o->max_len_ratio <= 0)
        return mt_error(MT_ERR_INVALID_ARG, "decode: max_len_ratio %g must be > 0", (double)o->max_len_ratio);
    if (!(o->sampling_topp > 0 && o->sampling_topp <= 1))
        return mt_error(MT_ERR_INVALID_ARG, "decode: sampling_topp %g not in (0, 1]", (double)o->sampling_topp);
    if (!isfinite(o->sampling_temperature) || o->sampling_temperature <= 0)
        return mt_error(MT_ERR_INVALID_ARG, "decode: sampling_temperature %g must be > 0",
                        (double)o->sampling_temperature);
    return MT_OK;
}

/* Decodes the B sentences idx (sorted by length) of the caller's arrays as one chunk. */
static mt_status decode_chunk(mt_decode_ws *ws, const mt_transformer *m, const mt_absorbed *abs,
                              const int32_t *const *src, const int64_t *slen, const int64_t *idx, int64_t B,
                              const mt_decode_opts *o, mt_search_sent *sents, int64_t *steps) {
    const mt_model_config *c = &m->cfg;
    int k = mt_search_rows(o);
    int64_t S = 0, tcap = 0;
    int32_t eos = (int32_t)c->eos_id, pad = (int32_t)c->pad_id;
    mt_search_sent *cs = mt_sys_malloc(sizeof *cs * (size_t)B);
    if (!cs) return mt_error(MT_ERR_NOMEM, "decode: out of memory");
    for (int64_t b = 0; b < B; b++) {
        int64_t L = slen[idx[b]];
        if (L + 1 > S) S = L + 1;
        mt_search_sent *se = &sents[idx[b]];
        se->maxo = (int64_t)floor((double)o->max_len_ratio * (double)L) + MT_DECODE_LEN_EXTRA;
        if (se->maxo < se->prefix_len + 1) se->maxo = se->prefix_len + 1;
        if (se->maxo > c->max_len - 1) se->maxo = c->max_len - 1;
        if (se->maxo < 1) se->maxo = 1;
        if (se->maxo > tcap) tcap = se->maxo;
        cs[b] = *se;
    }
    int32_t *srcm = mt_sys_malloc(sizeof(int32_t) * (size_t)(B * S));
    mt_dstate ds;
    mt_status st = srcm ? mt_dstate_init(&ds, ws, m, abs, o->cached, B * k, tcap + 1)
                        : mt_error(MT_ERR_NOMEM, "decode: out of memory");
    if (st == MT_OK) {
        for (int64_t b = 0; b < B; b++) {
            int64_t L = slen[idx[b]];
            memcpy(srcm + b * S, src[idx[b]], sizeof(int32_t) * (size_t)L);
            srcm[b * S + L] = eos;
            for (int64_t j = L + 1; j < S; j++) srcm[b * S + j] = pad;
        }
        st = mt_dstate_encode(&ds, srcm, B, S, k);
        mt_search_model sm = {.user = &ds, .ctx = ws->ctx, .step = mt_dstate_step, .reorder = mt_dstate_reorder,
                              .V = c->vocab_size, .sos = (int32_t)c->sos_id, .eos = eos};
        if (st == MT_OK) st = mt_search(&sm, o, cs, B, steps);
        for (int64_t b = 0; b < B; b++) sents[idx[b]] = cs[b];
        mt_dstate_free(&ds);
    }
    if (st == MT_OK && ws->ctx->status != MT_OK) st = ws->ctx->status;
    mt_sys_free(srcm);
    mt_sys_free(cs);
    return st;
}

void mt_decode_result_free(mt_decode_result *r) {
    if (!r) return;
    mt_sys_free(r->ids);
    memset(r, 0, sizeof *r);
}

static int by_len_desc(const void *a, const void *b) {
    const int64_t *x = a, *y = b; /* pairs (len, index) */
    if (x[0] != y[0]) return x[0] > y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : (x[1] > y[1]);
}

mt_status mt_decode(mt_decode_ws *ws, const mt_transformer *m, const mt_absorbed *abs, const int32_t *const *src,
                    const int64_t *src_len, const int32_t *const *prefix, const int64_t *prefix_len, int64_t n,
                    const mt_decode_opts *opt, mt_decode_result *out) {
    if (!ws || !m || (n && (!src || !src_len)) || !opt || !out || (prefix && !prefix_len))
        return mt_error(MT_ERR_INVALID_ARG, "decode: NULL argument");
    MT_TRY(mt_decode_opts_check(opt));
    if (opt->cached && m->cfg.attention == MT_ATTN_MLA && !abs)
        return mt_error(MT_ERR_INVALID_ARG, "decode: cached MLA decoding needs the absorbed projections");
    memset(out, 0, sizeof *out);
    const mt_model_config *c = &m->cfg;
    int64_t limit = c->max_len - 1, n1 = n ? n : 1;
    int cap = mt_search_rows(opt); /* the hypotheses a sentence can finish with */
    mt_search_sent *sents = mt_sys_calloc((size_t)n1, sizeof *sents);
    int64_t *slen = mt_sys_malloc(sizeof(int64_t) * (size_t)n1);
    int64_t *order = mt_sys_malloc(sizeof(int64_t) * 2 * (size_t)n1);
    int64_t *idx = mt_sys_malloc(sizeof(int64_t) * (size_t)n1);
    mt_hyp *hyps = mt_sys_calloc((size_t)(n1 * cap), sizeof(mt_hyp));
    mt_status st = MT_OK;
    if (!sents || !slen || !order || !idx || !hyps) st = mt_error(MT_ERR_NOMEM, "decode: out of memory");
    int64_t nz = 0;
    for (int64_t i = 0; st == MT_OK && i < n; i++) {
        mt_search_sent *se = &sents[i];
        se->index = i;
        se->hyps = hyps + i * cap;
        se->cap = cap;
        if (prefix && prefix[i]) {
            se->prefix = prefix[i];
            se->prefix_len = prefix_len[i];
        }
        slen[i] = src_len[i];
        if (slen[i] > limit) {
            mt_log(MT_LOG_WARN, "decode: sentence %lld has %lld tokens, more than max_len - 1 = %lld: truncated",
                   (long long)i, (long long)slen[i], (long long)limit);
            slen[i] = limit;
        }
        if (se->prefix_len < 0 || se->prefix_len >= limit) {
            st = mt_error(MT_ERR_INVALID_ARG, "decode: sentence %lld: a target prefix of %lld tokens, not in 0..%lld",
                          (long long)i, (long long)se->prefix_len, (long long)(limit - 1));
            break;
        }
        for (int64_t j = 0; st == MT_OK && j < slen[i]; j++)
            if (src[i][j] < 0 || src[i][j] >= c->vocab_size)
                st = mt_error(MT_ERR_INVALID_ARG, "decode: sentence %lld: id %d at %lld is outside the vocabulary",
                              (long long)i, src[i][j], (long long)j);
        for (int64_t j = 0; st == MT_OK && j < se->prefix_len; j++)
            if (se->prefix[j] < 0 || se->prefix[j] >= c->vocab_size)
                st = mt_error(MT_ERR_INVALID_ARG,
                              "decode: sentence %lld: prefix id %d at %lld is outside the vocabulary", (long long)i,
                              se->prefix[j], (long long)j);
        if (st != MT_OK) break;
        if (slen[i] == 0) continue; /* nothing to translate: the prefix alone, without the model */
        order[2 * nz] = slen[i];
        order[2 * nz + 1] = i;
        nz++;
    }
    if (st == MT_OK) qsort(order, (size_t)nz, 2 * sizeof(int64_t), by_len_desc);
    for (int64_t i = 0; i < nz; i++) idx[i] = order[2 * i + 1];
    int64_t per = MAX_ROWS / mt_search_rows(opt) > 0 ? MAX_ROWS / mt_search_rows(opt) : 1;
    for (int64_t i = 0; st == MT_OK && i < nz; i += per)
        st = decode_chunk(ws, m, abs, src, slen, idx + i, nz - i < per ? nz - i : per, opt, sents, &out->steps);
    for (int64_t i = 0; st == MT_OK && i < n; i++)
        if (slen[i] == 0) {
            mt_search_sent *se = &sents[i];
            st = mt_search_add_hyp(se, se->prefix, se->prefix_len, 0.0, 0.0);
            if (st == MT_OK) mt_search_sent_done(opt, se);
        }
    int64_t nb = opt->n_best;
    if (st == MT_OK) {
        /* One allocation: pointers, lengths, scores, then the ids. */
        size_t total = 0, nh = (size_t)(n * nb);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < nb && j < sents[i].nhyps; j++) total += (size_t)sents[i].hyps[j].len;
        size_t head = ((sizeof(int32_t *) + sizeof(int64_t) + sizeof(float)) * nh + 15) & ~(size_t)15;
        char *blk = mt_sys_malloc(head + sizeof(int32_t) * (total ? total : 1));
        if (!blk) {
            st = mt_error(MT_ERR_NOMEM, "decode: out of memory");
        } else {
            out->n = n;
            out->n_best = nb;
            out->ids = (int32_t **)blk;
            out->len = (int64_t *)(blk + sizeof(int32_t *) * nh);
            out->score = (float *)(blk + (sizeof(int32_t *) + sizeof(int64_t)) * nh);
            int32_t *p = (int32_t *)(blk + head);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < nb; j++) {
                    const mt_hyp *h = j < sents[i].nhyps ? &sents[i].hyps[j] : NULL;
                    int64_t k = i * nb + j;
                    out->ids[k] = p;
                    out->len[k] = h ? h->len : 0;
                    out->score[k] = h ? (float)h->score : -INFINITY;
                    if (h && h->len) memcpy(p, h->ids, sizeof(int32_t) * (size_t)h->len);
                    p += out->len[k];
                }
        }
    }
    for (int64_t i = 0; hyps && i < n1 * cap; i++) mt_sys_free(hyps[i].ids);
    mt_sys_free(hyps);
    mt_sys_free(sents);
    mt_sys_free(slen);
    mt_sys_free(order);
    mt_sys_free(idx);
    return st;
}
