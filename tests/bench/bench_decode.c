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
 */
#include <omp.h>

#include "bench.h"
#include "bench_model.h"
#include "decode/decode.h"
#include "format/modelfile.h"

typedef struct dec_opts {
    int threads, batch, len, rounds, torch;
} dec_opts;

typedef struct dec_arg {
    const char *model;
    const dec_opts *o;
    int cached;
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
    for (int rep = 0; rep < 2; rep++) {
        double t0 = mt_bench_now();
        if (mt_decode(ws, mf.model, abs, src, len, NULL, NULL, B, &o, &r) != MT_OK) {
            fprintf(stderr, "engine: %s\n", mt_last_error());
            return 1;
        }
        double dt = mt_bench_now() - t0;
        if (dt < best) best = dt;
        int64_t maxo = (int64_t)(o.max_len_ratio * L) + MT_DECODE_LEN_EXTRA;
        if (maxo > mf.model->cfg.max_len - 1) maxo = mf.model->cfg.max_len - 1;
        tokens = 0;
        for (int b = 0; b < B; b++) tokens += r.len[b] + (r.len[b] < maxo ? 1 : 0); /* [EOS] is generated too */
        mt_decode_result_free(&r);
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

int mt_bench_decode(int argc, char **argv) {
    dec_opts o = {.threads = 2, .batch = 32, .len = 20, .rounds = 2, .torch = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--threads")) o.threads = atoi(v), i++;
        else if (!strcmp(a, "--batch")) o.batch = atoi(v), i++;
        else if (!strcmp(a, "--len")) o.len = atoi(v), i++;
        else if (!strcmp(a, "--rounds")) o.rounds = atoi(v), i++;
        else if (!strcmp(a, "--no-torch")) o.torch = 0;
        else if (!strcmp(a, "--nice")) mtb_nice_value = atoi(v), i++;
        else {
            fprintf(stderr, "usage: mt-bench decode [--threads N] [--batch N] [--len L] [--rounds N] [--no-torch] [--nice N]\n");
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
                dec_arg a = {model, &o, k == 0};
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
