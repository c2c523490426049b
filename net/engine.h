/*
 * engine.h — the small internal interface through which the server uses an engine.
 *
 * mt-server fills it with the C ABI (engine_abi.c: mt_model_load, mt_translate, mt_trainer_*); the
 * tests fill it with a deterministic fake inside the test binary, so the batcher, the queues, the
 * model swap and training control are exercised exactly as in production without a trained model.
 * Status values are mt_status (abi/microtensor.h); failures fill an mt_eng_err.
 *
 * Threading, as the ABI promises: count_tokens, translate, model_info and the trainer's cancel,
 * save, status and status_json may be called from any thread at once; trainer_run blocks its caller.
 */
#ifndef MT_NET_ENGINE_H
#define MT_NET_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "batcher.h"
#include "microtensor.h"

typedef struct mt_eng_err {
    int status;          /* mt_status */
    char msg[512];
} mt_eng_err;

typedef void (*mt_eng_progress_fn)(const char *event_json, void *user);

typedef struct mt_engine {
    const char *name;
    const char *(*version)(void);
    const char *(*status_str)(int status);
    int (*device_count)(void);
    /* Routes the engine's log lines to the server's log (may be NULL). */
    void (*set_log)(void (*fn)(int level, const char *msg));

    int (*model_load)(const char *path, int device, void **model, mt_eng_err *err);
    void (*model_free)(void *model);
    char *(*model_info)(void *model);  /* malloc'd JSON, or NULL */
    /* Source tokens of text with the model's tokenizer (the batch budget counts them). */
    int (*count_tokens)(void *model, const char *text, uint32_t *n, mt_eng_err *err);

    int (*translator_create)(void *model, int n_threads, void **tr, mt_eng_err *err);
    void (*translator_free)(void *tr);
    /* Translates n texts (prefixes: NULL, or per text NULL or a target prefix): outs[i * n_best + j]
     * (malloc'd, caller frees) and scores[i * n_best + j], hypothesis j of text i. stream (may be NULL)
     * is called from this thread as translations grow (mt_translate_stream_fn). */
    int (*translate)(void *tr, const char *const *texts, const char *const *prefixes, size_t n,
                     const mt_xlate_opts *opts, mt_translate_stream_fn stream, void *stream_user, char **outs,
                     float *scores, mt_eng_err *err);

    int (*trainer_create)(const char *config_json, const char *path_root, void **tr, mt_eng_err *err);
    int (*trainer_set_progress)(void *tr, mt_eng_progress_fn fn, void *user, mt_eng_err *err);
    int (*trainer_run)(void *tr, mt_eng_err *err);
    int (*trainer_cancel)(void *tr);
    /* path NULL = the configured checkpoint dir; *out_path malloc'd. */
    int (*trainer_save)(void *tr, const char *path, char **out_path, mt_eng_err *err);
    int (*trainer_status)(void *tr, int *state, int64_t *step, double *loss, double *tokens_per_s);
    char *(*trainer_status_json)(void *tr); /* malloc'd, or NULL */
    void (*trainer_free)(void *tr);
} mt_engine;

/* The production engine: abi/microtensor.h (engine_abi.c, linked into mt-server only). */
extern const mt_engine mt_engine_abi;

#endif
