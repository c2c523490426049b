/*
 * bench_decode.c — `mt-bench decode`: greedy decoding throughput (generated tokens per second) of the
 * engine (MLA latent cache with absorbed projections) against PyTorch decoding loops on the same
 * weights (tests/reference/bench.py): the loop the original MicroTensor used (the whole prefix
 * recomputed every step, target >= 5x) and a KV-cached loop (keys and values of every head cached);
 * the engine's own uncached path for reference; and the decoder's cache bytes per target token of
 * MLA against the MHA variant at the same d_model.
 *
 * A batch of --batch sentences (default 32) of --len source tokens (random ids; random weights never
 * pick [EOS] in practice, so every sentence runs to its limit of 1.5 x len + 10 tokens and every
 * implementation does the same work). Engine and PyTorch alternate for --rounds rounds; the best
 * round of each is kept (the machine may be shared).
 *
 *   mt-bench decode [--threads 2] [--batch 32] [--len 20] [--rounds 2] [--no-torch] [--nice N]
 *
 * --int8 [--model M.mt] [--split DIR [--max-sents N]]: the dynamic int8 quantization figures instead:
 * the model (trained, or random weights) and its int8 version (as mt-quantize writes it): file size
 * ratio; tokens/s of int8 and f32 at batch --batch and at batch 1 (one sentence per call, --batch
 * sentences), alternating rounds, best of each, with each one's spread over the rounds; PyTorch's
 * KV-cached loop in f32 and after quantize_dynamic (the original design's way) on the same batch; and,
 * with --split (the directory of `mt-train --dump-split`), BLEU and chrF of both models on its held-out
 * test corpora test.0.tsv, test.1.tsv (beam 4, length penalty 0.6; the first --max-sents of each).
 *
 * --ct2 --model M.mt --split DIR [--sents N]: the engine against CTranslate2 (pip `ctranslate2` in the
 * bench venv) on the same trained MHA model (cross_rope false: what CTranslate2 can express), converted
 * by tests/reference/ct2_export.py, and the same real sentences (N of the held-out test corpora of
 * DIR, default 128): greedy and beam 4, batch --batch and 1, f32 and int8 (the engine's
 * int8 model as mt-quantize writes it, CTranslate2's compute_type int8 of the f32 model), --threads
 * each (CTranslate2: intra_threads, inter_threads 1; with more than one thread also intra_threads 1,
 * and the faster of its two is the anchor). Both under the engine's rules: [PAD] and [SOS]
 * never generated, beam hypotheses ranked by log probability (length penalty 0 on both sides, which
 * rank differently otherwise), the engine's output limit. Per cell: tokens/s of each (generated
 * tokens, [EOS] included; best of --rounds alternating rounds), the ratio, and the share of sentences
 * whose outputs are identical. The sentences come in chunks of --batch of one source length each, so
 * that CTranslate2's one output limit per call is each sentence's limit in the engine. OpenMP's wait
 * policy is what the caller's environment says (printed), so by default each library's own: on a quiet
 * machine spinning workers are what a user of either gets (measured here with both: passive waiting
 * made CTranslate2's f32 batch-1 decoding 6.7x slower and the engine's batch-32 one 1.26x slower); on a
 * machine shared with other busy processes spinning workers lose most of their time, and
 * OMP_WAIT_POLICY=passive there gives figures that mean something.
 */
#include <omp.h>

#include "bench.h"
#include "bench_model.h"
#include "decode/decode.h"
#include "format/modelfile.h"
#include "microtensor.h"
#include "text/buf.h"
#include "text/metrics.h"
#include "text/tokenizer.h"

#include <math.h>

#include <sys/stat.h>

typedef struct dec_opts {
    int threads, batch, len, rounds, torch;
    int int8, max_sents;        /* --int8: the quantization figures; --max-sents per test corpus */
    int ct2, sents;             /* --ct2: against CTranslate2 on --sents real sentences */
    const char *model, *split;  /* --model: a trained .mt (default: random weights); --split: mt-train's --dump-split dir */
} dec_opts;

typedef struct dec_arg {
    const char *model;
    const dec_opts *o;
    int cached;
    int per_call; /* sentences per mt_decode call (0: the whole batch at once) */
} dec_arg;

/* A forked child's model, packed as mt_model_load packs it for mt-translate, mt-server and the bindings,
 * with its absorbed projections and a decoding workspace. 0, or 1 with the error printed. */
static int engine_open(const char *model, int threads, mt_modelfile *mf, mt_absorbed **abs, mt_decode_ws **ws) {
    if (mt_modelfile_load(model, MT_DEVICE_CPU, 0, mf) != MT_OK || mt_transformer_pack(mf->model) != MT_OK ||
        mt_absorbed_create(mf->model, abs) != MT_OK || mt_decode_ws_create(MT_DEVICE_CPU, threads, ws) != MT_OK) {
        fprintf(stderr, "engine: %s\n", mt_last_error());
        return 1;
    }
    return 0;
}

static int engine_decode(void *argp, int fd) {
    dec_arg *a = argp;
    omp_set_num_threads(a->o->threads);
    mt_modelfile mf;
    mt_absorbed *abs = NULL;
    mt_decode_ws *ws;
    if (engine_open(a->model, a->o->threads, &mf, &abs, &ws) != 0) return 1;
    int B = a->o->batch, L = a->o->len;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(B * L));
    const int32_t **src = malloc(sizeof(int32_t *) * (size_t)B);
    int64_t *len = malloc(sizeof(int64_t) * (size_t)B);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < B * L; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        ids[i] = 4 + (int32_t)(s % (uint64_t)(mf.model->cfg.vocab_size - 4));
    }
    for (int b = 0; b < B; b++) {
        src[b] = ids + b * L;
        len[b] = L;
    }
    mt_decode_opts o = mt_decode_opts_default();
    o.cached = a->cached;
    mt_decode_result r;
    if (mt_decode(ws, mf.model, abs, src, len, NULL, NULL, 2, &o, &r) != MT_OK) return 1; /* warm-up */
    mt_decode_result_free(&r);
    double best = 1e30;
    int64_t tokens = 0;
    int per = a->per_call > 0 && a->per_call < B ? a->per_call : B;
    int64_t maxo = (int64_t)(o.max_len_ratio * L) + MT_DECODE_LEN_EXTRA;
    if (maxo > mf.model->cfg.max_len - 1) maxo = mf.model->cfg.max_len - 1;
    for (int rep = 0; rep < 2; rep++) {
        double dt = 0;
        tokens = 0;
        for (int b0 = 0; b0 < B; b0 += per) {
            int n = B - b0 < per ? B - b0 : per;
            double t0 = mt_bench_now();
            if (mt_decode(ws, mf.model, abs, src + b0, len + b0, NULL, NULL, n, &o, &r) != MT_OK) {
                fprintf(stderr, "engine: %s\n", mt_last_error());
                return 1;
            }
            dt += mt_bench_now() - t0;
            for (int b = 0; b < n; b++) tokens += r.len[b] + (r.len[b] < maxo ? 1 : 0); /* [EOS] is generated too */
            mt_decode_result_free(&r);
        }
        if (dt < best) best = dt;
    }
    dprintf(fd, "{\"tokens\": %lld, \"seconds\": %.6f, \"tokens_per_s\": %.3f}\n", (long long)tokens, best,
            (double)tokens / best);
    return 0;
}

static int write_src(const char *path, const mt_model_config *c, int B, int L) {
    int S = L + 1;
    int32_t *src = malloc(sizeof(int32_t) * (size_t)(B * S)), *len = malloc(sizeof(int32_t) * (size_t)B);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < L; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            src[b * S + j] = 4 + (int32_t)(s % (uint64_t)(c->vocab_size - 4));
        }
        src[b * S + L] = (int32_t)c->eos_id;
        len[b] = L;
    }
    mt_st_tensor t[2] = {
        {.name = "src", .dtype = MT_DTYPE_I32, .ndim = 2, .shape = {B, S}, .data = src,
         .bytes = sizeof(int32_t) * (size_t)(B * S)},
        {.name = "src_len", .dtype = MT_DTYPE_I32, .ndim = 1, .shape = {B}, .data = len, .bytes = sizeof(int32_t) * (size_t)B},
    };
    mt_status st = mt_st_write(path, t, 2, NULL, 0, 0);
    free(src);
    free(len);
    return st == MT_OK ? 0 : -1;
}

/* ---- --int8: dynamic int8 quantization against f32 ---------------------------------------------- */

static long long file_bytes(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : 0;
}

/* f32 -> int8 model file, as mt-quantize does. */
static int write_int8(const char *in, const char *out) {
    mt_modelfile mf;
    mt_context *ctx = NULL;
    mt_status st = mt_modelfile_load(in, MT_DEVICE_CPU, 0, &mf);
    if (st != MT_OK) return -1;
    st = mt_transformer_quantize(mf.model);
    if (st == MT_OK) st = mt_context_init(&ctx, MT_DEVICE_CPU, 1);
    if (st == MT_OK) st = mt_modelfile_save(out, mf.model, ctx, mf.tokenizer_json, NULL);
    mt_context_free(ctx);
    mt_modelfile_clear(&mf);
    return st == MT_OK ? 0 : -1;
}

/* BLEU and chrF of a model on one test corpus (TSV source \t reference), beam 4. */
static int score_corpus(const char *model, const char *tsv, int threads, int max_sents, double *bleu, double *chrf,
                        int *n_out) {
    FILE *f = fopen(tsv, "r");
    if (!f) return -1;
    char **src = NULL, **ref = NULL, *line = NULL;
    size_t cap = 0;
    int n = 0, ncap = 0;
    while (getline(&line, &cap, f) > 0 && (max_sents <= 0 || n < max_sents)) {
        line[strcspn(line, "\r\n")] = 0;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        if (n == ncap) {
            ncap = ncap ? 2 * ncap : 1024;
            src = realloc(src, sizeof *src * (size_t)ncap);
            ref = realloc(ref, sizeof *ref * (size_t)ncap);
        }
        src[n] = strdup(line);
        ref[n] = strdup(tab + 1);
        n++;
    }
    free(line);
    fclose(f);
    mt_model_t *m = NULL;
    mt_translator_t *tr = NULL;
    mt_bleu_stats bs = {0};
    mt_chrf_stats cs = {0};
    int rc = mt_model_load(model, MT_DEVICE_CPU, &m) == MT_OK && mt_translator_create(m, threads, &tr) == MT_OK ? 0 : -1;
    for (int i = 0; rc == 0 && i < n; i += 64) {
        size_t k = (size_t)(n - i < 64 ? n - i : 64);
        char **out;
        if (mt_translate(tr, (const char *const *)src + i, k, 4, 0.6f, 0, &out, NULL) != MT_OK) {
            rc = -1;
            break;
        }
        for (size_t j = 0; j < k; j++) {
            mt_bleu_add(&bs, out[j], ref[i + (int)j]);
            mt_chrf_add(&cs, out[j], ref[i + (int)j]);
        }
        mt_free(out);
    }
    if (rc != 0) fprintf(stderr, "mt-bench decode: scoring %s with %s: %s\n", tsv, model, mt_last_error());
    mt_translator_free(tr);
    mt_model_free(m);
    for (int i = 0; i < n; i++) free(src[i]), free(ref[i]);
    free(src);
    free(ref);
    mt_bleu_score b;
    mt_bleu_compute(&bs, &b);
    *bleu = b.score;
    *chrf = mt_chrf_compute(&cs);
    *n_out = n;
    return rc;
}

/* The figures of the issue: file size, tokens/s int8 vs f32 at batch 32 and 1 (alternating rounds, best
 * of each), PyTorch's quantize_dynamic alongside, BLEU/chrF of both on the held-out test corpora. */
static int decode_int8(const dec_opts *o, const char *f32, const char *i8, const char *srcp, const char *thr) {
    long long s32 = file_bytes(f32), s8 = file_bytes(i8);
    const char *py = o->torch ? mtb_python() : NULL;
    char script[700];
    mtb_script(script, sizeof script, "bench.py");
    printf("mt-bench decode --int8: greedy, latent cache, batch %d and 1 x %d source tokens, %d threads, model %s\n",
           o->batch, o->len, o->threads, o->model ? o->model : "(random weights)");
    mtb_print_conditions();
    printf("  model file: f32 %lld bytes, int8 %lld bytes: %.3f of the f32 size (%.2fx smaller)\n", s32, s8,
           (double)s8 / (double)s32, (double)s32 / (double)s8);
    enum { K = 6 };
    const char *names[K] = {"engine f32, batch B", "engine int8, batch B", "engine f32, batch 1",
                            "engine int8, batch 1", "PyTorch f32 KV cache, B", "PyTorch quantize_dynamic, B"};
    double best[K] = {0}, all[K][16] = {{0}};
    int rounds = o->rounds > 16 ? 16 : o->rounds;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < K; k++) {
            mtb_child ch;
            if (k < 4) {
                dec_arg a = {k % 2 ? i8 : f32, o, 1, k < 2 ? 0 : 1};
                ch = mtb_fork(engine_decode, &a);
            } else {
                if (!py) continue;
                char *args[] = {(char *)py, script, "decode", "--model", (char *)f32, "--src", (char *)srcp,
                                "--threads", (char *)thr, "--mode", "kvcache", k == 5 ? "--int8" : NULL, NULL};
                ch = mtb_exec(args);
            }
            if (ch.status != 0 || !ch.result) {
                fprintf(stderr, "mt-bench decode: the %s run failed\n", names[k]);
                return 1;
            }
            double tps = mtb_num(&ch, "tokens_per_s");
            printf("  round %d: %-30s %8.1f tokens/s  (%.0f tokens in %.3f s, peak RSS %.0f MB)\n", r + 1, names[k],
                   tps, mtb_num(&ch, "tokens"), mtb_num(&ch, "seconds"), ch.maxrss_mb);
            all[k][r] = tps;
            if (tps > best[k]) best[k] = tps;
            json_decref(ch.result);
        }
    }
    printf("\n  %-32s %12s %12s\n", "", "tokens/s", "round spread");
    for (int k = 0; k < K; k++) {
        if (best[k] <= 0) continue;
        double lo = best[k];
        for (int r = 0; r < rounds; r++) if (all[k][r] > 0 && all[k][r] < lo) lo = all[k][r];
        printf("  %-32s %12.1f %11.0f%%\n", names[k], best[k], 100.0 * (best[k] - lo) / best[k]);
    }
    double r32 = best[1] / best[0], r1 = best[3] / best[2], rt = best[4] > 0 ? best[5] / best[4] : 0;
    printf("  int8 / f32: batch %d %.2fx, batch 1 %.2fx (goal >= 1.8x)", o->batch, r32, r1);
    if (py) printf("; PyTorch quantize_dynamic / f32: %.2fx; engine int8 / PyTorch int8: %.2fx", rt, best[1] / best[5]);
    printf("\n");
    double q[2][2][2] = {{{0}}}; /* corpus, f32/int8, bleu/chrf */
    int nq = 0, ns[2] = {0, 0};
    if (o->split) {
        for (int c = 0; c < 2; c++) {
            char tsv[800];
            snprintf(tsv, sizeof tsv, "%s/test.%d.tsv", o->split, c);
            if (access(tsv, R_OK) != 0) break;
            for (int v = 0; v < 2; v++)
                if (score_corpus(v ? i8 : f32, tsv, o->threads, o->max_sents, &q[c][v][0], &q[c][v][1], &ns[c]) != 0)
                    return 1;
            printf("  %s (%d sentences, beam 4): BLEU f32 %.2f int8 %.2f (%+.2f), chrF f32 %.2f int8 %.2f (%+.2f)\n",
                   tsv, ns[c], q[c][0][0], q[c][1][0], q[c][1][0] - q[c][0][0], q[c][0][1], q[c][1][1],
                   q[c][1][1] - q[c][0][1]);
            nq++;
        }
        printf("  (goal: BLEU loss <= 0.3)\n");
    }
    printf("{\"bench\": \"decode_int8\", \"threads\": %d, \"batch\": %d, \"size_ratio\": %.4f, "
           "\"f32_tokens_per_s\": %.1f, \"int8_tokens_per_s\": %.1f, \"f32_b1_tokens_per_s\": %.1f, "
           "\"int8_b1_tokens_per_s\": %.1f, \"ratio_batch\": %.3f, \"ratio_b1\": %.3f, "
           "\"torch_f32_tokens_per_s\": %.1f, \"torch_int8_tokens_per_s\": %.1f",
           o->threads, o->batch, (double)s8 / (double)s32, best[0], best[1], best[2], best[3], r32, r1, best[4],
           best[5]);
    for (int c = 0; c < nq; c++)
        printf(", \"test%d\": {\"sentences\": %d, \"bleu_f32\": %.2f, \"bleu_int8\": %.2f, \"chrf_f32\": %.2f, "
               "\"chrf_int8\": %.2f}", c, ns[c], q[c][0][0], q[c][1][0], q[c][0][1], q[c][1][1]);
    printf("}\n");
    return 0;
}

/* ---- --ct2: the engine against CTranslate2 ------------------------------------------------------ */

/* The real sentences of the benchmark: token ids (without [EOS]) of sources of the held-out test
 * corpora of split (test.0.tsv, test.1.tsv), as the model's tokenizer encodes them, in chunks of batch
 * sentences of one source length each (CTranslate2 has one output limit per call, the engine one per
 * sentence: equal lengths give both the same limits). The chunks go round the lengths that have a
 * whole chunk left, the most frequent first, taking sentences in file order, until n sentences. */
typedef struct ct2_sents {
    int n;
    int32_t **ids;
    int64_t *len;
} ct2_sents;

static void ct2_free_sents(ct2_sents *ss) {
    for (int i = 0; i < ss->n; i++) mt_sys_free(ss->ids[i]);
    free(ss->ids);
    free(ss->len);
    ss->n = 0;
}

static int ct2_read_sents(const char *split, const char *tok_json, int64_t max_len, int n, int batch, ct2_sents *out) {
    mt_tokenizer *tok;
    if (mt_tok_load_json(tok_json, strlen(tok_json), "model tokenizer", &tok) != MT_OK) return -1;
    ct2_sents pool = {0};
    int cap = 0, rc = 0;
    for (int c = 0; c < 2 && rc == 0; c++) {
        char tsv[800];
        snprintf(tsv, sizeof tsv, "%s/test.%d.tsv", split, c);
        FILE *f = fopen(tsv, "r");
        if (!f) {
            fprintf(stderr, "mt-bench decode --ct2: cannot open %s: %s\n", tsv, strerror(errno));
            rc = -1;
            break;
        }
        char *line = NULL;
        size_t lcap = 0;
        while (getline(&line, &lcap, f) > 0) {
            char *tab = strchr(line, '\t');
            if (!tab) continue;
            mt_ids v = {0};
            if (mt_tok_encode(tok, line, (size_t)(tab - line), &v) != MT_OK) {
                rc = -1;
                break;
            }
            if (v.n == 0 || (int64_t)v.n > max_len - 1) { /* empty or over the limit: not a clean pair */
                mt_ids_free(&v);
                continue;
            }
            if (pool.n == cap) {
                cap = cap ? 2 * cap : 1024;
                pool.ids = realloc(pool.ids, sizeof *pool.ids * (size_t)cap);
                pool.len = realloc(pool.len, sizeof *pool.len * (size_t)cap);
            }
            pool.ids[pool.n] = v.v;
            pool.len[pool.n++] = (int64_t)v.n;
        }
        free(line);
        fclose(f);
    }
    mt_tok_free(tok);
    n = (n + batch - 1) / batch * batch;
    int64_t *left = calloc((size_t)max_len, sizeof *left), *next = calloc((size_t)max_len, sizeof *next);
    for (int i = 0; i < pool.n; i++) left[pool.len[i]]++;
    out->ids = calloc((size_t)n, sizeof *out->ids);
    out->len = calloc((size_t)n, sizeof *out->len);
    out->n = 0;
    int64_t *round = calloc((size_t)max_len, sizeof *round); /* what each length had when the round began */
    while (rc == 0 && out->n < n) {
        int took = 0;
        memcpy(round, left, sizeof *round * (size_t)max_len);
        for (int64_t pass = pool.n; pass >= batch && out->n < n; pass--) /* most frequent lengths first */
            for (int64_t L = 1; L < max_len && out->n < n; L++) {
                if (round[L] != pass) continue;
                for (int k = 0; k < batch; k++) {
                    while (pool.len[next[L]] != L) next[L]++;
                    out->ids[out->n] = pool.ids[next[L]];
                    pool.ids[next[L]++] = NULL;
                    out->len[out->n++] = L;
                }
                left[L] -= batch;
                took = 1;
            }
        if (!took) {
            fprintf(stderr, "mt-bench decode --ct2: %s has %d sentences in chunks of %d of one length, %d asked\n",
                    split, out->n, batch, n);
            rc = -1;
        }
    }
    for (int i = 0; i < pool.n; i++) mt_sys_free(pool.ids[i]);
    free(pool.ids);
    free(pool.len);
    free(left);
    free(next);
    free(round);
    return rc;
}

/* The sources for bench.py ct2: "src" (n, S) padded with [PAD], "src_len" (n). */
static int ct2_write_src(const char *path, const ct2_sents *ss, int32_t pad) {
    int64_t S = 1;
    for (int i = 0; i < ss->n; i++) if (ss->len[i] > S) S = ss->len[i];
    int32_t *src = malloc(sizeof(int32_t) * (size_t)(ss->n * S)), *len = malloc(sizeof(int32_t) * (size_t)ss->n);
    for (int i = 0; i < ss->n; i++) {
        for (int64_t j = 0; j < S; j++) src[i * S + j] = j < ss->len[i] ? ss->ids[i][j] : pad;
        len[i] = (int32_t)ss->len[i];
    }
    mt_st_tensor t[2] = {
        {.name = "src", .dtype = MT_DTYPE_I32, .ndim = 2, .shape = {ss->n, S}, .data = src,
         .bytes = sizeof(int32_t) * (size_t)(ss->n * S)},
        {.name = "src_len", .dtype = MT_DTYPE_I32, .ndim = 1, .shape = {ss->n}, .data = len,
         .bytes = sizeof(int32_t) * (size_t)ss->n},
    };
    mt_status st = mt_st_write(path, t, 2, NULL, 0, 0);
    free(src);
    free(len);
    return st == MT_OK ? 0 : -1;
}

typedef struct ct2_arg {
    const char *model, *out; /* the .mt file (f32 or int8); where the output ids go */
    const dec_opts *o;
    const ct2_sents *ss;
    int beam, batch;
} ct2_arg;

/* The engine on the real sentences, a.batch per mt_decode call: best of 2 repetitions after a warm-up;
 * writes the output ids (one line per sentence) to a.out. */
static int engine_decode_real(void *argp, int fd) {
    ct2_arg *a = argp;
    omp_set_num_threads(a->o->threads);
    mt_modelfile mf;
    mt_absorbed *abs = NULL;
    mt_decode_ws *ws;
    if (engine_open(a->model, a->o->threads, &mf, &abs, &ws) != 0) return 1;
    const ct2_sents *ss = a->ss;
    mt_decode_opts o = mt_decode_opts_default();
    o.beam = a->beam;
    o.length_penalty = 0.0f;
    mt_decode_result r;
    if (mt_decode(ws, mf.model, abs, (const int32_t *const *)ss->ids, ss->len, NULL, NULL, 2, &o, &r) != MT_OK) {
        fprintf(stderr, "engine: %s\n", mt_last_error());
        return 1;
    }
    mt_decode_result_free(&r);
    int32_t **out = calloc((size_t)ss->n, sizeof *out);
    int64_t *olen = calloc((size_t)ss->n, sizeof *olen);
    double best = 1e30;
    int64_t tokens = 0;
    for (int rep = 0; rep < 2; rep++) {
        double dt = 0;
        tokens = 0;
        for (int b0 = 0; b0 < ss->n; b0 += a->batch) {
            int n = ss->n - b0 < a->batch ? ss->n - b0 : a->batch;
            double t0 = mt_bench_now();
            if (mt_decode(ws, mf.model, abs, (const int32_t *const *)ss->ids + b0, ss->len + b0, NULL, NULL, n, &o,
                          &r) != MT_OK) {
                fprintf(stderr, "engine: %s\n", mt_last_error());
                return 1;
            }
            dt += mt_bench_now() - t0;
            for (int b = 0; b < n; b++) {
                int64_t maxo = (int64_t)floor(o.max_len_ratio * (double)ss->len[b0 + b]) + MT_DECODE_LEN_EXTRA;
                if (maxo > mf.model->cfg.max_len - 1) maxo = mf.model->cfg.max_len - 1;
                tokens += r.len[b] + (r.len[b] < maxo ? 1 : 0); /* [EOS] is generated too */
                free(out[b0 + b]);
                out[b0 + b] = malloc(sizeof(int32_t) * (size_t)(r.len[b] + 1));
                memcpy(out[b0 + b], r.ids[b], sizeof(int32_t) * (size_t)r.len[b]);
                olen[b0 + b] = r.len[b];
            }
            mt_decode_result_free(&r);
        }
        if (dt < best) best = dt;
    }
    FILE *f = fopen(a->out, "w");
    if (!f) return 1;
    for (int i = 0; i < ss->n; i++) {
        for (int64_t j = 0; j < olen[i]; j++) fprintf(f, j ? " %d" : "%d", out[i][j]);
        fputc('\n', f);
        free(out[i]);
    }
    fclose(f);
    free(out);
    free(olen);
    dprintf(fd, "{\"tokens\": %lld, \"seconds\": %.6f, \"tokens_per_s\": %.3f}\n", (long long)tokens, best,
            (double)tokens / best);
    return 0;
}

/* Lines of two output files that are equal, and the number of lines (-1 when a file is missing or
 * they have different numbers of lines). */
static int same_lines(const char *pa, const char *pb, int *n) {
    FILE *a = fopen(pa, "r"), *b = fopen(pb, "r");
    int same = 0;
    *n = 0;
    char *la = NULL, *lb = NULL;
    size_t ca = 0, cb = 0;
    if (!a || !b) same = -1;
    while (same >= 0) {
        ssize_t ka = getline(&la, &ca, a), kb = getline(&lb, &cb, b);
        if (ka < 0 && kb < 0) break;
        if (ka < 0 || kb < 0) {
            same = -1;
            break;
        }
        (*n)++;
        same += strcmp(la, lb) == 0;
    }
    free(la);
    free(lb);
    if (a) fclose(a);
    if (b) fclose(b);
    return same;
}

static int decode_ct2(const dec_opts *o, const char *dir) {
    const char *py = mtb_python();
    if (!o->model || !o->split) {
        fprintf(stderr, "mt-bench decode --ct2 needs --model M.mt (a trained MHA model with cross_rope false) and "
                        "--split DIR (mt-train --dump-split)\n");
        return 2;
    }
    if (!py) {
        fprintf(stderr, "mt-bench decode --ct2: no Python with torch (make the bench venv: tests/bench/venv.sh)\n");
        return 1;
    }
    mt_modelfile mf;
    if (mt_modelfile_load(o->model, MT_DEVICE_CPU, 0, &mf) != MT_OK) {
        fprintf(stderr, "mt-bench decode --ct2: %s\n", mt_last_error());
        return 1;
    }
    mt_model_config c = mf.model->cfg;
    ct2_sents ss = {0};
    int rc = 0;
    if (c.attention != MT_ATTN_MHA || c.cross_rope) {
        fprintf(stderr, "mt-bench decode --ct2: %s is %s with cross_rope %s; CTranslate2 expresses attention mha "
                        "with cross_rope false only\n", o->model, c.attention == MT_ATTN_MHA ? "mha" : "mla",
                c.cross_rope ? "true" : "false");
        rc = 2;
    } else if (ct2_read_sents(o->split, mf.tokenizer_json, c.max_len, o->sents, o->batch, &ss) != 0) {
        rc = 1;
    }
    mt_modelfile_clear(&mf);
    if (rc) {
        ct2_free_sents(&ss);
        return rc;
    }
    char i8[700], srcp[700], ct2dir[700], script[700], export[700], maxlen[32], pad[32];
    snprintf(i8, sizeof i8, "%s/int8.mt", dir);
    snprintf(srcp, sizeof srcp, "%s/src.safetensors", dir);
    snprintf(ct2dir, sizeof ct2dir, "%s/ct2", dir);
    snprintf(maxlen, sizeof maxlen, "%lld", (long long)c.max_len);
    snprintf(pad, sizeof pad, "%lld", (long long)c.pad_id);
    mtb_script(script, sizeof script, "bench.py");
    mtb_script(export, sizeof export, "ct2_export.py");
    if (ct2_write_src(srcp, &ss, (int32_t)c.pad_id) != 0 || write_int8(o->model, i8) != 0) {
        fprintf(stderr, "mt-bench decode --ct2: %s\n", mt_last_error());
        return 1;
    }
    char *conv[] = {(char *)py, export, "convert", "--model", (char *)o->model, "--out", ct2dir, NULL};
    mtb_child ch = mtb_exec(conv);
    if (ch.status != 0 || !ch.result) {
        fprintf(stderr, "mt-bench decode --ct2: ct2_export.py convert failed (is ctranslate2 installed in the bench "
                        "venv? tests/bench/venv.sh)\n");
        return 1;
    }
    json_decref(ch.result);
    int64_t src_tokens = 0;
    for (int i = 0; i < ss.n; i++) src_tokens += ss.len[i];
    printf("mt-bench decode --ct2: the engine against CTranslate2, model %s (d_model %lld, %lld heads, %lld+%lld "
           "layers, vocab %lld), %d real sentences of %s (%.1f source tokens on average), %d threads, "
           "OMP_WAIT_POLICY=%s\n",
           o->model, (long long)c.d_model, (long long)c.heads, (long long)c.layers_enc, (long long)c.layers_dec,
           (long long)c.vocab_size, ss.n, o->split, (double)src_tokens / ss.n, o->threads, getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "unset (each library's default)");
    mtb_print_conditions();
    enum { K = 8 };
    const char *cell[K];
    char names[K][64];
    int beams[K], batches[K], q8[K];
    for (int k = 0; k < K; k++) {
        beams[k] = k & 4 ? 4 : 1;
        batches[k] = k & 2 ? 1 : o->batch;
        q8[k] = k & 1;
        snprintf(names[k], sizeof names[k], "%s, batch %d, %s", beams[k] == 1 ? "greedy" : "beam 4", batches[k],
                 q8[k] ? "int8" : "f32");
        cell[k] = names[k];
    }
    /* CTranslate2 runs with intra_threads --threads and, when that is more than 1, also 1: on some
     * machines its MKL's threads cost more than they bring (seen on a 2-vCPU Intel VM: 6x slower at
     * batch 1 with 2 than with 1). The anchor of a cell is its faster configuration. */
    int ct2_runs = o->threads > 1 ? 2 : 1;
    double best[K][2] = {{0}}, same[K] = {0};
    int best_thr[K] = {0};
    for (int r = 0; r < o->rounds; r++) {
        for (int k = 0; k < K; k++) {
            char eo[800], co[800], beam[16], batch[16];
            snprintf(eo, sizeof eo, "%s/engine-%d.txt", dir, k);
            snprintf(beam, sizeof beam, "%d", beams[k]);
            snprintf(batch, sizeof batch, "%d", batches[k]);
            for (int side = 0; side <= ct2_runs; side++) {
                int nthr = side == 2 ? 1 : o->threads;
                char nthr_s[16];
                snprintf(nthr_s, sizeof nthr_s, "%d", nthr);
                snprintf(co, sizeof co, "%s/ct2-%d-%d.txt", dir, k, nthr);
                if (side == 0) {
                    ct2_arg a = {q8[k] ? i8 : o->model, eo, o, &ss, beams[k], batches[k]};
                    ch = mtb_fork(engine_decode_real, &a);
                } else {
                    char *args[] = {(char *)py, script, "ct2", "--ct2", ct2dir, "--src", srcp, "--out", co,
                                    "--threads", nthr_s, "--beam", beam, "--batch", batch, "--compute-type",
                                    q8[k] ? "int8" : "float32", "--max-len", maxlen, "--pad-id", pad, NULL};
                    ch = mtb_exec(args);
                }
                if (ch.status != 0 || !ch.result) {
                    fprintf(stderr, "mt-bench decode --ct2: the %s run of %s failed\n", side ? "CTranslate2" : "engine",
                            cell[k]);
                    return 1;
                }
                double tps = mtb_num(&ch, "tokens_per_s");
                char who[32];
                snprintf(who, sizeof who, side ? "CT2 %d thr" : "engine", nthr);
                printf("  round %d: %-24s %-12s %8.1f tokens/s  (%.0f tokens in %.3f s, peak RSS %.0f MB)\n", r + 1,
                       cell[k], who, tps, mtb_num(&ch, "tokens"), mtb_num(&ch, "seconds"), ch.maxrss_mb);
                int sd = side ? 1 : 0;
                if (tps > best[k][sd]) {
                    best[k][sd] = tps;
                    if (sd) best_thr[k] = nthr;
                }
                json_decref(ch.result);
            }
            snprintf(co, sizeof co, "%s/ct2-%d-%d.txt", dir, k, o->threads);
            int n, sm = same_lines(eo, co, &n);
            same[k] = sm >= 0 && n == ss.n ? (double)sm / n : -1;
        }
    }
    printf("\n  %-24s %12s %12s %8s %10s %10s\n", "", "engine tok/s", "CT2 tok/s", "CT2 thr", "engine x",
           "identical");
    double worst = 1e30, worst_same_f32 = 1e30;
    for (int k = 0; k < K; k++) {
        double x = best[k][0] / best[k][1];
        if (x < worst) worst = x;
        if (!q8[k] && same[k] < worst_same_f32) worst_same_f32 = same[k];
        printf("  %-24s %12.1f %12.1f %8d %10.2f %9.1f%%\n", cell[k], best[k][0], best[k][1], best_thr[k], x,
               100.0 * same[k]);
    }
    printf("  lowest engine / CTranslate2: %.2fx (goal >= 1.2x in every cell); lowest identical share in f32: %.1f%% "
           "(goal >= 99%%)\n", worst, 100.0 * worst_same_f32);
    printf("{\"bench\": \"decode_ct2\", \"threads\": %d, \"batch\": %d, \"sentences\": %d, \"cells\": [", o->threads,
           o->batch, ss.n);
    for (int k = 0; k < K; k++)
        printf("%s{\"beam\": %d, \"batch\": %d, \"dtype\": \"%s\", \"engine_tokens_per_s\": %.1f, "
               "\"ct2_tokens_per_s\": %.1f, \"ct2_threads\": %d, \"ratio\": %.3f, \"identical\": %.4f}",
               k ? ", " : "", beams[k], batches[k], q8[k] ? "int8" : "f32", best[k][0], best[k][1], best_thr[k],
               best[k][0] / best[k][1], same[k]);
    printf("], \"min_ratio\": %.3f, \"min_identical_f32\": %.4f}\n", worst, worst_same_f32);
    ct2_free_sents(&ss);
    return 0;
}

int mt_bench_decode(int argc, char **argv) {
    dec_opts o = {.threads = 2, .batch = 32, .len = 20, .rounds = 2, .torch = 1, .sents = 128};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--threads")) o.threads = atoi(v), i++;
        else if (!strcmp(a, "--batch")) o.batch = atoi(v), i++;
        else if (!strcmp(a, "--len")) o.len = atoi(v), i++;
        else if (!strcmp(a, "--rounds")) o.rounds = atoi(v), i++;
        else if (!strcmp(a, "--no-torch")) o.torch = 0;
        else if (!strcmp(a, "--int8")) o.int8 = 1;
        else if (!strcmp(a, "--ct2")) o.ct2 = 1;
        else if (!strcmp(a, "--sents")) o.sents = atoi(v), i++;
        else if (!strcmp(a, "--model")) o.model = v, i++;
        else if (!strcmp(a, "--split")) o.split = v, i++;
        else if (!strcmp(a, "--max-sents")) o.max_sents = atoi(v), i++;
        else if (!strcmp(a, "--nice")) mtb_nice_value = atoi(v), i++;
        else {
            fprintf(stderr, "usage: mt-bench decode [--threads N] [--batch N] [--len L] [--rounds N] [--no-torch] [--nice N]\n"
                            "                       [--int8 [--model M.mt] [--split DIR [--max-sents N]]]\n"
                            "                       [--ct2 --model M.mt --split DIR [--sents N]]\n");
            return 2;
        }
    }
    if (o.threads < 1 || o.batch < 1 || o.len < 1 || o.rounds < 1 || o.sents < 2) return 2;
    mt_model_config c = mtb_config(MT_ATTN_MLA), cm = mtb_config(MT_ATTN_MHA);
    char dir[512], model[700], srcp[700], thr[16];
    if (mtb_tmpdir(dir, sizeof dir, "decode") != 0) return 1;
    snprintf(model, sizeof model, "%s/model.mt", dir);
    snprintf(srcp, sizeof srcp, "%s/src.safetensors", dir);
    mtb_set_threads(o.threads, thr);
    if (o.ct2) {
        int rc = decode_ct2(&o, dir);
        mtb_rmrf(dir);
        return rc;
    }
    mt_transformer *m;
    mt_context *ctx;
    if (o.int8) {
        char i8[700];
        snprintf(i8, sizeof i8, "%s/int8.mt", dir);
        const char *f32 = model;
        int rc = 1;
        if (o.model) { /* a trained model: its own config */
            mt_modelfile mf;
            if (mt_modelfile_load(o.model, MT_DEVICE_CPU, 0, &mf) == MT_OK) {
                c = mf.model->cfg;
                mt_modelfile_clear(&mf);
                f32 = o.model;
                rc = 0;
            }
        } else {
            rc = mt_transformer_create(&c, MT_DEVICE_CPU, &m) != MT_OK || mt_context_init(&ctx, MT_DEVICE_CPU, 1) != MT_OK ||
                 mt_context_seed(ctx, 2) != MT_OK || mt_transformer_init_weights(m, ctx) != MT_OK ||
                 mt_modelfile_save(model, m, ctx, NULL, NULL) != MT_OK;
            if (rc == 0) mt_transformer_free(m), mt_context_free(ctx);
        }
        if (rc != 0 || write_src(srcp, &c, o.batch, o.len) != 0 || write_int8(f32, i8) != 0) {
            fprintf(stderr, "mt-bench decode: %s\n", mt_last_error());
            return 1;
        }
        rc = decode_int8(&o, f32, i8, srcp, thr);
        mtb_rmrf(dir);
        return rc;
    }
    if (mt_transformer_create(&c, MT_DEVICE_CPU, &m) != MT_OK || mt_context_init(&ctx, MT_DEVICE_CPU, 1) != MT_OK ||
        mt_context_seed(ctx, 2) != MT_OK || mt_transformer_init_weights(m, ctx) != MT_OK ||
        mt_modelfile_save(model, m, ctx, NULL, NULL) != MT_OK || write_src(srcp, &c, o.batch, o.len) != 0) {
        fprintf(stderr, "mt-bench decode: %s\n", mt_last_error());
        return 1;
    }
    mt_transformer_free(m);
    mt_context_free(ctx);
    const char *py = o.torch ? mtb_python() : NULL;
    char script[700];
    mtb_script(script, sizeof script, "bench.py");
    printf("mt-bench decode: greedy, batch %d x %d source tokens (up to %d generated each), d_model %lld, %lld+%lld "
           "layers, vocab %lld, %d threads\n",
           o.batch, o.len, (int)(1.5 * o.len) + 10, (long long)c.d_model, (long long)c.layers_enc,
           (long long)c.layers_dec, (long long)c.vocab_size, o.threads);
    mtb_print_conditions();
    double best[4] = {0, 0, 0, 0}, rss[4] = {0, 0, 0, 0};
    const char *names[4] = {"engine, latent cache", "engine, uncached", "PyTorch, prefix recomputed",
                            "PyTorch, KV cache"};
    for (int r = 0; r < o.rounds; r++) {
        for (int k = 0; k < 4; k++) {
            mtb_child ch;
            if (k < 2) {
                dec_arg a = {model, &o, k == 0, 0};
                ch = mtb_fork(engine_decode, &a);
            } else {
                if (!py) continue;
                char *args[] = {(char *)py, script, "decode", "--model", model, "--src", srcp, "--threads", thr,
                                "--mode", k == 2 ? "recompute" : "kvcache", NULL};
                ch = mtb_exec(args);
            }
            if (ch.status != 0 || !ch.result) {
                fprintf(stderr, "mt-bench decode: the %s run failed\n", names[k]);
                return 1;
            }
            double tps = mtb_num(&ch, "tokens_per_s");
            printf("  round %d: %-28s %8.1f tokens/s  (%.0f tokens in %.3f s, peak RSS %.0f MB)\n", r + 1, names[k], tps,
                   mtb_num(&ch, "tokens"), mtb_num(&ch, "seconds"), ch.maxrss_mb);
            if (tps > best[k]) best[k] = tps;
            if (ch.maxrss_mb > rss[k]) rss[k] = ch.maxrss_mb;
            json_decref(ch.result);
        }
    }
    int64_t mla_b = 4 * mt_model_cache_floats_per_token(&c), mha_b = 4 * mt_model_cache_floats_per_token(&cm);
    printf("\n  %-30s %12s %10s\n", "", "tokens/s", "engine x");
    for (int k = 0; k < 4; k++)
        if (best[k] > 0) printf("  %-30s %12.1f %10.2f\n", names[k], best[k], best[0] / best[k]);
    printf("  decoder cache per target token and layer: MLA %lld bytes (d_c + d_rope = %lld floats), MHA %lld bytes "
           "(2 x d_model = %lld floats): %.1fx smaller; %lld layers: %lld vs %lld bytes\n",
           (long long)mla_b, (long long)(c.d_c + c.d_rope), (long long)mha_b, (long long)(2 * c.d_model),
           (double)mha_b / (double)mla_b, (long long)c.layers_dec, (long long)(mla_b * c.layers_dec),
           (long long)(mha_b * c.layers_dec));
    if (py) printf("  engine vs the recomputing loop: %.2fx (target >= 5x); vs the KV-cached loop: %.2fx\n",
                   best[0] / best[2], best[0] / best[3]);
    printf("{\"bench\": \"decode\", \"threads\": %d, \"batch\": %d, \"engine_tokens_per_s\": %.1f, "
           "\"engine_uncached_tokens_per_s\": %.1f, \"torch_recompute_tokens_per_s\": %.1f, "
           "\"torch_kvcache_tokens_per_s\": %.1f, \"ratio_vs_recompute\": %.3f, \"ratio_vs_kvcache\": %.3f, "
           "\"mla_cache_bytes_per_token_layer\": %lld, \"mha_cache_bytes_per_token_layer\": %lld}\n",
           o.threads, o.batch, best[0], best[1], best[2], best[3], best[2] > 0 ? best[0] / best[2] : 0.0,
           best[3] > 0 ? best[0] / best[3] : 0.0, (long long)mla_b, (long long)mha_b);
    mtb_rmrf(dir);
    return 0;
}
