/*
 * trainer.h — the trainer behind mt_trainer_* and mt-train: data (corpora, per-corpus deterministic
 * split, tokenizer, token-budget batches), the model and AdamW, the loop (logging, validation with
 * loss/BLEU/chrF, early stopping, checkpoints with rotation, a time budget), exact resume, and the
 * thread protocol of the ABI (run in one thread; cancel, status and save_checkpoint from others).
 *
 * A training config is one flat JSON object holding the model keys (nn/config.h) and the training
 * keys below; engine/train/README.md lists them all.
 */
#ifndef MT_TRAIN_TRAINER_H
#define MT_TRAIN_TRAINER_H

#include "nn/config.h"
#include "train/optim.h"

typedef struct mt_train_config {
    /* data */
    mt_cfg_strlist corpora;   /* training corpora; each loses its valid/test parts to held-out sets */
    mt_cfg_strlist valid;     /* explicit validation corpora (then no valid part is split off) */
    mt_cfg_strlist test;      /* explicit test corpora (then no test part is split off) */
    double valid_size;        /* per corpus: < 1 a fraction, >= 1 a count */
    double test_size;
    int64_t split_seed;
    int skip_bad_lines;
    char tokenizer[MT_CFG_STR_MAX];   /* tokenizer.json to use; trained (and saved there) when absent */
    int tokenizer_model;              /* 0 bpe, 1 wordlevel */
    int64_t tokenizer_vocab;          /* vocabulary of a trained tokenizer */
    int64_t tokenizer_min_frequency;
    /* batches and steps */
    int64_t max_tokens;       /* token budget of a batch: B * (S + T), padding included */
    int64_t max_sentences;
    int64_t accum_steps;      /* batches per optimizer step */
    int64_t max_steps;
    int64_t max_epochs;       /* 0: no limit */
    double max_time;          /* seconds of training (0: no limit) */
    /* optimizer */
    double lr, beta1, beta2, adam_eps, weight_decay, clip_norm, label_smoothing;
    int64_t warmup_steps;
    int64_t seed;
    /* loop */
    int64_t log_every;
    int64_t valid_every;      /* 0: validate only at the end */
    int64_t valid_sentences;  /* validation sentences decoded for BLEU/chrF (0: none) */
    int64_t valid_beam;
    int64_t patience;         /* validations without improvement before stopping (0: never) */
    int64_t save_every;       /* 0: checkpoint only at the end */
    int64_t keep_checkpoints;
    int64_t max_checkpoint_failures; /* failed checkpoints in a row before the run fails */
    char out_dir[MT_CFG_STR_MAX];
    char resume[MT_CFG_STR_MAX];      /* "": fresh, "auto": latest checkpoint of out_dir, or a path */
    int64_t threads;          /* CPU threads (0: all cores) */
    int64_t device;           /* -1 CPU, >= 0 a CUDA device */
    int precision;            /* 0 auto, 1 f32, 2 tf32, 3 bf16 (GEMMs; master weights stay f32) */
    /* data parallel (train/dist.h) */
    int64_t world_size, rank;
    char rendezvous[MT_CFG_STR_MAX];  /* HOST:PORT of rank 0's store */
    double comm_timeout_s;
    double bucket_mb;
} mt_train_config;

extern const mt_cfg_table mt_train_config_table;
void mt_train_config_default(mt_train_config *c);

/* Parses a full training config (model + training keys) with command-line overrides kv[0..2n)
 * ("key", "value" pairs) applied after the JSON. where names the JSON's source. */
mt_status mt_train_config_parse(const char *json, const char *const *kv, int n_kv, const char *where,
                                mt_model_config *mc, mt_train_config *tc);

struct mt_trainer;

/* mt_trainer_create with overrides (mt-train's --key value). */
mt_status mt_trainer_new(const char *json, const char *const *kv, int n_kv, const char *path_root, const char *where,
                         struct mt_trainer **out);

/* Writes the data of the run into dir, for the PyTorch reference trainer and for evaluation with
 * mt-translate --ref: train.tsv, valid.tsv, test.tsv (all corpora), valid.<i>.tsv and test.<i>.tsv
 * (corpus i of 'corpora' alone), tokenizer.json, and config.json (the resolved config). */
mt_status mt_trainer_dump_split(struct mt_trainer *tr, const char *dir);

/* The operations behind mt_trainer_run/step/save_checkpoint (engine/api/api_train.c checks their
 * arguments). loop: full = 1 runs to the end (max_steps, max_time, max_epochs, early stopping) with the
 * final validation, checkpoint and model; full = 0 runs n steps. save: written (may be NULL) receives
 * the path written. mt_trainer_cancel, mt_trainer_set_progress_callback, mt_trainer_status,
 * mt_trainer_status_json and mt_trainer_free are the ABI's own, defined in trainer.c. */
mt_status mt_trainer_loop(struct mt_trainer *tr, int full, int64_t n);
mt_status mt_trainer_save(struct mt_trainer *tr, const char *path, char *written, size_t cap);

#endif
