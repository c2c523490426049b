/*
 * fd.c — central finite differences (see fd.h).
 */
#include "fd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* L = sum(y * gy) in double (gy NULL: y itself, a one-element tensor); NAN when fn fails. */
static double eval_loss(mt_context *ctx, const mt_gtensor *xs, int n, const mt_gtensor *gy, mt_fd_fn fn, void *user,
                        uint64_t seed) {
    mt_context_reset(ctx);
    mt_context_seed(ctx, seed);
    int saved = mt_no_grad_begin(ctx);
    mt_tensor *t[MT_G_MAX_TENSORS];
    for (int i = 0; i < n; i++) t[i] = mt_gtensor_make(ctx, &xs[i]);
    mt_tensor *y = fn(ctx, t, n, user);
    mt_no_grad_end(ctx, saved);
    if (!y) return NAN;
    const float *py = mt_f32(y);
    double L = 0.0;
    if (!gy) return (double)py[0];
    const float *pg = gy->data;
    for (int64_t k = 0; k < y->numel; k++) L += (double)py[k] * (double)pg[k];
    return L;
}

mt_fd_result mt_fd_check(mt_context *ctx, const mt_gtensor *xs_in, const int *diff, int n, const mt_gtensor *gy,
                         mt_fd_fn fn, void *user, double h, double atol, double rtol, uint64_t seed) {
    mt_fd_result res = {0};
    double *analytic[MT_G_MAX_TENSORS] = {0};
    res.input = -1;
    res.index = -1;
    /* Private copies of the inputs: the perturbation writes into them. */
    mt_gtensor xs[MT_G_MAX_TENSORS];
    for (int i = 0; i < n; i++) {
        xs[i] = xs_in[i];
        xs[i].data = malloc((size_t)xs[i].numel * 4);
        memcpy(xs[i].data, xs_in[i].data, (size_t)xs[i].numel * 4);
    }
    /* Analytic gradients. */
    mt_context_reset(ctx);
    mt_context_seed(ctx, seed);
    mt_tensor *t[MT_G_MAX_TENSORS];
    for (int i = 0; i < n; i++) {
        t[i] = mt_gtensor_make(ctx, &xs[i]);
        if (t[i] && diff[i]) t[i]->flags |= MT_TENSOR_REQUIRES_GRAD;
    }
    mt_tensor *y = fn(ctx, t, n, user);
    mt_tensor *gyt = y && gy ? mt_gtensor_make(ctx, gy) : NULL;
    if (!y || (gy && !gyt) || mt_backward(ctx, y, gyt) != MT_OK) {
        res.failed = 1;
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (!diff[i]) continue;
        analytic[i] = calloc((size_t)xs[i].numel, sizeof(double));
        if (t[i]->grad)
            for (int64_t k = 0; k < xs[i].numel; k++) analytic[i][k] = mt_f32(t[i]->grad)[k];
    }
    /* Numeric gradients, element by element. */
    for (int i = 0; i < n && !res.failed; i++) {
        if (!diff[i]) continue;
        float *x = xs[i].data;
        for (int64_t k = 0; k < xs[i].numel; k++) {
            float x0 = x[k];
            double step = h * fmax(1.0, fabs((double)x0));
            float xp = (float)((double)x0 + step), xm = (float)((double)x0 - step);
            x[k] = xp;
            double Lp = eval_loss(ctx, xs, n, gy, fn, user, seed);
            x[k] = xm;
            double Lm = eval_loss(ctx, xs, n, gy, fn, user, seed);
            x[k] = x0;
            if (isnan(Lp) || isnan(Lm)) {
                res.failed = 1;
                break;
            }
            double num = (Lp - Lm) / ((double)xp - (double)xm);
            double an = analytic[i][k];
            double r = fabs(an - num) / (atol + rtol * fabs(num));
            if (r > res.worst || res.input < 0) {
                res.worst = r > res.worst ? r : res.worst;
                res.input = i;
                res.index = k;
                res.analytic = an;
                res.numeric = num;
            }
            res.checked++;
        }
    }
done:
    for (int i = 0; i < n; i++) free(analytic[i]);
    for (int i = 0; i < n; i++) free(xs[i].data);
    return res;
}
