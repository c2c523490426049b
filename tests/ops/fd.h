/*
 * fd.h — central finite differences of an engine function, for gradient checks.
 *
 * For a function y = fn(x0..xn) and an upstream gradient gy, the scalar L = sum(y * gy) is
 * accumulated in double from the f32 outputs; dL/dx_j ~ (L(x_j + h) - L(x_j - h)) / (x_j+ - x_j-),
 * using the perturbations actually representable in f32. The analytic gradient is the engine's
 * backward with gy. Every evaluation runs in a freshly reset context reseeded with `seed`, so
 * random ops (dropout) draw the same mask each time.
 */
#ifndef MT_TESTS_FD_H
#define MT_TESTS_FD_H

#include "golden.h"

typedef mt_tensor *(*mt_fd_fn)(mt_context *ctx, mt_tensor **xs, int n, void *user);

typedef struct mt_fd_result {
    double worst;      /* worst |analytic - numeric| / (atol + rtol |numeric|) */
    int input;         /* where it was */
    int64_t index;
    double analytic, numeric;
    int64_t checked;   /* derivatives compared */
    int failed;        /* the function or backward failed (message in mt_last_error()) */
} mt_fd_result;

/* xs: n host inputs (F32 or I32); diff[i] != 0 for those to check; gy: NULL when y is a scalar.
 * h: relative step (the step for x is h * max(1, |x|)). */
mt_fd_result mt_fd_check(mt_context *ctx, const mt_gtensor *xs, const int *diff, int n, const mt_gtensor *gy,
                         mt_fd_fn fn, void *user, double h, double atol, double rtol, uint64_t seed);

#endif
