/*
 * test_parity.c — the engine's model against tests/reference/model.py (PyTorch) on the same weights
 * (loaded by the reference from our .mt file) and the same batch: logits (relative error < 1e-4),
 * loss, the gradient of every parameter, and the losses of 5 AdamW steps (warm-up schedule and
 * clipping included) with dropout off. MLA and MHA, ReLU and GELU, tied and untied embeddings, rotary
 * positions in cross-attention or not (cross_rope).
 * Skips (77) only when the PyTorch interpreter is absent.
 */
#include <math.h>
#include <setjmp.h>
#include <sys/wait.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "format/modelfile.h"
#include "train/optim.h"
#include "testutil.h"

static const char *g_py;
static char g_dir[512];

/* Runs the reference with args; returns its exit status. */
static int run_ref(const char *args) {
    char cmd[4096];
    const char *src = getenv("MT_SOURCE_DIR");
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 '%s' '%s/tests/reference/model.py' %s", g_py, src ? src : ".", args);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

typedef struct named {
    mt_st_tensor t;
    char name[128];
    void *owned;
} named;

static void put(named *n, const char *name, mt_dtype dt, int ndim, const int64_t *shape, const void *data) {
    snprintf(n->name, sizeof n->name, "%s", name);
    n->t.name = n->name;
    n->t.dtype = dt;
    n->t.ndim = ndim;
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        n->t.shape[d] = shape[d];
        numel *= shape[d];
    }
    n->t.bytes = (size_t)numel * 4;
    n->owned = malloc(n->t.bytes ? n->t.bytes : 1);
    memcpy(n->owned, data, n->t.bytes);
    n->t.data = n->owned;
}

static void write_data(const char *path, named *ns, int n) {
    mt_st_tensor *ts = calloc((size_t)n, sizeof *ts);
    for (int i = 0; i < n; i++) ts[i] = ns[i].t;
    if (mt_st_write(path, ts, n, NULL, 0, 0) != MT_OK) fail_msg("write %s: %s", path, mt_last_error());
    free(ts);
    for (int i = 0; i < n; i++) free(ns[i].owned);
}

static void parity_case(int attention, int activation, int tied, int cross_rope, float ls, uint64_t seed) {
    mt_model_config c = tu_tiny_config(attention);
    c.activation = activation;
    c.tie_embeddings = tied;
    c.cross_rope = cross_rope;
    mt_transformer *m = tu_model(&c, seed);
    assert_non_null(m);
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    char mpath[700], dpath[700], args[2200];
    snprintf(mpath, sizeof mpath, "%s/model-%d%d%d%d.mt", g_dir, attention, activation, tied, cross_rope);
    snprintf(dpath, sizeof dpath, "%s/data-%d%d%d%d.safetensors", g_dir, attention, activation, tied, cross_rope);
    if (mt_modelfile_save(mpath, m, ctx, NULL, NULL) != MT_OK) fail_msg("save: %s", mt_last_error());

    mt_seq_batch b = tu_batch(&c, 5, 9, 8, seed + 1);
    /* Logits, loss and gradients through the all-rows path (what the reference computes). */
    mt_tensor *logits = NULL;
    mt_tensor *loss = mt_transformer_loss(ctx, m, &b, ls, 0, NULL, &logits);
    if (!loss) fail_msg("forward: %s", mt_last_error());
    assert_int_equal(mt_backward(ctx, loss, NULL), MT_OK);
    int n = 6 + m->n_params;
    named *ns = calloc((size_t)n, sizeof *ns);
    put(&ns[0], "src", MT_DTYPE_I32, 2, (const int64_t[]){b.B, b.S}, b.src);
    put(&ns[1], "tgt_in", MT_DTYPE_I32, 2, (const int64_t[]){b.B, b.T}, b.tgt_in);
    put(&ns[2], "tgt_out", MT_DTYPE_I32, 2, (const int64_t[]){b.B, b.T}, b.tgt_out);
    put(&ns[3], "logits", MT_DTYPE_F32, logits->ndim, logits->shape, logits->data);
    float lv = *mt_f32(loss);
    put(&ns[4], "loss", MT_DTYPE_F32, 0, NULL, &lv);
    put(&ns[5], "label_smoothing", MT_DTYPE_F32, 0, NULL, &ls);
    for (int i = 0; i < m->n_params; i++) {
        char name[100];
        snprintf(name, sizeof name, "grad.%s", m->params[i]->name);
        assert_non_null(m->params[i]->grad);
        put(&ns[6 + i], name, MT_DTYPE_F32, m->params[i]->ndim, m->params[i]->shape, m->params[i]->grad->data);
    }
    /* The training path projects only the non-padding rows: same loss, same gradients. */
    float *g_all = malloc(sizeof(float) * (size_t)m->embed->numel);
    memcpy(g_all, m->embed->grad->data, sizeof(float) * (size_t)m->embed->numel);
    assert_int_equal(mt_transformer_zero_grad(m, ctx), MT_OK);
    assert_int_equal(mt_context_reset(ctx), MT_OK);
    mt_tensor *loss2 = mt_transformer_loss(ctx, m, &b, ls, 0, NULL, NULL);
    assert_non_null(loss2);
    assert_true(fabsf(*mt_f32(loss2) - lv) <= 1e-5f * fabsf(lv));
    assert_int_equal(mt_backward(ctx, loss2, NULL), MT_OK);
    double md = 0, mx = 0;
    for (int64_t i = 0; i < m->embed->numel; i++) {
        md = fmax(md, fabs((double)mt_f32(m->embed->grad)[i] - g_all[i]));
        mx = fmax(mx, fabs((double)g_all[i]));
    }
    assert_true(md <= 1e-5 * mx);
    free(g_all);
    write_data(dpath, ns, n);
    free(ns);
    snprintf(args, sizeof args, "check --model '%s' --data '%s' --tol 1e-4", mpath, dpath);
    assert_int_equal(run_ref(args), 0);

    /* Five AdamW steps on the batch: the reference repeats them from the same weights. */
    assert_int_equal(mt_transformer_zero_grad(m, ctx), MT_OK);
    mt_optimizer *opt;
    assert_int_equal(mt_optimizer_create(m, ctx, &opt), MT_OK);
    mt_adamw_hparams h;
    mt_adamw_hparams_default(&h);
    h.lr = 3e-3;
    h.warmup_steps = 3;
    h.clip_norm = 0.5; /* small enough that clipping acts */
    h.label_smoothing = ls;
    float losses[5];
    for (int s = 0; s < 5; s++) {
        double l;
        if (mt_train_step(ctx, m, opt, &h, &b, 1, &l, NULL) != MT_OK) fail_msg("step: %s", mt_last_error());
        losses[s] = (float)l;
    }
    assert_true(losses[4] < losses[0]);
    named nd[4];
    put(&nd[0], "src", MT_DTYPE_I32, 2, (const int64_t[]){b.B, b.S}, b.src);
    put(&nd[1], "tgt_in", MT_DTYPE_I32, 2, (const int64_t[]){b.B, b.T}, b.tgt_in);
    put(&nd[2], "tgt_out", MT_DTYPE_I32, 2, (const int64_t[]){b.B, b.T}, b.tgt_out);
    put(&nd[3], "losses", MT_DTYPE_F32, 1, (const int64_t[]){5}, losses);
    write_data(dpath, nd, 4);
    snprintf(args, sizeof args,
             "check-adamw --model '%s' --data '%s' --tol 1e-4 --hparams '{\"lr\": %.17g, \"beta1\": %.17g, \"beta2\": "
             "%.17g, \"eps\": %.17g, \"weight_decay\": %.17g, \"warmup_steps\": %lld, \"clip_norm\": %.17g, "
             "\"label_smoothing\": %.17g}'",
             mpath, dpath, h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, (long long)h.warmup_steps, h.clip_norm,
             h.label_smoothing);
    assert_int_equal(run_ref(args), 0);
    mt_optimizer_free(opt);
    tu_batch_free(&b);
    mt_context_free(ctx);
    mt_transformer_free(m);
}

static void test_mla_relu_tied(void **state) {
    (void)state;
    parity_case(MT_ATTN_MLA, MT_ACT_RELU, 1, 1, 0.1f, 3);
}
static void test_mla_gelu_untied(void **state) {
    (void)state;
    parity_case(MT_ATTN_MLA, MT_ACT_GELU, 0, 1, 0.0f, 4);
}
static void test_mha_relu_tied(void **state) {
    (void)state;
    parity_case(MT_ATTN_MHA, MT_ACT_RELU, 1, 1, 0.1f, 5);
}
/* cross_rope false: rotary positions in self-attention only (what CTranslate2 can express). */
static void test_mha_no_cross_rope(void **state) {
    (void)state;
    parity_case(MT_ATTN_MHA, MT_ACT_RELU, 1, 0, 0.1f, 6);
}
static void test_mla_no_cross_rope(void **state) {
    (void)state;
    parity_case(MT_ATTN_MLA, MT_ACT_RELU, 0, 0, 0.0f, 7);
}

int main(void) {
    g_py = getenv("MT_TORCH_PYTHON");
    if (!g_py || !*g_py) {
        printf("SKIP: no PyTorch interpreter (MT_TORCH_PYTHON is unset)\n");
        return 77;
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import torch, safetensors' 2>/dev/null", g_py);
    if (system(cmd) != 0) {
        printf("SKIP: %s cannot import torch and safetensors\n", g_py);
        return 77;
    }
    if (tu_tmpdir(g_dir, sizeof g_dir, "parity") != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mla_relu_tied),
        cmocka_unit_test(test_mla_gelu_untied),
        cmocka_unit_test(test_mha_relu_tied),
        cmocka_unit_test(test_mha_no_cross_rope),
        cmocka_unit_test(test_mla_no_cross_rope),
    };
    int rc = cmocka_run_group_tests_name("parity with the PyTorch reference", tests, NULL, NULL);
    tu_rmrf(g_dir);
    return rc ? 1 : 0;
}
