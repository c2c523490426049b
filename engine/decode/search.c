/*
 * search.c — greedy, sampling and beam search over a step callback (see search.h). Host-side
 * bookkeeping only: per row its last token, score and history; the model state follows through
 * reorder().
 */
#include "decode/search.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

int mt_search_rows(const mt_decode_opts *o) {
    if (o->beam > 1) return o->beam;
    return o->sampling_topk != 1 ? o->n_best : 1;
}

/* ---- hypotheses ---------------------------------------------------------------------------------- */

static mt_status hyp_set(mt_hyp *h, const int32_t *ids, int64_t len, double score, double norm) {
    int32_t *p = mt_sys_realloc(h->ids, sizeof(int32_t) * (size_t)(len ? len : 1));
    if (!p) return mt_error(MT_ERR_NOMEM, "decode: out of memory");
    h->ids = p;
    if (len) memcpy(p, ids, sizeof(int32_t) * (size_t)len);
    h->len = len;
    h->score = score;
    h->norm = norm;
    return MT_OK;
}

mt_status mt_search_add_hyp(mt_search_sent *se, const int32_t *ids, int64_t len, double score, double norm) {
    if (se->nhyps < se->cap) return hyp_set(&se->hyps[se->nhyps++], ids, len, score, norm);
    int worst = 0;
    for (int f = 1; f < se->nhyps; f++)
        if (se->hyps[f].norm < se->hyps[worst].norm) worst = f;
    return norm > se->hyps[worst].norm ? hyp_set(&se->hyps[worst], ids, len, score, norm) : MT_OK;
}

void mt_search_sent_done(const mt_decode_opts *o, mt_search_sent *se) {
    /* Best first; stable, so of equal hypotheses the one found first leads. */
    for (int i = 1; i < se->nhyps; i++)
        for (int j = i; j > 0 && se->hyps[j].norm > se->hyps[j - 1].norm; j--) {
            mt_hyp t = se->hyps[j];
            se->hyps[j] = se->hyps[j - 1];
            se->hyps[j - 1] = t;
        }
    if (o->stream)
        o->stream(o->stream_user, se->index, se->nhyps ? se->hyps[0].ids : NULL, se->nhyps ? se->hyps[0].len : 0, 1);
}

static int64_t max_out(const mt_search_sent *s, int64_t B) {
    int64_t tcap = 1;
    for (int64_t b = 0; b < B; b++)
        if (s[b].maxo > tcap) tcap = s[b].maxo;
    return tcap;
}

/* ---- candidates ---------------------------------------------------------------------------------- */

typedef struct cand {
    float score;
    int32_t row, tok;
} cand;

static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->row != y->row) return x->row < y->row ? -1 : 1;
    return x->tok < y->tok ? -1 : (x->tok > y->tok);
}

/* The k best tokens of row lp (V) into top (sorted, descending; ties to the lower id), their scores
 * offset by base. */
static int topk_row(const float *lp, int64_t V, int k, cand *top, int32_t row, double base) {
    int n = 0;
    for (int64_t v = 0; v < V; v++) {
        if (n == k && (v & 7) == 0 && v + 8 <= V) { /* a block of 8 with nothing above the k-th: skipped */
            float thr = top[k - 1].score;
            int any = 0;
            for (int u = 0; u < 8; u++) any |= lp[v + u] > thr;
            if (!any) {
                v += 7;
                continue;
            }
        }
        float x = lp[v];
        if (x == -INFINITY) continue;
        if (n == k && x <= top[n - 1].score) continue;
        int i = n < k ? n++ : k - 1;
        while (i > 0 && top[i - 1].score < x) {
            top[i] = top[i - 1];
            i--;
        }
        top[i].score = x;
        top[i].tok = (int32_t)v;
        top[i].row = row;
    }
    for (int i = 0; i < n; i++) top[i].score = (float)(base + top[i].score);
    return n;
}

/* ---- sampling ------------------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The generator of sample q of sentence i: a function of (seed, i, q) only, so a sentence draws the
 * same tokens whatever it is batched with. */
static uint64_t rng_init(uint64_t seed, int64_t i, int q) {
    uint64_t s = seed;
    uint64_t a = splitmix64(&s);
    s = a ^ ((uint64_t)i * 0x100000001B3ull + (uint64_t)q);
    return splitmix64(&s);
}

/* One token drawn from row lp (V): temperature, then top-k (0: all), then top-p. buf holds V. */
static int32_t sample_row(const float *lp, int64_t V, const mt_decode_opts *o, uint64_t *rng, cand *buf) {
    int n = 0;
    if (o->sampling_topk > 0 && o->sampling_topk < V) { /* a k of the vocabulary or more is all of it */
        n = topk_row(lp, V, o->sampling_topk, buf, 0, 0.0);
    } else {
        for (int64_t v = 0; v < V; v++)
            if (lp[v] != -INFINITY) buf[n++] = (cand){lp[v], 0, (int32_t)v};
        if (o->sampling_topp < 1.0f) qsort(buf, (size_t)n, sizeof *buf, cand_cmp);
    }
    if (n == 0) return -1;
    float mx = buf[0].score;
    for (int i = 1; i < n; i++)
        if (buf[i].score > mx) mx = buf[i].score;
    double total = 0;
    for (int i = 0; i < n; i++) {
        double w = exp((double)(buf[i].score - mx) / (double)o->sampling_temperature);
        buf[i].score = (float)w;
        total += w;
    }
    if (o->sampling_topp < 1.0f) { /* buf is sorted best first: keep the smallest head holding top-p */
        double keep = 0, need = (double)o->sampling_topp * total;
        int m = 0;
        while (m < n && keep < need) keep += buf[m++].score;
        n = m > 0 ? m : 1;
        total = keep > 0 ? keep : buf[0].score;
    }
    double u = (double)(splitmix64(rng) >> 11) * 0x1.0p-53 * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += buf[i].score;
        if (u < acc) return buf[i].tok;
    }
    return buf[n - 1].tok;
}

/* ---- greedy and sampling: every row on its own ---------------------------------------------------- */

typedef struct rows {
    int32_t *tok, *parent, *sent, *pick;  /* (R0) */
    float *lp;                            /* (R0) log-probability of the picked token */
    double *score;                        /* (R0) */
    int32_t *hist;                        /* (R0, tcap) tokens so far */
    uint64_t *rng;                        /* (R0) sampling */
    float *host;                          /* (R0, V) log-probabilities on the host, when needed */
    cand *buf;                            /* (V) sampling scratch */
} rows;

static void rows_free(rows *r) {
    mt_sys_free(r->tok);
    mt_sys_free(r->parent);
    mt_sys_free(r->sent);
    mt_sys_free(r->pick);
    mt_sys_free(r->lp);
    mt_sys_free(r->score);
    mt_sys_free(r->hist);
    mt_sys_free(r->rng);
    mt_sys_free(r->host);
    mt_sys_free(r->buf);
}

/* k rows per sentence of s (B), each at [SOS] with score 0 and its own generator. */
static mt_status rows_init(rows *r, const mt_search_model *m, const mt_decode_opts *o, const mt_search_sent *s,
                           int64_t B, int k, int sample, int64_t tcap) {
    int64_t R = B * k, V = m->V;
    int need_host = sample; /* the log-probabilities come to the host to sample or to force a prefix */
    for (int64_t b = 0; b < B; b++) need_host |= s[b].prefix_len > 0;
    r->tok = mt_sys_malloc(sizeof(int32_t) * (size_t)R);
    r->parent = mt_sys_malloc(sizeof(int32_t) * (size_t)R);
    r->sent = mt_sys_malloc(sizeof(int32_t) * (size_t)R);
    r->pick = mt_sys_malloc(sizeof(int32_t) * (size_t)R);
    r->lp = mt_sys_malloc(sizeof(float) * (size_t)R);
    r->score = mt_sys_malloc(sizeof(double) * (size_t)R);
    r->hist = mt_sys_malloc(sizeof(int32_t) * (size_t)(R * tcap));
    r->rng = mt_sys_malloc(sizeof(uint64_t) * (size_t)R);
    r->host = need_host ? mt_sys_malloc(sizeof(float) * (size_t)(R * V)) : NULL;
    r->buf = sample ? mt_sys_malloc(sizeof(cand) * (size_t)V) : NULL;
    if (!r->tok || !r->parent || !r->sent || !r->pick || !r->lp || !r->score || !r->hist || !r->rng ||
        (need_host && !r->host) || (sample && !r->buf))
        return mt_error(MT_ERR_NOMEM, "decode: out of memory");
    for (int64_t j = 0; j < R; j++) {
        r->tok[j] = m->sos;
        r->score[j] = 0.0;
        r->sent[j] = (int32_t)(j / k);
        r->rng[j] = rng_init(o->seed, s[j / k].index, (int)(j % k));
    }
    return MT_OK;
}

/* Fills r->pick and r->lp for the R rows: the forced prefix token, a sample, or the argmax. */
static mt_status pick_tokens(const mt_search_model *m, const mt_decode_opts *o, const mt_search_sent *s, rows *r,
                             mt_tensor *logp, int64_t R, int64_t t, int sample) {
    mt_context *ctx = m->ctx;
    int64_t V = m->V;
    int forced = 0;
    for (int64_t j = 0; j < R && !forced; j++) forced = t < s[r->sent[j]].prefix_len;
    if (ctx->status != MT_OK || !logp) return ctx->status != MT_OK ? ctx->status : MT_ERR_INTERNAL;
    if (!sample && !forced) { /* the argmax stays on the device: only R ids and R values come back */
        mt_tensor *am = mt_argmax(ctx, logp, -1, 0);
        mt_tensor *mx = mt_max(ctx, logp, (const int[]){-1}, 1, 0);
        if (ctx->status != MT_OK || !am || !mx) return ctx->status != MT_OK ? ctx->status : MT_ERR_INTERNAL;
        MT_TRY(mt_copy_to_host(ctx, am, r->pick, sizeof(int32_t) * (size_t)R));
        return mt_copy_to_host(ctx, mx, r->lp, sizeof(float) * (size_t)R);
    }
    MT_TRY(mt_copy_to_host(ctx, logp, r->host, sizeof(float) * (size_t)(R * V)));
    for (int64_t j = 0; j < R; j++) {
        const mt_search_sent *se = &s[r->sent[j]];
        const float *row = r->host + j * V;
        int32_t tok;
        if (t < se->prefix_len) {
            tok = se->prefix[t];
        } else if (sample) {
            tok = sample_row(row, V, o, &r->rng[j], r->buf);
        } else {
            tok = 0;
            for (int64_t v = 1; v < V; v++)
                if (row[v] > row[tok]) tok = (int32_t)v;
        }
        if (tok < 0 || tok >= V) tok = m->eos; /* nothing left to draw from */
        r->pick[j] = tok;
        r->lp[j] = row[tok];
    }
    return MT_OK;
}

/* Greedy (sample = 0) or sampling: k rows per sentence, each extended by its own token. */
static mt_status rows_search(const mt_search_model *m, const mt_decode_opts *o, mt_search_sent *s, int64_t B, int k,
                             int sample, int64_t *steps) {
    int64_t R = B * k, tcap = max_out(s, B);
    rows r = {0};
    mt_status st = rows_init(&r, m, o, s, B, k, sample, tcap);
    for (int64_t t = 0; st == MT_OK && R > 0; t++) {
        st = mt_context_reset(m->ctx);
        if (st != MT_OK) break;
        mt_tensor *logp = m->step(m->user, r.tok, t);
        (*steps)++;
        st = pick_tokens(m, o, s, &r, logp, R, t, sample);
        int64_t n = 0;
        for (int64_t j = 0; st == MT_OK && j < R; j++) {
            mt_search_sent *se = &s[r.sent[j]];
            int32_t tok = r.pick[j];
            double score = r.score[j] + r.lp[j];
            int32_t *h = r.hist + j * tcap;
            if (tok != m->eos) h[t] = tok;
            if (tok == m->eos || t + 1 >= se->maxo) {
                st = mt_search_add_hyp(se, h, tok == m->eos ? t : t + 1, score, score);
                if (st == MT_OK && se->nhyps == se->cap) mt_search_sent_done(o, se);
                continue;
            }
            r.parent[n] = (int32_t)j;
            r.tok[n] = tok;
            r.score[n] = score;
            r.sent[n] = r.sent[j];
            r.rng[n] = r.rng[j];
            if (n != j) memcpy(r.hist + n * tcap, h, sizeof(int32_t) * (size_t)(t + 1));
            if (o->stream && k == 1) o->stream(o->stream_user, se->index, r.hist + n * tcap, t + 1, 0);
            n++;
        }
        if (st == MT_OK && n > 0) st = m->reorder(m->user, r.parent, n, t + 1, n != R);
        if (st == MT_OK && m->ctx->status != MT_OK) st = m->ctx->status;
        R = n;
    }
    rows_free(&r);
    return st;
}

/* ---- beam search --------------------------------------------------------------------------------- */

static double gnmt_lp(int64_t len, float alpha) {
    return alpha == 0.0f ? 1.0 : pow((5.0 + (double)len) / 6.0, (double)alpha);
}

typedef struct beams {
    int k;
    int64_t tcap;
    int32_t *tok, *ntok, *parents;   /* (R0) */
    double *score, *nscore;          /* (R0) */
    int32_t *hist, *nhist;           /* (R0, tcap) */
    int64_t *act, *nact;             /* (B) the sentences still searched, in row order */
    cand *cands;                     /* (k * 2k + 1) */
    float *host;                     /* (R0, V) */
    const float *lp;                 /* this step's (R, V): host, or the CPU tensor itself */
} beams;

static void beams_free(beams *b) {
    mt_sys_free(b->tok);
    mt_sys_free(b->ntok);
    mt_sys_free(b->parents);
    mt_sys_free(b->score);
    mt_sys_free(b->nscore);
    mt_sys_free(b->hist);
    mt_sys_free(b->nhist);
    mt_sys_free(b->act);
    mt_sys_free(b->nact);
    mt_sys_free(b->cands);
    mt_sys_free(b->host);
}

/* The candidates of sentence j's rows at step t, best first: each live row's 2k best tokens, or its
 * forced prefix token. */
static int beam_candidates(const mt_search_model *m, const beams *b, const mt_search_sent *se, int64_t j, int64_t t) {
    int k = b->k, nc = 0;
    for (int q = 0; q < k; q++) {
        int64_t r = j * k + q;
        if (b->score[r] == -INFINITY) continue;
        const float *row = b->lp + r * m->V;
        if (t < se->prefix_len) {
            float x = row[se->prefix[t]];
            if (x != -INFINITY) b->cands[nc++] = (cand){(float)(b->score[r] + x), (int32_t)r, se->prefix[t]};
        } else {
            nc += topk_row(row, m->V, 2 * k, b->cands + nc, (int32_t)r, b->score[r]);
        }
    }
    qsort(b->cands, (size_t)nc, sizeof *b->cands, cand_cmp);
    return nc;
}

/* Retires the [EOS] candidates of sentence se and takes up to k live ones into the next rows from
 * n_next; returns how many live ones it took (or -1 on error, *st set). */
static int beam_extend(const mt_search_model *m, const mt_decode_opts *o, beams *b, mt_search_sent *se, int nc,
                       int64_t n_next, int64_t t, mt_status *st) {
    int k = b->k, nlive = 0;
    for (int ci = 0; ci < nc && nlive < k; ci++) {
        cand *cd = &b->cands[ci];
        if (cd->tok == m->eos) {
            if (se->nhyps < k) {
                *st = hyp_set(&se->hyps[se->nhyps++], b->hist + cd->row * b->tcap, t, cd->score,
                              cd->score / gnmt_lp(t + 1, o->length_penalty));
                if (*st != MT_OK) return -1;
            }
            continue;
        }
        int64_t nr = n_next + nlive;
        b->parents[nr] = cd->row;
        b->nscore[nr] = cd->score;
        b->ntok[nr] = cd->tok;
        memcpy(b->nhist + nr * b->tcap, b->hist + cd->row * b->tcap, sizeof(int32_t) * (size_t)t);
        b->nhist[nr * b->tcap + t] = cd->tok;
        nlive++;
    }
    return nlive;
}

/* k rows per sentence of s (B), only the first live (the others are copies to fill the beam). */
static mt_status beams_init(beams *b, const mt_search_model *m, const mt_search_sent *s, int64_t B, int k) {
    int64_t R = B * k;
    b->k = k;
    b->tcap = max_out(s, B);
    b->tok = mt_sys_malloc(sizeof(int32_t) * (size_t)R);
    b->ntok = mt_sys_malloc(sizeof(int32_t) * (size_t)R);
    b->parents = mt_sys_malloc(sizeof(int32_t) * (size_t)R);
    b->score = mt_sys_malloc(sizeof(double) * (size_t)R);
    b->nscore = mt_sys_malloc(sizeof(double) * (size_t)R);
    b->hist = mt_sys_malloc(sizeof(int32_t) * (size_t)(R * b->tcap));
    b->nhist = mt_sys_malloc(sizeof(int32_t) * (size_t)(R * b->tcap));
    b->act = mt_sys_malloc(sizeof(int64_t) * (size_t)B);
    b->nact = mt_sys_malloc(sizeof(int64_t) * (size_t)B);
    b->cands = mt_sys_malloc(sizeof(cand) * (size_t)(k * 2 * k + 1));
    b->host = mt_sys_malloc(sizeof(float) * (size_t)(R * m->V));
    if (!b->tok || !b->ntok || !b->parents || !b->score || !b->nscore || !b->hist || !b->nhist || !b->act ||
        !b->nact || !b->cands || !b->host)
        return mt_error(MT_ERR_NOMEM, "decode: out of memory");
    for (int64_t r = 0; r < R; r++) {
        b->tok[r] = m->sos;
        b->score[r] = (r % k == 0) ? 0.0 : -INFINITY;
    }
    for (int64_t j = 0; j < B; j++) b->act[j] = j;
    return MT_OK;
}

/* Sentence se can stop before beam hypotheses have finished: its n_best best finished ones already
 * rank at least as high as any live one can still come to. A live hypothesis's log-probability only
 * falls as it grows and its length penalty only grows (alpha >= 0), so the most it can reach is its
 * score now (best_live: the best live row's) over the penalty of the longest output allowed. Exact:
 * the search returns what it would have returned going on (CTranslate2 and OpenNMT stop once the best
 * candidate is [EOS], which is the same at length penalty 0 and an approximation above it). */
int mt_search_exhaustive = 0;

static int beam_settled(const mt_decode_opts *o, const mt_search_sent *se, double best_live) {
    if (mt_search_exhaustive || se->nhyps < o->n_best) return 0;
    double bound = best_live / gnmt_lp(se->maxo, o->length_penalty);
    int above = 0;
    for (int i = 0; i < se->nhyps; i++) above += se->hyps[i].norm >= bound;
    return above >= o->n_best;
}

/* Sentence se is done at step t: at the length limit (or with nothing finished) its nlive live
 * hypotheses from row n_next compete too (without [EOS]); then the stream is told. */
static mt_status beam_finish(const mt_decode_opts *o, beams *b, mt_search_sent *se, int64_t n_next, int nlive,
                             int64_t t, int last) {
    mt_status st = MT_OK;
    if (last || se->nhyps == 0)
        for (int q = 0; q < nlive && st == MT_OK; q++) {
            int64_t nr = n_next + q;
            st = mt_search_add_hyp(se, b->nhist + nr * b->tcap, t + 1, b->nscore[nr],
                                   b->nscore[nr] / gnmt_lp(t + 1, o->length_penalty));
        }
    if (st == MT_OK) mt_search_sent_done(o, se);
    return st;
}

static mt_status beam_search(const mt_search_model *m, const mt_decode_opts *o, mt_search_sent *s, int64_t B,
                             int64_t *steps) {
    int k = o->beam;
    int64_t R = B * k, V = m->V;
    beams b = {0};
    mt_status st = beams_init(&b, m, s, B, k);
    int64_t nact_n = B;
    for (int64_t t = 0; st == MT_OK && nact_n > 0; t++) {
        st = mt_context_reset(m->ctx);
        if (st != MT_OK) break;
        mt_tensor *logp = m->step(m->user, b.tok, t);
        (*steps)++;
        if (m->ctx->status != MT_OK || !logp) {
            st = m->ctx->status != MT_OK ? m->ctx->status : MT_ERR_INTERNAL;
            break;
        }
        b.lp = b.host;
        if (logp->device == MT_DEVICE_CPU) b.lp = mt_f32(logp); /* no copy of R x V floats */
        else st = mt_copy_to_host(m->ctx, logp, b.host, sizeof(float) * (size_t)(R * V));
        int64_t n_next = 0, nact_next = 0;
        for (int64_t j = 0; st == MT_OK && j < R / k; j++) {
            mt_search_sent *se = &s[b.act[j]];
            int nlive = beam_extend(m, o, &b, se, beam_candidates(m, &b, se, j, t), n_next, t, &st);
            if (nlive < 0) break;
            int last = t + 1 >= se->maxo;
            if (se->nhyps >= k || last || nlive == 0 || beam_settled(o, se, b.nscore[n_next])) {
                st = beam_finish(o, &b, se, n_next, nlive, t, last);
                continue;
            }
            for (int q = nlive; q < k; q++) { /* too few candidates: pad with dead copies */
                int64_t nr = n_next + q;
                b.parents[nr] = b.parents[n_next];
                b.nscore[nr] = -INFINITY;
                b.ntok[nr] = b.ntok[n_next];
                memcpy(b.nhist + nr * b.tcap, b.nhist + n_next * b.tcap, sizeof(int32_t) * (size_t)(t + 1));
            }
            n_next += k;
            b.nact[nact_next++] = b.act[j];
        }
        if (st != MT_OK) break;
        memcpy(b.score, b.nscore, sizeof(double) * (size_t)n_next);
        memcpy(b.tok, b.ntok, sizeof(int32_t) * (size_t)n_next);
        int32_t *th = b.hist;
        b.hist = b.nhist;
        b.nhist = th;
        int changed = nact_next != nact_n;
        memcpy(b.act, b.nact, sizeof(int64_t) * (size_t)nact_next);
        nact_n = nact_next;
        R = n_next;
        if (n_next > 0) st = m->reorder(m->user, b.parents, n_next, t + 1, changed);
        if (st == MT_OK && m->ctx->status != MT_OK) st = m->ctx->status;
    }
    beams_free(&b);
    return st;
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

mt_status mt_search(const mt_search_model *m, const mt_decode_opts *o, mt_search_sent *s, int64_t B, int64_t *steps) {
    if (o->beam > 1) return beam_search(m, o, s, B, steps);
    if (o->sampling_topk != 1) return rows_search(m, o, s, B, o->n_best, 1, steps);
    return rows_search(m, o, s, B, 1, 0, steps);
}
