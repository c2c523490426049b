/*
 * test_net_unit.c — unit tests of net/ that need no socket: the stream framer (limits checked before
 * buffering, oversized frames skipped in sync, violations), request validation and UTF-8, the
 * options table and config file, tokens, the batcher's policy (driven with explicit times), the
 * metrics, and --data-root path confinement.
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth.h"
#include "batcher.h"
#include "frame.h"
#include "metrics.h"
#include "options.h"
#include "server.h"

/* ---- framing ---- */

static uint8_t *encode_translate(uint64_t id, const char *text, size_t *len) {
    Mt__V1__TranslateRequest t = MT__V1__TRANSLATE_REQUEST__INIT;
    char *texts[1] = {(char *)text};
    t.n_texts = 1;
    t.texts = texts;
    mt_frame f = MT__V1__FRAME__INIT;
    f.id = id;
    f.body_case = MT__V1__FRAME__BODY_TRANSLATE;
    f.translate = &t;
    return mt_frame_encode(&f, len);
}

/* Feeds a whole buffer through a framer as a server would (contiguous `need` bytes at a time). */
typedef struct fed {
    int frames, oversize, violations;
    uint64_t last_id, oversize_id;
    int violation_code;
    char last_text[64];
} fed;

static void feed_all(mt_framer *fr, const uint8_t *buf, size_t len, size_t chunk, fed *out) {
    size_t have = 0, pos = 0; /* bytes "received" so far, bytes consumed */
    memset(out, 0, sizeof *out);
    while (pos < len || have < len) {
        if (have < len) have = have + chunk < len ? have + chunk : len;
        for (;;) {
            mt_fr_event ev;
            size_t avail = have - pos, used;
            if (mt_framer_skipping(fr)) {
                used = mt_framer_feed(fr, NULL, avail, &ev);
            } else {
                size_t need = mt_framer_need(fr);
                if (avail < need) break;
                used = mt_framer_feed(fr, buf + pos, need, &ev);
            }
            pos += used;
            if (ev.kind == MT_FR_NEED) break;
            if (ev.kind == MT_FR_FRAME) {
                out->frames++;
                out->last_id = ev.frame->id;
                if (ev.frame->body_case == MT__V1__FRAME__BODY_TRANSLATE)
                    snprintf(out->last_text, sizeof out->last_text, "%s", ev.frame->translate->texts[0]);
                mt_frame_free(ev.frame);
            } else if (ev.kind == MT_FR_OVERSIZE) {
                out->oversize++;
                out->oversize_id = ev.id;
            } else if (ev.kind == MT_FR_VIOLATION) {
                out->violations++;
                out->violation_code = ev.code;
                return;
            }
        }
        if (have == len && pos == len) break;
        if (have == len) { /* nothing more will come */
            if (pos < len && !mt_framer_skipping(fr)) break;
        }
    }
}

static void test_framer_frames_in_any_chunking(void **state) {
    (void)state;
    size_t la, lb;
    uint8_t *a = encode_translate(7, "first", &la), *b = encode_translate(300, "second", &lb);
    uint8_t buf[256];
    memcpy(buf, a, la);
    memcpy(buf + la, b, lb);
    for (size_t chunk = 1; chunk <= la + lb; chunk++) {
        mt_framer fr;
        mt_framer_init(&fr, 1024, 4096);
        fed r;
        feed_all(&fr, buf, la + lb, chunk, &r);
        assert_int_equal(r.frames, 2);
        assert_int_equal(r.last_id, 300);
        assert_string_equal(r.last_text, "second");
        assert_int_equal(r.violations, 0);
    }
    free(a);
    free(b);
}

static void test_framer_skips_oversized_in_sync(void **state) {
    (void)state;
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    size_t la, lb;
    uint8_t *a = encode_translate(123456789, big, &la), *b = encode_translate(9, "after", &lb);
    uint8_t *buf = malloc(la + lb);
    memcpy(buf, a, la);
    memcpy(buf + la, b, lb);
    for (size_t chunk = 1; chunk < 4000; chunk = chunk * 3 + 1) {
        mt_framer fr;
        mt_framer_init(&fr, 1000, 1 << 20);
        fed r;
        feed_all(&fr, buf, la + lb, chunk, &r);
        assert_int_equal(r.oversize, 1);
        assert_int_equal(r.oversize_id, 123456789);
        assert_int_equal(r.frames, 1);
        assert_string_equal(r.last_text, "after");
        assert_int_equal(fr.skipped_bytes, la - 4);
    }
    free(a);
    free(b);
    free(buf);
}

static void test_framer_violations(void **state) {
    (void)state;
    mt_framer fr;
    mt_fr_event ev;
    uint8_t h[4];
    /* Over the discard limit, and any oversize before Hello (max_discard 0). */
    mt_framer_init(&fr, 100, 1000);
    mt_frame_put_len(h, 1001);
    assert_int_equal(mt_framer_feed(&fr, h, 4, &ev), 4);
    assert_int_equal(ev.kind, MT_FR_VIOLATION);
    assert_int_equal(ev.code, MT__V1__ERROR_CODE__ERR_FRAME_TOO_LARGE);
    mt_framer_feed(&fr, h, 4, &ev);
    assert_int_equal(ev.kind, MT_FR_VIOLATION); /* stays dead */
    mt_framer_init(&fr, 100, 0);
    mt_frame_put_len(h, 101);
    mt_framer_feed(&fr, h, 4, &ev);
    assert_int_equal(ev.kind, MT_FR_VIOLATION);
    /* A zero-length frame has no body. */
    mt_framer_init(&fr, 100, 1000);
    mt_frame_put_len(h, 0);
    assert_int_equal(mt_framer_feed(&fr, h, 4, &ev), 4);
    assert_int_equal(ev.kind, MT_FR_CONTINUE);
    mt_framer_feed(&fr, NULL, 0, &ev);
    assert_int_equal(ev.kind, MT_FR_VIOLATION);
    assert_int_equal(ev.code, MT__V1__ERROR_CODE__ERR_BAD_FRAME);
    /* Garbage and an unknown body. */
    uint8_t garbage[] = {0xff, 0xff, 0xff};
    const char *why;
    mt_frame *f = NULL;
    assert_int_equal(mt_frame_decode(garbage, sizeof garbage, &f, &why), MT__V1__ERROR_CODE__ERR_BAD_FRAME);
    uint8_t unknown[] = {0x08, 0x01, 0x9a, 0x06, 0x00};
    assert_int_equal(mt_frame_decode(unknown, sizeof unknown, &f, &why), MT__V1__ERROR_CODE__ERR_UNKNOWN_BODY);
    /* The id peek wants field 1 first. */
    uint64_t id = 0;
    uint8_t noid[] = {0x52, 0x00};
    assert_int_equal(mt_frame_peek_id(noid, 2, &id), 0);
    uint8_t withid[] = {0x08, 0xac, 0x02};
    assert_int_equal(mt_frame_peek_id(withid, 3, &id), 1);
    assert_int_equal(id, 300);
}

static void test_envelope_and_translate_checks(void **state) {
    (void)state;
    const char *why;
    mt_frame f = MT__V1__FRAME__INIT;
    Mt__V1__HealthRequest h = MT__V1__HEALTH_REQUEST__INIT;
    f.body_case = MT__V1__FRAME__BODY_HEALTH;
    f.health = &h;
    assert_int_equal(mt_frame_check_envelope(&f, &why), MT__V1__ERROR_CODE__ERR_BAD_FRAME); /* id 0 */
    f.id = 1;
    assert_int_equal(mt_frame_check_envelope(&f, &why), 0);
    f.body_case = MT__V1__FRAME__BODY_TRANSLATE_OK;
    assert_int_equal(mt_frame_check_envelope(&f, &why), MT__V1__ERROR_CODE__ERR_BAD_FRAME);

    mt_check_limits lim = {2, 5};
    char msg[128];
    Mt__V1__TranslateRequest t = MT__V1__TRANSLATE_REQUEST__INIT;
    char *texts[3] = {"abc", "\xc3\xa8\xc3\xa8\xc3\xa8\xc3\xa8\xc3\xa8", "x"};
    t.texts = texts;
    t.n_texts = 0;
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT);
    t.n_texts = 2;
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), 0); /* 5 code points, 10 bytes */
    t.n_texts = 3;
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), MT__V1__ERROR_CODE__ERR_TOO_MANY_SENTENCES);
    t.n_texts = 1;
    texts[0] = "abcdef";
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), MT__V1__ERROR_CODE__ERR_SENTENCE_TOO_LONG);
    texts[0] = "ab";
    t.beam_size = MT_PROTOCOL_MAX_BEAM + 1;
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT);
    t.beam_size = 4;
    t.n_best = 5; /* more than the beam */
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "n_best"));
    t.n_best = 4;
    char *pre[2] = {"", "x"};
    t.target_prefixes = pre;
    t.n_target_prefixes = 2; /* one per text, or none */
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT);
    t.n_target_prefixes = 1;
    pre[0] = "\xc0\xaf";
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT);
    pre[0] = "abcdef";
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), MT__V1__ERROR_CODE__ERR_SENTENCE_TOO_LONG);
    pre[0] = "ab";
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), 0);
    t.length_penalty = -1; /* ignored while absent */
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), 0);
    t.length_penalty_set_case = MT__V1__TRANSLATE_REQUEST__LENGTH_PENALTY_SET_LENGTH_PENALTY;
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT);
    t.length_penalty = 0;
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), 0);
    t.max_len_ratio = 0.0f / 0.0f;
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT);
    t.max_len_ratio = 2;
    assert_int_equal(mt_frame_check_translate(&t, &lim, msg, sizeof msg), 0);
}

static void test_utf8(void **state) {
    (void)state;
    assert_int_equal(mt_utf8_count("", 10), 0);
    assert_int_equal(mt_utf8_count("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 100), 9);
    assert_int_equal(mt_utf8_count("\xc0\xaf", 10), -1);         /* overlong */
    assert_int_equal(mt_utf8_count("\xed\xa0\x80", 10), -1);     /* surrogate */
    assert_int_equal(mt_utf8_count("\xf4\x90\x80\x80", 10), -1); /* > U+10FFFF */
    assert_int_equal(mt_utf8_count("\xe2\x82", 10), -1);         /* truncated */
    assert_int_equal(mt_utf8_count("\x80", 10), -1);
    assert_int_equal(mt_utf8_count("aaaaaaaa", 3), 4); /* stops just past max */
}

/* ---- options ---- */

static void test_options_cli_and_file(void **state) {
    (void)state;
    mt_srv_options o;
    mt_srv_options_init(&o);
    assert_string_equal(o.listen, "127.0.0.1:7700");
    assert_int_equal(o.limits.max_frame_bytes, 16u << 20);
    assert_int_equal(o.max_wait_ms, 5);
    char path[] = "/tmp/mt-net-unit-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *cfg = "# mt-server config\nlisten = 0.0.0.0:9000\nmax-frame-bytes = 2M\n"
                      "insecure = yes\ngpus = 0,1\nmodel = \"/m/en-it.mt\"\nmax-wait-ms = 9\n";
    assert_int_equal(write(fd, cfg, strlen(cfg)), (ssize_t)strlen(cfg));
    close(fd);
    char err[256];
    char *argv[] = {"mt-server", "--config", path, "--max-wait-ms=3", "--max-inflight", "7", "--log-level", "warn", NULL};
    assert_int_equal(mt_srv_options_parse(&o, 8, argv, err, sizeof err), 0);
    assert_string_equal(o.listen, "0.0.0.0:9000");
    assert_int_equal(o.limits.max_frame_bytes, 2u << 20);
    assert_true(o.insecure);
    assert_int_equal(o.n_gpus, 2);
    assert_int_equal(o.gpus[1], 1);
    assert_string_equal(o.model, "/m/en-it.mt");
    assert_int_equal(o.max_wait_ms, 3); /* the command line wins */
    assert_int_equal(o.limits.max_inflight, 7);
    assert_int_equal(o.log_level, 2);
    mt_srv_options_free(&o);

    mt_srv_options_init(&o);
    char *bad1[] = {"mt-server", "--max-inflight", "0", NULL};
    assert_int_equal(mt_srv_options_parse(&o, 3, bad1, err, sizeof err), -1);
    assert_non_null(strstr(err, "max-inflight"));
    char *bad2[] = {"mt-server", "--no-such", "1", NULL};
    assert_int_equal(mt_srv_options_parse(&o, 3, bad2, err, sizeof err), -1);
    assert_non_null(strstr(err, "no-such"));
    char *bad3[] = {"mt-server", "--tls-cert", "c.pem", NULL};
    assert_int_equal(mt_srv_options_parse(&o, 3, bad3, err, sizeof err), -1);
    assert_non_null(strstr(err, "tls-key"));
    char *bad4[] = {"mt-server", "--gpus", "0,0", NULL};
    assert_int_equal(mt_srv_options_parse(&o, 3, bad4, err, sizeof err), -1);
    mt_srv_options_free(&o);

    fd = open(path, O_WRONLY | O_TRUNC);
    const char *badcfg = "listen = 127.0.0.1:1\nthreads = many\n";
    assert_int_equal(write(fd, badcfg, strlen(badcfg)), (ssize_t)strlen(badcfg));
    close(fd);
    mt_srv_options_init(&o);
    assert_int_equal(mt_srv_options_load_file(&o, path, err, sizeof err), -1);
    assert_non_null(strstr(err, ":2:"));
    assert_non_null(strstr(err, "threads"));
    mt_srv_options_free(&o);
    unlink(path);
}

/* ---- auth ---- */

static void test_auth_tokens(void **state) {
    (void)state;
    mt_auth a;
    char err[256];
    assert_int_equal(mt_auth_load(&a, NULL, NULL, 4096, err, sizeof err), 0);
    assert_false(mt_auth_enabled(&a));
    assert_int_equal(mt_auth_check(&a, ""), MT__V1__ROLE__ROLE_ADMIN);
    char u[] = "/tmp/mt-net-unit-u-XXXXXX", ad[] = "/tmp/mt-net-unit-a-XXXXXX";
    int fu = mkstemp(u), fa = mkstemp(ad);
    assert_int_equal(write(fu, "  user-secret \r\nignored\n", 24), 24);
    assert_int_equal(write(fa, "admin-secret", 12), 12);
    close(fu);
    close(fa);
    assert_int_equal(mt_auth_load(&a, u, ad, 4096, err, sizeof err), 0);
    assert_true(mt_auth_enabled(&a));
    assert_int_equal(mt_auth_check(&a, "user-secret"), MT__V1__ROLE__ROLE_USER);
    assert_int_equal(mt_auth_check(&a, "admin-secret"), MT__V1__ROLE__ROLE_ADMIN);
    assert_int_equal(mt_auth_check(&a, "user-secre"), MT__V1__ROLE__ROLE_NONE);
    assert_int_equal(mt_auth_check(&a, "user-secret2"), MT__V1__ROLE__ROLE_NONE);
    assert_int_equal(mt_auth_check(&a, ""), MT__V1__ROLE__ROLE_NONE);
    assert_int_equal(mt_auth_check(&a, NULL), MT__V1__ROLE__ROLE_NONE);
    /* Only an admin token: the translate role needs it too. */
    assert_int_equal(mt_auth_load(&a, NULL, ad, 4096, err, sizeof err), 0);
    assert_int_equal(mt_auth_check(&a, "user-secret"), MT__V1__ROLE__ROLE_NONE);
    assert_int_equal(mt_auth_check(&a, "admin-secret"), MT__V1__ROLE__ROLE_ADMIN);
    /* An empty token file is an error, as is a missing one. */
    fu = open(u, O_WRONLY | O_TRUNC);
    close(fu);
    assert_int_equal(mt_auth_load(&a, u, NULL, 4096, err, sizeof err), -1);
    assert_int_equal(mt_auth_load(&a, "/nonexistent/token", NULL, 4096, err, sizeof err), -1);
    /* A NUL inside the token line: refused, not cut short at the NUL. */
    fu = open(u, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fu, "secret\0junk\n", 12), 12);
    close(fu);
    assert_int_equal(mt_auth_load(&a, u, NULL, 4096, err, sizeof err), -1);
    assert_non_null(strstr(err, "NUL"));
    /* A token no Hello within max-hello-bytes could carry: refused at startup. */
    char big[300];
    memset(big, 't', sizeof big - 1);
    big[sizeof big - 1] = '\n';
    fu = open(u, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fu, big, sizeof big), (ssize_t)sizeof big);
    close(fu);
    assert_int_equal(mt_auth_load(&a, u, NULL, 300, err, sizeof err), -1);
    assert_non_null(strstr(err, "--max-hello-bytes"));
    assert_int_equal(mt_auth_load(&a, u, NULL, 400, err, sizeof err), 0);
    unlink(u);
    unlink(ad);
}

/* ---- batcher policy ---- */

enum { MS = 1000 };

static mt_bitem item(uint32_t ntok, uint32_t beam, uint64_t t_ms, uint32_t index) {
    mt_bitem it;
    memset(&it, 0, sizeof it);
    it.ntok = ntok;
    it.opts.beam = beam;
    it.enq_us = t_ms * MS;
    it.index = index;
    return it;
}

static void push(mt_srv_batcher *b, mt_bitem *it) { assert_int_equal(mt_srv_batcher_push(b, &it, 1), 0); }

static void test_batcher_waits_then_flushes_by_age(void **state) {
    (void)state;
    mt_srv_batcher *b = mt_srv_batcher_new(100, 64, 5);
    mt_batch bt;
    mt_srv_batch_init(&bt, 64);
    uint64_t deadline;
    assert_int_equal(mt_srv_batcher_pick(b, 0, 0, &bt, &deadline), 0);
    assert_true(deadline == UINT64_MAX);
    mt_bitem a = item(3, 1, 1000, 0), c = item(4, 1, 1002, 1);
    push(b, &a);
    push(b, &c);
    assert_int_equal(mt_srv_batcher_pick(b, 1004 * MS, 0, &bt, &deadline), 0);
    assert_int_equal(deadline, 1005 * MS);
    assert_int_equal(mt_srv_batcher_depth(b), 2);
    assert_int_equal(mt_srv_batcher_pick(b, 1005 * MS, 0, &bt, &deadline), 1);
    assert_int_equal(bt.n, 2);
    assert_ptr_equal(bt.items[0], &a);
    assert_ptr_equal(bt.items[1], &c);
    assert_int_equal(bt.max_tok, 4);
    assert_int_equal(bt.padded_tokens, 8);
    assert_int_equal(mt_srv_batcher_depth(b), 0);
    mt_srv_batch_free(&bt);
    mt_srv_batcher_free(b);
}

/* A sentence that queued while the worker was busy waits max_wait from when the worker became free, so
 * the requests answered by the previous batch can join it (closed-loop clients resend within that time). */
static void test_batcher_wait_counts_from_worker_free(void **state) {
    (void)state;
    mt_srv_batcher *b = mt_srv_batcher_new(1000, 64, 5);
    mt_batch bt;
    mt_srv_batch_init(&bt, 64);
    uint64_t deadline;
    mt_bitem early = item(3, 1, 100, 0), late = item(3, 1, 202, 1);
    push(b, &early); /* queued at 100 ms, the worker busy until 200 ms */
    assert_int_equal(mt_srv_batcher_pick(b, 200 * MS, 200 * MS, &bt, &deadline), 0);
    assert_int_equal(deadline, 205 * MS);
    push(b, &late);
    assert_int_equal(mt_srv_batcher_pick(b, 204 * MS, 200 * MS, &bt, &deadline), 0);
    assert_int_equal(mt_srv_batcher_pick(b, 205 * MS, 200 * MS, &bt, &deadline), 1);
    assert_int_equal(bt.n, 2);
    /* A worker idle since long ago: the sentence's own age counts, as before. */
    mt_bitem solo = item(3, 1, 300, 0);
    push(b, &solo);
    assert_int_equal(mt_srv_batcher_pick(b, 304 * MS, 210 * MS, &bt, &deadline), 0);
    assert_int_equal(deadline, 305 * MS);
    assert_int_equal(mt_srv_batcher_pick(b, 305 * MS, 210 * MS, &bt, &deadline), 1);
    assert_int_equal(bt.n, 1);
    mt_srv_batch_free(&bt);
    mt_srv_batcher_free(b);
}

/* Defect: one connection's 60 queued sentences held another's single sentence back until all of
 * them were translated. Each owner has a lane; a batch takes one sentence of each in turn, and the
 * next batch starts with the lane after the last one served. */
static void test_batcher_round_robin_between_owners(void **state) {
    (void)state;
    mt_srv_batcher *b = mt_srv_batcher_new(1000, 4, 5);
    mt_batch bt;
    mt_srv_batch_init(&bt, 4);
    uint64_t deadline;
    mt_bitem bulk[60], one = item(3, 1, 10, 0), other = item(3, 1, 11, 0);
    for (int i = 0; i < 60; i++) {
        bulk[i] = item(3, 1, 0, (uint32_t)i);
        bulk[i].owner = 1;
        push(b, &bulk[i]);
    }
    one.owner = 2;
    other.owner = 3;
    push(b, &one);
    push(b, &other);
    /* The first batch: bulk 0, one, other, bulk 1 (not bulk 0..3). */
    assert_int_equal(mt_srv_batcher_pick(b, 0, 0, &bt, &deadline), 1);
    assert_int_equal(bt.n, 4);
    assert_ptr_equal(bt.items[0], &bulk[0]);
    assert_ptr_equal(bt.items[1], &one);
    assert_ptr_equal(bt.items[2], &other);
    assert_ptr_equal(bt.items[3], &bulk[1]);
    /* A newcomer waits at most one round: the next batch after its arrival has it. */
    mt_bitem late = item(3, 1, 20, 0);
    late.owner = 4;
    push(b, &late);
    assert_int_equal(mt_srv_batcher_pick(b, 0, 0, &bt, &deadline), 1);
    bool seen = false;
    for (uint32_t i = 0; i < bt.n; i++) seen |= bt.items[i] == &late;
    assert_true(seen);
    /* Within an owner the order stays FIFO. */
    uint32_t next = 2;
    for (uint32_t i = 0; i < bt.n; i++)
        if (bt.items[i] != &late) assert_ptr_equal(bt.items[i], &bulk[next++]);
    while (mt_srv_batcher_pick(b, 1000 * MS, 0, &bt, &deadline))
        for (uint32_t i = 0; i < bt.n; i++) assert_ptr_equal(bt.items[i], &bulk[next++]);
    assert_int_equal(next, 60);
    assert_int_equal(mt_srv_batcher_depth(b), 0);
    mt_srv_batch_free(&bt);
    mt_srv_batcher_free(b);
}

static void test_batcher_full_by_token_budget(void **state) {
    (void)state;
    mt_srv_batcher *b = mt_srv_batcher_new(10, 64, 1000);
    mt_batch bt;
    mt_srv_batch_init(&bt, 64);
    uint64_t deadline;
    mt_bitem it[5];
    for (int i = 0; i < 5; i++) {
        it[i] = item(3, 1, 0, (uint32_t)i);
        push(b, &it[i]);
    }
    /* 3 x 3 = 9 <= 10, a 4th would pad to 12: full at once, without waiting. */
    assert_int_equal(mt_srv_batcher_pick(b, 0, 0, &bt, &deadline), 1);
    assert_int_equal(bt.n, 3);
    assert_int_equal(bt.padded_tokens, 9);
    /* The 2 left wait for their age. */
    assert_int_equal(mt_srv_batcher_pick(b, 0, 0, &bt, &deadline), 0);
    assert_int_equal(mt_srv_batcher_pick(b, 1000 * MS, 0, &bt, &deadline), 1);
    assert_int_equal(bt.n, 2);
    /* A sentence over the whole budget goes alone, at once. */
    mt_bitem huge = item(50, 1, 2000, 0), small = item(1, 1, 2000, 1);
    push(b, &huge);
    push(b, &small);
    assert_int_equal(mt_srv_batcher_pick(b, 2000 * MS, 0, &bt, &deadline), 1);
    assert_int_equal(bt.n, 1);
    assert_ptr_equal(bt.items[0], &huge);
    /* Padded cost: a long sentence after short ones ends the batch. */
    mt_bitem s1 = item(1, 1, 3000, 0), s2 = item(1, 1, 3000, 1), l = item(6, 1, 3000, 2);
    push(b, &s1);
    push(b, &s2);
    push(b, &l);
    assert_int_equal(mt_srv_batcher_pick(b, 2001 * MS, 0, &bt, &deadline), 1); /* small's turn: it was due */
    assert_int_equal(bt.n, 3);                                           /* small, s1, s2 */
    assert_int_equal(mt_srv_batcher_pick(b, 4000 * MS, 0, &bt, &deadline), 1);
    assert_int_equal(bt.n, 1);
    assert_ptr_equal(bt.items[0], &l);
    mt_srv_batch_free(&bt);
    mt_srv_batcher_free(b);
}

static void test_batcher_separates_options_oldest_first(void **state) {
    (void)state;
    mt_srv_batcher *b = mt_srv_batcher_new(1000, 64, 10);
    mt_batch bt;
    mt_srv_batch_init(&bt, 64);
    uint64_t deadline;
    mt_bitem it[6];
    for (int i = 0; i < 6; i++) {
        it[i] = item(2, i % 2 ? 4 : 1, (uint64_t)i, (uint32_t)i); /* beams 1,4,1,4,1,4 at t=0..5 ms */
        push(b, &it[i]);
    }
    mt_bitem lp = item(2, 1, 0, 9);
    lp.opts.length_penalty = 0.6f; /* same beam, other penalty: its own group */
    push(b, &lp);
    assert_int_equal(mt_srv_batcher_pick(b, 9 * MS, 0, &bt, &deadline), 0);
    assert_int_equal(deadline, 10 * MS);
    /* At 10 ms both groups whose oldest is at 0 ms are due; the first queued goes first. */
    assert_int_equal(mt_srv_batcher_pick(b, 11 * MS, 0, &bt, &deadline), 1);
    assert_int_equal(bt.opts.beam, 1);
    assert_true(bt.opts.length_penalty == 0.0f);
    assert_int_equal(bt.n, 3);
    for (uint32_t i = 0; i < bt.n; i++) assert_int_equal(bt.items[i]->opts.beam, 1);
    assert_ptr_equal(bt.items[0], &it[0]);
    assert_ptr_equal(bt.items[2], &it[4]);
    assert_int_equal(mt_srv_batcher_pick(b, 11 * MS, 0, &bt, &deadline), 1);
    assert_int_equal(bt.n, 1);
    assert_ptr_equal(bt.items[0], &lp);
    assert_int_equal(mt_srv_batcher_pick(b, 11 * MS, 0, &bt, &deadline), 1);
    assert_int_equal(bt.opts.beam, 4);
    assert_int_equal(bt.n, 3);
    assert_int_equal(mt_srv_batcher_depth(b), 0);
    mt_srv_batch_free(&bt);
    mt_srv_batcher_free(b);
}

static void test_batcher_caps_sentences_and_drops_cancelled(void **state) {
    (void)state;
    mt_srv_batcher *b = mt_srv_batcher_new(100000, 4, 1000);
    mt_batch bt;
    mt_srv_batch_init(&bt, 4);
    uint64_t deadline;
    _Atomic bool cancel = false;
    mt_bitem it[10];
    for (int i = 0; i < 10; i++) {
        it[i] = item(1, 1, 0, (uint32_t)i);
        if (i % 2) it[i].cancelled = &cancel;
        push(b, &it[i]);
    }
    cancel = true;
    /* Live items 0,2,4,6 fill the 4-sentence cap; the cancelled ones up to the next live item
     * come back to be released. */
    assert_int_equal(mt_srv_batcher_pick(b, 0, 0, &bt, &deadline), 1);
    assert_int_equal(bt.n, 4);
    assert_ptr_equal(bt.items[3], &it[6]);
    assert_int_equal(bt.n_dropped, 4);
    assert_ptr_equal(bt.dropped, &it[1]);
    assert_ptr_equal(bt.dropped->next->next->next, &it[7]);
    assert_int_equal(mt_srv_batcher_depth(b), 2);
    /* Flush mode: nothing waits. */
    mt_srv_batcher_set_flush(b, true);
    assert_int_equal(mt_srv_batcher_pick(b, 0, 0, &bt, &deadline), 1);
    assert_int_equal(bt.n, 1);
    assert_ptr_equal(bt.items[0], &it[8]);
    assert_int_equal(bt.n_dropped, 1);
    assert_int_equal(mt_srv_batcher_depth(b), 0);
    mt_srv_batch_free(&bt);
    mt_srv_batcher_free(b);
}

static void test_batcher_budget_one_is_no_batching(void **state) {
    (void)state;
    mt_srv_batcher *b = mt_srv_batcher_new(1, 256, 5);
    mt_batch bt;
    mt_srv_batch_init(&bt, 256);
    uint64_t deadline;
    mt_bitem it[4];
    for (int i = 0; i < 4; i++) {
        it[i] = item(1 + (uint32_t)i, 1, 0, (uint32_t)i);
        push(b, &it[i]);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(mt_srv_batcher_pick(b, 0, 0, &bt, &deadline), 1);
        assert_int_equal(bt.n, 1);
        assert_ptr_equal(bt.items[0], &it[i]);
    }
    mt_srv_batch_free(&bt);
    mt_srv_batcher_free(b);
}

typedef struct taker {
    mt_srv_batcher *b;
    int rc;
    uint32_t n;
    uint64_t seen;
} taker;

static void *take_thread(void *arg) {
    taker *t = arg;
    mt_batch bt;
    mt_srv_batch_init(&bt, 16);
    t->rc = mt_srv_batcher_take(t->b, &bt, &t->seen);
    t->n = bt.n;
    mt_srv_batch_free(&bt);
    return NULL;
}

static void test_batcher_take_kick_close(void **state) {
    (void)state;
    mt_srv_batcher *b = mt_srv_batcher_new(100, 16, 1);
    pthread_t th;
    taker t = {b, 99, 0, 0};
    /* A real batch through the blocking path. */
    assert_int_equal(pthread_create(&th, NULL, take_thread, &t), 0);
    mt_bitem it = item(1, 1, 0, 0);
    it.enq_us = mt_now_us();
    usleep(20000);
    push(b, &it);
    pthread_join(th, NULL);
    assert_int_equal(t.rc, 1);
    assert_int_equal(t.n, 1);
    /* A kick wakes a waiting worker with nothing taken. */
    t.rc = 99;
    assert_int_equal(pthread_create(&th, NULL, take_thread, &t), 0);
    usleep(20000);
    mt_srv_batcher_kick(b);
    pthread_join(th, NULL);
    assert_int_equal(t.rc, 0);
    /* A kick while the worker was away is noticed at its next take. */
    mt_srv_batcher_kick(b);
    t.rc = 99;
    assert_int_equal(pthread_create(&th, NULL, take_thread, &t), 0);
    pthread_join(th, NULL);
    assert_int_equal(t.rc, 0);
    /* Closed and empty: -1. */
    mt_srv_batcher_close(b);
    assert_int_equal(pthread_create(&th, NULL, take_thread, &t), 0);
    pthread_join(th, NULL);
    assert_int_equal(t.rc, -1);
    mt_srv_batcher_free(b);
}

/* ---- metrics ---- */

static void test_metrics(void **state) {
    (void)state;
    mt_metrics *m = malloc(sizeof *m);
    mt_metrics_init(m);
    for (int i = 0; i < 90; i++) mt_histo_observe(&m->latency, 0.004);
    for (int i = 0; i < 10; i++) mt_histo_observe(&m->latency, 0.2);
    assert_true(mt_histo_quantile(&m->latency, 0.5) == 0.005);
    assert_true(mt_histo_quantile(&m->latency, 0.99) == 0.25);
    mt_metrics_limit_hit(m, MT_LIM_CHARS);
    mt_metrics_limit_hit(m, MT_LIM_CHARS);
    mt_metrics_error(m, MT__V1__ERROR_CODE__ERR_SENTENCE_TOO_LONG);
    assert_int_equal(mt_metrics_limit_hits_total(m), 2);
    mt_metrics_gauges g = {.queue_depth = 17, .train_step = 42, .train_loss = 1.5};
    char *text = mt_metrics_render(m, &g);
    assert_non_null(strstr(text, "mt_limit_hits_total{limit=\"max_chars\"} 2\n"));
    assert_non_null(strstr(text, "mt_errors_total{code=\"ERR_SENTENCE_TOO_LONG\"} 1\n"));
    assert_non_null(strstr(text, "mt_queue_depth 17\n"));
    assert_non_null(strstr(text, "mt_train_step 42\n"));
    assert_non_null(strstr(text, "mt_request_latency_seconds_bucket{le=\"0.005\"} 90\n"));
    assert_non_null(strstr(text, "mt_request_latency_seconds_bucket{le=\"+Inf\"} 100\n"));
    assert_non_null(strstr(text, "mt_request_latency_seconds_count 100\n"));
    free(text);
    free(m);
}

/* ---- paths ---- */

static void test_paths_stay_inside_root(void **state) {
    (void)state;
    char root[] = "/tmp/mt-net-unit-root-XXXXXX";
    assert_non_null(mkdtemp(root));
    char real[PATH_MAX], p[PATH_MAX + 64], out[PATH_MAX], msg[256];
    assert_non_null(realpath(root, real));
    snprintf(p, sizeof p, "%s/sub", real);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/sub/m.mt", real);
    fclose(fopen(p, "w"));
    snprintf(p, sizeof p, "%s/escape", real);
    assert_int_equal(symlink("/etc", p), 0);
    assert_int_equal(mt_srv_path_resolve(real, "sub/m.mt", true, out, sizeof out, msg, sizeof msg), 0);
    snprintf(p, sizeof p, "%s/sub/m.mt", real);
    assert_string_equal(out, p);
    assert_int_equal(mt_srv_path_resolve(real, p, true, out, sizeof out, msg, sizeof msg), 0);
    assert_int_equal(mt_srv_path_resolve(real, "sub/../sub/m.mt", true, out, sizeof out, msg, sizeof msg), 0);
    assert_int_equal(mt_srv_path_resolve(real, "sub/none.mt", true, out, sizeof out, msg, sizeof msg),
                     MT__V1__ERROR_CODE__ERR_NOT_FOUND);
    assert_int_equal(mt_srv_path_resolve(real, "../x.mt", false, out, sizeof out, msg, sizeof msg),
                     MT__V1__ERROR_CODE__ERR_PATH_OUTSIDE_ROOT);
    assert_int_equal(mt_srv_path_resolve(real, "escape/passwd", true, out, sizeof out, msg, sizeof msg),
                     MT__V1__ERROR_CODE__ERR_PATH_OUTSIDE_ROOT);
    assert_int_equal(mt_srv_path_resolve(real, "escape/new.mt", false, out, sizeof out, msg, sizeof msg),
                     MT__V1__ERROR_CODE__ERR_PATH_OUTSIDE_ROOT);
    assert_int_equal(mt_srv_path_resolve(real, "/etc/passwd", true, out, sizeof out, msg, sizeof msg),
                     MT__V1__ERROR_CODE__ERR_PATH_OUTSIDE_ROOT);
    assert_int_equal(mt_srv_path_resolve(real, "sub/new.mt", false, out, sizeof out, msg, sizeof msg), 0);
    assert_int_equal(mt_srv_path_resolve(real, "nodir/new.mt", false, out, sizeof out, msg, sizeof msg),
                     MT__V1__ERROR_CODE__ERR_NOT_FOUND);
    assert_int_equal(mt_srv_path_resolve(real, "sub/..", false, out, sizeof out, msg, sizeof msg),
                     MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT);
    assert_int_equal(mt_srv_path_resolve(real, "", false, out, sizeof out, msg, sizeof msg),
                     MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT);
    /* A root that is a prefix of a sibling's name is not its parent. */
    char sibling[PATH_MAX + 16];
    snprintf(sibling, sizeof sibling, "%s-sibling", real);
    mkdir(sibling, 0755);
    snprintf(p, sizeof p, "%s/f", sibling);
    fclose(fopen(p, "w"));
    assert_int_equal(mt_srv_path_resolve(real, p, true, out, sizeof out, msg, sizeof msg),
                     MT__V1__ERROR_CODE__ERR_PATH_OUTSIDE_ROOT);
    char cmd[PATH_MAX * 2 + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", real, sibling);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_framer_frames_in_any_chunking),
        cmocka_unit_test(test_framer_skips_oversized_in_sync),
        cmocka_unit_test(test_framer_violations),
        cmocka_unit_test(test_envelope_and_translate_checks),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_options_cli_and_file),
        cmocka_unit_test(test_auth_tokens),
        cmocka_unit_test(test_batcher_waits_then_flushes_by_age),
        cmocka_unit_test(test_batcher_wait_counts_from_worker_free),
        cmocka_unit_test(test_batcher_round_robin_between_owners),
        cmocka_unit_test(test_batcher_full_by_token_budget),
        cmocka_unit_test(test_batcher_separates_options_oldest_first),
        cmocka_unit_test(test_batcher_caps_sentences_and_drops_cancelled),
        cmocka_unit_test(test_batcher_budget_one_is_no_batching),
        cmocka_unit_test(test_batcher_take_kick_close),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_paths_stay_inside_root),
    };
    return cmocka_run_group_tests_name("net-unit", tests, NULL, NULL);
}
