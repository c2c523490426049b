/*
 * golden.h — reading the PyTorch golden files of tests/reference/golden (format: tests/reference/
 * README.md) and running a golden case's op in the engine. Shared by the reference test (outputs and
 * gradients against PyTorch) and the finite-difference test (which reuses the cases' inputs and
 * upstream gradients, not PyTorch's results).
 */
#ifndef MT_TESTS_GOLDEN_H
#define MT_TESTS_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

#include "ops/ops.h"

#define MT_G_MAX_ATTRS 16
#define MT_G_MAX_TENSORS 16

typedef struct mt_gtensor {
    char key[16];      /* x0.. inputs, y output, gy upstream gradient, gx<i> gradient of input i */
    mt_dtype dtype;    /* F32 or I32 */
    int ndim;
    int64_t shape[MT_MAX_DIMS];
    int64_t numel;
    void *data;        /* numel elements, host */
} mt_gtensor;

typedef struct mt_gcase {
    char op[32];
    int n_attrs;
    char attr_key[MT_G_MAX_ATTRS][16];
    double attr_val[MT_G_MAX_ATTRS];
    int n_tensors;
    mt_gtensor t[MT_G_MAX_TENSORS];
} mt_gcase;

typedef struct mt_gfile {
    char name[64];     /* file name without .mtg */
    int n_cases;
    mt_gcase *cases;
} mt_gfile;

/* Loads one .mtg file; 0 on success, -1 with a message in err. */
int mt_gfile_load(const char *path, mt_gfile *out, char *err, size_t errlen);
void mt_gfile_free(mt_gfile *f);
/* Every *.mtg of dir, sorted by name; returns the count (-1 if dir cannot be read). *names: malloc'd
 * array of malloc'd paths. */
int mt_gdir_list(const char *dir, char ***paths);
/* The golden directory: argv[1] when given, else $MT_GOLDEN_DIR, else tests/reference/golden. */
const char *mt_gdir_default(int argc, char **argv);

double mt_gattr(const mt_gcase *c, const char *key, double def);
const mt_gtensor *mt_gget(const mt_gcase *c, const char *key);
/* Number of inputs x0..x{n-1}. */
int mt_gcase_n_inputs(const mt_gcase *c);

/* An engine tensor holding golden tensor g (arena tensor of ctx). */
mt_tensor *mt_gtensor_make(mt_context *ctx, const mt_gtensor *g);
/* Runs the case's op on engine inputs xs[0..n) (attributes from c); NULL on failure (ctx->status). */
mt_tensor *mt_run_case(mt_context *ctx, const mt_gcase *c, mt_tensor **xs, int n);
/* 1 when the case's op is differentiable and the golden file holds gradients for it. */
int mt_gcase_has_grads(const mt_gcase *c);

#endif
