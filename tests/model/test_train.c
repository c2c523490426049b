/*
 * test_train.c — the trainer, through the public ABI, on the project's demo corpus with a tiny model:
 *  - exact resume: a run stopped at step 3 and resumed from its checkpoint gives bit-identical losses
 *    to an uninterrupted run (dropout on, so the generator state matters);
 *  - a full run: validation (loss, BLEU, chrF), checkpoints every N steps with only the last K kept,
 *    the final and best models, one metrics line per event, the loss going down;
 *  - early stopping on a patience; cancel from the progress callback (checkpoint, then
 *    MT_ERR_CANCELLED); save_checkpoint from another thread while running;
 *  - path_root confinement (MT_ERR_PERMISSION naming the key) and config errors naming the key.
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format/modelfile.h"
#include "testutil.h"

static char g_dir[512], g_corpus[1024];

/* A tiny training config as JSON text; extra (", \"key\": value ...") overrides or adds keys. */
static char *config(const char *out_dir, const char *extra) {
    char base[8192], more[4096];
    snprintf(base, sizeof base,
             "{\"corpora\": [\"%s\"], \"valid_size\": 24, \"test_size\": 8, \"tokenizer_vocab\": 300,"
             " \"tokenizer_min_frequency\": 1, \"d_model\": 32, \"heads\": 2, \"layers_enc\": 1, \"layers_dec\": 1,"
             " \"d_ff\": 64, \"d_c\": 16, \"d_cq\": 16, \"d_rope\": 4, \"dropout\": 0.1, \"max_len\": 48,"
             " \"max_tokens\": 600, \"lr\": 0.003, \"warmup_steps\": 5, \"log_every\": 1, \"valid_every\": 0,"
             " \"save_every\": 0, \"valid_sentences\": 0, \"threads\": 2, \"seed\": 7, \"out_dir\": \"%s\"}",
             g_corpus, out_dir);
    snprintf(more, sizeof more, "{\"_\": 0%s}", extra ? extra : "");
    json_t *b = json_loads(base, 0, NULL), *m = json_loads(more, 0, NULL);
    assert_non_null(b);
    assert_non_null(m);
    json_object_del(m, "_");
    json_object_update(b, m);
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    json_decref(m);
    return s;
}

static void run_dir(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_dir, name); }

/* Collects the events of a run. */
typedef struct events {
    double loss[256]; /* loss of step i (1-based), NAN when absent */
    int n_step_events, n_valid, n_ckpt;
    char last_event[32];
    int cancel_at;    /* > 0: cancel when step reaches it */
    mt_trainer_t *tr;
    double bleu;
} events;

static void on_event(const char *json, void *user) {
    events *e = user;
    json_t *o = json_loads(json, 0, NULL);
    assert_non_null(o);
    const char *ev = json_string_value(json_object_get(o, "event"));
    int64_t step = json_integer_value(json_object_get(o, "step"));
    snprintf(e->last_event, sizeof e->last_event, "%s", ev);
    if (!strcmp(ev, "step")) {
        e->n_step_events++;
        if (step >= 0 && step < 256) e->loss[step] = json_number_value(json_object_get(o, "loss"));
        if (e->cancel_at > 0 && step >= e->cancel_at) assert_int_equal(mt_trainer_cancel(e->tr), MT_OK);
    } else if (!strcmp(ev, "valid")) {
        e->n_valid++;
        if (json_object_get(o, "bleu")) e->bleu = json_number_value(json_object_get(o, "bleu"));
    } else if (!strcmp(ev, "checkpoint")) {
        e->n_ckpt++;
    }
    json_decref(o);
}

static mt_trainer_t *make(const char *json, events *e) {
    mt_trainer_t *tr = NULL;
    mt_status st = mt_trainer_create(json, NULL, &tr);
    if (st != MT_OK) fail_msg("mt_trainer_create: %s", mt_last_error());
    if (e) {
        memset(e, 0, sizeof *e);
        for (int i = 0; i < 256; i++) e->loss[i] = NAN;
        e->tr = tr;
        assert_int_equal(mt_trainer_set_progress_callback(tr, on_event, e), MT_OK);
    }
    return tr;
}

static void test_exact_resume(void **state) {
    (void)state;
    char a[700], b[700];
    run_dir(a, sizeof a, "resume-a");
    run_dir(b, sizeof b, "resume-b");
    events ea, eb;
    char *ja = config(a, NULL), *jb = config(b, ", \"resume\": \"auto\"");
    mt_trainer_t *ta = make(ja, &ea);
    assert_int_equal(mt_trainer_step(ta, 8), MT_OK);
    mt_trainer_free(ta);

    mt_trainer_t *tb = make(jb, &eb); /* nothing to resume yet: a fresh start */
    assert_int_equal(mt_trainer_step(tb, 3), MT_OK);
    char *path = NULL;
    assert_int_equal(mt_trainer_save_checkpoint(tb, NULL, &path), MT_OK);
    assert_non_null(strstr(path, "step-00000003.mt"));
    mt_free(path);
    mt_trainer_free(tb);
    for (int s = 1; s <= 3; s++) assert_true(ea.loss[s] == eb.loss[s]);

    tb = make(jb, &eb); /* resumes from step 3 */
    int64_t step;
    assert_int_equal(mt_trainer_status(tb, NULL, &step, NULL, NULL), MT_OK);
    assert_int_equal(step, 3);
    assert_int_equal(mt_trainer_step(tb, 5), MT_OK);
    for (int s = 4; s <= 8; s++) {
        if (ea.loss[s] != eb.loss[s]) fail_msg("step %d: uninterrupted %.17g, resumed %.17g", s, ea.loss[s], eb.loss[s]);
    }
    assert_true(ea.loss[8] < ea.loss[1]);
    mt_trainer_free(tb);
    free(ja);
    free(jb);
}

static int count_ckpts(const char *out) {
    char cmd[900];
    snprintf(cmd, sizeof cmd, "exit $(ls '%s/checkpoints' | grep -c '^step-.*\\.mt$')", out);
    int rc = system(cmd);
    return WEXITSTATUS(rc);
}

static void test_full_run(void **state) {
    (void)state;
    char d[700], p[800];
    run_dir(d, sizeof d, "full");
    events e;
    char *j = config(d, ", \"max_steps\": 12, \"valid_every\": 6, \"valid_sentences\": 10, \"save_every\": 4,"
                        " \"keep_checkpoints\": 2, \"log_every\": 3");
    mt_trainer_t *tr = make(j, &e);
    assert_int_equal(mt_trainer_run(tr), MT_OK);
    mt_train_state s;
    int64_t step;
    double loss;
    assert_int_equal(mt_trainer_status(tr, &s, &step, &loss, NULL), MT_OK);
    assert_int_equal(s, MT_TRAIN_DONE);
    assert_int_equal(step, 12);
    assert_int_equal(e.n_step_events, 4);
    assert_int_equal(e.n_valid, 2);
    assert_true(e.bleu >= 0.0);
    assert_int_equal(e.n_ckpt, 3);
    assert_string_equal(e.last_event, "done");
    assert_true(e.loss[12] < e.loss[3]);
    assert_int_equal(count_ckpts(d), 2); /* steps 8 and 12; 4 was rotated out */
    const char *files[4] = {"model.mt", "best.mt", "metrics.jsonl", "tokenizer.json"};
    for (int i = 0; i < 4; i++) {
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", d, files[i]);
        if (stat(p, &st) != 0) fail_msg("missing %s", p);
    }
    /* One JSON object per line in the metrics file: start, 4 steps, 2 valid, 3 checkpoints, done. */
    snprintf(p, sizeof p, "%s/metrics.jsonl", d);
    FILE *f = fopen(p, "r");
    char line[65536];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        assert_non_null(o);
        json_decref(o);
        n++;
    }
    fclose(f);
    assert_int_equal(n, 11);
    char *sj;
    assert_int_equal(mt_trainer_status_json(tr, &sj), MT_OK);
    json_t *o = json_loads(sj, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "done");
    assert_true(json_is_number(json_object_get(o, "valid_loss")));
    json_decref(o);
    mt_free(sj);
    /* Running again: already at max_steps, it saves and stops at once. */
    assert_int_equal(mt_trainer_run(tr), MT_OK);
    mt_trainer_free(tr);
    free(j);
}

static void test_early_stopping(void **state) {
    (void)state;
    char d[700];
    run_dir(d, sizeof d, "early");
    events e;
    /* lr 0: the validation loss never improves after the first, so patience 2 stops at step 3. */
    char *j = config(d, ", \"lr\": 0, \"max_steps\": 50, \"valid_every\": 1, \"patience\": 2");
    mt_trainer_t *tr = make(j, &e);
    assert_int_equal(mt_trainer_run(tr), MT_OK);
    int64_t step;
    assert_int_equal(mt_trainer_status(tr, NULL, &step, NULL, NULL), MT_OK);
    assert_int_equal(step, 3);
    assert_int_equal(e.n_valid, 3);
    mt_trainer_free(tr);
    free(j);
}

static void test_cancel(void **state) {
    (void)state;
    char d[700];
    run_dir(d, sizeof d, "cancel");
    events e;
    char *j = config(d, ", \"max_steps\": 100");
    mt_trainer_t *tr = make(j, &e);
    e.cancel_at = 3;
    assert_int_equal(mt_trainer_run(tr), MT_ERR_CANCELLED);
    mt_train_state s;
    int64_t step;
    assert_int_equal(mt_trainer_status(tr, &s, &step, NULL, NULL), MT_OK);
    assert_int_equal(s, MT_TRAIN_CANCELLED);
    assert_int_equal(step, 3);
    assert_string_equal(e.last_event, "cancelled");
    char p[800];
    snprintf(p, sizeof p, "%s/checkpoints/step-00000003.mt", d);
    mt_modelfile mf;
    assert_int_equal(mt_modelfile_load(p, MT_DEVICE_CPU, 0, &mf), MT_OK);
    assert_int_equal(mf.is_checkpoint, 1);
    assert_int_equal(mf.step, 3);
    mt_modelfile_clear(&mf);
    mt_trainer_free(tr);
    free(j);
}

static void *run_thread(void *arg) {
    static mt_status st;
    st = mt_trainer_run(arg);
    return &st;
}

static void test_save_while_running(void **state) {
    (void)state;
    char d[700], p[800];
    run_dir(d, sizeof d, "threads");
    char *j = config(d, ", \"max_steps\": 100000, \"log_every\": 1000");
    mt_trainer_t *tr = make(j, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_thread, tr), 0);
    int64_t step = 0;
    mt_train_state s = MT_TRAIN_IDLE;
    while (step < 2 || s != MT_TRAIN_RUNNING) {
        usleep(10000);
        assert_int_equal(mt_trainer_status(tr, &s, &step, NULL, NULL), MT_OK);
    }
    assert_int_equal(mt_trainer_run(tr), MT_ERR_STATE); /* one run at a time */
    snprintf(p, sizeof p, "%s/manual.mt", d);
    char *written = NULL;
    assert_int_equal(mt_trainer_save_checkpoint(tr, p, &written), MT_OK);
    assert_string_equal(written, p);
    mt_free(written);
    assert_int_equal(mt_trainer_cancel(tr), MT_OK);
    void *ret;
    pthread_join(th, &ret);
    assert_int_equal(*(mt_status *)ret, MT_ERR_CANCELLED);
    mt_modelfile mf;
    assert_int_equal(mt_modelfile_load(p, MT_DEVICE_CPU, 0, &mf), MT_OK);
    assert_true(mf.is_checkpoint && mf.step >= 2);
    mt_modelfile_clear(&mf);
    mt_trainer_free(tr);
    free(j);
}

static void test_path_root(void **state) {
    (void)state;
    char root[700], cmd[4096], json[4096];
    run_dir(root, sizeof root, "root");
    assert_true(snprintf(cmd, sizeof cmd, "mkdir -p '%s/data' && cp '%s' '%s/data/c.tsv'", root, g_corpus, root) < (int)sizeof cmd);
    assert_int_equal(system(cmd), 0);
    mt_trainer_t *tr = NULL;
    const char *tail = "\"valid_size\": 10, \"test_size\": 0, \"tokenizer_vocab\": 200, \"tokenizer_min_frequency\": 1,"
                       " \"d_model\": 16, \"heads\": 2, \"layers_enc\": 1, \"layers_dec\": 1, \"d_ff\": 16, \"d_c\": 8,"
                       " \"d_cq\": 8, \"d_rope\": 4, \"max_tokens\": 600";
    snprintf(json, sizeof json, "{\"corpora\": [\"../../etc/passwd\"], \"out_dir\": \"run\", %s}", tail);
    assert_int_equal(mt_trainer_create(json, root, &tr), MT_ERR_PERMISSION);
    assert_non_null(strstr(mt_last_error(), "'corpora'"));
    snprintf(json, sizeof json, "{\"corpora\": [\"data/c.tsv\"], \"out_dir\": \"/tmp\", %s}", tail);
    assert_int_equal(mt_trainer_create(json, root, &tr), MT_ERR_PERMISSION);
    assert_non_null(strstr(mt_last_error(), "'out_dir'"));
    snprintf(json, sizeof json, "{\"corpora\": [\"data/c.tsv\"], \"out_dir\": \"run\", \"tokenizer\": \"../t.json\", %s}",
             tail);
    assert_int_equal(mt_trainer_create(json, root, &tr), MT_ERR_PERMISSION);
    assert_non_null(strstr(mt_last_error(), "'tokenizer'"));
    snprintf(json, sizeof json, "{\"corpora\": [\"data/c.tsv\"], \"out_dir\": \"run/a/b\", %s}", tail);
    if (mt_trainer_create(json, root, &tr) != MT_OK) fail_msg("%s", mt_last_error());
    assert_int_equal(mt_trainer_save_checkpoint(tr, "../../outside.mt", NULL), MT_ERR_PERMISSION);
    char *w = NULL;
    assert_int_equal(mt_trainer_save_checkpoint(tr, "inside.mt", &w), MT_OK);
    snprintf(cmd, sizeof cmd, "%s/inside.mt", root);
    char real[4096];
    assert_non_null(realpath(cmd, real));
    assert_string_equal(w, real);
    mt_free(w);
    mt_trainer_free(tr);
}

static void test_config_errors(void **state) {
    (void)state;
    mt_trainer_t *tr = NULL;
    char d[700];
    run_dir(d, sizeof d, "errors");
    char *j = config(d, ", \"d_modle\": 3");
    assert_int_equal(mt_trainer_create(j, NULL, &tr), MT_ERR_CONFIG);
    assert_non_null(strstr(mt_last_error(), "d_modle"));
    free(j);
    assert_int_equal(mt_trainer_create("{\"corpora\": [", NULL, &tr), MT_ERR_FORMAT);
    assert_non_null(strstr(mt_last_error(), "line 1"));
    char json[2048];
    snprintf(json, sizeof json, "{\"corpora\": [\"%s/no-such.tsv\"], \"out_dir\": \"%s\"}", g_dir, d);
    assert_int_equal(mt_trainer_create(json, NULL, &tr), MT_ERR_NOT_FOUND);
    assert_null(tr);
}

int main(void) {
    const char *src = getenv("MT_SOURCE_DIR");
    snprintf(g_corpus, sizeof g_corpus, "%s/deploy/demo/corpus.tsv", src ? src : ".");
    if (access(g_corpus, R_OK) != 0) {
        fprintf(stderr, "demo corpus %s not found (set MT_SOURCE_DIR)\n", g_corpus);
        return 1;
    }
    if (tu_tmpdir(g_dir, sizeof g_dir, "train") != 0) return 1;
    mt_log_set_level(MT_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_resume), cmocka_unit_test(test_full_run),
        cmocka_unit_test(test_early_stopping), cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_save_while_running), cmocka_unit_test(test_path_root),
        cmocka_unit_test(test_config_errors),
    };
    int rc = cmocka_run_group_tests_name("trainer", tests, NULL, NULL);
    tu_rmrf(g_dir);
    return rc ? 1 : 0;
}
