/*
 * train_config.c — the training config's keys (engine/train/README.md), defaults, and the parsing of
 * a full config (model + training keys) with command-line overrides.
 */
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "train/trainer.h"

static const char *const tok_choices[] = {"bpe", "wordlevel", NULL};
static const char *const precision_choices[] = {"auto", "f32", "tf32", "bf16", NULL};

#define TK(name, kind, lo, hi, help) {#name, kind, offsetof(mt_train_config, name), lo, hi, NULL, help}
static const mt_cfg_key train_keys[] = {
    TK(corpora, MT_CFG_STRLIST, 0, 0, "training corpora (TSV, JSONL or 'a.en|a.it'; .zst ok)"),
    TK(valid, MT_CFG_STRLIST, 0, 0, "validation corpora (default: valid_size split off each corpus)"),
    TK(test, MT_CFG_STRLIST, 0, 0, "test corpora (default: test_size split off each corpus)"),
    TK(valid_size, MT_CFG_FLOAT, 0, 1e9, "pairs held out of each corpus for validation (<1: fraction)"),
    TK(test_size, MT_CFG_FLOAT, 0, 1e9, "pairs held out of each corpus for testing (<1: fraction)"),
    TK(split_seed, MT_CFG_INT, 0, 9e15, "seed of the train/valid/test split"),
    {"skip_bad_lines", MT_CFG_BOOL, offsetof(mt_train_config, skip_bad_lines), 0, 1, NULL,
     "skip (and count) malformed corpus lines instead of failing"},
    TK(tokenizer, MT_CFG_STRING, 0, 0, "tokenizer.json to use, or to train and save when absent"),
    {"tokenizer_model", MT_CFG_ENUM, offsetof(mt_train_config, tokenizer_model), 0, 0, tok_choices,
     "model of a trained tokenizer: bpe or wordlevel"},
    TK(tokenizer_vocab, MT_CFG_INT, 8, 1 << 22, "vocabulary size of a trained tokenizer"),
    TK(tokenizer_min_frequency, MT_CFG_INT, 1, 1 << 30, "minimum frequency of a merge / word"),
    TK(max_tokens, MT_CFG_INT, 1, 1 << 30, "token budget of a batch: B * (S + T), padding included"),
    TK(max_sentences, MT_CFG_INT, 0, 1 << 30, "at most this many pairs in a batch (0: no limit)"),
    TK(accum_steps, MT_CFG_INT, 1, 1024, "batches accumulated per optimizer step"),
    TK(max_steps, MT_CFG_INT, 0, 9e15, "optimizer steps to train"),
    TK(max_epochs, MT_CFG_INT, 0, 1 << 30, "stop after this many epochs (0: no limit)"),
    TK(max_time, MT_CFG_FLOAT, 0, 1e9, "stop after this many seconds of training (0: no limit)"),
    TK(lr, MT_CFG_FLOAT, 0, 10, "peak learning rate"),
    TK(warmup_steps, MT_CFG_INT, 0, 9e15, "linear warm-up steps, then inverse-square-root decay"),
    TK(beta1, MT_CFG_FLOAT, 0, 0.999999, "AdamW beta1"),
    TK(beta2, MT_CFG_FLOAT, 0, 0.999999, "AdamW beta2"),
    TK(adam_eps, MT_CFG_FLOAT, 0, 1, "AdamW epsilon"),
    TK(weight_decay, MT_CFG_FLOAT, 0, 10, "AdamW decoupled weight decay (matrices only)"),
    TK(clip_norm, MT_CFG_FLOAT, 0, 1e9, "gradient clipping by global norm (0: off)"),
    TK(label_smoothing, MT_CFG_FLOAT, 0, 0.99, "label smoothing of the training loss"),
    TK(seed, MT_CFG_INT, 0, 9e15, "seed of initialisation, dropout and batch shuffling"),
    TK(log_every, MT_CFG_INT, 1, 9e15, "steps between progress lines / metrics records"),
    TK(valid_every, MT_CFG_INT, 0, 9e15, "steps between validations (0: only at the end)"),
    TK(valid_sentences, MT_CFG_INT, 0, 1 << 30, "validation sentences translated for BLEU/chrF"),
    TK(valid_beam, MT_CFG_INT, 1, 64, "beam size of the validation translations"),
    TK(patience, MT_CFG_INT, 0, 1 << 30, "validations without a better loss before stopping (0: off)"),
    TK(save_every, MT_CFG_INT, 0, 9e15, "steps between checkpoints (0: only at the end)"),
    TK(keep_checkpoints, MT_CFG_INT, 1, 1 << 20, "checkpoints kept (the oldest are deleted)"),
    TK(max_checkpoint_failures, MT_CFG_INT, 1, 1 << 20,
       "checkpoints in a row that may fail (reported, retried at the next interval) before the run fails"),
    TK(out_dir, MT_CFG_STRING, 0, 0, "run directory: checkpoints/, model.mt, best.mt, metrics.jsonl"),
    TK(resume, MT_CFG_STRING, 0, 0, "'' fresh, 'auto' latest checkpoint of out_dir, or a checkpoint path"),
    TK(threads, MT_CFG_INT, 0, 4096, "CPU threads of the kernels (0: all cores)"),
    TK(device, MT_CFG_INT, -1, 4096, "-1: CPU, >= 0: CUDA device index"),
    {"precision", MT_CFG_ENUM, offsetof(mt_train_config, precision), 0, 0, precision_choices,
     "GEMM precision: auto (bf16 with f32 master weights on a GPU, f32 on the CPU), f32, tf32, bf16"},
    /* data-parallel training (train/dist.h); mt-train sets the first three from its flags */
    TK(world_size, MT_CFG_INT, 1, 1024, "data-parallel ranks (1: a single process)"),
    TK(rank, MT_CFG_INT, 0, 1023, "this process' rank, 0 .. world_size-1"),
    TK(rendezvous, MT_CFG_STRING, 0, 0, "HOST:PORT of rank 0's rendezvous store (world_size > 1)"),
    TK(comm_timeout_s, MT_CFG_FLOAT, 1, 86400, "seconds a collective may take before its rank gives up"),
    TK(bucket_mb, MT_CFG_FLOAT, 0, 4096, "gradient all-reduce bucket size in MB (0: an eighth of the gradients, 1 to 25 MB)"),
};
#undef TK

const mt_cfg_table mt_train_config_table = {"training", train_keys, (int)(sizeof train_keys / sizeof train_keys[0])};

void mt_train_config_default(mt_train_config *c) {
    memset(c, 0, sizeof *c);
    c->valid_size = 0.02;
    c->test_size = 0.02;
    c->split_seed = 1234;
    c->tokenizer_model = 0;
    c->tokenizer_vocab = 8000;
    c->tokenizer_min_frequency = 2;
    c->max_tokens = 4096;
    c->accum_steps = 1;
    c->max_steps = 10000;
    c->lr = 1e-3;
    c->warmup_steps = 1000;
    c->beta1 = 0.9;
    c->beta2 = 0.98;
    c->adam_eps = 1e-9;
    c->weight_decay = 0.01;
    c->clip_norm = 1.0;
    c->label_smoothing = 0.1;
    c->seed = 1;
    c->log_every = 50;
    c->valid_every = 1000;
    c->valid_sentences = 200;
    c->valid_beam = 1;
    c->patience = 0;
    c->save_every = 1000;
    c->keep_checkpoints = 3;
    c->max_checkpoint_failures = 3;
    snprintf(c->out_dir, sizeof c->out_dir, "run");
    c->device = -1;
    c->world_size = 1;
    c->comm_timeout_s = 60;
}

mt_status mt_train_config_parse(const char *json, const char *const *kv, int n_kv, const char *where,
                                mt_model_config *mc, mt_train_config *tc) {
    mt_model_config_default(mc);
    mt_train_config_default(tc);
    const mt_cfg_table tables[2] = {mt_model_config_table, mt_train_config_table};
    void *structs[2] = {mc, tc};
    if (json) MT_TRY(mt_cfg_parse_json(tables, 2, structs, json, where ? where : "config"));
    for (int i = 0; i < n_kv; i++) MT_TRY(mt_cfg_set_string(tables, 2, structs, kv[2 * i], kv[2 * i + 1]));
    mt_status st = mt_model_config_validate(mc, 0);
    if (st != MT_OK) return mt_error_prefix(st, "%s: ", where ? where : "config");
    if (tc->corpora.n == 0) return mt_error(MT_ERR_CONFIG, "%s: config key 'corpora' lists no corpus", where);
    if (!tc->out_dir[0]) return mt_error(MT_ERR_CONFIG, "%s: config key 'out_dir' is empty", where);
    if (tc->device < 0 && tc->precision >= 2)
        return mt_error(MT_ERR_CONFIG, "%s: config key 'precision' is '%s', which needs a CUDA device ('device' >= 0)",
                        where ? where : "config", precision_choices[tc->precision]);
    if (tc->rank >= tc->world_size)
        return mt_error(MT_ERR_CONFIG, "%s: config key 'rank' is %lld, outside world_size %lld", where ? where : "config",
                        (long long)tc->rank, (long long)tc->world_size);
    if (tc->world_size > 1 && !tc->rendezvous[0])
        return mt_error(MT_ERR_CONFIG, "%s: config key 'rendezvous' is empty, but world_size is %lld",
                        where ? where : "config", (long long)tc->world_size);
    return MT_OK;
}

