/*
 * test_gpu_ops.c — the op layer on the GPU against the same ops on the CPU, at the level above the
 * kernels: a pre-norm Transformer block with tied embeddings (embedding, layer/RMS norm, linear,
 * narrow/reshape/permute, RoPE, causal+padding attention, GELU, dropout, cross-entropy with label
 * smoothing and padding, softmax/max/mean) run forward and backward on both devices with the same
 * parameters and batch.
 *
 *   f32        loss and every parameter gradient within f32 tolerance of the CPU
 *   tf32       within TF32 tolerance
 *   bf16       mixed precision: loss within bf16 tolerance, gradients pointing the same way
 *   warm-up    after two training steps (forward, backward, AdamW, context reset), further steps make
 *              no system allocation: no cudaMalloc, no host malloc (mt_sys_alloc_count unchanged)
 *   fused      ReLU through mt_linear_act (in bf16 on the device: in the GEMM's epilogue) and the loss
 *              through mt_cross_entropy_fused (the logits' gradient written over them in the
 *              forward, where the backend has the fused classifier) within f32 / bf16 tolerance of
 *              the CPU's unfused loss; its guards (a later reader of the logits, a foreign seed: the
 *              backward fails; logits not the last op's output: the unfused path, same gradient)
 *   curve      50 AdamW steps of the block in bf16 track the f32 loss curve
 *   residual   mt_backward's residual-gradient sharing: add_dropout takes its residual's gradient memory
 *              where it is the residual's last reader (also down a chain), not where the residual (or
 *              a view of it) is read after it or is both inputs; gradients equal to the CPU's
 *   packed     mt_from_data_packed: a batch's arrays in one counted host-to-device copy
 * Exit 77 without a CUDA device. MT_GPU_TEST_SELF=1 runs the same flow with the CPU standing in for the
 * GPU (f32 only: checks the test itself, and the CPU's own no-allocation-after-warm-up promise).
 * MT_GPU_TEST_EMU=1 (the test_gpu_ops_emu build, linked with the CUDA emulator of tests/gpu/emu): the
 * "GPU" contexts run the CUDA backend's kernels on the emulator; its device memory is host memory, so
 * they are CPU contexts whose backend is swapped for mt_cuda_backend.
 * (The model-level versions of these, on the real encoder-decoder, are listed in cuda/README.md until
 * the model lands.)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/autograd.h"
#include "cuda/mt_cuda.h"
#include "ops/ops_internal.h"

enum { B = 3, T = 17, C = 64, H = 4, DH = C / H, V = 301, F = 256, NP = 11 };

static const char *PNAMES[NP] = {"emb", "ln_w", "ln_b", "wqkv", "bqkv", "wo", "rms_w", "w1", "b1", "w2", "b2"};
static const int64_t PSHAPES[NP][2] = {{V, C}, {C, 0}, {C, 0}, {3 * C, C}, {3 * C, 0}, {C, C},
                                       {C, 0}, {F, C}, {F, 0}, {C, F},     {C, 0}};

typedef struct net {
    mt_context *ctx;
    mt_tensor *p[NP], *m[NP], *v[NP];
} net;

static int n_fail;
static int DEVICE = 0, SELF = 0, EMU = 0;
static int g_fused; /* net_step ends in mt_cross_entropy_fused (the logits' only reader) */
#define EMU_DEVICE 1000 /* net_init: a CPU context running the CUDA backend on the emulator */
#define CHECK(cond, ...)                     \
    do {                                     \
        if (!(cond)) {                       \
            printf("FAIL: " __VA_ARGS__);    \
            printf("\n");                    \
            n_fail++;                        \
        }                                    \
    } while (0)

static uint64_t rs = 7;
static float frand(void) {
    rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rs >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

static float *g_init[NP];
static int32_t g_ids[B * T], g_tgt[B * T];
static float g_mask[B * T];

static void make_data(void) {
    for (int i = 0; i < NP; i++) {
        int64_t n = PSHAPES[i][0] * (PSHAPES[i][1] ? PSHAPES[i][1] : 1);
        g_init[i] = malloc(4 * (size_t)n);
        for (int64_t j = 0; j < n; j++) {
            float r = frand();
            g_init[i][j] = (i == 1 || i == 6) ? 1.0f + 0.1f * r : 0.2f * r;
        }
    }
    for (int i = 0; i < B * T; i++) {
        g_ids[i] = (int32_t)((unsigned)(frand() * 1e6f + 1e6f) % V);
        g_tgt[i] = (i % 7 == 6) ? -100 : (int32_t)((unsigned)(frand() * 1e6f + 1e6f) % V);
    }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) g_mask[b * T + t] = (b == 1 && t >= T - 4) ? -INFINITY : 0.0f;
}

static int net_init(net *n, int device) {
    memset(n, 0, sizeof *n);
#ifdef MT_WITH_CUDA
    if (device == EMU_DEVICE) {
        device = MT_DEVICE_CPU;
        if (mt_context_init(&n->ctx, device, 0) != MT_OK) return 0;
        n->ctx->ex.backend->exec_free(&n->ctx->ex);
        n->ctx->ex.backend = &mt_cuda_backend;
        if (mt_cuda_backend.exec_init(&n->ctx->ex, 0) != MT_OK) return 0;
    } else
#endif
    if (mt_context_init(&n->ctx, device, 0) != MT_OK) return 0;
    for (int i = 0; i < NP; i++) {
        int nd = PSHAPES[i][1] ? 2 : 1;
        if (mt_tensor_new_persistent(device, MT_DTYPE_F32, nd, PSHAPES[i], PNAMES[i], &n->p[i]) != MT_OK ||
            mt_tensor_new_persistent(device, MT_DTYPE_F32, nd, PSHAPES[i], NULL, &n->m[i]) != MT_OK ||
            mt_tensor_new_persistent(device, MT_DTYPE_F32, nd, PSHAPES[i], NULL, &n->v[i]) != MT_OK)
            return 0;
        if (mt_copy_from_host(n->ctx, n->p[i], g_init[i], mt_tensor_bytes(n->p[i])) != MT_OK) return 0;
        mt_fill(n->ctx, n->m[i], 0.0f);
        mt_fill(n->ctx, n->v[i], 0.0f);
        n->p[i]->flags |= MT_TENSOR_REQUIRES_GRAD;
    }
    mt_context_seed(n->ctx, 99);
    return 1;
}

static void net_free(net *n) {
    /* Under the emulator the tensors are host memory freed at once: the queued work must end first. */
    if (n->ctx) (void)n->ctx->ex.backend->sync(&n->ctx->ex);
    for (int i = 0; i < NP; i++) {
        mt_tensor_free(n->p[i]);
        mt_tensor_free(n->m[i]);
        mt_tensor_free(n->v[i]);
    }
    mt_context_free(n->ctx);
}

static void zero_grads(net *n) {
    for (int i = 0; i < NP; i++)
        if (n->p[i]->grad) mt_fill(n->ctx, n->p[i]->grad, 0.0f);
}

/* One forward + backward; returns the loss tensor (NULL on failure). */
static mt_tensor *net_step(net *n) {
    mt_context *ctx = n->ctx;
    mt_tensor **p = n->p;
    mt_tensor *ids = mt_from_data(ctx, MT_DTYPE_I32, 2, (int64_t[]){B, T}, g_ids);
    mt_tensor *tgt = mt_from_data(ctx, MT_DTYPE_I32, 1, (int64_t[]){B * T}, g_tgt);
    mt_tensor *mask = mt_from_data(ctx, MT_DTYPE_F32, 4, (int64_t[]){B, 1, 1, T}, g_mask);
    mt_tensor *h = mt_embedding(ctx, p[0], ids);
    mt_tensor *a = mt_layer_norm(ctx, h, p[1], p[2], 1e-5f);
    mt_tensor *qkv = mt_linear(ctx, a, p[3], p[4]);
    mt_tensor *q = mt_narrow(ctx, qkv, 2, 0, C), *k = mt_narrow(ctx, qkv, 2, C, C), *v = mt_narrow(ctx, qkv, 2, 2 * C, C);
    static const int perm[4] = {0, 2, 1, 3};
    q = mt_permute(ctx, mt_reshape(ctx, q, 4, (int64_t[]){B, T, H, DH}), perm);
    k = mt_permute(ctx, mt_reshape(ctx, k, 4, (int64_t[]){B, T, H, DH}), perm);
    v = mt_permute(ctx, mt_reshape(ctx, v, 4, (int64_t[]){B, T, H, DH}), perm);
    q = mt_rope(ctx, q, 0, 10000.0f);
    k = mt_rope(ctx, k, 0, 10000.0f);
    mt_tensor *o = mt_attention(ctx, q, k, v, mask, 1, 1.0f / sqrtf((float)DH));
    o = mt_reshape(ctx, mt_permute(ctx, o, perm), 3, (int64_t[]){B, T, C});
    mt_tensor *h2 = mt_add(ctx, h, mt_linear(ctx, o, p[5], NULL));
    mt_tensor *r = mt_rms_norm(ctx, h2, p[6], 1e-6f);
    /* g_fused: ReLU through mt_linear_act (in the GEMM's epilogue in bf16 where the backend has it) */
    mt_tensor *u = g_fused ? mt_linear_act(ctx, r, p[7], p[8], MT_UNARY_RELU)
                           : mt_gelu(ctx, mt_linear(ctx, r, p[7], p[8]));
    mt_tensor *f = mt_linear(ctx, u, p[9], p[10]);
    mt_tensor *h3 = mt_add(ctx, h2, mt_dropout(ctx, f, 0.1f, 1));
    if (g_fused) {
        /* The training loss's form: the logits' only reader is the fused classifier (where the backend
         * has one: the CPU reference runs the unfused loss), the pass seeded with its dloss. */
        mt_tensor *h3r = mt_reshape(ctx, h3, 2, (int64_t[]){B * T, C});
        mt_tensor *dloss = mt_full(ctx, 0, NULL, 0.7f);
        mt_tensor *ce = mt_cross_entropy_fused(ctx, mt_linear(ctx, h3r, p[0], NULL), tgt, 0.1f, -100, dloss);
        if (!ce || mt_backward(ctx, ce, dloss) != MT_OK) {
            printf("fused step failed: %s\n", mt_last_error());
            return NULL;
        }
        int has = ctx->ex.backend->cross_entropy_fused != NULL;
        CHECK(has == (ctx->tape[ce->node].seed == dloss), "fused: the %s backend %s the fused classifier",
              ctx->ex.backend->name, has ? "did not take" : "took");
        return ce;
    }
    mt_tensor *logits = mt_reshape(ctx, mt_linear(ctx, h3, p[0], NULL), 2, (int64_t[]){B * T, V});
    mt_tensor *ce = mt_cross_entropy(ctx, logits, tgt, 0.1f, -100);
    int last = -1;
    mt_tensor *aux = mt_mean(ctx, mt_max(ctx, mt_softmax(ctx, logits, -1), &last, 1, 0), NULL, 0, 0);
    mt_tensor *loss = mt_add(ctx, ce, mt_mul_scalar(ctx, aux, 0.01f));
    if (!loss) {
        printf("forward failed: %s\n", mt_last_error());
        return NULL;
    }
    if (mt_backward(ctx, loss, NULL) != MT_OK) {
        printf("backward failed: %s\n", mt_last_error());
        return NULL;
    }
    return loss;
}

static void adamw_all(net *n, int step) {
    float b1 = 0.9f, b2 = 0.98f, lr = 3e-3f;
    float bc1 = 1.0f - powf(b1, (float)step), bc2 = 1.0f - powf(b2, (float)step);
    for (int i = 0; i < NP; i++) {
        if (!n->p[i]->grad) continue;
        n->ctx->ex.backend->adamw(&n->ctx->ex, mt_f32(n->p[i]), mt_f32(n->p[i]->grad), mt_f32(n->m[i]), mt_f32(n->v[i]),
                                  n->p[i]->numel, lr, b1, b2, 1e-8f, 0.01f, bc1, bc2, 1.0f);
    }
}

static float read_scalar(net *n, mt_tensor *t) {
    float x = NAN;
    if (t) mt_copy_to_host(n->ctx, t, &x, 4);
    return x;
}

/* Max-norm relative difference of two gradients, and their cosine. */
static void grad_diff(net *a, net *b, int i, double *rel, double *cosv) {
    int64_t n = a->p[i]->numel;
    float *x = malloc(4 * (size_t)n), *y = malloc(4 * (size_t)n);
    mt_copy_to_host(a->ctx, a->p[i]->grad, x, 4 * (size_t)n);
    mt_copy_to_host(b->ctx, b->p[i]->grad, y, 4 * (size_t)n);
    double md = 0, mx = 0, dot = 0, nx = 0, ny = 0;
    for (int64_t j = 0; j < n; j++) {
        md = fmax(md, fabs((double)x[j] - y[j]));
        mx = fmax(mx, fabs((double)y[j]));
        dot += (double)x[j] * y[j];
        nx += (double)x[j] * x[j];
        ny += (double)y[j] * y[j];
    }
    *rel = md / (mx + 1e-12);
    *cosv = (nx > 0 && ny > 0) ? dot / sqrt(nx * ny) : 1.0;
    free(x);
    free(y);
}

static void compare(const char *mode, mt_precision prec, double loss_tol, double grad_tol, double cos_min) {
    net cpu, gpu;
    if (SELF) prec = MT_PRECISION_F32;
    if (!net_init(&cpu, MT_DEVICE_CPU) || !net_init(&gpu, DEVICE)) {
        CHECK(0, "%s: init: %s", mode, mt_last_error());
        return;
    }
    if (mt_context_set_precision(gpu.ctx, prec) != MT_OK) {
        CHECK(0, "%s: set_precision: %s", mode, mt_last_error());
        return;
    }
    mt_tensor *lc = net_step(&cpu), *lg = net_step(&gpu);
    CHECK(lc && lg, "%s: step failed", mode);
    if (lc && lg) {
        float fc = read_scalar(&cpu, lc), fg = read_scalar(&gpu, lg);
        printf("%-5s loss cpu %.7f gpu %.7f\n", mode, fc, fg);
        CHECK(fabs(fc - fg) <= loss_tol * fabs(fc), "%s: loss %.7f vs %.7f", mode, fg, fc);
        for (int i = 0; i < NP; i++) {
            double rel, cosv;
            if (!cpu.p[i]->grad || !gpu.p[i]->grad) {
                CHECK(0, "%s: %s has no gradient", mode, PNAMES[i]);
                continue;
            }
            grad_diff(&gpu, &cpu, i, &rel, &cosv);
            printf("      d%-6s max rel diff %.2e cos %.6f\n", PNAMES[i], rel, cosv);
            CHECK(rel <= grad_tol, "%s: grad of %s differs by %.3g (tolerance %.3g)", mode, PNAMES[i], rel, grad_tol);
            CHECK(cosv >= cos_min, "%s: grad of %s: cosine %.6f < %.6f", mode, PNAMES[i], cosv, cos_min);
        }
    }
    net_free(&cpu);
    net_free(&gpu);
}

static void warmup_no_alloc(void) {
    net gpu;
    if (!net_init(&gpu, DEVICE)) {
        CHECK(0, "warm-up: init: %s", mt_last_error());
        return;
    }
    if (!SELF) mt_context_set_precision(gpu.ctx, MT_PRECISION_BF16);
    uint64_t before = 0;
    mt_cuda_alloc_stats s0, s1;
    memset(&s0, 0, sizeof s0);
    memset(&s1, 0, sizeof s1);
    for (int step = 1; step <= 6; step++) {
        if (step == 3) {
            before = mt_sys_alloc_count();
            if (!SELF) mt_cuda_alloc_stats_get(EMU ? 0 : DEVICE, &s0);
        }
        zero_grads(&gpu);
        mt_tensor *l = net_step(&gpu);
        CHECK(l != NULL, "warm-up step %d failed", step);
        adamw_all(&gpu, step);
        float loss = read_scalar(&gpu, l);
        CHECK(isfinite(loss), "warm-up step %d: loss %g", step, loss);
        mt_context_reset(gpu.ctx);
    }
    uint64_t after = mt_sys_alloc_count();
    if (!SELF) mt_cuda_alloc_stats_get(EMU ? 0 : DEVICE, &s1);
    printf("warm-up: system allocations in steps 3-6: %llu; cudaMalloc calls: %llu (reserved %.1f MiB)\n",
           (unsigned long long)(after - before), (unsigned long long)(s1.n_malloc - s0.n_malloc),
           (double)s1.bytes_reserved / 1048576.0);
    CHECK(after == before, "a training step after warm-up made %llu system allocations",
          (unsigned long long)(after - before));
    CHECK(s1.n_malloc == s0.n_malloc, "a training step after warm-up called cudaMalloc %llu times",
          (unsigned long long)(s1.n_malloc - s0.n_malloc));
    net_free(&gpu);
}

static void curve(void) {
    net f32n, bf16n;
    if (!net_init(&f32n, DEVICE) || !net_init(&bf16n, DEVICE)) {
        CHECK(0, "curve: init: %s", mt_last_error());
        return;
    }
    if (!SELF) mt_context_set_precision(bf16n.ctx, MT_PRECISION_BF16);
    double worst = 0, first = 0, lastf = 0, lastb = 0;
    for (int step = 1; step <= 50; step++) {
        zero_grads(&f32n);
        zero_grads(&bf16n);
        mt_tensor *la = net_step(&f32n), *lb = net_step(&bf16n);
        if (!la || !lb) {
            CHECK(0, "curve: step %d failed", step);
            break;
        }
        adamw_all(&f32n, step);
        adamw_all(&bf16n, step);
        double fa = read_scalar(&f32n, la), fb = read_scalar(&bf16n, lb);
        if (step == 1) first = fa;
        lastf = fa;
        lastb = fb;
        worst = fmax(worst, fabs(fa - fb) / fabs(fa));
        if (step % 10 == 0 || step == 1) printf("curve step %2d: f32 %.5f bf16 %.5f\n", step, fa, fb);
        mt_context_reset(f32n.ctx);
        mt_context_reset(bf16n.ctx);
    }
    printf("curve: worst relative gap %.4f; f32 %.4f -> %.4f\n", worst, first, lastf);
    CHECK(lastf < first * 0.8, "curve: f32 loss did not fall (%.4f -> %.4f)", first, lastf);
    CHECK(worst < 0.05, "curve: bf16 loss strays from f32 by %.3f (> 5%%)", worst);
    CHECK(fabs(lastb - lastf) < 0.03 * lastf, "curve: final bf16 loss %.4f vs f32 %.4f", lastb, lastf);
    net_free(&f32n);
    net_free(&bf16n);
}

/* The fused classifier's guards on the device under test: a pass not from the fused loss or seeded
 * with another tensor fails, an op reading the overwritten logits is refused, and logits that are not
 * the last op's output take the unfused path (the same gradient as mt_cross_entropy). */
static void fused_guards(void) {
    net n;
    if (!net_init(&n, DEVICE)) {
        CHECK(0, "fused guards: init: %s", mt_last_error());
        return;
    }
    mt_context *ctx = n.ctx;
    if (!ctx->ex.backend->cross_entropy_fused) {
        printf("fused guards: the %s backend has no fused classifier (mt_cross_entropy_fused is unfused)\n",
               ctx->ex.backend->name);
        net_free(&n);
        return;
    }
    mt_tensor *tgt = mt_from_data(ctx, MT_DTYPE_I32, 1, (int64_t[]){B * T}, g_tgt);
    mt_tensor *x = mt_from_data(ctx, MT_DTYPE_F32, 2, (int64_t[]){B * T, C}, g_init[3]);
    mt_tensor *seed = mt_full(ctx, 0, NULL, 1.0f), *other = mt_full(ctx, 0, NULL, 1.0f);
    /* another reader recorded after the loss */
    mt_tensor *lg = mt_linear(ctx, x, n.p[0], NULL);
    mt_tensor *ce = mt_cross_entropy_fused(ctx, lg, tgt, 0.1f, -100, seed);
    CHECK(ce && ctx->tape[ce->node].seed == seed, "fused guards: the fresh logits did not take the fused path");
    mt_tensor *tot = mt_mul_scalar(ctx, ce, 2.0f);
    mt_status st = tot ? mt_backward(ctx, tot, NULL) : ctx->status;
    CHECK(st == MT_ERR_STATE, "fused guards: a pass not from the fused loss gave %s", mt_status_str(st));
    st = mt_backward(ctx, ce, other);
    CHECK(st == MT_ERR_STATE, "fused guards: a pass seeded with another tensor gave %s", mt_status_str(st));
    mt_context_reset(ctx);
    tgt = mt_from_data(ctx, MT_DTYPE_I32, 1, (int64_t[]){B * T}, g_tgt);
    x = mt_from_data(ctx, MT_DTYPE_F32, 2, (int64_t[]){B * T, C}, g_init[3]);
    seed = mt_full(ctx, 0, NULL, 1.0f);
    lg = mt_linear(ctx, x, n.p[0], NULL);
    ce = mt_cross_entropy_fused(ctx, lg, tgt, 0.1f, -100, seed);
    tot = mt_mean(ctx, lg, NULL, 0, 0);
    CHECK(!tot && ctx->status == MT_ERR_STATE, "fused guards: a reader of the overwritten logits was not refused");
    mt_context_reset(ctx);
    /* logits read before the loss (not the last op's output): the unfused loss, the plain loss's gradient */
    float *gw[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        mt_context_reset(ctx);
        if (n.p[0]->grad) mt_fill(ctx, n.p[0]->grad, 0.0f);
        tgt = mt_from_data(ctx, MT_DTYPE_I32, 1, (int64_t[]){B * T}, g_tgt);
        x = mt_from_data(ctx, MT_DTYPE_F32, 2, (int64_t[]){B * T, C}, g_init[3]);
        seed = mt_full(ctx, 0, NULL, 0.5f);
        lg = mt_linear(ctx, x, n.p[0], NULL);
        CHECK(mt_mul_scalar(ctx, lg, 2.0f) != NULL, "fused guards: %s", mt_last_error()); /* a reader first */
        ce = k ? mt_cross_entropy(ctx, lg, tgt, 0.1f, -100) : mt_cross_entropy_fused(ctx, lg, tgt, 0.1f, -100, seed);
        if (k == 0) CHECK(ce && !ctx->tape[ce->node].seed, "fused guards: logits not the last output were fused");
        st = ce ? mt_backward(ctx, ce, seed) : ctx->status;
        CHECK(st == MT_OK, "fused guards: unfused fallback: %s", mt_last_error());
        gw[k] = calloc((size_t)n.p[0]->numel, 4);
        if (st == MT_OK && n.p[0]->grad) mt_copy_to_host(ctx, n.p[0]->grad, gw[k], 4 * (size_t)n.p[0]->numel);
    }
    CHECK(memcmp(gw[0], gw[1], 4 * (size_t)n.p[0]->numel) == 0, "fused guards: the fallback's gradient differs");
    free(gw[0]);
    free(gw[1]);
    printf("fused guards: a foreign root or seed and a reader of the overwritten logits refused, the unfused "
           "fallback exact\n");
    net_free(&n);
}

/* The residual graphs of residual_sharing: r = x0 * s read by a tanh and through a reshape before
 * add_dropout(r, ...), whose output y is the residual of a second add_dropout (a chain); then residuals
 * that must not share: r read again after the add, a view of r read after it, r as both inputs. On a
 * GPU backend the adds of the first kind take their residual's gradient memory (mt_backward's plan),
 * the others may not. flags[k]: the k-th add's grad_shares_in0 after the pass. */
enum { RS_ADDS = 5 };
static mt_tensor *residual_graph(net *n, mt_tensor *x0, mt_tensor *s, int flags[RS_ADDS]) {
    mt_context *ctx = n->ctx;
    const int64_t flat[2] = {B * T, C}, full[3] = {B, T, C};
    mt_tensor *adds[RS_ADDS];
    mt_tensor *r = mt_mul(ctx, x0, s);
    mt_tensor *a = mt_tanh(ctx, r);
    mt_tensor *b = mt_reshape(ctx, mt_sigmoid(ctx, mt_reshape(ctx, r, 2, flat)), 3, full);
    mt_tensor *y = adds[0] = mt_add_dropout(ctx, r, mt_mul(ctx, a, b), 0.2f, 1); /* r's last reader */
    y = adds[1] = mt_add_dropout(ctx, y, mt_gelu(ctx, y), 0.2f, 1);              /* y's last reader */
    mt_tensor *loss = mt_mean(ctx, mt_mul(ctx, y, y), NULL, 0, 0);
    /* r2 read after the add: no sharing */
    mt_tensor *r2 = mt_mul(ctx, x0, mt_tanh(ctx, s));
    mt_tensor *z = adds[2] = mt_add_dropout(ctx, r2, mt_sigmoid(ctx, r2), 0.2f, 1);
    loss = mt_add(ctx, loss, mt_mean(ctx, mt_mul(ctx, z, r2), NULL, 0, 0));
    /* a view of r3 read after the add: no sharing */
    mt_tensor *r3 = mt_add(ctx, x0, s);
    z = adds[3] = mt_add_dropout(ctx, r3, mt_tanh(ctx, r3), 0.2f, 1);
    mt_tensor *v = mt_reshape(ctx, r3, 2, flat);
    loss = mt_add(ctx, loss, mt_mean(ctx, mt_mul(ctx, mt_reshape(ctx, z, 2, flat), mt_exp(ctx, v)), NULL, 0, 0));
    /* r4 as both inputs: no sharing */
    mt_tensor *r4 = mt_sub(ctx, x0, s);
    z = adds[4] = mt_add_dropout(ctx, r4, r4, 0.2f, 1);
    loss = mt_add(ctx, loss, mt_mean(ctx, mt_tanh(ctx, z), NULL, 0, 0));
    if (!loss || mt_backward(ctx, loss, NULL) != MT_OK) {
        printf("residual sharing: %s\n", mt_last_error());
        return NULL;
    }
    for (int k = 0; k < RS_ADDS; k++) flags[k] = ctx->tape[adds[k]->node].grad_shares_in0;
    return loss;
}

/* The residual-gradient sharing of mt_backward (core/autograd.c) on the device under test: the adds
 * that are their residual's last reader share its gradient, the others do not, and every gradient
 * equals the CPU's, which never shares (f32: within rounding of the reductions). */
static void residual_sharing(void) {
    net cpu, gpu;
    if (!net_init(&cpu, MT_DEVICE_CPU) || !net_init(&gpu, DEVICE)) {
        CHECK(0, "residual sharing: init: %s", mt_last_error());
        return;
    }
    float gx[2][B * T * C], gs[2][C], lv[2];
    int flags[2][RS_ADDS];
    net *nets[2] = {&cpu, &gpu};
    for (int k = 0; k < 2; k++) {
        mt_context *ctx = nets[k]->ctx;
        mt_tensor *x0 = mt_from_data(ctx, MT_DTYPE_F32, 3, (int64_t[]){B, T, C}, g_init[3]);
        mt_tensor *s = mt_from_data(ctx, MT_DTYPE_F32, 1, (int64_t[]){C}, g_init[1]);
        CHECK(x0 && s && mt_requires_grad(x0, 1) == MT_OK && mt_requires_grad(s, 1) == MT_OK, "residual sharing: leaves");
        mt_tensor *loss = x0 && s ? residual_graph(nets[k], x0, s, flags[k]) : NULL;
        CHECK(loss != NULL, "residual sharing: the %s pass failed", k ? "device" : "CPU");
        if (!loss) goto out;
        lv[k] = read_scalar(nets[k], loss);
        mt_copy_to_host(ctx, x0->grad, gx[k], sizeof gx[k]);
        mt_copy_to_host(ctx, s->grad, gs[k], sizeof gs[k]);
    }
    int one_region = gpu.ctx->ex.backend != &mt_cpu_backend;
    for (int j = 0; j < RS_ADDS; j++) {
        CHECK(flags[0][j] == 0, "residual sharing: the CPU shared add %d's gradient", j);
        CHECK(flags[1][j] == (one_region && j < 2), "residual sharing: add %d %s its residual's gradient", j,
              flags[1][j] ? "shares" : "does not share");
    }
    CHECK(fabsf(lv[0] - lv[1]) <= 1e-5f * fabsf(lv[0]), "residual sharing: loss %.7f vs CPU %.7f", lv[1], lv[0]);
    double dx = 0, mx = 0, ds = 0, ms = 0;
    for (int i = 0; i < B * T * C; i++) {
        dx = fmax(dx, fabs((double)gx[1][i] - gx[0][i]));
        mx = fmax(mx, fabs((double)gx[0][i]));
    }
    for (int i = 0; i < C; i++) {
        ds = fmax(ds, fabs((double)gs[1][i] - gs[0][i]));
        ms = fmax(ms, fabs((double)gs[0][i]));
    }
    printf("residual sharing: adds sharing %d %d %d %d %d; dx0 max rel diff %.2e, ds %.2e\n", flags[1][0],
           flags[1][1], flags[1][2], flags[1][3], flags[1][4], dx / mx, ds / ms);
    CHECK(mx > 0 && dx <= 1e-5 * mx, "residual sharing: grad of x0 differs by %.3g", dx / mx);
    CHECK(ms > 0 && ds <= 1e-5 * ms, "residual sharing: grad of s differs by %.3g", ds / ms);
out:
    net_free(&cpu);
    net_free(&gpu);
}

/* mt_from_data_packed on the device under test: a batch's ids, mask and targets in one host-to-device
 * copy (one counted launch on the CUDA backend), each tensor reading back its host array. */
static void packed_upload(void) {
    net n;
    if (!net_init(&n, DEVICE)) {
        CHECK(0, "packed upload: init: %s", mt_last_error());
        return;
    }
    mt_context *ctx = n.ctx;
    mt_upload up[3] = {{MT_DTYPE_I32, 2, {B, T}, g_ids, NULL},
                       {MT_DTYPE_F32, 4, {B, 1, 1, T}, g_mask, NULL},
                       {MT_DTYPE_I32, 1, {B * T}, g_tgt, NULL}};
    int cuda = ctx->ex.backend != &mt_cpu_backend;
    mt_cuda_counters c0 = {0}, c1 = {0};
    if (cuda) mt_cuda_counters_get(&c0);
    int ok = mt_from_data_packed(ctx, up, 3);
    if (cuda) mt_cuda_counters_get(&c1);
    CHECK(ok, "packed upload: %s", mt_last_error());
    if (ok) {
        CHECK(c1.launches - c0.launches == (uint64_t)cuda, "packed upload: %llu launches",
              (unsigned long long)(c1.launches - c0.launches));
        int32_t ids[B * T], tgt[B * T];
        float mask[B * T];
        mt_copy_to_host(ctx, up[0].t, ids, sizeof ids);
        mt_copy_to_host(ctx, up[1].t, mask, sizeof mask);
        mt_copy_to_host(ctx, up[2].t, tgt, sizeof tgt);
        CHECK(!memcmp(ids, g_ids, sizeof ids) && !memcmp(mask, g_mask, sizeof mask) && !memcmp(tgt, g_tgt, sizeof tgt),
              "packed upload: a tensor differs from its host array");
        printf("packed upload: 3 arrays in %llu launch(es), read back equal\n",
               (unsigned long long)(c1.launches - c0.launches));
    }
    net_free(&n);
}

int main(void) {
    const char *self = getenv("MT_GPU_TEST_SELF"), *emu = getenv("MT_GPU_TEST_EMU");
    if (emu && *emu && *emu != '0') {
        EMU = 1;
        DEVICE = EMU_DEVICE;
        printf("MT_GPU_TEST_EMU: the CUDA backend runs on the CPU emulator of tests/gpu/emu\n");
    } else if (self && *self && *self != '0') {
        SELF = 1;
        DEVICE = MT_DEVICE_CPU;
        printf("MT_GPU_TEST_SELF: the CPU stands in for the GPU (f32 only)\n");
    } else {
        char why[160];
        if (mt_cuda_probe(why, sizeof why) == 0) {
            printf("skipped: no CUDA device (cudaGetDeviceCount: %s)\n", why);
            return 77;
        }
    }
    make_data();
    compare("f32", MT_PRECISION_F32, 1e-5, 1e-3, 0.99999);
    compare("tf32", MT_PRECISION_TF32, 5e-3, 5e-2, 0.999);
    compare("bf16", MT_PRECISION_BF16, 1e-2, 0.25, 0.99);
    g_fused = 1;
    compare("fused", MT_PRECISION_F32, 1e-5, 1e-3, 0.99999);
    compare("fbf16", MT_PRECISION_BF16, 1e-2, 0.25, 0.99);
    g_fused = 0;
    fused_guards();
    residual_sharing();
    packed_upload();
    warmup_no_alloc();
    curve();
    for (int i = 0; i < NP; i++) free(g_init[i]);
    printf("%s (%d failures)\n", n_fail ? "FAILED" : "PASSED", n_fail);
    return n_fail ? 1 : 0;
}
