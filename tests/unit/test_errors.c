/*
 * test_errors.c — every error class of the op layer: a shape that does not fit, a dtype or device
 * mismatch, an axis out of range, a stale tensor after mt_context_reset, a NULL input. Each call
 * must return NULL with the right status in ctx->status, a last-error message naming the op and the
 * shapes, and leave no partial result: no tape node, no arena memory taken, the first error kept
 * while NULLs propagate, and backward refusing to run over a failed forward.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ops/ops.h"

typedef struct fixture {
    mt_context *ctx;
    mt_tensor *a23, *b45, *c3, *w5, *i23, *x4; /* x4: (2,3,4,5) */
} fixture;

static int setup(void **state) {
    static fixture f;
    memset(&f, 0, sizeof f);
    if (mt_context_init(&f.ctx, MT_DEVICE_CPU, 0) != MT_OK) return -1;
    f.a23 = mt_full(f.ctx, MT_DIMS(2, 3), 1.5f);
    f.b45 = mt_full(f.ctx, MT_DIMS(4, 5), -0.5f);
    f.c3 = mt_full(f.ctx, MT_DIMS(3), 2.0f);
    f.w5 = mt_full(f.ctx, MT_DIMS(5), 0.75f);
    f.i23 = mt_from_data(f.ctx, MT_DTYPE_I32, MT_DIMS(2, 3), (const int32_t[]){1, 2, 3, 4, 5, 6});
    f.x4 = mt_full(f.ctx, MT_DIMS(2, 3, 4, 5), 0.25f);
    mt_requires_grad(f.a23, 1);
    mt_requires_grad(f.b45, 1);
    *state = &f;
    return f.a23 && f.b45 && f.c3 && f.w5 && f.i23 && f.x4 ? 0 : -1;
}

static int teardown(void **state) {
    fixture *f = *state;
    mt_context_free(f->ctx);
    return 0;
}

/* Snapshot of everything a failing op must leave untouched. */
typedef struct snap {
    int32_t nodes;
    size_t host_used, data_used;
} snap;

/* Each test starts with a clean status (a failed assertion may have left one set). */
static int clean(void **state) {
    fixture *f = *state;
    f->ctx->status = MT_OK;
    return 0;
}

static snap take_snap(const mt_context *ctx) {
    snap s = {ctx->n_nodes, ctx->host.used, ctx->data.used};
    return s;
}

/* Checks the failure of one op call: NULL, status, message fragments, nothing left behind; then
 * clears the context's sticky status for the next case (the arena is untouched, so nothing else). */
#define EXPECT_FAIL(f, call, want_st, ...)                                                               \
    do {                                                                                                \
        snap before_ = take_snap((f)->ctx);                                                             \
        mt_error_clear();                                                                               \
        mt_tensor *r_ = (call);                                                                         \
        assert_null(r_);                                                                                \
        assert_int_equal((f)->ctx->status, (want_st));                                                   \
        const char *frags_[] = {__VA_ARGS__};                                                           \
        for (size_t k_ = 0; k_ < sizeof frags_ / sizeof frags_[0]; k_++)                               \
            if (!strstr(mt_last_error(), frags_[k_]))                                                   \
                fail_msg("%s: message \"%s\" lacks \"%s\"", #call, mt_last_error(), frags_[k_]);        \
        snap after_ = take_snap((f)->ctx);                                                              \
        assert_int_equal(after_.nodes, before_.nodes);                                                  \
        assert_int_equal(after_.host_used, before_.host_used);                                          \
        assert_int_equal(after_.data_used, before_.data_used);                                          \
        (f)->ctx->status = MT_OK;                                                                       \
    } while (0)

static void test_shape_errors(void **state) {
    fixture *f = *state;
    mt_context *ctx = f->ctx;
    EXPECT_FAIL(f, mt_add(ctx, f->a23, f->b45), MT_ERR_SHAPE, "add", "(2,3)", "(4,5)", "broadcast");
    EXPECT_FAIL(f, mt_mul(ctx, f->a23, f->w5), MT_ERR_SHAPE, "mul", "(2,3)", "(5)");
    EXPECT_FAIL(f, mt_matmul(ctx, f->a23, f->b45, 0, 0), MT_ERR_SHAPE, "matmul", "(2,3)", "(4,5)", "inner dims");
    EXPECT_FAIL(f, mt_matmul(ctx, f->a23, f->a23, 1, 1), MT_ERR_SHAPE, "matmul", "(2,3)^T");
    EXPECT_FAIL(f, mt_matmul(ctx, f->c3, f->a23, 0, 0), MT_ERR_SHAPE, "matmul", "(3)", "2 dims");
    EXPECT_FAIL(f, mt_linear(ctx, f->a23, f->b45, NULL), MT_ERR_SHAPE, "linear", "(2,3)", "(4,5)");
    EXPECT_FAIL(f, mt_layer_norm(ctx, f->a23, f->w5, NULL, 1e-5f), MT_ERR_SHAPE, "layer_norm", "(2,3)", "(5)");
    EXPECT_FAIL(f, mt_rms_norm(ctx, f->b45, f->c3, 1e-5f), MT_ERR_SHAPE, "rms_norm", "(4,5)", "(3)");
    EXPECT_FAIL(f, mt_reshape(ctx, f->a23, MT_DIMS(4, 2)), MT_ERR_SHAPE, "reshape", "(2,3)", "(4,2)");
    EXPECT_FAIL(f, mt_reshape(ctx, f->b45, MT_DIMS(-1, 3)), MT_ERR_SHAPE, "reshape", "(4,5)", "multiple of 3");
    EXPECT_FAIL(f, mt_concat(ctx, ((mt_tensor *[]){f->a23, f->b45}), 2, 0), MT_ERR_SHAPE, "concat", "(4,5)", "(2,3)");
    EXPECT_FAIL(f, mt_narrow(ctx, f->b45, 1, 3, 4), MT_ERR_SHAPE, "narrow", "[3, 7)", "(4,5)");
    EXPECT_FAIL(f, mt_masked_fill(ctx, f->a23, f->b45, 0.0f), MT_ERR_SHAPE, "masked_fill", "(4,5)", "(2,3)");
    EXPECT_FAIL(f, mt_attention(ctx, f->x4, f->x4, f->a23, NULL, 0, 1.0f), MT_ERR_SHAPE, "attention", "(2,3,4,5)",
                "(2,3)");
    mt_tensor *q = mt_full(ctx, MT_DIMS(2, 3, 4, 5), 0.5f), *k = mt_full(ctx, MT_DIMS(2, 3, 6, 4), 0.5f);
    EXPECT_FAIL(f, mt_attention(ctx, q, k, k, NULL, 0, 1.0f), MT_ERR_SHAPE, "attention", "(2,3,4,5)", "(2,3,6,4)");
    EXPECT_FAIL(f, mt_attention(ctx, q, q, q, f->a23, 0, 1.0f), MT_ERR_SHAPE, "attention", "mask (2,3)");
    mt_tensor *t3 = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(3), (const int32_t[]){0, 1, 2});
    EXPECT_FAIL(f, mt_cross_entropy(ctx, f->b45, t3, 0.0f, -100), MT_ERR_SHAPE, "cross_entropy", "(4,5)", "(3)");
    EXPECT_FAIL(f, mt_embedding(ctx, f->c3, t3), MT_ERR_SHAPE, "embedding", "(3)");
    EXPECT_FAIL(f, mt_full(ctx, MT_DIMS(2, 0, 3), 1.0f), MT_ERR_SHAPE, "(2,0,3)", "axis 1");
    EXPECT_FAIL(f, mt_zeros(ctx, 7, (const int64_t[]){1, 1, 1, 1, 1, 1, 1}), MT_ERR_SHAPE, "7 dims");
    EXPECT_FAIL(f, mt_arange(ctx, 0.0, 1.0, 0), MT_ERR_SHAPE, "arange");
    mt_tensor *odd = mt_full(ctx, MT_DIMS(2, 3), 1.0f);
    EXPECT_FAIL(f, mt_rope(ctx, odd, 0, 1e4f), MT_ERR_SHAPE, "rope", "(2,3)", "even");
}

static void test_dtype_errors(void **state) {
    fixture *f = *state;
    mt_context *ctx = f->ctx;
    EXPECT_FAIL(f, mt_add(ctx, f->a23, f->i23), MT_ERR_DTYPE, "add", "(2,3) i32", "f32");
    EXPECT_FAIL(f, mt_exp(ctx, f->i23), MT_ERR_DTYPE, "exp", "(2,3) i32");
    EXPECT_FAIL(f, mt_matmul(ctx, f->i23, f->a23, 0, 1), MT_ERR_DTYPE, "matmul", "(2,3) i32");
    EXPECT_FAIL(f, mt_softmax(ctx, f->i23, -1), MT_ERR_DTYPE, "softmax", "(2,3) i32");
    EXPECT_FAIL(f, mt_sum(ctx, f->i23, NULL, 0, 0), MT_ERR_DTYPE, "sum", "(2,3) i32");
    EXPECT_FAIL(f, mt_embedding(ctx, f->b45, f->a23), MT_ERR_DTYPE, "embedding", "ids (2,3) f32", "i32");
    mt_tensor *ft = mt_full(ctx, MT_DIMS(2), 1.0f);
    EXPECT_FAIL(f, mt_cross_entropy(ctx, f->a23, ft, 0.0f, -100), MT_ERR_DTYPE, "cross_entropy", "(2) f32");
    mt_tensor *iw = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(3), (const int32_t[]){1, 1, 1});
    EXPECT_FAIL(f, mt_layer_norm(ctx, f->a23, iw, NULL, 1e-5f), MT_ERR_DTYPE, "layer_norm", "(3) i32");
}

static void test_device_errors(void **state) {
    fixture *f = *state;
    mt_context *ctx = f->ctx;
    /* A tensor that claims to live on CUDA device 0 (no GPU here): no op may touch its data. */
    mt_tensor *g = mt_full(ctx, MT_DIMS(2, 3), 1.0f);
    g->device = 0;
    EXPECT_FAIL(f, mt_add(ctx, f->a23, g), MT_ERR_DEVICE, "add", "(2,3) f32", "cuda:0", "cpu");
    EXPECT_FAIL(f, mt_matmul(ctx, g, f->a23, 0, 1), MT_ERR_DEVICE, "matmul", "cuda:0");
    EXPECT_FAIL(f, mt_layer_norm(ctx, f->a23, g, NULL, 1e-5f), MT_ERR_DEVICE, "layer_norm", "cuda:0");
    EXPECT_FAIL(f, mt_concat(ctx, ((mt_tensor *[]){f->a23, g}), 2, 0), MT_ERR_DEVICE, "concat", "cuda:0");
    assert_int_equal(mt_backward(ctx, f->a23, g), MT_ERR_DEVICE);
    /* A context on a device this build or machine does not have. */
    mt_context *gpu = NULL;
    mt_status st = mt_context_init(&gpu, 0, 0);
    assert_true(st == MT_ERR_NO_DEVICE || st == MT_OK);
    if (st == MT_OK) mt_context_free(gpu);
    else assert_non_null(strstr(mt_last_error(), "cuda:0"));
    assert_int_equal(mt_context_init(&gpu, -7, 0), MT_ERR_DEVICE);
}

static void test_axis_errors(void **state) {
    fixture *f = *state;
    mt_context *ctx = f->ctx;
    EXPECT_FAIL(f, mt_sum(ctx, f->a23, (const int[]){2}, 1, 0), MT_ERR_AXIS, "sum", "axis 2", "(2,3)");
    EXPECT_FAIL(f, mt_max(ctx, f->x4, (const int[]){-5}, 1, 1), MT_ERR_AXIS, "max", "axis -5", "(2,3,4,5)");
    EXPECT_FAIL(f, mt_mean(ctx, f->x4, (const int[]){1, -3}, 2, 0), MT_ERR_AXIS, "mean", "twice", "(2,3,4,5)");
    EXPECT_FAIL(f, mt_argmax(ctx, f->a23, 3, 0), MT_ERR_AXIS, "argmax", "axis 3", "(2,3)");
    EXPECT_FAIL(f, mt_softmax(ctx, f->a23, -3), MT_ERR_AXIS, "softmax", "axis -3", "(2,3)");
    EXPECT_FAIL(f, mt_log_softmax(ctx, f->a23, 2), MT_ERR_AXIS, "log_softmax", "axis 2");
    EXPECT_FAIL(f, mt_transpose(ctx, f->a23, 0, 2), MT_ERR_AXIS, "transpose", "(0, 2)", "(2,3)");
    EXPECT_FAIL(f, mt_permute(ctx, f->x4, (const int[]){0, 1, 1, 3}), MT_ERR_AXIS, "permute", "(2,3,4,5)");
    EXPECT_FAIL(f, mt_narrow(ctx, f->a23, -3, 0, 1), MT_ERR_AXIS, "narrow", "axis -3", "(2,3)");
    EXPECT_FAIL(f, mt_concat(ctx, ((mt_tensor *[]){f->a23, f->a23}), 2, 2), MT_ERR_AXIS, "concat", "axis 2", "(2,3)");
}

static void test_null_propagation(void **state) {
    fixture *f = *state;
    mt_context *ctx = f->ctx;
    EXPECT_FAIL(f, mt_add(ctx, NULL, f->a23), MT_ERR_INVALID_ARG, "add", "NULL");
    /* Straight-line code: the first failure sticks, every later op returns NULL, backward refuses. */
    mt_error_clear();
    mt_tensor *h = mt_matmul(ctx, f->a23, f->b45, 0, 0);   /* fails: (2,3) @ (4,5) */
    h = mt_tanh(ctx, h);
    h = mt_add(ctx, h, f->a23);
    h = mt_sum(ctx, h, NULL, 0, 0);
    assert_null(h);
    assert_int_equal(ctx->status, MT_ERR_SHAPE);
    assert_non_null(strstr(mt_last_error(), "matmul"));
    mt_tensor *ok = mt_sum(ctx, mt_mul(ctx, f->a23, f->a23), NULL, 0, 0); /* valid ops still run */
    assert_non_null(ok);
    assert_int_equal(mt_backward(ctx, ok, NULL), MT_ERR_SHAPE);
    assert_non_null(strstr(mt_last_error(), "an earlier op failed"));
    assert_null(f->a23->grad);
    ctx->status = MT_OK;
    /* Bad arguments that are not tensors. */
    EXPECT_FAIL(f, mt_dropout(ctx, f->a23, 1.0f, 1), MT_ERR_INVALID_ARG, "dropout", "p = 1");
    mt_tensor *t2 = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(2), (const int32_t[]){0, 1});
    EXPECT_FAIL(f, mt_cross_entropy(ctx, f->a23, t2, 1.5f, -100), MT_ERR_INVALID_ARG, "cross_entropy",
                "label_smoothing");
    mt_tensor *ids = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(3), (const int32_t[]){0, 4, 1});
    EXPECT_FAIL(f, mt_embedding(ctx, f->b45, ids), MT_ERR_INVALID_ARG, "embedding", "id 4", "[0, 4)");
    /* INT32_MIN once slipped through as the "no ignored id" marker and read outside the table. */
    mt_tensor *imin = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(1), (const int32_t[]){INT32_MIN});
    EXPECT_FAIL(f, mt_embedding(ctx, f->b45, imin), MT_ERR_INVALID_ARG, "embedding", "id -2147483648");
    EXPECT_FAIL(f, mt_index_rows(ctx, f->b45, imin), MT_ERR_INVALID_ARG, "index_rows", "id -2147483648");
    mt_tensor *tneg = mt_from_data(ctx, MT_DTYPE_I32, MT_DIMS(4), (const int32_t[]){0, -100, 7, 1});
    EXPECT_FAIL(f, mt_cross_entropy(ctx, f->b45, tneg, 0.0f, -100), MT_ERR_INVALID_ARG, "cross_entropy", "id 7");
    mt_tensor *i8 = mt_cast(ctx, f->a23, MT_DTYPE_I8);
    EXPECT_FAIL(f, mt_permute(ctx, i8, (const int[]){1, 0}), MT_ERR_DTYPE, "permute", "i8");
    EXPECT_FAIL(f, mt_unary(ctx, (mt_unary_op)42, f->a23), MT_ERR_INVALID_ARG, "unary");
    EXPECT_FAIL(f, mt_concat(ctx, NULL, 0, 0), MT_ERR_INVALID_ARG, "concat");
}

static void test_stale_tensor(void **state) {
    (void)state;
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    mt_tensor *x = mt_full(ctx, MT_DIMS(2, 2), 1.0f);
    assert_non_null(x);
    assert_int_equal(mt_context_reset(ctx), MT_OK);
    /* x's struct still sits in the (kept) arena block, so the use is detected, not undefined. */
    mt_error_clear();
    assert_null(mt_exp(ctx, x));
    assert_int_equal(ctx->status, MT_ERR_STATE);
    assert_non_null(strstr(mt_last_error(), "exp"));
    assert_non_null(strstr(mt_last_error(), "(2,2)"));
    assert_non_null(strstr(mt_last_error(), "mt_context_reset"));
    /* ... and a tensor of another context. */
    mt_context *other;
    assert_int_equal(mt_context_init(&other, MT_DEVICE_CPU, 0), MT_OK);
    assert_int_equal(mt_context_reset(ctx), MT_OK);
    mt_tensor *y = mt_full(other, MT_DIMS(3), 1.0f);
    assert_null(mt_neg(ctx, y));
    assert_int_equal(ctx->status, MT_ERR_STATE);
    assert_non_null(strstr(mt_last_error(), "another context"));
    /* Persistent tensors belong to no step: usable from any context, across resets. */
    mt_tensor *p;
    assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, MT_DIMS(3), "p", &p), MT_OK);
    assert_int_equal(mt_fill(ctx, p, 2.0f), MT_OK);
    assert_int_equal(mt_context_reset(ctx), MT_OK);
    assert_non_null(mt_neg(ctx, p));
    assert_non_null(mt_neg(other, p));
    mt_tensor_free(p);
    mt_context_free(other);
    mt_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_shape_errors, clean),
        cmocka_unit_test_setup(test_dtype_errors, clean),
        cmocka_unit_test_setup(test_device_errors, clean),
        cmocka_unit_test_setup(test_axis_errors, clean),
        cmocka_unit_test_setup(test_null_propagation, clean),
        cmocka_unit_test(test_stale_tensor),
    };
    return cmocka_run_group_tests_name("errors", tests, setup, teardown);
}
