/*
 * fake_engine.h — a deterministic stand-in for the engine behind net/engine.h, for the server tests.
 *
 * Model files are text: a first line "FAKE-MT 1", then optional "key=value" lines:
 *   prefix=TEXT     prepended to every translation (tells two model generations apart)
 *   load_ms=N       model_load takes N ms
 * Translation of "text" is  PREFIX + "<" + text with ASCII letters upper-cased + ">"  plus "/b<beam>"
 * when beam > 1. Tokens are whitespace-separated words. Directives inside a text:
 *   @sleep=N        the batch holding it takes N ms more (to force out-of-order answers)
 *   @fail           the batch holding it fails (MT_ERR_INTERNAL)
 * Every batch costs MT_FAKE_BATCH_MS (default 2) + MT_FAKE_SENTENCE_MS (default 0.2) x sentences,
 * so batching pays as with a real model.
 *
 * The trainer reads a JSON config with keys "steps" (20), "step_ms" (20), "checkpoint_dir" (".",
 * must resolve inside path_root), "fail_at" (0 = never), "bad_key" (present = MT_ERR_CONFIG). It
 * emits {"event":"step",...} after each step, writes checkpoints that are fake model files with
 * prefix "ckpt<step>:", saves one when cancelled (MT_ERR_CANCELLED) and one at the end.
 */
#ifndef MT_TEST_FAKE_ENGINE_H
#define MT_TEST_FAKE_ENGINE_H

#include "engine.h"

extern const mt_engine mt_fake_engine;

/* Counters of what the fake did (for white-box checks in the same process). */
typedef struct mt_fake_stats {
    long batches, sentences, max_batch;
} mt_fake_stats;
void mt_fake_get_stats(mt_fake_stats *out);

/* Writes a fake model file. Returns 0 or -1. */
int mt_fake_write_model(const char *path, const char *prefix, int load_ms);

/* Out-of-memory injection: while set in a thread, calloc fails in that thread (mt-server-fake wraps
 * calloc). The fake trainer sets it in its thread after creation when the config has "oom": 1, so
 * every message the trainer thread would allocate fails. */
extern _Thread_local int mt_fake_oom;

#endif
