/*
 * modelfile.h — MicroTensor model and checkpoint files (*.mt, *.mt.zst): safetensors files whose
 * __metadata__ carries
 *   "format"          "microtensor"        (anything else: "wrong magic")
 *   "format_version"  "1"
 *   "kind"            "model" | "checkpoint"
 *   "config"          the model config as JSON (nn/config.h keys)
 *   "tokenizer"       the tokenizer.json text ("" when the model has none, e.g. in tests)
 *   "sha256"          SHA-256 of the payload, checked on load
 * and whose tensors are the model's parameters under their state_dict names (nn/model.h).
 * An int8 model (mt-quantize; model.int8) adds "quantization": "int8" and stores every linear weight
 * (mt_param_is_linear) as I8 plus F32 scales per output channel; it loads as its dequantized f32
 * weights plus, on the CPU, their int8 forms exactly as stored (inference only: no checkpoint).
 * A checkpoint adds "step", "trainer" (the trainer's JSON state: data position, random generator,
 * schedule, early-stopping counters, its config) and the AdamW moments as tensors
 * "optimizer.m.<param>" and "optimizer.v.<param>". A checkpoint loads as a model anywhere a model path
 * is accepted.
 */
#ifndef MT_FORMAT_MODELFILE_H
#define MT_FORMAT_MODELFILE_H

#include "format/safetensors.h"
#include "nn/model.h"

#define MT_MODELFILE_FORMAT "microtensor"
#define MT_MODELFILE_VERSION 1
/* An int8 model's linear weight "<name>" is I8 (n, k) with its per-output-channel F32 scales (n) in
 * "<name>" MT_MODELFILE_SCALE_SUFFIX, and __metadata__.quantization is "int8". */
#define MT_MODELFILE_SCALE_SUFFIX "_scale"

/* Checkpoint extras for saving (optional). */
typedef struct mt_ckpt_save {
    int64_t step;
    const char *trainer_json;  /* trainer state */
    mt_tensor *const *opt_m;   /* (n_params) first moments, same order as the model's params */
    mt_tensor *const *opt_v;   /* (n_params) second moments */
} mt_ckpt_save;

/* Writes the model (and, with ck, a checkpoint) atomically to path (.zst compresses).
 * tokenizer_json may be NULL. ctx: a context on the model's device, for the device-to-host copies. */
mt_status mt_modelfile_save(const char *path, const mt_transformer *m, mt_context *ctx, const char *tokenizer_json,
                            const mt_ckpt_save *ck);
/* The same for the file `name` of the directory dirfd (links never followed: mt_writer_openat). */
mt_status mt_modelfile_save_at(int dirfd, const char *name, const mt_transformer *m, mt_context *ctx,
                               const char *tokenizer_json, const mt_ckpt_save *ck);

/* A loaded file: the model, its tokenizer text, and (for a checkpoint) the parsed file for the
 * trainer to take its extras from. */
typedef struct mt_modelfile {
    mt_transformer *model;
    char *tokenizer_json;     /* NUL-terminated ("" when none); mt_sys_free */
    int is_checkpoint;
    int64_t step;             /* checkpoints */
    mt_st_file *file;         /* kept only when keep_file was asked (checkpoint extras) */
} mt_modelfile;

/* Loads path onto device: checks the format, the checksum, the config, and that every parameter is
 * present with the shape the config gives (MT_ERR_FORMAT naming the tensor and both shapes).
 * keep_file keeps the parsed file in out->file (mt_st_free it, or mt_modelfile_clear). */
mt_status mt_modelfile_load(const char *path, int device, int keep_file, mt_modelfile *out);
void mt_modelfile_clear(mt_modelfile *mf);

/* Copies a named F32 tensor of a parsed file into a persistent tensor of the same shape (the optimizer
 * state of a checkpoint). MT_ERR_FORMAT naming the tensor when absent or of another shape. */
mt_status mt_modelfile_read_tensor(const mt_st_file *f, const char *name, mt_context *ctx, mt_tensor *dst);

#endif
