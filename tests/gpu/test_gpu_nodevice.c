/*
 * test_gpu_nodevice.c — device selection and the behaviour of every GPU entry point, in any build and
 * on any machine. Without a CUDA device (or in a CPU-only build): mt_device_count gives 0, creating a
 * context or a tensor on cuda:0 fails with MT_ERR_NO_DEVICE and a message that says why, every entry of
 * the CUDA backend's table fails the same way with no crash, and `--gpus` parsing names the missing
 * device. With a device, the same calls succeed and only ids past the last device fail.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "core/backend.h"
#include "core/context.h"
#include "core/error.h"
#include "core/tensor.h"
#ifdef MT_WITH_CUDA
#include "cuda/mt_cuda.h"
#endif

static int n_devices(void) {
    int n = -1;
    assert_int_equal(mt_device_count(&n), MT_OK);
    assert_true(n >= 0);
    return n;
}

static void test_device_count(void **state) {
    (void)state;
    int n = n_devices();
#ifdef MT_WITH_CUDA
    char why[160];
    assert_int_equal(mt_cuda_probe(why, sizeof why), n);
    printf("cuda devices: %d (cudaGetDeviceCount: %s)\n", n, why);
#else
    assert_int_equal(n, 0);
#endif
    assert_int_equal(mt_device_count(NULL), MT_ERR_INVALID_ARG);
}

static void test_context_on_missing_device(void **state) {
    (void)state;
    int n = n_devices();
    mt_context *ctx = NULL;
    /* One past the last device never exists. */
    assert_int_equal(mt_context_create(n, &ctx), MT_ERR_NO_DEVICE);
    assert_null(ctx);
    const char *msg = mt_last_error();
    printf("mt_context_create(%d): %s\n", n, msg);
    assert_non_null(strstr(msg, "cuda:"));
    assert_true(strstr(msg, "no CUDA device") || strstr(msg, "no such device") || strstr(msg, "no CUDA backend"));
    if (n == 0) {
        assert_int_equal(mt_context_create(0, &ctx), MT_ERR_NO_DEVICE);
        mt_tensor *t = NULL;
        int64_t shape[2] = {2, 3};
        assert_int_equal(mt_tensor_new_persistent(0, MT_DTYPE_F32, 2, shape, "w", &t), MT_ERR_NO_DEVICE);
        assert_null(t);
    } else {
        assert_int_equal(mt_context_create(0, &ctx), MT_OK);
        mt_context_free(ctx);
    }
    assert_int_equal(mt_context_create(-2, &ctx), MT_ERR_DEVICE);
}

static void test_gpus_parse(void **state) {
    (void)state;
    int n = n_devices(), ids[8], k = -1;
    assert_int_equal(mt_devices_parse("", ids, 8, &k), MT_OK);
    assert_int_equal(k, 0);
    assert_int_equal(mt_devices_parse("cpu", ids, 8, &k), MT_OK);
    assert_int_equal(k, 0);
    assert_int_equal(mt_devices_parse("0,,1", ids, 8, &k), MT_ERR_INVALID_ARG);
    assert_int_equal(mt_devices_parse("a", ids, 8, &k), MT_ERR_INVALID_ARG);
    assert_int_equal(mt_devices_parse("0;1", ids, 8, &k), MT_ERR_INVALID_ARG);
    assert_int_equal(mt_devices_parse("-1", ids, 8, &k), MT_ERR_INVALID_ARG);
    char spec[32];
    snprintf(spec, sizeof spec, "%d", n);
    assert_int_equal(mt_devices_parse(spec, ids, 8, &k), MT_ERR_NO_DEVICE);
    printf("--gpus %s: %s\n", spec, mt_last_error());
    assert_non_null(strstr(mt_last_error(), "cuda:"));
    if (n >= 1) {
        assert_int_equal(mt_devices_parse(" 0 ", ids, 8, &k), MT_OK);
        assert_int_equal(k, 1);
        assert_int_equal(ids[0], 0);
        assert_int_equal(mt_devices_parse("0,0", ids, 8, &k), MT_ERR_INVALID_ARG);
    }
    if (n >= 2) {
        assert_int_equal(mt_devices_parse("1,0", ids, 8, &k), MT_OK);
        assert_int_equal(k, 2);
        assert_int_equal(ids[0], 1);
        assert_int_equal(ids[1], 0);
    }
}

#ifdef MT_WITH_CUDA
/* Every entry of the table, called with an execution state that has no device, fails cleanly. */
static void test_table_without_exec(void **state) {
    (void)state;
    const mt_backend *be = &mt_cuda_backend;
    /* The table is complete: no NULL entry (every field after the name is a function pointer), but for
     * the one backend.h says may be NULL: qlinear (an int8 model runs its dequantized weights on a GPU). */
    const void *const *fn = (const void *const *)((const char *)be + offsetof(mt_backend, exec_init));
    size_t n_fn = (sizeof(mt_backend) - offsetof(mt_backend, exec_init)) / sizeof(void *);
    size_t optional = (offsetof(mt_backend, qlinear) - offsetof(mt_backend, exec_init)) / sizeof(void *);
    for (size_t i = 0; i < n_fn; i++)
        if (i != optional) assert_non_null(fn[i]);
    assert_null(be->qlinear);

    mt_exec ex;
    memset(&ex, 0, sizeof ex);
    float f[4] = {0};
    int32_t ids[4] = {0};
    int64_t sh[1] = {4}, st[1] = {1};
    mt_bcast bc = {.ndim = 1, .shape = {4}, .sa = {1}, .sb = {1}, .numel = 4, .na = 4, .nb = 4};
    mt_reduce_desc rd = {.ndim = 1, .shape = {4}, .axes = 1, .n_out = 1, .n_red = 4};
    mt_attn_desc ad = {.B = 1, .H = 1, .Hk = 1, .Tq = 1, .Tk = 1, .D = 4, .Dv = 4, .scale = 1.0f};
    mt_status want = MT_ERR_NO_DEVICE;
#define NODEV(call)                                                  \
    do {                                                             \
        mt_status s_ = (call);                                       \
        if (s_ != want) printf("%s -> %s\n", #call, mt_status_str(s_)); \
        assert_int_equal(s_, want);                                  \
    } while (0)
    NODEV(be->to_host(&ex, f, f, 4));
    NODEV(be->to_device(&ex, f, f, 4));
    NODEV(be->copy(&ex, f, f, 4));
    NODEV(be->zero(&ex, f, 4));
    NODEV(be->sync(&ex));
    NODEV(be->fill(&ex, f, 4, 1.0f));
    NODEV(be->arange(&ex, f, 4, 0, 1));
    NODEV(be->random(&ex, f, 4, MT_RANDOM_NORMAL, 0, 1, 1, 0));
    NODEV(be->cast(&ex, f, MT_DTYPE_BF16, f, MT_DTYPE_F32, 4));
    NODEV(be->unary_fwd(&ex, MT_UNARY_EXP, f, f, 4));
    NODEV(be->unary_bwd(&ex, MT_UNARY_EXP, f, f, f, f, 4));
    NODEV(be->scalar_fwd(&ex, MT_SCALAR_ADD, f, f, 1, 4));
    NODEV(be->scalar_bwd(&ex, MT_SCALAR_ADD, f, f, f, 1, 4));
    NODEV(be->binary_fwd(&ex, MT_BINARY_ADD, f, f, f, &bc));
    NODEV(be->binary_bwd(&ex, MT_BINARY_ADD, f, f, f, f, f, &bc));
    NODEV(be->masked_fill_fwd(&ex, f, f, f, 0, &bc));
    NODEV(be->masked_fill_bwd(&ex, f, f, f, &bc));
    NODEV(be->dropout_fwd(&ex, f, f, 4, 0.5f, 1, 0, NULL));
    NODEV(be->dropout_bwd(&ex, f, f, 4, 0.5f, 1, 0));
    NODEV(be->reduce_fwd(&ex, MT_REDUCE_SUM, f, NULL, f, &rd, 0));
    NODEV(be->reduce_bwd(&ex, MT_REDUCE_SUM, f, f, NULL, &rd, 1));
    NODEV(be->argmax(&ex, ids, f, 1, 4, 1));
    NODEV(be->sumsq(&ex, f, f, 4, 0));
    NODEV(be->copy_strided(&ex, f, st, f, st, sh, 1, 4, 0));
    NODEV(be->gemm(&ex, 0, 0, 2, 2, 1, 1, f, 1, 0, f, 2, 0, 0, f, 2, 0, 1));
    NODEV(be->gemm_lowp(&ex, MT_DTYPE_BF16, 0, 0, 2, 2, 1, 1, f, 1, 0, f, 2, 0, 0, f, 2, 0, 1));
    NODEV(be->softmax_fwd(&ex, f, f, 1, 4, 0));
    NODEV(be->softmax_bwd(&ex, f, f, f, 1, 4, 0));
    NODEV(be->layernorm_fwd(&ex, f, f, f, f, f, f, 1, 4, 1e-5f, NULL));
    NODEV(be->layernorm_bwd(&ex, f, f, f, f, f, f, f, f, 1, 4));
    NODEV(be->rmsnorm_fwd(&ex, f, f, f, f, 1, 4, 1e-5f, NULL));
    NODEV(be->rmsnorm_bwd(&ex, f, f, f, f, f, f, 1, 4));
    NODEV(be->embedding_fwd(&ex, f, f, ids, 1, 4, 1.0f));
    NODEV(be->embedding_bwd(&ex, f, f, ids, 1, 4, 1.0f));
    NODEV(be->cross_entropy_fwd(&ex, f, f, f, f, ids, 1, 4, 0, -100));
    NODEV(be->cross_entropy_bwd(&ex, f, f, f, f, f, ids, 1, 4, 0, -100));
    NODEV(be->attention_fwd(&ex, f, f, f, f, f, &ad));
    NODEV(be->attention_bwd(&ex, f, f, f, f, f, f, f, f, f, &ad));
    NODEV(be->rope(&ex, f, f, 1, 1, 4, 0, 10000, 1, 0));
    NODEV(be->adamw(&ex, f, f, f, f, 4, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 1, 1, 1));
    NODEV(be->publish(&ex));
    NODEV(be->join(&ex));
    NODEV(be->adamw_clip(&ex, f, f, f, f, 4, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 1, 1, f, 1.0));
    mt_adamw_slot slot = {.p = f, .g = f, .m = f, .v = f, .n = 4, .wd = 0};
    NODEV(be->sumsq_multi(&ex, f, &slot, 1, 0));
    NODEV(be->adamw_multi(&ex, &slot, 1, 1e-3f, 0.9f, 0.999f, 1e-8f, 1, 1, f, 1.0, 1));
    mt_cast_slot cslot = {.src = f, .dst = f, .n = 4};
    NODEV(be->cast_multi(&ex, &cslot, 1, MT_DTYPE_BF16));
    NODEV(be->gemm_lowp_bias(&ex, MT_DTYPE_BF16, 0, 1, 2, 2, 1, f, 1, f, 1, f, f, 2, 1));
    NODEV(be->cross_entropy_fused(&ex, f, f, f, ids, f, 1, 4, 0, -100));
    assert_int_equal(be->device_count(NULL, 0), mt_cuda_device_count()); /* the table counts the same devices */
    printf("entry without a device: %s\n", mt_last_error());
    be->exec_free(&ex); /* no-op, no crash */

    if (n_devices() == 0) {
        NODEV(be->exec_init(&ex, 0));
        printf("exec_init(0): %s\n", mt_last_error());
        assert_non_null(strstr(mt_last_error(), "cudaGetDeviceCount"));
        assert_null(ex.priv);
        void *p = NULL;
        NODEV(be->alloc(0, &p, 64));
        assert_null(p);
        be->free(0, NULL);
        mt_cuda_alloc_stats as;
        NODEV(mt_cuda_alloc_stats_get(0, &as));
        char buf[64];
        NODEV(mt_cuda_device_describe(0, buf, sizeof buf));
    }
#undef NODEV
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_count),
        cmocka_unit_test(test_context_on_missing_device),
        cmocka_unit_test(test_gpus_parse),
#ifdef MT_WITH_CUDA
        cmocka_unit_test(test_table_without_exec),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
