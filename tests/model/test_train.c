/*
 * test_train.c — the trainer, through the public ABI, on the project's demo corpus with a tiny model:
 *  - exact resume: a run stopped at step 3 and resumed from its checkpoint gives bit-identical losses
 *    to an uninterrupted run (dropout on, so the generator state matters);
 *  - a full run: validation (loss, BLEU, chrF), checkpoints every N steps with only the last K kept,
 *    the final and best models, one metrics line per event, the loss going down;
 *  - early stopping on a patience; cancel from the progress callback (checkpoint, then
 *    MT_ERR_CANCELLED); save_checkpoint from another thread while running;
 *  - path_root confinement (MT_ERR_PERMISSION naming the key) and config errors naming the key;
 *  - reliability: a save of the idle trainer racing a run's start, links under out_dir never
 *    followed (writes, renames, rotation), temporary files of a crash removed, metrics.jsonl cut back
 *    on resume, and a disk full (RLIMIT_FSIZE) during checkpoints: training goes on, reported,
 *    retried, an explicit save still works, nothing half-written under a real name.
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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

/* ---- reliability ---- */

/* Blocks the thread that emits the first "checkpoint" event for 300 ms, after telling the test. */
typedef struct ckpt_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in_save;
} ckpt_gate;

static void on_gate_event(const char *json, void *user) {
    ckpt_gate *g = user;
    if (!strstr(json, "\"event\":\"checkpoint\"")) return;
    pthread_mutex_lock(&g->mu);
    int first = !g->in_save;
    g->in_save = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (first) usleep(300000);
}

static void *save_thread(void *arg) {
    static mt_status st;
    char *path = NULL;
    st = mt_trainer_save_checkpoint(arg, NULL, &path);
    mt_free(path);
    return &st;
}

/* Defect: a save of the idle trainer marked it running, so a run starting meanwhile (the server's
 * trainer thread right after `train start`) failed "already running" and the run was lost. */
static void test_save_while_starting(void **state) {
    (void)state;
    char d[700];
    run_dir(d, sizeof d, "save-start");
    char *j = config(d, ", \"max_steps\": 100");
    mt_trainer_t *tr = make(j, NULL);
    ckpt_gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    assert_int_equal(mt_trainer_set_progress_callback(tr, on_gate_event, &g), MT_OK);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, save_thread, tr), 0);
    pthread_mutex_lock(&g.mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    while (!g.in_save) assert_int_equal(pthread_cond_timedwait(&g.cv, &g.mu, &until), 0);
    pthread_mutex_unlock(&g.mu);
    /* The save is still writing: the run waits for it instead of failing. */
    if (mt_trainer_step(tr, 2) != MT_OK) fail_msg("a run started during a save: %s", mt_last_error());
    void *ret;
    pthread_join(th, &ret);
    assert_int_equal(*(mt_status *)ret, MT_OK);
    int64_t step;
    assert_int_equal(mt_trainer_status(tr, NULL, &step, NULL, NULL), MT_OK);
    assert_int_equal(step, 2);
    mt_trainer_free(tr);
    free(j);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) fail_msg("command failed: %s", cmd);
}

static char *slurp_text(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* Defect: with out_dir's metrics.jsonl and checkpoints/ symbolic links leading out of path_root, the
 * run wrote (and rotation deleted) files outside the root. */
static void test_links_under_out_dir(void **state) {
    (void)state;
    char root[700], out[700], json[4096], p[900];
    run_dir(root, sizeof root, "links-root");
    run_dir(out, sizeof out, "links-outside");
    sh("mkdir -p '%s/data' '%s/runS' '%s/ck' && cp '%s' '%s/data/c.tsv' && echo keep > '%s/m.jsonl' && "
       "echo keep > '%s/victim.mt'", root, root, out, g_corpus, root, out, out);
    const char *tail = "\"valid_size\": 10, \"test_size\": 0, \"tokenizer_vocab\": 200, \"tokenizer_min_frequency\": 1,"
                       " \"d_model\": 16, \"heads\": 2, \"layers_enc\": 1, \"layers_dec\": 1, \"d_ff\": 16, \"d_c\": 8,"
                       " \"d_cq\": 8, \"d_rope\": 4, \"max_tokens\": 600, \"save_every\": 1, \"keep_checkpoints\": 1,"
                       " \"log_every\": 1, \"threads\": 1";
    snprintf(json, sizeof json, "{\"corpora\": [\"data/c.tsv\"], \"out_dir\": \"runS\", %s}", tail);
    mt_trainer_t *tr = NULL;
    /* checkpoints/ a link to a directory outside: refused, nothing written there. */
    sh("ln -s '%s/ck' '%s/runS/checkpoints'", out, root);
    assert_int_equal(mt_trainer_create(json, root, &tr), MT_ERR_PERMISSION);
    assert_non_null(strstr(mt_last_error(), "checkpoints"));
    /* metrics.jsonl a link to a file outside: refused, the file untouched. */
    sh("rm '%s/runS/checkpoints' && ln -s '%s/m.jsonl' '%s/runS/metrics.jsonl'", root, out, root);
    assert_int_equal(mt_trainer_create(json, root, &tr), MT_ERR_PERMISSION);
    assert_non_null(strstr(mt_last_error(), "metrics.jsonl"));
    /* A link named like a checkpoint, to a file outside: rotation removes the link, not the file, and
     * a resume never loads it. */
    sh("rm '%s/runS/metrics.jsonl' && mkdir -p '%s/runS/checkpoints' && ln -s '%s/victim.mt' "
       "'%s/runS/checkpoints/step-00000000.mt'", root, root, out, root);
    snprintf(json, sizeof json, "{\"corpora\": [\"data/c.tsv\"], \"out_dir\": \"runS\", \"resume\": \"auto\", %s}", tail);
    if (mt_trainer_create(json, root, &tr) != MT_OK) fail_msg("%s", mt_last_error());
    int64_t step = -1;
    assert_int_equal(mt_trainer_status(tr, NULL, &step, NULL, NULL), MT_OK);
    assert_int_equal(step, 0);
    assert_int_equal(mt_trainer_step(tr, 3), MT_OK);
    /* An explicit save onto a link inside the root replaces the link (it is not written through). */
    sh("ln -s '%s/victim.mt' '%s/runS/manual.mt'", out, root);
    assert_int_equal(mt_trainer_save_checkpoint(tr, "runS/manual.mt", NULL), MT_ERR_PERMISSION);
    mt_trainer_free(tr);
    char *m = NULL, *v = NULL;
    snprintf(p, sizeof p, "%s/m.jsonl", out);
    assert_non_null(m = slurp_text(p));
    snprintf(p, sizeof p, "%s/victim.mt", out);
    assert_non_null(v = slurp_text(p));
    assert_string_equal(m, "keep\n");
    assert_string_equal(v, "keep\n");
    free(m);
    free(v);
    snprintf(p, sizeof p, "exit $(ls -A '%s/ck' | wc -l)", out);
    assert_int_equal(WEXITSTATUS(system(p)), 0);
    snprintf(p, sizeof p, "%s/runS/checkpoints/step-00000000.mt", root);
    struct stat sb;
    assert_int_not_equal(lstat(p, &sb), 0); /* rotated out: the link itself */
    snprintf(p, sizeof p, "%s/runS/checkpoints/step-00000003.mt", root);
    assert_int_equal(stat(p, &sb), 0);
}

/* Defect: the temporary file of a checkpoint whose write a crash interrupted stayed forever. */
static void test_stale_tmp_removed(void **state) {
    (void)state;
    char d[700], p[900];
    run_dir(d, sizeof d, "stale-tmp");
    sh("mkdir -p '%s/checkpoints' && touch '%s/checkpoints/step-00000100.mt.tmp.Ab3dE6' '%s/model.mt.tmp.xYz123' "
       "'%s/tokenizer.json.tmp.q1w2e3' '%s/notes.tmp.abcdef' '%s/checkpoints/step-00000100.mt.tmp.keep'",
       d, d, d, d, d, d);
    char *j = config(d, NULL);
    mt_trainer_t *tr = make(j, NULL);
    struct stat sb;
    const char *gone[] = {"checkpoints/step-00000100.mt.tmp.Ab3dE6", "model.mt.tmp.xYz123", "tokenizer.json.tmp.q1w2e3"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", d, gone[i]);
        if (stat(p, &sb) == 0) fail_msg("%s survived", p);
    }
    /* Names that are not ours are left alone. */
    snprintf(p, sizeof p, "%s/notes.tmp.abcdef", d);
    assert_int_equal(stat(p, &sb), 0);
    snprintf(p, sizeof p, "%s/checkpoints/step-00000100.mt.tmp.keep", d);
    assert_int_equal(stat(p, &sb), 0);
    mt_trainer_free(tr);
    free(j);
}

/* The step numbers of the "step" records of a metrics file, counted: seen[s] (s < 64). */
static void count_step_records(const char *path, int seen[64]) {
    memset(seen, 0, 64 * sizeof *seen);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[65536];
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        assert_non_null(o);
        int64_t s = json_integer_value(json_object_get(o, "step"));
        if (!strcmp(json_string_value(json_object_get(o, "event")), "step") && s >= 0 && s < 64) seen[s]++;
        json_decref(o);
    }
    fclose(f);
}

/* Defect: after a resume metrics.jsonl listed the steps after the checkpoint twice. */
static void test_metrics_cut_on_resume(void **state) {
    (void)state;
    char d[700], p[900];
    run_dir(d, sizeof d, "metrics-resume");
    char *j = config(d, ", \"resume\": \"auto\"");
    mt_trainer_t *tr = make(j, NULL);
    assert_int_equal(mt_trainer_step(tr, 3), MT_OK);
    assert_int_equal(mt_trainer_save_checkpoint(tr, NULL, NULL), MT_OK);
    assert_int_equal(mt_trainer_step(tr, 3), MT_OK); /* steps 4-6, then "a crash" */
    mt_trainer_free(tr);
    snprintf(p, sizeof p, "%s/metrics.jsonl", d);
    FILE *f = fopen(p, "a");
    fputs("{\"event\":\"step\",\"st", f); /* a torn last line */
    fclose(f);
    tr = make(j, NULL); /* resumes at step 3 */
    assert_int_equal(mt_trainer_step(tr, 3), MT_OK);
    mt_trainer_free(tr);
    int seen[64];
    count_step_records(p, seen);
    for (int s = 1; s <= 6; s++)
        if (seen[s] != 1) fail_msg("step %d recorded %d times", s, seen[s]);
    free(j);
}

/* Checkpoint files of dir/checkpoints: each loads, none is a temporary file. Returns how many. */
static int check_ckpts_whole(const char *d) {
    char p[900];
    snprintf(p, sizeof p, "%s/checkpoints", d);
    DIR *dir = opendir(p);
    assert_non_null(dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.') continue;
        if (strstr(e->d_name, ".tmp.")) fail_msg("temporary file left: %s", e->d_name);
        snprintf(p, sizeof p, "%s/checkpoints/%s", d, e->d_name);
        mt_modelfile mf;
        if (mt_modelfile_load(p, MT_DEVICE_CPU, 0, &mf) != MT_OK) fail_msg("%s: %s", p, mt_last_error());
        mt_modelfile_clear(&mf);
        n++;
    }
    closedir(dir);
    return n;
}

static void set_fsize(rlim_t n) {
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rl.rlim_cur = n == RLIM_INFINITY ? rl.rlim_max : n;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

/* Disk full during checkpoints (RLIMIT_FSIZE below a checkpoint's size): each failure is reported
 * and training goes on, the next interval retrying; an explicit save works once there is room;
 * max_checkpoint_failures in a row fail the run, whose weights can still be saved. Nothing
 * half-written is ever left under a real name. */
typedef struct fail_events {
    int failed, ckpt;
} fail_events;

static void on_fail_event(const char *json, void *user) {
    fail_events *e = user;
    if (strstr(json, "\"event\":\"checkpoint_failed\"")) e->failed++;
    if (strstr(json, "\"event\":\"checkpoint\"")) e->ckpt++;
}

static void test_disk_full_checkpoints(void **state) {
    (void)state;
    char d[700], p[900];
    run_dir(d, sizeof d, "disk-full");
    char *j = config(d, ", \"save_every\": 2, \"max_checkpoint_failures\": 3, \"log_every\": 100");
    mt_trainer_t *tr = make(j, NULL);
    fail_events e = {0, 0};
    assert_int_equal(mt_trainer_set_progress_callback(tr, on_fail_event, &e), MT_OK);
    signal(SIGXFSZ, SIG_IGN); /* over the limit, write(2) fails with EFBIG instead */
    set_fsize(32 << 10);      /* a checkpoint is ~10x that */
    /* Two intervals fail; training goes on. */
    assert_int_equal(mt_trainer_step(tr, 4), MT_OK);
    assert_int_equal(e.failed, 2);
    assert_int_equal(e.ckpt, 0);
    assert_int_equal(check_ckpts_whole(d), 0);
    snprintf(p, sizeof p, "%s/manual.mt", d);
    assert_int_equal(mt_trainer_save_checkpoint(tr, p, NULL), MT_ERR_IO);
    /* Room again: an explicit save keeps the weights trained since; the next interval succeeds. */
    set_fsize(RLIM_INFINITY);
    assert_int_equal(mt_trainer_save_checkpoint(tr, p, NULL), MT_OK);
    assert_int_equal(mt_trainer_step(tr, 2), MT_OK);
    assert_int_equal(e.ckpt, 2);
    assert_int_equal(check_ckpts_whole(d), 1);
    /* Full again for three intervals in a row: the run fails... */
    set_fsize(32 << 10);
    assert_int_equal(mt_trainer_step(tr, 6), MT_ERR_IO);
    assert_non_null(strstr(mt_last_error(), "3 checkpoints in a row failed"));
    mt_train_state s;
    int64_t step;
    assert_int_equal(mt_trainer_status(tr, &s, &step, NULL, NULL), MT_OK);
    assert_int_equal(s, MT_TRAIN_FAILED);
    assert_int_equal(step, 12);
    /* ...with its weights whole: once there is room they can be saved. */
    set_fsize(RLIM_INFINITY);
    snprintf(p, sizeof p, "%s/after-failure.mt", d);
    if (mt_trainer_save_checkpoint(tr, p, NULL) != MT_OK) fail_msg("%s", mt_last_error());
    mt_modelfile mf;
    assert_int_equal(mt_modelfile_load(p, MT_DEVICE_CPU, 0, &mf), MT_OK);
    assert_int_equal(mf.step, 12);
    mt_modelfile_clear(&mf);
    assert_int_equal(check_ckpts_whole(d), 1);
    signal(SIGXFSZ, SIG_DFL);
    mt_trainer_free(tr);
    free(j);
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
        cmocka_unit_test(test_config_errors), cmocka_unit_test(test_save_while_starting),
        cmocka_unit_test(test_links_under_out_dir), cmocka_unit_test(test_stale_tmp_removed),
        cmocka_unit_test(test_metrics_cut_on_resume), cmocka_unit_test(test_disk_full_checkpoints),
    };
    int rc = cmocka_run_group_tests_name("trainer", tests, NULL, NULL);
    if (!getenv("MT_KEEP")) tu_rmrf(g_dir);
    return rc ? 1 : 0;
}
