/*
 * bench_count.c — `mt-bench-gpu --count`: launches and host waits per training step of the model on
 * the CUDA backend, counted by the backend itself (mt_cuda_counters_get), and the same figure for
 * llm.c at the same number of layers. Runs on a GPU (mt-bench-gpu) or on the CPU emulator of
 * tests/gpu/emu (mt-bench-gpu-emu --count): a count does not need a device, and it does not depend
 * on the widths, so the model is the en-it configuration's depth and attention with small widths.
 *
 *   mt-bench-gpu --count [--layers E,D] [--mha] [--micro N]
 *
 * llm.c's figure (GPT-2, cuDNN attention, one micro-batch) is derived from its train_gpt2.cu by
 * counting, like this counter, every kernel, cuBLAS(Lt) call, memset and copy of one step:
 *   forward   3 + 7 per layer    (encoder, layernorm, classifier matmul; per layer QKV, attention,
 *                                 projection, fused residual+layernorm twice, FC with GELU, FC proj)
 *   backward 13 + 23 per layer   (targets copy, fused classifier, dresidual memset, classifier matmul
 *                                 backward 2, layernorm backward 2, encoder backward 4, loss sum and
 *                                 copy 2; per layer 4 matmul backwards with bias of 4 launches, 2
 *                                 layernorm backwards of 2, the cuDNN attention backward about 3)
 *   update   21                  (2 gradient memsets, norm 2 + copy, AdamW one launch per each of its
 *                                 16 parameter tensors, layers stacked)
 * about 30 per layer + 37. Our layers are compared one for one (a decoder layer has two attentions,
 * so the comparison favours llm.c slightly).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/context.h"
#include "cuda/mt_cuda.h"
#include "gpu_context.h"
#include "train/optim.h"

int mtb_gpu_count(int emu, int argc, char **argv);

/* A batch of B rows, S source and T target positions, ids in [4, V) with the last positions [EOS]
 * (2) and no padding. */
static mt_seq_batch count_batch(int64_t B, int64_t S, int64_t T, int64_t V) {
    mt_seq_batch b = {.B = B, .S = S, .T = T};
    b.src = calloc((size_t)(B * S), sizeof(int32_t));
    b.tgt_in = calloc((size_t)(B * T), sizeof(int32_t));
    b.tgt_out = calloc((size_t)(B * T), sizeof(int32_t));
    if (!b.src || !b.tgt_in || !b.tgt_out) return b;
    uint64_t r = 12345;
    for (int64_t i = 0; i < B * S; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        b.src[i] = i % S == S - 1 ? 2 : 4 + (int32_t)((r >> 33) % (uint64_t)(V - 4));
    }
    for (int64_t i = 0; i < B * T; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        b.tgt_out[i] = i % T == T - 1 ? 2 : 4 + (int32_t)((r >> 33) % (uint64_t)(V - 4));
        b.tgt_in[i] = i % T == 0 ? 1 : b.tgt_out[i - 1];
    }
    b.src_tokens = B * S;
    b.tgt_tokens = B * T;
    return b;
}

int mtb_gpu_count(int emu, int argc, char **argv) {
    int le = 3, ld = 3, micro = 1, mha = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--layers") && i + 1 < argc) {
            if (sscanf(argv[++i], "%d,%d", &le, &ld) != 2 || le < 1 || ld < 1) {
                fprintf(stderr, "--layers E,D: two positive counts (got '%s')\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--micro") && i + 1 < argc) {
            micro = atoi(argv[++i]);
            if (micro < 1 || micro > 8) {
                fprintf(stderr, "--micro N: 1..8\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--mha")) {
            mha = 1;
        }
    }
    mt_model_config c;
    mt_model_config_default(&c);
    c.vocab_size = 256;
    c.d_model = 64;
    c.heads = 4;
    c.layers_enc = le;
    c.layers_dec = ld;
    c.d_ff = 128;
    c.d_c = 32;
    c.d_cq = 48;
    c.d_rope = 8;
    c.attention = mha ? MT_ATTN_MHA : MT_ATTN_MLA;
    c.dropout = 0.1;
    c.max_len = 64;
    mt_context *ctx = gpu_context_new(emu, 0);
    mt_transformer *m = ctx ? gpu_model_new(&c, ctx, emu, 0, 1) : NULL;
    mt_optimizer *o = NULL;
    mt_seq_batch b[8];
    for (int i = 0; i < micro; i++) b[i] = count_batch(2, 12, 12, c.vocab_size);
    mt_adamw_hparams h;
    mt_adamw_hparams_default(&h);
    int rc = 1;
    if (!m || mt_optimizer_create(m, ctx, &o) != MT_OK ||
        mt_context_set_precision(ctx, MT_PRECISION_BF16) != MT_OK ||
        mt_train_step(ctx, m, o, &h, b, micro, NULL, NULL) != MT_OK) { /* warm-up */
        fprintf(stderr, "mt-bench-gpu --count: %s\n", mt_last_error());
        goto out;
    }
    enum { STEPS = 2 };
    mt_cuda_counters c0, c1, c2;
    mt_cuda_counters_get(&c0);
    for (int s = 0; s < STEPS; s++)
        if (mt_train_step(ctx, m, o, &h, b, micro, NULL, NULL) != MT_OK) {
            fprintf(stderr, "mt-bench-gpu --count: %s\n", mt_last_error());
            goto out;
        }
    mt_cuda_counters_get(&c1);
    double loss = 0;
    if (mt_optimizer_read(o, ctx, &loss, NULL) != MT_OK) {
        fprintf(stderr, "mt-bench-gpu --count: %s\n", mt_last_error());
        goto out;
    }
    mt_cuda_counters_get(&c2);
    int layers = le + ld;
    double launches = (double)(c1.launches - c0.launches) / STEPS;
    double waits = (double)(c1.host_waits - c0.host_waits) / STEPS;
    double vec = (double)(c1.vector_launches - c0.vector_launches) / STEPS;
    double llmc = 30.0 * layers + 37.0;
    printf("count: %s, %d+%d layers (%s), %d micro-batch%s, bf16, dropout 0.1\n", emu ? "CPU emulator" : "GPU", le,
           ld, mha ? "MHA" : "MLA", micro, micro == 1 ? "" : "es");
    printf("count: launches per training step      %8.1f  (%.1f per layer)\n", launches, launches / layers);
    printf("count: of which 128-bit vectorised     %8.1f  (cuda/vec.cuh: aligned memory-bound kernels)\n", vec);
    printf("count: host waits per unread step      %8.1f\n", waits);
    printf("count: host waits of a read            %8llu  (once per logged step)\n",
           (unsigned long long)(c2.host_waits - c1.host_waits));
    printf("count: llm.c at %d layers (30 L + 37)   %8.1f  ratio %.2f (goal <= 3)\n", layers, llmc, launches / llmc);
    printf("{\"bench\":\"gpu_count\",\"emulator\":%d,\"layers\":%d,\"micro\":%d,\"launches_per_step\":%.1f,"
           "\"vector_launches_per_step\":%.1f,\"host_waits_per_step\":%.1f,\"llmc_launches\":%.1f,\"ratio\":%.3f}\n",
           emu, layers, micro, launches, vec, waits, llmc, launches / llmc);
    rc = 0;
out:
    gpu_context_drain(ctx);
    mt_optimizer_free(o);
    mt_transformer_free(m);
    mt_context_free(ctx);
    for (int i = 0; i < micro; i++) {
        free(b[i].src);
        free(b[i].tgt_in);
        free(b[i].tgt_out);
    }
    return rc;
}

#ifdef MTB_COUNT_MAIN
/* mt-bench-gpu-emu: the count on the CPU emulator. */
int main(int argc, char **argv) {
    int count = 0;
    for (int i = 1; i < argc; i++) count |= !strcmp(argv[i], "--count");
    if (!count) {
        fprintf(stderr, "usage: mt-bench-gpu-emu --count [--layers E,D] [--mha] [--micro N]\n"
                        "(the timed benchmarks need a GPU: mt-bench-gpu)\n");
        return 2;
    }
    return mtb_gpu_count(1, argc, argv);
}
#endif
