/*
 * microtensor.h — the public C ABI of MicroTensor, and the only header a user of the library needs.
 *
 * Everything outside engine/ (mt-server, the clients, Python through ctypes, any other language)
 * reaches the engine through the functions declared here. The rules that keep it stable are in
 * abi/README.md: handles are opaque, status values and functions are only ever appended, and the
 * exported symbols are exactly the MT_API functions below (checked by a test against abi/ baseline).
 *
 * Conventions
 *  - Every function that can fail returns mt_status (MT_OK == 0); results come back through pointers,
 *    which are left untouched on failure. A failing call sets a thread-local message (mt_last_error())
 *    that names what was wrong: the op and the shapes, the file and the line, the config key.
 *  - Everything the library returns as memory (strings, arrays) is released with mt_free().
 *    Handles are released with their own *_free(); every *_free(NULL) is a no-op.
 *  - Strings are NUL-terminated UTF-8. Invalid UTF-8 in an input is MT_ERR_UTF8.
 *  - Thread safety is stated per function. "Thread-safe" means any number of threads may call it at
 *    once on the same handle; "one thread at a time" means the caller serialises calls on that handle.
 */
#ifndef MICROTENSOR_H
#define MICROTENSOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MT_VERSION_MAJOR 0
#define MT_VERSION_MINOR 2
#define MT_VERSION_PATCH 0
#define MT_VERSION_NUMBER (MT_VERSION_MAJOR * 10000 + MT_VERSION_MINOR * 100 + MT_VERSION_PATCH)

#if defined(MT_BUILDING_LIBRARY)
#define MT_API __attribute__((visibility("default")))
#else
#define MT_API
#endif

/* ------------------------------------------------------------------------------------------------
 * Status, errors, version, memory, logging
 * ---------------------------------------------------------------------------------------------- */

/* Values are explicit and only ever appended. */
typedef enum mt_status {
    MT_OK = 0,
    MT_ERR_INVALID_ARG = 1,      /* a NULL handle or string, a value out of range */
    MT_ERR_SHAPE = 2,            /* tensor shapes that do not fit the op */
    MT_ERR_DTYPE = 3,            /* a dtype the op does not take, or operands that differ */
    MT_ERR_DEVICE = 4,           /* operands on different devices, an unknown device id */
    MT_ERR_AXIS = 5,             /* an axis out of range */
    MT_ERR_NOMEM = 6,            /* host or device memory exhausted */
    MT_ERR_IO = 7,               /* open, read, write, fsync or rename failed */
    MT_ERR_FORMAT = 8,           /* a file or text that does not parse (model, JSON, corpus line) */
    MT_ERR_CHECKSUM = 9,         /* a SHA-256 that does not match the payload */
    MT_ERR_CONFIG = 10,          /* an unknown config key or inconsistent values */
    MT_ERR_UTF8 = 11,            /* invalid UTF-8 in an input string */
    MT_ERR_BUFFER_TOO_SMALL = 12,/* a caller's buffer cannot hold the result; the needed size is returned */
    MT_ERR_NO_DEVICE = 13,       /* a GPU was asked for and none is present, or the build has no CUDA */
    MT_ERR_CUDA = 14,            /* a CUDA runtime or cuBLAS call failed */
    MT_ERR_UNSUPPORTED = 15,     /* valid, but not implemented for this dtype/device/model */
    MT_ERR_CANCELLED = 16,       /* stopped by mt_trainer_cancel() or a progress callback */
    MT_ERR_STATE = 17,           /* not valid in the object's current state (e.g. trainer already running) */
    MT_ERR_INTERNAL = 18,        /* a bug: an internal invariant failed */
    MT_ERR_NCCL = 19,            /* an NCCL call failed */
    MT_ERR_NETWORK = 20,         /* a socket or peer failure in collective communication */
    MT_ERR_PERMISSION = 21,      /* a path outside the allowed root */
    MT_ERR_NOT_FOUND = 22        /* a file, token or key that does not exist */
} mt_status;

/* The name of a status ("MT_ERR_SHAPE"); never NULL. Thread-safe. */
MT_API const char *mt_status_str(mt_status status);

/* The message of the last failing call on this thread ("" if none). The pointer stays valid until
 * the next failing call on this thread. Thread-safe (thread-local). */
MT_API const char *mt_last_error(void);

/* The library's version as MT_VERSION_NUMBER (compare with the header's to detect a mismatch), and
 * as a string "MAJOR.MINOR.PATCH". Thread-safe. */
MT_API unsigned mt_version(void);
MT_API const char *mt_version_string(void);

/* Releases memory the library returned (strings, arrays). mt_free(NULL) is a no-op. Thread-safe. */
MT_API void mt_free(void *ptr);

typedef enum mt_log_level {
    MT_LOG_DEBUG = 0,
    MT_LOG_INFO = 1,
    MT_LOG_WARN = 2,
    MT_LOG_ERROR = 3,
    MT_LOG_OFF = 4
} mt_log_level;

/* Where the library's log lines go: fn(level, message, user) for every line at or above the level
 * set with mt_log_set_level (default MT_LOG_WARN). fn may be called from any thread, concurrently.
 * NULL restores the default (stderr). Thread-safe. */
typedef void (*mt_log_fn)(mt_log_level level, const char *message, void *user);
MT_API void mt_log_set_callback(mt_log_fn fn, void *user);
MT_API void mt_log_set_level(mt_log_level level);

/* CPU threads used by the kernels of contexts created afterwards (0 = all cores). Thread-safe. */
MT_API mt_status mt_set_num_threads(int n);

/* Device ids: MT_DEVICE_CPU, or a CUDA device index 0..count-1. */
#define MT_DEVICE_CPU (-1)

/* The number of CUDA devices this process can use: 0 when the build has no CUDA backend or no GPU is
 * present (that is not an error). Thread-safe.
 * Returns MT_OK, MT_ERR_INVALID_ARG (NULL out). */
MT_API mt_status mt_device_count(int *out_count);

/* ------------------------------------------------------------------------------------------------
 * Tokenizer: BPE or word-level, stored as Hugging Face tokenizer.json
 * ---------------------------------------------------------------------------------------------- */

typedef struct mt_tokenizer mt_tokenizer_t;

/* Loads a tokenizer.json (models "BPE" and "WordLevel").
 * Returns MT_OK, MT_ERR_INVALID_ARG, MT_ERR_IO, MT_ERR_NOT_FOUND, MT_ERR_FORMAT, MT_ERR_UTF8,
 * MT_ERR_UNSUPPORTED (a model, normalizer, pre-tokenizer or decoder type this library does not
 * implement: the message names it and its JSON path), MT_ERR_NOMEM. */
MT_API mt_status mt_tokenizer_load(const char *path, mt_tokenizer_t **out);

/* Trains a tokenizer on the text of corpora (any corpus format of docs/ARCHITECTURE.md "File formats",
 * both sides).
 * options_json: {"model": "bpe"|"wordlevel", "vocab_size": 16000, "min_frequency": 2, ...}; see
 * engine/text/README.md. Returns MT_OK, MT_ERR_INVALID_ARG, MT_ERR_FORMAT (options that do not parse),
 * MT_ERR_CONFIG (an unknown option or value, named), MT_ERR_NOT_FOUND, MT_ERR_IO, MT_ERR_FORMAT or
 * MT_ERR_UTF8 for a bad corpus line (file and line named), MT_ERR_UNSUPPORTED, MT_ERR_NOMEM. */
MT_API mt_status mt_tokenizer_train(const char *const *corpus_paths, size_t n_paths,
                                    const char *options_json, mt_tokenizer_t **out);

/* Writes tokenizer.json (atomically: temporary file, fsync, rename).
 * Returns MT_OK, MT_ERR_INVALID_ARG, MT_ERR_IO. */
MT_API mt_status mt_tokenizer_save(const mt_tokenizer_t *tok, const char *path);

/* Token ids of text (no [SOS]/[EOS] added) into ids[0..capacity). *out_n receives the number of ids;
 * when it exceeds capacity the call returns MT_ERR_BUFFER_TOO_SMALL and writes nothing to ids. With
 * ids NULL and capacity 0 the call only counts (MT_ERR_BUFFER_TOO_SMALL unless the text has no token).
 * Thread-safe. Returns MT_OK, MT_ERR_INVALID_ARG, MT_ERR_UTF8, MT_ERR_BUFFER_TOO_SMALL. */
MT_API mt_status mt_tokenizer_encode(const mt_tokenizer_t *tok, const char *text, int32_t *ids,
                                     size_t capacity, size_t *out_n);

/* Text of ids (special tokens dropped) into buf[0..capacity) with its NUL; *out_len receives the
 * length without the NUL; MT_ERR_BUFFER_TOO_SMALL when it does not fit. Thread-safe.
 * Returns MT_OK, MT_ERR_INVALID_ARG (an id out of range), MT_ERR_BUFFER_TOO_SMALL. */
MT_API mt_status mt_tokenizer_decode(const mt_tokenizer_t *tok, const int32_t *ids, size_t n, char *buf,
                                     size_t capacity, size_t *out_len);

/* Vocabulary size (ids are 0..size-1). Thread-safe. Returns MT_OK, MT_ERR_INVALID_ARG. */
MT_API mt_status mt_tokenizer_vocab_size(const mt_tokenizer_t *tok, size_t *out_size);

/* Id of a token string, MT_ERR_NOT_FOUND if absent. Thread-safe. */
MT_API mt_status mt_tokenizer_token_to_id(const mt_tokenizer_t *tok, const char *token, int32_t *out_id);

MT_API void mt_tokenizer_free(mt_tokenizer_t *tok);

/* ------------------------------------------------------------------------------------------------
 * Model: load and save *.mt / *.mt.zst (safetensors), inspect
 * ---------------------------------------------------------------------------------------------- */

typedef struct mt_model mt_model_t;

/* Loads a model or checkpoint file (.mt, or .mt.zst compressed) onto a device (MT_DEVICE_CPU or a CUDA
 * index). The SHA-256 in the metadata is checked. Returns MT_OK, MT_ERR_INVALID_ARG, MT_ERR_IO,
 * MT_ERR_NOT_FOUND, MT_ERR_FORMAT (truncated, wrong magic, a tensor whose shape does not fit the config:
 * the message says which), MT_ERR_CHECKSUM, MT_ERR_CONFIG, MT_ERR_NO_DEVICE, MT_ERR_CUDA, MT_ERR_NOMEM. */
MT_API mt_status mt_model_load(const char *path, int device, mt_model_t **out);

/* mt_model_load reads int8 models (mt-quantize) too: they translate like any model (int8 matrix
 * products on the CPU) and cannot be trained from. */
/* Saves the model's weights, config and tokenizer (.mt; .mt.zst compresses), atomically.
 * Thread-safe with translation on the same model. Returns MT_OK, MT_ERR_INVALID_ARG, MT_ERR_IO. */
MT_API mt_status mt_model_save(const mt_model_t *model, const char *path);

/* The model's config as JSON text (mt_free it): hyper-parameters, vocab size, parameter count, device,
 * "quantization" ("int8" for a model written by mt-quantize, else "none"). Thread-safe. Returns MT_OK, MT_ERR_INVALID_ARG, MT_ERR_NOMEM. */
MT_API mt_status mt_model_info_json(const mt_model_t *model, char **out_json);

/* The model's tokenizer, owned by the model (do not free; valid while the model lives). Thread-safe. */
MT_API const mt_tokenizer_t *mt_model_tokenizer(const mt_model_t *model);

/* Frees a model. No translator made from it may still exist. */
MT_API void mt_model_free(mt_model_t *model);

/* ------------------------------------------------------------------------------------------------
 * Translation
 * ---------------------------------------------------------------------------------------------- */

typedef struct mt_translator mt_translator_t;

/* A translator decodes with a model (which must outlive it). It keeps a pool of decoding workspaces,
 * so mt_translate on one translator is thread-safe: threads translate concurrently, each in its own
 * workspace. n_threads: CPU threads per call (0 = default). Returns MT_OK, MT_ERR_INVALID_ARG,
 * MT_ERR_NOMEM. */
MT_API mt_status mt_translator_create(mt_model_t *model, int n_threads, mt_translator_t **out);

/* Translates n UTF-8 sentences as one batch.
 *   beam_size       1 = greedy, >1 = beam search
 *   length_penalty  alpha of the GNMT length penalty ((5+len)/6)^alpha; 0 = none (beam only)
 *   max_len_ratio   output limit as a ratio of the source length in tokens (plus 10), capped by the
 *                   model's max_len; <= 0 means the default (1.5)
 * (mt_translate_with takes every option, with the defaults in one place.)
 * *out_texts receives an array of n strings (one allocation: mt_free(*out_texts) frees all of it);
 * *out_scores, when out_scores is not NULL, n log-probability scores (mt_free it). A sentence longer
 * than the model's max_len is truncated with a warning in the log; an empty sentence gives "";
 * n == 0 is valid (an empty array). Every sentence is checked before any work (a NULL one is
 * MT_ERR_INVALID_ARG, invalid UTF-8 MT_ERR_UTF8, both naming its index), so valid input only fails for
 * lack of memory or a device error. beam_size >= 1, length_penalty >= 0.
 * Thread-safe. Returns MT_OK, MT_ERR_INVALID_ARG, MT_ERR_UTF8, MT_ERR_NOMEM, MT_ERR_CUDA. */
MT_API mt_status mt_translate(mt_translator_t *tr, const char *const *texts, size_t n, int beam_size,
                              float length_penalty, float max_len_ratio, char ***out_texts,
                              float **out_scores);

MT_API void mt_translator_free(mt_translator_t *tr);

/* Decoding options for mt_translate_with, in the style of ZSTD_CCtx_setParameter: an opaque handle
 * and one setter, so a new option is a new enum value, never a new function. Values are explicit and
 * only ever appended. Every option starts at its default (listed here; the same in mt-translate,
 * mt-server and the Python binding):
 *   MT_TRANSLATE_BEAM_SIZE        1      1 = greedy or sampling, 2..64 = beam search
 *   MT_TRANSLATE_LENGTH_PENALTY   0.6    GNMT alpha of beam search, >= 0 (0 = none)
 *   MT_TRANSLATE_MAX_LEN_RATIO    1.5    output limit: ratio x source tokens + 10, capped by max_len; > 0
 *   MT_TRANSLATE_N_BEST           1      hypotheses per sentence: 1..beam size (beam search), or that
 *                                        many independent samples (sampling, up to 64)
 *   MT_TRANSLATE_SAMPLING_TOPK    1      1 = no sampling; 0 = sample from the whole vocabulary; k > 1 =
 *                                        from the k most likely tokens (needs beam size 1)
 *   MT_TRANSLATE_SAMPLING_TOPP    1.0    then from the smallest set of tokens holding this probability, (0, 1]
 *   MT_TRANSLATE_SAMPLING_TEMPERATURE 1.0  log-probabilities divided by it before sampling, > 0
 *   MT_TRANSLATE_SEED             0      sampling: the draws of a sentence depend only on the seed, its
 *                                        index in the call and its sample number (0 .. 2^53) */
typedef struct mt_translate_options mt_translate_options_t;

/* The largest beam size (and n_best) the library accepts. */
#define MT_TRANSLATE_MAX_BEAM 64

typedef enum mt_translate_option {
    MT_TRANSLATE_BEAM_SIZE = 1,
    MT_TRANSLATE_LENGTH_PENALTY = 2,
    MT_TRANSLATE_MAX_LEN_RATIO = 3,
    MT_TRANSLATE_N_BEST = 4,
    MT_TRANSLATE_SAMPLING_TOPK = 5,
    MT_TRANSLATE_SAMPLING_TOPP = 6,
    MT_TRANSLATE_SAMPLING_TEMPERATURE = 7,
    MT_TRANSLATE_SEED = 8
} mt_translate_option;

/* Called as translations grow, from the thread running mt_translate_with: text is sentence index's
 * translation so far (the whole of it, best hypothesis; valid during the call only), final = 1 once
 * that sentence is done (once per sentence, in any order, when the call succeeds). Greedy search and
 * sampling with n_best 1 call it after every token; beam search and n-best sampling only with the
 * final text. */
typedef void (*mt_translate_stream_fn)(void *user, size_t index, const char *text, int final);

/* New options, every one at its default. Returns MT_OK, MT_ERR_INVALID_ARG, MT_ERR_NOMEM. */
MT_API mt_status mt_translate_options_create(mt_translate_options_t **out);
/* Sets one option (integers as whole numbers). An unknown option or a value out of its range is
 * MT_ERR_INVALID_ARG naming both; the options are then unchanged. Combinations (n_best against the
 * beam size, sampling with beam search) are checked by mt_translate_with. One thread at a time. */
MT_API mt_status mt_translate_options_set(mt_translate_options_t *opts, mt_translate_option option, double value);
/* The current value of one option. Thread-safe. Returns MT_OK, MT_ERR_INVALID_ARG. */
MT_API mt_status mt_translate_options_get(const mt_translate_options_t *opts, mt_translate_option option,
                                          double *value);
/* The stream callback (NULL: none) and its user pointer. One thread at a time. Returns MT_OK,
 * MT_ERR_INVALID_ARG. */
MT_API mt_status mt_translate_options_set_stream(mt_translate_options_t *opts, mt_translate_stream_fn fn, void *user);
MT_API void mt_translate_options_free(mt_translate_options_t *opts);

/* Translates n UTF-8 sentences as one batch with opts (NULL: every default). target_prefixes (NULL,
 * or n entries, each NULL or "" for none): the translation of sentence i starts with that text
 * (autocompletion; the prefix's tokens are forced and their log-probabilities count in the score).
 * *out_texts receives n x n_best strings, hypothesis j of sentence i at i * n_best + j, best first
 * (one allocation: mt_free(*out_texts)); *out_scores, when out_scores is not NULL, their
 * log-probabilities (mt_free it). A hypothesis the search could not fill (only with tiny
 * vocabularies) is "" with score -INFINITY. Input is checked as mt_translate does.
 * Thread-safe (opts may be shared by threads while no one changes it). Returns MT_OK,
 * MT_ERR_INVALID_ARG, MT_ERR_UTF8, MT_ERR_NOMEM, MT_ERR_CUDA. */
MT_API mt_status mt_translate_with(mt_translator_t *tr, const mt_translate_options_t *opts,
                                   const char *const *texts, const char *const *target_prefixes, size_t n,
                                   char ***out_texts, float **out_scores);

/* ------------------------------------------------------------------------------------------------
 * Training
 * ---------------------------------------------------------------------------------------------- */

typedef struct mt_trainer mt_trainer_t;

typedef enum mt_train_state {
    MT_TRAIN_IDLE = 0,      /* created, not running */
    MT_TRAIN_RUNNING = 1,
    MT_TRAIN_DONE = 2,      /* reached max_steps / early stopping */
    MT_TRAIN_CANCELLED = 3, /* stopped by mt_trainer_cancel (a checkpoint was saved) */
    MT_TRAIN_FAILED = 4     /* stopped by an error; mt_trainer_status_json says which */
} mt_train_state;

/* Creates a trainer from a JSON config (the model hyper-parameters and training keys of
 * engine/train/README.md). When path_root is not NULL, every path in the config is resolved relative
 * to it and must stay inside it (MT_ERR_PERMISSION names the key otherwise). Nothing is trained yet;
 * data and tokenizer are prepared here. Returns MT_OK, MT_ERR_INVALID_ARG, MT_ERR_FORMAT (JSON that does
 * not parse: line and column), MT_ERR_CONFIG (unknown key / inconsistent values: the key is named),
 * MT_ERR_PERMISSION, MT_ERR_IO, MT_ERR_NOT_FOUND, MT_ERR_NO_DEVICE, MT_ERR_NOMEM. */
MT_API mt_status mt_trainer_create(const char *config_json, const char *path_root, mt_trainer_t **out);

/* Called by the training thread after each log interval, each validation and each checkpoint with one
 * JSON object per event ({"event":"step","step":..,"loss":..,"lr":..,"tokens_per_s":..} etc.; the same
 * lines as the metrics file). Set it before mt_trainer_run. A callback must not call back into the
 * trainer except mt_trainer_cancel. */
typedef void (*mt_progress_fn)(const char *event_json, void *user);
MT_API mt_status mt_trainer_set_progress_callback(mt_trainer_t *tr, mt_progress_fn fn, void *user);

/* Runs training to the end (max_steps, max_time, early stopping) or until cancelled, in the calling
 * thread. Returns MT_OK when done, MT_ERR_CANCELLED after mt_trainer_cancel (a checkpoint is saved
 * first), MT_ERR_STATE if already running or failed earlier, or the error that stopped it. A done or
 * cancelled trainer may be run again: it continues from its step. One thread at a time. */
MT_API mt_status mt_trainer_run(mt_trainer_t *tr);

/* Runs n optimizer steps and returns (for callers that drive the loop themselves). One thread at a
 * time; not while mt_trainer_run runs. Returns as mt_trainer_run. */
MT_API mt_status mt_trainer_step(mt_trainer_t *tr, int n_steps);

/* Asks the trainer to stop after the current step. A cancel asked before mt_trainer_run (or
 * mt_trainer_step) starts is kept: that run then stops at once, saves a checkpoint and returns
 * MT_ERR_CANCELLED. Thread-safe; returns at once. */
MT_API mt_status mt_trainer_cancel(mt_trainer_t *tr);

/* Writes a checkpoint (atomically) to path, or, when path is NULL, to the configured checkpoint
 * directory; *out_path (may be NULL) receives the path written (mt_free it). While the trainer runs in
 * another thread the save happens at the next step boundary and this call waits for it; before a run
 * and after it returned the save happens at once. Thread-safe.
 * Returns MT_OK, MT_ERR_INVALID_ARG, MT_ERR_IO, MT_ERR_STATE (failed trainer). */
MT_API mt_status mt_trainer_save_checkpoint(mt_trainer_t *tr, const char *path, char **out_path);

/* Polls the trainer: state, step, last smoothed loss and tokens/s. Any pointer may be NULL.
 * Thread-safe. */
MT_API mt_status mt_trainer_status(const mt_trainer_t *tr, mt_train_state *state, int64_t *step,
                                   double *loss, double *tokens_per_s);

/* The full status as a JSON object (state, step, max_steps, loss, valid loss/BLEU/chrF, tokens/s,
 * elapsed, last checkpoint, error message); mt_free it. Thread-safe. */
MT_API mt_status mt_trainer_status_json(const mt_trainer_t *tr, char **out_json);

/* Frees a trainer; it must not be running (cancel it and let mt_trainer_run return first). */
MT_API void mt_trainer_free(mt_trainer_t *tr);

/* ------------------------------------------------------------------------------------------------
 * Metrics over lists of hypotheses and references (one sentence each); sacrebleu-compatible BLEU and
 * chrF (0..100), CER and WER (0..1+, torchmetrics definitions). Thread-safe.
 * Return MT_OK, MT_ERR_INVALID_ARG, MT_ERR_UTF8, MT_ERR_NOMEM.
 * ---------------------------------------------------------------------------------------------- */

MT_API mt_status mt_metric_bleu(const char *const *hyps, const char *const *refs, size_t n, double *out);
MT_API mt_status mt_metric_chrf(const char *const *hyps, const char *const *refs, size_t n, double *out);
MT_API mt_status mt_metric_cer(const char *const *hyps, const char *const *refs, size_t n, double *out);
MT_API mt_status mt_metric_wer(const char *const *hyps, const char *const *refs, size_t n, double *out);

/* ------------------------------------------------------------------------------------------------
 * Low-level engine: contexts, tensors, ops and reverse-mode autograd
 *
 * A context owns a device, a step arena, an autograd tape and a random generator. Tensors made by a
 * context (creation functions and op results) live in its arena until mt_context_reset(); tensors made
 * with persistent != 0 (parameters) live until mt_tensor_free(). A context is used by one thread at a
 * time; different contexts are independent.
 * ---------------------------------------------------------------------------------------------- */

typedef struct mt_context mt_context_t;
typedef struct mt_tensor mt_tensor_t;

typedef enum mt_dtype {
    MT_DTYPE_F32 = 0,
    MT_DTYPE_BF16 = 1,
    MT_DTYPE_F16 = 2,
    MT_DTYPE_I32 = 3,
    MT_DTYPE_I8 = 4
} mt_dtype;

#define MT_MAX_DIMS 6

/* Returns MT_OK, MT_ERR_INVALID_ARG, MT_ERR_NO_DEVICE, MT_ERR_CUDA, MT_ERR_NOMEM. */
MT_API mt_status mt_context_create(int device, mt_context_t **out);
MT_API void mt_context_free(mt_context_t *ctx);
/* Frees every non-persistent tensor of the context and clears the tape; memory is kept for reuse. */
MT_API mt_status mt_context_reset(mt_context_t *ctx);
/* grad enabled (default 1): ops record on the tape. 0 is a no_grad scope. */
MT_API mt_status mt_context_set_grad_enabled(mt_context_t *ctx, int enabled);
MT_API mt_status mt_context_seed(mt_context_t *ctx, uint64_t seed);

/* Creation. shape has ndim (0..MT_MAX_DIMS) entries, each >= 1.
 * Return MT_OK, MT_ERR_INVALID_ARG, MT_ERR_SHAPE, MT_ERR_DTYPE, MT_ERR_NOMEM. */
MT_API mt_status mt_tensor_empty(mt_context_t *ctx, mt_dtype dtype, int ndim, const int64_t *shape,
                                 int persistent, mt_tensor_t **out);
MT_API mt_status mt_tensor_full(mt_context_t *ctx, int ndim, const int64_t *shape, float value,
                                int persistent, mt_tensor_t **out);
MT_API mt_status mt_tensor_arange(mt_context_t *ctx, double start, double step, int64_t n, mt_tensor_t **out);
/* Copies bytes of host data (dtype as given) into a new tensor. */
MT_API mt_status mt_tensor_from_data(mt_context_t *ctx, mt_dtype dtype, int ndim, const int64_t *shape,
                                     const void *data, int persistent, mt_tensor_t **out);
/* Seeded from the context's generator. */
MT_API mt_status mt_tensor_uniform(mt_context_t *ctx, int ndim, const int64_t *shape, float low, float high,
                                   int persistent, mt_tensor_t **out);
MT_API mt_status mt_tensor_normal(mt_context_t *ctx, int ndim, const int64_t *shape, float mean, float std,
                                  int persistent, mt_tensor_t **out);
MT_API void mt_tensor_free(mt_tensor_t *t);

/* Inspection and host copies. */
MT_API int mt_tensor_ndim(const mt_tensor_t *t);
MT_API int64_t mt_tensor_dim(const mt_tensor_t *t, int axis);
MT_API int64_t mt_tensor_numel(const mt_tensor_t *t);
MT_API mt_dtype mt_tensor_dtype(const mt_tensor_t *t);
/* Copies the tensor's elements to host memory; MT_ERR_BUFFER_TOO_SMALL if bytes < numel * size. */
MT_API mt_status mt_tensor_read(const mt_tensor_t *t, void *dst, size_t bytes);
MT_API mt_status mt_tensor_write(mt_tensor_t *t, const void *src, size_t bytes);

/* Autograd. */
MT_API mt_status mt_tensor_set_requires_grad(mt_tensor_t *t, int requires_grad);
/* The gradient of t after backward (NULL if none reached it). Owned by t. */
MT_API mt_status mt_tensor_grad(const mt_tensor_t *t, mt_tensor_t **out_grad);
MT_API mt_status mt_tensor_zero_grad(mt_tensor_t *t);
MT_API mt_status mt_tensor_detach(mt_context_t *ctx, const mt_tensor_t *t, mt_tensor_t **out);
/* Reverse pass over the context's tape from root (a scalar, or any tensor with grad_root of its shape;
 * grad_root NULL means ones). */
MT_API mt_status mt_tensor_backward(mt_context_t *ctx, mt_tensor_t *root, const mt_tensor_t *grad_root);

/* Ops. Every op returns its result through out, records itself on the tape when an input requires a
 * gradient and grad is enabled, and returns MT_ERR_SHAPE / MT_ERR_DTYPE / MT_ERR_DEVICE / MT_ERR_AXIS
 * with a message naming the op and the shapes when the operands do not fit.
 * Binary ops broadcast like NumPy. */
typedef enum mt_unary_op {
    MT_UNARY_NEG = 0, MT_UNARY_EXP = 1, MT_UNARY_LOG = 2, MT_UNARY_SQRT = 3, MT_UNARY_TANH = 4,
    MT_UNARY_SIGMOID = 5, MT_UNARY_RELU = 6, MT_UNARY_GELU = 7, MT_UNARY_SILU = 8
} mt_unary_op;
typedef enum mt_binary_op {
    MT_BINARY_ADD = 0, MT_BINARY_SUB = 1, MT_BINARY_MUL = 2, MT_BINARY_DIV = 3
} mt_binary_op;
typedef enum mt_reduce_op { MT_REDUCE_SUM = 0, MT_REDUCE_MEAN = 1, MT_REDUCE_MAX = 2 } mt_reduce_op;

MT_API mt_status mt_tensor_unary(mt_context_t *ctx, mt_unary_op op, const mt_tensor_t *x, mt_tensor_t **out);
MT_API mt_status mt_tensor_binary(mt_context_t *ctx, mt_binary_op op, const mt_tensor_t *a, const mt_tensor_t *b,
                                  mt_tensor_t **out);
/* x op scalar (add, sub, mul, div), and x ** exponent. */
MT_API mt_status mt_tensor_scalar(mt_context_t *ctx, mt_binary_op op, const mt_tensor_t *x, float s,
                                  mt_tensor_t **out);
MT_API mt_status mt_tensor_pow(mt_context_t *ctx, const mt_tensor_t *x, float exponent, mt_tensor_t **out);
/* Reduces over the axes listed (negative counts from the end); n_axes == 0 reduces over all. */
MT_API mt_status mt_tensor_reduce(mt_context_t *ctx, mt_reduce_op op, const mt_tensor_t *x, const int *axes,
                                  int n_axes, int keepdim, mt_tensor_t **out);
/* Index of the maximum along axis, as an I32 tensor (no gradient). */
MT_API mt_status mt_tensor_argmax(mt_context_t *ctx, const mt_tensor_t *x, int axis, int keepdim,
                                  mt_tensor_t **out);
/* a @ b; 2-D or batched with broadcast batch dims; either operand optionally transposed. */
MT_API mt_status mt_tensor_matmul(mt_context_t *ctx, const mt_tensor_t *a, const mt_tensor_t *b, int trans_a,
                                  int trans_b, mt_tensor_t **out);
MT_API mt_status mt_tensor_softmax(mt_context_t *ctx, const mt_tensor_t *x, int axis, int log, mt_tensor_t **out);
MT_API mt_status mt_tensor_reshape(mt_context_t *ctx, const mt_tensor_t *x, int ndim, const int64_t *shape,
                                   mt_tensor_t **out);
MT_API mt_status mt_tensor_permute(mt_context_t *ctx, const mt_tensor_t *x, const int *perm, mt_tensor_t **out);
MT_API mt_status mt_tensor_narrow(mt_context_t *ctx, const mt_tensor_t *x, int axis, int64_t start,
                                  int64_t length, mt_tensor_t **out);
MT_API mt_status mt_tensor_concat(mt_context_t *ctx, const mt_tensor_t *const *xs, int n, int axis,
                                  mt_tensor_t **out);
/* Normalisation over the last axis; w, b (and for rms, w) of shape (C,); b may be NULL. */
MT_API mt_status mt_tensor_layer_norm(mt_context_t *ctx, const mt_tensor_t *x, const mt_tensor_t *w,
                                      const mt_tensor_t *b, float eps, mt_tensor_t **out);
MT_API mt_status mt_tensor_rms_norm(mt_context_t *ctx, const mt_tensor_t *x, const mt_tensor_t *w, float eps,
                                    mt_tensor_t **out);
/* Rows of table (V, C) gathered by I32 ids of any shape: out (..., C). */
MT_API mt_status mt_tensor_embedding(mt_context_t *ctx, const mt_tensor_t *table, const mt_tensor_t *ids,
                                     mt_tensor_t **out);
/* x where mask == 0, value where mask != 0; mask broadcasts to x. */
MT_API mt_status mt_tensor_masked_fill(mt_context_t *ctx, const mt_tensor_t *x, const mt_tensor_t *mask,
                                       float value, mt_tensor_t **out);
/* Dropout with probability p (identity when training == 0). */
MT_API mt_status mt_tensor_dropout(mt_context_t *ctx, const mt_tensor_t *x, float p, int training,
                                   mt_tensor_t **out);
/* Mean softmax cross-entropy of logits (N, V) against I32 targets (N,), label smoothing eps, rows whose
 * target is ignore_index left out of the mean. Scalar result. */
MT_API mt_status mt_tensor_cross_entropy(mt_context_t *ctx, const mt_tensor_t *logits, const mt_tensor_t *targets,
                                         float label_smoothing, int ignore_index, mt_tensor_t **out);
/* softmax(scale * q k^T + mask) v over q (B,H,Tq,D), k (B,H,Tk,D), v (B,H,Tk,Dv); mask (additive,
 * broadcastable to (B,H,Tq,Tk)) may be NULL; causal masks keys after the query position. */
MT_API mt_status mt_tensor_attention(mt_context_t *ctx, const mt_tensor_t *q, const mt_tensor_t *k,
                                     const mt_tensor_t *v, const mt_tensor_t *mask, int causal, float scale,
                                     mt_tensor_t **out);

#ifdef __cplusplus
}
#endif

#endif /* MICROTENSOR_H */
