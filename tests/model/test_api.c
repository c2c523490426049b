/*
 * test_api.c — the model and translation part of the public ABI on a model trained here (briefly, on
 * the demo corpus): load (model and checkpoint, .mt and .mt.zst), info JSON, the tokenizer handle,
 * mt_translate (one allocation for the texts, scores, empty and overlong sentences, invalid UTF-8,
 * bad arguments), save/reload giving the same translations, concurrent translation on one
 * translator from several threads giving exactly what one thread gives, and mt_translate_with: the
 * options handle (defaults, set/get, ranges), n-best lists, target prefixes, the stream callback and
 * seeded sampling.
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static char g_dir[512], g_model[1024], g_ckpt[1024];
static const char *g_texts[] = {"hello", "good morning", "", "where is the station?", "i am hungry",
                                "the cat sleeps on the sofa", "thank you very much", "see you tomorrow"};
#define NT (sizeof g_texts / sizeof g_texts[0])

static int setup(void **state) {
    (void)state;
    const char *src = getenv("MT_SOURCE_DIR");
    char json[4096];
    snprintf(json, sizeof json,
             "{\"corpora\": [\"%s/deploy/demo/corpus.tsv\"], \"valid_size\": 0, \"test_size\": 0,"
             " \"tokenizer_vocab\": 400, \"tokenizer_min_frequency\": 1, \"d_model\": 32, \"heads\": 2,"
             " \"layers_enc\": 1, \"layers_dec\": 1, \"d_ff\": 64, \"d_c\": 16, \"d_cq\": 16, \"d_rope\": 4,"
             " \"dropout\": 0.0, \"max_len\": 40, \"max_tokens\": 800, \"lr\": 0.005, \"warmup_steps\": 10,"
             " \"max_steps\": 40, \"log_every\": 100, \"valid_every\": 0, \"save_every\": 0, \"threads\": 2,"
             " \"out_dir\": \"%s/run\"}",
             src ? src : ".", g_dir);
    mt_trainer_t *tr;
    if (mt_trainer_create(json, NULL, &tr) != MT_OK || mt_trainer_run(tr) != MT_OK) {
        fprintf(stderr, "training: %s\n", mt_last_error());
        return -1;
    }
    mt_trainer_free(tr);
    snprintf(g_model, sizeof g_model, "%s/run/model.mt", g_dir);
    snprintf(g_ckpt, sizeof g_ckpt, "%s/run/checkpoints/step-00000040.mt", g_dir);
    return 0;
}

static void translate_all(mt_translator_t *tr, int beam, char **out) {
    char **o = NULL;
    float *sc = NULL;
    mt_status st = mt_translate(tr, g_texts, NT, beam, 0.6f, 0, &o, &sc);
    if (st != MT_OK) fail_msg("mt_translate: %s", mt_last_error());
    for (size_t i = 0; i < NT; i++) {
        out[i] = strdup(o[i]);
        assert_true(sc[i] <= 0.0f);
    }
    assert_string_equal(o[2], ""); /* an empty line translates to an empty line */
    assert_true(sc[2] == 0.0f);
    mt_free(o); /* one allocation for all of it */
    mt_free(sc);
}

static void test_load_info_translate(void **state) {
    (void)state;
    mt_model_t *m = NULL;
    if (mt_model_load(g_model, MT_DEVICE_CPU, &m) != MT_OK) fail_msg("%s", mt_last_error());
    char *info;
    assert_int_equal(mt_model_info_json(m, &info), MT_OK);
    json_t *jo = json_loads(info, 0, NULL);
    assert_non_null(jo);
    assert_string_equal(json_string_value(json_object_get(jo, "attention")), "mla");
    assert_int_equal(json_integer_value(json_object_get(jo, "d_model")), 32);
    assert_true(json_integer_value(json_object_get(jo, "parameters")) > 1000);
    /* MLA caches d_c + d_rope floats per token per decoder layer. */
    assert_int_equal(json_integer_value(json_object_get(jo, "kv_cache_bytes_per_token")), 4 * (16 + 4) * 1);
    json_decref(jo);
    mt_free(info);
    const mt_tokenizer_t *tok = mt_model_tokenizer(m);
    assert_non_null(tok);
    size_t vs;
    assert_int_equal(mt_tokenizer_vocab_size(tok, &vs), MT_OK);
    assert_true(vs > 10 && vs <= 400);

    mt_translator_t *tr;
    assert_int_equal(mt_translator_create(m, 1, &tr), MT_OK);
    char *greedy[NT], *beam[NT];
    translate_all(tr, 1, greedy);
    translate_all(tr, 3, beam);
    int nonempty = 0;
    for (size_t i = 0; i < NT; i++) nonempty += greedy[i][0] != 0;
    assert_true(nonempty >= (int)NT - 1);
    /* An overlong sentence is truncated (a warning), never an error; invalid UTF-8 is. */
    char *longs = malloc(20000);
    longs[0] = 0;
    for (int i = 0; i < 2000; i++) strcat(longs, "hello ");
    const char *one[1] = {longs};
    char **o;
    assert_int_equal(mt_translate(tr, one, 1, 2, 0.6f, 1.5f, &o, NULL), MT_OK);
    mt_free(o);
    free(longs);
    const char *bad[2] = {"ok", "bad \xff\xfe utf-8"};
    assert_int_equal(mt_translate(tr, bad, 2, 1, 0, 0, &o, NULL), MT_ERR_UTF8);
    assert_non_null(strstr(mt_last_error(), "sentence 1"));
    assert_int_equal(mt_translate(tr, bad, 1, 0, 0, 0, &o, NULL), MT_ERR_INVALID_ARG);
    assert_int_equal(mt_translate(NULL, bad, 1, 1, 0, 0, &o, NULL), MT_ERR_INVALID_ARG);
    assert_int_equal(mt_translate(tr, bad, 0, 1, 0, 0, &o, NULL), MT_OK); /* nothing to do is fine */
    mt_free(o);

    /* Saved (compressed) and loaded again: the same translations. The checkpoint loads as a model. */
    char zst[1100];
    snprintf(zst, sizeof zst, "%s/copy.mt.zst", g_dir);
    assert_int_equal(mt_model_save(m, zst), MT_OK);
    const char *paths[2] = {zst, g_ckpt};
    for (int k = 0; k < 2; k++) {
        mt_model_t *m2;
        if (mt_model_load(paths[k], MT_DEVICE_CPU, &m2) != MT_OK) fail_msg("%s: %s", paths[k], mt_last_error());
        mt_translator_t *t2;
        assert_int_equal(mt_translator_create(m2, 0, &t2), MT_OK);
        char *again[NT];
        translate_all(t2, 3, again);
        for (size_t i = 0; i < NT; i++) {
            assert_string_equal(again[i], beam[i]);
            free(again[i]);
        }
        mt_translator_free(t2);
        mt_model_free(m2);
    }
    for (size_t i = 0; i < NT; i++) {
        free(greedy[i]);
        free(beam[i]);
    }
    mt_translator_free(tr);
    mt_model_free(m);
}

typedef struct job {
    mt_translator_t *tr;
    char *want[NT];
    int ok;
} job;

static void *worker(void *arg) {
    job *j = arg;
    j->ok = 1;
    for (int rep = 0; rep < 4; rep++) {
        char **o = NULL;
        if (mt_translate(j->tr, g_texts, NT, 1 + rep % 3, 0.6f, 0, &o, NULL) != MT_OK) {
            j->ok = 0;
            return NULL;
        }
        if (rep % 3 == 2)
            for (size_t i = 0; i < NT; i++) j->ok &= strcmp(o[i], j->want[i]) == 0;
        mt_free(o);
    }
    return NULL;
}

static void test_concurrent(void **state) {
    (void)state;
    mt_model_t *m;
    assert_int_equal(mt_model_load(g_model, MT_DEVICE_CPU, &m), MT_OK);
    mt_translator_t *tr;
    assert_int_equal(mt_translator_create(m, 1, &tr), MT_OK);
    job jobs[4];
    char *want[NT];
    translate_all(tr, 3, want);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i].tr = tr;
        memcpy(jobs[i].want, want, sizeof want);
        assert_int_equal(pthread_create(&th[i], NULL, worker, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(jobs[i].ok);
    }
    for (size_t i = 0; i < NT; i++) free(want[i]);
    mt_translator_free(tr);
    mt_model_free(m);
}

typedef struct stream_log {
    int finals[NT], partials[NT];
    char last[NT][256];
    int in_order; /* every partial text extends or replaces the one before; nothing after the final */
} stream_log;

static void on_stream(void *user, size_t i, const char *text, int final) {
    stream_log *s = user;
    if (i >= NT) fail_msg("stream: index %zu", i);
    if (s->finals[i]) s->in_order = 0;
    if (final) s->finals[i]++;
    else s->partials[i]++;
    snprintf(s->last[i], sizeof s->last[i], "%s", text);
}

static void test_translate_with(void **state) {
    (void)state;
    mt_model_t *m;
    assert_int_equal(mt_model_load(g_model, MT_DEVICE_CPU, &m), MT_OK);
    mt_translator_t *tr;
    assert_int_equal(mt_translator_create(m, 1, &tr), MT_OK);
    mt_translate_options_t *o;
    assert_int_equal(mt_translate_options_create(&o), MT_OK);
    /* The defaults, in one place. */
    double v;
    assert_int_equal(mt_translate_options_get(o, MT_TRANSLATE_BEAM_SIZE, &v), MT_OK);
    assert_true(v == 1);
    assert_int_equal(mt_translate_options_get(o, MT_TRANSLATE_LENGTH_PENALTY, &v), MT_OK);
    assert_true(fabs(v - 0.6) < 1e-6);
    assert_int_equal(mt_translate_options_get(o, MT_TRANSLATE_MAX_LEN_RATIO, &v), MT_OK);
    assert_true(fabs(v - 1.5) < 1e-6);
    assert_int_equal(mt_translate_options_get(o, MT_TRANSLATE_N_BEST, &v), MT_OK);
    assert_true(v == 1);
    assert_int_equal(mt_translate_options_get(o, MT_TRANSLATE_SAMPLING_TOPK, &v), MT_OK);
    assert_true(v == 1);
    /* The defaults are mt_translate's with the same beam and penalty. */
    char **a = NULL, **b = NULL;
    float *sa = NULL, *sb = NULL;
    assert_int_equal(mt_translate_with(tr, o, g_texts, NULL, NT, &a, &sa), MT_OK);
    assert_int_equal(mt_translate(tr, g_texts, NT, 1, 0.6f, 0, &b, &sb), MT_OK);
    for (size_t i = 0; i < NT; i++) {
        assert_string_equal(a[i], b[i]);
        assert_true(sa[i] == sb[i]);
    }
    mt_free(b);
    mt_free(sb);
    /* N-best: the first of each list is the 1-best of the same beam; the lists are n_best long. */
    assert_int_equal(mt_translate_options_set(o, MT_TRANSLATE_BEAM_SIZE, 4), MT_OK);
    assert_int_equal(mt_translate_options_set(o, MT_TRANSLATE_N_BEST, 3), MT_OK);
    assert_int_equal(mt_translate_with(tr, o, g_texts, NULL, NT, &b, &sb), MT_OK);
    char **one = NULL;
    assert_int_equal(mt_translate(tr, g_texts, NT, 4, 0.6f, 0, &one, NULL), MT_OK);
    for (size_t i = 0; i < NT; i++) {
        assert_string_equal(b[i * 3], one[i]);
        if (g_texts[i][0]) assert_string_not_equal(b[i * 3], b[i * 3 + 1]);
    }
    mt_free(one);
    mt_free(b);
    mt_free(sb);
    /* A target prefix: a translation's own first word gives it back; any prefix starts the output. */
    assert_int_equal(mt_translate_options_set(o, MT_TRANSLATE_BEAM_SIZE, 1), MT_OK);
    assert_int_equal(mt_translate_options_set(o, MT_TRANSLATE_N_BEST, 1), MT_OK);
    const char *pre[NT];
    char words[NT][64];
    for (size_t i = 0; i < NT; i++) {
        snprintf(words[i], sizeof words[i], "%.*s", (int)strcspn(a[i], " "), a[i]);
        pre[i] = words[i];
    }
    assert_int_equal(mt_translate_with(tr, o, g_texts, pre, NT, &b, NULL), MT_OK);
    for (size_t i = 0; i < NT; i++)
        if (g_texts[i][0]) assert_string_equal(b[i], a[i]);
    mt_free(b);
    for (size_t i = 0; i < NT; i++) pre[i] = i % 2 ? "zzz" : NULL;
    assert_int_equal(mt_translate_with(tr, o, g_texts, pre, NT, &b, NULL), MT_OK);
    for (size_t i = 1; i < NT; i += 2) assert_true(strncmp(b[i], "zzz", 3) == 0);
    for (size_t i = 0; i < NT; i += 2) assert_string_equal(b[i], a[i]);
    mt_free(b);
    /* The stream: every sentence reported once as final, with its translation; greedy reports
     * partial texts before. */
    stream_log log = {.in_order = 1};
    assert_int_equal(mt_translate_options_set_stream(o, on_stream, &log), MT_OK);
    assert_int_equal(mt_translate_with(tr, o, g_texts, NULL, NT, &b, NULL), MT_OK);
    int partials = 0;
    for (size_t i = 0; i < NT; i++) {
        assert_int_equal(log.finals[i], 1);
        assert_string_equal(log.last[i], b[i]);
        partials += log.partials[i];
    }
    assert_true(log.in_order);
    assert_true(partials > 0);
    mt_free(b);
    assert_int_equal(mt_translate_options_set_stream(o, NULL, NULL), MT_OK);
    /* Seeded sampling: the same seed draws the same, a tiny temperature is greedy. */
    assert_int_equal(mt_translate_options_set(o, MT_TRANSLATE_SAMPLING_TOPK, 0), MT_OK);
    assert_int_equal(mt_translate_options_set(o, MT_TRANSLATE_SAMPLING_TOPP, 0.9), MT_OK);
    assert_int_equal(mt_translate_options_set(o, MT_TRANSLATE_SEED, 7), MT_OK);
    assert_int_equal(mt_translate_with(tr, o, g_texts, NULL, NT, &b, NULL), MT_OK);
    assert_int_equal(mt_translate_with(tr, o, g_texts, NULL, NT, &one, NULL), MT_OK);
    for (size_t i = 0; i < NT; i++) assert_string_equal(b[i], one[i]);
    mt_free(b);
    mt_free(one);
    assert_int_equal(mt_translate_options_set(o, MT_TRANSLATE_SAMPLING_TEMPERATURE, 1e-4), MT_OK);
    assert_int_equal(mt_translate_with(tr, o, g_texts, NULL, NT, &b, NULL), MT_OK);
    for (size_t i = 0; i < NT; i++) assert_string_equal(b[i], a[i]);
    mt_free(b);
    /* Combinations are checked when translating, naming the option. */
    assert_int_equal(mt_translate_options_set(o, MT_TRANSLATE_BEAM_SIZE, 2), MT_OK);
    assert_int_equal(mt_translate_with(tr, o, g_texts, NULL, NT, &b, NULL), MT_ERR_INVALID_ARG);
    assert_non_null(strstr(mt_last_error(), "sampling"));
    mt_free(a);
    mt_free(sa);
    mt_translate_options_free(o);
    mt_translator_free(tr);
    mt_model_free(m);
}

int main(void) {
    if (tu_tmpdir(g_dir, sizeof g_dir, "api") != 0) return 1;
    mt_log_set_level(MT_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_info_translate),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_translate_with),
    };
    int rc = cmocka_run_group_tests_name("model ABI", tests, setup, NULL);
    tu_rmrf(g_dir);
    return rc ? 1 : 0;
}
