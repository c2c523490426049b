/*
 * consumer/main.c — a program built against an INSTALLED MicroTensor (pkg-config or find_package):
 * it includes only <microtensor.h>, checks the run-time version against the header's, and runs a
 * small autograd computation through the low-level tensor ABI.
 */
#include <math.h>
#include <stdio.h>

#include <microtensor.h>

int main(void) {
    if (mt_version() != MT_VERSION_NUMBER) {
        fprintf(stderr, "version mismatch: library %u, header %u\n", mt_version(), (unsigned)MT_VERSION_NUMBER);
        return 1;
    }
    mt_context_t *ctx = NULL;
    mt_tensor_t *x = NULL, *y = NULL, *s = NULL, *g = NULL;
    const float data[3] = {1.0f, 2.0f, 3.0f};
    int64_t shape[1] = {3};
    if (mt_context_create(MT_DEVICE_CPU, &ctx) != MT_OK ||
        mt_tensor_from_data(ctx, MT_DTYPE_F32, 1, shape, data, 0, &x) != MT_OK ||
        mt_tensor_set_requires_grad(x, 1) != MT_OK || mt_tensor_binary(ctx, MT_BINARY_MUL, x, x, &y) != MT_OK ||
        mt_tensor_reduce(ctx, MT_REDUCE_SUM, y, NULL, 0, 0, &s) != MT_OK || mt_tensor_backward(ctx, s, NULL) != MT_OK ||
        mt_tensor_grad(x, &g) != MT_OK) {
        fprintf(stderr, "failed: %s\n", mt_last_error());
        return 1;
    }
    float sum = 0, grad[3];
    if (mt_tensor_read(s, &sum, sizeof sum) != MT_OK || mt_tensor_read(g, grad, sizeof grad) != MT_OK) return 1;
    mt_context_free(ctx);
    /* sum(x^2) = 14, d/dx = 2x */
    if (fabsf(sum - 14.0f) > 1e-5f || fabsf(grad[0] - 2.0f) > 1e-5f || fabsf(grad[2] - 6.0f) > 1e-5f) {
        fprintf(stderr, "wrong values: sum %g grad %g %g %g\n", sum, grad[0], grad[1], grad[2]);
        return 1;
    }
    printf("consumer ok: MicroTensor %s\n", mt_version_string());
    return 0;
}
