/*
 * bench_ops.c — `mt-bench ops`: the op layer's throughput against anchors measured in the same run.
 *
 *   matmul  GFLOP/s of mt_matmul (op layer: checks, arena result, one backend GEMM) vs every GEMM
 *           library of the machine (gemm_libs.c: oneDNN, OpenBLAS, BLIS when installed) called
 *           directly on preallocated buffers with its own threads, as many as the engine's; the anchor
 *           of a shape is the fastest of them, named; ratio = engine / anchor. Shapes M x N x K
 *           (C (M,N) = op(A) (M,K) @ op(B) (K,N)): square, the training step's products (forward,
 *           and the weight gradients' transposed ones), decoding's small-M products against a
 *           (N,K) weight, and one batched product. Also the machine's GEMM peak (gemm_libs.h).
 *   memory  GB/s of elementwise add/mul/gelu and softmax/layer_norm, forward and backward, over 16M
 *           floats, vs memcpy of the same 64 MB buffer; ratio = op GB/s / memcpy GB/s. Bytes are the
 *           compulsory traffic of the op (every operand read once, every output written once; a
 *           backward reads and writes the gradient it accumulates into). Forward = the op through the
 *           op layer (arena result, reset between calls); backward = the op's tape-node backward,
 *           accumulating into an existing gradient (as for parameters; activations' gradients are
 *           zeroed on first use, which is not counted here).
 *
 * Engine and anchors are timed interleaved call by call and each keeps its fastest call, so a noisy
 * neighbour on a shared machine hurts both alike. A one-thread memcpy needs one free core while a
 * two-thread op needs two, so memory ops are also reported against memcpy split over the op's
 * threads (ratio_T), the like-for-like anchor. Options: --quick (fewer repetitions, for smoke tests),
 * --reps N, --only matmul|memory (one section; the JSON then carries only its figures).
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "gemm_libs.h"
#include "core/autograd.h"
#include "ops/ops.h"

typedef struct mm_case {
    const char *name;
    int64_t batch, M, N, K;
    int ta, tb;
} mm_case;

typedef struct mm_result {
    double engine;                     /* GFLOP/s */
    double lib[MTB_GEMM_LIBS_MAX];     /* each library called directly */
    int best;                          /* the fastest library: the anchor */
} mm_result;

static int g_reps = 7;
static int g_do_matmul = 1, g_do_memory = 1;
static double g_min_time = 0.25; /* seconds per measurement */

typedef void (*bench_fn)(void *arg);

/* Times k functions interleaved call by call for g_reps * k * g_min_time seconds (at least 3 calls
 * each) and returns the fastest call of each. Interleaving samples every function under the same
 * conditions; the minimum, not the mean, because on a machine shared with other jobs the mean
 * measures the neighbours and the fastest call is the one that had the cores to itself. */
static void fastest(int k, bench_fn *fns, void **args, double *best) {
    for (int i = 0; i < k; i++) {
        fns[i](args[i]); /* warm: first-touch faults, arena growth, BLAS buffers */
        best[i] = 1e30;
    }
    double budget = g_reps * k * g_min_time, start = mt_bench_now();
    for (int calls = 0; calls < 3 || mt_bench_now() - start < budget; calls++) {
        for (int i = 0; i < k; i++) {
            double t0 = mt_bench_now();
            fns[i](args[i]);
            double dt = mt_bench_now() - t0;
            if (dt < best[i]) best[i] = dt;
        }
    }
}

static void die(const char *what) {
    fprintf(stderr, "mt-bench ops: %s failed: %s\n", what, mt_last_error());
    exit(1);
}

/* ---- matmul ---- */

typedef struct mm_arg {
    mt_context *ctx;
    mt_tensor *a, *b; /* engine operands */
    float *A, *B, *C; /* direct operands */
    const mm_case *c;
    int lib;          /* mm_direct: which library */
} mm_arg;

static void mm_engine(void *p) {
    mm_arg *m = p;
    mt_context_reset(m->ctx);
    if (!mt_matmul(m->ctx, m->a, m->b, m->c->ta, m->c->tb)) die("mt_matmul");
}

/* The engine's OpenMP team size; each library runs with as many threads of its own. */
static int g_threads = 1;

static void mm_direct(void *p) {
    mm_arg *m = p;
    const mm_case *c = m->c;
    int64_t lda = c->ta ? c->M : c->K, ldb = c->tb ? c->K : c->N;
    for (int64_t i = 0; i < c->batch; i++)
        mtb_gemm_lib_run(m->lib, g_threads, c->ta, c->tb, c->M, c->N, c->K, m->A + i * c->M * c->K, lda,
                         m->B + i * c->K * c->N, ldb, m->C + i * c->M * c->N, c->N);
}

static mm_result bench_matmul(const mm_case *c) {
    mm_result r;
    mt_context *ctx;
    if (mt_context_init(&ctx, MT_DEVICE_CPU, 0) != MT_OK) die("context");
    mt_context_set_grad_enabled(ctx, 0);
    mt_tensor *a, *b;
    int64_t ar = c->ta ? c->K : c->M, ac = c->ta ? c->M : c->K, br = c->tb ? c->N : c->K, bc = c->tb ? c->K : c->N;
    if (c->batch > 1) {
        mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, MT_DIMS(c->batch, ar, ac), "a", &a);
        mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, MT_DIMS(c->batch, br, bc), "b", &b);
    } else {
        mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, MT_DIMS(ar, ac), "a", &a);
        mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, MT_DIMS(br, bc), "b", &b);
    }
    if (!a || !b) die("persistent operands");
    mt_fill_uniform(ctx, a, -1.0f, 1.0f);
    mt_fill_uniform(ctx, b, -1.0f, 1.0f);
    float *A = malloc(sizeof(float) * (size_t)(c->batch * c->M * c->K));
    float *B = malloc(sizeof(float) * (size_t)(c->batch * c->K * c->N));
    float *C = malloc(sizeof(float) * (size_t)(c->batch * c->M * c->N));
    memcpy(A, a->data, sizeof(float) * (size_t)(c->batch * c->M * c->K));
    memcpy(B, b->data, sizeof(float) * (size_t)(c->batch * c->K * c->N));
    memset(C, 0, sizeof(float) * (size_t)(c->batch * c->M * c->N));
    int k = mtb_gemm_libs();
    mm_arg args_v[1 + MTB_GEMM_LIBS_MAX];
    bench_fn fns[1 + MTB_GEMM_LIBS_MAX];
    void *args[1 + MTB_GEMM_LIBS_MAX];
    for (int i = 0; i <= k; i++) {
        args_v[i] = (mm_arg){ctx, a, b, A, B, C, c, i - 1};
        fns[i] = i ? mm_direct : mm_engine;
        args[i] = &args_v[i];
    }
    double best[1 + MTB_GEMM_LIBS_MAX];
    fastest(1 + k, fns, args, best);
    double flop = 2.0 * (double)c->batch * (double)c->M * (double)c->N * (double)c->K;
    r.engine = flop / best[0] * 1e-9;
    r.best = 0;
    for (int i = 0; i < k; i++) {
        r.lib[i] = flop / best[1 + i] * 1e-9;
        if (r.lib[i] > r.lib[r.best]) r.best = i;
    }
    free(A);
    free(B);
    free(C);
    mt_tensor_free(a);
    mt_tensor_free(b);
    mt_context_free(ctx);
    return r;
}

/* ---- memory-bound ops ---- */

#define MEM_N (16 * 1024 * 1024) /* floats */
#define SM_C 1024                /* softmax / layer_norm row length */

typedef enum { OP_ADD, OP_MUL, OP_GELU, OP_SOFTMAX, OP_LAYERNORM } mem_op;
static const char *mem_names[] = {"add", "mul", "gelu", "softmax", "layer_norm"};
/* Compulsory bytes per element: forward, backward. */
static const double mem_bytes[][2] = {{12, 20}, {12, 28}, {8, 16}, {8, 16}, {8, 16}};

typedef struct mem_arg {
    mt_context *ctx;
    mem_op op;
    mt_tensor *x, *y2, *w, *b; /* operands (persistent) */
    mt_node *node;             /* backward: the recorded node */
} mem_arg;

static mt_tensor *run_mem_op(mt_context *ctx, mem_arg *m) {
    switch (m->op) {
    case OP_ADD: return mt_add(ctx, m->x, m->y2);
    case OP_MUL: return mt_mul(ctx, m->x, m->y2);
    case OP_GELU: return mt_gelu(ctx, m->x);
    case OP_SOFTMAX: return mt_softmax(ctx, m->x, -1);
    default: return mt_layer_norm(ctx, m->x, m->w, m->b, 1e-5f);
    }
}

static void mem_fwd(void *p) {
    mem_arg *m = p;
    mt_context_reset(m->ctx);
    if (!run_mem_op(m->ctx, m)) die(mem_names[m->op]);
}

static void mem_bwd(void *p) {
    mem_arg *m = p;
    if (m->node->backward(m->ctx, m->node) != MT_OK) die("backward");
}

typedef struct memcpy_arg {
    float *dst, *src;
    int threads;
} memcpy_arg;

static void do_memcpy(void *p) {
    memcpy_arg *m = p;
    if (m->threads <= 1) {
        memcpy(m->dst, m->src, sizeof(float) * (size_t)MEM_N);
        return;
    }
#pragma omp parallel num_threads(m->threads)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        size_t lo = (size_t)MEM_N * (size_t)t / (size_t)T, hi = (size_t)MEM_N * (size_t)(t + 1) / (size_t)T;
        memcpy(m->dst + lo, m->src + lo, sizeof(float) * (hi - lo));
    }
}

typedef struct mem_result {
    double gbs[2];       /* fwd, bwd */
    double memcpy_gbs;   /* one memcpy() of the same 64 MB, measured alongside */
    double memcpy_t_gbs; /* the same split over the op's threads */
} mem_result;

/* Forward runs in one context (grad off, reset per call), backward in another (recorded once, the
 * node's backward called repeatedly), so all four timings can be interleaved call by call. */
static mem_result bench_mem(mem_op op, memcpy_arg *mc, memcpy_arg *mc_t) {
    mem_result r;
    mt_context *cf, *cb;
    if (mt_context_init(&cf, MT_DEVICE_CPU, 0) != MT_OK || mt_context_init(&cb, MT_DEVICE_CPU, 0) != MT_OK)
        die("context");
    mem_arg m = {.ctx = cf, .op = op};
    int64_t rows = MEM_N / SM_C;
    int use_rows = op == OP_SOFTMAX || op == OP_LAYERNORM;
    mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, use_rows ? 2 : 1,
                             use_rows ? (const int64_t[]){rows, SM_C} : (const int64_t[]){MEM_N}, "x", &m.x);
    mt_fill_uniform(cf, m.x, -2.0f, 2.0f);
    if (op == OP_ADD || op == OP_MUL) {
        mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, MT_DIMS(MEM_N), "y", &m.y2);
        mt_fill_uniform(cf, m.y2, 0.5f, 1.5f);
    }
    if (op == OP_LAYERNORM) {
        mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, MT_DIMS(SM_C), "w", &m.w);
        mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, MT_DIMS(SM_C), "b", &m.b);
        mt_fill_uniform(cf, m.w, 0.5f, 1.5f);
        mt_fill_uniform(cf, m.b, -0.5f, 0.5f);
    }
    /* Backward: record once, give the output a gradient, pre-create the inputs' gradients (only x's
     * and y's are timed: layer norm's weight gradients are (C,)). */
    mem_arg mb = m;
    mb.ctx = cb;
    mt_requires_grad(m.x, 1);
    if (m.y2) mt_requires_grad(m.y2, 1);
    mt_tensor *y = run_mem_op(cb, &mb);
    if (!y) die(mem_names[op]);
    mb.node = &cb->tape[y->node];
    y->grad = mt_full(cb, y->ndim, y->shape, 0.5f);
    if (!y->grad || !mt_grad_of(cb, m.x) || (m.y2 && !mt_grad_of(cb, m.y2))) die("gradients");
    mt_context_set_grad_enabled(cf, 0);

    bench_fn fns[4] = {mem_fwd, mem_bwd, do_memcpy, do_memcpy};
    void *args[4] = {&m, &mb, mc, mc_t};
    double best[4];
    fastest(4, fns, args, best);
    double n = (double)MEM_N;
    r.gbs[0] = mem_bytes[op][0] * n / best[0] * 1e-9;
    r.gbs[1] = mem_bytes[op][1] * n / best[1] * 1e-9;
    r.memcpy_gbs = 2.0 * 4.0 * n / best[2] * 1e-9;
    r.memcpy_t_gbs = 2.0 * 4.0 * n / best[3] * 1e-9;
    mt_tensor_free(m.x);
    mt_tensor_free(m.y2);
    mt_tensor_free(m.w);
    mt_tensor_free(m.b);
    mt_context_free(cf);
    mt_context_free(cb);
    return r;
}

int mt_bench_ops(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            g_reps = 1;
            g_min_time = 0.05;
        } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            g_reps = atoi(argv[++i]);
            if (g_reps < 1) g_reps = 1;
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            i++;
            g_do_matmul = strcmp(argv[i], "matmul") == 0;
            g_do_memory = strcmp(argv[i], "memory") == 0;
        } else {
            fprintf(stderr, "usage: mt-bench ops [--quick] [--reps N] [--only matmul|memory]\n");
            return 2;
        }
    }
    /* Engine and anchor alternate call by call. An idle OpenMP worker spin-waits after each engine
     * call on the core the anchor's OpenBLAS threads want next, which slows the anchor, not the engine;
     * with passive waiting neither side is disturbed by the other. libgomp reads the policy at start-up,
     * so set it and run again. */
    if (!getenv("OMP_WAIT_POLICY")) {
        char **args = calloc((size_t)argc + 2, sizeof *args);
        if (args) {
            args[0] = "mt-bench";
            for (int i = 0; i < argc; i++) args[i + 1] = argv[i];
            setenv("OMP_WAIT_POLICY", "passive", 1);
            execv("/proc/self/exe", args);
            free(args); /* exec failed: measure as we are */
        }
    }
    int threads = omp_get_max_threads();
    g_threads = threads;
    int n_libs = mtb_gemm_libs();
    printf("mt-bench ops: engine %d OpenMP threads; OMP_WAIT_POLICY=%s; best of %d\n", threads,
           getenv("OMP_WAIT_POLICY"), g_reps);
    printf("GEMM libraries called directly, each with %d threads of its own (the anchor of a shape is the fastest):\n",
           threads);
    for (int i = 0; i < n_libs; i++) printf("  [%d] %s\n", i, mtb_gemm_lib_name(i));

    static const mm_case mm_cases[] = {
        {"512x512x512", 1, 512, 512, 512, 0, 0},
        {"4096x512x512", 1, 4096, 512, 512, 0, 0},
        {"4096x2048x512", 1, 4096, 2048, 512, 0, 0},
        {"train 4096x1024x256", 1, 4096, 1024, 256, 0, 1},    /* x @ W^T, feed-forward up */
        {"train 4096x256x1024", 1, 4096, 256, 1024, 0, 1},    /* feed-forward down */
        {"train 4096x8000x256", 1, 4096, 8000, 256, 0, 1},    /* output projection */
        {"train dW 1024x256x4096", 1, 1024, 256, 4096, 1, 0}, /* weight gradient dY^T X */
        {"train dX 4096x256x8000", 1, 4096, 256, 8000, 0, 0}, /* input gradient dY W */
        {"decode 32x8000x256", 1, 32, 8000, 256, 0, 1},       /* output projection, batch 32 */
        {"decode 32x256x256", 1, 32, 256, 256, 0, 1},
        {"decode 1x8000x256", 1, 1, 8000, 256, 0, 1},         /* batch 1 */
        {"8x(350x64)x(64x350)", 8, 350, 350, 64, 0, 0},
    };
    const int n_mm = g_do_matmul ? (int)(sizeof mm_cases / sizeof mm_cases[0]) : 0;
    mm_result mm[sizeof mm_cases / sizeof mm_cases[0]];
    double min_mm = 0, peak = 0;
    int peak_lib = 0;
    if (n_mm) {
        peak = mtb_gemm_peak(threads, g_reps * 0.5, &peak_lib);
        printf("GEMM peak (2048^3, %d threads): %.1f GF/s by [%d]\n", threads, peak, peak_lib);
        printf("\n%-24s %11s", "matmul (MxNxK)", "engine GF/s");
        for (int i = 0; i < n_libs; i++) printf("   [%d] GF/s", i);
        printf(" %7s %8s\n", "anchor", "ratio");
        min_mm = 1e9;
    }
    for (int i = 0; i < n_mm; i++) {
        mm[i] = bench_matmul(&mm_cases[i]);
        double ratio = mm[i].engine / mm[i].lib[mm[i].best];
        if (ratio < min_mm) min_mm = ratio;
        printf("%-24s %11.1f", mm_cases[i].name, mm[i].engine);
        for (int l = 0; l < n_libs; l++) printf(" %11.1f", mm[i].lib[l]);
        printf(" %7s %8.3f\n", mtb_gemm_lib_key(mm[i].best), ratio);
    }

    const int n_mem = g_do_memory ? 5 : 0;
    mem_result mem[5];
    memset(mem, 0, sizeof mem);
    double memcpy_gbs = 0, memcpy_t_gbs = 0, min_ew = 0, min_norm = 0, min_ew_t = 0, min_norm_t = 0;
    float *src = NULL, *dst = NULL;
    if (n_mem) {
        src = malloc(sizeof(float) * (size_t)MEM_N);
        dst = malloc(sizeof(float) * (size_t)MEM_N);
        for (size_t i = 0; i < (size_t)MEM_N; i++) src[i] = dst[i] = (float)(i & 1023);
        memcpy_arg mc = {dst, src, 1}, mc_t = {dst, src, threads};
        for (int op = 0; op < n_mem; op++) {
            mem[op] = bench_mem((mem_op)op, &mc, &mc_t);
            if (mem[op].memcpy_gbs > memcpy_gbs) memcpy_gbs = mem[op].memcpy_gbs;
            if (mem[op].memcpy_t_gbs > memcpy_t_gbs) memcpy_t_gbs = mem[op].memcpy_t_gbs;
        }
        printf("\n16M floats. ratio = GB/s / one memcpy() of the same 64 MB (%.2f GB/s); ratio_T = GB/s / memcpy\n"
               "split over the op's %d threads (%.2f GB/s), the like-for-like anchor when cores are shared.\n",
               memcpy_gbs, threads, memcpy_t_gbs);
        printf("%-12s %9s %7s %8s %9s %7s %8s\n", "op", "fwd GB/s", "ratio", "ratio_T", "bwd GB/s", "ratio",
               "ratio_T");
        min_ew = min_norm = min_ew_t = min_norm_t = 1e9;
        for (int op = 0; op < n_mem; op++) {
            double rf = mem[op].gbs[0] / memcpy_gbs, rb = mem[op].gbs[1] / memcpy_gbs;
            double tf = mem[op].gbs[0] / memcpy_t_gbs, tb = mem[op].gbs[1] / memcpy_t_gbs;
            double *mn = op <= OP_GELU ? &min_ew : &min_norm, *mt = op <= OP_GELU ? &min_ew_t : &min_norm_t;
            *mn = fmin(*mn, fmin(rf, rb));
            *mt = fmin(*mt, fmin(tf, tb));
            printf("%-12s %9.2f %7.3f %8.3f %9.2f %7.3f %8.3f\n", mem_names[op], mem[op].gbs[0], rf, tf, mem[op].gbs[1],
                   rb, tb);
        }
    }
    printf("\n");
    if (n_mm) printf("matmul: min ratio %.3f against the fastest library of each shape (target >= 0.9)\n", min_mm);
    if (n_mem)
        printf("elementwise add/mul/gelu fwd+bwd: min ratio %.3f (goal >= 0.5), ratio_T %.3f; softmax/layer_norm "
               "fwd+bwd: min ratio %.3f, ratio_T %.3f\n",
               min_ew, min_ew_t, min_norm, min_norm_t);

    /* The final JSON line. */
    printf("{\"bench\":\"ops\",\"threads\":%d,\"gemm_peak_gflops\":%.2f,\"gemm_peak_lib\":\"%s\",\"matmul\":[",
           threads, peak, n_mm ? mtb_gemm_lib_key(peak_lib) : "");
    for (int i = 0; i < n_mm; i++) {
        printf("%s{\"shape\":\"%s\",\"engine_gflops\":%.2f", i ? "," : "", mm_cases[i].name, mm[i].engine);
        for (int l = 0; l < n_libs; l++) printf(",\"%s_gflops\":%.2f", mtb_gemm_lib_key(l), mm[i].lib[l]);
        printf(",\"anchor\":\"%s\",\"ratio\":%.4f}", mtb_gemm_lib_key(mm[i].best),
               mm[i].engine / mm[i].lib[mm[i].best]);
    }
    printf("],\"memcpy_gbs\":%.3f,\"memcpy_threads_gbs\":%.3f,\"memory_ops\":[", memcpy_gbs, memcpy_t_gbs);
    for (int op = 0; op < n_mem; op++)
        printf("%s{\"op\":\"%s\",\"fwd_gbs\":%.3f,\"fwd_ratio\":%.4f,\"fwd_ratio_t\":%.4f,\"bwd_gbs\":%.3f,"
               "\"bwd_ratio\":%.4f,\"bwd_ratio_t\":%.4f}",
               op ? "," : "", mem_names[op], mem[op].gbs[0], mem[op].gbs[0] / memcpy_gbs, mem[op].gbs[0] / memcpy_t_gbs,
               mem[op].gbs[1], mem[op].gbs[1] / memcpy_gbs, mem[op].gbs[1] / memcpy_t_gbs);
    printf("],\"min_matmul_ratio\":%.4f,\"min_elementwise_ratio\":%.4f,\"min_elementwise_ratio_t\":%.4f,"
           "\"min_norm_ratio\":%.4f,\"min_norm_ratio_t\":%.4f}\n",
           min_mm, min_ew, min_ew_t, min_norm, min_norm_t);
    free(src);
    free(dst);
    return 0;
}
