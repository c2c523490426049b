/*
 * test_abi_bad_input.c — every public function of microtensor.h called with bad input: NULL handles
 * and strings, invalid UTF-8, configs that do not parse, files of the wrong format, buffers that are
 * too small, devices that do not exist. Each call must return its documented status with a message
 * that names what was wrong, leave its out-pointers untouched, and crash nothing (CI runs this under
 * ASan/UBSan). Linked against libmicrotensor.so and written against the public header only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "microtensor.h"

static char g_dir[256];          /* temporary directory of this run */
static char g_corpus[512];       /* the demo corpus of the checkout */
static mt_tokenizer_t *g_tok;    /* trained here */
static mt_model_t *g_model;      /* trained here (a few steps) */
static mt_translator_t *g_tr;
static mt_context_t *g_ctx;

static const char BAD_UTF8[] = "ciao \xc3\x28 mondo"; /* 0xC3 must be followed by a continuation byte */
#define SENTINEL ((void *)0x5e17)

/* The call returns `want` and the last error contains `needle`. */
#define EXPECT(call, want, needle)                                                                       \
    do {                                                                                                 \
        mt_status st_ = (call);                                                                          \
        if (st_ != (want))                                                                               \
            fail_msg("%s: got %s (%s), want %s", #call, mt_status_str(st_), mt_last_error(), mt_status_str(want)); \
        if (!strstr(mt_last_error(), (needle)))                                                          \
            fail_msg("%s: message \"%s\" does not mention \"%s\"", #call, mt_last_error(), (needle));     \
    } while (0)

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static int setup(void **state) {
    (void)state;
    const char *src = getenv("MT_SOURCE_DIR");
    snprintf(g_corpus, sizeof g_corpus, "%s/deploy/demo/corpus.tsv", src ? src : ".");
    snprintf(g_dir, sizeof g_dir, "/tmp/mt-abi-bad-XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    const char *paths[1] = {g_corpus};
    if (mt_tokenizer_train(paths, 1, "{\"model\": \"bpe\", \"vocab_size\": 300}", &g_tok) != MT_OK) {
        fprintf(stderr, "tokenizer: %s\n", mt_last_error());
        return -1;
    }
    char json[2048];
    snprintf(json, sizeof json,
             "{\"corpora\": [\"%s\"], \"valid_size\": 0, \"test_size\": 0, \"tokenizer_vocab\": 300,"
             " \"tokenizer_min_frequency\": 1, \"d_model\": 16, \"heads\": 2, \"layers_enc\": 1, \"layers_dec\": 1,"
             " \"d_ff\": 32, \"d_c\": 8, \"d_cq\": 8, \"d_rope\": 4, \"dropout\": 0.0, \"max_len\": 24,"
             " \"max_tokens\": 400, \"max_steps\": 3, \"log_every\": 100, \"valid_every\": 0, \"save_every\": 0,"
             " \"threads\": 1, \"out_dir\": \"%s/run\"}",
             g_corpus, g_dir);
    mt_trainer_t *tr;
    if (mt_trainer_create(json, NULL, &tr) != MT_OK || mt_trainer_run(tr) != MT_OK) {
        fprintf(stderr, "training: %s\n", mt_last_error());
        return -1;
    }
    mt_trainer_free(tr);
    char model[512];
    snprintf(model, sizeof model, "%s/run/model.mt", g_dir);
    if (mt_model_load(model, MT_DEVICE_CPU, &g_model) != MT_OK || mt_translator_create(g_model, 1, &g_tr) != MT_OK ||
        mt_context_create(MT_DEVICE_CPU, &g_ctx) != MT_OK) {
        fprintf(stderr, "model: %s\n", mt_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    mt_context_free(g_ctx);
    mt_translator_free(g_tr);
    mt_model_free(g_model);
    mt_tokenizer_free(g_tok);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void log_sink(mt_log_level level, const char *msg, void *user) {
    (void)level;
    (void)msg;
    ++*(int *)user;
}

static void test_process(void **state) {
    (void)state;
    for (int s = 0; s <= MT_ERR_NOT_FOUND; s++) assert_true(strncmp(mt_status_str((mt_status)s), "MT_", 3) == 0);
    assert_string_equal(mt_status_str((mt_status)9999), "MT_ERR_UNKNOWN");
    assert_int_equal(mt_version(), MT_VERSION_NUMBER);
    assert_non_null(mt_version_string());
    mt_free(NULL);
    EXPECT(mt_set_num_threads(-1), MT_ERR_INVALID_ARG, "mt_set_num_threads");
    EXPECT(mt_device_count(NULL), MT_ERR_INVALID_ARG, "mt_device_count");
    int n = -1;
    assert_int_equal(mt_device_count(&n), MT_OK);
    assert_true(n >= 0);
    /* A log callback receives the library's warnings; NULL restores stderr; levels out of range clamp. */
    int lines = 0;
    mt_log_set_callback(log_sink, &lines);
    mt_log_set_level(MT_LOG_WARN);
    const char *long_text[1] = {"hello hello hello hello hello hello hello hello hello hello hello hello hello "
                                "hello hello hello hello hello hello hello hello hello hello hello hello hello"};
    char **out = NULL;
    assert_int_equal(mt_translate(g_tr, long_text, 1, 1, 0, 0, &out, NULL), MT_OK); /* truncated: a warning */
    mt_free(out);
    assert_true(lines >= 1);
    mt_log_set_level((mt_log_level)-7);
    mt_log_set_level((mt_log_level)99);
    mt_log_set_callback(NULL, NULL);
    mt_log_set_level(MT_LOG_WARN);
}

static void test_tokenizer(void **state) {
    (void)state;
    mt_tokenizer_t *t = SENTINEL;
    EXPECT(mt_tokenizer_load(NULL, &t), MT_ERR_INVALID_ARG, "mt_tokenizer_load");
    EXPECT(mt_tokenizer_load("/nonexistent/tokenizer.json", &t), MT_ERR_NOT_FOUND, "/nonexistent/tokenizer.json");
    char junk[512];
    snprintf(junk, sizeof junk, "%s/junk.json", g_dir);
    const char *trunc_json = "{\"model\": [1, 2";
    write_file(junk, trunc_json, strlen(trunc_json));
    EXPECT(mt_tokenizer_load(junk, &t), MT_ERR_FORMAT, "junk.json");
    const char *unigram = "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}";
    write_file(junk, unigram, strlen(unigram));
    EXPECT(mt_tokenizer_load(junk, &t), MT_ERR_UNSUPPORTED, "Unigram");
    assert_ptr_equal(t, SENTINEL);

    const char *paths[1] = {g_corpus};
    EXPECT(mt_tokenizer_train(NULL, 1, "{}", &t), MT_ERR_INVALID_ARG, "mt_tokenizer_train");
    EXPECT(mt_tokenizer_train(paths, 1, "{\"vocab_size\": ", &t), MT_ERR_FORMAT, "");
    EXPECT(mt_tokenizer_train(paths, 1, "{\"vocab_sise\": 100}", &t), MT_ERR_CONFIG, "vocab_sise");
    char bad_corpus[512];
    snprintf(bad_corpus, sizeof bad_corpus, "%s/bad.tsv", g_dir);
    write_file(bad_corpus, "hello\tciao\nbad \xff line\tx\n", 24);
    const char *bad[1] = {bad_corpus};
    EXPECT(mt_tokenizer_train(bad, 1, "{}", &t), MT_ERR_UTF8, "bad.tsv:2");
    assert_ptr_equal(t, SENTINEL);

    EXPECT(mt_tokenizer_save(NULL, "x.json"), MT_ERR_INVALID_ARG, "mt_tokenizer_save");
    EXPECT(mt_tokenizer_save(g_tok, NULL), MT_ERR_INVALID_ARG, "mt_tokenizer_save");
    EXPECT(mt_tokenizer_save(g_tok, "/nonexistent-dir/t.json"), MT_ERR_IO, "/nonexistent-dir/t.json");

    int32_t ids[4];
    size_t n = 12345;
    EXPECT(mt_tokenizer_encode(NULL, "hi", ids, 4, &n), MT_ERR_INVALID_ARG, "mt_tokenizer_encode");
    EXPECT(mt_tokenizer_encode(g_tok, NULL, ids, 4, &n), MT_ERR_INVALID_ARG, "mt_tokenizer_encode");
    EXPECT(mt_tokenizer_encode(g_tok, "hi", ids, 4, NULL), MT_ERR_INVALID_ARG, "mt_tokenizer_encode");
    EXPECT(mt_tokenizer_encode(g_tok, BAD_UTF8, ids, 4, &n), MT_ERR_UTF8, "UTF-8");
    /* Too small: the needed count comes back and nothing is written; NULL/0 only counts. */
    const char *text = "where is the station? thank you very much, see you tomorrow";
    ids[0] = -77;
    EXPECT(mt_tokenizer_encode(g_tok, text, ids, 1, &n), MT_ERR_BUFFER_TOO_SMALL, "do not fit");
    assert_true(n > 4);
    assert_int_equal(ids[0], -77);
    size_t counted = 0;
    EXPECT(mt_tokenizer_encode(g_tok, text, NULL, 0, &counted), MT_ERR_BUFFER_TOO_SMALL, "do not fit");
    assert_int_equal(counted, n);

    int32_t good[2] = {4, 5}, out_of_range[1] = {1 << 30};
    char buf[4] = "zzz";
    size_t len = 0;
    EXPECT(mt_tokenizer_decode(NULL, good, 2, buf, 4, &len), MT_ERR_INVALID_ARG, "mt_tokenizer_decode");
    EXPECT(mt_tokenizer_decode(g_tok, NULL, 2, buf, 4, &len), MT_ERR_INVALID_ARG, "mt_tokenizer_decode");
    EXPECT(mt_tokenizer_decode(g_tok, out_of_range, 1, buf, 4, &len), MT_ERR_INVALID_ARG, "1073741824");
    EXPECT(mt_tokenizer_decode(g_tok, good, 2, buf, 1, &len), MT_ERR_BUFFER_TOO_SMALL, "do not fit");
    assert_true(len >= 1);
    assert_string_equal(buf, "zzz");

    size_t vs = 0;
    EXPECT(mt_tokenizer_vocab_size(NULL, &vs), MT_ERR_INVALID_ARG, "mt_tokenizer_vocab_size");
    EXPECT(mt_tokenizer_vocab_size(g_tok, NULL), MT_ERR_INVALID_ARG, "mt_tokenizer_vocab_size");
    int32_t id = -5;
    EXPECT(mt_tokenizer_token_to_id(NULL, "[PAD]", &id), MT_ERR_INVALID_ARG, "mt_tokenizer_token_to_id");
    EXPECT(mt_tokenizer_token_to_id(g_tok, NULL, &id), MT_ERR_INVALID_ARG, "mt_tokenizer_token_to_id");
    EXPECT(mt_tokenizer_token_to_id(g_tok, "no-such-token-here", &id), MT_ERR_NOT_FOUND, "no-such-token-here");
    assert_int_equal(id, -5);
    assert_int_equal(mt_tokenizer_token_to_id(g_tok, "[PAD]", &id), MT_OK);
    assert_int_equal(id, 0);
    mt_tokenizer_free(NULL);
}

static void test_model(void **state) {
    (void)state;
    mt_model_t *m = SENTINEL;
    char path[512], model[512];
    snprintf(model, sizeof model, "%s/run/model.mt", g_dir);
    EXPECT(mt_model_load(NULL, MT_DEVICE_CPU, &m), MT_ERR_INVALID_ARG, "mt_model_load");
    EXPECT(mt_model_load(model, MT_DEVICE_CPU, NULL), MT_ERR_INVALID_ARG, "mt_model_load");
    EXPECT(mt_model_load("/nonexistent/m.mt", MT_DEVICE_CPU, &m), MT_ERR_NOT_FOUND, "/nonexistent/m.mt");
    /* A file of another format: a PNG header where the safetensors header length should be. */
    snprintf(path, sizeof path, "%s/picture.mt", g_dir);
    write_file(path, "\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16);
    EXPECT(mt_model_load(path, MT_DEVICE_CPU, &m), MT_ERR_FORMAT, "picture.mt");
    /* A truncated model file: the first half of a real one. */
    FILE *f = fopen(model, "rb");
    assert_non_null(f);
    static char bytes[1 << 22];
    size_t got = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/truncated.mt", g_dir);
    write_file(path, bytes, got / 2);
    EXPECT(mt_model_load(path, MT_DEVICE_CPU, &m), MT_ERR_FORMAT, "truncated.mt");
    /* The right size, one payload byte flipped: the SHA-256 no longer matches. */
    bytes[got - 3] ^= 0x5a;
    snprintf(path, sizeof path, "%s/flipped.mt", g_dir);
    write_file(path, bytes, got);
    EXPECT(mt_model_load(path, MT_DEVICE_CPU, &m), MT_ERR_CHECKSUM, "flipped.mt");
    EXPECT(mt_model_load(model, 77, &m), MT_ERR_NO_DEVICE, "cuda:77");
    EXPECT(mt_model_load(model, -5, &m), MT_ERR_DEVICE, "-5");
    assert_ptr_equal(m, SENTINEL);

    EXPECT(mt_model_save(NULL, "x.mt"), MT_ERR_INVALID_ARG, "mt_model_save");
    EXPECT(mt_model_save(g_model, NULL), MT_ERR_INVALID_ARG, "mt_model_save");
    EXPECT(mt_model_save(g_model, "/nonexistent-dir/m.mt"), MT_ERR_IO, "/nonexistent-dir/m.mt");
    char *info = SENTINEL;
    EXPECT(mt_model_info_json(NULL, &info), MT_ERR_INVALID_ARG, "mt_model_info_json");
    EXPECT(mt_model_info_json(g_model, NULL), MT_ERR_INVALID_ARG, "mt_model_info_json");
    assert_ptr_equal(info, SENTINEL);
    assert_null(mt_model_tokenizer(NULL));
    mt_model_free(NULL);
}

static void test_translate(void **state) {
    (void)state;
    mt_translator_t *t = SENTINEL;
    EXPECT(mt_translator_create(NULL, 0, &t), MT_ERR_INVALID_ARG, "mt_translator_create");
    EXPECT(mt_translator_create(g_model, 0, NULL), MT_ERR_INVALID_ARG, "mt_translator_create");
    EXPECT(mt_translator_create(g_model, -3, &t), MT_ERR_INVALID_ARG, "-3");
    assert_ptr_equal(t, SENTINEL);

    const char *texts[2] = {"hello", "good morning"}, *with_null[2] = {"hello", NULL}, *bad[2] = {"hello", BAD_UTF8};
    char **out = SENTINEL;
    float *scores = SENTINEL;
    EXPECT(mt_translate(NULL, texts, 2, 1, 0, 0, &out, &scores), MT_ERR_INVALID_ARG, "mt_translate");
    EXPECT(mt_translate(g_tr, NULL, 2, 1, 0, 0, &out, &scores), MT_ERR_INVALID_ARG, "mt_translate");
    EXPECT(mt_translate(g_tr, texts, 2, 1, 0, 0, NULL, &scores), MT_ERR_INVALID_ARG, "mt_translate");
    EXPECT(mt_translate(g_tr, with_null, 2, 1, 0, 0, &out, &scores), MT_ERR_INVALID_ARG, "1");
    EXPECT(mt_translate(g_tr, bad, 2, 1, 0, 0, &out, &scores), MT_ERR_UTF8, "1");
    EXPECT(mt_translate(g_tr, texts, 2, 0, 0, 0, &out, &scores), MT_ERR_INVALID_ARG, "beam");
    EXPECT(mt_translate(g_tr, texts, 2, 1, -1.0f, 0, &out, &scores), MT_ERR_INVALID_ARG, "length");
    assert_ptr_equal(out, SENTINEL);
    assert_ptr_equal(scores, SENTINEL);
    /* An empty batch is valid: n = 0 gives an (empty) array to free. */
    assert_int_equal(mt_translate(g_tr, texts, 0, 1, 0, 0, &out, NULL), MT_OK);
    mt_free(out);
    mt_translator_free(NULL);

    /* The options handle: NULLs, unknown options and values out of range are refused, naming them,
     * and leave the options as they were. */
    mt_translate_options_t *o = SENTINEL;
    EXPECT(mt_translate_options_create(NULL), MT_ERR_INVALID_ARG, "mt_translate_options_create");
    assert_int_equal(mt_translate_options_create(&o), MT_OK);
    EXPECT(mt_translate_options_set(NULL, MT_TRANSLATE_BEAM_SIZE, 2), MT_ERR_INVALID_ARG, "NULL");
    EXPECT(mt_translate_options_set(o, (mt_translate_option)999, 2), MT_ERR_INVALID_ARG, "999");
    EXPECT(mt_translate_options_set(o, MT_TRANSLATE_BEAM_SIZE, 0), MT_ERR_INVALID_ARG, "beam_size");
    EXPECT(mt_translate_options_set(o, MT_TRANSLATE_BEAM_SIZE, MT_TRANSLATE_MAX_BEAM + 1), MT_ERR_INVALID_ARG,
           "beam_size");
    EXPECT(mt_translate_options_set(o, MT_TRANSLATE_BEAM_SIZE, 2.5), MT_ERR_INVALID_ARG, "whole");
    EXPECT(mt_translate_options_set(o, MT_TRANSLATE_LENGTH_PENALTY, -1), MT_ERR_INVALID_ARG, "length_penalty");
    EXPECT(mt_translate_options_set(o, MT_TRANSLATE_MAX_LEN_RATIO, 0), MT_ERR_INVALID_ARG, "max_len_ratio");
    EXPECT(mt_translate_options_set(o, MT_TRANSLATE_SAMPLING_TOPP, 1.5), MT_ERR_INVALID_ARG, "sampling_topp");
    EXPECT(mt_translate_options_set(o, MT_TRANSLATE_SAMPLING_TEMPERATURE, 0), MT_ERR_INVALID_ARG, "temperature");
    EXPECT(mt_translate_options_set(o, MT_TRANSLATE_N_BEST, 0.0 / 0.0), MT_ERR_INVALID_ARG, "n_best");
    double v = -1;
    assert_int_equal(mt_translate_options_get(o, MT_TRANSLATE_BEAM_SIZE, &v), MT_OK);
    assert_true(v == 1);
    EXPECT(mt_translate_options_get(o, (mt_translate_option)0, &v), MT_ERR_INVALID_ARG, "unknown");
    EXPECT(mt_translate_options_get(NULL, MT_TRANSLATE_BEAM_SIZE, &v), MT_ERR_INVALID_ARG, "NULL");
    EXPECT(mt_translate_options_get(o, MT_TRANSLATE_BEAM_SIZE, NULL), MT_ERR_INVALID_ARG, "NULL");
    EXPECT(mt_translate_options_set_stream(NULL, NULL, NULL), MT_ERR_INVALID_ARG, "NULL");
    /* mt_translate_with checks what mt_translate checks, and the combinations. */
    out = SENTINEL;
    EXPECT(mt_translate_with(NULL, o, texts, NULL, 2, &out, NULL), MT_ERR_INVALID_ARG, "mt_translate_with");
    EXPECT(mt_translate_with(g_tr, o, texts, NULL, 2, NULL, NULL), MT_ERR_INVALID_ARG, "mt_translate_with");
    EXPECT(mt_translate_with(g_tr, o, with_null, NULL, 2, &out, NULL), MT_ERR_INVALID_ARG, "1");
    EXPECT(mt_translate_with(g_tr, o, bad, NULL, 2, &out, NULL), MT_ERR_UTF8, "1");
    const char *bad_prefix[2] = {NULL, BAD_UTF8};
    EXPECT(mt_translate_with(g_tr, o, texts, bad_prefix, 2, &out, NULL), MT_ERR_UTF8, "prefix");
    assert_int_equal(mt_translate_options_set(o, MT_TRANSLATE_N_BEST, 2), MT_OK);
    EXPECT(mt_translate_with(g_tr, o, texts, NULL, 2, &out, NULL), MT_ERR_INVALID_ARG, "n_best");
    assert_ptr_equal(out, SENTINEL);
    mt_translate_options_free(o);
    mt_translate_options_free(NULL);
}

static void test_trainer(void **state) {
    (void)state;
    mt_trainer_t *t = SENTINEL;
    EXPECT(mt_trainer_create(NULL, NULL, &t), MT_ERR_INVALID_ARG, "mt_trainer_create");
    EXPECT(mt_trainer_create("{}", NULL, NULL), MT_ERR_INVALID_ARG, "mt_trainer_create");
    EXPECT(mt_trainer_create("{\"d_model\": 32,\n \"heads\": }", NULL, &t), MT_ERR_FORMAT, "line 2");
    EXPECT(mt_trainer_create("{\"d_modle\": 32}", NULL, &t), MT_ERR_CONFIG, "d_modle");
    EXPECT(mt_trainer_create("{\"d_model\": 30, \"heads\": 4}", NULL, &t), MT_ERR_CONFIG, "heads");
    char json[2048];
    snprintf(json, sizeof json, "{\"corpora\": [\"%s\"], \"out_dir\": \"run\"}", g_corpus);
    EXPECT(mt_trainer_create(json, g_dir, &t), MT_ERR_PERMISSION, "corpora");
    snprintf(json, sizeof json, "{\"corpora\": [\"%s/nothing-here.tsv\"], \"out_dir\": \"%s/r2\"}", g_dir, g_dir);
    EXPECT(mt_trainer_create(json, NULL, &t), MT_ERR_NOT_FOUND, "nothing-here.tsv");
    assert_ptr_equal(t, SENTINEL);

    EXPECT(mt_trainer_set_progress_callback(NULL, NULL, NULL), MT_ERR_INVALID_ARG, "mt_trainer_set_progress_callback");
    EXPECT(mt_trainer_run(NULL), MT_ERR_INVALID_ARG, "mt_trainer_run");
    EXPECT(mt_trainer_step(NULL, 1), MT_ERR_INVALID_ARG, "mt_trainer_step");
    EXPECT(mt_trainer_cancel(NULL), MT_ERR_INVALID_ARG, "mt_trainer_cancel");
    char *path = SENTINEL;
    EXPECT(mt_trainer_save_checkpoint(NULL, NULL, &path), MT_ERR_INVALID_ARG, "mt_trainer_save_checkpoint");
    assert_ptr_equal(path, SENTINEL);
    mt_train_state s;
    EXPECT(mt_trainer_status(NULL, &s, NULL, NULL, NULL), MT_ERR_INVALID_ARG, "mt_trainer_status");
    char *js = SENTINEL;
    EXPECT(mt_trainer_status_json(NULL, &js), MT_ERR_INVALID_ARG, "mt_trainer_status_json");
    assert_ptr_equal(js, SENTINEL);

    /* A real trainer: a negative step count, and a save into a directory that does not exist. */
    snprintf(json, sizeof json,
             "{\"corpora\": [\"%s\"], \"valid_size\": 0, \"test_size\": 0, \"tokenizer_vocab\": 300,"
             " \"tokenizer_min_frequency\": 1, \"d_model\": 16, \"heads\": 2, \"layers_enc\": 1, \"layers_dec\": 1,"
             " \"d_ff\": 32, \"d_c\": 8, \"d_cq\": 8, \"d_rope\": 4, \"max_len\": 24, \"max_tokens\": 400,"
             " \"max_steps\": 2, \"threads\": 1, \"out_dir\": \"%s/r3\"}",
             g_corpus, g_dir);
    mt_trainer_t *tr = NULL;
    if (mt_trainer_create(json, NULL, &tr) != MT_OK) fail_msg("%s", mt_last_error());
    EXPECT(mt_trainer_step(tr, -1), MT_ERR_INVALID_ARG, "-1");
    EXPECT(mt_trainer_save_checkpoint(tr, "/nonexistent-dir/c.mt", &path), MT_ERR_IO, "/nonexistent-dir/c.mt");
    EXPECT(mt_trainer_status(tr, NULL, NULL, NULL, NULL), MT_OK, "");
    mt_trainer_free(tr);
    mt_trainer_free(NULL);
}

static void test_metrics(void **state) {
    (void)state;
    const char *h[2] = {"il gatto", "ciao"}, *r[2] = {"il gatto nero", "ciao"}, *hn[2] = {"x", NULL};
    const char *hb[2] = {"x", BAD_UTF8};
    double v = -1;
    mt_status (*fns[4])(const char *const *, const char *const *, size_t, double *) = {mt_metric_bleu, mt_metric_chrf,
                                                                                        mt_metric_cer, mt_metric_wer};
    const char *names[4] = {"bleu", "chrf", "cer", "wer"};
    for (int i = 0; i < 4; i++) {
        v = -1;
        EXPECT(fns[i](NULL, r, 2, &v), MT_ERR_INVALID_ARG, names[i]);
        EXPECT(fns[i](h, NULL, 2, &v), MT_ERR_INVALID_ARG, names[i]);
        EXPECT(fns[i](h, r, 2, NULL), MT_ERR_INVALID_ARG, names[i]);
        EXPECT(fns[i](hn, r, 2, &v), MT_ERR_INVALID_ARG, "1");
        EXPECT(fns[i](hb, r, 2, &v), MT_ERR_UTF8, "1");
        assert_true(v == -1);
        assert_int_equal(fns[i](h, r, 2, &v), MT_OK);
    }
}

static void test_context_tensor(void **state) {
    (void)state;
    mt_context_t *c = SENTINEL;
    EXPECT(mt_context_create(MT_DEVICE_CPU, NULL), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_context_create(91, &c), MT_ERR_NO_DEVICE, "cuda:91");
    assert_ptr_equal(c, SENTINEL);
    EXPECT(mt_context_reset(NULL), MT_ERR_INVALID_ARG, "mt_context_reset");
    EXPECT(mt_context_set_grad_enabled(NULL, 1), MT_ERR_INVALID_ARG, "mt_context_set_grad_enabled");
    EXPECT(mt_context_seed(NULL, 1), MT_ERR_INVALID_ARG, "mt_context_seed");
    mt_context_free(NULL);

    int64_t shape[2] = {2, 3}, bad_shape[2] = {2, 0};
    float data[6] = {1, 2, 3, 4, 5, 6};
    mt_tensor_t *t = SENTINEL, *x = NULL, *y = NULL;
    EXPECT(mt_tensor_empty(NULL, MT_DTYPE_F32, 2, shape, 0, &t), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_tensor_full(g_ctx, 2, bad_shape, 1, 0, &t), MT_ERR_SHAPE, "(2,0)");
    EXPECT(mt_tensor_full(g_ctx, 9, shape, 1, 0, &t), MT_ERR_SHAPE, "9");
    EXPECT(mt_tensor_from_data(g_ctx, MT_DTYPE_F32, 2, shape, NULL, 0, &t), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_tensor_arange(g_ctx, 0, 1, 0, &t), MT_ERR_SHAPE, "arange");
    EXPECT(mt_tensor_uniform(g_ctx, 2, shape, 0, 1, 0, NULL), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_tensor_normal(NULL, 2, shape, 0, 1, 0, &t), MT_ERR_INVALID_ARG, "");
    assert_ptr_equal(t, SENTINEL);
    assert_int_equal(mt_tensor_from_data(g_ctx, MT_DTYPE_F32, 2, shape, data, 0, &x), MT_OK);
    int64_t shape_b[2] = {4, 5};
    assert_int_equal(mt_tensor_full(g_ctx, 2, shape_b, 2, 0, &y), MT_OK);

    /* Inspection of NULL answers "nothing" instead of crashing. */
    assert_int_equal(mt_tensor_ndim(NULL), -1);
    assert_int_equal(mt_tensor_numel(NULL), 0);
    assert_int_equal(mt_tensor_dim(x, 7), -1);
    assert_int_equal(mt_tensor_dim(x, -1), 3);
    (void)mt_tensor_dtype(NULL);
    float small[2];
    EXPECT(mt_tensor_read(x, small, sizeof small), MT_ERR_BUFFER_TOO_SMALL, "");
    EXPECT(mt_tensor_read(NULL, small, sizeof small), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_tensor_write(x, small, sizeof small), MT_ERR_BUFFER_TOO_SMALL, "");
    EXPECT(mt_tensor_set_requires_grad(NULL, 1), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_tensor_grad(NULL, &t), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_tensor_zero_grad(NULL), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_tensor_detach(g_ctx, NULL, &t), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_tensor_backward(g_ctx, x, NULL), MT_ERR_STATE, "backward");
    EXPECT(mt_tensor_backward(NULL, x, NULL), MT_ERR_INVALID_ARG, "");

    /* Ops: NULL operands, and shapes that do not fit, named in the message. */
    EXPECT(mt_tensor_unary(g_ctx, MT_UNARY_EXP, NULL, &t), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_tensor_unary(g_ctx, (mt_unary_op)99, x, &t), MT_ERR_INVALID_ARG, "99");
    EXPECT(mt_tensor_binary(g_ctx, MT_BINARY_ADD, x, y, &t), MT_ERR_SHAPE, "(2,3) and (4,5)");
    EXPECT(mt_tensor_scalar(g_ctx, MT_BINARY_MUL, NULL, 2, &t), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_tensor_pow(NULL, x, 2, &t), MT_ERR_INVALID_ARG, "");
    int axes[1] = {5};
    EXPECT(mt_tensor_reduce(g_ctx, MT_REDUCE_SUM, x, axes, 1, 0, &t), MT_ERR_AXIS, "axis 5");
    EXPECT(mt_tensor_argmax(g_ctx, x, -4, 0, &t), MT_ERR_AXIS, "axis -4");
    EXPECT(mt_tensor_matmul(g_ctx, x, y, 0, 0, &t), MT_ERR_SHAPE, "inner dims differ");
    EXPECT(mt_tensor_softmax(g_ctx, x, 2, 0, &t), MT_ERR_AXIS, "softmax");
    int64_t seven[1] = {7};
    EXPECT(mt_tensor_reshape(g_ctx, x, 1, seven, &t), MT_ERR_SHAPE, "(2,3)");
    int perm[2] = {0, 0};
    EXPECT(mt_tensor_permute(g_ctx, x, perm, &t), MT_ERR_AXIS, "permute");
    EXPECT(mt_tensor_narrow(g_ctx, x, 1, 2, 5, &t), MT_ERR_SHAPE, "narrow");
    const mt_tensor_t *both[2] = {x, y};
    EXPECT(mt_tensor_concat(g_ctx, both, 2, 0, &t), MT_ERR_SHAPE, "concat");
    EXPECT(mt_tensor_concat(g_ctx, NULL, 2, 0, &t), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_tensor_layer_norm(g_ctx, x, y, NULL, 1e-5f, &t), MT_ERR_SHAPE, "layer_norm");
    EXPECT(mt_tensor_rms_norm(g_ctx, x, NULL, 1e-5f, &t), MT_ERR_INVALID_ARG, "");
    EXPECT(mt_tensor_embedding(g_ctx, y, x, &t), MT_ERR_DTYPE, "embedding");
    EXPECT(mt_tensor_masked_fill(g_ctx, x, y, 0, &t), MT_ERR_SHAPE, "masked_fill");
    EXPECT(mt_tensor_dropout(g_ctx, x, 1.5f, 1, &t), MT_ERR_INVALID_ARG, "dropout");
    EXPECT(mt_tensor_cross_entropy(g_ctx, x, y, 0.1f, 0, &t), MT_ERR_SHAPE, "cross_entropy");
    EXPECT(mt_tensor_attention(g_ctx, x, x, x, NULL, 0, 1, &t), MT_ERR_SHAPE, "attention");
    assert_ptr_equal(t, SENTINEL);
    mt_tensor_free(NULL);
    assert_int_equal(mt_context_reset(g_ctx), MT_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_process),  cmocka_unit_test(test_tokenizer), cmocka_unit_test(test_model),
        cmocka_unit_test(test_translate), cmocka_unit_test(test_trainer),  cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_context_tensor),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
