/*
 * test_gpu_step.c — the training step of the real encoder-decoder on the CUDA backend, for what the
 * kernel-level tests cannot see: ordering between contexts, repeatability, and host waits.
 *
 *   cross-context  after mt_train_step returns (its AdamW still queued on the training stream), a
 *                  second context (a save, a decoder) reads the weights the step wrote, not older ones
 *   repeatable     two runs of the same steps from the same weights give bitwise-equal weights (no
 *                  float atomics: the embedding backward and broadcast reductions are ordered)
 *   no host wait   a training step that is not read (loss and norm left on the device) makes no
 *                  host wait; launches per step are printed
 * Exit 77 without a CUDA device. MT_GPU_TEST_EMU=1 (the test_gpu_step_emu build): the contexts run the
 * CUDA backend on the CPU emulator of tests/gpu/emu, whose streams are lazy (work runs only when
 * waited for) and whose blocks run in a shuffled order, so a missing cross-stream wait or an
 * order-dependent sum fails here every time.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/context.h"
#include "cuda/mt_cuda.h"
#include "gpu_context.h"
#include "model/testutil.h"
#include "train/optim.h"

static int n_fail;
static int DEVICE = 0, EMU = 0;
#define CHECK(cond, ...)                  \
    do {                                  \
        if (!(cond)) {                    \
            printf("FAIL: " __VA_ARGS__); \
            printf("\n");                 \
            n_fail++;                     \
        }                                 \
    } while (0)

static mt_context *gpu_context(void) { return gpu_context_new(EMU, DEVICE); }
static void drain(mt_context *ctx) { gpu_context_drain(ctx); }
static mt_transformer *make_model(const mt_model_config *c, mt_context *ctx, uint64_t seed) {
    return gpu_model_new(c, ctx, EMU, DEVICE, seed);
}

/* Parameter i of m as host floats, read through ctx (malloc'd). */
static float *read_param(mt_context *ctx, const mt_transformer *m, int i) {
    const mt_tensor *p = m->params[i];
    float *x = malloc(mt_tensor_bytes(p));
    if (x && mt_copy_to_host(ctx, p, x, mt_tensor_bytes(p)) != MT_OK) {
        free(x);
        return NULL;
    }
    return x;
}

static void cross_context(void) {
    mt_model_config c = tu_tiny_config(MT_ATTN_MLA);
    mt_seq_batch b = tu_batch(&c, 4, 7, 8, 3);
    mt_context *train = gpu_context();
    mt_transformer *m = train ? make_model(&c, train, 5) : NULL;
    mt_optimizer *o = NULL;
    mt_adamw_hparams h;
    mt_adamw_hparams_default(&h);
    h.warmup_steps = 0;
    if (!m || mt_optimizer_create(m, train, &o) != MT_OK) {
        CHECK(0, "cross-context: setup: %s", mt_last_error());
        goto out;
    }
    float *before = read_param(train, m, 0);
    mt_context *other = gpu_context();
    for (int step = 1; step <= 2 && other; step++) {
        CHECK(mt_train_step(train, m, o, &h, &b, 1, NULL, NULL) == MT_OK, "cross-context: step: %s", mt_last_error());
        /* A context created after the step (a save), then one that already existed (a decoder). */
        mt_context *fresh = gpu_context();
        if (!fresh || mt_context_reset(other) != MT_OK) {
            CHECK(0, "cross-context: contexts: %s", mt_last_error());
            mt_context_free(fresh);
            break;
        }
        for (int i = 0; i < m->n_params; i++) {
            float *seen_fresh = read_param(fresh, m, i), *seen_other = read_param(other, m, i);
            float *truth = read_param(train, m, i); /* the training stream itself: after its own work */
            size_t bytes = mt_tensor_bytes(m->params[i]);
            CHECK(seen_fresh && seen_other && truth, "cross-context: read: %s", mt_last_error());
            if (seen_fresh && seen_other && truth) {
                CHECK(memcmp(seen_fresh, truth, bytes) == 0,
                      "cross-context: step %d: a context created after the step reads stale %s", step,
                      m->params[i]->name);
                CHECK(memcmp(seen_other, truth, bytes) == 0,
                      "cross-context: step %d: a context reset after the step reads stale %s", step,
                      m->params[i]->name);
            }
            free(seen_fresh);
            free(seen_other);
            free(truth);
        }
        mt_context_free(fresh);
    }
    float *after = read_param(train, m, 0);
    CHECK(before && after && memcmp(before, after, mt_tensor_bytes(m->params[0])) != 0,
          "cross-context: the steps did not change %s", m->params[0]->name);
    printf("cross-context: a context created or reset after a step reads the step's weights\n");
    free(before);
    free(after);
    mt_context_free(other);
out:
    drain(train);
    mt_optimizer_free(o);
    mt_transformer_free(m);
    mt_context_free(train);
    tu_batch_free(&b);
}

/* Runs `steps` training steps from seeded weights; returns every parameter's bytes (malloc'd). */
static unsigned char *run_steps(const mt_model_config *c, const mt_seq_batch *b, int steps, size_t *bytes) {
    mt_context *ctx = gpu_context();
    mt_transformer *m = ctx ? make_model(c, ctx, 11) : NULL;
    mt_optimizer *o = NULL;
    unsigned char *out = NULL;
    mt_adamw_hparams h;
    mt_adamw_hparams_default(&h);
    h.warmup_steps = 0;
    if (m && mt_optimizer_create(m, ctx, &o) == MT_OK) {
        int ok = 1;
        for (int s = 0; s < steps && ok; s++) ok = mt_train_step(ctx, m, o, &h, b, 1, NULL, NULL) == MT_OK;
        size_t total = 0;
        for (int i = 0; i < m->n_params; i++) total += mt_tensor_bytes(m->params[i]);
        out = ok ? malloc(total) : NULL;
        size_t off = 0;
        for (int i = 0; out && i < m->n_params; i++) {
            if (mt_copy_to_host(ctx, m->params[i], out + off, mt_tensor_bytes(m->params[i])) != MT_OK) {
                free(out);
                out = NULL;
                break;
            }
            off += mt_tensor_bytes(m->params[i]);
        }
        *bytes = total;
    }
    if (!out) printf("run: %s\n", mt_last_error());
    drain(ctx);
    mt_optimizer_free(o);
    mt_transformer_free(m);
    mt_context_free(ctx);
    return out;
}

static void repeatable(void) {
    mt_model_config c = tu_tiny_config(MT_ATTN_MLA);
    /* Few distinct ids, so every embedding row gets gradients from many positions. */
    c.vocab_size = 13;
    mt_seq_batch b = tu_batch(&c, 6, 9, 10, 8);
    size_t na = 0, nb = 0;
    unsigned char *x = run_steps(&c, &b, 3, &na), *y = run_steps(&c, &b, 3, &nb);
    CHECK(x && y && na == nb, "repeatable: runs failed");
    if (x && y && na == nb) {
        size_t diff = 0;
        for (size_t i = 0; i < na; i++) diff += x[i] != y[i];
        printf("repeatable: two runs of 3 steps: %zu of %zu weight bytes differ\n", diff, na);
        CHECK(diff == 0, "repeatable: two identical runs differ in %zu bytes", diff);
    }
    free(x);
    free(y);
    tu_batch_free(&b);
}

static void host_waits(void) {
    mt_model_config c = tu_tiny_config(MT_ATTN_MLA);
    mt_seq_batch b = tu_batch(&c, 4, 7, 8, 3);
    mt_context *ctx = gpu_context();
    mt_transformer *m = ctx ? make_model(&c, ctx, 5) : NULL;
    mt_optimizer *o = NULL;
    mt_adamw_hparams h;
    mt_adamw_hparams_default(&h);
    if (!m || mt_optimizer_create(m, ctx, &o) != MT_OK) {
        CHECK(0, "host waits: setup: %s", mt_last_error());
    } else {
        int ok = mt_train_step(ctx, m, o, &h, &b, 1, NULL, NULL) == MT_OK; /* warm-up */
        mt_cuda_counters c0, c1;
        mt_cuda_counters_get(&c0);
        for (int s = 0; s < 3 && ok; s++) ok = mt_train_step(ctx, m, o, &h, &b, 1, NULL, NULL) == MT_OK;
        mt_cuda_counters_get(&c1);
        CHECK(ok, "host waits: step: %s", mt_last_error());
        printf("host waits: %.1f launches and %.1f host waits per unread training step\n",
               (double)(c1.launches - c0.launches) / 3.0, (double)(c1.host_waits - c0.host_waits) / 3.0);
        CHECK(c1.host_waits == c0.host_waits, "host waits: %llu host waits in 3 unread steps",
              (unsigned long long)(c1.host_waits - c0.host_waits));
        double loss = 0, norm = 0;
        CHECK(mt_train_step(ctx, m, o, &h, &b, 1, &loss, &norm) == MT_OK && isfinite(loss) && loss > 0 && norm > 0,
              "host waits: the read step gives loss %g norm %g: %s", loss, norm, mt_last_error());
    }
    drain(ctx);
    mt_optimizer_free(o);
    mt_transformer_free(m);
    mt_context_free(ctx);
    tu_batch_free(&b);
}

int main(void) {
    const char *emu = getenv("MT_GPU_TEST_EMU");
    if (emu && *emu && *emu != '0') {
        EMU = 1;
        printf("MT_GPU_TEST_EMU: the CUDA backend runs on the CPU emulator of tests/gpu/emu\n");
    } else {
        char why[160];
        if (mt_cuda_probe(why, sizeof why) == 0) {
            printf("skipped: no CUDA device (cudaGetDeviceCount: %s)\n", why);
            return 77;
        }
    }
    cross_context();
    repeatable();
    host_waits();
    printf("%s (%d failures)\n", n_fail ? "FAILED" : "PASSED", n_fail);
    return n_fail ? 1 : 0;
}
