/*
 * gpu_context.h — contexts that run the CUDA backend, for test_gpu_step and mt-bench-gpu's step
 * count: on CUDA device `device`, or, under the emulator of tests/gpu/emu (emu != 0), a CPU context
 * whose backend is swapped for the emulated mt_cuda_backend (its device memory is host memory, so
 * the model's tensors live on the CPU device). Test and benchmark code only.
 */
#ifndef MT_TESTS_GPU_CONTEXT_H
#define MT_TESTS_GPU_CONTEXT_H

#include "core/context.h"
#include "nn/model.h"

static inline mt_context *gpu_context_new(int emu, int device) {
    mt_context *ctx = NULL;
    if (!emu) return mt_context_init(&ctx, device, 0) == MT_OK ? ctx : NULL;
    if (mt_context_init(&ctx, MT_DEVICE_CPU, 0) != MT_OK) return NULL;
    ctx->ex.backend->exec_free(&ctx->ex);
    ctx->ex.backend = &mt_cuda_backend;
    if (mt_cuda_backend.exec_init(&ctx->ex, 0) != MT_OK || mt_context_join(ctx) != MT_OK) {
        mt_context_free(ctx);
        return NULL;
    }
    return ctx;
}

/* The device the model's tensors go on. */
static inline int gpu_model_device(int emu, int device) { return emu ? MT_DEVICE_CPU : device; }

/* Waits for ctx's queued work: under the emulator tensors are host memory, freed at once. */
static inline void gpu_context_drain(mt_context *ctx) {
    if (ctx) (void)ctx->ex.backend->sync(&ctx->ex);
}

/* A model of config c with seeded weights initialised through ctx; NULL on failure. */
static inline mt_transformer *gpu_model_new(const mt_model_config *c, mt_context *ctx, int emu, int device,
                                            uint64_t seed) {
    mt_transformer *m = NULL;
    if (mt_transformer_create(c, gpu_model_device(emu, device), &m) != MT_OK) return NULL;
    mt_context_seed(ctx, seed);
    if (mt_transformer_init_weights(m, ctx) != MT_OK) {
        gpu_context_drain(ctx);
        mt_transformer_free(m);
        return NULL;
    }
    return m;
}

#endif
