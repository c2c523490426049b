/*
 * test_format.c — model files: save/load round trips (.mt and .mt.zst, models and checkpoints), and
 * every kind of bad file as an error that says which: missing, truncated (at several points), wrong
 * magic, not a MicroTensor file, checksum mismatch, a tensor shape that does not fit the config, a
 * missing or unexpected tensor, a bad config in the metadata.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/modelfile.h"
#include "testutil.h"

static char g_dir[512];

static void path_of(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_dir, name); }

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*len + 1);
    assert_int_equal(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void spit(const char *path, const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* Loads path expecting status st and a message containing what. */
static void expect_fail(const char *path, mt_status st, const char *what) {
    mt_modelfile mf;
    mt_status got = mt_modelfile_load(path, MT_DEVICE_CPU, 0, &mf);
    if (got != st || !strstr(mt_last_error(), what))
        fail_msg("%s: got %s '%s', expected %s with '%s'", path, mt_status_str(got), mt_last_error(), mt_status_str(st),
                 what);
    /* The public ABI says the same. */
    mt_model_t *m = NULL;
    assert_int_equal(mt_model_load(path, MT_DEVICE_CPU, &m), st);
    assert_null(m);
}

static void assert_same_weights(const mt_transformer *a, const mt_transformer *b) {
    assert_int_equal(a->n_params, b->n_params);
    for (int i = 0; i < a->n_params; i++) {
        assert_string_equal(a->params[i]->name, b->params[i]->name);
        assert_int_equal(a->params[i]->numel, b->params[i]->numel);
        assert_memory_equal(a->params[i]->data, b->params[i]->data, mt_tensor_bytes(a->params[i]));
    }
}

static void test_round_trip(void **state) {
    (void)state;
    mt_model_config c = tu_tiny_config(MT_ATTN_MLA);
    mt_transformer *m = tu_model(&c, 7);
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    const char *names[2] = {"rt.mt", "rt.mt.zst"};
    for (int k = 0; k < 2; k++) {
        char p[700];
        path_of(p, sizeof p, names[k]);
        assert_int_equal(mt_modelfile_save(p, m, ctx, "{\"fake\": \"tokenizer\"}", NULL), MT_OK);
        mt_modelfile mf;
        if (mt_modelfile_load(p, MT_DEVICE_CPU, 0, &mf) != MT_OK) fail_msg("%s", mt_last_error());
        assert_same_weights(m, mf.model);
        assert_string_equal(mf.tokenizer_json, "{\"fake\": \"tokenizer\"}");
        assert_int_equal(mf.is_checkpoint, 0);
        assert_memory_equal(&mf.model->cfg, &m->cfg, sizeof c);
        mt_modelfile_clear(&mf);
    }
    /* The compressed file is smaller than the plain one and no temporary file is left behind. */
    char p1[700], p2[700];
    path_of(p1, sizeof p1, "rt.mt");
    path_of(p2, sizeof p2, "rt.mt.zst");
    struct stat s1, s2;
    assert_int_equal(stat(p1, &s1), 0);
    assert_int_equal(stat(p2, &s2), 0);
    assert_true(s2.st_size < s1.st_size);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp", g_dir);
    assert_int_not_equal(system(cmd), 0);
    mt_context_free(ctx);
    mt_transformer_free(m);
}

static void test_checkpoint(void **state) {
    (void)state;
    mt_model_config c = tu_tiny_config(MT_ATTN_MHA);
    mt_transformer *m = tu_model(&c, 8);
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    mt_transformer *mom = tu_model(&c, 9); /* stand-ins for the optimizer moments */
    mt_ckpt_save ck = {.step = 42, .trainer_json = "{\"x\":1}", .opt_m = mom->params, .opt_v = m->params};
    char p[700];
    path_of(p, sizeof p, "ck.mt");
    assert_int_equal(mt_modelfile_save(p, m, ctx, "", &ck), MT_OK);
    mt_modelfile mf;
    assert_int_equal(mt_modelfile_load(p, MT_DEVICE_CPU, 1, &mf), MT_OK);
    assert_int_equal(mf.is_checkpoint, 1);
    assert_int_equal(mf.step, 42);
    assert_string_equal(mt_st_meta_get(mf.file, "trainer"), "{\"x\":1}");
    assert_same_weights(m, mf.model);
    mt_tensor *t;
    int64_t shape[2] = {c.vocab_size, c.d_model};
    assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, 2, shape, NULL, &t), MT_OK);
    assert_int_equal(mt_modelfile_read_tensor(mf.file, "optimizer.m.embed.weight", ctx, t), MT_OK);
    assert_memory_equal(t->data, mom->embed->data, mt_tensor_bytes(t));
    assert_int_equal(mt_modelfile_read_tensor(mf.file, "optimizer.m.nothing", ctx, t), MT_ERR_FORMAT);
    mt_tensor_free(t);
    mt_modelfile_clear(&mf);
    mt_transformer_free(mom);
    mt_context_free(ctx);
    mt_transformer_free(m);
}

static void test_bad_files(void **state) {
    (void)state;
    mt_model_config c = tu_tiny_config(MT_ATTN_MLA);
    mt_transformer *m = tu_model(&c, 10);
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 0), MT_OK);
    char good[700], bad[700];
    path_of(good, sizeof good, "good.mt");
    path_of(bad, sizeof bad, "bad.mt");
    assert_int_equal(mt_modelfile_save(good, m, ctx, "", NULL), MT_OK);
    size_t len;
    char *img = slurp(good, &len);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)(unsigned char)img[i] << (8 * i);

    char missing[700];
    path_of(missing, sizeof missing, "nope.mt");
    expect_fail(missing, MT_ERR_NOT_FOUND, "nope.mt");
    /* A FIFO nobody writes to: refused at once, not waited on (it used to block the reader forever). */
    char fifo[700];
    path_of(fifo, sizeof fifo, "fifo.mt");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    expect_fail(fifo, MT_ERR_INVALID_ARG, "not a regular file");
    unlink(fifo);
    /* Truncated: inside the length, inside the header, inside the payload, one byte short. */
    size_t cuts[4] = {5, 8 + hlen / 2, 8 + hlen + (len - 8 - hlen) / 2, len - 1};
    for (int i = 0; i < 4; i++) {
        spit(bad, img, cuts[i]);
        expect_fail(bad, MT_ERR_FORMAT, "truncated");
    }
    /* Wrong magic: text, and binary noise. */
    spit(bad, "this is not a model file at all\n", 32);
    expect_fail(bad, MT_ERR_FORMAT, "wrong magic");
    char noise[4096];
    for (int i = 0; i < 4096; i++) noise[i] = (char)((i * 2654435761u) >> 13);
    spit(bad, noise, sizeof noise);
    expect_fail(bad, MT_ERR_FORMAT, "wrong magic");
    /* A safetensors file that is not ours. */
    float one = 1.0f;
    mt_st_tensor t = {.name = "w", .dtype = MT_DTYPE_F32, .ndim = 1, .shape = {1}, .data = &one, .bytes = 4};
    mt_st_meta meta = {"format", "pt"};
    assert_int_equal(mt_st_write(bad, &t, 1, &meta, 1, 0), MT_OK);
    expect_fail(bad, MT_ERR_FORMAT, "wrong magic");
    /* A flipped bit in a weight. */
    char *flip = malloc(len);
    memcpy(flip, img, len);
    flip[len - 7] ^= 0x10;
    spit(bad, flip, len);
    expect_fail(bad, MT_ERR_CHECKSUM, "checksum");
    free(flip);

    /* Tensors that do not fit the config (a valid checksum, so only the shapes are wrong). */
    mt_model_config c2 = c;
    c2.d_ff = 48;
    mt_transformer *m2 = tu_model(&c2, 10);
    char *cfg_json;
    assert_int_equal(mt_model_config_to_json(&c, &cfg_json), MT_OK);
    mt_st_tensor *ts = calloc((size_t)m2->n_params, sizeof *ts);
    for (int i = 0; i < m2->n_params; i++) {
        mt_tensor *p = m2->params[i];
        ts[i] = (mt_st_tensor){.name = p->name, .dtype = MT_DTYPE_F32, .ndim = p->ndim, .data = p->data,
                               .bytes = mt_tensor_bytes(p)};
        memcpy(ts[i].shape, p->shape, sizeof p->shape);
    }
    mt_st_meta md[3] = {{"format", "microtensor"}, {"format_version", "1"}, {"config", cfg_json}};
    assert_int_equal(mt_st_write(bad, ts, m2->n_params, md, 3, 1), MT_OK);
    expect_fail(bad, MT_ERR_FORMAT, "fc1.weight' is (48,32) f32, the config needs (64,32)");
    /* A missing tensor and an unexpected one (the right shapes otherwise). */
    for (int i = 0; i < m->n_params; i++) {
        ts[i].data = m->params[i]->data;
        ts[i].bytes = mt_tensor_bytes(m->params[i]);
        memcpy(ts[i].shape, m->params[i]->shape, sizeof m->params[i]->shape);
    }
    assert_int_equal(mt_st_write(bad, ts, m->n_params - 1, md, 3, 1), MT_OK);
    expect_fail(bad, MT_ERR_FORMAT, "is missing");
    ts[0].name = "encoder.layers.0.mystery";
    assert_int_equal(mt_st_write(bad, ts, 1, md, 3, 1), MT_OK);
    expect_fail(bad, MT_ERR_FORMAT, "mystery");
    /* A config that does not validate, and one with an unknown key. */
    md[2].value = "{\"d_model\": 30, \"heads\": 4, \"vocab_size\": 61}";
    assert_int_equal(mt_st_write(bad, ts, 1, md, 3, 1), MT_OK);
    expect_fail(bad, MT_ERR_CONFIG, "d_model");
    md[2].value = "{\"d_modle\": 32}";
    assert_int_equal(mt_st_write(bad, ts, 1, md, 3, 1), MT_OK);
    expect_fail(bad, MT_ERR_CONFIG, "d_modle");
    md[1].value = "99";
    assert_int_equal(mt_st_write(bad, ts, 1, md, 3, 1), MT_OK);
    expect_fail(bad, MT_ERR_FORMAT, "format_version");
    free(ts);
    mt_sys_free(cfg_json);
    mt_transformer_free(m2);
    free(img);
    mt_context_free(ctx);
    mt_transformer_free(m);
}

int main(void) {
    if (tu_tmpdir(g_dir, sizeof g_dir, "format") != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_checkpoint),
        cmocka_unit_test(test_bad_files),
    };
    int rc = cmocka_run_group_tests_name("model files", tests, NULL, NULL);
    tu_rmrf(g_dir);
    return rc ? 1 : 0;
}
