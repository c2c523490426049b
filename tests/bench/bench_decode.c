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
 */
#include <omp.h>

#include "bench.h"
#include "bench_model.h"
#include "decode/decode.h"
#include "format/modelfile.h"
#include "microtensor.h"
#include "text/metrics.h"

#include <sys/stat.h>

typedef struct dec_opts {
    int threads, batch, len, rounds, torch;
    int int8, max_sents;        /* --int8: the quantization figures; --max-sents per test corpus */
    const char *model, *split;  /* --model: a trained .mt (default: random weights); --split: mt-train's --dump-split dir */
} dec_opts;

typedef struct dec_arg {
    const char *model;
    const dec_opts *o;
    int cached;
    int per_call; /* sentences per mt_decode call (0: the whole batch at once) */
} dec_arg;

static int engine_decode(void *argp, int fd) {
    dec_arg *a = argp;
    omp_set_num_threads(a->o->threads);
    mt_modelfile mf;
    mt_absorbed *abs = NULL;
    mt_decode_ws *ws;
    if (mt_modelfile_load(a->model, MT_DEVICE_CPU, 0, &mf) != MT_OK || mt_absorbed_create(mf.model, &abs) != MT_OK ||
        mt_decode_ws_create(MT_DEVICE_CPU, a->o->threads, &ws) != MT_OK) {
        fprintf(stderr, "engine: %s\n", mt_last_error());
        return 1;
    }
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

int mt_bench_decode(int argc, char **argv) {
    dec_opts o = {.threads = 2, .batch = 32, .len = 20, .rounds = 2, .torch = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--threads")) o.threads = atoi(v), i++;
        else if (!strcmp(a, "--batch")) o.batch = atoi(v), i++;
        else if (!strcmp(a, "--len")) o.len = atoi(v), i++;
        else if (!strcmp(a, "--rounds")) o.rounds = atoi(v), i++;
        else if (!strcmp(a, "--no-torch")) o.torch = 0;
        else if (!strcmp(a, "--int8")) o.int8 = 1;
        else if (!strcmp(a, "--model")) o.model = v, i++;
        else if (!strcmp(a, "--split")) o.split = v, i++;
        else if (!strcmp(a, "--max-sents")) o.max_sents = atoi(v), i++;
        else if (!strcmp(a, "--nice")) mtb_nice_value = atoi(v), i++;
        else {
            fprintf(stderr, "usage: mt-bench decode [--threads N] [--batch N] [--len L] [--rounds N] [--no-torch] [--nice N]\n"
                            "                       [--int8 [--model M.mt] [--split DIR [--max-sents N]]]\n");
            return 2;
        }
    }
    if (o.threads < 1 || o.batch < 1 || o.len < 1 || o.rounds < 1) return 2;
    mt_model_config c = mtb_config(MT_ATTN_MLA), cm = mtb_config(MT_ATTN_MHA);
    char dir[512], model[700], srcp[700], thr[16];
    if (mtb_tmpdir(dir, sizeof dir, "decode") != 0) return 1;
    snprintf(model, sizeof model, "%s/model.mt", dir);
    snprintf(srcp, sizeof srcp, "%s/src.safetensors", dir);
    mtb_set_threads(o.threads, thr);
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
