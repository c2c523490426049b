/*
 * mt_weights_diff.c — test helper: the largest absolute difference between the parameters of two
 * model files or checkpoints (same architecture), and whether each file loads (its SHA-256 checked).
 *
 *   mt_weights_diff A.mt B.mt    prints "max_abs_diff <x> max_abs <y>"; exit 1 if either does not load
 *   mt_weights_diff A.mt         loads A only (a checkpoint verified complete); exit 1 if it does not
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "format/modelfile.h"
#include "ops/ops.h"

static float *params_of(const mt_transformer *m, mt_context *ctx, size_t *n) {
    size_t total = 0;
    for (int i = 0; i < m->n_params; i++) total += (size_t)m->params[i]->numel;
    float *v = malloc(sizeof(float) * (total ? total : 1));
    size_t off = 0;
    for (int i = 0; v && i < m->n_params; i++) {
        mt_copy_to_host(ctx, m->params[i], v + off, mt_tensor_bytes(m->params[i]));
        off += (size_t)m->params[i]->numel;
    }
    *n = total;
    return v;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: mt_weights_diff A.mt [B.mt]\n");
        return 2;
    }
    mt_modelfile a = {0}, b = {0};
    if (mt_modelfile_load(argv[1], -1, 0, &a) != MT_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], mt_last_error());
        return 1;
    }
    if (argc == 2) {
        mt_modelfile_clear(&a);
        return 0;
    }
    if (mt_modelfile_load(argv[2], -1, 0, &b) != MT_OK) {
        fprintf(stderr, "%s: %s\n", argv[2], mt_last_error());
        return 1;
    }
    mt_context *ctx;
    if (mt_context_init(&ctx, -1, 1) != MT_OK) return 1;
    size_t na, nb;
    float *va = params_of(a.model, ctx, &na), *vb = params_of(b.model, ctx, &nb);
    if (!va || !vb || na != nb) {
        fprintf(stderr, "parameter counts differ: %zu vs %zu\n", na, nb);
        return 1;
    }
    double md = 0, mx = 0;
    for (size_t i = 0; i < na; i++) {
        double d = fabs((double)va[i] - (double)vb[i]);
        if (!(d <= md)) md = d;
        if (fabs(va[i]) > mx) mx = fabs(va[i]);
    }
    printf("max_abs_diff %.9g max_abs %.9g\n", md, mx);
    free(va);
    free(vb);
    mt_context_free(ctx);
    mt_modelfile_clear(&a);
    mt_modelfile_clear(&b);
    return 0;
}
