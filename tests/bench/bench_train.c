/*
 * bench_train.c — `mt-bench train`: training throughput (source + target tokens per second, padding
 * not counted) of the engine against the PyTorch reference (tests/reference/model.py, same weights
 * loaded from the engine's .mt file), same config (d_model 256, 4 heads, 3+3 layers, d_ff 1024, 8k
 * vocabulary, MLA, dropout 0.1, label smoothing 0.1, AdamW, clipping), the same batch, the same
 * thread count (default 2) for both. Peak RSS of each side is reported. The anchor is the PyTorch of
 * the benchmark venv (tests/bench/venv.sh: PyTorch 2.x from PyPI) when it exists, else Debian's 1.13;
 * its version is printed. Also the FLOPs per token the engine issues (GEMMs and fused attention,
 * counted by its context: core/backend.h) and the engine's share of the machine's GEMM peak
 * (gemm_libs.h), both measured in this run.
 *
 * The batch has the shape the token-budget batcher gives: pairs of similar length (sources of L-3..L
 * tokens with [EOS], decoder inputs of L-4..L+2 with [SOS]), as many as fit max_tokens with padding.
 * The machine is shared and noisy, so engine and reference alternate for --rounds rounds and the best
 * round of each is kept.
 *
 *   mt-bench train [--threads 2] [--steps 5] [--warmup 2] [--rounds 3] [--len 24] [--max-tokens 4096]
 *                  [--attention mla|mha] [--no-torch] [--nice N]
 */
#include <math.h>
#include <omp.h>
#include <time.h>

#include "bench.h"
#include "bench_model.h"
#include "gemm_libs.h"
#include "format/modelfile.h"
#include "train/optim.h"

typedef struct train_opts {
    int threads, steps, warmup, rounds, len, max_tokens, attention, torch;
} train_opts;

typedef struct engine_arg {
    const char *model;
    const mt_seq_batch *b;
    const train_opts *o;
} engine_arg;

static int engine_train(void *argp, int fd) {
    engine_arg *a = argp;
    omp_set_num_threads(a->o->threads);
    mt_modelfile mf;
    mt_context *ctx;
    mt_optimizer *opt;
    if (mt_modelfile_load(a->model, MT_DEVICE_CPU, 0, &mf) != MT_OK ||
        mt_context_init(&ctx, MT_DEVICE_CPU, a->o->threads) != MT_OK ||
        mt_optimizer_create(mf.model, ctx, &opt) != MT_OK) {
        fprintf(stderr, "engine: %s\n", mt_last_error());
        return 1;
    }
    mt_context_seed(ctx, 1);
    mt_adamw_hparams h = {.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.98, .eps = 1e-9, .weight_decay = 0.01,
                          .warmup_steps = 0, .clip_norm = 1.0, .label_smoothing = 0.1};
    double loss = 0;
    for (int i = 0; i < a->o->warmup; i++) {
        if (mt_train_step(ctx, mf.model, opt, &h, a->b, 1, &loss, NULL) != MT_OK) {
            fprintf(stderr, "engine: %s\n", mt_last_error());
            return 1;
        }
    }
    uint64_t f0 = ctx->ex.flops;
    double t0 = mt_bench_now();
    for (int i = 0; i < a->o->steps; i++) mt_train_step(ctx, mf.model, opt, &h, a->b, 1, &loss, NULL);
    double dt = (mt_bench_now() - t0) / a->o->steps;
    double flops = (double)(ctx->ex.flops - f0) / a->o->steps;
    double tokens = (double)(a->b->src_tokens + a->b->tgt_tokens);
    dprintf(fd, "{\"tokens_per_s\": %.3f, \"step_s\": %.6f, \"loss\": %.6f, \"tokens\": %.0f, \"flops_per_step\": %.0f}\n",
            tokens / dt, dt, loss, tokens, flops);
    return 0;
}

static int peak_child(void *arg, int fd) {
    int lib, threads = *(int *)arg;
    double gflops = mtb_gemm_peak(threads, 2.0, &lib);
    json_t *j = json_pack("{s:f, s:s}", "gflops", gflops, "lib", mtb_gemm_lib_name(lib));
    char *txt = json_dumps(j, JSON_COMPACT);
    dprintf(fd, "%s\n", txt);
    free(txt);
    json_decref(j);
    return 0;
}

/* The synthetic token-budget batch (see the top of the file). */
static mt_seq_batch make_batch(const mt_model_config *c, int L, int max_tokens) {
    int64_t S = L, T = L + 2;
    mt_seq_batch b = {.S = S, .T = T};
    b.B = max_tokens / (S + T);
    b.src = calloc((size_t)(b.B * S), sizeof(int32_t));
    b.tgt_in = calloc((size_t)(b.B * T), sizeof(int32_t));
    b.tgt_out = calloc((size_t)(b.B * T), sizeof(int32_t));
    uint64_t s = 88172645463325252ull;
    for (int64_t i = 0; i < b.B; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        int64_t ls = L - 1 - (int64_t)(s % 4), lt = L - 3 + (int64_t)((s >> 8) % 5); /* tokens before [EOS] */
        for (int64_t j = 0; j < S; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            b.src[i * S + j] = (int32_t)(j < ls ? 4 + (int64_t)(s % (uint64_t)(c->vocab_size - 4))
                                                : j == ls ? c->eos_id : c->pad_id);
        }
        int32_t prev = (int32_t)c->sos_id;
        for (int64_t j = 0; j < T; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            int32_t y = (int32_t)(j < lt ? 4 + (int64_t)(s % (uint64_t)(c->vocab_size - 4)) : j == lt ? c->eos_id : c->pad_id);
            b.tgt_in[i * T + j] = j <= lt ? prev : (int32_t)c->pad_id;
            b.tgt_out[i * T + j] = y;
            prev = y;
        }
        b.src_tokens += ls + 1;
        b.tgt_tokens += lt + 1;
    }
    return b;
}

static int write_batch(const char *path, const mt_seq_batch *b) {
    mt_st_tensor t[3] = {
        {.name = "src", .dtype = MT_DTYPE_I32, .ndim = 2, .shape = {b->B, b->S}, .data = b->src,
         .bytes = sizeof(int32_t) * (size_t)(b->B * b->S)},
        {.name = "tgt_in", .dtype = MT_DTYPE_I32, .ndim = 2, .shape = {b->B, b->T}, .data = b->tgt_in,
         .bytes = sizeof(int32_t) * (size_t)(b->B * b->T)},
        {.name = "tgt_out", .dtype = MT_DTYPE_I32, .ndim = 2, .shape = {b->B, b->T}, .data = b->tgt_out,
         .bytes = sizeof(int32_t) * (size_t)(b->B * b->T)},
    };
    return mt_st_write(path, t, 3, NULL, 0, 0) == MT_OK ? 0 : -1;
}

int mt_bench_train(int argc, char **argv) {
    train_opts o = {.threads = 2, .steps = 5, .warmup = 2, .rounds = 3, .len = 24, .max_tokens = 4096,
                    .attention = MT_ATTN_MLA, .torch = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--threads")) o.threads = atoi(v), i++;
        else if (!strcmp(a, "--steps")) o.steps = atoi(v), i++;
        else if (!strcmp(a, "--warmup")) o.warmup = atoi(v), i++;
        else if (!strcmp(a, "--rounds")) o.rounds = atoi(v), i++;
        else if (!strcmp(a, "--len")) o.len = atoi(v), i++;
        else if (!strcmp(a, "--max-tokens")) o.max_tokens = atoi(v), i++;
        else if (!strcmp(a, "--attention")) o.attention = strcmp(v, "mha") ? MT_ATTN_MLA : MT_ATTN_MHA, i++;
        else if (!strcmp(a, "--no-torch")) o.torch = 0;
        else if (!strcmp(a, "--nice")) mtb_nice_value = atoi(v), i++;
        else {
            fprintf(stderr, "usage: mt-bench train [--threads N] [--steps N] [--warmup N] [--rounds N] [--len L] "
                            "[--max-tokens N] [--attention mla|mha] [--no-torch] [--nice N]\n");
            return 2;
        }
    }
    if (o.threads < 1 || o.steps < 1 || o.rounds < 1 || o.len < 6) return 2;
    mt_model_config c = mtb_config(o.attention);
    char dir[512], model[700], batch[700], thr[16];
    if (mtb_tmpdir(dir, sizeof dir, "train") != 0) return 1;
    snprintf(model, sizeof model, "%s/model.mt", dir);
    snprintf(batch, sizeof batch, "%s/batch.safetensors", dir);
    mtb_set_threads(o.threads, thr);
    mt_transformer *m;
    mt_context *ctx;
    if (mt_transformer_create(&c, MT_DEVICE_CPU, &m) != MT_OK || mt_context_init(&ctx, MT_DEVICE_CPU, 1) != MT_OK ||
        mt_transformer_init_weights(m, ctx) != MT_OK || mt_modelfile_save(model, m, ctx, NULL, NULL) != MT_OK) {
        fprintf(stderr, "mt-bench train: %s\n", mt_last_error());
        return 1;
    }
    mt_transformer_free(m);
    mt_context_free(ctx);
    mt_seq_batch b = make_batch(&c, o.len, o.max_tokens);
    if (write_batch(batch, &b) != 0) return 1;
    const char *py = o.torch ? mtb_python() : NULL;
    char script[700], steps[16], warm[16];
    mtb_script(script, sizeof script, "bench.py");
    snprintf(steps, sizeof steps, "%d", o.steps);
    snprintf(warm, sizeof warm, "%d", o.warmup);
    printf("mt-bench train: %s, d_model %lld, %lld heads, %lld+%lld layers, d_ff %lld, vocab %lld; batch %lld pairs, "
           "S %lld, T %lld, %lld tokens (%.1f%% padding); %d threads\n",
           o.attention == MT_ATTN_MLA ? "MLA" : "MHA", (long long)c.d_model, (long long)c.heads,
           (long long)c.layers_enc, (long long)c.layers_dec, (long long)c.d_ff, (long long)c.vocab_size,
           (long long)b.B, (long long)b.S, (long long)b.T, (long long)(b.src_tokens + b.tgt_tokens),
           100.0 * (1.0 - (double)(b.src_tokens + b.tgt_tokens) / (double)(b.B * (b.S + b.T))), o.threads);
    mtb_print_conditions();
    /* In a child of its own: threads started here would not survive the forks of the engine runs. */
    mtb_child pk = mtb_fork(peak_child, &o.threads);
    double peak = mtb_num(&pk, "gflops");
    const char *peak_lib = pk.result ? json_string_value(json_object_get(pk.result, "lib")) : NULL;
    printf("  GEMM peak of this machine (2048^3 f32, %d threads): %.1f GFLOP/s by %s\n", o.threads, peak,
           peak_lib ? peak_lib : "?");
    if (pk.result) json_decref(pk.result);
    double best_e = 0, best_t = 0, rss_e = 0, rss_t = 0, loss_e = 0, loss_t = 0, flops_step = 0;
    char torch_ver[64] = "PyTorch";
    for (int r = 0; r < o.rounds; r++) {
        engine_arg ea = {model, &b, &o};
        mtb_child e = mtb_fork(engine_train, &ea);
        if (e.status != 0 || !e.result) {
            fprintf(stderr, "mt-bench train: the engine run failed\n");
            return 1;
        }
        double te = mtb_num(&e, "tokens_per_s");
        printf("  round %d: engine  %8.0f tokens/s  (%.3f s/step, loss %.4f, peak RSS %.0f MB)\n", r + 1, te,
               mtb_num(&e, "step_s"), mtb_num(&e, "loss"), e.maxrss_mb);
        if (te > best_e) best_e = te, loss_e = mtb_num(&e, "loss"), flops_step = mtb_num(&e, "flops_per_step");
        if (e.maxrss_mb > rss_e) rss_e = e.maxrss_mb;
        json_decref(e.result);
        if (!py) continue;
        char *args[] = {(char *)py, script, "train", "--model", model, "--batch", batch, "--threads", thr, "--steps",
                        steps, "--warmup", warm, NULL};
        mtb_child t = mtb_exec(args);
        if (t.status != 0 || !t.result) {
            fprintf(stderr, "mt-bench train: the PyTorch run failed\n");
            return 1;
        }
        double tt = mtb_num(&t, "tokens_per_s");
        printf("  round %d: PyTorch %8.0f tokens/s  (%.3f s/step, loss %.4f, peak RSS %.0f MB)\n", r + 1, tt,
               mtb_num(&t, "step_s"), mtb_num(&t, "loss"), t.maxrss_mb);
        if (tt > best_t) best_t = tt, loss_t = mtb_num(&t, "loss");
        const char *tv = json_string_value(json_object_get(t.result, "torch"));
        if (tv) snprintf(torch_ver, sizeof torch_ver, "PyTorch %s", tv);
        if (t.maxrss_mb > rss_t) rss_t = t.maxrss_mb;
        json_decref(t.result);
    }
    double tokens = (double)(b.src_tokens + b.tgt_tokens), flops_tok = flops_step / tokens;
    double share = best_e * flops_tok * 1e-9 / peak;
    printf("\n  %-24s %14s %18s\n", "", "engine", torch_ver);
    printf("  %-24s %14.0f %18.0f\n", "tokens/s (best round)", best_e, best_t);
    printf("  %-24s %14.0f %18.0f\n", "peak RSS (MB)", rss_e, rss_t);
    if (py) printf("  ratio engine / %s: %.2fx (target >= 1.5x); peak RSS ratio %.2f (target <= 1)\n", torch_ver,
                   best_e / best_t, rss_e / rss_t);
    else printf("  PyTorch not available: no ratio\n");
    printf("  FLOPs per token issued by the engine (GEMMs + attention, forward + backward): %.3f MFLOP; at %.0f tokens/s "
           "that is %.1f GFLOP/s = %.1f%% of the GEMM peak (target >= 70%%)\n",
           flops_tok * 1e-6, best_e, best_e * flops_tok * 1e-9, 100.0 * share);
    printf("{\"bench\": \"train\", \"attention\": \"%s\", \"threads\": %d, \"batch_pairs\": %lld, \"batch_tokens\": %lld, "
           "\"engine_tokens_per_s\": %.1f, \"torch_tokens_per_s\": %.1f, \"ratio\": %.3f, \"engine_peak_rss_mb\": %.0f, "
           "\"torch_peak_rss_mb\": %.0f, \"engine_loss\": %.4f, \"torch_loss\": %.4f, \"torch\": \"%s\", "
           "\"flops_per_token\": %.0f, \"gemm_peak_gflops\": %.2f, \"gemm_peak_share\": %.4f}\n",
           o.attention == MT_ATTN_MLA ? "mla" : "mha", o.threads, (long long)b.B, (long long)(b.src_tokens + b.tgt_tokens),
           best_e, best_t, py ? best_e / best_t : 0.0, rss_e, rss_t, loss_e, loss_t, torch_ver, flops_tok, peak, share);
    free(b.src);
    free(b.tgt_in);
    free(b.tgt_out);
    mtb_rmrf(dir);
    return 0;
}
