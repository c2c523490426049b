/*
 * bench_gpu.cu — mt-bench-gpu: the CUDA backend against anchors measured in the same run.
 *
 *   gemm       engine GEMM (the backend table, and mt_linear through the op layer) vs cuBLAS called
 *              directly, transformer-sized shapes (d_model 512, d_ff 2048, 32k vocabulary, 8192 tokens),
 *              f32, tf32 and bf16 (bf16 operands, f32 output, f32 accumulation). Ratio = cuBLAS time /
 *              engine time (>= 0.9 is the goal); TFLOP/s printed for both.
 *   attention  the fused flash-style kernels (forward, backward) vs an unfused anchor made of cuBLAS
 *              batched GEMMs and the engine's softmax (scores written to memory). Ratio = anchor time /
 *              fused time.
 *   flash      the bf16 tensor-core attention (cuda/flash_attention.cu, the bf16 precision mode) vs
 *              PyTorch's torch.nn.functional.scaled_dot_product_attention in bf16 on the same shapes, in the
 *              same run (tests/gpu/sdpa_bench.py, run by the first Python that imports torch with CUDA:
 *              $MT_TORCH_PYTHON, the benchmark venv, /usr/bin/python3), causal and not: forward and
 *              forward+backward TFLOP/s (the usual count: 4·B·H·T²·D forward, 2.5 times that backward,
 *              halved when causal) and the ratio engine / PyTorch; the f32 kernel's forward+backward
 *              for reference. The engine reads f32 q/k/v (rounding them as it stages its tiles),
 *              PyTorch bf16 tensors.
 *   train      hook for training tokens/s vs PyTorch: not wired until the model lands (prints so).
 * Human table first, then one JSON line with every figure. Times: median of timed repetitions after
 * warm-up, each repetition closed by a stream synchronisation on both sides.
 *
 *   mt-bench-gpu [gemm|attention|flash|all] [--quick]
 *   mt-bench-gpu --count [--layers E,D] [--mha] [--micro N]   launches and host waits per training
 *                                                            step (bench_count.c)
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.cuh" /* white-box: the anchor runs on the engine context's own stream */
extern "C" {
#include "../bench/bench_python.h"
#include "core/context.h"
#include "ops/ops.h"
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define CK(call)                                                                              \
    do {                                                                                      \
        auto s_ = (call);                                                                     \
        if ((int)s_ != 0) {                                                                   \
            fprintf(stderr, "mt-bench-gpu: %s failed (%d) at line %d: %s\n", #call, (int)s_, __LINE__, \
                    mt_last_error());                                                         \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static int g_quick;
static char g_json[16384];
static size_t g_json_n;

static void json_add(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void json_add(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    g_json_n += (size_t)vsnprintf(g_json + g_json_n, sizeof g_json - g_json_n, fmt, ap);
    va_end(ap);
}

/* Median seconds per call of fn over reps, after warm-up; sync() closes each repetition. */
template <typename F, typename S>
static double time_it(F fn, S sync, int reps) {
    for (int i = 0; i < 3; i++) fn();
    sync();
    double t[64];
    if (reps > 64) reps = 64;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        fn();
        sync();
        t[r] = now() - t0;
    }
    for (int i = 1; i < reps; i++)
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    return t[reps / 2];
}

__global__ void init_kernel(float *x, int64_t n, uint32_t seed) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        x[i] = ((float)(h & 0xffff) / 65536.0f - 0.5f) * 0.2f;
    }
}

__global__ void to_bf16_kernel(__nv_bfloat16 *y, const float *x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(x[i]);
}

static float *dev_rand(int64_t n, uint32_t seed) {
    float *p = NULL;
    CK(cudaMalloc(&p, sizeof(float) * (size_t)n));
    init_kernel<<<1024, 256>>>(p, n, seed);
    CK(cudaGetLastError());
    return p;
}

typedef struct shape {
    const char *name;
    int64_t M, N, K;
} shape;

static void bench_gemm(mt_context *ctx, cublasHandle_t h, cudaStream_t s) {
    static const shape shapes[] = {
        {"qkv 8192x1536x512", 8192, 1536, 512}, {"out 8192x512x512", 8192, 512, 512},
        {"ffn1 8192x2048x512", 8192, 2048, 512}, {"ffn2 8192x512x2048", 8192, 512, 2048},
        {"logits 8192x32000x512", 8192, 32000, 512}, {"square 4096^3", 4096, 4096, 4096},
    };
    int n_shapes = g_quick ? 2 : (int)(sizeof shapes / sizeof shapes[0]);
    const mt_backend *be = ctx->ex.backend;
    mt_exec *ex = &ctx->ex;
    auto sync_both = [&]() {
        CK(cudaStreamSynchronize(s));
        CK(be->sync(ex));
    };
    printf("\n%-24s %-5s %12s %12s %9s %9s %7s\n", "GEMM (row-major x @ w^T)", "type", "cuBLAS ms", "engine ms",
           "cuBLAS TF", "engine TF", "ratio");
    json_add("\"gemm\":[");
    for (int si = 0; si < n_shapes; si++) {
        const shape *sh = &shapes[si];
        int64_t M = sh->M, N = sh->N, K = sh->K;
        double flop = 2.0 * (double)M * (double)N * (double)K;
        float *x = dev_rand(M * K, 1), *w = dev_rand(N * K, 2), *y = NULL;
        CK(cudaMalloc(&y, sizeof(float) * (size_t)(M * N)));
        __nv_bfloat16 *xb = NULL, *wb = NULL;
        CK(cudaMalloc(&xb, 2 * (size_t)(M * K)));
        CK(cudaMalloc(&wb, 2 * (size_t)(N * K)));
        to_bf16_kernel<<<1024, 256>>>(xb, x, M * K);
        to_bf16_kernel<<<1024, 256>>>(wb, w, N * K);
        CK(cudaDeviceSynchronize());
        float one = 1.0f, zero = 0.0f;
        int reps = flop > 1e11 ? 10 : 30;
        for (int mode = 0; mode < 4; mode++) {
            /* mode 0 f32, 1 tf32, 2 bf16 (gemm_lowp on bf16 operands), 3 bf16 through mt_linear from f32 */
            const char *tn[] = {"f32", "tf32", "bf16", "bf16*"};
            cublasComputeType_t ct = mode == 0 ? CUBLAS_COMPUTE_32F
                                     : mode == 1 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                 : CUBLAS_COMPUTE_32F;
            cudaDataType_t at = mode >= 2 ? CUDA_R_16BF : CUDA_R_32F;
            const void *A = mode >= 2 ? (const void *)xb : (const void *)x, *W = mode >= 2 ? (const void *)wb : (const void *)w;
            /* y (M,N) = x (M,K) @ w^T: column-major y^T = w x^T */
            double tc = time_it(
                [&]() {
                    CK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, W, at, (int)K, A, at,
                                    (int)K, &zero, y, CUDA_R_32F, (int)N, ct, CUBLAS_GEMM_DEFAULT));
                },
                [&]() { CK(cudaStreamSynchronize(s)); }, reps);
            double te;
            if (mode < 2) {
                ex->precision = mode == 1 ? MT_PRECISION_TF32 : MT_PRECISION_F32;
                te = time_it([&]() { CK(be->gemm(ex, 0, 1, M, N, K, 1.0f, x, K, 0, w, K, 0, 0.0f, y, N, 0, 1)); },
                             sync_both, reps);
                ex->precision = MT_PRECISION_F32;
            } else if (mode == 2) {
                te = time_it(
                    [&]() {
                        CK(be->gemm_lowp(ex, MT_DTYPE_BF16, 0, 1, M, N, K, 1.0f, xb, K, 0, wb, K, 0, 0.0f, y, N, 0, 1));
                    },
                    sync_both, reps);
            } else {
                /* The op layer in bf16 mode from f32 tensors: casts of x and w included. */
                mt_context_set_precision(ctx, MT_PRECISION_BF16);
                mt_tensor xt = {}, wt = {};
                xt.ndim = 2, xt.shape[0] = M, xt.shape[1] = K, xt.numel = M * K, xt.dtype = MT_DTYPE_F32;
                wt.ndim = 2, wt.shape[0] = N, wt.shape[1] = K, wt.numel = N * K, wt.dtype = MT_DTYPE_F32;
                xt.device = wt.device = 0, xt.data = x, wt.data = w, xt.node = wt.node = -1;
                int saved = mt_no_grad_begin(ctx);
                te = time_it(
                    [&]() {
                        mt_tensor *yt = mt_linear(ctx, &xt, &wt, NULL);
                        if (!yt) {
                            fprintf(stderr, "mt_linear: %s\n", mt_last_error());
                            exit(1);
                        }
                        CK(mt_context_reset(ctx));
                    },
                    sync_both, reps);
                mt_no_grad_end(ctx, saved);
                mt_context_set_precision(ctx, MT_PRECISION_F32);
            }
            double ratio = tc / te;
            printf("%-24s %-5s %12.3f %12.3f %9.1f %9.1f %7.3f\n", sh->name, tn[mode], tc * 1e3, te * 1e3,
                   flop / tc * 1e-12, flop / te * 1e-12, ratio);
            json_add("%s{\"shape\":\"%s\",\"type\":\"%s\",\"cublas_ms\":%.4f,\"engine_ms\":%.4f,\"ratio\":%.4f}",
                     (si || mode) ? "," : "", sh->name, tn[mode], tc * 1e3, te * 1e3, ratio);
        }
        cudaFree(x), cudaFree(w), cudaFree(y), cudaFree(xb), cudaFree(wb);
    }
    json_add("],");
    printf("(bf16: operands already bf16 on both sides; bf16*: mt_linear in bf16 mode from f32 tensors, "
           "casts included)\n");
}

typedef struct acfg {
    const char *name;
    int64_t B, H, Hk, Tq, Tk, D, Dv;
    int causal;
} acfg;

static void bench_attention(mt_context *ctx, cublasHandle_t h, cudaStream_t s) {
    static const acfg cfgs[] = {
        {"train self B64 H8 T128 D64 causal", 64, 8, 8, 128, 128, 64, 64, 1},
        {"train cross B64 H8 T128 D64", 64, 8, 8, 128, 128, 64, 64, 0},
        {"MLA train B64 H8 Hk8 T128 D96 Dv64", 64, 8, 8, 128, 128, 96, 64, 1},
        {"decode MLA B128 H8 Hk1 Tk64 D160 Dv128", 128, 8, 1, 1, 64, 160, 128, 1},
        {"long B8 H8 T1024 D64 causal", 8, 8, 8, 1024, 1024, 64, 64, 1},
    };
    int n_cfg = g_quick ? 2 : (int)(sizeof cfgs / sizeof cfgs[0]);
    const mt_backend *be = ctx->ex.backend;
    mt_exec *ex = &ctx->ex;
    auto sync_both = [&]() {
        CK(cudaStreamSynchronize(s));
        CK(be->sync(ex));
    };
    printf("\n%-40s %10s %10s %10s %9s %7s\n", "attention (f32)", "anchor ms", "fwd ms", "bwd ms", "fwd TF", "ratio");
    json_add("\"attention\":[");
    for (int ci = 0; ci < n_cfg; ci++) {
        const acfg *c = &cfgs[ci];
        int64_t nq = c->B * c->H * c->Tq * c->D, nk = c->B * c->Hk * c->Tk * c->D, nv = c->B * c->Hk * c->Tk * c->Dv;
        int64_t no = c->B * c->H * c->Tq * c->Dv, nl = c->B * c->H * c->Tq, ns = c->B * c->H * c->Tq * c->Tk;
        float *q = dev_rand(nq, 3), *k = dev_rand(nk, 4), *v = dev_rand(nv, 5), *o = NULL, *l = NULL, *g = dev_rand(no, 6);
        float *dq = NULL, *dk = NULL, *dv = NULL, *S = NULL;
        CK(cudaMalloc(&o, 4 * (size_t)no));
        CK(cudaMalloc(&l, 4 * (size_t)nl));
        CK(cudaMalloc(&dq, 4 * (size_t)nq));
        CK(cudaMalloc(&dk, 4 * (size_t)nk));
        CK(cudaMalloc(&dv, 4 * (size_t)nv));
        CK(cudaMalloc(&S, 4 * (size_t)ns));
        CK(cudaDeviceSynchronize());
        mt_attn_desc ad = {};
        ad.B = c->B, ad.H = c->H, ad.Hk = c->Hk, ad.Tq = c->Tq, ad.Tk = c->Tk, ad.D = c->D, ad.Dv = c->Dv;
        ad.scale = 1.0f / sqrtf((float)c->D), ad.causal = c->causal;
        double tf = time_it([&]() { CK(be->attention_fwd(ex, o, l, q, k, v, &ad)); }, sync_both, 20);
        double tb = time_it([&]() { CK(be->attention_bwd(ex, dq, dk, dv, g, o, l, q, k, v, &ad)); }, sync_both, 10);
        /* Unfused anchor (Hk == H only): S = scale Q K^T (batched), softmax(S), O = S V. */
        double ta = 0;
        if (c->Hk == c->H) {
            float alpha = ad.scale, one = 1.0f, zero = 0.0f;
            int bh = (int)(c->B * c->H);
            CK(cublasSetStream(h, ((mt_cuda_exec *)ex->priv)->stream)); /* one stream: no syncs in between */
            ta = time_it(
                [&]() {
                    CK(cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)c->Tk, (int)c->Tq, (int)c->D, &alpha,
                                                 k, (int)c->D, c->Tk * c->D, q, (int)c->D, c->Tq * c->D, &zero, S,
                                                 (int)c->Tk, c->Tq * c->Tk, bh));
                    CK(be->softmax_fwd(ex, S, S, bh * c->Tq, c->Tk, 0));
                    CK(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)c->Dv, (int)c->Tq, (int)c->Tk, &one,
                                                 v, (int)c->Dv, c->Tk * c->Dv, S, (int)c->Tk, c->Tq * c->Tk, &zero, o,
                                                 (int)c->Dv, c->Tq * c->Dv, bh));
                },
                sync_both, 20);
            CK(cublasSetStream(h, s));
        }
        double causal_frac = c->causal ? 0.5 : 1.0;
        double flop = 2.0 * (double)(c->B * c->H * c->Tq * c->Tk) * (double)(c->D + c->Dv) * causal_frac;
        double ratio = ta > 0 ? ta / tf : 0;
        printf("%-40s %10.3f %10.3f %10.3f %9.2f %7.2f\n", c->name, ta * 1e3, tf * 1e3, tb * 1e3, flop / tf * 1e-12,
               ratio);
        json_add("%s{\"case\":\"%s\",\"anchor_ms\":%.4f,\"fwd_ms\":%.4f,\"bwd_ms\":%.4f,\"fwd_tflops\":%.3f,"
                 "\"ratio_vs_unfused\":%.3f}",
                 ci ? "," : "", c->name, ta * 1e3, tf * 1e3, tb * 1e3, flop / tf * 1e-12, ratio);
        cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o), cudaFree(l), cudaFree(g);
        cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(S);
    }
    json_add("],");
    printf("(anchor: cuBLAS QK^T + engine softmax + cuBLAS PV, scores in device memory, Hk == H only; "
           "ratio = anchor / fused forward)\n");
}

/* ---------------------------------------------------------------------------------------------
 * flash: the bf16 tensor-core attention vs PyTorch's scaled_dot_product_attention
 * ------------------------------------------------------------------------------------------- */

typedef struct fcfg {
    int64_t B, H, T, D;
    int causal;
    double torch_fwd_ms, torch_fb_ms; /* 0: PyTorch gave no figure */
} fcfg;

/* The first interpreter (bench_python.h) that imports torch and sees a CUDA device, or NULL (why says
 * what was tried). */
static const char *torch_python(char *why, size_t cap) {
    return mtb_python_where("import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)", why, cap);
}

/* Runs tests/gpu/sdpa_bench.py over every shape; fills torch_*_ms. 0 on success, else why is set. */
static int run_sdpa(fcfg *cfgs, int n, char *why, size_t cap, char *version, size_t vcap) {
    const char *py = torch_python(why, cap);
    if (!py) return -1;
    const char *src = getenv("MT_SOURCE_DIR");
    char cmd[4096];
    size_t len = (size_t)snprintf(cmd, sizeof cmd, "'%s' '%s/tests/gpu/sdpa_bench.py'", py, src && *src ? src : ".");
    for (int i = 0; i < n && len < sizeof cmd - 100; i++)
        len += (size_t)snprintf(cmd + len, sizeof cmd - len, " %lld %lld %lld %lld %d", (long long)cfgs[i].B,
                                (long long)cfgs[i].H, (long long)cfgs[i].T, (long long)cfgs[i].D, cfgs[i].causal);
    snprintf(cmd + len, sizeof cmd - len, " 2>&1");
    FILE *f = popen(cmd, "r");
    if (!f) {
        snprintf(why, cap, "popen(%s) failed", py);
        return -1;
    }
    char line[512];
    int got = 0;
    while (fgets(line, sizeof line, f)) {
        long long B, H, T, D;
        int c;
        double tf, tb;
        if (sscanf(line, "sdpa %lld %lld %lld %lld %d %lf %lf", &B, &H, &T, &D, &c, &tf, &tb) == 7) {
            for (int i = 0; i < n; i++)
                if (cfgs[i].B == B && cfgs[i].H == H && cfgs[i].T == T && cfgs[i].D == D && cfgs[i].causal == c) {
                    cfgs[i].torch_fwd_ms = tf;
                    cfgs[i].torch_fb_ms = tb;
                    got++;
                }
        } else if (!strncmp(line, "sdpa: ", 6)) {
            line[strcspn(line, "\n")] = 0;
            snprintf(version, vcap, "%s", line + 6);
        }
    }
    int rc = pclose(f);
    if (!got) {
        snprintf(why, cap, "sdpa_bench.py under %s gave no figure (exit status %d; %s)", py, rc, version);
        return -1;
    }
    return 0;
}

static void bench_flash(mt_context *ctx) {
    fcfg cfgs[] = {
        {64, 8, 128, 64, 1, 0, 0},   {64, 8, 128, 64, 0, 0, 0},   {8, 16, 1024, 64, 1, 0, 0},
        {8, 16, 1024, 64, 0, 0, 0},  {4, 16, 2048, 128, 1, 0, 0}, {4, 16, 2048, 128, 0, 0, 0},
    };
    int n_cfg = g_quick ? 4 : (int)(sizeof cfgs / sizeof cfgs[0]);
    const mt_backend *be = ctx->ex.backend;
    mt_exec *ex = &ctx->ex;
    char why[300] = "", version[200] = "?";
    printf("\nflash attention (bf16 tensor cores) vs PyTorch scaled_dot_product_attention (bf16)\n");
    char fwhy[200];
    if (!mt_cuda_flash_attention_supported(0, MT_PRECISION_BF16, 64, 64, 1, fwhy, sizeof fwhy)) {
        printf("flash: skipped on this device: %s\n", fwhy);
        json_add("\"flash\":null,");
        return;
    }
    int have_torch = run_sdpa(cfgs, n_cfg, why, sizeof why, version, sizeof version) == 0;
    if (have_torch) printf("(PyTorch: %s)\n", version);
    else printf("(PyTorch: unavailable: %s; engine figures only)\n", why);
    printf("%-34s %9s %9s %9s %9s %9s %9s %8s\n", "shape", "fwd TF", "f+b TF", "torch fwd", "torch f+b", "fwd x",
           "f+b x", "f32 f+b");
    json_add("\"flash\":[");
    auto sync = [&]() { CK(be->sync(ex)); };
    for (int ci = 0; ci < n_cfg; ci++) {
        fcfg *c = &cfgs[ci];
        int64_t n = c->B * c->H * c->T * c->D, nl = c->B * c->H * c->T;
        float *q = dev_rand(n, 11), *k = dev_rand(n, 12), *v = dev_rand(n, 13), *g = dev_rand(n, 14);
        float *o = NULL, *l = NULL, *dq = NULL, *dk = NULL, *dv = NULL;
        CK(cudaMalloc(&o, 4 * (size_t)n));
        CK(cudaMalloc(&l, 4 * (size_t)nl));
        CK(cudaMalloc(&dq, 4 * (size_t)n));
        CK(cudaMalloc(&dk, 4 * (size_t)n));
        CK(cudaMalloc(&dv, 4 * (size_t)n));
        CK(cudaDeviceSynchronize());
        mt_attn_desc ad = {};
        ad.B = c->B, ad.H = c->H, ad.Hk = c->H, ad.Tq = c->T, ad.Tk = c->T, ad.D = c->D, ad.Dv = c->D;
        ad.scale = 1.0f / sqrtf((float)c->D), ad.causal = c->causal;
        auto fwd = [&]() { CK(be->attention_fwd(ex, o, l, q, k, v, &ad)); };
        auto fwd_bwd = [&]() {
            CK(be->attention_fwd(ex, o, l, q, k, v, &ad));
            CK(be->attention_bwd(ex, dq, dk, dv, g, o, l, q, k, v, &ad));
        };
        CK(mt_context_set_precision(ctx, MT_PRECISION_BF16));
        double tf = time_it(fwd, sync, 20), tfb = time_it(fwd_bwd, sync, 10);
        CK(mt_context_set_precision(ctx, MT_PRECISION_F32));
        double t32 = time_it(fwd_bwd, sync, g_quick ? 3 : 5);
        double flop = 4.0 * (double)(c->B * c->H) * (double)c->T * (double)c->T * (double)c->D *
                      (c->causal ? 0.5 : 1.0);
        double tff = flop / tf * 1e-12, tfbf = 3.5 * flop / tfb * 1e-12;
        double rf = c->torch_fwd_ms > 0 ? c->torch_fwd_ms * 1e-3 / tf : 0,
               rfb = c->torch_fb_ms > 0 ? c->torch_fb_ms * 1e-3 / tfb : 0;
        char name[80];
        snprintf(name, sizeof name, "B%lld H%lld T%lld D%lld%s", (long long)c->B, (long long)c->H, (long long)c->T,
                 (long long)c->D, c->causal ? " causal" : "");
        printf("%-34s %9.1f %9.1f %9.1f %9.1f %9.2f %9.2f %8.1f\n", name, tff, tfbf,
               c->torch_fwd_ms > 0 ? flop / (c->torch_fwd_ms * 1e-3) * 1e-12 : 0.0,
               c->torch_fb_ms > 0 ? 3.5 * flop / (c->torch_fb_ms * 1e-3) * 1e-12 : 0.0, rf, rfb,
               3.5 * flop / t32 * 1e-12);
        json_add("%s{\"case\":\"%s\",\"fwd_tflops\":%.2f,\"fwdbwd_tflops\":%.2f,\"torch_fwd_ms\":%.4f,"
                 "\"torch_fwdbwd_ms\":%.4f,\"ratio_fwd_vs_torch\":%.3f,\"ratio_fwdbwd_vs_torch\":%.3f,"
                 "\"f32_fwdbwd_tflops\":%.2f}",
                 ci ? "," : "", name, tff, tfbf, c->torch_fwd_ms, c->torch_fb_ms, rf, rfb, 3.5 * flop / t32 * 1e-12);
        cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(g), cudaFree(o), cudaFree(l);
        cudaFree(dq), cudaFree(dk), cudaFree(dv);
    }
    json_add("],");
    printf("(TFLOP/s; x = engine / PyTorch, same shape, same run (0: no PyTorch figure); f32 f+b: the f32 kernel, "
           "TFLOP/s)\n");
}

extern "C" int mtb_gpu_count(int emu, int argc, char **argv);

int main(int argc, char **argv) {
    const char *what = "all";
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--count") == 0) {
            char why[160];
            if (mt_cuda_probe(why, sizeof why) == 0) {
                printf("mt-bench-gpu --count: no CUDA device (cudaGetDeviceCount: %s); mt-bench-gpu-emu --count "
                       "counts on the CPU emulator\n", why);
                return 77;
            }
            return mtb_gpu_count(0, argc, argv);
        }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) g_quick = 1;
        else what = argv[i];
    }
    char why[160];
    if (mt_cuda_probe(why, sizeof why) == 0) {
        printf("mt-bench-gpu: skipped: no CUDA device (cudaGetDeviceCount: %s)\n", why);
        return 77;
    }
    char desc[160];
    CK(mt_cuda_device_describe(0, desc, sizeof desc));
    printf("mt-bench-gpu on %s\n", desc);
    mt_context *ctx = NULL;
    CK(mt_context_create(0, &ctx));
    cublasHandle_t h;
    cudaStream_t s;
    CK(cudaSetDevice(0));
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CK(cublasCreate(&h));
    CK(cublasSetStream(h, s));
    json_add("{\"bench\":\"gpu\",\"device\":\"%s\",", desc);
    if (!strcmp(what, "all") || !strcmp(what, "gemm")) bench_gemm(ctx, h, s);
    if (!strcmp(what, "all") || !strcmp(what, "attention")) bench_attention(ctx, h, s);
    if (!strcmp(what, "all") || !strcmp(what, "flash")) bench_flash(ctx);
    printf("\ntrain: training tokens/s vs PyTorch: not wired yet (needs the model; see cuda/README.md)\n");
    json_add("\"train\":null}");
    printf("%s\n", g_json);
    cublasDestroy(h);
    cudaStreamDestroy(s);
    mt_context_free(ctx);
    return 0;
}
